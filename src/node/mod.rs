//! The node service: what runs on each gateway machine. It registers with the hub, keeps its
//! state in the data dir ([`store`]), and while running sends a heartbeat every second with
//! the machine's metrics ([`metrics`]) and learns its role and status. `gatehouse node run`
//! and the Configuration Manager drive the same [`NodeService`] through commands and a
//! status channel; nothing here knows which one it is.
//!
//! While it holds the gateway's lease it is also the dispatcher ([`dispatch`]): it claims runs
//! and hands them to workers ([`worker`], itself included) over the [`peer`] channel.
//!
//! Each node has its own key pair for the peer channel; the hub hands every node the roster of
//! its gateway (ids, addresses, public keys) with each heartbeat answer, and peers accept only
//! each other's keys from it ([`peer`]; [`guard`] keeps the port standing under abuse).
//! Credentials entered on any node reach the others through the peer channel
//! ([`credentials`]).
//!
//! Backups of the node's state are sealed with a password ([`backup`]). Every operation a
//! person starts on the node's settings, from the CLI or the window, is in [`ops`]. A node
//! may also serve its own `/metrics` on loopback ([`exporter`]).

pub mod add_node;
pub mod auto_update;
pub mod backup;
pub mod control;
pub mod credentials;
mod dispatch;
pub mod exporter;
mod guard;
pub mod logs;
pub mod metrics;
pub mod ops;
pub mod peer;
pub mod sealed;
pub mod status_file;
pub mod store;
pub mod tls;
pub mod update;
pub mod worker;

use crate::client::{ClientError, HubClient};
use crate::protocol::{
    CredentialStamp, GatewaySettings, Heartbeat, NodeMetrics, NodeState, Peer, RegisterRequest, Role,
    SealedCredential,
};
use metrics::MetricsSource;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use store::{NodeSettings, Secrets, Store, StoreError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How often a running node reports to the hub.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between attempts while the hub can't be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a failed heartbeat is retried at first, and how many times (10 s) before backing off.
const FAST_RETRY: Duration = Duration::from_millis(500);
const FAST_RETRIES: u32 = 20;

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
    #[error("the certificate can't be used for the peer channel: {0}")]
    Tls(#[from] rustls::Error),
    #[error(
        "can't listen on {address} for the peer channel ({reason}); is another node using that port? Register with another --peer-port"
    )]
    PeerPort { address: String, reason: std::io::Error },
    #[error("can't make this node's key pair for the peer channel: {0}")]
    PeerKey(#[from] peer::PeerError),
    #[error("the hub's CA file {}: {reason}", path.display())]
    HubCa { path: std::path::PathBuf, reason: String },
}

impl NodeError {
    /// The hub's refusal (its error body), when the hub refused.
    pub fn refusal(&self) -> Option<&crate::protocol::ErrorBody> {
        match self {
            NodeError::Hub(ClientError::Refused { body, .. }) => Some(body),
            _ => None,
        }
    }
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
    /// The certificate to encrypt the peer channel with (manual setup); `None`: express.
    pub tls: Option<crate::cert::Identity>,
    /// PEM CA certificates to trust for the hub's HTTPS (a private CA); kept in node.toml.
    pub hub_ca: Option<String>,
}

/// The largest hub CA file read: a PEM bundle of a few CA certificates is far smaller.
const MAX_HUB_CA_BYTES: u64 = 1 << 20;

/// Reads a PEM file of CA certificates to trust for the hub's HTTPS (a private CA), for
/// [`Registration::hub_ca`]: it must hold at least one certificate, and at most 1 MiB.
pub fn read_hub_ca(path: &std::path::Path) -> Result<String, NodeError> {
    let failed = |reason: String| NodeError::HubCa { path: path.to_owned(), reason };
    let size = std::fs::metadata(path).map_err(|e| failed(format!("can't be read ({e})")))?.len();
    if size > MAX_HUB_CA_BYTES {
        return Err(failed("is larger than 1 MiB; give the PEM CA certificate".to_owned()));
    }
    let pem =
        std::fs::read_to_string(path).map_err(|e| failed(format!("can't be read as PEM text ({e})")))?;
    crate::client::pem_roots(pem.as_bytes()).map_err(|e| failed(e.to_string()))?;
    Ok(pem)
}

/// The node's client of its hub: with its node token, through its proxy, trusting its hub CA.
pub fn hub_client(settings: &NodeSettings, token: &str) -> Result<HubClient, ClientError> {
    HubClient::for_node(
        &settings.hub_url,
        token,
        settings.proxy.as_deref(),
        settings.hub_ca.as_deref(),
        settings.hub_pin,
    )
}

