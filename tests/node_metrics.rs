//! A node's own `/metrics` on loopback, with a real hub and a real `node run`: `node
//! set-metrics` turns it on while the node runs (no restart), it passes `promtool check
//! metrics`, its figures are the ones `node status --json` and the hub show (the same lines as
//! the hub's `/metrics` where they overlap), `off` stops it, a non-loopback address or a port
//! another program holds is refused, and a port taken while the node starts costs a WARN, not
//! the service, which serves once the port is free.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Node, gateway, submit, wait_over, wait_until};
use common::http::{self, Auth};
use common::process::free_port;
use common::prometheus::{promtool_accepts, samples};
use serde_json::json;
use std::time::Duration;

/// `GET url` on loopback: the body of a 200, or why not (refused, another status).
fn scrape(url: &str) -> Result<String, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
        let response = client.get(url).send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| e.to_string())?;
        if status == 200 { Ok(body) } else { Err(format!("{status}: {body}")) }
    })
}

/// `gatehouse node set-metrics ADDR` for `node`: (succeeded, stdout + stderr).
fn set_metrics(node: &Node, address: &str) -> (bool, String) {
    let output = common::cluster::gatehouse(node.home.path(), &["node", "set-metrics", address], &[]);
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// A folder of three files (1000 + 234,567 + 0 bytes) copied to another folder through the
/// gateway, to completion.
fn copy_three_files(hub: &common::cluster::Hub) {
    let source = tempfile::tempdir().unwrap();
    let sink = tempfile::tempdir().unwrap();
    for (name, size) in [("a.bin", 1000_usize), ("b.bin", 234_567), ("sub/c.bin", 0)] {
        let path = source.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![7u8; size]).unwrap();
    }
    let job = submit(hub, &json!({"name": "copy", "activities": [{"kind": "copy",
        "source": {"folder": source.path()}, "sink": {"url": format!("file://{}/", sink.path().display())}}]}))
    .unwrap();
    assert_eq!(wait_over(hub, &job)["state"], "succeeded");
}

