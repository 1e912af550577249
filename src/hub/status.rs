//! Node and gateway statuses, computed from what is stored (heartbeat times, metrics,
//! versions, thumbprints) and the clock. Pure functions: no I/O, easy to test.

use super::db::{GatewayRow, NodeRow};
use crate::protocol::{GatewayState, NodeState};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Duration;

/// One node's status with the reason for anything but `Online`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub state: NodeState,
    pub reason: Option<String>,
}

/// A gateway's status, its nodes' statuses (same order), and its version.
#[derive(Debug, Clone)]
pub struct GatewayStatus {
    pub state: GatewayState,
    pub reason: Option<String>,
    pub version: Option<String>,
    pub nodes: Vec<NodeStatus>,
}

/// Computes every status of one gateway at `now_ms`.
pub fn gateway_status(
    gateway: &GatewayRow,
    nodes: &[NodeRow],
    now_ms: i64,
    offline_after: Duration,
) -> GatewayStatus {
    let version = majority_version(nodes);
    let offline_after_ms = i64::try_from(offline_after.as_millis()).unwrap_or(i64::MAX);
    let online = |n: &NodeRow| n.last_heartbeat_ms.is_some_and(|t| now_ms - t <= offline_after_ms);
    let alive: Vec<&NodeRow> = nodes.iter().filter(|n| online(n)).collect();
    let majority_thumbprint = majority(alive.iter().map(|n| n.encryption_thumbprint.clone()));
    // Credentials flow from the dispatcher; without one, the majority is the reference.
    let reference_credentials = gateway
        .lease_node_id
        .as_ref()
        .and_then(|id| alive.iter().find(|n| &n.id == id))
        .map(|n| n.metrics.credential_version)
        .or_else(|| majority(alive.iter().map(|n| n.metrics.credential_version)));

    let statuses: Vec<NodeStatus> = nodes
        .iter()
        .map(|node| {
            if !online(node) {
                let reason = match node.last_heartbeat_ms {
                    None => {
                        "no heartbeat since it registered; is `gatehouse node run` running on it?".to_owned()
                    }
                    Some(t) => format!("no heartbeat for {} s", (now_ms - t).max(0) / 1000),
                };
                return status(NodeState::Offline, reason);
            }
            if node.metrics.upgrading {
                return status(NodeState::Upgrading, "installing a new version".to_owned());
            }
            let others: Vec<&str> =
                alive.iter().filter(|n| n.id != node.id).map(|n| n.name.as_str()).collect();
            if alive.len() > 1 && node.encryption_thumbprint != majority_thumbprint.clone().flatten() {
                return status(NodeState::Inactive, encryption_reason(node, majority_thumbprint.as_ref()));
            }
            let unreachable: Vec<&str> = others
                .iter()
                .copied()
                .filter(|name| node.metrics.unreachable_peers.iter().any(|p| p == name))
                .collect();
            if !others.is_empty() && unreachable.len() == others.len() {
                return status(
                    NodeState::Inactive,
                    format!("can't reach any other node ({})", others.join(", ")),
                );
            }
            let mut problems = Vec::new();
            if !unreachable.is_empty() {
                problems.push(format!("peer port unreachable for {}", unreachable.join(", ")));
            }
            if node.metrics.hub_errors > 0 {
                problems.push(format!("{} failed requests to the hub", node.metrics.hub_errors));
            }
            if reference_credentials.is_some_and(|v| v != node.metrics.credential_version) {
                problems.push("credentials out of sync".to_owned());
            }
            if let Some(v) = &version
                && v != &node.version
            {
                problems.push(format!("version {} differs from the gateway version {v}", node.version));
            }
            if problems.is_empty() {
                NodeStatus { state: NodeState::Online, reason: None }
            } else {
                status(NodeState::Limited, problems.join("; "))
            }
        })
        .collect();

    let online_count = statuses.iter().filter(|s| s.state == NodeState::Online).count();
    let (state, reason) = if nodes.is_empty() {
        (GatewayState::NeedsRegistration, Some("no nodes yet; register one with an auth key".to_owned()))
    } else if online_count == nodes.len() {
        (GatewayState::Online, None)
    } else if alive.is_empty() {
        (GatewayState::Offline, Some("no node is sending heartbeats".to_owned()))
    } else {
        let not_online: Vec<String> = nodes
            .iter()
            .zip(&statuses)
            .filter(|(_, s)| s.state != NodeState::Online)
            .map(|(n, s)| format!("{} is {:?}", n.name, s.state))
            .collect();
        (GatewayState::Limited, Some(not_online.join(", ")))
    };
    GatewayStatus { state, reason, version, nodes: statuses }
}

fn status(state: NodeState, reason: String) -> NodeStatus {
    NodeStatus { state, reason: Some(reason) }
}

fn encryption_reason(node: &NodeRow, majority: Option<&Option<String>>) -> String {
    match (node.encryption_thumbprint.is_some(), majority.is_some_and(Option::is_some)) {
        (true, true) => {
            "its certificate differs from the one the other nodes use; import the same certificate".to_owned()
        }
        (true, false) => {
            "it encrypts the peer channel but the other nodes don't; turn encryption off on it".to_owned()
        }
        (false, _) => {
            "the other nodes encrypt the peer channel but it doesn't; import their certificate".to_owned()
        }
    }
}

/// The most common value; ties go to the first seen.
fn majority<T: Eq + std::hash::Hash + Clone>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: HashMap<T, (usize, usize)> = HashMap::new();
    for (i, v) in values.enumerate() {
        counts.entry(v).or_insert((0, i)).0 += 1;
    }
    counts.into_iter().max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.1.1.cmp(&a.1.1))).map(|(v, _)| v)
}

/// The gateway version: the version most nodes run; a tie goes to the newer version.
pub fn majority_version(nodes: &[NodeRow]) -> Option<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for node in nodes {
        *counts.entry(node.version.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| compare_versions(a.0, b.0)))
        .map(|(v, _)| v.to_owned())
}

/// Compares dotted versions numerically (`1.10.0` > `1.9.3`); non-numeric parts as text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| -> Vec<(u64, String)> {
        v.split(['.', '-', '+']).map(|p| (p.parse::<u64>().unwrap_or(0), p.to_owned())).collect()
    };
    let (a, b) = (parts(a), parts(b));
    for i in 0..a.len().max(b.len()) {
        // A missing part counts as 0, so 1.2 == 1.2.0.
        let x = a.get(i).cloned().unwrap_or((0, "0".to_owned()));
        let y = b.get(i).cloned().unwrap_or((0, "0".to_owned()));
        match x.0.cmp(&y.0).then_with(|| x.1.cmp(&y.1)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}
