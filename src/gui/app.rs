//! The window as a whole: the wizard until this node is registered, then the tabs. `ui` draws
//! state, and the pages push what they ask for into the [`Outbox`]; `logic` sends it, records
//! what is pending, drains the service's events into [`State`] and routes each answer to the
//! page that asked.

use eframe::egui;

use super::certificate::{self, CertificatePage};
use super::outbox::Outbox;
use super::service::{Event, Logging, Request, Service, SetupPage};
use super::state::State;
use super::wizard::{self, Wizard};
use super::worker::{self, Worker};
use super::{diagnostics, help, home, jobs, settings, widgets};
use crate::host::express::{self, ExpressOptions};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The tabs of the window after registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Tab {
    #[default]
    Home,
    /// The gateway's recent jobs and where each run ran.
    Jobs,
    Settings,
    Diagnostics,
    /// The certificate checker on its own, for any file.
    Certificate,
    Help,
}

impl Tab {
    const ALL: [Tab; 6] =
        [Tab::Home, Tab::Jobs, Tab::Settings, Tab::Diagnostics, Tab::Certificate, Tab::Help];

    fn title(self) -> &'static str {
        match self {
            Tab::Home => "Home",
            Tab::Jobs => "Jobs",
            Tab::Settings => "Settings",
            Tab::Diagnostics => "Diagnostics",
            Tab::Certificate => "Certificate",
            Tab::Help => "Help",
        }
    }
}

/// What the window remembers between runs (never secrets: passwords are not here).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GuiPrefs {
    pub tab: Tab,
}

/// The Configuration Manager application.
pub struct ConfigManager {
    pub prefs: GuiPrefs,
    /// What the service last told the window.
    pub state: State,
    pub wizard: Wizard,
    pub certificate: CertificatePage,
    pub settings: settings::SettingsPage,
    pub diagnostics: diagnostics::DiagnosticsPage,
    service: Service,
    /// What the pages asked for while drawing, sent by the next `logic()`.
    outbox: Outbox,
    worker: Worker,
    /// When the real window was created, until its first frame is drawn (then logged).
    created: Option<std::time::Instant>,
}

impl ConfigManager {
    /// A window for the data dir `dir`; its service thread starts now.
    pub fn new(prefs: GuiPrefs, dir: PathBuf, defaults: ExpressOptions, logging: Option<Logging>) -> Self {
        Self::with_service_home(prefs, dir, crate::paths::service_home(), defaults, logging)
    }

    /// [`ConfigManager::new`], looking for the system service in `service_home` (when `dir`
    /// has no node) rather than in `paths::service_home()`.
    pub fn with_service_home(
        prefs: GuiPrefs,
        dir: PathBuf,
        service_home: PathBuf,
        defaults: ExpressOptions,
        logging: Option<Logging>,
    ) -> Self {
        let wizard = Wizard::new(defaults.peer_port);
        ConfigManager {
            prefs,
            state: State::default(),
            wizard,
            certificate: CertificatePage::default(),
            settings: settings::SettingsPage::default(),
            diagnostics: diagnostics::DiagnosticsPage::default(),
            service: Service::start(dir, service_home, defaults, logging),
            outbox: Outbox::default(),
            worker: Worker::default(),
            created: None,
        }
    }

    pub fn from_creation_context(cc: &eframe::CreationContext<'_>, logging: Logging) -> Self {
        let prefs = cc.storage.and_then(|s| eframe::get_value(s, eframe::APP_KEY)).unwrap_or_default();
        let dir = crate::paths::data_dir();
        let defaults =
            ExpressOptions { hub: express::configured_hub_from_env(), ..ExpressOptions::default() };
        let mut app = ConfigManager::new(prefs, dir, defaults, Some(logging));
        app.created = Some(std::time::Instant::now());
        app.service.set_repaint(&cc.egui_ctx);
        app.worker.set_repaint(&cc.egui_ctx);
        app
    }

    /// Asks the service for something.
    pub fn send(&self, request: Request) {
        self.service.send(request);
    }

