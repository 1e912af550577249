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
fn a_change_that_needs_a_restart_says_the_service_restarts_only_when_it_runs_in_the_window() {
    let hub = Hub::start();
    let node = registered(&hub, "applies");
    let store = Store::new(node.home.path());

    // Stopped, or run by `gatehouse node run`: the window restarts nothing.
    let stopped = run(&store, Op::SetConcurrency(Some(3)));
    assert!(ok(&stopped).contains("applies it when it next starts"), "{:?}", stopped.result);
    assert!(!ok(&stopped).contains("restarts"), "{:?}", stopped.result);
    for op in [Op::SetProxy(Some("http://proxy.corp:3128".into())), Op::DisableEncryption] {
        let outcome = run(&store, op);
        assert!(!ok(&outcome).contains("restarts"), "{:?}", outcome.result);
    }

    // Running in the window: it restarts the service.
    let running = run_with(&store, Op::SetConcurrency(Some(4)), Some(NodeStatus::default()));
    assert!(ok(&running).ends_with("the service restarts to apply it"), "{:?}", running.result);
    assert!(running.restart);
}

#[test]
fn a_port_change_writes_only_node_toml_and_a_certificate_only_the_secrets() {
    use std::os::unix::fs::MetadataExt as _;
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");
    let hub = Hub::start();
    let node = registered(&hub, "one-file");
    let store = Store::new(node.home.path());
    let (toml, secrets) = (node.home.path().join("node.toml"), node.home.path().join("secrets.bin"));
    let inode = |path: &Path| std::fs::metadata(path).unwrap().ino();

    // Secrets are sealed afresh on every write, so unchanged bytes mean the file wasn't written
    // (and a credential a peer synced meanwhile can't be written over).
    let sealed = read(&secrets);
    let port = common::process::free_port();
    ok(&run(&store, Op::SetRemoteAccess { port, certificate: None }));
    assert_eq!(store.settings().unwrap().peer_port, port);
    assert!(read(&secrets) == sealed, "a port change wrote the secrets");

    let settings = inode(&toml);
    let choice = gatehouse::gui::service::CertificateChoice {
        path: format!("{certs}good.pfx").into(),
        password: Some("secret".into()),
        roots: Some(format!("{certs}ca.pem").into()),
    };
    ok(&run(&store, Op::SetRemoteAccess { port, certificate: Some(choice) }));
    assert!(store.secrets().unwrap().tls.is_some());
    assert_eq!(inode(&toml), settings, "a certificate change wrote node.toml");
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
    assert_eq!(gatehouse::node::credentials::load(&store).unwrap().value("warehouse"), Some(value));
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
        bandwidth_limit_mbps: 25,
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
    assert_eq!(settings["bandwidth_limit_mbps"], 25);

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
fn a_backup_goes_to_a_new_file_outside_the_data_dir_at_a_full_path() {
    let hub = Hub::start();
    let node = registered(&hub, "placed");
    let store = Store::new(node.home.path());
    let files = tempfile::tempdir().unwrap();
    let backup = |path: std::path::PathBuf| Op::Backup { path, password: "correct horse".into() };
    let secrets = read(&node.home.path().join("secrets.bin"));

    // Over the node's own secrets: the node would be gone.
    let refused = run(&store, backup(node.home.path().join("secrets.bin")));
    assert!(err(&refused).contains("inside the node's data dir"), "{:?}", refused.result);
    assert!(read(&node.home.path().join("secrets.bin")) == secrets, "the backup replaced secrets.bin");
    // Also through a link to the data dir.
    let link = files.path().join("link");
    std::os::unix::fs::symlink(node.home.path(), &link).unwrap();
    assert!(err(&run(&store, backup(link.join("n1.backup")))).contains("inside the node's data dir"));
    assert!(!node.home.path().join("n1.backup").exists());

    // Over an earlier backup (or any file).
    let earlier = files.path().join("earlier.backup");
    std::fs::write(&earlier, "the backup still needed").unwrap();
    assert!(err(&run(&store, backup(earlier.clone()))).contains("already exists"));
    assert_eq!(read(&earlier), b"the backup still needed");
    assert!(err(&run(&store, backup(files.path().to_owned()))).contains("is a folder"));

    // Wherever the window happened to start.
    assert!(err(&run(&store, backup("n1.backup".into()))).contains("not a full path"));
    assert!(!Path::new("n1.backup").exists());

    ok(&run(&store, backup(files.path().join("n1.backup"))));
}

#[test]
fn logs_are_never_exported_into_the_data_dir() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::new(home.path());
    std::fs::create_dir_all(home.path().join("logs")).unwrap();
    std::fs::write(home.path().join("node.toml"), "kept").unwrap();

    for inside in ["node.toml", "logs/export.zip"] {
        let refused = run(&store, Op::ExportLogs(home.path().join(inside)));
        assert!(err(&refused).contains("inside the node's data dir"), "{inside}: {:?}", refused.result);
    }
    assert_eq!(read(&home.path().join("node.toml")), b"kept");
    assert_eq!(std::fs::read_dir(home.path().join("logs")).unwrap().count(), 0);
    assert!(err(&run(&store, Op::ExportLogs("logs.zip".into()))).contains("not a full path"));

    // An earlier export may be replaced (the save dialog asks first).
    let out = tempfile::tempdir().unwrap();
    let zip_path = out.path().join("logs.zip");
    std::fs::write(&zip_path, "an earlier export").unwrap();
    ok(&run(&store, Op::ExportLogs(zip_path.clone())));
    assert!(zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).is_ok());
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
    // Owner-only: the logs name hosts, paths and jobs.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&zip_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the log export is mode {mode:o}");
    }

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
    window.wait_for("the admin token check", LIMIT, |app| app.settings.thresholds.admin.is_some());
    assert!(window.shows("gatehouse hub gateway set tabs"), "the CLI command is not shown");
    assert!(!window.shows("Save thresholds"), "thresholds are editable");
    // The tokens' section is "Hub tokens": "hub access" is Add a node's network/local switch.
    assert!(window.shows("Hub tokens"), "the hub tokens section has no heading");
    assert!(!window.shows("Hub access"), "a section is still called Hub access");

    window.type_into("Concurrency limit", "3");
    click(&mut window, "Set limit");
    window.wait_for("the limit to be saved", LIMIT, |app| app.settings.answer(OpKind::Concurrency).is_some());
    assert!(window.shows("this node takes at most 3 runs at once"), "the answer is not shown");
    assert_eq!(Store::new(&home).settings().unwrap().concurrency_limit, Some(3));
    window.wait_for("the service to restart with the new limit", LIMIT, |app| {
        app.state.status.as_ref().is_some_and(|s| s.metrics.runs_limit == 3)
    });

    window.wait_for("the credential list", LIMIT, |app| app.settings.credentials.names.is_some());
    assert!(window.shows("No credentials yet."));
    let value = "s3cret-in-a-field";
    window.type_into("Credential name", "warehouse");
    window.type_into("Credential value", value);
    click(&mut window, "Save credential");
    assert!(window.harness.state().settings.credentials.value.is_empty(), "the value field was not cleared");
    window.wait_for("the credential to be listed", LIMIT, |app| {
        app.settings.credentials.names.as_ref().is_some_and(|names| names == &["warehouse"])
    });
    assert!(window.shows("Delete warehouse"), "the new credential has no row");
    assert!(!window.shows(value), "the value is shown");
    assert!(
        gatehouse::node::credentials::load(&Store::new(&home)).unwrap().entries.contains_key("warehouse")
    );

    window.type_into("Proxy URL", "proxy.corp:3128");
    assert!(window.shows("not a usable proxy URL"), "a bad proxy is not flagged as typed");
    click(&mut window, "Save proxy");
    assert!(!window.harness.state().settings.asked(OpKind::Proxy), "a bad proxy was sent");
    assert_eq!(Store::new(&home).settings().unwrap().proxy, None);
}

