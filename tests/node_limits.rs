//! The gateway's limits, with real processes on loopback: when every node is over the CPU or
//! memory threshold (a fake metrics source stands in for a busy machine) or at its
//! concurrency limit, a run waits out the queue timeout and fails with exactly the product's
//! sentence for that limit.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, wait_until};
use std::time::Duration;

const SENTENCE_START: &str =
    "The gateway you selected can't establish data source connections because it's exceeded the ";
const SENTENCE_END: &str =
    " set by your gateway admin. Try again later, or ask your gateway admin to increase the limit.";

/// Two nodes running with `env`, on a gateway created with `settings`.
fn gateway(settings: &[&str], env: &[(&str, &str)], before_run: &[&str]) -> (Hub, Vec<Node>) {
    let hub = Hub::start();
    let mut args = vec!["--queue-timeout-seconds", "2"];
    args.extend(settings);
    let key = hub.create_gateway("limited", &args);
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let mut node = Node::register(&key, name, &[]);
        if !before_run.is_empty() {
            node.command(before_run);
        }
        node.run(env);
        nodes.push(node);
    }
    wait_until(Duration::from_secs(30), "both nodes Online", || {
        let nodes = hub.nodes("limited");
        nodes.len() == 2 && nodes.iter().all(|n| n["status"] == "Online")
    });
    // Let the dispatcher hear its peer's load at its next heartbeat.
    std::thread::sleep(Duration::from_millis(1500));
    (hub, nodes)
}

/// Submits `partitions` sleeps of `millis`, waits for the job to end, returns its runs.
fn run_job(hub: &Hub, millis: u64, partitions: u32) -> Vec<serde_json::Value> {
    let spec = serde_json::json!({ "name": "job", "activities": [{ "kind": "sleep", "millis": millis, "partitions": partitions }] });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let id =
        hub.admin(&["job", "submit", "limited", file.to_str().unwrap()])["id"].as_str().unwrap().to_owned();
    let mut job = serde_json::Value::Null;
    wait_until(Duration::from_secs(60), "the job to end", || {
        job = hub.admin(&["job", "show", &id]);
        job["state"] == "succeeded" || job["state"] == "failed"
    });
    job["runs"].as_array().unwrap().clone()
}

fn limit_sentence(limit: &str) -> String {
    format!("{SENTENCE_START}{limit}{SENTENCE_END}")
}

#[test]
fn every_node_over_the_cpu_threshold_fails_the_run_with_the_cpu_sentence() {
    let (hub, _nodes) =
        gateway(&["--cpu-threshold", "50"], &[("GATEHOUSE_FAKE_METRICS", "cpu=95,memory=10")], &[]);
    let runs = run_job(&hub, 100, 1);
    assert_eq!(runs[0]["state"], "failed");
    assert_eq!(runs[0]["error"], limit_sentence("CPU limit"));
}

#[test]
fn every_node_over_the_memory_threshold_fails_the_run_with_the_memory_sentence() {
    let (hub, _nodes) =
        gateway(&["--memory-threshold", "50"], &[("GATEHOUSE_FAKE_METRICS", "cpu=5,memory=90")], &[]);
    let runs = run_job(&hub, 100, 1);
    assert_eq!(runs[0]["state"], "failed");
    assert_eq!(runs[0]["error"], limit_sentence("memory limit"));
}

#[test]
fn a_node_under_the_thresholds_still_takes_runs() {
    let (hub, _nodes) = gateway(
        &["--cpu-threshold", "50", "--memory-threshold", "50"],
        &[("GATEHOUSE_FAKE_METRICS", "cpu=20,memory=20")],
        &[],
    );
    let runs = run_job(&hub, 100, 4);
    assert!(runs.iter().all(|r| r["state"] == "succeeded"), "{runs:?}");
}

#[test]
fn runs_beyond_every_node_s_concurrency_limit_fail_with_the_concurrency_sentence() {
    // Two nodes taking one run each: of four 6-second runs, two run and two can't start
    // within the 2-second queue timeout.
    let (hub, _nodes) = gateway(&[], &[], &["node", "set-concurrency", "1"]);
    let runs = run_job(&hub, 6000, 4);
    let succeeded = runs.iter().filter(|r| r["state"] == "succeeded").count();
    let failed: Vec<&serde_json::Value> = runs.iter().filter(|r| r["state"] == "failed").collect();
    assert_eq!(succeeded, 2, "{runs:?}");
    assert_eq!(failed.len(), 2, "{runs:?}");
    for run in failed {
        assert_eq!(run["error"], limit_sentence("concurrency limit"));
    }
}
