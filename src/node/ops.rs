//! Every operation a person starts on a node's settings, whoever asks: the command line
//! (`gatehouse node …`) and the window's Settings and Diagnostics tabs both call these. Remote
//! access and encryption, concurrency, proxy, log level, the node's own metrics address, backup
//! and restore, log export, and the gateway's thresholds through the hub (credentials are
//! [`super::credentials`]).
//!
//! Each one checks its input, writes only the file its change is in, and returns what it did
//! as a value whose `Display` is the sentence both callers show (they add how the change
//! applies: the CLI's "restart the node service", the window's "the service restarts"), or an
//! [`OpError`] that says what to do. Secrets (passwords, tokens) are only passed through.

use super::backup::BackupError;
use super::store::{NodeSettings, Store, StoreError};
use crate::client::{ClientError, parse_proxy};
use crate::protocol::{Policy, SettingsPatch};
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The log levels a node accepts, most severe first.
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Why an operation changed nothing. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("the port must be between 1 and 65535")]
    NoPort,
    #[error("can't listen on port {port} ({reason}); is another program using it? Choose another port")]
    PortTaken { port: u16, reason: std::io::Error },
    #[error(
        "{0:?} is not an address and port; give a loopback address such as 127.0.0.1:9464 (or [::1]:9464), or off"
    )]
    NotAMetricsAddress(String),
    #[error(
        "{0} is not a loopback address: a node's own /metrics has no token, so it is served only to this machine, for node-local scraping; use 127.0.0.1:{port} (or [::1]:{port}), and scrape the whole gateway from the hub's /metrics (with a metrics token)", port = .0.port()
    )]
    MetricsNotLoopback(std::net::SocketAddr),
    #[error("can't listen on {address} ({reason}); is another program using it? Choose another port")]
    MetricsPortTaken { address: std::net::SocketAddr, reason: std::io::Error },
    #[error("{0:?} is not a log level; use error, warn, info, debug or trace")]
    NotALogLevel(String),
    #[error("{0}; nothing was saved")]
    Proxy(ClientError),
    #[error(
        "this node doesn't hold the hub's admin token, so the gateway's settings are changed by the hub's admin: gatehouse hub gateway set"
    )]
    NoAdminToken,
    #[error(
        "the hub refused the admin token this node keeps: it was replaced (with `gatehouse hub token rotate`, or from another machine). Give this node the current one with `gatehouse node hub-token set` (the token on standard input); nothing was changed"
    )]
    StaleAdminToken,
    #[error("the hub refused that admin token (it isn't the hub's current one); nothing was saved")]
    NotTheAdminToken,
    #[error("the admin token is empty; give the hub's current admin token")]
    EmptyAdminToken,
    #[error(
        "the hub made a new admin token (the old one no longer works), but this node couldn't keep it ({reason}). Write it down now, then give it back with `gatehouse node hub-token set`: {token}"
    )]
    AdminTokenNotKept { token: Shown, reason: String },
    #[error("thresholds are percentages from 0 to 100 (0 turns a limit off)")]
    NotAPercentage,
    /// The hub refused or couldn't be reached; with its hint when it gave one.
    #[error("{}", with_hint(.0))]
    Hub(ClientError),
    #[error("{0}; nothing was saved")]
    Window(super::auto_update::WindowError),
    #[error("{0}")]
    Place(String),
    #[error("can't {action} {}: {reason}", path.display())]
    Io { action: &'static str, path: PathBuf, reason: String },
}

/// A secret that a sentence must show (the one chance to keep it), kept out of `Debug`.
pub struct Shown(pub String);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

fn with_hint(error: &ClientError) -> String {
    match error.hint() {
        Some(hint) => format!("{error}; {hint}"),
        None => error.to_string(),
    }
}

type Result<T, E = OpError> = std::result::Result<T, E>;

fn edit_settings(store: &Store, edit: impl FnOnce(&mut NodeSettings)) -> Result<NodeSettings> {
    let mut settings = store.settings()?;
    edit(&mut settings);
    store.save_settings(&settings)?;
    Ok(settings)
}

/// The peer channel as [`set_remote_access`] left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAccess {
    pub port: u16,
    /// The peer channel is encrypted (with a new certificate or the one it had).
    pub encrypted: bool,
    /// A new certificate was stored.
    pub new_certificate: bool,
}

