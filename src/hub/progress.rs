//! How far a job's copies are, from its runs as the job view shows them: per run, the
//! `TransferProgress` its node last reported, and for the job the sum over its partition runs.
//! Pure, for the status page and `gatehouse job show`, which must agree.
//!
//! A copy activity's partition 0 is its listing run; its partition runs are 1, 2, … and carry
//! the bytes. A succeeded run counts as fully done even when its last progress report was lost
//! (nodes send progress without waiting for an answer, so the last one may arrive too late).

use crate::protocol::{Activity, JobView, RunState, RunView, TransferProgress};

/// Whether the run belongs to a copy activity.
pub fn is_copy(run: &RunView) -> bool {
    matches!(run.activity, Activity::Copy { .. })
}

/// Whether the run is a copy's listing run (it finds the files; it moves none).
pub fn is_listing(run: &RunView) -> bool {
    is_copy(run) && run.partition == 0
}

/// A copy partition run's progress, if it has any that reads as `TransferProgress`.
pub fn of_run(run: &RunView) -> Option<TransferProgress> {
    if !is_copy(run) || is_listing(run) {
        return None;
    }
    let mut progress: TransferProgress = serde_json::from_value(run.progress.clone()?).ok()?;
    if run.state == RunState::Succeeded {
        progress.bytes_done = progress.bytes_done.max(progress.bytes_total);
        progress.files_done = progress.files_done.max(progress.files_total);
    }
    if run.state != RunState::Running {
        progress.bytes_per_second = 0.0;
    }
    Some(progress)
}

/// What a listing run found: (files, bytes), from its result (a folder's listing says both).
pub fn listed(run: &RunView) -> Option<(u64, u64)> {
    let result = run.result.as_ref().filter(|_| is_listing(run))?;
    Some((result.get("files")?.as_u64()?, result.get("bytes")?.as_u64()?))
}

/// The job's copies together; `None` when it has none. Totals are what the listings found
/// when they say, else what the partition runs report; the rate is that of the runs running now.
pub fn of_job(job: &JobView) -> Option<TransferProgress> {
    if !job.runs.iter().any(is_copy) {
        return None;
    }
    let mut sum = TransferProgress::default();
    // Runs come in activity order; each copy activity's totals are settled on its own.
    let mut activities: Vec<u32> = job.runs.iter().filter(|r| is_copy(r)).map(|r| r.activity_index).collect();
    activities.dedup();
    for activity in activities {
        let runs = job.runs.iter().filter(|r| r.activity_index == activity);
        let mut part = TransferProgress::default();
        let mut found = None;
        for run in runs {
            if let Some(listing) = listed(run) {
                found = Some(listing);
            }
            let Some(p) = of_run(run) else { continue };
            add(&mut part, &p);
        }
        if let Some((files, bytes)) = found {
            // A file that grew after the listing makes its run's total the larger one.
            part.files_total = part.files_total.max(files);
            part.bytes_total = part.bytes_total.max(bytes);
        }
        add(&mut sum, &part);
    }
    Some(sum)
}

/// Adds `p`'s counts and rate to `sum`.
fn add(sum: &mut TransferProgress, p: &TransferProgress) {
    sum.bytes_done = sum.bytes_done.saturating_add(p.bytes_done);
    sum.bytes_total = sum.bytes_total.saturating_add(p.bytes_total);
    sum.files_done = sum.files_done.saturating_add(p.files_done);
    sum.files_total = sum.files_total.saturating_add(p.files_total);
    sum.bytes_skipped = sum.bytes_skipped.saturating_add(p.bytes_skipped);
    sum.bytes_sent = sum.bytes_sent.saturating_add(p.bytes_sent);
    sum.bytes_per_second += p.bytes_per_second;
}

/// Runs and jobs for the tests of the modules that show progress (this one, the status page,
/// `gatehouse job show`, the job state).
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::protocol::{Activity, CopySink, CopySource, JobView, RunState, RunView};

    /// Partition `partition` of a folder copy (0 is its listing run).
    pub(crate) fn copy_run(partition: u32, state: RunState, progress: Option<serde_json::Value>) -> RunView {
        RunView {
            id: format!("r{partition}"),
            job_id: "j".into(),
            activity_index: 0,
            partition,
            activity: Activity::Copy {
                source: CopySource { folder: Some("/data".into()), ..CopySource::default() },
                sink: CopySink { url: "file:///out/".into(), ..CopySink::default() },
                overwrite: false,
            },
            state,
            attempt: 1,
            node_id: None,
            node_name: None,
            progress,
            result: None,
            error: None,
            queued_ms: 0,
            started_ms: None,
            finished_ms: None,
            attempts: Vec::new(),
            part: None,
            checkpoint: None,
            waited_ms: None,
        }
    }

    pub(crate) fn job_of(runs: Vec<RunView>) -> JobView {
        let state = if runs.iter().all(|r| r.state == RunState::Succeeded) {
            RunState::Succeeded
        } else {
            RunState::Running
        };
        let mut job = JobView {
            id: "j".into(),
            gateway_id: "g".into(),
            name: "nightly".into(),
            state,
            created_ms: 0,
            runs,
            progress: None,
            rerun_of: None,
        };
        job.progress = super::of_job(&job);
        job
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{copy_run as run, job_of as job};
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_sums_its_partition_runs_and_trusts_the_listing_for_totals() {
        let mut listing = run(0, RunState::Succeeded, None);
        listing.result = Some(json!({"files": 5, "bytes": 500}));
        let job = job(vec![
            listing,
            // Succeeded, but its last report (60 of 100) arrived after it finished.
            run(
                1,
                RunState::Succeeded,
                Some(json!({"bytes_done": 60, "bytes_total": 100, "files_done": 0, "files_total": 1})),
            ),
            run(
                2,
                RunState::Running,
                Some(
                    json!({"bytes_done": 50, "bytes_total": 200, "files_done": 1, "files_total": 2, "bytes_per_second": 10.0}),
                ),
            ),
            run(3, RunState::Queued, Some(json!({"bytes_total": 200, "files_total": 2}))),
        ]);
        let total = of_job(&job).unwrap();
        assert_eq!((total.bytes_done, total.bytes_total), (150, 500));
        assert_eq!((total.files_done, total.files_total), (2, 5));
        assert!((total.bytes_per_second - 10.0).abs() < f64::EPSILON);
    }

    #[test]
    fn only_running_runs_have_a_rate_and_odd_progress_is_ignored() {
        let failed = run(1, RunState::Failed, Some(json!({"bytes_done": 1, "bytes_per_second": 99.0})));
        assert_eq!(of_run(&failed).map(|p| p.bytes_per_second), Some(0.0));
        assert_eq!(of_run(&run(2, RunState::Running, Some(json!("half")))), None);
        assert_eq!(
            of_run(&run(0, RunState::Running, Some(json!({"bytes_done": 1})))),
            None,
            "a listing moves nothing"
        );
    }

    #[test]
    fn a_job_without_copies_has_no_copy_progress() {
        let mut echo = run(0, RunState::Queued, None);
        echo.activity = Activity::Echo { message: "hi".into(), partitions: 1 };
        assert_eq!(of_job(&job(vec![echo])), None);
    }
}
