//! Who is asking: the authentication extractors (`Admin`, `MetricsAuth`, `Viewer`,
//! `NodeAuth`) and the bearer and Basic credentials they read. Every token check is
//! constant-time (`auth::verify`).

use crate::hub::db::NodeRow;
use crate::hub::error::ApiError;
use crate::hub::{HubState, auth};
use crate::protocol::TokenKind;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

pub(super) fn bearer(parts: &Parts) -> Option<&str> {
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
pub(super) async fn is_admin_token(state: &HubState, token: &str) -> Result<bool, ApiError> {
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
