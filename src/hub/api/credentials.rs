//! The credential manager's side of the hub (`gatehouse credential set|list|delete --gateway
//! G` on any machine): the gateway's nodes with their X25519 keys (and key proofs) to seal
//! for, its credential state, and the sealed credentials the admin machine sends, one
//! ciphertext per node. The hub stores only ciphertext and hands each node its own with the
//! heartbeat answers until the node reports holding that version ([`for_heartbeat`]).
//!
//! Who may: the admin token, or a live credential-manager token (`ghc_…`) made for this
//! gateway (`gatehouse hub token create --credential-manager --gateway G`).

use super::access::{bearer, is_admin_token};
use super::extract::{ApiJson, ApiPath};
use super::gateways::find_gateway;
use crate::credential_sync;
use crate::hub::audit::{self, Actor};
use crate::hub::db::{GatewayRow, NodeRow, SealedRow};
use crate::hub::error::ApiError;
use crate::hub::{HubState, auth, status};
use crate::protocol::{
    CredentialNode, GatewayCredentials, KeyProof, MAX_SEALED_CHARS, NodeMetrics, PendingCredential,
    PutCredential, PutCredentialAnswer, SealedCredential, TokenKind,
};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};

/// Who called, once the token checked out (the gateway is checked by [`CredentialCaller::may`]).
pub(crate) enum CredentialCaller {
    Admin,
    /// A credential-manager token: its id and gateway.
    Token {
        id: String,
        gateway_id: Option<String>,
    },
}

impl CredentialCaller {
    /// Refuses a token made for another gateway.
    fn may(&self, gateway: &GatewayRow) -> Result<Actor, ApiError> {
        match self {
            CredentialCaller::Admin => Ok(Actor::Admin),
            CredentialCaller::Token { id, gateway_id }
                if gateway_id.as_deref() == Some(gateway.id.as_str()) =>
            {
                Ok(Actor::CredentialManager(id.clone()))
            }
            CredentialCaller::Token { .. } => Err(ApiError::forbidden(format!(
                "this credential-manager token is for another gateway than '{}'",
                gateway.name
            ))
            .with_hint(format!(
                "use a token made for it: gatehouse hub token create --credential-manager --gateway {}",
                gateway.name
            ))),
        }
    }
}

impl FromRequestParts<HubState> for CredentialCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HubState) -> Result<Self, Self::Rejection> {
        let hint = "make one with: gatehouse hub token create --credential-manager --gateway GATEWAY (or use the hub's admin token)";
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("this request needs the admin token or a credential-manager token")
                .with_hint(hint)
        })?;
        if let Some((kind, id)) = auth::purpose_token_id(token) {
            let live = state.db.live_token(id).await?;
            return match live {
                Some((row, hash))
                    if kind == TokenKind::CredentialManager
                        && row.kind == kind.as_str()
                        && auth::verify(token, &hash) =>
                {
                    Ok(CredentialCaller::Token { id: row.id, gateway_id: row.gateway_id })
                }
                _ if kind == TokenKind::CredentialManager => Err(ApiError::unauthorized(
                    "the credential-manager token is not valid (it may have been revoked)",
                )
                .with_hint(format!("ask the hub's administrator for a new one; {hint}"))),
                _ => {
                    Err(ApiError::unauthorized(format!("a {} token can't manage credentials", kind.as_str()))
                        .with_hint(hint))
                }
            };
        }
        if is_admin_token(state, token).await? {
            return Ok(CredentialCaller::Admin);
        }
        Err(ApiError::unauthorized("the admin token is not valid for this hub").with_hint(hint))
    }
}

/// `GET /api/v1/gateways/{gateway}/credentials`
pub(super) async fn show(
    State(state): State<HubState>,
    caller: CredentialCaller,
    ApiPath(gateway): ApiPath<String>,
) -> Result<Json<GatewayCredentials>, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    caller.may(&gateway)?;
    let nodes = state.db.nodes(&gateway.id).await?;
    Ok(Json(view(&state, &gateway, &nodes).await?))
}

