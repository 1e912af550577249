//! The hub's HTTP API (axum): routes, authentication extractors and handlers. Handlers check
//! input, call `db` and `status`, and shape `protocol` views; they never write SQL.

use super::audit::{self, Actor};
use super::db::{
    self, GatewayRow, JobFilter, JobRow, NewNode, NewPart, NewRun, NodeRow, RunEnd, RunRow, Split, now_ms,
};
use super::error::ApiError;
use super::{HubState, auth, history, page, status};
use crate::protocol::{
    Activity, AssignRun, AuditEntry, AuthKeys, ClaimRequest, CreateGateway, CreateToken, CreatedGateway,
    CreatedToken, FinishRun, GatewaySettings, GatewayView, Heartbeat, HeartbeatResponse, JobSpec, JobView,
    JobsQuery, KeyInfo, KeySlot, NodeState, NodeView, Part, Peer, RegeneratedKey, RegisterRequest,
    RegisterResponse, Role, RunProgress, RunState, RunView, SettingsPatch, SplitRun, StartRun, SubmitJob,
    TokenInfo, TokenKind, TransferProgress,
};
use crate::transfer::spec::{self, MAX_PARTITIONS};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{MethodRouter, delete, get, patch, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::time::Duration;

mod join_keys;
mod releases;

/// Request bodies above this are refused with 413 before they are parsed.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// A progress report may carry a checkpoint: a large upload's stored part ids (S3 allows
/// 10,000 parts, some 40 bytes of JSON each) and the files done so far.
const MAX_PROGRESS_BODY_BYTES: usize = 4 << 20;
/// A split carries the whole listing: up to 10,000 parts of up to 256 files each, about 100
/// bytes of JSON a file. Only an authenticated node gets this far (the token is checked before
/// the body is read).
const MAX_SPLIT_BODY_BYTES: usize = 256 << 20;
/// The most runs one job may have in all, its copies' parts included: a job of many copies
/// can't fill the hub's database by itself.
const MAX_RUNS_PER_JOB: i64 = 50_000;
/// Longest a dispatcher's claim may wait for work.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);

/// The whole API; tests can call it in-process.
pub fn router(state: HubState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/gateways", post(create_gateway).get(list_gateways))
        .route("/api/v1/gateways/{gateway}", get(show_gateway).delete(delete_gateway))
        .route("/api/v1/gateways/{gateway}/settings", patch(update_settings))
        .route("/api/v1/gateways/{gateway}/keys", get(show_keys))
        .route("/api/v1/gateways/{gateway}/keys/{slot}/regenerate", post(regenerate_key))
        .route("/api/v1/gateways/{gateway}/join-keys", post(join_keys::create).get(join_keys::list))
        .route("/api/v1/gateways/{gateway}/join-keys/{key}", delete(join_keys::revoke))
        .route("/api/v1/gateways/{gateway}/nodes", get(list_nodes))
        .route("/api/v1/gateways/{gateway}/nodes/{node}", delete(remove_node))
        .route("/api/v1/gateways/{gateway}/jobs", post(submit_job).get(list_jobs))
        .route("/api/v1/jobs/{job}", get(show_job))
        .route("/api/v1/jobs/{job}/cancel", post(cancel_job))
        .route("/api/v1/jobs/{job}/rerun", post(rerun_job))
        .route("/api/v1/audit", get(show_audit))
        .route("/api/v1/tokens", post(create_token).get(list_tokens))
        .route("/api/v1/tokens/{token}", delete(revoke_token))
        .route("/api/v1/admin-token/rotate", post(rotate_admin_token))
        .route("/metrics", get(metrics))
        .route("/api/v1/register", post(register))
        .route("/api/v1/heartbeat", post(heartbeat))
        .route("/api/v1/unregister", post(unregister))
        .route("/api/v1/node/jobs", get(node_jobs))
        .route("/api/v1/dispatch/claim", post(claim))
        .route("/api/v1/runs/{run}/assign", post(assign))
        .route("/api/v1/runs/{run}/start", post(start))
        .route("/api/v1/runs/{run}/progress", limited(post(progress), MAX_PROGRESS_BODY_BYTES))
        .route("/api/v1/runs/{run}/split", limited(post(split), MAX_SPLIT_BODY_BYTES))
        .route("/api/v1/runs/{run}/finish", post(finish))
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

/// A route whose bodies may be larger than [`MAX_BODY_BYTES`]. The route's limit overrides
/// the router's, and is kept beside it for the 413 sentence.
fn limited(route: MethodRouter<HubState>, bytes: usize) -> MethodRouter<HubState> {
    route
        .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(bytes))
        .layer(Extension(BodyLimit(bytes)))
}

/// The body limit of a route that has its own ([`limited`]).
#[derive(Clone, Copy)]
struct BodyLimit(usize);

// ---- extractors ----

/// A JSON body whose every rejection (bad JSON, unknown field, too large, wrong type) is a
/// 4xx with our JSON error body.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json =
            req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(
                |v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")),
            );
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let limit = req.extensions().get::<BodyLimit>().map_or(MAX_BODY_BYTES, |l| l.0);
        let body = axum::body::Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, format!("the request body is larger than {limit} bytes"))
            } else {
                ApiError::new(status, format!("the request body can't be read: {}", rejection.body_text()))
            }
        })?;
        // JSON can carry NUL only as \u0000; no name, key or message needs it, and
        // PostgreSQL text can't hold it, so refuse it for every request the same way.
        if body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
            return Err(ApiError::bad_request(
                "the request contains a NUL character (\\u0000), which no field may hold",
            ));
        }
        match Json::<T>::from_bytes(&body) {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_error(&rejection, limit)),
        }
    }
}

/// Path parameters whose rejection (e.g. invalid UTF-8) is a 400 with our JSON error body.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul(parts.uri.path(), "URL")?;
        Path::<T>::from_request_parts(parts, state).await.map(|Path(value)| ApiPath(value)).map_err(
            |rejection| ApiError::bad_request(format!("the URL is not valid: {}", rejection.body_text())),
        )
    }
}

/// A percent-encoded NUL (`%00`) in a URL's path or query: refused like one in a body.
fn refuse_nul(text: &str, what: &str) -> Result<(), ApiError> {
    if text.as_bytes().windows(3).any(|w| w.eq_ignore_ascii_case(b"%00")) {
        return Err(ApiError::bad_request(format!(
            "the {what} contains a NUL character (%00), which no name or id holds"
        )));
    }
    Ok(())
}

fn json_error(rejection: &JsonRejection, limit: usize) -> ApiError {
    let status = rejection.status();
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("the request body is larger than {limit} bytes"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "send the body as JSON with Content-Type: application/json".to_owned()
        }
        _ => format!("the request body is not valid: {}", rejection.body_text()),
    };
    ApiError::new(status, error)
}

/// A query string whose rejection is a 400 with our JSON error body.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul(parts.uri.query().unwrap_or_default(), "query string")?;
        Query::<T>::from_request_parts(parts, state).await.map(|Query(value)| ApiQuery(value)).map_err(
            |rejection| {
                ApiError::bad_request(format!("the query string is not valid: {}", rejection.body_text()))
            },
        )
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The caller presented the admin token.
pub struct Admin;

impl FromRequestParts<HubState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HubState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("this request needs the admin token").with_hint(
                "send it as `Authorization: Bearer gha_…`; the hub printed it when it first started",
            )
        })?;
        if !is_admin_token(state, token).await? {
            return Err(ApiError::unauthorized("the admin token is not valid for this hub").with_hint(
                "use the token this hub printed at its first start (GATEHOUSE_ADMIN_TOKEN or --token-file)",
            ));
        }
        Ok(Admin)
    }
}

/// Whether `token` is the hub's admin token (constant-time).
async fn is_admin_token(state: &HubState, token: &str) -> Result<bool, ApiError> {
    let stored = state.db.admin_token_hash().await?.unwrap_or_default();
    Ok(!stored.is_empty() && auth::verify(token, &stored))
}

