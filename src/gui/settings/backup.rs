//! The "Backup and restore" section: a password-sealed backup of this node, and the restore
//! form (which the wizard of an unregistered machine shows too). Passwords live only here, in
//! memory, and leave the fields with the request.

use eframe::egui;

use crate::gui::ops::{Op, OpKind};
use crate::gui::outbox::{Answers, Outbox};
use crate::gui::widgets;
use crate::gui::worker::{Answer, Command, FilePurpose, Page, Worker};
use std::path::PathBuf;

/// The section's state: both forms and their last answers.
#[derive(Default)]
pub struct BackupSection {
    pub backup: BackupForm,
    pub restore: RestoreForm,
    pub answers: Answers,
}

/// The backup form.
#[derive(Default)]
pub struct BackupForm {
    pub path: String,
    pub password: String,
    pub again: String,
}

/// The restore form.
#[derive(Default)]
pub struct RestoreForm {
    pub path: String,
    pub password: String,
}

impl BackupForm {
    /// What is wrong with the passwords as typed so far, if anything.
    fn problem(&self) -> Option<&'static str> {
        if self.password.is_empty() {
            None
        } else if self.password.chars().count() < 8 {
            Some("The password is too short; use at least 8 characters.")
        } else if !self.again.is_empty() && self.again != self.password {
            Some("The passwords don't match.")
        } else {
            None
        }
    }

    fn ready(&self) -> bool {
        !self.path.trim().is_empty() && self.password.chars().count() >= 8 && self.again == self.password
    }
}

impl BackupSection {
    /// A file dialog of this section closed.
    pub(super) fn apply(&mut self, answer: Answer) {
        match answer {
            Answer::FilePicked(FilePurpose::Backup, Some(path)) => {
                self.backup.path = path.display().to_string();
            }
            Answer::FilePicked(FilePurpose::Restore, Some(path)) => {
                self.restore.path = path.display().to_string();
            }
            _ => {}
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, outbox: &Outbox, worker: &Worker) {
        widgets::paragraph(
            ui,
            "A backup holds this node's registration, tokens, credentials and certificate, sealed with a \
             password: keep both, and a replacement machine can take this node's place without registering.",
        );
        egui::Grid::new("backup").num_columns(3).spacing([8.0, 6.0]).show(ui, |ui| {
            let (_, browse) =
                widgets::file_field(ui, "Backup file", &mut self.backup.path, "/path/to/node.backup");
            if browse {
                worker.send(Page::Settings, Command::PickFile(FilePurpose::Backup));
            }
            ui.end_row();
            widgets::text_field(
                ui,
                "Backup password",
                &mut self.backup.password,
                "at least 8 characters",
                true,
            );
            ui.end_row();
            widgets::text_field(ui, "Repeat the password", &mut self.backup.again, "", true);
            ui.end_row();
        });
        if let Some(problem) = self.backup.problem() {
            widgets::problem(ui, problem);
        }
        let ready = self.backup.ready() && !self.answers.waiting(OpKind::Backup);
        if widgets::button(ui, ready, "Back up") {
            let path = PathBuf::from(self.backup.path.trim());
            let password = std::mem::take(&mut self.backup.password);
            self.backup.again.clear();
            self.answers.send(outbox, Op::Backup { path, password });
        }
        widgets::reply(ui, self.answers.get(OpKind::Backup));

        ui.add_space(8.0);
        widgets::paragraph(
            ui,
            "Restoring puts a backed-up node onto a machine that isn't registered yet. This machine is \
             registered, so a restore here is refused: unregister it first (gatehouse node unregister).",
        );
        self.restore_ui(ui, outbox, worker);
    }

    /// The restore form; the wizard of an unregistered machine shows it too.
    pub fn restore_ui(&mut self, ui: &mut egui::Ui, outbox: &Outbox, worker: &Worker) {
        egui::Grid::new("restore").num_columns(3).spacing([8.0, 6.0]).show(ui, |ui| {
            let (_, browse) =
                widgets::file_field(ui, "Backup to restore", &mut self.restore.path, "/path/to/node.backup");
            if browse {
                worker.send(Page::Settings, Command::PickFile(FilePurpose::Restore));
            }
            ui.end_row();
            widgets::text_field(ui, "Password of the backup", &mut self.restore.password, "", true);
            ui.end_row();
        });
        let ready = !self.restore.path.trim().is_empty()
            && !self.restore.password.is_empty()
            && !self.answers.waiting(OpKind::Restore);
        if widgets::button(ui, ready, "Restore") {
            let path = PathBuf::from(self.restore.path.trim());
            let password = std::mem::take(&mut self.restore.password);
            self.answers.send(outbox, Op::Restore { path, password });
        }
        widgets::reply(ui, self.answers.get(OpKind::Restore));
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::testing::{self, Alone, asked_op, click, sent, shows, type_into};

    fn section() -> testing::Page<BackupSection> {
        testing::page(BackupSection::default(), testing::running(), |ui, alone: &mut Alone<BackupSection>| {
            alone.page.ui(ui, &alone.outbox, &alone.worker);
        })
    }

    #[test]
    fn a_backup_needs_a_long_enough_password_typed_twice_which_leaves_the_fields() {
        let mut harness = section();
        type_into(&mut harness, "Backup file", "/tmp/n1.backup");
        type_into(&mut harness, "Backup password", "short");
        assert!(shows(&harness, "The password is too short"), "a short password isn't flagged");
        type_into(&mut harness, "Backup password", "-enough");
        type_into(&mut harness, "Repeat the password", "short-enougX");
        assert!(shows(&harness, "The passwords don't match."));
        click(&mut harness, "Back up");
        assert!(sent(&harness).is_empty(), "a backup was sent with passwords that don't match");

        harness.state_mut().page.backup.again = "short-enough".to_owned();
        harness.step();
        click(&mut harness, "Back up");
        let op = asked_op(&harness);
        assert!(
            matches!(&op, Op::Backup { path, password }
                if path == &PathBuf::from("/tmp/n1.backup") && password == "short-enough"),
            "{op:?}"
        );
        let form = &harness.state().page.backup;
        assert!(form.password.is_empty() && form.again.is_empty(), "a password stayed in its field");
        assert!(shows(&harness, "Working…"));
    }

    #[test]
    fn a_restore_sends_the_file_and_its_password() {
        let mut harness = section();
        type_into(&mut harness, "Backup to restore", "/tmp/n1.backup");
        click(&mut harness, "Restore");
        assert!(sent(&harness).is_empty(), "a restore was sent without a password");
        type_into(&mut harness, "Password of the backup", "short-enough");
        click(&mut harness, "Restore");
        let op = asked_op(&harness);
        assert!(
            matches!(&op, Op::Restore { path, password }
                if path == &PathBuf::from("/tmp/n1.backup") && password == "short-enough"),
            "{op:?}"
        );
        harness
            .state_mut()
            .page
            .answers
            .done(OpKind::Restore, &Err("This machine is registered: unregister it first.".to_owned()));
        harness.step();
        assert!(
            shows(&harness, "This machine is registered: unregister it first."),
            "the refusal isn't shown"
        );
    }
}
