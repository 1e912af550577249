//! Runs the GUI's slow work off the UI thread: file dialogs and certificate checks. Each
//! command runs on its own short-lived thread and answers with one [`Event`], then asks egui
//! to repaint, so the window never polls. (The node service replaces this for node work.)

use eframe::egui;

use crate::cert::{self, Options, Report};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};

/// What the window asks for.
pub enum Command {
    /// Open the native file dialog to choose a certificate file.
    PickCertificateFile,
    /// Run the certificate checker on a file, trusting the roots in `roots` too.
    CheckCertificate { path: PathBuf, roots: Option<PathBuf>, options: Options },
}

/// What comes back, one per command.
pub enum Event {
    /// The dialog closed; `None` if the person cancelled (or no dialog is available).
    CertificateFilePicked(Option<PathBuf>),
    /// The checker's report, or the one-line reason the file can't be read.
    CertificateChecked(Result<Report, String>),
}

/// The GUI's handle to its background work.
pub struct Worker {
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    repaint: Option<egui::Context>,
}

impl Default for Worker {
    fn default() -> Self {
        let (events_tx, events_rx) = channel();
        Worker { events_tx, events_rx, repaint: None }
    }
}

impl Worker {
    /// Lets finished work wake the window up.
    pub fn set_repaint(&mut self, ctx: &egui::Context) {
        if self.repaint.is_none() {
            self.repaint = Some(ctx.clone());
        }
    }

    /// Starts `command` in the background.
    pub fn send(&self, command: Command) {
        let events = self.events_tx.clone();
        let repaint = self.repaint.clone();
        std::thread::spawn(move || {
            let event = match command {
                Command::PickCertificateFile => Event::CertificateFilePicked(
                    rfd::FileDialog::new()
                        .set_title("Choose a certificate")
                        .add_filter("Certificates", &["pem", "crt", "cer", "der", "pfx", "p12"])
                        .add_filter("All files", &["*"])
                        .pick_file(),
                ),
                Command::CheckCertificate { path, roots, options } => {
                    Event::CertificateChecked(check(&path, roots, options))
                }
            };
            // The window may have closed meanwhile; then nobody needs the answer.
            let _ = events.send(event);
            if let Some(ctx) = repaint {
                ctx.request_repaint();
            }
        });
    }

    /// The next finished event, if any; never blocks.
    pub fn try_recv(&self) -> Option<Event> {
        self.events_rx.try_recv().ok()
    }
}

fn check(path: &Path, roots: Option<PathBuf>, mut options: Options) -> Result<Report, String> {
    if let Some(roots) = roots {
        options.extra_roots = cert::read_roots(&roots).map_err(|e| format!("trusted root CA file: {e}"))?;
    }
    cert::check_file(path, &options).map_err(|e| e.to_string())
}
