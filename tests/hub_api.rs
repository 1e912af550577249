//! The hub's HTTP API end to end, the way nodes and admins use it: every test starts a real
//! `gatehouse hub serve --listen 127.0.0.1:0` with its own data dir (SQLite there, or a
//! throwaway PostgreSQL database) and plays the nodes itself over HTTP — register with a
//! gateway auth key, heartbeat, claim, assign, report progress, finish — while the admin side
//! goes through the typed `AdminClient`. Each scenario is one async function taking the
//! database and runs twice, on SQLite and on PostgreSQL: the registration rules, every status,
//! the dispatcher lease, the job queue, bad input, a hub restart, copy activities (listing runs,
//! splits into partition runs, checkpoints across attempts), and (PostgreSQL only) two hubs on
//! one database. Every wait is bounded; times are never asserted, only what happens within
//! generous deadlines.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::postgres::Postgres;
use common::process::{Spawned, spawn_gatehouse};
use gatehouse::cli::client::{AdminClient, ClientError};
use gatehouse::protocol::{
    Activity, CreateGateway, CreatedGateway, GatewaySettings, GatewayState, GatewayView, HeartbeatResponse,
    JobSpec, JobView, KeySlot, ListedFile, NewJoinKey, NodeMetrics, NodeState, NodeView, Part, Role,
    RunState, RunView, SettingsPatch, UpdateSettings,
};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long a hub may take to print its address (and token).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The bound for everything that happens "eventually": Offline after 3 s, lease failover,
/// re-queueing. A bound, never an expectation of speed.
const WAIT: Duration = Duration::from_secs(15);
/// How often a bounded wait looks again.
const POLL: Duration = Duration::from_millis(100);
/// Simulated nodes beat faster than the real 1 s, so no check sits on the edge of 3 s.
const BEAT_EVERY: Duration = Duration::from_millis(250);
/// The version simulated nodes run unless a test says otherwise.
const VERSION: &str = "0.1.0";

// ---- the database and the hub process ----

/// Where the hub keeps its state.
#[derive(Clone, Debug)]
enum Db {
    /// `hub.db` in the hub's data dir.
    Sqlite,
    /// A database of the test's own throwaway cluster.
    Postgres(String),
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn on_sqlite<F: Future<Output = ()>>(scenario: impl FnOnce(Db) -> F) {
    runtime().block_on(scenario(Db::Sqlite));
}

fn on_postgres<F: Future<Output = ()>>(scenario: impl FnOnce(Db) -> F) {
    let postgres = Postgres::start();
    runtime().block_on(scenario(Db::Postgres(postgres.url())));
    drop(postgres);
}

/// A running `gatehouse hub serve`; killed on drop.
struct Hub {
    process: Spawned,
    api: Api,
    token: String,
    home: Arc<tempfile::TempDir>,
    db: Db,
}

impl Hub {
    /// A first hub on `db`, in a fresh data dir; it prints the admin token.
    fn start(db: &Db) -> Hub {
        let home = Arc::new(tempfile::tempdir().unwrap());
        tokio::task::block_in_place(|| Hub::launch(home, db, None))
    }

    /// Another hub on the same database with its own data dir; the token is the first one's.
    fn beside(&self) -> Hub {
        let home = Arc::new(tempfile::tempdir().unwrap());
        tokio::task::block_in_place(|| Hub::launch(home, &self.db, Some(self.token.clone())))
    }

    /// Starts the binary; reads the address, and the token unless `token` is known already
    /// (a hub prints it only when it creates it).
    fn launch(home: Arc<tempfile::TempDir>, db: &Db, token: Option<String>) -> Hub {
        let url = match db {
            Db::Sqlite => format!("sqlite://{}", home.path().join("hub.db").display()),
            Db::Postgres(url) => url.clone(),
        };
        let dir = home.path().to_str().unwrap().to_owned();
        let mut process = spawn_gatehouse(
            &["hub", "serve", "--listen", "127.0.0.1:0", "--db", &url],
            &[("GATEHOUSE_HOME", dir.as_str()), ("GATEHOUSE_LOG", "warn")],
        );
        let base = process.read_line_matching("listening on ", START_TIMEOUT);
        let token = token.unwrap_or_else(|| process.read_admin_token(START_TIMEOUT));
        Hub { process, api: Api::new(&base), token, home, db: db.clone() }
    }

    /// SIGTERM, which must end the hub by itself, then the same data dir and database again.
    /// Nodes and admin clients made from `self.api` follow it to its new address.
    fn restart(&mut self) {
        self.restart_after(Duration::ZERO);
    }

    /// Like `restart`, with the hub down for `down` in between.
    fn restart_after(&mut self, down: Duration) {
        tokio::task::block_in_place(|| {
            let status = self.process.stop();
            assert!(status.success(), "the hub should exit cleanly on SIGTERM, not with {status}");
            std::thread::sleep(down);
            let again = Hub::launch(Arc::clone(&self.home), &self.db, Some(self.token.clone()));
            self.process = again.process;
            self.api.set_base(&again.api.base());
        });
    }

    fn admin(&self) -> AdminClient {
        AdminClient::new(&self.api.base(), &self.token).unwrap()
    }

    /// Fails if the hub panicked anywhere, and checks that it still answers.
    async fn assert_healthy(&self) {
        let stderr = self.process.stderr();
        assert!(!stderr.contains("panicked"), "the hub panicked:\n{stderr}");
        let health = self.api.request(Method::GET, "/healthz", None, Body::Empty).await;
        assert_eq!(health.status, 200, "{health:?}");
    }
}

// ---- HTTP ----

/// Plain HTTP to one hub, for node calls and hand-made bad requests. The base URL is shared by
/// clones, so it can follow a restarted hub.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: Arc<Mutex<String>>,
}

enum Body {
    Empty,
    Json(Value),
    /// Bytes as they are, with this Content-Type (or none).
    Raw(Option<&'static str>, Vec<u8>),
}

/// One answer: the status (0 when no answer came) and the body text.
#[derive(Debug)]
struct Reply {
    request: String,
    status: u16,
    text: String,
}

impl Api {
    fn new(base: &str) -> Api {
        // reqwest uses rustls without a built-in crypto provider; the binary picks ring too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Longer than the longest claim wait (30 s); loopback only, never through a proxy.
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap();
        Api { http, base: Arc::new(Mutex::new(base.to_owned())) }
    }

    fn base(&self) -> String {
        self.base.lock().unwrap().clone()
    }

    fn set_base(&self, base: &str) {
        base.clone_into(&mut self.base.lock().unwrap());
    }

    /// `authorization` is the whole header value (`Bearer …`), so tests can send odd ones.
    async fn send(&self, method: Method, path: &str, authorization: Option<&str>, body: Body) -> Reply {
        let request = format!("{method} {path}");
        let mut builder = self.http.request(method, format!("{}{path}", self.base()));
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder = match body {
            Body::Empty => builder,
            Body::Json(value) => builder.json(&value),
            Body::Raw(content_type, bytes) => {
                let builder = builder.body(bytes);
                match content_type {
                    Some(content_type) => builder.header(CONTENT_TYPE, content_type),
                    None => builder,
                }
            }
        };
        match builder.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_else(|e| format!("(no body: {e})"));
                Reply { request, status, text }
            }
            Err(e) => Reply { request, status: 0, text: format!("no answer: {e}") },
        }
    }

    /// With a bearer token.
    async fn request(&self, method: Method, path: &str, bearer: Option<&str>, body: Body) -> Reply {
        let authorization = bearer.map(|token| format!("Bearer {token}"));
        self.send(method, path, authorization.as_deref(), body).await
    }

    async fn register(&self, key: &str, body: Value) -> Reply {
        self.request(Method::POST, "/api/v1/register", Some(key), Body::Json(body)).await
    }

    /// Registers a node that must be accepted.
    async fn join(
        &self,
        key: &str,
        name: &str,
        machine: &str,
        version: &str,
        thumbprint: Option<&str>,
    ) -> Node {
        let reply = self.register(key, registration(name, machine, version, thumbprint)).await;
        assert_eq!(reply.status, 201, "registering {name}: {reply:?}");
        let answer: Value = reply.ok();
        let metrics =
            NodeMetrics { encryption_thumbprint: thumbprint.map(str::to_owned), ..NodeMetrics::default() };
        Node {
            id: answer["node_id"].as_str().unwrap().to_owned(),
            name: name.to_owned(),
            machine: machine.to_owned(),
            token: answer["node_token"].as_str().unwrap().to_owned(),
            api: self.clone(),
            report: Arc::new(Mutex::new(Report { version: version.to_owned(), metrics })),
        }
    }

    /// A plain node on a machine of its own, at `VERSION`, without encryption.
    async fn join_new(&self, key: &str, name: &str) -> Node {
        self.join(key, name, &new_machine(name), VERSION, None).await
    }
}

impl Reply {
    /// The body of a success.
    #[track_caller]
    fn ok<T: DeserializeOwned>(&self) -> T {
        assert!((200..300).contains(&self.status), "{} should succeed: {self:?}", self.request);
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{} answered {e} in {:?}", self.request, self.text))
    }

    #[track_caller]
    fn assert_no_content(&self) {
        assert_eq!(self.status, 204, "{} should succeed with no content: {self:?}", self.request);
    }

    /// The refusal's code (`name_taken`, …), if it has one.
    #[track_caller]
    fn code(&self) -> Option<String> {
        let body: Value = serde_json::from_str(&self.text).unwrap();
        body.get("code").map(|code| code.as_str().unwrap().to_owned())
    }

    /// A refusal with `status` whose error names each of `words`; returns the error.
    #[track_caller]
    fn refused(&self, status: u16, words: &[&str]) -> String {
        assert_eq!(self.status, status, "{} should be refused with {status}: {self:?}", self.request);
        let error = error_sentence(&self.text, &self.request);
        assert_says(&error, words);
        error
    }
}

/// Checks an error body: a JSON object `{"error", "hint"?, "code"?}` whose error is a sentence.
#[track_caller]
fn error_sentence(text: &str, request: &str) -> String {
    let body: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{request}: the error body is not JSON ({e}): {text:?}"));
    let object =
        body.as_object().unwrap_or_else(|| panic!("{request}: the error body is not an object: {text}"));
    for key in object.keys() {
        assert!(
            key == "error" || key == "hint" || key == "code",
            "{request}: unexpected {key:?} in the error body {text}"
        );
    }
    let error = object.get("error").and_then(Value::as_str).unwrap_or_default();
    assert!(error.trim().contains(' '), "{request}: the error should be a sentence: {text}");
    if let Some(hint) = object.get("hint") {
        assert!(hint.as_str().is_some_and(|h| !h.trim().is_empty()), "{request}: an empty hint: {text}");
    }
    error.to_owned()
}

/// `text` mentions every one of `words` (ignoring case).
#[track_caller]
fn assert_says(text: &str, words: &[&str]) {
    let lower = text.to_lowercase();
    for word in words {
        assert!(lower.contains(&word.to_lowercase()), "{text:?} should mention {word:?}");
    }
}

/// An admin request the hub refuses with `status`, saying each of `words`.
#[track_caller]
fn admin_refused<T: Debug>(result: Result<T, ClientError>, status: u16, words: &[&str]) {
    match result {
        Err(ClientError::Refused { status: got, body }) => {
            assert_eq!(got, status, "refused with the wrong status: {body:?}");
            let text = serde_json::to_string(&body).unwrap();
            assert_says(&error_sentence(&text, "admin request"), words);
        }
        other => panic!("the hub should refuse with {status}, not answer {other:?}"),
    }
}

fn registration(name: &str, machine: &str, version: &str, thumbprint: Option<&str>) -> Value {
    json!({
        "name": name,
        "machine_id": machine,
        "version": version,
        "peer_address": format!("{name}.test:7071"),
        "encryption_thumbprint": thumbprint,
    })
}

/// Milliseconds since the Unix epoch, by this machine's clock (the hub's too, on loopback).
fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn new_machine(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("machine-{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

// ---- simulated nodes ----

/// What a node sends with each heartbeat; tests change it to provoke statuses.
#[derive(Clone, Debug)]
struct Report {
    version: String,
    metrics: NodeMetrics,
}

/// A registered node, played by the test.
#[derive(Clone)]
struct Node {
    id: String,
    name: String,
    machine: String,
    token: String,
    api: Api,
    report: Arc<Mutex<Report>>,
}

impl Node {
    fn set(&self, change: impl FnOnce(&mut Report)) {
        change(&mut self.report.lock().unwrap());
    }

    fn reset(&self) {
        self.set(|r| {
            VERSION.clone_into(&mut r.version);
            let thumbprint = r.metrics.encryption_thumbprint.take();
            r.metrics = NodeMetrics { encryption_thumbprint: thumbprint, ..NodeMetrics::default() };
        });
    }

    async fn call(&self, path: &str, body: Value) -> Reply {
        self.api.request(Method::POST, path, Some(&self.token), Body::Json(body)).await
    }

    async fn heartbeat_via(&self, api: &Api) -> Reply {
        let report = self.report.lock().unwrap().clone();
        let body = json!({ "version": report.version, "metrics": report.metrics });
        api.request(Method::POST, "/api/v1/heartbeat", Some(&self.token), Body::Json(body)).await
    }

    async fn try_heartbeat(&self) -> Reply {
        self.heartbeat_via(&self.api).await
    }

    /// One heartbeat that must be answered.
    async fn heartbeat(&self) -> HeartbeatResponse {
        self.try_heartbeat().await.ok()
    }

    async fn claim(&self, epoch: i64, max: u32, wait_ms: u64) -> Reply {
        self.call("/api/v1/dispatch/claim", json!({ "lease_epoch": epoch, "max": max, "wait_ms": wait_ms }))
            .await
    }

    /// A claim that must be granted.
    async fn claimed(&self, epoch: i64, max: u32, wait_ms: u64) -> Vec<RunView> {
        self.claim(epoch, max, wait_ms).await.ok()
    }

    /// A claim with `again`: the runs the hub holds for this dispatcher, then queued ones.
    async fn claimed_again(&self, epoch: i64) -> Vec<RunView> {
        let body = json!({ "lease_epoch": epoch, "max": 10, "wait_ms": 0, "again": true });
        self.call("/api/v1/dispatch/claim", body).await.ok()
    }

    async fn assign(&self, run: &str, attempt: u32, epoch: i64, worker: &Node) -> Reply {
        let body = json!({ "lease_epoch": epoch, "attempt": attempt, "node_id": worker.id });
        self.call(&format!("/api/v1/runs/{run}/assign"), body).await
    }

    async fn progress(&self, run: &str, attempt: u32, progress: Value) -> Reply {
        self.call(
            &format!("/api/v1/runs/{run}/progress"),
            json!({ "attempt": attempt, "progress": progress }),
        )
        .await
    }

    async fn finish(&self, run: &str, attempt: u32) -> Reply {
        let body =
            json!({ "attempt": attempt, "succeeded": true, "result": { "by": self.name }, "error": null });
        self.call(&format!("/api/v1/runs/{run}/finish"), body).await
    }

    /// Heartbeats every `BEAT_EVERY` until the returned handle is stopped or dropped.
    fn beat(&self) -> Beats {
        self.beat_through(vec![self.api.clone()])
    }

    /// Heartbeats through each of `apis` in turn (several hubs on one database).
    fn beat_through(&self, apis: Vec<Api>) -> Beats {
        let node = self.clone();
        let log = Arc::new(Mutex::new(BeatLog::default()));
        let sink = Arc::clone(&log);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(BEAT_EVERY);
            // Ends only when aborted, which `Beats` does when stopped or dropped.
            for api in apis.iter().cycle() {
                tick.tick().await;
                let reply = node.heartbeat_via(api).await;
                let mut log = sink.lock().unwrap();
                if reply.status == 200 {
                    let answer: HeartbeatResponse = reply.ok();
                    if answer.role == Role::Dispatcher {
                        log.dispatcher_epochs.insert(answer.lease_epoch);
                    }
                    log.ok += 1;
                    log.last = Some(answer);
                } else {
                    log.failed += 1;
                }
            }
        });
        Beats { name: self.name.clone(), task, log }
    }
}

/// What a heartbeating node heard from the hub.
#[derive(Debug, Default, Clone)]
struct BeatLog {
    ok: u64,
    failed: u64,
    last: Option<HeartbeatResponse>,
    /// Every lease epoch in which the hub told this node it was the dispatcher.
    dispatcher_epochs: BTreeSet<i64>,
}

/// A node's background heartbeats; they stop when this is stopped or dropped.
struct Beats {
    name: String,
    task: tokio::task::JoinHandle<()>,
    log: Arc<Mutex<BeatLog>>,
}

impl Beats {
    fn log(&self) -> BeatLog {
        self.log.lock().unwrap().clone()
    }

    /// The last answer, if it made this node the dispatcher: its epoch.
    fn dispatcher_epoch(&self) -> Option<i64> {
        self.log().last.filter(|l| l.role == Role::Dispatcher).map(|l| l.lease_epoch)
    }

    /// Stops the heartbeats; none is in flight when this returns.
    async fn stop(mut self) -> BeatLog {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.log()
    }
}