impl fmt::Display for RemoteAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = self.port;
        match (self.new_certificate, self.encrypted) {
            (true, _) => write!(f, "the peer channel on port {port} is encrypted with the new certificate"),
            (false, true) => write!(f, "the peer channel is on port {port} (still encrypted)"),
            (false, false) => write!(f, "the peer channel is on port {port}"),
        }
    }
}

/// Serves the peer channel on `port`, encrypted with `tls` when given; without one the
/// certificate it has (if any) stays, so a port change never drops encryption.
///
/// Writes only the file the change is in: a new port is in node.toml, a new certificate in
/// the secrets. Writing both would leave a half-changed node if the second write failed, and
/// writing the secrets back for a port change could undo a credential set a peer synced
/// meanwhile. A port another program listens on is refused before anything is written. The
/// hub decides at the next heartbeat whether the gateway accepts a change of encryption
/// (only while it has a single node).
pub fn set_remote_access(
    store: &Store,
    port: u16,
    tls: Option<crate::cert::Identity>,
) -> Result<RemoteAccess> {
    if port == 0 {
        return Err(OpError::NoPort);
    }
    let settings = store.settings()?;
    let moves = port != settings.peer_port;
    if moves {
        port_is_free(&settings, port)?;
    }
    let new_certificate = tls.is_some();
    if let Some(tls) = tls {
        // Secrets first: node.toml is the file that says where the node listens.
        let mut secrets = store.secrets()?;
        secrets.tls = Some(tls);
        store.save_secrets(&secrets)?;
    }
    if moves {
        edit_settings(store, |s| {
            s.peer_port = port;
            if let Some((host, _)) = s.peer_address.rsplit_once(':') {
                s.peer_address = format!("{host}:{port}");
            }
        })?;
    }
    // Read only for the answer: nothing is written back.
    let encrypted = new_certificate || store.secrets().is_ok_and(|s| s.tls.is_some());
    Ok(RemoteAccess { port, encrypted, new_certificate })
}

/// Refuses a port another program listens on, before the service restarts onto it.
fn port_is_free(settings: &NodeSettings, port: u16) -> Result<()> {
    // Where the service will listen: the registered host when it is an IP, else everywhere.
    let ip = settings
        .peer_address
        .rsplit_once(':')
        .and_then(|(host, _)| host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    std::net::TcpListener::bind((ip, port)).map(drop).map_err(|reason| OpError::PortTaken { port, reason })
}

/// Encryption turned off by [`disable_encryption`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptionOff;

impl fmt::Display for EncryptionOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("peer channel encryption turned off")
    }
}

/// Stops encrypting the peer channel (the whole gateway must agree; see the hub's status).
pub fn disable_encryption(store: &Store) -> Result<EncryptionOff> {
    let mut secrets = store.secrets()?;
    secrets.tls = None;
    store.save_secrets(&secrets)?;
    Ok(EncryptionOff)
}

/// The concurrency limit [`set_concurrency`] stored; `None`: the default formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency(pub Option<u32>);

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(limit) => write!(f, "this node takes at most {limit} runs at once"),
            None => f.write_str("this node uses the default concurrency formula"),
        }
    }
}

/// Sets how many runs this node takes at once; `None` or 0: the default formula,
/// `max(2, min(4 × cores, 2 × GiB RAM))`. Applies when the service next starts.
pub fn set_concurrency(store: &Store, limit: Option<u32>) -> Result<Concurrency> {
    let limit = limit.filter(|&l| l > 0);
    edit_settings(store, |s| s.concurrency_limit = limit)?;
    Ok(Concurrency(limit))
}

/// The proxy [`set_proxy`] stored; `None`: straight to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy(pub Option<String>);

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(proxy) => write!(f, "the hub is reached through {proxy}"),
            None => f.write_str("the hub is reached directly, without a proxy"),
        }
    }
}

/// Checks a proxy URL as typed, without saving it: why it can't be used, if it can't.
pub fn check_proxy(proxy: &str) -> Result<(), ClientError> {
    parse_proxy(proxy).map(drop)
}

/// Sets the HTTP(S) proxy the node reaches the hub through (blank or `None`: none); a proxy
/// URL that can't be used is refused. Applies when the service next starts.
pub fn set_proxy(store: &Store, proxy: Option<&str>) -> Result<Proxy> {
    let proxy = proxy.map(|p| p.trim().to_owned()).filter(|p| !p.is_empty());
    if let Some(proxy) = &proxy {
        parse_proxy(proxy).map_err(OpError::Proxy)?;
    }
    edit_settings(store, |s| s.proxy.clone_from(&proxy))?;
    Ok(Proxy(proxy))
}

