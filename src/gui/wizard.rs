//! The first-run wizard: express setup in one click, or manual setup in three pages (auth
//! key, node name, encryption). An error from the hub comes back to the page that caused it.

use eframe::egui;

use super::certificate::{self, CertificatePage, Outcome};
use super::outbox::Outbox;
use super::service::{CertificateChoice, ManualSetup, Request, SetupPage};
use super::widgets;
use super::worker::{Answer, Command, FilePurpose, Page, Worker};
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
    /// A PEM file of the hub's private CA, for a hub whose HTTPS certificate the system
    /// doesn't trust (empty: none).
    pub hub_ca: String,
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
            hub_ca: String::new(),
            busy: false,
            error: None,
        }
    }

    /// Takes in a finished background answer: the hub CA file chosen, else the certificate's.
    pub fn apply(&mut self, answer: Answer) {
        match answer {
            Answer::FilePicked(FilePurpose::HubCa, Some(path)) => self.hub_ca = path.display().to_string(),
            Answer::FilePicked(FilePurpose::HubCa, None) => {}
            other => self.certificate.apply(other),
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
        crate::protocol::parse_auth_key(&self.key)
            .map(|key| match key.pin {
                Some(pin) => format!(
                    "A key for the hub at {}, trusted by its certificate's fingerprint (SHA-256 {pin})",
                    key.hub_url
                ),
                None => format!("A key for the hub at {}", key.hub_url),
            })
            .map_err(
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
            hub_ca: Some(self.hub_ca.trim()).filter(|p| !p.is_empty()).map(PathBuf::from),
        })
    }
}

