//! The hub (control plane): gateways, auth keys, node registration, heartbeats and statuses,
//! the dispatcher lease and the job queue, served over HTTP by axum on top of [`db::Db`].
//! All state that matters is in the database, so hubs can restart or run side by side on one
//! PostgreSQL database.

pub mod api;
mod audit;
mod auth;
pub mod db;
pub mod embedded;
mod error;
mod history;
mod long_polls;
mod metrics;
mod nodes_cache;
pub mod progress;
mod registration;
pub mod server;
pub mod status;
pub mod tls;

pub use error::ApiError;

use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How the hub behaves; the defaults are the product's (DESIGN.md §2).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The URL nodes use to reach this hub; written into every auth key.
    pub public_url: String,
    /// A node without a heartbeat for this long is Offline and its runs go back to the queue.
    pub offline_after: Duration,
    /// How long the dispatcher lease lasts without renewal (renewed on every heartbeat).
    pub lease_ttl: Duration,
    /// How often lost runs are looked for.
    pub sweep_interval: Duration,
    /// How long after this hub process started the sweeper re-queues nothing: a hub that was
    /// down finds every node's last heartbeat old, and must let the nodes heartbeat again
    /// (they retry every 0.5 s) before it calls any of them lost.
    pub sweep_grace: Duration,
    /// A run handed out that no worker has started after the gateway's queue timeout plus
    /// this long goes back to the queue.
    pub handoff_timeout: Duration,
    /// How often a waiting claim looks for work that another hub queued.
    pub poll_interval: Duration,
    /// Serve `/metrics` without a token (`hub serve --public-metrics`).
    pub public_metrics: bool,
    /// Serve the status page at `/` without a token (`hub serve --public-status`).
    pub public_status: bool,
    /// Open connections at most; more wait until one closes (`hub serve --max-connections`).
    pub max_connections: usize,
    /// The SHA-256 fingerprint of the certificate this hub made for itself (an embedded hub
    /// open to the network): the keys for adding nodes it makes carry it, so a joining node
    /// trusts the certificate without a CA.
    pub pin: Option<crate::protocol::CertPin>,
    /// Open connections from one client address at most; more are closed at once
    /// (`hub serve --max-connections-per-address`, default a quarter of `max_connections`).
    pub max_connections_per_address: usize,
    /// The keys a release must be signed with to be published and offered to nodes
    /// (`hub serve --release-key PUBFILE`); none: releases are refused.
    pub release_keys: Vec<crate::release::PublicKey>,
}

impl HubConfig {
    pub fn new(public_url: impl Into<String>) -> Self {
        let offline_after = Duration::from_secs(3);
        HubConfig {
            public_url: public_url.into(),
            offline_after,
            // Two heartbeats: one lost heartbeat is tolerated, and failover (lease lapse plus
            // the next node's heartbeat) stays under 3 s.
            lease_ttl: Duration::from_secs(2),
            sweep_interval: Duration::from_millis(250),
            sweep_grace: sweep_grace(offline_after),
            handoff_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            public_metrics: false,
            public_status: false,
            max_connections: server::MAX_CONNECTIONS,
            pin: None,
            max_connections_per_address: server::per_address_default(server::MAX_CONNECTIONS),
            release_keys: Vec::new(),
        }
    }
}

/// The default [`HubConfig::sweep_grace`]: twice `offline_after`, and at least 5 s.
pub fn sweep_grace(offline_after: Duration) -> Duration {
    (offline_after * 2).max(Duration::from_secs(5))
}

/// What every request handler shares.
#[derive(Clone)]
pub struct HubState {
    pub db: db::Db,
    pub config: Arc<HubConfig>,
    /// Wakes waiting claims on this hub when a job is submitted here.
    pub queue_signal: Arc<tokio::sync::Notify>,
    /// Nodes authenticated in the last second.
    pub nodes: Arc<nodes_cache::NodesCache>,
    /// What this hub measures itself for `/metrics`.
    pub metrics: Arc<metrics::HubMetrics>,
    /// Claims waiting on this hub, per node.
    pub long_polls: Arc<long_polls::LongPolls>,
}

/// Creates the admin token if the database has none; returns it (to show once) if it did.
pub async fn ensure_admin_token(db: &db::Db) -> Result<Option<String>, db::DbError> {
    if db.admin_token_hash().await?.is_some() {
        return Ok(None);
    }
    let token = auth::new_admin_token();
    // Another hub on the same database may have won the race; then its token stands.
    Ok(db.create_admin_token(&auth::hash(&token)).await?.then_some(token))
}

