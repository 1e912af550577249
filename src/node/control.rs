//! The node's local control socket, `<data dir>/control.sock`: how the Configuration Manager
//! attaches to a `gatehouse node run` of the same data dir. It owns the socket file (owner-only,
//! removed on shutdown, a stale one from a killed service replaced), its newline-delimited JSON
//! protocol (one request per connection), the server and the client, and the connection tests
//! the service runs for it. It must not reach beyond this machine: it is a Unix socket, and
//! every connection is checked to come from the user that owns the socket.

use crate::node::logs::{LogFeed, LogLine};
use crate::node::store::{Store, StoreError};
use crate::node::{NodeCommand, NodeHandle, NodeStatus, Shared, ask_peer, peer};
use crate::protocol::Peer;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The socket's file name in the data dir.
pub const SOCKET_FILE: &str = "control.sock";
/// How long either side waits for a request or an answer (the watch stream waits forever).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection test may take; the tests run side by side.
pub const CONNECTION_TEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages above this are refused before they are read whole.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Events a watcher's channel holds before the reader waits for the watcher.
const WATCH_BUFFER: usize = 256;

/// Where the control socket of the data dir `dir` is.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_FILE)
}

/// What a client asks; one request per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Send [`ControlEvent::Hello`], then the status now and at every change, and every log
    /// line, until the client disconnects or the service stops.
    Watch,
    /// Stop the service (as SIGTERM would); answered with [`ControlEvent::Stopping`].
    Stop,
    /// Time the hub and every peer; answered with [`ControlEvent::Tested`].
    TestConnections,
}

/// Who answers on the socket: the first event of a watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The process that runs the service.
    pub pid: u32,
    /// Its gatehouse version.
    pub version: String,
    /// Its data dir.
    pub data_dir: String,
}

/// What the service sends back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum ControlEvent {
    /// The service introduces itself (first event of a watch).
    Hello(Hello),
    /// The service's status, now or after a change.
    Status(Box<NodeStatus>),
    /// A line the service logged.
    Log(LogLine),
    /// The service is stopping; nothing follows.
    Stopping,
    /// The results of the connection tests: the hub first, then each peer.
    Tested(Vec<ConnectionTest>),
    /// The request couldn't be served, with why, as a sentence.
    Failed { message: String },
}

/// Whether one connection works: to the hub, or to one peer over the peer channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionTest {
    /// `hub`, or the peer's node name.
    pub target: String,
    /// The hub's URL or the peer's `host:port`.
    pub address: String,
    pub ok: bool,
    /// How long the attempt took, answered or not.
    pub millis: u64,
    /// A sentence: "answered in 3 ms", or why it failed.
    pub message: String,
}

/// What can go wrong with the control socket, as sentences a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "a node service is already running for this data dir (pid {pid}); stop it first, or open the Configuration Manager, which attaches to it"
    )]
    AlreadyRunning { pid: u32 },
    #[error(
        "something listens on {} but doesn't answer as a node service does ({reason}); stop the node service of this data dir first, or delete that file if none runs",
        path.display()
    )]
    Unresponsive { path: PathBuf, reason: String },
    #[error("no node service is running for {}; start one with: gatehouse node run", dir.display())]
    NotRunning { dir: PathBuf },
    #[error("can't create the control socket {}: {reason}", path.display())]
    Bind { path: PathBuf, reason: std::io::Error },
    #[error(
        "the control socket path {} is too long for a Unix socket (at most 107 bytes); use a data dir with a shorter path (set GATEHOUSE_HOME)",
        path.display()
    )]
    PathTooLong { path: PathBuf },
    #[error(
        "another gatehouse process has kept the control socket of {} locked for too long while starting its node service; if one of this data dir hangs, stop it, then try again",
        dir.display()
    )]
    Busy { dir: PathBuf },
    #[error(
        "can't open the control socket {} ({reason}); run this as the user the node service runs as",
        path.display()
    )]
    Connect { path: PathBuf, reason: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the control socket connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the node service didn't answer on its control socket in time; it may be stuck (its log is in logs/ in the data dir)"
    )]
    Timeout,
    #[error("a control socket message was over {MAX_FRAME_BYTES} bytes and was refused")]
    FrameTooLarge,
    #[error("the node service closed its control socket without answering; it may be stopping")]
    Closed,
    #[error(
        "the control socket answered something this version doesn't understand ({0}); is the node service another gatehouse version than {version}?",
        version = crate::VERSION
    )]
    Protocol(String),
    #[error("the node service couldn't do it: {0}")]
    Failed(String),
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// What the socket serves: a running service's status, commands and log lines.
#[derive(Clone)]
pub struct ControlTarget {
    pub status: watch::Receiver<NodeStatus>,
    pub commands: mpsc::UnboundedSender<NodeCommand>,
    pub logs: LogFeed,
}

