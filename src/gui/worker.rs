//! Runs the GUI's slow work off the UI thread: file dialogs and certificate checks. Each
//! command runs on its own short-lived thread and answers with one [`Event`], then asks egui
//! to repaint, so the window never polls. (Node work goes to the service thread instead: [`super::service`].)

use eframe::egui;

use crate::cert::{self, Options, Report};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

/// What the window asks for.
pub enum Command {
    /// Open the native file dialog to choose a certificate file.
    PickCertificateFile,
    /// Run the certificate checker on a file, trusting the roots in `roots` too.
    CheckCertificate { path: PathBuf, roots: Option<PathBuf>, options: Options },
    /// Open the native dialog to choose a file to write (or, to restore, to read).
    PickFile(FilePurpose),
}

/// What a file dialog is for: it decides the dialog's kind, title, filter and suggested name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilePurpose {
    /// Where to write a node backup.
    Backup,
    /// The backup to restore from.
    Restore,
    /// Where to write the exported logs (a zip).
    LogExport,
    /// The PEM CA certificate of a hub with a private CA (the setup wizard).
    HubCa,
}

/// Which page asked, so the answer goes back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Wizard,
    Settings,
    Diagnostics,
    Checker,
}

/// What comes back: one answer per command, for the page that asked.
pub enum Event {
    For(Page, Answer),
}

/// The answer to one command.
pub enum Answer {
    /// The dialog closed; `None` if the person cancelled (or no dialog is available).
    CertificateFilePicked(Option<PathBuf>),
    /// The checker's report, or the one-line reason the file can't be read.
    CertificateChecked(Result<Report, String>),
    /// A file dialog closed; `None` if the person cancelled (or no dialog is available).
    FilePicked(FilePurpose, Option<PathBuf>),
}

/// The GUI's handle to its background work.
pub struct Worker {
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    repaint: Arc<Mutex<Option<egui::Context>>>,
}

impl Default for Worker {
    fn default() -> Self {
        let (events_tx, events_rx) = channel();
        Worker { events_tx, events_rx, repaint: Arc::default() }
    }
}

impl Worker {
    /// Lets finished work wake the window up.
    pub fn set_repaint(&self, ctx: &egui::Context) {
        if let Ok(mut repaint) = self.repaint.lock()
            && repaint.is_none()
        {
            *repaint = Some(ctx.clone());
        }
    }

    /// Starts `command` in the background.
    pub fn send(&self, page: Page, command: Command) {
        let events = self.events_tx.clone();
        let repaint = self.repaint.lock().ok().and_then(|r| r.clone());
        // Enough of the command to answer it if no thread can be started.
        let (checking, purpose) = match &command {
            Command::CheckCertificate { .. } => (true, None),
            Command::PickFile(purpose) => (false, Some(*purpose)),
            Command::PickCertificateFile => (false, None),
        };
        let wake = repaint.clone();
        let work = move || {
            let answer = match command {
                Command::PickCertificateFile => Answer::CertificateFilePicked(
                    rfd::FileDialog::new()
                        .set_title("Choose a certificate")
                        .add_filter("Certificates", &["pem", "crt", "cer", "der", "pfx", "p12"])
                        .add_filter("All files", &["*"])
                        .pick_file(),
                ),
                Command::CheckCertificate { path, roots, options } => {
                    Answer::CertificateChecked(check(&path, roots.as_deref(), options))
                }
                Command::PickFile(purpose) => Answer::FilePicked(purpose, pick_file(purpose)),
            };
            let event = Event::For(page, answer);
            // The window may have closed meanwhile; then nobody needs the answer.
            let _ = events.send(event);
            if let Some(ctx) = repaint {
                ctx.request_repaint();
            }
        };
        // Builder, not `thread::spawn`: that panics, here on the UI thread, when the system
        // has no thread to give; this answers at once instead.
        if let Err(e) = std::thread::Builder::new().name("gatehouse-worker".to_owned()).spawn(work) {
            // The page mustn't wait forever: a check says why; a dialog that never opened
            // counts as cancelled.
            let answer = match (checking, purpose) {
                (true, _) => Answer::CertificateChecked(Err(format!(
                    "the check couldn't start ({e}); close some programs and try again"
                ))),
                (false, Some(purpose)) => Answer::FilePicked(purpose, None),
                (false, None) => Answer::CertificateFilePicked(None),
            };
            let _ = self.events_tx.send(Event::For(page, answer));
            if let Some(ctx) = wake {
                ctx.request_repaint();
            }
        }
    }

    /// The next finished event, if any; never blocks.
    pub fn try_recv(&self) -> Option<Event> {
        self.events_rx.try_recv().ok()
    }
}

fn pick_file(purpose: FilePurpose) -> Option<PathBuf> {
    let dialog = rfd::FileDialog::new();
    match purpose {
        FilePurpose::Backup => dialog
            .set_title("Save the node backup")
            .set_file_name("gatehouse-node.backup")
            .add_filter("Gatehouse backups", &["backup"])
            .save_file(),
        FilePurpose::Restore => dialog
            .set_title("Choose a node backup")
            .add_filter("Gatehouse backups", &["backup"])
            .add_filter("All files", &["*"])
            .pick_file(),
        FilePurpose::HubCa => dialog
            .set_title("Choose the hub's CA certificate")
            .add_filter("PEM certificates", &["pem", "crt", "cer"])
            .add_filter("All files", &["*"])
            .pick_file(),
        FilePurpose::LogExport => dialog
            .set_title("Save the logs")
            .set_file_name("gatehouse-logs.zip")
            .add_filter("Zip archives", &["zip"])
            .save_file(),
    }
}

fn check(path: &Path, roots: Option<&Path>, mut options: Options) -> Result<Report, String> {
    options.extra_roots = super::service::read_roots(roots)?;
    cert::check_file(path, &options).map_err(|e| e.to_string())
}
