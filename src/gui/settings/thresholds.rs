//! The "Thresholds" section: the gateway's dispatch limits, a form for a node that holds the
//! hub's admin token (checked before sending), else the values and the command that changes
//! them.

use eframe::egui;

use super::number;
use crate::gui::ops::{Op, OpKind, Thresholds};
use crate::gui::outbox::{Answers, Outbox};
use crate::gui::state::State;
use crate::gui::widgets;
use crate::protocol::{GatewaySettings, Policy};

/// The section's state.
#[derive(Default)]
pub struct ThresholdsSection {
    /// `None` until the first status brings the gateway's settings.
    pub form: Option<ThresholdForm>,
    /// Whether this node holds the hub's admin token (`None`: not asked yet).
    pub admin: Option<bool>,
    pub answers: Answers,
}

/// The thresholds as typed (checked before sending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdForm {
    pub policy: Policy,
    pub cpu_percent: String,
    pub memory_percent: String,
    pub aggregation_minutes: String,
    pub queue_timeout_seconds: String,
    pub bandwidth_limit_mbps: String,
}

impl ThresholdForm {
    fn from_settings(s: &GatewaySettings) -> Self {
        ThresholdForm {
            policy: s.policy,
            cpu_percent: s.cpu_threshold.to_string(),
            memory_percent: s.memory_threshold.to_string(),
            aggregation_minutes: s.aggregation_minutes.to_string(),
            queue_timeout_seconds: s.queue_timeout_seconds.to_string(),
            bandwidth_limit_mbps: s.bandwidth_limit_mbps.to_string(),
        }
    }

    /// The values, or the first problem as a sentence.
    fn parse(&self) -> Result<Thresholds, String> {
        Ok(Thresholds {
            policy: self.policy,
            cpu_percent: number(&self.cpu_percent, 0, 100, "The CPU threshold")?,
            memory_percent: number(&self.memory_percent, 0, 100, "The memory threshold")?,
            aggregation_minutes: number(&self.aggregation_minutes, 1, 60, "The aggregation time")?,
            queue_timeout_seconds: number(&self.queue_timeout_seconds, 1, 3600, "The queue timeout")?,
            bandwidth_limit_mbps: number(&self.bandwidth_limit_mbps, 0, 1_000_000, "The bandwidth limit")?,
        })
    }
}

impl ThresholdsSection {
    pub(super) fn done(&mut self, op: OpKind, result: &Result<String, String>) {
        if op == OpKind::AdminToken {
            self.admin = Some(result.is_ok());
            self.answers.forget(op);
        } else {
            self.answers.done(op, result);
        }
    }

    /// Fills the form from the first status that reached the hub, and asks once whether this
    /// node holds the admin token.
    pub(super) fn refresh(&mut self, state: &State, outbox: &Outbox) {
        if self.form.is_none()
            && let Some(status) = &state.status
            && status.last_heartbeat.is_some()
        {
            self.form = Some(ThresholdForm::from_settings(&status.settings));
        }
        if self.admin.is_none() && !self.answers.waiting(OpKind::AdminToken) {
            self.answers.send(outbox, Op::CheckAdminToken);
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, state: &State, outbox: &Outbox) {
        widgets::paragraph(
            ui,
            "The gateway's dispatcher skips a node above these limits (0 turns a limit off), averaged over \
             the aggregation time; a run that finds no node waits up to the queue timeout, then fails. \
             The bandwidth limit is shared by the nodes copying at the time.",
        );
        let Some(status) = state.status.as_ref().filter(|s| s.last_heartbeat.is_some()) else {
            ui.label("Shown once the node service reaches the hub.");
            return;
        };
        if self.admin == Some(true) {
            let Some(form) = self.form.as_mut() else { return };
            form_ui(ui, form);
            let parsed = form.parse();
            if let Err(problem) = &parsed {
                widgets::problem(ui, problem);
            }
            let ready = parsed.is_ok() && !self.answers.waiting(OpKind::Thresholds);
            ui.horizontal(|ui| {
                if widgets::button(ui, ready, "Save thresholds")
                    && let Ok(thresholds) = parsed
                {
                    self.answers.send(outbox, Op::SetThresholds(thresholds));
                }
                if ui.button("Show the gateway's values").clicked() {
                    self.form = Some(ThresholdForm::from_settings(&status.settings));
                }
            });
            widgets::reply(ui, self.answers.get(OpKind::Thresholds));
        } else {
            values_ui(ui, &status.settings);
            let gateway = state.settings.as_ref().map_or("GATEWAY", |s| s.gateway_name.as_str());
            let hub = state.settings.as_ref().map_or("URL", |s| s.hub_url.as_str());
            ui.label(
                "Only the hub's admin can change these, on any machine, with the admin token in \
                 GATEHOUSE_ADMIN_TOKEN:",
            );
            let command = format!(
                "gatehouse hub gateway set {gateway} --hub {hub} --cpu-threshold P --memory-threshold P \
                 --aggregation-minutes M --queue-timeout-seconds S --policy primary|distribute"
            );
            // Selectable, so it can be copied into a terminal.
            ui.add(egui::Label::new(egui::RichText::new(command).monospace()).wrap().selectable(true));
        }
    }
}

fn form_ui(ui: &mut egui::Ui, form: &mut ThresholdForm) {
    egui::Grid::new("thresholds").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
        for (label, value) in [
            ("CPU threshold (%)", &mut form.cpu_percent),
            ("Memory threshold (%)", &mut form.memory_percent),
            ("Aggregation (minutes)", &mut form.aggregation_minutes),
            ("Queue timeout (seconds)", &mut form.queue_timeout_seconds),
            ("Bandwidth limit (Mbit/s, 0 = off)", &mut form.bandwidth_limit_mbps),
        ] {
            widgets::number_field(ui, label, value, "");
            ui.end_row();
        }
        let label = ui.label("Policy");
        egui::ComboBox::from_id_salt("policy")
            .selected_text(policy_name(form.policy))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut form.policy, Policy::Primary, policy_name(Policy::Primary));
                ui.selectable_value(&mut form.policy, Policy::Distribute, policy_name(Policy::Distribute));
            })
            .response
            .labelled_by(label.id);
        ui.end_row();
    });
}