impl ControlTarget {
    /// The service behind `handle`, with the log lines of `logs`.
    pub fn new(handle: &NodeHandle, logs: LogFeed) -> Self {
        ControlTarget { status: handle.status.clone(), commands: handle.commands.clone(), logs }
    }
}

/// A bound control socket, not yet served. Binding first lets `node run` refuse a second
/// service of the same data dir before it touches anything else (such as the peer port).
pub struct ControlSocket {
    listener: UnixListener,
    file: SocketFile,
    dir: PathBuf,
    /// Who may connect: the owner of the socket file, i.e. whoever runs this service.
    owner_uid: u32,
}

/// Binds `<dir>/control.sock` and serves it until `shutdown` is cancelled; the task removes
/// the socket when it ends.
pub async fn serve(
    dir: &Path,
    target: ControlTarget,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, ControlError> {
    Ok(ControlSocket::bind(dir).await?.serve(target, shutdown))
}

impl ControlSocket {
    /// Creates the socket, owner-only. A socket nothing listens on any more (its service was
    /// killed) is replaced; one a live service answers on is left alone and refused with
    /// [`ControlError::AlreadyRunning`].
    pub async fn bind(dir: &Path) -> Result<ControlSocket, ControlError> {
        // The data dir is 0700, so the socket is never reachable by others, even between
        // bind and chmod below (no umask games: `unsafe` is forbidden here).
        Store::new(dir).ensure_dir()?;
        let path = socket_path(dir);
        // Looking at the socket, removing a stale one and binding are one step for all the
        // services of this data dir: two that both found the same stale socket would otherwise
        // each remove what the other had just bound, and both run.
        let lock = DirLock::acquire(dir).await?;
        match knock(&path).await? {
            Knock::Answered(stream) => {
                // Naming it can take a while; nobody needs to wait for that.
                drop(lock);
                let hello = introduce(&path, stream).await?;
                return Err(ControlError::AlreadyRunning { pid: hello.pid });
            }
            Knock::Refused => {
                tracing::info!(path = %path.display(), "removing a stale control socket (its service is gone)");
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(reason) => return Err(ControlError::Bind { path, reason }),
                }
            }
            Knock::Absent => {}
        }
        let listener = match UnixListener::bind(&path) {
            Ok(listener) => listener,
            // Something that doesn't take the lock bound it since we looked: name it if it answers.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                drop(lock);
                return Err(match probe(&path).await? {
                    Probe::Live(hello) => ControlError::AlreadyRunning { pid: hello.pid },
                    Probe::Stale | Probe::Absent => ControlError::Bind { path, reason: e },
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(ControlError::PathTooLong { path });
            }
            Err(reason) => return Err(ControlError::Bind { path, reason }),
        };
        let bound =
            std::fs::metadata(&path).map_err(|reason| ControlError::Bind { path: path.clone(), reason })?;
        let file = SocketFile { path: path.clone(), dev: bound.dev(), ino: bound.ino() };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|reason| ControlError::Bind { path, reason })?;
        drop(lock);
        Ok(ControlSocket { listener, file, dir: dir.to_owned(), owner_uid: bound.uid() })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Serves the socket on the current runtime until `shutdown` is cancelled (a Stop request
    /// cancels it too); the socket file is removed when the task ends.
    pub fn serve(self, target: ControlTarget, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(accept(self, target, shutdown))
    }
}

/// The socket file this process bound; removed when dropped, unless another file has taken
/// its place (so a service never removes another's socket).
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The data dir, locked (`flock`) by the process that is binding or replacing its control
/// socket; unlocked when dropped, and by the kernel when the process dies.
struct DirLock {
    _dir: std::fs::File,
}

impl DirLock {
    /// How long another service may hold the lock: a look, a removal and a bind, unless
    /// connecting to a stuck service takes its full [`ANSWER_TIMEOUT`].
    const PATIENCE: Duration = Duration::from_secs(2 * ANSWER_TIMEOUT.as_secs());

    async fn acquire(dir: &Path) -> Result<DirLock, ControlError> {
        let path = socket_path(dir);
        let file =
            std::fs::File::open(dir).map_err(|reason| ControlError::Bind { path: path.clone(), reason })?;
        let deadline = Instant::now() + Self::PATIENCE;
        loop {
            let locked = file.try_lock();
            match locked {
                Ok(()) => return Ok(DirLock { _dir: file }),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(ControlError::Busy { dir: dir.to_owned() });
                }
                Err(std::fs::TryLockError::Error(reason)) => return Err(ControlError::Bind { path, reason }),
            }
        }
    }
}

/// What is at the socket path.
enum Probe {
    Absent,
    /// A file nothing listens on.
    Stale,
    Live(Hello),
}

/// What connecting to the socket path found.
enum Knock {
    Absent,
    /// A file nothing listens on.
    Refused,
    Answered(UnixStream),
}

async fn knock(path: &Path) -> Result<Knock, ControlError> {
    match tokio::time::timeout(ANSWER_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Ok(stream)) => Ok(Knock::Answered(stream)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(Knock::Absent),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(Knock::Refused),
        Ok(Err(reason)) => Err(connect_error(path, reason)),
        Err(_) => Err(ControlError::Unresponsive {
            path: path.to_owned(),
            reason: "connecting took too long".to_owned(),
        }),
    }
}

/// Who listens on `stream`: the [`Hello`] of a watch, or why it isn't a node service.
async fn introduce(path: &Path, stream: UnixStream) -> Result<Hello, ControlError> {
    let unresponsive =
        |e: ControlError| ControlError::Unresponsive { path: path.to_owned(), reason: e.to_string() };
    let (mut read, _write) = request(stream, ControlRequest::Watch).await.map_err(unresponsive)?;
    match timed(read_event(&mut read)).await.map_err(unresponsive)? {
        ControlEvent::Hello(hello) => Ok(hello),
        other => Err(unresponsive(ControlError::Protocol(format!("it opened with {other:?}")))),
    }
}

async fn probe(path: &Path) -> Result<Probe, ControlError> {
    Ok(match knock(path).await? {
        Knock::Absent => Probe::Absent,
        Knock::Refused => Probe::Stale,
        Knock::Answered(stream) => Probe::Live(introduce(path, stream).await?),
    })
}

/// Why connecting to the socket at `path` failed, as the sentence that fits.
fn connect_error(path: &Path, reason: std::io::Error) -> ControlError {
    // The only invalid input a path from the data dir can be: too long for a Unix socket.
    if reason.kind() == std::io::ErrorKind::InvalidInput {
        return ControlError::PathTooLong { path: path.to_owned() };
    }
    ControlError::Connect { path: path.to_owned(), reason }
}

async fn accept(socket: ControlSocket, target: ControlTarget, shutdown: CancellationToken) {
    let ControlSocket { listener, file, dir, owner_uid } = socket;
    let hello = Hello {
        pid: std::process::id(),
        version: crate::VERSION.to_owned(),
        data_dir: dir.display().to_string(),
    };
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("control socket: accepting failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The dir is owner-only already; this also keeps out root-owned helpers and anything
        // that got hold of a descriptor.
        match stream.peer_cred() {
            Ok(peer) if peer.uid() == owner_uid => {}
            Ok(peer) => {
                tracing::info!(uid = peer.uid(), "control socket: refused a connection from another user");
                continue;
            }
            Err(e) => {
                tracing::info!("control socket: refused a connection whose user can't be told: {e}");
                continue;
            }
        }
        connections.spawn(answer(stream, hello.clone(), target.clone(), shutdown.clone()));
    }
    drop(listener);
    drop(file);
    // Watchers see the shutdown themselves and say Stopping; give them a moment to.
    connections.close();
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, connections.wait()).await;
}

