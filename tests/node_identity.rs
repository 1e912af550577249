//! Per-node identities on the peer channel, attacked with real processes on loopback: a node
//! removed at the hub (its data dir, or an old copy of it) gets nothing from the others; the
//! hub's database holds nothing that opens a credential; a data dir registered by an older
//! version (shared gateway secret, no key pair) migrates on start and talks to its peers;
//! 1,000 idle connections to the peer ports don't stop a job; a worker runs the hub's copy of
//! a run, never the one a peer handed it.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{self, Hub, Node, gatehouse, wait_until};
use gatehouse::node::peer::{self, Member, PeerRequest, PeerResponse};
use gatehouse::node::store::{Secrets, Store};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const VALUE: &str = "s3cr3t-warehouse-password";

fn names(node: &Node) -> String {
    String::from_utf8_lossy(&gatehouse(node.home.path(), &["node", "credential", "list"], &[]).stdout)
        .into_owned()
}

fn secrets(dir: &Path) -> Secrets {
    Store::new(dir).secrets().unwrap()
}

fn contains(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Asks the node at `address` (whose data dir is `target`) with the identity kept in `caller`.
fn ask(caller: &Path, target: &Path, address: &str, request: &PeerRequest) -> Result<PeerResponse, String> {
    let key = secrets(caller).peer_key.unwrap();
    let target_key = secrets(target).peer_key.unwrap();
    let node_id = Store::new(target).settings().unwrap().node_id;
    let member = Member::new(&node_id, address, target_key.public()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        peer::ask(stream, &key, &member, request).await.map_err(|e| e.to_string())
    })
}

fn fake_run() -> PeerRequest {
    let run = serde_json::json!({
        "id": "r-forged", "job_id": "j-forged", "activity_index": 0, "partition": 0,
        "activity": { "kind": "echo", "message": "rewritten" }, "state": "dispatched", "attempt": 1,
        "node_id": null, "node_name": null, "progress": null, "result": null, "error": null,
        "queued_ms": 0, "finished_ms": null,
    });
    PeerRequest::Run { run: Box::new(serde_json::from_value(run).unwrap()) }
}

/// Copies the regular files of a data dir (as a backup of it would keep them).
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap().filter_map(Result::ok) {
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_removed_node_gets_no_credentials_and_hands_out_no_runs() {
    let hub = Hub::start();
    let key = hub.create_gateway("ids", &[]);
    let n1 = Node::start(&key, "n1", &[]);
    let mut n2 = Node::start(&key, "n2", &[]);
    wait_until(Duration::from_secs(30), "two nodes Online", || {
        hub.nodes("ids").iter().filter(|n| n["status"] == "Online").count() == 2
    });
    let old_copy = tempfile::tempdir().unwrap();
    copy_dir(n2.home.path(), old_copy.path());

    n1.set_credential("warehouse", VALUE);
    wait_until(Duration::from_secs(30), "n2 to have the credential", || names(&n2).contains("warehouse"));
    // While it is a member, n2's identity opens n1's peer channel (so the refusals below are
    // the removal's doing, not a broken client).
    let mut answer = Err(String::new());
    wait_until(Duration::from_secs(10), "n1 to answer n2", || {
        answer = ask(n2.home.path(), n1.home.path(), &n1.peer_address, &PeerRequest::Credentials);
        answer.is_ok()
    });
    assert!(matches!(answer, Ok(PeerResponse::Credentials { set }) if set.entries.contains_key("warehouse")));
    assert_eq!(
        ask(n2.home.path(), n1.home.path(), &n1.peer_address, &fake_run()),
        Ok(PeerResponse::Accepted)
    );

    hub.admin(&["hub", "node", "remove", "ids", "n2"]);
    n2.process.take().unwrap().stop();
    // Within a heartbeat or two n1's roster no longer has n2.
    wait_until(Duration::from_secs(10), "n1 to refuse the removed node", || {
        ask(n2.home.path(), n1.home.path(), &n1.peer_address, &PeerRequest::Ping).is_err()
    });
    for (what, dir) in [("its data dir", n2.home.path()), ("an old copy of its data dir", old_copy.path())] {
        let credentials = ask(dir, n1.home.path(), &n1.peer_address, &PeerRequest::Credentials);
        assert!(credentials.is_err(), "the removed node's {what} fetched credentials: {credentials:?}");
        let run = ask(dir, n1.home.path(), &n1.peer_address, &fake_run());
        assert!(run.is_err(), "the removed node's {what} handed over a run: {run:?}");
    }
}

#[test]
fn the_hubs_database_holds_nothing_that_opens_a_credential() {
    let (hub, nodes) = cluster::gateway(2);
    nodes[0].set_credential("warehouse", VALUE);
    wait_until(Duration::from_secs(30), "n2 to have the credential", || {
        names(&nodes[1]).contains("warehouse")
    });
    for entry in std::fs::read_dir(hub.home()).unwrap().filter_map(Result::ok) {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        assert!(!contains(&bytes, VALUE), "{} holds the credential", entry.path().display());
        // No node's private key either: the hub knows public keys only.
        for node in &nodes {
            let key = secrets(node.home.path()).peer_key.unwrap();
            let private = serde_json::to_value(&key).unwrap()["private"].as_str().unwrap().to_owned();
            assert!(!contains(&bytes, &private), "{} holds a node's private key", entry.path().display());
        }
    }
    // No shared gateway secret is stored, so no key can be derived from one.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let columns: Vec<String> = runtime.block_on(async {
        use sqlx::Row as _;
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=ro", hub.home().join("hub.db").display());
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let rows =
            sqlx::query("SELECT name FROM pragma_table_info('gateways')").fetch_all(&pool).await.unwrap();
        rows.iter().map(|row| row.try_get::<String, _>("name").unwrap()).collect()
    });
    assert!(columns.contains(&"name".to_owned()), "{columns:?}");
    assert!(!columns.iter().any(|c| c.contains("secret")), "the hub stores a gateway secret: {columns:?}");
}