/// How a token that isn't the admin token fares for a request that needs `kind`.
enum PurposeToken {
    /// A live token of that kind.
    Valid,
    /// A purpose token, but revoked, unknown, of another kind or with a wrong secret.
    Invalid,
    /// Not shaped like a purpose token at all.
    NotOne,
}

async fn purpose_token(state: &HubState, token: &str, kind: TokenKind) -> Result<PurposeToken, ApiError> {
    let Some((claimed, id)) = auth::purpose_token_id(token) else { return Ok(PurposeToken::NotOne) };
    Ok(match state.db.live_token(id).await? {
        Some((row, hash)) if claimed == kind && row.kind == kind.as_str() && auth::verify(token, &hash) => {
            PurposeToken::Valid
        }
        _ => PurposeToken::Invalid,
    })
}

/// The caller may read `/metrics`: the hub serves them publicly (`--public-metrics`), or the
/// request carries a live metrics token or the admin token.
pub struct MetricsAuth;

impl FromRequestParts<HubState> for MetricsAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HubState) -> Result<Self, Self::Rejection> {
        if state.config.public_metrics {
            return Ok(MetricsAuth);
        }
        let refused = || {
            ApiError::unauthorized("/metrics needs a metrics token (`Authorization: Bearer ghm_…`)").with_hint(
                "make one with: gatehouse hub token create --metrics (or start the hub with --public-metrics)",
            )
        };
        let token = bearer(parts).ok_or_else(refused)?;
        match purpose_token(state, token, TokenKind::Metrics).await? {
            PurposeToken::Valid => Ok(MetricsAuth),
            PurposeToken::Invalid => {
                Err(ApiError::unauthorized("the metrics token is not valid (it may have been revoked)")
                    .with_hint("list tokens with: gatehouse hub token list"))
            }
            PurposeToken::NotOne if is_admin_token(state, token).await? => Ok(MetricsAuth),
            PurposeToken::NotOne => Err(refused()),
        }
    }
}

/// The caller may read the status page: it is public (`--public-status`), or the request
/// carries the admin token or a live viewer token, as a bearer token or as the password of
/// HTTP Basic authentication (what a browser's login prompt sends; the user name is ignored).
pub struct Viewer;

/// The status page's answer to a caller without a valid token: 401 with a Basic challenge, so
/// a browser asks for the token, and a page that says which tokens work.
pub struct LoginNeeded(&'static str);

impl axum::response::IntoResponse for LoginNeeded {
    fn into_response(self) -> axum::response::Response {
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Gatehouse hub: sign in</title></head>\
             <body><h1>Sign in to the Gatehouse hub</h1><p>{}</p><p>Sign in with the hub's admin token or a \
             viewer token as the password (any user name). An administrator makes a viewer token with \
             <code>gatehouse hub token create --viewer</code>.</p></body></html>",
            self.0
        );
        (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Basic realm=\"Gatehouse hub\", charset=\"UTF-8\"")],
            axum::response::Html(body),
        )
            .into_response()
    }
}

impl FromRequestParts<HubState> for Viewer {
    type Rejection = axum::response::Response;

    async fn from_request_parts(parts: &mut Parts, state: &HubState) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse as _;
        if state.config.public_status {
            return Ok(Viewer);
        }
        let Some(token) = bearer(parts).map(str::to_owned).or_else(|| basic_password(parts)) else {
            return Err(LoginNeeded("The status page needs a token.").into_response());
        };
        let valid = match purpose_token(state, &token, TokenKind::Viewer).await {
            Ok(PurposeToken::Valid) => true,
            Ok(PurposeToken::Invalid) => false,
            Ok(PurposeToken::NotOne) => {
                is_admin_token(state, &token).await.map_err(axum::response::IntoResponse::into_response)?
            }
            Err(e) => return Err(e.into_response()),
        };
        if valid {
            Ok(Viewer)
        } else {
            Err(LoginNeeded("That token is not valid here (a viewer token may have been revoked).")
                .into_response())
        }
    }
}

/// The password of an `Authorization: Basic` header, if it has one.
fn basic_password(parts: &Parts) -> Option<String> {
    use base64::Engine as _;
    let encoded =
        parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.trim().to_owned())
}

/// The caller is a registered node, proven by its node token.
pub struct NodeAuth(pub NodeRow);

impl FromRequestParts<HubState> for NodeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HubState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("this request needs the node token (`Authorization: Bearer ghn_…`)")
        })?;
        let not_registered = || {
            ApiError::unauthorized("this node is not registered with the hub (it may have been removed)")
                .with_hint("register it again with an auth key: gatehouse node register --key …")
        };
        let node_id = auth::node_of_token(token).ok_or_else(not_registered)?;
        let node = if let Some(node) = state.nodes.get(node_id) {
            node
        } else {
            let node = state.db.node(node_id).await?.ok_or_else(not_registered)?;
            state.nodes.put(&node);
            node
        };
        if !auth::verify(token, &node.token_hash) {
            return Err(not_registered());
        }
        Ok(NodeAuth(node))
    }
}

// ---- gateways ----

async fn create_gateway(
    State(state): State<HubState>,
    _: Admin,
    ApiJson(request): ApiJson<CreateGateway>,
) -> Result<(StatusCode, Json<CreatedGateway>), ApiError> {
    let name = request.name.trim();
    validate_name(name, "gateway")?;
    validate_settings(&request.settings)?;
    let id = auth::new_id();
    let primary = auth::new_auth_key(&state.config.public_url, &id);
    let secondary = auth::new_auth_key(&state.config.public_url, &id);
    let now = now_ms();
    let row = GatewayRow {
        id: id.clone(),
        name: name.to_owned(),
        settings: request.settings,
        encryption: false,
        primary_key_hash: auth::hash(&primary),
        primary_key_hint: auth::key_hint(&primary),
        primary_key_created_ms: now,
        secondary_key_hash: auth::hash(&secondary),
        secondary_key_hint: auth::key_hint(&secondary),
        secondary_key_created_ms: now,
        lease_node_id: None,
        lease_expires_ms: 0,
        lease_epoch: 0,
        created_ms: now,
    };
    state.db.insert_gateway(&row).await?;
    tracing::info!(gateway = %row.name, "gateway created");
    audit::record(
        &state,
        Some(&row),
        Actor::Admin,
        "gateway.create",
        format!("gateway '{}' created", row.name),
    )
    .await;
    let gateway = gateway_view(&state, &row, Vec::new()).await?;
    Ok((StatusCode::CREATED, Json(CreatedGateway { gateway, keys: AuthKeys { primary, secondary } })))
}

async fn list_gateways(State(state): State<HubState>, _: Admin) -> Result<Json<Vec<GatewayView>>, ApiError> {
    Ok(Json(all_gateway_views(&state).await?))
}

/// Every gateway with its nodes and statuses (also for the status page).
pub async fn all_gateway_views(state: &HubState) -> Result<Vec<GatewayView>, ApiError> {
    gateway_views(state, &state.db.gateways().await?).await
}

/// The views of `gateways` (rows just read), with their nodes and statuses.
async fn gateway_views(state: &HubState, gateways: &[GatewayRow]) -> Result<Vec<GatewayView>, ApiError> {
    let mut views = Vec::with_capacity(gateways.len());
    for gateway in gateways {
        let nodes = state.db.nodes(&gateway.id).await?;
        views.push(gateway_view(state, gateway, nodes).await?);
    }
    Ok(views)
}

async fn show_gateway(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
) -> Result<Json<GatewayView>, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    let nodes = state.db.nodes(&gateway.id).await?;
    Ok(Json(gateway_view(&state, &gateway, nodes).await?))
}

