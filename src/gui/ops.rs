//! The Settings and Diagnostics tabs' operations, run on the service thread (never the UI
//! thread): each changes the node's stored state, asks the hub for something, or exports
//! something, and answers with one sentence. Slow or file-heavy work (Argon2 for backups,
//! zipping logs) runs on tokio's blocking pool.
//!
//! Secrets (credential values, backup and PFX passwords) are only passed through: they never
//! reach a log line, an answer or `Debug` output.

use super::service::{CertificateChoice, load_identity};
use crate::client::{HubClient, parse_proxy};
use crate::node::NodeStatus;
use crate::node::store::{NodeSettings, Store};
use crate::protocol::{Policy, SettingsPatch};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The log levels a node accepts, most severe first.
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// One operation the window asks for.
pub enum Op {
    /// Serve the peer channel on `port`, encrypted with `certificate` (checked first: a
    /// rejected one is refused), or with the certificate it has now when `None`.
    SetRemoteAccess {
        port: u16,
        certificate: Option<CertificateChoice>,
    },
    /// Stop encrypting the peer channel.
    DisableEncryption,
    /// `None`: back to the default formula.
    SetConcurrency(Option<u32>),
    /// Change the gateway's thresholds at the hub (needs the hub's admin token in this node).
    SetThresholds(Thresholds),
    /// Whether this node holds the hub's admin token, so the window may offer thresholds.
    CheckAdminToken,
    /// The HTTP(S) proxy to reach the hub through; `None`: none.
    SetProxy(Option<String>),
    /// The credential names, one per line (never values).
    ListCredentials,
    SetCredential {
        name: String,
        value: String,
    },
    DeleteCredential(String),
    /// Write a password-sealed backup of the node's state to `path`.
    Backup {
        path: PathBuf,
        password: String,
    },
    /// Restore a backup onto this machine (which must not be registered).
    Restore {
        path: PathBuf,
        password: String,
    },
    /// `error`, `warn`, `info`, `debug` or `trace`; the running process follows the setting
    /// (`node::logs::follow_level`).
    SetLogLevel(String),
    /// A zip of the log files and the current status, written to this path.
    ExportLogs(PathBuf),
}

// Hand-written so credential values and passwords can't reach a log line through `{:?}`.
impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::SetRemoteAccess { port, certificate } => f
                .debug_struct("SetRemoteAccess")
                .field("port", port)
                // The path only, never the password.
                .field("certificate", &certificate.as_ref().map(|c| &c.path))
                .finish(),
            Op::DisableEncryption => f.write_str("DisableEncryption"),
            Op::SetConcurrency(limit) => f.debug_tuple("SetConcurrency").field(limit).finish(),
            Op::SetThresholds(thresholds) => f.debug_tuple("SetThresholds").field(thresholds).finish(),
            Op::CheckAdminToken => f.write_str("CheckAdminToken"),
            Op::SetProxy(proxy) => f.debug_tuple("SetProxy").field(proxy).finish(),
            Op::ListCredentials => f.write_str("ListCredentials"),
            Op::SetCredential { name, .. } => {
                f.debug_struct("SetCredential").field("name", name).field("value", &"***").finish()
            }
            Op::DeleteCredential(name) => f.debug_tuple("DeleteCredential").field(name).finish(),
            Op::Backup { path, .. } => {
                f.debug_struct("Backup").field("path", path).field("password", &"***").finish()
            }
            Op::Restore { path, .. } => {
                f.debug_struct("Restore").field("path", path).field("password", &"***").finish()
            }
            Op::SetLogLevel(level) => f.debug_tuple("SetLogLevel").field(level).finish(),
            Op::ExportLogs(path) => f.debug_tuple("ExportLogs").field(path).finish(),
        }
    }
}

