//! The peer protocol fuzzed against a running two-node gateway on loopback: a bounded count of
//! random and mutated frames to both peer ports (garbage, truncated and oversized length
//! prefixes, a genuine Noise hello flipped, cut or extended, recorded exchanges replayed,
//! frames that look valid after a bad handshake, and after a good one frames forged, replayed,
//! skipped ahead, empty, oversized or carrying JSON that isn't a request), while a job runs
//! through those ports. Then a flood of replayed genuine hellos held open. Afterwards no node
//! panicked or died, no attacker's frame got an answer, both nodes answer each other's
//! authenticated pings (Online, not Limited), the job succeeded, and nothing either node stores
//! changed. The test client speaks Noise itself (the `snow` crate, with a member's key read
//! from its data dir), so it can send what `gatehouse::node::peer` never would.
//!
//! The seed is printed; `GATEHOUSE_FUZZ_SEED=N` replays a run.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use base64::Engine as _;
use common::cluster::{self, Node, gatehouse, wait_until};
use gatehouse::node::peer::{self, Member, PeerRequest, PeerResponse};
use gatehouse::node::store::{Secrets, Store};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Connections the fuzzer makes, over both nodes.
const CASES: usize = 3000;
/// Connections in flight at once: all of them share the nodes' own address (127.0.0.1), so
/// they stay well under the guard's per-address cap and leave room for the genuine peers.
const IN_FLIGHT: usize = 4;
/// Replayed hellos held open at once against one node.
const REPLAY_FLOOD: usize = 300;
/// A node closes any connection within its handshake deadline (2 s) once the client stopped
/// sending; this is the bound the test waits before it calls a connection held.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);
const MAX_HANDSHAKE_FRAME: usize = peer::MAX_HANDSHAKE_FRAME;
const NOISE_MAX: usize = 65535;
const VALUE: &str = "fuzzed-warehouse-password";

/// One node as the fuzzer attacks it: its peer port, its public key, and the private key of
/// the other node (a member of its roster) for handshakes that succeed.
#[derive(Clone)]
struct Target {
    name: String,
    address: String,
    public: Vec<u8>,
    /// Another node's public key (a valid key, but not this node's).
    other_public: Vec<u8>,
    member_private: Vec<u8>,
    /// A genuine hello and ping request recorded from the member, and its answer's frames.
    recorded: Recorded,
}

#[derive(Clone, Default)]
struct Recorded {
    hello: Vec<u8>,
    request: Vec<u8>,
}

fn secrets(dir: &Path) -> Secrets {
    Store::new(dir).secrets().unwrap()
}

fn key_half(dir: &Path, half: &str) -> Vec<u8> {
    let key = serde_json::to_value(secrets(dir).peer_key.unwrap()).unwrap();
    base64::engine::general_purpose::STANDARD.decode(key[half].as_str().unwrap()).unwrap()
}

fn params() -> snow::params::NoiseParams {
    peer::NOISE_PARAMS.parse().unwrap()
}

fn initiator(me: &[u8], them: &[u8]) -> snow::HandshakeState {
    snow::Builder::new(params())
        .local_private_key(me)
        .unwrap()
        .remote_public_key(them)
        .unwrap()
        .prologue(peer::PROLOGUE)
        .unwrap()
        .build_initiator()
        .unwrap()
}

fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(message.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

/// The frames in `bytes` (a cut-off last one included as it is).
fn frames(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        let end = (2 + len).min(bytes.len());
        out.push(&bytes[2..end]);
        bytes = &bytes[end..];
    }
    out
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

/// A genuine handshake as the member: the connection and the session's transport state, and
/// the hello it sent.
async fn handshake(target: &Target) -> (TcpStream, snow::TransportState, Vec<u8>) {
    let mut state = initiator(&target.member_private, &target.public);
    let mut buffer = vec![0u8; NOISE_MAX];
    let len = state.write_message(&[], &mut buffer).unwrap();
    let hello = buffer[..len].to_vec();
    let mut stream = tokio::time::timeout(CLOSE_WITHIN, TcpStream::connect(&target.address))
        .await
        .unwrap_or_else(|_| panic!("connecting to {} timed out", target.name))
        .unwrap();
    stream.write_all(&frame(&hello)).await.unwrap();
    let reply = tokio::time::timeout(CLOSE_WITHIN, read_frame(&mut stream))
        .await
        .unwrap_or_else(|_| panic!("{} didn't answer a genuine hello", target.name))
        .unwrap_or_else(|e| panic!("{} refused a genuine hello: {e}", target.name));
    state.read_message(&reply, &mut buffer).unwrap();
    (stream, state.into_transport_mode().unwrap(), hello)
}

/// A transport message of `plain` preceded by the "more follows" byte.
fn seal(state: &mut snow::TransportState, more: u8, plain: &[u8]) -> Vec<u8> {
    let mut buffer = vec![0u8; NOISE_MAX];
    let len = state.write_message(&[&[more][..], plain].concat(), &mut buffer).unwrap();
    buffer[..len].to_vec()
}

/// A genuine ping as the member, answered with a pong; returns its hello and request.
async fn genuine_ping(target: &Target) -> Recorded {
    let (mut stream, mut state, hello) = handshake(target).await;
    let request = seal(&mut state, 0, &serde_json::to_vec(&PeerRequest::Ping).unwrap());
    stream.write_all(&frame(&request)).await.unwrap();
    let answer = tokio::time::timeout(CLOSE_WITHIN, read_frame(&mut stream)).await.unwrap().unwrap();
    let mut plain = vec![0u8; NOISE_MAX];
    let len = state.read_message(&answer, &mut plain).unwrap();
    assert_eq!(plain[0], 0, "a pong in one frame");
    let pong: PeerResponse = serde_json::from_slice(&plain[1..len]).unwrap();
    assert_eq!(pong, PeerResponse::Pong);
    Recorded { hello, request }
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random()).collect()
}

