//! Who can reach the embedded hub: opened to other machines (HTTPS on the machine's address,
//! with a certificate the hub makes for itself) or back to this one (HTTP on loopback), from
//! the window's Settings and `gatehouse node hub-access` alike. The hub moves
//! ([`crate::hub::embedded::set_access`]) while it is stopped, and the local node follows it
//! ([`crate::node::add_node::follow_hub`]) so it keeps working.

use crate::hub::embedded::{self, EmbeddedError};
pub use crate::hub::embedded::{Access, Reach};
use crate::node::add_node::{FollowedHub, follow_hub};
use crate::node::ops::OpError;
use crate::node::store::{Store, StoreError};
use std::fmt;

/// Why the hub's access didn't change (or the node didn't follow). Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum HubAccessError {
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the embedded hub moved to {url}, but this node's settings couldn't follow ({reason}); switch again to retry"
    )]
    Follow { url: String, reason: OpError },
}

/// Where the embedded hub listens now, and where this node points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAccessChanged {
    pub reach: Reach,
    /// This node's settings after following the hub; `None` when the node isn't registered
    /// with it.
    pub node: Option<FollowedHub>,
}

impl fmt::Display for HubAccessChanged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reach.pin {
            Some(pin) => write!(
                f,
                "the embedded hub now listens on {} for other machines too, over HTTPS with a certificate it made for itself (SHA-256 {pin}); keys for new nodes carry that fingerprint",
                self.reach.url
            )?,
            None => write!(
                f,
                "the embedded hub now listens on {} for this machine only; nodes of other machines can't reach it until it is opened again",
                self.reach.url
            )?,
        }
        if self.node.is_some() {
            f.write_str("; this node follows it")?;
        }
        Ok(())
    }
}

/// Where the embedded hub of `store`'s data dir is reached; `None` when it hosts none (or
/// its files can't be read: said in the log, and the next start says it again).
pub fn reach(store: &Store) -> Option<Reach> {
    embedded::reach(store.dir()).unwrap_or_else(|e| {
        tracing::warn!("can't tell where the embedded hub listens: {e}");
        None
    })
}

/// Moves the stopped embedded hub of `store`'s data dir to `access`, and re-points this node
/// when it is registered with that hub.
pub fn set_hub_access(store: &Store, access: Access) -> Result<HubAccessChanged, HubAccessError> {
    let before = embedded::reach(store.dir())?.ok_or(EmbeddedError::NoEmbeddedHub)?;
    let follows = match store.settings() {
        Ok(settings) => settings.hub_url == before.url,
        Err(StoreError::NotRegistered) => false,
        Err(e) => return Err(e.into()),
    };
    let reach = embedded::set_access(store.dir(), access)?;
    let node = if follows {
        let followed = follow_hub(store, &reach.url, reach.pin, reach.address.ip())
            .map_err(|reason| HubAccessError::Follow { url: reach.url.clone(), reason })?;
        Some(followed)
    } else {
        None
    };
    Ok(HubAccessChanged { reach, node })
}