/// Registers this machine with the gateway the key names, and stores the result.
pub async fn register(store: &Store, registration: Registration) -> Result<NodeSettings, NodeError> {
    // Only "not registered" goes on: damaged settings are named, never overwritten.
    match store.settings() {
        Ok(settings) => {
            return Err(NodeError::AlreadyRegistered {
                gateway: settings.gateway_name,
                name: settings.node_name,
            });
        }
        Err(StoreError::NotRegistered) => {}
        Err(e) => return Err(e.into()),
    }
    let key = crate::protocol::parse_auth_key(&registration.key)?;
    let host = crate::machine::host_name();
    let name = registration.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| host.clone());
    let peer_address =
        registration.peer_address.unwrap_or_else(|| format!("{host}:{}", registration.peer_port));
    // A fresh identity for every registration: only its public half goes to the hub.
    let peer_key = peer::StaticKey::generate()?;
    let request = RegisterRequest {
        name: name.trim().to_owned(),
        machine_id: store.machine_id()?,
        version: crate::version().to_owned(),
        peer_address: peer_address.clone(),
        encryption_thumbprint: registration.tls.as_ref().map(|t| t.thumbprint_sha256.clone()),
        public_key: Some(peer_key.public().to_owned()),
    };
    // The key without its pin goes to the hub; the pin checks who the hub is.
    let client = HubClient::for_node(&key.hub_url, &key.key, None, registration.hub_ca.as_deref(), key.pin)?;
    let answer = client.register(&request).await?;
    let settings = NodeSettings {
        hub_url: key.hub_url,
        gateway_id: answer.gateway_id,
        gateway_name: answer.gateway_name,
        node_id: answer.node_id,
        node_name: request.name,
        peer_port: registration.peer_port,
        peer_address,
        concurrency_limit: None,
        log_level: "info".to_owned(),
        proxy: None,
        hub_ca: registration.hub_ca,
        hub_pin: key.pin,
        metrics_listen: None,
        auto_update: None,
    };
    // Secrets first: settings are what says "registered". The embedded hub's admin token, if
    // this data dir hosts one, belongs to the machine, not the registration: keep it.
    let hub_admin_token = store.secrets().ok().and_then(|s| s.hub_admin_token);
    store.save_secrets(&Secrets {
        node_token: answer.node_token,
        peer_key: Some(peer_key),
        tls: registration.tls,
        hub_admin_token,
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
    let client = hub_client(&settings, &secrets.node_token)?;
    match client.unregister().await {
        // A 401: already removed by the admin, so nothing is left at the hub to remove.
        Ok(()) | Err(ClientError::Refused { status: 401, .. }) => {}
        Err(e) => return Err(e.into()),
    }
    store.forget_registration()?;
    status_file::forget(store);
    Ok(settings)
}

/// Commands to a running node service.
#[derive(Debug)]
pub enum NodeCommand {
    /// Send a heartbeat now rather than at the next tick.
    HeartbeatNow,
    /// Time the hub and every peer; the results (hub first) go to the sender.
    TestConnections(tokio::sync::oneshot::Sender<Vec<control::ConnectionTest>>),
    /// Update to the release the hub offers (`node update`); the sender gets (from, to) or
    /// why not, as a sentence.
    Update(tokio::sync::oneshot::Sender<Result<(String, String), String>>),
}

/// Everything a window or `node status` shows about the running service.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// The lease epoch the dispatcher claims with.
    pub lease_epoch: Option<i64>,
    /// This node's place in registration order.
    pub registered_order: i64,
    /// The gateway's settings: policy, thresholds, queue timeout.
    pub settings: GatewaySettings,
    /// The gateway's status with its reason, and the version most of its nodes run.
    pub gateway_state: Option<crate::protocol::GatewayState>,
    pub gateway_reason: Option<String>,
    pub gateway_version: Option<String>,
    pub hub_version: Option<String>,
    /// The runs this node is executing.
    pub runs: Vec<worker::CurrentRun>,
    /// The release the hub offers this node, with its advice ("update available: …").
    pub update: Option<crate::protocol::UpdateOffer>,
    /// Where an update under way is, as a sentence.
    pub update_phase: Option<String>,
    /// What this node's runs added up to since the service started.
    pub totals: worker::RunTotals,
    /// Who replaces this node's binary: the service itself (`node update`, the automatic
    /// update window), or nobody while a window runs it; `None` from a service too old to say.
    pub self_update: Option<update::SelfUpdate>,
    /// The offset of the service's local time from UTC (`UTC+01:00`), which its automatic
    /// update window is in.
    pub local_offset: Option<String>,
}

