//! A hub running inside another process (the Configuration Manager's, for express setup):
//! SQLite at `<data dir>/hub.db`, and the address it listens on remembered in
//! `<data dir>/hub.toml`. It serves exactly what `gatehouse hub serve` serves.
//!
//! **Invariant:** once `hub.toml` exists the hub only ever listens on the address written
//! there: the auth keys it handed out name that address, so moving silently would strand
//! every node registered with it.

use super::db::{Db, DbError};
use super::{HubConfig, ensure_admin_token, serve};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The embedded hub's settings file in the data dir.
pub const CONFIG_FILE: &str = "hub.toml";
/// The embedded hub's SQLite database in the data dir.
pub const DB_FILE: &str = "hub.db";
/// Where an embedded hub listens on its first start unless told otherwise: loopback only,
/// so no other machine can reach it.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7070);

/// Why the embedded hub can't start. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("can't {action} {}: {reason}", path.display())]
    Io { action: &'static str, path: PathBuf, reason: std::io::Error },
    #[error(
        "{} is damaged ({reason}); fix it (it holds one line: listen = \"HOST:PORT\"), or remove it together with {} to start a new hub (its nodes then register again)",
        path.display(), db.display()
    )]
    Corrupt { path: PathBuf, db: PathBuf, reason: String },
    #[error(
        "can't open the hub database {} ({reason}); is another Gatehouse process using this data dir? If the file is damaged, remove it (and {}) to start a new hub; its nodes then register again",
        path.display(), config.display()
    )]
    Database { path: PathBuf, config: PathBuf, reason: DbError },
    #[error(
        "the embedded hub must listen on {address}, the address its nodes know (remembered in {}), but can't ({reason}); stop whatever uses that port (another Configuration Manager?) and try again",
        config.display()
    )]
    RememberedAddress { address: SocketAddr, config: PathBuf, reason: std::io::Error },
    #[error("can't listen on {address} for the embedded hub ({reason}); choose another address")]
    Listen { address: SocketAddr, reason: std::io::Error },
    #[error(
        "{} is already the database of another hub (it has an admin token, but there is no {}: gatehouse hub serve keeps its database in the data dir too), so the embedded hub won't take it over; to use that hub, set GATEHOUSE_HUB and GATEHOUSE_ADMIN_TOKEN or use manual setup with one of its auth keys; for a new embedded hub, stop that hub and move {} out of the data dir",
        db.display(), config.display(), db.display()
    )]
    OtherHub { db: PathBuf, config: PathBuf },
}

/// What `hub.toml` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddedConfig {
    /// The address the hub listens on, and that its auth keys name.
    listen: SocketAddr,
}

/// A running embedded hub. It stops when the `shutdown` token it was started with is
/// cancelled, or on [`EmbeddedHub::stop`]; dropping this handle leaves it running.
pub struct EmbeddedHub {
    /// The URL nodes reach it at (written into its auth keys).
    pub url: String,
    pub address: SocketAddr,
    /// The admin token, only when it was created by this start (the caller must keep it:
    /// the hub stores only its hash).
    pub admin_token: Option<String>,
    /// Stops this hub alone; a child of the caller's token.
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl fmt::Debug for EmbeddedHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedHub")
            .field("url", &self.url)
            .field("address", &self.address)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl EmbeddedHub {
    /// True once the hub has stopped serving (shut down, or failed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops this hub (not the rest of what its shutdown token stops) and waits until its
    /// port is free again.
    pub async fn stop(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        self.stopped().await
    }

    /// Waits until the hub has stopped (after its shutdown token was cancelled).
    pub async fn stopped(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(format!("the embedded hub's task failed: {e}"))),
        }
    }
}

/// The address the embedded hub of `dir` listens on; `None` if `dir` hosts no embedded hub.
pub fn configured(dir: &Path) -> Result<Option<SocketAddr>, EmbeddedError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(reason) => return Err(EmbeddedError::Io { action: "read", path, reason }),
    };
    let config: EmbeddedConfig = toml::from_str(&text).map_err(|e| EmbeddedError::Corrupt {
        reason: e.message().to_owned(),
        db: dir.join(DB_FILE),
        path: path.clone(),
    })?;
    if config.listen.port() == 0 {
        return Err(EmbeddedError::Corrupt {
            reason: "its port is 0".to_owned(),
            db: dir.join(DB_FILE),
            path,
        });
    }
    Ok(Some(config.listen))
}

