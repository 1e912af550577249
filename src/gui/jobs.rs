//! The Jobs tab: the gateway's recent jobs as the hub reports them, and for each run which
//! node ran which partition, in which attempt, how far it got, how fast, and its error — as
//! the monitoring of the gateways we replace shows. Drawing only; `app::logic` fetches.

use super::home::copy_text;
use super::state::State;
use super::widgets;
use crate::protocol::{JobView, RunState, RunView, TransferProgress};
use eframe::egui;
use std::time::Duration;

/// How often the list is fetched again while the tab is open.
pub const REFRESH: Duration = Duration::from_secs(3);

pub fn jobs_ui(ui: &mut egui::Ui, state: &State) {
    ui.heading("Jobs");
    match &state.jobs {
        None => {
            widgets::waiting(ui, "Asking the hub for the gateway's jobs…");
        }
        Some(Err(problem)) => {
            widgets::problem(ui, &format!("Can't list the jobs: {problem}"));
        }
        Some(Ok(jobs)) if jobs.is_empty() => {
            ui.label("No jobs yet. Submit one with: gatehouse job submit GATEWAY job.json");
        }
        Some(Ok(jobs)) => {
            for (index, job) in jobs.iter().enumerate() {
                // The newest few and every unfinished one start open.
                job_ui(ui, job, index < 3 || !job.state.is_final());
            }
        }
    }
}

fn job_ui(ui: &mut egui::Ui, job: &JobView, open: bool) {
    let title = format!("{} — {} ({})", job.name, job.state.as_str(), job.id);
    egui::CollapsingHeader::new(title).id_salt(&job.id).default_open(open).show(ui, |ui| {
        if let Some(total) = job.progress.filter(|t| t.bytes_total > 0 || t.files_total > 0) {
            ui.label(format!("Copied: {}", copy_text(&total)));
        }
        egui::Grid::new(("runs", &job.id)).striped(true).num_columns(7).spacing([12.0, 4.0]).show(ui, |ui| {
            for header in ["Run", "State", "Node", "Attempt", "Progress", "Rate", "Error"] {
                ui.strong(header);
            }
            ui.end_row();
            for run in &job.runs {
                run_row_ui(ui, run);
            }
        });
    });
}

fn run_row_ui(ui: &mut egui::Ui, run: &RunView) {
    let copy = progress(run);
    let what = if run.partition == 0 && copy.is_none() {
        format!("activity {} (listing)", run.activity_index)
    } else {
        format!("activity {} part {}", run.activity_index, run.partition)
    };
    ui.label(what);
    ui.label(run.state.as_str());
    ui.label(run.node_name.as_deref().unwrap_or("–"));
    match attempts_text(run) {
        Some(history) => {
            ui.label(format!("{} ⟲", run.attempt)).on_hover_text(history);
        }
        None => {
            ui.label(run.attempt.to_string());
        }
    }
    if let Some(copy) = copy {
        #[allow(clippy::cast_precision_loss, reason = "a progress bar needs no more precision")]
        let done = if copy.bytes_total > 0 { copy.bytes_done as f32 / copy.bytes_total as f32 } else { 1.0 };
        let done = if run.state == RunState::Succeeded { 1.0 } else { done };
        ui.add_sized(
            [160.0, 16.0],
            egui::ProgressBar::new(done).text(format!(
                "{} of {}",
                crate::encoding::binary_size(copy.bytes_done),
                crate::encoding::binary_size(copy.bytes_total)
            )),
        );
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a rate to show")]
        let rate = copy.bytes_per_second.max(0.0) as u64;
        let rate = crate::encoding::binary_size(rate);
        ui.label(if run.state == RunState::Running { format!("{rate}/s") } else { "–".into() });
    } else {
        ui.label("–");
        ui.label("–");
    }
    ui.label(run.error.as_deref().unwrap_or(""));
    ui.end_row();
}