/// Serves the hub on `listener` (plain HTTP, or HTTPS with `tls`) until `shutdown` is
/// cancelled, then drains requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    db: db::Db,
    config: HubConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Reads this process's clock once, so a fake skew (tests only) is in the log from the start.
    let _ = db::now_ms();
    let state = HubState {
        db,
        config: Arc::new(config),
        queue_signal: Arc::new(tokio::sync::Notify::new()),
        nodes: Arc::default(),
        metrics: Arc::default(),
        long_polls: Arc::default(),
    };
    let sweeper = tokio::spawn(sweep(state.clone(), shutdown.clone()));
    let limits = server::Limits {
        max_connections: state.config.max_connections,
        per_address: state.config.max_connections_per_address,
    };
    let result = server::run(listener, tls, api::router(state), limits, shutdown.clone()).await;
    shutdown.cancel();
    let _ = sweeper.await;
    result
}

/// A node's first heartbeat after its process started: whatever runs the hub has it holding
/// were lost with the process before (killed or crashed, and back before it was Offline), so
/// they go back to the queue now rather than wait for a sweep that would never come.
pub(crate) async fn requeue_runs_of_restarted(
    state: &HubState,
    node_id: &str,
    node_name: &str,
    now_ms: i64,
) -> Result<(), db::DbError> {
    let requeued = state.db.requeue_runs_of_restarted_node(node_id, now_ms).await?;
    if requeued > 0 {
        tracing::info!(node = node_name, runs = requeued, "runs of a restarted node went back to the queue");
        state.queue_signal.notify_waiters();
    }
    Ok(())
}