/// The log level [`set_log_level`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(pub String);

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "log level set to {}", self.0)
    }
}

/// Sets the log level (one of [`LOG_LEVELS`], any case); a running service follows it within
/// seconds (`node::logs::follow_level`), no restart needed.
pub fn set_log_level(store: &Store, level: &str) -> Result<LogLevel> {
    let level = level.trim().to_ascii_lowercase();
    if !LOG_LEVELS.contains(&level.as_str()) {
        return Err(OpError::NotALogLevel(level));
    }
    edit_settings(store, |s| s.log_level.clone_from(&level))?;
    Ok(LogLevel(level))
}

/// Where [`set_metrics_listen`] left the node's own `/metrics`; `None`: not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(address) => write!(f, "this node serves its own metrics at http://{address}/metrics"),
            None => f.write_str("this node serves no metrics of its own (the hub's /metrics still has them)"),
        }?;
        // It applies live, whoever asked: the service re-reads the setting.
        f.write_str("; a running node applies it within seconds")
    }
}

/// Reads a metrics address as a person types it: `off` (or nothing) for none, an address and
/// port (`127.0.0.1:9464`, `[::1]:9464`), or a bare port, which means 127.0.0.1. Only a
/// loopback address with a port is taken; whether the port is free is [`set_metrics_listen`]'s
/// check.
pub fn parse_metrics_listen(text: &str) -> Result<Option<SocketAddr>> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let address = match text.parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => text.parse().map_err(|_| OpError::NotAMetricsAddress(text.to_owned()))?,
    };
    loopback_with_port(address).map(Some)
}

/// The endpoint has no token: only this machine may reach it.
fn loopback_with_port(address: SocketAddr) -> Result<SocketAddr> {
    if !address.ip().is_loopback() {
        return Err(OpError::MetricsNotLoopback(address));
    }
    if address.port() == 0 {
        return Err(OpError::NoPort);
    }
    Ok(address)
}

/// Serves the node's own `/metrics` on `address` (`None`: stops serving it). Only a loopback
/// address is taken (the endpoint has no token), and only a port nobody listens on; a running
/// service follows the change within seconds (`node::exporter`), no restart needed.
pub fn set_metrics_listen(store: &Store, address: Option<SocketAddr>) -> Result<MetricsListen> {
    let settings = store.settings()?;
    if let Some(address) = address {
        loopback_with_port(address)?;
        // The running service may hold the address it already has: only a new one is tried.
        if settings.metrics_listen != Some(address) {
            std::net::TcpListener::bind(address)
                .map(drop)
                .map_err(|reason| OpError::MetricsPortTaken { address, reason })?;
        }
    }
    edit_settings(store, |s| s.metrics_listen = address)?;
    Ok(MetricsListen(address))
}

/// The automatic update window [`set_auto_update`] stored (`None`: off), and the offset of
/// the machine's local time when it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoUpdate {
    pub window: Option<super::auto_update::UpdateWindow>,
    pub offset: String,
}

impl fmt::Display for AutoUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.window {
            Some(window) => write!(
                f,
                "this node updates itself to a newer release the hub offers {window}, in the machine's local time (now {})",
                self.offset
            ),
            None => f.write_str("automatic updates are off; update by hand with: gatehouse node update"),
        }
    }
}

/// Turns the automatic update window on (`Some`) or off. A running `node run` service
/// follows node.toml at its next heartbeat; no restart is needed.
pub fn set_auto_update(
    store: &Store,
    window: Option<super::auto_update::UpdateWindow>,
) -> Result<AutoUpdate> {
    edit_settings(store, |s| s.auto_update = window)?;
    Ok(AutoUpdate { window, offset: super::auto_update::local_now().offset })
}

/// The gateway settings the window edits (the hub's `SettingsPatch`, all given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub policy: Policy,
    /// 0–100; 0 turns the limit off.
    pub cpu_percent: u8,
    /// 0–100; 0 turns the limit off.
    pub memory_percent: u8,
    pub aggregation_minutes: u32,
    pub queue_timeout_seconds: u32,
    /// Megabits per second for all the gateway's copies together; 0 turns the limit off.
    pub bandwidth_limit_mbps: u32,
}

