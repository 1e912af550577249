//! The Settings tab: encryption and remote access, concurrency, the gateway's thresholds, the
//! proxy, credentials, backup and restore. It draws from [`State`] and sends [`Op`]s; each
//! answer shows as a sentence under the section that asked, with a spinner until it comes.
//!
//! Nothing here reads files or the network: certificate checks and file dialogs go to the
//! [`Worker`], everything else to the service thread.

use eframe::egui;
use std::collections::HashMap;

use super::certificate::{CertificatePage, Outcome as CheckOutcome, report_ui, text_field_ui};
use super::ops::{Op, OpKind, Thresholds};
use super::outbox::Outbox;
use super::service::{CertificateChoice, Request, ServiceState};
use super::state::State;
use super::worker::{Answer, Command, FilePurpose, Page, Worker};
use crate::cert::Verdict;
use crate::node::metrics::default_concurrency;
use crate::protocol::{GatewaySettings, Policy};
use std::path::PathBuf;

/// Where an operation stands, as its section shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Sent; no answer yet.
    Waiting,
    /// The operation's sentence (`Err`: why nothing changed).
    Done(Result<String, String>),
}

/// Where each operation a tab sent stands, by kind.
#[derive(Debug, Default)]
pub struct Answers(HashMap<OpKind, Reply>);

impl Answers {
    /// Sends `op` and marks its kind as waiting.
    pub(crate) fn send(&mut self, service: &Outbox, op: Op) {
        self.0.insert(op.kind(), Reply::Waiting);
        service.send(Request::Op(op));
    }

    pub(crate) fn waiting(&self, kind: OpKind) -> bool {
        self.0.get(&kind) == Some(&Reply::Waiting)
    }

    /// The last answer to a `kind` operation; `None` while it runs or if none was sent.
    pub fn answer(&self, kind: OpKind) -> Option<&Result<String, String>> {
        match self.0.get(&kind) {
            Some(Reply::Done(result)) => Some(result),
            _ => None,
        }
    }

    /// Whether a `kind` operation was ever sent (and its answer kept).
    pub fn contains(&self, kind: OpKind) -> bool {
        self.0.contains_key(&kind)
    }

    pub(crate) fn get(&self, kind: OpKind) -> Option<&Reply> {
        self.0.get(&kind)
    }

    pub(crate) fn done(&mut self, kind: OpKind, result: &Result<String, String>) {
        self.0.insert(kind, Reply::Done(result.clone()));
    }

    pub(crate) fn forget(&mut self, kind: OpKind) {
        self.0.remove(&kind);
    }
}

/// The thresholds as typed (checked before sending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdForm {
    pub policy: Policy,
    pub cpu_percent: String,
    pub memory_percent: String,
    pub aggregation_minutes: String,
    pub queue_timeout_seconds: String,
    pub bandwidth_limit_mbps: String,
}

impl ThresholdForm {
    fn from_settings(s: &GatewaySettings) -> Self {
        ThresholdForm {
            policy: s.policy,
            cpu_percent: s.cpu_threshold.to_string(),
            memory_percent: s.memory_threshold.to_string(),
            aggregation_minutes: s.aggregation_minutes.to_string(),
            queue_timeout_seconds: s.queue_timeout_seconds.to_string(),
            bandwidth_limit_mbps: s.bandwidth_limit_mbps.to_string(),
        }
    }

