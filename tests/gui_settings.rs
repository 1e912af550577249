//! The Settings and Diagnostics tabs: their operations run directly against nodes registered
//! with a real hub on loopback (settings, credentials, proxy, thresholds, backup and restore,
//! log export), and the tabs driven headless (egui_kittest) through a window on such a node.
#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node};
use common::window::Window;
use egui_kittest::kittest::Queryable as _;
use gatehouse::gui::Tab;
use gatehouse::gui::ops::{self, Context, Op, OpKind, Outcome, Thresholds};
use gatehouse::node::NodeStatus;
use gatehouse::node::store::Store;
use gatehouse::protocol::Policy;
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// A node registered (not running) with gateway `gateway` of `hub`.
fn registered(hub: &Hub, gateway: &str) -> Node {
    let key = hub.create_gateway(gateway, &[]);
    Node::register(&key, "n1", &[])
}

/// Runs one operation on its own runtime, as the service thread would.
fn run(store: &Store, op: Op) -> Outcome {
    run_with(store, op, None)
}

fn run_with(store: &Store, op: Op, status: Option<NodeStatus>) -> Outcome {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(ops::run(op, Context { store, status }))
}

fn ok(outcome: &Outcome) -> &str {
    match &outcome.result {
        Ok(sentence) => sentence,
        Err(sentence) => panic!("the operation failed: {sentence}"),
    }
}