#[test]
fn a_data_dir_of_an_older_version_migrates_on_start_and_talks_to_its_peers() {
    let hub = Hub::start();
    let key = hub.create_gateway("old", &[]);
    let n1 = Node::start(&key, "n1", &[]);

    // Register "n2" as an older version did: no public key sent, a gateway secret kept.
    let home = tempfile::tempdir().unwrap();
    let store = Store::new(home.path());
    let port = common::process::free_port();
    let peer_address = format!("127.0.0.1:{port}");
    let request = gatehouse::protocol::RegisterRequest {
        name: "n2".to_owned(),
        machine_id: store.machine_id().unwrap(),
        version: gatehouse::VERSION.to_owned(),
        peer_address: peer_address.clone(),
        encryption_thumbprint: None,
        public_key: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answer = runtime.block_on(async {
        gatehouse::client::HubClient::new(&hub.url, &key).unwrap().register(&request).await.unwrap()
    });
    store
        .save_settings(&gatehouse::node::store::NodeSettings {
            hub_url: hub.url.clone(),
            gateway_id: answer.gateway_id,
            gateway_name: answer.gateway_name,
            node_id: answer.node_id,
            node_name: "n2".to_owned(),
            peer_port: port,
            peer_address: peer_address.clone(),
            concurrency_limit: None,
            log_level: "info".to_owned(),
            proxy: None,
            hub_ca: None,
            hub_pin: None,
            metrics_listen: None,
            auto_update: None,
        })
        .unwrap();
    // Make the sealing key, then seal the secrets as an older version wrote them.
    store.save_secrets(&Secrets::default()).unwrap();
    let sealing_key: [u8; 32] = std::fs::read(home.path().join("secret.key")).unwrap().try_into().unwrap();
    let old = serde_json::json!({
        "node_token": answer.node_token,
        "gateway_secret": "an-old-shared-gateway-secret",
        "credentials": {},
        "credential_version": 0,
        "tls": null,
    });
    let sealed = gatehouse::node::store::seal(&sealing_key, old.to_string().as_bytes());
    std::fs::write(home.path().join("secrets.bin"), sealed).unwrap();
    assert!(secrets(home.path()).peer_key.is_none());

    let mut n2 = Node { name: "n2".to_owned(), home, peer_address, process: None };
    n2.run(&[]);
    wait_until(Duration::from_secs(30), "the migrated node Online", || {
        hub.nodes("old").iter().filter(|n| n["status"] == "Online").count() == 2
    });
    let migrated = secrets(n2.home.path());
    assert!(migrated.peer_key.is_some(), "no key pair was made on start");
    let json = gatehouse::node::store::open(
        &sealing_key,
        &std::fs::read(n2.home.path().join("secrets.bin")).unwrap(),
    )
    .unwrap();
    assert!(!contains(&json, "an-old-shared-gateway-secret"), "the gateway secret was kept");

    // Both ways over the peer channel: a credential from n1 reaches n2, one from n2 reaches n1.
    n1.set_credential("warehouse", VALUE);
    wait_until(Duration::from_secs(30), "n2 to get n1's credential", || names(&n2).contains("warehouse"));
    n2.set_credential("lake", "another-secret");
    wait_until(Duration::from_secs(30), "n1 to get n2's credential", || names(&n1).contains("lake"));
}

#[test]
fn a_thousand_idle_connections_to_the_peer_ports_dont_stop_a_job() {
    let (hub, nodes) = cluster::gateway(2);
    // Few file descriptors, as on a small machine: connections held without limit exhaust them.
    for node in &nodes {
        let pid = node.process.as_ref().unwrap().pid().to_string();
        let limited =
            std::process::Command::new("prlimit").args(["--pid", &pid, "--nofile=400:400"]).status();
        assert!(limited.unwrap().success(), "prlimit failed");
    }
    let targets: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.peer_address.parse().unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let attacker = std::thread::spawn({
        let (stop, opened) = (Arc::clone(&stop), Arc::clone(&opened));
        move || idle_flood(&targets, 1000, &stop, &opened)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while opened.load(Ordering::SeqCst) < 2000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the attacker opened only {} of 2,000 connections in 60 s",
            opened.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // What the flood holds of each node: a few handshake slots, not a socket per connection.
    for node in &nodes {
        let fds = format!("/proc/{}/fd", node.process.as_ref().unwrap().pid());
        let most = (0..10)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(200));
                std::fs::read_dir(&fds).unwrap().count()
            })
            .max()
            .unwrap();
        assert!(most < 150, "{} holds {most} file descriptors under the flood", node.name);
    }

    // The nodes' own pings share the attacker's address here (everything is 127.0.0.1), so
    // during the flood's first seconds a node may find its peer refusing it: once the node has
    // dropped the silent connections (2 s), both are Online again while the attacker still
    // holds its 2,000 sockets.
    wait_until(Duration::from_secs(30), "both nodes Online again under the flood", || {
        let list = hub.nodes("lake");
        list.len() == 2 && list.iter().all(|n| n["status"] == "Online")
    });
    // `distribute` spreads the runs over both nodes, through the attacked peer ports.
    let spec = serde_json::json!({ "name": "under-attack", "activities": [
        { "kind": "sleep", "millis": 200, "partitions": 20 },
    ]});
    let id = cluster::submit(&hub, &spec).unwrap();
    let job = cluster::wait_over(&hub, &id);
    assert_eq!(job["state"], "succeeded", "{job}");
    // Still under the flood, each node answers the other's authenticated pings over its
    // attacked port: a node whose peer can't reach it would be Limited, naming it. (Which node
    // ran which run is left to the dispatcher: under load it may keep them all.)
    wait_until(Duration::from_secs(30), "both nodes Online after the job, still under the flood", || {
        let list = hub.nodes("lake");
        list.len() == 2 && list.iter().all(|n| n["status"] == "Online")
    });
    stop.store(true, Ordering::SeqCst);
    attacker.join().unwrap();
    // The refusals were logged, but not one line per connection.
    for node in &nodes {
        let log = node.process.as_ref().unwrap().stderr();
        let lines = log.lines().filter(|l| l.contains("peer channel: refused a connection")).count();
        assert!(lines < 50, "{} logged {lines} refusals one by one", node.name);
    }
}

