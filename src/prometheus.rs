//! The Prometheus text exposition format (version 0.0.4), written by hand for the hub's
//! `/metrics` and a node's own: the writer ([`Exposition`]: `# HELP`/`# TYPE` lines, escaped
//! label values, numbers as the format spells them) and the per-node families both show
//! ([`node_families`]), so a figure has the same name, labels and help wherever it is scraped.
//! Neutral: it knows only the wire types of [`crate::protocol`], never the hub or the node.

use crate::protocol::{NodeMetrics, NodeState, Role};
use std::fmt::Write as _;

/// The `Content-Type` of an exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An exposition being written: each family's samples follow its `# HELP` and `# TYPE` lines.
pub struct Exposition {
    text: String,
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

impl Exposition {
    pub fn new() -> Self {
        Exposition { text: String::new() }
    }

    /// Starts a family: `kind` is `gauge`, `counter` or `histogram`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.text, "{label}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// A sample value as the format writes it: integers without a fraction, `+Inf`/`-Inf`/`NaN`.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

/// A count as a sample value.
#[allow(clippy::cast_precision_loss, reason = "metric values are floats on the wire")]
pub fn big(n: u64) -> f64 {
    n as f64
}

/// A signed count (the database's) as a sample value.
#[allow(clippy::cast_precision_loss, reason = "metric values are floats on the wire")]
pub fn whole(n: i64) -> f64 {
    n as f64
}

/// A length as a sample value.
pub fn count(n: usize) -> f64 {
    big(u64::try_from(n).unwrap_or(u64::MAX))
}

/// 1 for true, 0 for false.
pub fn flag(on: bool) -> f64 {
    f64::from(u8::from(on))
}

/// One node as the per-node families show it: the hub's view of each of its nodes, or a
/// node's view of itself.
pub struct NodeSample<'a> {
    pub gateway: &'a str,
    pub node: &'a str,
    pub version: &'a str,
    /// The status the hub computed; `None` (every status 0) before a node heard it.
    pub status: Option<NodeState>,
    pub role: Role,
    pub metrics: &'a NodeMetrics,
    /// Milliseconds since the Unix epoch of the last heartbeat; `None` before the first.
    pub last_heartbeat_ms: Option<i64>,
}

/// A per-node gauge: its name, help and how to read it off the node.
type NodeGauge = (&'static str, &'static str, fn(&NodeSample<'_>) -> f64);

/// The node statuses, each with its label value.
const STATUSES: [(NodeState, &str); 5] = [
    (NodeState::Online, "online"),
    (NodeState::Limited, "limited"),
    (NodeState::Offline, "offline"),
    (NodeState::Inactive, "inactive"),
    (NodeState::Upgrading, "upgrading"),
];

/// The families every node has, labelled `gateway` and `node`: info (version), status, role,
/// CPU, memory, network, runs and their limit, credential version, last heartbeat.
pub fn node_families(out: &mut Exposition, nodes: &[NodeSample<'_>]) {
    out.family("gatehouse_node_info", "gauge", "Always 1; the node's version in a label.");
    for n in nodes {
        out.sample(
            "gatehouse_node_info",
            &[("gateway", n.gateway), ("node", n.node), ("version", n.version)],
            1.0,
        );
    }
    out.family("gatehouse_node_status", "gauge", "1 for the node's current status, 0 for the others.");
    for n in nodes {
        for (state, status) in STATUSES {
            out.sample(
                "gatehouse_node_status",
                &[("gateway", n.gateway), ("node", n.node), ("status", status)],
                flag(n.status == Some(state)),
            );
        }
    }
    out.family(
        "gatehouse_node_role",
        "gauge",
        "1 for the node's current role (dispatcher or worker), 0 for the other.",
    );
    for n in nodes {
        for (role, name) in [(Role::Dispatcher, "dispatcher"), (Role::Worker, "worker")] {
            out.sample(
                "gatehouse_node_role",
                &[("gateway", n.gateway), ("node", n.node), ("role", name)],
                flag(n.role == role),
            );
        }
    }
    let per_node: [NodeGauge; 9] = [
        ("gatehouse_node_cpu_ratio", "CPU in use, 0 to 1, as the node last reported.", |n| {
            f64::from(n.metrics.cpu_percent) / 100.0
        }),
        ("gatehouse_node_memory_available_bytes", "Memory available on the node.", |n| {
            big(n.metrics.available_memory_bytes)
        }),
        ("gatehouse_node_memory_total_bytes", "The node's memory.", |n| big(n.metrics.total_memory_bytes)),
        (
            "gatehouse_node_network_receive_bytes_per_second",
            "Network bytes in per second on the node.",
            |n| big(n.metrics.network_in_bytes_per_second),
        ),
        (
            "gatehouse_node_network_transmit_bytes_per_second",
            "Network bytes out per second on the node.",
            |n| big(n.metrics.network_out_bytes_per_second),
        ),
        ("gatehouse_node_runs_running", "Runs executing on the node.", |n| f64::from(n.metrics.runs_running)),
        ("gatehouse_node_runs_limit", "How many runs the node takes at once.", |n| {
            f64::from(n.metrics.runs_limit)
        }),
        ("gatehouse_node_credential_version", "Newest version among the credentials the node holds.", |n| {
            big(n.metrics.credential_version)
        }),
        (
            "gatehouse_node_last_heartbeat_timestamp_seconds",
            "When the node's last heartbeat arrived (Unix time).",
            |n| n.last_heartbeat_ms.map_or(0.0, |ms| whole(ms) / 1000.0),
        ),
    ];
    for (name, help, value) in per_node {
        out.family(name, "gauge", help);
        for n in nodes {
            out.sample(name, &[("gateway", n.gateway), ("node", n.node)], value(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped_and_numbers_written_plainly() {
        let mut out = Exposition::new();
        out.family("x_total", "counter", "line one\nback\\slash");
        out.sample("x_total", &[("a", "say \"hi\"\\\n")], 3.0);
        out.sample("x_total", &[], f64::INFINITY);
        assert_eq!(
            out.finish(),
            "# HELP x_total line one\\nback\\\\slash\n# TYPE x_total counter\nx_total{a=\"say \\\"hi\\\"\\\\\\n\"} 3\nx_total +Inf\n"
        );
        assert_eq!(number(0.25), "0.25");
    }

    #[test]
    fn a_node_without_a_status_yet_has_every_status_at_zero() {
        let metrics = NodeMetrics { runs_limit: 4, ..NodeMetrics::default() };
        let sample = NodeSample {
            gateway: "g",
            node: "n",
            version: "1.0",
            status: None,
            role: Role::Worker,
            metrics: &metrics,
            last_heartbeat_ms: None,
        };
        let mut out = Exposition::new();
        node_families(&mut out, &[sample]);
        let text = out.finish();
        assert!(
            !text.contains("gatehouse_node_status{gateway=\"g\",node=\"n\",status=\"online\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("gatehouse_node_status{gateway=\"g\",node=\"n\",status=\"offline\"} 0"),
            "{text}"
        );
        assert!(text.contains("gatehouse_node_role{gateway=\"g\",node=\"n\",role=\"worker\"} 1"), "{text}");
        assert!(text.contains("gatehouse_node_runs_limit{gateway=\"g\",node=\"n\"} 4\n"), "{text}");
    }
}