/// One connection: read the request, serve it. Failures are the client's business; they are
/// logged at debug only, since a watcher of the log would otherwise see its own errors.
async fn answer(stream: UnixStream, hello: Hello, target: ControlTarget, shutdown: CancellationToken) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let frame = tokio::select! {
        // A client that hasn't asked anything yet doesn't hold up a stopping service.
        () = shutdown.cancelled() => return,
        frame = timed(read_frame(&mut read)) => frame,
    };
    let request = match frame {
        Ok(Some(frame)) => serde_json::from_slice::<ControlRequest>(&frame),
        Ok(None) => return,
        Err(e) => {
            tracing::debug!("control socket: no request: {e}");
            return;
        }
    };
    let result = match request {
        Err(e) => {
            let message = format!("that is not a control request this version knows ({e})");
            write_event(&mut write, &ControlEvent::Failed { message }).await
        }
        Ok(ControlRequest::Watch) => watch(read, write, hello, target, &shutdown).await,
        Ok(ControlRequest::Stop) => {
            tracing::info!("stop requested over the control socket");
            let answered = write_event(&mut write, &ControlEvent::Stopping).await;
            shutdown.cancel();
            answered
        }
        Ok(ControlRequest::TestConnections) => {
            let answer = test_through_service(&target).await;
            write_event(&mut write, &answer).await
        }
    };
    if let Err(e) = result {
        tracing::debug!("control socket: {e}");
    }
}

