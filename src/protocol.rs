//! The wire types shared by the hub and the nodes (and the admin CLI): JSON bodies of the
//! hub's HTTP API, versioned by the `/api/v1` prefix. Only serde structs live here; no
//! behaviour, so hub and node can change independently as long as these hold.
//!
//! Every request body rejects unknown fields, so a typo in a client is an error, not a no-op.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The error body of every refused request: what went wrong and what to do about it, and,
/// for refusals a program may act on, which one it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The sentence, for people.
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Which refusal this is, for programs (the window picks the wizard page by it); never
    /// parse `error` for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

/// A refusal a program may act on, next to its sentence in [`ErrorBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The node name is taken in the gateway (names are unique and never reused).
    NameTaken,
    /// This machine is registered with another gateway.
    MachineElsewhere,
    /// This machine is registered with this gateway already.
    MachineAlreadyHere,
    /// The node is older than the gateway version.
    TooOld,
    /// The gateway has `max_nodes` nodes.
    GatewayFull,
    /// The gateway encrypts its peer channel; a node without a certificate can't join.
    NeedsEncryption,
    /// The gateway's encryption can change only while it has a single node.
    EncryptionModeLocked,
    /// A code this version doesn't know (from a newer hub).
    #[serde(other)]
    Unknown,
}

/// How the dispatcher picks a worker for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The first available node in registration order; the next one when it is full.
    #[default]
    Primary,
    /// A random available node.
    Distribute,
}

/// A gateway's settings. Every field has a default, so a create request may omit any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    pub max_nodes: u32,
    pub policy: Policy,
    /// 0–100; 0 turns the limit off.
    pub cpu_threshold: u8,
    /// 0–100; 0 turns the limit off.
    pub memory_threshold: u8,
    pub aggregation_minutes: u32,
    pub queue_timeout_seconds: u32,
    /// Megabits per second (Mbit/s, 125,000 bytes a second, as network links are rated) that
    /// the gateway's copies may send in all, shared by the nodes copying at the time; 0 turns
    /// the limit off. Left out of the JSON
    /// when off, so nodes that don't know it (their settings refuse unknown fields) still
    /// read the settings of a gateway without a limit.
    #[serde(skip_serializing_if = "is_zero")]
    pub bandwidth_limit_mbps: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            max_nodes: 4,
            policy: Policy::Primary,
            cpu_threshold: 0,
            memory_threshold: 0,
            aggregation_minutes: 5,
            queue_timeout_seconds: 60,
            bandwidth_limit_mbps: 0,
        }
    }
}

/// `POST /api/v1/gateways`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGateway {
    pub name: String,
    #[serde(default)]
    pub settings: GatewaySettings,
}

/// `PATCH /api/v1/gateways/{gateway}/settings`: only the fields given change. The same body
/// may also carry the settings of [`SettingsPatch`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettings {
    pub max_nodes: Option<u32>,
    pub policy: Option<Policy>,
    pub cpu_threshold: Option<u8>,
    pub memory_threshold: Option<u8>,
    pub aggregation_minutes: Option<u32>,
    pub queue_timeout_seconds: Option<u32>,
}

/// `PATCH /api/v1/gateways/{gateway}/settings` with every setting: [`UpdateSettings`] and the
/// settings added after it, which it can't take as fields while callers build it field by
/// field (the window does). One body on the wire; only the fields given change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_threshold: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_threshold: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_minutes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout_seconds: Option<u32>,
    /// See [`GatewaySettings::bandwidth_limit_mbps`]; changes take effect at each node's next
    /// heartbeat, also while copies run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit_mbps: Option<u32>,
}

impl From<UpdateSettings> for SettingsPatch {
    fn from(u: UpdateSettings) -> Self {
        SettingsPatch {
            max_nodes: u.max_nodes,
            policy: u.policy,
            cpu_threshold: u.cpu_threshold,
            memory_threshold: u.memory_threshold,
            aggregation_minutes: u.aggregation_minutes,
            queue_timeout_seconds: u.queue_timeout_seconds,
            bandwidth_limit_mbps: None,
        }
    }
}

/// Node status, computed by the hub. Every status but `Online` comes with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    Online,
    Offline,
    Upgrading,
    Limited,
    Inactive,
}

/// Gateway status, from its nodes' statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayState {
    NeedsRegistration,
    Online,
    Offline,
    Limited,
}

