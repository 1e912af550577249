//! A benchmark's request to the hub: sent, its JSON answer read, or the error: the status it
//! was refused with, or none when no answer came. Included by each bench with `#[path]`.

use gatehouse::protocol::ErrorBody;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use std::fmt;

/// A request the hub refused (`status`), or one that never got an answer (`None`).
#[derive(Debug)]
pub struct Refused {
    pub status: Option<StatusCode>,
    pub message: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{status}: {}", self.message),
            None => write!(f, "no answer: {}", self.message),
        }
    }
}

/// Sends `request` and reads its JSON answer; a refusal carries the hub's own sentence.
pub async fn send<R: DeserializeOwned>(request: reqwest::RequestBuilder) -> Result<R, Refused> {
    let response = request.send().await.map_err(|e| Refused { status: None, message: e.to_string() })?;
    let status = response.status();
    if status.is_success() {
        return response
            .json()
            .await
            .map_err(|e| Refused { status: Some(status), message: format!("unreadable answer: {e}") });
    }
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text).map_or(text, |body| body.error);
    Err(Refused { status: Some(status), message })
}
