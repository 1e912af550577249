//! The "Metrics" section: the loopback address this node serves its own Prometheus
//! `/metrics` on (empty: none), checked as typed; the running service follows it live.

use eframe::egui;
use std::net::SocketAddr;

use crate::gui::ops::{Op, OpKind};
use crate::gui::outbox::{Answers, Outbox};
use crate::gui::state::State;
use crate::gui::widgets;
use crate::node::store::NodeSettings;

/// The section's state: the address as typed (empty: off) and the last answer.
#[derive(Default)]
pub struct MetricsSection {
    pub address: String,
    pub answers: Answers,
}

impl MetricsSection {
    /// Fills the address from the node's settings.
    pub(super) fn fill(&mut self, settings: &NodeSettings) {
        self.address = settings.metrics_listen.map(|a| a.to_string()).unwrap_or_default();
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, state: &State, outbox: &Outbox) {
        let current: Option<SocketAddr> = state.settings.as_ref().and_then(|s| s.metrics_listen);
        ui.label(match current {
            Some(address) => format!(
                "This node serves its own metrics at http://{address}/metrics (no token, this machine only)."
            ),
            None => "This node serves no metrics of its own; the hub's /metrics has them.".to_owned(),
        });
        egui::Grid::new("metrics").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
            widgets::text_field(
                ui,
                "Metrics address",
                &mut self.address,
                "127.0.0.1:9464 (empty: off)",
                false,
            );
            ui.end_row();
        });
        let typed = crate::node::ops::parse_metrics_listen(&self.address);
        if let Err(problem) = &typed {
            widgets::problem(ui, &format!("{problem}."));
        }
        let ready = typed.as_ref().is_ok_and(|t| *t != current) && !self.answers.waiting(OpKind::Metrics);
        if widgets::button(ui, ready, "Save metrics address")
            && let Ok(address) = typed
        {
            self.answers.send(outbox, Op::SetMetrics(address));
        }
        widgets::reply(ui, self.answers.get(OpKind::Metrics));
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::testing::{self, Alone, asked_op, click, sent, shows, type_into};

    fn section(state: State) -> testing::Page<MetricsSection> {
        testing::page(MetricsSection::default(), state, |ui, alone: &mut Alone<MetricsSection>| {
            alone.page.ui(ui, &alone.state, &alone.outbox);
        })
    }

    #[test]
    fn a_loopback_address_is_sent_and_another_is_flagged_as_typed() {
        let mut harness = section(testing::running());
        assert!(shows(&harness, "serves no metrics of its own"));
        type_into(&mut harness, "Metrics address", "0.0.0.0:9464");
        assert!(shows(&harness, "is not a loopback address"), "a network address isn't flagged");
        click(&mut harness, "Save metrics address");
        assert!(sent(&harness).is_empty(), "a network address was sent");

        harness.state_mut().page.address = "127.0.0.1:9464".to_owned();
        harness.step();
        click(&mut harness, "Save metrics address");
        let op = asked_op(&harness);
        assert!(matches!(&op, Op::SetMetrics(Some(a)) if a.to_string() == "127.0.0.1:9464"), "{op:?}");
    }

    #[test]
    fn the_address_in_use_is_not_sent_again_and_empty_turns_it_off() {
        let mut state = testing::running();
        state.settings.as_mut().unwrap().metrics_listen = Some("[::1]:9464".parse().unwrap());
        let mut harness = section(state);
        assert!(shows(&harness, "at http://[::1]:9464/metrics"));
        harness.state_mut().page.address = "[::1]:9464".to_owned();
        harness.step();
        click(&mut harness, "Save metrics address");
        assert!(sent(&harness).is_empty(), "the address in use was sent again");
        harness.state_mut().page.address.clear();
        harness.step();
        click(&mut harness, "Save metrics address");
        assert!(matches!(asked_op(&harness), Op::SetMetrics(None)));
    }
}
