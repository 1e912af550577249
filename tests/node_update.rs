//! `node update` with real processes on 127.0.0.1: releases are published to a hub that
//! trusts one key (a wrong signature is refused), a three-node gateway under a stream of
//! small jobs updates one node at a time to "a newer build" and loses or repeats no run, and
//! a release that can't even start is rolled back. Under a supervisor (a stand-in for
//! systemd's `Restart=on-failure`, `FakeSystemd`) the release is staged in the data dir,
//! kept across restarts until a newer package comes, and rolled back by the restart.
//!
//! The automatic update window: a node whose window covers now (in the zone its `TZ` names)
//! updates itself to the published release; one whose window doesn't stays on its version
//! after the release was offered to it, until its window is moved over now while it runs.
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
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
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
    let hub = hub_with_broken_release(temp.path());

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

/// A POSIX TZ rule ten hours east of UTC (no zone file needed): far from UTC, so a node that
/// read UTC instead of its local time would get the window wrong.
const ZONE: &str = "GHT-10";
const ZONE_OFFSET_MINUTES: u32 = 600;

/// Minutes after midnight UTC now.
fn utc_minute() -> u32 {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    u32::try_from(seconds % 86_400 / 60).unwrap()
}

/// `FROM-TO` an hour either side of `minute` (after midnight), wrapping past midnight.
fn around(minute: u32) -> String {
    let at = |m: u32| format!("{:02}:{:02}", m % 1440 / 60, m % 60);
    format!("{}-{}", at(minute + 1440 - 60), at(minute + 60))
}

/// Starts `node run` for `node` from `exe` in [`ZONE`].
fn run_in_zone(node: &mut Node, exe: &Path) {
    let home = node.home.path().to_str().unwrap().to_owned();
    node.process = Some(spawn_binary(exe, &["node", "run"], &[("GATEHOUSE_HOME", &home), ("TZ", ZONE)]));
}

/// `node auto-update ARGS` in [`ZONE`]: what it printed.
fn auto_update(node: &Node, args: &[&str]) -> String {
    let mut all = vec!["node", "auto-update"];
    all.extend(args);
    ok(&gatehouse(node.home.path(), &all, &[("TZ", ZONE)]))
}

/// A hub trusting a new key, with 9.9.9 published, signed by it: a script that exits 1.
fn hub_with_broken_release(temp: &Path) -> Hub {
    let (private, public) = keygen(&temp.join("keys"));
    let hub = Hub::start_with(&["--release-key", public.to_str().unwrap()]);
    let broken = temp.join("broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 1\n").unwrap();
    sign(&broken, &private);
    ok(&publish(&hub, &broken, "9.9.9"));
    hub
}

/// A hub trusting a new key, with `NEW` published, signed by it.
fn hub_with_release(temp: &Path) -> (Hub, PathBuf) {
    let (private, public) = keygen(&temp.join("keys"));
    let hub = Hub::start_with(&["--release-key", public.to_str().unwrap()]);
    let newer = binary_copy(&temp.join("release"), Some(NEW));
    sign(&newer, &private);
    ok(&publish(&hub, &newer, NEW));
    (hub, newer)
}

/// Waits for `node` to come back at `NEW`, Online at the hub, with the update recorded.
fn wait_updated(hub: &Hub, gateway: &str, node: &Node, exe: &Path, newer: &Path) {
    wait_until(
        Duration::from_secs(120),
        "the node to update itself and come back at the new version",
        || {
            let list = hub.nodes(gateway);
            list.len() == 1
                && list[0]["version"] == NEW
                && list[0]["status"] == "Online"
                && update_record(node)["state"] == "installed"
        },
    );
    let record = update_record(node);
    assert_eq!((record["from"].as_str(), record["to"].as_str()), (Some(::gatehouse::VERSION), Some(NEW)));
    assert_eq!(std::fs::read(exe).unwrap(), std::fs::read(newer).unwrap(), "the new binary is in place");
    assert!(exe.with_file_name("gatehouse.previous").exists(), "the previous binary is kept");
    let status = node_status(node);
    assert!(
        status.contains(&format!("Last update: updated from {} to {NEW}", ::gatehouse::VERSION)),
        "{status}"
    );
}

