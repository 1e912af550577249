//! Express setup, the wizard's one-click path (DESIGN.md §6): use the configured hub or start
//! one embedded in this process, create (or reuse) a gateway named after this machine, and
//! register this node with it, unencrypted. The window's service thread runs it through
//! [`super::Host::express`] and shows its outcome or its error's sentence; `gatehouse node run`
//! starts the embedded hub it left with [`start_embedded_hub_if_configured`].
//!
//! **Invariant:** the embedded hub's admin token is kept in the node's sealed secrets from
//! the moment it is created (the hub keeps only its hash), whatever fails after.

use crate::client::{ClientError, HubClient};
use crate::hub::embedded::{self, EmbeddedError, EmbeddedHub};
use crate::node::store::{NodeSettings, Store, StoreError};
use crate::node::{NodeError, Registration};
use crate::protocol::{CreateGateway, KeySlot};
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use tokio_util::sync::CancellationToken;

/// The peer port express setup asks for first.
pub const DEFAULT_PEER_PORT: u16 = 8060;

/// A hub that runs elsewhere, with the admin token to create a gateway there.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfiguredHub {
    pub url: String,
    pub admin_token: String,
}

impl fmt::Debug for ConfiguredHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredHub").field("url", &self.url).field("admin_token", &"***").finish()
    }
}

/// The configured hub from `GATEHOUSE_HUB` and `GATEHOUSE_ADMIN_TOKEN`, when both are set
/// (the same variables the admin CLI reads).
pub fn configured_hub_from_env() -> Option<ConfiguredHub> {
    let read = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    Some(ConfiguredHub { url: read("GATEHOUSE_HUB")?, admin_token: read("GATEHOUSE_ADMIN_TOKEN")? })
}

/// How express setup goes about it; [`Default`] is the product's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpressOptions {
    /// The hub to use; `None`: the hub embedded in this data dir (started if needed).
    pub hub: Option<ConfiguredHub>,
    /// Where the embedded hub listens on its first start (a taken port falls back to a free
    /// one); later starts use the address remembered in `hub.toml`.
    pub hub_listen: SocketAddr,
    /// The peer port asked for first; a taken one falls back to a free port (0: any).
    pub peer_port: u16,
    /// The host other nodes reach this one at; `None`: with the embedded hub, `127.0.0.1`
    /// while it listens on loopback (no other machine joins it) or its network address once
    /// it is open to other machines; else the host name.
    pub peer_host: Option<String>,
}

impl Default for ExpressOptions {
    fn default() -> Self {
        ExpressOptions {
            hub: None,
            hub_listen: embedded::DEFAULT_LISTEN,
            peer_port: DEFAULT_PEER_PORT,
            peer_host: None,
        }
    }
}

/// A registered node, and the embedded hub it registered with (if any), still running: the
/// caller keeps it as long as the node service, and stops both with the same token.
#[derive(Debug)]
pub struct ExpressOutcome {
    pub settings: NodeSettings,
    pub hub: Option<EmbeddedHub>,
}

/// Why express setup did not register this node. Refusals of the hub come through unchanged
/// (the window shows them as they are).
#[derive(Debug, thiserror::Error)]
pub enum ExpressError {
    /// Registering failed: already registered here, refused by the hub (for example a
    /// gateway that encrypts its peer channel), or the hub out of reach.
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    EmbeddedHub(#[from] EmbeddedError),
    /// An admin request to the hub (listing or creating the gateway, a fresh key) failed.
    #[error("{0}")]
    Admin(ClientError),
    #[error(
        "the hub embedded in this data dir has an admin token, but this node's secrets don't hold it, so express setup can't create a gateway there; remove {} and {} to start a new embedded hub (nodes registered with the old one must register again), or use manual setup with an auth key",
        db.display(), config.display()
    )]
    LostAdminToken { db: std::path::PathBuf, config: std::path::PathBuf },
    #[error("can't find a port for the peer channel on {host} ({reason}); enter one in manual setup")]
    PeerPort { host: String, reason: std::io::Error },
}

