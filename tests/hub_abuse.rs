//! The hub under abuse from loopback, as real processes: a thousand idle connections and a few
//! that trickle their headers (the hub closes them, and heartbeats and a job get through
//! meanwhile), connections beyond `--max-connections` (they wait for a place) and beyond
//! `--max-connections-per-address` (closed at once, until one of that address's closes), one
//! node token opening many waiting claims (refused beyond the limit), a waiting claim beside another
//! process's SQLite write lock (it only reads), a seeded fuzz of random and mutated requests
//! (never a 500, the hub stays up, nothing stored changes on a refusal), and two hubs on one
//! PostgreSQL whose process clocks disagree (the lease and Offline follow the database's
//! clock). Requests are written by hand over TCP, so
//! any method, header or body can be sent. Every wait is bounded; no time is asserted.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{self, Hub};
use common::postgres::Postgres;
use common::process::{Spawned, spawn_gatehouse};
use gatehouse::protocol::NodeMetrics;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Longer than the longest claim wait (30 s): an answer that takes longer is no answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(45);

// ---- HTTP by hand ----

/// One answer: the status (0 when none came) and the body.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// `host:port` of a hub URL.
fn address(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// Sends one request on a new connection (`Connection: close`, a correct Content-Length) and
/// reads the answer to its end.
fn send(addr: &str, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Reply {
    send_promising(addr, method, path, headers, body, body.len())
}

/// Like [`send`], with a Content-Length of `promised` bytes however many the body has: a
/// body that never comes whole, while the connection stays open.
fn send_promising(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    promised: usize,
) -> Reply {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return Reply { status: 0, body: "no connection".into() };
    };
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(head, "Content-Length: {promised}\r\n\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    if stream.write_all(&request).is_err() {
        return Reply { status: 0, body: "the request couldn't be sent".into() };
    }
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer)
        && answer.is_empty()
    {
        return Reply { status: 0, body: format!("no answer: {e}") };
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Reply { status, body }
}

/// A JSON request with a bearer token.
fn call(addr: &str, method: &str, path: &str, token: &str, body: &Value) -> Reply {
    let headers = [("Authorization", format!("Bearer {token}")), ("Content-Type", "application/json".into())];
    send(addr, method, path, &headers, body.to_string().as_bytes())
}

// ---- simulated nodes ----

/// A node played by the test: registered over HTTP, heartbeating on request.
#[derive(Clone)]
struct SimNode {
    id: String,
    token: String,
}

impl SimNode {
    fn register(addr: &str, key: &str, name: &str) -> SimNode {
        let body = json!({
            "name": name,
            "machine_id": format!("machine-{name}"),
            "version": gatehouse::VERSION,
            "peer_address": format!("{name}.test:7071"),
        });
        let reply = call(addr, "POST", "/api/v1/register", key, &body);
        assert_eq!(reply.status, 201, "registering {name}: {reply:?}");
        let answer = reply.json();
        SimNode {
            id: answer["node_id"].as_str().unwrap().to_owned(),
            token: answer["node_token"].as_str().unwrap().to_owned(),
        }
    }

    fn heartbeat(&self, addr: &str) -> Reply {
        let body = json!({ "version": gatehouse::VERSION, "metrics": NodeMetrics::default() });
        call(addr, "POST", "/api/v1/heartbeat", &self.token, &body)
    }

    /// Heartbeats through `addr` every 250 ms on a thread until `stop` is set.
    fn keep_beating(&self, addr: &str, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        self.keep_beating_since(addr, stop, &Arc::new(Mutex::new(Instant::now())))
    }

    /// As [`SimNode::keep_beating`], noting in `last` when the latest heartbeat was sent that
    /// the hub took.
    fn keep_beating_since(
        &self,
        addr: &str,
        stop: &Arc<AtomicBool>,
        last: &Arc<Mutex<Instant>>,
    ) -> std::thread::JoinHandle<()> {
        let (node, addr, stop, last) = (self.clone(), addr.to_owned(), Arc::clone(stop), Arc::clone(last));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if node.heartbeat(&addr).status == 200 {
                    *last.lock().unwrap() = sent;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    }
}

/// `/healthz` once it answers (bounded: 5 s), or the last reply: right after a client closes
/// connections the hub may not have seen them close yet, so its address is still at its cap.
fn health_after_closes(addr: &str) -> Reply {
    let mut health = send(addr, "GET", "/healthz", &[], b"");
    for _ in 0..50 {
        if health.status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        health = send(addr, "GET", "/healthz", &[], b"");
    }
    health
}

/// Fails if the hub panicked, and checks that it still answers.
fn assert_healthy(process: &Spawned, addr: &str) {
    let stderr = process.stderr();
    assert!(!stderr.contains("panicked"), "the hub panicked:\n{stderr}");
    let health = send(addr, "GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200, "the hub stopped answering: {health:?}");
}

/// Whether the hub closed `stream` within `limit` (reads end, or fail with a reset).
fn closed_by_hub(stream: &mut TcpStream, limit: Instant) -> bool {
    let mut buffer = [0_u8; 1024];
    loop {
        let left = limit.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            // An answer (408) before the close is fine: read on to the end.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

// ---- the tests ----

#[test]
fn a_thousand_idle_connections_and_trickled_headers_neither_stop_heartbeats_nor_stay_open() {
    // Here the attacker shares the nodes' address (127.0.0.1), as it wouldn't on a network:
    // the per-address cap would shut the nodes out with it, so it is lifted to the overall one.
    let (hub, _nodes) = cluster::gateway_with(2, &["--max-connections-per-address", "2048"]);
    let addr = address(&hub.url);

    let mut idle: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let attack_began = Instant::now();
    // Slowloris: a request line, then a byte of header every 300 ms, until the hub hangs up.
    let (closed_tx, closed_rx) = mpsc::channel();
    for _ in 0..5 {
        let (addr, closed_tx) = (addr.clone(), closed_tx.clone());
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(&addr).unwrap();
            let mut sent =
                stream.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes());
            let until = Instant::now() + Duration::from_secs(90);
            while sent.is_ok() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(300));
                sent = stream.write_all(b"a");
            }
            let _ = closed_tx.send(sent.is_err());
        });
    }

    // And a body trickled by an admin, whose token lets the hub read it: cut off, not waited for.
    let trickled_body = {
        let (addr, token) = (addr.clone(), hub.token.clone());
        std::thread::spawn(move || trickle_body(&addr, &token))
    };

    let job = cluster::submit(
        &hub,
        &json!({
            "name": "under-attack",
            "activities": [{ "kind": "sleep", "millis": 300, "partitions": 6 }],
        }),
    )
    .unwrap();
    for _ in 0..5 {
        let nodes = hub.nodes("lake");
        assert!(nodes.iter().all(|n| n["status"] == "Online"), "a node went {nodes:?} under the attack");
        std::thread::sleep(Duration::from_millis(500));
    }
    let over = cluster::wait_over(&hub, &job);
    assert_eq!(over["state"], "succeeded", "{over}");
    let nodes = hub.nodes("lake");
    assert!(nodes.iter().all(|n| n["status"] == "Online"), "a node went {nodes:?} under the attack");

    // The hub hangs up on connections that never send a request, and on the trickles.
    let limit = attack_began + Duration::from_secs(90);
    let still_open = idle.iter_mut().map(|s| closed_by_hub(s, limit)).filter(|closed| !closed).count();
    assert_eq!(still_open, 0, "{still_open} of 1000 idle connections were still open after 90 s");
    for _ in 0..5 {
        let closed = closed_rx.recv_timeout(Duration::from_secs(120)).unwrap();
        assert!(closed, "a connection trickling its headers was still open after 90 s");
    }
    let (cut_off, answer) = trickled_body.join().unwrap();
    assert!(cut_off, "a body trickled for 120 s was still being read; the hub answered {answer:?}");
    assert!(answer.is_empty() || answer.contains(" 400 "), "{answer}");
    assert_healthy(&hub.process, &addr);
}

