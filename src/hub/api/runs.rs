//! A run's life as the nodes report it: the dispatcher claims queued runs and assigns them, a
//! worker starts one, reports progress (with checkpoints), splits a copy's listing into
//! parts, and finishes it; and the refusals (409 stale, 410 cancelled, 429) they may get.

use super::access::NodeAuth;
use super::extract::{ApiJson, ApiPath};
use super::jobs::run_view;
use crate::hub::db::{self, NewPart, RunEnd, RunRow, Split, now_ms};
use crate::hub::error::ApiError;
use crate::hub::{HubState, auth};
use crate::protocol::{
    Activity, AssignRun, ClaimRequest, FinishRun, Part, RunProgress, RunState, RunView, SplitRun, StartRun,
    TransferProgress,
};
use crate::transfer::spec::MAX_PARTITIONS;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use std::time::Duration;

/// A progress report may carry a checkpoint: a large upload's stored part ids (S3 allows
/// 10,000 parts, some 40 bytes of JSON each) and the files done so far.
pub(super) const MAX_PROGRESS_BODY_BYTES: usize = 4 << 20;
/// A split carries the whole listing: up to 10,000 parts of up to 256 files each, about 100
/// bytes of JSON a file. Only an authenticated node gets this far (the token is checked before
/// the body is read).
pub(super) const MAX_SPLIT_BODY_BYTES: usize = 256 << 20;
/// The most runs one job may have in all, its copies' parts included: a job of many copies
/// can't fill the hub's database by itself.
const MAX_RUNS_PER_JOB: i64 = 50_000;
/// Longest a dispatcher's claim may wait for work.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);

pub(super) async fn claim(
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
    let mut again = request.again;
    loop {
        // Registered before the claim, so a submission between the claim and the wait wakes us.
        let signal = state.queue_signal.notified();
        let now = state.db.clock_ms().await?;
        let lease = state.db.lease(&node.gateway_id, now).await?;
        if lease.holder.as_deref() != Some(node.id.as_str()) || lease.epoch != request.lease_epoch {
            return Err(not_dispatcher(lease.epoch));
        }
        let waited = |run: &RunRow| u64::try_from(now - run.queued_ms).unwrap_or(0);
        if std::mem::take(&mut again) {
            // What the last claim took for this dispatcher if its answer never arrived
            // (counted in the dispatch latency then).
            let held = state.db.unstarted_claims(&node).await?;
            if !held.is_empty() {
                let views = held.into_iter().map(|run| {
                    let waited_ms = waited(&run);
                    run_view(run).map(|view| RunView { waited_ms: Some(waited_ms), ..view })
                });
                return Ok(Json(views.collect::<Result<_, _>>()?));
            }
        }
        // Reads only while there is nothing to take: the claim (a write) runs when there is.
        let runs = if state.db.has_queued_runs(&node.gateway_id).await? {
            state.db.claim_runs(&node.gateway_id, &node, request.lease_epoch, max, now).await?
        } else {
            Vec::new()
        };
        if !runs.is_empty() {
            let views = runs.into_iter().map(|run| {
                let waited_ms = waited(&run);
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

pub(super) async fn assign(
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
pub(super) async fn start(
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

pub(super) async fn progress(
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
pub(super) async fn split(
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

pub(super) async fn finish(
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
pub(super) async fn refusal(state: &HubState, run: &str, attempt: u32) -> Result<ApiError, ApiError> {
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
            crate::hub::long_polls::MAX_PER_NODE
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
