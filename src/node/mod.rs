//! The node service: what runs on each gateway machine. It registers with the hub, keeps its
//! state in the data dir ([`store`]), and while running sends a heartbeat every second with
//! the machine's metrics ([`metrics`]) and learns its role and status. `gatehouse node run`
//! and the Configuration Manager drive the same [`NodeService`] through commands and a
//! status channel; nothing here knows which one it is.
//!
//! Not here yet (later steps of the node issue): the dispatcher/worker loop, the peer
//! channel, credential sync, throttling, backups.

pub mod metrics;
pub mod store;

use crate::client::{ClientError, HubClient};
use crate::protocol::{Heartbeat, NodeMetrics, NodeState, Peer, RegisterRequest, Role};
use metrics::MetricsSource;
use std::time::{Duration, SystemTime};
use store::{NodeSettings, Secrets, Store, StoreError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How often a running node reports to the hub.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between attempts while the hub can't be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What can go wrong in node operations that a person starts.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hub(#[from] ClientError),
    #[error(
        "this node is already registered with gateway '{gateway}' as '{name}'; unregister it first: gatehouse node unregister"
    )]
    AlreadyRegistered { gateway: String, name: String },
    #[error(transparent)]
    Key(#[from] crate::protocol::MalformedKey),
}

/// What to register with.
pub struct Registration {
    /// The gateway auth key (`gh1_…`); it names the hub and the gateway.
    pub key: String,
    /// Unique in the gateway and never changed; defaults to the host name.
    pub name: Option<String>,
    /// Port of this node's peer channel.
    pub peer_port: u16,
    /// `host:port` peers use to reach this node; defaults to `<host name>:<peer_port>`.
    pub peer_address: Option<String>,
}

/// Registers this machine with the gateway the key names, and stores the result.
pub async fn register(store: &Store, registration: Registration) -> Result<NodeSettings, NodeError> {
    if let Ok(settings) = store.settings() {
        return Err(NodeError::AlreadyRegistered {
            gateway: settings.gateway_name,
            name: settings.node_name,
        });
    }
    let key = crate::protocol::parse_auth_key(&registration.key)?;
    let host = host_name();
    let name = registration.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| host.clone());
    let request = RegisterRequest {
        name: name.trim().to_owned(),
        machine_id: store.machine_id()?,
        version: crate::VERSION.to_owned(),
        peer_address: registration
            .peer_address
            .unwrap_or_else(|| format!("{host}:{}", registration.peer_port)),
        encryption_thumbprint: None,
    };
    let client = HubClient::new(&key.hub_url, registration.key.trim())?;
    let answer = client.register(&request).await?;
    let settings = NodeSettings {
        hub_url: key.hub_url,
        gateway_id: answer.gateway_id,
        gateway_name: answer.gateway_name,
        node_id: answer.node_id,
        node_name: request.name,
        peer_port: registration.peer_port,
        concurrency_limit: None,
        log_level: "info".to_owned(),
    };
    // Secrets first: settings are what says "registered".
    store.save_secrets(&Secrets {
        node_token: answer.node_token,
        gateway_secret: answer.gateway_secret,
        ..Secrets::default()
    })?;
    store.save_settings(&settings)?;
    Ok(settings)
}

/// Removes this node from its gateway at the hub, then forgets the registration here. If the
/// hub can't be reached nothing changes, so the hub is never left with a ghost node.
pub async fn unregister(store: &Store) -> Result<NodeSettings, NodeError> {
    let settings = store.settings()?;
    let secrets = store.secrets()?;
    let client = HubClient::new(&settings.hub_url, &secrets.node_token)?;
    match client.unregister().await {
        // A 401: already removed by the admin, so nothing is left at the hub to remove.
        Ok(()) | Err(ClientError::Refused { status: 401, .. }) => {}
        Err(e) => return Err(e.into()),
    }
    store.forget_registration()?;
    Ok(settings)
}

/// The machine's host name, the default node name.
pub fn host_name() -> String {
    sysinfo::System::host_name().ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "gatehouse-node".to_owned())
}

/// Commands to a running node service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    /// Send a heartbeat now rather than at the next tick.
    HeartbeatNow,
}

/// Everything a window or `node status` shows about the running service.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub node_name: String,
    pub gateway_name: String,
    pub hub_url: String,
    /// The last heartbeat reached the hub.
    pub hub_connected: bool,
    /// Why the last attempt failed, as a sentence.
    pub hub_error: Option<String>,
    pub role: Role,
    /// The status the hub computed for this node, with its reason.
    pub state: Option<NodeState>,
    pub reason: Option<String>,
    pub peers: Vec<Peer>,
    pub metrics: NodeMetrics,
    /// Seconds since the Unix epoch of the last successful heartbeat.
    pub last_heartbeat: Option<u64>,
}

