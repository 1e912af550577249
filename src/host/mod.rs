//! Wires one process that runs a node: its control socket, the hub embedded in its data dir
//! (when express setup put one there) and the node service, started in that order and
//! stopped in the reverse one; and express setup ([`express`]), which may start that hub
//! first. `gatehouse node run` and the Configuration Manager's service thread both run a node
//! through a [`Host`], so neither knows how the parts fit together.
//!
//! **Invariant:** the control socket is bound before anything else: a second service of the
//! same data dir is refused by name (with the running one's pid) before it touches the hub's
//! port or the peer port. The hub stops last, so the node's last reports reach it.

pub mod express;
pub mod hub_access;

use crate::hub::embedded::EmbeddedHub;
use crate::node::control::{ControlError, ControlGroup, ControlSocket, ControlTarget};
use crate::node::logs::LogFeed;
use crate::node::metrics::MetricsSource;
use crate::node::store::{NodeSettings, Store};
use crate::node::{NodeError, NodeHandle, NodeService};
use express::{ExpressError, ExpressOptions};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why the node service didn't start. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The control socket can't be had; [`ControlError::AlreadyRunning`] when another
    /// service of this data dir runs.
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the embedded hub didn't start: {0}")]
    Hub(#[from] ExpressError),
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// One process's node: the data dir, the embedded hub while it runs, and the token that
/// stops everything the host started.
pub struct Host {
    store: Store,
    shutdown: CancellationToken,
    hub: Option<EmbeddedHub>,
    /// The group the control socket is shared with (`node run --control-group`), if any.
    control_group: Option<ControlGroup>,
    /// `node update` may replace this process's binary (`node run` only).
    updates: bool,
}

/// A node service this host started, serving its control socket.
pub struct Running {
    pub handle: NodeHandle,
    task: JoinHandle<()>,
    control: JoinHandle<()>,
}

impl Running {
    /// Stops the service, then its control socket (which removes the socket file, so the next
    /// `node run` or window finds no service here), and waits for both.
    pub async fn stop(self) {
        self.handle.shutdown.cancel();
        let _ = self.task.await;
        let _ = self.control.await;
    }
}

impl Host {
    /// A host for the data dir of `store`; cancelling `shutdown` stops all it starts.
    pub fn new(store: Store, shutdown: CancellationToken) -> Self {
        Host { store, shutdown, hub: None, control_group: None, updates: false }
    }

    /// Shares the control socket of the services this host starts with `group` (the system
    /// unit's `gatehouse`): its members may attach, the data dir's files stay owner-only.
    pub fn share_control_socket(&mut self, group: ControlGroup) {
        self.control_group = Some(group);
    }

    /// Lets the node service update this process's binary and restart into it (`node run`;
    /// a window's service never does).
    #[must_use]
    pub fn with_updates(mut self) -> Self {
        self.updates = true;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Registers this machine by express setup ([`express::express_setup`]); the embedded hub
    /// it started, if any, keeps running with this host.
    pub async fn express(&mut self, options: &ExpressOptions) -> Result<NodeSettings, ExpressError> {
        let outcome = express::express_setup(&self.store, options, self.shutdown.child_token()).await?;
        // `None`: express reused the embedded hub this host already runs.
        if outcome.hub.is_some() {
            self.hub = outcome.hub;
        }
        Ok(outcome.settings)
    }

    /// Starts the node service: binds the control socket, starts the data dir's embedded hub
    /// (if it hosts one and it isn't running yet), spawns the service and serves the socket.
    /// The service stops on [`Running::stop`], a Stop through the socket, or this host's
    /// shutdown.
    pub async fn start(
        &mut self,
        metrics: Box<dyn MetricsSource>,
        logs: LogFeed,
    ) -> Result<Running, HostError> {
        let control = ControlSocket::bind_shared(self.store.dir(), self.control_group.as_ref()).await?;
        if self.hub.is_none() {
            self.hub =
                express::start_embedded_hub_if_configured(&self.store, self.shutdown.child_token()).await?;
            if let Some(hub) = &self.hub {
                tracing::info!(url = %hub.url, "the embedded hub of this data dir is running");
            }
        }
        let service = NodeService::new(self.store.clone(), metrics).with_updates(self.updates);
        let (handle, task) = service.spawn(self.shutdown.child_token()).await?;
        // A Stop request through the socket stops this service (not the hub).
        let control = control.serve(ControlTarget::new(&handle, logs), handle.shutdown.clone());
        Ok(Running { handle, task, control })
    }

    /// Moves the embedded hub to `access` ([`hub_access::set_hub_access`]): stops it if this
    /// host runs it; the next [`Host::start`] starts it where it listens now. Call it while
    /// the node service is stopped.
    pub async fn set_hub_access(
        &mut self,
        access: crate::hub::embedded::Access,
    ) -> Result<hub_access::HubAccessChanged, hub_access::HubAccessError> {
        if let Some(hub) = self.hub.take()
            && let Err(e) = hub.stop().await
        {
            tracing::warn!("the embedded hub stopped with an error: {e}");
        }
        hub_access::set_hub_access(&self.store, access)
    }

    /// Stops the embedded hub, if this host runs one, waiting at most `patience`; call it
    /// after the service stopped.
    pub async fn stop(&mut self, patience: Duration) {
        self.shutdown.cancel();
        if let Some(hub) = self.hub.take() {
            match tokio::time::timeout(patience, hub.stop()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("the embedded hub stopped with an error: {e}"),
                Err(_) => tracing::warn!("the embedded hub didn't stop within {patience:?}"),
            }
        }
    }
}
