//! The Certificate page: choose a PEM/PFX file (dialog or typed path), give its password, and
//! read the checker's report rule by rule. The same report appears later in the setup
//! wizard's encryption page.

use eframe::egui;

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
    egui::Grid::new("certificate_inputs").num_columns(3).spacing([8.0, 6.0]).show(ui, |ui| {
        let _ = text_field_ui(ui, "Certificate file", &mut page.path, "/path/to/node.pfx", false);
        if ui.button("Browse…").clicked() {
            worker.send(from, Command::PickCertificateFile);
        }
        ui.end_row();
        let _ = text_field_ui(ui, "PFX password", &mut page.password, "", true);
        ui.end_row();
        let _ = text_field_ui(ui, "Host name (optional)", &mut page.host, "node1.corp.example", false);
        ui.end_row();
        let _ = text_field_ui(
            ui,
            "Trusted root CA (optional)",
            &mut page.roots,
            "PEM file of your own root CA",
            false,
        );
        ui.end_row();
    });
    ui.add_space(6.0);
    ui.horizontal(|ui| {
        let ready = !page.path.trim().is_empty() && !page.checking;
        if ui.add_enabled(ready, egui::Button::new("Check certificate")).clicked() {
            page.checking = true;
            page.outcome = None;
            worker.send(from, page.check_command());
        }
        if page.checking {
            ui.spinner();
            ui.label("Checking…");
        }
    });
    ui.add_space(10.0);
    match &page.outcome {
        None => {}
        Some(Outcome::Unreadable(reason)) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("Can't read the file: {reason}"));
        }
        Some(Outcome::Report(report)) => report_ui(ui, report),
    }
}

/// A label and its single-line field, tied together for screen readers (and tests).
pub(crate) fn text_field_ui(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut String,
    hint: &str,
    password: bool,
) -> egui::Response {
    let label = ui.label(label);
    let field = egui::TextEdit::singleline(value).password(password).hint_text(hint);
    ui.add_sized([420.0, 22.0], field).labelled_by(label.id)
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
            let (mark, color) = status_mark(ui, check.status);
            ui.colored_label(color, format!("{mark} {}", check.status));
            ui.label(check.rule.id());
            ui.add(egui::Label::new(&check.message).wrap());
            ui.end_row();
        }
    });
}

fn status_mark(ui: &egui::Ui, status: Status) -> (&'static str, egui::Color32) {
    let visuals = ui.visuals();
    match status {
        Status::Pass => ("✔", egui::Color32::from_rgb(0x2e, 0x9d, 0x4a)),
        Status::Warn => ("⚠", visuals.warn_fg_color),
        Status::Fail => ("✖", visuals.error_fg_color),
        Status::Skip => ("–", visuals.weak_text_color()),
    }
}