async fn view(
    state: &HubState,
    gateway: &GatewayRow,
    nodes: &[NodeRow],
) -> Result<GatewayCredentials, ApiError> {
    let now = state.db.clock_ms().await?;
    let computed = status::gateway_status(gateway, nodes, now, state.config.offline_after);
    let proofs: HashMap<String, String> = state.db.key_proofs(&gateway.id).await?.into_iter().collect();
    let names: HashMap<&str, &str> = nodes.iter().map(|n| (n.id.as_str(), n.name.as_str())).collect();
    let mut pending: BTreeMap<(String, i64, bool), Vec<String>> = BTreeMap::new();
    for row in state.db.sealed_in(&gateway.id).await? {
        let node = names.get(row.node_id.as_str()).map_or_else(|| row.node_id.clone(), |n| (*n).to_owned());
        pending.entry((row.name, row.version, row.deleted)).or_default().push(node);
    }
    Ok(GatewayCredentials {
        gateway_id: gateway.id.clone(),
        gateway_name: gateway.name.clone(),
        encryption: gateway.encryption,
        nodes: nodes
            .iter()
            .zip(&computed.nodes)
            .map(|(n, s)| CredentialNode {
                node_id: n.id.clone(),
                name: n.name.clone(),
                status: s.state,
                public_key: n.public_key.clone(),
                key_proof: proofs.get(&n.id).and_then(|json| serde_json::from_str(json).ok()),
            })
            .collect(),
        credentials: computed.credentials,
        in_sync: computed.credentials_in_sync,
        pending: pending
            .into_iter()
            .map(|((name, version, deleted), nodes)| PendingCredential {
                name,
                version: u64::try_from(version).unwrap_or(0),
                deleted,
                nodes,
            })
            .collect(),
    })
}

/// `POST /api/v1/gateways/{gateway}/credentials`: one ciphertext per node of the gateway
/// (every node with a key), stored until each node takes it.
pub(super) async fn put(
    State(state): State<HubState>,
    caller: CredentialCaller,
    ApiPath(gateway): ApiPath<String>,
    ApiJson(request): ApiJson<PutCredential>,
) -> Result<Json<PutCredentialAnswer>, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    let actor = caller.may(&gateway)?;
    check_name(&request.name)?;
    let now = state.db.clock_ms().await?;
    let version = i64::try_from(request.version).ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad_request("a credential's version is milliseconds since the Unix epoch, above 0")
    })?;
    if credential_sync::too_far_ahead(request.version, u64::try_from(now).unwrap_or(0)) {
        return Err(ApiError::bad_request(format!(
            "version {} is more than {} minutes ahead of the hub's clock, so every node would refuse it",
            request.version,
            credential_sync::CLOCK_ALLOWANCE_MS / 60_000
        ))
        .with_hint("check the admin machine's clock (and the hub's), then set the credential again"));
    }
    let nodes = state.db.nodes(&gateway.id).await?;
    let mut sealed: HashMap<&str, &str> = HashMap::new();
    for copy in &request.sealed {
        if copy.ciphertext.is_empty() || copy.ciphertext.len() > MAX_SEALED_CHARS {
            return Err(ApiError::bad_request(format!(
                "a sealed credential is 1 to {MAX_SEALED_CHARS} characters of base64"
            )));
        }
        if sealed.insert(copy.node_id.as_str(), copy.ciphertext.as_str()).is_some() {
            return Err(ApiError::bad_request(format!("node {} has two sealed copies", copy.node_id)));
        }
    }
    let changed = || {
        ApiError::conflict(format!(
            "the nodes of gateway '{}' changed while the credential was being sealed",
            gateway.name
        ))
        .with_hint("run the command again")
    };
    let known: Vec<&NodeRow> = nodes.iter().filter(|n| !n.public_key.is_empty()).collect();
    if known.is_empty() {
        return Err(ApiError::conflict(format!(
            "gateway '{}' has no node with a peer-channel key to send the credential to",
            gateway.name
        ))
        .with_hint("register a node first: gatehouse node register"));
    }
    if sealed.len() != known.len() || known.iter().any(|n| !sealed.contains_key(n.id.as_str())) {
        return Err(changed());
    }
    let rows: Vec<SealedRow> = known
        .iter()
        .map(|n| SealedRow {
            node_id: n.id.clone(),
            name: request.name.clone(),
            version,
            deleted: request.deleted,
            ciphertext: sealed.get(n.id.as_str()).map(|c| (*c).to_owned()).unwrap_or_default(),
        })
        .collect();
    let stored = state.db.put_sealed(&gateway.id, &rows, now).await?;
    let names: Vec<String> =
        known.iter().filter(|n| stored.contains(&n.id)).map(|n| n.name.clone()).collect();
    let what = if request.deleted { "deleted" } else { "set" };
    let detail = format!(
        "credential {} {what} (version {}) through the credential manager, sealed for {}",
        request.name,
        request.version,
        if names.is_empty() {
            "no node (a newer version is on its way)".to_owned()
        } else {
            names.join(", ")
        }
    );
    audit::record(&state, Some(&gateway), actor, "credential.set", detail).await;
    tracing::info!(gateway = %gateway.name, credential = %request.name, version = request.version, "credential {what} through the credential manager");
    Ok(Json(PutCredentialAnswer { name: request.name, version: request.version, nodes: names }))
}