impl Drop for Beats {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// No lease epoch ever had two dispatchers.
fn assert_one_dispatcher_per_epoch(logs: &[BeatLog]) {
    let mut seen = HashSet::new();
    for log in logs {
        for epoch in &log.dispatcher_epochs {
            assert!(seen.insert(*epoch), "two nodes were dispatcher in lease epoch {epoch}: {logs:?}");
        }
    }
}

// ---- waiting and looking ----

/// Polls `probe` until it gives `Ok`, for at most `WAIT`; panics with `what` and the last
/// thing the probe saw.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what}: not within {WAIT:?}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

async fn create(admin: &AdminClient, name: &str) -> CreatedGateway {
    admin
        .create_gateway(&CreateGateway { name: name.to_owned(), settings: GatewaySettings::default() })
        .await
        .unwrap()
}

async fn view(admin: &AdminClient, gateway: &str) -> GatewayView {
    admin.gateway(gateway).await.unwrap()
}

fn node_in<'a>(view: &'a GatewayView, name: &str) -> &'a NodeView {
    view.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name} in {view:#?}"))
}

fn dispatchers(view: &GatewayView) -> Vec<&str> {
    view.nodes.iter().filter(|n| n.role == Role::Dispatcher).map(|n| n.name.as_str()).collect()
}

/// A reason that is a sentence mentioning each of `words`.
#[track_caller]
fn assert_reason(reason: Option<&str>, words: &[&str]) {
    let reason = reason.unwrap_or_else(|| panic!("a reason mentioning {words:?} is missing"));
    assert!(reason.trim().contains(' '), "the reason should be a sentence: {reason:?}");
    assert_says(reason, words);
}

/// Waits until the hub's view shows exactly one dispatcher among `beats` (never two at once),
/// that node heard so on its heartbeat, and every node heard the same lease epoch; returns the
/// dispatcher's name and the epoch.
async fn wait_for_dispatcher(admin: &AdminClient, gateway: &str, beats: &[&Beats]) -> (String, i64) {
    eventually("one dispatcher", async || {
        let view = view(admin, gateway).await;
        let shown = dispatchers(&view);
        assert!(shown.len() <= 1, "two dispatchers at once: {view:#?}");
        let heard: Vec<(&str, i64)> =
            beats.iter().filter_map(|b| b.dispatcher_epoch().map(|e| (b.name.as_str(), e))).collect();
        let epochs: Vec<Option<i64>> = beats.iter().map(|b| b.log().last.map(|l| l.lease_epoch)).collect();
        match (shown.as_slice(), heard.as_slice()) {
            ([name], [(heard_name, epoch)])
                if name == heard_name && epochs.iter().all(|e| *e == Some(*epoch)) =>
            {
                Ok(((*name).to_owned(), *epoch))
            }
            _ => Err(format!("view says {shown:?}, heartbeats say {heard:?}, epochs heard {epochs:?}")),
        }
    })
    .await
}

/// Waits until every node of `gateway` is Online: a run assigned to a node that hasn't
/// heartbeated yet would go straight back to the queue.
async fn wait_online(admin: &AdminClient, gateway: &str) {
    eventually("every node online", async || {
        let view = view(admin, gateway).await;
        view.nodes.iter().all(|n| n.status == NodeState::Online).then_some(()).ok_or(format!("{view:?}"))
    })
    .await;
}

/// What must survive a refused request (and a restart): gateways, settings, keys, nodes and
/// jobs, without what moves with the clock (statuses, roles) or, unless `heartbeats`, the
/// heartbeat times.
async fn snapshot(admin: &AdminClient, heartbeats: bool) -> Value {
    let mut gateways = Vec::new();
    for gateway in admin.gateways().await.unwrap() {
        let mut value = serde_json::to_value(&gateway).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("status");
        object.remove("reason");
        for node in object["nodes"].as_array_mut().unwrap() {
            let node = node.as_object_mut().unwrap();
            node.remove("status");
            node.remove("reason");
            node.remove("role");
            if !heartbeats {
                node.remove("last_heartbeat_ms");
                node.remove("metrics");
            }
        }
        let keys = admin.keys(&gateway.id).await.unwrap();
        object.insert("keys".into(), serde_json::to_value(keys).unwrap());
        let jobs = admin.jobs(&gateway.id, Some(500)).await.unwrap();
        object.insert("jobs".into(), serde_json::to_value(jobs).unwrap());
        gateways.push(value);
    }
    Value::Array(gateways)
}

async fn assert_unchanged(admin: &AdminClient, before: &Value, after_what: &str) {
    let now = snapshot(admin, true).await;
    assert!(&now == before, "{after_what} changed what the hub stores:\nbefore {before:#}\nafter {now:#}");
}

fn echo(name: &str, partitions: u32) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        activities: vec![Activity::Echo { message: format!("{name} says hi"), partitions }],
    }
}

fn run_of<'a>(job: &'a JobView, id: &str) -> &'a RunView {
    job.runs.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no run {id} in {job:#?}"))
}

// ==== 1. registration rules ====

async fn registration_rules(db: Db) {
    let hub = Hub::start(&db);
    let admin = hub.admin();
    let sales = create(&admin, "sales").await;
    let hr = create(&admin, "hr").await;
    let n1 = names_and_machines(&hub, &admin, &sales, &hr).await;
    versions_and_capacity(&hub, &admin, &sales, &n1).await;
    encryption_rules(&hub, &admin).await;
    auth_keys_and_removal(&hub, &admin, &hr).await;
    keys_for_adding_nodes(&hub, &admin).await;
    concurrent_registrations(&hub, &admin).await;
    hub.assert_healthy().await;
}

#[test]
fn registration_rules_on_sqlite() {
    on_sqlite(registration_rules);
}

#[test]
fn registration_rules_on_postgres() {
    on_postgres(registration_rules);
}

/// Names are unique in a gateway; a machine sits in one gateway, once. Returns the one node.
async fn names_and_machines(
    hub: &Hub,
    admin: &AdminClient,
    sales: &CreatedGateway,
    hr: &CreatedGateway,
) -> Node {
    assert_eq!(sales.gateway.settings.max_nodes, 4, "the default max_nodes");
    assert_eq!(sales.gateway.status, GatewayState::NeedsRegistration);
    admin_refused(
        admin
            .create_gateway(&CreateGateway { name: "sales".into(), settings: GatewaySettings::default() })
            .await,
        409,
        &["sales", "already exists"],
    );
    let key = &sales.keys.primary;
    let n1 = hub.api.join(key, "n1", "machine-1", VERSION, None).await;

    let before = snapshot(admin, true).await;
    for name in ["n1", "N1"] {
        let reply = hub.api.register(key, registration(name, "machine-2", VERSION, None)).await;
        reply.refused(409, &["node 'n1'", "already registered", "gateway 'sales'"]);
        assert_eq!(reply.code().as_deref(), Some("name_taken"));
        assert_unchanged(admin, &before, "a duplicate name").await;
    }
    let reply = hub.api.register(&hr.keys.primary, registration("h1", "machine-1", VERSION, None)).await;
    let error = reply.refused(409, &["machine", "another gateway", "unregister"]);
    assert_eq!(reply.code().as_deref(), Some("machine_elsewhere"));
    assert!(
        !error.contains("sales") && !error.contains("n1") && !error.contains("'hr'"),
        "a key of one gateway learns nothing of another's nodes: {error}"
    );
    assert_unchanged(admin, &before, "a machine of another gateway").await;
    let reply = hub.api.register(key, registration("n1-again", "machine-1", VERSION, None)).await;
    reply.refused(409, &["machine", "already registered", "gateway 'sales'", "'n1'"]);
    assert_eq!(reply.code().as_deref(), Some("machine_already_here"));
    assert_unchanged(admin, &before, "the same machine twice").await;
    n1
}

/// Older than the majority version is refused, newer is welcome; `max_nodes` caps a gateway,
/// and one over a lowered cap keeps working but takes no one new.
async fn versions_and_capacity(hub: &Hub, admin: &AdminClient, sales: &CreatedGateway, n1: &Node) {
    let keys = &sales.keys;
    let n2 = hub.api.join(&keys.primary, "n2", "machine-2", VERSION, None).await;
    let before = snapshot(admin, true).await;
    let reply = hub.api.register(&keys.primary, registration("n3", "machine-3", "0.0.1", None)).await;
    reply.refused(409, &["version 0.0.1", "older", "gateway version 0.1.0"]);
    assert_eq!(reply.code().as_deref(), Some("too_old"));
    assert_unchanged(admin, &before, "an old version").await;
    let n3 = hub.api.join(&keys.primary, "n3", "machine-3", "0.2.0", None).await;
    assert_eq!(view(admin, "sales").await.version.as_deref(), Some(VERSION), "two of three nodes run 0.1.0");
    let n4 = hub.api.join(&keys.secondary, "n4", "machine-4", VERSION, None).await;

    let before = snapshot(admin, true).await;
    let reply = hub.api.register(&keys.primary, registration("n5", "machine-5", VERSION, None)).await;
    reply.refused(409, &["already has 4 nodes", "at most 4", "max_nodes"]);
    assert_eq!(reply.code().as_deref(), Some("gateway_full"));
    assert_unchanged(admin, &before, "a fifth node").await;

    let lowered = admin
        .update_settings("sales", &UpdateSettings { max_nodes: Some(2), ..UpdateSettings::default() })
        .await
        .unwrap();
    assert_eq!((lowered.settings.max_nodes, lowered.nodes.len()), (2, 4));
    for node in [n1, &n2, &n3, &n4] {
        assert_eq!(node.try_heartbeat().await.status, 200, "a gateway over its limit keeps working");
    }
    let before = snapshot(admin, true).await;
    for key in [&keys.primary, &keys.secondary] {
        let reply = hub.api.register(key, registration("n5", "machine-5", VERSION, None)).await;
        reply.refused(409, &["already has 4 nodes", "at most 2"]);
    }
    assert_unchanged(admin, &before, "a node over a lowered max_nodes").await;
    let after = view(admin, "sales").await;
    assert_eq!(after.nodes.len(), 4);
    assert!(after.nodes.iter().all(|n| n.last_heartbeat_ms.is_some()), "{after:#?}");
}

/// Express setup can't join an encrypting gateway; the mode changes only with a single node.
async fn encryption_rules(hub: &Hub, admin: &AdminClient) {
    let secure = create(admin, "secure").await;
    hub.api.join(&secure.keys.primary, "e1", &new_machine("e1"), VERSION, Some("AA")).await;
    assert!(view(admin, "secure").await.encryption, "the first node decides: it encrypts");
    let before = snapshot(admin, true).await;
    let reply = hub.api.register(&secure.keys.primary, registration("e2", "machine-e2", VERSION, None)).await;
    reply.refused(409, &["gateway 'secure'", "encrypts", "express setup"]);
    assert_eq!(reply.code().as_deref(), Some("needs_encryption"));
    assert_unchanged(admin, &before, "express setup on an encrypting gateway").await;
    hub.api.join(&secure.keys.primary, "e2", "machine-e2", VERSION, Some("AA")).await;

    let plain = create(admin, "plain").await;
    let key = &plain.keys.primary;
    let p1 = hub.api.join(key, "p1", &new_machine("p1"), VERSION, None).await;
    assert!(!view(admin, "plain").await.encryption);
    // A single node may turn encryption on and off…
    p1.set(|r| r.metrics.encryption_thumbprint = Some("CC".into()));
    p1.heartbeat().await;
    assert!(view(admin, "plain").await.encryption, "a single node turned encryption on");
    let before = snapshot(admin, true).await;
    let reply = hub.api.register(key, registration("p2", "machine-p2", VERSION, None)).await;
    reply.refused(409, &["gateway 'plain'", "encrypts"]);
    assert_unchanged(admin, &before, "express setup after encryption was turned on").await;
    p1.set(|r| r.metrics.encryption_thumbprint = None);
    p1.heartbeat().await;
    assert!(!view(admin, "plain").await.encryption, "a single node turned encryption off");
    // …but a second node can't bring another mode.
    let before = snapshot(admin, true).await;
    let reply = hub.api.register(key, registration("p2", "machine-p2", VERSION, Some("DD"))).await;
    reply.refused(409, &["gateway 'plain'", "doesn't encrypt", "single node"]);
    assert_eq!(reply.code().as_deref(), Some("encryption_mode_locked"));
    assert_unchanged(admin, &before, "a certificate on a non-encrypting gateway").await;
    hub.api.join(key, "p2", "machine-p2", VERSION, None).await;
    p1.set(|r| r.metrics.encryption_thumbprint = Some("CC".into()));
    p1.heartbeat().await;
    assert!(!view(admin, "plain").await.encryption, "with two nodes, one heartbeat can't change the mode");
}

/// Wrong keys are 401; a regenerated key stops only new registrations, and only its slot;
/// a removed node leaves nothing behind.
async fn auth_keys_and_removal(hub: &Hub, admin: &AdminClient, hr: &CreatedGateway) {
    let keys = create(admin, "keys").await;
    let k1 = hub.api.join_new(&keys.keys.primary, "k1").await;
    let hints = admin.keys("keys").await.unwrap();

    let before = snapshot(admin, true).await;
    let body = registration("k9", "machine-k9", VERSION, None);
    let secret_part = keys.keys.primary.len() - 43;
    let wrong_secret = format!("{}{}", &keys.keys.primary[..secret_part], "A".repeat(43));
    let other_gateway = format!(
        "gh1_{}_{}",
        URL_SAFE_NO_PAD.encode(format!("{}|no-such-gateway", hub.api.base())),
        "A".repeat(43)
    );
    let bad_keys: [(Option<&str>, &[&str]); 6] = [
        (None, &["auth key"]),
        (Some("Bearer nonsense"), &["not a Gatehouse auth key"]),
        (Some(&format!("Bearer {}", hub.token)), &["not a Gatehouse auth key"]),
        (Some(&format!("Bearer {}", k1.token)), &["not a Gatehouse auth key"]),
        (Some(&format!("Bearer {wrong_secret}")), &["not valid for this gateway"]),
        (Some(&format!("Bearer {other_gateway}")), &["gateway this hub doesn't have"]),
    ];
    for (authorization, words) in bad_keys {
        let reply =
            hub.api.send(Method::POST, "/api/v1/register", authorization, Body::Json(body.clone())).await;
        reply.refused(401, words);
    }
    assert_unchanged(admin, &before, "registrations with bad keys").await;

    let primary = admin.regenerate_key("keys", KeySlot::Primary).await.unwrap();
    assert_eq!(primary.slot, KeySlot::Primary);
    assert!(primary.key.starts_with("gh1_") && primary.key != keys.keys.primary);
    let reply = hub.api.register(&keys.keys.primary, body.clone()).await;
    reply.refused(401, &["not valid", "regenerated"]);
    assert_eq!(k1.try_heartbeat().await.status, 200, "a registered node keeps its own token");
    let k2 = hub.api.join_new(&keys.keys.secondary, "k2").await;
    let k3 = hub.api.join_new(&primary.key, "k3").await;
    let hints_after = admin.keys("keys").await.unwrap();
    assert_ne!(hints_after[0].hint, hints[0].hint, "the primary's hint follows the new key");
    assert_eq!(hints_after[1].hint, hints[1].hint, "the secondary is untouched");

    let secondary = admin.regenerate_key("keys", KeySlot::Secondary).await.unwrap();
    hub.api.register(&keys.keys.secondary, body.clone()).await.refused(401, &["not valid"]);
    assert_eq!(
        k2.try_heartbeat().await.status,
        200,
        "k2 registered with the old secondary and keeps working"
    );
    let k4 = hub.api.join_new(&primary.key, "k4").await;

    // Removed by id: gone from the list, its token refused, its name and machine free again.
    admin.remove_node("keys", &k1.id).await.unwrap();
    let nodes = admin.nodes("keys").await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["k2", "k3", "k4"]);
    k1.try_heartbeat().await.refused(401, &["not registered"]);
    k1.claim(0, 1, 0).await.refused(401, &["not registered"]);
    let again = hub.api.join(&secondary.key, "k1", &k1.machine, VERSION, None).await;
    assert_ne!(again.id, k1.id);
    // Removed by name: its machine may join another gateway.
    admin.remove_node("keys", "k2").await.unwrap();
    k2.try_heartbeat().await.refused(401, &["not registered"]);
    hub.api.join(&hr.keys.primary, "k2", &k2.machine, VERSION, None).await;
    // A node may unregister itself.
    k3.call("/api/v1/unregister", json!(null)).await.assert_no_content();
    k3.try_heartbeat().await.refused(401, &["not registered"]);
    let names: Vec<String> = admin.nodes("keys").await.unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["k4", "k1"]);
    admin_refused(admin.remove_node("keys", "k3").await, 404, &["no node 'k3'"]);
    assert_eq!(k4.try_heartbeat().await.status, 200);
}

