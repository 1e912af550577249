//! Node and gateway statuses, computed from what is stored (heartbeat times, metrics,
//! versions, thumbprints) and the clock. Pure functions: no I/O, easy to test.

use super::db::{GatewayRow, NodeRow};
use crate::credential_sync::{self, NodeCredentials};
pub use crate::protocol::compare_versions;
use crate::protocol::{GatewayCredential, GatewayState, NodeState};
use std::collections::HashMap;
use std::time::Duration;

/// How long a node that was updating may stay silent and still be Upgrading rather than
/// Offline: it is restarting into the new version (or rolling back to the old one).
const RESTART_ALLOWANCE_MS: i64 = 120_000;

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
    /// Every online node reports the same credentials.
    pub credentials_in_sync: bool,
    /// Each credential with who holds its newest version and who is behind or ahead.
    pub credentials: Vec<GatewayCredential>,
}

/// Computes every status of one gateway at `now_ms` (the gateway's row is not needed since
/// credentials stopped following the dispatcher; kept so callers read the same).
#[allow(clippy::too_many_lines, reason = "one rule after another, in the order they apply")]
pub fn gateway_status(
    _gateway: &GatewayRow,
    nodes: &[NodeRow],
    now_ms: i64,
    offline_after: Duration,
) -> GatewayStatus {
    let version = majority_version(nodes);
    let offline_after_ms = i64::try_from(offline_after.as_millis()).unwrap_or(i64::MAX);
    let online = |n: &NodeRow| n.last_heartbeat_ms.is_some_and(|t| now_ms - t <= offline_after_ms);
    let alive: Vec<&NodeRow> = nodes.iter().filter(|n| online(n)).collect();
    let majority_thumbprint = majority(alive.iter().map(|n| n.encryption_thumbprint.clone()));
    // Per credential, the newest version an online node holds is the reference.
    let holders: Vec<NodeCredentials<'_>> = nodes
        .iter()
        .map(|n| NodeCredentials { name: &n.name, online: online(n), metrics: &n.metrics })
        .collect();
    let credentials = credential_sync::gateway_credentials(&holders, u64::try_from(now_ms).unwrap_or(0));
    let credentials_in_sync = credential_sync::in_sync(&holders, &credentials);

    let statuses: Vec<NodeStatus> = nodes
        .iter()
        .map(|node| {
            let silent_ms = node.last_heartbeat_ms.map(|t| (now_ms - t).max(0));
            if node.metrics.upgrading
                && let Some(silent_ms) =
                    silent_ms.filter(|&s| s > offline_after_ms && s <= RESTART_ALLOWANCE_MS)
            {
                // Restarting into the new version: heartbeats pause for a moment.
                let to = node.metrics.update_to.as_deref().unwrap_or("a new version");
                return status(
                    NodeState::Upgrading,
                    format!(
                        "updating from {} to {to}: restarting (no heartbeat for {} s)",
                        node.version,
                        silent_ms / 1000
                    ),
                );
            }
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
                let to = node.metrics.update_to.as_deref().unwrap_or("a new version");
                let step = match node.metrics.runs_running {
                    0 => "installing".to_owned(),
                    1 => "waiting for its 1 run to finish".to_owned(),
                    n => format!("waiting for its {n} runs to finish"),
                };
                return status(
                    NodeState::Upgrading,
                    format!("updating from {} to {to}: {step}", node.version),
                );
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
            if !credentials_in_sync
                && let Some(problem) = credential_sync::node_problem(&credentials, &node.name)
            {
                problems.push(problem);
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
    GatewayStatus { state, reason, version, nodes: statuses, credentials_in_sync, credentials }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{GatewaySettings, NodeMetrics};
    use std::cmp::Ordering;

    const NOW: i64 = 1_000_000;
    const OFFLINE_AFTER: Duration = Duration::from_secs(3);

    fn gateway() -> GatewayRow {
        GatewayRow {
            id: "g".into(),
            name: "sales".into(),
            settings: GatewaySettings::default(),
            encryption: false,
            primary_key_hash: String::new(),
            primary_key_hint: String::new(),
            primary_key_created_ms: 0,
            secondary_key_hash: String::new(),
            secondary_key_hint: String::new(),
            secondary_key_created_ms: 0,
            lease_node_id: None,
            lease_expires_ms: 0,
            lease_epoch: 0,
            created_ms: 0,
        }
    }

    fn node(name: &str, heartbeat_age_ms: Option<i64>) -> NodeRow {
        NodeRow {
            id: name.into(),
            gateway_id: "g".into(),
            name: name.into(),
            machine_id: name.into(),
            token_hash: String::new(),
            version: "1.0.0".into(),
            peer_address: String::new(),
            encryption_thumbprint: None,
            public_key: String::new(),
            registered_order: 0,
            registered_ms: 0,
            last_heartbeat_ms: heartbeat_age_ms.map(|age| NOW - age),
            metrics: NodeMetrics::default(),
        }
    }

    fn states(nodes: &[NodeRow]) -> (GatewayState, Vec<NodeState>) {
        let status = gateway_status(&gateway(), nodes, NOW, OFFLINE_AFTER);
        (status.state, status.nodes.iter().map(|n| n.state).collect())
    }

    #[test]
    fn a_gateway_without_nodes_needs_registration() {
        assert_eq!(states(&[]).0, GatewayState::NeedsRegistration);
    }

    #[test]
    fn a_node_is_offline_after_three_seconds_without_heartbeat() {
        assert_eq!(states(&[node("a", Some(3_000))]), (GatewayState::Online, vec![NodeState::Online]));
        assert_eq!(states(&[node("a", Some(3_001))]), (GatewayState::Offline, vec![NodeState::Offline]));
        assert_eq!(states(&[node("a", None)]).1, vec![NodeState::Offline]);
    }

    #[test]
    fn some_nodes_offline_make_the_gateway_limited() {
        let (gateway, nodes) = states(&[node("a", Some(0)), node("b", Some(10_000))]);
        assert_eq!(gateway, GatewayState::Limited);
        assert_eq!(nodes, vec![NodeState::Online, NodeState::Offline]);
    }

    #[test]
    fn a_node_off_the_majority_version_is_limited_with_its_reason() {
        let mut old = node("c", Some(0));
        old.version = "0.9.0".into();
        let status =
            gateway_status(&gateway(), &[node("a", Some(0)), node("b", Some(0)), old], NOW, OFFLINE_AFTER);
        assert_eq!(status.version.as_deref(), Some("1.0.0"));
        assert_eq!(status.nodes[2].state, NodeState::Limited);
        assert!(
            status.nodes[2]
                .reason
                .as_deref()
                .unwrap()
                .contains("0.9.0 differs from the gateway version 1.0.0")
        );
        assert_eq!(status.state, GatewayState::Limited);
    }

    #[test]
    fn a_node_with_another_certificate_is_inactive() {
        let mut a = node("a", Some(0));
        let mut b = node("b", Some(0));
        let mut c = node("c", Some(0));
        a.encryption_thumbprint = Some("AA".into());
        b.encryption_thumbprint = Some("AA".into());
        c.encryption_thumbprint = Some("BB".into());
        assert_eq!(states(&[a, b, c]).1, vec![NodeState::Online, NodeState::Online, NodeState::Inactive]);
    }

    #[test]
    fn unreachable_peers_limit_a_node_and_no_reachable_peer_makes_it_inactive() {
        let mut a = node("a", Some(0));
        a.metrics.unreachable_peers = vec!["b".into()];
        let (_, nodes) = states(&[a.clone(), node("b", Some(0)), node("c", Some(0))]);
        assert_eq!(nodes[0], NodeState::Limited);
        a.metrics.unreachable_peers = vec!["b".into(), "c".into()];
        let (_, nodes) = states(&[a, node("b", Some(0)), node("c", Some(0))]);
        assert_eq!(nodes[0], NodeState::Inactive);
    }

    #[test]
    fn a_node_behind_on_a_credential_is_limited_and_named_with_it() {
        let stamp = |name: &str, version| crate::protocol::CredentialStamp {
            name: name.into(),
            version,
            origin: "a".into(),
            deleted: false,
        };
        let holding = |stamps: Vec<crate::protocol::CredentialStamp>| NodeMetrics {
            credential_digest: Some(credential_sync::digest(&stamps)),
            credentials: stamps,
            ..NodeMetrics::default()
        };
        let now = u64::try_from(NOW).unwrap();
        let mut a = node("a", Some(0));
        a.metrics = holding(vec![stamp("db", now - 5), stamp("lake", now - 1)]);
        let mut b = node("b", Some(0));
        b.metrics = holding(vec![stamp("db", now - 5)]);
        // One far ahead of the clock is no reference: a is not behind on it.
        let mut c = node("c", Some(0));
        c.metrics = holding(vec![stamp("db", u64::MAX), stamp("lake", now - 1)]);
        let status = gateway_status(&gateway(), &[a.clone(), b, c], NOW, OFFLINE_AFTER);
        assert!(!status.credentials_in_sync);
        assert_eq!(status.nodes[0].state, NodeState::Online);
        assert_eq!(status.nodes[1].state, NodeState::Limited);
        assert_eq!(status.nodes[1].reason.as_deref(), Some("credentials out of sync: behind on lake"));
        assert!(status.nodes[2].reason.as_deref().unwrap().contains("db is ahead of the clock"));
        assert_eq!(status.credentials[1].nodes_behind, ["b"]);
        // Once every online node holds the same, all is in sync.
        let status = gateway_status(&gateway(), &[a.clone(), a], NOW, OFFLINE_AFTER);
        assert!(status.credentials_in_sync);
    }

    #[test]
    fn an_upgrading_node_says_so() {
        let mut a = node("a", Some(0));
        a.metrics.upgrading = true;
        assert_eq!(states(&[a]).1, vec![NodeState::Upgrading]);
    }

    #[test]
    fn an_updating_node_names_both_versions_and_stays_upgrading_while_it_restarts() {
        let updating = |age_ms: i64, runs: u32| {
            let mut a = node("a", Some(age_ms));
            a.metrics.upgrading = true;
            a.metrics.update_to = Some("1.1.0".into());
            a.metrics.runs_running = runs;
            let status = gateway_status(&gateway(), &[a, node("b", Some(0))], NOW, OFFLINE_AFTER);
            (status.state, status.nodes[0].clone())
        };
        let (_, draining) = updating(0, 2);
        assert_eq!(draining.state, NodeState::Upgrading);
        assert_eq!(
            draining.reason.as_deref(),
            Some("updating from 1.0.0 to 1.1.0: waiting for its 2 runs to finish")
        );
        let (gateway, restarting) = updating(10_000, 0);
        assert_eq!(restarting.state, NodeState::Upgrading);
        assert_eq!(
            restarting.reason.as_deref(),
            Some("updating from 1.0.0 to 1.1.0: restarting (no heartbeat for 10 s)")
        );
        assert_eq!(gateway, GatewayState::Limited, "the other node keeps the gateway up");
        assert_eq!(updating(RESTART_ALLOWANCE_MS + 1, 0).1.state, NodeState::Offline);
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Ordering::Greater);
        assert_eq!(compare_versions("1.2", "1.2.0"), Ordering::Equal);
        assert_eq!(compare_versions("0.1.0", "0.2.0"), Ordering::Less);
    }

    #[test]
    fn a_version_tie_goes_to_the_newer_version() {
        let mut b = node("b", Some(0));
        b.version = "1.1.0".into();
        assert_eq!(majority_version(&[node("a", Some(0)), b]).as_deref(), Some("1.1.0"));
    }
}
