//! Peer reachability, with real processes on loopback: nodes ping each other, and a node whose
//! peer port can't be reached (here: it listens elsewhere than the address it registered, as
//! behind a closed firewall) makes its peers Limited at the hub, with the reason.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, wait_until};
use common::process::free_port;
use std::time::Duration;

#[test]
fn a_peer_nobody_can_reach_makes_the_others_limited_with_the_reason() {
    let hub = Hub::start();
    let key = hub.create_gateway("reach", &[]);
    let _n1 = Node::start(&key, "n1", &[]);
    let _n2 = Node::start(&key, "n2", &[]);
    let mut n3 = Node::register(&key, "n3", &[]);
    // n3 registered one address but listens on another: its peers can't reach it.
    let settings_path = n3.home.path().join("node.toml");
    let settings = std::fs::read_to_string(&settings_path).unwrap();
    let elsewhere = format!("127.0.0.1:{}", free_port());
    std::fs::write(&settings_path, settings.replace(&n3.peer_address, &elsewhere)).unwrap();
    n3.run(&[]);

    wait_until(Duration::from_secs(40), "n1 and n2 to report n3 unreachable", || {
        let nodes = hub.nodes("reach");
        ["n1", "n2"].iter().all(|name| {
            nodes.iter().any(|n| {
                n["name"] == *name
                    && n["status"] == "Limited"
                    && n["reason"].as_str().is_some_and(|r| r.contains("peer port unreachable for n3"))
            })
        })
    });
    let gateway = hub.admin(&["hub", "gateway", "show", "reach"]);
    assert_eq!(gateway["status"], "Limited");
}