/// Keys made for adding nodes: a one-time key registers one node (also when eight use it at
/// once), an expired key is refused with when it expired, a revoked one like any wrong key; a
/// reusable key counts its uses; none of this touches the gateway's standing keys.
async fn keys_for_adding_nodes(hub: &Hub, admin: &AdminClient) {
    let join = create(admin, "join").await;
    let once = NewJoinKey { once: true, expires_in_seconds: None };
    let made = admin.create_join_key("join", &once).await.unwrap();
    assert!(made.key.starts_with("gh1_") && made.info.once);
    let lifetime = made.info.expires_ms - made.info.created_ms;
    assert_eq!(lifetime, 30 * 60 * 1000, "a key made without a lifetime lasts 30 minutes");
    hub.api.join_new(&made.key, "j1").await;
    let body = registration("j2", &new_machine("j2"), VERSION, None);
    hub.api.register(&made.key, body.clone()).await.refused(401, &["one-time", "already used", "'j1'"]);

    // Eight at once with a fresh one-time key: one gets in.
    let race = admin.create_join_key("join", &once).await.unwrap();
    let names: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    let accepted = register_at_once(hub, &race.key, &names, |reply| {
        assert!(matches!(reply.status, 401 | 409), "{reply:?}");
    })
    .await;
    assert_eq!(accepted, 1, "a one-time key used eight times at once");

    // A reusable key that expires: counted while it lives, then refused saying when it expired.
    let short = NewJoinKey { once: false, expires_in_seconds: Some(2) };
    let reusable = admin.create_join_key("join", &short).await.unwrap();
    hub.api.join_new(&reusable.key, "j3").await;
    let listed = admin.join_keys("join").await.unwrap();
    let entry = listed.iter().find(|k| k.id == reusable.info.id).unwrap();
    assert_eq!((entry.used_count, entry.last_used_by.as_deref()), (1, Some("j3")));
    assert!(!serde_json::to_string(&listed).unwrap().contains(&reusable.key[reusable.key.len() - 43..]));
    let deadline = Instant::now() + WAIT;
    while now_ms() <= reusable.info.expires_ms {
        assert!(Instant::now() < deadline, "the key never expired");
        tokio::time::sleep(POLL).await;
    }
    hub.api.register(&reusable.key, body.clone()).await.refused(401, &["expired"]);

    // Revoked: like a key the gateway never had; unknown ids and bad lifetimes are refused.
    let revoked = admin
        .create_join_key("join", &NewJoinKey { once: false, expires_in_seconds: Some(600) })
        .await
        .unwrap();
    admin.revoke_join_key("join", &revoked.info.id).await.unwrap();
    hub.api.register(&revoked.key, body.clone()).await.refused(401, &["not valid for this gateway"]);
    admin_refused(admin.revoke_join_key("join", &revoked.info.id).await, 404, &["no key"]);
    for seconds in [0, 31 * 24 * 3600] {
        let bad = NewJoinKey { once: true, expires_in_seconds: Some(seconds) };
        admin_refused(admin.create_join_key("join", &bad).await, 400, &["30 days"]);
    }
    // The standing keys still register; the audit trail names each key by id, never the key.
    hub.api.join_new(&join.keys.primary, "j4").await;
    let audit = admin.audit(Some("join"), None).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "key.create").count(), 4, "{actions:?}");
    assert!(actions.contains(&"key.revoke"), "{actions:?}");
    let text = serde_json::to_string(&audit).unwrap();
    for key in [&made.key, &race.key, &reusable.key, &revoked.key] {
        assert!(!text.contains(&key[key.len() - 43..]), "a key's secret in the audit trail");
    }
    assert!(text.contains(&format!("with the auth key {}", made.info.id)), "{text}");
}

/// Registers a node of each of `names` with `key`, all at the same moment; how many were
/// accepted. Each refusal goes to `refused`.
async fn register_at_once(hub: &Hub, key: &str, names: &[String], refused: impl Fn(&Reply)) -> usize {
    let mut attempts = tokio::task::JoinSet::new();
    for name in names {
        let (api, key) = (hub.api.clone(), key.to_owned());
        let body = registration(name, &new_machine(name), VERSION, None);
        attempts.spawn(async move { api.register(&key, body).await });
    }
    let mut accepted = 0;
    while let Some(reply) = attempts.join_next().await {
        let reply = reply.unwrap();
        if reply.status == 201 {
            accepted += 1;
        } else {
            refused(&reply);
        }
    }
    accepted
}

/// Registrations at the same moment still keep the rules: a name once, at most `max_nodes`.
async fn concurrent_registrations(hub: &Hub, admin: &AdminClient) {
    let crowd = create(admin, "crowd").await;
    let at_once = async |names: [&str; 8]| {
        let names = names.map(str::to_owned);
        register_at_once(hub, &crowd.keys.primary, &names, |reply| {
            reply.refused(409, &[]);
        })
        .await
    };
    assert_eq!(at_once(["same"; 8]).await, 1, "one name, registered eight times at once");
    assert_eq!(at_once(["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"]).await, 3, "room for three more");
    assert_eq!(admin.nodes("crowd").await.unwrap().len(), 4);
}

// ==== 2. statuses ====

async fn statuses(db: Db) {
    let hub = Hub::start(&db);
    let admin = hub.admin();
    limited_inactive_upgrading(&hub, &admin).await;
    gateway_lifecycle(&hub, &admin).await;
    hub.assert_healthy().await;
}

#[test]
fn statuses_on_sqlite() {
    on_sqlite(statuses);
}

#[test]
fn statuses_on_postgres() {
    on_postgres(statuses);
}

/// Heartbeats every node once, `subject` last, then checks its status and reason in the view
/// and in its own heartbeat answer.
async fn expect_status(
    admin: &AdminClient,
    gateway: &str,
    nodes: &[&Node],
    subject: &Node,
    state: NodeState,
    words: &[&str],
) -> GatewayView {
    for node in nodes.iter().filter(|n| n.id != subject.id) {
        node.heartbeat().await;
    }
    let answer = subject.heartbeat().await;
    let view = view(admin, gateway).await;
    let shown = node_in(&view, &subject.name);
    assert_eq!(shown.status, state, "{} in {view:#?}", subject.name);
    assert_eq!((answer.status, &answer.reason), (shown.status, &shown.reason), "heartbeat and view disagree");
    if state == NodeState::Online {
        assert_eq!(shown.reason, None);
        assert!(view.nodes.iter().all(|n| n.status == NodeState::Online), "{view:#?}");
        assert_eq!((view.status, view.reason.as_deref()), (GatewayState::Online, None));
    } else {
        assert_reason(shown.reason.as_deref(), words);
        assert_eq!(view.status, GatewayState::Limited, "{view:#?}");
        assert_reason(view.reason.as_deref(), &[&format!("{} is {state:?}", subject.name)]);
    }
    view
}

/// Per credential, the newest version an online node holds is the reference; a node behind
/// is named with the credential. Heartbeats of the shape from before per-credential versions
/// (one version for the whole set, and its names) still count, and compare equal to the new
/// shape holding the same.
async fn credentials_per_name(admin: &AdminClient, all: &[&Node; 3]) {
    let online = |subject| expect_status(admin, "health", all, subject, NodeState::Online, &[]);
    let legacy = |version: u64| {
        move |r: &mut Report| {
            r.metrics.credential_names = vec!["db".into()];
            r.metrics.credential_version = version;
        }
    };
    let shown = online(all[2]).await;
    let dispatcher = all.iter().find(|n| dispatchers(&shown).contains(&n.name.as_str())).unwrap();
    dispatcher.set(legacy(9));
    dispatcher.heartbeat().await;
    for node in all.iter().filter(|n| n.id != dispatcher.id) {
        expect_status(
            admin,
            "health",
            all,
            node,
            NodeState::Limited,
            &["credentials out of sync: behind on db"],
        )
        .await;
    }
    let worker = all.iter().find(|n| n.id != dispatcher.id).unwrap();
    for node in all {
        node.set(legacy(9));
    }
    worker.set(legacy(7));
    let shown = expect_status(admin, "health", all, worker, NodeState::Limited, &["behind on db"]).await;
    assert!(!shown.credentials_in_sync);
    assert_eq!(shown.credentials.len(), 1, "{shown:#?}");
    assert_eq!(
        (shown.credentials[0].version, &shown.credentials[0].nodes_behind),
        (Some(9), &vec![worker.name.clone()])
    );
    // The very shape a node not yet upgraded sends (no per-credential fields) is accepted.
    let old_shape = json!({"version": VERSION, "metrics": {
        "runs_limit": 4, "credential_version": 7, "credential_names": ["db"],
        "unreachable_peers": [], "hub_errors": 0, "upgrading": false
    }});
    let answer: HeartbeatResponse = worker
        .api
        .request(Method::POST, "/api/v1/heartbeat", Some(&worker.token), Body::Json(old_shape))
        .await
        .ok();
    assert_eq!(answer.status, NodeState::Limited);
    assert_reason(answer.reason.as_deref(), &["behind on db"]);
    worker.set(|r| {
        let stamps = vec![gatehouse::protocol::CredentialStamp {
            name: "db".into(),
            version: 9,
            origin: String::new(),
            deleted: false,
        }];
        r.metrics.credential_digest = Some(gatehouse::credential_sync::digest(&stamps));
        r.metrics.credentials = stamps;
    });
    let shown = online(worker).await;
    assert!(shown.credentials_in_sync, "{shown:#?}");
    assert_eq!(shown.credentials[0].nodes_current.len(), 3);
    for node in all {
        node.reset();
    }
    online(worker).await;
}

async fn limited_inactive_upgrading(hub: &Hub, admin: &AdminClient) {
    let health = create(admin, "health").await;
    let x = hub.api.join_new(&health.keys.primary, "x").await;
    let y = hub.api.join_new(&health.keys.primary, "y").await;
    let z = hub.api.join_new(&health.keys.primary, "z").await;
    let all = [&x, &y, &z];
    let online = |subject| expect_status(admin, "health", &all, subject, NodeState::Online, &[]);
    let shown = online(&x).await;
    assert_eq!(shown.version.as_deref(), Some(VERSION));

    x.set(|r| r.metrics.unreachable_peers = vec!["y".into()]);
    expect_status(admin, "health", &all, &x, NodeState::Limited, &["peer port unreachable", "y"]).await;
    x.set(|r| r.metrics.unreachable_peers = vec!["y".into(), "z".into()]);
    expect_status(admin, "health", &all, &x, NodeState::Inactive, &["can't reach any other node", "y", "z"])
        .await;
    x.reset();
    online(&x).await;

    y.set(|r| r.metrics.hub_errors = 3);
    expect_status(admin, "health", &all, &y, NodeState::Limited, &["3 failed requests to the hub"]).await;
    y.reset();
    online(&y).await;

    credentials_per_name(admin, &all).await;

    z.set(|r| r.version = "0.2.0".into());
    let shown = expect_status(
        admin,
        "health",
        &all,
        &z,
        NodeState::Limited,
        &["version 0.2.0 differs", "gateway version 0.1.0"],
    )
    .await;
    assert_eq!(shown.version.as_deref(), Some(VERSION), "the gateway version is the majority's");
    assert_eq!(node_in(&shown, "z").version, "0.2.0");
    z.reset();

    z.set(|r| r.metrics.encryption_thumbprint = Some("BB".into()));
    let shown = expect_status(admin, "health", &all, &z, NodeState::Inactive, &["encrypts"]).await;
    assert!(!shown.encryption, "one node of three can't change the gateway's mode");
    z.set(|r| r.metrics.encryption_thumbprint = None);
    z.set(|r| r.metrics.upgrading = true);
    expect_status(admin, "health", &all, &z, NodeState::Upgrading, &["updating from", "to a new version"])
        .await;
    z.reset();
    online(&z).await;

    // On an encrypting gateway, a node with another certificate is Inactive.
    let secure = create(admin, "health-secure").await;
    let mut nodes = Vec::new();
    for name in ["s1", "s2", "s3"] {
        nodes.push(hub.api.join(&secure.keys.primary, name, &new_machine(name), VERSION, Some("AA")).await);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    expect_status(admin, "health-secure", &all, all[2], NodeState::Online, &[]).await;
    all[2].set(|r| r.metrics.encryption_thumbprint = Some("BB".into()));
    expect_status(admin, "health-secure", &all, all[2], NodeState::Inactive, &["certificate differs"]).await;
}

/// NeedsRegistration → (registered, silent) Offline → Online → Limited → Offline.
async fn gateway_lifecycle(hub: &Hub, admin: &AdminClient) {
    let life = create(admin, "life").await;
    let shown = view(admin, "life").await;
    assert_eq!((shown.status, shown.version.as_deref()), (GatewayState::NeedsRegistration, None));
    assert_reason(shown.reason.as_deref(), &["no nodes"]);

    let a = hub.api.join_new(&life.keys.primary, "a").await;
    let b = hub.api.join_new(&life.keys.primary, "b").await;
    let c = hub.api.join_new(&life.keys.primary, "c").await;
    let shown = view(admin, "life").await;
    assert_eq!(shown.status, GatewayState::Offline, "registered but silent: {shown:#?}");
    assert_reason(shown.reason.as_deref(), &["heartbeat"]);
    for node in &shown.nodes {
        assert_eq!(node.status, NodeState::Offline);
        assert_reason(node.reason.as_deref(), &["no heartbeat since it registered"]);
    }

    let beats = [a.beat(), b.beat(), c.beat()];
    eventually("all three online", async || {
        let shown = view(admin, "life").await;
        (shown.status == GatewayState::Online && shown.reason.is_none())
            .then_some(())
            .ok_or(format!("{shown:?}"))
    })
    .await;
    let shown = view(admin, "life").await;
    assert_eq!(shown.version.as_deref(), Some(VERSION));
    assert!(shown.nodes.iter().all(|n| n.status == NodeState::Online && n.reason.is_none()), "{shown:#?}");

    let [beats_a, beats_b, beats_c] = beats;
    beats_c.stop().await;
    let shown = eventually("c offline", async || {
        let shown = view(admin, "life").await;
        (node_in(&shown, "c").status == NodeState::Offline).then(|| shown.clone()).ok_or(format!("{shown:?}"))
    })
    .await;
    assert_eq!(shown.status, GatewayState::Limited, "{shown:#?}");
    assert_reason(shown.reason.as_deref(), &["c is Offline"]);
    assert_reason(node_in(&shown, "c").reason.as_deref(), &["no heartbeat for"]);
    assert_eq!(
        (node_in(&shown, "a").status, node_in(&shown, "b").status),
        (NodeState::Online, NodeState::Online)
    );

    beats_a.stop().await;
    beats_b.stop().await;
    let shown = eventually("the gateway offline", async || {
        let shown = view(admin, "life").await;
        (shown.status == GatewayState::Offline).then(|| shown.clone()).ok_or(format!("{shown:?}"))
    })
    .await;
    assert_reason(shown.reason.as_deref(), &["no node"]);
    for node in &shown.nodes {
        assert_eq!(node.status, NodeState::Offline);
        assert_reason(node.reason.as_deref(), &["no heartbeat for"]);
    }
    assert!(dispatchers(&shown).is_empty(), "an offline gateway has no dispatcher: {shown:#?}");
}

// ==== 3. dispatcher lease ====

async fn dispatcher_lease(db: Db) {
    let hub = Hub::start(&db);
    let admin = hub.admin();
    let lease = create(&admin, "lease").await;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(hub.api.join_new(&lease.keys.primary, name).await);
    }
    let node = |name: &str| nodes.iter().find(|n| n.name == name).unwrap();
    let mut beats: Vec<Beats> = nodes.iter().map(Node::beat).collect();
    let (first, epoch) = wait_for_dispatcher(&admin, "lease", &beats.iter().collect::<Vec<_>>()).await;
    for beat in &beats {
        let heard = beat.log().last.unwrap();
        assert_eq!(heard.lease_epoch, epoch, "every node hears the current epoch");
        assert_eq!(heard.role == Role::Dispatcher, beat.name == first);
    }

    let dispatcher = node(&first);
    let worker = nodes.iter().find(|n| n.name != first).unwrap();
    assert!(dispatcher.claimed(epoch, 1, 0).await.is_empty(), "nothing queued yet");
    worker.claim(epoch, 1, 0).await.refused(409, &["does not hold the dispatcher lease"]);
    for stale in [epoch - 1, epoch + 1] {
        dispatcher.claim(stale, 1, 0).await.refused(409, &["dispatcher lease"]);
    }

    // The dispatcher falls silent: another node takes over once the lease lapses.
    let position = beats.iter().position(|b| b.name == first).unwrap();
    let mut logs = vec![beats.remove(position).stop().await];
    let (second, new_epoch) = wait_for_dispatcher(&admin, "lease", &beats.iter().collect::<Vec<_>>()).await;
    assert_ne!(second, first);
    assert!(new_epoch > epoch, "a new holder means a new epoch ({epoch} → {new_epoch})");
    dispatcher.claim(epoch, 1, 0).await.refused(409, &["dispatcher lease"]);
    node(&second).claim(epoch, 1, 0).await.refused(409, &["dispatcher lease"]);
    assert!(node(&second).claimed(new_epoch, 1, 0).await.is_empty());

    // The old dispatcher comes back as a worker; the lease stays where it is.
    beats.push(dispatcher.beat());
    eventually("the old dispatcher heard it is a worker", async || {
        let log = beats.last().unwrap().log();
        log.last
            .clone()
            .filter(|l| l.role == Role::Worker && l.lease_epoch == new_epoch)
            .ok_or(format!("{log:?}"))
    })
    .await;
    assert_eq!(dispatchers(&view(&admin, "lease").await), [second.as_str()]);

    // Removing the dispatcher frees the lease at once for the next heartbeat.
    admin.remove_node("lease", &second).await.unwrap();
    let position = beats.iter().position(|b| b.name == second).unwrap();
    beats.remove(position).stop().await;
    let (third, last_epoch) = wait_for_dispatcher(&admin, "lease", &beats.iter().collect::<Vec<_>>()).await;
    assert_ne!(third, second);
    assert!(last_epoch > new_epoch);
    for beat in beats {
        logs.push(beat.stop().await);
    }
    assert_one_dispatcher_per_epoch(&logs);
    hub.assert_healthy().await;
}

