//! The worker side of a node: takes runs the dispatcher hands it (over the peer channel, or
//! directly when the dispatcher is this node), up to its concurrency limit; starts each at the
//! hub, executes its activity (copies through `transfer`, with progress and checkpoints sent
//! to the hub) and reports the outcome. A report the hub can't take right now is retried, so a
//! hub restart loses no result.

use super::peer::PeerResponse;
use crate::client::{ClientError, HubClient};
use crate::protocol::{Activity, FinishRun, RunProgress, RunView, SplitRun, TransferProgress};
use crate::transfer::{self, Checkpoint, TransferError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the hub answers (410 Gone) to reports about a run whose job was cancelled.
const CANCELLED: u16 = 410;
/// What the hub answers (409 Conflict) to an attempt that isn't the run's current one.
const STALE: u16 = 409;

/// How long a finished run's report is retried while the hub can't be reached.
const REPORT_PATIENCE: Duration = Duration::from_secs(300);
/// How long a copy waits for a credential this node doesn't hold yet before it fails naming
/// it: a node that just started or joined gets its peers' credentials within a heartbeat or
/// two (its peers take it into their rosters at their next heartbeat). The dispatcher hands
/// such a run to a node behind on its credentials only when no current node has room.
const CREDENTIAL_SYNC_WAIT: Duration = Duration::from_secs(10);

/// Runs activities for this node; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    client: HubClient,
    running: Arc<AtomicU32>,
    limit: Arc<AtomicU32>,
    /// The runs executing now, by run id. std Mutex: never held across .await.
    current: Arc<Mutex<BTreeMap<String, CurrentRun>>>,
    /// Every run and attempt taken and not yet done here, started or not: a hand-off made
    /// again (the dispatcher never heard the first claim's answer) is already in hand.
    taken: Arc<Mutex<std::collections::HashSet<(String, u32)>>>,
    copier: Copier,
    shutdown: CancellationToken,
    /// Set while the node updates: it takes no new runs.
    paused: Arc<std::sync::atomic::AtomicBool>,
    /// What this node has done since it started, for its own `/metrics`.
    totals: Arc<Counters>,
}

/// What a node's runs added up to since the service started (its own `/metrics` counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunTotals {
    /// Bytes of the copy runs that succeeded here, as their last progress counted them.
    pub copied_bytes: u64,
    /// Files of the copy runs that succeeded here.
    pub copied_files: u64,
    /// Runs this node started as a retry: an attempt after a lost one (2 or later).
    pub retries: u64,
}

/// [`RunTotals`] as the worker's tasks add to it.
#[derive(Default)]
struct Counters {
    copied_bytes: std::sync::atomic::AtomicU64,
    copied_files: std::sync::atomic::AtomicU64,
    retries: std::sync::atomic::AtomicU64,
}

/// Looks up a credential's value by name.
pub type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// What copy runs need from the node: its name and its credentials.
#[derive(Clone)]
pub struct Copier {
    pub node_name: String,
    /// Looks up a credential's value by name.
    pub credentials: Arc<Lookup>,
    /// This node's share of the gateway's bandwidth limit, set from each heartbeat's answer.
    pub bandwidth: transfer::bandwidth::Bandwidth,
}

/// A run this node is executing, as the window's Home tab shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CurrentRun {
    pub run_id: String,
    pub job_id: String,
    pub attempt: u32,
    /// The activity's kind, e.g. `sleep`.
    pub kind: String,
    /// Milliseconds since the Unix epoch when it started here.
    pub started_ms: u64,
    /// How long it is expected to take, when the activity knows (for a progress bar).
    pub expected_ms: Option<u64>,
    /// A copy's bytes and files done, as last reported.
    #[serde(default)]
    pub transfer: Option<TransferProgress>,
}

