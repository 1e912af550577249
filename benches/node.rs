//! Benchmarks of the node service: a real hub (`gatehouse hub serve`, SQLite) and real
//! `gatehouse node run` processes (the release binary), all on loopback, driven through the
//! hub's admin API with reqwest and the `gatehouse::protocol` types. Processes come from the
//! integration tests' helpers (`tests/common/process.rs`, `tests/common/cluster.rs`).
//!
//! 1. **Dispatch**, 3 nodes, policy `distribute`: the dispatcher claims runs and hands them to
//!    the workers (itself included) over the peer channel; each worker starts, runs and
//!    finishes its `echo` runs at the hub. Throughput: a backlog of 3,000 runs (6 jobs × 500),
//!    timed from the first submit request to the last run's `finished_ms` (hub clock; the
//!    jobs are polled every 100 ms, so polling stays small). Latency: a closed loop of 200
//!    single-run jobs, from the submit request until `GET /api/v1/jobs/{id}` (polled every
//!    2 ms) says `succeeded`. Prints how the runs spread over the nodes, and checks that every
//!    run succeeded exactly once, in attempt 1 (a failed check panics; timings are only
//!    printed, never asserted).
//! 2. **Failover**, the same 3 idle nodes: kill -9 the node the hub names `dispatcher`, submit
//!    a single-run job at once, and time kill → that run `succeeded` on another node (polled
//!    every 5 ms); 3 rounds, the killed node restarted on its data dir in between.
//! 3. **Idle memory**: one node alone in another gateway, heartbeating and otherwise idle for
//!    60 s while parts 1–2 run; then its VmRSS from `/proc/PID/status`.
//!
//! Run it with `cargo bench --bench node` once built, or only some parts with
//! `cargo bench --bench node -- dispatch failover memory`. The idle minute is the floor of
//! its run time; the backlog adds 3,000 ÷ the throughput (at 16 runs/s, 3 minutes). CPU
//! figures come from `/proc` (Linux); the machine's figure includes whatever else runs on it.

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
use figures::{TICK_MS, machine_busy, process_cpu, quantiles, seconds, thousands};
use refused::Refused;

use gatehouse::protocol::{Activity, JobSpec, JobView, NodeState, NodeView, Role, RunState, SubmitJob};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

const NODES: usize = 3;
const GATEWAY: &str = "bench";
const IDLE_GATEWAY: &str = "idle";
const BACKLOG_JOBS: u32 = 6;
const BACKLOG_PARTITIONS: u32 = 500;
const BACKLOG_RUNS: u32 = BACKLOG_JOBS * BACKLOG_PARTITIONS;
const LATENCY_JOBS: u32 = 200;
const FAILOVER_ROUNDS: usize = 3;
const IDLE_FOR: Duration = Duration::from_secs(60);

// How often we look: slowly while draining the backlog (polling mustn't be the load), fast
// where the poll interval is part of the figure.
const BACKLOG_POLL: Duration = Duration::from_millis(100);
const LATENCY_POLL: Duration = Duration::from_millis(2);
const FAILOVER_POLL: Duration = Duration::from_millis(5);
/// While failing over, how often the node list is read to see the new dispatcher.
const FAILOVER_NODES_POLL: Duration = Duration::from_millis(20);
const SETTLE_POLL: Duration = Duration::from_millis(100);

// Bounds on every wait, so a broken node or hub ends the benchmark with a message.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(400);
const LATENCY_RUN_TIMEOUT: Duration = Duration::from_secs(10);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);

const FAILOVER_TARGET: Duration = Duration::from_secs(3);
const MEMORY_TARGET_BYTES: u64 = 30_000_000;

