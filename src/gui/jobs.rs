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
