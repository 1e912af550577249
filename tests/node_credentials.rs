//! Credentials across a gateway, with real processes on loopback: a credential set on one node
//! reaches the others over the peer channel, a node started late catches up, the value never
//! reaches the hub (its database file doesn't contain it) nor any node's files in clear.
//! Sets merge per credential: edits on two nodes both survive, a version far ahead of the
//! clock is refused with a log line, and the hub names the node behind on a credential.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, gatehouse, wait_until};
use std::collections::BTreeMap;
use std::time::Duration;

const VALUE: &str = "s3cr3t-warehouse-password";

fn names(node: &Node) -> String {
    String::from_utf8_lossy(&gatehouse(node.home.path(), &["node", "credential", "list"], &[]).stdout)
        .into_owned()
}

/// What `credential list` shows of the credentials a node holds with a value: name → the rest
/// of its line (version and the node it was set on).
fn held(node: &Node) -> BTreeMap<String, String> {
    names(node)
        .lines()
        .filter(|line| line.contains("(set"))
        .filter_map(|line| line.split_once('\t'))
        .map(|(name, rest)| (name.to_owned(), rest.to_owned()))
        .collect()
}

fn gateway_view(hub: &Hub) -> serde_json::Value {
    hub.admin(&["hub", "gateway", "show", "creds"])
}

/// The gateway view's entry for one credential.
fn credential(view: &serde_json::Value, name: &str) -> serde_json::Value {
    view["credentials"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap_or_default()
}

fn unix_millis() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis())
        .unwrap()
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

#[test]
fn edits_on_two_nodes_both_survive_and_a_node_that_was_away_shows_behind_until_it_catches_up() {
    let hub = Hub::start();
    let key = hub.create_gateway("creds", &[]);
    let mut n1 = Node::register(&key, "n1", &[]);
    let mut n2 = Node::register(&key, "n2", &[]);
    let mut n3 = Node::start(&key, "n3", &[]);
    // Edits neither node has seen the other's of: different names, and the same name (n2's
    // edit is the later one).
    n1.set_credential("warehouse", "w-from-n1");
    n1.set_credential("shared", "s-from-n1");
    n2.set_credential("lake", "l-from-n2");
    n2.set_credential("shared", "s-from-n2");
    let shared_version = held(&n2)["shared"].clone();
    n1.run(&[]);
    n2.run(&[]);
    for node in [&n1, &n2, &n3] {
        wait_until(Duration::from_secs(30), &format!("every edit on {}", node.name), || {
            let held = held(node);
            held.contains_key("warehouse")
                && held.contains_key("lake")
                && held.get("shared") == Some(&shared_version)
        });
    }
    assert!(shared_version.contains("on n2"), "{shared_version}");
    wait_until(Duration::from_secs(30), "the hub to see the gateway in sync", || {
        let view = gateway_view(&hub);
        view["credentials_in_sync"] == true && view["credentials"].as_array().is_some_and(|c| c.len() == 3)
    });

    // A node away while a credential is deleted is named behind on it until it catches up.
    n3.process.take().unwrap().stop();
    n1.command(&["node", "credential", "delete", "warehouse"]);
    wait_until(Duration::from_secs(30), "the deletion to reach n2", || !held(&n2).contains_key("warehouse"));
    wait_until(Duration::from_secs(30), "the hub to name n3 behind on warehouse", || {
        let view = gateway_view(&hub);
        let warehouse = credential(&view, "warehouse");
        view["credentials_in_sync"] == false
            && warehouse["deleted"] == true
            && warehouse["nodes_behind"] == serde_json::json!(["n3"])
            && warehouse["nodes_current"] == serde_json::json!(["n1", "n2"])
    });
    assert!(held(&n3).contains_key("warehouse"));
    n3.run(&[]);
    wait_until(Duration::from_secs(30), "n3 to catch up", || !held(&n3).contains_key("warehouse"));
    wait_until(Duration::from_secs(30), "the hub to see n3 caught up", || {
        let view = gateway_view(&hub);
        let warehouse = credential(&view, "warehouse");
        view["credentials_in_sync"] == true && warehouse["nodes_behind"] == serde_json::json!([])
    });
    assert!(names(&n3).contains("warehouse\t"), "the deletion is listed: {}", names(&n3));
}

#[test]
fn a_version_far_ahead_of_the_clock_is_refused_with_a_log_line_and_the_rest_syncs() {
    use gatehouse::node::store::{Credential, Store};
    let hub = Hub::start();
    let key = hub.create_gateway("creds", &[]);
    let mut ahead = Node::register(&key, "ahead", &[]);
    let store = Store::new(ahead.home.path());
    let mut secrets = store.secrets().unwrap();
    let years = 3 * 365 * 24 * 3600 * 1000;
    let entry =
        |version, value: &str| Credential { version, origin: "ahead".into(), value: Some(value.into()) };
    secrets.credentials.insert("frozen".into(), entry(unix_millis() + years, "frozen-value"));
    secrets.credentials.insert("fine".into(), entry(unix_millis(), "fine-value"));
    store.save_secrets(&secrets).unwrap();
    ahead.run(&[]);
    let n1 = Node::start(&key, "n1", &[]);
    let n2 = Node::start(&key, "n2", &[]);

    for node in [&n1, &n2] {
        wait_until(Duration::from_secs(30), &format!("{} to take the credential in time", node.name), || {
            held(node).contains_key("fine")
        });
        let refused = |node: &Node| {
            let log = node.process.as_ref().unwrap().stderr();
            log.lines()
                .filter(|l| l.contains("WARN") && l.contains("refused credential \"frozen\" from ahead"))
                .count()
        };
        wait_until(Duration::from_secs(30), "the refusal in the log", || refused(node) > 0);
        assert!(!held(node).contains_key("frozen"), "{} took a version years ahead", node.name);
        assert!(!node.process.as_ref().unwrap().stderr().contains("frozen-value"), "a value reached the log");
    }
    wait_until(Duration::from_secs(30), "the hub to name the node ahead of the clock", || {
        let view = gateway_view(&hub);
        let frozen = credential(&view, "frozen");
        let reason = view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "ahead")
            .map(|n| n["reason"].to_string());
        view["credentials_in_sync"] == false
            && credential(&view, "fine")["nodes_behind"] == serde_json::json!([])
            && frozen["nodes_ahead"] == serde_json::json!(["ahead"])
            && frozen["nodes_behind"] == serde_json::json!([])
            && reason.is_some_and(|r| r.contains("frozen is ahead of the clock"))
    });
    // Refused once, logged once, however many heartbeats (and sync rounds) go by.
    let beat = |view: &serde_json::Value| {
        view["nodes"].as_array().unwrap().iter().map(|n| n["last_heartbeat_ms"].as_i64().unwrap_or(0)).min()
    };
    let seen = beat(&gateway_view(&hub)).unwrap();
    wait_until(Duration::from_secs(30), "three more heartbeats of every node", || {
        beat(&gateway_view(&hub)).unwrap() > seen + 2_500
    });
    for node in [&n1, &n2] {
        let log = node.process.as_ref().unwrap().stderr();
        let lines = log.lines().filter(|l| l.contains("refused credential \"frozen\"")).count();
        assert_eq!(lines, 1, "{log}");
    }
}
