//! The dispatcher side of a node: while this node holds the lease, claim queued runs from
//! the hub and hand each to a worker chosen by the gateway's policy: `primary` fills nodes in
//! registration order, `distribute` picks at random. A node is skipped when it is at its
//! concurrency limit, over the gateway's CPU or memory threshold (averaged over the
//! aggregation window), or can't be reached. A run no node can take waits here up to the
//! gateway's queue timeout, then fails with the one sentence that says which limit stopped it.
//! A copy goes first to the nodes holding the newest version of every credential it names.
//! A claim that got no answer, and the first claim after this node becomes the dispatcher,
//! ask `again`: for the runs the hub holds for this node that it doesn't have.

use super::peer::{PeerRequest, PeerResponse};
use super::worker::Worker;
use super::{NodeStatus, Shared};
use crate::client::ClientError;
use crate::protocol::{
    ClaimRequest, CredentialStamp, FinishRun, GatewaySettings, NodeMetrics, NodeState, Policy, Role, RunView,
};
use rand::seq::SliceRandom as _;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long one claim waits at the hub for work.
const CLAIM_WAIT: Duration = Duration::from_secs(1);
/// At most this many runs per claim.
const MAX_CLAIM: u32 = 64;
/// How often waiting runs are offered again.
const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// Why no node could take a run. The sentences are the product's, word for word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    Cpu,
    Memory,
    Concurrency,
}

impl Limit {
    pub fn message(self) -> &'static str {
        match self {
            Limit::Cpu => {
                "The gateway you selected can't establish data source connections because it's exceeded the CPU limit set by your gateway admin. Try again later, or ask your gateway admin to increase the limit."
            }
            Limit::Memory => {
                "The gateway you selected can't establish data source connections because it's exceeded the memory limit set by your gateway admin. Try again later, or ask your gateway admin to increase the limit."
            }
            Limit::Concurrency => {
                "The gateway you selected can't establish data source connections because it's exceeded the concurrency limit set by your gateway admin. Try again later, or ask your gateway admin to increase the limit."
            }
        }
    }
}

/// A node that can be handed runs: this one, or a peer.
#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    /// `None` for this node itself.
    address: Option<String>,
    order: i64,
    free: u32,
    /// Why it can't take work now, if it can't.
    blocked: Option<Limit>,
    /// The version of each credential it reported holding (deletions too), by name.
    credentials: HashMap<String, u64>,
}

fn versions(stamps: &[CredentialStamp]) -> HashMap<String, u64> {
    stamps.iter().map(|s| (s.name.clone(), s.version)).collect()
}

/// CPU and memory readings per node over the aggregation window.
#[derive(Default)]
struct Load {
    samples: HashMap<String, VecDeque<(Instant, f32, f32)>>,
}

impl Load {
    fn record(&mut self, node: &str, metrics: &NodeMetrics, window: Duration) {
        let now = Instant::now();
        let samples = self.samples.entry(node.to_owned()).or_default();
        samples.push_back((now, metrics.cpu_percent, memory_percent(metrics)));
        while samples.front().is_some_and(|(t, _, _)| now.duration_since(*t) > window) {
            samples.pop_front();
        }
    }

    /// Average CPU % and memory-used % of `node` over the window.
    #[allow(clippy::cast_precision_loss, reason = "a few hundred samples at most")]
    fn average(&self, node: &str) -> (f32, f32) {
        let Some(samples) = self.samples.get(node).filter(|s| !s.is_empty()) else { return (0.0, 0.0) };
        let n = samples.len() as f32;
        let cpu = samples.iter().map(|s| s.1).sum::<f32>() / n;
        let memory = samples.iter().map(|s| s.2).sum::<f32>() / n;
        (cpu, memory)
    }
}

fn reporting(peer: &crate::protocol::Peer) -> bool {
    matches!(peer.status, NodeState::Online | NodeState::Limited) && peer.metrics.total_memory_bytes > 0
}

#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, reason = "a percentage")]
fn memory_percent(metrics: &NodeMetrics) -> f32 {
    if metrics.total_memory_bytes == 0 {
        return 0.0;
    }
    let used = metrics.total_memory_bytes.saturating_sub(metrics.available_memory_bytes);
    (used as f64 * 100.0 / metrics.total_memory_bytes as f64) as f32
}