/// The rule nodes keep for credential names.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=128).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "credential names are 1 to 128 letters, digits, '-', '_' or '.'; {name:?} is not"
        )))
    }
}

/// What a heartbeat answer carries for the credential manager: the credentials sealed for
/// this node that it doesn't report yet (those it reports at that version or newer are
/// forgotten now), and whether the hub wants a key proof for its current certificate (one
/// sent along is stored when it is for that certificate).
pub(super) async fn for_heartbeat(
    state: &HubState,
    node: &NodeRow,
    metrics: &NodeMetrics,
    proof: Option<&KeyProof>,
) -> Result<(Vec<SealedCredential>, bool), ApiError> {
    let mut wanted = false;
    if let Some(thumbprint) = metrics.encryption_thumbprint.as_deref() {
        let stored = state.db.key_proof_thumbprint(&node.id).await?;
        if !stored.eq_ignore_ascii_case(thumbprint) {
            wanted = true;
            if let Some(proof) = proof
                && leaf_thumbprint(proof).is_some_and(|t| t.eq_ignore_ascii_case(thumbprint))
            {
                let json = serde_json::to_string(proof).unwrap_or_default();
                state.db.set_key_proof(&node.id, &json, thumbprint).await?;
                wanted = false;
            }
        }
    }
    let rows = state.db.sealed_for(&node.id).await?;
    if rows.is_empty() {
        return Ok((Vec::new(), wanted));
    }
    let held: HashMap<String, u64> =
        credential_sync::stamps(metrics).into_iter().map(|s| (s.name, s.version)).collect();
    let mut out = Vec::new();
    for row in rows {
        let version = u64::try_from(row.version).unwrap_or(0);
        if held.get(&row.name).is_some_and(|v| *v >= version) {
            state.db.taken_sealed(&node.id, &row.name, row.version).await?;
        } else {
            out.push(SealedCredential {
                name: row.name,
                version,
                deleted: row.deleted,
                ciphertext: row.ciphertext,
            });
        }
    }
    Ok((out, wanted))
}

/// SHA-256 (upper-case hex) of a proof's leaf certificate.
fn leaf_thumbprint(proof: &KeyProof) -> Option<String> {
    use base64::Engine as _;
    let leaf = base64::engine::general_purpose::STANDARD.decode(proof.chain.first()?).ok()?;
    Some(crate::encoding::hex(&sha2::Sha256::digest(&leaf)).to_ascii_uppercase())
}
