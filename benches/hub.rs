//! Benchmarks of the hub: the real `gatehouse hub serve` as a child process, spoken to over
//! loopback HTTP with reqwest and the `gatehouse::protocol` types, the way nodes will.
//!
//! 1. **Queue**, on SQLite and on PostgreSQL, with 4 simulated nodes heartbeating every second:
//!    the node whose heartbeat answer says `dispatcher` claims runs, assigns them round-robin to
//!    the 4 nodes, and each node acknowledges its own runs (`finish`), one task per node.
//!    Throughput: a backlog of 10,000 `echo` runs (20 jobs × 500 partitions), timed from the
//!    start of dispatching to the last acknowledgement. Latency: a closed loop of 300
//!    single-run jobs, from the submit request to the acknowledgement (and claim → ack).
//!    Afterwards every run must have succeeded exactly once, in attempt 1 (a failed check
//!    panics; timings are only printed, never asserted).
//! 2. **Failover**, on SQLite with 3 nodes: the dispatcher stops heartbeating after its heartbeat
//!    at time T; we time from T until another node's heartbeat answer says `dispatcher`
//!    (including the wait for that node's next heartbeat), 5 times.
//!
//! Run it with `cargo bench --bench hub` (under a minute once built), or only some parts with
//! `cargo bench --bench hub -- sqlite postgres failover`. PostgreSQL is a throwaway cluster
//! from `tests/common/postgres.rs` (fsync off); without PostgreSQL installed that part is
//! skipped with a note. CPU figures come from `/proc` (Linux); the machine's figure includes
//! whatever else runs on it.

#![allow(clippy::unwrap_used, reason = "a benchmark: a failed setup step should stop it loudly")]

#[allow(dead_code, reason = "the benchmark uses only start(), url() and dir()")]
#[path = "../tests/common/postgres.rs"]
mod postgres;

#[path = "support/figures.rs"]
mod figures;
#[path = "support/refused.rs"]
mod refused;
use figures::{machine_busy, percentile, process_cpu, quantiles, seconds, thousands};
use refused::Refused;

use gatehouse::protocol::{
    Activity, AssignRun, ClaimRequest, CreateGateway, CreatedGateway, FinishRun, GatewaySettings, Heartbeat,
    HeartbeatResponse, JobSpec, JobView, NodeMetrics, RegisterRequest, RegisterResponse, Role, RunState,
    RunView, SubmitJob,
};
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const QUEUE_NODES: usize = 4;
const BACKLOG_JOBS: u32 = 20;
const BACKLOG_PARTITIONS: u32 = 500;
const BACKLOG_RUNS: u32 = BACKLOG_JOBS * BACKLOG_PARTITIONS;
const LATENCY_JOBS: u32 = 300;
const CLAIM_MAX: u32 = 64;
const CLAIM_WAIT_MS: u64 = 1000;
/// Tasks per node that acknowledge its runs, each one run at a time; the dispatcher assigns
/// with as many concurrent requests as there are such tasks in all. (At 3 instead of 1,
/// throughput on SQLite stayed within 10 %: the client's concurrency isn't the limit.)
const FINISH_TASKS_PER_NODE: usize = 1;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const FAILOVER_NODES: usize = 3;
const FAILOVER_ROUNDS: usize = 5;

// Bounds on every wait, so a broken hub ends the benchmark with a message instead of a hang.
const HUB_START_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
const LATENCY_RUN_TIMEOUT: Duration = Duration::from_secs(10);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// Failover rounds may be retried when the lease moves on its own; at most this many tries.
const FAILOVER_TRIES: usize = 3 * FAILOVER_ROUNDS;