/// The gateway settings the Settings tab edits (the hub's `SettingsPatch`, all given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub policy: Policy,
    /// 0–100; 0 turns the limit off.
    pub cpu_percent: u8,
    /// 0–100; 0 turns the limit off.
    pub memory_percent: u8,
    pub aggregation_minutes: u32,
    pub queue_timeout_seconds: u32,
    /// Megabytes per second for all the gateway's copies together; 0 turns the limit off.
    pub bandwidth_limit_mbps: u32,
}

/// Which operation finished (the window shows its answer next to the control that asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// A new certificate, or encryption turned off.
    Certificate,
    RemotePort,
    Concurrency,
    Thresholds,
    AdminToken,
    Proxy,
    /// The answer is the names, one per line (names can't hold line breaks).
    CredentialList,
    /// A credential set or deleted.
    Credentials,
    Backup,
    Restore,
    LogLevel,
    ExportLogs,
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::SetRemoteAccess { certificate: Some(_), .. } | Op::DisableEncryption => OpKind::Certificate,
            Op::SetRemoteAccess { certificate: None, .. } => OpKind::RemotePort,
            Op::SetConcurrency(_) => OpKind::Concurrency,
            Op::SetThresholds(_) => OpKind::Thresholds,
            Op::CheckAdminToken => OpKind::AdminToken,
            Op::SetProxy(_) => OpKind::Proxy,
            Op::ListCredentials => OpKind::CredentialList,
            Op::SetCredential { .. } | Op::DeleteCredential(_) => OpKind::Credentials,
            Op::Backup { .. } => OpKind::Backup,
            Op::Restore { .. } => OpKind::Restore,
            Op::SetLogLevel(_) => OpKind::LogLevel,
            Op::ExportLogs(_) => OpKind::ExportLogs,
        }
    }
}

/// What an operation may look at.
pub struct Context<'a> {
    pub store: &'a Store,
    /// The running service's latest status, if it runs in this process.
    pub status: Option<NodeStatus>,
}

impl Context<'_> {
    /// How a change that needs a restart applies, as the end of the answer: the window
    /// restarts only a service it runs itself. (For an attached `node run`, the service thread
    /// adds that it must be restarted.)
    fn applies(&self) -> &'static str {
        if self.status.is_some() {
            "the service restarts to apply it"
        } else {
            "the node service applies it when it next starts"
        }
    }
}

/// What an operation did.
#[derive(Debug)]
pub struct Outcome {
    /// A sentence saying what happened, or why nothing did.
    pub result: Result<String, String>,
    /// The service must restart for the change to apply.
    pub restart: bool,
}

impl Outcome {
    /// Restart only if the change was made.
    fn changed(result: Result<String, String>) -> Self {
        let restart = result.is_ok();
        Outcome { result, restart }
    }

    fn answer(result: Result<String, String>) -> Self {
        Outcome { result, restart: false }
    }
}

