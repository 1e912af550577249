//! Soak: a real hub (`gatehouse hub serve`, SQLite) and 4 real `gatehouse node run` processes
//! on loopback, policy `distribute`, under a steady stream of jobs for a fixed time while a
//! loop kills -9 a random node (and starts it again on its data dir) or restarts the hub
//! (SIGTERM or kill -9, then on the same address and database). Afterwards every job is
//! waited for, and read back from the hub with its runs and attempts.
//!
//! Prints: jobs and runs submitted, succeeded, lost (a job the hub took that is missing, a run
//! missing or not succeeded once the chaos stopped and the gateway had time to drain) and
//! duplicated (a job name the hub holds twice, a run of a job twice for one partition, a run
//! with two succeeded attempts, or an echo whose output isn't its own); restarts survived
//! (every node Online with one dispatcher again, within 30 s); and the dispatch latency,
//! queued → started on a node by the hub's clock, p50 / p90 / p99. Target: 0 lost, 0
//! duplicated. Figures are printed, never asserted.
//!
//! `GATEHOUSE_SOAK_SECONDS` (default 60) sets how long the jobs and the chaos run;
//! `GATEHOUSE_SOAK_SEED` replays a run's chaos. Run it with `cargo bench --bench soak`.

#![allow(clippy::unwrap_used, reason = "a benchmark: a failed setup step should stop it loudly")]

#[allow(dead_code, reason = "the benchmark uses only some of the helpers")]
#[path = "../tests/common/process.rs"]
mod process;

#[allow(dead_code, reason = "the benchmark uses only some of the helpers")]
#[path = "../tests/common/cluster.rs"]
mod cluster;

#[path = "support/figures.rs"]
mod figures;
#[path = "support/refused.rs"]
mod refused;
use figures::{quantiles, seconds};
use refused::Refused;

