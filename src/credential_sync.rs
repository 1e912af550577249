//! What "in sync" means for a gateway's credentials, from what each node reports (names,
//! versions, deletions; never values): the digest nodes compare, how far ahead of a clock a
//! version may be, and per credential the newest version with the nodes behind or ahead.
//! Pure, for the nodes, the hub's statuses and gateway view and the window's Home alike.

use crate::protocol::{CredentialStamp, GatewayCredential, NodeMetrics};
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet};

/// How far ahead of the receiver's clock a credential's version may be: 5 minutes. A version
/// beyond it is refused (a bogus one would otherwise win over every later edit).
pub const CLOCK_ALLOWANCE_MS: u64 = 5 * 60 * 1000;

/// Whether `version` is beyond the clock `now_ms` plus the allowance.
pub fn too_far_ahead(version: u64, now_ms: u64) -> bool {
    version > now_ms.saturating_add(CLOCK_ALLOWANCE_MS)
}

/// The order of two writes of one name: the higher version, then the origin, then the
/// deletion wins. Every node compares the same way, so all of them keep the same write.
pub fn rank(stamp: &CredentialStamp) -> (u64, &str, bool) {
    (stamp.version, stamp.origin.as_str(), stamp.deleted)
}

/// SHA-256 (hex) of a node's stamps in their order (sorted by name).
pub fn digest(stamps: &[CredentialStamp]) -> String {
    let mut hasher = sha2::Sha256::new();
    for stamp in stamps {
        for text in [&stamp.name, &stamp.origin] {
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
        }
        hasher.update(stamp.version.to_be_bytes());
        hasher.update([u8::from(stamp.deleted)]);
    }
    crate::encoding::hex(&hasher.finalize())
}

/// What a node holds: its stamps, or for a node older than per-credential versions (no
/// digest), its names at the one version of its set.
pub fn stamps(metrics: &NodeMetrics) -> Vec<CredentialStamp> {
    if metrics.credential_digest.is_some() {
        return metrics.credentials.clone();
    }
    let mut names = metrics.credential_names.clone();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| CredentialStamp {
            name,
            version: metrics.credential_version,
            origin: String::new(),
            deleted: false,
        })
        .collect()
}

/// One node as the comparison sees it.
pub struct NodeCredentials<'a> {
    pub name: &'a str,
    /// It sends heartbeats; only online nodes say what the newest versions are.
    pub online: bool,
    pub metrics: &'a NodeMetrics,
}