#[test]
fn the_diagnostics_tab_switches_verbose_logging_tests_connections_and_exports_logs() {
    let hub = Hub::start();
    let mut window = window_on_a_node(&hub, "diag", Tab::Diagnostics);
    let home = window.dir.clone();

    click(&mut window, "Verbose logging");
    window.wait_for("the log level to be saved", LIMIT, |app| {
        app.diagnostics.answers.answer(OpKind::LogLevel).is_some()
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
    window.wait_for("the export", LIMIT, |app| app.diagnostics.answers.answer(OpKind::ExportLogs).is_some());
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
        !app.settings.encryption.certificate.checking && app.settings.encryption.certificate.outcome.is_some()
    };

    click(&mut window, "Change certificate…");
    window.type_into("Certificate file", &format!("{certs}rsa1024.pem"));
    window.type_into("Trusted root CA (optional)", &format!("{certs}ca.pem"));
    click(&mut window, "Check certificate");
    window.wait_for("the check of rsa1024.pem", LIMIT, checked);
    assert!(window.shows("Verdict: rejected"), "the report is not shown");
    assert!(window.shows("The checker rejects this certificate"));
    click(&mut window, "Use this certificate");
    assert!(!window.harness.state().settings.asked(OpKind::Certificate), "a rejected certificate was sent");
    assert!(store.secrets().unwrap().tls.is_none());

    window.harness.state_mut().settings.encryption.certificate.path.clear();
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

#[test]
fn the_pfx_password_leaves_the_settings_form_once_used_or_abandoned() {
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");
    let hub = Hub::start();
    let mut window = window_on_a_node(&hub, "forgets", Tab::Settings);
    let store = Store::new(window.dir.clone());
    // A copy that goes away between the check and its use, so the change fails.
    let files = tempfile::tempdir().unwrap();
    let pfx = files.path().join("node.pfx");
    std::fs::copy(format!("{certs}good.pfx"), &pfx).unwrap();

    click(&mut window, "Change certificate…");
    window.type_into("Certificate file", &pfx.display().to_string());
    window.type_into("PFX password", "secret");
    window.type_into("Trusted root CA (optional)", &format!("{certs}ca.pem"));
    click(&mut window, "Check certificate");
    window.wait_for("the check of node.pfx", LIMIT, |app| {
        !app.settings.encryption.certificate.checking && app.settings.encryption.certificate.outcome.is_some()
    });
    assert!(window.shows("Verdict: accepted"), "the report is not shown");
    std::fs::remove_file(&pfx).unwrap();
    click(&mut window, "Use this certificate");
    assert!(
        window.harness.state().settings.encryption.certificate.password.is_empty(),
        "the password stayed in its field"
    );
    window.wait_for("the change to fail", LIMIT, |app| app.settings.answer(OpKind::Certificate).is_some());
    let answer = window.harness.state().settings.answer(OpKind::Certificate).cloned().unwrap();
    assert!(answer.is_err(), "a missing file was used: {answer:?}");
    assert!(
        window.harness.state().settings.encryption.certificate.password.is_empty(),
        "a failed change kept the password"
    );
    assert!(store.secrets().unwrap().tls.is_none());
    // The old report no longer vouches for what the form holds.
    assert!(!window.shows("Verdict: accepted"), "the report of the used check is still offered");

    // Typed, then the form closed: the password goes with it.
    window.type_into("PFX password", "secret");
    click(&mut window, "Change certificate…");
    assert!(
        window.harness.state().settings.encryption.certificate.password.is_empty(),
        "a closed form kept the password"
    );
}

#[test]
fn credentials_that_cant_be_read_say_why_not_that_there_are_none() {
    let hub = Hub::start();
    let node = registered(&hub, "unreadable");
    std::fs::write(node.home.path().join("secrets.bin"), b"not sealed by this machine").unwrap();
    let mut window = Window::open_in(node.home, Tab::Settings);

    window
        .wait_for("the credential list", LIMIT, |app| app.settings.answer(OpKind::CredentialList).is_some());
    assert!(window.shows("can't be opened"), "the reason is not shown");
    assert!(!window.shows("No credentials yet."), "an unreadable list is shown as empty");
}

#[test]
fn the_log_view_follows_the_filter_and_new_lines_in_a_full_log() {
    let hub = Hub::start();
    let mut window = window_on_a_node(&hub, "logs", Tab::Diagnostics);
    let line = |i: usize| gatehouse::node::logs::LogLine {
        at_ms: 0,
        level: "INFO".into(),
        target: "gatehouse::test".into(),
        message: format!("line {i}"),
    };
    // This window has no log feed of its own: these are all its lines.
    let logs = &mut window.harness.state_mut().state.logs;
    logs.clear();
    logs.extend((0..gatehouse::gui::state::LOG_LINES).map(line));
    window.harness.step();
    assert!(window.shows("5000 of 5000 lines"));

    window.type_into("Filter", "LINE 4999");
    assert!(window.shows("1 of 5000 lines"), "the filter is not applied");
    assert!(window.shows("line 4999"));

    // Full: the oldest line goes, the newest comes, the length stays.
    let logs = &mut window.harness.state_mut().state.logs;
    logs.pop_front();
    logs.push_back(gatehouse::node::logs::LogLine { message: "line 4999 again".into(), ..line(0) });
    window.harness.step();
    assert!(window.shows("2 of 5000 lines"), "a new line in a full log is not shown");
    assert!(window.shows("line 4999 again"));
}

#[test]
fn a_stopped_service_is_not_said_to_restart_for_a_new_limit() {
    let hub = Hub::start();
    let mut window = window_on_a_node(&hub, "stopped", Tab::Settings);
    assert!(window.shows("The service restarts to apply a new limit"));
    window.harness.state().send(gatehouse::gui::service::Request::Stop);
    window.wait_for("the service to stop", LIMIT, |app| {
        matches!(app.state.service, gatehouse::gui::ServiceState::Stopped { .. })
    });
    assert!(!window.shows("The service restarts"), "a stopped service is said to restart");
    assert!(window.shows("A new limit applies when the node service next starts."));

    window.type_into("Concurrency limit", "3");
    click(&mut window, "Set limit");
    window.wait_for("the limit to be saved", LIMIT, |app| app.settings.answer(OpKind::Concurrency).is_some());
    assert!(
        window
            .shows("this node takes at most 3 runs at once; the node service applies it when it next starts")
    );
    assert!(matches!(window.harness.state().state.service, gatehouse::gui::ServiceState::Stopped { .. }));
}

#[test]
fn the_automatic_update_window_is_saved_to_node_toml_and_a_foreign_service_gets_the_command() {
    use gatehouse::node::auto_update::UpdateWindow;
    let hub = Hub::start();
    let node = registered(&hub, "nightly");
    let store = Store::new(node.home.path());
    let window = UpdateWindow::parse("02:00-04:00", Some("sat,sun")).unwrap();

    let outcome = run(&store, Op::SetAutoUpdate(Some(window)));
    let said = ok(&outcome);
    assert!(
        said.contains("updates itself to a newer release the hub offers on Sat and Sun from 02:00 to 04:00"),
        "{said}"
    );
    assert!(said.contains("follows it at its next heartbeat"), "{said}");
    assert!(!outcome.restart, "the service follows node.toml: no restart");
    assert_eq!(store.settings().unwrap().auto_update, Some(window));
    let toml = std::fs::read_to_string(node.home.path().join("node.toml")).unwrap();
    assert!(toml.contains(r#"days = ["sat", "sun"]"#), "{toml}");

    // The window's own service can't replace its binary: the answer says when it applies.
    let outcome = run_with(&store, Op::SetAutoUpdate(None), Some(NodeStatus::default()));
    assert!(ok(&outcome).contains("automatic updates are off"));
    assert!(ok(&outcome).contains("not inside this window"));
    assert_eq!(store.settings().unwrap().auto_update, None);

    let command = ops::elsewhere(&Op::SetAutoUpdate(Some(window)), Path::new("/var/lib/gatehouse"));
    assert!(command.contains("gatehouse node auto-update --window 02:00-04:00 --days sat,sun"), "{command}");
}