/// Sends a request whose body comes a byte every 300 ms, for at most 120 s: whether the hub
/// cut it off in that time, and what it answered.
fn trickle_body(addr: &str, token: &str) -> (bool, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /api/v1/gateways HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{{\"name\": \""
    );
    let mut reader = stream.try_clone().unwrap();
    let answer = std::thread::spawn(move || {
        reader.set_read_timeout(Some(Duration::from_secs(150))).unwrap();
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });
    let mut sent = stream.write_all(head.as_bytes());
    let until = Instant::now() + Duration::from_secs(120);
    while sent.is_ok() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(300));
        sent = stream.write_all(b"a");
    }
    let cut_off = sent.is_err();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    (cut_off, answer.join().unwrap())
}

#[test]
fn one_node_gets_two_waiting_claims_and_a_clear_refusal_for_more() {
    let hub = Hub::start();
    let addr = address(&hub.url);
    let key = hub.create_gateway("lake", &[]);
    let node = SimNode::register(&addr, &key, "n1");
    let beat = node.heartbeat(&addr).json();
    assert_eq!(beat["role"], "dispatcher", "{beat}");
    let epoch = beat["lease_epoch"].as_i64().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let beating = node.keep_beating(&addr, &stop);

    let (tx, rx) = mpsc::channel();
    for _ in 0..20 {
        let (addr, token, tx) = (addr.clone(), node.token.clone(), tx.clone());
        std::thread::spawn(move || {
            let body = json!({ "lease_epoch": epoch, "max": 1, "wait_ms": 20_000 });
            let _ = tx.send(call(&addr, "POST", "/api/v1/dispatch/claim", &token, &body));
        });
    }
    // The refusals come at once; the two admitted claims wait for work that never comes.
    let refused: Vec<Reply> = (0..18).map(|_| rx.recv_timeout(Duration::from_secs(15)).unwrap()).collect();
    for reply in &refused {
        assert_eq!(reply.status, 429, "a claim beyond the limit should be refused: {reply:?}");
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("2 claims waiting"), "{error}");
    }
    // Meanwhile the hub answers, and the node's own heartbeat is not refused.
    assert_healthy(&hub.process, &addr);
    assert_eq!(node.heartbeat(&addr).status, 200);
    let waited: Vec<Reply> = (0..2).map(|_| rx.recv_timeout(ANSWER_TIMEOUT).unwrap()).collect();
    for reply in &waited {
        assert_eq!(reply.status, 200, "an admitted claim should end with no work: {reply:?}");
        assert_eq!(reply.json(), json!([]));
    }
    // The places are free again.
    let body = json!({ "lease_epoch": epoch, "max": 1, "wait_ms": 100 });
    let again = call(&addr, "POST", "/api/v1/dispatch/claim", &node.token, &body);
    assert_eq!(again.status, 200, "{again:?}");
    stop.store(true, Ordering::Relaxed);
    beating.join().unwrap();
}

