//! `gatehouse node update`: the running node service replaces its own binary with the
//! release the hub offers, one node of a gateway at a time, and goes back to the previous
//! binary if the new one doesn't come up healthy.
//!
//! The steps, all in the service (`node run`) except the last:
//! 1. asked through the control socket, the node asks the hub for its gateway's update slot
//!    with every heartbeat (`update_to`); another node updating, it waits its turn;
//! 2. granted, it takes no new runs and lets its running ones finish ([`DRAIN_TIMEOUT`] at
//!    most: the hub re-queues what is left, and copies resume from their checkpoints), while
//!    its heartbeats say `upgrading`, which the hub shows as Upgrading with both versions;
//! 3. it checks the release's signature against the keys the hub trusts, downloads the file
//!    (node token), checks its length, SHA-256 and signature again, and installs it in place
//!    of its binary in one rename, the previous binary kept beside it as `NAME.previous` —
//!    or, where the binary can't be replaced (the package's systemd unit: a read-only
//!    /usr/bin; a binary another user owns), **staged** in the data dir as
//!    `releases/gatehouse-VERSION`, the package's binary left as it is;
//! 4. it writes `update.json` in the data dir, starts a **watchdog** from the previous binary
//!    (`gatehouse node update-watchdog`, its own process group), stops its service and execs
//!    the new binary in the same process (same pid, so a supervisor sees no exit);
//! 5. the watchdog waits up to [`HEALTH_DEADLINE`] for the new service to answer on the
//!    control socket with the new version and a heartbeat the hub accepted. If it doesn't —
//!    the new binary exits at once, hangs, or reports another version — the watchdog stops
//!    it, moves the previous binary back (one rename) and starts `node run` from it.
//!
//! The outcome is in `update.json` (`node status` shows it); the hub frees the gateway's slot
//! when the node's heartbeats stop asking for it, whichever binary sends them.
//!
//! A staged release that came up healthy is named in `releases/current.json`: `node run`
//! started from an older binary (systemd's `ExecStart=/usr/bin/gatehouse`) execs it first
//! ([`staged_start`]), until a package newer than it is installed. Under a supervisor that
//! restarts the service when it fails (systemd's `Restart=on-failure`) the watchdog doesn't
//! start the previous binary itself (the supervisor would stop it with the failed service's
//! processes): it records the rollback and kills the new one, the supervisor starts its
//! binary again, and that binary, finding no healthy release named, runs as it is; a new
//! binary that died before the watchdog judged it is rolled back the same way, by the next
//! start finding the update still `restarting` under another pid.

use super::Shared;
use super::control::{ControlClient, ControlEvent};
use super::store::Store;
use super::worker::Worker;
use crate::protocol::UpdateOffer;
use crate::release::{self, PublicKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a granted update waits for the node's running runs to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the new binary has to come up healthy before it is rolled back.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(60);
/// The record of the last update in the data dir.
pub const RECORD_FILE: &str = "update.json";
/// Where releases are staged in the data dir when the binary can't be replaced in place.
const RELEASES_DIR: &str = "releases";
/// How often the watchdog looks.
const POLL: Duration = Duration::from_millis(250);

/// Why an update can't be done, as sentences.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(
        "this node runs inside the Configuration Manager window, which can't replace its own binary; close the window, start the node service with `gatehouse node start`, then update"
    )]
    InWindow,
    #[error(
        "no update available: the hub offers no release newer than {version} for {platform}; publish one with `gatehouse hub release publish`"
    )]
    NothingOffered { version: String, platform: String },
    #[error("an update to {0} is under way already")]
    Busy(String),
    #[error(
        "can't replace {exe}: {reason}; run the node as the user that owns its binary, or install the update by hand"
    )]
    NotWritable { exe: String, reason: String },
    #[error("release {version}: {reason}")]
    Release { version: String, reason: String },
    #[error("no update is under way here ({0} is missing or unreadable)")]
    NoRecord(String),
    #[error("{0}")]
    Io(String),
}