fn err(outcome: &Outcome) -> &str {
    match &outcome.result {
        Ok(sentence) => panic!("the operation should have failed, but said: {sentence}"),
        Err(sentence) => sentence,
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn concurrency_log_level_and_port_changes_land_in_node_toml() {
    let hub = Hub::start();
    let node = registered(&hub, "limits");
    let store = Store::new(node.home.path());

    let outcome = run(&store, Op::SetConcurrency(Some(3)));
    assert!(ok(&outcome).contains("at most 3 runs"), "{:?}", outcome.result);
    assert!(outcome.restart, "a new limit needs a restart");
    assert_eq!(store.settings().unwrap().concurrency_limit, Some(3));
    assert!(
        String::from_utf8(read(&node.home.path().join("node.toml")))
            .unwrap()
            .contains("concurrency_limit = 3")
    );
    run(&store, Op::SetConcurrency(None));
    assert_eq!(store.settings().unwrap().concurrency_limit, None);

    assert!(err(&run(&store, Op::SetLogLevel("loud".into()))).contains("not a log level"));
    let outcome = run(&store, Op::SetLogLevel("debug".into()));
    assert!(!outcome.restart, "the log level applies without a restart");
    assert_eq!(store.settings().unwrap().log_level, "debug");

    let before = store.settings().unwrap();
    assert!(err(&run(&store, Op::SetRemoteAccess { port: 0, certificate: None })).contains("1 and 65535"));
    // A port another program listens on is refused before the service would fail on it.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let refused = run(&store, Op::SetRemoteAccess { port, certificate: None });
    assert!(err(&refused).contains(&format!("can't listen on port {port}")), "{:?}", refused.result);
    assert!(!refused.restart);
    assert_eq!(store.settings().unwrap(), before, "a refused port changed the settings");
    drop(busy);
    let moved = run(&store, Op::SetRemoteAccess { port, certificate: None });
    assert!(ok(&moved).contains(&format!("port {port}")));
    let settings = store.settings().unwrap();
    assert_eq!(settings.peer_port, port);
    assert_eq!(settings.peer_address, format!("127.0.0.1:{port}"));
}

#[test]
fn credentials_are_added_listed_and_deleted_by_name_and_never_stored_in_clear() {
    let hub = Hub::start();
    let node = registered(&hub, "creds");
    let store = Store::new(node.home.path());
    let value = "hunter2-credential-value";

    assert_eq!(ok(&run(&store, Op::ListCredentials)), "", "a new node has credentials");
    let op = Op::SetCredential { name: "warehouse".into(), value: value.into() };
    assert!(!format!("{op:?}").contains(value), "Debug shows the value");
    assert_eq!(op.kind(), OpKind::Credentials);
    let outcome = run(&store, op);
    assert!(ok(&outcome).contains("warehouse") && !ok(&outcome).contains(value));
    run(&store, Op::SetCredential { name: "lake".into(), value: "key".into() });
    assert_eq!(ok(&run(&store, Op::ListCredentials)), "lake\nwarehouse");
    assert_eq!(gatehouse::node::credentials::load(&store).unwrap().entries["warehouse"], value);
    for file in ["node.toml", "secrets.bin"] {
        assert!(!contains(&read(&node.home.path().join(file)), value), "{file} holds the value in clear");
    }

    assert!(
        err(&run(&store, Op::SetCredential { name: "bad name".into(), value: "x".into() }))
            .contains("names are")
    );
    assert!(
        err(&run(&store, Op::SetCredential { name: "empty".into(), value: String::new() })).contains("empty")
    );
    assert!(ok(&run(&store, Op::DeleteCredential("warehouse".into()))).contains("deleted"));
    assert_eq!(ok(&run(&store, Op::ListCredentials)), "lake");
    assert!(err(&run(&store, Op::DeleteCredential("warehouse".into()))).contains("no credential named"));
}

#[test]
fn an_invalid_proxy_is_refused_with_a_sentence_and_nothing_saved() {
    let hub = Hub::start();
    let node = registered(&hub, "proxied");
    let store = Store::new(node.home.path());
    let toml = node.home.path().join("node.toml");
    let before = read(&toml);

    for bad in ["proxy.corp:3128", "socks5://proxy.corp:1080", "http://proxy.corp:3128/path"] {
        let outcome = run(&store, Op::SetProxy(Some(bad.into())));
        assert!(err(&outcome).contains("not a usable proxy URL"), "{bad}: {:?}", outcome.result);
        assert!(err(&outcome).contains("nothing was saved"));
        assert!(!outcome.restart);
        assert_eq!(read(&toml), before, "{bad} changed node.toml");
    }
    let outcome = run(&store, Op::SetProxy(Some("http://me:hunter2@proxy.corp:3128".into())));
    assert!(!err(&outcome).contains("hunter2"), "the refusal shows the password");
    assert_eq!(read(&toml), before);

    let outcome = run(&store, Op::SetProxy(Some(" http://proxy.corp:3128 ".into())));
    assert!(ok(&outcome).contains("through http://proxy.corp:3128"));
    assert!(outcome.restart);
    assert_eq!(store.settings().unwrap().proxy.as_deref(), Some("http://proxy.corp:3128"));
    run(&store, Op::SetProxy(None));
    assert_eq!(store.settings().unwrap().proxy, None);
}

#[test]
fn thresholds_change_at_the_hub_only_with_its_admin_token() {
    let hub = Hub::start();
    let node = registered(&hub, "thresholds");
    let store = Store::new(node.home.path());
    let thresholds = Thresholds {
        policy: Policy::Distribute,
        cpu_percent: 80,
        memory_percent: 90,
        aggregation_minutes: 3,
        queue_timeout_seconds: 120,
    };

    // A node registered with an auth key has no admin token: the CLI is the way.
    assert!(err(&run(&store, Op::CheckAdminToken)).contains("gatehouse hub gateway set"));
    assert!(err(&run(&store, Op::SetThresholds(thresholds))).contains("gatehouse hub gateway set"));
    assert_eq!(hub.admin(&["hub", "gateway", "show", "thresholds"])["settings"]["cpu_threshold"], 0);

    // As after express setup: this node holds the hub's admin token.
    let mut secrets = store.secrets().unwrap();
    secrets.hub_admin_token = Some(hub.token.clone());
    store.save_secrets(&secrets).unwrap();
    ok(&run(&store, Op::CheckAdminToken));
    let outcome = run(&store, Op::SetThresholds(thresholds));
    assert!(ok(&outcome).contains("gateway 'thresholds' saved"), "{:?}", outcome.result);
    let settings = &hub.admin(&["hub", "gateway", "show", "thresholds"])["settings"];
    assert_eq!(settings["cpu_threshold"], 80);
    assert_eq!(settings["memory_threshold"], 90);
    assert_eq!(settings["aggregation_minutes"], 3);
    assert_eq!(settings["queue_timeout_seconds"], 120);
    assert_eq!(settings["policy"], "distribute");

    // The hub's own refusal comes back as its sentence.
    let refused = run(&store, Op::SetThresholds(Thresholds { aggregation_minutes: 0, ..thresholds }));
    assert!(err(&refused).contains("aggregation_minutes"), "{:?}", refused.result);
}

#[test]
fn a_backup_restores_only_with_its_password_and_only_onto_an_unregistered_machine() {
    let hub = Hub::start();
    let node = registered(&hub, "saved");
    let store = Store::new(node.home.path());
    run(&store, Op::SetCredential { name: "warehouse".into(), value: "hunter2".into() });
    let files = tempfile::tempdir().unwrap();
    let backup = files.path().join("n1.backup");

    let op = Op::Backup { path: backup.clone(), password: "correct horse".into() };
    assert!(!format!("{op:?}").contains("correct horse"), "Debug shows the password");
    let outcome = run(&store, op);
    assert!(ok(&outcome).contains(&backup.display().to_string()));
    assert!(!outcome.restart);
    assert!(!contains(&read(&backup), "hunter2"), "the backup holds a credential in clear");

    let fresh = tempfile::tempdir().unwrap();
    let target = Store::new(fresh.path().join("node"));
    let wrong = run(&target, Op::Restore { path: backup.clone(), password: "wrong horse".into() });
    assert!(err(&wrong).contains("wrong backup password"), "{:?}", wrong.result);
    assert!(!wrong.restart);
    assert!(!fresh.path().join("node").exists(), "a wrong password wrote something");

    let restored = run(&target, Op::Restore { path: backup.clone(), password: "correct horse".into() });
    assert_eq!(ok(&restored), "restored 'n1' of gateway 'saved'");
    assert!(restored.restart);
    assert_eq!(target.settings().unwrap(), store.settings().unwrap());
    assert_eq!(target.secrets().unwrap(), store.secrets().unwrap());

    // The registered machine itself is never overwritten.
    let refused = run(&store, Op::Restore { path: backup, password: "correct horse".into() });
    assert!(err(&refused).contains("already registered"), "{:?}", refused.result);
}

#[test]
fn exported_logs_are_a_zip_of_the_log_files_and_the_status() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::new(home.path());
    std::fs::create_dir_all(home.path().join("logs")).unwrap();
    let log = "2025-01-01T00:00:00Z INFO gatehouse: node service started\n";
    std::fs::write(home.path().join("logs/gatehouse.2025-01-01.log"), log).unwrap();
    let status = NodeStatus { node_name: "n1".into(), gateway_name: "sales".into(), ..NodeStatus::default() };
    let out = tempfile::tempdir().unwrap();
    let zip_path = out.path().join("logs.zip");

    let outcome = run_with(&store, Op::ExportLogs(zip_path.clone()), Some(status));
    let sentence = ok(&outcome);
    assert!(
        sentence.contains(&zip_path.display().to_string()) && sentence.contains("1 log file"),
        "{sentence}"
    );
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["logs/gatehouse.2025-01-01.log", "status.json"]);
    let mut text = String::new();
    zip.by_name("logs/gatehouse.2025-01-01.log").unwrap().read_to_string(&mut text).unwrap();
    assert_eq!(text, log);
    let mut json = String::new();
    zip.by_name("status.json").unwrap().read_to_string(&mut json).unwrap();
    let status: NodeStatus = serde_json::from_str(&json).unwrap();
    assert_eq!((status.node_name.as_str(), status.gateway_name.as_str()), ("n1", "sales"));
    // Written through a temp file that is gone now.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);

    // A folder that doesn't exist: a sentence, and nothing left behind.
    let nowhere = out.path().join("missing/logs.zip");
    assert!(err(&run(&store, Op::ExportLogs(nowhere))).contains("missing"));
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
}