#[test]
fn dispatcher_lease_on_sqlite() {
    on_sqlite(dispatcher_lease);
}

#[test]
fn dispatcher_lease_on_postgres() {
    on_postgres(dispatcher_lease);
}

// ==== 4. job queue ====

/// The epoch of a node that its last heartbeat made the dispatcher.
fn epoch_of(beats: &Beats) -> i64 {
    beats
        .dispatcher_epoch()
        .unwrap_or_else(|| panic!("{} is not the dispatcher: {:?}", beats.name, beats.log()))
}

async fn job_queue(db: Db) {
    let hub = Hub::start(&db);
    let admin = hub.admin();
    let queue = create(&admin, "queue").await;
    let d = hub.api.join_new(&queue.keys.primary, "d").await;
    let w1 = hub.api.join_new(&queue.keys.primary, "w1").await;
    let w2 = hub.api.join_new(&queue.keys.primary, "w2").await;
    // d beats first, so it is the dispatcher.
    let beats_d = d.beat();
    assert_eq!(wait_for_dispatcher(&admin, "queue", &[&beats_d]).await.0, "d");
    let beats_w1 = w1.beat();
    let beats_w2 = w2.beat();
    wait_online(&admin, "queue").await;
    every_run_once(&admin, &d, &beats_d, [&w1, &w2]).await;
    long_poll(&admin, &d, &beats_d).await;
    lost_worker(&admin, &d, &beats_d, &w1, &w2, beats_w2).await;
    removed_worker(&admin, &d, &beats_d, &w1).await;
    drop(beats_w1);
    assert_one_dispatcher_per_epoch(&[beats_d.stop().await]);
    hub.assert_healthy().await;
}

#[test]
fn job_queue_on_sqlite() {
    on_sqlite(job_queue);
}

#[test]
fn job_queue_on_postgres() {
    on_postgres(job_queue);
}

/// N partitions → N runs, claimed oldest first, assigned, run and finished exactly once.
async fn every_run_once(admin: &AdminClient, d: &Node, beats_d: &Beats, workers: [&Node; 2]) {
    let job = admin.submit_job("queue", &echo("six", 6)).await.unwrap();
    assert_eq!((job.state, job.runs.len()), (RunState::Queued, 6));
    assert!(job.progress.is_none(), "a job without copies has no copy progress: {job:?}");
    assert_eq!(job.runs.iter().map(|r| r.partition).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    assert!(job.runs.iter().all(|r| r.state == RunState::Queued && r.attempt == 1 && r.node_id.is_none()));

    let epoch = epoch_of(beats_d);
    let mut claimed = d.claimed(epoch, 4, 0).await;
    assert_eq!(claimed.iter().map(|r| r.partition).collect::<Vec<_>>(), [0, 1, 2, 3], "oldest first");
    claimed.extend(d.claimed(epoch, 10, 0).await);
    assert!(d.claimed(epoch, 10, 0).await.is_empty(), "every run was claimed");
    let ids: BTreeSet<&str> = claimed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, job.runs.iter().map(|r| r.id.as_str()).collect(), "each run exactly once");
    for run in &claimed {
        assert_eq!(
            (run.state, run.attempt, run.node_id.as_deref()),
            (RunState::Dispatched, 1, Some(d.id.as_str()))
        );
        assert_eq!(run.job_id, job.id);
        // How long it waited, by the hub's clock (the same machine's here).
        let waited =
            run.waited_ms.unwrap_or_else(|| panic!("a claim answer says how long it waited: {run:?}"));
        assert!(i64::try_from(waited).unwrap() <= now_ms() - run.queued_ms, "{run:?}");
    }
    assert!(
        admin.job(&job.id).await.unwrap().runs.iter().all(|r| r.waited_ms.is_none()),
        "only claim answers say how long a run waited"
    );

    let worker_of = |i: usize| workers[i % 2];
    for (i, run) in claimed.iter().enumerate() {
        // Only the dispatcher, holding the lease, hands runs on.
        worker_of(i + 1).assign(&run.id, 1, epoch, worker_of(i)).await.refused(409, &["dispatcher lease"]);
        d.assign(&run.id, 2, epoch, worker_of(i)).await.refused(409, &["attempt 2"]);
        let assigned: RunView = d.assign(&run.id, 1, epoch, worker_of(i)).await.ok();
        assert_eq!(assigned.node_name.as_deref(), Some(worker_of(i).name.as_str()));
        assert_eq!(assigned.state, RunState::Dispatched);
    }
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!(shown.state, RunState::Running);

    let first = &claimed[0];
    let (owner, stranger) = (worker_of(0), worker_of(1));
    owner.progress(&first.id, 1, json!({ "percent": 50 })).await.assert_no_content();
    let shown = admin.job(&job.id).await.unwrap();
    let run = run_of(&shown, &first.id);
    assert_eq!((run.state, run.progress.clone()), (RunState::Running, Some(json!({ "percent": 50 }))));
    stranger.progress(&first.id, 1, json!({})).await.refused(409, &["attempt 1"]);
    owner.progress(&first.id, 2, json!({})).await.refused(409, &["attempt 2"]);

    for (i, run) in claimed.iter().enumerate() {
        worker_of(i + 1).finish(&run.id, 1).await.refused(409, &["not this node's"]);
        let done: RunView = worker_of(i).finish(&run.id, 1).await.ok();
        assert_eq!(
            (done.state, done.result.clone()),
            (RunState::Succeeded, Some(json!({ "by": worker_of(i).name })))
        );
        assert!(done.finished_ms.is_some());
        worker_of(i).finish(&run.id, 1).await.refused(409, &["attempt 1", "not this node's"]);
    }
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!(shown.state, RunState::Succeeded);
    for (i, run) in claimed.iter().enumerate() {
        let run = run_of(&shown, &run.id);
        assert_eq!((run.state, run.attempt), (RunState::Succeeded, 1));
        assert_eq!(
            run.node_name.as_deref(),
            Some(worker_of(i).name.as_str()),
            "the job shows each run's node"
        );
    }
    assert!(admin.jobs("queue", None).await.unwrap().iter().any(|j| j.id == job.id));
}

/// A claim that waits is answered by a job submitted meanwhile.
async fn long_poll(admin: &AdminClient, d: &Node, beats_d: &Beats) {
    let epoch = epoch_of(beats_d);
    let node = d.clone();
    let waiting = tokio::spawn(async move { node.claim(epoch, 10, 25_000).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "with nothing queued, a claim with wait_ms waits");
    let job = admin.submit_job("queue", &echo("late", 3)).await.unwrap();
    let runs: Vec<RunView> = waiting.await.unwrap().ok();
    let got: BTreeSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        got,
        job.runs.iter().map(|r| r.id.as_str()).collect(),
        "the waiting claim got the new job's runs"
    );
    for run in &runs {
        let done: RunView = d.finish(&run.id, 1).await.ok();
        assert_eq!(done.node_name.as_deref(), Some("d"), "the dispatcher may run work itself");
    }
}

/// A run whose worker falls silent goes back to the queue with the next attempt; the silent
/// worker can't report the old attempt any more.
async fn lost_worker(admin: &AdminClient, d: &Node, beats_d: &Beats, w1: &Node, w2: &Node, beats_w2: Beats) {
    let job = admin.submit_job("queue", &echo("lost", 2)).await.unwrap();
    let epoch = epoch_of(beats_d);
    let runs = d.claimed(epoch, 2, 0).await;
    let (lost, kept) = (&runs[0], &runs[1]);
    let _: RunView = d.assign(&lost.id, 1, epoch, w2).await.ok();
    let _: RunView = d.assign(&kept.id, 1, epoch, w1).await.ok();
    w2.progress(&lost.id, 1, json!({ "percent": 10 })).await.assert_no_content();

    beats_w2.stop().await;
    let requeued = eventually("the silent worker's run back in the queue", async || {
        let shown = admin.job(&job.id).await.unwrap();
        let run = run_of(&shown, &lost.id).clone();
        (run.state == RunState::Queued).then(|| run.clone()).ok_or(format!("{run:?}"))
    })
    .await;
    assert_eq!((requeued.attempt, &requeued.node_id, &requeued.progress), (2, &None, &None));
    assert!(
        requeued.queued_ms > lost.queued_ms,
        "back in the queue, its queue time starts again: {requeued:?}"
    );
    let shown = admin.job(&job.id).await.unwrap();
    let still = run_of(&shown, &kept.id);
    assert_eq!(
        (still.state, still.attempt, still.node_name.as_deref()),
        (RunState::Dispatched, 1, Some("w1"))
    );
    assert_eq!(node_in(&view(admin, "queue").await, "w2").status, NodeState::Offline);
    w2.finish(&lost.id, 1).await.refused(409, &["attempt 1"]);
    w2.progress(&lost.id, 1, json!({})).await.refused(409, &["attempt 1"]);

    let again = d.claimed(epoch_of(beats_d), 10, 0).await;
    assert_eq!(again.iter().map(|r| (r.id.as_str(), r.attempt)).collect::<Vec<_>>(), [(lost.id.as_str(), 2)]);
    let waited = i64::try_from(again[0].waited_ms.unwrap()).unwrap();
    assert!(waited <= now_ms() - requeued.queued_ms, "it waited since it was re-queued: {:?}", again[0]);
    d.assign(&lost.id, 1, epoch_of(beats_d), w1).await.refused(409, &["attempt 1"]);
    let _: RunView = d.assign(&lost.id, 2, epoch_of(beats_d), w1).await.ok();
    let done: RunView = w1.finish(&lost.id, 2).await.ok();
    assert_eq!((done.state, done.attempt), (RunState::Succeeded, 2));
    for attempt in [1, 2] {
        w2.finish(&lost.id, attempt).await.refused(409, &["not this node's"]);
    }
    let _: RunView = w1.finish(&kept.id, 1).await.ok();
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!(shown.state, RunState::Succeeded);
    let lost = run_of(&shown, &lost.id);
    assert_eq!((lost.state, lost.attempt, lost.node_name.as_deref()), (RunState::Succeeded, 2, Some("w1")));
}

/// A run of a node the admin removes goes back to the queue too.
async fn removed_worker(admin: &AdminClient, d: &Node, beats_d: &Beats, w1: &Node) {
    let job = admin.submit_job("queue", &echo("removed", 1)).await.unwrap();
    let run = d.claimed(epoch_of(beats_d), 1, 0).await.remove(0);
    let _: RunView = d.assign(&run.id, 1, epoch_of(beats_d), w1).await.ok();
    admin.remove_node("queue", "w1").await.unwrap();
    eventually("the removed worker's run back in the queue", async || {
        let shown = admin.job(&job.id).await.unwrap();
        let run = run_of(&shown, &run.id);
        (run.state == RunState::Queued && run.attempt == 2).then_some(()).ok_or(format!("{run:?}"))
    })
    .await;
    w1.finish(&run.id, 1).await.refused(401, &["not registered"]);
    let again = d.claimed(epoch_of(beats_d), 1, 0).await;
    assert_eq!((again[0].id.as_str(), again[0].attempt), (run.id.as_str(), 2));
    let done: RunView = d.finish(&run.id, 2).await.ok();
    assert_eq!((done.state, done.node_name.as_deref()), (RunState::Succeeded, Some("d")));
}

/// `AssignRun` carries the dispatcher's lease epoch, and only the dispatcher hands out runs.
async fn assign_needs_the_lease(db: Db) {
    let hub = Hub::start(&db);
    let admin = hub.admin();
    let gateway = create(&admin, "assign").await;
    let d = hub.api.join_new(&gateway.keys.primary, "d").await;
    let w1 = hub.api.join_new(&gateway.keys.primary, "w1").await;
    let w2 = hub.api.join_new(&gateway.keys.primary, "w2").await;
    let beats_d = d.beat();
    wait_for_dispatcher(&admin, "assign", &[&beats_d]).await;
    let _beats = [w1.beat(), w2.beat()];
    wait_online(&admin, "assign").await;
    admin.submit_job("assign", &echo("two", 2)).await.unwrap();
    let epoch = epoch_of(&beats_d);
    let runs = d.claimed(epoch, 2, 0).await;

    let mut wrong = Vec::new();
    let reply = d.assign(&runs[0].id, 1, epoch + 7, &w1).await;
    if reply.status != 409 {
        wrong.push(format!(
            "an assign with lease epoch {} (the lease is at {epoch}) was answered {reply:?}",
            epoch + 7
        ));
    }
    let _: RunView = d.assign(&runs[1].id, 1, epoch, &w1).await.ok();
    let reply = w1.assign(&runs[1].id, 1, epoch, &w2).await;
    if reply.status != 409 {
        wrong.push(format!("worker w1, not the dispatcher, passed its run on to w2: {reply:?}"));
    }
    assert!(wrong.is_empty(), "assign should check the lease:\n{}", wrong.join("\n"));
}

#[test]
fn assign_needs_the_lease_on_sqlite() {
    on_sqlite(assign_needs_the_lease);
}

#[test]
fn assign_needs_the_lease_on_postgres() {
    on_postgres(assign_needs_the_lease);
}

// ==== 5. bad input ====

/// One request the hub must refuse with `status` and a JSON error, changing nothing.
struct Bad {
    what: &'static str,
    method: Method,
    path: String,
    authorization: Option<String>,
    body: Body,
    status: u16,
}

fn bad(
    what: &'static str,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Body,
    status: u16,
) -> Bad {
    Bad { what, method, path: path.to_owned(), authorization: authorization.map(str::to_owned), body, status }
}

fn raw_json(text: &[u8]) -> Body {
    Body::Raw(Some("application/json"), text.to_vec())
}

/// A JSON object over the 64 KiB body limit.
fn oversized(field: &str) -> Body {
    raw_json(format!("{{\"{field}\":\"{}\"}}", "a".repeat(70 * 1024)).as_bytes())
}

