//! The node's control socket, against real `gatehouse node run` processes and a real hub on
//! loopback: the socket is owner-only and streams who runs it, its status and its log; the
//! connection tests time the hub and each peer and name the one that doesn't answer; Stop ends
//! `node run` cleanly; a second service of the same data dir is refused by name; a socket left
//! behind by kill -9 doesn't block the next start; clients that say nothing, send garbage or
//! hang up mid-watch leave the service answering. Every wait is bounded.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, gatehouse, wait_until};
use gatehouse::node::control::{ConnectionTest, ControlClient, ControlEvent, Hello, socket_path};
use gatehouse::protocol::NodeState;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Waits (bounded) until a service answers on the control socket of `dir`; returns who.
fn wait_for_service(rt: &tokio::runtime::Runtime, dir: &Path) -> (Hello, mpsc::Receiver<ControlEvent>) {
    let mut watched = None;
    wait_until(Duration::from_secs(30), "the node service to answer on its control socket", || {
        watched = rt.block_on(async {
            match ControlClient::connect(dir).await.unwrap() {
                Some(client) => Some(client.watch().await.unwrap()),
                None => None,
            }
        });
        watched.is_some()
    });
    watched.unwrap()
}

/// Reads events (bounded) until `wanted` returns true for one; returns that one.
fn next_matching(
    rt: &tokio::runtime::Runtime,
    events: &mut mpsc::Receiver<ControlEvent>,
    what: &str,
    mut wanted: impl FnMut(&ControlEvent) -> bool,
) -> ControlEvent {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let event = events.recv().await.unwrap_or_else(|| panic!("the watch ended before {what}"));
                if wanted(&event) {
                    return event;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    })
}

/// A hub with gateway "sales" and its node n1 running (`node run`), with its data dir.
fn one_running_node() -> (Hub, Node, std::path::PathBuf) {
    let hub = Hub::start();
    let key = hub.create_gateway("sales", &[]);
    let node = Node::start(&key, "n1", &[]);
    let dir = node.home.path().to_owned();
    (hub, node, dir)
}