/// What the hub stores, as the admin API shows it, without what time alone changes
/// (statuses, heartbeats, metrics).
fn snapshot(addr: &str, token: &str, gateway: &str) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for key in ["status", "reason", "role", "last_heartbeat_ms", "metrics"] {
                    map.remove(key);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let gateways =
        send(addr, "GET", "/api/v1/gateways", &[("Authorization", format!("Bearer {token}"))], b"");
    let jobs = send(
        addr,
        "GET",
        &format!("/api/v1/gateways/{gateway}/jobs"),
        &[("Authorization", format!("Bearer {token}"))],
        b"",
    );
    let tokens = send(addr, "GET", "/api/v1/tokens", &[("Authorization", format!("Bearer {token}"))], b"");
    assert_eq!(
        (gateways.status, jobs.status, tokens.status),
        (200, 200, 200),
        "{gateways:?} {jobs:?} {tokens:?}"
    );
    let mut all = json!({ "gateways": gateways.json(), "jobs": jobs.json(), "tokens": tokens.json() });
    strip(&mut all);
    all
}

/// A token like `token` but never equal to it once trimmed: a character changed, cut or added.
fn mutate_token(rng: &mut StdRng, token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    match rng.random_range(0..4) {
        0 if !chars.is_empty() => {
            let at = rng.random_range(0..chars.len());
            chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        }
        1 if !chars.is_empty() => {
            chars.truncate(rng.random_range(0..chars.len()));
        }
        2 => chars.push('x'),
        _ => chars.insert(0, 'Z'),
    }
    chars.into_iter().collect()
}

