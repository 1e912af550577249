//! The control socket's server: binds `<data dir>/control.sock` (replacing a stale one under
//! an flock on the data dir, refusing while a live service answers there), accepts only the
//! connections [`access`](super::access) lets in (the socket owner's, root's, and with a
//! control group its members'), and serves each request: a watch (hello, status, log lines),
//! a stop, the connection tests through the running service, the settings, an update, or the
//! gateway's recent jobs (fetched from the hub with the service's own node token).

use super::access::{self, ControlGroup, Peer};
use super::wire::{
    ANSWER_TIMEOUT, CONNECTION_TEST_TIMEOUT, ControlError, ControlEvent, ControlRequest, Hello,
    MAX_FRAME_BYTES, MAX_JOBS, connect_error, read_event, read_frame, request, socket_path, timed,
    write_event,
};
use crate::node::logs::LogFeed;
use crate::node::store::Store;
use crate::node::{NodeCommand, NodeHandle, NodeStatus};
use crate::protocol::JobView;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    /// Who may connect: the owner of the socket file, i.e. whoever runs this service…
    owner_uid: u32,
    /// …and the members of this group, when the socket is shared with one.
    group: Option<u32>,
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
        Self::bind_shared(dir, None).await
    }

    /// [`ControlSocket::bind`], and with `group` the socket (0660) and the way to it (the data
    /// dir 0710) are that group's, whose members may then connect; the data dir's files stay
    /// owner-only.
    pub async fn bind_shared(
        dir: &Path,
        group: Option<&ControlGroup>,
    ) -> Result<ControlSocket, ControlError> {
        // The data dir is 0700 (0710 for a group, which can't write the socket before its
        // chmod below), so the socket is never usable by others between bind and chmod (no
        // umask games: `unsafe` is forbidden here).
        Store::new(dir).ensure_dir()?;
        let dir_mode = if group.is_some() { crate::machine::SOCKET_GROUP_DIR_MODE } else { 0o700 };
        share(dir, group, dir_mode)?;
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
        share(&path, group, if group.is_some() { 0o660 } else { 0o600 })?;
        drop(lock);
        if let Some(group) = group {
            tracing::info!(path = %path.display(), group = %group.name, "the control socket is shared with a group");
        }
        Ok(ControlSocket {
            listener,
            file,
            dir: dir.to_owned(),
            owner_uid: bound.uid(),
            group: group.map(|g| g.gid),
        })
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

/// Gives `path` to `group` (when it isn't already: the unit's service runs as that group,
/// and its system call filter has no chown) and sets `mode`.
fn share(path: &Path, group: Option<&ControlGroup>, mode: u32) -> Result<(), ControlError> {
    if let Some(group) = group {
        let meta =
            std::fs::metadata(path).map_err(|reason| ControlError::Bind { path: path.to_owned(), reason })?;
        if meta.gid() != group.gid {
            std::os::unix::fs::chown(path, None, Some(group.gid)).map_err(|reason| ControlError::Share {
                path: path.to_owned(),
                group: group.name.clone(),
                reason,
            })?;
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|reason| ControlError::Bind { path: path.to_owned(), reason })
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

async fn accept(socket: ControlSocket, target: ControlTarget, shutdown: CancellationToken) {
    let ControlSocket { listener, file, dir, owner_uid, group } = socket;
    let hello = Hello {
        pid: std::process::id(),
        version: crate::version().to_owned(),
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
        // The file's mode keeps others out already; this also keeps out anything that got hold
        // of a descriptor.
        match stream.peer_cred() {
            Ok(cred) if allowed(cred.uid(), cred.gid(), cred.pid(), owner_uid, group) => {}
            Ok(cred) => {
                tracing::info!(uid = cred.uid(), "control socket: refused a connection from another user");
                continue;
            }
            Err(e) => {
                tracing::info!("control socket: refused a connection whose user can't be told: {e}");
                continue;
            }
        }
        connections.spawn(answer(stream, hello.clone(), target.clone(), dir.clone(), shutdown.clone()));
    }
    drop(listener);
    drop(file);
    // Watchers see the shutdown themselves and say Stopping; give them a moment to.
    connections.close();
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, connections.wait()).await;
}

/// Whether the peer `SO_PEERCRED` named may use the socket; its supplementary groups are read
/// only when they decide.
fn allowed(uid: u32, gid: u32, pid: Option<i32>, owner_uid: u32, group: Option<u32>) -> bool {
    let groups = if access::decided_without_groups(uid, gid, owner_uid, group) {
        Vec::new()
    } else {
        pid.and_then(|pid| u32::try_from(pid).ok())
            .map(|pid| access::supplementary_groups(pid, uid))
            .unwrap_or_default()
    };
    access::may_connect(&Peer { uid, gid, groups }, owner_uid, group)
}

/// One connection: read the request, serve it. Failures are the client's business; they are
/// logged at debug only, since a watcher of the log would otherwise see its own errors.
async fn answer(
    stream: UnixStream,
    hello: Hello,
    target: ControlTarget,
    dir: PathBuf,
    shutdown: CancellationToken,
) {
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
        Ok(ControlRequest::Settings) => write_event(&mut write, &settings_of(&dir)).await,
        Ok(ControlRequest::Update) => {
            let answer = update_through_service(&target).await;
            write_event(&mut write, &answer).await
        }
        Ok(ControlRequest::Jobs { limit }) => write_event(&mut write, &jobs_of(&dir, limit).await).await,
    };
    if let Err(e) = result {
        tracing::debug!("control socket: {e}");
    }
}

/// The settings of the data dir `dir`, a proxy's password left out.
fn settings_of(dir: &Path) -> ControlEvent {
    match Store::new(dir).settings() {
        Ok(mut settings) => {
            settings.proxy = settings.proxy.as_deref().map(without_password);
            ControlEvent::Settings(Box::new(settings))
        }
        Err(e) => ControlEvent::Failed { message: e.to_string() },
    }
}

/// The gateway's newest `limit` jobs, fetched from the hub with the node token of the data
/// dir `dir` (this service's own, which the asking window may not be able to read), cut to
/// what one message holds.
async fn jobs_of(dir: &Path, limit: u32) -> ControlEvent {
    let store = Store::new(dir);
    let fetched = tokio::time::timeout(ANSWER_TIMEOUT, crate::node::recent_jobs(&store, limit.min(MAX_JOBS)));
    match fetched.await {
        Ok(Ok(jobs)) => fitting(jobs, MAX_FRAME_BYTES),
        Ok(Err(e)) => ControlEvent::Failed { message: e.to_string() },
        Err(_) => ControlEvent::Failed {
            message: format!(
                "the hub didn't list the gateway's jobs within {} s; check the node's connection to it (Diagnostics)",
                ANSWER_TIMEOUT.as_secs()
            ),
        },
    }
}

/// `jobs` (newest first) as a [`ControlEvent::Jobs`] of at most `max_bytes`: each run without
/// its part and checkpoint (a copy's file list and resume point, which the Jobs tab doesn't
/// show), and the oldest jobs left off while the rest wouldn't fit.
fn fitting(mut jobs: Vec<JobView>, max_bytes: usize) -> ControlEvent {
    for run in jobs.iter_mut().flat_map(|job| job.runs.iter_mut()) {
        run.part = None;
        run.checkpoint = None;
    }
    // The event's own bytes around the list, `{"event":"jobs","data":[]}`, then each job and
    // the comma before all but the first.
    let mut size = serde_json::to_vec(&ControlEvent::Jobs(Vec::new())).map_or(0, |v| v.len());
    let mut kept = 0;
    for job in &jobs {
        size += serde_json::to_vec(job).map_or(usize::MAX / 2, |v| v.len()) + usize::from(kept > 0);
        if size > max_bytes {
            break;
        }
        kept += 1;
    }
    if kept == 0 && !jobs.is_empty() {
        return ControlEvent::Failed {
            message: format!(
                "the gateway's newest job ({}) has too many runs to send over the control socket; look at it with: gatehouse job show {} --hub URL",
                jobs[0].name, jobs[0].id
            ),
        };
    }
    jobs.truncate(kept);
    ControlEvent::Jobs(jobs)
}

/// A proxy URL with the password of its `user:password@` (if any) replaced by `***`.
fn without_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    let Some((user, _)) = rest[..at].split_once(':') else { return url.to_owned() };
    let sep = if scheme.is_empty() { "" } else { "://" };
    format!("{scheme}{sep}{user}:***{}", &rest[at..])
}