    /// The values, or the first problem as a sentence.
    fn parse(&self) -> Result<Thresholds, String> {
        Ok(Thresholds {
            policy: self.policy,
            cpu_percent: number(&self.cpu_percent, 0, 100, "The CPU threshold")?,
            memory_percent: number(&self.memory_percent, 0, 100, "The memory threshold")?,
            aggregation_minutes: number(&self.aggregation_minutes, 1, 60, "The aggregation time")?,
            queue_timeout_seconds: number(&self.queue_timeout_seconds, 1, 3600, "The queue timeout")?,
            bandwidth_limit_mbps: number(&self.bandwidth_limit_mbps, 0, 1_000_000, "The bandwidth limit")?,
        })
    }
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

/// The backup form. Passwords live only here, in memory, and are cleared once sent.
#[derive(Default)]
pub struct BackupForm {
    pub path: String,
    pub password: String,
    pub again: String,
}

/// The restore form.
#[derive(Default)]
pub struct RestoreForm {
    pub path: String,
    pub password: String,
}

/// The tab's own state: what is being typed, and the last answers.
pub struct SettingsPage {
    /// The "Change certificate" form's inputs and the checker's report.
    pub certificate: CertificatePage,
    pub changing_certificate: bool,
    /// The shown report was made for the inputs as they are now: editing the file, the
    /// password or the roots clears it, so a report never vouches for another file. (A flag,
    /// not a copy of the inputs: a copy would keep the PFX password after the field is cleared.)
    checked: bool,
    pub port: String,
    pub concurrency: String,
    /// `None` until the first status brings the gateway's settings.
    pub thresholds: Option<ThresholdForm>,
    /// Whether this node holds the hub's admin token (`None`: not asked yet).
    pub admin: Option<bool>,
    pub proxy: String,
    /// The credential names as last listed, and the digest of the set they were listed from.
    pub credentials: Option<Vec<String>>,
    listed_digest: Option<String>,
    pub credential_name: String,
    pub credential_value: String,
    /// A credential whose deletion waits for a second click.
    pub confirm_delete: Option<String>,
    pub backup: BackupForm,
    pub restore: RestoreForm,
    /// The last answer of each kind of operation, or that it is under way.
    pub answers: Answers,
    /// The form fields were filled from the node's settings.
    filled: bool,
    /// This machine's logical CPUs, read once.
    cores: usize,
}

impl Default for SettingsPage {
    fn default() -> Self {
        SettingsPage {
            certificate: CertificatePage::default(),
            changing_certificate: false,
            checked: false,
            port: String::new(),
            concurrency: String::new(),
            thresholds: None,
            admin: None,
            proxy: String::new(),
            credentials: None,
            listed_digest: None,
            credential_name: String::new(),
            credential_value: String::new(),
            confirm_delete: None,
            backup: BackupForm::default(),
            restore: RestoreForm::default(),
            answers: Answers::default(),
            filled: false,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        }
    }
}

impl SettingsPage {
    /// Takes in the answer to an operation (answers for other tabs are ignored).
    pub fn done(&mut self, op: OpKind, result: &Result<String, String>) {
        match op {
            OpKind::CredentialList => {
                // An empty list after an error, so the list isn't asked for again every frame.
                self.credentials =
                    Some(result.iter().flat_map(|names| names.lines()).map(str::to_owned).collect());
                if result.is_ok() {
                    self.answers.forget(op);
                    return;
                }
            }
            OpKind::Credentials => {
                // List again, whatever happened: the list shows what is really stored.
                self.credentials = None;
            }
            OpKind::AdminToken => {
                self.admin = Some(result.is_ok());
                self.answers.forget(op);
                return;
            }
            OpKind::Certificate if result.is_ok() => {
                self.changing_certificate = false;
                self.certificate = CertificatePage::default();
                self.checked = false;
            }
            OpKind::LogLevel | OpKind::ExportLogs => return,
            _ => {}
        }
        self.answers.done(op, result);
    }

    /// Takes in a finished background answer (dialogs, certificate checks).
    pub fn apply(&mut self, answer: Answer) {
        match answer {
            Answer::FilePicked(FilePurpose::Backup, Some(path)) => {
                self.backup.path = path.display().to_string();
            }
            Answer::FilePicked(FilePurpose::Restore, Some(path)) => {
                self.restore.path = path.display().to_string();
            }
            Answer::FilePicked(..) => {}
            other => {
                if matches!(other, Answer::CertificateFilePicked(Some(_))) {
                    self.checked = false;
                }
                self.certificate.apply(other);
            }
        }
    }