/// Draws the wizard.
pub fn wizard_ui(ui: &mut egui::Ui, wizard: &mut Wizard, service: &Outbox, worker: &Worker) {
    ui.heading("Set up this gateway node");
    ui.add_space(8.0);
    match wizard.page {
        SetupPage::Welcome => welcome_ui(ui, wizard, service),
        SetupPage::Key => key_ui(ui, wizard, worker),
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

fn key_ui(ui: &mut egui::Ui, wizard: &mut Wizard, worker: &Worker) {
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
    ui.add_space(6.0);
    ui.label(
        "Only for a hub whose HTTPS certificate comes from a private CA (one this computer doesn't \
         trust): its CA certificate, as a PEM file. The node keeps it.",
    );
    let choose = ui
        .horizontal(|ui| widgets::file_field(ui, "Hub CA file", &mut wizard.hub_ca, "/etc/ssl/our-ca.pem").1);
    if choose.inner {
        worker.send(Page::Wizard, Command::PickFile(FilePurpose::HubCa));
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

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::testing::{self, Alone, click, sent, shows, type_into};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use egui_kittest::kittest::Queryable as _;

    /// A well-formed key for gateway `g1` of the hub at `http://127.0.0.1:9`.
    fn key() -> String {
        format!(
            "gh1_{}_{}",
            URL_SAFE_NO_PAD.encode("http://127.0.0.1:9|g1"),
            URL_SAFE_NO_PAD.encode([7u8; 32])
        )
    }

    fn wizard(page: SetupPage) -> testing::Page<Wizard> {
        let mut wizard = Wizard::new(8060);
        wizard.page = page;
        let state = crate::gui::state::State { loaded: true, ..Default::default() };
        testing::page(wizard, state, |ui, alone: &mut Alone<Wizard>| {
            wizard_ui(ui, &mut alone.page, &alone.outbox, &alone.worker);
        })
    }

    #[test]
    fn express_setup_is_asked_once_and_shows_while_it_runs() {
        let mut harness = wizard(SetupPage::Welcome);
        click(&mut harness, "Express setup");
        assert!(matches!(sent(&harness).as_slice(), [Request::Express]));
        assert!(shows(&harness, "Setting up…"), "no sign of the setup");
        click(&mut harness, "Express setup");
        click(&mut harness, "Manual setup");
        assert!(sent(&harness).is_empty(), "asked twice");
        assert_eq!(harness.state().page.page, SetupPage::Welcome, "left the page while setting up");

        harness
            .state_mut()
            .page
            .failed(SetupPage::Welcome, "The hub refused: the gateway exists.".to_owned());
        harness.step();
        assert!(shows(&harness, "The hub refused: the gateway exists."), "the refusal isn't on its page");
        click(&mut harness, "Manual setup");
        assert_eq!(harness.state().page.page, SetupPage::Key);
    }

    #[test]
    fn the_key_page_goes_on_only_with_a_whole_key_and_names_its_hub() {
        let mut harness = wizard(SetupPage::Key);
        assert!(shows(&harness, "Paste the gateway's auth key"));
        type_into(&mut harness, "Auth key", "gh1_cut");
        assert!(shows(&harness, "This is not a complete auth key"), "a cut key isn't flagged");
        click(&mut harness, "Next");
        assert_eq!(harness.state().page.page, SetupPage::Key, "Next took a cut key");

        harness.state_mut().page.key = key();
        harness.step();
        assert!(shows(&harness, "✔ A key for the hub at http://127.0.0.1:9"));
        click(&mut harness, "Next");
        assert_eq!(harness.state().page.page, SetupPage::Name);
    }

    #[test]
    fn the_name_page_needs_a_name() {
        let mut harness = wizard(SetupPage::Name);
        harness.state_mut().page.name.clear();
        harness.step();
        assert!(shows(&harness, "Enter a name."));
        click(&mut harness, "Next");
        assert_eq!(harness.state().page.page, SetupPage::Name, "Next took an empty name");
        type_into(&mut harness, "Node name", "n2");
        click(&mut harness, "Next");
        assert_eq!(harness.state().page.page, SetupPage::Encryption);
        click(&mut harness, "Back");
        click(&mut harness, "Back");
        assert_eq!(harness.state().page.page, SetupPage::Key);
    }

    #[test]
    fn register_sends_what_was_typed_and_a_refusal_comes_back_to_its_page() {
        let mut harness = wizard(SetupPage::Encryption);
        let typed = &mut harness.state_mut().page;
        typed.key = format!("  {}  ", key());
        typed.name = " n2 ".to_owned();
        typed.port = "0".to_owned();
        harness.step();
        assert!(shows(&harness, "The port is a number from 1 to 65535."));
        click(&mut harness, "Register");
        assert!(sent(&harness).is_empty(), "registered with port 0");

        harness.state_mut().page.port = "9100".to_owned();
        harness.step();
        click(&mut harness, "Register");
        let asked = sent(&harness);
        let [Request::Register(setup)] = asked.as_slice() else {
            panic!("{} requests, not Register", asked.len())
        };
        assert_eq!((setup.key.as_str(), setup.name.as_str(), setup.port), (key().as_str(), "n2", 9100));
        assert!(setup.certificate.is_none(), "a certificate without encryption");
        assert!(setup.hub_ca.is_none(), "a hub CA nobody gave");
        assert!(shows(&harness, "Registering…"));

        harness.state_mut().page.failed(SetupPage::Name, "A node named n2 is already registered.".to_owned());
        harness.step();
        assert_eq!(harness.state().page.page, SetupPage::Name, "the refusal didn't lead to its page");
        assert!(shows(&harness, "A node named n2 is already registered."));
    }

    #[test]
    fn a_hub_ca_file_typed_or_chosen_on_the_key_page_goes_with_the_registration() {
        let mut harness = wizard(SetupPage::Key);
        assert!(shows(&harness, "Only for a hub whose HTTPS certificate comes from a private CA"));
        type_into(&mut harness, "Hub CA file", "/typed/ca.pem");
        assert_eq!(harness.state().page.hub_ca, "/typed/ca.pem");
        // The file dialog's answer lands in the field, not in the certificate's.
        harness
            .state_mut()
            .page
            .apply(Answer::FilePicked(FilePurpose::HubCa, Some(PathBuf::from("/etc/ssl/private-ca.pem"))));
        harness.state_mut().page.apply(Answer::FilePicked(FilePurpose::HubCa, None));
        harness.step();
        assert_eq!(harness.state().page.hub_ca, "/etc/ssl/private-ca.pem", "a cancelled dialog cleared it");
        assert!(harness.state().page.certificate.path.is_empty());

        let typed = &mut harness.state_mut().page;
        typed.key = key();
        typed.page = SetupPage::Encryption;
        harness.step();
        click(&mut harness, "Register");
        let asked = sent(&harness);
        let [Request::Register(setup)] = asked.as_slice() else {
            panic!("{} requests, not Register", asked.len())
        };
        assert_eq!(setup.hub_ca.as_deref(), Some(std::path::Path::new("/etc/ssl/private-ca.pem")));
    }

    #[test]
    fn with_encryption_register_waits_for_a_check() {
        let mut harness = wizard(SetupPage::Encryption);
        harness.state_mut().page.key = key();
        click(&mut harness, "Use a certificate (PEM or PFX)");
        assert!(shows(&harness, "Check the certificate before registering."));
        type_into(&mut harness, "Certificate file", "/nonexistent/node.pfx");
        click(&mut harness, "Register");
        assert!(sent(&harness).is_empty(), "registered with an unchecked certificate");
        click(&mut harness, "Check certificate");
        assert!(harness.query_by_label_contains("Checking…").is_some());
        let answer = testing::worker_answer(&harness);
        harness.state_mut().page.certificate.apply(answer);
        harness.step();
        assert!(shows(&harness, "Can't read the file"));
        click(&mut harness, "Register");
        assert!(sent(&harness).is_empty(), "registered with an unreadable certificate");
    }
}
