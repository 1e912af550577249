//! The Settings tab, a module a section: encryption and remote access, concurrency, the
//! gateway's thresholds, the proxy, the node's own metrics address, automatic updates,
//! credentials, the hub's tokens, backup and
//! restore, adding a node. Each section owns what is
//! typed into it and the answers to what it sent, and draws itself from [`State`], pushing
//! [`Op`](super::ops::Op)s into the [`Outbox`]; this module routes each answer to the section
//! whose operation it was, and asks (from `logic()`, never while drawing) for what the
//! sections show but only the service can read.
//!
//! Nothing here reads files or the network: certificate checks and file dialogs go to the
//! [`Worker`], everything else to the service thread.

mod add_node;
mod auto_update;
mod backup;
mod concurrency;
mod credentials;
mod encryption;
mod hub_tokens;
mod metrics;
mod proxy;
mod thresholds;

pub use add_node::AddNodeSection;
pub use auto_update::AutoUpdateSection;
pub use backup::BackupSection;
pub use concurrency::ConcurrencySection;
pub use credentials::CredentialsSection;
pub use encryption::EncryptionSection;
pub use hub_tokens::HubTokensSection;
pub use metrics::MetricsSection;
pub use proxy::ProxySection;
pub use thresholds::ThresholdsSection;

use eframe::egui;

use super::ops::OpKind;
use super::outbox::{Answers, Outbox};
use super::state::State;
use super::widgets;
use super::worker::{Answer, Worker};

/// The tab's state: its sections'.
#[derive(Default)]
pub struct SettingsPage {
    pub encryption: EncryptionSection,
    pub concurrency: ConcurrencySection,
    pub thresholds: ThresholdsSection,
    pub proxy: ProxySection,
    pub metrics: MetricsSection,
    pub auto_update: AutoUpdateSection,
    pub credentials: CredentialsSection,
    pub backup: BackupSection,
    pub add_node: AddNodeSection,
    pub hub_tokens: HubTokensSection,
    /// The form fields were filled from the node's settings.
    filled: bool,
}

impl SettingsPage {
    /// Takes in the answer to an operation, for the section that sent it (answers for other
    /// tabs are ignored).
    pub fn done(&mut self, op: OpKind, result: &Result<String, String>) {
        match op {
            OpKind::Certificate | OpKind::RemotePort => self.encryption.done(op, result),
            OpKind::Concurrency => self.concurrency.answers.done(op, result),
            OpKind::Thresholds => self.thresholds.done(op, result),
            // Both sections offer what the admin token allows.
            OpKind::AdminToken => {
                self.thresholds.done(op, result);
                self.hub_tokens.done(op, result);
            }
            OpKind::HubTokenList | OpKind::HubTokens => self.hub_tokens.done(op, result),
            OpKind::Proxy => self.proxy.answers.done(op, result),
            OpKind::Metrics => self.metrics.answers.done(op, result),
            OpKind::AutoUpdate => self.auto_update.answers.done(op, result),
            OpKind::CredentialList | OpKind::Credentials => self.credentials.done(op, result),
            OpKind::Backup | OpKind::Restore => self.backup.answers.done(op, result),
            OpKind::LogLevel | OpKind::ExportLogs => {}
        }
    }

    /// The answers of the section that sends `kind` operations.
    fn answers(&self, kind: OpKind) -> Option<&Answers> {
        match kind {
            OpKind::Certificate | OpKind::RemotePort => Some(&self.encryption.answers),
            OpKind::Concurrency => Some(&self.concurrency.answers),
            OpKind::Thresholds | OpKind::AdminToken => Some(&self.thresholds.answers),
            OpKind::HubTokenList | OpKind::HubTokens => Some(&self.hub_tokens.answers),
            OpKind::Proxy => Some(&self.proxy.answers),
            OpKind::Metrics => Some(&self.metrics.answers),
            OpKind::AutoUpdate => Some(&self.auto_update.answers),
            OpKind::CredentialList | OpKind::Credentials => Some(&self.credentials.answers),
            OpKind::Backup | OpKind::Restore => Some(&self.backup.answers),
            OpKind::LogLevel | OpKind::ExportLogs => None,
        }
    }

    /// The last answer to a `kind` operation; `None` while it runs or if none was sent.
    pub fn answer(&self, kind: OpKind) -> Option<&Result<String, String>> {
        self.answers(kind).and_then(|a| a.answer(kind))
    }

    /// Whether a `kind` operation was sent (and its answer kept).
    pub fn asked(&self, kind: OpKind) -> bool {
        self.answers(kind).is_some_and(|a| a.contains(kind))
    }

    /// Takes in a finished background answer (dialogs, certificate checks).
    pub fn apply(&mut self, answer: Answer) {
        match answer {
            Answer::FilePicked(..) => self.backup.apply(answer),
            other => self.encryption.apply(other),
        }
    }

    /// Fills the fields from the node's settings once, and asks for what only the service
    /// can read (credential names, whether this node holds the hub's admin token). Called by
    /// `logic()` while the tab is open, never while drawing.
    pub(crate) fn refresh(&mut self, state: &State, outbox: &Outbox) {
        if !self.filled
            && let Some(settings) = &state.settings
        {
            self.filled = true;
            self.encryption.fill(settings);
            self.concurrency.fill(settings);
            self.proxy.fill(settings);
            self.metrics.fill(settings);
            self.auto_update.fill(settings);
        }
        self.thresholds.refresh(state, outbox);
        self.credentials.refresh(state, outbox);
        self.hub_tokens.refresh(outbox);
    }
}