/// Who replaces this node's binary with a newer release, as the running service says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum SelfUpdate {
    /// The service itself: `node update`, or the automatic update window.
    Service,
    /// Nobody while it runs inside the Configuration Manager window (which can't replace its
    /// own binary); the same data dir run by `node run` can.
    Window,
}

/// What became of an update, as `update.json` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    /// The new binary is installed and the node is restarting into it; the watchdog decides.
    Restarting,
    /// The new binary came up healthy.
    Installed,
    /// The new binary didn't come up healthy; the previous one is back.
    RolledBack { reason: String },
    /// Nothing was installed.
    Failed { reason: String },
}

/// `update.json`: the last update of this data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub from: String,
    pub to: String,
    /// The binary that was replaced, and where the previous one is kept.
    pub exe: PathBuf,
    pub previous: PathBuf,
    /// The process that restarts into the new binary.
    pub pid: u32,
    /// Milliseconds since the Unix epoch when the update began.
    pub started_ms: u64,
    /// `exe` is a release staged in the data dir (the binary that ran is left as it is).
    #[serde(default)]
    pub staged: bool,
    /// A supervisor (systemd) restarts the service when it fails: a rollback is its restart.
    #[serde(default)]
    pub supervised: bool,
    /// The SHA-256 of the new binary.
    #[serde(default)]
    pub sha256: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (from, to) = (&self.from, &self.to);
        match &self.outcome {
            Outcome::Restarting => write!(f, "updating from {from} to {to}: restarting into it"),
            Outcome::Installed => write!(f, "updated from {from} to {to}"),
            Outcome::RolledBack { reason } => {
                write!(
                    f,
                    "the update from {from} to {to} was rolled back ({reason}); the node runs {from} again"
                )
            }
            Outcome::Failed { reason } => {
                write!(f, "the update from {from} to {to} failed ({reason}); nothing changed")
            }
        }
    }
}

