//! Express setup and the embedded hub, for real on loopback: a hub started inside the test
//! process in a temp data dir, the node registered with it and later found at the same
//! address; refusals (already registered, damaged settings, a gateway that encrypts, a lost
//! admin token, a `hub serve` database in the data dir) leave the data dir unregistered; a
//! taken port on first start moves the hub, a taken remembered port is an error; the data dir
//! is owner-only and may hold characters URLs read otherwise.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::Hub;
use gatehouse::client::HubClient;
use gatehouse::host::express::{
    ConfiguredHub, ExpressError, ExpressOptions, express_setup, start_embedded_hub_if_configured,
};
use gatehouse::hub::embedded::{self, EmbeddedError};
use gatehouse::node::NodeError;
use gatehouse::node::store::Store;
use gatehouse::protocol::{CreateGateway, GatewaySettings, RegisterRequest};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// No step of these tests should take anywhere near this long on loopback.
const LIMIT: Duration = Duration::from_secs(30);

/// Awaits `future`, failing the test after [`LIMIT`].
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Options for a test: any free port for the hub and the peer channel, loopback peers.
fn loopback(hub: Option<ConfiguredHub>) -> ExpressOptions {
    ExpressOptions {
        hub,
        hub_listen: "127.0.0.1:0".parse().unwrap(),
        peer_port: 0,
        peer_host: Some("127.0.0.1".to_owned()),
    }
}