impl CurrentRun {
    /// How far along it is (0–1) at `now_ms`, when that can be known.
    pub fn progress(&self, now_ms: u64) -> Option<f32> {
        #[allow(clippy::cast_precision_loss, reason = "a progress bar needs no more precision")]
        if let Some(copy) = &self.transfer {
            return match (copy.bytes_total, copy.files_total) {
                (0, 0) => None,
                (0, files) => Some(copy.files_done as f32 / files as f32),
                (bytes, _) => Some(copy.bytes_done as f32 / bytes as f32),
            };
        }
        let expected = self.expected_ms.filter(|&e| e > 0)?;
        #[allow(clippy::cast_precision_loss, reason = "a progress bar needs no more precision")]
        Some((now_ms.saturating_sub(self.started_ms) as f32 / expected as f32).min(1.0))
    }
}

impl Worker {
    pub fn new(client: HubClient, limit: u32, copier: Copier, shutdown: CancellationToken) -> Self {
        Worker {
            client,
            running: Arc::new(AtomicU32::new(0)),
            limit: Arc::new(AtomicU32::new(limit)),
            current: Arc::default(),
            taken: Arc::default(),
            copier,
            shutdown,
            paused: Arc::default(),
            totals: Arc::default(),
        }
    }

    /// What this node's runs added up to since the service started.
    pub fn totals(&self) -> RunTotals {
        RunTotals {
            copied_bytes: self.totals.copied_bytes.load(Ordering::SeqCst),
            copied_files: self.totals.copied_files.load(Ordering::SeqCst),
            retries: self.totals.retries.load(Ordering::SeqCst),
        }
    }

    /// Counts a copy run that succeeded here, by the progress it last showed.
    fn count_copied(&self, run: &RunView) {
        let done = self.current.lock().ok().and_then(|c| c.get(&run.id).and_then(|r| r.transfer));
        if let Some(done) = done {
            self.totals.copied_bytes.fetch_add(done.bytes_done, Ordering::SeqCst);
            self.totals.copied_files.fetch_add(done.files_done, Ordering::SeqCst);
        }
    }