async fn test_through_service(target: &ControlTarget) -> ControlEvent {
    let (tx, rx) = oneshot::channel();
    if target.commands.send(NodeCommand::TestConnections(tx)).is_err() {
        return ControlEvent::Failed { message: "the node service is stopping".to_owned() };
    }
    match tokio::time::timeout(CONNECTION_TEST_TIMEOUT + ANSWER_TIMEOUT, rx).await {
        Ok(Ok(tests)) => ControlEvent::Tested(tests),
        Ok(Err(_)) => {
            ControlEvent::Failed { message: "the node service stopped before the tests finished".to_owned() }
        }
        Err(_) => ControlEvent::Failed { message: "the connection tests didn't finish in time".to_owned() },
    }
}

async fn watch(
    mut read: BufReader<OwnedReadHalf>,
    mut write: OwnedWriteHalf,
    hello: Hello,
    target: ControlTarget,
    shutdown: &CancellationToken,
) -> Result<(), ControlError> {
    let ControlTarget { mut status, logs, .. } = target;
    let mut lines = logs.subscribe();
    let mut lines_open = true;
    write_event(&mut write, &ControlEvent::Hello(hello)).await?;
    let now = status.borrow_and_update().clone();
    write_event(&mut write, &ControlEvent::Status(Box::new(now))).await?;
    // Clients say nothing after their request; a read only ends when they hang up.
    let mut ignored = [0_u8; 64];
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => ControlEvent::Stopping,
            changed = status.changed() => match changed {
                Ok(()) => ControlEvent::Status(Box::new(status.borrow_and_update().clone())),
                Err(_) => ControlEvent::Stopping,
            },
            line = lines.recv(), if lines_open => match line {
                Ok(line) => ControlEvent::Log(line),
                // A slow watcher loses old lines rather than slowing the service.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    lines_open = false;
                    continue;
                }
            },
            read = read.read(&mut ignored) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
        };
        let last = event == ControlEvent::Stopping;
        write_event(&mut write, &event).await?;
        if last {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Connection tests (run inside the service, on `NodeCommand::TestConnections`)
// ---------------------------------------------------------------------------------------

/// Times the hub and every peer, side by side, each within [`CONNECTION_TEST_TIMEOUT`];
/// the hub first, then the peers in the order given.
pub(crate) async fn run_connection_tests(shared: Arc<Shared>, peers: Vec<Peer>) -> Vec<ConnectionTest> {
    let mut tasks = Vec::with_capacity(peers.len() + 1);
    let hub = Arc::clone(&shared);
    tasks.push(tokio::spawn(async move { test_hub(&hub).await }));
    for peer in peers {
        let shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move { test_peer(&shared, &peer).await }));
    }
    let mut tests = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(test) = task.await {
            tests.push(test);
        }
    }
    let failed: Vec<&str> = tests.iter().filter(|t| !t.ok).map(|t| t.target.as_str()).collect();
    if failed.is_empty() {
        tracing::info!("connection tests: all {} answered", tests.len());
    } else {
        tracing::info!(
            "connection tests: {} of {} answered; no answer from {}",
            tests.len() - failed.len(),
            tests.len(),
            failed.join(", ")
        );
    }
    tests
}