/// Opens `count` idle connections (sending nothing) to each target and holds them until
/// `stop`; counts in `opened` how many it opened. From 127.0.0.1 like everything in the tests,
/// so the nodes' own hand-offs share the attacker's address (and its per-address cap) for the
/// 2 s the node gives a silent connection.
fn idle_flood(targets: &[std::net::SocketAddr], count: usize, stop: &AtomicBool, opened: &AtomicUsize) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let connect = |target: std::net::SocketAddr| async move {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            tokio::time::timeout(Duration::from_secs(1), socket.connect(target)).await.ok()?.ok()
        };
        let mut held = Vec::new();
        for target in targets.iter().flat_map(|t| std::iter::repeat_n(*t, count)) {
            // A connect can time out while the node's accept queue is full: try again (bounded).
            for _ in 0..5 {
                if let Some(stream) = connect(target).await {
                    held.push(stream);
                    opened.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        }
        // Bounded: the job's own wait ends the test within its limit.
        for _ in 0..600 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(held);
    });
}

#[test]
fn the_hub_takes_a_nodes_first_key_and_never_another() {
    use gatehouse::client::{ClientError, HubClient};
    use gatehouse::protocol::{Heartbeat, NodeMetrics, RegisterRequest};
    let hub = Hub::start();
    let key = hub.create_gateway("keys", &[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let registering = HubClient::new(&hub.url, &key).unwrap();
        let request = |name: &str, public_key: Option<String>| RegisterRequest {
            name: name.to_owned(),
            machine_id: format!("machine-{name}"),
            version: gatehouse::VERSION.to_owned(),
            peer_address: "127.0.0.1:9".to_owned(),
            encryption_thumbprint: None,
            public_key,
        };
        let bad = registering.register(&request("bad", Some("not a key".to_owned()))).await;
        assert!(matches!(bad, Err(ClientError::Refused { status: 400, .. })), "{bad:?}");

        // A node of an older version registers without a key, then announces one.
        let answer = registering.register(&request("old", None)).await.unwrap();
        let node = HubClient::new(&hub.url, &answer.node_token).unwrap();
        let beat = |public_key: &str| Heartbeat {
            version: gatehouse::VERSION.to_owned(),
            metrics: NodeMetrics::default(),
            peer_address: None,
            public_key: Some(public_key.to_owned()),
            restarted: false,
            key_proof: None,
        };
        let first = peer::StaticKey::generate().unwrap();
        let other = peer::StaticKey::generate().unwrap();
        node.heartbeat(&beat(first.public())).await.unwrap();
        node.heartbeat(&beat(first.public())).await.unwrap();
        let taken = node.heartbeat(&beat(other.public())).await;
        match taken {
            Err(ClientError::Refused { status: 409, body }) => {
                assert!(body.error.contains("another peer-channel key"), "{}", body.error);
                assert!(body.hint.unwrap_or_default().contains("hub node remove"));
            }
            other => panic!("a second key was taken: {other:?}"),
        }
        // The roster another node gets carries the first key.
        let peer_answer =
            registering.register(&request("new", Some(other.public().to_owned()))).await.unwrap();
        let roster = HubClient::new(&hub.url, &peer_answer.node_token)
            .unwrap()
            .heartbeat(&beat(other.public()))
            .await
            .unwrap()
            .peers;
        let old = roster.iter().find(|p| p.name == "old").unwrap();
        assert_eq!(old.public_key, first.public());
    });
}