/// What the service's tasks share.
pub(crate) struct Shared {
    pub settings: NodeSettings,
    pub secrets: Secrets,
    pub client: HubClient,
    /// Set when the gateway encrypts its peer channel.
    pub tls: Option<tls::PeerTls>,
    pub store: Store,
    /// This node's own key pair for the peer channel.
    pub key: peer::StaticKey,
    /// The gateway's other nodes as the last heartbeat answer listed them: the only keys the
    /// peer channel accepts and calls. std Mutex: never held across .await.
    roster: Mutex<Vec<peer::Member>>,
    /// This node's credentials as last read or fetched. std Mutex: never held across .await.
    credentials: Mutex<credentials::CredentialSet>,
    /// A credential fetch is under way (one at a time).
    syncing: std::sync::atomic::AtomicBool,
    /// Credentials (peer, name, version) refused for a version ahead of the clock, so each
    /// is logged once.
    refused: Mutex<BTreeSet<(String, String, u64)>>,
    /// Sealed credentials (name, version) from the credential manager that didn't open, so
    /// each is logged once.
    unopened: Mutex<BTreeSet<(String, u64)>>,
    /// When the secrets file last changed as far as we know, so it is re-read (and decrypted)
    /// only after `gatehouse node credential …` touched it, not every second.
    secrets_seen: Mutex<Option<SystemTime>>,
    /// Peers (by name) the last attempt to reach failed; reported with each heartbeat.
    unreachable: Mutex<BTreeSet<String>>,
    /// `node update` under way, if any.
    updater: Arc<update::Updater>,
}

impl Shared {
    pub fn unreachable(&self, peer: &str) {
        // std Mutex, not tokio: never held across .await.
        if let Ok(mut set) = self.unreachable.lock() {
            set.insert(peer.to_owned());
        }
    }

    pub fn reachable(&self, peer: &str) {
        if let Ok(mut set) = self.unreachable.lock() {
            set.remove(peer);
        }
    }

    fn roster(&self) -> Vec<peer::Member> {
        self.roster.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn set_roster(&self, peers: &[Peer]) {
        let members = peers
            .iter()
            .filter_map(|p| peer::Member::new(&p.node_id, &p.peer_address, &p.public_key))
            .collect();
        if let Ok(mut roster) = self.roster.lock() {
            *roster = members;
        }
    }

    fn unreachable_peers(&self) -> Vec<String> {
        self.unreachable.lock().map(|set| set.iter().cloned().collect()).unwrap_or_default()
    }

    fn credentials(&self) -> credentials::CredentialSet {
        self.credentials.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Logs a credential refused for a version ahead of the clock, once per peer, name and
    /// version (never the value).
    fn refused(&self, peer: &str, name: &str, version: u64) {
        let first = self
            .refused
            .lock()
            .map_or(true, |mut seen| seen.insert((peer.to_owned(), name.to_owned(), version)));
        if first {
            tracing::warn!(
                from = %peer,
                credential = %name,
                version,
                "refused credential {name:?} from {peer}: its version is more than {} minutes ahead of this node's clock; set it again on {peer} (or fix that machine's clock)",
                credentials::CLOCK_ALLOWANCE_MS / 60_000
            );
        }
    }

    /// What the heartbeat says of this node's credentials: every name with its version (and
    /// the digest of that list), the names with a value, the newest version.
    fn report_credentials(&self, metrics: &mut NodeMetrics) {
        let held = self.credentials();
        let stamps = held.stamps(unix_millis());
        metrics.credential_version = held.newest_version();
        metrics.credential_names = held.live().map(|(name, _)| name.clone()).collect();
        metrics.credential_digest = Some(crate::credential_sync::digest(&stamps));
        metrics.credentials = stamps;
    }

    fn set_credentials(&self, set: credentials::CredentialSet) {
        if let Ok(mut current) = self.credentials.lock() {
            *current = set;
        }
    }
}

/// How often every node checks that it can reach each peer.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// Pings every peer now and then, so the heartbeat can report the ones this node can't reach
/// (the hub turns that into Limited, or Inactive when it reaches none).
async fn ping_peers(shared: Arc<Shared>, status: watch::Receiver<NodeStatus>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PING_INTERVAL) => {}
        }
        let peers: Vec<Peer> =
            status.borrow().peers.iter().filter(|p| p.status != NodeState::Offline).cloned().collect();
        for peer in peers {
            match ask_peer(&shared, &peer.peer_address, &peer::PeerRequest::Ping).await {
                Ok(_) => shared.reachable(&peer.name),
                Err(e) => {
                    tracing::warn!(peer = %peer.name, address = %peer.peer_address, "can't reach a peer: {e}");
                    shared.unreachable(&peer.name);
                }
            }
        }
    }
}

