//! A short-lived memory of authenticated nodes, so the per-run requests of a busy gateway
//! (assign, start, finish) don't each read the node's row again. It is derived state only: an
//! entry lives one second, and a node removed through this hub is forgotten at once (through
//! another hub, within that second).

use super::db::NodeRow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct NodesCache {
    // std Mutex, not tokio: never held across .await.
    entries: Mutex<HashMap<String, (NodeRow, Instant)>>,
}

impl NodesCache {
    pub fn get(&self, node_id: &str) -> Option<NodeRow> {
        let entries = self.entries.lock().ok()?;
        entries.get(node_id).filter(|(_, at)| at.elapsed() < TTL).map(|(row, _)| row.clone())
    }

    pub fn put(&self, row: &NodeRow) {
        if let Ok(mut entries) = self.entries.lock() {
            // Drop stale entries as we go, so removed nodes don't linger in memory.
            entries.retain(|_, (_, at)| at.elapsed() < TTL);
            entries.insert(row.id.clone(), (row.clone(), Instant::now()));
        }
    }

    pub fn forget(&self, node_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(node_id);
        }
    }
}