fn main() {
    // `cargo bench --bench hub -- sqlite failover` runs only those parts; no names: all of them.
    let run = figures::wanted;
    // reqwest is built without a crypto provider (the CLI installs ring, and so do we).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("gatehouse hub benchmark: release binary, loopback HTTP, {cpus} CPUs");

    let (mut sqlite, mut failover) = (None, None);
    if run("sqlite") || run("failover") {
        let hub = Hub::start(None);
        if run("sqlite") {
            println!("\n[SQLite] queue with {QUEUE_NODES} nodes");
            sqlite = Some(runtime.block_on(queue_bench(&hub, "sqlite", None)));
        }
        if run("failover") {
            println!("\n[SQLite] dispatcher failover with {FAILOVER_NODES} nodes");
            failover = Some(runtime.block_on(failover_bench(&hub)));
        }
        report_hub_log(&hub, "SQLite");
    }

    let mut postgres = None;
    if run("postgres") {
        println!("\n[PostgreSQL] starting a throwaway cluster");
        match std::panic::catch_unwind(postgres::Postgres::start) {
            Ok(cluster) => {
                let hub = Hub::start(Some(&cluster.url()));
                println!("[PostgreSQL] queue with {QUEUE_NODES} nodes");
                postgres = Some(runtime.block_on(queue_bench(&hub, "postgres", postmaster_pid(&cluster))));
                report_hub_log(&hub, "PostgreSQL");
            }
            Err(_) => println!("[PostgreSQL] skipped: the cluster didn't start (see the message above)"),
        }
    }

    print_queue_table(sqlite.as_ref(), postgres.as_ref());
    if let Some(failover) = &failover {
        print_failover(failover);
    }
    println!("\n(whole benchmark: {:.0} s)", started.elapsed().as_secs_f64());
}

// ---- the hub process ----

/// A running `gatehouse hub serve` with its own data dir; killed on drop.
struct Hub {
    child: Child,
    url: String,
    admin_token: String,
    home: tempfile::TempDir,
}

impl Hub {
    /// Starts the hub on a free loopback port (SQLite in its data dir unless `db` is given) and
    /// reads its address and admin token from stdout.
    fn start(db: Option<&str>) -> Hub {
        let home = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(home.path().join("hub.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        command.args(["hub", "serve", "--listen", "127.0.0.1:0"]);
        if let Some(db) = db {
            command.args(["--db", db]);
        }
        let mut child = command
            .env("GATEHOUSE_HOME", home.path())
            .env_remove("GATEHOUSE_HUB_DB")
            .env_remove("GATEHOUSE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        // From here on a panic drops `hub`, which kills the process.
        let mut hub = Hub { child, url: String::new(), admin_token: String::new(), home };
        let deadline = Instant::now() + HUB_START_TIMEOUT;
        while hub.url.is_empty() || hub.admin_token.is_empty() {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        url.trim().clone_into(&mut hub.url);
                    } else if let Some(token) = line.strip_prefix("admin token: ") {
                        token.trim().clone_into(&mut hub.admin_token);
                    }
                }
                Err(e) => panic!(
                    "the hub printed no address and admin token within {HUB_START_TIMEOUT:?} ({e}); its log:\n{}",
                    hub.log()
                ),
            }
        }
        hub
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("hub.log")).unwrap_or_default()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Warnings, errors and re-queued runs in the hub's log are worth knowing about.
fn report_hub_log(hub: &Hub, label: &str) {
    let log = hub.log();
    let notable: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("went back to the queue"))
        .collect();
    if !notable.is_empty() {
        println!("[{label}] the hub logged {} notable lines; the first ones:", notable.len());
        for line in notable.iter().take(5) {
            println!("    {line}");
        }
    }
}

// ---- HTTP ----

/// One HTTP client (its own connection pool, like a separate machine) and the hub's URL.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Api {
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap();
        Api { http, base: base.to_owned() }
    }

    async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &B,
    ) -> Result<R, Refused> {
        refused::send(self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(body)).await
    }

    async fn get<R: DeserializeOwned>(&self, token: &str, path: &str) -> Result<R, Refused> {
        refused::send(self.http.get(format!("{}{path}", self.base)).bearer_auth(token)).await
    }
}

// ---- nodes ----

/// A simulated node: registered, with its own token and HTTP client.
struct Node {
    index: usize,
    id: String,
    name: String,
    token: String,
    api: Api,
}