#[allow(clippy::too_many_lines, reason = "a table of cases, one or a few lines each")]
fn admin_cases(admin: &str, node: &str) -> Vec<Bad> {
    use Method as M;
    let (a, n) = (Some(admin), Some(node));
    let wrong = format!("Bearer gha_{}", "A".repeat(43));
    let echo_job = |activity: Value| json!({ "spec": { "name": "j", "activities": [activity] } });
    let echo = |partitions: u32| json!({ "kind": "echo", "message": "m", "partitions": partitions });
    vec![
        bad("no admin token", M::GET, "/api/v1/gateways", None, Body::Empty, 401),
        bad("a wrong admin token", M::GET, "/api/v1/gateways", Some(&wrong), Body::Empty, 401),
        bad("a Basic header", M::GET, "/api/v1/gateways", Some("Basic YWRtaW46YWRtaW4="), Body::Empty, 401),
        bad("the node token as admin", M::GET, "/api/v1/gateways", n, Body::Empty, 401),
        bad(
            "a change without a token",
            M::POST,
            "/api/v1/gateways",
            None,
            Body::Json(json!({"name": "x"})),
            401,
        ),
        bad("a delete with a wrong token", M::DELETE, "/api/v1/gateways/bad", Some(&wrong), Body::Empty, 401),
        bad("malformed JSON", M::POST, "/api/v1/gateways", a, raw_json(b"{\"name\":"), 400),
        bad("an empty body", M::POST, "/api/v1/gateways", a, raw_json(b""), 400),
        bad(
            "a body that is not UTF-8",
            M::POST,
            "/api/v1/gateways",
            a,
            raw_json(b"{\"name\":\"\xff\"}"),
            400,
        ),
        bad(
            "no Content-Type",
            M::POST,
            "/api/v1/gateways",
            a,
            Body::Raw(None, b"{\"name\":\"x\"}".to_vec()),
            415,
        ),
        bad(
            "an unknown field",
            M::POST,
            "/api/v1/gateways",
            a,
            Body::Json(json!({"name": "x", "colour": 1})),
            422,
        ),
        bad(
            "an unknown setting",
            M::POST,
            "/api/v1/gateways",
            a,
            Body::Json(json!({"name": "x", "settings": {"max_node": 2}})),
            422,
        ),
        bad("a name of the wrong type", M::POST, "/api/v1/gateways", a, Body::Json(json!({"name": 5})), 422),
        bad(
            "a setting of the wrong type",
            M::POST,
            "/api/v1/gateways",
            a,
            Body::Json(json!({"name": "x", "settings": {"max_nodes": "four"}})),
            422,
        ),
        bad(
            "a setting too large for its type",
            M::POST,
            "/api/v1/gateways",
            a,
            Body::Json(json!({"name": "x", "settings": {"cpu_threshold": 300}})),
            422,
        ),
        bad(
            "max_nodes out of range",
            M::POST,
            "/api/v1/gateways",
            a,
            Body::Json(json!({"name": "x", "settings": {"max_nodes": 9}})),
            400,
        ),
        bad(
            "a threshold over 100",
            M::POST,
            "/api/v1/gateways",
            a,
            Body::Json(json!({"name": "x", "settings": {"cpu_threshold": 101}})),
            400,
        ),
        bad(
            "a name with spaces",
            M::POST,
            "/api/v1/gateways",
            a,
            Body::Json(json!({"name": "no spaces"})),
            400,
        ),
        bad("an empty name", M::POST, "/api/v1/gateways", a, Body::Json(json!({"name": " "})), 400),
        bad("the name '.'", M::POST, "/api/v1/gateways", a, Body::Json(json!({"name": "."})), 400),
        bad("the name '..'", M::POST, "/api/v1/gateways", a, Body::Json(json!({"name": ".."})), 400),
        bad(
            "a name starting with '-'",
            M::POST,
            "/api/v1/gateways",
            a,
            Body::Json(json!({"name": "-x"})),
            400,
        ),
        bad("a taken name", M::POST, "/api/v1/gateways", a, Body::Json(json!({"name": "bad"})), 409),
        bad("an oversized body", M::POST, "/api/v1/gateways", a, oversized("name"), 413),
        bad("an unknown gateway", M::GET, "/api/v1/gateways/nope", a, Body::Empty, 404),
        bad(
            "settings of an unknown gateway",
            M::PATCH,
            "/api/v1/gateways/nope/settings",
            a,
            Body::Json(json!({})),
            404,
        ),
        bad(
            "an unknown settings field",
            M::PATCH,
            "/api/v1/gateways/bad/settings",
            a,
            Body::Json(json!({"max_nodes": 2, "colour": 1})),
            422,
        ),
        bad(
            "max_nodes 0",
            M::PATCH,
            "/api/v1/gateways/bad/settings",
            a,
            Body::Json(json!({"max_nodes": 0})),
            400,
        ),
        bad("a bad key slot", M::POST, "/api/v1/gateways/bad/keys/tertiary/regenerate", a, Body::Empty, 400),
        bad("keys of an unknown gateway", M::GET, "/api/v1/gateways/nope/keys", a, Body::Empty, 404),
        bad("?limit=abc", M::GET, "/api/v1/gateways/bad/jobs?limit=abc", a, Body::Empty, 400),
        bad("?limit=-1", M::GET, "/api/v1/gateways/bad/jobs?limit=-1", a, Body::Empty, 400),
        bad("a limit over u32", M::GET, "/api/v1/gateways/bad/jobs?limit=99999999999", a, Body::Empty, 400),
        bad(
            "an unknown query parameter",
            M::GET,
            "/api/v1/gateways/bad/jobs?colour=red",
            a,
            Body::Empty,
            400,
        ),
        bad(
            "a job for an unknown gateway",
            M::POST,
            "/api/v1/gateways/nope/jobs",
            a,
            Body::Json(echo_job(echo(1))),
            404,
        ),
        bad("zero partitions", M::POST, "/api/v1/gateways/bad/jobs", a, Body::Json(echo_job(echo(0))), 400),
        bad(
            "10 001 partitions",
            M::POST,
            "/api/v1/gateways/bad/jobs",
            a,
            Body::Json(echo_job(echo(10_001))),
            400,
        ),
        bad(
            "a job without activities",
            M::POST,
            "/api/v1/gateways/bad/jobs",
            a,
            Body::Json(json!({"spec": {"name": "j", "activities": []}})),
            400,
        ),
        bad(
            "a job without a name",
            M::POST,
            "/api/v1/gateways/bad/jobs",
            a,
            Body::Json(json!({"spec": {"name": " ", "activities": [echo(1)]}})),
            400,
        ),
        bad(
            "an unknown activity kind",
            M::POST,
            "/api/v1/gateways/bad/jobs",
            a,
            Body::Json(echo_job(json!({"kind": "teleport"}))),
            422,
        ),
        bad(
            "a job with an unknown field",
            M::POST,
            "/api/v1/gateways/bad/jobs",
            a,
            Body::Json(json!({"spec": {"name": "j", "activities": [echo(1)], "priority": 1}})),
            422,
        ),
        bad("an unknown job", M::GET, "/api/v1/jobs/nope", a, Body::Empty, 404),
        bad("cancelling an unknown job", M::POST, "/api/v1/jobs/nope/cancel", a, Body::Empty, 404),
        bad("cancelling without a token", M::POST, "/api/v1/jobs/nope/cancel", None, Body::Empty, 401),
        bad("cancelling with the node token", M::POST, "/api/v1/jobs/nope/cancel", n, Body::Empty, 401),
        bad("cancelling with GET", M::GET, "/api/v1/jobs/nope/cancel", a, Body::Empty, 405),
        bad(
            "a negative bandwidth limit",
            M::PATCH,
            "/api/v1/gateways/bad/settings",
            a,
            Body::Json(json!({"bandwidth_limit_mbps": -1})),
            422,
        ),
        bad("removing an unknown node", M::DELETE, "/api/v1/gateways/bad/nodes/nope", a, Body::Empty, 404),
        bad("deleting an unknown gateway", M::DELETE, "/api/v1/gateways/nope", a, Body::Empty, 404),
        bad("an unknown route", M::GET, "/api/v1/nope", a, Body::Empty, 404),
        bad("a wrong method", M::PUT, "/api/v1/gateways", a, Body::Json(json!({})), 405),
        bad("a gateway path that is not UTF-8", M::GET, "/api/v1/gateways/%FF", a, Body::Empty, 400),
        bad("a job path that is not UTF-8", M::GET, "/api/v1/jobs/%C3%28", a, Body::Empty, 400),
    ]
}

#[allow(clippy::too_many_lines, reason = "a table of cases, one or a few lines each")]
fn node_cases(node: &Node, key: &str, admin: &str, run: &str, other_node: &str) -> Vec<Bad> {
    use Method as M;
    let n = format!("Bearer {}", node.token);
    let n = Some(n.as_str());
    let k = format!("Bearer {key}");
    let k = Some(k.as_str());
    let wrong = format!("Bearer ghn_{}_{}", node.id, "A".repeat(43));
    let wrong = Some(wrong.as_str());
    let beat = json!({ "version": VERSION, "metrics": {} });
    let register = |change: &dyn Fn(&mut Value)| {
        let mut body = registration("r1", "machine-r1", VERSION, None);
        change(&mut body);
        Body::Json(body)
    };
    let assign = |node_id: &str| Body::Json(json!({ "lease_epoch": 1, "attempt": 1, "node_id": node_id }));
    let hb = "/api/v1/heartbeat";
    vec![
        bad("a heartbeat without a token", M::POST, hb, None, Body::Json(beat.clone()), 401),
        bad("a wrong node token", M::POST, hb, wrong, Body::Json(beat.clone()), 401),
        bad("a malformed node token", M::POST, hb, Some("Bearer ghn_x"), Body::Json(beat.clone()), 401),
        bad("the admin token as a node", M::POST, hb, Some(admin), Body::Json(beat.clone()), 401),
        bad("an auth key as a node token", M::POST, hb, k, Body::Json(beat.clone()), 401),
        bad("a heartbeat with malformed JSON", M::POST, hb, n, raw_json(b"{"), 400),
        bad(
            "a heartbeat with an unknown metric",
            M::POST,
            hb,
            n,
            Body::Json(json!({"version": VERSION, "metrics": {"temperature": 3}})),
            422,
        ),
        bad(
            "a version of the wrong type",
            M::POST,
            hb,
            n,
            Body::Json(json!({"version": 1, "metrics": {}})),
            422,
        ),
        bad(
            "negative memory",
            M::POST,
            hb,
            n,
            Body::Json(json!({"version": VERSION, "metrics": {"available_memory_bytes": -1}})),
            422,
        ),
        bad("an oversized heartbeat", M::POST, hb, n, oversized("version"), 413),
        bad(
            "a registration without a name",
            M::POST,
            "/api/v1/register",
            k,
            register(&|b| {
                b.as_object_mut().unwrap().remove("name");
            }),
            422,
        ),
        bad(
            "a node name with spaces",
            M::POST,
            "/api/v1/register",
            k,
            register(&|b| b["name"] = json!("a b")),
            400,
        ),
        bad(
            "an empty machine id",
            M::POST,
            "/api/v1/register",
            k,
            register(&|b| b["machine_id"] = json!(" ")),
            400,
        ),
        bad("an empty version", M::POST, "/api/v1/register", k, register(&|b| b["version"] = json!("")), 400),
        bad(
            "an unknown registration field",
            M::POST,
            "/api/v1/register",
            k,
            register(&|b| b["x"] = json!(1)),
            422,
        ),
        bad("registering with GET", M::GET, "/api/v1/register", k, Body::Empty, 405),
        bad(
            "a claim with a wrong type",
            M::POST,
            "/api/v1/dispatch/claim",
            n,
            Body::Json(json!({"lease_epoch": "x", "max": 1, "wait_ms": 0})),
            422,
        ),
        bad(
            "a claim with a wrong token",
            M::POST,
            "/api/v1/dispatch/claim",
            wrong,
            Body::Json(json!({"lease_epoch": 1, "max": 1, "wait_ms": 0})),
            401,
        ),
        bad(
            "a claim with a wrong epoch",
            M::POST,
            "/api/v1/dispatch/claim",
            n,
            Body::Json(json!({"lease_epoch": 999, "max": 1, "wait_ms": 0})),
            409,
        ),
        bad("assigning an unknown run", M::POST, "/api/v1/runs/nope/assign", n, assign(&node.id), 409),
        bad(
            "assigning a queued run",
            M::POST,
            &format!("/api/v1/runs/{run}/assign"),
            n,
            assign(&node.id),
            409,
        ),
        bad(
            "assigning to a node of another gateway",
            M::POST,
            &format!("/api/v1/runs/{run}/assign"),
            n,
            assign(other_node),
            400,
        ),
        bad(
            "assigning to an unknown node",
            M::POST,
            &format!("/api/v1/runs/{run}/assign"),
            n,
            assign("nope"),
            400,
        ),
        bad(
            "progress on a queued run",
            M::POST,
            &format!("/api/v1/runs/{run}/progress"),
            n,
            Body::Json(json!({"attempt": 1, "progress": {}})),
            409,
        ),
        bad(
            "finishing an unknown run",
            M::POST,
            "/api/v1/runs/nope/finish",
            n,
            Body::Json(json!({"attempt": 1, "succeeded": true, "result": null, "error": null})),
            409,
        ),
        bad(
            "finishing a queued run",
            M::POST,
            &format!("/api/v1/runs/{run}/finish"),
            n,
            Body::Json(json!({"attempt": 1, "succeeded": true, "result": null, "error": null})),
            409,
        ),
        bad(
            "an attempt of the wrong type",
            M::POST,
            &format!("/api/v1/runs/{run}/finish"),
            n,
            Body::Json(json!({"attempt": "one", "succeeded": true, "result": null, "error": null})),
            422,
        ),
        bad(
            "a negative attempt",
            M::POST,
            &format!("/api/v1/runs/{run}/finish"),
            n,
            Body::Json(json!({"attempt": -1, "succeeded": true, "result": null, "error": null})),
            422,
        ),
        bad(
            "splitting an unknown run",
            M::POST,
            "/api/v1/runs/nope/split",
            n,
            Body::Json(json!({"attempt": 1, "parts": [], "result": {}})),
            409,
        ),
        bad(
            "splitting a run that is no copy",
            M::POST,
            &format!("/api/v1/runs/{run}/split"),
            n,
            Body::Json(json!({"attempt": 1, "parts": [], "result": {}})),
            400,
        ),
        bad(
            "a split with an unknown field",
            M::POST,
            &format!("/api/v1/runs/{run}/split"),
            n,
            Body::Json(json!({"attempt": 1, "parts": [], "result": {}, "files": 3})),
            422,
        ),
        bad(
            "a split with an unknown kind of part",
            M::POST,
            &format!("/api/v1/runs/{run}/split"),
            n,
            Body::Json(json!({"attempt": 1, "parts": [{"kind": "blocks"}], "result": {}})),
            422,
        ),
        bad(
            "a split without a token",
            M::POST,
            &format!("/api/v1/runs/{run}/split"),
            None,
            Body::Json(json!({"attempt": 1, "parts": [], "result": {}})),
            401,
        ),
        bad("unregistering with a wrong token", M::POST, "/api/v1/unregister", wrong, Body::Empty, 401),
    ]
}

async fn bad_input(db: Db) {
    let hub = Hub::start(&db);
    let admin = hub.admin();
    let gateway = create(&admin, "bad").await;
    let node = hub.api.join_new(&gateway.keys.primary, "n").await;
    node.heartbeat().await;
    let job = admin.submit_job("bad", &echo("queued", 2)).await.unwrap();
    let other = create(&admin, "other").await;
    let other_node = hub.api.join_new(&other.keys.primary, "m").await;

    let before = snapshot(&admin, true).await;
    let admin_auth = format!("Bearer {}", hub.token);
    let node_auth = format!("Bearer {}", node.token);
    let mut cases = admin_cases(&admin_auth, &node_auth);
    cases.extend(node_cases(&node, &gateway.keys.primary, &admin_auth, &job.runs[0].id, &other_node.id));
    let mut wrong = Vec::new();
    let mut before = before;
    for case in cases {
        if case.path.ends_with("/assign") {
            // Assigning needs the lease, which lapses 2 s after the node's last heartbeat: a
            // slow run of the cases before would make these refusals about the lease.
            node.heartbeat().await;
            before = snapshot(&admin, true).await;
        }
        let reply = hub.api.send(case.method, &case.path, case.authorization.as_deref(), case.body).await;
        let body_ok = serde_json::from_str::<Value>(&reply.text).is_ok_and(|body| {
            body.as_object().is_some_and(|o| {
                o.keys().all(|k| k == "error" || k == "hint" || k == "code")
                    && o.get("error").and_then(Value::as_str).is_some()
            })
        });
        let refused = reply.status == case.status && body_ok;
        if refused {
            error_sentence(&reply.text, case.what);
        } else {
            wrong.push(format!("{}: expected {} with a JSON error, got {reply:?}", case.what, case.status));
        }
        let after = snapshot(&admin, true).await;
        if refused && after != before {
            wrong.push(format!("{}: refused, but what the hub stores changed", case.what));
        }
        // A wrongly accepted request may change things; the next cases start from there.
        before = after;
    }
    assert!(wrong.is_empty(), "{} bad requests were answered wrongly:\n{}", wrong.len(), wrong.join("\n"));
    hub.assert_healthy().await;
}

#[test]
fn bad_input_on_sqlite() {
    on_sqlite(bad_input);
}

#[test]
fn bad_input_on_postgres() {
    on_postgres(bad_input);
}

/// Text with a NUL character is input like any other: a refusal or a success, never a
/// failure of the hub (PostgreSQL can't store NUL in TEXT).
async fn nul_characters(db: Db) {
    let hub = Hub::start(&db);
    let admin = hub.admin();
    let gateway = create(&admin, "nul").await;
    let key = &gateway.keys.primary;
    let node = hub.api.join_new(key, "n").await;
    let d = node.heartbeat().await;
    let job = admin.submit_job("nul", &echo("one", 1)).await.unwrap();
    let run = &job.runs[0].id;
    let _ = node.claimed(d.lease_epoch, 1, 0).await;

    let mut metrics = serde_json::to_value(NodeMetrics::default()).unwrap();
    metrics["encryption_thumbprint"] = json!("AA\u{0}");
    let attempts = [
        ("a machine id", hub.api.register(key, registration("r1", "machine\u{0}r1", VERSION, None)).await),
        ("a peer address", hub.api.register(key, json!({"name": "r2", "machine_id": "m-r2", "version": VERSION, "peer_address": "r2\u{0}:1", "encryption_thumbprint": null})).await),
        ("a version", hub.api.register(key, registration("r3", "machine-r3", "0.1.0\u{0}", None)).await),
        ("a heartbeat version", node.call("/api/v1/heartbeat", json!({"version": "0.1\u{0}", "metrics": {}})).await),
        ("a thumbprint", node.call("/api/v1/heartbeat", json!({"version": VERSION, "metrics": metrics})).await),
        (
            "a job name",
            hub.api
                .request(
                    Method::POST,
                    "/api/v1/gateways/nul/jobs",
                    Some(&hub.token),
                    Body::Json(json!({"spec": {"name": "job\u{0}", "activities": [{"kind": "echo", "message": "m"}]}})),
                )
                .await,
        ),
        (
            "a run's error",
            node.call(&format!("/api/v1/runs/{run}/finish"), json!({"attempt": 1, "succeeded": false, "result": null, "error": "bad\u{0}"}))
                .await,
        ),
    ];
    let failed: Vec<String> = attempts
        .iter()
        .filter(|(_, reply)| reply.status >= 500 || reply.status == 0)
        .map(|(what, reply)| format!("NUL in {what}: {reply:?}"))
        .collect();
    assert!(failed.is_empty(), "the hub failed instead of answering:\n{}", failed.join("\n"));
    hub.assert_healthy().await;
}