async fn delete_gateway(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    let nodes = state.db.nodes(&gateway.id).await?;
    state.db.delete_gateway(&gateway.id).await?;
    // Its nodes' tokens stop working here at once, as a removed node's do.
    for node in &nodes {
        state.nodes.forget(&node.id);
    }
    tracing::info!(gateway = %gateway.name, "gateway deleted with its nodes and jobs");
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let detail = format!("gateway '{}' deleted with its nodes ({}) and jobs", gateway.name, names.join(", "));
    audit::record(&state, Some(&gateway), Actor::Admin, "gateway.delete", detail).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn update_settings(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
    ApiJson(update): ApiJson<SettingsPatch>,
) -> Result<Json<GatewayView>, ApiError> {
    let mut gateway = find_gateway(&state, &gateway).await?;
    let before = gateway.settings.clone();
    let s = &mut gateway.settings;
    s.max_nodes = update.max_nodes.unwrap_or(s.max_nodes);
    s.policy = update.policy.unwrap_or(s.policy);
    s.cpu_threshold = update.cpu_threshold.unwrap_or(s.cpu_threshold);
    s.memory_threshold = update.memory_threshold.unwrap_or(s.memory_threshold);
    s.aggregation_minutes = update.aggregation_minutes.unwrap_or(s.aggregation_minutes);
    s.queue_timeout_seconds = update.queue_timeout_seconds.unwrap_or(s.queue_timeout_seconds);
    s.bandwidth_limit_mbps = update.bandwidth_limit_mbps.unwrap_or(s.bandwidth_limit_mbps);
    validate_settings(&gateway.settings)?;
    state.db.update_settings(&gateway.id, &gateway.settings).await?;
    let changed = settings_changes(&before, &gateway.settings);
    if !changed.is_empty() {
        audit::record(&state, Some(&gateway), Actor::Admin, "settings.update", changed.join(", ")).await;
    }
    let nodes = state.db.nodes(&gateway.id).await?;
    Ok(Json(gateway_view(&state, &gateway, nodes).await?))
}

async fn show_keys(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    let g = find_gateway(&state, &gateway).await?;
    Ok(Json(vec![
        KeyInfo { slot: KeySlot::Primary, hint: g.primary_key_hint, created_ms: g.primary_key_created_ms },
        KeyInfo {
            slot: KeySlot::Secondary,
            hint: g.secondary_key_hint,
            created_ms: g.secondary_key_created_ms,
        },
    ]))
}

async fn regenerate_key(
    State(state): State<HubState>,
    _: Admin,
    ApiPath((gateway, slot)): ApiPath<(String, String)>,
) -> Result<Json<RegeneratedKey>, ApiError> {
    let slot = match slot.as_str() {
        "primary" => KeySlot::Primary,
        "secondary" => KeySlot::Secondary,
        other => {
            return Err(ApiError::bad_request(format!("no key slot {other:?}; use primary or secondary")));
        }
    };
    let gateway = find_gateway(&state, &gateway).await?;
    let key = auth::new_auth_key(&state.config.public_url, &gateway.id);
    state.db.set_key(&gateway.id, slot, &auth::hash(&key), &auth::key_hint(&key)).await?;
    tracing::info!(gateway = %gateway.name, ?slot, "auth key regenerated");
    let detail = format!("{} auth key regenerated (now {})", slot_name(slot), auth::key_hint(&key));
    audit::record(&state, Some(&gateway), Actor::Admin, "key.regenerate", detail).await;
    Ok(Json(RegeneratedKey { slot, key }))
}

async fn list_nodes(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
) -> Result<Json<Vec<NodeView>>, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    let nodes = state.db.nodes(&gateway.id).await?;
    Ok(Json(gateway_view(&state, &gateway, nodes).await?.nodes))
}

async fn remove_node(
    State(state): State<HubState>,
    _: Admin,
    ApiPath((gateway, node)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    let nodes = state.db.nodes(&gateway.id).await?;
    let node = nodes.iter().find(|n| n.id == node || n.name == node).ok_or_else(|| {
        ApiError::not_found(format!("gateway '{}' has no node '{node}'", gateway.name))
            .with_hint(format!("list its nodes with: gatehouse hub node list {}", gateway.name))
    })?;
    state.db.delete_node(&node.id).await?;
    state.nodes.forget(&node.id);
    tracing::info!(gateway = %gateway.name, node = %node.name, "node removed");
    let detail = format!("node '{}' removed; its token no longer works", node.name);
    audit::record(&state, Some(&gateway), Actor::Admin, "node.remove", detail).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- registration and heartbeats ----

async fn register(
    State(state): State<HubState>,
    parts: Parts,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    let key = bearer(&parts).ok_or_else(|| {
        ApiError::unauthorized("registration needs a gateway auth key (`Authorization: Bearer gh1_…`)")
    })?;
    let parsed = auth::parse_auth_key(key).map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let invalid_key = || {
        ApiError::unauthorized("the auth key is not valid for this gateway (it may have been regenerated)")
            .with_hint("copy a current key from the hub admin: gatehouse hub key regenerate")
    };
    let gateway =
        state.db.gateway(&parsed.gateway_id).await?.filter(|g| g.id == parsed.gateway_id).ok_or_else(
            || {
                ApiError::unauthorized(
                    "the auth key belongs to a gateway this hub doesn't have (it may have been deleted)",
                )
            },
        )?;
    // Check both slots every time, so timing doesn't tell which one matched.
    let primary = auth::verify(key, &gateway.primary_key_hash);
    let secondary = auth::verify(key, &gateway.secondary_key_hash);
    let join_key = if primary | secondary {
        None
    } else {
        Some(join_keys::usable(&state, &gateway, key).await?.ok_or_else(invalid_key)?)
    };
    let name = request.name.trim().to_owned();
    validate_name(&name, "node")?;
    if request.machine_id.trim().is_empty() || request.version.trim().is_empty() {
        return Err(ApiError::bad_request("machine_id and version must not be empty"));
    }
    let node_id = auth::new_id();
    let token = auth::new_node_token(&node_id);
    let new = NewNode {
        id: node_id.clone(),
        name: name.clone(),
        machine_id: request.machine_id.trim().to_owned(),
        token_hash: auth::hash(&token),
        version: request.version.trim().to_owned(),
        peer_address: request.peer_address.trim().to_owned(),
        encryption_thumbprint: request.encryption_thumbprint.clone(),
        public_key: public_key(request.public_key.as_deref())?.unwrap_or_default(),
        now_ms: now_ms(),
    };
    let refusal = state
        .db
        .register_node(&gateway.id, &new, join_key.as_deref(), |gateway, nodes, existing| {
            super::registration::check(gateway, nodes, existing, &new)
        })
        .await?;
    refusal.map_err(ApiError::from)?;
    tracing::info!(gateway = %gateway.name, node = %name, "node registered");
    let slot = match (&join_key, primary) {
        (Some(id), _) => format!("auth key {id}"),
        (None, true) => "primary auth key".to_owned(),
        (None, false) => "secondary auth key".to_owned(),
    };
    let detail = format!("node '{name}' registered with the {slot}, version {}", new.version);
    audit::record(&state, Some(&gateway), Actor::Node(name.clone()), "node.register", detail).await;
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            node_id,
            gateway_id: gateway.id,
            gateway_name: gateway.name,
            node_token: token,
        }),
    ))
}

/// A node's peer-channel public key as sent (base64 of 32 bytes), checked; `None` when not sent.
fn public_key(sent: Option<&str>) -> Result<Option<String>, ApiError> {
    use base64::Engine as _;
    let Some(key) = sent.map(str::trim).filter(|k| !k.is_empty()) else { return Ok(None) };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(bytes) if bytes.len() == 32 => Ok(Some(key.to_owned())),
        _ => Err(ApiError::bad_request("public_key must be a base64 X25519 public key (32 bytes)")),
    }
}

