//! Jobs for the admin: submit (a spec expanded into runs, its credentials checked against
//! what the nodes hold), re-run, list (filtered by state and time), show and cancel; the job
//! and run views (also for the status page and the nodes), and a job's state from its runs'.

use super::access::Admin;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::gateways::find_gateway;
use crate::hub::audit::{self, Actor};
use crate::hub::db::{self, GatewayRow, JobFilter, JobRow, NewRun, RunRow, now_ms};
use crate::hub::error::ApiError;
use crate::hub::{HubState, auth, history};
use crate::protocol::{JobSpec, JobView, JobsQuery, RunState, RunView, SubmitJob, TransferProgress};
use crate::transfer::spec::{self, MAX_PARTITIONS};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use std::collections::HashSet;

pub(super) async fn submit_job(
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
pub(super) async fn rerun_job(
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
        spec::check_activity(activity)
            .map_err(|e| ApiError::bad_request(format!("activity {index}: {e}")))?;
        let partitions = activity.runs_at_submit();
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
pub(super) async fn check_credentials(
    state: &HubState,
    gateway: &GatewayRow,
    spec: &JobSpec,
) -> Result<(), ApiError> {
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

pub(super) async fn list_jobs(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(gateway): ApiPath<String>,
    ApiQuery(query): ApiQuery<JobsQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let gateway = find_gateway(&state, &gateway).await?;
    Ok(Json(find_jobs(&state, &gateway.id, &query, 50, 500).await?))
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
pub(super) async fn find_jobs(
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

pub(super) async fn show_job(
    State(state): State<HubState>,
    _: Admin,
    ApiPath(job): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = state.db.job(&job).await?.ok_or_else(|| ApiError::not_found(format!("no job '{job}'")))?;
    Ok(Json(job_view(&state, job).await?))
}

/// Every run of the job that hasn't ended is cancelled; the nodes running them hear so (410)
/// at their next report, stop, and remove what they started.
pub(super) async fn cancel_job(
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
    view.progress = crate::hub::progress::of_job(&view);
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

pub(super) fn run_view(run: RunRow) -> Result<RunView, ApiError> {
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
