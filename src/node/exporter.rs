//! The node's own `/metrics` (Prometheus text format) on a loopback address, for scraping on
//! this machine (`metrics_listen` in node.toml, set by `gatehouse node set-metrics`): this
//! node's figures as its last heartbeat measured and the hub answered them, under the names
//! the hub's `/metrics` gives the same figures ([`crate::prometheus::node_families`]), plus
//! what only the node knows (hub reachable, credentials in sync with its peers, update
//! offered, its runs' totals since it started).
//!
//! No token: the address must be loopback (checked when set, and again here for a hand-edited
//! file). The setting is re-read every two seconds, so a change applies without a restart; an
//! address that can't be bound (a port another program holds) is logged at WARN once and
//! tried again at each re-read while the service keeps running.

use super::store::Store;
use super::{NodeStatus, unix_millis};
use crate::credential_sync::{self, NodeCredentials};
use crate::prometheus::{self, Exposition, NodeSample, big, count, flag};
use crate::protocol::NodeState;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the setting is re-read.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);
/// How long a stopping listener may take to finish the scrapes under way.
const STOP_PATIENCE: Duration = Duration::from_secs(2);

/// A listener serving `/metrics`, and how to stop it.
struct Serving {
    address: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    async fn stop(self) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(STOP_PATIENCE, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Serves `/metrics` on the address the settings name (none: nothing), following changes,
/// until `shutdown`.
pub(crate) async fn run(store: Store, status: watch::Receiver<NodeStatus>, shutdown: CancellationToken) {
    let mut serving: Option<Serving> = None;
    // The address that last failed, so a lasting failure is logged once.
    let mut failed: Option<SocketAddr> = None;
    loop {
        // A settings file that can't be read now keeps what is served.
        let wanted = store.settings().map_or(serving.as_ref().map(|s| s.address), |s| s.metrics_listen);
        if serving.as_ref().map(|s| s.address) != wanted {
            if let Some(old) = serving.take() {
                let address = old.address;
                old.stop().await;
                tracing::info!(%address, "stopped serving this node's metrics");
            }
            if let Some(address) = wanted {
                match bind(address).await {
                    Ok(listener) => {
                        tracing::info!(%address, "serving this node's metrics at http://{address}/metrics");
                        failed = None;
                        serving = Some(serve(listener, address, status.clone(), &shutdown));
                    }
                    Err(reason) => {
                        if failed != Some(address) {
                            tracing::warn!(%address, "can't serve this node's metrics: {reason}; the node runs on without them and tries again every {} s", FOLLOW_INTERVAL.as_secs());
                            failed = Some(address);
                        }
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
    }
    if let Some(serving) = serving {
        serving.stop().await;
    }
}

/// Binds `address`, which must be loopback: the endpoint has no token.
async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    if !address.ip().is_loopback() {
        return Err(format!(
            "{address} in node.toml is not a loopback address, and this endpoint has no token; set one with `gatehouse node set-metrics 127.0.0.1:{}`",
            address.port()
        ));
    }
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("can't listen on {address} ({e}); is another program using it? Choose another port with `gatehouse node set-metrics`"))
}

fn serve(
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    status: watch::Receiver<NodeStatus>,
    shutdown: &CancellationToken,
) -> Serving {
    let stop = shutdown.child_token();
    let router = axum::Router::new().route("/metrics", axum::routing::get(metrics)).with_state(status);
    let signal = stop.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(signal).await {
            tracing::warn!(%address, "serving this node's metrics stopped: {e}");
        }
    });
    Serving { address, stop, task }
}

async fn metrics(
    axum::extract::State(status): axum::extract::State<watch::Receiver<NodeStatus>>,
) -> impl axum::response::IntoResponse {
    let status = status.borrow().clone();
    let text = render(&status, crate::version(), unix_millis());
    ([(axum::http::header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], text)
}

/// A gauge or counter of this node alone: name, kind, help, value.
type Own = (&'static str, &'static str, &'static str, f64);

/// The exposition of this node's `status`, running `version`, at `now_ms`.
pub fn render(status: &NodeStatus, version: &str, now_ms: u64) -> String {
    let mut out = Exposition::new();
    let (gateway, node) = (status.gateway_name.as_str(), status.node_name.as_str());
    let sample = NodeSample {
        gateway,
        node,
        version,
        status: status.state,
        role: status.role,
        metrics: &status.metrics,
        last_heartbeat_ms: status
            .last_heartbeat
            .and_then(|s| i64::try_from(s).ok())
            .map(|s| s.saturating_mul(1000)),
    };
    prometheus::node_families(&mut out, &[sample]);
    let totals = status.totals;
    let own: [Own; 9] = [
        (
            "gatehouse_node_hub_connected",
            "gauge",
            "1 when this node's last heartbeat reached the hub.",
            flag(status.hub_connected),
        ),
        (
            "gatehouse_node_hub_errors",
            "gauge",
            "Hub requests that failed since this node's last successful heartbeat.",
            f64::from(status.metrics.hub_errors),
        ),
        (
            "gatehouse_node_unreachable_peers",
            "gauge",
            "Peers this node could not reach on the peer channel.",
            count(status.metrics.unreachable_peers.len()),
        ),
        (
            "gatehouse_node_credentials_in_sync",
            "gauge",
            "1 when this node holds the same credentials (names, versions, deletions) as its online peers.",
            flag(credentials_in_sync(status, now_ms)),
        ),
        (
            "gatehouse_node_update_available",
            "gauge",
            "1 when the hub offers this node a release to update to.",
            flag(status.update.is_some()),
        ),
        (
            "gatehouse_node_copied_bytes_total",
            "counter",
            "Bytes copied by copy runs that succeeded on this node since its service started.",
            big(totals.copied_bytes),
        ),
        (
            "gatehouse_node_copied_files_total",
            "counter",
            "Files copied by copy runs that succeeded on this node since its service started.",
            big(totals.copied_files),
        ),
        (
            "gatehouse_node_run_retries_total",
            "counter",
            "Runs this node started as a retry of a lost attempt, since its service started.",
            big(totals.retries),
        ),
        (
            "gatehouse_node_lease_epoch",
            "gauge",
            "The dispatcher lease epoch this node last heard from the hub (0 before the first answer).",
            prometheus::whole(status.lease_epoch.unwrap_or(0)),
        ),
    ];
    for (name, kind, help, value) in own {
        out.family(name, kind, help);
        out.sample(name, &[("gateway", gateway), ("node", node)], value);
    }
    out.family(
        "gatehouse_credential_version",
        "gauge",
        "The version of each credential this node holds (milliseconds since the Unix epoch); deletions are left out.",
    );
    for stamp in status.metrics.credentials.iter().filter(|s| !s.deleted) {
        out.sample(
            "gatehouse_credential_version",
            &[("gateway", gateway), ("node", node), ("credential", &stamp.name)],
            big(stamp.version),
        );
    }
    out.finish()
}

/// This node and its online peers hold the same credentials, as `credential_sync` judges it
/// for the hub and the window's Home.
fn credentials_in_sync(status: &NodeStatus, now_ms: u64) -> bool {
    let mut holders =
        vec![NodeCredentials { name: &status.node_name, online: true, metrics: &status.metrics }];
    holders.extend(status.peers.iter().map(|p| NodeCredentials {
        name: &p.name,
        online: p.status != NodeState::Offline,
        metrics: &p.metrics,
    }));
    let credentials = credential_sync::gateway_credentials(&holders, now_ms);
    credential_sync::in_sync(&holders, &credentials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CredentialStamp, NodeMetrics, Role};

    #[test]
    fn a_status_renders_under_the_hubs_names_with_this_nodes_labels() {
        let status = NodeStatus {
            node_name: "n1".into(),
            gateway_name: "lake".into(),
            hub_connected: true,
            role: Role::Dispatcher,
            state: Some(NodeState::Online),
            last_heartbeat: Some(1_700_000_000),
            metrics: NodeMetrics {
                cpu_percent: 25.0,
                runs_limit: 3,
                credentials: vec![CredentialStamp {
                    name: "pg".into(),
                    version: 42,
                    origin: "n1".into(),
                    deleted: false,
                }],
                ..NodeMetrics::default()
            },
            totals: super::super::worker::RunTotals { copied_bytes: 7, copied_files: 2, retries: 1 },
            ..NodeStatus::default()
        };
        let text = render(&status, "1.2.3", 1_700_000_000_000);
        for line in [
            "gatehouse_node_info{gateway=\"lake\",node=\"n1\",version=\"1.2.3\"} 1\n",
            "gatehouse_node_status{gateway=\"lake\",node=\"n1\",status=\"online\"} 1\n",
            "gatehouse_node_role{gateway=\"lake\",node=\"n1\",role=\"dispatcher\"} 1\n",
            "gatehouse_node_cpu_ratio{gateway=\"lake\",node=\"n1\"} 0.25\n",
            "gatehouse_node_runs_limit{gateway=\"lake\",node=\"n1\"} 3\n",
            "gatehouse_node_last_heartbeat_timestamp_seconds{gateway=\"lake\",node=\"n1\"} 1700000000\n",
            "gatehouse_node_hub_connected{gateway=\"lake\",node=\"n1\"} 1\n",
            "gatehouse_node_credentials_in_sync{gateway=\"lake\",node=\"n1\"} 1\n",
            "gatehouse_node_copied_bytes_total{gateway=\"lake\",node=\"n1\"} 7\n",
            "gatehouse_node_copied_files_total{gateway=\"lake\",node=\"n1\"} 2\n",
            "gatehouse_node_run_retries_total{gateway=\"lake\",node=\"n1\"} 1\n",
            "gatehouse_credential_version{gateway=\"lake\",node=\"n1\",credential=\"pg\"} 42\n",
            "# TYPE gatehouse_node_copied_bytes_total counter\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn a_peer_holding_other_credentials_is_out_of_sync() {
        let stamp =
            |version| CredentialStamp { name: "pg".into(), version, origin: "x".into(), deleted: false };
        let peer = crate::protocol::Peer {
            node_id: "2".into(),
            name: "n2".into(),
            peer_address: "127.0.0.1:1".into(),
            registered_order: 2,
            status: NodeState::Online,
            reason: None,
            version: String::new(),
            role: Role::Worker,
            metrics: NodeMetrics {
                credentials: vec![stamp(2)],
                credential_digest: Some("peer's".into()),
                ..NodeMetrics::default()
            },
            public_key: String::new(),
        };
        let mut status = NodeStatus {
            node_name: "n1".into(),
            metrics: NodeMetrics {
                credentials: vec![stamp(1)],
                credential_digest: Some("mine".into()),
                ..NodeMetrics::default()
            },
            peers: vec![peer],
            ..NodeStatus::default()
        };
        assert!(!credentials_in_sync(&status, 1000));
        status.peers[0].status = NodeState::Offline;
        status.peers[0].metrics.credentials = vec![stamp(1)];
        assert!(credentials_in_sync(&status, 1000));
    }
}