/// Runs `op`.
pub async fn run(op: Op, context: Context<'_>) -> Outcome {
    let store = context.store;
    let applies = context.applies();
    match op {
        Op::SetRemoteAccess { port, certificate } => {
            let store = store.clone();
            Outcome::changed(
                blocking(move || set_remote_access(&store, port, certificate.as_ref(), applies)).await,
            )
        }
        Op::DisableEncryption => Outcome::changed(
            crate::node::disable_encryption(store)
                .map(|()| format!("encryption turned off; {applies}"))
                .map_err(|e| e.to_string()),
        ),
        Op::SetConcurrency(limit) => Outcome::changed(set_concurrency(store, limit, applies)),
        Op::SetThresholds(thresholds) => Outcome::answer(set_thresholds(store, thresholds).await),
        Op::CheckAdminToken => {
            Outcome::answer(admin_token(store).map(|_| "this node holds the hub's admin token".to_owned()))
        }
        Op::SetProxy(proxy) => Outcome::changed(set_proxy(store, proxy, applies)),
        Op::ListCredentials => Outcome::answer(
            crate::node::credentials::load(store)
                .map(|set| set.entries.into_keys().collect::<Vec<_>>().join("\n"))
                .map_err(|e| e.to_string()),
        ),
        Op::SetCredential { name, value } => Outcome::answer(
            crate::node::credentials::set(store, name.trim(), &value)
                .map(|_| {
                    format!("credential {:?} saved; the other nodes pick it up within seconds", name.trim())
                })
                .map_err(|e| credential_error(&e)),
        ),
        Op::DeleteCredential(name) => Outcome::answer(
            crate::node::credentials::delete(store, &name)
                .map(|_| format!("credential {name:?} deleted"))
                .map_err(|e| credential_error(&e)),
        ),
        Op::Backup { path, password } => {
            let store = store.clone();
            Outcome::answer(
                blocking(move || {
                    new_file_place(&store, &path, Replace::Never)?;
                    crate::node::backup::backup(&store, &path, &password)
                        .map(|()| {
                            format!(
                                "backup written to {} (keep the password: without it the file can't be opened)",
                                path.display()
                            )
                        })
                        .map_err(|e| e.to_string())
                })
                .await,
            )
        }
        Op::Restore { path, password } => {
            let store = store.clone();
            Outcome::changed(
                blocking(move || {
                    crate::node::backup::restore(&store, &path, &password)
                        .map(|settings| {
                            format!(
                                "restored '{}' of gateway '{}'",
                                settings.node_name, settings.gateway_name
                            )
                        })
                        .map_err(|e| e.to_string())
                })
                .await,
            )
        }
        Op::SetLogLevel(level) => Outcome::answer(set_log_level(store, &level)),
        Op::ExportLogs(path) => {
            let store = store.clone();
            let status = context.status;
            Outcome::answer(blocking(move || export_logs(&store, status.as_ref(), &path)).await)
        }
    }
}

/// Runs file-heavy or CPU-heavy work off the runtime's worker threads.
async fn blocking(work: impl FnOnce() -> Result<String, String> + Send + 'static) -> Result<String, String> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(format!("the operation failed: {e}")))
}

fn edit_settings(store: &Store, edit: impl FnOnce(&mut NodeSettings)) -> Result<NodeSettings, String> {
    let mut settings = store.settings().map_err(|e| e.to_string())?;
    edit(&mut settings);
    store.save_settings(&settings).map_err(|e| e.to_string())?;
    Ok(settings)
}

/// Writes only the file the change is in: a new port is in node.toml, a new certificate in
/// the secrets. Writing both would leave a half-changed node if the second write failed, and
/// writing the secrets back for a port change could undo a credential set a peer synced
/// meanwhile.
fn set_remote_access(
    store: &Store,
    port: u16,
    certificate: Option<&CertificateChoice>,
    applies: &str,
) -> Result<String, String> {
    if port == 0 {
        return Err("the port must be between 1 and 65535".to_owned());
    }
    let settings = store.settings().map_err(|e| e.to_string())?;
    let tls = match certificate {
        Some(choice) => Some(load_identity(choice).map_err(|e| format!("{e}; nothing was changed"))?),
        None => None,
    };
    let moves = port != settings.peer_port;
    if moves {
        port_is_free(&settings, port)?;
    }
    match tls {
        // Both at once: the node's own two-file change (the window never asks for it).
        Some(tls) if moves => {
            crate::node::set_remote_access(store, port, Some(tls)).map_err(|e| e.to_string())?;
        }
        Some(tls) => {
            let mut secrets = store.secrets().map_err(|e| e.to_string())?;
            secrets.tls = Some(tls);
            store.save_secrets(&secrets).map_err(|e| e.to_string())?;
        }
        None => {
            edit_settings(store, |s| {
                s.peer_port = port;
                if let Some((host, _)) = s.peer_address.rsplit_once(':') {
                    s.peer_address = format!("{host}:{port}");
                }
            })?;
        }
    }
    if certificate.is_some() {
        return Ok(format!(
            "the peer channel on port {port} is encrypted with the new certificate; {applies}"
        ));
    }
    // Read only for the sentence: nothing is written back.
    let encrypted = store.secrets().is_ok_and(|s| s.tls.is_some());
    Ok(if encrypted {
        format!("the peer channel moves to port {port} (still encrypted); {applies}")
    } else {
        format!("the peer channel moves to port {port}; {applies}")
    })
}