/// A window on a node registered with `hub`, its service running in the window's process.
fn window_on_a_node(hub: &Hub, gateway: &str, tab: Tab) -> Window {
    let node = registered(hub, gateway);
    let mut window = Window::open_in(node.home, tab);
    window.wait_for("the node service to reach the hub", LIMIT, |app| {
        app.state.status.as_ref().is_some_and(|s| s.hub_connected && s.last_heartbeat.is_some())
    });
    window
}

/// Scrolls the widget labelled `label` into view (a click lands only on a visible widget) and
/// clicks it.
fn click(window: &mut Window, label: &str) {
    window.harness.get_by_label(label).scroll_to_me();
    // The scroll is animated: let it settle.
    for _ in 0..30 {
        window.harness.step();
    }
    window.click(label);
}

#[test]
fn the_settings_tab_sets_a_limit_adds_a_credential_and_refuses_a_bad_proxy() {
    let hub = Hub::start();
    let mut window = window_on_a_node(&hub, "tabs", Tab::Settings);
    let home = window.dir.clone();
    assert!(window.shows("Encryption: off"), "the encryption state is not shown");
    assert!(window.shows(&format!("max(2, min(4 × {} cores", std::thread::available_parallelism().unwrap())));
    // Not an express node: thresholds are read-only, with the CLI command.
    window.wait_for("the admin token check", LIMIT, |app| app.settings.admin.is_some());
    assert!(window.shows("gatehouse hub gateway set tabs"), "the CLI command is not shown");
    assert!(!window.shows("Save thresholds"), "thresholds are editable");

    window.type_into("Concurrency limit", "3");
    click(&mut window, "Set limit");
    window.wait_for("the limit to be saved", LIMIT, |app| app.settings.answer(OpKind::Concurrency).is_some());
    assert!(window.shows("this node takes at most 3 runs at once"), "the answer is not shown");
    assert_eq!(Store::new(&home).settings().unwrap().concurrency_limit, Some(3));
    window.wait_for("the service to restart with the new limit", LIMIT, |app| {
        app.state.status.as_ref().is_some_and(|s| s.metrics.runs_limit == 3)
    });

    window.wait_for("the credential list", LIMIT, |app| app.settings.credentials.is_some());
    assert!(window.shows("No credentials yet."));
    let value = "s3cret-in-a-field";
    window.type_into("Credential name", "warehouse");
    window.type_into("Credential value", value);
    click(&mut window, "Save credential");
    eprintln!(
        "DEBUG after {:?} {:?}",
        window.harness.get_by_label("Save credential"),
        window.harness.state().settings.answers
    );
    assert!(window.harness.state().settings.credential_value.is_empty(), "the value field was not cleared");
    window.wait_for("the credential to be listed", LIMIT, |app| {
        app.settings.credentials.as_ref().is_some_and(|names| names == &["warehouse"])
    });
    assert!(window.shows("Delete warehouse"), "the new credential has no row");
    assert!(!window.shows(value), "the value is shown");
    assert!(
        gatehouse::node::credentials::load(&Store::new(&home)).unwrap().entries.contains_key("warehouse")
    );

    window.type_into("Proxy URL", "proxy.corp:3128");
    assert!(window.shows("not a usable proxy URL"), "a bad proxy is not flagged as typed");
    click(&mut window, "Save proxy");
    assert!(!window.harness.state().settings.answers.contains(OpKind::Proxy), "a bad proxy was sent");
    assert_eq!(Store::new(&home).settings().unwrap().proxy, None);
}

