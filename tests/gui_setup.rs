//! The setup wizard and the Home tab driven headless (egui_kittest) against real hubs: express
//! setup with the embedded hub, manual setup with a wrong key, a rejected and a good
//! certificate, and Stop/Start of the service.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, wait_until};
use common::window::Window;
use egui_kittest::kittest::Queryable as _;
use gatehouse::gui::{ServiceState, SetupPage, Tab};
use gatehouse::protocol::NodeState;
use std::time::Duration;

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");
const LIMIT: Duration = Duration::from_secs(30);

fn online(app: &gatehouse::gui::ConfigManager) -> bool {
    app.state.status.as_ref().is_some_and(|s| s.hub_connected && s.state == Some(NodeState::Online))
}

/// Express setup, then waits until the node is Online at its embedded hub.
fn express(window: &mut Window) {
    assert!(window.shows("Express setup"), "the wizard is not shown on a fresh data dir");
    window.click("Express setup");
    window.wait_for("express setup to finish and the node to be Online", LIMIT, online);
}

/// Manual setup up to the encryption page, with `key`.
fn to_encryption_page(window: &mut Window, key: &str) {
    window.click("Manual setup");
    window.type_into("Auth key", key);
    window.click("Next");
    assert_eq!(window.harness.state().wizard.page, SetupPage::Name, "Next didn't lead to the name page");
    window.click("Next");
    assert_eq!(window.harness.state().wizard.page, SetupPage::Encryption);
}

/// On the encryption page: chooses a certificate, fills one more field, checks it and waits.
fn check_in_wizard(window: &mut Window, (field, value): (&str, &str), file: &str) {
    window.click("Use a certificate (PEM or PFX)");
    window.type_into("Certificate file", &format!("{CERTS}{file}"));
    window.type_into(field, value);
    window.click("Check certificate");
    window.wait_for("the certificate check", LIMIT, |app| {
        !app.wizard.certificate.checking && app.wizard.certificate.outcome.is_some()
    });
}

#[test]
fn express_setup_starts_a_hub_registers_and_lands_on_home() {
    let mut window = Window::open(Tab::Home);
    express(&mut window);
    let host = gatehouse::machine::host_name();
    assert!(window.shows("Service: running"), "Home doesn't say the service runs");
    assert!(window.shows("✔ connected to http://127.0.0.1:"), "Home doesn't show the hub connection");
    assert!(window.harness.query_by_label(&host).is_some(), "the nodes table has no row for {host}");
    assert!(window.shows("Dispatcher"), "the only node should be the dispatcher");
    let home = window.dir.clone();
    assert!(
        home.join("hub.toml").exists() && home.join("hub.db").exists(),
        "no embedded hub in the data dir"
    );
    let settings = window.harness.state().state.settings.clone().unwrap();
    assert_eq!(settings.node_name, host);
    assert_eq!(settings.gateway_name, host);

    // The Help tab now knows the gateway's version.
    window.click("Help");
    let version = format!("Version {}", env!("CARGO_PKG_VERSION"));
    assert!(window.shows(&version));
    assert!(window.shows("This node runs the newest version in its gateway."));

    // A new window on the same data dir starts the embedded hub and the node again.
    let Window { harness, home, .. } = window;
    drop(harness);
    let mut again = Window::open_in(home.unwrap(), Tab::Home);
    again.wait_for("the node to come back Online after a restart", LIMIT, online);
    assert_eq!(again.harness.state().state.settings.as_ref().unwrap().hub_url, settings.hub_url);
}