    /// Stops (or resumes) taking new runs; the running ones go on.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    pub fn running(&self) -> u32 {
        self.running.load(Ordering::SeqCst)
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::SeqCst)
    }

    /// Sets this node's share of the gateway's bandwidth limit (bytes per second, 0 = none);
    /// copies under way follow it from their next send.
    pub fn set_bandwidth(&self, bytes_per_second: u64) {
        self.copier.bandwidth.set_bytes_per_second(bytes_per_second);
    }

    /// The runs executing now, oldest first.
    pub fn current(&self) -> Vec<CurrentRun> {
        let mut runs: Vec<CurrentRun> =
            self.current.lock().map(|c| c.values().cloned().collect()).unwrap_or_default();
        runs.sort_by_key(|r| r.started_ms);
        runs
    }

    fn track(&self, run: &RunView, running: bool) {
        let Ok(mut current) = self.current.lock() else { return };
        if running {
            let (kind, expected_ms) = match &run.activity {
                Activity::Sleep { millis, .. } => ("sleep", Some(*millis)),
                Activity::Echo { .. } => ("echo", None),
                Activity::Copy { .. } => ("copy", None),
            };
            let entry = CurrentRun {
                run_id: run.id.clone(),
                job_id: run.job_id.clone(),
                attempt: run.attempt,
                kind: kind.to_owned(),
                started_ms: super::unix_millis(),
                expected_ms,
                transfer: None,
            };
            current.insert(run.id.clone(), entry);
        } else {
            current.remove(&run.id);
        }
    }

    /// The runs taken and not yet done. Held only to look or change, never across .await; a
    /// poisoned lock (a panic while held) still holds a sound set.
    fn taken(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<(String, u32)>> {
        self.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes `run` if there is room, and runs it in the background.
    pub fn offer(&self, run: RunView) -> PeerResponse {
        let key = (run.id.clone(), run.attempt);
        if self.taken().contains(&key) {
            return PeerResponse::Accepted;
        }
        let limit = self.limit();
        // Reserve a slot atomically, so two hand-offs at once can't both take the last one.
        let reserved = self
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1))
            .is_ok();
        if !reserved {
            return PeerResponse::Refused { reason: format!("at its concurrency limit ({limit} runs)") };
        }
        // Checked after the slot is reserved: an update's drain that paused first sees the
        // slot counted, or this sees the pause.
        if self.paused.load(Ordering::SeqCst) {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return PeerResponse::Refused { reason: "it is updating and takes no new runs".to_owned() };
        }
        // Taken once: a second hand-off racing this one is answered as the first was.
        if !self.taken().insert(key.clone()) {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return PeerResponse::Accepted;
        }
        let worker = self.clone();
        tokio::spawn(async move {
            worker.execute(run).await;
            worker.taken().remove(&key);
            worker.running.fetch_sub(1, Ordering::SeqCst);
        });
        PeerResponse::Accepted
    }

    async fn execute(&self, offered: RunView) {
        // What runs is the hub's copy of the run, never the one the peer sent: the hand-off
        // only names the run and its attempt.
        // A hub that is restarting is waited for: the hand-off isn't lost to a few seconds
        // without it. A refusal means the run was taken or handed back: someone else has it.
        let started =
            self.retry_for(&offered, "the start", || self.client.start_run(&offered.id, offered.attempt));
        let run = match started.await {
            Ok(Some(started)) if started.id == offered.id && started.attempt == offered.attempt => started,
            Ok(Some(started)) => {
                tracing::warn!(run = %offered.id, attempt = offered.attempt, "the hub started another run or attempt ({} attempt {}) than the one handed over; not running it", started.id, started.attempt);
                return;
            }
            Ok(None) | Err(_) => {
                tracing::info!(run = %offered.id, attempt = offered.attempt, "not starting the run");
                return;
            }
        };
        if run.attempt > 1 {
            self.totals.retries.fetch_add(1, Ordering::SeqCst);
        }
        self.track(&run, true);
        if matches!(run.activity, Activity::Copy { .. }) {
            self.copy(&run).await;
            self.track(&run, false);
            return;
        }
        let outcome = tokio::select! {
            outcome = perform(&run.activity) => Some(outcome),
            () = self.shutdown.cancelled() => None,
        };
        self.track(&run, false);
        // None: stopping; the hub re-queues the run when this node's heartbeats stop.
        let Some(outcome) = outcome else { return };
        self.report(&run, &finished(run.attempt, outcome)).await;
    }

    /// Runs a copy: the listing run splits the activity into parts, a part's run copies it.
    async fn copy(&self, run: &RunView) {
        // Cancelled only when the hub says the job was (then uploads are aborted); a stopping
        // node drops the copy where it is instead, so the next attempt resumes it.
        let cancel = CancellationToken::new();
        let reporter = HubReporter {
            cancel: cancel.clone(),
            client: self.client.clone(),
            run: run.id.clone(),
            attempt: run.attempt,
            current: Arc::clone(&self.current),
            last: Arc::new(Mutex::new((tokio::time::Instant::now(), None))),
        };
        let _watching = AbortOnDrop(tokio::spawn(reporter.clone().watch()));
        let ctx = transfer::Context {
            node: &self.copier.node_name,
            run: &run.id,
            attempt: run.attempt,
            credentials: &*self.copier.credentials,
            reporter: &reporter,
            cancel: cancel.clone(),
            bandwidth: self.copier.bandwidth.clone(),
            checkpoint: Checkpoint::from_value(run.checkpoint.as_ref()),
        };
        let deadline = tokio::time::Instant::now() + CREDENTIAL_SYNC_WAIT;
        while transfer::spec::credential_names(&run.activity)
            .iter()
            .any(|name| (self.copier.credentials)(name).is_none())
            && tokio::time::Instant::now() < deadline
        {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = cancel.cancelled() => break,
                () = self.shutdown.cancelled() => return,
            }
        }
        let copying = async {
            match &run.part {
                None => transfer::plan(&run.activity, &ctx).await,
                Some(part) => transfer::execute(&run.activity, part, &ctx).await,
            }
        };
        let outcome = tokio::select! {
            outcome = copying => outcome,
            () = self.shutdown.cancelled() => return,
        };
        match outcome {
            Ok(transfer::Outcome::Split { parts, summary }) => {
                let split = SplitRun { attempt: run.attempt, parts, result: summary };
                // A listing the hub won't take (too many parts, say) fails the run with its sentence.
                if let Some(refusal) =
                    self.retry(run, "the listing", || self.client.split_run(&run.id, &split)).await
                    && ![STALE, CANCELLED].contains(&refusal.0)
                {
                    self.report(run, &finished(run.attempt, Err(refusal.1))).await;
                }
            }
            Ok(transfer::Outcome::Done(result)) => {
                self.count_copied(run);
                self.report(run, &finished(run.attempt, Ok(result))).await;
            }
            Err(TransferError::Cancelled) => {
                tracing::info!(run = %run.id, "the job was cancelled; this run stopped and left nothing partial");
            }
            // The hub gave the run to another attempt, which resumes from the checkpoint.
            Err(TransferError::Superseded) => {
                tracing::info!(run = %run.id, attempt = run.attempt, "another attempt has the run; stopping this one");
            }
            Err(error) => {
                tracing::warn!(run = %run.id, attempt = run.attempt, "copy failed: {error}");
                self.report(run, &finished(run.attempt, Err(error.to_string()))).await;
            }
        }
    }

    async fn report(&self, run: &RunView, finish: &FinishRun) {
        self.retry(run, "the result", || self.client.finish_run(&run.id, finish)).await;
    }

    /// Sends a report until the hub takes or refuses it, retrying while it can't be reached;
    /// returns the refusal (status and sentence), if it was refused.
    async fn retry<T, F>(&self, run: &RunView, what: &str, send: impl Fn() -> F) -> Option<(u16, String)>
    where
        F: Future<Output = Result<T, ClientError>>,
    {
        self.retry_for(run, what, send).await.err()
    }

    /// [`Worker::retry`], keeping the answer: `Ok(None)` when the hub stayed unreachable (or
    /// the node is stopping), `Err` with the refusal.
    async fn retry_for<T, F>(
        &self,
        run: &RunView,
        what: &str,
        send: impl Fn() -> F,
    ) -> Result<Option<T>, (u16, String)>
    where
        F: Future<Output = Result<T, ClientError>>,
    {
        let deadline = tokio::time::Instant::now() + REPORT_PATIENCE;
        let mut wait = Duration::from_millis(200);
        loop {
            match send().await {
                Ok(answer) => return Ok(Some(answer)),
                // A 5xx is the hub failing, not refusing: retried like no answer at all.
                Err(ClientError::Refused { status, body }) if status < 500 => {
                    tracing::info!(run = %run.id, "the hub didn't take {what}: {}", body.error);
                    return Err((status, body.error));
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(run = %run.id, "can't report {what} yet, retrying: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.shutdown.cancelled() => return Ok(None),
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(run = %run.id, "giving up reporting {what}: {e}");
                    return Ok(None);
                }
            }
        }
    }
}