/// Picks up credentials changed on disk (`gatehouse node credential set` while running), and
/// merges the set of every peer that reports other credentials than this node, one of them
/// newer than this node's (a version ahead of the clock doesn't count: it is refused).
async fn sync_credentials(shared: Arc<Shared>, peers: Vec<Peer>, sealed: Vec<SealedCredential>) {
    use std::sync::atomic::Ordering;
    if shared.syncing.swap(true, Ordering::SeqCst) {
        // What the credential manager sent comes again with the next heartbeat answer.
        return;
    }
    let modified = shared.store.secrets_modified();
    let changed =
        shared.secrets_seen.lock().map(|mut seen| modified != std::mem::replace(&mut *seen, modified));
    if changed.unwrap_or(true)
        && let Ok(on_disk) = credentials::load(&shared.store)
        && on_disk != shared.credentials()
    {
        tracing::info!(newest = on_disk.newest_version(), "credentials changed on this node");
        shared.set_credentials(on_disk);
    }
    if !sealed.is_empty() {
        take_sealed(&shared, &sealed);
    }
    for peer in peers.iter().filter(|p| matches!(p.status, NodeState::Online | NodeState::Limited)) {
        let now = unix_millis();
        let mine = shared.credentials().stamps(now);
        let theirs = crate::credential_sync::stamps(&peer.metrics);
        if crate::credential_sync::digest(&theirs) == crate::credential_sync::digest(&mine) {
            continue;
        }
        let mine: BTreeMap<&str, &CredentialStamp> = mine.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut newer = false;
        for stamp in &theirs {
            let rank = crate::credential_sync::rank;
            if mine.get(stamp.name.as_str()).is_some_and(|ours| rank(ours) >= rank(stamp)) {
                continue;
            }
            if crate::credential_sync::too_far_ahead(stamp.version, now) {
                shared.refused(&peer.name, &stamp.name, stamp.version);
            } else {
                newer = true;
            }
        }
        if newer {
            fetch_credentials(&shared, peer).await;
        }
    }
    shared.syncing.store(false, Ordering::SeqCst);
}

/// The origin of credentials sealed by the credential manager, as their stamps carry it.
pub const CREDENTIAL_MANAGER: &str = "admin";

/// Opens the credentials the credential manager sealed for this node (the hub handed them
/// over with the heartbeat answer) and merges them like a peer's set; one that doesn't open
/// is logged once (name and version, never more) and left out.
fn take_sealed(shared: &Shared, sealed: &[SealedCredential]) {
    let settings = &shared.settings;
    let mut set = credentials::CredentialSet::default();
    for item in sealed {
        let binding = sealed::Binding {
            gateway_id: &settings.gateway_id,
            node_id: &settings.node_id,
            name: &item.name,
            version: item.version,
            deleted: item.deleted,
        };
        match sealed::open(&shared.key, &binding, &item.ciphertext) {
            Ok(value) => {
                let credential = credentials::Credential {
                    version: item.version,
                    origin: CREDENTIAL_MANAGER.to_owned(),
                    value,
                };
                set.entries.insert(item.name.clone(), credential);
            }
            Err(e) => {
                let first = shared
                    .unopened
                    .lock()
                    .map_or(true, |mut seen| seen.insert((item.name.clone(), item.version)));
                if first {
                    tracing::warn!(
                        credential = %item.name,
                        version = item.version,
                        "refused credential {:?} (version {}) from the credential manager: {e}; set it again with `gatehouse credential set --gateway`",
                        item.name,
                        item.version
                    );
                }
            }
        }
    }
    if set.entries.is_empty() {
        return;
    }
    match credentials::merge(&shared.store, &set) {
        Ok((held, merged)) => {
            for (name, version) in &merged.refused {
                shared.refused("the credential manager", name, *version);
            }
            if !merged.changed.is_empty() {
                let names = merged.changed.join(", ");
                tracing::info!("credentials set through the credential manager: {names}");
            }
            shared.set_credentials(held);
        }
        Err(e) => tracing::warn!("can't store the credentials from the credential manager: {e}"),
    }
}

