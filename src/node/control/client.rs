//! The control socket's client: connects to the service of a data dir (none running is
//! `None`, not an error), watches it, asks it to stop, has it run the connection tests or
//! asks for its settings or the gateway's recent jobs; and [`find_service`], which picks the
//! service a window or `node status|start|stop|restart` uses: its own data dir's, else the
//! system service's.

use super::wire::{
    ANSWER_TIMEOUT, CONNECTION_TEST_TIMEOUT, ConnectionTest, ControlError, ControlEvent, ControlRequest,
    Hello, WATCH_BUFFER, connect_error, read_event, request, socket_path, timed,
};
use crate::node::store::NodeSettings;
use crate::protocol::JobView;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

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

    /// The settings of the service of `dir` (a proxy's password left out), for a process that
    /// can't read its data dir (a window of an administrator attached to the system service).
    pub async fn settings(dir: &Path) -> Result<NodeSettings, ControlError> {
        let client = Self::running(dir).await?;
        let (mut read, _write) = request(client.stream, ControlRequest::Settings).await?;
        match timed(read_event(&mut read)).await? {
            ControlEvent::Settings(settings) => Ok(*settings),
            other => Err(unexpected(&other)),
        }
    }

    /// Has the service of `dir` update to the release the hub offers; answers (from, to)
    /// once the update is under way.
    pub async fn update(dir: &Path) -> Result<(String, String), ControlError> {
        let client = Self::running(dir).await?;
        let (mut read, _write) = request(client.stream, ControlRequest::Update).await?;
        match timed(read_event(&mut read)).await? {
            ControlEvent::Updating { from, to } => Ok((from, to)),
            other => Err(unexpected(&other)),
        }
    }

    /// The gateway's newest `limit` jobs (at most [`MAX_JOBS`](super::MAX_JOBS)) with their
    /// runs, which the service of `dir` fetches from the hub with its own node token: for a
    /// window that can't read that token (attached to the system service) or needn't.
    pub async fn jobs(dir: &Path, limit: u32) -> Result<Vec<JobView>, ControlError> {
        let client = Self::running(dir).await?;
        let (mut read, _write) = request(client.stream, ControlRequest::Jobs { limit }).await?;
        // The service may take ANSWER_TIMEOUT to hear from the hub, and as long to send it.
        let answer = tokio::time::timeout(2 * ANSWER_TIMEOUT, read_event(&mut read))
            .await
            .map_err(|_| ControlError::Timeout)??;
        match answer {
            ControlEvent::Jobs(jobs) => Ok(jobs),
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

/// The data dir of a node service [`find_service`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDir {
    pub dir: PathBuf,
    /// It is the system service's (`paths::service_home`), not the caller's own.
    pub system: bool,
}

/// The node service to use from the data dir `own`: the one answering there, if any; else,
/// when `own` has no node registered, the system service at `service_home`, if it answers.
/// `None` when neither answers. A system service the caller may not use (not root, not in its
/// group) is [`ControlError::NotInGroup`].
pub async fn find_service(
    own: &Path,
    registered: bool,
    service_home: &Path,
) -> Result<Option<(ServiceDir, ControlClient)>, ControlError> {
    let system = is_same_dir(own, service_home);
    if let Some(client) = ControlClient::connect(own).await? {
        return Ok(Some((ServiceDir { dir: own.to_owned(), system }, client)));
    }
    if registered || system {
        return Ok(None);
    }
    match ControlClient::connect(service_home).await {
        Ok(found) => {
            Ok(found.map(|client| (ServiceDir { dir: service_home.to_owned(), system: true }, client)))
        }
        Err(ControlError::Connect { reason, .. })
            if reason.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err(ControlError::NotInGroup { path: socket_path(service_home) })
        }
        Err(e) => Err(e),
    }
}

/// Whether `a` and `b` name the same folder (as given, or once resolved).
pub fn is_same_dir(a: &Path, b: &Path) -> bool {
    a == b || a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b)
}