/// How long a copy may go without reporting before [`HubReporter::watch`] reports for it.
const QUIET_COPY: Duration = Duration::from_secs(2);

/// Aborts a task when its owner goes (a copy that returned, or was dropped on shutdown).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn finished(attempt: u32, outcome: Result<serde_json::Value, String>) -> FinishRun {
    match outcome {
        Ok(result) => FinishRun { attempt, succeeded: true, result: Some(result), error: None },
        Err(error) => FinishRun { attempt, succeeded: false, result: None, error: Some(error) },
    }
}

/// Sends a copy run's progress and checkpoints to the hub, and keeps the node's own view of
/// the run (Home's progress bar) up to date.
#[derive(Clone)]
struct HubReporter {
    client: HubClient,
    run: String,
    attempt: u32,
    current: Arc<Mutex<BTreeMap<String, CurrentRun>>>,
    /// Cancelled when the hub answers that the job was cancelled.
    cancel: CancellationToken,
    /// When the copy last reported, and what: [`HubReporter::watch`] repeats it.
    last: Arc<Mutex<(tokio::time::Instant, Option<TransferProgress>)>>,
}

impl HubReporter {
    fn show(&self, progress: TransferProgress) {
        if let Ok(mut last) = self.last.lock() {
            *last = (tokio::time::Instant::now(), Some(progress));
        }
        if let Ok(mut current) = self.current.lock()
            && let Some(entry) = current.get_mut(&self.run)
        {
            entry.transfer = Some(progress);
        }
    }