pub async fn run(
    shared: Arc<Shared>,
    worker: Worker,
    mut status: watch::Receiver<NodeStatus>,
    shutdown: CancellationToken,
) {
    let mut load = Load::default();
    // Each held run with the moment it was queued, on this node's monotonic clock (from the
    // hub's own count of how long it had waited), so clock skew can't shorten its timeout.
    let mut waiting: Vec<(RunView, Instant)> = Vec::new();
    let mut last_sampled: Option<u64> = None;
    // Whether the hub may hold runs for this node that it doesn't have: its last claim got no
    // answer, or it let go of its runs when it stopped being the dispatcher (it can't tell the
    // hub while the hub is away) and now is again.
    let mut ask_again = false;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let snapshot = status.borrow_and_update().clone();
        let Some(epoch) = snapshot.lease_epoch.filter(|_| snapshot.role == Role::Dispatcher) else {
            // Not the dispatcher (any more): the runs held here go back to the queue when
            // another node takes the lease, or come back to this one when it is the dispatcher
            // again and asks for them; wait for the next status change.
            if !waiting.is_empty() {
                tracing::info!(
                    runs = waiting.len(),
                    "no longer the dispatcher: letting go of the runs held here"
                );
                waiting.clear();
            }
            ask_again = true;
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = status.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let settings = &snapshot.settings;
        // One reading per heartbeat, not per loop.
        if last_sampled != snapshot.last_heartbeat {
            last_sampled = snapshot.last_heartbeat;
            let window = Duration::from_secs(u64::from(settings.aggregation_minutes.max(1)) * 60);
            load.record(&shared.settings.node_name, &snapshot.metrics, window);
            // Only nodes that are up and have reported: a registered node's placeholder
            // zeros would water the average down.
            for peer in snapshot.peers.iter().filter(|p| reporting(p)) {
                load.record(&peer.name, &peer.metrics, window);
            }
        }
        let mut candidates = candidates(&snapshot, &shared, &worker, &load);
        let room: u32 = candidates.iter().filter(|c| c.blocked.is_none()).map(|c| c.free).sum();

        // Runs already held: hand them out, or fail the ones that waited too long.
        let held = std::mem::take(&mut waiting);
        for (run, queued_at) in held {
            order(&mut candidates, settings.policy);
            if hand_off(&shared, &worker, &mut candidates, &run).await {
                continue;
            }
            if waited_too_long(queued_at, settings) {
                fail(&shared, &run, blocking_limit(&candidates)).await;
            } else {
                waiting.push((run, queued_at));
            }
        }

        // New work: as much as there is room for; with no room, hold one run so its wait
        // counts and it can fail with the right sentence when the queue timeout passes.
        let room_left = candidates.iter().filter(|c| c.blocked.is_none()).map(|c| c.free).sum::<u32>();
        let want = if shared.updater.is_updating() {
            // This node is about to restart into a new version: it hands out what it holds
            // but takes no more from the queue (the lease moves on at the next beats).
            0
        } else if room == 0 && waiting.is_empty() {
            1
        } else {
            room_left
        };
        if want == 0 {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RETRY_INTERVAL) => {}
            }
            continue;
        }
        let request = ClaimRequest {
            lease_epoch: epoch,
            max: want.min(MAX_CLAIM),
            wait_ms: if waiting.is_empty() {
                u64::try_from(CLAIM_WAIT.as_millis()).unwrap_or(1000)
            } else {
                0
            },
            again: ask_again,
        };
        let runs = tokio::select! {
            () = shutdown.cancelled() => return,
            runs = shared.client.claim(&request) => runs,
        };
        // A refusal is an answer (an older hub may refuse `again`); only no answer, or a
        // hub failing, leaves the claim's outcome unknown.
        ask_again =
            matches!(&runs, Err(e) if !matches!(e, ClientError::Refused { status, .. } if *status < 500));
        let runs = match runs {
            Ok(runs) => runs,
            Err(e) => {
                tracing::debug!("claim refused: {e}");
                tokio::time::sleep(RETRY_INTERVAL).await;
                continue;
            }
        };
        hand_out_claimed(&shared, &worker, &mut candidates, settings.policy, runs, &mut waiting).await;
        if !waiting.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RETRY_INTERVAL) => {}
            }
        }
    }
}