/// The last update's record, if any.
pub fn last_record(store: &Store) -> Option<Record> {
    std::fs::read(store.dir().join(RECORD_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

fn write_record(store: &Store, record: &Record) -> Result<(), UpdateError> {
    let json = serde_json::to_vec_pretty(record).map_err(|e| UpdateError::Io(e.to_string()))?;
    let path = store.dir().join(RECORD_FILE);
    crate::machine::write_atomic(&path, &json)
        .map_err(|e| UpdateError::Io(format!("can't write {}: {e}", path.display())))
}

/// Where an update of this service is.
#[derive(Debug, Clone)]
enum Phase {
    Idle,
    /// Asking the hub for the gateway's update slot; `automatic`: started by the update
    /// window (withdrawn if it closes first), not by `node update`.
    Wanted {
        to: String,
        automatic: bool,
    },
    /// Granted: taking no new runs, waiting for the running ones.
    Draining {
        offer: Box<UpdateOffer>,
        since: Instant,
    },
    /// Downloading and installing.
    Installing {
        to: String,
    },
}

/// The service's side of an update, shared by its heartbeat loop and the control socket.
pub(crate) struct Updater {
    /// Whether this process may replace its binary (`node run`; never a window).
    allowed: bool,
    /// std Mutex: never held across .await.
    phase: Mutex<Phase>,
    /// The binary to exec once the new one is installed; `node run` reads it after stopping.
    restart: Arc<Mutex<Option<PathBuf>>>,
}

impl Updater {
    pub fn new(allowed: bool, restart: Arc<Mutex<Option<PathBuf>>>) -> Self {
        Updater { allowed, phase: Mutex::new(Phase::Idle), restart }
    }

    fn phase(&self) -> Phase {
        self.phase.lock().map_or(Phase::Idle, |p| p.clone())
    }

    fn set(&self, phase: Phase) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
    }

    /// What the heartbeat reports: the version asked for, and whether it is updating now.
    pub fn report(&self) -> (Option<String>, bool) {
        match self.phase() {
            Phase::Idle => (None, false),
            Phase::Wanted { to, .. } => (Some(to), false),
            Phase::Installing { to } => (Some(to), true),
            Phase::Draining { offer, .. } => (Some(offer.release.version.clone()), true),
        }
    }

    /// The hub granted an update and it is under way: the dispatcher claims no more runs.
    pub fn is_updating(&self) -> bool {
        self.report().1
    }

    /// Why this process can't update itself at all (a window), if it can't.
    pub fn refusal(&self) -> Option<UpdateError> {
        if !self.allowed {
            return Some(UpdateError::InWindow);
        }
        current_exe().err()
    }

    /// Who updates this node's binary, as its status says.
    pub fn self_update(&self) -> SelfUpdate {
        match self.refusal() {
            Some(UpdateError::InWindow) => SelfUpdate::Window,
            _ => SelfUpdate::Service,
        }
    }

    /// No update is under way or asked for.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase(), Phase::Idle)
    }

    /// The update window asked for the update under way, and it waits for the hub's grant.
    pub fn is_automatic(&self) -> bool {
        matches!(self.phase(), Phase::Wanted { automatic: true, .. })
    }

    /// Drops an update the window asked for that is still waiting for the gateway's turn;
    /// true if there was one. A granted one (draining, installing) goes on.
    pub fn withdraw_automatic(&self) -> bool {
        let Ok(mut phase) = self.phase.lock() else { return false };
        if matches!(*phase, Phase::Wanted { automatic: true, .. }) {
            *phase = Phase::Idle;
            return true;
        }
        false
    }

    /// `node update`: asks for the offered release; answers (from, to).
    pub fn request(&self, offer: Option<&UpdateOffer>) -> Result<(String, String), UpdateError> {
        self.ask(offer, false)
    }

    /// The update window's request: the same as `node update`'s, withdrawn if the window
    /// closes before the hub grants it.
    pub fn request_automatic(&self, offer: &UpdateOffer) -> Result<(String, String), UpdateError> {
        self.ask(Some(offer), true)
    }

    fn ask(&self, offer: Option<&UpdateOffer>, automatic: bool) -> Result<(String, String), UpdateError> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        let Some(offer) = offer else {
            return Err(UpdateError::NothingOffered {
                version: crate::version().to_owned(),
                platform: release::platform(),
            });
        };
        match self.phase() {
            Phase::Idle => {}
            Phase::Wanted { to, .. } | Phase::Installing { to } => return Err(UpdateError::Busy(to)),
            Phase::Draining { offer, .. } => return Err(UpdateError::Busy(offer.release.version.clone())),
        }
        let to = offer.release.version.clone();
        tracing::info!(from = %crate::version(), %to, automatic, "update requested; asking the hub for the gateway's turn");
        self.set(Phase::Wanted { to: to.clone(), automatic });
        Ok((crate::version().to_owned(), to))
    }

    /// What a heartbeat answer means for an update under way: the hub's grant starts the
    /// drain; a drained node installs (in the background, then restarts the service).
    pub fn after_beat(
        self: &Arc<Self>,
        offer: Option<&UpdateOffer>,
        shared: &Arc<Shared>,
        worker: &Worker,
        shutdown: &CancellationToken,
    ) {
        match self.phase() {
            Phase::Idle | Phase::Installing { .. } => {}
            Phase::Wanted { to, .. } => match offer {
                Some(offer) if offer.granted && offer.release.version == to => {
                    tracing::info!(%to, runs = worker.running(), "the hub granted the update; taking no new runs and letting the running ones finish");
                    worker.pause(true);
                    self.set(Phase::Draining { offer: Box::new(offer.clone()), since: Instant::now() });
                }
                Some(offer) if offer.release.version == to => {}
                _ => {
                    tracing::warn!(%to, "the hub no longer offers release {to}; the update is off");
                    self.set(Phase::Idle);
                }
            },
            Phase::Draining { offer, since } => {
                let running = worker.running();
                if running > 0 && since.elapsed() < DRAIN_TIMEOUT {
                    return;
                }
                if running > 0 {
                    tracing::warn!(
                        running,
                        "runs still running after {} s; updating anyway (the hub re-queues them)",
                        DRAIN_TIMEOUT.as_secs()
                    );
                }
                self.set(Phase::Installing { to: offer.release.version.clone() });
                let (updater, shared, worker, shutdown) =
                    (Arc::clone(self), Arc::clone(shared), worker.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let from = crate::version().to_owned();
                    let to = offer.release.version.clone();
                    match install(&shared, &offer).await {
                        Ok(exe) => {
                            tracing::info!(%from, %to, exe = %exe.display(), "installed; restarting into the new version");
                            if let Ok(mut restart) = updater.restart.lock() {
                                *restart = Some(exe);
                            }
                            shutdown.cancel();
                        }
                        Err(e) => {
                            tracing::warn!(%from, %to, "the update failed: {e}");
                            let record = Record {
                                from,
                                to,
                                exe: PathBuf::new(),
                                previous: PathBuf::new(),
                                pid: std::process::id(),
                                started_ms: super::unix_millis(),
                                staged: false,
                                supervised: false,
                                sha256: String::new(),
                                outcome: Outcome::Failed { reason: e.to_string() },
                            };
                            if let Err(e) = write_record(&shared.store, &record) {
                                tracing::warn!("{e}");
                            }
                            worker.pause(false);
                            updater.set(Phase::Idle);
                        }
                    }
                });
            }
        }
    }

    /// A sentence for the node's status while an update is under way.
    pub fn describe(&self, offer: Option<&UpdateOffer>) -> Option<String> {
        match self.phase() {
            Phase::Idle => None,
            Phase::Wanted { to, automatic } => {
                let by = if automatic { " (automatic, inside the update window)" } else { "" };
                Some(match offer.and_then(|o| o.waiting_for.as_deref()) {
                    Some(other) => {
                        format!("update to {to}{by}: waiting for node {other} to finish its update")
                    }
                    None => format!("update to {to}{by}: asking the hub for the gateway's turn"),
                })
            }
            Phase::Draining { offer, .. } => {
                Some(format!("update to {}: letting the running runs finish", offer.release.version))
            }
            Phase::Installing { to } => Some(format!("update to {to}: downloading and installing")),
        }
    }
}

