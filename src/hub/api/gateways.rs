//! Gateways and what hangs off them for the admin: create, list, show, delete, settings,
//! the two standing auth keys, the node list and node removal; the gateway views (also for
//! the status page and `/metrics`) and the name and settings checks.

use super::access::Admin;
use super::extract::{ApiJson, ApiPath};
use crate::hub::audit::{self, Actor};
use crate::hub::db::{GatewayRow, NodeRow, now_ms};
use crate::hub::error::ApiError;
use crate::hub::{HubState, auth, status};
use crate::protocol::{
    AuthKeys, CreateGateway, CreatedGateway, GatewaySettings, GatewayView, KeyInfo, KeySlot, NodeView,
    RegeneratedKey, Role, SettingsPatch,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

pub(super) async fn create_gateway(
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

pub(super) async fn list_gateways(
    State(state): State<HubState>,
    _: Admin,
) -> Result<Json<Vec<GatewayView>>, ApiError> {
    Ok(Json(all_gateway_views(&state).await?))
}

/// Every gateway with its nodes and statuses (also for the status page).
pub async fn all_gateway_views(state: &HubState) -> Result<Vec<GatewayView>, ApiError> {
    gateway_views(state, &state.db.gateways().await?).await
}

/// The views of `gateways` (rows just read), with their nodes and statuses.
pub(super) async fn gateway_views(
    state: &HubState,
    gateways: &[GatewayRow],
) -> Result<Vec<GatewayView>, ApiError> {
    let mut views = Vec::with_capacity(gateways.len());
    for gateway in gateways {
        let nodes = state.db.nodes(&gateway.id).await?;
        views.push(gateway_view(state, gateway, nodes).await?);
    }
    Ok(views)
}

pub(super) async fn show_gateway(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
) -> Result<Json<GatewayView>, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    let nodes = state.db.nodes(&gateway.id).await?;
    Ok(Json(gateway_view(&state, &gateway, nodes).await?))
}

pub(super) async fn delete_gateway(
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

pub(super) async fn update_settings(
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

pub(super) async fn show_keys(
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

pub(super) async fn regenerate_key(
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

pub(super) async fn list_nodes(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
) -> Result<Json<Vec<NodeView>>, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    let nodes = state.db.nodes(&gateway.id).await?;
    Ok(Json(gateway_view(&state, &gateway, nodes).await?.nodes))
}

pub(super) async fn remove_node(
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

pub(super) async fn find_gateway(state: &HubState, id_or_name: &str) -> Result<GatewayRow, ApiError> {
    state.db.gateway(id_or_name).await?.ok_or_else(|| {
        ApiError::not_found(format!("no gateway '{id_or_name}'"))
            .with_hint("list gateways with: gatehouse hub gateway list")
    })
}

pub(super) async fn gateway_view(
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

/// Gateway and node names: 1–63 letters, digits, '-', '_' or '.', like host names, starting
/// with a letter or digit (so `.` and `..`, which URLs can't carry, are never names).
pub(super) fn validate_name(name: &str, what: &str) -> Result<(), ApiError> {
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
