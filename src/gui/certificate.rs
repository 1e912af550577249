//! The Certificate page: choose a PEM/PFX file (dialog or typed path), give its password, and
//! read the checker's report rule by rule. The same report appears later in the setup
//! wizard's encryption page.

use eframe::egui;

use super::widgets::{self, Badge};
use super::worker::{Answer, Command, Page, Worker};
use crate::cert::{Options, Report, Status, Verdict};
use std::path::PathBuf;

/// What the last check produced.
pub enum Outcome {
    Report(Report),
    /// The file couldn't be read at all; the sentence says why.
    Unreadable(String),
}

/// The page's state. The password lives only here, in memory, and is never persisted.
#[derive(Default)]
pub struct CertificatePage {
    pub path: String,
    pub password: String,
    pub host: String,
    pub roots: String,
    pub checking: bool,
    pub outcome: Option<Outcome>,
}

impl CertificatePage {
    /// Takes in a finished background event.
    pub fn apply(&mut self, answer: Answer) {
        match answer {
            Answer::CertificateFilePicked(Some(path)) => {
                self.path = path.display().to_string();
                self.outcome = None;
            }
            // Cancelled; other dialogs belong to other parts of the page that asked.
            Answer::CertificateFilePicked(None) | Answer::FilePicked(..) => {}
            Answer::CertificateChecked(result) => {
                self.checking = false;
                self.outcome = Some(match result {
                    Ok(report) => Outcome::Report(report),
                    Err(reason) => Outcome::Unreadable(reason),
                });
            }
        }
    }

    pub(crate) fn check_command(&self) -> Command {
        let non_empty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let options = Options {
            password: Some(self.password.clone()).filter(|p| !p.is_empty()),
            host: non_empty(&self.host),
            ..Options::default()
        };
        Command::CheckCertificate {
            path: PathBuf::from(self.path.trim()),
            roots: non_empty(&self.roots).map(PathBuf::from),
            options,
        }
    }
}

/// Draws the Certificate page.
pub fn certificate_ui(ui: &mut egui::Ui, page: &mut CertificatePage, worker: &Worker, from: Page) {
    ui.heading("Certificate");
    ui.label(
        "Check a certificate before a node uses it to encrypt traffic between gateway nodes. \
         PEM (.pem, .crt), DER (.cer, .der) and PFX (.pfx, .p12) files are accepted.",
    );
    ui.add_space(8.0);
    inputs_ui(ui, "certificate_inputs", page, worker, from, true);
    ui.add_space(6.0);
    check_ui(ui, page, worker, from);
    ui.add_space(10.0);
    if let Some(outcome) = &page.outcome {
        outcome_ui(ui, outcome);
    }
}

/// The file (with Browse…), its PFX password, the host name when `host`, and the private
/// roots, in a grid; true when the file, the password or the roots were edited.
pub(crate) fn inputs_ui(
    ui: &mut egui::Ui,
    id: &str,
    page: &mut CertificatePage,
    worker: &Worker,
    from: Page,
    host: bool,
) -> bool {
    egui::Grid::new(id)
        .num_columns(3)
        .spacing([8.0, 6.0])
        .show(ui, |ui| {
            let (path, browse) =
                widgets::file_field(ui, "Certificate file", &mut page.path, "/path/to/node.pfx");
            if browse {
                worker.send(from, Command::PickCertificateFile);
            }
            ui.end_row();
            let password = widgets::text_field(ui, "PFX password", &mut page.password, "", true);
            ui.end_row();
            if host {
                widgets::text_field(ui, "Host name (optional)", &mut page.host, "node1.corp.example", false);
                ui.end_row();
            }
            let roots = widgets::text_field(
                ui,
                "Trusted root CA (optional)",
                &mut page.roots,
                "PEM file of your own root CA",
                false,
            );
            ui.end_row();
            path.changed() || password.changed() || roots.changed()
        })
        .inner
}

/// "Check certificate" (once a file is named), "Checking…" while the worker checks; true
/// when it was clicked (the check is on its way).
pub(crate) fn check_ui(ui: &mut egui::Ui, page: &mut CertificatePage, worker: &Worker, from: Page) -> bool {
    ui.horizontal(|ui| {
        let ready = !page.path.trim().is_empty();
        let pending = page.checking.then_some("Checking…");
        let clicked = widgets::pending_button(ui, ready, "Check certificate", pending);
        if clicked {
            page.checking = true;
            page.outcome = None;
            worker.send(from, page.check_command());
        }
        clicked
    })
    .inner
}