    /// Fills the fields from the node's settings once, and asks for what only the service
    /// can read (credential names, whether this node holds the hub's admin token). Called by
    /// `logic()` while the tab is open, never while drawing.
    pub(crate) fn refresh(&mut self, state: &State, service: &Outbox) {
        if !self.filled
            && let Some(settings) = &state.settings
        {
            self.filled = true;
            self.port = settings.peer_port.to_string();
            self.concurrency = settings.concurrency_limit.map(|l| l.to_string()).unwrap_or_default();
            self.proxy = settings.proxy.clone().unwrap_or_default();
        }
        if self.thresholds.is_none()
            && let Some(status) = &state.status
            && status.last_heartbeat.is_some()
        {
            self.thresholds = Some(ThresholdForm::from_settings(&status.settings));
        }
        if self.admin.is_none() && !self.answers.waiting(OpKind::AdminToken) {
            self.answers.send(service, Op::CheckAdminToken);
        }
        // Credentials synced from a peer change the digest: list them again then too.
        let digest = state.status.as_ref().and_then(|s| s.metrics.credential_digest.clone());
        if digest.is_some() && digest != self.listed_digest {
            self.listed_digest = digest;
            self.credentials = None;
        }
        if self.credentials.is_none() && !self.answers.waiting(OpKind::CredentialList) {
            self.answers.send(service, Op::ListCredentials);
        }
    }
}

/// Draws the Settings tab.
pub fn settings_ui(
    ui: &mut egui::Ui,
    page: &mut SettingsPage,
    state: &State,
    service: &Outbox,
    worker: &Worker,
) {
    ui.heading("Settings");
    section_ui(ui, "Encryption and remote access", |ui| encryption_ui(ui, page, state, service, worker));
    section_ui(ui, "Concurrency", |ui| concurrency_ui(ui, page, state, service));
    section_ui(ui, "Thresholds", |ui| thresholds_ui(ui, page, state, service));
    section_ui(ui, "Proxy", |ui| proxy_ui(ui, page, state, service));
    section_ui(ui, "Credentials", |ui| credentials_ui(ui, page, service));
    section_ui(ui, "Backup and restore", |ui| backup_ui(ui, page, service, worker));
}

fn section_ui(ui: &mut egui::Ui, title: &str, body: impl FnOnce(&mut egui::Ui)) {
    ui.add_space(12.0);
    ui.separator();
    ui.heading(title);
    ui.add_space(4.0);
    body(ui);
}

/// The answer to the last `kind` operation: a spinner while waiting, then its sentence.
pub(crate) fn answer_ui(ui: &mut egui::Ui, answer: Option<&Reply>) {
    match answer {
        None => {}
        Some(Reply::Waiting) => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Working…");
            });
        }
        Some(Reply::Done(Ok(sentence))) => {
            ui.add(egui::Label::new(sentence).wrap());
        }
        Some(Reply::Done(Err(sentence))) => {
            ui.add(egui::Label::new(egui::RichText::new(sentence).color(ui.visuals().error_fg_color)).wrap());
        }
    }
}

/// A problem with what is being typed, shown under the field.
fn problem_ui(ui: &mut egui::Ui, problem: &str) {
    ui.colored_label(ui.visuals().error_fg_color, problem);
}