/// The gateway's values, read-only.
fn values_ui(ui: &mut egui::Ui, s: &GatewaySettings) {
    let off = |p: u8| if p == 0 { "off".to_owned() } else { format!("{p} %") };
    egui::Grid::new("thresholds").num_columns(2).spacing([8.0, 4.0]).show(ui, |ui| {
        widgets::row(ui, "CPU threshold", off(s.cpu_threshold));
        widgets::row(ui, "Memory threshold", off(s.memory_threshold));
        widgets::row(ui, "Aggregation", format!("{} minutes", s.aggregation_minutes));
        widgets::row(ui, "Queue timeout", format!("{} seconds", s.queue_timeout_seconds));
        let bandwidth = if s.bandwidth_limit_mbps == 0 {
            "off".to_owned()
        } else {
            format!("{} Mbit/s", s.bandwidth_limit_mbps)
        };
        widgets::row(ui, "Bandwidth limit", bandwidth);
        widgets::row(ui, "Policy", policy_name(s.policy));
    });
}

fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::Primary => "primary (first available node)",
        Policy::Distribute => "distribute (random available node)",
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::service::Request;
    use crate::gui::testing::{self, Alone, asked_op, click, sent, shows};
    use egui_kittest::kittest::Queryable as _;

    fn section(admin: Option<bool>, state: State) -> testing::Page<ThresholdsSection> {
        let mut page = ThresholdsSection { admin, ..ThresholdsSection::default() };
        page.refresh(&state, &Outbox::default());
        testing::page(page, state, |ui, alone: &mut Alone<ThresholdsSection>| {
            alone.page.ui(ui, &alone.state, &alone.outbox);
        })
    }

    #[test]
    fn an_admin_node_sends_the_thresholds_once_they_are_valid() {
        let mut harness = section(Some(true), testing::running());
        harness.state_mut().page.form.as_mut().unwrap().cpu_percent = "101".to_owned();
        harness.step();
        assert!(shows(&harness, "The CPU threshold must be a whole number from 0 to 100."));
        click(&mut harness, "Save thresholds");
        assert!(sent(&harness).is_empty(), "a bad threshold was sent");

        let form = harness.state_mut().page.form.as_mut().unwrap();
        form.cpu_percent = "90".to_owned();
        form.bandwidth_limit_mbps = "50".to_owned();
        harness.step();
        click(&mut harness, "Save thresholds");
        let op = asked_op(&harness);
        assert!(
            matches!(&op, Op::SetThresholds(t)
                if t.cpu_percent == 90 && t.bandwidth_limit_mbps == 50
                    && t.memory_percent == GatewaySettings::default().memory_threshold),
            "{op:?}"
        );
        click(&mut harness, "Save thresholds");
        assert!(sent(&harness).is_empty(), "saved twice while the first save ran");

        // Back to what the gateway has.
        click(&mut harness, "Show the gateway's values");
        let form = harness.state().page.form.clone().unwrap();
        assert_eq!(form, ThresholdForm::from_settings(&GatewaySettings::default()));
    }

    #[test]
    fn another_node_shows_the_values_and_the_command_that_changes_them() {
        let mut state = testing::running();
        state.status.as_mut().unwrap().settings.cpu_threshold = 85;
        state.status.as_mut().unwrap().settings.queue_timeout_seconds = 77;
        let harness = section(Some(false), state);
        assert!(!shows(&harness, "Save thresholds"), "a node without the admin token may edit");
        assert!(harness.query_by_label("85 %").is_some() && shows(&harness, "77 seconds"));
        // The memory threshold and the bandwidth limit are 0.
        assert_eq!(harness.query_all_by_label("off").count(), 2, "a limit of 0 isn't shown as off");
        assert!(shows(&harness, "gatehouse hub gateway set gw --hub http://127.0.0.1:9"));
    }

    #[test]
    fn nothing_is_shown_before_the_hub_answered_and_the_token_is_asked_once() {
        let mut state = testing::running();
        state.status.as_mut().unwrap().last_heartbeat = None;
        let harness = section(Some(true), state);
        assert!(shows(&harness, "Shown once the node service reaches the hub."));
        assert!(harness.state().page.form.is_none(), "a form from a status without a heartbeat");

        let outbox = Outbox::default();
        let mut page = ThresholdsSection::default();
        page.refresh(&testing::running(), &outbox);
        page.refresh(&testing::running(), &outbox);
        assert!(matches!(outbox.drain().as_slice(), [Request::Op(Op::CheckAdminToken)]), "not asked once");
        page.done(OpKind::AdminToken, &Err("no admin token".to_owned()));
        page.refresh(&testing::running(), &outbox);
        assert_eq!(page.admin, Some(false));
        assert!(outbox.is_empty(), "asked again after the answer");
    }
}
