//! Copies that survive what happens to real gateways, with real processes on loopback: a
//! worker or the dispatcher killed with SIGKILL mid-copy, the hub stopped for 5 s, a node that
//! joins mid-job, every node stopped and one brought back. After each, every object is at the
//! S3 server exactly once and byte-identical, no unfinished multipart upload is left, and
//! taken-over parts resumed. A gateway-wide bandwidth limit keeps the copies slow enough to be
//! interrupted (and is itself checked: a copy takes at least bytes ÷ limit). Bounded waits.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, wait_until};
use common::data::bytes;
use common::s3::SeaweedFs;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// 8 MiB parts: a "large" file has several.
const LARGE: usize = 26 << 20;

/// Source files: many small ones and a few large ones; returns them by relative path.
fn small_and_large() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..120 {
        files.insert(format!("small/{:02}/f{i:03}.csv", i % 6), bytes(i, 64 << 10));
    }
    for i in 0..3 {
        files.insert(format!("large/l{i}.bin"), bytes(1000 + i, LARGE));
    }
    files
}

/// Writes `files` under `root`.
fn write_source(root: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (path, content) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }
}

struct Setup {
    s3: SeaweedFs,
    hub: Hub,
    nodes: Vec<Node>,
    source: tempfile::TempDir,
    expected: BTreeMap<String, Vec<u8>>,
}

/// A hub (on a fixed address, so it can restart), a gateway `lake` with `distribute` and a
/// bandwidth limit of `megabytes` a second (the setting is in Mbit/s: 8 per MB/s), `count`
/// nodes holding the S3 credential, and the source.
fn setup(count: usize, megabytes: u32) -> Setup {
    setup_with(count, megabytes, small_and_large(), None)
}