fn encryption_ui(
    ui: &mut egui::Ui,
    page: &mut SettingsPage,
    state: &State,
    service: &Outbox,
    worker: &Worker,
) {
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
            ui.label("Encryption: off. Nodes talk to each other over plain TCP (they still authenticate).");
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
    ui.add(
        egui::Label::new(
            "The hub accepts a change of encryption only while the gateway has a single node: with more, \
             every node must use the same certificate, and a node that differs is made Inactive.",
        )
        .wrap(),
    );
    ui.add_space(4.0);
    let busy = page.answers.waiting(OpKind::Certificate);
    ui.horizontal(|ui| {
        if ui.add_enabled(!busy, egui::Button::new("Change certificate…")).clicked() {
            page.changing_certificate = !page.changing_certificate;
            if !page.changing_certificate {
                // Closing the form abandons it: the password isn't kept for later.
                page.certificate.password.clear();
                page.checked = false;
            }
        }
        let encrypted = !matches!(thumbprint, Some(None));
        if ui.add_enabled(!busy && encrypted, egui::Button::new("Turn off encryption")).clicked() {
            page.answers.send(service, Op::DisableEncryption);
        }
    });
    if page.changing_certificate {
        change_certificate_ui(ui, page, state, service, worker);
    }
    answer_ui(ui, page.answers.get(OpKind::Certificate));

    ui.add_space(6.0);
    let current = state.settings.as_ref().map(|s| s.peer_port);
    let port = number::<u16>(&page.port, 1, 65_535, "The port");
    egui::Grid::new("remote_port").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
        let label = ui.label("Remote access port");
        ui.add_sized([120.0, 22.0], egui::TextEdit::singleline(&mut page.port)).labelled_by(label.id);
        ui.end_row();
    });
    if let Err(problem) = &port {
        problem_ui(ui, problem);
    }
    let changed = port.as_ref().is_ok_and(|p| Some(*p) != current);
    let ready = changed && !page.answers.waiting(OpKind::RemotePort) && !busy;
    if ui.add_enabled(ready, egui::Button::new("Change port")).clicked()
        && let Ok(port) = port
    {
        page.answers.send(service, Op::SetRemoteAccess { port, certificate: None });
    }
    answer_ui(ui, page.answers.get(OpKind::RemotePort));
}

fn change_certificate_ui(
    ui: &mut egui::Ui,
    page: &mut SettingsPage,
    state: &State,
    service: &Outbox,
    worker: &Worker,
) {
    ui.group(|ui| {
        ui.label("Choose a PEM or PFX file with the certificate and its private key; it is checked before use.");
        let edited = egui::Grid::new("settings_certificate_inputs").num_columns(3).spacing([8.0, 6.0]).show(ui, |ui| {
            let path = text_field_ui(ui, "Certificate file", &mut page.certificate.path, "/path/to/node.pfx", false);
            if ui.button("Browse…").clicked() {
                worker.send(Page::Settings, Command::PickCertificateFile);
            }
            ui.end_row();
            let password = text_field_ui(ui, "PFX password", &mut page.certificate.password, "", true);
            ui.end_row();
            let roots = text_field_ui(ui, "Trusted root CA (optional)", &mut page.certificate.roots, "PEM file of your own root CA", false);
            ui.end_row();
            path.changed() || password.changed() || roots.changed()
        });
        if edited.inner {
            page.checked = false;
        }
        ui.horizontal(|ui| {
            let ready = !page.certificate.path.trim().is_empty() && !page.certificate.checking;
            if ui.add_enabled(ready, egui::Button::new("Check certificate")).clicked() {
                page.certificate.checking = true;
                page.certificate.outcome = None;
                page.checked = true;
                worker.send(Page::Settings, page.certificate.check_command());
            }
            if page.certificate.checking {
                ui.spinner();
                ui.label("Checking…");
            }
        });
        let current = page.checked;
        let usable = match &page.certificate.outcome {
            Some(CheckOutcome::Report(report)) if current => {
                report_ui(ui, report);
                report.verdict != Verdict::Rejected
            }
            Some(CheckOutcome::Unreadable(reason)) if current => {
                problem_ui(ui, &format!("Can't read the file: {reason}"));
                false
            }
            Some(_) => {
                ui.label("The file or password changed since the check: check it again.");
                false
            }
            None => false,
        };
        if matches!(&page.certificate.outcome, Some(CheckOutcome::Report(r)) if current && r.verdict == Verdict::Rejected) {
            problem_ui(ui, "The checker rejects this certificate: fix what the report marks as failed.");
        }
        let port = state.settings.as_ref().map(|s| s.peer_port);
        let ready = usable && port.is_some() && !page.answers.waiting(OpKind::Certificate);
        if ui.add_enabled(ready, egui::Button::new("Use this certificate")).clicked()
            && let Some(port) = port
        {
            let non_empty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
            // The password leaves the field with the request, whatever the answer: a failed
            // change asks for it (and a check) again.
            let password = Some(std::mem::take(&mut page.certificate.password)).filter(|p| !p.is_empty());
            let certificate = CertificateChoice {
                path: PathBuf::from(page.certificate.path.trim()),
                password,
                roots: non_empty(&page.certificate.roots).map(PathBuf::from),
            };
            page.checked = false;
            page.certificate.outcome = None;
            page.answers.send(service, Op::SetRemoteAccess { port, certificate: Some(certificate) });
        }
    });
}

