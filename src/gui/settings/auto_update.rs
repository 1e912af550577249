//! The "Automatic updates" section: the opt-in window (days and hours of the machine's local
//! time) in which the node service takes a newer release the hub offers by itself, checked as
//! typed.

use eframe::egui;

use crate::gui::ops::{Op, OpKind};
use crate::gui::outbox::{Answers, Outbox};
use crate::gui::state::State;
use crate::gui::widgets;
use crate::node::auto_update::{Days, TimeOfDay, UpdateWindow, WindowError};
use crate::node::store::NodeSettings;
use crate::node::update::SelfUpdate;

const DAY_LABELS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The section's state: the window as typed and the last answer.
pub struct AutoUpdateSection {
    pub on: bool,
    pub from: String,
    pub to: String,
    /// Monday first.
    pub days: [bool; 7],
    pub answers: Answers,
}

impl Default for AutoUpdateSection {
    fn default() -> Self {
        AutoUpdateSection {
            on: false,
            from: "02:00".to_owned(),
            to: "04:00".to_owned(),
            days: [true; 7],
            answers: Answers::default(),
        }
    }
}

impl AutoUpdateSection {
    /// Fills the form from the node's settings.
    pub(super) fn fill(&mut self, settings: &NodeSettings) {
        if let Some(window) = &settings.auto_update {
            self.on = true;
            self.from = window.from.to_string();
            self.to = window.to.to_string();
            self.days = window.days.flags();
        }
    }

    /// The window as typed: `None` when off, or why it can't be used.
    fn typed(&self) -> Result<Option<UpdateWindow>, WindowError> {
        if !self.on {
            return Ok(None);
        }
        let days = Days::from_flags(self.days)?;
        UpdateWindow::new(days, TimeOfDay::parse(&self.from)?, TimeOfDay::parse(&self.to)?).map(Some)
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, state: &State, outbox: &Outbox) {
        let status = state.status.as_ref();
        let current = state.settings.as_ref().and_then(|s| s.auto_update);
        let offset = status.and_then(|s| s.local_offset.as_deref());
        ui.label(match (&current, offset) {
            (Some(window), Some(offset)) => {
                format!("The node updates itself {window} (local time, now {offset}).")
            }
            (Some(window), None) => format!("The node updates itself {window} (local time)."),
            (None, _) => {
                "Automatic updates are off: the node updates when you ask (gatehouse node update).".to_owned()
            }
        });
        widgets::paragraph(
            ui,
            "When the hub offers a newer release inside the window, the node takes its gateway's turn, lets its runs finish, installs the signed release and restarts into it, going back to the previous version if the new one doesn't come up. Times are the machine's local time (its TZ setting, else /etc/localtime); a window may run past midnight.",
        );
        if matches!(status.and_then(|s| s.self_update.as_ref()), Some(SelfUpdate::Window)) {
            widgets::warning(
                ui,
                "This window runs the node itself and can't replace its own binary: the window applies when the node runs as a service (gatehouse node start).",
            );
        }
        ui.checkbox(&mut self.on, "Update automatically inside a window");
        if self.on {
            egui::Grid::new("auto_update").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
                widgets::number_field(ui, "From (HH:MM)", &mut self.from, "02:00");
                ui.end_row();
                widgets::number_field(ui, "To (HH:MM)", &mut self.to, "04:00");
                ui.end_row();
            });
            ui.horizontal(|ui| {
                for (day, label) in self.days.iter_mut().zip(DAY_LABELS) {
                    ui.checkbox(day, label);
                }
            });
        }
        let typed = self.typed();
        if let Err(problem) = &typed {
            widgets::problem(ui, &format!("{problem}."));
        }
        let ready = typed.as_ref().is_ok_and(|t| *t != current) && !self.answers.waiting(OpKind::AutoUpdate);
        if widgets::button(ui, ready, "Save update window")
            && let Ok(window) = typed
        {
            self.answers.send(outbox, Op::SetAutoUpdate(window));
        }
        widgets::reply(ui, self.answers.get(OpKind::AutoUpdate));
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::testing::{self, Alone, asked_op, click, sent, shows, type_into};

    fn section(state: State) -> testing::Page<AutoUpdateSection> {
        testing::page(AutoUpdateSection::default(), state, |ui, alone: &mut Alone<AutoUpdateSection>| {
            alone.page.ui(ui, &alone.state, &alone.outbox);
        })
    }

    #[test]
    fn a_window_is_checked_as_typed_and_sent_with_its_days() {
        let mut harness = section(testing::running());
        assert!(shows(&harness, "Automatic updates are off"));
        click(&mut harness, "Update automatically inside a window");
        harness.state_mut().page.to.clear();
        type_into(&mut harness, "To (HH:MM)", "4am");
        assert!(shows(&harness, "\"4am\" is not a time of day"), "a bad time isn't flagged");
        click(&mut harness, "Save update window");
        assert!(sent(&harness).is_empty(), "a bad window was sent");

        harness.state_mut().page.to = "05:30".to_owned();
        harness.step();
        for day in ["Mon", "Tue", "Wed", "Thu", "Fri"] {
            click(&mut harness, day);
        }
        click(&mut harness, "Save update window");
        let op = asked_op(&harness);
        let Op::SetAutoUpdate(Some(window)) = op else { panic!("{op:?}") };
        assert_eq!(window.to_string(), "on Sat and Sun from 02:00 to 05:30");
    }

    #[test]
    fn the_window_in_use_shows_with_the_services_offset_and_turning_it_off_is_sent() {
        let mut state = testing::running();
        let window = UpdateWindow::parse("23:00-01:00", Some("fri")).unwrap();
        state.settings.as_mut().unwrap().auto_update = Some(window);
        state.status.as_mut().unwrap().local_offset = Some("UTC+02:00".to_owned());
        let mut harness = section(state);
        let alone = harness.state_mut();
        alone.page.fill(&alone.state.settings.clone().unwrap());
        harness.step();
        assert!(shows(&harness, "from 23:00 to 01:00 the next day (local time, now UTC+02:00)"));
        click(&mut harness, "Save update window");
        assert!(sent(&harness).is_empty(), "the window in use was sent again");
        click(&mut harness, "Update automatically inside a window");
        click(&mut harness, "Save update window");
        assert!(matches!(asked_op(&harness), Op::SetAutoUpdate(None)));
    }
}