/// A node registered by an older version announces the key pair it made on upgrade; the hub
/// takes the first one it hears and never replaces it, so a stolen node token alone can't
/// take over the node's place in its peers' rosters.
async fn announce_key(
    state: &HubState,
    node: &NodeRow,
    stored: &mut String,
    key: String,
) -> Result<(), ApiError> {
    if !stored.is_empty() || !state.db.set_node_public_key(&node.id, &key).await? {
        return Err(ApiError::conflict(format!(
            "node '{}' announced another peer-channel key than the one the hub has for it (was its data dir restored from an old backup?)",
            node.name
        ))
        .with_hint(format!(
            "remove it with: gatehouse hub node remove GATEWAY {}, then register the node again (gatehouse node unregister, gatehouse node register)",
            node.name
        )));
    }
    let gateway = state.db.gateway(&node.gateway_id).await?;
    let detail = format!("node '{}' announced its peer-channel key", node.name);
    audit::record(state, gateway.as_ref(), Actor::Node(node.name.clone()), "node.key", detail).await;
    *stored = key;
    Ok(())
}

async fn heartbeat(
    State(state): State<HubState>,
    NodeAuth(node): NodeAuth,
    ApiJson(beat): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    // The database's clock on PostgreSQL: every hub on it agrees on leases and Offline.
    let now = state.db.clock_ms().await?;
    let mut nodes = state.db.nodes(&node.gateway_id).await?;
    let peer_address = match beat.peer_address.as_deref().map(str::trim) {
        Some(address) if !address.is_empty() => address.to_owned(),
        _ => node.peer_address.clone(),
    };
    if let Some(me) = nodes.iter().find(|n| n.id == node.id)
        && let Some(change) = credential_change(&me.metrics.credential_names, &beat.metrics.credential_names)
    {
        let gateway = state.db.gateway(&node.gateway_id).await?;
        let detail = format!("credentials on node '{}': {change}", node.name);
        audit::record(&state, gateway.as_ref(), Actor::Node(node.name.clone()), "credentials.change", detail)
            .await;
    }
    if let Some(key) = public_key(beat.public_key.as_deref())?
        && let Some(me) = nodes.iter_mut().find(|n| n.id == node.id)
        && me.public_key != key
    {
        announce_key(&state, &node, &mut me.public_key, key).await?;
    }
    if let Some(me) = nodes.iter_mut().find(|n| n.id == node.id) {
        me.peer_address = peer_address;
        me.last_heartbeat_ms = Some(now);
        me.version.clone_from(&beat.version);
        me.encryption_thumbprint.clone_from(&beat.metrics.encryption_thumbprint);
        me.metrics = beat.metrics;
    }
    let gateway = state
        .db
        .gateway(&node.gateway_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the gateway was deleted"))?;
    let computed = status::gateway_status(&gateway, &nodes, now, state.config.offline_after);
    let position = nodes.iter().position(|n| n.id == node.id).unwrap_or(0);
    let mine = computed
        .nodes
        .get(position)
        .cloned()
        .unwrap_or(status::NodeStatus { state: NodeState::Online, reason: None });
    // Only a node in a usable state may lead; an Inactive one (wrong certificate) may not.
    let lease = if matches!(mine.state, NodeState::Online | NodeState::Limited) {
        state.db.acquire_lease(&gateway.id, &node.id, now, state.config.lease_ttl).await?
    } else {
        state.db.lease(&gateway.id, now).await?
    };
    // The heartbeat is written after the lease is taken, so nobody reads this node Online
    // before it holds the lease it is about to take (a view of a lone node said "worker").
    if let Some(me) = nodes.iter().find(|n| n.id == node.id) {
        state.db.heartbeat(&node, &me.version, &me.metrics, &me.peer_address, now, nodes.len() == 1).await?;
    }
    let role =
        if lease.holder.as_deref() == Some(node.id.as_str()) { Role::Dispatcher } else { Role::Worker };
    let bandwidth_bytes_per_second = bandwidth_share(&state, &gateway, &node.id).await?;
    let update = match nodes.iter().find(|n| n.id == node.id) {
        Some(me) => {
            releases::heartbeat_offer(&state, &gateway, &nodes, me, computed.version.as_deref(), now).await?
        }
        None => None,
    };
    let peers = nodes
        .iter()
        .zip(&computed.nodes)
        .filter(|(n, _)| n.id != node.id)
        .map(|(n, s)| Peer {
            node_id: n.id.clone(),
            name: n.name.clone(),
            peer_address: n.peer_address.clone(),
            registered_order: n.registered_order,
            status: s.state,
            reason: s.reason.clone(),
            version: n.version.clone(),
            role: if lease.holder.as_deref() == Some(n.id.as_str()) {
                Role::Dispatcher
            } else {
                Role::Worker
            },
            metrics: n.metrics.clone(),
            public_key: n.public_key.clone(),
        })
        .collect();
    Ok(Json(HeartbeatResponse {
        role,
        lease_epoch: lease.epoch,
        lease_expires_in_ms: u64::try_from(lease.expires_ms - now).ok().filter(|_| lease.holder.is_some()),
        status: mine.state,
        reason: mine.reason,
        settings: gateway.settings,
        peers,
        registered_order: node.registered_order,
        gateway_state: Some(computed.state),
        gateway_reason: computed.reason,
        gateway_version: computed.version,
        hub_version: Some(crate::version().to_owned()),
        bandwidth_bytes_per_second,
        update,
    }))
}

/// What changed between the credential names a node held and holds, in words; `None` if
/// nothing did. Names only: the hub never sees a value.
fn credential_change(before: &[String], after: &[String]) -> Option<String> {
    let added: Vec<&str> = after.iter().filter(|n| !before.contains(n)).map(String::as_str).collect();
    let removed: Vec<&str> = before.iter().filter(|n| !after.contains(n)).map(String::as_str).collect();
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("added {}", added.join(", ")));
    }
    if !removed.is_empty() {
        parts.push(format!("removed {}", removed.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The settings that differ between `before` and `after`, as `name: old → new`.
fn settings_changes(before: &GatewaySettings, after: &GatewaySettings) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return Vec::new();
    };
    new.iter()
        .filter_map(|(name, value)| {
            let was = old.get(name)?;
            (was != value).then(|| format!("{name}: {was} → {value}"))
        })
        .collect()
}

fn slot_name(slot: KeySlot) -> &'static str {
    match slot {
        KeySlot::Primary => "primary",
        KeySlot::Secondary => "secondary",
    }
}

/// The node's share of the gateway's bandwidth limit: the limit split evenly over the nodes
/// holding copy runs, the node itself counted even when it holds none yet (the dispatcher may
/// be handing it one right now). `None` when the gateway has no limit.
async fn bandwidth_share(
    state: &HubState,
    gateway: &GatewayRow,
    node_id: &str,
) -> Result<Option<u64>, ApiError> {
    let limit = u64::from(gateway.settings.bandwidth_limit_mbps) * 1_000_000;
    if limit == 0 {
        return Ok(None);
    }
    let copying = state.db.copying_nodes(&gateway.id).await?;
    let sharing = copying.len() + usize::from(!copying.iter().any(|id| id == node_id));
    Ok(Some(limit / u64::try_from(sharing).unwrap_or(1)))
}

async fn unregister(State(state): State<HubState>, NodeAuth(node): NodeAuth) -> Result<StatusCode, ApiError> {
    state.db.delete_node(&node.id).await?;
    state.nodes.forget(&node.id);
    tracing::info!(node = %node.name, "node unregistered itself");
    Ok(StatusCode::NO_CONTENT)
}

// ---- jobs and runs ----

async fn submit_job(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
    ApiJson(SubmitJob { spec }): ApiJson<SubmitJob>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    let runs = expand(&spec)?;
    check_credentials(&state, &gateway, &spec).await?;
    let job = JobRow {
        id: auth::new_id(),
        gateway_id: gateway.id.clone(),
        name: spec.name.trim().to_owned(),
        spec: serde_json::to_string(&spec).map_err(|e| ApiError::bad_request(e.to_string()))?,
        created_ms: now_ms(),
        rerun_of: None,
    };
    state.db.insert_job(&job, &runs).await?;
    state.queue_signal.notify_waiters();
    let detail = format!("job '{}' (id {}) submitted with {} runs", job.name, job.id, runs.len());
    audit::record(&state, Some(&gateway), Actor::Admin, "job.submit", detail).await;
    Ok((StatusCode::CREATED, Json(job_view(&state, job).await?)))
}

