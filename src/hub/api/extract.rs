//! The API's request extractors: JSON bodies, path parameters and query strings whose every
//! rejection is a 4xx with our JSON error body (NUL characters refused alike), and the body
//! size limits (the router's default, and a route's own through [`limited`]).

use crate::hub::HubState;
use crate::hub::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::MethodRouter;
use axum::{Extension, Json};
use serde::de::DeserializeOwned;

/// Request bodies above this are refused with 413 before they are parsed.
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024;

/// A route whose bodies may be larger than [`MAX_BODY_BYTES`]. The route's limit overrides
/// the router's, and is kept beside it for the 413 sentence.
pub(super) fn limited(route: MethodRouter<HubState>, bytes: usize) -> MethodRouter<HubState> {
    route
        .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(bytes))
        .layer(Extension(BodyLimit(bytes)))
}

/// The body limit of a route that has its own ([`limited`]).
#[derive(Clone, Copy)]
struct BodyLimit(usize);

/// A JSON body whose every rejection (bad JSON, unknown field, too large, wrong type) is a
/// 4xx with our JSON error body.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json =
            req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(
                |v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")),
            );
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let limit = req.extensions().get::<BodyLimit>().map_or(MAX_BODY_BYTES, |l| l.0);
        let body = axum::body::Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, format!("the request body is larger than {limit} bytes"))
            } else {
                ApiError::new(status, format!("the request body can't be read: {}", rejection.body_text()))
            }
        })?;
        // JSON can carry NUL only as \u0000; no name, key or message needs it, and
        // PostgreSQL text can't hold it, so refuse it for every request the same way.
        if body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
            return Err(ApiError::bad_request(
                "the request contains a NUL character (\\u0000), which no field may hold",
            ));
        }
        match Json::<T>::from_bytes(&body) {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_error(&rejection, limit)),
        }
    }
}

/// Path parameters whose rejection (e.g. invalid UTF-8) is a 400 with our JSON error body.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul(parts.uri.path(), "URL")?;
        Path::<T>::from_request_parts(parts, state).await.map(|Path(value)| ApiPath(value)).map_err(
            |rejection| ApiError::bad_request(format!("the URL is not valid: {}", rejection.body_text())),
        )
    }
}

/// A percent-encoded NUL (`%00`) in a URL's path or query: refused like one in a body.
fn refuse_nul(text: &str, what: &str) -> Result<(), ApiError> {
    if text.as_bytes().windows(3).any(|w| w.eq_ignore_ascii_case(b"%00")) {
        return Err(ApiError::bad_request(format!(
            "the {what} contains a NUL character (%00), which no name or id holds"
        )));
    }
    Ok(())
}

fn json_error(rejection: &JsonRejection, limit: usize) -> ApiError {
    let status = rejection.status();
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("the request body is larger than {limit} bytes"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "send the body as JSON with Content-Type: application/json".to_owned()
        }
        _ => format!("the request body is not valid: {}", rejection.body_text()),
    };
    ApiError::new(status, error)
}

/// A query string whose rejection is a 400 with our JSON error body.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul(parts.uri.query().unwrap_or_default(), "query string")?;
        Query::<T>::from_request_parts(parts, state).await.map(|Query(value)| ApiQuery(value)).map_err(
            |rejection| {
                ApiError::bad_request(format!("the query string is not valid: {}", rejection.body_text()))
            },
        )
    }
}