/// A node's role in its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds the dispatcher lease: pulls runs from the hub and hands them out.
    Dispatcher,
    #[default]
    Worker,
}

/// What a node measures and reports every heartbeat.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeMetrics {
    pub available_memory_bytes: u64,
    pub total_memory_bytes: u64,
    pub cpu_percent: f32,
    pub network_in_bytes_per_second: u64,
    pub network_out_bytes_per_second: u64,
    pub runs_running: u32,
    pub runs_limit: u32,
    /// The newest version among its credentials (a node older than per-credential versions
    /// reports the one version of its whole set here, and no `credentials`).
    pub credential_version: u64,
    /// SHA-256 thumbprint of the peer-channel certificate; `None` when encryption is off.
    pub encryption_thumbprint: Option<String>,
    /// Peers this node could not reach on the peer channel, by node name.
    pub unreachable_peers: Vec<String>,
    /// Hub requests that failed since the last successful heartbeat.
    pub hub_errors: u32,
    /// The node is installing a new version: it takes no new runs, lets its runs finish, then
    /// installs [`NodeMetrics::update_to`] and restarts into it.
    pub upgrading: bool,
    /// The release version this node wants to update to (`node update`, or its update
    /// window), or is updating to; it asks the hub for the gateway's one update slot with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_to: Option<String>,
    /// The platform its binary is built for (`linux-x86_64`), so the hub offers the release
    /// for it; `None` from an older node (offered nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Names of the data-store credentials it holds (never values), so the hub can refuse a
    /// job naming a credential no node has.
    pub credential_names: Vec<String>,
    /// Every credential it holds, deletions too, with its version, sorted by name (never a
    /// value), so peers and the hub see who is behind on what.
    pub credentials: Vec<CredentialStamp>,
    /// SHA-256 (hex) of `credentials` ([`crate::credential_sync::digest`]); `None` from a node
    /// older than per-credential versions.
    pub credential_digest: Option<String>,
}

/// One credential a node holds, as it reports it: name, version and who wrote it, never
/// the value. Versions are milliseconds since the Unix epoch (or one more than the previous
/// version of the name, if that was later).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialStamp {
    pub name: String,
    pub version: u64,
    /// The node the version was written on (empty for a set from before per-credential
    /// versions); it breaks a tie between two writes with the same version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// A deletion, kept (as a tombstone) so every node deletes it too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// One credential across a gateway's nodes, as the hub's gateway view shows it (what
/// `credential list --gateway G` needs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayCredential {
    pub name: String,
    /// The newest version an online node holds (within the clock allowance); `None` when the
    /// only versions are ahead of the clock.
    pub version: Option<u64>,
    /// Where that version was written.
    #[serde(default)]
    pub origin: String,
    /// That version is a deletion.
    #[serde(default)]
    pub deleted: bool,
    /// Nodes holding that version.
    #[serde(default)]
    pub nodes_current: Vec<String>,
    /// Nodes holding an older version or none (an offline node by its last report).
    #[serde(default)]
    pub nodes_behind: Vec<String>,
    /// Nodes holding a version beyond the clock plus the allowance, which their peers refuse.
    #[serde(default)]
    pub nodes_ahead: Vec<String>,
}

/// `POST /api/v1/register`, authenticated with a gateway auth key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Unique in the gateway, never renamed.
    pub name: String,
    /// A stable id of the machine, kept in the node's data dir, so a machine can't sit in two
    /// gateways at once.
    pub machine_id: String,
    pub version: String,
    /// `host:port` where peers reach this node's peer channel.
    pub peer_address: String,
    /// SHA-256 thumbprint of the certificate when the node encrypts its peer channel.
    pub encryption_thumbprint: Option<String>,
    /// The node's own X25519 public key for the peer channel (base64), made for this
    /// registration; the private key never leaves the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// The answer to a registration: the node's own credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub node_id: String,
    pub gateway_id: String,
    pub gateway_name: String,
    /// Authenticates this node to the hub from now on. Shown once; store it encrypted.
    pub node_token: String,
}

/// `POST /api/v1/heartbeat`, authenticated with the node token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub version: String,
    pub metrics: NodeMetrics,
    /// Where peers reach this node now, when it changed since registration (a new port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<String>,
    /// The node's peer-channel public key (base64), sent with every beat, so a node registered
    /// by an older version announces the key it made on upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The first heartbeat of this node process (sent until one is answered): runs the hub
    /// thinks this node was handed or runs were lost with the process before it (killed or
    /// crashed, then started again before the hub saw it Offline), and go back to the queue.
    /// Left out when false, so a node's other beats stay readable by an older hub.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarted: bool,
    /// The proof that `public_key` is this node's, signed with its certificate's key; sent
    /// when the hub's last answer asked for it (`key_proof_wanted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_proof: Option<KeyProof>,
}