fn concurrency_ui(ui: &mut egui::Ui, page: &mut SettingsPage, state: &State, service: &Outbox) {
    let settings = state.settings.as_ref();
    let status = state.status.as_ref().filter(|s| s.metrics.runs_limit > 0);
    match (status, settings.and_then(|s| s.concurrency_limit)) {
        (Some(status), Some(_)) => {
            ui.label(format!("Current limit: {} runs at once (set by hand).", status.metrics.runs_limit))
        }
        (Some(status), None) => {
            ui.label(format!("Current limit: {} runs at once (the default).", status.metrics.runs_limit))
        }
        (None, Some(limit)) => ui.label(format!("Limit: {limit} runs at once (set by hand).")),
        (None, None) => ui.label("Limit: the default."),
    };
    let memory = state.status.as_ref().map(|s| s.metrics.total_memory_bytes).filter(|&m| m > 0);
    match memory {
        Some(memory) => ui.label(format!(
            "Default: max(2, min(4 × {} cores, 2 × {} GiB RAM)) = {} on this machine.",
            page.cores,
            memory >> 30,
            default_concurrency(page.cores, memory)
        )),
        None => ui.label(format!("Default: max(2, min(4 × {} cores, 2 × GiB RAM)).", page.cores)),
    };
    let limit = if page.concurrency.trim().is_empty() {
        Ok(None)
    } else {
        number::<u32>(&page.concurrency, 1, 10_000, "The limit").map(Some)
    };
    egui::Grid::new("concurrency").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
        let label = ui.label("Concurrency limit");
        ui.add_sized([120.0, 22.0], egui::TextEdit::singleline(&mut page.concurrency).hint_text("default"))
            .labelled_by(label.id);
        ui.end_row();
    });
    if let Err(problem) = &limit {
        problem_ui(ui, problem);
    }
    let busy = page.answers.waiting(OpKind::Concurrency);
    ui.horizontal(|ui| {
        if ui.add_enabled(!busy && matches!(limit, Ok(Some(_))), egui::Button::new("Set limit")).clicked()
            && let Ok(limit) = limit
        {
            page.answers.send(service, Op::SetConcurrency(limit));
        }
        if ui.add_enabled(!busy, egui::Button::new("Use default")).clicked() {
            page.concurrency.clear();
            page.answers.send(service, Op::SetConcurrency(None));
        }
    });
    // The window restarts only a service it runs itself.
    ui.label(match state.service {
        ServiceState::Running => "The service restarts to apply a new limit; runs under way finish first.",
        ServiceState::Attached { .. } => "A new limit applies once gatehouse node run is restarted.",
        _ => "A new limit applies when the node service next starts.",
    });
    answer_ui(ui, page.answers.get(OpKind::Concurrency));
}

