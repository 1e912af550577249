//! Run history, job filters, re-runs and the audit trail, against a real hub and nodes on
//! loopback: a run killed twice shows each attempt with its node and why it was tried again;
//! `job list` filters by state and time; `job rerun` runs again only what didn't succeed; every
//! administrative action lands in `hub audit`, and no entry carries a secret.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, gatehouse, gateway, submit, wait_over, wait_until};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The job's only run, as `job show --json` shows it.
fn only_run(hub: &Hub, job: &str) -> Value {
    hub.admin(&["job", "show", job])["runs"][0].clone()
}

/// Waits until the job's only run is running in `attempt`; returns the node that has it.
fn running_attempt(hub: &Hub, job: &str, attempt: u64) -> String {
    let mut node = String::new();
    wait_until(Duration::from_secs(60), &format!("attempt {attempt} running"), || {
        let run = only_run(hub, job);
        if run["state"] == "running" && run["attempt"] == attempt {
            run["node_name"].as_str().unwrap().clone_into(&mut node);
            true
        } else {
            false
        }
    });
    node
}

fn kill(nodes: &mut [Node], name: &str) {
    let node = nodes.iter_mut().find(|n| n.name == name).unwrap();
    node.process.as_mut().unwrap().kill9();
}

#[test]
fn a_run_killed_twice_shows_every_attempt_with_its_node_start_end_and_reason() {
    let (hub, mut nodes) = gateway(3);
    let job =
        submit(&hub, &json!({"name": "long", "activities": [{"kind": "sleep", "millis": 30000}]})).unwrap();

    let first = running_attempt(&hub, &job, 1);
    kill(&mut nodes, &first);
    let second = running_attempt(&hub, &job, 2);
    assert_ne!(first, second, "a killed node doesn't take the run back");
    kill(&mut nodes, &second);
    let third = running_attempt(&hub, &job, 3);
    hub.admin(&["job", "cancel", &job]);
    let over = wait_over(&hub, &job);

    let attempts = over["runs"][0]["attempts"].as_array().unwrap().clone();
    let summary: Vec<(u64, &str, &str, &str)> = attempts
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["node_name"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
                a["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let lost = |node: &str| format!("node {node} stopped sending heartbeats");
    assert_eq!(
        summary,
        [
            (1, first.as_str(), "lost", lost(&first).as_str()),
            (2, second.as_str(), "lost", lost(&second).as_str()),
            (3, third.as_str(), "cancelled", "the job was cancelled"),
        ],
        "{over:#}"
    );
    for a in &attempts {
        let (started, ended) = (a["started_ms"].as_i64().unwrap(), a["ended_ms"].as_i64().unwrap());
        assert!(started > 0 && ended >= started, "each attempt started, then ended: {a}");
    }
    assert!(
        attempts[0]["ended_ms"].as_i64().unwrap() <= attempts[1]["started_ms"].as_i64().unwrap(),
        "attempt 2 started after attempt 1 was given up: {attempts:?}"
    );

    // The human view lists the same attempts under the runs table.
    let output = gatehouse(
        Path::new("/nonexistent"),
        &["job", "show", &job, "--hub", &hub.url],
        &[("GATEHOUSE_ADMIN_TOKEN", &hub.token)],
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("Runs tried more than once"), "{text}");
    for (attempt, node, outcome) in
        [("1", &first, "lost"), ("2", &second, "lost"), ("3", &third, "cancelled")]
    {
        assert!(
            text.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.get(2) == Some(&attempt)
                    && cells.get(3) == Some(&node.as_str())
                    && cells.contains(&outcome)
            }),
            "attempt {attempt} on {node} ({outcome}) in:\n{text}"
        );
    }
}