/// Hands each claimed run to a worker, or holds it in `waiting` from when it was queued.
async fn hand_out_claimed(
    shared: &Shared,
    worker: &Worker,
    candidates: &mut [Candidate],
    policy: Policy,
    runs: Vec<RunView>,
    waiting: &mut Vec<(RunView, Instant)>,
) {
    for run in runs {
        // Held here already: it went back to the queue when the lease changed hands twice.
        if waiting.iter().any(|(held, _)| held.id == run.id && held.attempt == run.attempt) {
            continue;
        }
        let now = Instant::now();
        let queued_at = now.checked_sub(Duration::from_millis(run.waited_ms.unwrap_or(0))).unwrap_or(now);
        order(candidates, policy);
        if !hand_off(shared, worker, candidates, &run).await {
            waiting.push((run, queued_at));
        }
    }
}

/// This node and its reachable peers, with their free slots and what blocks them.
fn candidates(status: &NodeStatus, shared: &Shared, worker: &Worker, load: &Load) -> Vec<Candidate> {
    let settings = &status.settings;
    let blocked = |name: &str, free: u32| {
        let (cpu, memory) = load.average(name);
        if settings.cpu_threshold > 0 && cpu > f32::from(settings.cpu_threshold) {
            Some(Limit::Cpu)
        } else if settings.memory_threshold > 0 && memory > f32::from(settings.memory_threshold) {
            Some(Limit::Memory)
        } else if free == 0 {
            Some(Limit::Concurrency)
        } else {
            None
        }
    };
    let own_free = worker.limit().saturating_sub(worker.running());
    let mut all = vec![Candidate {
        name: shared.settings.node_name.clone(),
        address: None,
        order: status.registered_order,
        free: own_free,
        blocked: blocked(&shared.settings.node_name, own_free),
        credentials: versions(&status.metrics.credentials),
    }];
    all.extend(status.peers.iter().filter(|p| reporting(p)).map(|p| {
        let free = p.metrics.runs_limit.saturating_sub(p.metrics.runs_running);
        Candidate {
            name: p.name.clone(),
            address: Some(p.peer_address.clone()),
            order: p.registered_order,
            free,
            blocked: blocked(&p.name, free),
            credentials: versions(&p.metrics.credentials),
        }
    }));
    all
}

fn order(candidates: &mut [Candidate], policy: Policy) {
    match policy {
        Policy::Primary => candidates.sort_by_key(|c| c.order),
        Policy::Distribute => candidates.shuffle(&mut rand::rng()),
    }
}

/// Puts the candidates behind on a credential `needed` names (an older version than another
/// candidate's, or none) after the others, keeping the policy's order within each group: a
/// node that just started, or was down while a credential changed, gets such a run only when
/// no node that holds the credential has room (and then waits for it, see `worker`).
fn current_first(candidates: &mut [Candidate], needed: &[&str]) {
    if needed.is_empty() {
        return;
    }
    let held = |c: &Candidate, name: &str| c.credentials.get(name).copied().unwrap_or(0);
    let newest: Vec<u64> =
        needed.iter().map(|name| candidates.iter().map(|c| held(c, name)).max().unwrap_or(0)).collect();
    candidates.sort_by_key(|c| needed.iter().zip(&newest).any(|(name, newest)| held(c, name) < *newest));
}

/// Offers `run` to each candidate with room, in order (the current holders of its credentials
/// first), until one takes it.
async fn hand_off(shared: &Shared, worker: &Worker, candidates: &mut [Candidate], run: &RunView) -> bool {
    current_first(candidates, &crate::transfer::spec::credential_names(&run.activity));
    for candidate in candidates.iter_mut().filter(|c| c.blocked.is_none()) {
        let answer = match &candidate.address {
            None => Ok(worker.offer(run.clone())),
            Some(address) => {
                super::ask_peer(shared, address, &PeerRequest::Run { run: Box::new(run.clone()) }).await
            }
        };
        match answer {
            Ok(PeerResponse::Accepted) => {
                candidate.free = candidate.free.saturating_sub(1);
                if candidate.free == 0 {
                    candidate.blocked = Some(Limit::Concurrency);
                }
                shared.reachable(&candidate.name);
                return true;
            }
            Ok(PeerResponse::Refused { reason }) => {
                candidate.free = 0;
                candidate.blocked = Some(Limit::Concurrency);
                shared.reachable(&candidate.name);
                tracing::debug!(node = %candidate.name, "refused a run: {reason}");
            }
            Ok(PeerResponse::Pong | PeerResponse::Credentials { .. }) => {}
            Err(e) => {
                // Unreachable is not a limit: leave it out of the reason, but out of the round.
                candidate.free = 0;
                candidate.blocked = Some(Limit::Concurrency);
                shared.unreachable(&candidate.name);
                tracing::warn!(node = %candidate.name, "skipping a worker that can't be reached: {e}");
            }
        }
    }
    false
}

