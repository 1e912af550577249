//! The Configuration Manager driven headless (egui_kittest) on a throwaway data dir, with
//! loopback-only setup defaults, and bounded waits for what the service thread reports.

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use gatehouse::gui::{ConfigManager, ExpressOptions, GuiPrefs, Tab};
use std::time::{Duration, Instant};

/// A window on its own data dir (kept alive as long as the window).
pub struct Window {
    pub harness: Harness<'static, ConfigManager>,
    /// The data dir, removed at the end when the window owns it.
    pub dir: std::path::PathBuf,
    pub home: Option<tempfile::TempDir>,
}

/// Setup defaults that stay on loopback and on free ports.
pub fn loopback_defaults() -> ExpressOptions {
    ExpressOptions {
        hub: None,
        hub_listen: ([127, 0, 0, 1], 0).into(),
        peer_port: super::process::free_port(),
        peer_host: Some("127.0.0.1".to_owned()),
    }
}

impl Window {
    /// Opens a window on a fresh data dir and waits until the service has looked at it.
    pub fn open(tab: Tab) -> Window {
        Window::open_in(tempfile::tempdir().unwrap(), tab)
    }

    /// Opens a window on `home` (which may hold a registered node).
    pub fn open_in(home: tempfile::TempDir, tab: Tab) -> Window {
        let mut window = Window::open_at(home.path(), tab);
        window.home = Some(home);
        window
    }

    /// Opens a window on the data dir `dir`, which someone else owns.
    pub fn open_at(dir: &std::path::Path, tab: Tab) -> Window {
        Window::open_with(dir, tab, loopback_defaults())
    }

    /// Opens a window on `dir` with these setup defaults.
    pub fn open_with(dir: &std::path::Path, tab: Tab, defaults: ExpressOptions) -> Window {
        // Never this machine's real system service.
        let service_home = std::path::Path::new("/nonexistent/gatehouse-service");
        Window::open_full(dir, service_home, tab, defaults)
    }

    /// Opens a window on `dir` that looks for the system service in `service_home`.
    pub fn open_attaching(dir: &std::path::Path, service_home: &std::path::Path, tab: Tab) -> Window {
        Window::open_full(dir, service_home, tab, loopback_defaults())
    }

    fn open_full(
        dir: &std::path::Path,
        service_home: &std::path::Path,
        tab: Tab,
        defaults: ExpressOptions,
    ) -> Window {
        let prefs = GuiPrefs { tab };
        let app =
            ConfigManager::with_service_home(prefs, dir.to_owned(), service_home.to_owned(), defaults, None);
        let harness = Harness::builder().with_size(egui::vec2(1100.0, 900.0)).build_ui_state(
            |ui, app: &mut ConfigManager| {
                app.logic();
                app.ui(ui);
            },
            app,
        );
        let mut window = Window { harness, dir: dir.to_owned(), home: None };
        window.wait_for("the window to load", Duration::from_secs(20), |app| app.state.loaded);
        window
    }

    /// Steps frames (spinners repaint forever, so never `run`) until `done`, or fails.
    pub fn wait_for(&mut self, what: &str, limit: Duration, done: impl Fn(&ConfigManager) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            self.harness.step();
            if done(self.harness.state()) {
                self.harness.step();
                return;
            }
            assert!(Instant::now() < deadline, "waited {limit:?} for {what}; {}", self.picture());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the window knew when a wait ran out: the service, the node's status and its last
    /// log lines, so a failure says why and not only what.
    fn picture(&self) -> String {
        let state = &self.harness.state().state;
        let status = state.status.as_ref().map(|s| {
            format!(
                "hub_url {} connected {} state {:?} reason {:?}",
                s.hub_url, s.hub_connected, s.state, s.reason
            )
        });
        let logs: Vec<String> = state
            .logs
            .iter()
            .rev()
            .take(15)
            .rev()
            .map(|l| format!("  {} {} {}", l.level, l.target, l.message))
            .collect();
        format!("service {:?}; status {status:?}; last logs:\n{}", state.service, logs.join("\n"))
    }

    /// Focuses the field labelled `label` and types `text` into it.
    pub fn type_into(&mut self, label: &str, text: &str) {
        self.harness.get_by_label(label).focus();
        self.harness.step();
        self.harness.get_by_label(label).type_text(text);
        self.harness.step();
        self.harness.step();
    }

    pub fn click(&mut self, label: &str) {
        self.harness.get_by_label(label).click();
        self.harness.step();
        self.harness.step();
    }

    /// Whether a widget whose label contains `text` is shown.
    pub fn shows(&self, text: &str) -> bool {
        self.harness.query_all_by_label_contains(text).next().is_some()
    }
}