fn main() {
    // `cargo bench --bench node -- dispatch memory` runs only those parts; no names: all.
    let run = figures::wanted;
    // reqwest is built without a crypto provider (the CLI installs ring, and so do we).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("gatehouse node benchmark: release binary, hub on SQLite, loopback, {cpus} CPUs");

    let hub = cluster::Hub::start();
    let api = Api::new(&hub.url, &hub.token);

    // First, so its idle minute passes while the other parts run.
    let idle = run("memory").then(|| {
        let key = hub.create_gateway(IDLE_GATEWAY, &[]);
        let node = cluster::Node::start(&key, "idle", &[]);
        println!("\n[memory] node 'idle' started alone in gateway '{IDLE_GATEWAY}'; read after {IDLE_FOR:?}");
        (node, Instant::now())
    });

    let (mut dispatch, mut failover, mut busy_rss) = (None, None, Vec::new());
    if run("dispatch") || run("failover") {
        let key = hub.create_gateway(GATEWAY, &["--policy", "distribute"]);
        let mut nodes: Vec<cluster::Node> =
            (1..=NODES).map(|i| cluster::Node::start(&key, &format!("n{i}"), &[])).collect();
        let list = runtime.block_on(settled(&api));
        println!("\n{NODES} nodes Online in gateway '{GATEWAY}'; {} is the dispatcher", dispatcher_of(&list));
        // The dispatcher learns its peers' room from its own next heartbeat's answer.
        std::thread::sleep(Duration::from_millis(1500));
        if run("dispatch") {
            println!("\n[dispatch] {NODES} nodes, policy distribute");
            dispatch = Some(runtime.block_on(dispatch_bench(&api, &hub, &nodes)));
            report_node_logs(&nodes, "after the dispatch part");
        }
        if run("failover") {
            println!("\n[failover] kill -9 of the dispatcher, {FAILOVER_ROUNDS} rounds");
            failover = Some(runtime.block_on(failover_bench(&api, &mut nodes)));
        }
        busy_rss = nodes
            .iter()
            .filter_map(|n| {
                let pid = n.process.as_ref()?.pid();
                Some((format!("{} (up {:.0} s)", n.name, process_age(pid)?.as_secs_f64()), rss_kb(pid)?))
            })
            .collect();
    }

    let memory = idle.map(|(node, since)| runtime.block_on(idle_memory(&api, &node, since)));
    report_hub_log(&hub);

    if let Some(figures) = &dispatch {
        print_dispatch(figures);
    }
    if let Some(rounds) = &failover {
        print_failover(rounds);
    }
    if let Some(memory) = &memory {
        print_memory(memory, &busy_rss, rss_kb(hub.process.pid()));
    }
    println!("\n(whole benchmark: {:.0} s)", started.elapsed().as_secs_f64());
}

// ---- HTTP ----

/// The admin's HTTP client and the hub's URL.
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

    async fn post<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R, Refused> {
        refused::send(self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body))
            .await
    }

    async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, Refused> {
        refused::send(self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token)).await
    }

    async fn submit(&self, name: String, partitions: u32) -> JobView {
        let job = SubmitJob {
            spec: JobSpec {
                name,
                activities: vec![Activity::Echo { message: "bench".to_owned(), partitions }],
            },
        };
        self.post(&format!("/api/v1/gateways/{GATEWAY}/jobs"), &job)
            .await
            .unwrap_or_else(|e| panic!("submitting job {}: {e}", job.spec.name))
    }

    async fn job(&self, id: &str) -> JobView {
        self.get(&format!("/api/v1/jobs/{id}")).await.unwrap_or_else(|e| panic!("reading job {id}: {e}"))
    }

    async fn nodes(&self, gateway: &str) -> Vec<NodeView> {
        self.get(&format!("/api/v1/gateways/{gateway}/nodes"))
            .await
            .unwrap_or_else(|e| panic!("listing the nodes of {gateway}: {e}"))
    }
}

/// A job that ended in anything but success stops the benchmark, with its runs' errors.
fn check_not_failed(job: &JobView) {
    if matches!(job.state, RunState::Failed | RunState::Cancelled) {
        let errors: Vec<String> = job
            .runs
            .iter()
            .filter(|r| r.state != RunState::Succeeded)
            .take(5)
            .map(|r| format!("run {} on {:?}: {:?} {:?}", r.id, r.node_name, r.state, r.error))
            .collect();
        panic!("job {} ended {:?}:\n{}", job.name, job.state, errors.join("\n"));
    }
}

/// Milliseconds since the Unix epoch, the hub's clock (same machine).
fn unix_ms() -> i64 {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap()
}

fn millis_to_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms.max(0)).unwrap())
}

// ---- the gateway ----