/// Fetches a peer's set and merges it into this node's.
async fn fetch_credentials(shared: &Shared, peer: &Peer) {
    match ask_peer(shared, &peer.peer_address, &peer::PeerRequest::Credentials).await {
        Ok(peer::PeerResponse::Credentials { set }) => match credentials::merge(&shared.store, &set) {
            Ok((held, merged)) => {
                for (name, version) in &merged.refused {
                    shared.refused(&peer.name, name, *version);
                }
                if !merged.changed.is_empty() {
                    let names = merged.changed.join(", ");
                    tracing::info!(from = %peer.name, "credentials synced: {names}");
                }
                shared.set_credentials(held);
            }
            Err(e) => tracing::warn!("can't store the synced credentials: {e}"),
        },
        Ok(other) => {
            tracing::warn!(from = %peer.name, "unexpected answer to a credential request: {other:?}");
        }
        Err(e) => tracing::warn!(from = %peer.name, "can't fetch credentials: {e}"),
    }
}

/// A running node service, as its owner sees it.
pub struct NodeHandle {
    pub commands: mpsc::UnboundedSender<NodeCommand>,
    pub status: watch::Receiver<NodeStatus>,
    pub shutdown: CancellationToken,
    /// Set, before `shutdown` is cancelled, when an update installed a new binary: the
    /// process should exec it once the service stopped (`node run` does).
    pub restart: Arc<Mutex<Option<std::path::PathBuf>>>,
}

/// The node service of one data dir.
pub struct NodeService {
    store: Store,
    metrics: Box<dyn MetricsSource>,
    /// This process may replace its binary and restart into it (`node update`).
    updates: bool,
}

impl NodeService {
    pub fn new(store: Store, metrics: Box<dyn MetricsSource>) -> Self {
        NodeService { store, metrics, updates: false }
    }

    /// Lets `node update` replace this process's binary and restart into it: for `node run`,
    /// never for a window's in-process service.
    #[must_use]
    pub fn with_updates(mut self, updates: bool) -> Self {
        self.updates = updates;
        self
    }

    /// Starts the service on the current tokio runtime: heartbeats, the peer channel and (while
    /// this node holds the lease) the dispatcher. It stops when `shutdown` is cancelled.
    pub async fn spawn(
        mut self,
        shutdown: CancellationToken,
    ) -> Result<(NodeHandle, tokio::task::JoinHandle<()>), NodeError> {
        let settings = self.store.settings()?;
        let mut secrets = self.store.secrets()?;
        let key = peer_key(&self.store, &mut secrets)?;
        let client = hub_client(&settings, &secrets.node_token)?;
        let listen = listen_address(&settings);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|reason| NodeError::PeerPort { address: listen.to_string(), reason })?;
        let total_memory = self.metrics.sample().total_memory_bytes;
        let limit = settings
            .concurrency_limit
            .unwrap_or_else(|| metrics::default_concurrency(self.metrics.cores(), total_memory));
        let restart = Arc::new(Mutex::new(None));
        let updater = Arc::new(update::Updater::new(self.updates, Arc::clone(&restart)));
        let initial = NodeStatus {
            node_name: settings.node_name.clone(),
            gateway_name: settings.gateway_name.clone(),
            hub_url: settings.hub_url.clone(),
            self_update: Some(updater.self_update()),
            ..NodeStatus::default()
        };
        let (status_tx, status) = watch::channel(initial);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let tls = secrets.tls.as_ref().map(tls::PeerTls::new).transpose()?;
        let credentials = Mutex::new(credentials::CredentialSet { entries: secrets.credentials.clone() });
        let shared = Arc::new(Shared {
            settings,
            secrets,
            client,
            tls,
            store: self.store.clone(),
            key,
            roster: Mutex::new(Vec::new()),
            credentials,
            syncing: std::sync::atomic::AtomicBool::new(false),
            refused: Mutex::new(BTreeSet::new()),
            unopened: Mutex::new(BTreeSet::new()),
            // Not the file's time now: the secrets were read earlier, and a `credential set`
            // in between would never be noticed. Unknown makes the first sync read the file.
            secrets_seen: Mutex::new(None),
            unreachable: Mutex::new(BTreeSet::new()),
            updater,
        });

