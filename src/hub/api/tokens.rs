//! The hub's own access for people and programs: purpose tokens (metrics, viewer) made,
//! listed and revoked, the admin token rotated, and the audit trail read.

use super::access::Admin;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::gateways::find_gateway;
use crate::hub::audit::{self, Actor};
use crate::hub::db::{self, now_ms};
use crate::hub::error::ApiError;
use crate::hub::{HubState, auth};
use crate::protocol::{AuditEntry, CreateToken, CreatedToken, TokenInfo, TokenKind};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    gateway: Option<String>,
    limit: Option<u32>,
}

/// The newest audit entries (100 unless the query says, at most 1,000), oldest first, of one
/// gateway (by id or name, also one deleted since) or of the whole hub.
pub(super) async fn show_audit(
    State(state): State<HubState>,
    _: Admin,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let rows = state.db.audit(query.gateway.as_deref(), query.limit.unwrap_or(100).min(1000)).await?;
    Ok(Json(rows.into_iter().map(audit::view).collect()))
}

pub(super) async fn create_token(
    State(state): State<HubState>,
    _: Admin,
    ApiJson(request): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let gateway = match (request.kind, request.gateway.as_deref()) {
        (TokenKind::CredentialManager, Some(gateway)) => Some(find_gateway(&state, gateway).await?),
        (TokenKind::CredentialManager, None) => {
            return Err(ApiError::bad_request("a credential-manager token is made for one gateway")
                .with_hint("name it: gatehouse hub token create --credential-manager --gateway GATEWAY"));
        }
        (_, Some(_)) => {
            return Err(ApiError::bad_request("only a credential-manager token is made for one gateway"));
        }
        (_, None) => None,
    };
    let id = auth::new_id();
    let token = auth::new_purpose_token(request.kind, &id);
    let row = db::TokenRow {
        id: id.clone(),
        kind: request.kind.as_str().to_owned(),
        created_ms: now_ms(),
        revoked_ms: None,
        gateway_id: gateway.as_ref().map(|g| g.id.clone()),
    };
    state.db.insert_token(&row, &auth::hash(&token)).await?;
    let kind = request.kind.as_str().replace('_', "-");
    let detail = match &gateway {
        Some(g) => format!("{kind} token {id} created for gateway '{}'", g.name),
        None => format!("{kind} token {id} created"),
    };
    audit::record(&state, gateway.as_ref(), Actor::Admin, "token.create", detail).await;
    Ok((StatusCode::CREATED, Json(CreatedToken { id, kind: request.kind, token })))
}

pub(super) async fn list_tokens(
    State(state): State<HubState>,
    _: Admin,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let rows = state.db.tokens().await?;
    let names: std::collections::HashMap<String, String> =
        state.db.gateways().await?.into_iter().map(|g| (g.id, g.name)).collect();
    Ok(Json(
        rows.into_iter()
            // Only kinds this hub knows; a newer hub's rows on a shared database are skipped.
            .filter_map(|r| {
                let kind = TokenKind::ALL.into_iter().find(|k| k.as_str() == r.kind)?;
                let gateway = r.gateway_id.map(|id| names.get(&id).cloned().unwrap_or(id));
                Some(TokenInfo {
                    id: r.id,
                    kind,
                    created_ms: r.created_ms,
                    revoked_ms: r.revoked_ms,
                    gateway,
                })
            })
            .collect(),
    ))
}

pub(super) async fn revoke_token(
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
pub(super) async fn rotate_admin_token(
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