async fn test_hub(shared: &Shared) -> ConnectionTest {
    let address = shared.settings.hub_url.trim_end_matches('/').to_owned();
    let started = Instant::now();
    let outcome = tokio::time::timeout(CONNECTION_TEST_TIMEOUT, shared.client.healthy()).await;
    let millis = elapsed_millis(started);
    let (ok, message) = match outcome {
        Ok(Ok(true)) => (true, format!("answered in {millis} ms")),
        Ok(Ok(false)) => (false, "it answered, but says it isn't healthy; see the hub's log".to_owned()),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, no_answer_in_time()),
    };
    ConnectionTest { target: "hub".to_owned(), address, ok, millis, message }
}

async fn test_peer(shared: &Shared, peer: &Peer) -> ConnectionTest {
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        CONNECTION_TEST_TIMEOUT,
        ask_peer(shared, &peer.peer_address, &peer::PeerRequest::Ping),
    )
    .await;
    let millis = elapsed_millis(started);
    let (ok, message) = match outcome {
        Ok(Ok(peer::PeerResponse::Pong)) => (true, format!("answered in {millis} ms")),
        Ok(Ok(other)) => {
            (false, format!("it answered a ping with something else ({other:?}); is it another version?"))
        }
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, no_answer_in_time()),
    };
    ConnectionTest { target: peer.name.clone(), address: peer.peer_address.clone(), ok, millis, message }
}

fn no_answer_in_time() -> String {
    format!("no answer within {} s", CONNECTION_TEST_TIMEOUT.as_secs())
}

