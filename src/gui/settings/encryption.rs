//! The "Encryption and remote access" section: whether the peer channel is encrypted (and
//! with which certificate), changing or dropping the certificate after a check, and the
//! remote access port.

use eframe::egui;

use super::number;
use crate::cert::Verdict;
use crate::gui::certificate::{self, CertificatePage, Outcome as CheckOutcome};
use crate::gui::ops::{Op, OpKind};
use crate::gui::outbox::{Answers, Outbox};
use crate::gui::service::CertificateChoice;
use crate::gui::state::State;
use crate::gui::widgets;
use crate::gui::worker::{Answer, Page, Worker};
use crate::node::store::NodeSettings;
use std::path::PathBuf;

/// The section's state: the "Change certificate" form, the port as typed, the last answers.
#[derive(Default)]
pub struct EncryptionSection {
    /// The "Change certificate" form's inputs and the checker's report.
    pub certificate: CertificatePage,
    pub changing_certificate: bool,
    /// The shown report was made for the inputs as they are now: editing the file, the
    /// password or the roots clears it, so a report never vouches for another file. (A flag,
    /// not a copy of the inputs: a copy would keep the PFX password after the field is cleared.)
    checked: bool,
    pub port: String,
    pub answers: Answers,
}

impl EncryptionSection {
    /// Fills the port from the node's settings.
    pub(super) fn fill(&mut self, settings: &NodeSettings) {
        self.port = settings.peer_port.to_string();
    }

    pub(super) fn done(&mut self, op: OpKind, result: &Result<String, String>) {
        if op == OpKind::Certificate && result.is_ok() {
            self.changing_certificate = false;
            self.certificate = CertificatePage::default();
            self.checked = false;
        }
        self.answers.done(op, result);
    }