/// Waits until the bench gateway has all its nodes Online and exactly one dispatcher; returns
/// the list.
async fn settled(api: &Api) -> Vec<NodeView> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let list = api.nodes(GATEWAY).await;
        let online = list.iter().filter(|n| n.status == NodeState::Online).count();
        let dispatchers = list.iter().filter(|n| n.role == Role::Dispatcher).count();
        if list.len() == NODES && online == NODES && dispatchers == 1 {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes didn't settle within {SETTLE_TIMEOUT:?}: {}",
            brief(&list)
        );
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

fn dispatcher_of(list: &[NodeView]) -> &str {
    list.iter().find(|n| n.role == Role::Dispatcher).map_or("?", |n| n.name.as_str())
}

fn brief(list: &[NodeView]) -> String {
    let each: Vec<String> = list
        .iter()
        .map(|n| format!("{} {:?} {:?} {}", n.name, n.status, n.role, n.reason.as_deref().unwrap_or("")))
        .collect();
    each.join("; ")
}

// ---- dispatch ----

/// What the dispatch part measured.
struct DispatchFigures {
    submit: Duration,
    /// First submit request → the last backlog run's `finished_ms` (hub clock).
    drain: Duration,
    /// First submit request → the poller saw the last job `succeeded`.
    drain_seen: Duration,
    backlog_per_node: BTreeMap<String, usize>,
    cpu: CpuFigures,
    latencies: Vec<Duration>,
    /// `queued_ms` → `finished_ms` of the single-run jobs (hub clock, whole ms).
    hub_latencies: Vec<Duration>,
    submit_requests: Vec<Duration>,
    latency_per_node: BTreeMap<String, usize>,
    verified: usize,
}

impl DispatchFigures {
    fn runs_per_second(&self) -> f64 {
        f64::from(BACKLOG_RUNS) / self.drain.as_secs_f64()
    }
}

async fn dispatch_bench(api: &Api, hub: &cluster::Hub, nodes: &[cluster::Node]) -> DispatchFigures {
    let node_pids: Vec<u32> = nodes.iter().map(|n| n.process.as_ref().unwrap().pid()).collect();
    let cpu_before = CpuSample::take(hub.process.pid(), &node_pids);

    // (a) a backlog: the dispatcher starts on it while the rest is still being submitted.
    let started = Instant::now();
    let started_ms = unix_ms();
    let mut ids = Vec::new();
    for j in 0..BACKLOG_JOBS {
        ids.push(api.submit(format!("backlog-{j}"), BACKLOG_PARTITIONS).await.id);
    }
    let submit = started.elapsed();
    println!("  submitted {BACKLOG_RUNS} runs in {:.2} s", submit.as_secs_f64());
    let deadline = started + DRAIN_TIMEOUT;
    let mut backlog = Vec::new();
    // Jobs finish roughly in order: look only at the first unfinished one.
    while backlog.len() < ids.len() {
        let job = api.job(&ids[backlog.len()]).await;
        check_not_failed(&job);
        if job.state == RunState::Succeeded {
            backlog.push(job);
            continue;
        }
        if Instant::now() >= deadline {
            diagnose(api, hub, nodes).await;
            panic!(
                "only {} of {BACKLOG_JOBS} backlog jobs succeeded within {DRAIN_TIMEOUT:?}; job {} has {}",
                backlog.len(),
                job.name,
                run_states(&job)
            );
        }
        tokio::time::sleep(BACKLOG_POLL).await;
    }
    let drain_seen = started.elapsed();
    let cpu = CpuSample::take(hub.process.pid(), &node_pids).since(&cpu_before);
    let last_finished = backlog.iter().flat_map(|j| &j.runs).filter_map(|r| r.finished_ms).max().unwrap();
    let drain = millis_to_duration(last_finished - started_ms);
    println!(
        "  all succeeded {:.2} s after the first submit (seen after {:.2} s): {:.0} runs/s",
        drain.as_secs_f64(),
        drain_seen.as_secs_f64(),
        f64::from(BACKLOG_RUNS) / drain.as_secs_f64()
    );
    let backlog_per_node = per_node(&backlog);
    println!("  runs per node: {}", spread(&backlog_per_node));

    // (b) a closed loop of single-run jobs.
    let mut latencies = Vec::new();
    let mut hub_latencies = Vec::new();
    let mut submit_requests = Vec::new();
    let mut singles = Vec::new();
    for j in 0..LATENCY_JOBS {
        let start = Instant::now();
        let id = api.submit(format!("latency-{j}"), 1).await.id;
        submit_requests.push(start.elapsed());
        let job = loop {
            let job = api.job(&id).await;
            check_not_failed(&job);
            if job.state == RunState::Succeeded {
                latencies.push(start.elapsed());
                break job;
            }
            assert!(
                start.elapsed() < LATENCY_RUN_TIMEOUT,
                "latency job {j} didn't succeed within {LATENCY_RUN_TIMEOUT:?}"
            );
            tokio::time::sleep(LATENCY_POLL).await;
        };
        let run = &job.runs[0];
        hub_latencies.push(millis_to_duration(run.finished_ms.unwrap() - run.queued_ms));
        singles.push(job);
    }
    latencies.sort();
    hub_latencies.sort();
    submit_requests.sort();
    let latency_per_node = per_node(&singles);
    println!(
        "  {LATENCY_JOBS} single-run jobs, submit → succeeded p50 / p90 / p99: {} ms; runs per node: {}",
        quantiles(&latencies),
        spread(&latency_per_node)
    );

    let names: HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let verified = verify(backlog.iter().chain(&singles), &names);
    println!("  checked: {verified} runs succeeded exactly once, in attempt 1");
    DispatchFigures {
        submit,
        drain,
        drain_seen,
        backlog_per_node,
        cpu,
        latencies,
        hub_latencies,
        submit_requests,
        latency_per_node,
        verified,
    }
}