use gatehouse::protocol::{
    Activity, AttemptOutcome, JobSpec, JobView, JobsQuery, NodeState, NodeView, Role, RunState, SubmitJob,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NODES: usize = 4;
const GATEWAY: &str = "soak";
const DEFAULT_SECONDS: u64 = 60;
/// A job is submitted this often.
const SUBMIT_EVERY: Duration = Duration::from_millis(250);
/// Between two blows of the chaos loop, at random.
const CHAOS_PAUSE_MS: std::ops::Range<u64> = 2000..5000;
/// How long a killed node or a stopped hub stays down, at random.
const DOWN_MS: std::ops::Range<u64> = 100..3000;
/// A hub restart is one blow in this many; the rest kill a node.
const HUB_EVERY: u32 = 4;
/// After a blow, how long the gateway gets to be whole again (all Online, one dispatcher).
const RECOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// After the chaos, how long every job gets to end. A run handed to a node killed before it
/// started it goes back to the queue after the queue timeout plus 30 s.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let soak = Duration::from_secs(
        std::env::var("GATEHOUSE_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SECONDS),
    );
    let seed: u64 =
        std::env::var("GATEHOUSE_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "gatehouse soak: {NODES} nodes + hub (SQLite), loopback, {cpus} CPUs, {} of jobs and chaos, seed {seed}",
        seconds(soak)
    );
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let hub = cluster::Hub::start();
    let key = hub.create_gateway(GATEWAY, &["--policy", "distribute"]);
    let nodes: Vec<cluster::Node> =
        (1..=NODES).map(|i| cluster::Node::start(&key, &format!("n{i}"), &[])).collect();
    let api = Api::new(&hub.url, &hub.token);
    runtime.block_on(async {
        let deadline = Instant::now() + RECOVER_TIMEOUT;
        while !whole(&api.nodes().await.unwrap_or_default()) {
            assert!(Instant::now() < deadline, "the gateway didn't settle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // The dispatcher learns its peers' room from its next heartbeat's answer.
    std::thread::sleep(Duration::from_millis(1500));
    println!("{NODES} nodes Online in gateway '{GATEWAY}'");

    let stop = Arc::new(AtomicBool::new(false));
    let chaos = std::thread::spawn({
        let stop = Arc::clone(&stop);
        let url = hub.url.clone();
        let token = hub.token.clone();
        move || chaos_loop(hub, nodes, &url, &token, seed, &stop)
    });
    let soak_started = Instant::now();
    // A minute early: the hub's clock is this machine's, give or take.
    let since_ms = unix_ms() - 60_000;
    let submitted = runtime.block_on(submit_loop(&api, soak_started + soak));
    stop.store(true, Ordering::SeqCst);
    let (hub, nodes, blows) = chaos.join().unwrap();
    let chaos_over = Instant::now();
    println!(
        "\nchaos over after {}: {} jobs submitted; waiting up to {} for them to end",
        seconds(soak_started.elapsed()),
        submitted.iter().filter(|s| s.id.is_some()).count(),
        seconds(DRAIN_TIMEOUT)
    );
    let drained = runtime.block_on(drain(&api, &submitted));
    let drain_time = chaos_over.elapsed();
    let figures = runtime.block_on(verify(&api, &submitted, since_ms));
    report_logs(&hub, &nodes);
    print_figures(&figures, &blows, &submitted, drained, drain_time, soak);
    println!("\n(whole soak: {})", seconds(started.elapsed()));
    drop(nodes);
    drop(hub);
}

// ---- HTTP ----

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(base: &str, token: &str) -> Api {
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap();
        Api { http, base: base.to_owned(), token: token.to_owned() }
    }

    async fn get<R: serde::de::DeserializeOwned>(&self, path: &str) -> Result<R, Refused> {
        refused::send(self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token)).await
    }

    async fn submit(&self, spec: JobSpec) -> Result<JobView, Refused> {
        let job = SubmitJob { spec };
        refused::send(
            self.http
                .post(format!("{}/api/v1/gateways/{GATEWAY}/jobs", self.base))
                .bearer_auth(&self.token)
                .json(&job),
        )
        .await
    }

    async fn nodes(&self) -> Result<Vec<NodeView>, Refused> {
        self.get(&format!("/api/v1/gateways/{GATEWAY}/nodes")).await
    }

    async fn job(&self, id: &str) -> Result<JobView, Refused> {
        self.get(&format!("/api/v1/jobs/{id}")).await
    }

    /// The gateway's jobs (without their runs) created at or after `since_ms`, all pages.
    async fn jobs_since(&self, since_ms: i64) -> Vec<JobView> {
        let mut all: Vec<JobView> = Vec::new();
        let mut until_ms: Option<i64> = None;
        loop {
            let query =
                JobsQuery { limit: Some(500), since_ms: Some(since_ms), until_ms, ..JobsQuery::default() };
            let query = serde_urlencoded(&query);
            let page: Vec<JobView> = self
                .get(&format!("/api/v1/gateways/{GATEWAY}/jobs?{query}"))
                .await
                .unwrap_or_else(|e| panic!("listing the jobs: {e}"));
            let full = page.len() == 500;
            let oldest = page.iter().map(|j| j.created_ms).min();
            let known: HashSet<String> = all.iter().map(|j| j.id.clone()).collect();
            all.extend(page.into_iter().filter(|j| !known.contains(&j.id)));
            match oldest {
                // Jobs created in the same millisecond as the oldest one are read again on the
                // next page (`until_ms` is exclusive), so one more millisecond is kept.
                Some(oldest) if full => until_ms = Some(oldest + 1),
                _ => return all,
            }
            if until_ms.is_some_and(|u| u <= since_ms) {
                return all;
            }
        }
    }
}

/// A query string of the set fields (numbers only here).
fn serde_urlencoded(query: &JobsQuery) -> String {
    let value = serde_json::to_value(query).unwrap();
    let fields = value.as_object().cloned().unwrap_or_default();
    fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn whole(list: &[NodeView]) -> bool {
    list.len() == NODES
        && list.iter().all(|n| n.status == NodeState::Online)
        && list.iter().filter(|n| n.role == Role::Dispatcher).count() == 1
}

/// [`whole`], with every node's last heartbeat at or after `since_ms` (a killed node still
/// counts as Online for 3 s, on its last heartbeat before the kill).
fn whole_since(list: &[NodeView], since_ms: i64) -> bool {
    whole(list) && list.iter().all(|n| n.last_heartbeat_ms.is_some_and(|at| at >= since_ms))
}

// ---- the job stream ----

/// One job the soak tried to submit.
struct Submitted {
    name: String,
    /// What was asked: the echo message (none for sleeps) and how many partitions.
    echo: Option<String>,
    partitions: u32,
    /// The job's id when the hub took it; `None` when it refused or didn't answer.
    id: Option<String>,
    /// Why it wasn't taken (the hub was down, mostly).
    refused: Option<String>,
}

fn spec(i: u32) -> (JobSpec, Option<String>, u32) {
    let name = format!("soak-{i}");
    let (activity, echo, partitions) = match i % 3 {
        0 => (Activity::Echo { message: name.clone(), partitions: 1 }, Some(name.clone()), 1),
        1 => (Activity::Echo { message: name.clone(), partitions: 3 }, Some(name.clone()), 3),
        _ => (Activity::Sleep { millis: 300 + u64::from(i % 7) * 200, partitions: 2 }, None, 2),
    };
    (JobSpec { name, activities: vec![activity] }, echo, partitions)
}

/// Submits a job every `SUBMIT_EVERY` until `until`. A refused or unanswered submit is not
/// retried (an answer lost on the way may hide a job the hub took: the check finds it).
async fn submit_loop(api: &Api, until: Instant) -> Vec<Submitted> {
    let mut submitted = Vec::new();
    let mut tick = tokio::time::interval(SUBMIT_EVERY);
    let mut i = 0;
    while Instant::now() < until {
        tick.tick().await;
        let (spec, echo, partitions) = spec(i);
        let name = spec.name.clone();
        let (id, refused) = match api.submit(spec).await {
            Ok(job) => (Some(job.id), None),
            Err(e) => (None, Some(e.to_string())),
        };
        submitted.push(Submitted { name, echo, partitions, id, refused });
        i += 1;
    }
    submitted
}

// ---- the chaos ----

/// What the chaos loop did.
#[derive(Default)]
struct Blows {
    node_kills: u32,
    nodes_back: u32,
    hub_restarts: u32,
    hub_kills: u32,
    hubs_back: u32,
    /// Blows after which the gateway wasn't whole again within `RECOVER_TIMEOUT`.
    not_recovered: Vec<String>,
}

fn chaos_loop(
    mut hub: cluster::Hub,
    mut nodes: Vec<cluster::Node>,
    url: &str,
    token: &str,
    seed: u64,
    stop: &AtomicBool,
) -> (cluster::Hub, Vec<cluster::Node>, Blows) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut blows = Blows::default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let api = Api::new(url, token);
    loop {
        let pause = Duration::from_millis(rng.random_range(CHAOS_PAUSE_MS));
        let until = Instant::now() + pause;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let down = Duration::from_millis(rng.random_range(DOWN_MS));
        let what = if rng.random_range(0..HUB_EVERY) == 0 {
            let hard = rng.random_bool(0.5);
            if hard {
                hub.process.kill9();
                blows.hub_kills += 1;
            } else {
                hub.stop();
                blows.hub_restarts += 1;
            }
            std::thread::sleep(down);
            hub.start_again();
            format!("hub {} and down {}", if hard { "killed -9" } else { "stopped" }, seconds(down))
        } else {
            let victim = rng.random_range(0..nodes.len());
            let node = &mut nodes[victim];
            node.process.as_mut().unwrap().kill9();
            blows.node_kills += 1;
            std::thread::sleep(down);
            node.run(&[]);
            format!("{} killed -9 and down {}", node.name, seconds(down))
        };
        let back = Instant::now();
        let back_ms = unix_ms();
        let recovered = runtime.block_on(async {
            while back.elapsed() < RECOVER_TIMEOUT {
                if api.nodes().await.is_ok_and(|list| whole_since(&list, back_ms)) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        });
        println!(
            "  {what}: {}",
            if recovered {
                format!("whole again after {}", seconds(back.elapsed()))
            } else {
                "NOT whole again".to_owned()
            }
        );
        match (recovered, what.starts_with("hub")) {
            (true, true) => blows.hubs_back += 1,
            (true, false) => blows.nodes_back += 1,
            (false, _) => blows.not_recovered.push(what),
        }
    }
    (hub, nodes, blows)
}

// ---- after the chaos ----

/// Waits until every job the hub took is over (or `DRAIN_TIMEOUT`); whether all ended.
async fn drain(api: &Api, submitted: &[Submitted]) -> bool {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut open: Vec<&str> = submitted.iter().filter_map(|s| s.id.as_deref()).collect();
    while !open.is_empty() {
        let mut still = Vec::new();
        for id in open {
            match api.job(id).await {
                Ok(job) if job.state.is_final() => {}
                _ => still.push(id),
            }
        }
        open = still;
        if open.is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            println!("  {} jobs still not over after {}", open.len(), seconds(DRAIN_TIMEOUT));
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    true
}

#[derive(Default)]
struct Figures {
    jobs_taken: usize,
    /// Jobs whose submit got no answer or a refusal, but that the hub holds.
    jobs_taken_unanswered: usize,
    jobs_refused: usize,
    runs_submitted: usize,
    runs_succeeded: usize,
    runs_lost: usize,
    runs_duplicated: usize,
    /// Runs that succeeded in a later attempt than the first.
    runs_retried: usize,
    /// Queued → started by a node (the hub's clock), of every succeeded run.
    dispatch: Vec<Duration>,
    problems: Vec<String>,
}

/// Reads every job back from the hub (all jobs created since `since_ms`, to find any it
/// holds twice) and checks it against what was submitted.
async fn verify(api: &Api, submitted: &[Submitted], since_ms: i64) -> Figures {
    let mut f = Figures::default();
    let listed = api.jobs_since(since_ms).await;
    let mut by_name: HashMap<&str, Vec<&JobView>> = HashMap::new();
    for job in &listed {
        by_name.entry(job.name.as_str()).or_default().push(job);
    }
    for s in submitted {
        let held = by_name.get(s.name.as_str()).map_or(&[][..], Vec::as_slice);
        match (&s.id, held.len()) {
            (Some(_), 0) => {
                f.jobs_taken += 1;
                f.runs_submitted += s.partitions as usize;
                f.runs_lost += s.partitions as usize;
                f.problems.push(format!("job {} was taken but the hub doesn't have it", s.name));
                continue;
            }
            (None, 0) => {
                f.jobs_refused += 1;
                continue;
            }
            (None, _) => f.jobs_taken_unanswered += 1,
            (Some(_), _) => f.jobs_taken += 1,
        }
        f.runs_submitted += s.partitions as usize;
        if held.len() > 1 {
            f.runs_duplicated += s.partitions as usize * (held.len() - 1);
            f.problems.push(format!("job {} is at the hub {} times", s.name, held.len()));
        }
        let id = s.id.clone().unwrap_or_else(|| held[0].id.clone());
        let job = match api.job(&id).await {
            Ok(job) => job,
            Err(e) => {
                f.runs_lost += s.partitions as usize;
                f.problems.push(format!("job {}: can't read it back: {e}", s.name));
                continue;
            }
        };
        check_job(&mut f, s, &job);
    }
    f.dispatch.sort();
    f
}

fn check_job(f: &mut Figures, s: &Submitted, job: &JobView) {
    let mut partitions: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for run in &job.runs {
        *partitions.entry((run.activity_index, run.partition)).or_default() += 1;
    }
    let twice: usize = partitions.values().map(|n| n.saturating_sub(1)).sum();
    if twice > 0 {
        f.runs_duplicated += twice;
        f.problems.push(format!("job {}: {twice} partitions have more than one run", s.name));
    }
    let missing = (s.partitions as usize).saturating_sub(partitions.len());
    if missing > 0 {
        f.runs_lost += missing;
        f.problems.push(format!("job {}: {missing} runs missing", s.name));
    }
    for run in &job.runs {
        let succeeded_attempts =
            run.attempts.iter().filter(|a| a.outcome == AttemptOutcome::Succeeded).count();
        if succeeded_attempts > 1 {
            f.runs_duplicated += 1;
            f.problems.push(format!("run {} of {}: {succeeded_attempts} attempts succeeded", run.id, s.name));
        }
        if let Some(message) = &s.echo
            && run.state == RunState::Succeeded
            && run.result.as_ref().and_then(|r| r["echo"].as_str()) != Some(message.as_str())
        {
            f.runs_duplicated += 1;
            f.problems.push(format!("run {} of {}: echoed {:?}", run.id, s.name, run.result));
        }
        if run.state == RunState::Succeeded {
            f.runs_succeeded += 1;
            if run.attempt > 1 {
                f.runs_retried += 1;
            }
            if let Some(started) = run.started_ms {
                f.dispatch.push(Duration::from_millis(u64::try_from(started - run.queued_ms).unwrap_or(0)));
            }
        } else {
            f.runs_lost += 1;
            let attempts: Vec<String> = run
                .attempts
                .iter()
                .map(|a| {
                    format!(
                        "#{} {:?} on {} ({})",
                        a.attempt,
                        a.outcome,
                        a.node_name.as_deref().unwrap_or("-"),
                        a.reason.as_deref().unwrap_or("")
                    )
                })
                .collect();
            f.problems.push(format!(
                "run {} of {}: {:?} on {:?}, attempt {}, error {:?}; attempts: {}",
                run.id,
                s.name,
                run.state,
                run.node_name,
                run.attempt,
                run.error,
                attempts.join("; ")
            ));
        }
    }
}

fn unix_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap()
}

/// Panics and lines that say something went wrong, from the hub's and the nodes' logs.
fn report_logs(hub: &cluster::Hub, nodes: &[cluster::Node]) {
    let mut panics = 0;
    for (who, log) in std::iter::once(("hub".to_owned(), hub.process.stderr())).chain(
        nodes
            .iter()
            .map(|n| (n.name.clone(), n.process.as_ref().map(process::Spawned::stderr).unwrap_or_default())),
    ) {
        let panicked: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
        panics += panicked.len();
        for line in panicked.iter().take(3) {
            println!("  {who} PANICKED: {line}");
        }
    }
    if panics == 0 {
        println!("  no process panicked (in the logs of the last start of each)");
    }
}

fn print_figures(
    f: &Figures,
    blows: &Blows,
    submitted: &[Submitted],
    drained: bool,
    drain_time: Duration,
    soak: Duration,
) {
    let row = |what: &str, figure: String| println!("  {what:<48} {figure}");
    println!("\n== Soak: {NODES} nodes + hub, {} of jobs every {SUBMIT_EVERY:?} and chaos ==", seconds(soak));
    row(
        "jobs submitted: taken / taken (answer lost) / not",
        format!("{} / {} / {}", f.jobs_taken, f.jobs_taken_unanswered, f.jobs_refused),
    );
    let refusals: BTreeMap<String, usize> =
        submitted.iter().filter_map(|s| s.refused.clone()).fold(BTreeMap::new(), |mut m, r| {
            let short: String = r.chars().take(70).collect();
            *m.entry(short).or_default() += 1;
            m
        });
    for (why, n) in refusals.iter().take(4) {
        row(&format!("  not taken ×{n}"), why.clone());
    }
    row("runs submitted", f.runs_submitted.to_string());
    row("runs succeeded", f.runs_succeeded.to_string());
    row("runs lost (target 0)", f.runs_lost.to_string());
    row("runs duplicated (target 0)", f.runs_duplicated.to_string());
    row("runs that succeeded in a later attempt", f.runs_retried.to_string());
    row("node kills -9: survived / made", format!("{} / {}", blows.nodes_back, blows.node_kills));
    row(
        "hub restarts: survived / made (SIGTERM + kill -9)",
        format!(
            "{} / {} ({} + {})",
            blows.hubs_back,
            blows.hub_restarts + blows.hub_kills,
            blows.hub_restarts,
            blows.hub_kills
        ),
    );
    row("dispatch latency p50 / p90 / p99 (ms)", quantiles(&f.dispatch));
    row(
        "dispatch latency max",
        f.dispatch.last().map_or_else(String::new, |d| format!("{} ms", d.as_millis())),
    );
    row(
        "chaos over → every job over",
        if drained { seconds(drain_time) } else { format!("not within {}", seconds(DRAIN_TIMEOUT)) },
    );
    for what in &blows.not_recovered {
        row("not whole again within 30 s after", what.clone());
    }
    if !f.problems.is_empty() {
        println!("\n  {} problems; the first ones:", f.problems.len());
        for p in f.problems.iter().take(15) {
            println!("    {p}");
        }
    }
}
