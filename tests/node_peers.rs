//! Peer reachability, with real processes on loopback: nodes ping each other, and a node whose
//! peer port can't be reached (here: it listens elsewhere than the address it advertises, the
//! named fake `GATEHOUSE_FAKE_FIREWALL`) makes its peers Limited at the hub, with the reason;
//! a node whose peer port changed tells the hub, and its peers follow.

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
    // n3 advertises one address but listens on another: its peers can't reach it.
    let elsewhere = format!("127.0.0.1:{}", free_port());
    n3.run(&[("GATEHOUSE_FAKE_FIREWALL", &elsewhere)]);

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

#[test]
fn a_node_whose_peer_port_changed_is_reached_at_the_new_one() {
    let hub = Hub::start();
    let key = hub.create_gateway("moved", &[]);
    let _n1 = Node::start(&key, "n1", &[]);
    let mut n2 = Node::start(&key, "n2", &[]);
    let online = |hub: &Hub| hub.nodes("moved").iter().filter(|n| n["status"] == "Online").count() == 2;
    wait_until(Duration::from_secs(30), "both nodes Online", || online(&hub));

    n2.process.as_mut().unwrap().stop();
    let port = free_port().to_string();
    n2.command(&["node", "enable-remote-access", "--port", &port]);
    n2.run(&[]);
    let moved = format!("127.0.0.1:{port}");
    wait_until(Duration::from_secs(30), "the hub to learn n2's new address", || {
        hub.nodes("moved").iter().any(|n| n["name"] == "n2" && n["peer_address"] == moved.as_str())
    });
    // n1 pings n2 every 5 s at the address the hub gives it: both stay Online, none Limited.
    std::thread::sleep(Duration::from_secs(12));
    wait_until(Duration::from_secs(30), "both nodes Online at the new address", || online(&hub));
}
