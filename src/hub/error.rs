//! The hub API's one error type, which is also the HTTP response: a status code and a JSON
//! `{ "error", "hint", "code" }`: a sentence a person can act on, and for refusals a program
//! may act on, a [`ErrorCode`] (so no client parses the sentence). Internal failures are
//! logged in full and answered with a generic 500 that leaks nothing.

use super::db::DbError;
use crate::protocol::{ErrorBody, ErrorCode};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub hint: Option<String>,
    pub code: Option<ErrorCode>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError { status, error: error.into(), hint: None, code: None }
    }

    /// Names the refusal for programs.
    #[must_use]
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.code = Some(code);
        self
    }

    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn bad_request(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, error)
    }

    pub fn unauthorized(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, error)
    }

    pub fn forbidden(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, error)
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, error)
    }

    pub fn conflict(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, error)
    }

    pub fn gone(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::GONE, error)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict(message) => ApiError::conflict(message),
            other => {
                tracing::error!("storage failure: {other}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the hub couldn't complete the request")
                    .with_hint("the hub's log has the details; try again")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.error, hint: self.hint, code: self.code };
        (self.status, axum::Json(body)).into_response()
    }
}
