//! The Settings and Diagnostics tabs' operations as the window sends them: each [`Op`] is run
//! on the service thread (never the UI thread) by calling the node's own operation
//! ([`crate::node::ops`], the same the CLI calls) and answered with its sentence, plus how the
//! change applies. Slow or file-heavy work (Argon2 for backups, zipping logs) runs on tokio's
//! blocking pool.
//!
//! Secrets (credential values, backup and PFX passwords) are only passed through: they never
//! reach a log line, an answer or `Debug` output.

use super::service::{CertificateChoice, load_identity};
use crate::node::NodeStatus;
use crate::node::ops::{self as node_ops, OpError, Replace};
use crate::node::store::Store;
use crate::protocol::{TokenInfo, TokenKind};
use std::fmt;
use std::path::PathBuf;

pub use crate::node::ops::Thresholds;

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
    /// The hub's viewer and metrics tokens (with the admin token this node holds), one per
    /// line: [`token_line`].
    ListHubTokens,
    /// A new viewer or metrics token at the hub; the answer shows it this once.
    CreateHubToken(TokenKind),
    /// Revoke a viewer or metrics token by id.
    RevokeHubToken(String),
    /// Replace the hub's admin token; this node keeps the new one.
    RotateAdminToken,
    /// The HTTP(S) proxy to reach the hub through; `None`: none.
    SetProxy(Option<String>),
    /// The loopback address of the node's own `/metrics`; `None`: off. The running service
    /// follows the setting (`node::exporter`).
    SetMetrics(Option<std::net::SocketAddr>),
    /// The automatic update window; `None`: off. A running `node run` follows it at its next
    /// heartbeat.
    SetAutoUpdate(Option<crate::node::auto_update::UpdateWindow>),
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
            Op::ListHubTokens => f.write_str("ListHubTokens"),
            Op::CreateHubToken(kind) => f.debug_tuple("CreateHubToken").field(kind).finish(),
            Op::RevokeHubToken(id) => f.debug_tuple("RevokeHubToken").field(id).finish(),
            Op::RotateAdminToken => f.write_str("RotateAdminToken"),
            Op::SetProxy(proxy) => f.debug_tuple("SetProxy").field(proxy).finish(),
            Op::SetMetrics(address) => f.debug_tuple("SetMetrics").field(address).finish(),
            Op::SetAutoUpdate(window) => f.debug_tuple("SetAutoUpdate").field(window).finish(),
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

/// Which operation finished (the window shows its answer next to the control that asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// A new certificate, or encryption turned off.
    Certificate,
    RemotePort,
    Concurrency,
    Thresholds,
    AdminToken,
    /// The answer is the tokens, one [`token_line`] a line.
    HubTokenList,
    /// A hub token made or revoked, or the admin token rotated.
    HubTokens,
    Proxy,
    Metrics,
    AutoUpdate,
    /// The answer is the names, one per line (names can't hold line breaks).
    CredentialList,
    /// A credential set or deleted.
    Credentials,
    Backup,
    Restore,
    LogLevel,
    ExportLogs,
}