/// `bytes` flipped, cut, extended or spliced at random.
fn mutate(rng: &mut StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    match rng.random_range(0..5) {
        0 => {
            for _ in 0..rng.random_range(1..=8) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => bytes.truncate(rng.random_range(0..bytes.len())),
        2 => {
            let extra = rng.random_range(1..200);
            bytes.extend(random_bytes(rng, extra));
        }
        3 => {
            let at = rng.random_range(0..bytes.len());
            let len = rng.random_range(1..=bytes.len() - at);
            let garbage = random_bytes(rng, len);
            bytes.splice(at..at + len, garbage);
        }
        _ => {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
    }
    bytes
}

/// JSON a member could send that is no request: each must be refused without an answer.
/// (A unit request with extra fields, `{"type":"ping","x":1}`, is read as the request: serde
/// applies `deny_unknown_fields` to an internally tagged enum's struct variants only.)
fn not_a_request(rng: &mut StdRng) -> Vec<u8> {
    let depth = rng.random_range(200..20_000);
    let choices: [Vec<u8>; 10] = [
        br#"{"type":"pong"}"#.to_vec(),
        br#"{"type":"run"}"#.to_vec(),
        br#"{"type":"run","run":{}}"#.to_vec(),
        br#"{"type":"credential"}"#.to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        format!("\"{}\"", "x".repeat(rng.random_range(0..1000))).into_bytes(),
        [b"[".repeat(depth), b"]".repeat(depth)].concat(),
        b"{\"type\":\"ping\"".to_vec(),
        {
            let len = rng.random_range(1..500);
            random_bytes(rng, len)
        },
    ];
    choices[rng.random_range(0..choices.len())].clone()
}

/// Builds what a case sends after a genuine handshake, from the session's transport state.
type AfterHandshake = Box<dyn FnOnce(&mut snow::TransportState, &mut StdRng) -> Vec<u8> + Send>;

/// What one case sends before the test stops sending.
enum Plan {
    /// Bytes sent on a fresh connection, no handshake of the test's own.
    Raw(Vec<u8>),
    /// A genuine handshake first, then these bytes (built from its transport state).
    AfterHandshake(AfterHandshake),
}

fn plan(rng: &mut StdRng, target: &Target) -> (&'static str, Plan) {
    let recorded = &target.recorded;
    let genuine = [frame(&recorded.hello), frame(&recorded.request)].concat();
    match rng.random_range(0..16) {
        0 => {
            let len = rng.random_range(0..600);
            ("garbage", Plan::Raw(random_bytes(rng, len)))
        }
        1 => {
            let claimed: u16 = rng.random_range(257..=u16::MAX);
            let tail = rng.random_range(0..64);
            (
                "oversized length",
                Plan::Raw([claimed.to_be_bytes().to_vec(), random_bytes(rng, tail)].concat()),
            )
        }
        2 => ("one byte of a length", Plan::Raw(vec![rng.random()])),
        3 => ("empty frames", Plan::Raw([0u8, 0].repeat(rng.random_range(1..6)))),
        4 => {
            let claimed = rng.random_range(1..=MAX_HANDSHAKE_FRAME);
            let sent = rng.random_range(0..claimed);
            let bytes = [u16::try_from(claimed).unwrap().to_be_bytes().to_vec(), random_bytes(rng, sent)];
            ("truncated frame", Plan::Raw(bytes.concat()))
        }
        5 | 6 => {
            let hello = mutate(rng, recorded.hello.clone());
            ("mutated hello", Plan::Raw([frame(&hello), frame(&recorded.request)].concat()))
        }
        7 => ("mutated exchange", Plan::Raw(mutate(rng, genuine))),
        8 => ("replayed exchange", Plan::Raw(genuine)),
        9 => {
            let forged = random_bytes(rng, recorded.request.len());
            ("replayed hello, forged request", Plan::Raw([frame(&recorded.hello), frame(&forged)].concat()))
        }
        10 => {
            // A stranger's genuine hello (its key in no roster), then a frame as a client would.
            let stranger = snow::Builder::new(params()).generate_keypair().unwrap();
            let mut state = initiator(&stranger.private, &target.public);
            let mut buffer = vec![0u8; NOISE_MAX];
            let len = state.write_message(&[], &mut buffer).unwrap();
            let forged = random_bytes(rng, recorded.request.len());
            ("stranger's hello", Plan::Raw([frame(&buffer[..len]), frame(&forged)].concat()))
        }
        11 => {
            // The member's key, but aimed at the other node's key.
            let mut state = initiator(&target.member_private, &target.other_public);
            let mut buffer = vec![0u8; NOISE_MAX];
            let len = state.write_message(&[], &mut buffer).unwrap();
            ("hello for another node", Plan::Raw([frame(&buffer[..len]), frame(&recorded.request)].concat()))
        }
        12..=14 => authenticated(rng, recorded),
        _ => {
            let hello = mutate(rng, recorded.hello.clone());
            let len = rng.random_range(1..300);
            let forged = random_bytes(rng, len);
            ("mutated hello, then a frame", Plan::Raw([frame(&hello), frame(&forged)].concat()))
        }
    }
}

/// A genuine handshake as the member, then frames a member's client would never send.
fn authenticated(rng: &mut StdRng, recorded: &Recorded) -> (&'static str, Plan) {
    match rng.random_range(0..3) {
        0 => (
            "forged transport frame",
            Plan::AfterHandshake(Box::new(|state: &mut snow::TransportState, rng: &mut StdRng| {
                let request = serde_json::to_vec(&PeerRequest::Ping).unwrap();
                let genuine = seal(state, 0, &request);
                // A mutation may undo itself (a bit flipped twice): only a changed frame counts.
                let mut sealed = mutate(rng, genuine.clone());
                while sealed == genuine {
                    sealed = mutate(rng, genuine.clone());
                }
                frame(&sealed)
            })),
        ),
        1 => {
            let replayed = recorded.request.clone();
            (
                "frame of another session, or skipped ahead",
                Plan::AfterHandshake(Box::new(move |state: &mut snow::TransportState, rng: &mut StdRng| {
                    if rng.random_bool(0.5) {
                        return frame(&replayed);
                    }
                    let request = serde_json::to_vec(&PeerRequest::Ping).unwrap();
                    let _skipped = seal(state, 0, &request);
                    frame(&seal(state, 0, &request))
                })),
            )
        }
        _ => (
            "authenticated frames that are no request",
            Plan::AfterHandshake(Box::new(|state: &mut snow::TransportState, rng: &mut StdRng| {
                match rng.random_range(0..6) {
                    // An empty message (not even the "more" byte).
                    0 => {
                        let mut buffer = vec![0u8; NOISE_MAX];
                        let len = state.write_message(&[], &mut buffer).unwrap();
                        frame(&buffer[..len])
                    }
                    // "More follows", then the connection ends.
                    1 => frame(&seal(state, 1, br#"{"type":"#)),
                    // A length prefix promising more than comes.
                    2 => {
                        let sealed = seal(state, 0, br#"{"type":"ping"}"#);
                        let mut bytes = frame(&sealed);
                        bytes[..2].copy_from_slice(&u16::MAX.to_be_bytes());
                        bytes
                    }
                    // Over a MiB in full-size frames, each saying more follows.
                    3 => {
                        let chunk = vec![b' '; NOISE_MAX - 17];
                        (0..17).flat_map(|_| frame(&seal(state, 1, &chunk))).collect()
                    }
                    _ => {
                        let json = not_a_request(rng);
                        let chunks: Vec<&[u8]> = json.chunks(NOISE_MAX - 17).collect();
                        let last = chunks.len() - 1;
                        chunks
                            .iter()
                            .enumerate()
                            .flat_map(|(i, c)| frame(&seal(state, u8::from(i < last), c)))
                            .collect()
                    }
                }
            })),
        ),
    }
}

/// Runs one case; `Err` when the node answered something an attacker must never get, or
/// kept the connection open after the test stopped sending.
async fn run_case(target: &Target, what: &str, plan: Plan, rng: &mut StdRng) -> Result<bool, String> {
    let (mut stream, handshook) = match plan {
        Plan::Raw(bytes) => {
            let mut stream =
                TcpStream::connect(&target.address).await.map_err(|e| format!("connect: {e}"))?;
            // The node may close before reading everything: that is fine.
            let _ = stream.write_all(&bytes).await;
            (stream, false)
        }
        Plan::AfterHandshake(make) => {
            let (mut stream, mut state, _) = handshake(target).await;
            let bytes = make(&mut state, rng);
            let _ = stream.write_all(&bytes).await;
            (stream, true)
        }
    };
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    // A reset (the node closed with bytes unread) ends the reading as well as a close does.
    if tokio::time::timeout(CLOSE_WITHIN, stream.read_to_end(&mut answer)).await.is_err() {
        return Err(format!("{what}: {} kept the connection open for {CLOSE_WITHIN:?}", target.name));
    }
    let got = frames(&answer);
    if handshook {
        // The handshake's answer was read already: nothing more may come.
        return if answer.is_empty() {
            Ok(true)
        } else {
            Err(format!("{what}: {} answered {} bytes after a bad frame", target.name, answer.len()))
        };
    }
    // At most the handshake's own answer (to a replayed genuine hello), never a second frame.
    match got.as_slice() {
        [] => Ok(false),
        [one] if one.len() <= MAX_HANDSHAKE_FRAME && answer.len() == one.len() + 2 => Ok(true),
        _ => Err(format!("{what}: {} answered {} frames ({} bytes)", target.name, got.len(), answer.len())),
    }
}

/// `CASES` cases over the targets, `IN_FLIGHT` at a time; returns the failures, and how many
/// cases got as far as a completed handshake.
fn fuzz(targets: &[Target], seed: u64) -> (Vec<String>, usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let failures = runtime.block_on(async {
        let mut tasks = Vec::new();
        for lane in 0..IN_FLIGHT {
            let (targets, next, handshakes) = (targets.to_vec(), Arc::clone(&next), Arc::clone(&handshakes));
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(u64::try_from(lane).unwrap()));
                let mut failures = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < CASES {
                    let target = &targets[rng.random_range(0..targets.len())];
                    let (what, plan) = plan(&mut rng, target);
                    match run_case(target, what, plan, &mut rng).await {
                        Ok(true) => {
                            handshakes.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(false) => {}
                        Err(failure) => failures.push(failure),
                    }
                }
                failures
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    (failures, handshakes.load(Ordering::SeqCst))
}

/// Opens `REPLAY_FLOOD` connections to `target` one after the other, each sending its
/// recorded genuine hello, waiting for the node's handshake answer (so the node is done with
/// the handshake before the next comes) and then sending nothing more, and holds them all;
/// returns the most file descriptors the node held meanwhile.
fn replay_flood(target: &Target, pid: u32) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..REPLAY_FLOOD {
            let connect = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&target.address));
            if let Ok(Ok(mut stream)) = connect.await {
                let _ = stream.write_all(&frame(&target.recorded.hello)).await;
                // Answered, or closed at once by the guard: either way the node is done with it.
                let _ = tokio::time::timeout(Duration::from_secs(1), read_frame(&mut stream)).await;
                held.push(stream);
            }
        }
        assert!(held.len() > REPLAY_FLOOD / 2, "only {} replayed hellos connected", held.len());
        let mut most = 0;
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            most = most.max(std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count());
        }
        drop(held);
        most
    })
}

fn node_pid(node: &Node) -> u32 {
    node.process.as_ref().unwrap().pid()
}

/// Each node's secrets and settings file, and the credential digest the hub has for it.
fn stored(hub: &cluster::Hub, nodes: &[Node]) -> Vec<(Secrets, Vec<u8>, serde_json::Value)> {
    let list = hub.nodes("lake");
    nodes
        .iter()
        .map(|node| {
            let digest = list
                .iter()
                .find(|n| n["name"] == node.name.as_str())
                .map(|n| n["metrics"]["credential_digest"].clone())
                .unwrap_or_default();
            let settings = std::fs::read(node.home.path().join("node.toml")).unwrap();
            (secrets(node.home.path()), settings, digest)
        })
        .collect()
}

fn all_online(hub: &cluster::Hub) -> bool {
    let list = hub.nodes("lake");
    list.len() == 2 && list.iter().all(|n| n["status"] == "Online")
}

/// A member's authenticated ping through `gatehouse::node::peer`, as the nodes send them.
fn member_ping(caller: &Node, target: &Node) -> Result<PeerResponse, String> {
    let key = secrets(caller.home.path()).peer_key.unwrap();
    let target_key = secrets(target.home.path()).peer_key.unwrap();
    let node_id = Store::new(target.home.path()).settings().unwrap().node_id;
    let member = Member::new(&node_id, &target.peer_address, target_key.public()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let stream = TcpStream::connect(&target.peer_address).await.map_err(|e| e.to_string())?;
        peer::ask(stream, &key, &member, &PeerRequest::Ping).await.map_err(|e| e.to_string())
    })
}

fn assert_alive_and_calm(nodes: &mut [Node], when: &str) {
    for node in nodes {
        let process = node.process.as_mut().unwrap();
        assert!(
            process.child.try_wait().unwrap().is_none(),
            "{} died {when}: {}",
            node.name,
            process.stderr()
        );
        let log = process.stderr();
        assert!(!log.contains("panicked"), "{} panicked {when}:\n{log}", node.name);
    }
}

#[test]
fn random_and_mutated_frames_get_nothing_and_break_nothing() {
    let seed =
        std::env::var("GATEHOUSE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("peer fuzz seed {seed} (GATEHOUSE_FUZZ_SEED={seed} replays it)");
    let (hub, mut nodes) = cluster::gateway(2);
    nodes[0].set_credential("warehouse", VALUE);
    wait_until(Duration::from_secs(30), "both nodes to report the same credentials", || {
        let list = hub.nodes("lake");
        let digests: Vec<&serde_json::Value> =
            list.iter().map(|n| &n["metrics"]["credential_digest"]).collect();
        let names = String::from_utf8_lossy(
            &gatehouse(nodes[1].home.path(), &["node", "credential", "list"], &[]).stdout,
        )
        .into_owned();
        names.contains("warehouse")
            && digests.len() == 2
            && digests[0].is_string()
            && digests[0] == digests[1]
    });
    let before = stored(&hub, &nodes);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut targets = Vec::new();
    for (this, other) in [(0, 1), (1, 0)] {
        let (node, member) = (&nodes[this], &nodes[other]);
        let mut target = Target {
            name: node.name.clone(),
            address: node.peer_address.clone(),
            public: key_half(node.home.path(), "public"),
            other_public: key_half(member.home.path(), "public"),
            member_private: key_half(member.home.path(), "private"),
            recorded: Recorded::default(),
        };
        // The test client is genuine: a member's ping gets a pong (so refusals below are the
        // frames' doing).
        target.recorded = runtime.block_on(genuine_ping(&target));
        targets.push(target);
    }

    // The fuzzer runs while a job's runs are handed over the same ports.
    let fuzzing = std::thread::spawn({
        let targets = targets.clone();
        move || fuzz(&targets, seed)
    });
    let spec = serde_json::json!({ "name": "under-fuzz", "activities": [
        { "kind": "sleep", "millis": 300, "partitions": 20 },
    ]});
    let id = cluster::submit(&hub, &spec).unwrap();
    let (failures, handshakes) = fuzzing.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {CASES} cases went wrong (seed {seed}); the first ones:\n{}",
        failures.len(),
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    // Replayed hellos and the test's own handshakes reached the code after the handshake.
    assert!(handshakes > CASES / 20, "only {handshakes} of {CASES} cases got past a handshake");
    let job = cluster::wait_over(&hub, &id);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_alive_and_calm(&mut nodes, "under the fuzzer");

    // Replayed genuine hellos held open cost what idle connections do: a handshake slot each,
    // capped, not a connection each for the whole exchange timeout.
    for (target, node) in targets.iter().zip(&nodes) {
        let most = replay_flood(target, node_pid(node));
        eprintln!("{} held at most {most} file descriptors under {REPLAY_FLOOD} replayed hellos", node.name);
        assert!(
            most < 150,
            "{} held {most} file descriptors under {REPLAY_FLOOD} replayed hellos",
            node.name
        );
    }

    // Both nodes still answer each other's authenticated pings: Online at the hub (a node
    // whose peer can't reach it is Limited), and a member's ping gets its pong.
    wait_until(Duration::from_secs(30), "both nodes Online after the fuzzing", || all_online(&hub));
    for (caller, target) in [(&nodes[1], &nodes[0]), (&nodes[0], &nodes[1])] {
        let mut answer = Err(String::new());
        wait_until(Duration::from_secs(10), "a member's ping to be answered", || {
            answer = member_ping(caller, target);
            answer.is_ok()
        });
        assert_eq!(answer, Ok(PeerResponse::Pong));
    }
    wait_until(Duration::from_secs(10), "both nodes Online, still", || all_online(&hub));
    let after = stored(&hub, &nodes);
    for ((node, was), now) in nodes.iter().zip(&before).zip(&after) {
        assert!(was.0 == now.0, "{}'s secrets changed", node.name);
        assert_eq!(was.1, now.1, "{}'s node.toml changed", node.name);
        assert_eq!(was.2, now.2, "the hub's credential digest of {} changed", node.name);
    }
    assert_alive_and_calm(&mut nodes, "after the fuzzing");
}
