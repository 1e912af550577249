//! Three real `gatehouse node run` processes and a real hub on loopback: one node becomes the
//! dispatcher and hands runs to all three over the peer channel; `distribute` spreads them,
//! `primary` fills the first node first; kill -9 of the dispatcher mid-job loses and
//! duplicates nothing; a node killed and started again at once gives back the run it had.
//! Every wait is bounded.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, wait_until};
use std::collections::BTreeMap;
use std::time::Duration;

/// A hub, a gateway with `policy`, and three registered, running nodes, all Online.
fn gateway_with_three_nodes(policy: &str) -> (Hub, Vec<Node>) {
    let hub = Hub::start();
    let key = hub.create_gateway("sales", &["--policy", policy]);
    let nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|name| Node::start(&key, name, &[])).collect();
    wait_until(Duration::from_secs(30), "all three nodes Online with one dispatcher", || {
        let list = hub.nodes("sales");
        list.len() == 3
            && list.iter().all(|n| n["status"] == "Online")
            && list.iter().filter(|n| n["role"] == "dispatcher").count() == 1
    });
    // The dispatcher learns its peers' room from its own next heartbeat's answer.
    std::thread::sleep(Duration::from_millis(1500));
    (hub, nodes)
}

/// Submits a job of `partitions` sleeps of `millis` each; returns its id.
fn submit(hub: &Hub, millis: u64, partitions: u32) -> String {
    let spec = serde_json::json!({ "name": "job", "activities": [{ "kind": "sleep", "millis": millis, "partitions": partitions }] });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    hub.admin(&["job", "submit", "sales", file.to_str().unwrap()])["id"].as_str().unwrap().to_owned()
}

/// Waits (bounded) until every run of the job succeeded; returns the job.
fn wait_succeeded(hub: &Hub, id: &str, limit: Duration) -> serde_json::Value {
    let mut job = serde_json::Value::Null;
    wait_until(limit, "every run of the job to succeed", || {
        job = hub.admin(&["job", "show", id]);
        job["state"] == "succeeded"
    });
    job
}

