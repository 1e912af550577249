//! The "Concurrency" section: how many runs this node takes at once, set by hand or left to
//! the default formula, and when a new limit applies.

use eframe::egui;

use super::number;
use crate::gui::ops::{Op, OpKind};
use crate::gui::outbox::{Answers, Outbox};
use crate::gui::service::ServiceState;
use crate::gui::state::State;
use crate::gui::widgets;
use crate::node::metrics::default_concurrency;
use crate::node::store::NodeSettings;

/// The section's state: the limit as typed (empty: the default) and the last answer.
pub struct ConcurrencySection {
    pub limit: String,
    pub answers: Answers,
    /// This machine's logical CPUs, read once.
    cores: usize,
}

impl Default for ConcurrencySection {
    fn default() -> Self {
        ConcurrencySection {
            limit: String::new(),
            answers: Answers::default(),
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        }
    }
}

impl ConcurrencySection {
    /// Fills the limit from the node's settings.
    pub(super) fn fill(&mut self, settings: &NodeSettings) {
        self.limit = settings.concurrency_limit.map(|l| l.to_string()).unwrap_or_default();
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, state: &State, outbox: &Outbox) {
        let settings = state.settings.as_ref();
        let status = state.status.as_ref().filter(|s| s.metrics.runs_limit > 0);
        match (status, settings.and_then(|s| s.concurrency_limit)) {
            (Some(status), Some(_)) => {
                ui.label(format!("Current limit: {} runs at once (set by hand).", status.metrics.runs_limit))
            }
            (Some(status), None) => {
                ui.label(format!("Current limit: {} runs at once (the default).", status.metrics.runs_limit))
            }
            (None, Some(limit)) => ui.label(format!("Limit: {limit} runs at once (set by hand).")),
            (None, None) => ui.label("Limit: the default."),
        };
        let memory = state.status.as_ref().map(|s| s.metrics.total_memory_bytes).filter(|&m| m > 0);
        match memory {
            Some(memory) => ui.label(format!(
                "Default: max(2, min(4 × {} cores, 2 × {} GiB RAM)) = {} on this machine.",
                self.cores,
                memory >> 30,
                default_concurrency(self.cores, memory)
            )),
            None => ui.label(format!("Default: max(2, min(4 × {} cores, 2 × GiB RAM)).", self.cores)),
        };
        let limit = if self.limit.trim().is_empty() {
            Ok(None)
        } else {
            number::<u32>(&self.limit, 1, 10_000, "The limit").map(Some)
        };
        egui::Grid::new("concurrency").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
            widgets::number_field(ui, "Concurrency limit", &mut self.limit, "default");
            ui.end_row();
        });
        if let Err(problem) = &limit {
            widgets::problem(ui, problem);
        }
        let busy = self.answers.waiting(OpKind::Concurrency);
        ui.horizontal(|ui| {
            if widgets::button(ui, !busy && matches!(limit, Ok(Some(_))), "Set limit")
                && let Ok(limit) = limit
            {
                self.answers.send(outbox, Op::SetConcurrency(limit));
            }
            if widgets::button(ui, !busy, "Use default") {
                self.limit.clear();
                self.answers.send(outbox, Op::SetConcurrency(None));
            }
        });
        // The window restarts only a service it runs itself.
        ui.label(match state.service {
            ServiceState::Running => {
                "The service restarts to apply a new limit; runs under way finish first."
            }
            ServiceState::Attached { .. } => "A new limit applies once gatehouse node run is restarted.",
            _ => "A new limit applies when the node service next starts.",
        });
        widgets::reply(ui, self.answers.get(OpKind::Concurrency));
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::testing::{self, Alone, asked_op, click, sent, shows, type_into};

    fn section(state: State) -> testing::Page<ConcurrencySection> {
        testing::page(ConcurrencySection::default(), state, |ui, alone: &mut Alone<ConcurrencySection>| {
            alone.page.ui(ui, &alone.state, &alone.outbox);
        })
    }

    #[test]
    fn a_typed_limit_is_sent_and_a_bad_one_is_refused_as_typed() {
        let mut harness = section(testing::running());
        assert!(shows(&harness, "Current limit: 8 runs at once (the default)."));
        type_into(&mut harness, "Concurrency limit", "0");
        assert!(
            shows(&harness, "The limit must be a whole number from 1 to 10000."),
            "a bad limit isn't flagged"
        );
        click(&mut harness, "Set limit");
        assert!(sent(&harness).is_empty(), "a bad limit was sent");

        harness.state_mut().page.limit = "3".to_owned();
        harness.step();
        click(&mut harness, "Set limit");
        let op = asked_op(&harness);
        assert!(matches!(&op, Op::SetConcurrency(Some(3))), "{op:?}");
        assert!(shows(&harness, "Working…"), "no sign that the limit is being set");
        // One change at a time.
        click(&mut harness, "Use default");
        assert!(sent(&harness).is_empty(), "a second change was sent while the first ran");

        harness
            .state_mut()
            .page
            .answers
            .done(OpKind::Concurrency, &Ok("this node takes at most 3 runs".to_owned()));
        harness.step();
        assert!(shows(&harness, "this node takes at most 3 runs"), "the answer isn't shown");
        click(&mut harness, "Use default");
        assert!(matches!(asked_op(&harness), Op::SetConcurrency(None)));
        assert!(harness.state().page.limit.is_empty(), "the field still shows the old limit");
    }

    #[test]
    fn when_a_limit_applies_depends_on_who_runs_the_service() {
        let mut state = testing::running();
        state.service = ServiceState::Attached { pid: 42, data_dir: "/tmp/n1".into(), system: false };
        let harness = section(state);
        assert!(shows(&harness, "once gatehouse node run is restarted"));
        let harness = section(testing::running());
        assert!(shows(&harness, "The service restarts to apply a new limit"));
    }
}
