//! The hub (control plane): gateways, auth keys, node registration, heartbeats and statuses,
//! the dispatcher lease and the job queue, served over HTTP by axum on top of [`db::Db`].
//! All state that matters is in the database, so hubs can restart or run side by side on one
//! PostgreSQL database.

pub mod api;
mod auth;
pub mod db;
pub mod embedded;
mod error;
mod nodes_cache;
mod page;
pub mod progress;
mod registration;
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
    /// A run handed out that no worker has started after the gateway's queue timeout plus
    /// this long goes back to the queue.
    pub handoff_timeout: Duration,
    /// How often a waiting claim looks for work that another hub queued.
    pub poll_interval: Duration,
}

impl HubConfig {
    pub fn new(public_url: impl Into<String>) -> Self {
        HubConfig {
            public_url: public_url.into(),
            offline_after: Duration::from_secs(3),
            // Two heartbeats: one lost heartbeat is tolerated, and failover (lease lapse plus
            // the next node's heartbeat) stays under 3 s.
            lease_ttl: Duration::from_secs(2),
            sweep_interval: Duration::from_millis(250),
            handoff_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
        }
    }
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
    let state = HubState {
        db,
        config: Arc::new(config),
        queue_signal: Arc::new(tokio::sync::Notify::new()),
        nodes: Arc::default(),
    };
    let sweeper = tokio::spawn(sweep(state.clone(), shutdown.clone()));
    let app = api::router(state);
    let stopped = shutdown.clone().cancelled_owned();
    let result = match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(stopped).await,
        Some(config) => {
            axum::serve(tls::TlsListener::new(listener, config)?, app).with_graceful_shutdown(stopped).await
        }
    };
    shutdown.cancel();
    let _ = sweeper.await;
    result
}

/// Puts the runs of nodes that went Offline back in the queue, forever.
async fn sweep(state: HubState, shutdown: CancellationToken) {
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
        let now = db::now_ms();
        match state.db.requeue_lost_runs(now - offline_after, now - handoff_timeout, now).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(runs = n, "runs of offline nodes went back to the queue");
                state.queue_signal.notify_waiters();
            }
            Err(e) => tracing::warn!("couldn't look for runs of offline nodes: {e}"),
        }
    }
}