/// Random JSON, a few levels deep.
fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 2 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!([-1_i64, 0, 1, 7, i64::MAX, i64::MIN][rng.random_range(0..6)]),
        3 => {
            let long = "a".repeat(300);
            json!(["", "x", "lake", "../..", "\u{0}", "é", long.as_str()][rng.random_range(0..7)])
        }
        4 => json!(1.5e300),
        5 => Value::Array((0..rng.random_range(0..4)).map(|_| random_json(rng, depth + 1)).collect()),
        _ => {
            let keys =
                ["attempt", "name", "max", "wait_ms", "lease_epoch", "node_id", "succeeded", "settings"];
            let mut map = serde_json::Map::new();
            for _ in 0..rng.random_range(0..4) {
                map.insert(keys[rng.random_range(0..keys.len())].to_owned(), random_json(rng, depth + 1));
            }
            Value::Object(map)
        }
    }
}

/// A valid body for a route, then maybe changed: a field dropped, retyped or out of range.
fn mutate_json(rng: &mut StdRng, mut body: Value) -> Value {
    if let Value::Object(map) = &mut body {
        let keys: Vec<String> = map.keys().cloned().collect();
        for _ in 0..rng.random_range(0..3) {
            if keys.is_empty() {
                break;
            }
            let key = &keys[rng.random_range(0..keys.len())];
            if rng.random_bool(0.3) {
                map.remove(key);
            } else {
                map.insert(key.clone(), random_json(rng, 1));
            }
        }
        if rng.random_bool(0.1) {
            map.insert("unexpected".into(), json!(1));
        }
    }
    body
}

/// What the fuzz aims at: real ids and tokens, to mix with odd ones.
struct Target {
    gateway: String,
    job: String,
    runs: Vec<String>,
    node_id: String,
    epoch: i64,
    key: String,
    admin_token: String,
    node_token: String,
}

