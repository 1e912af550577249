//! Credentials across a gateway, with real processes on loopback: a credential set on one node
//! reaches the others over the peer channel, a node started late catches up, the value never
//! reaches the hub (its database file doesn't contain it) nor any node's files in clear.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, gatehouse};
use std::time::Duration;

const VALUE: &str = "s3cr3t-warehouse-password";

fn names(node: &Node) -> String {
    String::from_utf8_lossy(&gatehouse(node.home.path(), &["node", "credential", "list"], &[]).stdout)
        .into_owned()
}

fn versions(hub: &Hub) -> Vec<u64> {
    hub.nodes("creds").iter().map(|n| n["metrics"]["credential_version"].as_u64().unwrap_or(0)).collect()
}

fn files_contain(dir: &std::path::Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().filter_map(Result::ok).any(|entry| {
        std::fs::read(entry.path())
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

#[test]
fn a_credential_set_on_one_node_reaches_every_node_and_never_the_hub() {
    let hub = Hub::start();
    let key = hub.create_gateway("creds", &[]);
    let n1 = Node::start(&key, "n1", &[]);
    let n2 = Node::start(&key, "n2", &[]);
    let mut n3 = Node::register(&key, "n3", &[]);
    common::cluster::wait_until(Duration::from_secs(30), "two nodes Online", || {
        hub.nodes("creds").iter().filter(|n| n["status"] == "Online").count() == 2
    });

    n1.set_credential("warehouse", VALUE);
    common::cluster::wait_until(Duration::from_secs(30), "n2 to have the credential", || {
        names(&n2).contains("warehouse")
    });
    common::cluster::wait_until(Duration::from_secs(30), "equal credential versions at the hub", || {
        let v: Vec<u64> = versions(&hub).into_iter().filter(|v| *v > 0).collect();
        v.len() == 2 && v[0] == v[1]
    });

    // A node started late catches up.
    assert!(!names(&n3).contains("warehouse"));
    n3.run(&[]);
    common::cluster::wait_until(Duration::from_secs(30), "the late node to catch up", || {
        names(&n3).contains("warehouse")
    });

    // A later change anywhere wins everywhere.
    n2.set_credential("lake", "another-secret");
    for node in [&n1, &n3] {
        common::cluster::wait_until(Duration::from_secs(30), "the second credential to spread", || {
            names(node).contains("lake")
        });
    }

    // The value is sealed on every node and unknown to the hub.
    for node in [&n1, &n2, &n3] {
        assert!(!files_contain(node.home.path(), VALUE), "{} keeps the credential in clear", node.name);
    }
    let hub_home = hub.home();
    assert!(!files_contain(hub_home, VALUE), "the hub's files contain the credential");
}