/// A gateway with `count` registered nodes, named `{label}-{i}`.
async fn gateway_with_nodes(hub: &Hub, label: &str, count: usize) -> (String, Arc<[Arc<Node>]>) {
    let admin = Api::new(&hub.url);
    let create = CreateGateway { name: format!("bench-{label}"), settings: GatewaySettings::default() };
    let created: CreatedGateway = admin
        .post(&hub.admin_token, "/api/v1/gateways", &create)
        .await
        .unwrap_or_else(|e| panic!("creating gateway bench-{label}: {e}"));
    let mut nodes = Vec::new();
    for index in 0..count {
        let api = Api::new(&hub.url);
        let name = format!("{label}-{index}");
        let request = RegisterRequest {
            name: name.clone(),
            machine_id: format!("bench-machine-{label}-{index}"),
            version: VERSION.to_owned(),
            peer_address: format!("127.0.0.1:{}", 7100 + index),
            encryption_thumbprint: None,
            public_key: None,
        };
        let answer: RegisterResponse = api
            .post(&created.keys.primary, "/api/v1/register", &request)
            .await
            .unwrap_or_else(|e| panic!("registering node {name}: {e}"));
        nodes.push(Arc::new(Node { index, id: answer.node_id, name, token: answer.node_token, api }));
    }
    (created.gateway.id, nodes.into())
}

/// What one heartbeat answer said, and when.
#[derive(Debug, Clone, Copy)]
struct Beat {
    role: Role,
    epoch: i64,
    sent: Instant,
    received: Instant,
}

enum Control {
    /// Stop heartbeating; answers with when the last successful heartbeat was sent.
    Pause(oneshot::Sender<Option<Instant>>),
    /// Heartbeat again, the first time after this delay.
    Resume(Duration),
}

/// A node's heartbeat task: its latest answer, and a way to pause and resume it.
struct Heartbeats {
    beats: watch::Receiver<Option<Beat>>,
    control: mpsc::Sender<Control>,
    failures: Arc<AtomicU32>,
}

/// Heartbeats every second, the first after `first_after`, until `stop`.
fn start_heartbeats(node: Arc<Node>, first_after: Duration, stop: CancellationToken) -> Heartbeats {
    let (publish, beats) = watch::channel(None);
    let (control, mut orders) = mpsc::channel(4);
    let failures = Arc::new(AtomicU32::new(0));
    let failed = Arc::clone(&failures);
    tokio::spawn(async move {
        let body = Heartbeat {
            version: VERSION.to_owned(),
            metrics: NodeMetrics::default(),
            peer_address: None,
            public_key: None,
            restarted: false,
            key_proof: None,
        };
        let mut next = tokio::time::Instant::now() + first_after;
        let mut paused = false;
        let mut last_ok = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                order = orders.recv() => match order {
                    Some(Control::Pause(reply)) => {
                        paused = true;
                        let _ = reply.send(last_ok);
                    }
                    Some(Control::Resume(after)) => {
                        paused = false;
                        next = tokio::time::Instant::now() + after;
                    }
                    None => return,
                },
                () = tokio::time::sleep_until(next), if !paused => {
                    let sent = Instant::now();
                    let answer = tokio::select! {
                        () = stop.cancelled() => return,
                        answer = node.api.post::<_, HeartbeatResponse>(&node.token, "/api/v1/heartbeat", &body) => answer,
                    };
                    match answer {
                        Ok(answer) => {
                            last_ok = Some(sent);
                            let received = Instant::now();
                            publish.send_replace(Some(Beat { role: answer.role, epoch: answer.lease_epoch, sent, received }));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("heartbeat of {} failed: {e}", node.name);
                        }
                    }
                    // A fixed cadence; a heartbeat that took longer than a period is followed at once.
                    next = (next + HEARTBEAT_EVERY).max(tokio::time::Instant::now());
                }
            }
        }
    });
    Heartbeats { beats, control, failures }
}