fn thresholds_ui(ui: &mut egui::Ui, page: &mut SettingsPage, state: &State, service: &Outbox) {
    ui.add(
        egui::Label::new(
            "The gateway's dispatcher skips a node above these limits (0 turns a limit off), averaged over \
             the aggregation time; a run that finds no node waits up to the queue timeout, then fails. \
             The bandwidth limit is shared by the nodes copying at the time.",
        )
        .wrap(),
    );
    let Some(status) = state.status.as_ref().filter(|s| s.last_heartbeat.is_some()) else {
        ui.label("Shown once the node service reaches the hub.");
        return;
    };
    if page.admin == Some(true) {
        let Some(form) = page.thresholds.as_mut() else { return };
        egui::Grid::new("thresholds").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
            small_field_ui(ui, "CPU threshold (%)", &mut form.cpu_percent);
            small_field_ui(ui, "Memory threshold (%)", &mut form.memory_percent);
            small_field_ui(ui, "Aggregation (minutes)", &mut form.aggregation_minutes);
            small_field_ui(ui, "Queue timeout (seconds)", &mut form.queue_timeout_seconds);
            small_field_ui(ui, "Bandwidth limit (MB/s, 0 = off)", &mut form.bandwidth_limit_mbps);
            let label = ui.label("Policy");
            egui::ComboBox::from_id_salt("policy")
                .selected_text(policy_name(form.policy))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut form.policy, Policy::Primary, policy_name(Policy::Primary));
                    ui.selectable_value(
                        &mut form.policy,
                        Policy::Distribute,
                        policy_name(Policy::Distribute),
                    );
                })
                .response
                .labelled_by(label.id);
            ui.end_row();
        });
        let parsed = form.parse();
        if let Err(problem) = &parsed {
            problem_ui(ui, problem);
        }
        let ready = parsed.is_ok() && !page.answers.waiting(OpKind::Thresholds);
        ui.horizontal(|ui| {
            if ui.add_enabled(ready, egui::Button::new("Save thresholds")).clicked()
                && let Ok(thresholds) = parsed
            {
                page.answers.send(service, Op::SetThresholds(thresholds));
            }
            if ui.button("Show the gateway's values").clicked() {
                page.thresholds = Some(ThresholdForm::from_settings(&status.settings));
            }
        });
        answer_ui(ui, page.answers.get(OpKind::Thresholds));
    } else {
        let s = &status.settings;
        let off = |p: u8| if p == 0 { "off".to_owned() } else { format!("{p} %") };
        egui::Grid::new("thresholds").num_columns(2).spacing([8.0, 4.0]).show(ui, |ui| {
            for (name, value) in [
                ("CPU threshold", off(s.cpu_threshold)),
                ("Memory threshold", off(s.memory_threshold)),
                ("Aggregation", format!("{} minutes", s.aggregation_minutes)),
                ("Queue timeout", format!("{} seconds", s.queue_timeout_seconds)),
                (
                    "Bandwidth limit",
                    if s.bandwidth_limit_mbps == 0 {
                        "off".to_owned()
                    } else {
                        format!("{} MB/s", s.bandwidth_limit_mbps)
                    },
                ),
                ("Policy", policy_name(s.policy).to_owned()),
            ] {
                ui.label(name);
                ui.label(value);
                ui.end_row();
            }
        });
        let gateway = state.settings.as_ref().map_or("GATEWAY", |s| s.gateway_name.as_str());
        let hub = state.settings.as_ref().map_or("URL", |s| s.hub_url.as_str());
        ui.label(
            "Only the hub's admin can change these, on any machine, with the admin token in \
             GATEHOUSE_ADMIN_TOKEN:",
        );
        let command = format!(
            "gatehouse hub gateway set {gateway} --hub {hub} --cpu-threshold P --memory-threshold P \
             --aggregation-minutes M --queue-timeout-seconds S --policy primary|distribute"
        );
        // Selectable, so it can be copied into a terminal.
        ui.add(egui::Label::new(egui::RichText::new(command).monospace()).wrap().selectable(true));
    }
}

fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::Primary => "primary (first available node)",
        Policy::Distribute => "distribute (random available node)",
    }
}

fn small_field_ui(ui: &mut egui::Ui, label: &str, value: &mut String) {
    let label = ui.label(label);
    ui.add_sized([120.0, 22.0], egui::TextEdit::singleline(value)).labelled_by(label.id);
    ui.end_row();
}

fn proxy_ui(ui: &mut egui::Ui, page: &mut SettingsPage, state: &State, service: &Outbox) {
    let current = state.settings.as_ref().and_then(|s| s.proxy.clone());
    ui.label(match &current {
        Some(proxy) => format!("The node reaches the hub through {proxy}."),
        None => "The node reaches the hub directly.".to_owned(),
    });
    egui::Grid::new("proxy").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
        text_field_ui(ui, "Proxy URL", &mut page.proxy, "http://proxy.corp:3128 (empty: none)", false);
        ui.end_row();
    });
    let typed = Some(page.proxy.trim().to_owned()).filter(|p| !p.is_empty());
    let problem = typed.as_deref().and_then(|p| crate::node::ops::check_proxy(p).err());
    if let Some(problem) = &problem {
        problem_ui(ui, &format!("{problem}."));
    }
    let ready = problem.is_none() && typed != current && !page.answers.waiting(OpKind::Proxy);
    if ui.add_enabled(ready, egui::Button::new("Save proxy")).clicked() {
        page.answers.send(service, Op::SetProxy(typed));
    }
    answer_ui(ui, page.answers.get(OpKind::Proxy));
}

fn credentials_ui(ui: &mut egui::Ui, page: &mut SettingsPage, service: &Outbox) {
    ui.add(
        egui::Label::new(
            "Passwords and keys for data stores. They stay sealed on the gateway's nodes, reach the other \
             nodes over the peer channel, and never go to the hub. Only names are shown.",
        )
        .wrap(),
    );
    answer_ui(ui, page.answers.get(OpKind::CredentialList));
    match &page.credentials {
        None => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Reading the credentials…");
            });
        }
        // After a failed listing the list is empty for want of an answer, not of credentials:
        // the error above says why.
        Some(_) if matches!(page.answers.get(OpKind::CredentialList), Some(Reply::Done(Err(_)))) => {}
        Some(names) if names.is_empty() => {
            ui.label("No credentials yet.");
        }
        Some(names) => {
            let names = names.clone();
            let busy = page.answers.waiting(OpKind::Credentials);
            egui::Grid::new("credentials").num_columns(2).striped(true).spacing([12.0, 4.0]).show(ui, |ui| {
                for name in &names {
                    ui.monospace(name);
                    if page.confirm_delete.as_ref() == Some(name) {
                        ui.horizontal(|ui| {
                            if ui
                                .add_enabled(!busy, egui::Button::new(format!("Yes, delete {name}")))
                                .clicked()
                            {
                                page.confirm_delete = None;
                                page.answers.send(service, Op::DeleteCredential(name.clone()));
                            }
                            if ui.button("Cancel").clicked() {
                                page.confirm_delete = None;
                            }
                        });
                    } else if ui.add_enabled(!busy, egui::Button::new(format!("Delete {name}"))).clicked() {
                        page.confirm_delete = Some(name.clone());
                    }
                    ui.end_row();
                }
            });
        }
    }
    ui.add_space(4.0);
    egui::Grid::new("credential_inputs").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
        text_field_ui(ui, "Credential name", &mut page.credential_name, "warehouse-db", false);
        ui.end_row();
        text_field_ui(ui, "Credential value", &mut page.credential_value, "", true);
        ui.end_row();
    });
    let name = page.credential_name.trim().to_owned();
    let name_ok = (1..=128).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name.is_empty() && !name_ok {
        problem_ui(ui, "Names are 1 to 128 letters, digits, '-', '_' or '.'.");
    }
    let ready = name_ok && !page.credential_value.is_empty() && !page.answers.waiting(OpKind::Credentials);
    if ui.add_enabled(ready, egui::Button::new("Save credential")).clicked() {
        let value = std::mem::take(&mut page.credential_value);
        page.answers.send(service, Op::SetCredential { name, value });
    }
    answer_ui(ui, page.answers.get(OpKind::Credentials));
}