/// Starts a job that failed or was cancelled again, as a new job: only its runs that didn't
/// succeed, each from the start (a failed or cancelled run removed what it had begun; files
/// its parts committed are skipped by the copy's own check, unless it overwrites).
async fn rerun_job(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(job): ApiPath<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let old = state.db.job(&job).await?.ok_or_else(|| ApiError::not_found(format!("no job '{job}'")))?;
    let old_runs = state.db.runs_of_job_with_parts(&old.id).await?;
    let states: Vec<RunState> = old_runs.iter().map(|r| r.state).collect();
    match job_state_of(&states) {
        RunState::Failed | RunState::Cancelled => {}
        RunState::Succeeded => {
            return Err(ApiError::conflict(format!(
                "job '{}' (id {}) succeeded; there is nothing to run again (submit it anew to copy everything again)",
                old.name, old.id
            )));
        }
        _ => {
            return Err(ApiError::conflict(format!(
                "job '{}' (id {}) is still running; wait for it to end, or cancel it with: gatehouse job cancel {}",
                old.name, old.id, old.id
            )));
        }
    }
    let gateway = state
        .db
        .gateway(&old.gateway_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the job's gateway was deleted"))?;
    let spec: JobSpec = serde_json::from_str(&old.spec)
        .map_err(|e| ApiError::from(db::DbError::Corrupt(format!("job spec: {e}"))))?;
    check_credentials(&state, &gateway, &spec).await?;
    let runs: Vec<NewRun> = old_runs
        .into_iter()
        .filter(|r| r.state != RunState::Succeeded)
        .map(|r| NewRun {
            id: auth::new_id(),
            activity_index: r.activity_index,
            partition_index: r.partition_index,
            activity: r.activity,
            progress: r.part.as_ref().and(r.progress).and_then(|p| restart_progress(&p)),
            part: r.part,
        })
        .collect();
    let job = JobRow {
        id: auth::new_id(),
        gateway_id: gateway.id.clone(),
        name: old.name.clone(),
        spec: old.spec,
        created_ms: now_ms(),
        rerun_of: Some(old.id.clone()),
    };
    state.db.insert_job(&job, &runs).await?;
    state.queue_signal.notify_waiters();
    let detail = format!(
        "job '{}' (id {}) re-runs the {} runs of job {} that didn't succeed",
        job.name,
        job.id,
        runs.len(),
        old.id
    );
    audit::record(&state, Some(&gateway), Actor::Admin, "job.rerun", detail).await;
    Ok((StatusCode::CREATED, Json(job_view(&state, job).await?)))
}

/// A part's progress as a new attempt starts it: its totals, nothing done yet.
fn restart_progress(progress: &str) -> Option<String> {
    let p = serde_json::from_str::<TransferProgress>(progress).ok()?;
    let fresh = TransferProgress {
        files_total: p.files_total,
        bytes_total: p.bytes_total,
        ..TransferProgress::default()
    };
    serde_json::to_string(&fresh).ok()
}

/// Splits a job into runs: one per partition of each activity, one listing run per copy
/// (which splits into partition runs once it has looked at the source).
fn expand(spec: &JobSpec) -> Result<Vec<NewRun>, ApiError> {
    if spec.name.trim().is_empty() {
        return Err(ApiError::bad_request("the job needs a name"));
    }
    if spec.activities.is_empty() {
        return Err(ApiError::bad_request("the job has no activities; add at least one"));
    }
    let mut counts = Vec::with_capacity(spec.activities.len());
    for (index, activity) in spec.activities.iter().enumerate() {
        let partitions = match activity {
            Activity::Sleep { partitions, .. } | Activity::Echo { partitions, .. } => *partitions,
            Activity::Copy { source, sink, .. } => {
                spec::check(source, sink)
                    .map_err(|e| ApiError::bad_request(format!("activity {index}: {e}")))?;
                1
            }
        };
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(ApiError::bad_request(format!(
                "activity {index} asks for {partitions} partitions; use 1 to {MAX_PARTITIONS}"
            )));
        }
        counts.push(partitions);
    }
    // Counted before any run is made; the queue order (seq) also leaves room for this many
    // runs per job and millisecond.
    let total: u64 = counts.iter().map(|&n| u64::from(n)).sum();
    if total > u64::from(MAX_PARTITIONS) {
        return Err(ApiError::bad_request(format!(
            "the job asks for {total} runs in all; one job may have at most {MAX_PARTITIONS}, so submit its activities as several jobs"
        )));
    }
    let mut runs = Vec::new();
    for (index, (activity, partitions)) in spec.activities.iter().zip(counts).enumerate() {
        let json = serde_json::to_string(activity).map_err(|e| ApiError::bad_request(e.to_string()))?;
        for partition in 0..partitions {
            runs.push(NewRun {
                id: auth::new_id(),
                activity_index: i64::try_from(index).unwrap_or(i64::MAX),
                partition_index: i64::from(partition),
                activity: json.clone(),
                part: None,
                progress: None,
            });
        }
    }
    Ok(runs)
}