/// How many runs of the job are in each state (and on which node and attempt, if not done).
fn run_states(job: &JobView) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for run in &job.runs {
        let key = if run.state == RunState::Succeeded {
            "succeeded".to_owned()
        } else {
            format!(
                "{} on {} attempt {}",
                run.state.as_str(),
                run.node_name.as_deref().unwrap_or("-"),
                run.attempt
            )
        };
        *counts.entry(key).or_default() += 1;
    }
    counts.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
}

fn per_node(jobs: &[JobView]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for run in jobs.iter().flat_map(|j| &j.runs) {
        *counts.entry(run.node_name.clone().unwrap_or_else(|| "?".to_owned())).or_default() += 1;
    }
    counts
}

fn spread(counts: &BTreeMap<String, usize>) -> String {
    let each: Vec<String> = counts.iter().map(|(name, n)| format!("{name} {n}")).collect();
    each.join(" / ")
}

/// Every run of the jobs succeeded, once (one run id, one record), in attempt 1, on one of
/// `nodes`, with a finish time. Panics with the first problems otherwise; returns the count.
fn verify<'a>(jobs: impl Iterator<Item = &'a JobView>, nodes: &HashSet<&str>) -> usize {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for job in jobs {
        let expected = match job.name.strip_prefix("backlog-") {
            Some(_) => BACKLOG_PARTITIONS as usize,
            None => 1,
        };
        if job.runs.len() != expected {
            problems.push(format!("job {} has {} runs, not {expected}", job.name, job.runs.len()));
        }
        for run in &job.runs {
            let on_a_node = run.node_name.as_deref().is_some_and(|n| nodes.contains(n));
            if !seen.insert(run.id.clone()) {
                problems.push(format!("run {} appears twice", run.id));
            }
            if run.state != RunState::Succeeded || run.attempt != 1 || !on_a_node || run.finished_ms.is_none()
            {
                problems.push(format!(
                    "run {} of job {}: {:?}, attempt {}, on {:?}, finished {:?}",
                    run.id, job.name, run.state, run.attempt, run.node_name, run.finished_ms
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems with the runs; the first ones:\n{}",
        problems.len(),
        problems.iter().take(10).map(String::as_str).collect::<Vec<_>>().join("\n")
    );
    seen.len()
}

// ---- failover ----

/// One failover round.
struct Round {
    killed: String,
    /// The killed node's last heartbeat → the kill (the hub's clock); its lease lapses 2 s
    /// after its last heartbeat.
    since_heartbeat: Duration,
    /// The node that took over, and kill → the hub's node list first named it `dispatcher`
    /// (polled every 20 ms; `None`: not before the run succeeded).
    new_dispatcher: (String, Option<Duration>),
    /// Kill → the job's run `succeeded`, as the poller saw it.
    succeeded: Duration,
    ran_on: String,
    attempt: u32,
}

impl Round {
    fn describe(&self) -> String {
        let (name, at) = &self.new_dispatcher;
        let named = at.map_or_else(|| "with the run".to_owned(), |at| format!("after {}", seconds(at)));
        format!(
            "killed {} ({} ms after its last heartbeat); hub named {name} dispatcher {named}; run succeeded on {} (attempt {}) after {}",
            self.killed,
            self.since_heartbeat.as_millis(),
            self.ran_on,
            self.attempt,
            seconds(self.succeeded)
        )
    }
}

async fn failover_bench(api: &Api, nodes: &mut [cluster::Node]) -> Vec<Round> {
    let mut rounds = Vec::new();
    for round in 0..FAILOVER_ROUNDS {
        settled(api).await;
        // Let every node's room reach the dispatcher, and kill at a random point of its
        // heartbeat cycle.
        tokio::time::sleep(Duration::from_millis(1500 + rand::random_range(0..1000))).await;
        let list = settled(api).await;
        let victim_name = dispatcher_of(&list).to_owned();
        let last_heartbeat_ms = list.iter().find(|n| n.name == victim_name).and_then(|n| n.last_heartbeat_ms);
        let victim = nodes.iter_mut().find(|n| n.name == victim_name).unwrap();

        let killed = Instant::now();
        let killed_ms = unix_ms();
        victim.process.as_mut().unwrap().kill9();
        let id = api.submit(format!("failover-{round}"), 1).await.id;
        let mut new_dispatcher = None;
        let mut nodes_read = killed;
        let job = loop {
            let job = api.job(&id).await;
            check_not_failed(&job);
            if job.state == RunState::Succeeded {
                break job;
            }
            if new_dispatcher.is_none() && nodes_read.elapsed() >= FAILOVER_NODES_POLL {
                nodes_read = Instant::now();
                let list = api.nodes(GATEWAY).await;
                if let Some(n) = list.iter().find(|n| n.role == Role::Dispatcher && n.name != victim_name) {
                    new_dispatcher = Some((n.name.clone(), Some(killed.elapsed())));
                }
            }
            assert!(
                killed.elapsed() < FAILOVER_TIMEOUT,
                "round {round}: the run didn't succeed within {FAILOVER_TIMEOUT:?} of killing {victim_name}"
            );
            tokio::time::sleep(FAILOVER_POLL).await;
        };
        let succeeded = killed.elapsed();
        let run = &job.runs[0];
        let ran_on = run.node_name.clone().unwrap_or_default();
        assert_ne!(ran_on, victim_name, "round {round}: the run 'succeeded' on the killed node");
        let new_dispatcher = match new_dispatcher {
            Some(seen) => seen,
            None => (dispatcher_of(&api.nodes(GATEWAY).await).to_owned(), None),
        };
        let result = Round {
            killed: victim_name,
            since_heartbeat: millis_to_duration(killed_ms - last_heartbeat_ms.unwrap_or(killed_ms)),
            new_dispatcher,
            succeeded,
            ran_on,
            attempt: run.attempt,
        };
        println!("  round {}: {}", round + 1, result.describe());
        rounds.push(result);
        // Back to three nodes, on the same data dir.
        victim.run(&[]);
    }
    settled(api).await;
    rounds
}

// ---- idle memory ----

struct Memory {
    idle_for: Duration,
    rss_kb: u64,
    hwm_kb: u64,
    cpu: Duration,
    status: String,
}

/// Waits until the idle node has been up `IDLE_FOR`, then reads its memory.
async fn idle_memory(api: &Api, node: &cluster::Node, since: Instant) -> Memory {
    let pid = node.process.as_ref().unwrap().pid();
    let left = (since + IDLE_FOR).saturating_duration_since(Instant::now());
    if !left.is_zero() {
        println!("\n[memory] waiting {:.0} s more for the idle node", left.as_secs_f64());
        tokio::time::sleep(left).await;
    }
    let list = api.nodes(IDLE_GATEWAY).await;
    let status =
        list.first().map_or_else(|| "missing".to_owned(), |n| format!("{:?}, {:?}", n.status, n.role));
    let rss = rss_kb(pid).unwrap_or_else(|| panic!("no VmRSS for the idle node (pid {pid}); is it running?"));
    Memory {
        idle_for: since.elapsed(),
        rss_kb: rss,
        hwm_kb: proc_status_kb(pid, "VmHWM").unwrap_or(0),
        cpu: process_cpu(&pid.to_string()),
        status,
    }
}

fn rss_kb(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmRSS")
}

/// How long the process has been running, from `/proc/PID/stat` and `/proc/uptime`.
#[allow(clippy::cast_precision_loss, reason = "clock ticks since boot, as seconds")]
fn process_age(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // starttime is field 22; fields after the command name start at field 3.
    let started_ticks: u64 = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 =
        std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    let age = uptime - started_ticks as f64 * TICK_MS as f64 / 1000.0;
    Some(Duration::from_secs_f64(age.max(0.0)))
}

/// A `kB` line of `/proc/PID/status`.
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---- logs ----

/// What the hub and the nodes say, for a benchmark that is about to give up.
async fn diagnose(api: &Api, hub: &cluster::Hub, nodes: &[cluster::Node]) {
    for n in api.nodes(GATEWAY).await {
        println!(
            "  hub says: {} {:?} {:?} {} running {} of {}, unreachable {:?}",
            n.name,
            n.status,
            n.role,
            n.reason.as_deref().unwrap_or(""),
            n.metrics.runs_running,
            n.metrics.runs_limit,
            n.metrics.unreachable_peers
        );
    }
    for node in nodes {
        let status = std::fs::read_to_string(node.home.path().join("status.json")).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
        println!(
            "  {} status.json: role {}, lease {}, running {} of {}",
            node.name,
            value["role"],
            value["lease_epoch"],
            value["metrics"]["runs_running"],
            value["metrics"]["runs_limit"]
        );
    }
    report_node_logs(nodes, "so far");
    let log = hub.process.stderr();
    let tail: Vec<&str> = log.lines().rev().take(10).collect();
    println!("  the hub's last log lines:");
    for line in tail.iter().rev() {
        println!("    {line}");
    }
}

/// Warnings, errors and runs a worker didn't start, in the nodes' log files.
fn report_node_logs(nodes: &[cluster::Node], when: &str) {
    for node in nodes {
        let mut text = String::new();
        for entry in std::fs::read_dir(node.home.path().join("logs")).into_iter().flatten().flatten() {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        let notable: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("not starting the run")
                    || l.contains("didn't take")
            })
            .collect();
        if !notable.is_empty() {
            println!("  {} logged {} notable lines {when}; the first ones:", node.name, notable.len());
            for line in notable.iter().take(5) {
                println!("    {line}");
            }
        }
    }
}

fn report_hub_log(hub: &cluster::Hub) {
    let log = hub.process.stderr();
    let notable: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("went back to the queue"))
        .collect();
    if !notable.is_empty() {
        println!("\nthe hub logged {} notable lines; the first ones:", notable.len());
        for line in notable.iter().take(5) {
            println!("    {line}");
        }
    }
}

// ---- CPU time from /proc ----

struct CpuSample {
    hub: Duration,
    nodes: Vec<Duration>,
    bench: Duration,
    machine_busy: Duration,
}

struct CpuFigures {
    hub: Duration,
    nodes: Vec<Duration>,
    bench: Duration,
    machine_busy: Duration,
}

impl CpuSample {
    fn take(hub_pid: u32, node_pids: &[u32]) -> CpuSample {
        CpuSample {
            hub: process_cpu(&hub_pid.to_string()),
            nodes: node_pids.iter().map(|pid| process_cpu(&pid.to_string())).collect(),
            bench: process_cpu("self"),
            machine_busy: machine_busy(),
        }
    }

    fn since(&self, before: &CpuSample) -> CpuFigures {
        CpuFigures {
            hub: self.hub.saturating_sub(before.hub),
            nodes: self
                .nodes
                .iter()
                .zip(&before.nodes)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            bench: self.bench.saturating_sub(before.bench),
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
        }
    }
}

// ---- the table ----

/// A target with whether it was met.
fn verdict(target: &str, met: bool) -> String {
    format!("{target}: {}", if met { "met" } else { "missed" })
}

fn row(what: &str, figure: &str, note: &str) {
    println!("  {what:<44} {figure:<26} {note}");
}

fn print_dispatch(f: &DispatchFigures) {
    println!(
        "\n== Dispatch: {NODES} nodes (`gatehouse node run`, release), policy distribute, echo runs, hub on SQLite =="
    );
    row(&format!("submit {BACKLOG_JOBS} jobs × {BACKLOG_PARTITIONS} runs"), &seconds(f.submit), "");
    row(
        &format!("{} runs: first submit → all succeeded", thousands(f64::from(BACKLOG_RUNS))),
        &seconds(f.drain),
        &format!("hub clock (poller saw it after {})", seconds(f.drain_seen)),
    );
    row("throughput", &format!("{} runs/s", thousands(f.runs_per_second())), "");
    row("backlog runs per node", &spread(&f.backlog_per_node), "");
    let nodes: Duration = f.cpu.nodes.iter().sum();
    let each: Vec<String> = f.cpu.nodes.iter().map(|d| format!("{:.1}", d.as_secs_f64())).collect();
    row("CPU while draining: hub", &seconds(f.cpu.hub), "");
    row("CPU while draining: nodes", &seconds(nodes), &format!("{} s each", each.join(" / ")));
    row("CPU while draining: benchmark (poller)", &seconds(f.cpu.bench), "");
    row("CPU while draining: whole machine", &seconds(f.cpu.machine_busy), "");
    row(&format!("{LATENCY_JOBS} single-run jobs, closed loop"), "p50 / p90 / p99 (ms)", "");
    row("  submit → seen succeeded", &quantiles(&f.latencies), &format!("polled every {LATENCY_POLL:?}"));
    row("  queued → finished (hub clock, whole ms)", &quantiles(&f.hub_latencies), "");
    row("  submit request alone", &quantiles(&f.submit_requests), "");
    row("single-run jobs per node", &spread(&f.latency_per_node), "");
    row("runs succeeded once, attempt 1", &thousands(f64::from(u32::try_from(f.verified).unwrap())), "all");
}

fn print_failover(rounds: &[Round]) {
    println!(
        "\n== Failover: {NODES} idle nodes, kill -9 of the dispatcher, then a single-run job: kill → run succeeded elsewhere =="
    );
    for (i, r) in rounds.iter().enumerate() {
        let (name, at) = &r.new_dispatcher;
        let named = at.map_or_else(|| "with the run".to_owned(), |at| format!("at {}", seconds(at)));
        row(
            &format!(
                "round {}: kill {}, {} ms after its heartbeat",
                i + 1,
                r.killed,
                r.since_heartbeat.as_millis()
            ),
            &seconds(r.succeeded),
            &format!("{name} named dispatcher {named}; ran on {} (attempt {})", r.ran_on, r.attempt),
        );
    }
    let total: Duration = rounds.iter().map(|r| r.succeeded).sum();
    let mean = total / u32::try_from(rounds.len().max(1)).unwrap();
    let max = rounds.iter().map(|r| r.succeeded).max().unwrap_or_default();
    row(
        "mean / max",
        &format!("{} / {}", seconds(mean), seconds(max)),
        &format!("target {}", verdict("< 3 s", max < FAILOVER_TARGET)),
    );
}

#[allow(clippy::cast_precision_loss, reason = "kilobytes shown as megabytes")]
fn megabytes(kb: u64) -> String {
    format!("{:.1} MB", (kb * 1024) as f64 / 1e6)
}

#[allow(clippy::cast_precision_loss, reason = "a count of kilobytes, printed")]
fn print_memory(m: &Memory, busy: &[(String, u64)], hub_kb: Option<u64>) {
    println!("\n== Idle node memory: one node alone in its gateway (heartbeating, its own dispatcher) ==");
    row(
        &format!("VmRSS after {:.0} s idle", m.idle_for.as_secs_f64()),
        &format!("{} ({} kB)", megabytes(m.rss_kb), thousands(m.rss_kb as f64)),
        &format!("target {}", verdict("< 30 MB", m.rss_kb * 1024 < MEMORY_TARGET_BYTES)),
    );
    row("VmHWM (peak RSS)", &megabytes(m.hwm_kb), "");
    row("CPU over its life", &seconds(m.cpu), &format!("hub says: {}", m.status));
    for (name, kb) in busy {
        row(&format!("for comparison: VmRSS of {name}"), &megabytes(*kb), "");
    }
    if let Some(kb) = hub_kb {
        row("for comparison: VmRSS of the hub", &megabytes(kb), "");
    }
}