impl OpKind {
    /// The tab whose control asks for this kind, where its answer shows.
    pub fn asked_by(self) -> super::Tab {
        match self {
            OpKind::LogLevel | OpKind::ExportLogs => super::Tab::Diagnostics,
            _ => super::Tab::Settings,
        }
    }
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::SetRemoteAccess { certificate: Some(_), .. } | Op::DisableEncryption => OpKind::Certificate,
            Op::SetRemoteAccess { certificate: None, .. } => OpKind::RemotePort,
            Op::SetConcurrency(_) => OpKind::Concurrency,
            Op::SetThresholds(_) => OpKind::Thresholds,
            Op::CheckAdminToken => OpKind::AdminToken,
            Op::ListHubTokens => OpKind::HubTokenList,
            Op::CreateHubToken(_) | Op::RevokeHubToken(_) | Op::RotateAdminToken => OpKind::HubTokens,
            Op::SetProxy(_) => OpKind::Proxy,
            Op::SetMetrics(_) => OpKind::Metrics,
            Op::SetAutoUpdate(_) => OpKind::AutoUpdate,
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
    let changed = |result: Result<String, OpError>| {
        Outcome::changed(result.map(|done| format!("{done}; {applies}")).map_err(|e| e.to_string()))
    };
    let answer = |result: Result<String, OpError>| Outcome::answer(result.map_err(|e| e.to_string()));
    match op {
        Op::SetRemoteAccess { port, certificate } => {
            let store = store.clone();
            let result = blocking(move || {
                let tls = match &certificate {
                    Some(choice) => {
                        Some(load_identity(choice).map_err(|e| format!("{e}; nothing was changed"))?)
                    }
                    None => None,
                };
                node_ops::set_remote_access(&store, port, tls)
                    .map(|done| done.to_string())
                    .map_err(|e| e.to_string())
            })
            .await;
            Outcome::changed(result.map(|done| format!("{done}; {applies}")))
        }
        Op::DisableEncryption => changed(node_ops::disable_encryption(store).map(|d| d.to_string())),
        Op::SetConcurrency(limit) => changed(node_ops::set_concurrency(store, limit).map(|d| d.to_string())),
        Op::SetThresholds(thresholds) => {
            answer(node_ops::set_thresholds(store, thresholds).await.map(|d| d.to_string()))
        }
        Op::CheckAdminToken => {
            answer(node_ops::admin_token(store).map(|_| "this node holds the hub's admin token".to_owned()))
        }
        Op::ListHubTokens => answer(
            node_ops::hub_tokens(store)
                .await
                .map(|tokens| tokens.0.iter().map(token_line).collect::<Vec<_>>().join("\n")),
        ),
        Op::CreateHubToken(kind) => {
            answer(node_ops::create_hub_token(store, kind).await.map(|d| d.to_string()))
        }
        Op::RevokeHubToken(id) => answer(node_ops::revoke_hub_token(store, &id).await.map(|d| d.to_string())),
        Op::RotateAdminToken => answer(node_ops::rotate_hub_admin_token(store).await.map(|d| d.to_string())),
        Op::SetProxy(proxy) => changed(node_ops::set_proxy(store, proxy.as_deref()).map(|d| d.to_string())),
        Op::SetMetrics(address) => {
            answer(node_ops::set_metrics_listen(store, address).map(|d| d.to_string()))
        }
        Op::SetAutoUpdate(window) => auto_update(&context, window),
        Op::ListCredentials | Op::SetCredential { .. } | Op::DeleteCredential(_) => credentials(store, op),
        Op::Backup { path, password } => {
            let store = store.clone();
            Outcome::answer(
                blocking(move || {
                    node_ops::backup(&store, &path, &password, Replace::Never)
                        .map(|done| done.to_string())
                        .map_err(|e| e.to_string())
                })
                .await,
            )
        }
        Op::Restore { path, password } => {
            let store = store.clone();
            Outcome::changed(
                blocking(move || {
                    node_ops::restore(&store, &path, &password)
                        .map(|done| done.to_string())
                        .map_err(|e| e.to_string())
                })
                .await,
            )
        }
        Op::SetLogLevel(level) => answer(node_ops::set_log_level(store, &level).map(|d| d.to_string())),
        Op::ExportLogs(path) => {
            let store = store.clone();
            let status = context.status;
            Outcome::answer(
                blocking(move || {
                    node_ops::export_logs(&store, status.as_ref(), &path)
                        .map(|done| done.to_string())
                        .map_err(|e| e.to_string())
                })
                .await,
            )
        }
    }
}

/// The credential operations: names listed (never values), one set or deleted.
fn credentials(store: &Store, op: Op) -> Outcome {
    Outcome::answer(match op {
        Op::SetCredential { name, value } => crate::node::credentials::set(store, name.trim(), &value)
            .map(|_| format!("credential {:?} saved; the other nodes pick it up within seconds", name.trim()))
            .map_err(|e| credential_error(&e)),
        Op::DeleteCredential(name) => crate::node::credentials::delete(store, &name)
            .map(|_| format!("credential {name:?} deleted"))
            .map_err(|e| credential_error(&e)),
        _ => crate::node::credentials::load(store)
            .map(|set| set.live().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join("\n"))
            .map_err(|e| e.to_string()),
    })
}