/// Every online node reports the same credentials, and no node (an offline one by its last
/// report) is behind or ahead on one of `credentials` ([`gateway_credentials`]).
pub fn in_sync(nodes: &[NodeCredentials<'_>], credentials: &[GatewayCredential]) -> bool {
    let mut online = nodes.iter().filter(|n| n.online).map(|n| stamps(n.metrics));
    let first = online.next();
    online.all(|s| Some(&s) == first.as_ref())
        && credentials.iter().all(|c| c.nodes_behind.is_empty() && c.nodes_ahead.is_empty())
}

/// Every credential an online node holds, by name: the newest version among the online
/// nodes (within the allowance of `now_ms`), the nodes holding it, the nodes behind (an
/// offline one by its last report) and those holding a version ahead of the clock.
pub fn gateway_credentials(nodes: &[NodeCredentials<'_>], now_ms: u64) -> Vec<GatewayCredential> {
    let held: Vec<(&NodeCredentials<'_>, BTreeMap<String, CredentialStamp>)> = nodes
        .iter()
        .map(|n| (n, stamps(n.metrics).into_iter().map(|s| (s.name.clone(), s)).collect()))
        .collect();
    let names: BTreeSet<&String> =
        held.iter().filter(|(n, _)| n.online).flat_map(|(_, map)| map.keys()).collect();
    names
        .into_iter()
        .map(|name| {
            let newest = held
                .iter()
                .filter(|(n, _)| n.online)
                .filter_map(|(_, map)| map.get(name))
                .filter(|s| !too_far_ahead(s.version, now_ms))
                .max_by(|a, b| rank(a).cmp(&rank(b)));
            let mut credential = GatewayCredential {
                name: name.clone(),
                version: newest.map(|s| s.version),
                origin: newest.map(|s| s.origin.clone()).unwrap_or_default(),
                deleted: newest.is_some_and(|s| s.deleted),
                nodes_current: Vec::new(),
                nodes_behind: Vec::new(),
                nodes_ahead: Vec::new(),
            };
            for (node, map) in &held {
                let node_name = node.name.to_owned();
                match (map.get(name), newest) {
                    (Some(s), _) if too_far_ahead(s.version, now_ms) => {
                        credential.nodes_ahead.push(node_name);
                    }
                    (Some(s), Some(n)) if rank(s) == rank(n) => credential.nodes_current.push(node_name),
                    // Newer than any online node's (an offline node's last word): not behind.
                    (Some(s), Some(n)) if rank(s) > rank(n) => {}
                    (_, None) => {}
                    _ => credential.nodes_behind.push(node_name),
                }
            }
            credential
        })
        .collect()
}

/// The credentials `node` is behind on, and those it holds with a version ahead of the clock.
pub fn standing<'a>(credentials: &'a [GatewayCredential], node: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    let names = |pick: fn(&GatewayCredential) -> &Vec<String>| -> Vec<&'a str> {
        credentials.iter().filter(|c| pick(c).iter().any(|n| n == node)).map(|c| c.name.as_str()).collect()
    };
    (names(|c| &c.nodes_behind), names(|c| &c.nodes_ahead))
}

/// What is wrong with `node`'s credentials, as a reason; `None` when it holds the newest of
/// each.
pub fn node_problem(credentials: &[GatewayCredential], node: &str) -> Option<String> {
    let (behind, ahead) = standing(credentials, node);
    let mut problems = Vec::new();
    if !behind.is_empty() {
        problems.push(format!("behind on {}", behind.join(", ")));
    }
    if !ahead.is_empty() {
        problems.push(format!(
            "the version of {} is ahead of the clock and refused by the other nodes (set it again on this node)",
            ahead.join(", ")
        ));
    }
    (!problems.is_empty()).then(|| format!("credentials out of sync: {}", problems.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn stamp(name: &str, version: u64) -> CredentialStamp {
        CredentialStamp { name: name.into(), version, origin: "a".into(), deleted: false }
    }

    fn metrics(stamps: Vec<CredentialStamp>) -> NodeMetrics {
        NodeMetrics {
            credential_digest: Some(digest(&stamps)),
            credentials: stamps,
            ..NodeMetrics::default()
        }
    }

    fn node<'a>(name: &'a str, metrics: &'a NodeMetrics) -> NodeCredentials<'a> {
        NodeCredentials { name, online: true, metrics }
    }

    #[test]
    fn the_digest_follows_names_versions_origins_and_deletions() {
        let base = vec![stamp("db", 1)];
        let variants = [
            vec![stamp("db", 2)],
            vec![stamp("dc", 1)],
            vec![CredentialStamp { origin: "b".into(), ..stamp("db", 1) }],
            vec![CredentialStamp { deleted: true, ..stamp("db", 1) }],
            vec![stamp("db", 1), stamp("lake", 1)],
        ];
        for other in variants {
            assert_ne!(digest(&base), digest(&other), "{other:?}");
        }
        assert_eq!(digest(&base), digest(&[stamp("db", 1)]));
    }

    #[test]
    fn a_node_behind_and_a_node_ahead_are_named_per_credential() {
        let a = metrics(vec![stamp("db", NOW), stamp("lake", NOW)]);
        let b = metrics(vec![stamp("db", NOW - 5)]);
        let c = metrics(vec![stamp("db", NOW), stamp("lake", NOW + 3 * CLOCK_ALLOWANCE_MS)]);
        let nodes = [node("a", &a), node("b", &b), node("c", &c)];
        let list = gateway_credentials(&nodes, NOW);
        assert!(!in_sync(&nodes, &list));
        assert_eq!(list[0].name, "db");
        assert_eq!(
            (list[0].nodes_current.clone(), list[0].nodes_behind.clone()),
            (vec!["a".into(), "c".into()], vec!["b".into()])
        );
        assert_eq!(list[1].version, Some(NOW));
        assert_eq!(list[1].nodes_behind, ["b"]);
        assert_eq!(list[1].nodes_ahead, ["c"]);
        assert_eq!(node_problem(&list, "a"), None);
        assert_eq!(node_problem(&list, "b").as_deref(), Some("credentials out of sync: behind on db, lake"));
        assert!(node_problem(&list, "c").unwrap().contains("lake is ahead of the clock"));
    }

    #[test]
    fn only_online_nodes_decide_and_an_offline_node_behind_is_named() {
        let a = metrics(vec![stamp("db", NOW)]);
        let offline = |metrics| NodeCredentials { name: "c", online: false, metrics };
        let caught_up = [node("a", &a), node("b", &a), offline(&a)];
        assert!(in_sync(&caught_up, &gateway_credentials(&caught_up, NOW)));
        let old = metrics(vec![]);
        let nodes = [node("a", &a), node("b", &a), offline(&old)];
        let list = gateway_credentials(&nodes, NOW);
        assert_eq!(list[0].nodes_current, ["a", "b"]);
        assert_eq!(list[0].nodes_behind, ["c"], "an offline node is behind by its last report");
        assert!(!in_sync(&nodes, &list));
        // An offline node's newer entry is no reference (it may never come back).
        let newer = metrics(vec![stamp("db", NOW + 1)]);
        let nodes = [node("a", &a), offline(&newer)];
        assert_eq!(gateway_credentials(&nodes, NOW)[0].version, Some(NOW));
    }

    #[test]
    fn a_node_older_than_per_credential_versions_counts_with_its_one_version() {
        let legacy = NodeMetrics {
            credential_version: NOW,
            credential_names: vec!["db".into()],
            ..NodeMetrics::default()
        };
        assert_eq!(stamps(&legacy), vec![CredentialStamp { origin: String::new(), ..stamp("db", NOW) }]);
        let new = metrics(vec![stamp("db", NOW + 1)]);
        let list = gateway_credentials(&[node("old", &legacy), node("new", &new)], NOW);
        assert_eq!(list[0].nodes_behind, ["old"]);
    }
}