    /// A certificate dialog or check finished.
    pub(super) fn apply(&mut self, answer: Answer) {
        if matches!(answer, Answer::CertificateFilePicked(Some(_))) {
            self.checked = false;
        }
        self.certificate.apply(answer);
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, state: &State, outbox: &Outbox, worker: &Worker) {
        let thumbprint = state
            .status
            .as_ref()
            .filter(|s| s.last_heartbeat.is_some())
            .map(|s| &s.metrics.encryption_thumbprint);
        match thumbprint {
            Some(Some(thumbprint)) => {
                ui.label("Encryption: on. The peer channel is TLS with this node's certificate.");
                ui.label(format!("SHA-256 thumbprint: {thumbprint}"));
            }
            Some(None) => {
                ui.label(
                    "Encryption: off (no certificate). Nodes still authenticate each other by their own keys and encrypt every frame; a certificate adds your own trust on top.",
                );
            }
            None => {
                ui.label("Encryption: shown once the node service reports.");
            }
        }
        if let Some(settings) = &state.settings {
            ui.label(format!(
                "Peer port: {} (peers reach this node at {})",
                settings.peer_port, settings.peer_address
            ));
        }
        widgets::paragraph(
            ui,
            "The hub accepts a change of encryption only while the gateway has a single node: with more, \
             every node must use the same certificate, and a node that differs is made Inactive.",
        );
        ui.add_space(4.0);
        let busy = self.answers.waiting(OpKind::Certificate);
        ui.horizontal(|ui| {
            if widgets::button(ui, !busy, "Change certificate…") {
                self.changing_certificate = !self.changing_certificate;
                if !self.changing_certificate {
                    // Closing the form abandons it: the password isn't kept for later.
                    self.certificate.password.clear();
                    self.checked = false;
                }
            }
            let encrypted = !matches!(thumbprint, Some(None));
            if widgets::button(ui, !busy && encrypted, "Turn off encryption") {
                self.answers.send(outbox, Op::DisableEncryption);
            }
        });
        if self.changing_certificate {
            self.change_certificate_ui(ui, state, outbox, worker);
        }
        widgets::reply(ui, self.answers.get(OpKind::Certificate));

        ui.add_space(6.0);
        let current = state.settings.as_ref().map(|s| s.peer_port);
        let port = number::<u16>(&self.port, 1, 65_535, "The port");
        egui::Grid::new("remote_port").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
            widgets::number_field(ui, "Remote access port", &mut self.port, "");
            ui.end_row();
        });
        if let Err(problem) = &port {
            widgets::problem(ui, problem);
        }
        let changed = port.as_ref().is_ok_and(|p| Some(*p) != current);
        let ready = changed && !self.answers.waiting(OpKind::RemotePort) && !busy;
        if widgets::button(ui, ready, "Change port")
            && let Ok(port) = port
        {
            self.answers.send(outbox, Op::SetRemoteAccess { port, certificate: None });
        }
        widgets::reply(ui, self.answers.get(OpKind::RemotePort));
    }

    fn change_certificate_ui(&mut self, ui: &mut egui::Ui, state: &State, outbox: &Outbox, worker: &Worker) {
        ui.group(|ui| {
            ui.label("Choose a PEM or PFX file with the certificate and its private key; it is checked before use.");
            let inputs = "settings_certificate_inputs";
            if certificate::inputs_ui(ui, inputs, &mut self.certificate, worker, Page::Settings, false) {
                self.checked = false;
            }
            if certificate::check_ui(ui, &mut self.certificate, worker, Page::Settings) {
                self.checked = true;
            }
            let current = self.checked;
            let usable = match &self.certificate.outcome {
                Some(CheckOutcome::Report(report)) if current => {
                    certificate::report_ui(ui, report);
                    if report.verdict == Verdict::Rejected {
                        widgets::problem(
                            ui,
                            "The checker rejects this certificate: fix what the report marks as failed.",
                        );
                    }
                    report.verdict != Verdict::Rejected
                }
                Some(outcome @ CheckOutcome::Unreadable(_)) if current => {
                    certificate::outcome_ui(ui, outcome);
                    false
                }
                Some(_) => {
                    ui.label("The file or password changed since the check: check it again.");
                    false
                }
                None => false,
            };
            let port = state.settings.as_ref().map(|s| s.peer_port);
            let ready = usable && port.is_some() && !self.answers.waiting(OpKind::Certificate);
            if widgets::button(ui, ready, "Use this certificate")
                && let Some(port) = port
            {
                let non_empty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
                // The password leaves the field with the request, whatever the answer: a failed
                // change asks for it (and a check) again.
                let password = Some(std::mem::take(&mut self.certificate.password)).filter(|p| !p.is_empty());
                let certificate = CertificateChoice {
                    path: PathBuf::from(self.certificate.path.trim()),
                    password,
                    roots: non_empty(&self.certificate.roots).map(PathBuf::from),
                };
                self.checked = false;
                self.certificate.outcome = None;
                self.answers.send(outbox, Op::SetRemoteAccess { port, certificate: Some(certificate) });
            }
        });
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::testing::{self, Alone, asked_op, click, sent, shows, type_into, worker_answer};

    fn section(state: State) -> testing::Page<EncryptionSection> {
        let mut page = EncryptionSection::default();
        if let Some(settings) = &state.settings {
            page.fill(settings);
        }
        testing::page(page, state, |ui, alone: &mut Alone<EncryptionSection>| {
            alone.page.ui(ui, &alone.state, &alone.outbox, &alone.worker);
        })
    }

    #[test]
    fn a_new_port_is_sent_without_a_certificate_and_the_current_one_is_not() {
        let mut harness = section(testing::running());
        assert!(shows(&harness, "Peer port: 8060 (peers reach this node at 127.0.0.1:8060)"));
        click(&mut harness, "Change port");
        assert!(sent(&harness).is_empty(), "the port in use was sent again");
        type_into(&mut harness, "Remote access port", "0");
        assert!(shows(&harness, "The port must be a whole number from 1 to 65535."));
        click(&mut harness, "Change port");
        assert!(sent(&harness).is_empty(), "a bad port was sent");

        harness.state_mut().page.port = "9000".to_owned();
        harness.step();
        click(&mut harness, "Change port");
        let op = asked_op(&harness);
        assert!(matches!(&op, Op::SetRemoteAccess { port: 9000, certificate: None }), "{op:?}");
    }

    #[test]
    fn encryption_can_be_turned_off_only_when_it_is_on() {
        let mut harness = section(testing::running());
        assert!(shows(&harness, "Encryption: off (no certificate)"));
        click(&mut harness, "Turn off encryption");
        assert!(sent(&harness).is_empty(), "turned off what was off");

        let mut state = testing::running();
        state.status.as_mut().unwrap().metrics.encryption_thumbprint = Some("AB:CD".to_owned());
        let mut harness = section(state);
        assert!(shows(&harness, "SHA-256 thumbprint: AB:CD"));
        click(&mut harness, "Turn off encryption");
        assert!(matches!(asked_op(&harness), Op::DisableEncryption));
        assert!(shows(&harness, "Working…"));
        // While it runs, no other change of encryption.
        click(&mut harness, "Change certificate…");
        assert!(!harness.state().page.changing_certificate, "the form opened while a change ran");
    }

    #[test]
    fn a_certificate_is_used_only_after_a_check_of_the_file_as_it_is_now() {
        let mut harness = section(testing::running());
        click(&mut harness, "Change certificate…");
        click(&mut harness, "Check certificate");
        assert!(!harness.state().page.certificate.checking, "a check started without a file");
        type_into(&mut harness, "Certificate file", "/nonexistent/node.pfx");
        click(&mut harness, "Check certificate");
        assert!(shows(&harness, "Checking…"), "no sign of the check");
        let answer = worker_answer(&harness);
        harness.state_mut().page.apply(answer);
        harness.step();
        assert!(shows(&harness, "Can't read the file"), "the checker's answer isn't shown");
        click(&mut harness, "Use this certificate");
        assert!(sent(&harness).is_empty(), "an unreadable certificate was sent");

        // An edit after the check makes the report stale.
        type_into(&mut harness, "PFX password", "x");
        assert!(shows(&harness, "changed since the check"), "a report vouches for an edited file");
        // Closing the form drops the password.
        click(&mut harness, "Change certificate…");
        assert!(harness.state().page.certificate.password.is_empty(), "the password outlived its form");
    }

    #[test]
    fn a_checked_certificate_is_sent_with_the_port_and_its_password_leaves_the_field() {
        let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");
        let mut harness = section(testing::running());
        click(&mut harness, "Change certificate…");
        type_into(&mut harness, "Certificate file", &format!("{certs}good.pem"));
        type_into(&mut harness, "Trusted root CA (optional)", &format!("{certs}ca.pem"));
        click(&mut harness, "Check certificate");
        let answer = worker_answer(&harness);
        harness.state_mut().page.apply(answer);
        harness.step();
        assert!(shows(&harness, "Verdict: accepted"), "the report isn't shown");
        click(&mut harness, "Use this certificate");
        let Op::SetRemoteAccess { port: 8060, certificate: Some(choice) } = asked_op(&harness) else {
            panic!("not the certificate with the node's port");
        };
        assert_eq!(choice.path, PathBuf::from(format!("{certs}good.pem")));
        assert_eq!(choice.roots, Some(PathBuf::from(format!("{certs}ca.pem"))));
        assert!(choice.password.is_none());
        // A used report doesn't vouch for the next change.
        assert!(harness.state().page.certificate.outcome.is_none());
        harness.state_mut().page.done(OpKind::Certificate, &Ok("the peer channel is encrypted".to_owned()));
        harness.step();
        assert!(!harness.state().page.changing_certificate, "the form stayed open after the change");
        assert!(shows(&harness, "the peer channel is encrypted"));
    }
}
