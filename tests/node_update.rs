//! `node update` with real processes on 127.0.0.1: releases are published to a hub that
//! trusts one key (a wrong signature is refused), a three-node gateway under a stream of
//! small jobs updates one node at a time to "a newer build" and loses or repeats no run, and
//! a release that can't even start is rolled back.
//!
//! The newer build is a COPY of the test build with a version patched into its test-only
//! slot (`::gatehouse::FAKE_VERSION_MARKER`); every node runs from its own copy in a temp dir,
//! so the cargo-built binary is never replaced.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, gatehouse, wait_until};
use common::process::spawn_binary;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NEW: &str = "9.0.0";

/// The test build copied to `dir/gatehouse`, with `version` in its test-only slot if given.
fn binary_copy(dir: &Path, version: Option<&str>) -> PathBuf {
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_gatehouse")).unwrap();
    if let Some(version) = version {
        let marker = ::gatehouse::FAKE_VERSION_MARKER;
        let found: Vec<usize> =
            bytes.windows(marker.len()).enumerate().filter(|(_, w)| *w == marker).map(|(i, _)| i).collect();
        assert_eq!(found.len(), 1, "the binary holds its version slot exactly once");
        assert!(version.len() <= ::gatehouse::FAKE_VERSION_MAX);
        let at = found[0] + marker.len();
        assert!(bytes[at..at + ::gatehouse::FAKE_VERSION_MAX].iter().all(|&b| b == 0), "an untouched slot");
        bytes[at..at + version.len()].copy_from_slice(version.as_bytes());
    }
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("gatehouse");
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    gatehouse(Path::new("/nonexistent"), args, env)
}

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `release keygen` into `dir`: the private key is owner-only and never printed.
fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let printed = ok(&run(&["release", "keygen", "--out", dir.to_str().unwrap()], &[]));
    let (private, public) = (dir.join("release.key"), dir.join("release.pub"));
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key is owner-only");
    let secret = std::fs::read_to_string(&private).unwrap();
    assert!(!printed.contains(secret.trim()), "the private key is never printed");
    // A second keygen never replaces the pair.
    assert!(!run(&["release", "keygen", "--out", dir.to_str().unwrap()], &[]).status.success());
    (private, public)
}

fn sign(file: &Path, key: &Path) {
    ok(&run(&["release", "sign", file.to_str().unwrap(), "--key", key.to_str().unwrap()], &[]));
}

fn publish(hub: &Hub, file: &Path, version: &str) -> Output {
    run(
        &["hub", "release", "publish", file.to_str().unwrap(), "--version", version, "--hub", &hub.url],
        &[("GATEHOUSE_ADMIN_TOKEN", &hub.token)],
    )
}

/// Starts `node run` for `node` from its own binary `exe`.
fn run_from(node: &mut Node, exe: &Path) {
    let home = node.home.path().to_str().unwrap().to_owned();
    node.process = Some(spawn_binary(exe, &["node", "run"], &[("GATEHOUSE_HOME", &home)]));
}

fn node_status(node: &Node) -> String {
    ok(&gatehouse(node.home.path(), &["node", "status"], &[]))
}