/// Refuses a port another program listens on, before the service restarts onto it.
fn port_is_free(settings: &NodeSettings, port: u16) -> Result<(), String> {
    // Where the service will listen: the registered host when it is an IP, else everywhere.
    let ip = settings
        .peer_address
        .rsplit_once(':')
        .and_then(|(host, _)| host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    std::net::TcpListener::bind((ip, port)).map(drop).map_err(|e| {
        format!("can't listen on port {port} ({e}); is another program using it? Choose another port")
    })
}

fn set_concurrency(store: &Store, limit: Option<u32>, applies: &str) -> Result<String, String> {
    let limit = limit.filter(|&l| l > 0);
    edit_settings(store, |s| s.concurrency_limit = limit)?;
    Ok(match limit {
        Some(limit) => format!("this node takes at most {limit} runs at once; {applies}"),
        None => format!("this node uses the default concurrency formula; {applies}"),
    })
}

fn set_proxy(store: &Store, proxy: Option<String>, applies: &str) -> Result<String, String> {
    let proxy = proxy.map(|p| p.trim().to_owned()).filter(|p| !p.is_empty());
    if let Some(proxy) = &proxy {
        parse_proxy(proxy).map_err(|e| format!("{e}; nothing was saved"))?;
    }
    edit_settings(store, |s| s.proxy.clone_from(&proxy))?;
    Ok(match proxy {
        Some(proxy) => format!("the hub is reached through {proxy}; {applies}"),
        None => format!("the hub is reached directly, without a proxy; {applies}"),
    })
}

fn set_log_level(store: &Store, level: &str) -> Result<String, String> {
    let level = level.trim().to_ascii_lowercase();
    if !LOG_LEVELS.contains(&level.as_str()) {
        return Err(format!("{level:?} is not a log level; use error, warn, info, debug or trace"));
    }
    edit_settings(store, |s| s.log_level.clone_from(&level))?;
    Ok(format!("log level set to {level}"))
}

/// The hub's admin token, if this node holds it (express setup with the embedded hub).
fn admin_token(store: &Store) -> Result<String, String> {
    store.secrets().map_err(|e| e.to_string())?.hub_admin_token.ok_or_else(|| {
        "this node doesn't hold the hub's admin token, so the gateway's settings are changed by the hub's admin: gatehouse hub gateway set"
            .to_owned()
    })
}

async fn set_thresholds(store: &Store, thresholds: Thresholds) -> Result<String, String> {
    if thresholds.cpu_percent > 100 || thresholds.memory_percent > 100 {
        return Err("thresholds are percentages from 0 to 100 (0 turns a limit off)".to_owned());
    }
    let token = admin_token(store)?;
    let settings = store.settings().map_err(|e| e.to_string())?;
    let client = HubClient::with_proxy(&settings.hub_url, &token, settings.proxy.as_deref())
        .map_err(|e| e.to_string())?;
    let update = SettingsPatch {
        policy: Some(thresholds.policy),
        cpu_threshold: Some(thresholds.cpu_percent),
        memory_threshold: Some(thresholds.memory_percent),
        aggregation_minutes: Some(thresholds.aggregation_minutes),
        queue_timeout_seconds: Some(thresholds.queue_timeout_seconds),
        bandwidth_limit_mbps: Some(thresholds.bandwidth_limit_mbps),
        ..SettingsPatch::default()
    };
    match client.update_settings(&settings.gateway_id, &update).await {
        Ok(view) => Ok(format!(
            "gateway '{}' saved; every node applies the new settings at its next heartbeat",
            view.name
        )),
        Err(e) => Err(match e.hint() {
            Some(hint) => format!("{e}; {hint}"),
            None => e.to_string(),
        }),
    }
}

fn credential_error(error: &crate::node::credentials::CredentialError) -> String {
    use crate::node::credentials::CredentialError;
    match error {
        // The CLI's sentence says "on standard input"; here the value is typed in a field.
        CredentialError::EmptyValue => "the credential value is empty; type it first".to_owned(),
        other => other.to_string(),
    }
}

/// Whether a file the window writes may replace one that is there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// A backup never replaces a file: it may be the earlier backup, the one still needed.
    Never,
    /// A log export may replace an earlier export (the save dialog asked).
    Allowed,
}