        let lookup = Arc::clone(&shared);
        let worker = worker::Worker::new(
            shared.client.clone(),
            limit,
            worker::Copier {
                node_name: shared.settings.node_name.clone(),
                credentials: Arc::new(move |name: &str| lookup.credentials().value(name).map(str::to_owned)),
                bandwidth: crate::transfer::bandwidth::Bandwidth::default(),
            },
            shutdown.clone(),
        );
        let peers =
            tokio::spawn(serve_peers(listener, Arc::clone(&shared), worker.clone(), shutdown.clone()));
        let dispatcher = tokio::spawn(dispatch::run(
            Arc::clone(&shared),
            worker.clone(),
            status.clone(),
            shutdown.clone(),
        ));
        let pings = tokio::spawn(ping_peers(Arc::clone(&shared), status.clone(), shutdown.clone()));
        let exporter = tokio::spawn(exporter::run(self.store.clone(), status.clone(), shutdown.clone()));
        let heartbeats =
            tokio::spawn(heartbeat_loop(self, shared, worker, status_tx, commands_rx, shutdown.clone()));
        let task = tokio::spawn(async move {
            let _ = tokio::join!(peers, dispatcher, heartbeats, pings, exporter);
        });
        Ok((NodeHandle { commands, status, shutdown, restart }, task))
    }
}

/// Where the peer channel listens: the registered address when it names an IP (so a node
/// registered as 127.0.0.1:port stays on loopback), else every interface on the peer port.
///
/// `GATEHOUSE_FAKE_FIREWALL=IP:PORT` makes it listen there instead, so peers dialling the
/// advertised address find nothing, as behind a closed firewall: a fake for tests only (no
/// firewall can be had on a test machine's loopback), announced loudly.
fn listen_address(settings: &NodeSettings) -> SocketAddr {
    if let Some(fake) = std::env::var("GATEHOUSE_FAKE_FIREWALL").ok().and_then(|a| a.parse().ok()) {
        tracing::warn!(listen = %fake, advertised = %settings.peer_address, "FAKE firewall: the peer channel listens elsewhere than advertised; for tests only");
        return fake;
    }
    settings
        .peer_address
        .parse::<SocketAddr>()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], settings.peer_port)))
}

/// Answers peers: authenticated hand-offs of runs, pings and credential requests. Each
/// connection must finish its handshakes within [`peer::HANDSHAKE_TIMEOUT`] while holding one
/// of the [`guard`]'s slots; beyond the cap it is closed at once.
async fn serve_peers(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    worker: worker::Worker,
    shutdown: CancellationToken,
) {
    let guard = guard::Guard::default();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("peer channel: accepting failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = guard.admit(address.ip()) else {
            drop(stream);
            guard.refused(address.ip(), &"too many connections are in their handshake; closed at once");
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%address, "peer channel: can't set TCP_NODELAY: {e}");
        }
        let (shared, worker, guard) = (Arc::clone(&shared), worker.clone(), guard.clone());
        tokio::spawn(async move {
            if let Err(e) = answer_peer(stream, &shared, worker, slot).await {
                guard.refused(address.ip(), &e);
            }
        });
    }
}

/// One peer connection: TLS first when the gateway encrypts (plaintext is refused), then the
/// Noise handshake against the current roster and the request's first frame (which a replayed
/// hello can't make), all within the handshake deadline and holding `slot`; then the rest of
/// the request and the answer.
async fn answer_peer(
    stream: tokio::net::TcpStream,
    shared: &Shared,
    worker: worker::Worker,
    slot: guard::Slot,
) -> Result<(), peer::PeerError> {
    let handle = |_, request| {
        let worker = worker.clone();
        async move {
            match request {
                peer::PeerRequest::Ping => peer::PeerResponse::Pong,
                peer::PeerRequest::Run { run } => worker.offer(*run),
                peer::PeerRequest::Credentials => {
                    peer::PeerResponse::Credentials { set: shared.credentials() }
                }
            }
        }
    };
    let roster = shared.roster();
    match &shared.tls {
        None => {
            let handshake = peer::accept_request(stream, &shared.key, &roster);
            let session = tokio::time::timeout(peer::HANDSHAKE_TIMEOUT, handshake)
                .await
                .map_err(|_| peer::PeerError::Timeout)??;
            drop(slot);
            session.answer(handle).await?;
        }
        Some(tls) => {
            let handshake = async {
                let stream = tls.acceptor.accept(stream).await?;
                peer::accept_request(stream, &shared.key, &roster).await
            };
            let session = tokio::time::timeout(peer::HANDSHAKE_TIMEOUT, handshake)
                .await
                .map_err(|_| peer::PeerError::Timeout)??;
            drop(slot);
            session.answer(handle).await?;
        }
    }
    Ok(())
}