/// What the hub tells a node on each heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub role: Role,
    /// Increases every time the lease changes hands; a dispatcher sends it with its claims.
    pub lease_epoch: i64,
    /// How long until the current lease lapses unless its holder renews it; a standby node
    /// heartbeats right then, so it takes over as soon as the lease is free.
    #[serde(default)]
    pub lease_expires_in_ms: Option<u64>,
    pub status: NodeState,
    pub reason: Option<String>,
    pub settings: GatewaySettings,
    /// The other nodes of the gateway, for the peer channel: the roster a node authenticates
    /// its peers against (a node removed at the hub is gone from it).
    pub peers: Vec<Peer>,
    /// This node's own place in registration order (for the `primary` policy).
    pub registered_order: i64,
    /// The gateway's status and why it isn't Online (for the window's Home tab).
    #[serde(default)]
    pub gateway_state: Option<GatewayState>,
    #[serde(default)]
    pub gateway_reason: Option<String>,
    /// The version most of the gateway's nodes run.
    #[serde(default)]
    pub gateway_version: Option<String>,
    /// The hub's own version.
    #[serde(default)]
    pub hub_version: Option<String>,
    /// This node's grant of the gateway's bandwidth limit in bytes a second: the limit divided
    /// by the number of nodes holding copy runs (dispatched or running), never more than the
    /// other nodes' grants leave; 1 (a pause) for a node holding no copy run. `None` when there
    /// is no limit.
    #[serde(default)]
    pub bandwidth_bytes_per_second: Option<u64>,
    /// Credentials the credential manager sealed for this node that it hasn't reported yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sealed_credentials: Vec<SealedCredential>,
    /// The hub has no key proof for this node's current certificate: send one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key_proof_wanted: bool,
    /// The newest release for this node's platform when it is newer than what the node runs,
    /// with what to do about it and whether the node may install it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateOffer>,
}

/// A release the hub offers a node (in the heartbeat answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateOffer {
    pub release: ReleaseView,
    /// The release keys the hub trusts, one line each (`gatehouse-release-public-key …`): the
    /// node checks the signature itself before it installs anything.
    pub keys: Vec<String>,
    /// The sentence for people: "update available: 0.2.0 (you run 0.1.0) …", or, for a node
    /// older than its gateway, which release to take to catch up.
    pub advice: String,
    /// The node may update now: it holds its gateway's one update slot (it asked with
    /// `update_to`, and no other node of the gateway is updating).
    #[serde(default)]
    pub granted: bool,
    /// The node of the gateway that is updating now, when this one asked and must wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// A release as the hub stores and shows it (`hub release list`); its file is fetched with
/// `GET /api/v1/releases/{id}/file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseView {
    pub id: String,
    pub version: String,
    pub platform: String,
    pub size_bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// The ed25519 signature line (`gatehouse-release-signature …`), over the SHA-256.
    pub signature: String,
    /// Which trusted key made it (the first 16 hex digits of the key's SHA-256).
    pub key_id: String,
    /// Every piece of the file has arrived and matched the SHA-256.
    pub published: bool,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// `POST /api/v1/releases` (admin): begins a release. The hub checks the signature against
/// the keys it trusts before it takes any of the file, then takes the file in pieces
/// (`PUT /api/v1/releases/{id}/parts/{seq}`, at most [`RELEASE_PART_BYTES`] each) and
/// publishes it on `POST /api/v1/releases/{id}/publish` if their SHA-256 is the signed one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRelease {
    pub version: String,
    pub platform: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub signature: String,
}

/// The largest piece of a release file one request carries.
pub const RELEASE_PART_BYTES: usize = 4 << 20;

/// A node of the same gateway, as the dispatcher needs to know it to hand out runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub node_id: String,
    pub name: String,
    pub peer_address: String,
    pub registered_order: i64,
    pub status: NodeState,
    /// Why its status isn't Online.
    #[serde(default)]
    pub reason: Option<String>,
    /// The version it last reported.
    #[serde(default)]
    pub version: String,
    /// Whether it holds the dispatcher lease.
    #[serde(default)]
    pub role: Role,
    /// Its metrics at its last heartbeat (load, limits, credential version).
    pub metrics: NodeMetrics,
    /// Its X25519 public key for the peer channel (base64): peers pin it when they connect and
    /// accept only keys of the roster. Empty for a node of an older version that hasn't
    /// announced one yet (it can't be reached or connect until it does).
    #[serde(default)]
    pub public_key: String,
}