/// A running node service, as its owner sees it.
pub struct NodeHandle {
    pub commands: mpsc::UnboundedSender<NodeCommand>,
    pub status: watch::Receiver<NodeStatus>,
    pub shutdown: CancellationToken,
}

/// The node service of one data dir.
pub struct NodeService {
    store: Store,
    metrics: Box<dyn MetricsSource>,
}

impl NodeService {
    pub fn new(store: Store, metrics: Box<dyn MetricsSource>) -> Self {
        NodeService { store, metrics }
    }

    /// Starts the service on the current tokio runtime; it stops when `shutdown` is cancelled.
    pub fn spawn(
        self,
        shutdown: CancellationToken,
    ) -> Result<(NodeHandle, tokio::task::JoinHandle<()>), NodeError> {
        let settings = self.store.settings()?;
        let secrets = self.store.secrets()?;
        let client = HubClient::new(&settings.hub_url, &secrets.node_token)?;
        let initial = NodeStatus {
            node_name: settings.node_name.clone(),
            gateway_name: settings.gateway_name.clone(),
            hub_url: settings.hub_url.clone(),
            ..NodeStatus::default()
        };
        let (status_tx, status) = watch::channel(initial);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(heartbeat_loop(
            self,
            settings,
            secrets,
            client,
            status_tx,
            commands_rx,
            shutdown.clone(),
        ));
        Ok((NodeHandle { commands, status, shutdown }, task))
    }
}

async fn heartbeat_loop(
    mut service: NodeService,
    settings: NodeSettings,
    secrets: Secrets,
    client: HubClient,
    status: watch::Sender<NodeStatus>,
    mut commands: mpsc::UnboundedReceiver<NodeCommand>,
    shutdown: CancellationToken,
) {
    let mut hub_errors: u32 = 0;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            Some(NodeCommand::HeartbeatNow) = commands.recv() => {}
        }
        let sample = service.metrics.sample();
        let limit = settings.concurrency_limit.unwrap_or_else(|| {
            metrics::default_concurrency(service.metrics.cores(), sample.total_memory_bytes)
        });
        let metrics = NodeMetrics {
            available_memory_bytes: sample.available_memory_bytes,
            total_memory_bytes: sample.total_memory_bytes,
            cpu_percent: sample.cpu_percent,
            network_in_bytes_per_second: sample.network_in_bytes_per_second,
            network_out_bytes_per_second: sample.network_out_bytes_per_second,
            runs_running: 0,
            runs_limit: limit,
            credential_version: secrets.credential_version,
            hub_errors,
            ..NodeMetrics::default()
        };
        let beat = Heartbeat { version: crate::VERSION.to_owned(), metrics: metrics.clone() };
        match client.heartbeat(&beat).await {
            Ok(answer) => {
                if hub_errors > 0 {
                    tracing::info!("the hub answers again after {hub_errors} failed attempts");
                }
                hub_errors = 0;
                wait = HEARTBEAT_INTERVAL;
                let previous_role = status.borrow().role;
                if answer.role != previous_role {
                    tracing::info!(role = ?answer.role, "this node's role changed");
                }
                status.send_modify(|s| {
                    s.hub_connected = true;
                    s.hub_error = None;
                    s.role = answer.role;
                    s.state = Some(answer.status);
                    s.reason = answer.reason;
                    s.peers = answer.peers;
                    s.metrics = metrics;
                    s.last_heartbeat = Some(unix_seconds());
                });
            }
            Err(e) => {
                hub_errors = hub_errors.saturating_add(1);
                // Keep trying, slower each time, up to MAX_BACKOFF: a hub restart must not
                // need a node restart.
                wait = (HEARTBEAT_INTERVAL * 2u32.saturating_pow(hub_errors.min(5))).min(MAX_BACKOFF);
                let message = e.to_string();
                if hub_errors == 1 || hub_errors.is_power_of_two() {
                    tracing::warn!(
                        "heartbeat failed ({hub_errors} in a row), retrying in {} s: {message}",
                        wait.as_secs()
                    );
                }
                status.send_modify(|s| {
                    s.hub_connected = false;
                    s.hub_error = Some(message);
                    s.metrics = metrics;
                });
            }
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