#[test]
fn express_setup_is_refused_with_the_hubs_sentence_when_the_gateway_encrypts() {
    let hub = Hub::start();
    let gateway = gatehouse::machine::host_name();
    let key = hub.create_gateway(&gateway, &[]);
    // Its first node registered with a certificate, so the gateway encrypts.
    let cert = |name: &str| format!("{CERTS}{name}");
    let _first = Node::register(&key, "first", &["--cert", &cert("good.pem"), "--roots", &cert("ca.pem")]);
    let home = tempfile::tempdir().unwrap();
    let defaults = gatehouse::gui::ExpressOptions {
        hub: Some(gatehouse::host::express::ConfiguredHub {
            url: hub.url.clone(),
            admin_token: hub.token.clone(),
        }),
        ..common::window::loopback_defaults()
    };
    let mut window = Window::open_with(home.path(), Tab::Home, defaults);
    window.click("Express setup");
    window.wait_for("the hub's refusal", LIMIT, |app| app.wizard.error.is_some());
    let (page, message) = window.harness.state().wizard.error.clone().unwrap();
    assert_eq!(page, SetupPage::Welcome);
    assert!(
        message.contains("express setup (no encryption) can't join it; use manual setup"),
        "not the hub's sentence: {message}"
    );
    assert!(window.shows("use manual setup with the gateway's certificate"), "the sentence is not on screen");
    assert!(window.harness.state().state.settings.is_none(), "registered anyway");
    assert_eq!(hub.nodes(&gateway).len(), 1, "the hub has a node it should have refused");
}

#[test]
fn stop_and_start_change_the_status() {
    let mut window = Window::open(Tab::Home);
    express(&mut window);
    window.click("Stop");
    window.wait_for("the service to stop", LIMIT, |app| {
        matches!(app.state.service, ServiceState::Stopped { reason: None })
    });
    assert!(window.shows("Service: stopped"));
    assert!(!window.shows("✔ connected to"), "a stopped service still shows a live hub connection");
    window.click("Start");
    window.wait_for("the service to run again", LIMIT, |app| app.state.service == ServiceState::Running);
    window.wait_for("the node to be Online again", LIMIT, online);
    assert!(window.shows("Service: running"));
}

#[test]
fn a_malformed_key_is_refused_as_you_type() {
    let mut window = Window::open(Tab::Home);
    window.click("Manual setup");
    window.type_into("Auth key", "gh1_not-a-key");
    assert!(window.shows("This is not a complete auth key"), "no sentence for a malformed key");
    window.click("Next");
    assert_eq!(window.harness.state().wizard.page, SetupPage::Key, "Next worked with a malformed key");
}

#[test]
fn manual_setup_with_a_wrong_key_shows_the_hubs_answer_on_page_1() {
    let hub = Hub::start();
    let key = hub.create_gateway("gw", &[]);
    // Same hub and gateway, another secret: well-formed, but not this gateway's key.
    let (public, secret) = key.rsplit_once('_').unwrap();
    let wrong = format!("{public}_{}", "A".repeat(secret.len()));
    let mut window = Window::open(Tab::Home);
    to_encryption_page(&mut window, &wrong);
    window.click("Register");
    window.wait_for("the hub's answer", LIMIT, |app| app.wizard.error.is_some());
    let wizard = &window.harness.state().wizard;
    assert_eq!(wizard.page, SetupPage::Key, "the error is not on the key page");
    let message = wizard.error.as_ref().unwrap().1.clone();
    assert!(message.contains("key"), "the hub's refusal doesn't mention the key: {message}");
    assert!(window.shows(&message), "the error is not on screen");
    assert!(window.harness.state().state.settings.is_none(), "registered with a wrong key");
    assert!(hub.nodes("gw").is_empty());
}

#[test]
fn a_rejected_certificate_keeps_register_disabled() {
    let hub = Hub::start();
    let key = hub.create_gateway("gw", &[]);
    let mut window = Window::open(Tab::Home);
    to_encryption_page(&mut window, &key);
    check_in_wizard(&mut window, ("PFX password", "secret"), "cng-software.pfx");
    assert!(window.shows("Verdict: rejected"), "the verdict is not shown");
    assert!(window.shows("which the gateway can't use"), "the failing key_storage rule is not shown");
    window.click("Register");
    assert!(!window.harness.state().wizard.busy, "Register was clickable with a rejected certificate");
    std::thread::sleep(Duration::from_millis(500));
    window.harness.step();
    assert!(window.harness.state().state.settings.is_none());
    assert!(hub.nodes("gw").is_empty(), "a node registered with a rejected certificate");
}