#[test]
fn a_worker_runs_the_hubs_copy_of_a_run_not_the_one_it_was_handed() {
    use gatehouse::client::HubClient;
    use gatehouse::protocol::{ClaimRequest, Heartbeat, NodeMetrics, RegisterRequest};
    let hub = Hub::start();
    let key = hub.create_gateway("lake", &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // The test plays the dispatcher "d", a genuine member of the gateway with its own key, and
    // rewrites the activity of a run it hands over.
    let d_key = peer::StaticKey::generate().unwrap();
    let d = runtime.block_on(async {
        let request = RegisterRequest {
            name: "d".to_owned(),
            machine_id: "machine-d".to_owned(),
            version: gatehouse::VERSION.to_owned(),
            peer_address: "127.0.0.1:9".to_owned(),
            encryption_thumbprint: None,
            public_key: Some(d_key.public().to_owned()),
        };
        let answer = HubClient::new(&hub.url, &key).unwrap().register(&request).await.unwrap();
        HubClient::new(&hub.url, &answer.node_token).unwrap()
    });
    let beat = Heartbeat {
        version: gatehouse::VERSION.to_owned(),
        metrics: NodeMetrics { runs_limit: 4, ..NodeMetrics::default() },
        peer_address: None,
        public_key: Some(d_key.public().to_owned()),
        restarted: false,
        key_proof: None,
    };
    let epoch = runtime.block_on(d.heartbeat(&beat)).unwrap().lease_epoch;
    let stop = Arc::new(AtomicBool::new(false));
    let beating = runtime.spawn({
        let (d, beat, stop) = (d.clone(), beat.clone(), Arc::clone(&stop));
        async move {
            // Bounded: the test is over well before.
            for _ in 0..600 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let _ = d.heartbeat(&beat).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    let n1 = Node::start(&key, "n1", &[]);
    wait_until(Duration::from_secs(30), "n1 Online as a worker", || {
        hub.nodes("lake")
            .iter()
            .any(|n| n["name"] == "n1" && n["status"] == "Online" && n["role"] == "worker")
    });

    let spec =
        serde_json::json!({ "name": "genuine", "activities": [{ "kind": "echo", "message": "genuine" }]});
    let id = cluster::submit(&hub, &spec).unwrap();
    let claim = ClaimRequest { lease_epoch: epoch, max: 1, wait_ms: 5000, again: false };
    let runs = runtime.block_on(d.claim(&claim)).unwrap();
    let mut run = serde_json::to_value(&runs[0]).unwrap();
    run["activity"]["message"] = serde_json::json!("rewritten");
    let handed = PeerRequest::Run { run: Box::new(serde_json::from_value(run).unwrap()) };
    let n1_key = secrets(n1.home.path()).peer_key.unwrap();
    let n1_id = Store::new(n1.home.path()).settings().unwrap().node_id;
    let member = Member::new(&n1_id, &n1.peer_address, n1_key.public()).unwrap();
    let answer = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(&n1.peer_address).await.unwrap();
        peer::ask(stream, &d_key, &member, &handed).await
    });
    assert!(matches!(answer, Ok(PeerResponse::Accepted)), "{answer:?}");
    let job = cluster::wait_over(&hub, &id);
    stop.store(true, Ordering::SeqCst);
    runtime.block_on(beating).unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["runs"][0]["result"]["echo"], "genuine", "the worker ran the rewritten activity: {job}");
}