/// Whether a run queued at `queued_at` (the hub re-queues with a fresh time) has waited past
/// the gateway's queue timeout.
fn waited_too_long(queued_at: Instant, settings: &GatewaySettings) -> bool {
    queued_at.elapsed() > Duration::from_secs(u64::from(settings.queue_timeout_seconds))
}

/// The limit that kept the most nodes from taking work; ties go to CPU, then memory.
fn blocking_limit(candidates: &[Candidate]) -> Limit {
    let mut counts: HashMap<Limit, usize> = HashMap::new();
    for limit in candidates.iter().filter_map(|c| c.blocked) {
        *counts.entry(limit).or_default() += 1;
    }
    counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).map_or(Limit::Concurrency, |(l, _)| l)
}

/// Ends a run that no node could take in time, with the sentence for the limit.
async fn fail(shared: &Shared, run: &RunView, limit: Limit) {
    let finish = FinishRun {
        attempt: run.attempt,
        succeeded: false,
        result: None,
        error: Some(limit.message().to_owned()),
    };
    match shared.client.finish_run(&run.id, &finish).await {
        Ok(_) => tracing::warn!(run = %run.id, ?limit, "no node could take the run within the queue timeout"),
        Err(e) => tracing::warn!(run = %run.id, "couldn't fail the run at the hub: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(blocked: Option<Limit>) -> Candidate {
        Candidate {
            name: String::new(),
            address: None,
            order: 0,
            free: 0,
            blocked,
            credentials: HashMap::new(),
        }
    }

    #[test]
    fn nodes_behind_on_a_needed_credential_come_last_in_the_policy_order() {
        let node = |name: &str, held: &[(&str, u64)]| Candidate {
            name: name.to_owned(),
            credentials: held.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect(),
            ..candidate(None)
        };
        let mut candidates = vec![
            node("old", &[("lake", 1), ("db", 5)]),
            node("new-a", &[("lake", 2), ("db", 5)]),
            node("none", &[]),
            node("new-b", &[("lake", 2), ("db", 5), ("other", 9)]),
        ];
        let names = |c: &[Candidate]| c.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        current_first(&mut candidates, &["lake", "db"]);
        assert_eq!(names(&candidates), ["new-a", "new-b", "old", "none"]);
        // A credential nobody is ahead on keeps every node in place, as does a run needing none.
        let before = names(&candidates);
        current_first(&mut candidates, &["db"]);
        current_first(&mut candidates, &[]);
        assert_eq!(names(&candidates), before);
        current_first(&mut candidates, &["other"]);
        assert_eq!(names(&candidates)[0], "new-b");
    }

    #[test]
    fn the_reason_is_the_limit_that_blocked_most_nodes() {
        let c = |l| candidate(Some(l));
        assert_eq!(blocking_limit(&[c(Limit::Cpu), c(Limit::Concurrency), c(Limit::Cpu)]), Limit::Cpu);
        assert_eq!(blocking_limit(&[c(Limit::Memory), c(Limit::Memory), c(Limit::Cpu)]), Limit::Memory);
        assert_eq!(blocking_limit(&[c(Limit::Concurrency), c(Limit::Memory)]), Limit::Memory);
        assert_eq!(blocking_limit(&[]), Limit::Concurrency);
    }

    #[test]
    fn messages_name_their_limit_in_the_product_sentence() {
        for (limit, word) in [
            (Limit::Cpu, "CPU limit"),
            (Limit::Memory, "memory limit"),
            (Limit::Concurrency, "concurrency limit"),
        ] {
            let message = limit.message();
            assert!(message.starts_with(
                "The gateway you selected can't establish data source connections because it's exceeded the "
            ));
            assert!(message.contains(&format!("exceeded the {word} set by your gateway admin.")));
            assert!(message.ends_with("Try again later, or ask your gateway admin to increase the limit."));
        }
    }

    #[test]
    fn load_averages_over_the_window() {
        let mut load = Load::default();
        let metrics = |cpu| NodeMetrics {
            cpu_percent: cpu,
            total_memory_bytes: 100,
            available_memory_bytes: 25,
            ..NodeMetrics::default()
        };
        load.record("a", &metrics(90.0), Duration::from_secs(60));
        load.record("a", &metrics(30.0), Duration::from_secs(60));
        assert_eq!(load.average("a"), (60.0, 75.0));
        assert_eq!(load.average("b"), (0.0, 0.0));
    }
}