#[test]
fn a_node_whose_update_window_covers_now_updates_itself_to_the_published_release() {
    let temp = tempfile::tempdir().unwrap();
    let (hub, newer) = hub_with_release(temp.path());
    let key = hub.create_gateway("nightly", &[]);
    let mut node = Node::register(&key, "n1", &[]);
    let window = around(utc_minute() + ZONE_OFFSET_MINUTES);
    let said = auto_update(&node, &["--window", &window, "--days", "all"]);
    assert!(
        said.contains("this node updates itself to a newer release the hub offers every day from"),
        "{said}"
    );
    assert!(said.contains("local time (now UTC+10:00)"), "the CLI reads TZ: {said}");
    let toml = std::fs::read_to_string(node.home.path().join("node.toml")).unwrap();
    assert!(toml.contains("[auto_update]") || toml.contains("auto_update"), "{toml}");
    assert!(auto_update(&node, &[]).starts_with("Auto-update: every day from"));

    let exe = binary_copy(&temp.path().join("bin"), None);
    run_in_zone(&mut node, &exe);
    wait_updated(&hub, "nightly", &node, &exe, &newer);
    // Nobody asked for it: the log says the window did.
    let logs = std::fs::read_dir(node.home.path().join("logs"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(logs.contains("inside the automatic update window"), "{logs}");
}

#[test]
fn a_node_whose_update_window_does_not_cover_now_stays_on_its_version_until_the_window_moves() {
    let temp = tempfile::tempdir().unwrap();
    let (hub, newer) = hub_with_release(temp.path());
    let key = hub.create_gateway("daytime", &[]);
    let mut node = Node::register(&key, "n1", &[]);
    // Now in UTC, ten hours away from now in the node's zone.
    auto_update(&node, &["--window", &around(utc_minute()), "--days", "all"]);
    let exe = binary_copy(&temp.path().join("bin"), None);
    let original = std::fs::read(&exe).unwrap();
    run_in_zone(&mut node, &exe);

    // The offer reached the service, which decided on it in the same heartbeat: no update
    // under way ("Update:", not "Updating:"), and none through the next heartbeats either.
    let offered = format!("Update:   update available: {NEW} (you run {})", ::gatehouse::VERSION);
    wait_until(Duration::from_secs(30), "the release to be offered to the node", || {
        node_status(&node).contains(&offered)
    });
    let beats = |node: &Node| -> (u64, Value) {
        let json: Value =
            serde_json::from_str(&ok(&gatehouse(node.home.path(), &["node", "status", "--json"], &[])))
                .unwrap();
        (
            json["last_status"]["last_heartbeat"].as_u64().unwrap_or(0),
            json["last_status"]["update_phase"].clone(),
        )
    };
    let (first, _) = beats(&node);
    wait_until(Duration::from_secs(30), "three more heartbeats", || {
        let (last, phase) = beats(&node);
        assert_eq!(phase, Value::Null, "an update started outside the window");
        last >= first + 3
    });
    let status = node_status(&node);
    assert!(status.contains(&offered), "{status}");
    assert!(status.contains("Auto-update: every day from") && status.contains("(now UTC+10:00)"), "{status}");
    assert_eq!(hub.nodes("daytime")[0]["version"], ::gatehouse::VERSION);
    assert_eq!(std::fs::read(&exe).unwrap(), original, "the binary was replaced");
    assert_eq!(update_record(&node), Value::Null, "an update was recorded");

    // Moved over now while the service runs: it follows node.toml, no restart.
    auto_update(&node, &["--window", &around(utc_minute() + ZONE_OFFSET_MINUTES)]);
    wait_updated(&hub, "daytime", &node, &exe, &newer);
}

#[test]
fn a_malformed_update_window_is_refused_with_a_sentence_and_nothing_is_saved() {
    let hub = Hub::start();
    let key = hub.create_gateway("strict", &[]);
    let node = Node::register(&key, "n1", &[]);
    let before = std::fs::read_to_string(node.home.path().join("node.toml")).unwrap();
    for (args, sentence) in [
        (vec!["--window", "2am-4am"], "\"2am\" is not a time of day; write HH:MM from 00:00 to 23:59"),
        (vec!["--window", "02:00"], "\"02:00\" is not an update window; write it as FROM-TO"),
        (vec!["--window", "03:00-03:00"], "starts and ends at the same time"),
        (vec!["--window", "02:00-04:00", "--days", "sat,caturday"], "\"caturday\" is not a day"),
    ] {
        let mut all = vec!["node", "auto-update"];
        all.extend(&args);
        let refused = gatehouse(node.home.path(), &all, &[]);
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{args:?} was accepted");
        assert!(said.contains(sentence) && said.contains("nothing was saved"), "{args:?}: {said}");
        assert_eq!(said.matches(sentence).count(), 1, "said twice: {said}");
    }
    assert_eq!(std::fs::read_to_string(node.home.path().join("node.toml")).unwrap(), before);
    let off = auto_update(&node, &["off"]);
    assert!(off.starts_with("automatic updates are off"), "{off}");
    let status = node_status(&node);
    assert!(
        status.contains("Auto-update: off (turn it on with: gatehouse node auto-update --window"),
        "{status}"
    );
}

/// The stand-in for systemd (there is none here), named as such: the package unit's
/// `Restart=on-failure`, restarting after 1 s. It runs `EXE node run` for a data dir with
/// `GATEHOUSE_FAKE_SYSTEMD` set (which tells the node that a supervisor restarts it) and starts
/// it again whenever it exits with a failure (a code other than 0, or a signal), until dropped,
/// when it stops it as `systemctl stop` does (SIGTERM, then wait).
struct FakeSystemd {
    stop: Arc<AtomicBool>,
    starts: Arc<AtomicUsize>,
    main_pid: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeSystemd {
    fn start(exe: &Path, home: &Path) -> FakeSystemd {
        let stop = Arc::new(AtomicBool::new(false));
        let (starts, main_pid) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU32::new(0)));
        let (exe, home) = (exe.to_owned(), home.to_owned());
        let (stopping, started, pid) = (Arc::clone(&stop), Arc::clone(&starts), Arc::clone(&main_pid));
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let mut child = Command::new(&exe)
                    .args(["node", "run"])
                    .env("GATEHOUSE_HOME", &home)
                    .env("GATEHOUSE_FAKE_SYSTEMD", "1")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                pid.store(child.id(), Ordering::Relaxed);
                started.fetch_add(1, Ordering::Relaxed);
                let status = loop {
                    if stopping.load(Ordering::Relaxed) {
                        signal(child.id(), "TERM");
                        let _ = child.wait();
                        return;
                    }
                    if let Some(status) = child.try_wait().unwrap() {
                        break status;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                };
                if status.success() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        FakeSystemd { stop, starts, main_pid, thread: Some(thread) }
    }

    fn starts(&self) -> usize {
        self.starts.load(Ordering::Relaxed)
    }

    /// The binary the unit's main process runs now (after any exec).
    fn running(&self) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{}/exe", self.main_pid.load(Ordering::Relaxed))).ok()
    }

    fn kill9(&self) {
        signal(self.main_pid.load(Ordering::Relaxed), "KILL");
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

/// The node is Online at the hub with `version`, its service's main process running `exe`.
fn wait_running(hub: &Hub, gateway: &str, systemd: &FakeSystemd, exe: &Path, version: &str) {
    wait_until(
        Duration::from_secs(60),
        &format!("the service to run {} at {version}", exe.display()),
        || {
            let list = hub.nodes(gateway);
            systemd.running().as_deref() == Some(exe)
                && list.len() == 1
                && list[0]["version"] == version
                && list[0]["status"] == "Online"
        },
    );
}

#[test]
fn under_a_supervisor_the_update_is_staged_in_the_data_dir_and_kept_across_restarts_until_a_newer_package() {
    let temp = tempfile::tempdir().unwrap();
    let (hub, newer) = hub_with_release(temp.path());
    let key = hub.create_gateway("svc", &[]);
    let node = Node::register(&key, "n1", &[]);
    let exe = binary_copy(&temp.path().join("usr-bin"), None);
    let original = std::fs::read(&exe).unwrap();
    let systemd = FakeSystemd::start(&exe, node.home.path());
    wait_until(Duration::from_secs(30), "the update to be offered", || {
        node_status(&node).contains(&format!("update available: {NEW}"))
    });

    let said = ok(&gatehouse(node.home.path(), &["node", "update"], &[]));
    assert!(said.contains(&format!("updated from {} to {NEW}", ::gatehouse::VERSION)), "{said}");
    let staged = node.home.path().join("releases").join(format!("gatehouse-{NEW}"));
    let record = update_record(&node);
    assert_eq!((&record["staged"], &record["supervised"]), (&json!(true), &json!(true)), "{record}");
    assert_eq!(record["exe"], staged.to_str().unwrap(), "{record}");
    assert_eq!(
        std::fs::read(&staged).unwrap(),
        std::fs::read(&newer).unwrap(),
        "the release is staged whole"
    );
    assert_eq!(std::fs::read(&exe).unwrap(), original, "the package's binary is left as it is");
    let mode = std::fs::metadata(node.home.path().join("releases")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the staged releases are the service user's alone");
    wait_running(&hub, "svc", &systemd, &staged, NEW);
    assert_eq!(systemd.starts(), 1, "the update went on in the same process");

    // A crash: the supervisor starts the package's binary, which goes on as the release.
    systemd.kill9();
    wait_until(Duration::from_secs(30), "the supervisor to restart the service", || systemd.starts() == 2);
    wait_running(&hub, "svc", &systemd, &staged, NEW);
    drop(systemd);

    // A package newer than the release runs as it is, and the staged release is left alone.
    let package = binary_copy(&temp.path().join("usr-bin-newer"), Some("9.5.0"));
    let systemd = FakeSystemd::start(&package, node.home.path());
    wait_running(&hub, "svc", &systemd, &package, "9.5.0");
}

#[test]
fn under_a_supervisor_a_staged_release_that_cannot_start_is_rolled_back_by_the_restart() {
    let temp = tempfile::tempdir().unwrap();
    let hub = hub_with_broken_release(temp.path());
    let key = hub.create_gateway("svc", &[]);
    let node = Node::register(&key, "n1", &[]);
    let exe = binary_copy(&temp.path().join("usr-bin"), None);
    let systemd = FakeSystemd::start(&exe, node.home.path());
    wait_until(Duration::from_secs(30), "the update to be offered", || {
        node_status(&node).contains("update available: 9.9.9")
    });

    let update = gatehouse(node.home.path(), &["node", "update"], &[]);
    let said = String::from_utf8_lossy(&update.stderr);
    assert_eq!(update.status.code(), Some(1), "{said}");
    assert!(said.contains("was rolled back (version 9.9.9 stopped before it came up)"), "{said}");
    assert_eq!(update_record(&node)["state"], "rolled_back");
    assert!(
        !node.home.path().join("releases/current.json").exists(),
        "a release that never came up is not kept"
    );
    wait_running(&hub, "svc", &systemd, &exe, ::gatehouse::VERSION);
    assert!(systemd.starts() >= 2, "the supervisor's restart rolled it back");

    // Started again, the package's binary stays itself.
    let starts = systemd.starts();
    systemd.kill9();
    wait_until(Duration::from_secs(30), "the supervisor to restart the service", || {
        systemd.starts() > starts
    });
    wait_running(&hub, "svc", &systemd, &exe, ::gatehouse::VERSION);
}