/// Waits until exactly one node's latest heartbeat (each from the last 1.5 s) says
/// `dispatcher`; returns its index.
async fn settled_dispatcher(heartbeats: &[Heartbeats]) -> usize {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let beats: Vec<Option<Beat>> = heartbeats.iter().map(|h| *h.beats.borrow()).collect();
        let fresh =
            beats.iter().all(|b| b.is_some_and(|b| b.received.elapsed() < Duration::from_millis(1500)));
        let dispatchers: Vec<usize> =
            (0..beats.len()).filter(|&i| beats[i].is_some_and(|b| b.role == Role::Dispatcher)).collect();
        if fresh && dispatchers.len() == 1 {
            return dispatchers[0];
        }
        assert!(
            Instant::now() < deadline,
            "no single dispatcher among the nodes within {SETTLE_TIMEOUT:?}; latest heartbeats: {beats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- the queue ----

/// A run the dispatcher assigned to a node, on its way to that node's finish task.
struct Assigned {
    run_id: String,
    attempt: u32,
    claimed: Instant,
}

/// One run's end as the benchmark saw it: acknowledged by `node`, or failed to be.
struct Ack {
    run_id: String,
    node: usize,
    claimed: Instant,
    acked: Instant,
    outcome: Result<(), String>,
}

/// The node's own work: acknowledge every run assigned to it, one at a time.
async fn finish_lane(
    node: Arc<Node>,
    mut todo: mpsc::Receiver<Assigned>,
    done: mpsc::UnboundedSender<Ack>,
    stop: CancellationToken,
) {
    loop {
        let run = tokio::select! {
            () = stop.cancelled() => return,
            run = todo.recv() => match run { Some(run) => run, None => return },
        };
        let body = FinishRun {
            attempt: run.attempt,
            succeeded: true,
            result: Some(serde_json::Value::String("bench".to_owned())),
            error: None,
        };
        let path = format!("/api/v1/runs/{}/finish", run.run_id);
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            answer = node.api.post::<_, RunView>(&node.token, &path, &body) => answer,
        };
        let outcome = outcome.map(drop).map_err(|e| format!("finish: {e}"));
        let ack = Ack {
            run_id: run.run_id,
            node: node.index,
            claimed: run.claimed,
            acked: Instant::now(),
            outcome,
        };
        let _ = done.send(ack);
    }
}

/// Every node runs this; it works while the node's latest heartbeat says `dispatcher`:
/// claim a batch, assign it round-robin to all nodes (one assigning task per finish task,
/// concurrently), hand each assigned run to that finish task, and claim again.
async fn dispatch_loop(
    me: Arc<Node>,
    nodes: Arc<[Arc<Node>]>,
    mut beats: watch::Receiver<Option<Beat>>,
    lanes: Arc<[mpsc::Sender<Assigned>]>,
    done: mpsc::UnboundedSender<Ack>,
    stop: CancellationToken,
) {
    let mut next_worker = 0;
    loop {
        let epoch = loop {
            let beat = *beats.borrow_and_update();
            if let Some(beat) = beat.filter(|b| b.role == Role::Dispatcher) {
                break beat.epoch;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                changed = beats.changed() => if changed.is_err() { return },
            }
        };
        let request =
            ClaimRequest { lease_epoch: epoch, max: CLAIM_MAX, wait_ms: CLAIM_WAIT_MS, again: false };
        let answer = tokio::select! {
            () = stop.cancelled() => return,
            answer = me.api.post::<_, Vec<RunView>>(&me.token, "/api/v1/dispatch/claim", &request) => answer,
        };
        let claimed = Instant::now();
        let runs = match answer {
            Ok(runs) => runs,
            Err(e) if e.status == Some(StatusCode::CONFLICT) => {
                // The lease moved (or its epoch did): wait for the next heartbeat's word.
                let _ = tokio::time::timeout(2 * HEARTBEAT_EVERY, beats.changed()).await;
                continue;
            }
            Err(e) => {
                eprintln!("claim by {} failed: {e}", me.name);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Lane k belongs to node k % nodes; consecutive runs go to consecutive nodes.
        let mut groups: Vec<Vec<RunView>> = (0..lanes.len()).map(|_| Vec::new()).collect();
        for run in runs {
            groups[next_worker].push(run);
            next_worker = (next_worker + 1) % lanes.len();
        }
        let mut assigning = tokio::task::JoinSet::new();
        for (target, group) in groups.into_iter().enumerate().filter(|(_, g)| !g.is_empty()) {
            let (me, worker) = (Arc::clone(&me), Arc::clone(&nodes[target % nodes.len()]));
            let (lane, done) = (lanes[target].clone(), done.clone());
            assigning.spawn(async move {
                for run in group {
                    let body =
                        AssignRun { lease_epoch: epoch, attempt: run.attempt, node_id: worker.id.clone() };
                    let path = format!("/api/v1/runs/{}/assign", run.id);
                    match me.api.post::<_, RunView>(&me.token, &path, &body).await {
                        Ok(_) => {
                            let _ =
                                lane.send(Assigned { run_id: run.id, attempt: run.attempt, claimed }).await;
                        }
                        Err(e) => {
                            let outcome = Err(format!("assign: {e}"));
                            let acked = Instant::now();
                            let _ = done.send(Ack {
                                run_id: run.id,
                                node: worker.index,
                                claimed,
                                acked,
                                outcome,
                            });
                        }
                    }
                }
            });
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                joined = assigning.join_next() => if joined.is_none() { break },
            }
        }
    }
}

/// What the queue benchmark measured on one database.
struct QueueFigures {
    submit: Duration,
    drain: Duration,
    latencies: Vec<Duration>,
    claim_to_ack: Vec<Duration>,
    /// CPU time while draining the backlog: the hub, this benchmark, the database server
    /// (PostgreSQL only), and every CPU of the machine together (others' work included).
    hub_cpu: Duration,
    bench_cpu: Duration,
    database_cpu: Option<Duration>,
    machine_busy: Duration,
    verified: usize,
    heartbeat_failures: u32,
}

impl QueueFigures {
    fn runs_per_second(&self) -> f64 {
        f64::from(BACKLOG_RUNS) / self.drain.as_secs_f64()
    }
}

fn echo_job(name: String, partitions: u32) -> SubmitJob {
    SubmitJob {
        spec: JobSpec { name, activities: vec![Activity::Echo { message: "bench".to_owned(), partitions }] },
    }
}

/// Throughput, latency and the correctness check on one hub; `database_pid` is PostgreSQL's
/// postmaster, to add up its CPU time.
async fn queue_bench(hub: &Hub, label: &str, database_pid: Option<u32>) -> QueueFigures {
    let admin = Api::new(&hub.url);
    let (gateway, nodes) = gateway_with_nodes(hub, label, QUEUE_NODES).await;
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let heartbeats: Vec<Heartbeats> = nodes
        .iter()
        .map(|node| {
            let phase =
                HEARTBEAT_EVERY * u32::try_from(node.index).unwrap() / u32::try_from(nodes.len()).unwrap();
            start_heartbeats(Arc::clone(node), phase, stop.clone())
        })
        .collect();
    let dispatcher = settled_dispatcher(&heartbeats).await;
    println!("  {} is the dispatcher", nodes[dispatcher].name);

    // (a) a backlog, submitted before anyone dispatches.
    let submitting = Instant::now();
    let jobs_path = format!("/api/v1/gateways/{gateway}/jobs");
    let mut job_ids = Vec::new();
    for j in 0..BACKLOG_JOBS {
        let job: JobView = admin
            .post(&hub.admin_token, &jobs_path, &echo_job(format!("backlog-{j}"), BACKLOG_PARTITIONS))
            .await
            .unwrap_or_else(|e| panic!("submitting backlog job {j}: {e}"));
        job_ids.push(job.id);
    }
    let submit = submitting.elapsed();
    println!("  submitted {BACKLOG_RUNS} runs in {:.2} s", submit.as_secs_f64());

    let cpu_before = CpuSample::take(hub.pid(), database_pid);
    let draining = Instant::now();
    let mut acks = start_pipeline(&nodes, &heartbeats, &stop);
    let mut seen = AckBook::default();
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while seen.count < BACKLOG_RUNS as usize {
        match tokio::time::timeout_at(deadline, acks.recv()).await {
            Ok(Some(ack)) => seen.record(ack),
            _ => panic!(
                "only {} of {BACKLOG_RUNS} runs were acknowledged within {DRAIN_TIMEOUT:?}",
                seen.count
            ),
        }
    }
    let drain = draining.elapsed();
    let cpu = CpuSample::take(hub.pid(), database_pid).since(&cpu_before);
    println!(
        "  drained in {:.2} s: {:.0} runs/s",
        drain.as_secs_f64(),
        f64::from(BACKLOG_RUNS) / drain.as_secs_f64()
    );

    // (b) a closed loop of single-run jobs.
    let (latencies, claim_to_ack) =
        latency_loop(&admin, &hub.admin_token, &jobs_path, &mut acks, &mut seen, &mut job_ids).await;
    stop.cancel();
    let heartbeat_failures = heartbeats.iter().map(|h| h.failures.load(Ordering::Relaxed)).sum();

    let verified = verify(&admin, &hub.admin_token, &job_ids, &seen, &nodes).await;
    println!("  checked: {verified} runs succeeded exactly once, in attempt 1");
    QueueFigures {
        submit,
        drain,
        latencies,
        claim_to_ack,
        hub_cpu: cpu.hub,
        bench_cpu: cpu.bench,
        database_cpu: cpu.database,
        machine_busy: cpu.machine_busy,
        verified,
        heartbeat_failures,
    }
}

/// Starts every node's finish task(s) and dispatch loop; returns where acknowledgements arrive.
fn start_pipeline(
    nodes: &Arc<[Arc<Node>]>,
    heartbeats: &[Heartbeats],
    stop: &CancellationToken,
) -> mpsc::UnboundedReceiver<Ack> {
    let (done, acks) = mpsc::unbounded_channel();
    let mut lanes = Vec::new();
    for k in 0..nodes.len() * FINISH_TASKS_PER_NODE {
        let (lane, todo) = mpsc::channel(2 * CLAIM_MAX as usize);
        lanes.push(lane);
        tokio::spawn(finish_lane(Arc::clone(&nodes[k % nodes.len()]), todo, done.clone(), stop.clone()));
    }
    let lanes: Arc<[_]> = lanes.into();
    for (node, heartbeat) in nodes.iter().zip(heartbeats) {
        let beats = heartbeat.beats.clone();
        let lanes = Arc::clone(&lanes);
        tokio::spawn(dispatch_loop(
            Arc::clone(node),
            Arc::clone(nodes),
            beats,
            lanes,
            done.clone(),
            stop.clone(),
        ));
    }
    acks
}

/// Submits single-run jobs one at a time, each after the previous one was acknowledged;
/// returns the sorted submit → ack and claim → ack times.
async fn latency_loop(
    admin: &Api,
    token: &str,
    jobs_path: &str,
    acks: &mut mpsc::UnboundedReceiver<Ack>,
    seen: &mut AckBook,
    job_ids: &mut Vec<String>,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut latencies = Vec::new();
    let mut claim_to_ack = Vec::new();
    for j in 0..LATENCY_JOBS {
        let start = Instant::now();
        let job: JobView = admin
            .post(token, jobs_path, &echo_job(format!("latency-{j}"), 1))
            .await
            .unwrap_or_else(|e| panic!("submitting latency job {j}: {e}"));
        let Ok(Some(ack)) = tokio::time::timeout(LATENCY_RUN_TIMEOUT, acks.recv()).await else {
            panic!("latency job {j} was not acknowledged within {LATENCY_RUN_TIMEOUT:?}")
        };
        assert_eq!(Some(&ack.run_id), job.runs.first().map(|r| &r.id), "an acknowledgement for another run");
        latencies.push(ack.acked - start);
        claim_to_ack.push(ack.acked - ack.claimed);
        seen.record(ack);
        job_ids.push(job.id);
    }
    latencies.sort();
    claim_to_ack.sort();
    (latencies, claim_to_ack)
}

/// The acknowledgements received, by run.
#[derive(Default)]
struct AckBook {
    count: usize,
    by_run: HashMap<String, Vec<usize>>,
    failures: Vec<String>,
}

impl AckBook {
    fn record(&mut self, ack: Ack) {
        self.count += 1;
        match ack.outcome {
            Ok(()) => self.by_run.entry(ack.run_id).or_default().push(ack.node),
            Err(e) => self.failures.push(format!("run {}: {e}", ack.run_id)),
        }
    }
}

/// Every run of `job_ids` succeeded, in attempt 1, on the node that acknowledged it, which
/// acknowledged it exactly once. Panics with the first problems otherwise; returns the count.
async fn verify(admin: &Api, token: &str, job_ids: &[String], seen: &AckBook, nodes: &[Arc<Node>]) -> usize {
    let mut problems = seen.failures.clone();
    let mut runs = 0;
    for id in job_ids {
        let job: JobView = admin
            .get(token, &format!("/api/v1/jobs/{id}"))
            .await
            .unwrap_or_else(|e| panic!("reading job {id}: {e}"));
        for run in &job.runs {
            runs += 1;
            let acked_by = seen.by_run.get(&run.id).map_or(&[][..], Vec::as_slice);
            let node_ok = match acked_by {
                [node] => run.node_id.as_deref() == Some(nodes[*node].id.as_str()),
                _ => false,
            };
            if run.state != RunState::Succeeded || run.attempt != 1 || !node_ok {
                problems.push(format!(
                    "run {} of job {}: {:?}, attempt {}, on {:?}, acknowledged {} times",
                    run.id,
                    job.name,
                    run.state,
                    run.attempt,
                    run.node_name,
                    acked_by.len()
                ));
            }
        }
    }
    if runs != seen.count {
        problems.push(format!("the jobs have {runs} runs but {} acknowledgements arrived", seen.count));
    }
    assert!(
        problems.is_empty(),
        "{} problems with the runs; the first ones:\n{}",
        problems.len(),
        problems.iter().take(10).map(String::as_str).collect::<Vec<_>>().join("\n")
    );
    runs
}

// ---- failover ----

/// Times the failover `FAILOVER_ROUNDS` times.
async fn failover_bench(hub: &Hub) -> Vec<Duration> {
    let (_, nodes) = gateway_with_nodes(hub, "failover", FAILOVER_NODES).await;
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let heartbeats: Vec<Heartbeats> =
        nodes.iter().map(|node| start_heartbeats(Arc::clone(node), random_phase(), stop.clone())).collect();
    let mut rounds = Vec::new();
    for _ in 0..FAILOVER_TRIES {
        if rounds.len() == FAILOVER_ROUNDS {
            break;
        }
        let old = settled_dispatcher(&heartbeats).await;
        let (reply, last_ok) = oneshot::channel();
        heartbeats[old].control.send(Control::Pause(reply)).await.unwrap();
        let t = last_ok.await.unwrap().unwrap();
        let still = heartbeats[old].beats.borrow().is_some_and(|b| b.role == Role::Dispatcher && b.sent == t);
        if still {
            let (new, at) = next_dispatcher(&heartbeats, old, t).await;
            let took = at - t;
            println!("  {} → {}: {:.2} s", nodes[old].name, nodes[new].name, took.as_secs_f64());
            rounds.push(took);
        } else {
            println!("  (the lease moved while the round started; trying again)");
        }
        // The old dispatcher rejoins, at a new random phase, as a worker.
        heartbeats[old].control.send(Control::Resume(random_phase())).await.unwrap();
    }
    assert_eq!(rounds.len(), FAILOVER_ROUNDS, "the lease kept moving on its own; see the lines above");
    rounds
}

/// Waits for a node other than `old` to hear `dispatcher` for a heartbeat sent after `t`;
/// returns it and when its answer arrived.
async fn next_dispatcher(heartbeats: &[Heartbeats], old: usize, t: Instant) -> (usize, Instant) {
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    loop {
        for (i, heartbeat) in heartbeats.iter().enumerate().filter(|(i, _)| *i != old) {
            if let Some(beat) = *heartbeat.beats.borrow()
                && beat.role == Role::Dispatcher
                && beat.sent > t
            {
                return (i, beat.received);
            }
        }
        assert!(Instant::now() < deadline, "no other node became the dispatcher within {FAILOVER_TIMEOUT:?}");
        // Polling only decides when we look; the time comes from the heartbeat itself.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn random_phase() -> Duration {
    Duration::from_millis(rand::random_range(0..1000))
}

// ---- CPU time from /proc ----

struct CpuSample {
    hub: Duration,
    bench: Duration,
    database: Option<Duration>,
    machine_busy: Duration,
}

impl CpuSample {
    fn take(hub_pid: u32, database_pid: Option<u32>) -> CpuSample {
        CpuSample {
            hub: process_cpu(&hub_pid.to_string()),
            bench: process_cpu("self"),
            database: database_pid.map(postgres_cpu),
            machine_busy: machine_busy(),
        }
    }

    fn since(&self, before: &CpuSample) -> CpuSample {
        CpuSample {
            hub: self.hub.saturating_sub(before.hub),
            bench: self.bench.saturating_sub(before.bench),
            database: self.database.zip(before.database).map(|(now, then)| now.saturating_sub(then)),
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
        }
    }
}

fn parent_of(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The postmaster and its children (backends and helpers).
fn postgres_cpu(postmaster: u32) -> Duration {
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && parent_of(pid) == Some(postmaster));
    children.map(|pid| process_cpu(&pid)).sum::<Duration>() + process_cpu(&postmaster.to_string())
}

fn postmaster_pid(cluster: &postgres::Postgres) -> Option<u32> {
    let text = std::fs::read_to_string(cluster.dir().join("data/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

// ---- the table ----

/// A target with whether it was met (`None`: not measured).
fn verdict(target: &str, met: Option<bool>) -> String {
    match met {
        Some(true) => format!("{target}: met"),
        Some(false) => format!("{target}: missed"),
        None => target.to_owned(),
    }
}

fn print_queue_table(sqlite: Option<&QueueFigures>, postgres: Option<&QueueFigures>) {
    if sqlite.is_none() && postgres.is_none() {
        return;
    }
    let cell = |figures: Option<&QueueFigures>, f: fn(&QueueFigures) -> String| {
        figures.map_or_else(|| "skipped".to_owned(), f)
    };
    let row = |what: &str, f: fn(&QueueFigures) -> String, target: &str| {
        println!("  {what:<34} {:<20} {:<20} {target}", cell(sqlite, f), cell(postgres, f));
    };
    println!(
        "\n== Queue: {QUEUE_NODES} nodes, claim max {CLAIM_MAX}, assign round-robin, finish tasks per node: {FINISH_TASKS_PER_NODE} =="
    );
    println!("  {:<34} {:<20} {:<20} target (SQLite)", "", "SQLite", "PostgreSQL");
    row(&format!("submit {BACKLOG_JOBS} jobs × {BACKLOG_PARTITIONS} runs"), |f| seconds(f.submit), "");
    row(&format!("drain {} runs", thousands(f64::from(BACKLOG_RUNS))), |f| seconds(f.drain), "");
    let throughput_met = sqlite.map(|f| f.runs_per_second() >= 2000.0);
    let p99_met = sqlite.map(|f| percentile(&f.latencies, 99) < Duration::from_millis(20));
    row(
        "throughput",
        |f| format!("{} runs/s", thousands(f.runs_per_second())),
        &verdict("≥ 2,000 runs/s", throughput_met),
    );
    row("submit → ack p50 / p90 / p99 (ms)", |f| quantiles(&f.latencies), &verdict("p99 < 20 ms", p99_met));
    row("claim → ack p50 / p90 / p99 (ms)", |f| quantiles(&f.claim_to_ack), "");
    row("CPU while draining: hub", |f| seconds(f.hub_cpu), "");
    row("CPU while draining: client", |f| seconds(f.bench_cpu), "");
    row("CPU while draining: database", |f| f.database_cpu.map_or("in hub".to_owned(), seconds), "");
    row("CPU while draining: whole machine", |f| seconds(f.machine_busy), "");
    row("heartbeat failures", |f| f.heartbeat_failures.to_string(), "");
    row(
        "runs succeeded once, attempt 1",
        |f| thousands(f64::from(u32::try_from(f.verified).unwrap())),
        "all",
    );
}

fn print_failover(rounds: &[Duration]) {
    let total: Duration = rounds.iter().sum();
    let mean = total / u32::try_from(rounds.len().max(1)).unwrap();
    let max = rounds.iter().max().copied().unwrap_or_default();
    let each: Vec<String> = rounds.iter().map(|d| format!("{:.2}", d.as_secs_f64())).collect();
    println!(
        "\n== Failover: SQLite, {FAILOVER_NODES} nodes, heartbeat every {} s: the old dispatcher's last heartbeat → another node told 'dispatcher' ==",
        HEARTBEAT_EVERY.as_secs()
    );
    println!("  rounds         {} s", each.join(" s, "));
    let target = verdict("< 3 s", Some(max < Duration::from_secs(3)));
    println!(
        "  mean / max     {} / {}    target {target} (Apache NiFi's default is about 40 s)",
        seconds(mean),
        seconds(max)
    );
}