#[test]
fn the_diagnostics_tab_switches_verbose_logging_tests_connections_and_exports_logs() {
    let hub = Hub::start();
    let mut window = window_on_a_node(&hub, "diag", Tab::Diagnostics);
    let home = window.dir.clone();

    click(&mut window, "Verbose logging");
    window.wait_for("the log level to be saved", LIMIT, |app| {
        app.diagnostics.answer(OpKind::LogLevel).is_some()
    });
    assert_eq!(Store::new(&home).settings().unwrap().log_level, "debug");

    click(&mut window, "Test connection");
    window.wait_for("the connection tests", LIMIT, |app| app.state.tests.is_some() && !app.state.testing);
    let tests = window.harness.state().state.tests.clone().unwrap();
    assert_eq!(tests[0].target, "hub");
    assert!(tests[0].ok, "the hub test failed: {}", tests[0].message);
    assert!(window.shows("✔ ok"), "the results table shows no success");

    let out = tempfile::tempdir().unwrap();
    let zip_path = out.path().join("diag.zip");
    assert!(!window.harness.state().diagnostics.export_path.is_empty(), "no path is suggested");
    window.harness.state_mut().diagnostics.export_path.clear();
    window.type_into("Export to", &zip_path.display().to_string());
    click(&mut window, "Export logs");
    window.wait_for("the export", LIMIT, |app| app.diagnostics.answer(OpKind::ExportLogs).is_some());
    assert!(window.shows("logs exported to"), "the answer is not shown");
    let zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    assert!(zip.file_names().any(|n| n == "status.json"));
}