/// One random request: a route with real or odd ids, a method (mostly the right one),
/// credentials (none, garbage, mutated, or the node's and the auth key's as they are; the
/// admin token only ever mutated, so every admin request must be refused), a content type,
/// and a body (valid, mutated, cut short, random JSON or random bytes).
fn random_request(
    rng: &mut StdRng,
    t: &Target,
) -> (&'static str, String, Vec<(&'static str, String)>, Vec<u8>) {
    let ids = |rng: &mut StdRng, real: &[&str]| -> String {
        let odd = ["x", "%00", "%ff%fe", "..%2f..", &"z".repeat(2000), "0", "-1", "lake%20"];
        if rng.random_bool(0.6) {
            real[rng.random_range(0..real.len())].to_owned()
        } else {
            odd[rng.random_range(0..odd.len())].to_owned()
        }
    };
    let g = ids(rng, &[&t.gateway, "lake"]);
    let run = ids(rng, &t.runs.iter().map(String::as_str).collect::<Vec<_>>());
    let j = ids(rng, &[&t.job]);
    let (path, body) = match rng.random_range(0..20) {
        0 => ("/".to_owned(), json!({})),
        1 => ("/api/v1/gateways".into(), json!({ "name": "other", "settings": {} })),
        2 => (format!("/api/v1/gateways/{g}"), json!({})),
        3 => (format!("/api/v1/gateways/{g}/settings"), json!({ "settings": { "policy": "distribute" } })),
        4 => (format!("/api/v1/gateways/{g}/keys/primary/regenerate"), json!({})),
        5 => (format!("/api/v1/gateways/{g}/nodes/{}", ids(rng, &[&t.node_id, "n1"])), json!({})),
        6 => (
            format!("/api/v1/gateways/{g}/jobs"),
            json!({ "name": "j", "activities": [{ "kind": "sleep", "millis": 1, "partitions": 1 }] }),
        ),
        7 => (format!("/api/v1/jobs/{j}/cancel"), json!({})),
        8 => (format!("/api/v1/jobs/{j}/rerun"), json!({})),
        9 => ("/api/v1/tokens".into(), json!({ "name": "t", "kind": "viewer" })),
        10 => (
            "/api/v1/register".into(),
            json!({ "name": "n9", "machine_id": "m9", "version": gatehouse::VERSION, "peer_address": "n9.test:7071" }),
        ),
        11 => (
            "/api/v1/heartbeat".into(),
            json!({ "version": gatehouse::VERSION, "metrics": NodeMetrics::default() }),
        ),
        12 => ("/api/v1/dispatch/claim".into(), json!({ "lease_epoch": t.epoch, "max": 1, "wait_ms": 0 })),
        13 => (
            format!("/api/v1/runs/{run}/assign"),
            json!({ "lease_epoch": t.epoch, "attempt": 1, "node_id": t.node_id }),
        ),
        14 => (format!("/api/v1/runs/{run}/start"), json!({ "attempt": 1 })),
        15 => (format!("/api/v1/runs/{run}/progress"), json!({ "attempt": 1, "progress": {} })),
        16 => (format!("/api/v1/runs/{run}/split"), json!({ "attempt": 1, "parts": [], "result": {} })),
        17 => (
            format!("/api/v1/runs/{run}/finish"),
            json!({ "attempt": 1, "succeeded": true, "result": null, "error": null }),
        ),
        18 => (format!("/api/v1/{}", ids(rng, &["audit", "metrics", "node/jobs"])), json!({})),
        _ => ("/metrics".into(), json!({})),
    };
    let path = if rng.random_bool(0.1) {
        format!("{path}?limit={}", ids(rng, &["1", "999999999999"]))
    } else {
        path
    };
    let methods = ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "BREW"];
    let method = if rng.random_bool(0.7) {
        if path.contains("/settings") { "PATCH" } else { "POST" }
    } else {
        methods[rng.random_range(0..methods.len())]
    };
    // Credentials: none, garbage, a mutated token, or the node's own (the admin token only
    // ever mutated: every admin request must be refused).
    let bearer = match rng.random_range(0..6) {
        0 => None,
        1 => Some("garbage".to_owned()),
        2 => Some(mutate_token(rng, &t.admin_token)),
        3 => Some(mutate_token(rng, &t.node_token)),
        4 => Some(t.key.clone()),
        _ => Some(t.node_token.clone()),
    };
    let mut headers = Vec::new();
    if let Some(token) = &bearer {
        let scheme = ["Bearer ", "Bearer ", "bearer ", "Basic ", ""][rng.random_range(0..5)];
        headers.push(("Authorization", format!("{scheme}{token}")));
    }
    let content_type =
        ["application/json", "application/json; charset=utf-8", "text/plain", ""][rng.random_range(0..4)];
    if !content_type.is_empty() {
        headers.push(("Content-Type", content_type.to_owned()));
    }
    let bytes = match rng.random_range(0..10) {
        0 => Vec::new(),
        1 => (0..rng.random_range(1..200)).map(|_| rng.random::<u8>()).collect(),
        2 => {
            let text = mutate_json(rng, body).to_string().into_bytes();
            text[..rng.random_range(0..=text.len())].to_vec()
        }
        3 => random_json(rng, 0).to_string().into_bytes(),
        _ => mutate_json(rng, body).to_string().into_bytes(),
    };
    (method, path, headers, bytes)
}

