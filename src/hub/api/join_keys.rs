//! Auth keys made for adding nodes (`hub key create`, the window's Add a node): they expire,
//! and a one-time key registers a single node. Handlers to make, list and revoke them, and the
//! check registration makes when a key is neither of the gateway's two standing keys.

use super::access::Admin;
use super::extract::{ApiJson, ApiPath};
use super::gateways::find_gateway;
use crate::hub::audit::{self, Actor};
use crate::hub::db::{GatewayRow, now_ms};
use crate::hub::error::ApiError;
use crate::hub::registration::Refusal;
use crate::hub::{HubState, auth};
use crate::protocol::{CreatedJoinKey, JoinKeyInfo, NewJoinKey};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// How long a key stays valid unused when its maker doesn't say.
pub const DEFAULT_LIFETIME_SECONDS: u64 = 30 * 60;
/// The longest a key may stay valid: the gateway's standing keys are for longer.
pub const MAX_LIFETIME_SECONDS: u64 = 30 * 24 * 3600;

pub(super) async fn create(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
    ApiJson(request): ApiJson<NewJoinKey>,
) -> Result<(StatusCode, Json<CreatedJoinKey>), ApiError> {
    let lifetime = request.expires_in_seconds.unwrap_or(DEFAULT_LIFETIME_SECONDS);
    if !(1..=MAX_LIFETIME_SECONDS).contains(&lifetime) {
        return Err(ApiError::bad_request(format!(
            "a key for adding nodes expires after 1 second to 30 days, not {lifetime} s"
        ))
        .with_hint("for a key that never expires, use the gateway's own: gatehouse hub key regenerate"));
    }
    let gateway = find_gateway(&state, &gateway).await?;
    // A key for a gateway that can take no node would only be refused when used: say so now,
    // with the registration's own sentence and code.
    let count = state.db.nodes(&gateway.id).await?.len();
    if count >= usize::try_from(gateway.settings.max_nodes).unwrap_or(usize::MAX) {
        let full = Refusal::Full { gateway: gateway.name.clone(), count, max: gateway.settings.max_nodes };
        return Err(ApiError::from(full)
            .with_hint(format!("remove a node first: gatehouse hub node remove {} NODE", gateway.name)));
    }
    let key = auth::new_auth_key(&state.config.public_url, &gateway.id);
    let created_ms = now_ms();
    let info = JoinKeyInfo {
        id: auth::new_id(),
        hint: auth::key_hint(&key),
        once: request.once,
        created_ms,
        expires_ms: created_ms.saturating_add(i64::try_from(lifetime * 1000).unwrap_or(i64::MAX)),
        used_count: 0,
        last_used_ms: None,
        last_used_by: None,
    };
    state.db.insert_join_key(&gateway.id, &info, &auth::hash(&key)).await?;
    let uses = if info.once { "one-time" } else { "reusable" };
    let detail = format!("{uses} auth key {} created ({}), valid {lifetime} s", info.id, info.hint);
    audit::record(&state, Some(&gateway), Actor::Admin, "key.create", detail).await;
    // The pin rides along outside the secret (the hash is of the key without it).
    let key = match &state.config.pin {
        Some(pin) => crate::protocol::pinned_auth_key(&key, pin),
        None => key,
    };
    Ok((StatusCode::CREATED, Json(CreatedJoinKey { key, info })))
}

pub(super) async fn list(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
) -> Result<Json<Vec<JoinKeyInfo>>, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    Ok(Json(state.db.join_keys(&gateway.id).await?))
}

pub(super) async fn revoke(
    State(state): State<HubState>,
    _: Admin,
    ApiPath((gateway, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    if !state.db.delete_join_key(&gateway.id, &id).await? {
        return Err(ApiError::not_found(format!(
            "gateway '{}' has no key {id:?} for adding nodes",
            gateway.name
        ))
        .with_hint(format!("list them with: gatehouse hub key list {}", gateway.name)));
    }
    let detail = format!("auth key {id} revoked");
    audit::record(&state, Some(&gateway), Actor::Admin, "key.revoke", detail).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The id of the key for adding nodes that `key` is, if it still registers a node; a refusal
/// that says what became of it if it no longer does; `None` if it is no such key.
pub(super) async fn usable(
    state: &HubState,
    gateway: &GatewayRow,
    key: &str,
) -> Result<Option<String>, ApiError> {
    let Some(found) = state.db.join_key_by_hash(&gateway.id, &auth::hash(key)).await? else {
        return Ok(None);
    };
    let make_new = format!("make a new one with: gatehouse hub key create {} --once", gateway.name);
    if found.once && found.used_count > 0 {
        let by = found.last_used_by.as_deref().unwrap_or("another node");
        return Err(ApiError::unauthorized(format!(
            "this one-time auth key was already used, by node '{by}'"
        ))
        .with_hint(make_new));
    }
    if found.expires_ms <= now_ms() {
        return Err(ApiError::unauthorized(format!(
            "this auth key expired unused at {}",
            crate::encoding::utc_timestamp(found.expires_ms)
        ))
        .with_hint(make_new));
    }
    Ok(Some(found.id))
}
