//! Prometheus metrics at `/metrics`, in the text exposition format (version 0.0.4): per node
//! status, role, CPU, memory, network, runs and credential version; per gateway status, node
//! count and failovers; runs by state, retries, bytes and files copied, read from the database
//! at each scrape; and the dispatch latency, a histogram this hub keeps in memory since it
//! started. Names and units follow the Prometheus conventions (`_ratio`, `_bytes`, `_seconds`,
//! `_total` on counters). The writer and the per-node families are [`crate::prometheus`]'s,
//! which a node's own `/metrics` shares.

use crate::prometheus::{Exposition, NodeSample, big, count, whole};
use crate::protocol::{GatewayState, GatewayView, NodeView};
use std::collections::HashMap;
use std::sync::Mutex;

/// The dispatch latency buckets, in seconds: from a claim waiting for work to a queue full for
/// minutes.
const LATENCY_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// What this hub measures itself, shared by its request handlers.
#[derive(Default)]
pub struct HubMetrics {
    /// Dispatch latency (queued → claimed by the dispatcher) per gateway id.
    latency: Mutex<HashMap<String, Histogram>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram {
    /// Observations at or below each of [`LATENCY_BUCKETS`] (not yet cumulative).
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl HubMetrics {
    /// A run of `gateway_id` was claimed `seconds` after it was queued.
    pub fn observe_dispatch(&self, gateway_id: &str, seconds: f64) {
        let mut latency = self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let histogram = latency.entry(gateway_id.to_owned()).or_default();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| seconds <= le) {
            histogram.buckets[i] += 1;
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    fn latency(&self) -> HashMap<String, Histogram> {
        self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// What a scrape shows, gathered from the database and `status` by the caller.
pub struct Snapshot<'a> {
    pub gateways: &'a [GatewayView],
    /// (gateway id, run state, how many).
    pub runs: &'a [(String, String, i64)],
    /// Lost attempts per gateway id.
    pub retries: &'a HashMap<String, i64>,
    /// (bytes, files) copied by succeeded copy runs per gateway id.
    pub copied: &'a HashMap<String, (u64, u64)>,
    /// The dispatcher lease's epoch per gateway id: it rises by one each time another node
    /// takes the lease.
    pub lease_epochs: &'a HashMap<String, i64>,
}

/// The whole exposition for `snapshot` and this hub's own measurements.
pub fn render(snapshot: &Snapshot<'_>, hub: &HubMetrics) -> String {
    let mut out = Exposition::new();
    let name_of: HashMap<&str, &str> =
        snapshot.gateways.iter().map(|g| (g.id.as_str(), g.name.as_str())).collect();
    let gateway_name = |id: &str| name_of.get(id).copied().unwrap_or(id).to_owned();
    gateway_families(&mut out, snapshot);
    node_families(&mut out, snapshot.gateways);
    run_families(&mut out, snapshot, &gateway_name);
    latency_family(&mut out, hub, &gateway_name);
    out.finish()
}

fn gateway_families(out: &mut Exposition, snapshot: &Snapshot<'_>) {
    let gateways = snapshot.gateways;
    out.family("gatehouse_gateway_status", "gauge", "1 for the gateway's current status, 0 for the others.");
    for g in gateways {
        for (state, status) in [
            (GatewayState::Online, "online"),
            (GatewayState::Limited, "limited"),
            (GatewayState::Offline, "offline"),
            (GatewayState::NeedsRegistration, "needs_registration"),
        ] {
            let value = f64::from(u8::from(g.status == state));
            out.sample("gatehouse_gateway_status", &[("gateway", &g.name), ("status", status)], value);
        }
    }
    let family = ("gatehouse_gateway_nodes", "gauge", "Nodes registered in the gateway.");
    per_gateway(out, gateways, family, |g| count(g.nodes.len()));
    let family = (
        "gatehouse_dispatcher_failovers_total",
        "counter",
        "Times another node took over the gateway's dispatcher lease.",
    );
    per_gateway(out, gateways, family, |g| {
        whole((snapshot.lease_epochs.get(&g.id).copied().unwrap_or(0) - 1).max(0))
    });
}

/// A family (name, kind, help) with one sample a gateway, labelled with its name.
fn per_gateway(
    out: &mut Exposition,
    gateways: &[GatewayView],
    (name, kind, help): (&str, &str, &str),
    value: impl Fn(&GatewayView) -> f64,
) {
    out.family(name, kind, help);
    for g in gateways {
        out.sample(name, &[("gateway", &g.name)], value(g));
    }
}

fn node_families(out: &mut Exposition, gateways: &[GatewayView]) {
    let nodes: Vec<NodeSample<'_>> = gateways
        .iter()
        .flat_map(|g| {
            g.nodes.iter().map(move |n: &NodeView| NodeSample {
                gateway: &g.name,
                node: &n.name,
                version: &n.version,
                status: Some(n.status),
                role: n.role,
                metrics: &n.metrics,
                last_heartbeat_ms: n.last_heartbeat_ms,
            })
        })
        .collect();
    crate::prometheus::node_families(out, &nodes);
}

fn run_families(out: &mut Exposition, snapshot: &Snapshot<'_>, gateway_name: &dyn Fn(&str) -> String) {
    let gateways = snapshot.gateways;
    out.family("gatehouse_runs", "gauge", "Activity runs by state.");
    for (gateway, state, n) in snapshot.runs {
        out.sample("gatehouse_runs", &[("gateway", &gateway_name(gateway)), ("state", state)], whole(*n));
    }
    let family = (
        "gatehouse_run_retries_total",
        "counter",
        "Attempts that were lost (node gone, hub restart, hand-off not started) and tried again.",
    );
    per_gateway(out, gateways, family, |g| whole(snapshot.retries.get(&g.id).copied().unwrap_or(0)));
    let copied = |g: &GatewayView| snapshot.copied.get(&g.id).copied().unwrap_or_default();
    let family = ("gatehouse_copied_bytes_total", "counter", "Bytes copied by copy runs that succeeded.");
    per_gateway(out, gateways, family, |g| big(copied(g).0));
    let family = ("gatehouse_copied_files_total", "counter", "Files copied by copy runs that succeeded.");
    per_gateway(out, gateways, family, |g| big(copied(g).1));
}

fn latency_family(out: &mut Exposition, hub: &HubMetrics, gateway_name: &dyn Fn(&str) -> String) {
    out.family(
        "gatehouse_dispatch_latency_seconds",
        "histogram",
        "From a run being queued to the dispatcher claiming it, as this hub saw it since it started.",
    );
    let mut latency: Vec<(String, Histogram)> =
        hub.latency().into_iter().map(|(id, h)| (gateway_name(&id), h)).collect();
    latency.sort_by(|a, b| a.0.cmp(&b.0));
    for (gateway, h) in &latency {
        let mut cumulative = 0;
        for (le, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            let le = format!("{le}");
            out.sample(
                "gatehouse_dispatch_latency_seconds_bucket",
                &[("gateway", gateway), ("le", &le)],
                big(cumulative),
            );
        }
        out.sample(
            "gatehouse_dispatch_latency_seconds_bucket",
            &[("gateway", gateway), ("le", "+Inf")],
            big(h.count),
        );
        out.sample("gatehouse_dispatch_latency_seconds_sum", &[("gateway", gateway)], h.sum);
        out.sample("gatehouse_dispatch_latency_seconds_count", &[("gateway", gateway)], big(h.count));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_histogram_is_cumulative_and_counts_everything() {
        let hub = HubMetrics::default();
        for seconds in [0.001, 0.2, 0.2, 7.0, 1000.0] {
            hub.observe_dispatch("g", seconds);
        }
        let snapshot = Snapshot {
            gateways: &[],
            runs: &[],
            retries: &HashMap::new(),
            copied: &HashMap::new(),
            lease_epochs: &HashMap::new(),
        };
        let text = render(&snapshot, &hub);
        let bucket = |le: &str| {
            let prefix = format!("gatehouse_dispatch_latency_seconds_bucket{{gateway=\"g\",le=\"{le}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap().to_owned()
        };
        assert_eq!(bucket("0.005"), "1");
        assert_eq!(bucket("0.25"), "3");
        assert_eq!(bucket("10"), "4");
        assert_eq!(bucket("300"), "4");
        assert_eq!(bucket("+Inf"), "5");
        assert!(text.contains("gatehouse_dispatch_latency_seconds_count{gateway=\"g\"} 5\n"), "{text}");
        assert!(text.contains("gatehouse_dispatch_latency_seconds_sum{gateway=\"g\"} 1007.401"), "{text}");
    }
}
