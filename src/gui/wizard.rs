//! The first-run wizard: express setup in one click, or manual setup in three pages (auth
//! key, node name, encryption). An error from the hub comes back to the page that caused it.

use eframe::egui;

use super::certificate::{self, CertificatePage, Outcome};
use super::outbox::Outbox;
use super::service::{CertificateChoice, ManualSetup, Request, SetupPage};
use super::widgets;
use super::worker::{Page, Worker};
use crate::cert::Verdict;
use std::path::PathBuf;

/// The wizard's state. The key and password live only here, in memory.
pub struct Wizard {
    pub page: SetupPage,
    pub key: String,
    pub show_key: bool,
    pub name: String,
    pub encrypt: bool,
    pub certificate: CertificatePage,
    pub port: String,
    /// Setup was sent and no answer came yet.
    pub busy: bool,
    /// The last error, on the page it belongs to.
    pub error: Option<(SetupPage, String)>,
}

impl Wizard {
    pub fn new(peer_port: u16) -> Self {
        Wizard {
            page: SetupPage::Welcome,
            key: String::new(),
            show_key: false,
            name: crate::machine::host_name(),
            encrypt: false,
            certificate: CertificatePage::default(),
            port: peer_port.to_string(),
            busy: false,
            error: None,
        }
    }

    /// Setup failed: go to the page the error belongs to and show it there.
    pub fn failed(&mut self, page: SetupPage, message: String) {
        self.busy = false;
        self.page = page;
        self.error = Some((page, message));
    }

    fn error_on(&self, page: SetupPage) -> Option<&str> {
        self.error.as_ref().filter(|(p, _)| *p == page).map(|(_, m)| m.as_str())
    }

    /// What is wrong with the typed key, as a sentence; `Ok` names the hub it points at.
    fn key_check(&self) -> Result<String, String> {
        if self.key.trim().is_empty() {
            return Err("Paste the gateway's auth key (it starts with gh1_).".to_owned());
        }
        crate::protocol::parse_auth_key(&self.key).map(|key| format!("A key for the hub at {}", key.hub_url)).map_err(
            |_| "This is not a complete auth key: copy it again from the hub (gatehouse hub key show, or where the gateway was created).".to_owned(),
        )
    }

    fn port_check(&self) -> Result<u16, String> {
        match self.port.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err("The port is a number from 1 to 65535.".to_owned()),
        }
    }

    /// Register needs a usable port and, with encryption, a checked certificate not rejected.
    fn ready_to_register(&self) -> bool {
        let certificate_ok = !self.encrypt
            || matches!(
                &self.certificate.outcome,
                Some(Outcome::Report(report)) if report.verdict != Verdict::Rejected
            );
        !self.busy && self.port_check().is_ok() && certificate_ok && !self.certificate.checking
    }

    fn manual_setup(&self) -> Option<ManualSetup> {
        let port = self.port_check().ok()?;
        let certificate = self.encrypt.then(|| CertificateChoice {
            path: PathBuf::from(self.certificate.path.trim()),
            password: Some(self.certificate.password.clone()).filter(|p| !p.is_empty()),
            roots: Some(self.certificate.roots.trim()).filter(|r| !r.is_empty()).map(PathBuf::from),
        });
        Some(ManualSetup {
            key: self.key.trim().to_owned(),
            name: self.name.trim().to_owned(),
            certificate,
            port,
        })
    }
}

/// Draws the wizard.
pub fn wizard_ui(ui: &mut egui::Ui, wizard: &mut Wizard, service: &Outbox, worker: &Worker) {
    ui.heading("Set up this gateway node");
    ui.add_space(8.0);
    match wizard.page {
        SetupPage::Welcome => welcome_ui(ui, wizard, service),
        SetupPage::Key => key_ui(ui, wizard),
        SetupPage::Name => name_ui(ui, wizard),
        SetupPage::Encryption => encryption_ui(ui, wizard, service, worker),
    }
}

fn welcome_ui(ui: &mut egui::Ui, wizard: &mut Wizard, service: &Outbox) {
    ui.label(
        "Express setup makes this machine a gateway in one step: it starts a hub inside this \
         window (unless one is configured with GATEHOUSE_HUB and GATEHOUSE_ADMIN_TOKEN), creates \
         a gateway named after this computer, and registers this node without encryption.",
    );
    ui.add_space(6.0);
    ui.horizontal(|ui| {
        if widgets::pending_button(ui, true, "Express setup", wizard.busy.then_some("Setting up…")) {
            wizard.busy = true;
            wizard.error = None;
            service.send(Request::Express);
        }
    });
    error_ui(ui, wizard.error_on(SetupPage::Welcome));
    ui.add_space(14.0);
    ui.label(
        "Manual setup joins a gateway that already exists: you need its auth key, and its \
         certificate if the gateway encrypts traffic between its nodes.",
    );
    if widgets::button(ui, !wizard.busy, "Manual setup") {
        wizard.error = None;
        wizard.page = SetupPage::Key;
    }
}

