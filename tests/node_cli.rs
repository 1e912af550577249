//! The node service from the command line, against a real hub on loopback: register (key from
//! stdin, never argv), run and heartbeat until the hub shows the node Online, status,
//! unregister; and the clear refusals: already registered, a damaged settings file (left as
//! it was), an unreachable hub (nothing written); and a port change that keeps the peer
//! channel's certificate.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::Hub;
use common::process::spawn_gatehouse;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `gatehouse` to completion with the node's data dir and optional stdin. Registrations
/// get a free loopback peer address, so nodes never listen beyond 127.0.0.1 or share a port.
fn gatehouse(home: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    if args.starts_with(&["node".to_owned(), "register".to_owned()]) {
        let port = common::process::free_port();
        args.extend([
            "--peer-port".to_owned(),
            port.to_string(),
            "--peer-address".to_owned(),
            format!("127.0.0.1:{port}"),
        ]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(&args)
        .env("GATEHOUSE_HOME", home)
        .env_remove("GATEHOUSE_AUTH_KEY")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// A data dir with a node registered (`node register` plus `extra`) with a new gateway
/// `sales` of `hub`.
fn registered_node(hub: &Hub, extra: &[&str]) -> tempfile::TempDir {
    let key = hub.create_gateway("sales", &[]);
    let home = tempfile::tempdir().unwrap();
    let args: Vec<&str> = ["node", "register"].iter().chain(extra).copied().collect();
    let registered = gatehouse(home.path(), &args, None, &[("GATEHOUSE_AUTH_KEY", &key)]);
    assert!(registered.status.success(), "{}", stderr(&registered));
    home
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_node_registers_runs_goes_online_and_unregisters() {
    let hub = Hub::start();
    let key = hub.create_gateway("sales", &[]);
    let home = tempfile::tempdir().unwrap();

    let output = gatehouse(
        home.path(),
        &["node", "register", "--key-stdin", "--name", "n1"],
        Some(&format!("{key}\n")),
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("registered as 'n1' with gateway 'sales'"));
    // The secrets on disk are sealed: the node token never appears in the clear.
    let sealed = std::fs::read(home.path().join("secrets.bin")).unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("ghn_"));

    let mut run = spawn_gatehouse(&["node", "run"], &[("GATEHOUSE_HOME", home.path().to_str().unwrap())]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = hub.nodes("sales");
        if nodes.len() == 1 && nodes[0]["status"] == "Online" {
            assert_eq!(nodes[0]["name"], "n1");
            assert_eq!(nodes[0]["role"], "dispatcher");
            assert_eq!(nodes[0]["version"], env!("CARGO_PKG_VERSION"));
            assert!(
                nodes[0]["metrics"]["total_memory_bytes"].as_u64().unwrap() > 0,
                "no real metrics: {nodes:?}"
            );
            assert!(nodes[0]["metrics"]["runs_limit"].as_u64().unwrap() >= 2);
            break;
        }
        assert!(Instant::now() < deadline, "the node never showed Online: {nodes:?}\n{}", run.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }

    let status = gatehouse(home.path(), &["node", "status", "--json"], None, &[]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["registration"]["node_name"], "n1");
    assert_eq!(status["last_status"]["hub_connected"], true);
    assert_eq!(status["running"], true, "the running service's control socket wasn't asked");
    run.stop();
    // Stopped: the last status node run wrote, marked as not running.
    let stopped = gatehouse(home.path(), &["node", "status"], None, &[]);
    let text = String::from_utf8_lossy(&stopped.stdout);
    assert!(text.contains("Online (not running; as of its last heartbeat)"), "{text}");

    let output = gatehouse(home.path(), &["node", "unregister"], None, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(hub.nodes("sales").is_empty(), "a ghost node is left at the hub");
    assert!(!home.path().join("node.toml").exists());
    // The same machine can register again once unregistered.
    let again =
        gatehouse(home.path(), &["node", "register", "--name", "n1"], None, &[("GATEHOUSE_AUTH_KEY", &key)]);
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn registering_twice_is_refused_with_what_to_do() {
    let hub = Hub::start();
    let key = hub.create_gateway("sales", &[]);
    let home = tempfile::tempdir().unwrap();
    let env = [("GATEHOUSE_AUTH_KEY", key.as_str())];
    assert!(gatehouse(home.path(), &["node", "register", "--name", "a"], None, &env).status.success());
    let second = gatehouse(home.path(), &["node", "register", "--name", "b"], None, &env);
    assert_eq!(second.status.code(), Some(2));
    assert!(stderr(&second).contains("already registered with gateway 'sales' as 'a'; unregister it first"));
    assert_eq!(hub.nodes("sales").len(), 1);
}

#[test]
fn a_wrong_key_is_refused_by_the_hub_and_nothing_is_written() {
    let hub = Hub::start();
    let key = hub.create_gateway("sales", &[]);
    let home = tempfile::tempdir().unwrap();
    // Same hub and gateway, another secret: the hub says no.
    let wrong = format!("{}{}", &key[..key.len() - 43], "A".repeat(43));
    let output = gatehouse(home.path(), &["node", "register"], None, &[("GATEHOUSE_AUTH_KEY", &wrong)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("auth key is not valid"), "{}", stderr(&output));
    assert!(!home.path().join("node.toml").exists());
    let output = gatehouse(home.path(), &["node", "register"], None, &[("GATEHOUSE_AUTH_KEY", "not-a-key")]);
    assert!(stderr(&output).contains("not a Gatehouse auth key"), "{}", stderr(&output));
}

#[test]
fn an_unreachable_hub_is_named_and_nothing_is_written() {
    let hub = Hub::start();
    let key = hub.create_gateway("sales", &[]);
    drop(hub);
    let home = tempfile::tempdir().unwrap();
    let output = gatehouse(home.path(), &["node", "register"], None, &[("GATEHOUSE_AUTH_KEY", &key)]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("can't reach the hub at http://127.0.0.1:"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(!home.path().join("node.toml").exists());
}

#[test]
fn a_damaged_settings_file_is_named_and_left_alone() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("node.toml"), "hub_url = \"http://x\"\nnode_name = [").unwrap();
    let register = ["node", "register", "--name", "n1"];
    for args in [&["node", "run"][..], &["node", "status"], &["node", "unregister"], &register] {
        // register: the settings are looked at before the key, so any key will do.
        let output = gatehouse(home.path(), args, None, &[("GATEHOUSE_AUTH_KEY", "gh1_any")]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let message = stderr(&output);
        assert!(message.contains("node.toml is damaged"), "{args:?}: {message}");
        assert!(!message.contains("panicked"), "{message}");
    }
    assert_eq!(
        std::fs::read_to_string(home.path().join("node.toml")).unwrap(),
        "hub_url = \"http://x\"\nnode_name = ["
    );
}

#[test]
fn a_running_node_keeps_retrying_when_the_hub_goes_away() {
    let hub = Hub::start();
    let home = registered_node(&hub, &[]);
    drop(hub);
    let mut run = spawn_gatehouse(&["node", "run"], &[("GATEHOUSE_HOME", home.path().to_str().unwrap())]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = gatehouse(home.path(), &["node", "status", "--json"], None, &[]);
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        if status["last_status"]["hub_connected"] == false && status["last_status"]["hub_error"].is_string() {
            assert!(status["last_status"]["hub_error"].as_str().unwrap().contains("can't reach the hub"));
            break;
        }
        assert!(Instant::now() < deadline, "no hub error recorded: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Still running: it retries rather than exiting.
    assert!(run.wait_timeout(Duration::from_millis(500)).is_none(), "the node exited when the hub went away");
    run.stop();
}

#[test]
fn a_backup_restores_elsewhere_and_a_wrong_password_restores_nothing() {
    let hub = Hub::start();
    let home = registered_node(&hub, &["--name", "n1"]);
    let files = tempfile::tempdir().unwrap();
    let backup = files.path().join("n1.backup");
    let made = gatehouse(
        home.path(),
        &["node", "backup", "--out", backup.to_str().unwrap(), "--password-stdin"],
        Some("correct horse battery\n"),
        &[],
    );
    assert!(made.status.success(), "{}", stderr(&made));

    let elsewhere = tempfile::tempdir().unwrap();
    let wrong = gatehouse(
        elsewhere.path(),
        &["node", "restore", backup.to_str().unwrap(), "--password-stdin"],
        Some("wrong horse\n"),
        &[],
    );
    assert_eq!(wrong.status.code(), Some(2));
    assert!(stderr(&wrong).contains("wrong backup password"), "{}", stderr(&wrong));
    assert!(!elsewhere.path().join("node.toml").exists(), "a wrong password wrote settings");

    let right = gatehouse(
        elsewhere.path(),
        &["node", "restore", backup.to_str().unwrap()],
        None,
        &[("GATEHOUSE_BACKUP_PASSWORD", "correct horse battery")],
    );
    assert!(right.status.success(), "{}", stderr(&right));
    // The restored data dir holds the same registration.
    let status = gatehouse(elsewhere.path(), &["node", "status", "--json"], None, &[]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["registration"]["node_name"], "n1");
    let again = gatehouse(
        home.path(),
        &["node", "restore", backup.to_str().unwrap()],
        None,
        &[("GATEHOUSE_BACKUP_PASSWORD", "correct horse battery")],
    );
    assert!(stderr(&again).contains("already registered"), "{}", stderr(&again));
}

#[test]
fn a_backup_never_replaces_a_file_unless_forced_and_never_lands_in_the_data_dir() {
    use std::os::unix::fs::PermissionsExt as _;
    let hub = Hub::start();
    let home = registered_node(&hub, &["--name", "n1"]);
    let password = [("GATEHOUSE_BACKUP_PASSWORD", "correct horse battery")];
    let backup = |out: &Path, extra: &[&str]| {
        let mut args = vec!["node", "backup", "--out", out.to_str().unwrap()];
        args.extend(extra);
        gatehouse(home.path(), &args, None, &password)
    };

    // The node's own files, even with --force (a rename over secrets.bin unregisters it).
    let secrets = home.path().join("secrets.bin");
    let before = std::fs::read(&secrets).unwrap();
    for extra in [&[][..], &["--force"]] {
        let refused = backup(&secrets, extra);
        assert_eq!(refused.status.code(), Some(2), "{extra:?}: {}", stderr(&refused));
        assert!(stderr(&refused).contains("inside the node's data dir"), "{}", stderr(&refused));
    }
    assert_eq!(std::fs::read(&secrets).unwrap(), before, "secrets.bin was changed");

    // An existing file (the earlier backup, still needed) stays unless --force.
    let files = tempfile::tempdir().unwrap();
    let earlier = files.path().join("n1.backup");
    std::fs::write(&earlier, "the backup still needed").unwrap();
    let refused = backup(&earlier, &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("already exists") && stderr(&refused).contains("--force"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(std::fs::read(&earlier).unwrap(), b"the backup still needed");
    let forced = backup(&earlier, &["--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(std::fs::read(&earlier).unwrap(), b"the backup still needed");

    // A new file: written owner-only, with no temp file left beside it.
    let fresh = files.path().join("fresh.backup");
    let made = backup(&fresh, &[]);
    assert!(made.status.success(), "{}", stderr(&made));
    assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_dir(files.path()).unwrap().count(), 2);
}

#[test]
fn gatehouse_home_naming_another_users_folder_is_refused_unchanged() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    // Handing a folder to another user takes root; elsewhere the unit test covers the check.
    if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
        return;
    }
    let hub = Hub::start();
    let key = hub.create_gateway("sales", &[]);
    let parent = tempfile::tempdir().unwrap();
    let theirs = parent.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let refused =
        gatehouse(&theirs, &["node", "register", "--name", "n1"], None, &[("GATEHOUSE_AUTH_KEY", &key)]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("belongs to another user") && stderr(&refused).contains("GATEHOUSE_HOME"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        std::fs::metadata(&theirs).unwrap().permissions().mode() & 0o777,
        0o755,
        "the folder was changed"
    );
    assert_eq!(std::fs::metadata(&theirs).unwrap().uid(), 65534);
}

#[test]
fn a_running_node_logs_to_a_file_and_takes_a_new_level() {
    let hub = Hub::start();
    let home = registered_node(&hub, &[]);
    let mut run = spawn_gatehouse(&["node", "run"], &[("GATEHOUSE_HOME", home.path().to_str().unwrap())]);
    let logs = home.path().join("logs");
    let log_text = || {
        std::fs::read_dir(&logs)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect::<String>()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log_text().contains("node service started") {
        assert!(Instant::now() < deadline, "no log file with the start line in {}", logs.display());
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused = gatehouse(home.path(), &["node", "log-level", "chatty"], None, &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("not a log level"));
    let set = gatehouse(home.path(), &["node", "log-level", "debug"], None, &[]);
    assert!(set.status.success(), "{}", stderr(&set));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log_text().contains("log level changed") {
        assert!(Instant::now() < deadline, "the running node didn't take the new level");
        std::thread::sleep(Duration::from_millis(200));
    }
    run.stop();
}

#[test]
fn a_port_change_without_a_certificate_keeps_the_encryption() {
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");
    let hub = Hub::start();
    let key = hub.create_gateway("kept", &[]);
    let home = tempfile::tempdir().unwrap();
    let registered = gatehouse(
        home.path(),
        &["node", "register", "--key-stdin", "--name", "n1"],
        Some(&format!("{key}\n")),
        &[],
    );
    assert!(registered.status.success(), "{}", stderr(&registered));
    let store = gatehouse::node::store::Store::new(home.path());
    let port = store.settings().unwrap().peer_port.to_string();
    let (cert, roots) = (format!("{certs}good.pem"), format!("{certs}ca.pem"));
    let encrypted = gatehouse(
        home.path(),
        &["node", "enable-remote-access", "--port", &port, "--cert", &cert, "--roots", &roots],
        None,
        &[],
    );
    assert!(encrypted.status.success(), "{}", stderr(&encrypted));
    let thumbprint = store.secrets().unwrap().tls.expect("no certificate after --cert").thumbprint_sha256;

    let moved_to = common::process::free_port();
    let moved =
        gatehouse(home.path(), &["node", "enable-remote-access", "--port", &moved_to.to_string()], None, &[]);
    assert!(moved.status.success(), "{}", stderr(&moved));
    let said = String::from_utf8_lossy(&moved.stdout);
    assert!(said.contains(&format!("port {moved_to}")) && said.contains("still encrypted"), "{said}");
    let settings = store.settings().unwrap();
    assert_eq!(settings.peer_port, moved_to);
    assert_eq!(settings.peer_address, format!("127.0.0.1:{moved_to}"));
    let kept = store.secrets().unwrap().tls.map(|tls| tls.thumbprint_sha256);
    assert_eq!(kept, Some(thumbprint), "a port change without --cert dropped the certificate");
}