fn admin(url: &str, store: &Store) -> HubClient {
    let token = store.secrets().unwrap().hub_admin_token.expect("no admin token in the secrets");
    HubClient::new(url, &token).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_setup_registers_with_an_embedded_hub_that_comes_back_on_the_same_address() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("data"));
    let host = gatehouse::machine::host_name();
    let shutdown = CancellationToken::new();
    let outcome =
        bounded("express setup", express_setup(&store, &loopback(None), shutdown.clone())).await.unwrap();
    let hub = outcome.hub.expect("express setup started no embedded hub");
    let settings = outcome.settings;
    assert!(hub.address.ip().is_loopback() && hub.address.port() != 0, "{}", hub.address);
    assert_eq!(settings.hub_url, format!("http://{}", hub.address));
    assert_eq!((settings.node_name.as_str(), settings.gateway_name.as_str()), (host.as_str(), host.as_str()));
    assert!(settings.peer_address.starts_with("127.0.0.1:"), "{}", settings.peer_address);
    assert_eq!(store.settings().unwrap(), settings);

    // The hub's files are in the data dir, and hub.toml remembers where it listens.
    assert!(store.dir().join("hub.db").is_file());
    assert_eq!(embedded::configured(store.dir()).unwrap(), Some(hub.address));
    let toml = std::fs::read_to_string(store.dir().join("hub.toml")).unwrap();
    assert_eq!(toml.trim(), format!("listen = \"{}\"", hub.address));

    // The admin token was made now, kept in the secrets, and sealed there.
    let token = hub.admin_token.clone().expect("a new hub made no admin token");
    let secrets = store.secrets().unwrap();
    assert_eq!(secrets.hub_admin_token.as_deref(), Some(token.as_str()));
    assert!(!secrets.node_token.is_empty(), "the registration's own secrets were lost");
    let raw = std::fs::read(store.dir().join("secrets.bin")).unwrap();
    assert!(!raw.windows(token.len()).any(|w| w == token.as_bytes()), "the admin token is in the clear");

    // The hub lists the node, for an admin with the kept token.
    let nodes = admin(&hub.url, &store).nodes(&settings.gateway_id).await.unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!((nodes[0].id.as_str(), nodes[0].name.as_str()), (settings.node_id.as_str(), host.as_str()));
    assert_eq!(nodes[0].peer_address, settings.peer_address);

    // Stopped, it answers no more; started again, it is back where the node expects it.
    let address = hub.address;
    shutdown.cancel();
    bounded("the hub to stop", hub.stopped()).await.unwrap();
    let probe = HubClient::new(&settings.hub_url, &token).unwrap();
    assert!(probe.healthy().await.is_err(), "the hub still answers after its shutdown");
    let shutdown = CancellationToken::new();
    let again = bounded("the second start", start_embedded_hub_if_configured(&store, shutdown.clone()))
        .await
        .unwrap()
        .expect("the data dir hosts an embedded hub, but none started");
    assert_eq!(again.address, address);
    assert_eq!(again.url, settings.hub_url);
    assert!(again.admin_token.is_none(), "a restarted hub must keep its admin token");
    let admin = admin(&again.url, &store);
    let gateways = admin.gateways().await.unwrap();
    assert_eq!(gateways.len(), 1, "{gateways:?}");
    assert_eq!(
        (gateways[0].id.as_str(), gateways[0].name.as_str()),
        (settings.gateway_id.as_str(), host.as_str())
    );
    assert_eq!(gateways[0].nodes.len(), 1);
    assert_eq!(gateways[0].nodes[0].id, settings.node_id);

    // Unregistered, express setup joins the same gateway again through the running hub.
    bounded("unregistering", gatehouse::node::unregister(&store)).await.unwrap();
    assert!(admin.nodes(&settings.gateway_id).await.unwrap().is_empty());
    let rejoined = bounded("express setup again", express_setup(&store, &loopback(None), shutdown.clone()))
        .await
        .unwrap();
    assert!(rejoined.hub.is_none(), "the hub already ran; express setup must not start a second one");
    assert_eq!(rejoined.settings.gateway_id, settings.gateway_id);
    assert_ne!(rejoined.settings.node_id, settings.node_id);
    assert_eq!(store.secrets().unwrap().hub_admin_token.as_deref(), Some(token.as_str()));
    let nodes = admin.nodes(&settings.gateway_id).await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), [rejoined.settings.node_id.as_str()]);
    shutdown.cancel();
    bounded("the hub to stop", again.stopped()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_express_setup_on_a_registered_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let shutdown = CancellationToken::new();
    let first =
        bounded("express setup", express_setup(&store, &loopback(None), shutdown.clone())).await.unwrap();
    let hub = first.hub.unwrap();
    let before = std::fs::read(dir.path().join("secrets.bin")).unwrap();

    let error = bounded("express setup again", express_setup(&store, &loopback(None), shutdown.clone()))
        .await
        .unwrap_err();
    assert!(matches!(error, ExpressError::Node(NodeError::AlreadyRegistered { .. })), "{error:?}");
    let host = gatehouse::machine::host_name();
    assert_eq!(
        error.to_string(),
        format!(
            "this node is already registered with gateway '{host}' as '{host}'; unregister it first: gatehouse node unregister"
        )
    );
    assert_eq!(
        std::fs::read(dir.path().join("secrets.bin")).unwrap(),
        before,
        "the refusal changed the secrets"
    );
    let gateways = admin(&hub.url, &store).gateways().await.unwrap();
    assert_eq!(gateways.len(), 1);
    assert_eq!(gateways[0].nodes.len(), 1, "the refusal reached the hub");
    shutdown.cancel();
    bounded("the hub to stop", hub.stopped()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_hub_whose_gateway_encrypts_refuses_with_its_own_sentence() {
    let hub = tokio::task::spawn_blocking(Hub::start).await.unwrap();
    let host = gatehouse::machine::host_name();
    let admin = HubClient::new(&hub.url, &hub.token).unwrap();
    // A gateway encrypts once its first node registered with a certificate (manual setup).
    let request = CreateGateway { name: host.clone(), settings: GatewaySettings::default() };
    let created = admin.create_gateway(&request).await.unwrap();
    let first = RegisterRequest {
        name: "encrypted-first".to_owned(),
        machine_id: "another-machine".to_owned(),
        version: gatehouse::VERSION.to_owned(),
        peer_address: "127.0.0.1:9".to_owned(),
        encryption_thumbprint: Some("AB".repeat(32)),
        public_key: None,
    };
    HubClient::new(&hub.url, &created.keys.primary).unwrap().register(&first).await.unwrap();
    assert!(admin.gateway(&host).await.unwrap().encryption, "the gateway doesn't encrypt");

    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let configured = ConfiguredHub { url: hub.url.clone(), admin_token: hub.token.clone() };
    let error = bounded(
        "express setup",
        express_setup(&store, &loopback(Some(configured)), CancellationToken::new()),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "gateway '{host}' encrypts traffic between its nodes, so express setup (no encryption) can't join it; use manual setup with the gateway's certificate"
        )
    );
    assert!(!store.is_registered());
    assert!(!dir.path().join("hub.toml").exists(), "a configured hub must not start an embedded one");
    let nodes = admin.nodes(&host).await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["encrypted-first"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_moves_a_new_hub_but_a_remembered_one_must_be_free() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let wanted = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let hub =
        bounded("the first start", embedded::start(dir.path(), wanted, shutdown.clone())).await.unwrap();
    assert_eq!(hub.address.ip(), wanted.ip());
    assert_ne!(hub.address.port(), wanted.port(), "the hub claims the taken port");
    assert_eq!(embedded::configured(dir.path()).unwrap(), Some(hub.address));
    let probe = HubClient::new(&hub.url, "any").unwrap();
    assert!(probe.healthy().await.unwrap(), "the moved hub doesn't answer at {}", hub.url);
    let remembered = hub.address;
    bounded("the hub to stop", hub.stop()).await.unwrap();

    // Its nodes' keys name the remembered address: no moving now, even with a free port asked.
    let _squatter = TcpListener::bind(remembered).unwrap();
    let free: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let error =
        bounded("the second start", embedded::start(dir.path(), free, shutdown.clone())).await.unwrap_err();
    assert!(
        matches!(error, EmbeddedError::RememberedAddress { address, .. } if address == remembered),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&remembered.to_string()) && text.contains("hub.toml"), "{text}");
    assert_eq!(embedded::configured(dir.path()).unwrap(), Some(remembered), "hub.toml changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_hub_whose_admin_token_was_lost_is_named_and_stopped_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    // A hub made its token before this data dir's secrets could keep it.
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let hub = bounded("the first start", embedded::start(dir.path(), listen, CancellationToken::new()))
        .await
        .unwrap();
    assert!(hub.admin_token.is_some());
    let address = hub.address;
    bounded("the hub to stop", hub.stop()).await.unwrap();

    let error = bounded("express setup", express_setup(&store, &loopback(None), CancellationToken::new()))
        .await
        .unwrap_err();
    assert!(matches!(error, ExpressError::LostAdminToken { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("hub.db") && text.contains("hub.toml") && text.contains("remove"), "{text}");
    assert!(!store.is_registered());
    // Stopped again: its port is free for a retry.
    TcpListener::bind(address).expect("the failed express setup left its hub running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_of_a_hub_serve_in_the_data_dir_is_not_taken_over() {
    // `gatehouse hub serve` keeps its database as hub.db in the data dir too, and has made its
    // admin token there; express setup must not start an embedded hub on it.
    let hub = tokio::task::spawn_blocking(Hub::start).await.unwrap();
    let store = Store::new(hub.home());
    assert!(store.dir().join("hub.db").is_file(), "hub serve keeps no hub.db in its data dir");
    let error = bounded("express setup", express_setup(&store, &loopback(None), CancellationToken::new()))
        .await
        .unwrap_err();
    assert!(matches!(error, ExpressError::EmbeddedHub(EmbeddedError::OtherHub { .. })), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("already the database of another hub")
            && text.contains("gatehouse hub serve")
            && text.contains("GATEHOUSE_HUB"),
        "{text}"
    );
    assert!(!store.dir().join("hub.toml").exists(), "hub.toml now claims hub serve's database");
    assert!(!store.dir().join("secrets.bin").exists(), "secrets were written for a hub that isn't ours");
    assert!(!store.is_registered());
    // The hub serve goes on as it was, with nothing created on it.
    let admin = HubClient::new(&hub.url, &hub.token).unwrap();
    assert!(admin.gateways().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_settings_are_named_before_the_hub_is_touched() {
    let hub = tokio::task::spawn_blocking(Hub::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let damaged = "hub_url = \"http://x\"\nnode_name = [";
    std::fs::write(dir.path().join("node.toml"), damaged).unwrap();
    let configured = ConfiguredHub { url: hub.url.clone(), admin_token: hub.token.clone() };
    let error = bounded(
        "express setup",
        express_setup(&store, &loopback(Some(configured)), CancellationToken::new()),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("node.toml is damaged"), "{error}");
    assert_eq!(std::fs::read_to_string(dir.path().join("node.toml")).unwrap(), damaged);
    let admin = HubClient::new(&hub.url, &hub.token).unwrap();
    assert!(admin.gateways().await.unwrap().is_empty(), "express setup created a gateway first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_the_embedded_hub_creates_is_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("new");
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let hub =
        bounded("the first start", embedded::start(&dir, listen, CancellationToken::new())).await.unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the data dir holding hub.db is mode {mode:o}");
    bounded("the hub to stop", hub.stop()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_whose_path_reads_as_url_syntax_holds_the_hub_db() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("50%41 off?mode=ro#x");
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let hub =
        bounded("the first start", embedded::start(&dir, listen, CancellationToken::new())).await.unwrap();
    assert!(dir.join("hub.db").is_file(), "the hub's database isn't at {}", dir.join("hub.db").display());
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1, "files outside the data dir");
    bounded("the hub to stop", hub.stop()).await.unwrap();
    // Started again, it opens the same database: its admin token is there already.
    let again =
        bounded("the second start", embedded::start(&dir, listen, CancellationToken::new())).await.unwrap();
    assert!(again.admin_token.is_none(), "the second start made a new database");
    bounded("the hub to stop", again.stop()).await.unwrap();
}

#[test]
fn node_run_starts_the_embedded_hub_of_an_express_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let address = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let outcome =
            bounded("express setup", express_setup(&store, &loopback(None), shutdown.clone())).await;
        let hub = outcome.unwrap().hub.unwrap();
        let address = hub.address;
        shutdown.cancel();
        bounded("the hub to stop", hub.stopped()).await.unwrap();
        address
    });
    // Headless now: `node run` brings the hub back with the node, which comes Online there.
    let home = store.dir().to_str().unwrap().to_owned();
    let mut run = common::process::spawn_gatehouse(&["node", "run"], &[("GATEHOUSE_HOME", home.as_str())]);
    let client = admin(&format!("http://{address}"), &store);
    let gateway = store.settings().unwrap().gateway_id;
    common::cluster::wait_until(LIMIT, "the node Online at its embedded hub", || {
        runtime
            .block_on(client.nodes(&gateway))
            .is_ok_and(|nodes| nodes.len() == 1 && nodes[0].status == gatehouse::protocol::NodeState::Online)
    });
    let exit = run.stop();
    assert!(exit.success(), "node run exited with {exit:?}");
    assert!(
        TcpListener::bind(address).is_ok(),
        "the embedded hub still holds {address} after node run stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_admin_token_rotates_from_the_node_and_a_stale_copy_says_what_to_do() {
    use gatehouse::node::ops::{self, OpError};
    use gatehouse::protocol::TokenKind;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("data"));
    let shutdown = CancellationToken::new();
    let outcome =
        bounded("express setup", express_setup(&store, &loopback(None), shutdown.clone())).await.unwrap();
    let hub = outcome.hub.expect("express setup started no embedded hub");
    let first = store.secrets().unwrap().hub_admin_token.unwrap();

    // Viewer and metrics tokens through the kept admin token: made, listed, revoked.
    let made = bounded("a viewer token", ops::create_hub_token(&store, TokenKind::Viewer)).await.unwrap();
    assert!(made.to_string().contains(&made.0.token), "the new token isn't shown: {made}");
    assert!(!format!("{made:?}").contains(&made.0.token), "the token is in Debug output");
    let listed = bounded("the tokens", ops::hub_tokens(&store)).await.unwrap();
    assert!(listed.0.iter().any(|t| t.id == made.0.id && t.revoked_ms.is_none()), "{listed:?}");
    bounded("revoking", ops::revoke_hub_token(&store, &made.0.id)).await.unwrap();
    let listed = bounded("the tokens", ops::hub_tokens(&store)).await.unwrap();
    assert!(listed.0.iter().any(|t| t.id == made.0.id && t.revoked_ms.is_some()), "{listed:?}");

    // Rotated from the node: the sealed copy follows, the old token stops working.
    bounded("rotating", ops::rotate_hub_admin_token(&store)).await.unwrap();
    let second = store.secrets().unwrap().hub_admin_token.unwrap();
    assert_ne!(second, first, "the sealed copy wasn't replaced");
    let old = HubClient::new(&hub.url, &first).unwrap().tokens().await;
    assert!(matches!(old, Err(gatehouse::client::ClientError::Refused { status: 401, .. })), "{old:?}");
    bounded("the tokens with the new one", ops::hub_tokens(&store)).await.unwrap();

    // Rotated elsewhere (as `gatehouse hub token rotate` does): the node's copy is stale, and
    // it says so, and what to do, instead of a bare 401.
    let elsewhere = HubClient::new(&hub.url, &second).unwrap().rotate_admin_token().await.unwrap().token;
    let stale = bounded("the tokens with a stale copy", ops::hub_tokens(&store)).await.unwrap_err();
    assert!(matches!(stale, OpError::StaleAdminToken), "{stale}");
    assert!(stale.to_string().contains("gatehouse node hub-token set"), "{stale}");
    let thresholds = ops::Thresholds {
        policy: gatehouse::protocol::Policy::Distribute,
        cpu_percent: 90,
        memory_percent: 90,
        aggregation_minutes: 5,
        queue_timeout_seconds: 60,
        bandwidth_limit_mbps: 0,
    };
    let refused = bounded("thresholds with a stale copy", ops::set_thresholds(&store, thresholds)).await;
    assert!(matches!(refused, Err(OpError::StaleAdminToken)), "{refused:?}");

    // Given the current one (checked with the hub first), the node works again.
    let wrong = bounded("a wrong token", ops::set_hub_admin_token(&store, "not-the-token")).await;
    assert!(matches!(wrong, Err(OpError::NotTheAdminToken)), "{wrong:?}");
    assert_eq!(store.secrets().unwrap().hub_admin_token.as_deref(), Some(second.as_str()));
    bounded("the current token", ops::set_hub_admin_token(&store, &format!(" {elsewhere}\n"))).await.unwrap();
    assert_eq!(store.secrets().unwrap().hub_admin_token.as_deref(), Some(elsewhere.as_str()));
    bounded("the tokens again", ops::hub_tokens(&store)).await.unwrap();
    shutdown.cancel();
    bounded("the hub to stop", hub.stopped()).await.unwrap();
}