/// Saves the automatic update window; the answer says when it applies: a `node run` follows
/// node.toml at its next heartbeat, while the window's own service can't replace its binary.
fn auto_update(context: &Context<'_>, window: Option<crate::node::auto_update::UpdateWindow>) -> Outcome {
    let applies = match &context.status {
        Some(_) => {
            "it applies when the node runs as a service (gatehouse node start), not inside this window"
        }
        None => "a running node service follows it at its next heartbeat",
    };
    Outcome::answer(
        node_ops::set_auto_update(context.store, window)
            .map(|done| format!("{done}; {applies}"))
            .map_err(|e| e.to_string()),
    )
}

/// One hub token as the list answer carries it: id, kind, when made and when revoked (empty
/// if not), tab-separated (none of them holds a tab).
pub fn token_line(token: &TokenInfo) -> String {
    let revoked = token.revoked_ms.map(crate::encoding::utc_timestamp).unwrap_or_default();
    format!(
        "{}\t{}\t{}\t{revoked}",
        token.id,
        token.kind.as_str(),
        crate::encoding::utc_timestamp(token.created_ms)
    )
}

/// The answer to `op` in a window attached to a node service of another user (the system
/// service in `dir`): its files are that user's alone (root writing them would leave files
/// the service can't read), so nothing is changed from here; the sentence gives the command
/// that makes the change as that user, when there is one.
pub fn elsewhere(op: &Op, dir: &std::path::Path) -> String {
    let command = match op {
        Op::SetRemoteAccess { port, certificate: None } => {
            Some(format!("enable-remote-access --port {port}"))
        }
        Op::SetRemoteAccess { port, certificate: Some(_) } => {
            Some(format!("enable-remote-access --port {port} --cert FILE"))
        }
        Op::DisableEncryption => Some("disable-remote-access".to_owned()),
        Op::SetConcurrency(limit) => Some(format!("set-concurrency {}", limit.unwrap_or(0))),
        Op::ListCredentials => Some("credential list".to_owned()),
        Op::SetCredential { name, .. } => Some(format!("credential set {}", name.trim())),
        Op::DeleteCredential(name) => Some(format!("credential delete {name}")),
        Op::Backup { .. } => Some("backup --out FILE".to_owned()),
        Op::SetLogLevel(level) => Some(format!("log-level {level}")),
        Op::SetMetrics(address) => {
            Some(format!("set-metrics {}", address.map_or_else(|| "off".to_owned(), |a| a.to_string())))
        }
        Op::SetAutoUpdate(window) => {
            Some(window.map_or_else(|| "auto-update off".to_owned(), |w| format!("auto-update {}", w.args())))
        }
        Op::SetThresholds(_)
        | Op::CheckAdminToken
        | Op::SetProxy(_)
        | Op::Restore { .. }
        | Op::ExportLogs(_)
        | Op::ListHubTokens
        | Op::CreateHubToken(_)
        | Op::RevokeHubToken(_)
        | Op::RotateAdminToken => None,
    };
    let owner = format!(
        "this window is attached to the node service of {}, whose settings and secrets only its own user can read and change",
        dir.display()
    );
    match command {
        Some(command) => format!(
            "{owner}; do it with: sudo runuser -u gatehouse -- env GATEHOUSE_HOME={} gatehouse node {command} (then, if it needs one, a restart: sudo gatehouse node restart)",
            dir.display()
        ),
        None => format!(
            "{owner}, so this can't be done from here; do it as that user (sudo runuser -u gatehouse -- …)"
        ),
    }
}

/// Runs file-heavy or CPU-heavy work off the runtime's worker threads.
async fn blocking(work: impl FnOnce() -> Result<String, String> + Send + 'static) -> Result<String, String> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(format!("the operation failed: {e}")))
}

fn credential_error(error: &crate::node::credentials::CredentialError) -> String {
    use crate::node::credentials::CredentialError;
    match error {
        // The CLI's sentence says "on standard input"; here the value is typed in a field.
        CredentialError::EmptyValue => "the credential value is empty; type it first".to_owned(),
        other => other.to_string(),
    }
}