/// What the last check found: the report, or why the file couldn't be read.
pub(crate) fn outcome_ui(ui: &mut egui::Ui, outcome: &Outcome) {
    match outcome {
        Outcome::Unreadable(reason) => widgets::problem(ui, &format!("Can't read the file: {reason}")),
        Outcome::Report(report) => report_ui(ui, report),
    }
}

/// The report, rule by rule, with a mark and colour per status.
pub fn report_ui(ui: &mut egui::Ui, report: &Report) {
    let (color, text) = match report.verdict {
        Verdict::Accepted => (ui.visuals().widgets.noninteractive.fg_stroke.color, "accepted"),
        Verdict::AcceptedWithWarnings => (ui.visuals().warn_fg_color, "accepted_with_warnings"),
        Verdict::Rejected => (ui.visuals().error_fg_color, "rejected"),
    };
    ui.label(egui::RichText::new(format!("Verdict: {text}")).strong().size(18.0).color(color));
    ui.label(format!("Subject: {}", report.subject));
    ui.label(format!("Issuer: {}", report.issuer));
    ui.label(format!("Valid: {} to {}", report.not_before, report.not_after));
    ui.label(format!("Key: {}   SHA-1 thumbprint: {}", report.key, report.thumbprint_sha1));
    ui.add_space(6.0);
    egui::Grid::new("certificate_checks").num_columns(3).striped(true).spacing([10.0, 4.0]).show(ui, |ui| {
        for check in &report.checks {
            widgets::badge(ui, badge_of(check.status), check.status.as_str());
            ui.label(check.rule.id());
            widgets::paragraph(ui, &check.message);
            ui.end_row();
        }
    });
}

fn badge_of(status: Status) -> Badge {
    match status {
        Status::Pass => Badge::Ok,
        Status::Warn => Badge::Warn,
        Status::Fail => Badge::Fail,
        Status::Skip => Badge::Skip,
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::testing::{self, Alone, click, shows, type_into, worker_answer};

    fn checker() -> testing::Page<CertificatePage> {
        let state = crate::gui::state::State { loaded: true, ..Default::default() };
        testing::page(CertificatePage::default(), state, |ui, alone: &mut Alone<CertificatePage>| {
            certificate_ui(ui, &mut alone.page, &alone.worker, Page::Checker);
        })
    }

    #[test]
    fn a_check_goes_to_the_worker_with_what_was_typed_and_its_report_is_drawn() {
        let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");
        let mut harness = checker();
        click(&mut harness, "Check certificate");
        assert!(!harness.state().page.checking, "a check started without a file");
        type_into(&mut harness, "Certificate file", &format!("{certs}good.pem"));
        type_into(&mut harness, "Host name (optional)", "node1.corp.example");
        type_into(&mut harness, "Trusted root CA (optional)", &format!("{certs}ca.pem"));
        let Command::CheckCertificate { path, roots, options } = harness.state().page.check_command() else {
            panic!("not a check");
        };
        assert_eq!(path, PathBuf::from(format!("{certs}good.pem")));
        assert_eq!(roots, Some(PathBuf::from(format!("{certs}ca.pem"))));
        assert_eq!(options.host.as_deref(), Some("node1.corp.example"));
        assert_eq!(options.password, None);

        click(&mut harness, "Check certificate");
        assert!(shows(&harness, "Checking…"), "no sign of the check");
        let answer = worker_answer(&harness);
        harness.state_mut().page.apply(answer);
        harness.step();
        assert!(!harness.state().page.checking);
        assert!(shows(&harness, "Verdict: "), "the report isn't drawn");
        assert!(shows(&harness, "✔ pass"), "no rule is marked as passed");
    }

    #[test]
    fn an_unreadable_file_says_why() {
        let mut harness = checker();
        harness
            .state_mut()
            .page
            .apply(Answer::CertificateChecked(Err("the file looks truncated".to_owned())));
        harness.step();
        assert!(shows(&harness, "Can't read the file: the file looks truncated"));
        assert!(!shows(&harness, "Verdict"));
    }
}