/// Downloads, checks and installs the release (in place of this binary, or staged in the
/// data dir where this binary can't be replaced), records it and starts the watchdog;
/// returns the binary to exec.
async fn install(shared: &Shared, offer: &UpdateOffer) -> Result<PathBuf, UpdateError> {
    let version = offer.release.version.clone();
    let refuse = |reason: String| UpdateError::Release { version: version.clone(), reason };
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c)) {
        return Err(refuse("its version is not a plain version (letters, digits, . _ + -)".to_owned()));
    }
    let keys: Vec<PublicKey> = offer
        .keys
        .iter()
        .map(|k| PublicKey::parse(k, "a release key the hub sent"))
        .collect::<Result<_, _>>()
        .map_err(|e| refuse(e.to_string()))?;
    release::verify(&offer.release.sha256, &offer.release.signature, &keys)
        .map_err(|e| refuse(e.to_string()))?;
    let exe = current_exe()?;
    let supervised = supervised();
    let staged = supervised || writable_beside(&exe).is_err();
    let dir = if staged {
        releases_dir(&shared.store)?
    } else {
        exe.parent().ok_or_else(|| UpdateError::Io(format!("{} has no folder", exe.display())))?.to_owned()
    };
    let temp = dir.join(format!(".gatehouse.{}.update", crate::encoding::random_hex::<6>()));
    let not_writable = |e: std::io::Error| {
        if staged {
            UpdateError::Io(format!("can't stage the release in {}: {e}", dir.display()))
        } else {
            UpdateError::NotWritable { exe: exe.display().to_string(), reason: e.to_string() }
        }
    };
    let sha256 = match download(shared, offer, &keys, &temp, &not_writable).await {
        Ok(sha256) => sha256,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    // Staged, the running binary stays as it is: it is the previous one, and what the
    // watchdog (or the supervisor) starts again if the new one doesn't come up.
    let (new_exe, previous) = if staged {
        (dir.join(format!("gatehouse-{version}")), exe.clone())
    } else {
        (exe.clone(), previous_path(&exe))
    };
    let record = Record {
        from: crate::version().to_owned(),
        to: version.clone(),
        exe: new_exe.clone(),
        previous: previous.clone(),
        pid: std::process::id(),
        started_ms: super::unix_millis(),
        staged,
        supervised,
        sha256,
        outcome: Outcome::Restarting,
    };
    if staged {
        let place = || -> std::io::Result<()> {
            std::fs::rename(&temp, &new_exe)?;
            std::fs::File::open(&dir)?.sync_all()
        };
        if let Err(e) = place() {
            let _ = std::fs::remove_file(&temp);
            return Err(not_writable(e));
        }
        write_record(&shared.store, &record)?;
        spawn_watchdog(&previous, shared.store.dir())?;
        return Ok(new_exe);
    }
    // Keep the running binary as the previous one (a second name for it), then put the new
    // one in its place in one rename: `exe` is always one whole binary or the other.
    let keep = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&previous);
        if std::fs::hard_link(&exe, &previous).is_err() {
            std::fs::copy(&exe, &previous)?;
        }
        std::fs::rename(&temp, &exe)?;
        std::fs::File::open(&dir)?.sync_all()
    };
    if let Err(e) = keep() {
        let _ = std::fs::remove_file(&temp);
        return Err(not_writable(e));
    }
    let undo = |e: UpdateError| {
        if let Err(undo) = std::fs::rename(&previous, &exe) {
            tracing::error!("can't put the previous binary back at {}: {undo}", exe.display());
        }
        e
    };
    write_record(&shared.store, &record).map_err(undo)?;
    spawn_watchdog(&previous, shared.store.dir()).map_err(undo)?;
    Ok(exe)
}