fn elapsed_millis(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/// A connection to the control socket of a running node service; one request each.
pub struct ControlClient {
    stream: UnixStream,
}

impl ControlClient {
    /// Connects to the service of the data dir `dir`; `None` when none runs (no socket, or a
    /// stale one).
    pub async fn connect(dir: &Path) -> Result<Option<ControlClient>, ControlError> {
        let path = socket_path(dir);
        match tokio::time::timeout(ANSWER_TIMEOUT, UnixStream::connect(&path)).await {
            Ok(Ok(stream)) => Ok(Some(ControlClient { stream })),
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Ok(Err(reason)) => Err(connect_error(&path, reason)),
            Err(_) => Err(ControlError::Timeout),
        }
    }

    /// Watches the service: who it is, then its status (now and at every change) and its log
    /// lines. The channel ends, after [`ControlEvent::Stopping`] if the service said so, when
    /// the service stops or the connection breaks; dropping it hangs up.
    pub async fn watch(self) -> Result<(Hello, mpsc::Receiver<ControlEvent>), ControlError> {
        let (mut read, write) = request(self.stream, ControlRequest::Watch).await?;
        let hello = match timed(read_event(&mut read)).await? {
            ControlEvent::Hello(hello) => hello,
            other => return Err(unexpected(&other)),
        };
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            // Kept open: dropping the write half would tell the service we hung up.
            let _write = write;
            loop {
                let event = tokio::select! {
                    () = tx.closed() => return,
                    event = read_event(&mut read) => event,
                };
                match event {
                    Ok(event) => {
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    Err(ControlError::Closed) => return,
                    Err(e) => {
                        tracing::debug!("control socket: the watch ended: {e}");
                        return;
                    }
                }
            }
        });
        Ok((hello, rx))
    }

    /// Asks the service of `dir` to stop; returns once it said it is stopping.
    pub async fn stop(dir: &Path) -> Result<(), ControlError> {
        let client = Self::running(dir).await?;
        let (mut read, _write) = request(client.stream, ControlRequest::Stop).await?;
        match timed(read_event(&mut read)).await? {
            ControlEvent::Stopping => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Has the service of `dir` time its connections to the hub and to every peer.
    pub async fn test_connections(dir: &Path) -> Result<Vec<ConnectionTest>, ControlError> {
        let client = Self::running(dir).await?;
        let (mut read, _write) = request(client.stream, ControlRequest::TestConnections).await?;
        // The tests themselves may take CONNECTION_TEST_TIMEOUT.
        let answer =
            tokio::time::timeout(CONNECTION_TEST_TIMEOUT + 2 * ANSWER_TIMEOUT, read_event(&mut read))
                .await
                .map_err(|_| ControlError::Timeout)??;
        match answer {
            ControlEvent::Tested(tests) => Ok(tests),
            other => Err(unexpected(&other)),
        }
    }

    async fn running(dir: &Path) -> Result<ControlClient, ControlError> {
        Self::connect(dir).await?.ok_or_else(|| ControlError::NotRunning { dir: dir.to_owned() })
    }
}

fn unexpected(event: &ControlEvent) -> ControlError {
    match event {
        ControlEvent::Failed { message } => ControlError::Failed(message.clone()),
        ControlEvent::Stopping => ControlError::Closed,
        other => ControlError::Protocol(format!("unexpected {other:?}")),
    }
}

// ---------------------------------------------------------------------------------------
// Framing: one JSON value per line, at most MAX_FRAME_BYTES
// ---------------------------------------------------------------------------------------

/// Sends `request` and splits the stream; keep the write half until the answer is read.
async fn request(
    stream: UnixStream,
    request: ControlRequest,
) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf), ControlError> {
    let (read, mut write) = stream.into_split();
    write_frame(&mut write, &request).await?;
    Ok((BufReader::new(read), write))
}

async fn timed<T>(work: impl Future<Output = Result<T, ControlError>>) -> Result<T, ControlError> {
    tokio::time::timeout(ANSWER_TIMEOUT, work).await.map_err(|_| ControlError::Timeout)?
}

async fn write_event<W: AsyncWrite + Unpin>(write: &mut W, event: &ControlEvent) -> Result<(), ControlError> {
    write_frame(write, event).await
}

async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    write: &mut W,
    value: &T,
) -> Result<(), ControlError> {
    let mut line = serde_json::to_vec(value).map_err(|e| ControlError::Protocol(e.to_string()))?;
    if line.len() > MAX_FRAME_BYTES {
        return Err(ControlError::FrameTooLarge);
    }
    line.push(b'\n');
    tokio::time::timeout(ANSWER_TIMEOUT, write.write_all(&line))
        .await
        .map_err(|_| ControlError::Timeout)??;
    Ok(())
}