/// Refuses a place the window shouldn't write a file to: a relative path (it would land
/// wherever the window happened to start), anywhere inside the node's data dir (it would go
/// with the machine, and could replace the node's own files: a rename over `secrets.bin`
/// unregisters the node), or, for `Replace::Never`, a file that exists.
fn new_file_place(store: &Store, path: &Path, replace: Replace) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!(
            "{} is not a full path; choose the file with Browse… or type its whole path, starting with /",
            path.display()
        ));
    }
    let existing = std::fs::symlink_metadata(path).ok();
    if existing.as_ref().is_some_and(std::fs::Metadata::is_dir) {
        return Err(format!("{} is a folder; add a file name", path.display()));
    }
    // Where the file really lands, through any symbolic links in the folders above it.
    let landing = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => parent.canonicalize().ok().map(|p| p.join(name)),
        _ => None,
    };
    let data_dir = store.dir().canonicalize().unwrap_or_else(|_| store.dir().to_owned());
    if landing.as_deref().unwrap_or(path).starts_with(&data_dir) {
        return Err(format!(
            "{} is inside the node's data dir ({}), which holds the node's own files and goes with the machine; choose another folder",
            path.display(),
            data_dir.display()
        ));
    }
    if replace == Replace::Never && existing.is_some() {
        return Err(format!(
            "{} already exists, and a backup never replaces a file; choose a new name, or move that file away first",
            path.display()
        ));
    }
    Ok(())
}

/// Writes a zip of `<data dir>/logs/*` and `status.json` to `path`, atomically (a temp file
/// beside it, then a rename), and says where and how big.
pub fn export_logs(store: &Store, status: Option<&NodeStatus>, path: &Path) -> Result<String, String> {
    new_file_place(store, path, Replace::Allowed)?;
    if path.file_name().is_none_or(std::ffi::OsStr::is_empty) {
        return Err(format!("{} is not a file name; choose where to save the zip", path.display()));
    }
    // The first failure's sentence; the io::Error only carries it out of the closure.
    let mut failure = None;
    let mut fail = |action: &str, place: &Path, e: &dyn fmt::Display| {
        failure.get_or_insert_with(|| format!("can't {action} {}: {e}", place.display()));
        std::io::Error::other("export failed")
    };
    let written = crate::machine::write_atomic_with(path, |file| {
        let mut zip = zip::ZipWriter::new(file);
        let options =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let mut files = 0usize;
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
            files += 1;
        }
        // The status of the service in this process, else the last one `node run` left.
        let status_json = match status {
            Some(status) => serde_json::to_vec_pretty(status).map_err(|e| fail("write", path, &e))?,
            None => std::fs::read(store.dir().join("status.json")).unwrap_or_else(|_| b"null\n".to_vec()),
        };
        zip.start_file("status.json", options).map_err(|e| fail("write", path, &e))?;
        zip.write_all(&status_json).map_err(|e| fail("write", path, &e))?;
        let file = zip.finish().map_err(|e| fail("write", path, &e))?;
        let size = file.metadata().map_err(|e| fail("write", path, &e))?.len();
        Ok((files, size))
    });
    match written {
        Ok((files, size)) => Ok(format!(
            "logs exported to {} ({} and the status, {})",
            path.display(),
            match files {
                0 => "no log files yet".to_owned(),
                1 => "1 log file".to_owned(),
                n => format!("{n} log files"),
            },
            crate::encoding::binary_size(size)
        )),
        Err(e) => Err(failure.unwrap_or_else(|| format!("can't write {}: {e}", path.display()))),
    }
}