/// Runs a job to the end; returns it and how many runs each node ran.
fn run_job(
    hub: &Hub,
    millis: u64,
    partitions: u32,
    limit: Duration,
) -> (serde_json::Value, BTreeMap<String, usize>) {
    let job = wait_succeeded(hub, &submit(hub, millis, partitions), limit);
    let mut per_node = BTreeMap::new();
    for run in job["runs"].as_array().unwrap() {
        *per_node.entry(run["node_name"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    (job, per_node)
}

#[test]
fn distribute_spreads_runs_over_all_three_nodes() {
    let (hub, _nodes) = gateway_with_three_nodes("distribute");
    let (job, per_node) = run_job(&hub, 1000, 24, Duration::from_secs(60));
    assert_eq!(job["runs"].as_array().unwrap().len(), 24);
    assert_eq!(per_node.len(), 3, "runs didn't reach every node: {per_node:?}");
    for run in job["runs"].as_array().unwrap() {
        assert_eq!(run["attempt"], 1, "a run was retried without any failure: {run}");
    }
}

#[test]
fn primary_keeps_runs_on_the_first_node_until_it_is_full() {
    let (hub, _nodes) = gateway_with_three_nodes("primary");
    let (_, per_node) = run_job(&hub, 100, 2, Duration::from_secs(60));
    assert_eq!(per_node, BTreeMap::from([("n1".to_owned(), 2)]), "a small job left the first node");
}

#[test]
fn killing_the_dispatcher_loses_and_duplicates_no_run() {
    let (hub, mut nodes) = gateway_with_three_nodes("distribute");
    let id = submit(&hub, 1500, 18);

    // Wait until runs are in flight, then kill -9 the dispatcher.
    wait_until(Duration::from_secs(20), "runs to be running", || {
        let job = hub.admin(&["job", "show", &id]);
        job["runs"].as_array().unwrap().iter().any(|r| r["state"] == "running")
    });
    let list = hub.nodes("sales");
    let dispatcher =
        list.iter().find(|n| n["role"] == "dispatcher").unwrap()["name"].as_str().unwrap().to_owned();
    let victim = nodes.iter_mut().find(|n| n.name == dispatcher).unwrap();
    victim.process.as_mut().unwrap().kill9();

    wait_until(Duration::from_secs(20), "another node to become dispatcher", || {
        hub.nodes("sales").iter().any(|n| n["role"] == "dispatcher" && n["name"] != dispatcher.as_str())
    });
    let finished = wait_succeeded(&hub, &id, Duration::from_secs(90));
    let runs = finished["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 18);
    let mut ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 18, "a run appears twice");
    for run in runs {
        assert_eq!(run["state"], "succeeded");
    }
    assert!(
        runs.iter().any(|r| r["attempt"].as_u64().unwrap() > 1),
        "no run was re-queued from the killed node"
    );
}

#[test]
fn a_node_killed_and_started_again_before_it_goes_offline_gives_back_its_runs() {
    let hub = Hub::start();
    let key = hub.create_gateway("sales", &[]);
    let mut node = Node::start(&key, "n1", &[]);
    wait_until(Duration::from_secs(30), "n1 Online", || {
        hub.nodes("sales").iter().any(|n| n["status"] == "Online")
    });
    // A run far longer than the test waits, so it still runs when its node dies.
    let id = submit(&hub, 600_000, 1);
    wait_until(Duration::from_secs(20), "the run to be running", || {
        hub.admin(&["job", "show", &id])["runs"][0]["state"] == "running"
    });
    // Killed and back at once: the hub never sees it Offline, so no sweep gives the run back.
    node.process.as_mut().unwrap().kill9();
    node.run(&[]);
    let mut job = serde_json::Value::Null;
    wait_until(Duration::from_secs(30), "the run to go back to the queue and start again", || {
        job = hub.admin(&["job", "show", &id]);
        job["runs"][0]["attempt"] == 2 && job["runs"][0]["state"] == "running"
    });
    let attempts = job["runs"][0]["attempts"].as_array().unwrap();
    let lost = attempts.iter().find(|a| a["attempt"] == 1).unwrap();
    assert_eq!(lost["outcome"], "lost", "{job}");
    assert!(lost["reason"].as_str().unwrap().contains("n1 restarted"), "{job}");
    hub.admin(&["job", "cancel", &id]);
}

#[test]
fn a_run_the_dispatcher_held_while_the_hub_restarted_runs_once_and_is_not_lost() {
    // One node with room for one run: while it runs the first, the dispatcher (itself) holds
    // the next one claimed. The hub goes away for longer than the lease, so the node stops
    // being the dispatcher and lets that run go; back, it takes the lease again and must ask
    // for that run rather than leave it to the hand-off timeout and a second attempt.
    let mut hub = Hub::start();
    let key = hub.create_gateway("sales", &[]);
    let mut node = Node::register(&key, "n1", &[]);
    node.command(&["node", "set-concurrency", "1"]);
    node.run(&[]);
    wait_until(Duration::from_secs(30), "the node Online and the dispatcher", || {
        hub.nodes("sales").iter().any(|n| n["status"] == "Online" && n["role"] == "dispatcher")
    });
    let id = submit(&hub, 4000, 3);
    wait_until(Duration::from_secs(30), "one run running and one held by the dispatcher", || {
        let job = hub.admin(&["job", "show", &id]);
        let states: Vec<&str> =
            job["runs"].as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect();
        states.contains(&"running") && states.contains(&"dispatched")
    });
    hub.restart(Duration::from_secs(4));

    let job = wait_succeeded(&hub, &id, Duration::from_secs(60));
    let attempts: Vec<u64> =
        job["runs"].as_array().unwrap().iter().map(|r| r["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [1, 1, 1], "no run needed a second attempt: {job:#}");
}
