//! `/metrics` of a real hub with real nodes on loopback: refused without a token (and with a
//! revoked one), served with a metrics token or under `--public-metrics`, accepted by
//! `promtool check metrics` (Prometheus's own linter), and its values match the hub's API.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{gateway, submit, wait_over};
use common::http::{self, Auth};
use common::process::spawn_gatehouse;
use common::prometheus::{promtool_accepts, samples};
use serde_json::json;
use std::time::Duration;

/// `GET url` with an optional bearer token: (status, body).
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let answer = http::get(url, token.map_or(Auth::None, Auth::Bearer));
    (answer.status, answer.body)
}

#[test]
fn metrics_need_a_token_pass_promtool_and_match_the_api() {
    let (hub, _nodes) = gateway(2);
    let source = tempfile::tempdir().unwrap();
    let sink = tempfile::tempdir().unwrap();
    for (name, size) in [("a.bin", 1000_usize), ("b.bin", 234_567), ("sub/c.bin", 0)] {
        let path = source.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![7u8; size]).unwrap();
    }
    let job = submit(&hub, &json!({"name": "copy", "activities": [{"kind": "copy",
        "source": {"folder": source.path()}, "sink": {"url": format!("file://{}/", sink.path().display())}}]}))
    .unwrap();
    assert_eq!(wait_over(&hub, &job)["state"], "succeeded");

    let url = format!("{}/metrics", hub.url);
    let (status, body) = get(&url, None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("gatehouse hub token create --metrics"), "the refusal says what to do: {body}");
    let (status, _) = get(&url, Some("ghm_0123_notavalidsecretnotavalidsecretnotavalids"));
    assert_eq!(status, 401);

    let created = hub.admin(&["hub", "token", "create", "--metrics"]);
    let token = created["token"].as_str().unwrap().to_owned();
    let (status, text) = get(&url, Some(&token));
    assert_eq!(status, 200, "{text}");
    promtool_accepts(&text);
    let values = samples(&text);

    // The same figures as the API's.
    let nodes = hub.nodes("lake");
    assert_eq!(values[r#"gatehouse_gateway_nodes{gateway="lake"}"#], "2");
    assert_eq!(values[r#"gatehouse_gateway_status{gateway="lake",status="online"}"#], "1");
    for node in &nodes {
        let name = node["name"].as_str().unwrap();
        let labels = format!(r#"gateway="lake",node="{name}""#);
        assert_eq!(values[&format!("gatehouse_node_status{{{labels},status=\"online\"}}")], "1", "{text}");
        let role = node["role"].as_str().unwrap();
        assert_eq!(values[&format!("gatehouse_node_role{{{labels},role=\"{role}\"}}")], "1", "{text}");
        let limit = node["metrics"]["runs_limit"].to_string();
        assert_eq!(values[&format!("gatehouse_node_runs_limit{{{labels}}}")], limit);
        let total = node["metrics"]["total_memory_bytes"].to_string();
        assert_eq!(values[&format!("gatehouse_node_memory_total_bytes{{{labels}}}")], total);
        let cpu: f64 = values[&format!("gatehouse_node_cpu_ratio{{{labels}}}")].parse().unwrap();
        assert!((0.0..=1.0).contains(&cpu), "a ratio, not a percentage: {cpu}");
    }
    let shown = hub.admin(&["job", "show", &job]);
    let succeeded = shown["runs"].as_array().unwrap().iter().filter(|r| r["state"] == "succeeded").count();
    assert_eq!(values[r#"gatehouse_runs{gateway="lake",state="succeeded"}"#], succeeded.to_string());
    assert_eq!(values[r#"gatehouse_copied_bytes_total{gateway="lake"}"#], (1000 + 234_567).to_string());
    assert_eq!(values[r#"gatehouse_copied_files_total{gateway="lake"}"#], "3");
    assert_eq!(values[r#"gatehouse_run_retries_total{gateway="lake"}"#], "0");
    let claimed: usize =
        values[r#"gatehouse_dispatch_latency_seconds_count{gateway="lake"}"#].parse().unwrap();
    assert!(claimed >= succeeded, "every run went through a claim: {claimed} < {succeeded}");

    // The admin token works too; a revoked metrics token no longer does.
    assert_eq!(get(&url, Some(&hub.token)).0, 200);
    let id = created["id"].as_str().unwrap();
    hub.admin(&["hub", "token", "revoke", id]);
    let (status, body) = get(&url, Some(&token));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");
    let listed = hub.admin(&["hub", "token", "list"]);
    assert!(listed[0]["revoked_ms"].as_i64().is_some(), "{listed}");
    assert!(!listed.to_string().contains(&token), "a listing never shows the token");
}

#[test]
fn a_hub_serving_public_metrics_needs_no_token() {
    let home = tempfile::tempdir().unwrap();
    let mut process = spawn_gatehouse(
        &["hub", "serve", "--listen", "127.0.0.1:0", "--public-metrics"],
        &[("GATEHOUSE_HOME", home.path().to_str().unwrap())],
    );
    let url = process.read_line_matching("listening on ", Duration::from_secs(30));
    let (status, text) = get(&format!("{url}/metrics"), None);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("# TYPE gatehouse_dispatch_latency_seconds histogram"), "{text}");
    promtool_accepts(&text);
    // The rest of the API still needs its tokens.
    let (status, _) = get(&format!("{url}/api/v1/gateways"), None);
    assert_eq!(status, 401);
}