/// Puts the runs of nodes that went Offline back in the queue, forever, once the grace after
/// this hub's start has passed.
async fn sweep(state: HubState, shutdown: CancellationToken) {
    let grace_ends = tokio::time::Instant::now() + state.config.sweep_grace;
    let hub_started_ms = state.db.clock_ms().await.unwrap_or_else(|_| db::now_ms());
    let mut tick = tokio::time::interval(state.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
    let (offline_after, handoff_timeout) =
        (millis(state.config.offline_after), millis(state.config.handoff_timeout));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if tokio::time::Instant::now() < grace_ends {
            continue;
        }
        let now = match state.db.clock_ms().await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!("couldn't look for runs of offline nodes: {e}");
                continue;
            }
        };
        let lost = db::Sweep {
            cutoff_ms: now - offline_after,
            handoff_cutoff_ms: now - handoff_timeout,
            hub_started_ms,
            now_ms: now,
        };
        match state.db.requeue_lost_runs(&lost).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(runs = n, "runs of offline nodes went back to the queue");
                state.queue_signal.notify_waiters();
            }
            Err(e) => tracing::warn!("couldn't look for runs of offline nodes: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{GatewaySettings, RunState};

    /// A database with one gateway whose one node holds a dispatched run and never sent a
    /// heartbeat: a lost run, as far as the sweeper can tell. Returns the run's id.
    async fn a_lost_run(db: &db::Db) -> String {
        let now = db::now_ms();
        let gateway = db::GatewayRow {
            id: "g".into(),
            name: "g".into(),
            settings: GatewaySettings::default(),
            encryption: false,
            primary_key_hash: String::new(),
            primary_key_hint: String::new(),
            primary_key_created_ms: now,
            secondary_key_hash: String::new(),
            secondary_key_hint: String::new(),
            secondary_key_created_ms: now,
            lease_node_id: None,
            lease_expires_ms: 0,
            lease_epoch: 0,
            created_ms: now,
        };
        db.insert_gateway(&gateway).await.unwrap();
        let new = db::NewNode {
            id: "n".into(),
            name: "n".into(),
            machine_id: "m".into(),
            token_hash: String::new(),
            version: crate::VERSION.into(),
            peer_address: "127.0.0.1:1".into(),
            encryption_thumbprint: None,
            public_key: String::new(),
            now_ms: now,
        };
        db.register_node("g", &new, None, |_, _, _| Ok::<(), ()>(())).await.unwrap().unwrap();
        let node = db.node("n").await.unwrap().unwrap();
        let job = db::JobRow {
            id: "j".into(),
            gateway_id: "g".into(),
            name: "j".into(),
            spec: "{}".into(),
            created_ms: now,
            rerun_of: None,
        };
        let run = db::NewRun {
            id: "r".into(),
            activity_index: 0,
            partition_index: 0,
            activity: r#"{"kind":"sleep","millis":1,"partitions":1}"#.into(),
            part: None,
            progress: None,
        };
        db.insert_job(&job, &[run]).await.unwrap();
        let lease = db.acquire_lease("g", "n", now, Duration::from_secs(60)).await.unwrap();
        let claimed = db.claim_runs("g", &node, lease.epoch, 1, now).await.unwrap();
        assert_eq!(claimed.len(), 1);
        "r".to_owned()
    }

    #[tokio::test]
    async fn the_sweeper_waits_out_its_grace_after_the_hub_starts_then_requeues_with_a_new_queue_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = db::Db::open(&db::sqlite_url(&dir.path().join("hub.db"))).await.unwrap();
        let run = a_lost_run(&db).await;
        let queued_first = db.run(&run).await.unwrap().unwrap().queued_ms;
        let mut config = HubConfig::new("http://127.0.0.1:1");
        config.offline_after = Duration::from_millis(100);
        config.sweep_interval = Duration::from_millis(20);
        config.sweep_grace = Duration::from_millis(800);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let started = db::now_ms();
        let hub = tokio::spawn(serve(listener, None, db.clone(), config, shutdown.clone()));

        tokio::time::sleep(Duration::from_millis(400)).await;
        let during = db.run(&run).await.unwrap().unwrap();
        assert_eq!((during.state, during.attempt), (RunState::Dispatched, 1), "re-queued within the grace");

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let after = loop {
            let row = db.run(&run).await.unwrap().unwrap();
            if row.state == RunState::Queued || tokio::time::Instant::now() > deadline {
                break row;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!((after.state, after.attempt), (RunState::Queued, 2), "not re-queued after the grace");
        assert!(after.queued_ms >= started + 800 && after.queued_ms > queued_first, "{after:?}");
        let history = db.attempts_of_job("j").await.unwrap();
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!((history[0].attempt, history[0].outcome.as_str()), (1, "lost"));
        assert_eq!(
            history[0].error.as_deref(),
            Some("the hub restarted and node n did not send a heartbeat within the grace after it"),
            "the node was last heard of before this hub started"
        );
        shutdown.cancel();
        hub.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_cancel_ends_every_open_run_once_and_records_the_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let db = db::Db::open(&db::sqlite_url(&dir.path().join("hub.db"))).await.unwrap();
        let run = a_lost_run(&db).await;
        let cancelled = db.cancel_job("j", 1234).await.unwrap();
        assert_eq!(
            cancelled.iter().map(|r| (r.id.as_str(), r.state)).collect::<Vec<_>>(),
            [("r", RunState::Cancelled)]
        );
        let row = db.run(&run).await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.finished_ms, row.node_name.as_deref()),
            (RunState::Cancelled, Some(1234), Some("n"))
        );
        let history = db.attempts_of_job("j").await.unwrap();
        assert_eq!(
            history
                .iter()
                .map(|a| (a.attempt, a.node_name.as_deref(), a.outcome.as_str()))
                .collect::<Vec<_>>(),
            [(1, Some("n"), "cancelled")]
        );
        assert!(db.cancel_job("j", 5678).await.unwrap().is_empty(), "a second cancel finds nothing open");
        assert_eq!(
            db.requeue_lost_runs(&db::Sweep {
                cutoff_ms: i64::MAX,
                handoff_cutoff_ms: i64::MAX,
                hub_started_ms: 0,
                now_ms: 9999
            })
            .await
            .unwrap(),
            0,
            "cancelled runs are never lost"
        );
    }

    #[tokio::test]
    async fn a_new_dispatcher_puts_the_unstarted_claims_of_the_last_back_in_the_queue_at_the_same_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let db = db::Db::open(&db::sqlite_url(&dir.path().join("hub.db"))).await.unwrap();
        let run = a_lost_run(&db).await;
        let ttl = Duration::from_secs(60);
        let now = db::now_ms();
        // Renewing your own lease, or another node asking while it is held, changes nothing.
        db.acquire_lease("g", "n", now, ttl).await.unwrap();
        let held = db.acquire_lease("g", "other", now, ttl).await.unwrap();
        assert_eq!(held.holder.as_deref(), Some("n"));
        assert_eq!(db.run(&run).await.unwrap().unwrap().state, RunState::Dispatched);

        // The lease lapses (no beats for a minute): the next node takes it and the claim.
        let later = now + 61_000;
        let taken = db.acquire_lease("g", "other", later, ttl).await.unwrap();
        assert_eq!((taken.holder.as_deref(), taken.epoch), (Some("other"), held.epoch + 1));
        let row = db.run(&run).await.unwrap().unwrap();
        assert_eq!((row.state, row.attempt, row.node_id.as_deref()), (RunState::Queued, 1, None));
        assert!(db.attempts_of_job("j").await.unwrap().is_empty(), "nothing was lost: {row:?}");
        // The old dispatcher's renewal doesn't get the lease back.
        let refused = db.acquire_lease("g", "n", later, ttl).await.unwrap();
        assert_eq!(refused.holder.as_deref(), Some("other"));
    }

    #[test]
    fn the_default_grace_is_twice_offline_after_and_at_least_five_seconds() {
        assert_eq!(HubConfig::new("http://hub").sweep_grace, Duration::from_secs(6));
        assert_eq!(sweep_grace(Duration::from_secs(1)), Duration::from_secs(5));
    }
}