/// The next event; [`ControlError::Closed`] at the end of the stream.
async fn read_event<R: AsyncBufRead + Unpin>(read: &mut R) -> Result<ControlEvent, ControlError> {
    let frame = read_frame(read).await?.ok_or(ControlError::Closed)?;
    serde_json::from_slice(&frame).map_err(|e| ControlError::Protocol(e.to_string()))
}

/// One line without its newline; `None` at the end of the stream. A line over
/// [`MAX_FRAME_BYTES`] is refused after reading at most one byte more.
async fn read_frame<R: AsyncBufRead + Unpin>(read: &mut R) -> Result<Option<Vec<u8>>, ControlError> {
    let mut frame = Vec::new();
    let limit = u64::try_from(MAX_FRAME_BYTES).unwrap_or(u64::MAX).saturating_add(1);
    read.take(limit).read_until(b'\n', &mut frame).await?;
    if frame.last() == Some(&b'\n') {
        frame.pop();
    } else if frame.len() > MAX_FRAME_BYTES {
        return Err(ControlError::FrameTooLarge);
    } else if frame.is_empty() {
        return Ok(None);
    }
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_and_one_at_the_limit_is_read() {
        let mut at_limit = vec![b'x'; MAX_FRAME_BYTES];
        at_limit.push(b'\n');
        let frame = read_frame(&mut at_limit.as_slice()).await.unwrap().unwrap();
        assert_eq!(frame.len(), MAX_FRAME_BYTES);

        let over = vec![b'x'; MAX_FRAME_BYTES + 10];
        assert!(matches!(read_frame(&mut over.as_slice()).await, Err(ControlError::FrameTooLarge)));
        assert!(read_frame(&mut &b""[..]).await.unwrap().is_none());
    }

    #[test]
    fn the_wire_format_is_tagged_json_lines() {
        assert_eq!(
            serde_json::to_string(&ControlRequest::TestConnections).unwrap(),
            r#"{"op":"test_connections"}"#
        );
        let event = ControlEvent::Tested(vec![ConnectionTest {
            target: "hub".to_owned(),
            address: "http://127.0.0.1:7070".to_owned(),
            ok: true,
            millis: 3,
            message: "answered in 3 ms".to_owned(),
        }]);
        let text = serde_json::to_string(&event).unwrap();
        assert!(text.starts_with(r#"{"event":"tested","data":[{"target":"hub""#), "{text}");
        assert_eq!(serde_json::from_str::<ControlEvent>(&text).unwrap(), event);
        assert_eq!(serde_json::to_string(&ControlEvent::Stopping).unwrap(), r#"{"event":"stopping"}"#);
    }

    /// A service stand-in: a status channel, a command channel answered by a task, a feed.
    fn target() -> (ControlTarget, watch::Sender<NodeStatus>, LogFeed) {
        let (status_tx, status) = watch::channel(NodeStatus::default());
        let (commands, mut commands_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(command) = commands_rx.recv().await {
                if let NodeCommand::TestConnections(reply) = command {
                    let _ = reply.send(Vec::new());
                }
            }
        });
        let logs = LogFeed::new(16);
        (ControlTarget { status, commands, logs: logs.clone() }, status_tx, logs)
    }

    #[tokio::test]
    async fn an_unknown_request_is_answered_with_a_sentence_and_a_second_service_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (target, _status, _logs) = target();
        let shutdown = CancellationToken::new();
        let task = serve(dir.path(), target.clone(), shutdown.clone()).await.unwrap();

        let mut stream = UnixStream::connect(socket_path(dir.path())).await.unwrap();
        stream.write_all(b"{\"op\":\"dance\"}\n").await.unwrap();
        let mut read = BufReader::new(stream);
        match read_event(&mut read).await.unwrap() {
            ControlEvent::Failed { message } => {
                assert!(message.contains("not a control request"), "{message}");
            }
            other => panic!("{other:?}"),
        }

        let second = serve(dir.path(), target, CancellationToken::new()).await;
        match second {
            Err(ControlError::AlreadyRunning { pid }) => assert_eq!(pid, std::process::id()),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a second server bound the same socket"),
        }
        assert!(socket_path(dir.path()).exists(), "the refused second server removed the first one's socket");

        shutdown.cancel();
        task.await.unwrap();
        assert!(!socket_path(dir.path()).exists());
    }

    #[tokio::test]
    async fn a_watcher_gets_status_changes_and_log_lines_then_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let (target, status, logs) = target();
        let shutdown = CancellationToken::new();
        let task = serve(dir.path(), target, shutdown.clone()).await.unwrap();
        let (hello, mut events) =
            ControlClient::connect(dir.path()).await.unwrap().unwrap().watch().await.unwrap();
        assert_eq!(hello.pid, std::process::id());
        assert!(matches!(events.recv().await, Some(ControlEvent::Status(s)) if s.node_name.is_empty()));

        status.send_modify(|s| s.node_name = "n1".to_owned());
        assert!(matches!(events.recv().await, Some(ControlEvent::Status(s)) if s.node_name == "n1"));
        let subscriber =
            tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), logs.layer());
        tracing::subscriber::with_default(subscriber, || tracing::warn!("disk nearly full"));
        assert!(matches!(events.recv().await, Some(ControlEvent::Log(l)) if l.message == "disk nearly full"));

        assert!(ControlClient::test_connections(dir.path()).await.unwrap().is_empty());
        ControlClient::stop(dir.path()).await.unwrap();
        assert!(shutdown.is_cancelled());
        assert_eq!(events.recv().await, Some(ControlEvent::Stopping));
        assert_eq!(events.recv().await, None);
        task.await.unwrap();
        assert!(matches!(ControlClient::stop(dir.path()).await, Err(ControlError::NotRunning { .. })));
    }

    #[test]
    fn services_racing_for_a_stale_socket_never_both_bind() {
        // Eight services at once, each round after a kill -9 left the socket behind; the one
        // that binds serves, so the others can name it. Without the data dir lock some rounds
        // had two services, each believing the socket was its own.
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(8).enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (target, _status, _logs) = target();
            for round in 0..200 {
                drop(std::os::unix::net::UnixListener::bind(socket_path(dir.path())).unwrap());
                let shutdown = CancellationToken::new();
                let contenders: Vec<_> = (0..8)
                    .map(|_| {
                        let (dir, target, shutdown) =
                            (dir.path().to_owned(), target.clone(), shutdown.clone());
                        tokio::spawn(async move {
                            ControlSocket::bind(&dir).await.map(|socket| socket.serve(target, shutdown))
                        })
                    })
                    .collect();
                let mut serving = Vec::new();
                for contender in contenders {
                    match contender.await.unwrap() {
                        Ok(task) => serving.push(task),
                        Err(ControlError::AlreadyRunning { pid }) => assert_eq!(pid, std::process::id()),
                        Err(e) => panic!("round {round}: {e}"),
                    }
                }
                assert_eq!(
                    serving.len(),
                    1,
                    "round {round}: {} services bound the same socket",
                    serving.len()
                );
                shutdown.cancel();
                for task in serving {
                    task.await.unwrap();
                }
                assert!(!socket_path(dir.path()).exists(), "round {round}: the socket was left behind");
            }
        });
    }

    #[tokio::test]
    async fn a_data_dir_path_too_long_for_a_socket_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        let Err(error) = ControlSocket::bind(&deep).await else {
            panic!("bound a socket at a path longer than a Unix socket allows");
        };
        let text = error.to_string();
        assert!(text.contains("too long for a Unix socket") && text.contains("GATEHOUSE_HOME"), "{text}");
        let error = ControlClient::stop(&deep).await.unwrap_err().to_string();
        assert!(error.contains("too long for a Unix socket"), "{error}");
    }
}