#[test]
fn a_rejected_certificate_cant_be_used_and_a_good_one_turns_encryption_on_and_off() {
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");
    let hub = Hub::start();
    let mut window = window_on_a_node(&hub, "secure", Tab::Settings);
    let store = Store::new(window.dir.clone());
    let checked = |app: &gatehouse::gui::ConfigManager| {
        !app.settings.certificate.checking && app.settings.certificate.outcome.is_some()
    };

    click(&mut window, "Change certificate…");
    window.type_into("Certificate file", &format!("{certs}rsa1024.pem"));
    window.type_into("Trusted root CA (optional)", &format!("{certs}ca.pem"));
    click(&mut window, "Check certificate");
    window.wait_for("the check of rsa1024.pem", LIMIT, checked);
    assert!(window.shows("Verdict: rejected"), "the report is not shown");
    assert!(window.shows("The checker rejects this certificate"));
    click(&mut window, "Use this certificate");
    assert!(
        !window.harness.state().settings.answers.contains(OpKind::Certificate),
        "a rejected certificate was sent"
    );
    assert!(store.secrets().unwrap().tls.is_none());

    window.harness.state_mut().settings.certificate.path.clear();
    window.type_into("Certificate file", &format!("{certs}good.pem"));
    // The old report doesn't vouch for the new file.
    assert!(window.shows("changed since the check"));
    click(&mut window, "Check certificate");
    window.wait_for("the check of good.pem", LIMIT, checked);
    assert!(window.shows("Verdict: accepted"), "the report is not shown");
    click(&mut window, "Use this certificate");
    window.wait_for("the certificate to be taken", LIMIT, |app| {
        app.settings.answer(OpKind::Certificate).is_some()
    });
    let answer = window.harness.state().settings.answer(OpKind::Certificate).cloned().unwrap();
    assert!(answer.as_ref().is_ok_and(|s| s.contains("encrypted with the new certificate")), "{answer:?}");
    let thumbprint = store.secrets().unwrap().tls.unwrap().thumbprint_sha256;
    window.wait_for("the restarted service to report the certificate", LIMIT, |app| {
        app.state
            .status
            .as_ref()
            .is_some_and(|s| s.metrics.encryption_thumbprint.as_ref() == Some(&thumbprint))
    });
    assert!(window.shows(&format!("SHA-256 thumbprint: {thumbprint}")), "the thumbprint is not shown");
    assert_eq!(hub.admin(&["hub", "gateway", "show", "secure"])["encryption"], true);

    click(&mut window, "Turn off encryption");
    window.wait_for("encryption to be turned off", LIMIT, |app| {
        app.state
            .status
            .as_ref()
            .is_some_and(|s| s.last_heartbeat.is_some() && s.metrics.encryption_thumbprint.is_none())
    });
    assert!(store.secrets().unwrap().tls.is_none());
    assert!(window.shows("Encryption: off"));
}

#[test]
fn the_certificate_op_checks_again_and_a_rejected_one_changes_nothing() {
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");
    let hub = Hub::start();
    let node = registered(&hub, "checked");
    let store = Store::new(node.home.path());
    let before = (read(&node.home.path().join("node.toml")), read(&node.home.path().join("secrets.bin")));
    let choice = |file: &str, password: Option<&str>| gatehouse::gui::service::CertificateChoice {
        path: format!("{certs}{file}").into(),
        password: password.map(str::to_owned),
        roots: Some(format!("{certs}ca.pem").into()),
    };
    let op =
        Op::SetRemoteAccess { port: 8060, certificate: Some(choice("cng-software.pfx", Some("secret"))) };
    assert!(!format!("{op:?}").contains("secret"), "Debug shows the PFX password: {op:?}");
    assert_eq!(op.kind(), OpKind::Certificate);
    let settings = store.settings().unwrap();
    let port = settings.peer_port;
    let refused = run(
        &store,
        Op::SetRemoteAccess { port, certificate: Some(choice("cng-software.pfx", Some("secret"))) },
    );
    assert!(err(&refused).contains("nothing was changed"), "{:?}", refused.result);
    assert!(!refused.restart);
    let after = (read(&node.home.path().join("node.toml")), read(&node.home.path().join("secrets.bin")));
    assert!(before == after, "a rejected certificate changed the node's files");

    let taken =
        run(&store, Op::SetRemoteAccess { port, certificate: Some(choice("good.pfx", Some("secret"))) });
    assert!(ok(&taken).contains("encrypted with the new certificate"), "{:?}", taken.result);
    assert!(taken.restart);
    assert!(store.secrets().unwrap().tls.is_some());
    // The port alone keeps the certificate.
    run(&store, Op::SetRemoteAccess { port, certificate: None });
    assert!(store.secrets().unwrap().tls.is_some(), "changing the port dropped the certificate");
    assert!(ok(&run(&store, Op::DisableEncryption)).contains("encryption turned off"));
    assert!(store.secrets().unwrap().tls.is_none());
}