/// One node as the admin API and the status page show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    pub gateway_id: String,
    pub version: String,
    pub status: NodeState,
    pub reason: Option<String>,
    pub role: Role,
    pub peer_address: String,
    pub registered_order: i64,
    /// Milliseconds since the Unix epoch; `None` before the first heartbeat.
    pub last_heartbeat_ms: Option<i64>,
    pub metrics: NodeMetrics,
}

/// A gateway as the admin API shows it (never its keys' hashes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayView {
    pub id: String,
    pub name: String,
    pub settings: GatewaySettings,
    pub status: GatewayState,
    pub reason: Option<String>,
    /// The majority version of its nodes; `None` without nodes.
    pub version: Option<String>,
    pub encryption: bool,
    pub nodes: Vec<NodeView>,
    /// Every online node reports the same credentials (names, versions, deletions), and no
    /// node (an offline one by its last report) is behind on one.
    #[serde(default)]
    pub credentials_in_sync: bool,
    /// Each credential with the nodes that hold its newest version and those behind.
    #[serde(default)]
    pub credentials: Vec<GatewayCredential>,
}

/// Both auth keys of a gateway, in full (only when the gateway is created).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthKeys {
    pub primary: String,
    pub secondary: String,
}

/// The answer to creating a gateway: the only time both auth keys are shown in full.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedGateway {
    pub gateway: GatewayView,
    pub keys: AuthKeys,
}

/// What the admin may see of an auth key after it was shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyInfo {
    pub slot: KeySlot,
    /// The key's public start and the first characters of its secret, ending in `…`.
    pub hint: String,
    pub created_ms: i64,
}

/// The answer to regenerating one auth key: shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegeneratedKey {
    pub slot: KeySlot,
    pub key: String,
}

/// What `POST /api/v1/gateways/{gateway}/join-keys` makes: an auth key for adding nodes that
/// expires, and with `once` registers a single node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJoinKey {
    #[serde(default)]
    pub once: bool,
    /// How long the key stays valid unused, in seconds (default 30 minutes).
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
}

/// A key made for adding nodes, as the admin sees it after it was shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinKeyInfo {
    pub id: String,
    /// The key's public start and the first characters of its secret, ending in `…`.
    pub hint: String,
    pub once: bool,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// How many nodes registered with it.
    pub used_count: u64,
    pub last_used_ms: Option<i64>,
    /// The node that registered with it last.
    pub last_used_by: Option<String>,
}

/// A key made for adding nodes, with the key itself: shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedJoinKey {
    pub key: String,
    #[serde(flatten)]
    pub info: JoinKeyInfo,
}

/// Which of the two auth keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySlot {
    Primary,
    Secondary,
}

/// A job: a list of activities, each split into partitions that become activity runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    pub activities: Vec<Activity>,
}

/// One activity of a job. The kinds grow with the transfer issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[allow(clippy::large_enum_variant, reason = "a job holds a handful of activities; boxing buys nothing")]
pub enum Activity {
    /// Sleeps, for tests and benchmarks: `partitions` runs of `millis` each.
    Sleep {
        millis: u64,
        #[serde(default = "one")]
        partitions: u32,
    },
    /// Echoes its message back as the result, for tests and benchmarks.
    Echo {
        message: String,
        #[serde(default = "one")]
        partitions: u32,
    },
    /// Copies a folder, or the rows of a query, to a sink (`transfer`). One run lists the
    /// source and splits it into partition runs that the dispatcher spreads over the nodes.
    Copy {
        source: CopySource,
        sink: CopySink,
        /// `false`: an object already at the sink with the same size and SHA-256 is skipped, one
        /// that differs fails its file. `true`: replaced.
        #[serde(default)]
        overwrite: bool,
    },
}

impl Activity {
    /// The runs the hub makes of the activity at submit: the test kinds' `partitions`, one
    /// listing run for a copy (which splits into its parts once it has looked at the source).
    /// The hub checks the count against `transfer::spec::MAX_PARTITIONS`.
    pub fn runs_at_submit(&self) -> u32 {
        match self {
            Activity::Sleep { partitions, .. } | Activity::Echo { partitions, .. } => *partitions,
            Activity::Copy { .. } => 1,
        }
    }
}