#[test]
fn a_node_serves_its_own_metrics_on_loopback_as_its_status_and_the_hub_show_them() {
    let (hub, nodes) = gateway(1);
    let node = &nodes[0];
    let address = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{address}/metrics");
    assert!(scrape(&url).is_err(), "nothing is served before it is asked for");

    // Turned on while the node runs: no restart.
    let (ok, said) = set_metrics(node, &address);
    assert!(ok, "{said}");
    assert!(said.contains(&format!("http://{address}/metrics")), "{said}");
    let toml = std::fs::read_to_string(node.home.path().join("node.toml")).unwrap();
    assert!(toml.contains(&format!("metrics_listen = \"{address}\"")), "{toml}");
    wait_until(Duration::from_secs(20), "the node to serve its metrics", || scrape(&url).is_ok());

    copy_three_files(&hub);
    node.set_credential("warehouse", "secret-value");
    let labels = r#"gateway="lake",node="n1""#;
    let mut text = String::new();
    wait_until(Duration::from_secs(20), "the copy and the credential in the node's figures", || {
        text = scrape(&url).unwrap();
        let values = samples(&text);
        values.get(&format!("gatehouse_node_copied_files_total{{{labels}}}")).is_some_and(|v| v == "3")
            && values.keys().any(|k| k.contains(r#"credential="warehouse""#))
    });
    promtool_accepts(&text);
    assert!(!text.contains("secret-value"), "never a credential's value");
    let values = samples(&text);
    let value = |name: &str| {
        values.get(&format!("{name}{{{labels}}}")).cloned().unwrap_or_else(|| panic!("{name}: {text}"))
    };
    assert_eq!(value("gatehouse_node_copied_bytes_total"), (1000 + 234_567).to_string());
    assert_eq!(value("gatehouse_node_run_retries_total"), "0");
    assert_eq!(value("gatehouse_node_hub_connected"), "1");
    assert_eq!(value("gatehouse_node_credentials_in_sync"), "1", "a gateway of one node is in sync");
    assert_eq!(value("gatehouse_node_update_available"), "0", "this hub offers no release");
    assert_eq!(values[&format!("gatehouse_node_status{{{labels},status=\"online\"}}")], "1", "{text}");
    assert_eq!(values[&format!("gatehouse_node_role{{{labels},role=\"dispatcher\"}}")], "1", "{text}");
    let cpu: f64 = value("gatehouse_node_cpu_ratio").parse().unwrap();
    assert!((0.0..=1.0).contains(&cpu), "a ratio, not a percentage: {cpu}");
    let available: u64 = value("gatehouse_node_memory_available_bytes").parse().unwrap();
    assert!(available > 0, "{text}");

    // The same figures as `node status --json`.
    let status: serde_json::Value =
        serde_json::from_slice(&node.command(&["node", "status", "--json"]).stdout).unwrap();
    let last = &status["last_status"];
    assert_eq!(value("gatehouse_node_runs_limit"), last["metrics"]["runs_limit"].to_string());
    assert_eq!(value("gatehouse_node_memory_total_bytes"), last["metrics"]["total_memory_bytes"].to_string());
    assert_eq!(value("gatehouse_node_credential_version"), last["metrics"]["credential_version"].to_string());
    assert_eq!(last["totals"]["copied_bytes"], 1000 + 234_567, "{last}");
    let stamp =
        last["metrics"]["credentials"].as_array().unwrap().iter().find(|c| c["name"] == "warehouse").unwrap();
    let version = &values[&format!("gatehouse_credential_version{{{labels},credential=\"warehouse\"}}")];
    assert_eq!(version, &stamp["version"].to_string());
    assert_eq!(status["registration"]["metrics_listen"], address.as_str());

    // The hub's API, and the hub's own /metrics: where they overlap, the same lines.
    let listed = &hub.nodes("lake")[0];
    assert_eq!(value("gatehouse_node_runs_limit"), listed["metrics"]["runs_limit"].to_string());
    let token = hub.admin(&["hub", "token", "create", "--metrics"])["token"].as_str().unwrap().to_owned();
    let answer = http::get(&format!("{}/metrics", hub.url), Auth::Bearer(&token));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let at_hub = samples(&answer.body);
    for name in ["gatehouse_node_runs_limit", "gatehouse_node_memory_total_bytes"] {
        let key = format!("{name}{{{labels}}}");
        assert_eq!(at_hub.get(&key), values.get(&key), "{key} at the hub and on the node");
    }
    let info = values.keys().find(|k| k.starts_with("gatehouse_node_info{")).unwrap();
    assert!(at_hub.contains_key(info), "the node's version line is the hub's too: {info}");
    assert_eq!(
        at_hub[r#"gatehouse_copied_bytes_total{gateway="lake"}"#],
        value("gatehouse_node_copied_bytes_total")
    );
    assert_eq!(
        at_hub[r#"gatehouse_copied_files_total{gateway="lake"}"#],
        value("gatehouse_node_copied_files_total")
    );

    // Off stops it, still without a restart.
    let (ok, said) = set_metrics(node, "off");
    assert!(ok, "{said}");
    wait_until(Duration::from_secs(20), "the node to stop serving its metrics", || scrape(&url).is_err());
    let toml = std::fs::read_to_string(node.home.path().join("node.toml")).unwrap();
    assert!(!toml.contains("metrics_listen"), "{toml}");
}

#[test]
fn only_a_free_loopback_address_is_taken_and_a_taken_port_costs_a_warning_not_the_node() {
    let (hub, mut nodes) = gateway(1);
    let node = &mut nodes[0];
    let path = node.home.path().join("node.toml");
    let toml = || std::fs::read_to_string(&path).unwrap();
    let before = toml();
    // Refused before anything binds it: these addresses are only parsed.
    for address in ["0.0.0.0:9464", "192.0.2.1:9464", "[::]:9464"] {
        let (ok, said) = set_metrics(node, address);
        assert!(!ok, "{address} was taken: {said}");
        assert!(said.contains("is not a loopback address"), "{said}");
        assert!(said.contains("127.0.0.1:9464"), "the refusal says what to use: {said}");
    }
    let (ok, said) = set_metrics(node, "localhost-ish");
    assert!(!ok && said.contains("is not an address and port"), "{said}");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    let (ok, said) = set_metrics(node, &taken);
    assert!(!ok, "{said}");
    assert!(said.contains("is another program using it"), "{said}");
    assert_eq!(toml(), before, "nothing was saved");

    // Free when set, taken when the node starts: it warns, runs on, and serves once it is free.
    let address = format!("127.0.0.1:{}", free_port());
    let (ok, said) = set_metrics(node, &address);
    assert!(ok, "{said}");
    node.process.as_mut().unwrap().stop();
    let squatter = std::net::TcpListener::bind(&address).unwrap();
    node.run(&[]);
    let process = node.process.as_ref().unwrap();
    wait_until(Duration::from_secs(20), "the warning about the taken port", || {
        process.stderr().contains("can't serve this node's metrics")
    });
    let log = process.stderr();
    let warning = log.lines().find(|l| l.contains("can't serve this node's metrics")).unwrap();
    assert!(warning.contains("WARN") && warning.contains("is another program using it"), "{warning}");
    wait_until(Duration::from_secs(20), "the node to reach the hub again without its metrics", || {
        let status: serde_json::Value =
            serde_json::from_slice(&node.command(&["node", "status", "--json"]).stdout).unwrap();
        status["running"] == true && status["last_status"]["hub_connected"] == true
    });
    assert_eq!(hub.nodes("lake")[0]["status"], "Online");
    drop(squatter);
    let url = format!("http://{address}/metrics");
    wait_until(Duration::from_secs(20), "the node to serve once the port is free", || scrape(&url).is_ok());
    drop(held);
}