/// Registers this machine in one go (see the module doc). On success the embedded hub, if
/// one is used, is handed back running; on failure it is stopped again, so a retry finds its
/// port free.
pub async fn express_setup(
    store: &Store,
    options: &ExpressOptions,
    shutdown: CancellationToken,
) -> Result<ExpressOutcome, ExpressError> {
    // Refuse before starting anything or touching the hub; damaged settings are named too
    // (they still say "registered", and registering would overwrite them).
    match store.settings() {
        Ok(settings) => {
            return Err(NodeError::AlreadyRegistered {
                gateway: settings.gateway_name,
                name: settings.node_name,
            }
            .into());
        }
        Err(StoreError::NotRegistered) => {}
        Err(e) => return Err(e.into()),
    }
    store.ensure_dir()?;
    let (hub, url, admin_token) = match &options.hub {
        Some(configured) => (None, configured.url.clone(), configured.admin_token.clone()),
        None => embedded_hub(store, options.hub_listen, shutdown).await?,
    };
    let embedded = options.hub.is_none();
    let peer_host = options.peer_host.clone().map_or_else(|| default_peer_host(store, embedded), Ok)?;
    match register_with(store, &url, &admin_token, &peer_host, options.peer_port).await {
        // `register` keeps the embedded hub's admin token in the secrets it writes.
        Ok(settings) => {
            tracing::info!(gateway = %settings.gateway_name, node = %settings.node_name, hub = %url, "express setup registered this node");
            Ok(ExpressOutcome { settings, hub })
        }
        Err(e) => Err(match hub {
            Some(hub) => stopping(hub, e).await,
            None => e,
        }),
    }
}

/// Where other nodes reach this one unless told: with the embedded hub, where they reach the
/// hub (loopback while it listens only there, else its network address); else the host name.
fn default_peer_host(store: &Store, embedded: bool) -> Result<String, ExpressError> {
    if !embedded {
        return Ok(crate::machine::host_name());
    }
    Ok(match embedded::reach(store.dir())? {
        Some(reach) if reach.is_network() => reach.address.ip().to_string(),
        _ => "127.0.0.1".to_owned(),
    })
}

/// Starts the hub embedded in the node's data dir, if it hosts one (after an express setup),
/// so the node finds its hub up before its service starts.
pub async fn start_embedded_hub_if_configured(
    store: &Store,
    shutdown: CancellationToken,
) -> Result<Option<EmbeddedHub>, ExpressError> {
    let Some(address) = embedded::configured(store.dir())? else {
        return Ok(None);
    };
    let hub = embedded::start(store.dir(), address, shutdown).await?;
    // A new database (hub.db removed) made a new admin token: it must not be lost.
    if let Some(token) = &hub.admin_token
        && let Err(e) = store.remember_hub_admin_token(token)
    {
        return Err(stopping(hub, e.into()).await);
    }
    Ok(Some(hub))
}

