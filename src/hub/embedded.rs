//! A hub running inside another process (the Configuration Manager's, for express setup):
//! SQLite at `<data dir>/hub.db`, and the address it listens on remembered in
//! `<data dir>/hub.toml`. It serves exactly what `gatehouse hub serve` serves.
//!
//! It listens on loopback over plain HTTP, until [`set_access`] (the window's "Open to other
//! machines", `gatehouse node hub-access network`) opens it to the network: then it listens on
//! the machine's address over HTTPS, with a certificate it makes for itself (its key
//! owner-only in the data dir), and the keys it makes for adding nodes carry the
//! certificate's SHA-256 fingerprint, so joining nodes trust it without a CA.
//!
//! **Invariant:** once `hub.toml` exists the hub only ever listens on the address written
//! there: the auth keys it handed out name that address, so moving silently would strand
//! every node registered with it. Only [`set_access`], asked for by the administrator, moves
//! it (and the caller re-points the local node).

use super::db::{Db, DbError};
use super::{HubConfig, ensure_admin_token, serve};
use crate::protocol::CertPin;
use rustls::pki_types::CertificateDer;
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
/// The certificate the hub made for itself, when it listens on the network (PEM).
pub const CERT_FILE: &str = "hub-cert.pem";
/// Its private key (PEM, owner-only).
pub const KEY_FILE: &str = "hub-key.pem";
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
    #[error("can't make the embedded hub's certificate for {address} ({reason})")]
    Certificate { address: SocketAddr, reason: String },
    #[error(
        "the embedded hub's certificate can't be used ({reason}); switch it to local access and back to the network to make a new one (nodes on other machines then need a new key)"
    )]
    Tls { reason: String },
    #[error(
        "can't tell this machine's network address ({reason}); give it: gatehouse node hub-access network --address IP"
    )]
    NoNetworkAddress { reason: String },
    #[error("this data dir hosts no embedded hub (express setup makes one); nothing was changed")]
    NoEmbeddedHub,
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
    /// Over HTTPS with the certificate it made ([`CERT_FILE`]); left out when plain HTTP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    https: bool,
}

/// Who can reach the embedded hub: [`set_access`]'s choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// This machine only: plain HTTP on loopback.
    Local,
    /// Other machines too: HTTPS on this address (`None`: the machine's address, on the
    /// port the hub has now). A port of 0 keeps the hub's port.
    Network(Option<SocketAddr>),
}

/// Where the embedded hub of a data dir is reached, as `hub.toml` (and its certificate) say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub address: SocketAddr,
    /// `http://…` on loopback, `https://…` on the network.
    pub url: String,
    /// The SHA-256 fingerprint of its certificate, over HTTPS.
    pub pin: Option<CertPin>,
}

impl Reach {
    /// Reached from other machines.
    pub fn is_network(&self) -> bool {
        self.pin.is_some()
    }
}

/// A running embedded hub. It stops when the `shutdown` token it was started with is
/// cancelled, or on [`EmbeddedHub::stop`]; dropping this handle leaves it running.
pub struct EmbeddedHub {
    /// The URL nodes reach it at (written into its auth keys).
    pub url: String,
    pub address: SocketAddr,
    /// The fingerprint of its certificate, when it serves HTTPS (on the network).
    pub pin: Option<CertPin>,
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
    Ok(read_config(dir)?.map(|config| config.listen))
}

/// Where the embedded hub of `dir` is reached; `None` if `dir` hosts no embedded hub.
pub fn reach(dir: &Path) -> Result<Option<Reach>, EmbeddedError> {
    let Some(config) = read_config(dir)? else { return Ok(None) };
    let pin = if config.https { Some(certificate(dir)?.1) } else { None };
    Ok(Some(Reach { address: config.listen, url: url(config.listen, config.https), pin }))
}

fn read_config(dir: &Path) -> Result<Option<EmbeddedConfig>, EmbeddedError> {
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
    Ok(Some(config))
}

/// The hub's certificate (DER) and its fingerprint.
fn certificate(dir: &Path) -> Result<(CertificateDer<'static>, CertPin), EmbeddedError> {
    use rustls::pki_types::pem::PemObject as _;
    use sha2::Digest as _;
    let path = dir.join(CERT_FILE);
    let cert = CertificateDer::from_pem_file(&path)
        .map_err(|e| EmbeddedError::Tls { reason: format!("{}: {e}", path.display()) })?;
    let pin = CertPin(sha2::Sha256::digest(cert.as_ref()).into());
    Ok((cert, pin))
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
    let remembered = read_config(dir)?;
    let https = remembered.as_ref().is_some_and(|config| config.https);
    let tls = if https {
        let config = super::tls::server_config(&dir.join(CERT_FILE), &dir.join(KEY_FILE))
            .map_err(|e| EmbeddedError::Tls { reason: e.to_string() })?;
        Some((config, certificate(dir)?.1))
    } else {
        None
    };
    let remembered = remembered.map(|config| config.listen);
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
        write_config(dir, &EmbeddedConfig { listen: address, https: false })?;
    }

    let url = url(address, https);
    let shutdown = shutdown.child_token();
    let (tls, pin) = tls.map_or((None, None), |(config, pin)| (Some(config), Some(pin)));
    let config = HubConfig { pin, ..HubConfig::new(url.clone()) };
    let task = tokio::spawn(serve(listener, tls, db, config, shutdown.clone()));
    tracing::info!(%address, https, database = %db_path.display(), "embedded hub started");
    Ok(EmbeddedHub { url, address, pin, admin_token, shutdown, task })
}