#[test]
fn a_running_node_streams_hello_status_and_log_lines_on_an_owner_only_socket() {
    let rt = runtime();
    let hub = Hub::start();
    let key = hub.create_gateway("sales", &[]);
    let node = Node::start(&key, "n1", &[]);
    let dir = node.home.path();

    let (hello, mut events) = wait_for_service(&rt, dir);
    let process = node.process.as_ref().unwrap();
    assert_eq!(hello.pid, process.pid());
    assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(Path::new(&hello.data_dir), dir);
    let mode = std::fs::metadata(socket_path(dir)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the control socket is mode {mode:o}");

    // The status comes at once, then with every heartbeat until the hub says Online.
    let first = rt.block_on(events.recv()).unwrap();
    assert!(matches!(&first, ControlEvent::Status(s) if s.node_name == "n1"), "{first:?}");
    next_matching(
        &rt,
        &mut events,
        "an Online status",
        |event| matches!(event, ControlEvent::Status(s) if s.hub_connected && s.state == Some(NodeState::Online)),
    );

    // A line the service logs while we watch reaches us.
    node.command(&["node", "log-level", "debug"]);
    let line = next_matching(
        &rt,
        &mut events,
        "the log line about the new level",
        |event| matches!(event, ControlEvent::Log(line) if line.message.contains("log level changed")),
    );
    let ControlEvent::Log(line) = line else { unreachable!() };
    assert_eq!(line.level, "INFO");
    assert!(line.message.contains("level=debug"), "{line:?}");
}

/// The tests of `dir`'s service once they include every peer in `peers`.
fn connection_tests(rt: &tokio::runtime::Runtime, dir: &Path, peers: &[&str]) -> Vec<ConnectionTest> {
    let mut tests = Vec::new();
    wait_until(Duration::from_secs(30), "connection tests that include every peer", || {
        tests = rt.block_on(ControlClient::test_connections(dir)).unwrap();
        peers.iter().all(|peer| tests.iter().any(|t| t.target == *peer))
    });
    tests
}

#[test]
fn connection_tests_time_the_hub_and_each_peer_and_name_what_doesnt_answer() {
    let rt = runtime();
    let hub = Hub::start();
    let key = hub.create_gateway("sales", &[]);
    let n1 = Node::start(&key, "n1", &[]);
    let n2 = Node::start(&key, "n2", &[]);
    // Registered, never started: nothing listens at its peer address.
    let n3 = Node::register(&key, "n3", &[]);
    let dir = n1.home.path();

    let mut tests = Vec::new();
    wait_until(Duration::from_secs(30), "n1 to reach the hub and n2", || {
        tests = connection_tests(&rt, dir, &["n2", "n3"]);
        tests.iter().filter(|t| t.ok).count() == 2
    });
    assert_eq!(tests.len(), 3, "{tests:?}");
    let hub_test = &tests[0];
    assert_eq!(hub_test.target, "hub", "the hub comes first: {tests:?}");
    assert_eq!(hub_test.address.trim_end_matches('/'), hub.url.trim_end_matches('/'));
    assert!(hub_test.ok);
    assert_eq!(hub_test.message, format!("answered in {} ms", hub_test.millis));

    let peer = |name: &str| tests.iter().find(|t| t.target == name).unwrap().clone();
    let (to_n2, to_n3) = (peer("n2"), peer("n3"));
    assert!(to_n2.ok, "{to_n2:?}");
    assert_eq!(to_n2.address, n2.peer_address);
    assert_eq!(to_n2.message, format!("answered in {} ms", to_n2.millis));
    assert!(!to_n3.ok, "{to_n3:?}");
    assert_eq!(to_n3.address, n3.peer_address);
    assert!(to_n3.message.contains("can't reach the peer"), "{to_n3:?}");

    // With the hub gone, its test fails with the sentence that says so; the node answers still.
    drop(hub);
    let tests = rt.block_on(ControlClient::test_connections(dir)).unwrap();
    assert_eq!(tests[0].target, "hub");
    assert!(!tests[0].ok, "{tests:?}");
    assert!(tests[0].message.contains("can't reach the hub"), "{tests:?}");
}

#[test]
fn stop_over_the_socket_ends_node_run_cleanly_and_removes_the_socket() {
    let rt = runtime();
    let (_hub, mut node, dir) = one_running_node();
    let (_, mut events) = wait_for_service(&rt, &dir);

    rt.block_on(ControlClient::stop(&dir)).unwrap();
    let process = node.process.as_mut().unwrap();
    let status = process.wait_timeout(Duration::from_secs(30)).expect("node run didn't exit after Stop");
    assert!(status.success(), "node run exited with {status}: {}", process.stderr());
    assert!(!socket_path(&dir).exists(), "the control socket was left behind");
    // A watcher is told, then the stream ends.
    next_matching(&rt, &mut events, "Stopping", |event| *event == ControlEvent::Stopping);
    assert_eq!(rt.block_on(events.recv()), None);
    assert!(rt.block_on(ControlClient::connect(&dir)).unwrap().is_none());
    let error = rt.block_on(ControlClient::stop(&dir)).unwrap_err();
    assert!(error.to_string().contains("no node service is running"), "{error}");
}

#[test]
fn a_second_service_of_the_same_data_dir_is_refused_with_the_first_ones_pid() {
    let rt = runtime();
    let (_hub, mut node, dir) = one_running_node();
    let (hello, _events) = wait_for_service(&rt, &dir);

    let second = gatehouse(&dir, &["node", "run"], &[]);
    assert_eq!(second.status.code(), Some(2));
    let message = String::from_utf8_lossy(&second.stderr);
    let expected = format!(
        "a node service is already running for this data dir (pid {}); stop it first, or open the Configuration Manager, which attaches to it",
        hello.pid
    );
    assert!(message.contains(&expected), "{message}");

    // The first one is untouched: still running, still answering on its socket.
    let process = node.process.as_mut().unwrap();
    assert!(process.wait_timeout(Duration::ZERO).is_none(), "the first node run exited");
    let (again, _) = wait_for_service(&rt, &dir);
    assert_eq!(again.pid, process.pid());
}

#[test]
fn a_socket_left_behind_by_kill_9_does_not_stop_the_next_run() {
    let rt = runtime();
    let (_hub, mut node, dir) = one_running_node();
    drop(wait_for_service(&rt, &dir));

    node.process.as_mut().unwrap().kill9();
    assert!(socket_path(&dir).exists(), "kill -9 can't remove the socket; this test needs it left");
    assert!(
        rt.block_on(ControlClient::connect(&dir)).unwrap().is_none(),
        "a dead socket counts as no service"
    );

    node.run(&[]);
    let (hello, mut events) = wait_for_service(&rt, &dir);
    assert_eq!(hello.pid, node.process.as_ref().unwrap().pid());
    let mode = std::fs::metadata(socket_path(&dir)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    next_matching(
        &rt,
        &mut events,
        "the restarted node to reach the hub",
        |event| matches!(event, ControlEvent::Status(s) if s.hub_connected),
    );
}

/// Awaits `work`, failing the test after 30 s.
async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), work).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[test]
fn clients_that_say_nothing_send_garbage_or_hang_up_mid_watch_leave_the_service_answering() {
    let rt = runtime();
    let (_hub, mut node, dir) = one_running_node();
    let (hello, _events) = wait_for_service(&rt, &dir);
    let path = socket_path(&dir);
    let _silent = rt.block_on(async {
        // Connects and says nothing; kept open until the end.
        let silent = UnixStream::connect(&path).await.unwrap();

        // Garbage: answered with a sentence, then the connection ends.
        let mut garbage = UnixStream::connect(&path).await.unwrap();
        garbage.write_all(b"\x00\xffnot json at all\n").await.unwrap();
        let mut answer = String::new();
        within("the answer to garbage", garbage.read_to_string(&mut answer)).await.unwrap();
        assert!(answer.contains("not a control request this version knows"), "{answer}");

        // A line that never ends: refused after the frame limit, not read forever.
        let endless = UnixStream::connect(&path).await.unwrap();
        let (mut endless_read, mut endless_write) = endless.into_split();
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            while endless_write.write_all(&chunk).await.is_ok() {}
        });
        let mut rest = Vec::new();
        let _ = within("the endless line to be refused", endless_read.read_to_end(&mut rest)).await;
        within("the service to stop reading the endless line", writer).await.unwrap();

        // A watch that hangs up at once, and one that hangs up mid-stream.
        let mut raw = UnixStream::connect(&path).await.unwrap();
        raw.write_all(b"{\"op\":\"watch\"}\n").await.unwrap();
        drop(raw);
        let (_, mut watched) = ControlClient::connect(&dir).await.unwrap().unwrap().watch().await.unwrap();
        within("the watch's first status", watched.recv()).await.unwrap();
        drop(watched);
        silent
    });

    // Still the same service, answering a watch and the connection tests; Stop ends it cleanly.
    let (again, _events) = wait_for_service(&rt, &dir);
    assert_eq!(again.pid, hello.pid);
    let tests = rt.block_on(ControlClient::test_connections(&dir)).unwrap();
    assert!(tests.first().is_some_and(|t| t.target == "hub"), "{tests:?}");
    rt.block_on(ControlClient::stop(&dir)).unwrap();
    let process = node.process.as_mut().unwrap();
    let status = process.wait_timeout(Duration::from_secs(30)).expect("node run didn't exit after Stop");
    assert!(status.success(), "node run exited with {status}: {}", process.stderr());
    assert!(!socket_path(&dir).exists(), "the control socket was left behind");
}
