//! What a node asks of the hub about itself: register (with a gateway's auth key), announce
//! its peer-channel key, heartbeat (statuses, lease, roster, bandwidth share), unregister,
//! and its gateway's recent jobs for the window's Jobs tab.

use super::access::{NodeAuth, bearer};
use super::extract::{ApiJson, ApiQuery};
use super::gateways::validate_name;
use super::jobs::recent_jobs;
use super::join_keys;
use crate::hub::audit::{self, Actor};
use crate::hub::db::{GatewayRow, LeaseState, NewNode, NodeRow, now_ms};
use crate::hub::error::ApiError;
use crate::hub::{HubState, auth, status};
use crate::protocol::{
    Heartbeat, HeartbeatResponse, JobView, NodeState, Peer, RegisterRequest, RegisterResponse, Role,
    SealedCredential,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;

pub(super) async fn register(
    State(state): State<HubState>,
    parts: Parts,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    let key = bearer(&parts).ok_or_else(|| {
        ApiError::unauthorized("registration needs a gateway auth key (`Authorization: Bearer gh1_…`)")
    })?;
    let parsed = auth::parse_auth_key(key).map_err(|e| ApiError::unauthorized(e.to_string()))?;
    // A key's pin (the hub's certificate) is not part of what is checked.
    let key = parsed.key.as_str();
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
            crate::hub::registration::check(gateway, nodes, existing, &new)
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
pub(super) async fn announce_key(
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

pub(super) async fn heartbeat(
    State(state): State<HubState>,
    NodeAuth(node): NodeAuth,
    ApiJson(beat): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let recorded = record_heartbeat(&state, &node, beat).await?;
    Ok(Json(answer(&state, &node, recorded).await?))
}

/// A beat taken in: the gateway and its nodes as they stand with it, their statuses, the
/// lease as it is now, and the node's sealed credentials to hand out.
struct Recorded {
    now: i64,
    gateway: GatewayRow,
    nodes: Vec<NodeRow>,
    computed: status::GatewayStatus,
    mine: status::NodeStatus,
    lease: LeaseState,
    sealed_credentials: Vec<SealedCredential>,
    key_proof_wanted: bool,
}

/// Takes the beat in: requeues a restarted node's runs, audits a change of its credential
/// names, takes its announced key, computes the statuses with it, renews or reads the lease,
/// and writes the heartbeat.
async fn record_heartbeat(state: &HubState, node: &NodeRow, beat: Heartbeat) -> Result<Recorded, ApiError> {
    // The database's clock on PostgreSQL: every hub on it agrees on leases and Offline.
    let now = state.db.clock_ms().await?;
    if beat.restarted {
        crate::hub::requeue_runs_of_restarted(state, &node.id, &node.name, now).await?;
    }
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
        audit::record(state, gateway.as_ref(), Actor::Node(node.name.clone()), "credentials.change", detail)
            .await;
    }
    if let Some(key) = public_key(beat.public_key.as_deref())?
        && let Some(me) = nodes.iter_mut().find(|n| n.id == node.id)
        && me.public_key != key
    {
        announce_key(state, node, &mut me.public_key, key).await?;
    }
    let (sealed_credentials, key_proof_wanted) =
        super::credentials::for_heartbeat(state, node, &beat.metrics, beat.key_proof.as_ref()).await?;
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
        state.db.heartbeat(node, &me.version, &me.metrics, &me.peer_address, now, nodes.len() == 1).await?;
    }
    Ok(Recorded { now, gateway, nodes, computed, mine, lease, sealed_credentials, key_proof_wanted })
}

/// The heartbeat's answer to a recorded beat: the node's role and status, the gateway's, its
/// peers, its bandwidth share, and an update offer.
async fn answer(state: &HubState, node: &NodeRow, recorded: Recorded) -> Result<HeartbeatResponse, ApiError> {
    let Recorded { now, gateway, nodes, computed, mine, lease, sealed_credentials, key_proof_wanted } =
        recorded;
    let role_of = |id: &str| {
        if lease.holder.as_deref() == Some(id) { Role::Dispatcher } else { Role::Worker }
    };
    let bandwidth_bytes_per_second = bandwidth_share(state, &gateway, &node.id, now).await?;
    let update =
        super::releases::heartbeat_offer(state, &gateway, &nodes, &node.id, computed.version.as_deref(), now)
            .await?;
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
            role: role_of(&n.id),
            metrics: n.metrics.clone(),
            public_key: n.public_key.clone(),
        })
        .collect();
    Ok(HeartbeatResponse {
        role: role_of(&node.id),
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
        sealed_credentials,
        key_proof_wanted,
        update,
    })
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

/// The node's grant of the gateway's bandwidth limit (Mbit/s, so 125,000 bytes a second
/// each): the limit split evenly over the nodes holding copy runs, but never more than what
/// the other nodes' grants leave, so the grants add up to the limit at most even while nodes
/// start and stop copying (a node whose share shrinks hears it within a heartbeat, and only
/// then is the freed part granted again). A grant counts as held until the node could be
/// called Offline. A node holding no copy run is granted nothing, so it holds nothing back;
/// it hears 1 byte a second, a pause, until its first heartbeat with a copy. `None` when the
/// gateway has no limit.
pub(super) async fn bandwidth_share(
    state: &HubState,
    gateway: &GatewayRow,
    node_id: &str,
    now: i64,
) -> Result<Option<u64>, ApiError> {
    let limit = u64::from(gateway.settings.bandwidth_limit_mbps) * 125_000;
    if limit == 0 {
        return Ok(None);
    }
    let copying = state.db.copying_nodes(&gateway.id).await?;
    let fair = if copying.iter().any(|id| id == node_id) {
        limit / u64::try_from(copying.len()).unwrap_or(1)
    } else {
        0
    };
    let hold = i64::try_from(state.config.offline_after.as_millis()).unwrap_or(i64::MAX);
    let grant = state.db.grant_bandwidth(&gateway.id, node_id, limit, fair, now, hold).await?;
    // 0 would mean "no limit" to the node: the smallest rate stands for a pause.
    Ok(Some(grant.max(1)))
}

pub(super) async fn unregister(
    State(state): State<HubState>,
    NodeAuth(node): NodeAuth,
) -> Result<StatusCode, ApiError> {
    state.db.delete_node(&node.id).await?;
    state.nodes.forget(&node.id);
    tracing::info!(node = %node.name, "node unregistered itself");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitQuery {
    limit: Option<u32>,
}

/// The recent jobs of the node's own gateway, for the window's Jobs tab: 20 unless the query
/// says (at most 100), newest first, without parts like every job view.
pub(super) async fn node_jobs(
    State(state): State<HubState>,
    NodeAuth(node): NodeAuth,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    Ok(Json(recent_jobs(&state, &node.gateway_id, query.limit.unwrap_or(20).min(100)).await?))
}
