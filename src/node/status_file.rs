//! `status.json` in the data dir: the latest status a `gatehouse node run` saw, kept so
//! `gatehouse node status` and a log export can show it when no service runs. Derived state:
//! losing it loses nothing but the last word of a stopped service.

use super::NodeStatus;
use super::store::Store;
use std::path::PathBuf;
use tokio::sync::watch;

/// The file's name in the data dir.
pub const FILE: &str = "status.json";

/// Where the file is.
pub fn path(store: &Store) -> PathBuf {
    store.dir().join(FILE)
}

/// The status the last service left, if it left a readable one.
pub fn last(store: &Store) -> Option<NodeStatus> {
    std::fs::read(path(store)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

/// Removes the file (the node was unregistered: its last status belongs to nobody now).
pub fn forget(store: &Store) {
    let _ = std::fs::remove_file(path(store));
}

/// Writes every status change to the file, atomically, until the service's status channel
/// closes. A write that fails is logged and the next change tries again.
pub async fn keep(store: Store, mut status: watch::Receiver<NodeStatus>) {
    let path = path(&store);
    while status.changed().await.is_ok() {
        let json = match serde_json::to_vec_pretty(&*status.borrow_and_update()) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!("can't encode the status for {}: {e}", path.display());
                continue;
            }
        };
        if let Err(e) = crate::machine::write_atomic(&path, &json) {
            tracing::warn!("can't write {}: {e}", path.display());
        }
    }
}