/// This node's key pair for the peer channel. A data dir registered by an older version has
/// none: one is made and kept now, and the next heartbeat announces it (the upgrade path).
fn peer_key(store: &Store, secrets: &mut Secrets) -> Result<peer::StaticKey, NodeError> {
    if let Some(key) = &secrets.peer_key {
        return Ok(key.clone());
    }
    let key = peer::StaticKey::generate()?;
    secrets.peer_key = Some(key.clone());
    store.save_secrets(secrets)?;
    tracing::info!(
        "made this node's key pair for the peer channel; the hub learns it with the next heartbeat"
    );
    Ok(key)
}

/// What this node reports with a heartbeat.
fn measure(
    service: &mut NodeService,
    shared: &Shared,
    worker: &worker::Worker,
    hub_errors: u32,
) -> NodeMetrics {
    let sample = service.metrics.sample();
    let mut metrics = NodeMetrics {
        available_memory_bytes: sample.available_memory_bytes,
        total_memory_bytes: sample.total_memory_bytes,
        cpu_percent: sample.cpu_percent,
        network_in_bytes_per_second: sample.network_in_bytes_per_second,
        network_out_bytes_per_second: sample.network_out_bytes_per_second,
        runs_running: worker.running(),
        runs_limit: worker.limit(),
        unreachable_peers: shared.unreachable_peers(),
        encryption_thumbprint: shared.secrets.tls.as_ref().map(|t| t.thumbprint_sha256.clone()),
        hub_errors,
        platform: Some(crate::release::platform()),
        ..NodeMetrics::default()
    };
    (metrics.update_to, metrics.upgrading) = shared.updater.report();
    shared.report_credentials(&mut metrics);
    metrics
}

#[allow(clippy::too_many_lines, reason = "one beat: measure, send, apply the answer")]
async fn heartbeat_loop(
    mut service: NodeService,
    shared: Arc<Shared>,
    worker: worker::Worker,
    status: watch::Sender<NodeStatus>,
    mut commands: mpsc::UnboundedReceiver<NodeCommand>,
    shutdown: CancellationToken,
) {
    let mut hub_errors: u32 = 0;
    let mut wait: Duration;
    let mut first_beat = true; // Heartbeat::restarted, until a beat is answered
    let mut proof_wanted = true; // the hub asks for this node's key proof (first beat: offered)
    let mut auto_update = auto_update::AutoUpdater::default();
    // A deadline, not a sleep per turn: commands that don't beat must not delay the next beat.
    let mut next_beat = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next_beat) => {}
            Some(command) = commands.recv() => match command {
                NodeCommand::HeartbeatNow => {}
                NodeCommand::TestConnections(reply) => {
                    let peers = status.borrow().peers.clone();
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let _ = reply.send(control::run_connection_tests(shared, peers).await);
                    });
                    continue;
                }
                NodeCommand::Update(reply) => {
                    let offer = status.borrow().update.clone();
                    let _ = reply.send(shared.updater.request(offer.as_ref()).map_err(|e| e.to_string()));
                    // Beat now: the hub hears the request at once.
                }
            },
        }
        let metrics = measure(&mut service, &shared, &worker, hub_errors);
        let beat = Heartbeat { restarted: first_beat, ..heartbeat_of(&shared, &metrics, proof_wanted) };
        match shared.client.heartbeat(&beat).await {
            Ok(answer) => {
                first_beat = false;
                if hub_errors > 0 {
                    tracing::info!("the hub answers again after {hub_errors} failed attempts");
                }
                hub_errors = 0;
                // A standby node comes back just after the lease would lapse, so a dead
                // dispatcher is replaced in one lease time, not one lease time plus a beat.
                wait = match (answer.role, answer.lease_expires_in_ms) {
                    (Role::Worker, Some(ms)) => HEARTBEAT_INTERVAL.min(Duration::from_millis(ms + 20)),
                    _ => HEARTBEAT_INTERVAL,
                };
                if answer.role != status.borrow().role {
                    tracing::info!(role = ?answer.role, "this node's role changed");
                }
                shared.set_roster(&answer.peers);
                proof_wanted = answer.key_proof_wanted;
                let (peers, sealed) = (answer.peers.clone(), answer.sealed_credentials);
                tokio::spawn(sync_credentials(Arc::clone(&shared), peers, sealed));
                worker.set_bandwidth(answer.bandwidth_bytes_per_second.unwrap_or(0));
                shared.updater.after_beat(answer.update.as_ref(), &shared, &worker, &shutdown);
                auto_update.consider(&shared, answer.update.as_ref());
                let update_phase = shared.updater.describe(answer.update.as_ref());
                status.send_modify(|s| {
                    s.hub_connected = true;
                    s.hub_error = None;
                    s.role = answer.role;
                    s.state = Some(answer.status);
                    s.reason = answer.reason;
                    s.peers = answer.peers;
                    s.metrics = metrics;
                    s.last_heartbeat = Some(unix_seconds());
                    s.lease_epoch = Some(answer.lease_epoch);
                    s.registered_order = answer.registered_order;
                    s.settings = answer.settings;
                    s.gateway_state = answer.gateway_state;
                    s.gateway_reason = answer.gateway_reason;
                    s.gateway_version = answer.gateway_version;
                    s.hub_version = answer.hub_version;
                    s.runs = worker.current();
                    s.totals = worker.totals();
                    s.update = answer.update;
                    s.update_phase = update_phase;
                    s.local_offset = Some(auto_update::local_now().offset);
                });
            }
            Err(e) => {
                hub_errors = hub_errors.saturating_add(1);
                wait = retry_wait(hub_errors);
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
                    // Without a heartbeat the lease can't be trusted: stop dispatching.
                    s.role = Role::Worker;
                    s.lease_epoch = None;
                    s.metrics = metrics;
                    s.runs = worker.current();
                    s.totals = worker.totals();
                });
            }
        }
        next_beat = tokio::time::Instant::now() + wait;
    }
}