/// The hub's admin token, if this node holds it (express setup with the embedded hub, or
/// given with [`set_hub_admin_token`]).
pub fn admin_token(store: &Store) -> Result<String> {
    store.secrets()?.hub_admin_token.ok_or(OpError::NoAdminToken)
}

/// A client of this node's hub with the admin token this node holds.
fn admin_client(store: &Store) -> Result<(crate::client::HubClient, NodeSettings)> {
    let token = admin_token(store)?;
    let settings = store.settings()?;
    let client = super::hub_client(&settings, &token).map_err(OpError::Hub)?;
    Ok((client, settings))
}

/// A refusal of the admin token this node keeps: stale (401) says so and what to do.
fn admin_refusal(error: ClientError) -> OpError {
    match error {
        ClientError::Refused { status: 401, .. } => OpError::StaleAdminToken,
        other => OpError::Hub(other),
    }
}

/// The hub's purpose tokens, as [`hub_tokens`] lists them (never the tokens themselves).
#[derive(Debug, Clone)]
pub struct HubTokens(pub Vec<crate::protocol::TokenInfo>);

/// Lists the hub's viewer and metrics tokens, with the admin token this node holds.
pub async fn hub_tokens(store: &Store) -> Result<HubTokens> {
    let (client, _) = admin_client(store)?;
    Ok(HubTokens(client.tokens().await.map_err(admin_refusal)?))
}

/// A token [`create_hub_token`] made: shown in full this once.
pub struct HubTokenCreated(pub crate::protocol::CreatedToken);

impl fmt::Debug for HubTokenCreated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubTokenCreated").field("id", &self.0.id).field("token", &"***").finish()
    }
}

impl fmt::Display for HubTokenCreated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let created = &self.0;
        let how = match created.kind {
            crate::protocol::TokenKind::Viewer => {
                "open the hub's address in a browser and give it as the password (any user name)"
            }
            crate::protocol::TokenKind::Metrics => "Prometheus sends it as a bearer token to /metrics",
            crate::protocol::TokenKind::CredentialManager => {
                "give it to `gatehouse credential … --gateway` in GATEHOUSE_ADMIN_TOKEN or --token-file"
            }
        };
        write!(
            f,
            "{} token {} made; it is shown in full only this once (the hub keeps only its hash): {} ({how})",
            created.kind.as_str(),
            created.id,
            created.token
        )
    }
}

/// Makes a viewer or metrics token at the hub, with the admin token this node holds.
pub async fn create_hub_token(store: &Store, kind: crate::protocol::TokenKind) -> Result<HubTokenCreated> {
    let (client, _) = admin_client(store)?;
    Ok(HubTokenCreated(client.create_token(kind).await.map_err(admin_refusal)?))
}

/// The token [`revoke_hub_token`] revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubTokenRevoked(pub String);

impl fmt::Display for HubTokenRevoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {} revoked; it no longer works", self.0)
    }
}

/// Revokes a viewer or metrics token by id, with the admin token this node holds.
pub async fn revoke_hub_token(store: &Store, id: &str) -> Result<HubTokenRevoked> {
    let (client, _) = admin_client(store)?;
    client.revoke_token(id).await.map_err(admin_refusal)?;
    Ok(HubTokenRevoked(id.to_owned()))
}

/// What [`rotate_hub_admin_token`] and [`set_hub_admin_token`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminTokenKept {
    /// A new token was made at the hub, and kept here.
    Rotated,
    /// The token given was checked with the hub, and kept here.
    Given,
}

impl fmt::Display for AdminTokenKept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminTokenKept::Rotated => f.write_str(
                "the hub's admin token was replaced; this node keeps the new one sealed, and the old one no longer works anywhere",
            ),
            AdminTokenKept::Given => {
                f.write_str("the hub took the admin token; this node keeps it sealed in place of the old one")
            }
        }
    }
}

/// Replaces the hub's admin token with a new one, with the one this node holds, and keeps
/// the new one in the sealed secrets (the hub keeps only its hash, so nothing else has it).
/// The secrets are written once before the hub is asked, so a node that can't keep the new
/// token finds out before the old one stops working.
pub async fn rotate_hub_admin_token(store: &Store) -> Result<AdminTokenKept> {
    let (client, _) = admin_client(store)?;
    store.save_secrets(&store.secrets()?)?;
    let token = client.rotate_admin_token().await.map_err(admin_refusal)?.token;
    if let Err(e) = store.remember_hub_admin_token(&token) {
        return Err(OpError::AdminTokenNotKept { token: Shown(token), reason: e.to_string() });
    }
    Ok(AdminTokenKept::Rotated)
}

