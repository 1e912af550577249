//! What an attempt of a copy run leaves for the next one, kept at the hub with the run: the
//! files it committed, and the large upload it was in the middle of (upload id and the parts
//! already stored), so a take-over on any node sends again at most the parts in flight.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A copy run's checkpoint. Unknown or damaged checkpoints read as empty: the next attempt
/// then checks every file at the sink instead of trusting a list, which costs time, not data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Checkpoint {
    /// Indexes (in the part's file list) of the files that are at the sink, committed or skipped.
    pub done: BTreeSet<usize>,
    /// Bytes of those files, so progress after a take-over starts where it was.
    pub bytes_done: u64,
    /// The large upload under way, if any.
    pub upload: Option<Upload>,
}

/// A multipart upload (or a staging file, at a `file://` sink) that an attempt had started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// Index of the file in the part's file list (0 for a query's output).
    pub file: usize,
    /// The object key it will become.
    pub key: String,
    pub upload_id: String,
    /// SHA-256 (hex) of the whole content, as stored with the object; empty while a streamed
    /// export's upload is under way (it is known at the end).
    pub sha256: String,
    /// The whole content's size, where the upload began before it was known (a streamed
    /// export's, set at its fence); 0 otherwise.
    #[serde(default)]
    pub size: u64,
    pub part_size: u64,
    /// The part ids of the parts stored so far, by part number (0-based); `None` for a part
    /// that wasn't.
    pub parts: Vec<Option<String>>,
}

impl Checkpoint {
    /// Reads the checkpoint a run carries (`RunView::checkpoint`).
    pub fn from_value(value: Option<&serde_json::Value>) -> Checkpoint {
        value.and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_checkpoint_reads_as_empty() {
        assert_eq!(Checkpoint::from_value(Some(&serde_json::json!({"done": "x"}))), Checkpoint::default());
        assert_eq!(Checkpoint::from_value(None), Checkpoint::default());
    }

    #[test]
    fn a_checkpoint_round_trips() {
        let checkpoint = Checkpoint {
            done: [0, 3].into(),
            bytes_done: 42,
            upload: Some(Upload {
                file: 1,
                key: "a/b.bin".into(),
                upload_id: "u1".into(),
                sha256: "00".into(),
                size: 0,
                part_size: 8,
                parts: vec![Some("e1".into()), None],
            }),
        };
        assert_eq!(Checkpoint::from_value(Some(&checkpoint.to_value())), checkpoint);
    }
}
