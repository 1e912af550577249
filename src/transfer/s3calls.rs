//! The two S3 calls `object_store` doesn't make, signed with the sink's credential: listing
//! the multipart uploads open under a key (`GET /bucket?uploads&prefix=KEY`), so the attempt
//! that takes over a run finds and aborts an upload a killed attempt created but never got to
//! checkpoint; and copying an object onto itself with new metadata, which gives a streamed
//! export (whose SHA-256 is known only at its end) its `sha256`.

use super::xml::{element, elements, unescape};
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector as _, HttpRequestBody};
use object_store::{ClientOptions, client::ReqwestConnector};
use std::fmt::Write as _;
use std::sync::Arc;

/// At most this many pages of one key's listing (1,000 uploads each).
const MAX_PAGES: usize = 20;

/// Makes the calls, over a client like the store's.
#[derive(Clone)]
pub struct S3Calls {
    client: HttpClient,
    store: Arc<AmazonS3>,
    /// The bucket's URL, path-style as `object_store` addresses it: `http://host:port/bucket`.
    bucket_url: String,
    region: String,
}

impl S3Calls {
    /// Calls to `bucket` at `endpoint` (AWS itself when `None`), over a client made with the
    /// same `options` (certificates, timeouts, plain HTTP) as the store's.
    pub fn new(
        store: Arc<AmazonS3>,
        options: &ClientOptions,
        endpoint: Option<&str>,
        bucket: &str,
        region: &str,
    ) -> Result<S3Calls, String> {
        let client = ReqwestConnector::default().connect(options).map_err(|e| e.to_string())?;
        let base = endpoint.map_or_else(
            || format!("https://s3.{region}.amazonaws.com"),
            |e| e.trim_end_matches('/').to_owned(),
        );
        Ok(S3Calls { client, store, bucket_url: format!("{base}/{bucket}"), region: region.to_owned() })
    }

    /// Signs `request` (with an empty body) with the sink's credential and sends it: the
    /// answer's status and body.
    async fn send(&self, request: http::request::Builder) -> Result<(http::StatusCode, String), String> {
        let credential = self.store.credentials().get_credential().await.map_err(|e| e.to_string())?;
        let mut request = request.body(HttpRequestBody::empty()).map_err(|e| e.to_string())?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| e.to_string())?;
        let response = self.client.execute(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(|e| e.to_string())?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Sets the object `key`'s metadata `sha256` (replacing its other metadata), by copying it
    /// onto itself: its content and name stay as they are.
    pub async fn set_sha256(&self, bucket: &str, key: &str, sha256: &str) -> Result<(), String> {
        let path: Vec<String> = key.split('/').map(encode).collect();
        let path = path.join("/");
        let request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(format!("{}/{path}", self.bucket_url))
            .header("x-amz-copy-source", format!("/{bucket}/{path}"))
            .header("x-amz-metadata-directive", "REPLACE")
            .header("x-amz-meta-sha256", sha256);
        let (status, xml) = self.send(request).await?;
        // A copy can fail after a 200 has been sent: the body then holds an <Error>.
        if !status.is_success() || xml.contains("<Error>") {
            return Err(format!("CopyObject answered {status}: {}", xml.trim()));
        }
        Ok(())
    }

    /// The ids of the uploads open under exactly `key`.
    pub async fn open_uploads(&self, key: &str) -> Result<Vec<String>, String> {
        let mut ids = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let mut query = format!("uploads=&prefix={}", encode(key));
            if let Some((key_marker, id_marker)) = &markers {
                let _ = write!(
                    query,
                    "&key-marker={}&upload-id-marker={}",
                    encode(key_marker),
                    encode(id_marker)
                );
            }
            let request = http::Request::builder()
                .method(http::Method::GET)
                .uri(format!("{}?{query}", self.bucket_url));
            let (status, xml) = self.send(request).await?;
            if !status.is_success() {
                return Err(format!("ListMultipartUploads answered {status}: {}", xml.trim()));
            }
            for upload in elements(&xml, "Upload") {
                if let (Some(k), Some(id)) = (element(upload, "Key"), element(upload, "UploadId"))
                    && unescape(k) == key
                {
                    ids.push(unescape(id));
                }
            }
            if element(&xml, "IsTruncated") != Some("true") {
                return Ok(ids);
            }
            let next = element(&xml, "NextKeyMarker").map(|k| {
                (unescape(k), element(&xml, "NextUploadIdMarker").map(unescape).unwrap_or_default())
            });
            if next.is_none() || next == markers {
                return Ok(ids);
            }
            markers = next;
        }
        Ok(ids)
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, as SigV4 wants a query.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_gives_the_uploads_of_its_keys() {
        let xml = "<ListMultipartUploadsResult><Upload><Key>a &amp; b.bin</Key><UploadId>u&#x31;</UploadId></Upload>\
                   <Upload><Key>c</Key><UploadId>u2</UploadId></Upload><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>";
        let uploads: Vec<(String, String)> = elements(xml, "Upload")
            .into_iter()
            .map(|u| {
                (unescape(element(u, "Key").unwrap_or("")), unescape(element(u, "UploadId").unwrap_or("")))
            })
            .collect();
        assert_eq!(uploads, vec![("a & b.bin".into(), "u1".into()), ("c".into(), "u2".into())]);
        assert_eq!(element(xml, "IsTruncated"), Some("false"));
    }

    #[test]
    fn query_values_are_encoded_for_signing() {
        assert_eq!(encode("exports/a b+ü.bin"), "exports%2Fa%20b%2B%C3%BC.bin");
    }
}
