//! A run's history: every attempt that was handed to a node, from the attempts that ended
//! without ending the run (`run_attempts`: lost or cancelled) and the run itself (the current
//! attempt). Pure, so the API, the CLI and the status page show the same thing.

use super::db::AttemptRow;
use crate::protocol::{AttemptOutcome, AttemptView, RunState, RunView};

/// The attempts of `run`, oldest first: `past` (this run's rows, any order) and then the
/// current attempt if a node ever had it. A run still waiting in the queue after a lost
/// attempt shows only the past ones.
pub fn attempts(run: &RunView, past: &[&AttemptRow]) -> Vec<AttemptView> {
    let mut views: Vec<AttemptView> = past
        .iter()
        .map(|a| AttemptView {
            attempt: u32::try_from(a.attempt).unwrap_or(u32::MAX),
            node_id: a.node_id.clone(),
            node_name: a.node_name.clone(),
            started_ms: a.started_ms,
            ended_ms: Some(a.ended_ms),
            outcome: if a.outcome == "cancelled" { AttemptOutcome::Cancelled } else { AttemptOutcome::Lost },
            reason: a.error.clone(),
        })
        .collect();
    views.sort_by_key(|a| a.attempt);
    let recorded = views.iter().any(|a| a.attempt == run.attempt);
    let current = match run.state {
        // Never handed out in this attempt (a cancelled queued run has no node).
        RunState::Queued => None,
        RunState::Cancelled if run.node_id.is_none() => None,
        RunState::Dispatched => Some(AttemptOutcome::Dispatched),
        RunState::Running => Some(AttemptOutcome::Running),
        RunState::Succeeded => Some(AttemptOutcome::Succeeded),
        RunState::Failed => Some(AttemptOutcome::Failed),
        RunState::Cancelled => Some(AttemptOutcome::Cancelled),
    };
    if let Some(outcome) = current.filter(|_| !recorded) {
        views.push(AttemptView {
            attempt: run.attempt,
            node_id: run.node_id.clone(),
            node_name: run.node_name.clone(),
            started_ms: run.started_ms,
            ended_ms: run.finished_ms,
            outcome,
            reason: run.error.clone(),
        });
    }
    views
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::progress::fixtures::copy_run;

    fn lost(attempt: i64, node: &str, why: &str) -> AttemptRow {
        AttemptRow {
            run_id: "r".into(),
            attempt,
            node_id: Some(format!("{node}-id")),
            node_name: Some(node.into()),
            started_ms: Some(attempt * 1000),
            ended_ms: attempt * 1000 + 500,
            outcome: "lost".into(),
            error: Some(why.into()),
        }
    }

    #[test]
    fn a_run_killed_twice_lists_both_lost_attempts_then_the_one_that_succeeded() {
        let mut run = copy_run(1, RunState::Succeeded, None);
        (run.attempt, run.node_name, run.started_ms, run.finished_ms) =
            (3, Some("c".into()), Some(3000), Some(3900));
        let (first, second) =
            (lost(1, "a", "node a stopped sending heartbeats"), lost(2, "b", "node b was removed"));
        let views = attempts(&run, &[&second, &first]);
        let summary: Vec<_> = views
            .iter()
            .map(|a| (a.attempt, a.node_name.as_deref(), a.outcome, a.reason.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                (1, Some("a"), AttemptOutcome::Lost, Some("node a stopped sending heartbeats")),
                (2, Some("b"), AttemptOutcome::Lost, Some("node b was removed")),
                (3, Some("c"), AttemptOutcome::Succeeded, None),
            ]
        );
        assert_eq!((views[2].started_ms, views[2].ended_ms), (Some(3000), Some(3900)));
    }

    #[test]
    fn a_waiting_run_shows_only_what_was_handed_out_and_a_cancel_is_listed_once() {
        let mut waiting = copy_run(1, RunState::Queued, None);
        waiting.attempt = 2;
        assert_eq!(attempts(&waiting, &[&lost(1, "a", "gone")]).len(), 1);
        assert!(attempts(&copy_run(1, RunState::Queued, None), &[]).is_empty());

        let mut cancelled = copy_run(1, RunState::Cancelled, None);
        cancelled.node_id = Some("a-id".into());
        let recorded = AttemptRow { outcome: "cancelled".into(), ..lost(1, "a", "the job was cancelled") };
        let views = attempts(&cancelled, &[&recorded]);
        assert_eq!(views.len(), 1, "{views:?}");
        assert_eq!(views[0].outcome, AttemptOutcome::Cancelled);
        let never_started = copy_run(1, RunState::Cancelled, None);
        assert!(attempts(&never_started, &[]).is_empty(), "cancelled while queued: no node had it");
    }
}