#[test]
fn a_good_certificate_registers_with_encryption_on() {
    let hub = Hub::start();
    let key = hub.create_gateway("gw", &[]);
    let mut window = Window::open(Tab::Home);
    to_encryption_page(&mut window, &key);
    check_in_wizard(&mut window, ("Trusted root CA (optional)", &format!("{CERTS}ca.pem")), "good.pem");
    assert!(window.shows("Verdict: accepted"), "a good certificate is not accepted");
    window.click("Register");
    window.wait_for("registration and the node Online", LIMIT, online);
    let status = window.harness.state().state.status.clone().unwrap();
    let thumbprint = status.metrics.encryption_thumbprint.expect("the node reports no certificate");
    let report = gatehouse::cert::check_file(
        std::path::Path::new(&format!("{CERTS}good.pem")),
        &gatehouse::cert::Options::default(),
    )
    .unwrap();
    assert_eq!(thumbprint, report.thumbprint_sha256, "the node encrypts with another certificate");
    let nodes = hub.nodes("gw");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["metrics"]["encryption_thumbprint"], serde_json::json!(report.thumbprint_sha256));
}

#[test]
fn the_window_attaches_to_a_running_node_service_and_can_stop_it() {
    let hub = Hub::start();
    let key = hub.create_gateway("gw", &[]);
    let mut node = Node::start(&key, "n1", &[]);
    let pid = node.process.as_ref().unwrap().pid();
    let socket = node.home.path().join("control.sock");
    wait_until(LIMIT, "the node's control socket", || socket.exists());
    let mut window = Window::open_at(node.home.path(), Tab::Home);
    window.wait_for(
        "the window to attach",
        LIMIT,
        |app| matches!(app.state.service, ServiceState::Attached { pid: p, system: false, .. } if p == pid),
    );
    window.wait_for("the node's status through the socket", LIMIT, online);
    assert!(window.shows(&format!("Service: attached to gatehouse node run (pid {pid})")));

    window.click("Stop");
    window.wait_for("the service to stop", LIMIT, |app| {
        matches!(app.state.service, ServiceState::Stopped { .. })
    });
    let exit = node.process.as_mut().unwrap().wait_timeout(LIMIT).expect("node run didn't exit after Stop");
    assert!(exit.success(), "node run exited with {exit:?} after Stop");

    // Start now runs the service in the window's own process.
    window.click("Start");
    window.wait_for("the service to run in the window", LIMIT, |app| {
        app.state.service == ServiceState::Running
    });
    window.wait_for("the node to be Online again", LIMIT, online);
    assert!(socket.exists(), "the in-window service doesn't serve the control socket");
}

#[test]
fn the_wizard_restores_a_node_from_its_backup() {
    let hub = Hub::start();
    let key = hub.create_gateway("gw", &[]);
    let node = Node::register(&key, "n1", &[]);
    // Outside the data dir: a backup is never written into it.
    let files = tempfile::tempdir().unwrap();
    let backup = files.path().join("n1.backup");
    let output = common::cluster::gatehouse(
        node.home.path(),
        &["node", "backup", "--out", backup.to_str().unwrap()],
        &[("GATEHOUSE_BACKUP_PASSWORD", "correct horse battery")],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let mut window = Window::open(Tab::Home);
    window.type_into("Backup to restore", backup.to_str().unwrap());
    window.type_into("Password of the backup", "correct horse battery");
    window.click("Restore");
    window.wait_for("the restored node to be Online", LIMIT, online);
    let settings = window.harness.state().state.settings.clone().unwrap();
    assert_eq!(settings.node_name, "n1");
    assert_eq!(settings.gateway_name, "gw");
    assert!(window.shows("Service: running"), "Home is not shown after the restore");
}