async fn update_through_service(target: &ControlTarget) -> ControlEvent {
    let (tx, rx) = oneshot::channel();
    if target.commands.send(NodeCommand::Update(tx)).is_err() {
        return ControlEvent::Failed { message: "the node service is stopping".to_owned() };
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(Ok((from, to)))) => ControlEvent::Updating { from, to },
        Ok(Ok(Err(message))) => ControlEvent::Failed { message },
        Ok(Err(_)) => ControlEvent::Failed { message: "the node service is stopping".to_owned() },
        Err(_) => ControlEvent::Failed {
            message: "the node service didn't answer the update request in time".to_owned(),
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::control::ControlClient;
    use tokio::io::AsyncWriteExt as _;

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

    fn job(id: &str, files: usize) -> JobView {
        let listed: Vec<_> = (0..files)
            .map(|i| serde_json::json!({ "path": format!("f{i}.csv"), "size": 1, "modified_ms": 0 }))
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": id, "gateway_id": "g1", "name": format!("nightly-{id}"), "state": "running",
            "created_ms": 0,
            "runs": [{
                "id": "r1", "job_id": id, "activity_index": 0, "partition": 1,
                "activity": {"kind": "sleep", "millis": 1}, "state": "running", "attempt": 1,
                "node_id": "n1", "node_name": "n1", "progress": null, "result": null, "error": null,
                "queued_ms": 0, "finished_ms": null,
                "part": {"kind": "files", "files": listed}, "checkpoint": {"done": 3},
            }],
        }))
        .unwrap()
    }

    #[test]
    fn the_jobs_answer_leaves_out_parts_and_checkpoints_then_the_oldest_jobs_that_dont_fit() {
        let jobs = vec![job("j3", 500), job("j2", 500), job("j1", 500)];
        let ControlEvent::Jobs(all) = fitting(jobs.clone(), MAX_FRAME_BYTES) else { panic!("not jobs") };
        assert_eq!(all.len(), 3);
        assert!(all[0].runs[0].part.is_none() && all[0].runs[0].checkpoint.is_none());
        assert_eq!(all[0].runs[0].node_name.as_deref(), Some("n1"));

        // Room for two jobs as sent: the newest two are kept, and the message fits.
        let one = serde_json::to_vec(&all[0]).unwrap().len();
        let limit = serde_json::to_vec(&ControlEvent::Jobs(all[..2].to_vec())).unwrap().len();
        assert!(limit < 3 * one);
        match fitting(jobs.clone(), limit) {
            ControlEvent::Jobs(kept) => {
                assert_eq!(kept.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j3", "j2"]);
                assert!(serde_json::to_vec(&ControlEvent::Jobs(kept)).unwrap().len() <= limit);
            }
            other => panic!("{other:?}"),
        }
        match fitting(jobs, one / 2) {
            ControlEvent::Failed { message } => {
                assert!(message.contains("gatehouse job show j3"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fitting(Vec::new(), 10), ControlEvent::Jobs(Vec::new()));
    }

    #[tokio::test]
    async fn jobs_asked_of_a_service_without_a_node_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (target, _status, _logs) = target();
        let shutdown = CancellationToken::new();
        let task = serve(dir.path(), target, shutdown.clone()).await.unwrap();
        match ControlClient::jobs(dir.path(), 20).await {
            Err(ControlError::Failed(message)) => assert!(message.contains("not registered"), "{message}"),
            other => panic!("{other:?}"),
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn a_proxy_password_is_left_out_of_the_settings_answer() {
        assert_eq!(without_password("http://ann:s3cret@proxy:3128"), "http://ann:***@proxy:3128");
        assert_eq!(without_password("http://ann@proxy:3128/x@y"), "http://ann@proxy:3128/x@y");
        assert_eq!(without_password("http://proxy.corp:3128"), "http://proxy.corp:3128");
        assert_eq!(without_password("ann:pw@proxy:1"), "ann:***@proxy:1");
    }

    #[tokio::test]
    async fn a_shared_socket_and_its_dir_are_the_groups_and_the_files_stay_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let mine = std::fs::metadata("/proc/self").unwrap().gid();
        let group = ControlGroup { name: "mine".to_owned(), gid: mine };
        std::fs::write(dir.path().join("secret.key"), b"k").unwrap();
        std::fs::set_permissions(dir.path().join("secret.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let (target, _status, _logs) = target();
        let shutdown = CancellationToken::new();
        let socket = ControlSocket::bind_shared(dir.path(), Some(&group)).await.unwrap();
        let task = socket.serve(target, shutdown.clone());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(dir.path()), 0o710);
        assert_eq!(mode(&socket_path(dir.path())), 0o660);
        assert_eq!(std::fs::metadata(socket_path(dir.path())).unwrap().gid(), mine);
        assert_eq!(mode(&dir.path().join("secret.key")), 0o600);
        // A later save (which makes the dir owner-only) leaves the way to the socket open.
        Store::new(dir.path()).ensure_dir().unwrap();
        assert_eq!(mode(dir.path()), 0o710);
        shutdown.cancel();
        task.await.unwrap();
        // Without a group, the next service closes it again.
        let socket = ControlSocket::bind(dir.path()).await.unwrap();
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(socket.path()), 0o600);
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