    /// Moves finished work into state. Cheap; runs every frame.
    pub fn logic(&mut self) {
        while let Some(event) = self.service.try_recv() {
            match event {
                Event::SetupFailed { page, ref message } => self.wizard.failed(page, message.clone()),
                Event::Registered(_) => self.wizard.busy = false,
                // The answer goes to the tab that asked.
                Event::Done { op, ref result } => match op.asked_by() {
                    Tab::Diagnostics => self.diagnostics.done(op, result),
                    _ => self.settings.done(op, result),
                },
                _ => {}
            }
            self.state.apply(event);
        }
        // The Jobs tab's list is fetched here, never while drawing: every few seconds while
        // the tab is open and the service is up, one fetch at a time.
        let stale = self.state.jobs_fetched.is_none_or(|at| at.elapsed() >= jobs::REFRESH);
        if self.prefs.tab == Tab::Jobs && self.state.settings.is_some() && stale && !self.state.jobs_pending {
            self.outbox.send(Request::Jobs);
        }
        // What the Settings tab shows but only the service can read, asked for here too.
        if self.prefs.tab == Tab::Settings && self.state.settings.is_some() {
            self.settings.refresh(&self.state, &self.outbox);
        }
        for request in self.outbox.drain() {
            record_pending(&mut self.state, &request);
            self.service.send(request);
        }
        while let Some(event) = self.worker.try_recv() {
            match event {
                worker::Event::For(worker::Page::Wizard, event) => self.wizard.apply(event),
                worker::Event::For(worker::Page::Settings, event) => self.settings.apply(event),
                worker::Event::For(worker::Page::Diagnostics, event) => self.diagnostics.apply(event),
                worker::Event::For(worker::Page::Checker, event) => self.certificate.apply(event),
            }
        }
    }

    /// Whether something the pages asked for waits to be sent (a test can look).
    pub fn asking(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Draws the whole window.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.service.set_repaint(ui.ctx());
        self.worker.set_repaint(ui.ctx());
        if !self.state.loaded {
            egui::CentralPanel::default().show(ui, |ui| widgets::waiting(ui, "Starting…"));
            return;
        }
        let registered = self.state.settings.is_some();
        // Before setup: the wizard (in place of Home), the certificate checker and Help.
        let tabs: &[Tab] = if registered { &Tab::ALL } else { &[Tab::Home, Tab::Certificate, Tab::Help] };
        let mut tab = self.prefs.tab;
        if !tabs.contains(&tab) {
            tab = Tab::Home;
        }
        egui::Panel::top("tabs").show(ui, |ui| {
            ui.horizontal(|ui| {
                for &choice in tabs {
                    let title = if registered {
                        choice.title()
                    } else if choice == Tab::Home {
                        "Setup"
                    } else {
                        choice.title()
                    };
                    if ui.selectable_label(tab == choice, title).clicked() {
                        self.prefs.tab = choice;
                        tab = choice;
                    }
                }
            });
        });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| match tab {
                Tab::Home if !registered => {
                    wizard::wizard_ui(ui, &mut self.wizard, &self.outbox, &self.worker);
                    if self.wizard.page == SetupPage::Welcome {
                        // A machine replacing a lost one starts from its backup instead.
                        ui.add_space(14.0);
                        ui.separator();
                        ui.label(egui::RichText::new("Or restore a node from its backup").strong());
                        self.settings.backup.restore_ui(ui, &self.outbox, &self.worker);
                    }
                }
                Tab::Home => home::home_ui(ui, &self.state, &self.outbox),
                Tab::Jobs => jobs::jobs_ui(ui, &self.state),
                Tab::Settings => {
                    settings::settings_ui(ui, &mut self.settings, &self.state, &self.outbox, &self.worker);
                }
                Tab::Diagnostics => diagnostics::diagnostics_ui(
                    ui,
                    &mut self.diagnostics,
                    &self.state,
                    &self.outbox,
                    &self.worker,
                ),
                Tab::Certificate => {
                    certificate::certificate_ui(
                        ui,
                        &mut self.certificate,
                        &self.worker,
                        worker::Page::Checker,
                    );
                }
                Tab::Help => help::help_ui(ui, &self.state),
            });
        });
    }
}

/// Records in `state` that `request` is under way, so its page shows it (a spinner,
/// "Testing…") and doesn't ask twice.
fn record_pending(state: &mut State, request: &Request) {
    match request {
        Request::TestConnections => state.testing = true,
        Request::Jobs => state.jobs_pending = true,
        Request::AddNodeKey => state.add_node.asking = true,
        Request::HubAccess(_) => state.add_node.moving = true,
        _ => {}
    }
}

impl eframe::App for ConfigManager {
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        ConfigManager::logic(self);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        ConfigManager::ui(self, ui);
        // What a page asked for goes out in the next frame's `logic()`: make sure it comes.
        if self.asking() {
            ui.ctx().request_repaint();
        }
        if let Some(created) = self.created.take() {
            // The start-up benchmark waits for this line.
            tracing::info!(
                "first frame drawn, {} ms after the window was created",
                created.elapsed().as_millis()
            );
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.prefs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_test_or_a_jobs_fetch_is_pending_until_its_answer_comes() {
        let mut state = State::default();
        record_pending(&mut state, &Request::TestConnections);
        record_pending(&mut state, &Request::Jobs);
        assert!(state.testing && state.jobs_pending);
        state.apply(Event::Tested(Vec::new()));
        state.apply(Event::Jobs(Ok(Vec::new())));
        assert!(!state.testing && !state.jobs_pending);
    }
}