/// The embedded hub to register with, its URL and admin token: the one already serving, else
/// one started now (handed back, to keep running).
async fn embedded_hub(
    store: &Store,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(Option<EmbeddedHub>, String, String), ExpressError> {
    if let Some((url, token)) = running_embedded_hub(store).await? {
        // Started earlier by this window, and kept by whoever started it.
        return Ok((None, url, token));
    }
    let hub = embedded::start(store.dir(), listen, shutdown).await?;
    match embedded_admin_token(store, &hub) {
        Ok(token) => {
            let url = hub.url.clone();
            Ok((Some(hub), url, token))
        }
        Err(e) => Err(stopping(hub, e).await),
    }
}

/// The URL and admin token of this data dir's embedded hub when it is already serving (the
/// window started it, then the node was unregistered); `None` when it isn't.
async fn running_embedded_hub(store: &Store) -> Result<Option<(String, String)>, ExpressError> {
    let Some(reach) = embedded::reach(store.dir())? else {
        return Ok(None);
    };
    let url = reach.url;
    // Any token will do for the health check, which sends none.
    let answers = embedded_client(&url, "health", reach.pin)?.healthy().await;
    if !matches!(answers, Ok(true)) {
        return Ok(None);
    }
    Ok(Some((url, kept_admin_token(store)?)))
}

/// The admin token of the embedded hub: the one it just created (stored at once), or the one
/// kept in the secrets since it was created.
fn embedded_admin_token(store: &Store, hub: &EmbeddedHub) -> Result<String, ExpressError> {
    if let Some(token) = &hub.admin_token {
        store.remember_hub_admin_token(token)?;
        return Ok(token.clone());
    }
    kept_admin_token(store)
}

/// The embedded hub's admin token from the secrets, or why it isn't there.
fn kept_admin_token(store: &Store) -> Result<String, ExpressError> {
    let kept = match store.secrets() {
        Ok(secrets) => secrets.hub_admin_token,
        Err(StoreError::NotRegistered) => None,
        Err(e) => return Err(e.into()),
    };
    kept.ok_or_else(|| ExpressError::LostAdminToken {
        db: store.dir().join(embedded::DB_FILE),
        config: store.dir().join(embedded::CONFIG_FILE),
    })
}

/// Stops `hub` (so its port is free for a retry) and hands back `error`.
async fn stopping(hub: EmbeddedHub, error: ExpressError) -> ExpressError {
    if let Err(e) = hub.stop().await {
        tracing::warn!("the embedded hub stopped with an error: {e}");
    }
    error
}

/// A client of the embedded hub at `url`: by its certificate's fingerprint over HTTPS.
fn embedded_client(
    url: &str,
    token: &str,
    pin: Option<crate::protocol::CertPin>,
) -> Result<HubClient, ExpressError> {
    match pin {
        Some(pin) => HubClient::pinned(url, token, pin),
        None => HubClient::new(url, token),
    }
    .map_err(ExpressError::Admin)
}

/// Creates or reuses the gateway named after this machine and registers this node with it.
async fn register_with(
    store: &Store,
    url: &str,
    admin_token: &str,
    peer_host: &str,
    peer_port: u16,
) -> Result<NodeSettings, ExpressError> {
    let pin = embedded::reach(store.dir())?.filter(|reach| reach.url == url).and_then(|reach| reach.pin);
    let admin = embedded_client(url, admin_token, pin)?;
    let name = crate::machine::host_name();
    let key = gateway_key(&admin, &name).await?;
    let peer_port = free_peer_port(peer_host, peer_port)?;
    let registration = Registration {
        key,
        name: None,
        peer_port,
        peer_address: Some(format!("{peer_host}:{peer_port}")),
        tls: None,
        hub_ca: None,
    };
    Ok(crate::node::register(store, registration).await?)
}

/// An auth key of the gateway `name`: a new gateway's primary key, or a fresh secondary key
/// of an existing one (the hub keeps only hashes, so an old key can't be read back).
async fn gateway_key(admin: &HubClient, name: &str) -> Result<String, ExpressError> {
    let existing = admin.gateways().await.map_err(ExpressError::Admin)?;
    if let Some(gateway) = existing.iter().find(|g| g.name.eq_ignore_ascii_case(name)) {
        return fresh_key(admin, &gateway.id).await;
    }
    let request =
        CreateGateway { name: name.to_owned(), settings: crate::protocol::GatewaySettings::default() };
    match admin.create_gateway(&request).await {
        Ok(created) => Ok(created.keys.primary),
        // Created meanwhile by someone else: use theirs.
        Err(ClientError::Refused { status: 409, .. }) => fresh_key(admin, name).await,
        Err(e) => Err(ExpressError::Admin(e)),
    }
}

async fn fresh_key(admin: &HubClient, gateway: &str) -> Result<String, ExpressError> {
    let regenerated = admin.regenerate_key(gateway, KeySlot::Secondary).await.map_err(ExpressError::Admin)?;
    Ok(regenerated.key)
}

/// `wanted` if the peer channel can listen there, else a free port. Probes the address the
/// node service will listen on: `host:port` when `host` is an IP, else every interface.
fn free_peer_port(host: &str, wanted: u16) -> Result<u16, ExpressError> {
    let ip = format!("{host}:{wanted}")
        .parse::<SocketAddr>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |address| address.ip());
    if wanted != 0 && TcpListener::bind(SocketAddr::new(ip, wanted)).is_ok() {
        return Ok(wanted);
    }
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|reason| ExpressError::PeerPort { host: host.to_owned(), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_peer_port_falls_back_to_a_free_one() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let chosen = free_peer_port("127.0.0.1", port).unwrap();
        assert_ne!(chosen, port);
        assert_ne!(chosen, 0);
        drop(taken);
        assert_eq!(free_peer_port("127.0.0.1", port).unwrap(), port);
    }

    #[test]
    fn the_configured_hub_hides_its_token() {
        let hub = ConfiguredHub { url: "http://hub:7070".into(), admin_token: "gha_secret".into() };
        assert!(!format!("{hub:?}").contains("gha_secret"));
    }
}