/// Keeps `token` as this node's copy of the hub's admin token (one rotated elsewhere, with
/// `gatehouse hub token rotate`), once the hub has taken it.
pub async fn set_hub_admin_token(store: &Store, token: &str) -> Result<AdminTokenKept> {
    let token = token.trim();
    if token.is_empty() {
        return Err(OpError::EmptyAdminToken);
    }
    let settings = store.settings()?;
    let client = super::hub_client(&settings, token).map_err(OpError::Hub)?;
    match client.tokens().await {
        Ok(_) => {}
        Err(ClientError::Refused { status: 401, .. }) => return Err(OpError::NotTheAdminToken),
        Err(e) => return Err(OpError::Hub(e)),
    }
    store.remember_hub_admin_token(token)?;
    Ok(AdminTokenKept::Given)
}

/// The gateway whose settings [`set_thresholds`] saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdsSaved {
    pub gateway: String,
}

impl fmt::Display for ThresholdsSaved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gateway '{}' saved; every node applies the new settings at its next heartbeat",
            self.gateway
        )
    }
}

/// Changes the gateway's policy and limits at the hub, with the hub's admin token this node
/// holds (express setup); every node follows at its next heartbeat.
pub async fn set_thresholds(store: &Store, thresholds: Thresholds) -> Result<ThresholdsSaved> {
    if thresholds.cpu_percent > 100 || thresholds.memory_percent > 100 {
        return Err(OpError::NotAPercentage);
    }
    let (client, settings) = admin_client(store)?;
    let update = SettingsPatch {
        policy: Some(thresholds.policy),
        cpu_threshold: Some(thresholds.cpu_percent),
        memory_threshold: Some(thresholds.memory_percent),
        aggregation_minutes: Some(thresholds.aggregation_minutes),
        queue_timeout_seconds: Some(thresholds.queue_timeout_seconds),
        bandwidth_limit_mbps: Some(thresholds.bandwidth_limit_mbps),
        ..SettingsPatch::default()
    };
    let view = client.update_settings(&settings.gateway_id, &update).await.map_err(admin_refusal)?;
    Ok(ThresholdsSaved { gateway: view.name })
}

/// A backup [`backup`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupWritten(pub PathBuf);

impl fmt::Display for BackupWritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backup written to {} (keep the password: without it the file can't be opened)",
            self.0.display()
        )
    }
}

/// Writes a password-sealed backup of the node's state to `out` (owner-only, atomically).
/// Refuses what [`check_new_file`] refuses for `replace`: never into the data dir, and over an
/// existing file only with [`Replace::Allowed`]. Slow on purpose (Argon2id): call it off any
/// thread that must stay responsive.
pub fn backup(store: &Store, out: &Path, password: &str, replace: Replace) -> Result<BackupWritten> {
    check_new_file(store, out, replace)?;
    super::backup::backup(store, out, password, replace == Replace::Allowed)?;
    Ok(BackupWritten(out.to_owned()))
}

/// The node [`restore`] brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored(pub NodeSettings);

impl fmt::Display for Restored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "restored '{}' of gateway '{}'", self.0.node_name, self.0.gateway_name)
    }
}

/// Restores a backup onto this machine, which must not be registered; a wrong password or a
/// damaged file changes nothing. Slow on purpose (Argon2id).
pub fn restore(store: &Store, file: &Path, password: &str) -> Result<Restored> {
    Ok(Restored(super::backup::restore(store, file, password)?))
}

/// Whether a file written by [`check_new_file`]'s caller may replace one that is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// A backup never replaces a file: it may be the earlier backup, the one still needed.
    Never,
    /// A log export may replace an earlier export (the save dialog asked), and `node backup
    /// --force` an earlier backup.
    Allowed,
}