/// Where a copy reads: exactly one of `folder`, `postgres` or `sqlite` (checked by
/// `transfer::spec`, which says what to use instead).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySource {
    /// An absolute path that names the same data on every node (a share mounted alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Globs over paths relative to `folder` (`**/*.csv`); none = every file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `postgres://user@host:port/db`, without a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// The node credential holding the PostgreSQL password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_credential: Option<String>,
    /// An absolute path to a SQLite database file, opened read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SqlFormat>,
    /// An integer column to split the query by ranges (min/max found first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
}

/// How query results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlFormat {
    /// RFC 4180 CSV with a header row, as PostgreSQL's `COPY … CSV HEADER` writes it.
    #[default]
    Csv,
    /// One JSON object per row and line.
    Jsonl,
}

/// Where a copy writes: `file:///abs/path/` or `s3://bucket/prefix/`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySink {
    pub url: String,
    /// An S3-compatible server (`http://127.0.0.1:8333`); AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The node credential holding `ACCESS_KEY_ID:SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// PEM roots trusted for an HTTPS endpoint, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// The piece of a copy one run moves, decided when the source was listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Part {
    /// Files of a folder copy, as they were when listed.
    Files { files: Vec<ListedFile> },
    /// One range of a query: `lower <= column < upper`; no bound means unbounded on that
    /// side, and the first range also takes the rows whose column is NULL.
    Rows {
        index: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lower: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upper: Option<i64>,
        #[serde(default)]
        nulls: bool,
    },
}

/// A file found when a folder was listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedFile {
    /// Relative to the folder, with `/` between names.
    pub path: String,
    pub size: u64,
    /// Modification time in milliseconds since the Unix epoch, to notice a file that changed.
    pub modified_ms: i64,
}

/// How far a copy run is, as its node reports it (`progress` of a run).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TransferProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    /// Bytes skipped because the sink already held them (counted in `bytes_done` too).
    pub bytes_skipped: u64,
    /// Bytes sent to the sink by this attempt.
    pub bytes_sent: u64,
    pub bytes_per_second: f64,
}

fn one() -> u32 {
    1
}

/// `POST /api/v1/gateways/{gateway}/jobs`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    pub spec: JobSpec,
}

/// States of an activity run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Dispatched,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    /// The name used on the wire and in storage, e.g. `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Dispatched => "dispatched",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Failed | RunState::Cancelled)
    }
}

/// One activity run, as the dispatcher receives it and the admin sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub id: String,
    pub job_id: String,
    pub activity_index: u32,
    pub partition: u32,
    pub activity: Activity,
    pub state: RunState,
    pub attempt: u32,
    pub node_id: Option<String>,
    pub node_name: Option<String>,
    pub progress: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub queued_ms: i64,
    /// When the current attempt's node started it; `None` while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// Every attempt of the run that was handed to a node, oldest first (the current one
    /// last), in job views only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptView>,
    /// The piece of a copy this run moves; `None` for the run that lists the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    /// What an earlier attempt committed, so the next one resumes (kept across attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<serde_json::Value>,
    /// How long the run has waited in the queue by the hub's clock (its now − `queued_ms`),
    /// in claim answers only: the dispatcher measures the queue timeout with it, so a node
    /// whose clock differs from the hub's measures it right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
}

/// A job with its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub gateway_id: String,
    pub name: String,
    pub state: RunState,
    pub created_ms: i64,
    pub runs: Vec<RunView>,
    /// What the job's copies moved together: bytes and files done of total, and the rate of
    /// the runs copying now (`hub::progress::of_job`); `None` for a job without copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<TransferProgress>,
    /// The job this one re-runs (`gatehouse job rerun`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
}

/// How one attempt of a run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Handed to a node that hasn't started it yet.
    Dispatched,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Its node went away (or never started it) and the run went back to the queue: the
    /// reason says why.
    Lost,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Dispatched => "dispatched",
            AttemptOutcome::Running => "running",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Lost => "lost",
        }
    }
}

