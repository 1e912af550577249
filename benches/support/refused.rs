//! The error of a benchmark's request to the hub: the status it was refused with, or none
//! when no answer came. Included by each bench with `#[path]`.

use reqwest::StatusCode;
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