/// Refuses a place a file chosen in the window shouldn't go: a relative path (it would land
/// wherever the window happened to start), anywhere inside the node's data dir (it would go
/// with the machine, and could replace the node's own files: a rename over `secrets.bin`
/// unregisters the node), or, for [`Replace::Never`], a file that exists.
pub fn check_new_file(store: &Store, path: &Path, replace: Replace) -> Result<()> {
    let refuse = |sentence: String| Err(OpError::Place(sentence));
    if !path.is_absolute() {
        return refuse(format!(
            "{} is not a full path; choose the file with Browse… or type its whole path, starting with /",
            path.display()
        ));
    }
    let existing = std::fs::symlink_metadata(path).ok();
    if existing.as_ref().is_some_and(std::fs::Metadata::is_dir) {
        return refuse(format!("{} is a folder; add a file name", path.display()));
    }
    // Where the file really lands, through any symbolic links in the folders above it.
    let landing = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => parent.canonicalize().ok().map(|p| p.join(name)),
        _ => None,
    };
    let data_dir = store.dir().canonicalize().unwrap_or_else(|_| store.dir().to_owned());
    if landing.as_deref().unwrap_or(path).starts_with(&data_dir) {
        return refuse(format!(
            "{} is inside the node's data dir ({}), which holds the node's own files and goes with the machine; choose another folder",
            path.display(),
            data_dir.display()
        ));
    }
    if replace == Replace::Never && existing.is_some() {
        return refuse(format!(
            "{} already exists, and a backup never replaces a file; choose a new name, or move that file away first",
            path.display()
        ));
    }
    Ok(())
}

/// The zip [`export_logs`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsExported {
    pub path: PathBuf,
    pub log_files: usize,
    pub bytes: u64,
}

impl fmt::Display for LogsExported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = match self.log_files {
            0 => "no log files yet".to_owned(),
            1 => "1 log file".to_owned(),
            n => format!("{n} log files"),
        };
        write!(
            f,
            "logs exported to {} ({files} and the status, {})",
            self.path.display(),
            crate::encoding::binary_size(self.bytes)
        )
    }
}

/// Writes a zip of `<data dir>/logs/*` and the status (`status`, the running service's, else
/// the last one `node run` left in `status.json`) to `path`, atomically; an earlier export
/// there is replaced. Refuses the places [`check_new_file`] refuses.
pub fn export_logs(store: &Store, status: Option<&super::NodeStatus>, path: &Path) -> Result<LogsExported> {
    check_new_file(store, path, Replace::Allowed)?;
    if path.file_name().is_none_or(std::ffi::OsStr::is_empty) {
        return Err(OpError::Place(format!(
            "{} is not a file name; choose where to save the zip",
            path.display()
        )));
    }
    // The first failure, named; the io::Error only carries it out of the closure.
    let mut failure = None;
    let mut fail = |action: &'static str, place: &Path, reason: &dyn fmt::Display| {
        failure.get_or_insert_with(|| OpError::Io {
            action,
            path: place.to_owned(),
            reason: reason.to_string(),
        });
        std::io::Error::other("export failed")
    };
    let written = crate::machine::write_atomic_with(path, |file| {
        let mut zip = zip::ZipWriter::new(file);
        let options =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let mut log_files = 0usize;
        let logs = store.dir().join("logs");
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(&logs) {
            Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(fail("read", &logs, &e)),
        };
        entries.sort();
        for log in &entries {
            let entry = format!("logs/{}", log.file_name().unwrap_or_default().to_string_lossy());
            let mut source = std::fs::File::open(log).map_err(|e| fail("read", log, &e))?;
            zip.start_file(entry, options).map_err(|e| fail("write", path, &e))?;
            std::io::copy(&mut source, &mut zip).map_err(|e| fail("read", log, &e))?;
            log_files += 1;
        }
        let status_json = match status {
            Some(status) => serde_json::to_vec_pretty(status).map_err(|e| fail("write", path, &e))?,
            None => std::fs::read(super::status_file::path(store)).unwrap_or_else(|_| b"null\n".to_vec()),
        };
        zip.start_file("status.json", options).map_err(|e| fail("write", path, &e))?;
        zip.write_all(&status_json).map_err(|e| fail("write", path, &e))?;
        let file = zip.finish().map_err(|e| fail("write", path, &e))?;
        let bytes = file.metadata().map_err(|e| fail("write", path, &e))?.len();
        Ok((log_files, bytes))
    });
    match written {
        Ok((log_files, bytes)) => Ok(LogsExported { path: path.to_owned(), log_files, bytes }),
        Err(e) => Err(failure.unwrap_or(OpError::Io {
            action: "write",
            path: path.to_owned(),
            reason: e.to_string(),
        })),
    }
}