/// One attempt of a run: which node had it, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptView {
    pub attempt: u32,
    pub node_id: Option<String>,
    pub node_name: Option<String>,
    /// When the node started it; `None` if it never did.
    pub started_ms: Option<i64>,
    /// When it ended; `None` while it runs.
    pub ended_ms: Option<i64>,
    pub outcome: AttemptOutcome,
    /// Why it failed, or why the run was tried again (node lost, hub restart, not started,
    /// cancelled).
    pub reason: Option<String>,
}

/// `GET /api/v1/gateways/{gateway}/jobs` query: which jobs, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// How many jobs at most (50 unless given, at most 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only jobs in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunState>,
    /// Only jobs created at or after this (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// Only jobs created before this (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
}

/// What a purpose token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Scrape `/metrics`, nothing else.
    Metrics,
    /// Read the status page, nothing else.
    Viewer,
    /// Set, list and delete the credentials of one gateway (`gatehouse credential …`),
    /// nothing else.
    CredentialManager,
}

impl TokenKind {
    pub const ALL: [TokenKind; 3] = [TokenKind::Metrics, TokenKind::Viewer, TokenKind::CredentialManager];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Metrics => "metrics",
            TokenKind::Viewer => "viewer",
            TokenKind::CredentialManager => "credential_manager",
        }
    }

    /// How a token of this kind starts: `ghm_`, `ghv_` or `ghc_`.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Metrics => "ghm_",
            TokenKind::Viewer => "ghv_",
            TokenKind::CredentialManager => "ghc_",
        }
    }
}

/// `POST /api/v1/tokens`: make a token for one purpose.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub kind: TokenKind,
    /// The gateway (id or name) a credential-manager token is for; only that kind takes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// `POST /api/v1/admin-token/rotate`: the new admin token, shown this once (the old one
/// stopped working as it was made).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotatedAdminToken {
    pub token: String,
}

impl std::fmt::Debug for RotatedAdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedAdminToken").field("token", &"***").finish()
    }
}

/// A token just made: shown in full this once (the hub keeps its hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    pub id: String,
    pub kind: TokenKind,
    pub token: String,
}

/// A token as listed: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub kind: TokenKind,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    /// The gateway (name) a credential-manager token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A node's proof that its X25519 key is its own, when the gateway encrypts its peer
/// channel: the key (bound to its gateway and node ids) signed with its certificate's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyProof {
    /// The certificate chain, leaf first, each DER in base64.
    pub chain: Vec<String>,
    /// `ed25519`, `ecdsa-p256-sha256`, `ecdsa-p384-sha384` or `rsa-pss-sha256`.
    pub scheme: String,
    /// Base64.
    pub signature: String,
}

/// One node as the credential manager seals for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialNode {
    pub node_id: String,
    pub name: String,
    pub status: NodeState,
    /// Its X25519 public key (base64); empty for a node that hasn't announced one.
    pub public_key: String,
    /// Its key proof, when it sent one (gateways that encrypt).
    #[serde(default)]
    pub key_proof: Option<KeyProof>,
}

/// A credential the hub still holds sealed for some nodes (until each reports that version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCredential {
    pub name: String,
    pub version: u64,
    pub deleted: bool,
    /// The nodes (names) that haven't reported it yet.
    pub nodes: Vec<String>,
}

/// `GET /api/v1/gateways/{gateway}/credentials`: what the credential manager needs to seal
/// a credential for every node, and the gateway's credential state (names and versions,
/// never values).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayCredentials {
    pub gateway_id: String,
    pub gateway_name: String,
    /// The gateway encrypts its peer channel: the nodes' keys must come with key proofs.
    pub encryption: bool,
    pub nodes: Vec<CredentialNode>,
    /// Every credential with the nodes holding its newest version, behind and ahead.
    pub credentials: Vec<GatewayCredential>,
    pub in_sync: bool,
    /// Credentials sent from a credential manager that some nodes haven't taken yet.
    #[serde(default)]
    pub pending: Vec<PendingCredential>,
}

/// The longest credential value the credential manager takes (a password, an access key, a
/// service account's key file).
pub const MAX_CREDENTIAL_VALUE_BYTES: usize = 8 * 1024;
/// A sealed credential is at most this long: base64 of the ephemeral key (32 bytes), the
/// marker byte, the value and the tag (16 bytes).
pub const MAX_SEALED_CHARS: usize = (MAX_CREDENTIAL_VALUE_BYTES + 1 + 32 + 16).div_ceil(3) * 4;

/// One node's copy of a credential set or deleted through the credential manager.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCiphertext {
    pub node_id: String,
    /// Sealed to the node's key (base64); see `node::sealed`.
    pub ciphertext: String,
}

