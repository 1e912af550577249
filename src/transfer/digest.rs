//! SHA-256 computed once per upload. `object_store` hashes every request body (for SigV4 and
//! `x-amz-checksum-sha256`) and takes no precomputed digest, so the S3 sink gives it this
//! crypto provider: inside [`known`], a digest of exactly the body's own buffers (the same
//! memory, in order) is the one the copy computed while reading them; every other digest
//! (the canonical request, other bodies) and every HMAC is computed as usual.

use bytes::Bytes;
use hmac::Mac as _;
use object_store::PutPayload;
use object_store::client::{
    CryptoProvider, DigestAlgorithm, DigestContext, HmacContext, Signer, SigningAlgorithm,
};
use sha2::Digest as _;
use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static KNOWN: Known;
}

/// A request body and the SHA-256 of its bytes.
#[derive(Clone)]
struct Known {
    body: PutPayload,
    sha256: [u8; 32],
}

/// Runs `request` (an upload of `body`) knowing that `body`'s SHA-256 is `sha256`.
pub async fn known<F: Future>(body: &PutPayload, sha256: [u8; 32], request: F) -> F::Output {
    KNOWN.scope(Known { body: body.clone(), sha256 }, request).await
}

/// The provider the S3 sink's store uses.
pub fn provider() -> Arc<dyn CryptoProvider> {
    Arc::new(Provider)
}

#[derive(Debug)]
struct Provider;

impl CryptoProvider for Provider {
    fn digest(&self, _algorithm: DigestAlgorithm) -> object_store::Result<Box<dyn DigestContext>> {
        let known = KNOWN.try_with(Clone::clone).ok();
        Ok(Box::new(Sha256 { known, matched: 0, hasher: None, out: [0; 32] }))
    }

    fn hmac(&self, _algorithm: DigestAlgorithm, secret: &[u8]) -> object_store::Result<Box<dyn HmacContext>> {
        let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
            .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
        Ok(Box::new(Hmac { mac: Some(mac), out: [0; 32] }))
    }

    fn sign(&self, _algorithm: SigningAlgorithm, _pem: &[u8]) -> object_store::Result<Box<dyn Signer>> {
        Err(object_store::Error::NotSupported { source: "S3 sinks sign with HMAC only".into() })
    }
}

/// A SHA-256 that, while the bytes it is given are the known body's buffers one after
/// another, only counts them; anything else makes it hash everything.
struct Sha256 {
    known: Option<Known>,
    /// How many of the known body's buffers were given so far, when all of them were.
    matched: usize,
    /// Hashing for real, once the input isn't the known body.
    hasher: Option<sha2::Sha256>,
    out: [u8; 32],
}

fn same(a: &Bytes, b: &[u8]) -> bool {
    a.len() == b.len() && std::ptr::eq(a.as_ptr(), b.as_ptr())
}

impl DigestContext for Sha256 {
    fn update(&mut self, data: &[u8]) {
        if self.hasher.is_none() {
            if let Some(known) = &self.known
                && known.body.iter().nth(self.matched).is_some_and(|b| same(b, data))
            {
                self.matched += 1;
                return;
            }
            let mut hasher = sha2::Sha256::new();
            if let Some(known) = &self.known {
                known.body.iter().take(self.matched).for_each(|b| hasher.update(b));
            }
            self.hasher = Some(hasher);
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(data);
        }
    }

    fn finish(&mut self) -> object_store::Result<&[u8]> {
        self.out = match (self.hasher.take(), &self.known) {
            (Some(hasher), _) => hasher.finalize().into(),
            (None, Some(known)) if self.matched == known.body.iter().count() => known.sha256,
            (None, known) => {
                let mut hasher = sha2::Sha256::new();
                if let Some(known) = known {
                    known.body.iter().take(self.matched).for_each(|b| hasher.update(b));
                }
                hasher.finalize().into()
            }
        };
        Ok(&self.out)
    }
}

struct Hmac {
    mac: Option<hmac::Hmac<sha2::Sha256>>,
    out: [u8; 32],
}

impl HmacContext for Hmac {
    fn update(&mut self, data: &[u8]) {
        if let Some(mac) = &mut self.mac {
            mac.update(data);
        }
    }

    fn finish(&mut self) -> object_store::Result<&[u8]> {
        if let Some(mac) = self.mac.take() {
            self.out = mac.finalize().into_bytes().into();
        }
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(parts: &[&[u8]]) -> [u8; 32] {
        let mut context = Provider.digest(DigestAlgorithm::Sha256).expect("a digest");
        for part in parts {
            context.update(part);
        }
        context.finish().expect("finished").try_into().expect("32 bytes")
    }

    #[tokio::test]
    async fn the_known_body_takes_the_known_digest_and_anything_else_is_hashed() {
        let body = PutPayload::from_iter([Bytes::from_static(b"hello "), Bytes::from_static(b"world")]);
        let real: [u8; 32] = sha2::Sha256::digest(b"hello world").into();
        let planted = [7u8; 32];
        let chunks: Vec<Bytes> = body.iter().cloned().collect();
        known(&body, planted, async {
            // The body's own buffers: the digest given (planted, to tell it from a computed one).
            assert_eq!(digest_of(&[&chunks[0], &chunks[1]]), planted);
            // Equal bytes elsewhere, part of the body, or more than it: computed.
            let (hello, world) = (b"hello ".to_vec(), b"world".to_vec());
            assert_eq!(digest_of(&[&hello, &world]), real);
            assert_eq!(digest_of(&[&chunks[0], &world]), real);
            let first: [u8; 32] = sha2::Sha256::digest(b"hello ").into();
            assert_eq!(digest_of(&[&chunks[0]]), first);
        })
        .await;
        assert_eq!(digest_of(&[&chunks[0], &chunks[1]]), real, "outside `known`, everything is hashed");
    }

    #[test]
    fn hmac_is_rfc_4231s() {
        // RFC 4231 test case 2.
        let mut context = Provider.hmac(DigestAlgorithm::Sha256, b"Jefe").expect("an hmac");
        context.update(b"what do ya want for nothing?");
        assert_eq!(
            crate::encoding::hex(context.finish().expect("finished")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