/// Downloads the release into the new file `temp` and checks its length, SHA-256 and
/// signature; returns the SHA-256.
async fn download(
    shared: &Shared,
    offer: &UpdateOffer,
    keys: &[PublicKey],
    temp: &Path,
    not_writable: &(dyn Fn(std::io::Error) -> UpdateError + Sync),
) -> Result<String, UpdateError> {
    let refuse = |reason: String| UpdateError::Release { version: offer.release.version.clone(), reason };
    let mut file = new_file(temp).map_err(not_writable)?;
    let (sha256, length) = shared
        .client
        .download_release(&offer.release.id, &mut file)
        .await
        .map_err(|e| refuse(format!("the download failed: {e}")))?;
    file.sync_all().map_err(|e| UpdateError::Io(e.to_string()))?;
    drop(file);
    if length != offer.release.size_bytes {
        return Err(refuse(format!("{length} bytes arrived, not {}", offer.release.size_bytes)));
    }
    if sha256 != offer.release.sha256 {
        let e = release::ReleaseError::Digest { expected: offer.release.sha256.clone(), actual: sha256 };
        return Err(refuse(e.to_string()));
    }
    // What was written is what is signed, checked here, not only at the hub.
    release::verify(&sha256, &offer.release.signature, keys).map_err(|e| refuse(e.to_string()))?;
    set_executable(temp).map_err(not_writable)?;
    Ok(sha256)
}

/// `releases/` in the data dir (owner-only), where staged releases are kept.
fn releases_dir(store: &Store) -> Result<PathBuf, UpdateError> {
    let dir = store.dir().join(RELEASES_DIR);
    std::fs::create_dir_all(&dir)
        .and_then(|()| crate::machine::owner_only_dir(&dir))
        .map_err(|e| UpdateError::Io(format!("can't make {}: {e}", dir.display())))?;
    Ok(dir)
}

/// `releases/current.json`: the staged release that came up healthy, which a `node run` of
/// an older binary execs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Current {
    version: String,
    exe: PathBuf,
    sha256: String,
}

fn current_path(store: &Store) -> PathBuf {
    store.dir().join(RELEASES_DIR).join("current.json")
}