/// Starts the embedded hub of `dir` on this tokio runtime.
///
/// On the first start (no `hub.toml` yet) it listens on `listen`, or, when that port is
/// taken, on a free port of the same IP; port 0 picks a free port. Later starts ignore
/// `listen` and use the remembered address, failing clearly when it is taken.
pub async fn start(
    dir: &Path,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<EmbeddedHub, EmbeddedError> {
    let remembered = configured(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    let db_path = dir.join(DB_FILE);
    // Owner-only: the hub's database holds every gateway's secret.
    crate::machine::owner_only_dir(dir).map_err(|reason| EmbeddedError::Io {
        action: "create",
        path: dir.to_owned(),
        reason,
    })?;
    let database =
        |reason| EmbeddedError::Database { path: db_path.clone(), config: config_path.clone(), reason };
    let db = Db::open(&super::db::sqlite_url(&db_path)).await.map_err(database)?;

    let listener = match remembered {
        Some(address) => TcpListener::bind(address).await.map_err(|reason| {
            EmbeddedError::RememberedAddress { address, config: config_path.clone(), reason }
        })?,
        None => bind_or_fallback(listen).await?,
    };
    let address = listener.local_addr().map_err(|reason| EmbeddedError::Io {
        action: "read the address of",
        path: db_path.clone(),
        reason,
    })?;
    let admin_token = ensure_admin_token(&db).await.map_err(database)?;
    if remembered.is_none() {
        // A first start makes a new hub, so it makes the admin token. One that is there already
        // belongs to another hub on this file (`hub serve` defaults to it too, or another window
        // started this data dir's embedded hub just now; the token's insert decides which). Its
        // keys name another address: writing hub.toml would take it over under a wrong one.
        if admin_token.is_none() {
            return Err(EmbeddedError::OtherHub { db: db_path, config: config_path });
        }
        let text = toml::to_string(&EmbeddedConfig { listen: address }).map_err(|e| {
            EmbeddedError::Corrupt { reason: e.to_string(), db: db_path.clone(), path: config_path.clone() }
        })?;
        crate::machine::write_atomic(&config_path, text.as_bytes()).map_err(|reason| EmbeddedError::Io {
            action: "write",
            path: config_path.clone(),
            reason,
        })?;
    }

    let url = public_url(address);
    let shutdown = shutdown.child_token();
    let task = tokio::spawn(serve(listener, None, db, HubConfig::new(url.clone()), shutdown.clone()));
    tracing::info!(%address, database = %db_path.display(), "embedded hub started");
    Ok(EmbeddedHub { url, address, admin_token, shutdown, task })
}

/// Listens on `wanted`, or on a free port of the same IP if that port is taken.
async fn bind_or_fallback(wanted: SocketAddr) -> Result<TcpListener, EmbeddedError> {
    match TcpListener::bind(wanted).await {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            let free = SocketAddr::new(wanted.ip(), 0);
            let listener = TcpListener::bind(free)
                .await
                .map_err(|reason| EmbeddedError::Listen { address: free, reason })?;
            tracing::info!(taken = %wanted, "the embedded hub's port was taken; it uses a free port instead");
            Ok(listener)
        }
        Err(reason) => Err(EmbeddedError::Listen { address: wanted, reason }),
    }
}

/// The URL an embedded hub listening on `address` is reached at, and that its auth keys name:
/// the address itself, or the host name when it listens on every interface (`0.0.0.0` names
/// no machine).
pub fn public_url(address: SocketAddr) -> String {
    if address.ip().is_unspecified() {
        return format!("http://{}:{}", crate::machine::host_name(), address.port());
    }
    format!("http://{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_address_or_the_host_for_every_interface() {
        assert_eq!(public_url("127.0.0.1:7070".parse().unwrap()), "http://127.0.0.1:7070");
        assert_eq!(public_url("[::1]:7070".parse().unwrap()), "http://[::1]:7070");
        assert!(!public_url("0.0.0.0:7070".parse().unwrap()).contains("0.0.0.0"));
    }

    #[test]
    fn a_damaged_or_portless_config_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(configured(dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join(CONFIG_FILE), "listen = \"nowhere\"").unwrap();
        let error = configured(dir.path()).unwrap_err();
        assert!(error.to_string().contains("hub.toml is damaged"), "{error}");
        std::fs::write(dir.path().join(CONFIG_FILE), "listen = \"127.0.0.1:0\"").unwrap();
        assert!(configured(dir.path()).unwrap_err().to_string().contains("port is 0"));
        std::fs::write(dir.path().join(CONFIG_FILE), "listen = \"127.0.0.1:7071\"\n").unwrap();
        assert_eq!(configured(dir.path()).unwrap(), Some("127.0.0.1:7071".parse().unwrap()));
    }
}
