//! Add a node, for real on 127.0.0.1: a window (driven headless) sets up with express setup,
//! opens its embedded hub "to other machines" (HTTPS with the certificate it makes for
//! itself; 127.0.0.1 on another port stands for the machine's network address) and keeps
//! its own node Online there; its one-time key registers a second node (another data dir, the
//! real binary) that trusts the hub by the pinned fingerprint; the key used again, expired or
//! with a wrong fingerprint is refused with its sentence; four nodes make Add a node show the
//! limit's sentence, in the window and in `node add-node-key`.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{gatehouse, wait_until};
use common::process::free_port;
use common::window::Window;
use egui_kittest::kittest::Queryable as _;
use gatehouse::gui::{ConfigManager, Tab};
use gatehouse::node::add_node::AddNode;
use gatehouse::protocol::{CertPin, NodeState, parse_auth_key, pinned_auth_key};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LIMIT: Duration = Duration::from_secs(30);

fn online_at(app: &ConfigManager, url: &str) -> bool {
    app.state
        .status
        .as_ref()
        .is_some_and(|s| s.hub_connected && s.state == Some(NodeState::Online) && s.hub_url == url)
}

/// `gatehouse node register` in a fresh data dir with `key` in the environment, as the steps
/// say; the data dir and what the command answered.
fn register(key: &str, name: &str) -> (tempfile::TempDir, Output) {
    let home = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let peer = format!("127.0.0.1:{port}");
    let args = ["node", "register", "--name", name, "--peer-port", &port, "--peer-address", &peer];
    let output = gatehouse(home.path(), &args, &[("GATEHOUSE_AUTH_KEY", key)]);
    (home, output)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Refused, with a sentence holding every one of `words`, and the data dir left unregistered.
fn refused(home: &Path, output: &Output, words: &[&str]) {
    let text = stderr(output);
    assert!(!output.status.success(), "registered, but should have been refused");
    for word in words {
        assert!(text.contains(word), "the refusal doesn't say {word:?}: {text}");
    }
    assert!(!home.join("node.toml").exists(), "a refused registration left node.toml");
}

/// A key from `gatehouse node add-node-key --json` in the window's data dir.
fn cli_key(dir: &Path, expires: &str) -> serde_json::Value {
    let output = gatehouse(dir, &["node", "add-node-key", "--expires", expires, "--json"], &[]);
    assert!(output.status.success(), "add-node-key: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Scrolls the widget labelled `label` into view (a click lands only on a visible widget; Add
/// a node is at the end of Settings), then clicks it.
fn click(window: &mut Window, label: &str) {
    window.harness.get_by_label(label).scroll_to_me();
    // The scroll is animated: let it settle.
    for _ in 0..30 {
        window.harness.step();
    }
    window.click(label);
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

#[test]
fn the_window_opens_its_hub_and_a_second_machine_joins_with_its_pinned_one_time_key() {
    let mut window = Window::open(Tab::Home);
    window.click("Express setup");
    window.wait_for("express setup and the node Online", LIMIT, |app| {
        app.state.status.as_ref().is_some_and(|s| s.hub_connected && s.state == Some(NodeState::Online))
    });
    let dir = window.dir.clone();

    // Open the hub to other machines, on "the machine's address" (127.0.0.1, another port).
    window.click("Settings");
    assert!(window.shows("for this machine only"), "Settings doesn't say the hub is local");
    let port = free_port();
    window.harness.get_by_label("Network address").scroll_to_me();
    // The scroll is animated: let it settle, or the typing can miss the field (and the hub
    // would move to this machine's own network address instead of 127.0.0.1).
    for _ in 0..30 {
        window.harness.step();
    }
    window.type_into("Network address", &format!("127.0.0.1:{port}"));
    let typed = &window.harness.state().settings.add_node.address;
    assert_eq!(typed, &format!("127.0.0.1:{port}"), "the typing missed the Network address field");
    click(&mut window, "Open to other machines");
    window.wait_for("the hub to move", LIMIT, |app| app.state.add_node.moved.is_some());
    let moved = window.harness.state().state.add_node.moved.clone().unwrap();
    assert!(moved.is_ok(), "the hub didn't move: {moved:?}");
    let url = format!("https://127.0.0.1:{port}");
    window.wait_for("the node to be Online at the moved hub", LIMIT, |app| online_at(app, &url));
    assert!(window.shows("for other machines too"));
    let reach = window.harness.state().state.add_node.reach.clone().unwrap();
    let pin = reach.pin.expect("the hub on the network has no certificate pin");
    assert_eq!(reach.url, url);
    let toml = std::fs::read_to_string(dir.join("hub.toml")).unwrap();
    assert!(toml.contains("https = true") && toml.contains(&format!("127.0.0.1:{port}")), "{toml}");
    let node_toml = std::fs::read_to_string(dir.join("node.toml")).unwrap();
    assert!(node_toml.contains(&pin.hex()), "the local node doesn't keep the pin: {node_toml}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("hub-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the hub's private key is not owner-only");
    }

    // Add a node: a one-time key carrying the fingerprint, and the steps.
    click(&mut window, "Make a key for a new node");
    window.wait_for("the key", LIMIT, |app| app.state.add_node.answer.is_some());
    let key = match window.harness.state().state.add_node.answer.clone() {
        Some(Ok(AddNode::Key(key))) => key,
        other => panic!("Add a node gave no key: {other:?}"),
    };
    assert_eq!((key.pin, key.hub_url.as_str()), (Some(pin), url.as_str()));
    assert!(window.shows("A one-time key for a new node") && window.shows("gatehouse node register"));

    // The second machine registers with it over HTTPS, trusting the pinned certificate.
    let (b, output) = register(&key.key, "b");
    assert!(output.status.success(), "registering with the window's key: {}", stderr(&output));
    let b_toml = std::fs::read_to_string(b.path().join("node.toml")).unwrap();
    assert!(b_toml.contains(&format!("hub_url = \"{url}\"")), "{b_toml}");
    assert!(b_toml.contains(&format!("hub_pin = \"{}\"", pin.hex())), "{b_toml}");
    let status = gatehouse(b.path(), &["node", "status", "--json"], &[]);
    assert!(status.status.success(), "{}", stderr(&status));

    // Used again: refused, naming the node that used it.
    let (c, output) = register(&key.key, "c");
    refused(c.path(), &output, &["one-time", "already used", "'b'"]);

    // A key whose fingerprint is not the hub's certificate's: refused before anything is sent,
    // so the genuine key still works afterwards.
    let genuine = cli_key(&dir, "30m");
    let genuine = genuine["key"].as_str().unwrap().to_owned();
    let forged = pinned_auth_key(&parse_auth_key(&genuine).unwrap().key, &CertPin([0x5a; 32]));
    let (c, output) = register(&forged, "c");
    refused(c.path(), &output, &["SHA-256 fingerprint", "not the one in the auth key"]);
    let (_c, output) = register(&genuine, "c");
    assert!(output.status.success(), "the genuine key was spent by the forged one: {}", stderr(&output));

    // Expired unused: refused, saying so.
    let short = cli_key(&dir, "1s");
    let expires_ms = short["expires_ms"].as_i64().unwrap();
    wait_until(LIMIT, "the key to expire", || now_ms() > expires_ms);
    let (d, output) = register(short["key"].as_str().unwrap(), "d");
    refused(d.path(), &output, &["expired unused"]);

    // The fourth node fills the gateway: Add a node shows the limit, not a key.
    let fourth = cli_key(&dir, "30m");
    let (_d, output) = register(fourth["key"].as_str().unwrap(), "d");
    assert!(output.status.success(), "the fourth node: {}", stderr(&output));
    click(&mut window, "Make a key for a new node");
    window
        .wait_for("the limit", LIMIT, |app| matches!(app.state.add_node.answer, Some(Ok(AddNode::Full(_)))));
    assert!(window.shows("already has 4 nodes (at most 4)"), "the window doesn't show the limit");
    assert!(window.harness.query_by_label_contains("New node's key").is_none(), "a key is still shown");
    let output = gatehouse(&dir, &["node", "add-node-key"], &[]);
    assert!(
        !output.status.success() && stderr(&output).contains("already has 4 nodes"),
        "{}",
        stderr(&output)
    );
}

/// `node hub-access` on a data dir express setup left: the stopped hub moves onto "the
/// network" (127.0.0.1, another port) over HTTPS, `node run` serves it there and its node is
/// Online through the pin; an address in use is refused, changing nothing; back to local
/// while `node run` runs, the command stops the service and starts it again, Online on
/// loopback.
#[test]
fn node_hub_access_moves_the_embedded_hub_and_the_node_follows_it() {
    use gatehouse::host::express::{ExpressOptions, express_setup};
    use gatehouse::node::store::Store;
    let home = tempfile::tempdir().unwrap();
    let store = Store::new(home.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let options = ExpressOptions {
            hub: None,
            hub_listen: "127.0.0.1:0".parse().unwrap(),
            peer_port: 0,
            peer_host: Some("127.0.0.1".to_owned()),
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let outcome = tokio::time::timeout(LIMIT, express_setup(&store, &options, shutdown.clone()))
            .await
            .unwrap()
            .unwrap();
        shutdown.cancel();
        outcome.hub.unwrap().stopped().await.unwrap();
    });
    let before = std::fs::read_to_string(home.path().join("hub.toml")).unwrap();

    // An address something else listens on: refused, nothing changed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = gatehouse(home.path(), &["node", "hub-access", "network", "--address", &address], &[]);
    assert!(!output.status.success() && stderr(&output).contains("can't listen on"), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(home.path().join("hub.toml")).unwrap(), before);
    drop(taken);

    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let address = format!("127.0.0.1:{port}");
    let output = gatehouse(home.path(), &["node", "hub-access", "network", "--address", &address], &[]);
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(said.contains(&url) && said.contains("this node follows it"), "{said}");
    let settings = store.settings().unwrap();
    assert_eq!(settings.hub_url, url);
    assert!(settings.hub_pin.is_some(), "the node keeps no pin");

    let online_at = |url: &str| {
        let output = gatehouse(home.path(), &["node", "status", "--json"], &[]);
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let last = &status["last_status"];
        status["running"] == true
            && last["hub_connected"] == true
            && last["hub_url"] == url
            && last["state"] == "Online"
    };
    let home_dir = home.path().to_str().unwrap().to_owned();
    let mut run = common::process::spawn_gatehouse(&["node", "run"], &[("GATEHOUSE_HOME", &home_dir)]);
    wait_until(LIMIT, "the node Online at its hub over HTTPS", || online_at(&url));

    // Back to this machine only, while it runs: stopped, moved, started again.
    let output = gatehouse(home.path(), &["node", "hub-access", "local"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("for this machine only"));
    assert!(run.wait_timeout(LIMIT).is_some(), "the first node run didn't stop");
    let local = format!("http://127.0.0.1:{port}");
    wait_until(LIMIT, "the node Online at its hub on loopback", || online_at(&local));
    assert!(store.settings().unwrap().hub_pin.is_none(), "a pin is kept for a plain-HTTP hub");
    let output = gatehouse(home.path(), &["node", "stop"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
}