fn backup_ui(ui: &mut egui::Ui, page: &mut SettingsPage, service: &Outbox, worker: &Worker) {
    ui.add(
        egui::Label::new(
            "A backup holds this node's registration, tokens, credentials and certificate, sealed with a \
             password: keep both, and a replacement machine can take this node's place without registering.",
        )
        .wrap(),
    );
    egui::Grid::new("backup").num_columns(3).spacing([8.0, 6.0]).show(ui, |ui| {
        text_field_ui(ui, "Backup file", &mut page.backup.path, "/path/to/node.backup", false);
        if ui.button("Browse…").clicked() {
            worker.send(Page::Settings, Command::PickFile(FilePurpose::Backup));
        }
        ui.end_row();
        text_field_ui(ui, "Backup password", &mut page.backup.password, "at least 8 characters", true);
        ui.end_row();
        text_field_ui(ui, "Repeat the password", &mut page.backup.again, "", true);
        ui.end_row();
    });
    let form = &page.backup;
    let problem = if form.password.is_empty() {
        None
    } else if form.password.chars().count() < 8 {
        Some("The password is too short; use at least 8 characters.")
    } else if !form.again.is_empty() && form.again != form.password {
        Some("The passwords don't match.")
    } else {
        None
    };
    if let Some(problem) = problem {
        problem_ui(ui, problem);
    }
    let ready = !form.path.trim().is_empty()
        && form.password.chars().count() >= 8
        && form.again == form.password
        && !page.answers.waiting(OpKind::Backup);
    if ui.add_enabled(ready, egui::Button::new("Back up")).clicked() {
        let path = PathBuf::from(page.backup.path.trim());
        let password = std::mem::take(&mut page.backup.password);
        page.backup.again.clear();
        page.answers.send(service, Op::Backup { path, password });
    }
    answer_ui(ui, page.answers.get(OpKind::Backup));

    ui.add_space(8.0);
    ui.add(
        egui::Label::new(
            "Restoring puts a backed-up node onto a machine that isn't registered yet. This machine is \
             registered, so a restore here is refused: unregister it first (gatehouse node unregister).",
        )
        .wrap(),
    );
    restore_ui(ui, page, service, worker);
}

/// The restore form; the wizard of an unregistered machine may show it too.
pub(crate) fn restore_ui(ui: &mut egui::Ui, page: &mut SettingsPage, service: &Outbox, worker: &Worker) {
    egui::Grid::new("restore").num_columns(3).spacing([8.0, 6.0]).show(ui, |ui| {
        text_field_ui(ui, "Backup to restore", &mut page.restore.path, "/path/to/node.backup", false);
        if ui.button("Browse…").clicked() {
            worker.send(Page::Settings, Command::PickFile(FilePurpose::Restore));
        }
        ui.end_row();
        text_field_ui(ui, "Password of the backup", &mut page.restore.password, "", true);
        ui.end_row();
    });
    let ready = !page.restore.path.trim().is_empty()
        && !page.restore.password.is_empty()
        && !page.answers.waiting(OpKind::Restore);
    if ui.add_enabled(ready, egui::Button::new("Restore")).clicked() {
        let path = PathBuf::from(page.restore.path.trim());
        let password = std::mem::take(&mut page.restore.password);
        page.answers.send(service, Op::Restore { path, password });
    }
    answer_ui(ui, page.answers.get(OpKind::Restore));
}
