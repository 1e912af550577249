//! The window as a whole: which tab is open, the per-tab state, and the split between
//! `logic` (drain finished work into state) and `ui` (draw state, send commands).

use eframe::egui;

use super::certificate::{self, CertificatePage};
use super::help;
use super::worker::Worker;
use serde::{Deserialize, Serialize};

/// The tabs of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Tab {
    #[default]
    Certificate,
    Help,
}

impl Tab {
    const ALL: [Tab; 2] = [Tab::Certificate, Tab::Help];

    fn title(self) -> &'static str {
        match self {
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
#[derive(Default)]
pub struct ConfigManager {
    pub prefs: GuiPrefs,
    pub certificate: CertificatePage,
    worker: Worker,
}

impl ConfigManager {
    pub fn new(prefs: GuiPrefs) -> Self {
        ConfigManager { prefs, ..Default::default() }
    }

    pub fn from_creation_context(cc: &eframe::CreationContext<'_>) -> Self {
        let prefs = cc.storage.and_then(|s| eframe::get_value(s, eframe::APP_KEY)).unwrap_or_default();
        let mut app = ConfigManager::new(prefs);
        app.worker.set_repaint(&cc.egui_ctx);
        app
    }

    /// Moves finished background work into state. Cheap; runs every frame.
    pub fn logic(&mut self) {
        while let Some(event) = self.worker.try_recv() {
            self.certificate.apply(event);
        }
    }

    /// Draws the whole window.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.worker.set_repaint(ui.ctx());
        egui::Panel::top("tabs").show(ui, |ui| {
            ui.horizontal(|ui| {
                for tab in Tab::ALL {
                    ui.selectable_value(&mut self.prefs.tab, tab, tab.title());
                }
            });
        });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| match self.prefs.tab {
                Tab::Certificate => certificate::certificate_ui(ui, &mut self.certificate, &self.worker),
                Tab::Help => help::help_ui(ui),
            });
        });
    }
}

impl eframe::App for ConfigManager {
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        ConfigManager::logic(self);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        ConfigManager::ui(self, ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.prefs);
    }
}