// Sealed, but still not for logs.
impl std::fmt::Debug for NodeCiphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCiphertext").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// `POST /api/v1/gateways/{gateway}/credentials`: a credential (or its deletion) sealed on the
/// admin machine for each node of the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutCredential {
    pub name: String,
    pub version: u64,
    #[serde(default)]
    pub deleted: bool,
    /// One per node of the gateway.
    pub sealed: Vec<NodeCiphertext>,
}

/// The hub's answer to a [`PutCredential`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutCredentialAnswer {
    pub name: String,
    pub version: u64,
    /// The nodes (names) it will reach with their next heartbeat.
    pub nodes: Vec<String>,
}

/// A credential sealed for this node, in a heartbeat answer, until the node reports holding
/// that version (or a newer one).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedCredential {
    pub name: String,
    pub version: u64,
    #[serde(default)]
    pub deleted: bool,
    pub ciphertext: String,
}

impl std::fmt::Debug for SealedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedCredential")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("deleted", &self.deleted)
            .finish_non_exhaustive()
    }
}

/// One entry of the hub's audit trail: who did what, when. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub gateway_id: Option<String>,
    pub gateway_name: Option<String>,
    /// `admin` (the admin token), `node NAME` or `credential manager token ID`.
    pub actor: String,
    /// What was done, e.g. `gateway.create`, `node.register`, `settings.update`.
    pub action: String,
    /// The particulars, in words.
    pub detail: String,
}

/// `POST /api/v1/dispatch/claim`: the dispatcher asks for up to `max` queued runs, waiting
/// up to `wait_ms` for one to arrive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub lease_epoch: i64,
    pub max: u32,
    pub wait_ms: u64,
    /// The dispatcher's last claim got no answer: the hub may have taken runs for it that it
    /// never received. Answered with the runs it holds that no worker started, if any, before
    /// new ones (a run it did hand out is then handed out again; only one worker can start it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub again: bool,
}

/// `POST /api/v1/runs/{run}/assign`: the dispatcher hands a claimed run to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignRun {
    pub lease_epoch: i64,
    pub attempt: u32,
    pub node_id: String,
}

/// `POST /api/v1/runs/{run}/start`, by the worker the dispatcher handed the run to over the
/// peer channel: the run becomes that worker's (once) and `running`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    pub attempt: u32,
}

/// `POST /api/v1/runs/{run}/progress`, by the node running it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunProgress {
    pub attempt: u32,
    pub progress: serde_json::Value,
    /// Replaces the run's checkpoint when given. The answer is the fence: a checkpoint the hub
    /// took means the attempt is still the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<serde_json::Value>,
}

/// `POST /api/v1/runs/{run}/split`, by the node running a copy's listing run: the partitions
/// it found become queued runs and the listing run succeeds, in one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitRun {
    pub attempt: u32,
    pub parts: Vec<Part>,
    /// The listing's summary (files, bytes), kept as the listing run's result.
    pub result: serde_json::Value,
}

/// `POST /api/v1/runs/{run}/finish`, by the node that ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRun {
    pub attempt: u32,
    pub succeeded: bool,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// Characters of a secret in keys and tokens: 32 random bytes, base64url without padding.
pub const SECRET_CHARS: usize = 43;

/// What an auth key says about itself: `gh1_<base64url(hub_url|gateway_id)>_<secret>`, so a
/// node needs nothing but the key to find its hub. The secret part is checked by the hub.
///
/// A key made by a hub that serves HTTPS with a certificate it made for itself (an embedded
/// hub open to the network) also carries that certificate's SHA-256 fingerprint after a dot:
/// `gh1_…_<secret>.<base64url(sha256)>`. The pin is not part of the secret: the node sends
/// [`AuthKey::key`] to the hub, and verifies the hub's certificate by the pin. Keys without a
/// pin read as before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKey {
    pub hub_url: String,
    pub gateway_id: String,
    /// The key without its pin: what the hub checks.
    pub key: String,
    /// The fingerprint of the hub's certificate, when the key carries one.
    pub pin: Option<CertPin>,
}

/// Why a string is not an auth key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this is not a Gatehouse auth key (it starts with gh1_); copy the whole key from the hub: gatehouse hub key regenerate"
)]
pub struct MalformedKey;

