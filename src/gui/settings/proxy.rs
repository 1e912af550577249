//! The "Proxy" section: the HTTP(S) proxy the node reaches the hub through, checked as typed.

use eframe::egui;

use crate::gui::ops::{Op, OpKind};
use crate::gui::outbox::{Answers, Outbox};
use crate::gui::state::State;
use crate::gui::widgets;
use crate::node::store::NodeSettings;

/// The section's state: the proxy as typed (empty: none) and the last answer.
#[derive(Default)]
pub struct ProxySection {
    pub proxy: String,
    pub answers: Answers,
}

impl ProxySection {
    /// Fills the proxy from the node's settings.
    pub(super) fn fill(&mut self, settings: &NodeSettings) {
        self.proxy = settings.proxy.clone().unwrap_or_default();
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, state: &State, outbox: &Outbox) {
        let current = state.settings.as_ref().and_then(|s| s.proxy.clone());
        ui.label(match &current {
            Some(proxy) => format!("The node reaches the hub through {proxy}."),
            None => "The node reaches the hub directly.".to_owned(),
        });
        egui::Grid::new("proxy").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
            widgets::text_field(
                ui,
                "Proxy URL",
                &mut self.proxy,
                "http://proxy.corp:3128 (empty: none)",
                false,
            );
            ui.end_row();
        });
        let typed = Some(self.proxy.trim().to_owned()).filter(|p| !p.is_empty());
        let problem = typed.as_deref().and_then(|p| crate::node::ops::check_proxy(p).err());
        if let Some(problem) = &problem {
            widgets::problem(ui, &format!("{problem}."));
        }
        let ready = problem.is_none() && typed != current && !self.answers.waiting(OpKind::Proxy);
        if widgets::button(ui, ready, "Save proxy") {
            self.answers.send(outbox, Op::SetProxy(typed));
        }
        widgets::reply(ui, self.answers.get(OpKind::Proxy));
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::testing::{self, Alone, asked_op, click, sent, shows, type_into};

    fn section(state: State) -> testing::Page<ProxySection> {
        testing::page(ProxySection::default(), state, |ui, alone: &mut Alone<ProxySection>| {
            alone.page.ui(ui, &alone.state, &alone.outbox);
        })
    }

    #[test]
    fn a_usable_proxy_is_sent_and_a_bad_one_is_flagged_as_typed() {
        let mut harness = section(testing::running());
        assert!(shows(&harness, "The node reaches the hub directly."));
        type_into(&mut harness, "Proxy URL", "proxy.corp:3128");
        assert!(shows(&harness, "not a usable proxy URL"), "a bad proxy isn't flagged");
        click(&mut harness, "Save proxy");
        assert!(sent(&harness).is_empty(), "a bad proxy was sent");

        harness.state_mut().page.proxy = "http://proxy.corp:3128".to_owned();
        harness.step();
        click(&mut harness, "Save proxy");
        let op = asked_op(&harness);
        assert!(matches!(&op, Op::SetProxy(Some(p)) if p == "http://proxy.corp:3128"), "{op:?}");
    }

    #[test]
    fn the_proxy_in_use_is_not_sent_again() {
        let mut state = testing::running();
        state.settings.as_mut().unwrap().proxy = Some("http://proxy.corp:3128".to_owned());
        let mut harness = section(state);
        assert!(shows(&harness, "through http://proxy.corp:3128"));
        harness.state_mut().page.proxy = "http://proxy.corp:3128".to_owned();
        harness.step();
        click(&mut harness, "Save proxy");
        assert!(sent(&harness).is_empty(), "the proxy in use was sent again");
        // Emptied: no proxy any more.
        harness.state_mut().page.proxy.clear();
        harness.step();
        click(&mut harness, "Save proxy");
        assert!(matches!(asked_op(&harness), Op::SetProxy(None)));
    }
}