/// [`setup`] with the source `files`, and each node taking at most `runs` runs at once when
/// given.
fn setup_with(count: usize, megabytes: u32, files: BTreeMap<String, Vec<u8>>, runs: Option<u32>) -> Setup {
    let s3 = SeaweedFs::start();
    let hub = Hub::start();
    let key = hub.create_gateway("lake", &["--policy", "distribute"]);
    hub.admin(&["hub", "gateway", "set", "lake", "--bandwidth-limit-mbps", &(megabytes * 8).to_string()]);
    let nodes: Vec<Node> = (1..=count)
        .map(|i| {
            let mut node = Node::register(&key, &format!("n{i}"), &[]);
            if let Some(runs) = runs {
                node.command(&["node", "set-concurrency", &runs.to_string()]);
            }
            node.run(&[]);
            node
        })
        .collect();
    nodes[0].set_credential("lake", &s3.credential());
    wait_until(Duration::from_secs(60), "every node Online and holding the credential", || {
        let list = hub.nodes("lake");
        list.len() == count
            && list.iter().all(|n| {
                n["status"] == "Online" && n["metrics"]["credential_names"] == serde_json::json!(["lake"])
            })
            && list.iter().filter(|n| n["role"] == "dispatcher").count() == 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    let source = tempfile::tempdir().unwrap();
    write_source(source.path(), &files);
    Setup { s3, hub, nodes, source, expected: files }
}

impl Setup {
    fn submit(&self) -> String {
        let spec = serde_json::json!({ "name": "nightly", "activities": [{
            "kind": "copy",
            "source": { "folder": self.source.path() },
            "sink": { "url": format!("s3://{}/exports/", self.s3.bucket()), "endpoint": self.s3.endpoint(),
                      "region": self.s3.region(), "credential": "lake" },
        }]});
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), spec.to_string()).unwrap();
        self.hub.admin(&["job", "submit", "lake", file.path().to_str().unwrap()])["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Prints the nodes' log lines that contain any of `words`, for a failure's message.
    fn print_logs(&self, words: &[&str]) {
        for node in &self.nodes {
            for entry in std::fs::read_dir(node.home.path().join("logs")).unwrap().flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                for line in text.lines().filter(|l| words.iter().any(|w| l.contains(w))) {
                    eprintln!("{}: {line}", node.name);
                }
            }
        }
    }

    fn job(&self, id: &str) -> serde_json::Value {
        self.hub.admin(&["job", "show", id])
    }

    fn wait_succeeded(&self, id: &str) -> serde_json::Value {
        let mut job = serde_json::Value::Null;
        wait_until(Duration::from_secs(180), "the job to succeed", || {
            job = self.job(id);
            assert_ne!(job["state"], "failed", "{job:#}");
            job["state"] == "succeeded"
        });
        job
    }

    /// Waits until a part run is running on a node matching `pick` with some bytes done but
    /// not all; returns that node's name.
    fn wait_mid_copy(&self, id: &str, pick: impl Fn(&str) -> bool) -> String {
        let mut name = String::new();
        wait_until(Duration::from_secs(60), "a part run mid-copy", || {
            let job = self.job(id);
            job["runs"].as_array().unwrap().iter().any(|run| {
                let done = run["progress"]["bytes_done"].as_u64().unwrap_or(0);
                let total = run["progress"]["bytes_total"].as_u64().unwrap_or(0);
                let node = run["node_name"].as_str().unwrap_or("");
                let mid = run["state"] == "running"
                    && done > 0
                    && done < total
                    && total >= LARGE as u64
                    && pick(node);
                if mid {
                    node.clone_into(&mut name);
                }
                mid
            })
        });
        name
    }

    fn dispatcher(&self) -> String {
        let nodes = self.hub.nodes("lake");
        nodes.iter().find(|n| n["role"] == "dispatcher").unwrap()["name"].as_str().unwrap().to_owned()
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// Every object exactly once, byte-identical, nothing else, no unfinished upload.
    fn assert_sink_is_exact(&self) {
        let objects: Vec<String> = self.s3.list_objects("exports/").into_iter().map(|(k, _)| k).collect();
        let expected: Vec<String> = self.expected.keys().map(|k| format!("exports/{k}")).collect();
        assert_eq!(objects, expected, "every file once, nothing else");
        for (path, bytes) in &self.expected {
            assert!(self.s3.get_object(&format!("exports/{path}")) == *bytes, "{path} byte for byte");
        }
        assert!(self.s3.list_multipart_uploads("").is_empty(), "no unfinished multipart upload");
    }
}

/// The runs that needed more than one attempt, with what their last attempt sent and the part's size.
fn taken_over(job: &serde_json::Value) -> Vec<(u64, u64)> {
    job["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["partition"] != 0 && r["attempt"].as_u64().unwrap_or(1) > 1)
        .map(|r| (r["result"]["bytes_sent"].as_u64().unwrap(), r["result"]["bytes"].as_u64().unwrap()))
        .collect()
}

#[test]
fn a_worker_killed_mid_copy_loses_and_duplicates_nothing_and_its_parts_resume() {
    kill_mid_copy(false);
}

#[test]
fn the_dispatcher_killed_mid_copy_loses_and_duplicates_nothing_and_its_parts_resume() {
    kill_mid_copy(true);
}

/// Kills with SIGKILL the dispatcher, or another node, while it copies a large part of a
/// 3-node copy; the job then succeeds with the sink exact and a taken-over part resumed.
fn kill_mid_copy(the_dispatcher: bool) {
    // One run per node: the three large parts, first in the queue, go to three nodes, so the
    // dispatcher and the others each copy one (with room for more, the random policy could
    // give one node all three and leave the other kind with no large part to kill).
    let mut setup = setup_with(3, 12, small_and_large(), Some(1));
    let id = setup.submit();
    let dispatcher = setup.dispatcher();
    let victim = setup.wait_mid_copy(&id, |node| (node == dispatcher) == the_dispatcher);
    setup.node(&victim).process.as_mut().unwrap().kill9();

    let job = setup.wait_succeeded(&id);
    setup.assert_sink_is_exact();
    let resumed = taken_over(&job);
    assert!(!resumed.is_empty(), "the killed node's runs were taken over: {job:#}");
    assert!(
        resumed.iter().any(|(sent, size)| sent < size),
        "a taken-over part sent less than its size again: {resumed:?}"
    );
}

#[test]
fn the_hub_stopped_for_five_seconds_costs_no_work() {
    let mut setup = setup(2, 10);
    let id = setup.submit();
    setup.wait_mid_copy(&id, |_| true);
    setup.hub.restart(Duration::from_secs(5));

    let job = setup.wait_succeeded(&id);
    setup.assert_sink_is_exact();
    let retried: Vec<&serde_json::Value> =
        job["runs"].as_array().unwrap().iter().filter(|r| r["attempt"].as_u64() != Some(1)).collect();
    if !retried.is_empty() {
        setup.print_logs(&["run", "dispatcher", "lease", "hub"]);
    }
    assert!(retried.is_empty(), "no run needed a second attempt: {retried:#?}");
}

#[test]
fn a_node_that_starts_mid_job_takes_parts_and_a_job_waits_for_any_node_to_come_back() {
    let mut setup = setup(1, 6);
    let key_node = setup.hub.admin(&["hub", "key", "regenerate", "lake", "secondary"]);
    let key = key_node["key"].as_str().unwrap().to_owned();
    let id = setup.submit();
    setup.wait_mid_copy(&id, |_| true);
    let late = Node::start(&key, "late", &[]);
    setup.nodes.push(late);

    // Everybody stops; one comes back; the job goes on from where it was.
    wait_until(Duration::from_secs(60), "the late node to take a part", || {
        setup.job(&id)["runs"].as_array().unwrap().iter().any(|r| r["node_name"] == "late")
    });
    for node in &mut setup.nodes {
        node.process.as_mut().unwrap().stop();
    }
    std::thread::sleep(Duration::from_secs(4));
    let state = setup.job(&id)["state"].clone();
    assert_ne!(state, "succeeded", "the job was still under way when every node stopped");
    setup.nodes[0].run(&[]);

    setup.wait_succeeded(&id);
    setup.assert_sink_is_exact();
}

#[test]
fn a_copy_under_a_bandwidth_limit_takes_at_least_bytes_over_the_limit() {
    let setup = setup(2, 20);
    let total: usize = setup.expected.values().map(Vec::len).sum();
    let started = Instant::now();
    let id = setup.submit();
    setup.wait_succeeded(&id);
    let took = started.elapsed();
    setup.assert_sink_is_exact();
    #[allow(clippy::cast_precision_loss, reason = "a lower bound in seconds")]
    let floor = Duration::from_secs_f64(total as f64 / 20e6);
    // Lower bound only, less the limiter's burst allowance per node: timing on a shared machine
    // says nothing about an upper one.
    assert!(
        took + Duration::from_millis(500) >= floor,
        "{took:?} for {total} bytes at 20 MB/s (at least {floor:?})"
    );
}

#[test]
fn a_cancelled_copy_stops_aborts_its_uploads_and_leaves_nothing_partial() {
    let setup = setup(2, 8);
    let id = setup.submit();
    setup.wait_mid_copy(&id, |_| true);
    setup.hub.admin(&["job", "cancel", &id]);

    let mut last = (serde_json::Value::Null, 0);
    let stopped = (0..300).any(|_| {
        let job = setup.job(&id);
        let uploads = setup.s3.list_multipart_uploads("").len();
        let done = job["state"] == "cancelled" && uploads == 0;
        last = (job, uploads);
        done || {
            std::thread::sleep(Duration::from_millis(200));
            false
        }
    });
    if !stopped {
        setup.print_logs(&["upload", "cancel", "abort"]);
    }
    assert!(stopped, "the runs didn't stop within 60 s: {} unfinished uploads, job {:#}", last.1, last.0);
    // Runs that were copying noticed within a second or two; give them that, then look again.
    std::thread::sleep(Duration::from_secs(3));
    assert!(setup.s3.list_multipart_uploads("").is_empty(), "no unfinished multipart upload");
    let objects = setup.s3.list_objects("exports/");
    assert!(objects.len() < setup.expected.len(), "the copy stopped before the end");
    for (key, _) in objects {
        let path = key.strip_prefix("exports/").unwrap();
        assert!(setup.s3.get_object(&key) == setup.expected[path], "{key} is whole, not partial");
    }
}

/// The leak the checkpoint can't see: a worker that created a multipart upload and was killed
/// before the hub heard of it (the hub was away, so the checkpoint naming the upload never
/// landed). The attempt that takes over must find that upload at the server and abort it.
#[test]
fn an_upload_the_hub_never_heard_of_is_aborted_by_the_attempt_that_takes_over() {
    let files: BTreeMap<String, Vec<u8>> = [("big/one.bin".to_owned(), bytes(7, LARGE))].into();
    let mut setup = setup_with(2, 0, files, None);
    // The S3 server paused: the part's run starts and then waits on its first request.
    let weed = setup.s3.pid().to_string();
    signal(&weed, "STOP");
    let id = setup.submit();
    let mut worker = String::new();
    wait_until(Duration::from_secs(60), "the part's run to start on a node", || {
        let job = setup.job(&id);
        job["runs"].as_array().unwrap().iter().any(|run| {
            let started = run["partition"] != 0 && run["state"] == "running";
            if started {
                run["node_name"].as_str().unwrap_or("").clone_into(&mut worker);
            }
            started
        })
    });
    // The hub away, the server back: the worker creates its upload and can't checkpoint it.
    setup.hub.stop();
    signal(&weed, "CONT");
    wait_until(Duration::from_secs(60), "the worker to start its multipart upload", || {
        !setup.s3.list_multipart_uploads("").is_empty()
    });
    setup.node(&worker).process.as_mut().unwrap().kill9();
    setup.hub.start_again();

    let job = setup.wait_succeeded(&id);
    setup.assert_sink_is_exact();
    assert!(!taken_over(&job).is_empty(), "another attempt finished the part: {job:#}");
}

fn signal(pid: &str, signal: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{signal}"), pid]).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}