fn update_record(node: &Node) -> Value {
    std::fs::read(node.home.path().join("update.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

#[test]
#[allow(clippy::too_many_lines, reason = "one story: publish, update under load, then check every run")]
fn a_three_node_gateway_updates_one_node_at_a_time_under_jobs_and_loses_no_run() {
    let temp = tempfile::tempdir().unwrap();
    let (private, public) = keygen(&temp.path().join("keys"));
    let (stranger, _) = keygen(&temp.path().join("other-keys"));
    let hub = Hub::start_with(&["--release-key", public.to_str().unwrap()]);

    // A signature by a key the hub doesn't trust is refused with its sentence; nothing is kept.
    let newer = binary_copy(&temp.path().join("release"), Some(NEW));
    sign(&newer, &stranger);
    let refused = publish(&hub, &newer, NEW);
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("the hub refuses release 9.0.0"), "{said}");
    assert!(said.contains("doesn't verify against any release key the hub trusts"), "{said}");
    assert_eq!(hub.admin(&["hub", "release", "list"]), json!([]));
    sign(&newer, &private);
    ok(&publish(&hub, &newer, NEW));
    let releases = hub.admin(&["hub", "release", "list"]);
    assert_eq!(releases[0]["version"], NEW);
    assert_eq!(releases[0]["published"], true);

    let key = hub.create_gateway("lake", &["--policy", "distribute"]);
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::register(&key, &format!("n{i}"), &[])).collect();
    let exes: Vec<PathBuf> =
        (1..=3).map(|i| binary_copy(&temp.path().join(format!("bin-n{i}")), None)).collect();
    for (node, exe) in nodes.iter_mut().zip(&exes) {
        run_from(node, exe);
    }
    wait_until(Duration::from_secs(60), "every node Online with a dispatcher", || {
        let list = hub.nodes("lake");
        list.len() == 3
            && list.iter().all(|n| n["status"] == "Online")
            && list.iter().filter(|n| n["role"] == "dispatcher").count() == 1
    });
    let offered = format!("update available: {NEW} (you run {})", ::gatehouse::VERSION);
    wait_until(Duration::from_secs(20), "node status to offer the update", || {
        node_status(&nodes[0]).contains(&offered)
    });

    // A stream of small jobs while the gateway updates.
    let stop = Arc::new(AtomicBool::new(false));
    let (url, token) = (hub.url.clone(), hub.token.clone());
    let jobs = std::thread::scope(|scope| {
        let feeder = scope.spawn(|| {
            let mut ids = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(240);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let spec = json!({ "name": "stream", "activities": [
                    { "kind": "sleep", "millis": 300, "partitions": 3 },
                    { "kind": "echo", "message": format!("job {}", ids.len()), "partitions": 2 },
                ]});
                let file = temp.path().join(format!("job-{}.json", ids.len()));
                std::fs::write(&file, spec.to_string()).unwrap();
                let submitted = ok(&run(
                    &["job", "submit", "lake", file.to_str().unwrap(), "--hub", &url, "--json"],
                    &[("GATEHOUSE_ADMIN_TOKEN", &token)],
                ));
                let job: Value = serde_json::from_str(&submitted).unwrap();
                ids.push(job["id"].as_str().unwrap().to_owned());
                std::thread::sleep(Duration::from_millis(400));
            }
            ids
        });
        std::thread::sleep(Duration::from_secs(2));
        for node in &nodes {
            let said = ok(&gatehouse(node.home.path(), &["node", "update", "--no-wait"], &[]));
            assert!(said.contains(&format!("to {NEW}")), "{said}");
        }

        // Watch the hub: one node Upgrading at most, the gateway never Offline, until every
        // node reports the new version.
        let mut upgraded: BTreeSet<String> = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            assert!(
                Instant::now() < deadline,
                "the gateway didn't finish updating; saw Upgrading: {upgraded:?}"
            );
            let gateway = hub.admin(&["hub", "gateway", "show", "lake"]);
            assert_ne!(gateway["status"], "Offline", "the gateway went Offline: {gateway}");
            let list = gateway["nodes"].as_array().cloned().unwrap_or_default();
            let upgrading: Vec<&Value> = list.iter().filter(|n| n["status"] == "Upgrading").collect();
            assert!(upgrading.len() <= 1, "two nodes updating at once: {upgrading:?}");
            for node in &upgrading {
                let reason = node["reason"].as_str().unwrap_or_default();
                assert!(reason.contains(::gatehouse::VERSION) && reason.contains(NEW), "{reason}");
                upgraded.insert(node["name"].as_str().unwrap_or_default().to_owned());
            }
            let done = list.len() == 3
                && list.iter().all(|n| {
                    n["version"] == NEW && ["Online", "Limited"].contains(&n["status"].as_str().unwrap_or(""))
                });
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        assert_eq!(upgraded.len(), 3, "each node was seen Upgrading: {upgraded:?}");
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        feeder.join().unwrap()
    });
    assert!(jobs.len() >= 5, "jobs ran through the update: {}", jobs.len());

    // Every run of every job ran once: none lost (re-queued) and none repeated.
    for id in &jobs {
        let mut job = Value::Null;
        wait_until(Duration::from_secs(120), "the job to end", || {
            job = hub.admin(&["job", "show", id]);
            ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or(""))
        });
        assert_eq!(job["state"], "succeeded", "{job}");
        let runs = job["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 5, "{job}");
        for run in runs {
            assert_eq!(run["attempt"], 1, "a run went back to the queue: {run}");
            assert!(run["attempts"].as_array().is_none_or(|a| a.len() <= 1), "{run}");
        }
    }
    for (node, exe) in nodes.iter().zip(&exes) {
        let record = update_record(node);
        assert_eq!(record["state"], "installed", "{record}");
        assert_eq!(record["to"], NEW);
        assert_eq!(std::fs::read(exe).unwrap(), std::fs::read(&newer).unwrap(), "the new binary is in place");
        let previous = exe.with_file_name("gatehouse.previous");
        assert_eq!(
            std::fs::metadata(&previous).unwrap().len(),
            std::fs::metadata(env!("CARGO_BIN_EXE_gatehouse")).unwrap().len(),
            "the previous binary is kept"
        );
        assert!(
            node_status(node)
                .contains(&format!("Last update: updated from {} to {NEW}", ::gatehouse::VERSION))
        );
    }
}

#[test]
fn a_release_that_cannot_start_is_rolled_back_and_the_node_comes_back_on_its_version() {
    let temp = tempfile::tempdir().unwrap();
    let (private, public) = keygen(&temp.path().join("keys"));
    let hub = Hub::start_with(&["--release-key", public.to_str().unwrap()]);
    let broken = temp.path().join("broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 1\n").unwrap();
    sign(&broken, &private);
    ok(&publish(&hub, &broken, "9.9.9"));

    let key = hub.create_gateway("solo", &[]);
    let mut node = Node::register(&key, "n1", &[]);
    let exe = binary_copy(&temp.path().join("bin"), None);
    let original = std::fs::read(&exe).unwrap();
    run_from(&mut node, &exe);
    wait_until(Duration::from_secs(30), "the update to be offered", || {
        node_status(&node).contains(&format!("update available: 9.9.9 (you run {})", ::gatehouse::VERSION))
    });

    let update = gatehouse(node.home.path(), &["node", "update"], &[]);
    let said = String::from_utf8_lossy(&update.stderr);
    assert_eq!(update.status.code(), Some(1), "{said}");
    assert!(said.contains("was rolled back (version 9.9.9 stopped before it came up)"), "{said}");

    // The previous binary is back in place, running, and reaching the hub with its version.
    assert_eq!(std::fs::read(&exe).unwrap(), original);
    wait_until(Duration::from_secs(30), "the node back Online on its version", || {
        let list = hub.nodes("solo");
        list.len() == 1 && list[0]["status"] == "Online" && list[0]["version"] == ::gatehouse::VERSION
    });
    assert_eq!(update_record(&node)["state"], "rolled_back");
    // The rolled-back service was started by the watchdog, not by this test: stop it.
    ok(&gatehouse(node.home.path(), &["node", "stop"], &[]));
}
