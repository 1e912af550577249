//! The "Credentials" section: the names of the data-store credentials (never their values),
//! adding one, and deleting one after a second click. The list is asked for again after every
//! change and whenever the credentials' version moves (a peer synced some).

use eframe::egui;

use crate::gui::ops::{Op, OpKind};
use crate::gui::outbox::{Answers, Outbox, Reply};
use crate::gui::state::State;
use crate::gui::widgets;

/// The section's state. The value lives only here, in memory, and is cleared once sent.
#[derive(Default)]
pub struct CredentialsSection {
    /// The credential names as last listed (`None`: to be listed).
    pub names: Option<Vec<String>>,
    /// The digest of the credential set the names were listed from.
    listed_digest: Option<String>,
    pub name: String,
    pub value: String,
    /// A credential whose deletion waits for a second click.
    pub confirm_delete: Option<String>,
    pub answers: Answers,
}

impl CredentialsSection {
    pub(super) fn done(&mut self, op: OpKind, result: &Result<String, String>) {
        match op {
            OpKind::CredentialList => {
                // An empty list after an error, so the list isn't asked for again every frame.
                self.names = Some(result.iter().flat_map(|names| names.lines()).map(str::to_owned).collect());
                if result.is_ok() {
                    self.answers.forget(op);
                    return;
                }
            }
            // List again, whatever happened: the list shows what is really stored.
            _ => self.names = None,
        }
        self.answers.done(op, result);
    }