#[test]
fn nul_characters_on_sqlite() {
    on_sqlite(nul_characters);
}

#[test]
fn nul_characters_on_postgres() {
    on_postgres(nul_characters);
}

// ==== 6. hub restart ====

async fn hub_restart(db: Db) {
    let mut hub = Hub::start(&db);
    let admin = hub.admin();
    let east = create(&admin, "east").await;
    let west = create(&admin, "west").await;
    let settings =
        UpdateSettings { max_nodes: Some(3), cpu_threshold: Some(80), ..UpdateSettings::default() };
    admin.update_settings("west", &settings).await.unwrap();
    let a = hub.api.join_new(&east.keys.primary, "a").await;
    let b = hub.api.join_new(&east.keys.secondary, "b").await;
    let c = hub.api.join_new(&west.keys.primary, "c").await;
    let beats_a = a.beat();
    let (_, epoch) = wait_for_dispatcher(&admin, "east", &[&beats_a]).await;
    let beats_b = b.beat();
    wait_online(&admin, "east").await;
    c.heartbeat().await;

    // East: one run running on b, one dispatched to a itself, two queued. West: two queued.
    let job = admin.submit_job("east", &echo("across-restart", 4)).await.unwrap();
    let claimed = a.claimed(epoch, 2, 0).await;
    let (on_b, on_a) = (&claimed[0], &claimed[1]);
    let _: RunView = a.assign(&on_b.id, 1, epoch, &b).await.ok();
    b.progress(&on_b.id, 1, json!({ "percent": 25 })).await.assert_no_content();
    let _: RunView = a.assign(&on_a.id, 1, epoch, &a).await.ok();
    let west_job = admin.submit_job("west", &echo("waiting", 2)).await.unwrap();
    let before = snapshot(&admin, false).await;
    let heard_before = (beats_a.log().ok, beats_b.log().ok);

    hub.restart();
    let admin = hub.admin();
    let after = snapshot(&admin, false).await;
    assert!(after == before, "the restart lost something:\nbefore {before:#}\nafter {after:#}");
    eventually("heartbeats answered by the restarted hub", async || {
        let now = (beats_a.log().ok, beats_b.log().ok);
        (now.0 > heard_before.0 + 1 && now.1 > heard_before.1 + 1).then_some(()).ok_or(format!("{now:?}"))
    })
    .await;
    let heard = c.heartbeat().await;
    assert_eq!(heard.role, Role::Dispatcher, "c, alone in west, leads it");

    let shown = admin.job(&job.id).await.unwrap();
    let run = run_of(&shown, &on_b.id);
    assert_eq!((run.state, run.attempt, run.node_name.as_deref()), (RunState::Running, 1, Some("b")));
    assert_eq!(run.progress, Some(json!({ "percent": 25 })));
    let run = run_of(&shown, &on_a.id);
    assert_eq!((run.state, run.attempt, run.node_name.as_deref()), (RunState::Dispatched, 1, Some("a")));
    let queued: BTreeSet<&str> =
        shown.runs.iter().filter(|r| r.state == RunState::Queued).map(|r| r.id.as_str()).collect();
    assert_eq!(queued.len(), 2, "{shown:#?}");
    let _: RunView = b.finish(&on_b.id, 1).await.ok();
    let _: RunView = a.finish(&on_a.id, 1).await.ok();

    let (holder, epoch) = wait_for_dispatcher(&admin, "east", &[&beats_a, &beats_b]).await;
    let holder = if holder == "a" { &a } else { &b };
    let rest = holder.claimed(epoch, 10, 0).await;
    assert_eq!(
        rest.iter().map(|r| r.id.as_str()).collect::<BTreeSet<_>>(),
        queued,
        "the queued runs, still queued"
    );
    for run in &rest {
        let _: RunView = holder.finish(&run.id, run.attempt).await.ok();
    }
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!(shown.state, RunState::Succeeded);
    assert!(shown.runs.iter().all(|r| r.attempt == 1), "no run was lost across the restart: {shown:#?}");

    let west_runs = c.claimed(heard.lease_epoch, 10, 0).await;
    assert_eq!(west_runs.len(), 2);
    assert!(west_runs.iter().all(|r| r.job_id == west_job.id));
    let shown = view(&admin, "west").await;
    assert_eq!((shown.settings.max_nodes, shown.settings.cpu_threshold), (3, 80));

    // A dispatcher always has a claim waiting; SIGTERM must still end the hub by itself
    // (`restart` asserts that), not only after the claim's wait or SIGKILL.
    let node = holder.clone();
    let waiting = tokio::spawn(async move { node.claim(epoch, 1, 25_000).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a claim with nothing queued waits");
    hub.restart();
    let answer = waiting.await.unwrap();
    assert_ne!(answer.status, 200, "the claim got runs that don't exist: {answer:?}");
    let heard = (beats_a.log().ok, beats_b.log().ok);
    eventually("heartbeats answered after the second restart", async || {
        let now = (beats_a.log().ok, beats_b.log().ok);
        (now.0 > heard.0 && now.1 > heard.1).then_some(()).ok_or(format!("{now:?}"))
    })
    .await;
    hub.assert_healthy().await;
}

#[test]
fn hub_restart_on_sqlite() {
    on_sqlite(hub_restart);
}

#[test]
fn hub_restart_on_postgres() {
    on_postgres(hub_restart);
}

/// The hub is down for longer than `offline_after` while runs are in flight. Back, it lets the
/// nodes heartbeat before it calls any of them lost: the nodes that come back keep their
/// attempts and finish them (a finish retried at once is taken), and only the run of the node
/// that never came back goes back to the queue, its queue time starting again.
async fn hub_down_for_a_while(db: Db) {
    let mut hub = Hub::start(&db);
    let admin = hub.admin();
    let gateway = create(&admin, "resume").await;
    let d = hub.api.join_new(&gateway.keys.primary, "d").await;
    let w = hub.api.join_new(&gateway.keys.primary, "w").await;
    let gone = hub.api.join_new(&gateway.keys.primary, "gone").await;
    let beats_d = d.beat();
    let (_, epoch) = wait_for_dispatcher(&admin, "resume", &[&beats_d]).await;
    let beats_w = w.beat();
    let beats_gone = gone.beat();
    wait_online(&admin, "resume").await;

    let job = admin.submit_job("resume", &echo("in-flight", 3)).await.unwrap();
    let runs = d.claimed(epoch, 3, 0).await;
    assert_eq!(runs.len(), 3);
    let (on_w, on_d, on_gone) = (&runs[0], &runs[1], &runs[2]);
    for (run, node) in [(on_w, &w), (on_d, &d), (on_gone, &gone)] {
        let _: RunView = d.assign(&run.id, 1, epoch, node).await.ok();
        let _: RunView = node.start(&run.id, 1).await.ok();
    }
    beats_gone.stop().await;
    let heard = (beats_d.log().ok, beats_w.log().ok);
    // Longer than offline_after (3 s): every node's last heartbeat is old when the hub is back.
    hub.restart_after(Duration::from_millis(3500));
    let back = now_ms();
    let admin = hub.admin();
    let done: RunView = w.finish(&on_w.id, 1).await.ok();
    assert_eq!((done.state, done.attempt), (RunState::Succeeded, 1), "a finish retried after the restart");
    eventually("heartbeats answered by the restarted hub", async || {
        let now = (beats_d.log().ok, beats_w.log().ok);
        (now.0 > heard.0 && now.1 > heard.1).then_some(()).ok_or(format!("{now:?}"))
    })
    .await;

    let requeued = eventually("the run of the node that never came back, back in the queue", async || {
        let shown = admin.job(&job.id).await.unwrap();
        let run = run_of(&shown, &on_gone.id).clone();
        (run.state == RunState::Queued).then(|| run.clone()).ok_or(format!("{run:?}"))
    })
    .await;
    assert_eq!((requeued.attempt, requeued.node_id.as_deref()), (2, None));
    assert!(requeued.queued_ms >= back, "its queue time starts when it went back: {requeued:?}");
    let shown = admin.job(&job.id).await.unwrap();
    let kept = run_of(&shown, &on_d.id);
    assert_eq!(
        (kept.state, kept.attempt, kept.node_name.as_deref()),
        (RunState::Running, 1, Some("d")),
        "d heartbeated in time and kept its run: {shown:#?}"
    );
    let done: RunView = d.finish(&on_d.id, 1).await.ok();
    assert_eq!((done.state, done.attempt), (RunState::Succeeded, 1));

    let (holder, epoch) = wait_for_dispatcher(&admin, "resume", &[&beats_d, &beats_w]).await;
    let holder = if holder == "d" { &d } else { &w };
    let again = holder.claimed(epoch, 10, 0).await;
    assert_eq!(
        again.iter().map(|r| (r.id.as_str(), r.attempt)).collect::<Vec<_>>(),
        [(on_gone.id.as_str(), 2)]
    );
    let waited = i64::try_from(again[0].waited_ms.unwrap()).unwrap();
    assert!(waited <= now_ms() - requeued.queued_ms, "the queue timeout restarted: {:?}", again[0]);
    let done: RunView = holder.finish(&on_gone.id, 2).await.ok();
    assert_eq!(done.state, RunState::Succeeded);
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!(shown.state, RunState::Succeeded);
    let attempts: Vec<(&str, u32)> = shown.runs.iter().map(|r| (r.id.as_str(), r.attempt)).collect();
    assert_eq!(attempts, [(on_w.id.as_str(), 1), (on_d.id.as_str(), 1), (on_gone.id.as_str(), 2)]);
    hub.assert_healthy().await;
}

#[test]
fn hub_down_for_a_while_on_sqlite() {
    on_sqlite(hub_down_for_a_while);
}

#[test]
fn hub_down_for_a_while_on_postgres() {
    on_postgres(hub_down_for_a_while);
}

// ==== 7. two hubs on one PostgreSQL database ====

impl Node {
    /// The same node talking to another hub.
    fn through(&self, api: &Api) -> Node {
        Node { api: api.clone(), ..self.clone() }
    }
}

async fn two_hubs(db: Db) {
    let hub_a = Hub::start(&db);
    let hub_b = hub_a.beside();
    let (admin_a, admin_b) = (hub_a.admin(), hub_b.admin());
    let shared = create(&admin_a, "shared").await;
    assert_eq!(
        admin_b.gateway("shared").await.unwrap().id,
        shared.gateway.id,
        "hub B serves hub A's gateway"
    );
    let d = hub_a.api.join_new(&shared.keys.primary, "d").await;
    let w = hub_b.api.join_new(&shared.keys.secondary, "w").await;
    let both = vec![hub_a.api.clone(), hub_b.api.clone()];
    let beats_d = d.beat_through(both.clone());
    let (holder, epoch) = wait_for_dispatcher(&admin_b, "shared", &[&beats_d]).await;
    assert_eq!(holder, "d");
    let beats_w = w.beat_through(both.into_iter().rev().collect());
    eventually("both hubs show both nodes online with one dispatcher", async || {
        let (a, b) = (view(&admin_a, "shared").await, view(&admin_b, "shared").await);
        let same = dispatchers(&a) == ["d"] && dispatchers(&b) == ["d"];
        (same && a.status == GatewayState::Online && b.status == GatewayState::Online)
            .then_some(())
            .ok_or(format!("A: {a:?}\nB: {b:?}"))
    })
    .await;
    let (via_a, via_b) = (d.through(&hub_a.api), d.through(&hub_b.api));
    w.through(&hub_a.api).claim(epoch, 1, 0).await.refused(409, &["dispatcher lease"]);
    w.through(&hub_b.api).claim(epoch, 1, 0).await.refused(409, &["dispatcher lease"]);

    // A claim waiting on hub B sees a job submitted through hub A.
    let node = via_b.clone();
    let waiting = tokio::spawn(async move { node.claim(epoch, 10, 25_000).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    let job = admin_a.submit_job("shared", &echo("across", 3)).await.unwrap();
    let runs: Vec<RunView> = waiting.await.unwrap().ok();
    let got: BTreeSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got, job.runs.iter().map(|r| r.id.as_str()).collect());
    for run in &runs {
        let _: RunView = via_a.finish(&run.id, 1).await.ok();
    }

    hammer(&admin_a, &admin_b, &via_a, &via_b, epoch).await;

    let logs = [beats_d.stop().await, beats_w.stop().await];
    assert_eq!(logs[0].dispatcher_epochs, BTreeSet::from([epoch]), "the lease never changed hands");
    assert_one_dispatcher_per_epoch(&logs);
    hub_a.assert_healthy().await;
    hub_b.assert_healthy().await;
}

/// 8 claim loops, 4 per hub, over 500 runs: every run claimed once, then finished once.
async fn hammer(admin_a: &AdminClient, admin_b: &AdminClient, via_a: &Node, via_b: &Node, epoch: i64) {
    const RUNS: u32 = 500;
    let job = admin_a.submit_job("shared", &echo("many", RUNS)).await.unwrap();
    let mut loops = tokio::task::JoinSet::new();
    for i in 0..8 {
        let node = if i % 2 == 0 { via_a.clone() } else { via_b.clone() };
        loops.spawn(async move {
            let mut got = Vec::new();
            // Each round takes at least one run or ends; RUNS rounds are always enough.
            for _ in 0..RUNS {
                let runs = node.claimed(epoch, 8, 0).await;
                if runs.is_empty() {
                    break;
                }
                assert!(runs.len() <= 8, "a claim for 8 got {}", runs.len());
                got.extend(runs.into_iter().map(|r| (r.id, r.attempt)));
            }
            got
        });
    }
    let mut claimed = Vec::new();
    while let Some(got) = loops.join_next().await {
        claimed.extend(got.unwrap());
    }
    let unique: BTreeSet<&str> = claimed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(claimed.len(), unique.len(), "a run was claimed twice");
    assert_eq!(unique, job.runs.iter().map(|r| r.id.as_str()).collect(), "every run claimed exactly once");
    assert!(claimed.iter().all(|(_, attempt)| *attempt == 1));

    let mut finishing = tokio::task::JoinSet::new();
    for (i, chunk) in claimed.chunks(claimed.len().div_ceil(8)).enumerate() {
        let node = if i % 2 == 0 { via_b.clone() } else { via_a.clone() };
        let chunk = chunk.to_vec();
        finishing.spawn(async move {
            for (id, attempt) in chunk {
                let done: RunView = node.finish(&id, attempt).await.ok();
                assert_eq!(done.state, RunState::Succeeded);
            }
        });
    }
    while let Some(done) = finishing.join_next().await {
        done.unwrap();
    }
    for (i, (id, attempt)) in claimed.iter().take(20).enumerate() {
        let node = if i % 2 == 0 { via_a } else { via_b };
        node.finish(id, *attempt).await.refused(409, &["not this node's"]);
    }
    let shown = admin_b.job(&job.id).await.unwrap();
    assert_eq!((shown.state, shown.runs.len()), (RunState::Succeeded, RUNS as usize));
    assert!(shown.runs.iter().all(|r| r.state == RunState::Succeeded
        && r.attempt == 1
        && r.node_id.as_deref() == Some(via_a.id.as_str())));
}

#[test]
fn two_hubs_on_one_postgres_database() {
    on_postgres(two_hubs);
}

// ==== 8. copy activities ====

impl Node {
    async fn start(&self, run: &str, attempt: u32) -> Reply {
        self.call(&format!("/api/v1/runs/{run}/start"), json!({ "attempt": attempt })).await
    }

    /// A copy's listing run reports the parts it found.
    async fn split(&self, run: &str, attempt: u32, parts: &[Part], result: &Value) -> Reply {
        let body = json!({ "attempt": attempt, "parts": parts, "result": result });
        self.call(&format!("/api/v1/runs/{run}/split"), body).await
    }

    /// Progress with a checkpoint, as a copy reports before it commits.
    async fn checkpoint(&self, run: &str, attempt: u32, progress: Value, checkpoint: &Value) -> Reply {
        let body = json!({ "attempt": attempt, "progress": progress, "checkpoint": checkpoint });
        self.call(&format!("/api/v1/runs/{run}/progress"), body).await
    }

    async fn fail(&self, run: &str, attempt: u32, error: &str) -> Reply {
        let body = json!({ "attempt": attempt, "succeeded": false, "result": null, "error": error });
        self.call(&format!("/api/v1/runs/{run}/finish"), body).await
    }
}

fn copy(name: &str, source: &Value, sink: &Value) -> JobSpec {
    let activity = json!({ "kind": "copy", "source": source, "sink": sink });
    JobSpec { name: name.to_owned(), activities: vec![serde_json::from_value(activity).unwrap()] }
}

/// A folder copied to a folder: no credential needed.
fn copy_folder(name: &str) -> JobSpec {
    copy(name, &json!({ "folder": "/data/in" }), &json!({ "url": "file:///data/out/" }))
}

fn files_part(paths: &[&str], size: u64) -> Part {
    let files = paths
        .iter()
        .map(|path| ListedFile { path: (*path).to_owned(), size, modified_ms: 1_700_000_000_000 })
        .collect();
    Part::Files { files }
}

fn rows_part(index: u32) -> Part {
    let lower = i64::from(index) * 10;
    Part::Rows { index, lower: (index > 0).then_some(lower), upper: Some(lower + 10), nulls: index == 0 }
}

fn job_run(job: &JobView, partition: u32) -> &RunView {
    job.runs
        .iter()
        .find(|r| r.partition == partition)
        .unwrap_or_else(|| panic!("no partition {partition} in {job:#?}"))
}

async fn copies(db: Db) {
    let hub = Hub::start(&db);
    let admin = hub.admin();
    // Submissions only: their runs stay queued in a gateway of their own.
    let submit = create(&admin, "submit").await;
    let s = hub.api.join_new(&submit.keys.primary, "s").await;
    let _beats_s = s.beat();
    copy_submission(&hub, &admin, &s).await;

    let gateway = create(&admin, "copies").await;
    let d = hub.api.join_new(&gateway.keys.primary, "d").await;
    let w = hub.api.join_new(&gateway.keys.primary, "w").await;
    let beats_d = d.beat();
    wait_for_dispatcher(&admin, "copies", &[&beats_d]).await;
    let beats_w = w.beat();
    wait_online(&admin, "copies").await;
    splitting(&admin, &d, &beats_d, &w).await;
    lost_answers(&admin, &d, &beats_d, &w).await;
    copy_job_states(&admin, &d, &beats_d).await;
    checkpoints(&admin, &d, &beats_d, &w, beats_w).await;
    large_splits(&admin, &d, &beats_d).await;
    runs_per_job_cap(&hub, &admin).await;
    hub.assert_healthy().await;
}

/// A job of many copies can't grow past 50,000 runs with their parts: the split that would
/// take it over is refused, and the job keeps what it had.
async fn runs_per_job_cap(hub: &Hub, admin: &AdminClient) {
    let gateway = create(admin, "many").await;
    let m = hub.api.join_new(&gateway.keys.primary, "m").await;
    let beats = m.beat();
    wait_for_dispatcher(admin, "many", &[&beats]).await;
    let activity = json!({ "kind": "copy",
        "source": { "sqlite": "/data/sales.db", "query": "SELECT * FROM orders", "partition_column": "id", "partitions": 10000 },
        "sink": { "url": "file:///data/out/" } });
    let spec = JobSpec {
        name: "six-copies".to_owned(),
        activities: (0..6).map(|_| serde_json::from_value(activity.clone()).unwrap()).collect(),
    };
    let job = admin.submit_job("many", &spec).await.unwrap();
    let listings = m.claimed(epoch_of(&beats), 6, 0).await;
    assert_eq!(listings.len(), 6);
    let parts: Vec<Part> = (0..10_000).map(rows_part).collect();
    for listing in &listings[..4] {
        m.split(&listing.id, 1, &parts, &json!({})).await.assert_no_content();
    }
    m.split(&listings[4].id, 1, &parts, &json!({}))
        .await
        .refused(400, &["10000 parts", "40006 runs already", "at most 50000"]);
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!(shown.runs.len(), 40_006, "the refused split added nothing");
    let fifth = shown.runs.iter().find(|r| r.id == listings[4].id).unwrap();
    assert_eq!(fifth.state, RunState::Dispatched, "the refused listing run is still the node's to fail");
}

#[test]
fn copies_on_sqlite() {
    on_sqlite(copies);
}

#[test]
fn copies_on_postgres() {
    on_postgres(copies);
}

/// A copy is one listing run at first; bad specs and credentials no node has are refused.
async fn copy_submission(hub: &Hub, admin: &AdminClient, s: &Node) {
    let spec = copy_folder("one");
    let job = admin.submit_job("submit", &spec).await.unwrap();
    assert_eq!((job.state, job.runs.len()), (RunState::Queued, 1));
    let listing = &job.runs[0];
    assert_eq!((listing.partition, listing.state, listing.attempt), (0, RunState::Queued, 1));
    assert_eq!((&listing.part, &listing.checkpoint), (&None, &None));
    assert_eq!(listing.activity, spec.activities[0]);

    let relative = copy("rel", &json!({ "folder": "exports" }), &json!({ "url": "file:///out/" }));
    admin_refused(
        admin.submit_job("submit", &relative).await,
        400,
        &["\"exports\" is relative", "absolute path"],
    );
    let gs = copy("gs", &json!({ "folder": "/data" }), &json!({ "url": "gs://bucket/p/" }));
    admin_refused(
        admin.submit_job("submit", &gs).await,
        400,
        &["gs:// are not supported", "s3://bucket/prefix/"],
    );
    // The typed client can't even say it; a hand-made request can.
    let unknown = json!({ "spec": { "name": "j", "activities": [{
        "kind": "copy", "source": { "folder": "/a", "recursive": true }, "sink": { "url": "file:///b/" }
    }] } });
    let reply = hub
        .api
        .request(Method::POST, "/api/v1/gateways/submit/jobs", Some(&hub.token), Body::Json(unknown))
        .await;
    reply.refused(422, &["unknown field", "recursive"]);
    let many = JobSpec {
        name: "many".to_owned(),
        activities: vec![
            Activity::Echo { message: "a".to_owned(), partitions: 6000 },
            Activity::Echo { message: "b".to_owned(), partitions: 5000 },
        ],
    };
    admin_refused(admin.submit_job("submit", &many).await, 400, &["11000 runs", "at most 10000"]);

    let lake = copy(
        "lake",
        &json!({ "folder": "/data/in" }),
        &json!({ "url": "s3://lake/in/", "endpoint": "http://127.0.0.1:9", "credential": "lake" }),
    );
    admin_refused(
        admin.submit_job("submit", &lake).await,
        400,
        &["no node of gateway 'submit'", "credential named \"lake\"", "gatehouse node credential set lake"],
    );
    let warehouse = copy(
        "warehouse",
        &json!({ "postgres": "postgres://reader@db.test/sales", "password_credential": "warehouse", "query": "SELECT 1" }),
        &json!({ "url": "s3://lake/in/", "credential": "lake" }),
    );
    s.set(|r| r.metrics.credential_names = vec!["lake".to_owned()]);
    eventually("the node's credential names at the hub", async || {
        let view = view(admin, "submit").await;
        let names = &node_in(&view, "s").metrics.credential_names;
        (names == &["lake"]).then_some(()).ok_or(format!("{names:?}"))
    })
    .await;
    let job = admin.submit_job("submit", &lake).await.unwrap();
    assert_eq!(job.runs.len(), 1);
    admin_refused(admin.submit_job("submit", &warehouse).await, 400, &["credential named \"warehouse\""]);
}

/// Answers that never arrive cost no run: a dispatcher whose claim went unanswered gets the
/// runs it holds again with `again`, and a worker asking again for the start it was granted
/// gets the same run (another node doesn't).
async fn lost_answers(admin: &AdminClient, d: &Node, beats_d: &Beats, w: &Node) {
    let epoch = epoch_of(beats_d);
    let job = admin.submit_job("copies", &copy_folder("lost")).await.unwrap();
    let _lost: Vec<RunView> = d.claimed(epoch, 10, 0).await;
    assert!(d.claimed(epoch, 10, 0).await.is_empty(), "a plain claim takes only queued runs");
    let again = d.claimed_again(epoch).await;
    assert_eq!(
        again.iter().map(|r| (r.id.as_str(), r.attempt)).collect::<Vec<_>>(),
        [(job.runs[0].id.as_str(), 1)]
    );

    let started: RunView = w.start(&again[0].id, 1).await.ok();
    let twice: RunView = w.start(&again[0].id, 1).await.ok();
    assert_eq!((twice.state, twice.started_ms), (RunState::Running, started.started_ms), "the same start");
    d.start(&again[0].id, 1).await.refused(409, &["not this node's"]);
    w.start(&again[0].id, 2).await.refused(409, &["attempt 2"]);
    let again = d.claimed_again(epoch).await;
    assert!(again.is_empty(), "a started run is no longer the dispatcher's: {again:?}");
    admin.cancel_job(&job.id).await.unwrap();
}

/// The listing run's current attempt splits it into queued partition runs, once; nobody else.
async fn splitting(admin: &AdminClient, d: &Node, beats_d: &Beats, w: &Node) {
    let epoch = epoch_of(beats_d);
    let job = admin.submit_job("copies", &copy_folder("files")).await.unwrap();
    let claimed = d.claimed(epoch, 10, 0).await;
    assert_eq!(claimed.len(), 1);
    let listing = &claimed[0];
    assert_eq!((listing.id.as_str(), &listing.part), (job.runs[0].id.as_str(), &None));
    let _: RunView = d.assign(&listing.id, 1, epoch, w).await.ok();
    let started: RunView = w.start(&listing.id, 1).await.ok();
    assert_eq!((started.state, &started.part), (RunState::Running, &None));

    let parts =
        [files_part(&["a.csv"], 10), files_part(&["b.csv", "c.csv"], 20), files_part(&["d/e.csv"], 30)];
    let result = json!({ "files": 4, "bytes": 80 });
    w.split(&listing.id, 2, &parts, &result).await.refused(409, &["attempt 2", "not this node's"]);
    d.split(&listing.id, 1, &parts, &result).await.refused(409, &["attempt 1", "not this node's"]);
    w.split(&listing.id, 1, &[rows_part(0)], &result).await.refused(400, &["rows part", "folder"]);
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!(shown.runs.len(), 1, "a refused split adds no runs: {shown:#?}");
    assert_eq!((shown.state, shown.runs[0].state), (RunState::Running, RunState::Running));

    assert_eq!(
        shown.progress.map(|p| (p.bytes_total, p.files_total)),
        Some((0, 0)),
        "a copy not listed yet has moved nothing of nothing known"
    );

    w.split(&listing.id, 1, &parts, &result).await.assert_no_content();
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!(shown.state, RunState::Running, "the listing succeeded but its parts wait: {shown:#?}");
    let totals = shown.progress.unwrap();
    assert_eq!((totals.bytes_done, totals.bytes_total, totals.files_done, totals.files_total), (0, 80, 0, 4));
    assert_eq!(shown.runs.iter().map(|r| r.partition).collect::<Vec<_>>(), [0, 1, 2, 3]);
    let done = job_run(&shown, 0);
    assert_eq!(
        (done.state, &done.result, done.node_name.as_deref()),
        (RunState::Succeeded, &Some(result.clone()), Some("w"))
    );
    assert!(done.finished_ms.is_some());
    for (i, run) in shown.runs.iter().skip(1).enumerate() {
        assert_eq!((run.state, run.attempt, &run.node_id), (RunState::Queued, 1, &None), "{run:#?}");
        assert_eq!((run.activity_index, &run.activity), (0, &listing.activity));
        // Job views leave the (possibly long) file lists out, but show what each part holds.
        assert_eq!(run.part, None);
        let files = [1, 2, 1][i];
        let totals = run.progress.clone().unwrap();
        assert_eq!(
            (totals["files_total"].as_u64(), totals["bytes_total"].as_u64()),
            (Some(files), Some(files * [10, 20, 30][i]))
        );
    }
    w.split(&listing.id, 1, &parts, &result).await.refused(409, &["attempt 1"]);
    assert_eq!(admin.job(&job.id).await.unwrap().runs.len(), 4, "a second split adds nothing");

    // The node that moves a part gets it with the run.
    let claimed = d.claimed(epoch, 10, 0).await;
    let got: BTreeMap<u32, Option<Part>> = claimed.iter().map(|r| (r.partition, r.part.clone())).collect();
    let sent: BTreeMap<u32, Option<Part>> = (1..).zip(parts.iter().cloned().map(Some)).collect();
    assert_eq!(got, sent);
    d.split(&claimed[0].id, 1, &[], &json!({})).await.refused(400, &["partition", "listing run"]);
    let _: RunView = d.assign(&claimed[1].id, 1, epoch, w).await.ok();
    let progress = json!({ "bytes_done": 15, "bytes_total": 40, "files_done": 1, "files_total": 2, "bytes_per_second": 5.0 });
    w.progress(&claimed[1].id, 1, progress).await.assert_no_content();
    let listed = admin.jobs("copies", Some(500)).await.unwrap();
    let totals = listed.iter().find(|j| j.id == job.id).unwrap().progress.unwrap();
    assert_eq!((totals.bytes_done, totals.bytes_total, totals.files_done), (15, 80, 1), "{totals:?}");
    assert!((totals.bytes_per_second - 5.0).abs() < f64::EPSILON, "{totals:?}");
    let _: RunView = w.finish(&claimed[1].id, 1).await.ok();
    for run in claimed.iter().filter(|r| r.id != claimed[1].id) {
        let _: RunView = d.finish(&run.id, 1).await.ok();
    }
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!(shown.state, RunState::Succeeded);
    let totals = shown.progress.unwrap();
    assert_eq!((totals.bytes_done, totals.files_done), (80, 4), "{totals:?}");
    assert!(totals.bytes_per_second.abs() < f64::EPSILON, "nothing copies now: {totals:?}");
}

/// An empty folder's job is done when it is listed; a listing that fails fails the job.
async fn copy_job_states(admin: &AdminClient, d: &Node, beats_d: &Beats) {
    let epoch = epoch_of(beats_d);
    let empty = admin.submit_job("copies", &copy_folder("empty")).await.unwrap();
    let run = d.claimed(epoch, 10, 0).await.remove(0);
    assert_eq!(run.job_id, empty.id);
    d.split(&run.id, 1, &[], &json!({ "files": 0, "bytes": 0 })).await.assert_no_content();
    let shown = admin.job(&empty.id).await.unwrap();
    assert_eq!((shown.state, shown.runs.len()), (RunState::Succeeded, 1));

    let missing = admin.submit_job("copies", &copy_folder("missing")).await.unwrap();
    let run = d.claimed(epoch, 10, 0).await.remove(0);
    let _: RunView = d.fail(&run.id, 1, "the folder /data/in is not there on node d").await.ok();
    let shown = admin.job(&missing.id).await.unwrap();
    assert_eq!(
        (shown.state, shown.runs[0].error.as_deref()),
        (RunState::Failed, Some("the folder /data/in is not there on node d"))
    );
}

/// A checkpoint is taken only from the current attempt, and outlives the attempt that made it.
async fn checkpoints(admin: &AdminClient, d: &Node, beats_d: &Beats, w: &Node, beats_w: Beats) {
    let epoch = epoch_of(beats_d);
    let job = admin.submit_job("copies", &copy_folder("resume")).await.unwrap();
    let listing = d.claimed(epoch, 10, 0).await.remove(0);
    let part = files_part(&["big.bin"], 1 << 30);
    d.split(&listing.id, 1, std::slice::from_ref(&part), &json!({ "files": 1, "bytes": 1 << 30 }))
        .await
        .assert_no_content();
    let run = d.claimed(epoch, 10, 0).await.remove(0);
    assert_eq!((run.job_id.as_str(), &run.checkpoint), (job.id.as_str(), &None));
    let _: RunView = d.assign(&run.id, 1, epoch, w).await.ok();

    let checkpoint = json!({ "done": [], "bytes_done": 8_388_608, "upload": {
        "file": 0, "key": "big.bin", "upload_id": "u-1", "sha256": "ab", "part_size": 8_388_608, "parts": ["e-1"]
    } });
    let progress =
        json!({ "bytes_done": 8_388_608, "bytes_total": 1 << 30, "files_total": 1, "bytes_per_second": 4e6 });
    w.checkpoint(&run.id, 1, progress.clone(), &checkpoint).await.assert_no_content();
    // Progress alone leaves the checkpoint as it is.
    w.progress(&run.id, 1, progress.clone()).await.assert_no_content();
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!(job_run(&shown, 1).checkpoint, Some(checkpoint.clone()));
    assert_eq!(job_run(&shown, 1).progress, Some(progress));

    beats_w.stop().await;
    let requeued = eventually("the silent worker's copy back in the queue", async || {
        let shown = admin.job(&job.id).await.unwrap();
        let run = job_run(&shown, 1).clone();
        (run.state == RunState::Queued).then(|| run.clone()).ok_or(format!("{run:?}"))
    })
    .await;
    assert_eq!(
        (requeued.attempt, requeued.progress, requeued.checkpoint),
        (2, None, Some(checkpoint.clone()))
    );
    let stale = json!({ "done": [0], "bytes_done": 1 << 30 });
    w.checkpoint(&run.id, 1, json!({}), &stale).await.refused(409, &["attempt 1"]);
    assert_eq!(
        job_run(&admin.job(&job.id).await.unwrap(), 1).checkpoint,
        Some(checkpoint.clone()),
        "a stale checkpoint is not kept"
    );

    let again = d.claimed(epoch_of(beats_d), 10, 0).await.remove(0);
    assert_eq!((again.id.as_str(), again.attempt), (run.id.as_str(), 2));
    assert_eq!((again.checkpoint, again.part), (Some(checkpoint), Some(part)), "the next attempt resumes");
    let newer = json!({ "done": [0], "bytes_done": 1 << 30 });
    d.checkpoint(&run.id, 2, json!({ "bytes_done": 1 << 30 }), &newer).await.assert_no_content();
    let _: RunView = d.finish(&run.id, 2).await.ok();
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!((shown.state, job_run(&shown, 1).checkpoint.clone()), (RunState::Succeeded, Some(newer)));
}

/// A listing splits into at most 10,000 parts, in one request.
async fn large_splits(admin: &AdminClient, d: &Node, beats_d: &Beats) {
    let epoch = epoch_of(beats_d);
    let query = copy(
        "ranges",
        &json!({ "sqlite": "/data/sales.db", "query": "SELECT * FROM orders", "partition_column": "id", "partitions": 10000 }),
        &json!({ "url": "file:///data/out/" }),
    );
    let job = admin.submit_job("copies", &query).await.unwrap();
    let listing = d.claimed(epoch, 10, 0).await.remove(0);
    let too_many: Vec<Part> = (0..=10_000).map(rows_part).collect();
    d.split(&listing.id, 1, &too_many, &json!({ "partitions": 10_001 }))
        .await
        .refused(400, &["10001 parts", "at most 10000"]);
    d.split(&listing.id, 1, &[files_part(&["a"], 1)], &json!({}))
        .await
        .refused(400, &["files part", "query"]);
    assert_eq!(admin.job(&job.id).await.unwrap().runs.len(), 1);

    let parts: Vec<Part> = (0..10_000).map(rows_part).collect();
    d.split(&listing.id, 1, &parts, &json!({ "partitions": 10_000 })).await.assert_no_content();
    let shown = admin.job(&job.id).await.unwrap();
    assert_eq!((shown.state, shown.runs.len()), (RunState::Running, 10_001));
    assert_eq!(shown.runs.iter().filter(|r| r.state == RunState::Queued).count(), 10_000);
    assert_eq!(shown.runs.iter().map(|r| r.partition).collect::<BTreeSet<_>>(), (0..=10_000).collect());
    let some = d.claimed(epoch_of(beats_d), 5, 0).await;
    assert_eq!(some.len(), 5);
    for run in &some {
        let Some(Part::Rows { index, .. }) = run.part else { panic!("a range, not {:?}", run.part) };
        assert_eq!(index + 1, run.partition, "part i is partition i + 1");
    }
}

// ==== 9. the gateway's bandwidth limit ====

/// Each heartbeat carries the node's grant of the gateway's limit (Mbit/s): the limit over the
/// nodes holding copy runs, never more than the others' grants leave, a pause (1 byte a
/// second) for a node holding none; it follows the setting while copies run.
async fn bandwidth_limit(db: Db) {
    const MBIT: u64 = 125_000;
    let hub = Hub::start(&db);
    let admin = hub.admin();
    let settings = GatewaySettings { bandwidth_limit_mbps: 100, ..GatewaySettings::default() };
    let created = admin.create_gateway(&CreateGateway { name: "pipe".into(), settings }).await.unwrap();
    assert_eq!(created.gateway.settings.bandwidth_limit_mbps, 100);
    let key = &created.keys.primary;
    let d = hub.api.join_new(key, "d").await;
    let w = hub.api.join_new(key, "w").await;
    let idle = hub.api.join_new(key, "idle").await;
    let beats_d = d.beat();
    wait_for_dispatcher(&admin, "pipe", &[&beats_d]).await;
    let _beats = [w.beat(), idle.beat()];
    wait_online(&admin, "pipe").await;
    let epoch = epoch_of(&beats_d);
    let share = async |node: &Node| {
        let heard = node.heartbeat().await;
        assert_eq!(
            heard.settings.bandwidth_limit_mbps,
            view(&admin, "pipe").await.settings.bandwidth_limit_mbps
        );
        heard.bandwidth_bytes_per_second
    };
    // Heartbeats until `node` is granted `want`; every grant on the way is at most `want`
    // (its fair part): a grant never runs ahead of the split.
    let settles = async |node: &Node, want: u64| {
        for _ in 0..50 {
            let grant = share(node).await.unwrap();
            assert!(grant <= want, "granted {grant} bytes/s, more than the fair {want}");
            if grant == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the grant never reached {want} bytes/s");
    };
    assert_eq!(share(&w).await, Some(1), "nobody copies: a node without a copy run holds nothing");

    // A node busy with other work doesn't share the limit.
    admin.submit_job("pipe", &echo("not-a-copy", 1)).await.unwrap();
    let other = d.claimed(epoch, 1, 0).await.remove(0);
    let _: RunView = d.assign(&other.id, 1, epoch, &idle).await.ok();
    let _: RunView = idle.start(&other.id, 1).await.ok();
    assert_eq!(share(&idle).await, Some(1));

    // d holds a copy's listing run (dispatched to itself): all of it is d's.
    admin.submit_job("pipe", &copy_folder("big")).await.unwrap();
    let listing = d.claimed(epoch, 10, 0).await.remove(0);
    settles(&d, 100 * MBIT).await;
    assert_eq!(share(&w).await, Some(1), "w holds no copy run");

    // Two nodes copy parts: half each, but w's half only once d has given it up.
    let parts = [files_part(&["a"], 10), files_part(&["b"], 10)];
    d.split(&listing.id, 1, &parts, &json!({ "files": 2, "bytes": 20 })).await.assert_no_content();
    let parts = d.claimed(epoch, 10, 0).await;
    assert_eq!(parts.len(), 2);
    let _: RunView = d.assign(&parts[0].id, 1, epoch, &w).await.ok();
    let _: RunView = w.start(&parts[0].id, 1).await.ok();
    let first = share(&w).await.unwrap();
    assert!(first == 1 || first == 50 * MBIT, "w was granted {first} while d held the whole limit");
    settles(&d, 50 * MBIT).await;
    settles(&w, 50 * MBIT).await;
    assert_eq!(share(&idle).await, Some(1));

    // The setting changes while they copy; the next heartbeats carry the new split.
    let lower = SettingsPatch { bandwidth_limit_mbps: Some(40), ..SettingsPatch::default() };
    assert_eq!(admin.update_settings("pipe", &lower).await.unwrap().settings.bandwidth_limit_mbps, 40);
    settles(&w, 20 * MBIT).await;
    settles(&d, 20 * MBIT).await;
    // Other settings leave it as it is.
    let more = UpdateSettings { max_nodes: Some(3), ..UpdateSettings::default() };
    assert_eq!(admin.update_settings("pipe", &more).await.unwrap().settings.bandwidth_limit_mbps, 40);

    // Off: no share at all, and the settings nodes read don't even name it (older nodes refuse
    // settings fields they don't know).
    let off = SettingsPatch { bandwidth_limit_mbps: Some(0), ..SettingsPatch::default() };
    assert_eq!(admin.update_settings("pipe", &off).await.unwrap().settings.bandwidth_limit_mbps, 0);
    assert_eq!((share(&w).await, share(&d).await), (None, None));
    let raw = w.try_heartbeat().await;
    let answer: Value = raw.ok();
    assert!(answer["settings"].get("bandwidth_limit_mbps").is_none(), "{answer}");

    // A finished copy run no longer counts: its node gives its part back.
    let on = SettingsPatch { bandwidth_limit_mbps: Some(10), ..SettingsPatch::default() };
    admin.update_settings("pipe", &on).await.unwrap();
    let _: RunView = w.finish(&parts[0].id, 1).await.ok();
    assert_eq!(share(&w).await, Some(1));
    settles(&d, 10 * MBIT).await;

    // A gateway without a limit gives no share.
    let free = create(&admin, "free").await;
    let f = hub.api.join_new(&free.keys.primary, "f").await;
    assert_eq!(f.heartbeat().await.bandwidth_bytes_per_second, None);
    hub.assert_healthy().await;
}

#[test]
fn bandwidth_limit_on_sqlite() {
    on_sqlite(bandwidth_limit);
}

#[test]
fn bandwidth_limit_on_postgres() {
    on_postgres(bandwidth_limit);
}

// ==== 10. cancelling a job ====

async fn job_cancel(db: Db) {
    let hub = Hub::start(&db);
    let admin = hub.admin();
    let gateway = create(&admin, "stop").await;
    let d = hub.api.join_new(&gateway.keys.primary, "d").await;
    let w = hub.api.join_new(&gateway.keys.primary, "w").await;
    let beats_d = d.beat();
    let (_, epoch) = wait_for_dispatcher(&admin, "stop", &[&beats_d]).await;
    let _beats_w = w.beat();
    wait_online(&admin, "stop").await;

    // A copy listed into three parts: one running on w, one handed to d, one still queued.
    let job = admin.submit_job("stop", &copy_folder("cancel-me")).await.unwrap();
    let listing = d.claimed(epoch, 10, 0).await.remove(0);
    let _: RunView = d.assign(&listing.id, 1, epoch, &w).await.ok();
    let _: RunView = w.start(&listing.id, 1).await.ok();
    let parts = [files_part(&["a"], 10), files_part(&["b"], 10), files_part(&["c"], 10)];
    w.split(&listing.id, 1, &parts, &json!({ "files": 3, "bytes": 30 })).await.assert_no_content();
    let claimed = d.claimed(epoch, 2, 0).await;
    let (running, handed) = (&claimed[0], &claimed[1]);
    let _: RunView = d.assign(&running.id, 1, epoch, &w).await.ok();
    let _: RunView = w.start(&running.id, 1).await.ok();
    w.checkpoint(&running.id, 1, json!({ "bytes_done": 5 }), &json!({ "done": [] }))
        .await
        .assert_no_content();

    let shown = admin.cancel_job(&job.id).await.unwrap();
    assert_eq!((shown.id.as_str(), shown.state), (job.id.as_str(), RunState::Cancelled));
    assert_eq!(job_run(&shown, 0).state, RunState::Succeeded, "the listing had ended: it stays as it was");
    for run in shown.runs.iter().skip(1) {
        assert_eq!(run.state, RunState::Cancelled, "{run:#?}");
        assert!(run.finished_ms.is_some(), "{run:#?}");
    }
    assert_eq!(run_of(&shown, &running.id).node_name.as_deref(), Some("w"), "who ran it stays shown");
    let listed = admin.jobs("stop", None).await.unwrap();
    assert_eq!(listed.iter().find(|j| j.id == job.id).unwrap().state, RunState::Cancelled);

    // Every report about a cancelled run is answered 410 with what to do.
    let gone: &[&str] = &["job", "was cancelled", "stop this run", "remove what it started"];
    w.progress(&running.id, 1, json!({ "bytes_done": 6 })).await.refused(410, gone);
    w.checkpoint(&running.id, 1, json!({}), &json!({ "done": [0] })).await.refused(410, gone);
    w.finish(&running.id, 1).await.refused(410, gone);
    w.fail(&running.id, 1, "stopped").await.refused(410, gone);
    d.start(&handed.id, 1).await.refused(410, gone);
    d.finish(&handed.id, 1).await.refused(410, gone);
    // A stale attempt of a cancelled run is told to clean up too: nobody resumes it.
    w.progress(&running.id, 7, json!({})).await.refused(410, gone);
    // The ended listing is no one's to report, as before.
    w.finish(&listing.id, 1).await.refused(409, &["not this node's"]);
    assert!(d.claimed(epoch_of(&beats_d), 10, 0).await.is_empty(), "the queued part was cancelled too");
    let after = admin.job(&job.id).await.unwrap();
    assert_eq!(
        run_of(&after, &running.id).checkpoint,
        Some(json!({ "done": [] })),
        "nothing was taken after"
    );

    // A listing run cancelled while it lists can't split any more.
    let listing_job = admin.submit_job("stop", &copy_folder("cancel-listing")).await.unwrap();
    let listing = d.claimed(epoch_of(&beats_d), 10, 0).await.remove(0);
    let _: RunView = d.assign(&listing.id, 1, epoch_of(&beats_d), &w).await.ok();
    let _: RunView = w.start(&listing.id, 1).await.ok();
    assert_eq!(admin.cancel_job(&listing_job.id).await.unwrap().state, RunState::Cancelled);
    w.split(&listing.id, 1, &parts, &json!({ "files": 3, "bytes": 30 })).await.refused(410, gone);
    assert_eq!(admin.job(&listing_job.id).await.unwrap().runs.len(), 1, "a refused split adds no runs");

    // Other jobs are untouched, and their stale attempts still hear 409.
    let other = admin.submit_job("stop", &echo("other", 1)).await.unwrap();
    let run = d.claimed(epoch_of(&beats_d), 10, 0).await.remove(0);
    assert_eq!(run.job_id, other.id);
    d.finish(&run.id, 2).await.refused(409, &["attempt 2"]);
    let _: RunView = d.finish(&run.id, 1).await.ok();

    // A job that has ended can't be cancelled; neither can one that doesn't exist.
    admin_refused(admin.cancel_job(&other.id).await, 409, &["has ended", "succeeded", "nothing to cancel"]);
    admin_refused(admin.cancel_job(&job.id).await, 409, &["was cancelled already"]);
    admin_refused(admin.cancel_job("0123456789abcdef").await, 404, &["no job"]);
    assert_eq!(admin.job(&other.id).await.unwrap().state, RunState::Succeeded);
    hub.assert_healthy().await;
}

#[test]
fn job_cancel_on_sqlite() {
    on_sqlite(job_cancel);
}

#[test]
fn job_cancel_on_postgres() {
    on_postgres(job_cancel);
}

// ==== 11. a node's list of its gateway's jobs ====

fn ids(jobs: &[JobView]) -> Vec<&str> {
    jobs.iter().map(|j| j.id.as_str()).collect()
}

/// `GET /api/v1/node/jobs` shows a node its own gateway's recent jobs, as the admin's list
/// does (newest first, no parts), 20 unless asked, at most 100.
async fn node_job_lists(db: Db) {
    let hub = Hub::start(&db);
    let admin = hub.admin();
    let west = create(&admin, "west").await;
    let east = create(&admin, "east").await;
    let w = hub.api.join_new(&west.keys.primary, "w").await;
    let e = hub.api.join_new(&east.keys.primary, "e").await;
    let as_node = |node: &Node| AdminClient::new(&hub.api.base(), &node.token).unwrap();
    assert!(as_node(&w).node_jobs(None).await.unwrap().is_empty());

    // A copy split into parts: the node's view, like the admin's, leaves the parts out.
    let beats = w.beat();
    wait_for_dispatcher(&admin, "west", &[&beats]).await;
    let copy_job = admin.submit_job("west", &copy_folder("listed")).await.unwrap();
    let listing = w.claimed(epoch_of(&beats), 1, 0).await.remove(0);
    let parts = [files_part(&["a.csv"], 10), files_part(&["b.csv"], 20)];
    w.split(&listing.id, 1, &parts, &json!({ "files": 2, "bytes": 30 })).await.assert_no_content();
    let seen = as_node(&w).node_jobs(None).await.unwrap();
    assert_eq!(ids(&seen), [copy_job.id.as_str()]);
    assert_eq!(seen[0].runs.len(), 3);
    assert!(seen[0].runs.iter().all(|r| r.part.is_none()), "{seen:#?}");
    assert_eq!(seen[0].progress.map(|p| (p.bytes_total, p.files_total)), Some((30, 2)));
    let east_job = admin.submit_job("east", &echo("east-only", 1)).await.unwrap();
    for n in 0..104 {
        admin.submit_job("west", &echo(&format!("w{n}"), 1)).await.unwrap();
    }

    let seen = as_node(&w).node_jobs(None).await.unwrap();
    assert_eq!(ids(&seen), ids(&admin.jobs("west", Some(20)).await.unwrap()), "20 by default, newest first");
    let most = as_node(&w).node_jobs(Some(500)).await.unwrap();
    assert_eq!(ids(&most), ids(&admin.jobs("west", Some(100)).await.unwrap()), "at most 100");
    let few = as_node(&w).node_jobs(Some(3)).await.unwrap();
    assert_eq!(ids(&few), ids(&seen[..3]));
    assert!(!ids(&most).contains(&east_job.id.as_str()), "a node sees only its own gateway's jobs");

    let all = admin.jobs("west", Some(500)).await.unwrap();
    assert_eq!((all.len(), all.last().map(|j| j.id.as_str())), (105, Some(copy_job.id.as_str())));
    assert!(!ids(&most).contains(&copy_job.id.as_str()), "the oldest of 105 is left out");
    let reply = w.api.request(Method::GET, "/api/v1/node/jobs?limit=200", Some(&w.token), Body::Empty).await;
    assert_eq!(reply.ok::<Vec<Value>>().len(), 100);
    assert_eq!(ids(&as_node(&e).node_jobs(None).await.unwrap()), [east_job.id.as_str()]);

    // Only a node token will do, and the limit is a number.
    let path = "/api/v1/node/jobs";
    hub.api.request(Method::GET, path, Some(&hub.token), Body::Empty).await.refused(401, &["not registered"]);
    hub.api.request(Method::GET, path, None, Body::Empty).await.refused(401, &["node token"]);
    admin.delete_gateway("east").await.unwrap();
    e.api.request(Method::GET, path, Some(&e.token), Body::Empty).await.refused(401, &["not registered"]);
    let bad = w.api.request(Method::GET, "/api/v1/node/jobs?limit=many", Some(&w.token), Body::Empty).await;
    bad.refused(400, &["query string"]);
    hub.assert_healthy().await;
}

#[test]
fn node_job_lists_on_sqlite() {
    on_sqlite(node_job_lists);
}

#[test]
fn node_job_lists_on_postgres() {
    on_postgres(node_job_lists);
}