/// Draws the Settings tab.
pub fn settings_ui(
    ui: &mut egui::Ui,
    page: &mut SettingsPage,
    state: &State,
    outbox: &Outbox,
    worker: &Worker,
) {
    ui.heading("Settings");
    widgets::section(ui, "Encryption and remote access", |ui| page.encryption.ui(ui, state, outbox, worker));
    widgets::section(ui, "Concurrency", |ui| page.concurrency.ui(ui, state, outbox));
    widgets::section(ui, "Thresholds", |ui| page.thresholds.ui(ui, state, outbox));
    widgets::section(ui, "Proxy", |ui| page.proxy.ui(ui, state, outbox));
    widgets::section(ui, "Metrics", |ui| page.metrics.ui(ui, state, outbox));
    widgets::section(ui, "Automatic updates", |ui| page.auto_update.ui(ui, state, outbox));
    widgets::section(ui, "Credentials", |ui| page.credentials.ui(ui, outbox));
    widgets::section(ui, "Hub tokens", |ui| page.hub_tokens.ui(ui, outbox));
    widgets::section(ui, "Backup and restore", |ui| page.backup.ui(ui, outbox, worker));
    widgets::section(ui, "Add a node", |ui| page.add_node.ui(ui, state, outbox));
}

/// A whole number in `min..=max`, or a sentence naming `what`.
fn number<T: TryFrom<u64>>(text: &str, min: u64, max: u64, what: &str) -> Result<T, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("{what} must be a whole number from {min} to {max}."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gui::ops::Op;
    use crate::gui::service::Request;
    use crate::gui::testing::{self, Alone, shows};
    use crate::gui::worker::FilePurpose;
    use std::path::PathBuf;

    #[test]
    fn each_answer_reaches_the_section_that_sent_it() {
        let mut page = SettingsPage::default();
        let sentence = |s: &str| Ok(s.to_owned());
        page.done(OpKind::Concurrency, &sentence("limit"));
        page.done(OpKind::Proxy, &sentence("proxy"));
        page.done(OpKind::RemotePort, &sentence("port"));
        page.done(OpKind::Backup, &Err("no room".to_owned()));
        page.done(OpKind::LogLevel, &sentence("not ours"));
        assert_eq!(page.concurrency.answers.answer(OpKind::Concurrency), Some(&sentence("limit")));
        assert_eq!(page.proxy.answers.answer(OpKind::Proxy), Some(&sentence("proxy")));
        assert_eq!(page.encryption.answers.answer(OpKind::RemotePort), Some(&sentence("port")));
        assert_eq!(page.answer(OpKind::Backup), Some(&Err("no room".to_owned())));
        assert!(!page.asked(OpKind::LogLevel), "the Diagnostics tab's answer was kept here");
        assert!(!page.asked(OpKind::Thresholds));

        page.apply(Answer::FilePicked(FilePurpose::Restore, Some(PathBuf::from("/b/n1.backup"))));
        page.apply(Answer::FilePicked(FilePurpose::LogExport, Some(PathBuf::from("/logs.zip"))));
        page.apply(Answer::CertificateFilePicked(Some(PathBuf::from("/c/node.pfx"))));
        assert_eq!(page.backup.restore.path, "/b/n1.backup");
        assert!(page.backup.backup.path.is_empty(), "another dialog's file landed in the backup form");
        assert_eq!(page.encryption.certificate.path, "/c/node.pfx");
    }

    #[test]
    fn the_fields_are_filled_once_and_the_service_is_asked_from_logic_not_while_drawing() {
        let mut state = testing::running();
        state.settings.as_mut().unwrap().concurrency_limit = Some(5);
        state.settings.as_mut().unwrap().proxy = Some("http://proxy.corp:3128".to_owned());
        let mut harness =
            testing::page(SettingsPage::default(), state, |ui, alone: &mut Alone<SettingsPage>| {
                settings_ui(ui, &mut alone.page, &alone.state, &alone.outbox, &alone.worker);
            });
        assert!(harness.state().outbox.is_empty(), "drawing the tab asked the service for something");
        assert!(shows(&harness, "Backup and restore") && shows(&harness, "Encryption and remote access"));

        let alone = harness.state_mut();
        alone.page.refresh(&alone.state, &alone.outbox);
        let asked = alone.outbox.drain();
        assert!(
            matches!(asked.as_slice(), [Request::Op(Op::CheckAdminToken), Request::Op(Op::ListCredentials)]),
            "{} requests",
            asked.len()
        );
        assert_eq!(
            (
                alone.page.concurrency.limit.as_str(),
                alone.page.proxy.proxy.as_str(),
                alone.page.encryption.port.as_str()
            ),
            ("5", "http://proxy.corp:3128", "8060")
        );
        // What is typed afterwards stays.
        alone.page.concurrency.limit = "7".to_owned();
        alone.page.refresh(&alone.state, &alone.outbox);
        assert_eq!(alone.page.concurrency.limit, "7");
        assert!(alone.outbox.is_empty(), "asked twice");
    }
}
