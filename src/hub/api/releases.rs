//! Releases for `node update`: the admin publishes a signed file (`hub release publish`:
//! begin, pieces, publish), nodes learn of the newest one for their platform in the heartbeat
//! answer and fetch it with their node token. The hub takes a release only if its signature
//! verifies against a key it was started with (`hub serve --release-key`), and publishes it
//! only if the pieces' SHA-256 is the signed one. The heartbeat also hands out each gateway's
//! one update slot, so its nodes update one at a time.

use super::access::{Admin, NodeAuth};
use super::extract::{ApiJson, ApiPath};
use crate::hub::HubState;
use crate::hub::audit::{self, Actor};
use crate::hub::db::{GatewayRow, NodeRow, now_ms};
use crate::hub::error::ApiError;
use crate::protocol::{NewRelease, RELEASE_PART_BYTES, ReleaseView, UpdateOffer, compare_versions};
use crate::release::{self, PublicKey};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use sha2::{Digest as _, Sha256};
use std::cmp::Ordering;
use std::time::Duration;

/// The largest release file the hub takes.
pub const MAX_RELEASE_BYTES: u64 = 1 << 30;
/// How long a node keeps its gateway's update slot without a heartbeat asking for it: its
/// drain renews it every beat, and the restart, the new binary's first beats (or the rollback
/// and the old binary's) fit in it. A node that beats on without asking frees it at once.
pub const UPDATE_SLOT_TTL: Duration = Duration::from_secs(180);