#[test]
fn job_list_filters_by_state_and_time_and_a_rerun_runs_only_what_did_not_succeed() {
    let (hub, _nodes) = gateway(1);
    let source = tempfile::tempdir().unwrap();
    let sink = tempfile::tempdir().unwrap();
    let missing = source.path().join("later");
    // One activity succeeds, the copy fails: its folder isn't there yet.
    let spec = json!({"name": "mixed", "activities": [
        {"kind": "echo", "message": "hi", "partitions": 2},
        {"kind": "copy", "source": {"folder": missing}, "sink": {"url": format!("file://{}/", sink.path().display())}}
    ]});
    let failed = submit(&hub, &spec).unwrap();
    assert_eq!(wait_over(&hub, &failed)["state"], "failed");
    let ok =
        submit(&hub, &json!({"name": "fine", "activities": [{"kind": "echo", "message": "x"}]})).unwrap();
    assert_eq!(wait_over(&hub, &ok)["state"], "succeeded");

    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["job", "list", "lake"];
        all.extend(args);
        hub.admin(&all).as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(&["--state", "failed"]), std::slice::from_ref(&failed));
    assert_eq!(ids(&["--state", "succeeded"]), std::slice::from_ref(&ok));
    assert!(ids(&["--state", "running"]).is_empty());
    assert_eq!(ids(&["--since", "1h"]), [ok.clone(), failed.clone()], "newest first");
    assert!(ids(&["--until", "1h"]).is_empty(), "nothing is older than an hour");
    assert!(ids(&["--since", "2999-01-01T00:00:00Z"]).is_empty());
    let bad = gatehouse(
        Path::new("/nonexistent"),
        &["job", "list", "lake", "--since", "yesterday-ish", "--hub", &hub.url],
        &[("GATEHOUSE_ADMIN_TOKEN", &hub.token)],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // A succeeded job has nothing to re-run; the failed one re-runs only its copy.
    let refused = gatehouse(
        Path::new("/nonexistent"),
        &["job", "rerun", &ok, "--hub", &hub.url],
        &[("GATEHOUSE_ADMIN_TOKEN", &hub.token)],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("nothing to run again"));

    std::fs::create_dir(&missing).unwrap();
    std::fs::write(missing.join("a.txt"), b"now here").unwrap();
    let rerun = hub.admin(&["job", "rerun", &failed]);
    assert_eq!(rerun["rerun_of"], failed.as_str());
    let runs = rerun["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "only the failed copy runs again: {rerun:#}");
    assert_eq!(runs[0]["activity_index"], 1);
    let again = wait_over(&hub, rerun["id"].as_str().unwrap());
    assert_eq!(again["state"], "succeeded", "{again:#}");
    assert_eq!(std::fs::read(sink.path().join("a.txt")).unwrap(), b"now here");
    let old = hub.admin(&["job", "show", &failed]);
    assert_eq!(old["state"], "failed", "the old job's record stays as it was");
}

#[test]
fn every_administrative_action_is_in_the_audit_trail_without_a_secret() {
    let hub = Hub::start();
    let created = hub.admin(&["hub", "gateway", "create", "audited"]);
    let primary = created["keys"]["primary"].as_str().unwrap().to_owned();
    let secondary = created["keys"]["secondary"].as_str().unwrap().to_owned();
    hub.admin(&["hub", "gateway", "set", "audited", "--cpu-threshold", "70"]);
    let regenerated = hub.admin(&["hub", "key", "regenerate", "audited", "secondary"]);
    let new_key = regenerated["key"].as_str().unwrap().to_owned();
    let mut node = Node::start(&primary, "audit-n1", &[]);
    node.set_credential("warehouse", "reader:s3cr3t-value");
    wait_until(Duration::from_secs(30), "the credential's name at the hub", || {
        hub.nodes("audited").iter().any(|n| {
            n["metrics"]["credential_names"]
                .as_array()
                .is_some_and(|names| names.iter().any(|x| x == "warehouse"))
        })
    });
    let spec = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        spec.path(),
        json!({"name": "j1", "activities": [{"kind": "echo", "message": "x"}]}).to_string(),
    )
    .unwrap();
    let job = hub.admin(&["job", "submit", "audited", spec.path().to_str().unwrap()]);
    let job = job["id"].as_str().unwrap().to_owned();
    node.process.as_mut().unwrap().kill9();
    hub.admin(&["hub", "node", "remove", "audited", "audit-n1"]);
    hub.admin(&["hub", "gateway", "create", "other"]);

    let entries = hub.admin(&["hub", "audit", "--gateway", "audited"]);
    let actions: Vec<(&str, &str)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    let expected = [
        ("admin", "gateway.create"),
        ("admin", "settings.update"),
        ("admin", "key.regenerate"),
        ("node audit-n1", "node.register"),
        ("node audit-n1", "credentials.change"),
        ("admin", "node.remove"),
    ];
    let mut position = 0;
    for want in expected {
        let found = actions[position..].iter().position(|a| *a == want);
        assert!(found.is_some(), "{want:?} after entry {position} in {actions:?}");
        position += found.unwrap() + 1;
    }
    assert!(actions.contains(&("admin", "job.submit")), "{actions:?}");
    let text = entries.to_string();
    assert!(text.contains("cpu_threshold"), "the settings entry says what changed: {text}");
    assert!(text.contains("added warehouse"), "{text}");
    assert!(text.contains(&job), "the job entry names the job: {text}");
    for secret in [&primary, &secondary, &new_key, &hub.token, &"s3cr3t-value".to_owned()] {
        assert!(!text.contains(secret.as_str()), "the audit trail holds a secret: {text}");
    }
    let all = hub.admin(&["hub", "audit"]);
    assert!(all.to_string().contains("\"other\""), "without --gateway, every gateway's entries");
    assert!(!text.contains("\"other\""), "--gateway keeps to one gateway");

    // Deleting the gateway keeps its trail.
    hub.admin(&["hub", "gateway", "delete", "audited"]);
    let after = hub.admin(&["hub", "audit", "--gateway", "audited"]);
    let last = after.as_array().unwrap().last().unwrap();
    assert_eq!(last["action"], "gateway.delete", "{after:#}");
}