/// The heartbeat this node sends with `metrics` (and its key proof when the hub wants one).
fn heartbeat_of(shared: &Shared, metrics: &NodeMetrics, proof_wanted: bool) -> Heartbeat {
    Heartbeat {
        version: crate::version().to_owned(),
        metrics: metrics.clone(),
        peer_address: Some(shared.settings.peer_address.clone()),
        public_key: Some(shared.key.public().to_owned()),
        key_proof: if proof_wanted { key_proof(shared) } else { None },
        restarted: false,
    }
}

/// This node's peer-channel key signed with its certificate's key, when it encrypts (for
/// the credential manager, which doesn't take the hub's word for the key then).
fn key_proof(shared: &Shared) -> Option<crate::protocol::KeyProof> {
    let identity = shared.secrets.tls.as_ref()?;
    let settings = &shared.settings;
    match sealed::prove(identity, &settings.gateway_id, &settings.node_id, shared.key.public()) {
        Ok(proof) => Some(proof),
        Err(e) => {
            tracing::warn!("can't prove this node's key to the credential manager: {e}");
            None
        }
    }
}

/// The gateway's recent jobs as the hub shows them to this node (the window's Jobs tab).
pub async fn recent_jobs(store: &Store, limit: u32) -> Result<Vec<crate::protocol::JobView>, NodeError> {
    let settings = store.settings()?;
    let secrets = store.secrets()?;
    let client = hub_client(&settings, &secrets.node_token)?;
    Ok(client.node_jobs(Some(limit)).await?)
}

/// How long to wait after `failures` heartbeats in a row failed. Every half second at first,
/// well inside the hub's offline_after, so a hub restart or a blip of a few seconds costs no
/// run; then slower, up to MAX_BACKOFF, for a hub that stays away. A hub restart never needs a
/// node restart, and runs already handed out keep going meanwhile.
fn retry_wait(failures: u32) -> Duration {
    if failures <= FAST_RETRIES {
        FAST_RETRY
    } else {
        (HEARTBEAT_INTERVAL * 2u32.saturating_pow((failures - FAST_RETRIES).min(5))).min(MAX_BACKOFF)
    }
}

fn unix_seconds() -> u64 {
    unix_millis() / 1000
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Connects to the peer at `address` (over TLS when the gateway encrypts), pinning the key the
/// roster has for it, authenticates, asks `request`.
pub(crate) async fn ask_peer(
    shared: &Shared,
    address: &str,
    request: &peer::PeerRequest,
) -> Result<peer::PeerResponse, peer::PeerError> {
    let timeout = |_: tokio::time::error::Elapsed| peer::PeerError::Timeout;
    let member = shared
        .roster()
        .into_iter()
        .find(|m| m.address == address)
        .ok_or_else(|| peer::PeerError::NoKey(address.to_owned()))?;
    let stream = tokio::time::timeout(peer::EXCHANGE_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(timeout)??;
    // Small request/answer frames: don't let Nagle and delayed ACKs add ~40 ms to each.
    stream.set_nodelay(true)?;
    match &shared.tls {
        None => peer::ask(stream, &shared.key, &member, request).await,
        Some(tls) => {
            let handshake = tls.connector.connect(tls::server_name(address), stream);
            let stream = tokio::time::timeout(peer::EXCHANGE_TIMEOUT, handshake).await.map_err(timeout)??;
            peer::ask(stream, &shared.key, &member, request).await
        }
    }
}