/// Names `record`'s staged binary as the one this data dir runs, and removes the staged
/// releases it replaces.
fn make_current(store: &Store, record: &Record) -> Result<(), UpdateError> {
    let current =
        Current { version: record.to.clone(), exe: record.exe.clone(), sha256: record.sha256.clone() };
    let json = serde_json::to_vec_pretty(&current).map_err(|e| UpdateError::Io(e.to_string()))?;
    let path = current_path(store);
    crate::machine::write_atomic(&path, &json)
        .map_err(|e| UpdateError::Io(format!("can't write {}: {e}", path.display())))?;
    let Ok(entries) = std::fs::read_dir(store.dir().join(RELEASES_DIR)) else { return Ok(()) };
    for entry in entries.flatten() {
        let stale =
            entry.file_name().to_string_lossy().starts_with("gatehouse-") && entry.path() != record.exe;
        if stale && let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!(path = %entry.path().display(), "can't remove a release this update replaced: {e}");
        }
    }
    Ok(())
}

/// What `node run` execs before it starts, if anything: the staged release that came up
/// healthy when this binary is older (the package's, started by systemd), unless it was
/// changed since. First, an update whose new binary died before the watchdog judged it (a
/// supervisor started this process: another pid) is recorded as rolled back.
pub fn staged_start(store: &Store) -> Option<PathBuf> {
    if let Some(mut record) = last_record(store)
        && record.staged
        && record.outcome == Outcome::Restarting
        && record.pid != std::process::id()
    {
        record.outcome =
            Outcome::RolledBack { reason: format!("version {} stopped before it came up", record.to) };
        tracing::warn!(from = %record.from, to = %record.to, "{record}");
        if let Err(e) = write_record(store, &record) {
            tracing::warn!("{e}");
        }
    }
    let current: Current =
        std::fs::read(current_path(store)).ok().and_then(|b| serde_json::from_slice(&b).ok())?;
    let own = crate::version();
    if current_exe().is_ok_and(|exe| exe == current.exe) {
        return None;
    }
    if crate::protocol::compare_versions(&current.version, own) != std::cmp::Ordering::Greater {
        tracing::info!(staged = %current.version, %own, "this binary is as new as the release the node updated itself to, or newer; running it");
        return None;
    }
    match release::sha256_file(&current.exe) {
        Ok(sha256) if sha256 == current.sha256 => Some(current.exe),
        Ok(_) => {
            tracing::warn!(exe = %current.exe.display(), "the staged release {} changed since it was installed; running {own} instead", current.version);
            None
        }
        Err(e) => {
            tracing::warn!(exe = %current.exe.display(), "can't read the staged release {}: {e}; running {own} instead", current.version);
            None
        }
    }
}

/// Goes on as `exe` in this process (the same pid, the same arguments), so whoever started
/// it (a shell, a supervisor, `node start`) sees no exit; returns only if it can't.
pub fn exec(exe: &Path) -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    std::process::Command::new(exe).args(std::env::args_os().skip(1)).exec()
}

/// Whether a supervisor restarts this service when it fails: systemd (`INVOCATION_ID` in a
/// process systemd started), or the stand-in the tests play (`GATEHOUSE_FAKE_SYSTEMD`).
fn supervised() -> bool {
    if std::env::var_os("GATEHOUSE_FAKE_SYSTEMD").is_some() {
        tracing::warn!("a FAKE systemd supervises this node (GATEHOUSE_FAKE_SYSTEMD): for tests only");
        return true;
    }
    std::env::var_os("INVOCATION_ID").is_some() && parent_is_systemd()
}

/// The parent process is systemd (pid 1 or a user manager), not a shell that inherited
/// `INVOCATION_ID` from a terminal started as a service.
fn parent_is_systemd() -> bool {
    let parent = std::os::unix::process::parent_id();
    std::fs::read_to_string(format!("/proc/{parent}/comm")).is_ok_and(|name| name.trim() == "systemd")
}