#[test]
fn random_and_mutated_requests_get_no_500_and_change_nothing_when_refused() {
    let hub = Hub::start();
    let addr = address(&hub.url);
    let key = hub.create_gateway("lake", &[]);
    let gateway = hub.admin(&["hub", "gateway", "show", "lake"])["id"].as_str().unwrap().to_owned();
    let node = SimNode::register(&addr, &key, "n1");
    let epoch = node.heartbeat(&addr).json()["lease_epoch"].as_i64().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let beating = node.keep_beating(&addr, &stop);
    // A job whose runs were cancelled: run routes have real ids to refuse, and no run can be
    // claimed or swept while the fuzz runs, so nothing changes by itself.
    let job = cluster::submit(
        &hub,
        &json!({
            "name": "target",
            "activities": [{ "kind": "sleep", "millis": 1, "partitions": 3 }],
        }),
    )
    .unwrap();
    hub.admin(&["job", "cancel", &job]);
    let runs: Vec<String> = hub.admin(&["job", "show", &job])["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();

    let target = Target {
        gateway: gateway.clone(),
        job,
        runs,
        node_id: node.id.clone(),
        epoch,
        key,
        admin_token: hub.token.clone(),
        node_token: node.token.clone(),
    };
    let mut rng = StdRng::seed_from_u64(11);
    let mut baseline = snapshot(&addr, &hub.token, &gateway);
    let (mut refused, mut accepted) = (0, 0);
    let mut cut_short = Vec::new();
    for round in 0..3000 {
        let (method, path, headers, bytes) = random_request(&mut rng, &target);
        if rng.random_ratio(1, 150) {
            // Now and then a body that stops short, on a connection left open: answered with
            // a refusal all the same, in the background so the fuzz goes on meanwhile.
            let addr = addr.clone();
            cut_short.push(std::thread::spawn(move || {
                let reply = send_promising(&addr, method, &path, &headers, &bytes, bytes.len() + 100);
                (format!("{method} {path} with {headers:?}"), reply)
            }));
            continue;
        }
        let reply = send(&addr, method, &path, &headers, &bytes);
        assert!(
            (200..500).contains(&reply.status),
            "round {round}: {method} {path} with {headers:?} and {:?} got {reply:?}",
            String::from_utf8_lossy(&bytes)
        );
        if method == "GET" || method == "HEAD" {
            continue;
        }
        if reply.status < 300 {
            accepted += 1;
            baseline = snapshot(&addr, &hub.token, &gateway);
        } else {
            refused += 1;
            let now = snapshot(&addr, &hub.token, &gateway);
            assert_eq!(
                now, baseline,
                "round {round}: the refused {method} {path} ({reply:?}) changed what is stored"
            );
        }
    }
    assert!(cut_short.len() > 5, "only {} bodies were cut short", cut_short.len());
    for request in cut_short {
        let (request, reply) = request.join().unwrap();
        assert!(
            (400..500).contains(&reply.status),
            "{request} whose body never came whole should be refused, not get {reply:?}"
        );
    }
    assert_eq!(snapshot(&addr, &hub.token, &gateway), baseline, "a body cut short changed what is stored");
    assert!(refused > 1000, "the fuzz should mostly be refused: {refused} refused, {accepted} accepted");
    assert_healthy(&hub.process, &addr);
    stop.store(true, Ordering::Relaxed);
    beating.join().unwrap();
}

#[test]
fn two_hubs_on_one_postgres_with_disagreeing_clocks_agree_on_the_lease_and_who_is_online() {
    let postgres = Postgres::start();
    let url = postgres.url();
    let home_a = tempfile::tempdir().unwrap();
    let home_b = tempfile::tempdir().unwrap();
    let mut a = spawn_gatehouse(
        &["hub", "serve", "--listen", "127.0.0.1:0", "--db", &url],
        &[("GATEHOUSE_HOME", home_a.path().to_str().unwrap())],
    );
    let url_a = a.read_line_matching("listening on ", Duration::from_secs(30));
    let token = a.read_admin_token(Duration::from_secs(10));
    // Hub B's machine clock is a minute ahead: by it, every lease hub A gave has lapsed.
    let mut b = spawn_gatehouse(
        &["hub", "serve", "--listen", "127.0.0.1:0", "--db", &url],
        &[("GATEHOUSE_HOME", home_b.path().to_str().unwrap()), ("GATEHOUSE_FAKE_CLOCK_SKEW_MS", "60000")],
    );
    let url_b = b.read_line_matching("listening on ", Duration::from_secs(30));
    let (addr_a, addr_b) = (address(&url_a), address(&url_b));

    let created = call(&addr_a, "POST", "/api/v1/gateways", &token, &json!({ "name": "lake" }));
    assert_eq!(created.status, 201, "{created:?}");
    let key = created.json()["keys"]["primary"].as_str().unwrap().to_owned();
    let first = SimNode::register(&addr_a, &key, "n1");
    let second = SimNode::register(&addr_a, &key, "n2");
    let beat = first.heartbeat(&addr_a).json();
    assert_eq!(beat["role"], "dispatcher", "{beat}");
    let epoch = beat["lease_epoch"].as_i64().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let last_beat = Arc::new(Mutex::new(Instant::now()));
    let beating = first.keep_beating_since(&addr_a, &stop, &last_beat);

    // Judged only when n1's latest beat through hub A was under half a second old as hub B
    // was asked, and B answered within another half second (by the test's own clock): well
    // inside the 2 s lease. A loaded machine that stalls n1's beats for longer makes the lease
    // lapse for real, which says nothing about the clocks.
    let mut judged = 0;
    for _ in 0..60 {
        if judged == 12 {
            break;
        }
        let asked = Instant::now();
        let fresh = asked.duration_since(*last_beat.lock().unwrap()) < Duration::from_millis(500);
        let beat = second.heartbeat(&addr_b).json();
        let view = send(
            &addr_b,
            "GET",
            "/api/v1/gateways/lake",
            &[("Authorization", format!("Bearer {token}"))],
            b"",
        );
        if !fresh || asked.elapsed() > Duration::from_millis(500) {
            std::thread::sleep(Duration::from_millis(250));
            continue;
        }
        judged += 1;
        assert_eq!(
            (beat["role"].as_str(), beat["lease_epoch"].as_i64()),
            (Some("worker"), Some(epoch)),
            "hub B took the lease from n1 by its own clock: {beat}"
        );
        let n1 =
            view.json()["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "n1").cloned().unwrap();
        assert_eq!(n1["status"], "Online", "hub B calls n1 Offline by its own clock: {n1}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(judged >= 4, "n1's heartbeats were too slow to judge hub B more than {judged} times");
    stop.store(true, Ordering::Relaxed);
    beating.join().unwrap();
    assert!(b.stderr().contains("FAKE clock skew"), "hub B ran without the skew:\n{}", b.stderr());
    assert_healthy(&a, &addr_a);
    assert_healthy(&b, &addr_b);
    let _ = (a.stop(), b.stop());
}

#[test]
fn connections_beyond_the_cap_wait_until_one_closes() {
    let home = tempfile::tempdir().unwrap();
    let mut hub = spawn_gatehouse(
        // All from 127.0.0.1: the per-address cap (a quarter by default) is lifted to the overall one.
        &[
            "hub",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "20",
            "--max-connections-per-address",
            "20",
        ],
        &[("GATEHOUSE_HOME", home.path().to_str().unwrap())],
    );
    let addr = address(&hub.read_line_matching("listening on ", Duration::from_secs(30)));
    let token = hub.read_admin_token(Duration::from_secs(10));
    // Twenty requests whose bodies never come hold every place (for up to the body bound).
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            let head = format!(
                "POST /api/v1/gateways HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();
    let mut waiting = TcpStream::connect(&addr).unwrap();
    waiting
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    waiting.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut answer = Vec::new();
    let early = waiting.read_to_end(&mut answer);
    assert!(answer.is_empty(), "the 21st connection was served while 20 were open: {early:?} {answer:?}");

    // One place frees up: the waiting connection is served.
    drop(held.pop());
    waiting.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    let _ = waiting.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "the waiting connection got {answer:?}");
    drop(held);
    assert_healthy(&hub, &addr);
}

#[test]
fn connections_beyond_one_addresss_cap_are_closed_at_once_until_one_of_its_own_closes() {
    let home = tempfile::tempdir().unwrap();
    let mut hub = spawn_gatehouse(
        &[
            "hub",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "40",
            "--max-connections-per-address",
            "5",
        ],
        &[("GATEHOUSE_HOME", home.path().to_str().unwrap())],
    );
    let addr = address(&hub.read_line_matching("listening on ", Duration::from_secs(30)));
    let _token = hub.read_admin_token(Duration::from_secs(10));
    // Five connections that never send a request hold this address's places (the overall cap
    // has room for 35 more)…
    let mut held: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    // …so a sixth from the same address is closed at once, without an answer, where one
    // beyond the overall cap would wait for a place.
    let mut refused = TcpStream::connect(&addr).unwrap();
    let _ = refused
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes());
    refused.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut answer = Vec::new();
    let ended = refused.read_to_end(&mut answer);
    let waited = ended
        .as_ref()
        .is_err_and(|e| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    assert!(!waited, "the sixth connection was kept open (waiting for a place)");
    assert!(answer.is_empty(), "the sixth connection was served: {}", String::from_utf8_lossy(&answer));

    // One of the five closes: the address has a place again.
    drop(held.pop());
    let health = health_after_closes(&addr);
    assert_eq!(health.status, 200, "{health:?}");
    drop(held);
    // And once the hub has seen the other four close too, it answers as before.
    assert_eq!(health_after_closes(&addr).status, 200);
    // The log reaches us through a pipe read on another thread: wait for it (bounded).
    cluster::wait_until(Duration::from_secs(10), "the refusal in the hub's log", || {
        hub.stderr().contains("--max-connections-per-address")
    });
    assert_healthy(&hub, &addr);
}

#[test]
fn a_waiting_claim_only_reads_the_database() {
    let hub = Hub::start();
    let addr = address(&hub.url);
    let key = hub.create_gateway("lake", &[]);
    let node = SimNode::register(&addr, &key, "n1");
    let epoch = node.heartbeat(&addr).json()["lease_epoch"].as_i64().unwrap();
    // Another process holds SQLite's write lock: a claim that wrote while it waits would stall
    // on it and fail; one that reads goes on (WAL lets readers beside a writer).
    let db = rusqlite::Connection::open(hub.home().join("hub.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Within the lease's 2 s, so it is still this node's at the end of the wait.
    let body = json!({ "lease_epoch": epoch, "max": 1, "wait_ms": 1000 });
    let claim = call(&addr, "POST", "/api/v1/dispatch/claim", &node.token, &body);
    db.execute_batch("ROLLBACK").unwrap();
    assert_eq!(claim.status, 200, "{claim:?}");
    assert_eq!(claim.json(), json!([]));
    assert_healthy(&hub.process, &addr);
}