/// Every attempt of a run tried more than once, a line each (node, outcome, why), for the
/// attempt column's hover; `None` for a run tried once.
fn attempts_text(run: &RunView) -> Option<String> {
    (run.attempts.len() > 1).then(|| {
        run.attempts
            .iter()
            .map(|a| {
                let node = a.node_name.as_deref().unwrap_or("–");
                let why = a.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                format!("attempt {} on {node} — {}{why}", a.attempt, a.outcome.as_str())
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// A copy run's progress, when it reported one.
fn progress(run: &RunView) -> Option<TransferProgress> {
    run.progress.as_ref().and_then(|p| serde_json::from_value(p.clone()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_tried_twice_tells_each_attempt_on_hover_and_one_tried_once_nothing() {
        let mut run: RunView = serde_json::from_value(serde_json::json!({
            "id": "r", "job_id": "j", "activity_index": 0, "partition": 1,
            "activity": {"kind": "sleep", "millis": 1}, "state": "succeeded", "attempt": 2,
            "node_id": "b", "node_name": "b", "progress": null, "result": null, "error": null,
            "queued_ms": 0, "finished_ms": 9,
            "attempts": [
                {"attempt": 1, "node_id": "a", "node_name": "a", "started_ms": 1, "ended_ms": 5,
                 "outcome": "lost", "reason": "node a stopped sending heartbeats"},
                {"attempt": 2, "node_id": "b", "node_name": "b", "started_ms": 6, "ended_ms": 9,
                 "outcome": "succeeded", "reason": null}
            ]
        }))
        .unwrap();
        assert_eq!(
            attempts_text(&run).as_deref(),
            Some("attempt 1 on a — lost: node a stopped sending heartbeats\nattempt 2 on b — succeeded")
        );
        run.attempts.truncate(1);
        assert_eq!(attempts_text(&run), None);
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::testing::{self, Alone, shows};
    use egui_kittest::kittest::Queryable as _;

    fn tab(jobs: Option<Result<Vec<JobView>, String>>) -> testing::Page<()> {
        let state = State { jobs, ..testing::running() };
        testing::page((), state, |ui, alone: &mut Alone<()>| jobs_ui(ui, &alone.state))
    }

    fn job(id: &str, state: &str, runs: &serde_json::Value) -> JobView {
        serde_json::from_value(serde_json::json!({
            "id": id, "gateway_id": "g1", "name": format!("nightly-{id}"), "state": state,
            "created_ms": 0, "runs": runs,
        }))
        .unwrap()
    }

    fn run(
        partition: u32,
        state: &str,
        node: &str,
        error: Option<&str>,
        progress: &serde_json::Value,
    ) -> serde_json::Value {
        serde_json::json!({
            "id": format!("r{partition}"), "job_id": "j", "activity_index": 0, "partition": partition,
            "activity": {"kind": "sleep", "millis": 1}, "state": state, "attempt": 1,
            "node_id": node, "node_name": node, "progress": progress, "result": null, "error": error,
            "queued_ms": 0, "finished_ms": null, "attempts": [],
        })
    }

    #[test]
    fn before_an_answer_after_a_failure_and_with_no_jobs_the_tab_says_so() {
        assert!(shows(&tab(None), "Asking the hub for the gateway's jobs…"));
        let harness = tab(Some(Err("the hub can't be reached".to_owned())));
        assert!(shows(&harness, "Can't list the jobs: the hub can't be reached"));
        assert!(shows(&tab(Some(Ok(Vec::new()))), "No jobs yet."));
    }

    #[test]
    fn each_run_shows_its_node_progress_and_error() {
        let copy = serde_json::json!({
            "bytes_done": 1_048_576, "bytes_total": 4_194_304, "files_done": 1, "files_total": 4,
            "bytes_per_second": 1_048_576.0,
        });
        let jobs = vec![job(
            "j1",
            "running",
            &serde_json::json!([
                run(1, "running", "n1", None, &copy),
                run(2, "failed", "n2", Some("the bucket refused the upload"), &serde_json::Value::Null),
            ]),
        )];
        let harness = tab(Some(Ok(jobs)));
        assert!(shows(&harness, "nightly-j1 — running (j1)"), "the job's title isn't drawn");
        for text in ["activity 0 part 1", "n1", "n2", "the bucket refused the upload", "1.0 MiB/s"] {
            assert!(harness.query_by_label_contains(text).is_some(), "{text:?} isn't drawn");
        }
        assert!(shows(&harness, "1.0 MiB of 4.0 MiB"), "the run's progress isn't drawn");
    }
}