/// Reads the public part of an auth key (and its pin, if it carries one). The secret part is
/// checked against the stored hash.
pub fn parse_auth_key(key: &str) -> Result<AuthKey, MalformedKey> {
    let key = key.trim();
    // base64url has no '.', so a dot can only start the pin.
    let (plain, pin) = match key.rsplit_once('.') {
        Some((plain, pin)) => (plain, Some(CertPin::from_key_part(pin).ok_or(MalformedKey)?)),
        None => (key, None),
    };
    let body = plain.strip_prefix("gh1_").ok_or(MalformedKey)?;
    // base64url may itself contain '_', so split by the secret's fixed length, not by '_'.
    let split = body.len().checked_sub(SECRET_CHARS + 1).ok_or(MalformedKey)?;
    let (public, secret) = (body.get(..split).ok_or(MalformedKey)?, body.get(split..).ok_or(MalformedKey)?);
    let secret = secret.strip_prefix('_').ok_or(MalformedKey)?;
    if URL_SAFE_NO_PAD.decode(secret).map(|b| b.len()) != Ok(32) {
        return Err(MalformedKey);
    }
    let decoded = URL_SAFE_NO_PAD.decode(public).map_err(|_| MalformedKey)?;
    let text = String::from_utf8(decoded).map_err(|_| MalformedKey)?;
    let (hub_url, gateway_id) = text.rsplit_once('|').ok_or(MalformedKey)?;
    if hub_url.is_empty() || gateway_id.is_empty() {
        return Err(MalformedKey);
    }
    Ok(AuthKey { hub_url: hub_url.to_owned(), gateway_id: gateway_id.to_owned(), key: plain.to_owned(), pin })
}

/// `key` (without a pin) carrying `pin`: what a hub with a certificate it made for itself
/// hands out.
pub fn pinned_auth_key(key: &str, pin: &CertPin) -> String {
    format!("{key}.{}", URL_SAFE_NO_PAD.encode(pin.0))
}

/// The SHA-256 fingerprint of a hub's certificate (of its DER), which a node compares with
/// what the hub shows instead of checking it against a CA. Written as 64 lowercase hex digits
/// (`hub_pin` in node.toml).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CertPin(pub [u8; 32]);

impl TryFrom<String> for CertPin {
    type Error = MalformedPin;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        CertPin::parse(&text)
    }
}

impl From<CertPin> for String {
    fn from(pin: CertPin) -> Self {
        pin.hex()
    }
}

/// Why a string is not a certificate fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this is not a SHA-256 certificate fingerprint (64 hex digits, colons allowed); copy it from the gateway's Add a node, or from: openssl x509 -noout -fingerprint -sha256"
)]
pub struct MalformedPin;

impl CertPin {
    /// Reads 64 hex digits, in either case, optionally in pairs split by colons and after
    /// `sha256:` (as `openssl x509 -fingerprint -sha256` prints them).
    pub fn parse(text: &str) -> Result<Self, MalformedPin> {
        let text = text.trim();
        let text = match text.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("sha256:") => text.get(7..).unwrap_or_default(),
            _ => text,
        };
        let digits: String = text.chars().filter(|c| *c != ':').collect();
        let bytes = crate::encoding::hex_decode(&digits).ok_or(MalformedPin)?;
        Ok(CertPin(bytes.try_into().map_err(|_| MalformedPin)?))
    }

    fn from_key_part(part: &str) -> Option<Self> {
        URL_SAFE_NO_PAD.decode(part).ok()?.try_into().ok().map(CertPin)
    }

    /// 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        crate::encoding::hex(&self.0)
    }
}

impl std::fmt::Display for CertPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

impl std::fmt::Debug for CertPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertPin({})", self.hex())
    }
}

impl std::str::FromStr for CertPin {
    type Err = MalformedPin;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CertPin::parse(s)
    }
}

/// Compares dotted versions numerically (`1.10.0` > `1.9.3`); non-numeric parts as text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let parts = |v: &str| -> Vec<(u64, String)> {
        v.split(['.', '-', '+']).map(|p| (p.parse::<u64>().unwrap_or(0), p.to_owned())).collect()
    };
    let (a, b) = (parts(a), parts(b));
    for i in 0..a.len().max(b.len()) {
        // A missing part counts as 0, so 1.2 == 1.2.0.
        let x = a.get(i).cloned().unwrap_or((0, "0".to_owned()));
        let y = b.get(i).cloned().unwrap_or((0, "0".to_owned()));
        match x.0.cmp(&y.0).then_with(|| x.1.cmp(&y.1)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}
