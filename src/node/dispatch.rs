//! The dispatcher side of a node: while this node holds the lease, claim queued runs from
//! the hub (as many as the gateway has room for) and hand each to a worker chosen by the
//! gateway's policy: `primary` fills nodes in registration order, `distribute` picks at
//! random. A worker that is full or can't be reached is skipped (and reported); a run no
//! worker takes goes back to the queue at the hub after the hand-off timeout.

use super::peer::{self, PeerRequest, PeerResponse};
use super::worker::Worker;
use super::{NodeStatus, Shared};
use crate::protocol::{ClaimRequest, NodeState, Policy, Role, RunView};
use rand::seq::SliceRandom as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long one claim waits at the hub for work.
const CLAIM_WAIT: Duration = Duration::from_secs(1);
/// At most this many runs per claim.
const MAX_CLAIM: u32 = 64;

/// A node that can be handed runs: this one, or a peer.
#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    /// `None` for this node itself.
    address: Option<String>,
    order: i64,
    free: u32,
}

pub async fn run(
    shared: Arc<Shared>,
    worker: Worker,
    mut status: watch::Receiver<NodeStatus>,
    shutdown: CancellationToken,
) {
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let snapshot = status.borrow_and_update().clone();
        let Some(epoch) = snapshot.lease_epoch.filter(|_| snapshot.role == Role::Dispatcher) else {
            // Not the dispatcher: wait for the next status change.
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = status.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let mut candidates = candidates(&snapshot, &shared, &worker);
        let room: u32 = candidates.iter().map(|c| c.free).sum();
        if room == 0 {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            continue;
        }
        let request = ClaimRequest {
            lease_epoch: epoch,
            max: room.min(MAX_CLAIM),
            wait_ms: u64::try_from(CLAIM_WAIT.as_millis()).unwrap_or(1000),
        };
        let runs = tokio::select! {
            () = shutdown.cancelled() => return,
            runs = shared.client.claim(&request) => runs,
        };
        let runs = match runs {
            Ok(runs) => runs,
            Err(e) => {
                tracing::debug!("claim refused: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for run in runs {
            order(&mut candidates, snapshot.policy);
            hand_off(&shared, &worker, &mut candidates, run).await;
        }
    }
}

/// This node and its peers that may take work now, with their free slots.
fn candidates(status: &NodeStatus, shared: &Shared, worker: &Worker) -> Vec<Candidate> {
    let mut all = vec![Candidate {
        name: shared.settings.node_name.clone(),
        address: None,
        order: status.registered_order,
        free: worker.limit().saturating_sub(worker.running()),
    }];
    all.extend(
        status.peers.iter().filter(|p| matches!(p.status, NodeState::Online | NodeState::Limited)).map(|p| {
            Candidate {
                name: p.name.clone(),
                address: Some(p.peer_address.clone()),
                order: p.registered_order,
                free: p.metrics.runs_limit.saturating_sub(p.metrics.runs_running),
            }
        }),
    );
    all
}

fn order(candidates: &mut [Candidate], policy: Policy) {
    match policy {
        Policy::Primary => candidates.sort_by_key(|c| c.order),
        Policy::Distribute => candidates.shuffle(&mut rand::rng()),
    }
}

/// Offers `run` to each candidate with room, in order, until one takes it.
async fn hand_off(shared: &Shared, worker: &Worker, candidates: &mut [Candidate], run: RunView) {
    for candidate in candidates.iter_mut().filter(|c| c.free > 0) {
        let answer = match &candidate.address {
            None => Ok(worker.offer(run.clone())),
            Some(address) => offer_to_peer(shared, address, &run).await,
        };
        match answer {
            Ok(PeerResponse::Accepted) => {
                candidate.free -= 1;
                shared.reachable(&candidate.name);
                return;
            }
            Ok(PeerResponse::Refused { reason }) => {
                candidate.free = 0;
                shared.reachable(&candidate.name);
                tracing::debug!(node = %candidate.name, "refused a run: {reason}");
            }
            Ok(PeerResponse::Pong) => {}
            Err(e) => {
                candidate.free = 0;
                shared.unreachable(&candidate.name);
                tracing::warn!(node = %candidate.name, "skipping a worker that can't be reached: {e}");
            }
        }
    }
    tracing::info!(run = %run.id, "no worker could take the run now; the hub hands it out again later");
}

async fn offer_to_peer(
    shared: &Shared,
    address: &str,
    run: &RunView,
) -> Result<PeerResponse, peer::PeerError> {
    let request = PeerRequest::Run { run: Box::new(run.clone()) };
    super::ask_peer(shared, address, &request).await
}