/// Every credential the job's activities name must be held by some node of the gateway (nodes
/// report the names with each heartbeat), or the job could only fail once it runs.
async fn check_credentials(state: &HubState, gateway: &GatewayRow, spec: &JobSpec) -> Result<(), ApiError> {
    let wanted: Vec<&str> = spec.activities.iter().flat_map(spec::credential_names).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let nodes = state.db.nodes(&gateway.id).await?;
    let held: HashSet<&str> =
        nodes.iter().flat_map(|n| n.metrics.credential_names.iter().map(String::as_str)).collect();
    match wanted.into_iter().find(|name| !held.contains(name)) {
        None => Ok(()),
        Some(missing) => Err(ApiError::bad_request(format!(
            "no node of gateway '{}' holds a credential named {missing:?}; set it on a node with: gatehouse node credential set {missing}",
            gateway.name
        ))
        .with_hint(
            "nodes sync credentials among themselves and tell the hub their names (never values) with each heartbeat, so one set on any node counts within seconds",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<u32>,
}

async fn list_jobs(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
    ApiQuery(query): ApiQuery<JobsQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    Ok(Json(find_jobs(&state, &gateway.id, &query, 50, 500).await?))
}

/// The recent jobs of the node's own gateway, for the window's Jobs tab: 20 unless the query
/// says (at most 100), newest first, without parts like every job view.
async fn node_jobs(
    State(state): State<HubState>,
    NodeAuth(node): NodeAuth,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    Ok(Json(recent_jobs(&state, &node.gateway_id, query.limit.unwrap_or(20).min(100)).await?))
}

/// A gateway's newest `limit` jobs as views, newest first (also for the status page).
pub async fn recent_jobs(state: &HubState, gateway_id: &str, limit: u32) -> Result<Vec<JobView>, ApiError> {
    find_jobs(state, gateway_id, &JobsQuery { limit: Some(limit), ..JobsQuery::default() }, limit, limit)
        .await
}

/// Jobs scanned at most for one listing filtered by state, so a filter that matches little
/// can't make one request read a whole long history.
const MAX_JOBS_SCANNED: usize = 10_000;

/// The gateway's jobs that `query` asks for, newest first: `default_limit` unless it says (at
/// most `max_limit`). A state filter pages through the jobs in the time range, looking only at
/// their runs' states, and builds views of the ones it keeps.
async fn find_jobs(
    state: &HubState,
    gateway_id: &str,
    query: &JobsQuery,
    default_limit: u32,
    max_limit: u32,
) -> Result<Vec<JobView>, ApiError> {
    let limit = query.limit.unwrap_or(default_limit).min(max_limit);
    if let (Some(since), Some(until)) = (query.since_ms, query.until_ms)
        && since >= until
    {
        return Err(ApiError::bad_request("since_ms must be before until_ms"));
    }
    let mut filter = JobFilter { since_ms: query.since_ms, until_ms: query.until_ms, before: None, limit };
    let mut kept = Vec::new();
    let mut scanned = 0;
    loop {
        let page = state.db.jobs(gateway_id, &filter).await?;
        let Some(last) = page.last() else { break };
        filter.before = Some((last.created_ms, last.id.clone()));
        scanned += page.len();
        let full = page.len() == filter.limit as usize;
        match query.state {
            None => kept.extend(page),
            Some(wanted) => {
                let ids: Vec<String> = page.iter().map(|j| j.id.clone()).collect();
                let states = state.db.run_states_of_jobs(&ids).await?;
                kept.extend(page.into_iter().filter(|j| {
                    job_state_of(states.get(&j.id).map(Vec::as_slice).unwrap_or_default()) == wanted
                }));
            }
        }
        if query.state.is_none() || kept.len() >= limit as usize || !full || scanned >= MAX_JOBS_SCANNED {
            break;
        }
        filter.limit = 200;
    }
    kept.truncate(limit as usize);
    let mut views = Vec::with_capacity(kept.len());
    for job in kept {
        views.push(job_view(state, job).await?);
    }
    Ok(views)
}

async fn show_job(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(job): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = state.db.job(&job).await?.ok_or_else(|| ApiError::not_found(format!("no job '{job}'")))?;
    Ok(Json(job_view(&state, job).await?))
}

/// Every run of the job that hasn't ended is cancelled; the nodes running them hear so (410)
/// at their next report, stop, and remove what they started.
async fn cancel_job(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(job): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = state.db.job(&job).await?.ok_or_else(|| ApiError::not_found(format!("no job '{job}'")))?;
    let cancelled = state.db.cancel_job(&job.id, now_ms()).await?;
    if !cancelled.is_empty() {
        let gateway = state.db.gateway(&job.gateway_id).await?;
        let detail =
            format!("job '{}' (id {}) cancelled: {} runs stopped", job.name, job.id, cancelled.len());
        audit::record(&state, gateway.as_ref(), Actor::Admin, "job.cancel", detail).await;
    }
    let view = job_view(&state, job).await?;
    if cancelled.is_empty() {
        let ended = match view.state {
            RunState::Cancelled => "was cancelled already",
            RunState::Failed => "failed",
            _ => "succeeded",
        };
        return Err(ApiError::conflict(format!(
            "job '{}' (id {}) has ended: it {ended}, so there is nothing to cancel",
            view.name, view.id
        )));
    }
    tracing::info!(job = %view.id, runs = cancelled.len(), "job cancelled");
    Ok(Json(view))
}

async fn claim(
    State(state): State<HubState>,
    NodeAuth(node): NodeAuth,
    ApiJson(request): ApiJson<ClaimRequest>,
) -> Result<Json<Vec<RunView>>, ApiError> {
    let max = request.max.clamp(1, 256);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(request.wait_ms).min(MAX_CLAIM_WAIT);
    // A node may keep only a few claims waiting; one that answers at once isn't counted.
    let _waiting = match request.wait_ms {
        0 => None,
        _ => Some(state.long_polls.enter(&node.id).ok_or_else(too_many_waits)?),
    };
    loop {
        // Registered before the claim, so a submission between the claim and the wait wakes us.
        let signal = state.queue_signal.notified();
        let now = state.db.clock_ms().await?;
        let lease = state.db.lease(&node.gateway_id, now).await?;
        if lease.holder.as_deref() != Some(node.id.as_str()) || lease.epoch != request.lease_epoch {
            return Err(not_dispatcher(lease.epoch));
        }
        // Reads only while there is nothing to take: the claim (a write) runs when there is.
        let runs = if state.db.has_queued_runs(&node.gateway_id).await? {
            state.db.claim_runs(&node.gateway_id, &node, request.lease_epoch, max, now).await?
        } else {
            Vec::new()
        };
        if !runs.is_empty() {
            let views = runs.into_iter().map(|run| {
                let waited_ms = u64::try_from(now - run.queued_ms).unwrap_or(0);
                #[allow(clippy::cast_precision_loss, reason = "a latency in seconds")]
                state.metrics.observe_dispatch(&run.gateway_id, waited_ms as f64 / 1000.0);
                run_view(run).map(|view| RunView { waited_ms: Some(waited_ms), ..view })
            });
            return Ok(Json(views.collect::<Result<_, _>>()?));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Json(Vec::new()));
        }
        // Another hub may have queued work: look again at least every poll interval.
        let _ = tokio::time::timeout((deadline - now).min(state.config.poll_interval), signal).await;
    }
}

async fn assign(
    State(state): State<HubState>,
    NodeAuth(dispatcher): NodeAuth,
    ApiPath(run): ApiPath<String>,
    ApiJson(request): ApiJson<AssignRun>,
) -> Result<Json<RunView>, ApiError> {
    let now = state.db.clock_ms().await?;
    let attempt = i64::from(request.attempt);
    let assigned =
        state.db.assign_run(&run, attempt, &dispatcher, request.lease_epoch, &request.node_id, now).await?;
    if let Some(row) = assigned {
        return Ok(Json(run_view(row)?));
    }
    // Refused: find out why, off the fast path.
    let lease = state.db.lease(&dispatcher.gateway_id, now).await?;
    if lease.holder.as_deref() != Some(dispatcher.id.as_str()) || lease.epoch != request.lease_epoch {
        return Err(not_dispatcher(lease.epoch));
    }
    if state.db.node(&request.node_id).await?.is_none_or(|w| w.gateway_id != dispatcher.gateway_id) {
        return Err(ApiError::bad_request(format!("node '{}' is not in this gateway", request.node_id)));
    }
    Err(stale_run(&run, request.attempt))
}

/// A worker takes a run the dispatcher handed it over the peer channel.
async fn start(
    State(state): State<HubState>,
    NodeAuth(worker): NodeAuth,
    ApiPath(run): ApiPath<String>,
    ApiJson(request): ApiJson<StartRun>,
) -> Result<Json<RunView>, ApiError> {
    match state.db.start_run(&run, i64::from(request.attempt), &worker, now_ms()).await? {
        Some(row) => Ok(Json(run_view(row)?)),
        None => Err(refusal(&state, &run, request.attempt).await?),
    }
}

async fn progress(
    State(state): State<HubState>,
    NodeAuth(node): NodeAuth,
    ApiPath(run): ApiPath<String>,
    ApiJson(request): ApiJson<RunProgress>,
) -> Result<StatusCode, ApiError> {
    let progress = request.progress.to_string();
    let checkpoint = request.checkpoint.map(|c| c.to_string());
    let attempt = i64::from(request.attempt);
    // The 204 is the node's fence: it commits what the checkpoint covers only after it.
    if !state.db.run_progress(&run, attempt, &node.id, &progress, checkpoint.as_deref()).await? {
        return Err(refusal(&state, &run, request.attempt).await?);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A copy's listing run is done: its parts become queued runs, and it succeeds.
async fn split(
    State(state): State<HubState>,
    NodeAuth(node): NodeAuth,
    ApiPath(run): ApiPath<String>,
    ApiJson(request): ApiJson<SplitRun>,
) -> Result<StatusCode, ApiError> {
    let count = request.parts.len();
    if count > MAX_PARTITIONS as usize {
        return Err(ApiError::bad_request(format!(
            "the listing found {count} parts; a copy splits into at most {MAX_PARTITIONS}"
        ))
        .with_hint(
            "narrow the source with include/exclude globs, or copy its subfolders in separate activities",
        ));
    }
    let Some(row) = state.db.run(&run).await? else { return Err(stale_run(&run, request.attempt)) };
    if row.state == RunState::Cancelled {
        return Err(cancelled(&row.job_id));
    }
    let activity: Activity = serde_json::from_str(&row.activity)
        .map_err(|e| ApiError::from(db::DbError::Corrupt(format!("activity: {e}"))))?;
    let Activity::Copy { source, .. } = activity else {
        return Err(ApiError::bad_request(format!(
            "run {run} is not a copy; only a copy's listing run splits into parts"
        )));
    };
    if row.part.is_some() {
        return Err(ApiError::bad_request(format!(
            "run {run} is partition {} of a copy; only its listing run (partition 0) splits",
            row.partition_index
        )));
    }
    // A folder is copied by files, a query by ranges of rows.
    let folder = source.folder.is_some();
    if let Some(index) = request.parts.iter().position(|p| matches!(p, Part::Files { .. }) != folder) {
        let (found, wanted) = if folder { ("rows", "files") } else { ("files", "rows") };
        return Err(ApiError::bad_request(format!(
            "part {index} is a {found} part, but this copy reads a {}; send {wanted} parts",
            if folder { "folder" } else { "query" }
        )));
    }
    let parts = request
        .parts
        .iter()
        .map(|part| {
            Ok(NewPart {
                id: auth::new_id(),
                part: serde_json::to_string(part).map_err(|e| ApiError::bad_request(e.to_string()))?,
                progress: totals(part),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let result = request.result.to_string();
    let split =
        Split { parts: &parts, result: &result, now_ms: now_ms(), max_runs_per_job: MAX_RUNS_PER_JOB };
    match state.db.split_run(&run, i64::from(request.attempt), &node.id, &split).await? {
        db::SplitOutcome::Done => {}
        db::SplitOutcome::NotCurrent => return Err(refusal(&state, &run, request.attempt).await?),
        db::SplitOutcome::TooManyRuns { existing } => {
            return Err(ApiError::bad_request(format!(
                "the listing found {count} parts, but job {} has {existing} runs already and a job may have at most {MAX_RUNS_PER_JOB}",
                row.job_id
            ))
            .with_hint("split the copies over several jobs, or narrow the sources with include/exclude globs"));
        }
    }
    tracing::info!(%run, parts = count, node = %node.name, "copy listed and split into parts");
    if count > 0 {
        state.queue_signal.notify_waiters();
    }
    Ok(StatusCode::NO_CONTENT)
}

/// What a part's run will move, as its progress before it starts, so a job shows its totals
/// while its parts wait. A query's size is known only once it runs.
fn totals(part: &Part) -> Option<String> {
    let Part::Files { files } = part else { return None };
    let progress = TransferProgress {
        files_total: u64::try_from(files.len()).unwrap_or(u64::MAX),
        bytes_total: files.iter().fold(0, |sum: u64, f| sum.saturating_add(f.size)),
        ..TransferProgress::default()
    };
    serde_json::to_string(&progress).ok()
}

async fn finish(
    State(state): State<HubState>,
    NodeAuth(node): NodeAuth,
    ApiPath(run): ApiPath<String>,
    ApiJson(request): ApiJson<FinishRun>,
) -> Result<Json<RunView>, ApiError> {
    let outcome = if request.succeeded { RunState::Succeeded } else { RunState::Failed };
    let result = request.result.map(|r| r.to_string());
    let end = RunEnd {
        state: outcome,
        result: result.as_deref(),
        error: request.error.as_deref(),
        now_ms: now_ms(),
    };
    match state.db.finish_run(&run, i64::from(request.attempt), &node.id, &end).await? {
        Some(row) => Ok(Json(run_view(row)?)),
        None => Err(refusal(&state, &run, request.attempt).await?),
    }
}

/// Why a node's report about a run was not taken: 410 when the run was cancelled with its job
/// (the node stops and cleans up), else 409 (another attempt has it, or it ended).
async fn refusal(state: &HubState, run: &str, attempt: u32) -> Result<ApiError, ApiError> {
    Ok(match state.db.run_state(run).await? {
        Some((RunState::Cancelled, job)) => cancelled(&job),
        _ => stale_run(run, attempt),
    })
}

fn cancelled(job: &str) -> ApiError {
    ApiError::gone(format!("job {job} was cancelled; stop this run and remove what it started"))
}

fn too_many_waits() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "this node already has {} claims waiting on this hub; wait for one to answer before sending another",
            super::long_polls::MAX_PER_NODE
        ),
    )
}

fn not_dispatcher(epoch: i64) -> ApiError {
    ApiError::conflict(format!(
        "this node does not hold the dispatcher lease (epoch {epoch}); keep sending heartbeats and dispatch when it is the dispatcher"
    ))
}

fn stale_run(run: &str, attempt: u32) -> ApiError {
    ApiError::conflict(format!(
        "attempt {attempt} of run {run} is not this node's to report (it finished, or went back to the queue)"
    ))
    .with_hint("drop this attempt; the run is or was handled elsewhere")
}

// ---- audit trail ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    gateway: Option<String>,
    limit: Option<u32>,
}

/// The newest audit entries (100 unless the query says, at most 1,000), oldest first, of one
/// gateway (by id or name, also one deleted since) or of the whole hub.
async fn show_audit(
    State(state): State<HubState>,
    _: Admin,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let rows = state.db.audit(query.gateway.as_deref(), query.limit.unwrap_or(100).min(1000)).await?;
    Ok(Json(rows.into_iter().map(audit::view).collect()))
}

// ---- purpose tokens and metrics ----

async fn create_token(
    State(state): State<HubState>,
    _: Admin,
    ApiJson(request): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let id = auth::new_id();
    let token = auth::new_purpose_token(request.kind, &id);
    let row = db::TokenRow {
        id: id.clone(),
        kind: request.kind.as_str().to_owned(),
        created_ms: now_ms(),
        revoked_ms: None,
    };
    state.db.insert_token(&row, &auth::hash(&token)).await?;
    audit::record(
        &state,
        None,
        Actor::Admin,
        "token.create",
        format!("{} token {id} created", request.kind.as_str()),
    )
    .await;
    Ok((StatusCode::CREATED, Json(CreatedToken { id, kind: request.kind, token })))
}

async fn list_tokens(State(state): State<HubState>, _: Admin) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let rows = state.db.tokens().await?;
    Ok(Json(
        rows.into_iter()
            // Only kinds this hub knows; a newer hub's rows on a shared database are skipped.
            .filter_map(|r| {
                let kind = TokenKind::ALL.into_iter().find(|k| k.as_str() == r.kind)?;
                Some(TokenInfo { id: r.id, kind, created_ms: r.created_ms, revoked_ms: r.revoked_ms })
            })
            .collect(),
    ))
}

async fn revoke_token(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(token): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if !state.db.revoke_token(&token, now_ms()).await? {
        return Err(ApiError::not_found(format!("no live token '{token}'"))
            .with_hint("list tokens with: gatehouse hub token list"));
    }
    audit::record(&state, None, Actor::Admin, "token.revoke", format!("token {token} revoked")).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A new admin token in place of the caller's: the old one is refused from this write on.
async fn rotate_admin_token(
    State(state): State<HubState>,
    _: Admin,
) -> Result<Json<crate::protocol::RotatedAdminToken>, ApiError> {
    let token = auth::new_admin_token();
    if !state.db.replace_admin_token(&auth::hash(&token)).await? {
        // The Admin check passed, so the row was there a moment ago.
        return Err(ApiError::conflict("the hub has no admin token to replace; restart it to make one"));
    }
    audit::record(
        &state,
        None,
        Actor::Admin,
        "admin_token.rotate",
        "admin token replaced; the old one no longer works".to_owned(),
    )
    .await;
    Ok(Json(crate::protocol::RotatedAdminToken { token }))
}

/// `/metrics` in the Prometheus text format.
async fn metrics(
    State(state): State<HubState>,
    _: MetricsAuth,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    // One read of the gateways: their lease epochs (failovers) and their views.
    let rows = state.db.gateways().await?;
    let lease_epochs = rows.iter().map(|g| (g.id.clone(), g.lease_epoch)).collect();
    let gateways = gateway_views(&state, &rows).await?;
    let runs = state.db.run_counts().await?;
    let retries = state.db.retries().await?;
    let mut copied: std::collections::HashMap<String, (u64, u64)> = std::collections::HashMap::new();
    for (gateway, progress) in state.db.copied_progress().await? {
        if let Ok(p) = serde_json::from_str::<TransferProgress>(&progress) {
            let total = copied.entry(gateway).or_default();
            total.0 = total.0.saturating_add(p.bytes_done);
            total.1 = total.1.saturating_add(p.files_done);
        }
    }
    let snapshot = super::metrics::Snapshot {
        gateways: &gateways,
        runs: &runs,
        retries: &retries,
        copied: &copied,
        lease_epochs: &lease_epochs,
    };
    let text = super::metrics::render(&snapshot, &state.metrics);
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}

// ---- views and checks ----

async fn find_gateway(state: &HubState, id_or_name: &str) -> Result<GatewayRow, ApiError> {
    state.db.gateway(id_or_name).await?.ok_or_else(|| {
        ApiError::not_found(format!("no gateway '{id_or_name}'"))
            .with_hint("list gateways with: gatehouse hub gateway list")
    })
}

async fn gateway_view(
    state: &HubState,
    gateway: &GatewayRow,
    nodes: Vec<NodeRow>,
) -> Result<GatewayView, ApiError> {
    let now = state.db.clock_ms().await?;
    let computed = status::gateway_status(gateway, &nodes, now, state.config.offline_after);
    let lease = state.db.lease(&gateway.id, now).await?;
    let nodes = nodes
        .into_iter()
        .zip(computed.nodes)
        .map(|(n, s)| NodeView {
            role: if lease.holder.as_deref() == Some(n.id.as_str()) {
                Role::Dispatcher
            } else {
                Role::Worker
            },
            id: n.id,
            name: n.name,
            gateway_id: n.gateway_id,
            version: n.version,
            status: s.state,
            reason: s.reason,
            peer_address: n.peer_address,
            registered_order: n.registered_order,
            last_heartbeat_ms: n.last_heartbeat_ms,
            metrics: n.metrics,
        })
        .collect();
    Ok(GatewayView {
        id: gateway.id.clone(),
        name: gateway.name.clone(),
        settings: gateway.settings.clone(),
        status: computed.state,
        reason: computed.reason,
        version: computed.version,
        encryption: gateway.encryption,
        nodes,
        credentials_in_sync: computed.credentials_in_sync,
        credentials: computed.credentials,
    })
}

/// A job with its runs (without their parts: see [`db::Db::runs_of_job`]); its state and
/// its copies' progress are derived from theirs.
pub async fn job_view(state: &HubState, job: JobRow) -> Result<JobView, ApiError> {
    let mut runs: Vec<RunView> =
        state.db.runs_of_job(&job.id).await?.into_iter().map(run_view).collect::<Result<_, _>>()?;
    let past = state.db.attempts_of_job(&job.id).await?;
    let mut by_run: std::collections::HashMap<&str, Vec<&db::AttemptRow>> = std::collections::HashMap::new();
    for attempt in &past {
        by_run.entry(attempt.run_id.as_str()).or_default().push(attempt);
    }
    for run in &mut runs {
        run.attempts =
            history::attempts(run, by_run.get(run.id.as_str()).map(Vec::as_slice).unwrap_or_default());
    }
    let states: Vec<RunState> = runs.iter().map(|r| r.state).collect();
    let job_state = job_state_of(&states);
    let mut view = JobView {
        id: job.id,
        gateway_id: job.gateway_id,
        name: job.name,
        state: job_state,
        created_ms: job.created_ms,
        runs,
        progress: None,
        rerun_of: job.rerun_of,
    };
    view.progress = super::progress::of_job(&view);
    Ok(view)
}

/// Succeeded when every run did; once every run ended, cancelled when one was (runs are
/// cancelled only with their job), else failed; running once any run left the queue (a copy
/// whose listing succeeded and whose parts wait is running, not done), queued before.
fn job_state_of(runs: &[RunState]) -> RunState {
    if runs.iter().all(|&r| r == RunState::Succeeded) {
        RunState::Succeeded
    } else if runs.iter().all(|r| r.is_final()) {
        if runs.contains(&RunState::Cancelled) { RunState::Cancelled } else { RunState::Failed }
    } else if runs.iter().any(|&r| r != RunState::Queued) {
        RunState::Running
    } else {
        RunState::Queued
    }
}

fn run_view(run: RunRow) -> Result<RunView, ApiError> {
    let corrupt =
        |what: &str, e: serde_json::Error| ApiError::from(db::DbError::Corrupt(format!("{what}: {e}")));
    let parse = |text: Option<String>, what: &str| {
        text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(what, e))).transpose()
    };
    Ok(RunView {
        activity: serde_json::from_str(&run.activity).map_err(|e| corrupt("activity", e))?,
        progress: parse(run.progress, "progress")?,
        result: parse(run.result, "result")?,
        id: run.id,
        job_id: run.job_id,
        activity_index: u32::try_from(run.activity_index).unwrap_or(u32::MAX),
        partition: u32::try_from(run.partition_index).unwrap_or(u32::MAX),
        state: run.state,
        attempt: u32::try_from(run.attempt).unwrap_or(u32::MAX),
        node_id: run.node_id,
        node_name: run.node_name,
        error: run.error,
        part: run.part.map(|t| serde_json::from_str(&t).map_err(|e| corrupt("part", e))).transpose()?,
        checkpoint: parse(run.checkpoint, "checkpoint")?,
        queued_ms: run.queued_ms,
        started_ms: run.started_ms,
        finished_ms: run.finished_ms,
        attempts: Vec::new(),
        waited_ms: None,
    })
}

/// Gateway and node names: 1–63 letters, digits, '-', '_' or '.', like host names, starting
/// with a letter or digit (so `.` and `..`, which URLs can't carry, are never names).
fn validate_name(name: &str, what: &str) -> Result<(), ApiError> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} name {name:?} is not allowed; use 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

fn validate_settings(s: &GatewaySettings) -> Result<(), ApiError> {
    let problem = if !(1..=4).contains(&s.max_nodes) {
        Some(format!("max_nodes is {}; a gateway has 1 to 4 nodes", s.max_nodes))
    } else if s.cpu_threshold > 100 || s.memory_threshold > 100 {
        Some("cpu_threshold and memory_threshold are percentages: 0 (off) to 100".to_owned())
    } else if !(1..=60).contains(&s.aggregation_minutes) {
        Some(format!("aggregation_minutes is {}; use 1 to 60", s.aggregation_minutes))
    } else if !(1..=3600).contains(&s.queue_timeout_seconds) {
        Some(format!("queue_timeout_seconds is {}; use 1 to 3600", s.queue_timeout_seconds))
    } else {
        None
    };
    problem.map_or(Ok(()), |p| Err(ApiError::bad_request(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    fn state_of(states: &[RunState]) -> RunState {
        job_state_of(states)
    }

    #[test]
    fn a_copy_whose_parts_wait_is_running_and_one_whose_listing_failed_failed() {
        use RunState::{Cancelled, Failed, Queued, Running, Succeeded};
        assert_eq!(state_of(&[Queued]), Queued);
        assert_eq!(state_of(&[Running]), Running);
        assert_eq!(state_of(&[Succeeded, Queued, Queued]), Running, "listed; its parts wait");
        assert_eq!(state_of(&[Succeeded]), Succeeded, "an empty folder");
        assert_eq!(state_of(&[Succeeded, Succeeded, Succeeded]), Succeeded);
        assert_eq!(state_of(&[Failed]), Failed);
        assert_eq!(state_of(&[Succeeded, Failed, Succeeded]), Failed);
        assert_eq!(state_of(&[Succeeded, Failed, Queued]), Running, "failed only once every run ended");
        assert_eq!(state_of(&[Succeeded, Cancelled, Failed]), Cancelled);
        assert_eq!(state_of(&[Cancelled]), Cancelled);
    }
}