fn write_config(dir: &Path, config: &EmbeddedConfig) -> Result<(), EmbeddedError> {
    let path = dir.join(CONFIG_FILE);
    let text = toml::to_string(config).map_err(|e| EmbeddedError::Corrupt {
        reason: e.to_string(),
        db: dir.join(DB_FILE),
        path: path.clone(),
    })?;
    crate::machine::write_atomic(&path, text.as_bytes()).map_err(|reason| EmbeddedError::Io {
        action: "write",
        path,
        reason,
    })
}

/// Moves the (stopped) embedded hub of `dir`: onto loopback over HTTP, or onto the network
/// over HTTPS with a certificate made now for that address (SAN: its IP; the key owner-only).
/// The port stays unless the address names another. The new address is checked free first,
/// so a refused move leaves everything as it was. The caller re-points the local node at
/// the answer (its URL and pin); keys made before the move name the old address.
pub fn set_access(dir: &Path, access: Access) -> Result<Reach, EmbeddedError> {
    let current = read_config(dir)?.ok_or(EmbeddedError::NoEmbeddedHub)?;
    let port = |wanted: u16| if wanted == 0 { current.listen.port() } else { wanted };
    let (address, https) = match access {
        Access::Local => (SocketAddr::new(DEFAULT_LISTEN.ip(), current.listen.port()), false),
        Access::Network(Some(given)) => (SocketAddr::new(given.ip(), port(given.port())), true),
        Access::Network(None) => (SocketAddr::new(network_ip()?, current.listen.port()), true),
    };
    if https && address.ip().is_unspecified() {
        return Err(EmbeddedError::Listen {
            address,
            reason: std::io::Error::other("a certificate names one address, not every interface"),
        });
    }
    if address != current.listen {
        std::net::TcpListener::bind(address).map_err(|reason| EmbeddedError::Listen { address, reason })?;
    }
    let unchanged = current.https == https && current.listen.ip() == address.ip();
    if https && !(unchanged && dir.join(CERT_FILE).is_file() && dir.join(KEY_FILE).is_file()) {
        make_certificate(dir, address)?;
    }
    write_config(dir, &EmbeddedConfig { listen: address, https })?;
    tracing::info!(%address, https, "the embedded hub moved");
    reach(dir)?.ok_or(EmbeddedError::NoEmbeddedHub)
}

/// Makes the hub's self-signed certificate for `address` (ECDSA P-256, 10 years) and writes
/// it and its key (owner-only) into `dir`.
fn make_certificate(dir: &Path, address: SocketAddr) -> Result<(), EmbeddedError> {
    let failed = |reason: rcgen::Error| EmbeddedError::Certificate { address, reason: reason.to_string() };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(vec![address.ip().to_string()]).map_err(failed)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("Gatehouse hub {}", address.ip()));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key).map_err(failed)?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        crate::machine::write_atomic(&path, text.as_bytes()).map_err(|reason| EmbeddedError::Io {
            action: "write",
            path,
            reason,
        })
    };
    // The key first: a certificate without its key would be unusable.
    write(KEY_FILE, &key.serialize_pem())?;
    write(CERT_FILE, &cert.pem())
}

/// This machine's address on its network: the one its default route leaves from (a UDP
/// socket "connected" to a documentation address sends nothing, but picks the interface).
fn network_ip() -> Result<std::net::IpAddr, EmbeddedError> {
    let none = |reason: std::io::Error| EmbeddedError::NoNetworkAddress { reason: reason.to_string() };
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).map_err(none)?;
    socket.connect((std::net::Ipv4Addr::new(192, 0, 2, 1), 9)).map_err(none)?;
    let ip = socket.local_addr().map_err(none)?.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        return Err(EmbeddedError::NoNetworkAddress { reason: "it has only loopback".to_owned() });
    }
    Ok(ip)
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
    url(address, false)
}

/// [`public_url`], over HTTPS when `https`.
pub fn url(address: SocketAddr, https: bool) -> String {
    let scheme = if https { "https" } else { "http" };
    if address.ip().is_unspecified() {
        return format!("{scheme}://{}:{}", crate::machine::host_name(), address.port());
    }
    format!("{scheme}://{address}")
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
