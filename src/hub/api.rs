//! The hub's HTTP API (axum): the router, one line a route. Handlers live by resource in the
//! child modules (gateways, nodes, jobs, runs, tokens, metrics, join_keys, the status page),
//! with the extractors they share (`extract`: bodies, paths, queries; `access`: who asks).
//! Handlers check input, call `db` and `status`, and shape `protocol` views; they never write
//! SQL.

use super::HubState;
use super::error::ApiError;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post};
use extract::{MAX_BODY_BYTES, limited};
use runs::{MAX_PROGRESS_BODY_BYTES, MAX_SPLIT_BODY_BYTES};

mod access;
mod credentials;
mod extract;
mod gateways;
mod jobs;
mod join_keys;
mod metrics;
mod nodes;
mod page;
mod releases;
mod runs;
mod tokens;

/// The whole API; tests can call it in-process.
pub fn router(state: HubState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/gateways", post(gateways::create_gateway).get(gateways::list_gateways))
        .route("/api/v1/gateways/{gateway}", get(gateways::show_gateway).delete(gateways::delete_gateway))
        .route("/api/v1/gateways/{gateway}/settings", patch(gateways::update_settings))
        .route("/api/v1/gateways/{gateway}/keys", get(gateways::show_keys))
        .route("/api/v1/gateways/{gateway}/keys/{slot}/regenerate", post(gateways::regenerate_key))
        .route("/api/v1/gateways/{gateway}/join-keys", post(join_keys::create).get(join_keys::list))
        .route("/api/v1/gateways/{gateway}/join-keys/{key}", delete(join_keys::revoke))
        .route("/api/v1/gateways/{gateway}/credentials", get(credentials::show).post(credentials::put))
        .route("/api/v1/gateways/{gateway}/nodes", get(gateways::list_nodes))
        .route("/api/v1/gateways/{gateway}/nodes/{node}", delete(gateways::remove_node))
        .route("/api/v1/gateways/{gateway}/jobs", post(jobs::submit_job).get(jobs::list_jobs))
        .route("/api/v1/jobs/{job}", get(jobs::show_job))
        .route("/api/v1/jobs/{job}/cancel", post(jobs::cancel_job))
        .route("/api/v1/jobs/{job}/rerun", post(jobs::rerun_job))
        .route("/api/v1/audit", get(tokens::show_audit))
        .route("/api/v1/tokens", post(tokens::create_token).get(tokens::list_tokens))
        .route("/api/v1/tokens/{token}", delete(tokens::revoke_token))
        .route("/api/v1/admin-token/rotate", post(tokens::rotate_admin_token))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/register", post(nodes::register))
        .route("/api/v1/heartbeat", post(nodes::heartbeat))
        .route("/api/v1/unregister", post(nodes::unregister))
        .route("/api/v1/node/jobs", get(nodes::node_jobs))
        .route("/api/v1/dispatch/claim", post(runs::claim))
        .route("/api/v1/runs/{run}/assign", post(runs::assign))
        .route("/api/v1/runs/{run}/start", post(runs::start))
        .route("/api/v1/runs/{run}/progress", limited(post(runs::progress), MAX_PROGRESS_BODY_BYTES))
        .route("/api/v1/runs/{run}/split", limited(post(runs::split), MAX_SPLIT_BODY_BYTES))
        .route("/api/v1/runs/{run}/finish", post(runs::finish))
        .route("/api/v1/releases", post(releases::create).get(releases::list))
        .route(
            "/api/v1/releases/{release}/parts/{seq}",
            limited(axum::routing::put(releases::put_part), crate::protocol::RELEASE_PART_BYTES + 1024),
        )
        .route("/api/v1/releases/{release}/publish", post(releases::publish))
        .route("/api/v1/releases/{release}/file", get(releases::file))
        .fallback(|| async { ApiError::not_found("no such API route; see `gatehouse hub --help`") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this route doesn't take that HTTP method")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