fn key_ui(ui: &mut egui::Ui, wizard: &mut Wizard) {
    ui.label(egui::RichText::new("Step 1 of 3: auth key").strong());
    ui.label("Paste one of the gateway's two auth keys. It names the hub and the gateway.");
    ui.horizontal(|ui| {
        let field = egui::TextEdit::singleline(&mut wizard.key).password(!wizard.show_key).hint_text("gh1_…");
        widgets::field(ui, "Auth key", field, 460.0);
        ui.checkbox(&mut wizard.show_key, "Show key");
    });
    let check = wizard.key_check();
    match &check {
        Ok(hub) => {
            ui.label(format!("✔ {hub}"));
        }
        Err(problem) => {
            widgets::warning(ui, problem);
        }
    }
    error_ui(ui, wizard.error_on(SetupPage::Key));
    nav_ui(ui, wizard, check.is_ok(), SetupPage::Welcome, SetupPage::Name);
}

fn name_ui(ui: &mut egui::Ui, wizard: &mut Wizard) {
    ui.label(egui::RichText::new("Step 2 of 3: node name").strong());
    ui.label(
        "The name this node has in the gateway. It must be unique there and can't be changed \
         later (to rename, unregister and register again).",
    );
    ui.horizontal(|ui| {
        widgets::field(ui, "Node name", egui::TextEdit::singleline(&mut wizard.name), 320.0);
    });
    let ok = !wizard.name.trim().is_empty();
    if !ok {
        widgets::warning(ui, "Enter a name.");
    }
    error_ui(ui, wizard.error_on(SetupPage::Name));
    nav_ui(ui, wizard, ok, SetupPage::Key, SetupPage::Encryption);
}

fn encryption_ui(ui: &mut egui::Ui, wizard: &mut Wizard, service: &Outbox, worker: &Worker) {
    ui.label(egui::RichText::new("Step 3 of 3: encryption").strong());
    ui.label(
        "Nodes of a gateway talk to each other on the peer port. With a certificate that \
         traffic is encrypted (TLS), and every node of the gateway must use the same one.",
    );
    ui.radio_value(&mut wizard.encrypt, false, "Skip (no encryption)");
    ui.radio_value(&mut wizard.encrypt, true, "Use a certificate (PEM or PFX)");
    if wizard.encrypt {
        certificate::inputs_ui(
            ui,
            "wizard_certificate",
            &mut wizard.certificate,
            worker,
            Page::Wizard,
            false,
        );
        certificate::check_ui(ui, &mut wizard.certificate, worker, Page::Wizard);
        match &wizard.certificate.outcome {
            None => {
                ui.label("Check the certificate before registering.");
            }
            Some(outcome) => certificate::outcome_ui(ui, outcome),
        }
    }
    ui.horizontal(|ui| {
        widgets::field(ui, "Peer port", egui::TextEdit::singleline(&mut wizard.port), 80.0);
    });
    if let Err(problem) = wizard.port_check() {
        widgets::warning(ui, &problem);
    }
    error_ui(ui, wizard.error_on(SetupPage::Encryption));
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        if widgets::button(ui, !wizard.busy, "Back") {
            wizard.page = SetupPage::Name;
        }
        let pending = wizard.busy.then_some("Registering…");
        if widgets::pending_button(ui, wizard.ready_to_register(), "Register", pending)
            && let Some(setup) = wizard.manual_setup()
        {
            wizard.busy = true;
            wizard.error = None;
            service.send(Request::Register(Box::new(setup)));
        }
    });
}

/// Back and Next buttons.
fn nav_ui(ui: &mut egui::Ui, wizard: &mut Wizard, next_ok: bool, back: SetupPage, next: SetupPage) {
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        if ui.button("Back").clicked() {
            wizard.page = back;
        }
        if widgets::button(ui, next_ok, "Next") {
            wizard.page = next;
        }
    });
}

fn error_ui(ui: &mut egui::Ui, error: Option<&str>) {
    if let Some(message) = error {
        widgets::problem(ui, message);
    }
}
