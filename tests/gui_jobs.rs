//! The Configuration Manager's Jobs tab against a real hub and a real node: the gateway's jobs
//! are fetched by the window's logic (not while drawing), and each run shows its node, attempt
//! and state; a node of another gateway sees none of them.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, wait_until};
use common::window::Window;
use gatehouse::gui::Tab;
use std::time::Duration;

#[test]
fn the_jobs_tab_lists_the_gateways_jobs_with_the_node_of_each_run() {
    let hub = Hub::start();
    let key = hub.create_gateway("sales", &[]);
    let node = Node::start(&key, "n1", &[]);
    wait_until(Duration::from_secs(30), "n1 Online", || {
        hub.nodes("sales").iter().any(|n| n["status"] == "Online")
    });
    let spec = serde_json::json!({ "name": "nightly-echo", "activities": [{ "kind": "echo", "message": "hi", "partitions": 2 }] });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), spec.to_string()).unwrap();
    let id = hub.admin(&["job", "submit", "sales", file.path().to_str().unwrap()])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(Duration::from_secs(30), "the job to succeed", || {
        hub.admin(&["job", "show", &id])["state"] == "succeeded"
    });

    // The window attaches to the running node and, on the Jobs tab, fetches the list.
    let mut window = Window::open_at(node.home.path(), Tab::Jobs);
    window.wait_for(
        "the jobs from the hub",
        Duration::from_secs(30),
        |app| matches!(&app.state.jobs, Some(Ok(jobs)) if !jobs.is_empty()),
    );
    window.harness.step();
    let jobs = window.harness.state().state.jobs.clone().unwrap().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name, "nightly-echo");
    assert!(window.shows("nightly-echo"), "the job is listed by name");
    assert!(window.shows("n1"), "each run shows the node that ran it");
    assert!(window.shows("succeeded"), "and its state");

    // Another gateway's node sees its own (empty) list only.
    let other_key = hub.create_gateway("other", &[]);
    let other = Node::register(&other_key, "o1", &[]);
    let store = gatehouse::node::store::Store::new(other.home.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let theirs = runtime.block_on(gatehouse::node::recent_jobs(&store, 20)).unwrap();
    assert!(theirs.is_empty(), "{theirs:?}");
}
