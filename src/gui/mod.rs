//! The Configuration Manager window (eframe/egui): what a person sees and clicks. It draws
//! state and sends requests; all work (the node service, an embedded hub, file dialogs,
//! certificate checks) happens off the UI thread ([`service`], [`worker`]).
//!
//! **Invariant:** nothing in `gui` blocks or awaits on the UI thread.

use eframe::egui;

mod app;
mod certificate;
mod diagnostics;
mod help;
mod home;
pub mod jobs;
pub mod ops;
pub mod outbox;
pub mod service;
mod settings;
pub mod state;
#[cfg(test)]
mod testing;
mod widgets;
mod wizard;
pub mod worker;

pub use crate::host::express::ExpressOptions;
pub use app::{ConfigManager, GuiPrefs, Tab};
pub use certificate::{CertificatePage, Outcome};
pub use service::{Logging, ServiceState, SetupPage};
pub use worker::{Command, Worker};

/// The window's title, also used by tests and the X11 smoke test to find it.
pub const WINDOW_TITLE: &str = "Gatehouse Configuration Manager";

/// The window icon; a broken icon must never stop the window from opening.
fn icon() -> egui::IconData {
    eframe::icon_data::from_png_bytes(include_bytes!("../../resources/icon.png")).unwrap_or_default()
}

/// Opens the window and runs until it is closed; `logging` carries this process's log lines
/// to the Diagnostics tab and lets the window change the level.
pub fn run(logging: service::Logging) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(WINDOW_TITLE)
            .with_app_id("gatehouse")
            .with_inner_size([900.0, 640.0])
            .with_min_inner_size([560.0, 400.0])
            .with_icon(icon()),
        ..Default::default()
    };
    eframe::run_native(WINDOW_TITLE, options, Box::new(|cc| Ok(Box::new(ConfigManager::from_creation_context(cc, logging)))))
        .map_err(|e| {
            anyhow::anyhow!(
                "can't open the Configuration Manager window ({e}); it needs a desktop session (DISPLAY or WAYLAND_DISPLAY), or use the command line: gatehouse --help"
            )
        })
}