    /// Sends `progress` (no checkpoint); a 410 tells the copy its job was cancelled.
    async fn send(&self, progress: TransferProgress) {
        let report =
            RunProgress { attempt: self.attempt, progress: serde_json::json!(progress), checkpoint: None };
        match self.client.run_progress(&self.run, &report).await {
            Err(ClientError::Refused { status: CANCELLED, .. }) => self.cancel.cancel(),
            Err(e) => tracing::debug!(run = %self.run, "progress not reported: {e}"),
            Ok(()) => {}
        }
    }

    /// Until the run ends: repeats the copy's last progress to the hub whenever the copy has
    /// been quiet for [`QUIET_COPY`] (waiting for buffers, bandwidth or a slow read), so a
    /// cancelled job is heard of, and the copy told, wherever it waits.
    async fn watch(self) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(QUIET_COPY / 2) => {}
                () = self.cancel.cancelled() => return,
            }
            let quiet =
                self.last.lock().ok().and_then(|l| (l.0.elapsed() >= QUIET_COPY).then_some(l.1)).flatten();
            let Some(progress) = quiet else { continue };
            self.send(progress).await;
            if let Ok(mut last) = self.last.lock() {
                last.0 = tokio::time::Instant::now();
            }
        }
    }
}

impl transfer::Reporter for HubReporter {
    fn progress(&self, progress: TransferProgress) {
        self.show(progress);
        let reporter = self.clone();
        tokio::spawn(async move { reporter.send(progress).await });
    }

    async fn checkpoint(
        &self,
        progress: TransferProgress,
        checkpoint: &Checkpoint,
    ) -> Result<(), TransferError> {
        self.show(progress);
        let report = RunProgress {
            attempt: self.attempt,
            progress: serde_json::json!(progress),
            checkpoint: Some(checkpoint.to_value()),
        };
        let deadline = tokio::time::Instant::now() + REPORT_PATIENCE;
        let mut wait = Duration::from_millis(200);
        loop {
            match self.client.run_progress(&self.run, &report).await {
                Ok(()) => return Ok(()),
                Err(ClientError::Refused { status: CANCELLED, .. }) => {
                    self.cancel.cancel();
                    return Err(TransferError::Cancelled);
                }
                // The hub answered: this attempt isn't the run's any more.
                Err(ClientError::Refused { status, .. }) if status < 500 => {
                    return Err(TransferError::Superseded);
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(run = %self.run, "can't checkpoint yet, retrying: {e}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(TransferError::Sink(format!(
                        "the hub can't be reached to checkpoint the copy: {e}"
                    )));
                }
            }
        }
    }
}

/// Executes one activity. The built-in kinds exist for tests and benchmarks; copy activities
/// come with the transfer issue.
async fn perform(activity: &Activity) -> Result<serde_json::Value, String> {
    match activity {
        Activity::Sleep { millis, .. } => {
            tokio::time::sleep(Duration::from_millis(*millis)).await;
            Ok(serde_json::json!({ "slept_ms": millis }))
        }
        Activity::Echo { message, .. } => Ok(serde_json::json!({ "echo": message })),
        Activity::Copy { .. } => Err("copy activities run through transfer".to_owned()),
    }
}