pub(super) async fn create(
    State(state): State<HubState>,
    _: Admin,
    ApiJson(request): ApiJson<NewRelease>,
) -> Result<(StatusCode, Json<ReleaseView>), ApiError> {
    check_label(&request.version, "version", 32)?;
    check_label(&request.platform, "platform", 64)?;
    if request.size_bytes == 0 || request.size_bytes > MAX_RELEASE_BYTES {
        return Err(ApiError::bad_request(format!(
            "a release file has 1 byte to 1 GiB, not {} bytes",
            request.size_bytes
        )));
    }
    let sha256 = request.sha256.trim().to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request("the release's SHA-256 must be 64 hex digits"));
    }
    let key = trusted_key(&state.config.release_keys, &sha256, &request.signature, &request.version)?;
    let view = ReleaseView {
        id: crate::hub::auth::new_id(),
        version: request.version.trim().to_owned(),
        platform: request.platform.trim().to_owned(),
        size_bytes: request.size_bytes,
        sha256,
        signature: request.signature.trim().to_owned(),
        key_id: key.id(),
        published: false,
        created_ms: now_ms(),
    };
    state.db.begin_release(&view).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub(super) async fn put_part(
    State(state): State<HubState>,
    _: Admin,
    ApiPath((id, seq)): ApiPath<(String, u32)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let release = state.db.release(&id).await?.ok_or_else(no_release)?;
    if release.published {
        return Err(ApiError::conflict(format!("release {} is published already", release.version)));
    }
    let parts = release.size_bytes.div_ceil(RELEASE_PART_BYTES as u64);
    if u64::from(seq) >= parts || body.is_empty() || body.len() > RELEASE_PART_BYTES {
        return Err(ApiError::bad_request(format!(
            "release {} has pieces 0 to {} of up to {RELEASE_PART_BYTES} bytes; this was piece {seq} of {} bytes",
            release.version,
            parts.saturating_sub(1),
            body.len()
        )));
    }
    state.db.put_release_part(&id, i64::from(seq), &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn publish(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ReleaseView>, ApiError> {
    let mut release = state.db.release(&id).await?.ok_or_else(no_release)?;
    if release.published {
        return Ok(Json(release));
    }
    let parts = state.db.release_part_sizes(&id).await?;
    let stored: i64 = parts.iter().map(|(_, size)| size).sum();
    let in_order = parts.iter().enumerate().all(|(i, (seq, _))| usize::try_from(*seq).ok() == Some(i));
    if !in_order || u64::try_from(stored).ok() != Some(release.size_bytes) {
        return Err(ApiError::bad_request(format!(
            "release {} is incomplete: {stored} of its {} bytes arrived; publish it again",
            release.version, release.size_bytes
        )));
    }
    // Piece by piece: at most one piece of the file is in memory.
    let mut hasher = Sha256::new();
    for (seq, _) in &parts {
        let data = state.db.release_part(&id, *seq).await?.ok_or_else(no_release)?;
        hasher.update(&data);
    }
    let actual = crate::encoding::hex(&hasher.finalize());
    if actual != release.sha256 {
        state.db.delete_release(&id).await?;
        let error = release::ReleaseError::Digest { expected: release.sha256.clone(), actual };
        return Err(ApiError::bad_request(format!("the hub refuses release {}: {error}", release.version))
            .with_hint("publish the file that was signed: gatehouse hub release publish FILE --version V"));
    }
    state.db.publish_release(&id).await?;
    release.published = true;
    let detail = format!(
        "release {} for {} published ({} bytes, SHA-256 {}, signed by key {})",
        release.version, release.platform, release.size_bytes, release.sha256, release.key_id
    );
    audit::record(&state, None, Actor::Admin, "release.publish", detail).await;
    Ok(Json(release))
}

pub(super) async fn list(
    State(state): State<HubState>,
    _: Admin,
) -> Result<Json<Vec<ReleaseView>>, ApiError> {
    Ok(Json(state.db.releases().await?))
}

/// The release's file, streamed piece by piece from the database (a node fetches it to
/// update; it checks the signature and the SHA-256 itself).
pub(super) async fn file(
    State(state): State<HubState>,
    NodeAuth(_node): NodeAuth,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let release = state.db.release(&id).await?.filter(|r| r.published).ok_or_else(no_release)?;
    let parts = state.db.release_part_sizes(&id).await?;
    let db = state.db.clone();
    let pieces =
        futures_util::stream::unfold((db, id, parts.into_iter()), |(db, id, mut parts)| async move {
            let (seq, _) = parts.next()?;
            let piece = match db.release_part(&id, seq).await {
                Ok(Some(data)) => Ok(Bytes::from(data)),
                Ok(None) => Err(std::io::Error::other("a piece of the release went missing")),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            Some((piece, (db, id, parts)))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, release.size_bytes)
        .body(Body::from_stream(pieces))
        .map_err(|e| {
            tracing::error!("can't build the release response: {e}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the hub couldn't send the release")
        })
}

/// The update part of a heartbeat answer, for the node `node_id` (its row in `nodes` as just
/// written): takes, renews
/// or frees the gateway's update slot, and offers the release `me` should take, if any.
pub(super) async fn heartbeat_offer(
    state: &HubState,
    gateway: &GatewayRow,
    nodes: &[NodeRow],
    node_id: &str,
    gateway_version: Option<&str>,
    now: i64,
) -> Result<Option<UpdateOffer>, ApiError> {
    let Some(me) = nodes.iter().find(|n| n.id == node_id) else { return Ok(None) };
    let holder = if me.metrics.update_to.is_some() {
        let expires = now.saturating_add(i64::try_from(UPDATE_SLOT_TTL.as_millis()).unwrap_or(i64::MAX / 4));
        state.db.acquire_update_slot(&gateway.id, &me.id, now, expires).await?
    } else {
        let holder = state.db.update_slot(&gateway.id, now).await?;
        if holder.as_deref() == Some(me.id.as_str()) {
            state.db.release_update_slot(&gateway.id, &me.id).await?;
            tracing::info!(node = %me.name, version = %me.version, "the node's update is over; the gateway's update slot is free");
        }
        None
    };
    let Some(platform) = me.metrics.platform.as_deref() else { return Ok(None) };
    let releases: Vec<ReleaseView> =
        state.db.releases().await?.into_iter().filter(|r| r.published && r.platform == platform).collect();
    let newer = |r: &&ReleaseView| compare_versions(&r.version, &me.version) == Ordering::Greater;
    let newest = releases.iter().filter(newer).max_by(|a, b| compare_versions(&a.version, &b.version));
    let behind = gateway_version.filter(|g| compare_versions(&me.version, g) == Ordering::Less);
    let asked = me.metrics.update_to.as_deref().and_then(|v| releases.iter().find(|r| r.version == v));
    let catch_up = behind.and_then(|g| releases.iter().find(|r| r.version == g));
    let Some(release) = asked.or(catch_up).or(newest) else { return Ok(None) };
    let advice = match behind {
        Some(gateway_version) => format!(
            "this node runs {}, older than its gateway's version {gateway_version}: update it to release {} with `gatehouse node update`",
            me.version, release.version
        ),
        None => format!(
            "update available: {} (you run {}); install it with `gatehouse node update`",
            release.version, me.version
        ),
    };
    let granted = holder.as_deref() == Some(me.id.as_str());
    let waiting_for = holder
        .filter(|h| !granted && me.metrics.update_to.is_some() && h != &me.id)
        .map(|h| nodes.iter().find(|n| n.id == h).map_or(h, |n| n.name.clone()));
    Ok(Some(UpdateOffer {
        release: release.clone(),
        keys: state.config.release_keys.iter().map(PublicKey::to_line).collect(),
        advice,
        granted,
        waiting_for,
    }))
}

/// The trusted key the signature verifies against, else the refusal that names the keys.
fn trusted_key<'k>(
    keys: &'k [PublicKey],
    sha256: &str,
    signature: &str,
    version: &str,
) -> Result<&'k PublicKey, ApiError> {
    if keys.is_empty() {
        return Err(ApiError::forbidden(format!(
            "the hub refuses release {version}: it trusts no release key"
        ))
        .with_hint(
            "start the hub with --release-key PUBFILE (the release.pub `gatehouse release keygen` made)",
        ));
    }
    release::verify(sha256, signature, keys).map_err(|e| {
        ApiError::forbidden(format!("the hub refuses release {version}: {e}")).with_hint(
            "sign the file with a key the hub trusts: gatehouse release sign FILE --key release.key",
        )
    })
}

fn check_label(value: &str, what: &str, max: usize) -> Result<(), ApiError> {
    let value = value.trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_');
    if value.is_empty() || value.len() > max || !value.chars().all(allowed) {
        return Err(ApiError::bad_request(format!(
            "a release {what} has 1 to {max} letters, digits, dots, dashes, pluses or underscores, not {value:?}"
        )));
    }
    Ok(())
}

fn no_release() -> ApiError {
    ApiError::not_found("no such release; see `gatehouse hub release list`")
}