/// Starts `PREVIOUS node update-watchdog` in its own process group: it outlives this process
/// and its exec, and rolls back if the new binary doesn't come up.
fn spawn_watchdog(previous: &Path, dir: &Path) -> Result<(), UpdateError> {
    spawn_detached(previous, dir, &["node", "update-watchdog"]).map_err(|e| {
        UpdateError::Io(format!("can't start the update watchdog from {}: {e}", previous.display()))
    })
}

/// `gatehouse node update-watchdog`: waits for the service restarted into the new binary to
/// come up healthy, and rolls back to the previous binary otherwise. Returns the outcome.
pub async fn watchdog(store: &Store) -> Result<Record, UpdateError> {
    let path = store.dir().join(RECORD_FILE);
    let mut record = last_record(store)
        .filter(|r| r.outcome == Outcome::Restarting)
        .ok_or_else(|| UpdateError::NoRecord(path.display().to_string()))?;
    let deadline = Instant::now() + HEALTH_DEADLINE;
    let failure = loop {
        if healthy(store.dir(), &record.to).await {
            tracing::info!(from = %record.from, to = %record.to, "the new version is up and reaches the hub");
            record.outcome = Outcome::Installed;
            write_record(store, &record)?;
            if record.staged {
                make_current(store, &record)?;
            }
            return Ok(record);
        }
        // A supervisor's restart got there first ([`staged_start`]): its word stands.
        if let Some(decided) = last_record(store).filter(|r| r.outcome != Outcome::Restarting) {
            return Ok(decided);
        }
        if !alive(record.pid) && ControlClient::connect(store.dir()).await.ok().flatten().is_none() {
            break format!("version {} stopped before it came up", record.to);
        }
        if Instant::now() >= deadline {
            break format!(
                "version {} didn't answer with a heartbeat the hub accepted within {} s",
                record.to,
                HEALTH_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    };
    tracing::warn!(from = %record.from, to = %record.to, "rolling back: {failure}");
    record.outcome = Outcome::RolledBack { reason: failure.clone() };
    if record.supervised {
        // The supervisor starts the previous binary again once the new one has failed; one it
        // started itself would go down with the failed service's processes.
        write_record(store, &record)?;
        if alive(record.pid) {
            signal(record.pid, sysinfo::Signal::Kill);
        }
        return Ok(record);
    }
    stop_new(store.dir(), record.pid).await;
    let previous = if record.staged {
        // The previous binary was never moved; the staged one is dropped.
        let _ = std::fs::remove_file(&record.exe);
        record.previous.clone()
    } else {
        std::fs::rename(&record.previous, &record.exe).map_err(|e| {
            UpdateError::Io(format!(
                "can't put the previous binary {} back at {}: {e}",
                record.previous.display(),
                record.exe.display()
            ))
        })?;
        record.exe.clone()
    };
    // Recorded before the start, so the previous binary doesn't take it for a death of its own.
    write_record(store, &record)?;
    start_detached(&previous, store.dir())?;
    let back = wait_healthy(store.dir(), &record.from, HEALTH_DEADLINE).await;
    if !back {
        let reason = format!(
            "{failure}; version {} didn't come back within {} s either",
            record.from,
            HEALTH_DEADLINE.as_secs()
        );
        record.outcome = Outcome::RolledBack { reason };
        write_record(store, &record)?;
    }
    Ok(record)
}

/// Whether the service of `dir` answers with `version` and has had a heartbeat accepted.
async fn healthy(dir: &Path, version: &str) -> bool {
    let ask = async {
        let (hello, mut events) = ControlClient::connect(dir).await.ok()??.watch().await.ok()?;
        if hello.version != version {
            return None;
        }
        while let Some(event) = events.recv().await {
            if let ControlEvent::Status(s) = event
                && s.hub_connected
                && s.last_heartbeat.is_some()
            {
                return Some(());
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(3), ask).await.ok().flatten().is_some()
}

async fn wait_healthy(dir: &Path, version: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if healthy(dir, version).await {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

/// Stops the new service: through its control socket if it answers, then by signal.
async fn stop_new(dir: &Path, pid: u32) {
    let _ = tokio::time::timeout(Duration::from_secs(5), ControlClient::stop(dir)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut signalled = false;
    while alive(pid) && Instant::now() < deadline {
        if !signalled {
            signal(pid, sysinfo::Signal::Term);
            signalled = true;
        }
        tokio::time::sleep(POLL).await;
    }
    if alive(pid) {
        signal(pid, sysinfo::Signal::Kill);
        tokio::time::sleep(POLL).await;
    }
}

fn signal(pid: u32, signal: sysinfo::Signal) {
    use sysinfo::{Pid, ProcessesToUpdate, System};
    let pid = Pid::from_u32(pid);
    let Ok(mut system) = System::new() else { return };
    system.refresh_processes(ProcessesToUpdate::Some(&[pid]), true);
    if let Some(process) = system.process(pid) {
        let _ = process.kill_with(signal);
    }
}

/// `EXE node run` for `dir`, in its own process group.
fn start_detached(exe: &Path, dir: &Path) -> Result<(), UpdateError> {
    spawn_detached(exe, dir, &["node", "run"])
        .map_err(|e| UpdateError::Io(format!("can't start {} node run: {e}", exe.display())))
}

/// `EXE ARGS` for the data dir `dir`, stdio closed, in its own process group: it outlives
/// this process and its exec.
fn spawn_detached(exe: &Path, dir: &Path, args: &[&str]) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};
    Command::new(exe)
        .args(args)
        .env("GATEHOUSE_HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(|_| ())
}

/// Whether `pid` runs (a zombie doesn't: only its exit status is left).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_none_or(|(_, rest)| !rest.starts_with('Z')))
}

/// This process's binary, as a path that names it (not `… (deleted)` after a replacement).
fn current_exe() -> Result<PathBuf, UpdateError> {
    std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| UpdateError::Io(format!("can't find this process's binary: {e}")))
}

/// `NAME.previous` beside `exe`.
pub fn previous_path(exe: &Path) -> PathBuf {
    let mut name = exe.file_name().unwrap_or_default().to_owned();
    name.push(".previous");
    exe.with_file_name(name)
}

/// Refuses early when the folder of `exe` can't take the new binary.
fn writable_beside(exe: &Path) -> Result<(), UpdateError> {
    let probe = exe.with_file_name(format!(".gatehouse-update-probe.{}", crate::encoding::random_hex::<6>()));
    let made = new_file(&probe);
    let _ = std::fs::remove_file(&probe);
    made.map(drop)
        .map_err(|e| UpdateError::NotWritable { exe: exe.display().to_string(), reason: e.to_string() })
}

/// A new owner-only file (never an existing one).
fn new_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o700).open(path)
}

fn set_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_reads_back_and_says_what_happened() {
        let record = Record {
            from: "0.1.0".into(),
            to: "0.2.0".into(),
            exe: "/opt/g/gatehouse".into(),
            previous: previous_path(Path::new("/opt/g/gatehouse")),
            pid: 7,
            started_ms: 1,
            staged: false,
            supervised: false,
            sha256: "ab".into(),
            outcome: Outcome::RolledBack { reason: "version 0.2.0 stopped before it came up".into() },
        };
        assert_eq!(record.previous, Path::new("/opt/g/gatehouse.previous"));
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(r#""state":"rolled_back""#), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
        assert_eq!(
            record.to_string(),
            "the update from 0.1.0 to 0.2.0 was rolled back (version 0.2.0 stopped before it came up); the node runs 0.1.0 again"
        );
    }

    #[test]
    fn a_window_may_not_update_and_nothing_offered_is_said() {
        let updater = Updater::new(false, Arc::default());
        assert!(matches!(updater.request(None), Err(UpdateError::InWindow)));
        let updater = Updater::new(true, Arc::default());
        let error = updater.request(None).unwrap_err().to_string();
        assert!(error.starts_with("no update available"), "{error}");
        assert_eq!(updater.report(), (None, false));
    }
}