    /// Asks for the list when there is none, or when the credential set changed (synced from
    /// a peer, say): its digest moved.
    pub(super) fn refresh(&mut self, state: &State, outbox: &Outbox) {
        let digest = state.status.as_ref().and_then(|s| s.metrics.credential_digest.clone());
        if digest.is_some() && digest != self.listed_digest {
            self.listed_digest = digest;
            self.names = None;
        }
        if self.names.is_none() && !self.answers.waiting(OpKind::CredentialList) {
            self.answers.send(outbox, Op::ListCredentials);
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, outbox: &Outbox) {
        widgets::paragraph(
            ui,
            "Passwords and keys for data stores. They stay sealed on the gateway's nodes, reach the other \
             nodes over the peer channel, and never go to the hub. Only names are shown.",
        );
        widgets::reply(ui, self.answers.get(OpKind::CredentialList));
        match &self.names {
            None => widgets::waiting(ui, "Reading the credentials…"),
            // After a failed listing the list is empty for want of an answer, not of
            // credentials: the error above says why.
            Some(_) if matches!(self.answers.get(OpKind::CredentialList), Some(Reply::Done(Err(_)))) => {}
            Some(names) if names.is_empty() => {
                ui.label("No credentials yet.");
            }
            Some(names) => {
                let names = names.clone();
                self.list_ui(ui, &names, outbox);
            }
        }
        ui.add_space(4.0);
        egui::Grid::new("credential_inputs").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
            widgets::text_field(ui, "Credential name", &mut self.name, "warehouse-db", false);
            ui.end_row();
            widgets::text_field(ui, "Credential value", &mut self.value, "", true);
            ui.end_row();
        });
        let name = self.name.trim().to_owned();
        let name_ok = (1..=128).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name.is_empty() && !name_ok {
            widgets::problem(ui, "Names are 1 to 128 letters, digits, '-', '_' or '.'.");
        }
        let ready = name_ok && !self.value.is_empty() && !self.answers.waiting(OpKind::Credentials);
        if widgets::button(ui, ready, "Save credential") {
            let value = std::mem::take(&mut self.value);
            self.answers.send(outbox, Op::SetCredential { name, value });
        }
        widgets::reply(ui, self.answers.get(OpKind::Credentials));
    }

    /// The names, each with Delete (then "Yes, delete" and Cancel).
    fn list_ui(&mut self, ui: &mut egui::Ui, names: &[String], outbox: &Outbox) {
        let busy = self.answers.waiting(OpKind::Credentials);
        egui::Grid::new("credentials").num_columns(2).striped(true).spacing([12.0, 4.0]).show(ui, |ui| {
            for name in names {
                ui.monospace(name);
                if self.confirm_delete.as_ref() == Some(name) {
                    ui.horizontal(|ui| {
                        if widgets::button(ui, !busy, &format!("Yes, delete {name}")) {
                            self.confirm_delete = None;
                            self.answers.send(outbox, Op::DeleteCredential(name.clone()));
                        }
                        if ui.button("Cancel").clicked() {
                            self.confirm_delete = None;
                        }
                    });
                } else if widgets::button(ui, !busy, &format!("Delete {name}")) {
                    self.confirm_delete = Some(name.clone());
                }
                ui.end_row();
            }
        });
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::service::Request;
    use crate::gui::testing::{self, Alone, asked_op, click, sent, shows, type_into};

    fn section(names: Option<&[&str]>) -> testing::Page<CredentialsSection> {
        let page = CredentialsSection {
            names: names.map(|n| n.iter().map(|&s| s.to_owned()).collect()),
            ..CredentialsSection::default()
        };
        testing::page(page, testing::running(), |ui, alone: &mut Alone<CredentialsSection>| {
            alone.page.ui(ui, &alone.outbox);
        })
    }

    #[test]
    fn a_credential_is_sent_with_its_value_which_leaves_the_field() {
        let mut harness = section(Some(&[]));
        assert!(shows(&harness, "No credentials yet."));
        type_into(&mut harness, "Credential name", "bad name!");
        assert!(shows(&harness, "Names are 1 to 128 letters"), "a bad name isn't flagged");
        type_into(&mut harness, "Credential value", "s3cret");
        click(&mut harness, "Save credential");
        assert!(sent(&harness).is_empty(), "a bad name was sent");

        harness.state_mut().page.name = "warehouse".to_owned();
        harness.step();
        click(&mut harness, "Save credential");
        let op = asked_op(&harness);
        assert!(
            matches!(&op, Op::SetCredential { name, value }
                if name == "warehouse" && value == "s3cret"),
            "{op:?}"
        );
        assert!(harness.state().page.value.is_empty(), "the value stayed in its field");
        assert!(!shows(&harness, "s3cret"), "the value is drawn");
    }

    #[test]
    fn a_credential_is_deleted_only_after_a_second_click() {
        let mut harness = section(Some(&["warehouse", "lake"]));
        click(&mut harness, "Delete warehouse");
        assert!(sent(&harness).is_empty(), "the first click deleted");
        click(&mut harness, "Cancel");
        assert!(!shows(&harness, "Yes, delete warehouse"), "Cancel kept the question");
        click(&mut harness, "Delete warehouse");
        click(&mut harness, "Yes, delete warehouse");
        let op = asked_op(&harness);
        assert!(matches!(&op, Op::DeleteCredential(name) if name == "warehouse"), "{op:?}");
        // Until the answer comes, nothing else is deleted.
        click(&mut harness, "Delete lake");
        assert!(harness.state().page.confirm_delete.is_none(), "a second deletion began while one ran");
    }

    #[test]
    fn the_list_is_asked_for_when_missing_and_again_when_the_version_moves() {
        let mut harness = section(None);
        assert!(shows(&harness, "Reading the credentials…"));
        let outbox = Outbox::default();
        let mut state = testing::running();
        let mut page = CredentialsSection::default();
        page.refresh(&state, &outbox);
        page.refresh(&state, &outbox);
        assert!(matches!(outbox.drain().as_slice(), [Request::Op(Op::ListCredentials)]), "not asked once");
        page.done(OpKind::CredentialList, &Ok("lake\nwarehouse".to_owned()));
        page.refresh(&state, &outbox);
        assert!(outbox.is_empty(), "asked again without a change");
        assert_eq!(page.names.as_deref(), Some(&["lake".to_owned(), "warehouse".to_owned()][..]));
        state.status.as_mut().unwrap().metrics.credential_digest = Some("changed".to_owned());
        page.refresh(&state, &outbox);
        assert!(
            matches!(outbox.drain().as_slice(), [Request::Op(Op::ListCredentials)]),
            "a sync wasn't listed"
        );

        // A failed listing says why instead of "No credentials yet".
        harness
            .state_mut()
            .page
            .done(OpKind::CredentialList, &Err("The node's secrets can't be read.".to_owned()));
        harness.step();
        assert!(shows(&harness, "The node's secrets can't be read."));
        assert!(!shows(&harness, "No credentials yet."), "a failed listing shows as an empty one");
    }
}
