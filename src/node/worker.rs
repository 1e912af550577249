//! The worker side of a node: takes runs the dispatcher hands it (over the peer channel, or
//! directly when the dispatcher is this node), up to its concurrency limit; starts each at the
//! hub, executes its activity and reports the outcome. A report the hub can't take right now
//! is retried, so a hub restart loses no result.

use super::peer::PeerResponse;
use crate::client::{ClientError, HubClient};
use crate::protocol::{Activity, FinishRun, RunView};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a finished run's report is retried while the hub can't be reached.
const REPORT_PATIENCE: Duration = Duration::from_secs(300);

/// Runs activities for this node; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    client: HubClient,
    running: Arc<AtomicU32>,
    limit: Arc<AtomicU32>,
    shutdown: CancellationToken,
}

impl Worker {
    pub fn new(client: HubClient, limit: u32, shutdown: CancellationToken) -> Self {
        Worker {
            client,
            running: Arc::new(AtomicU32::new(0)),
            limit: Arc::new(AtomicU32::new(limit)),
            shutdown,
        }
    }

    pub fn running(&self) -> u32 {
        self.running.load(Ordering::SeqCst)
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::SeqCst)
    }

    /// Takes `run` if there is room, and runs it in the background.
    pub fn offer(&self, run: RunView) -> PeerResponse {
        let limit = self.limit();
        // Reserve a slot atomically, so two hand-offs at once can't both take the last one.
        let reserved = self
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1))
            .is_ok();
        if !reserved {
            return PeerResponse::Refused { reason: format!("at its concurrency limit ({limit} runs)") };
        }
        let worker = self.clone();
        tokio::spawn(async move {
            worker.execute(run).await;
            worker.running.fetch_sub(1, Ordering::SeqCst);
        });
        PeerResponse::Accepted
    }

    async fn execute(&self, run: RunView) {
        match self.client.start_run(&run.id, run.attempt).await {
            Ok(_) => {}
            Err(e) => {
                // Already taken, or handed back to the queue: someone else has it.
                tracing::info!(run = %run.id, attempt = run.attempt, "not starting the run: {e}");
                return;
            }
        }
        let outcome = tokio::select! {
            outcome = perform(&run.activity) => outcome,
            () = self.shutdown.cancelled() => {
                // Stopping: the hub re-queues the run when this node's heartbeats stop.
                return;
            }
        };
        let finish = match outcome {
            Ok(result) => {
                FinishRun { attempt: run.attempt, succeeded: true, result: Some(result), error: None }
            }
            Err(error) => {
                FinishRun { attempt: run.attempt, succeeded: false, result: None, error: Some(error) }
            }
        };
        self.report(&run, &finish).await;
    }

    async fn report(&self, run: &RunView, finish: &FinishRun) {
        let deadline = tokio::time::Instant::now() + REPORT_PATIENCE;
        let mut wait = Duration::from_millis(200);
        loop {
            match self.client.finish_run(&run.id, finish).await {
                Ok(_) => return,
                Err(ClientError::Refused { body, .. }) => {
                    tracing::info!(run = %run.id, "the hub didn't take the result: {}", body.error);
                    return;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(run = %run.id, "can't report the result yet, retrying: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.shutdown.cancelled() => return,
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::error!(run = %run.id, "giving up reporting the result: {e}");
                    return;
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
    }
}
