//! The control socket's protocol: where the socket is, what a client asks
//! ([`ControlRequest`]), what the service answers ([`ControlEvent`]), what goes wrong
//! ([`ControlError`]), and the framing both sides use: one JSON value per line, at most
//! [`MAX_FRAME_BYTES`], each read and write within [`ANSWER_TIMEOUT`].

use crate::node::NodeStatus;
use crate::node::logs::LogLine;
use crate::node::store::{NodeSettings, StoreError};
use crate::protocol::JobView;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The socket's file name in the data dir.
pub const SOCKET_FILE: &str = "control.sock";
/// How long either side waits for a request or an answer (the watch stream waits forever).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection test may take; the tests run side by side.
pub const CONNECTION_TEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages above this are refused before they are read whole.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Events a watcher's channel holds before the reader waits for the watcher.
pub(super) const WATCH_BUFFER: usize = 256;

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
    /// The node's settings (node.toml; a proxy's password left out), for a window of another
    /// user that can't read the data dir; answered with [`ControlEvent::Settings`].
    Settings,
    /// Update to the release the hub offers (`node update`); answered with
    /// [`ControlEvent::Updating`] once the update is under way, or why not.
    Update,
    /// The gateway's newest `limit` jobs (at most [`MAX_JOBS`]) with their runs and attempts,
    /// which the service fetches from the hub with its own node token, for a window that
    /// can't read that token (the Jobs tab); answered with [`ControlEvent::Jobs`]. Read only.
    Jobs { limit: u32 },
}

/// The most jobs one [`ControlRequest::Jobs`] answers with.
pub const MAX_JOBS: u32 = 100;

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
    /// The node's settings as stored, a proxy's password replaced by `***`.
    Settings(Box<NodeSettings>),
    /// An update is under way, from this version to that one.
    Updating { from: String, to: String },
    /// The gateway's recent jobs, newest first, as the hub listed them, each run without its
    /// part (a copy's file list) and checkpoint, which the Jobs tab doesn't show; the oldest
    /// are left off when all of them wouldn't fit in one message.
    Jobs(Vec<JobView>),
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
    #[error(
        "there is no group {group:?} on this machine for the control socket; create it (the package's postinst makes `gatehouse`), or give another with --control-group"
    )]
    NoSuchGroup { group: String },
    #[error("can't look up the group {group:?} for the control socket: {reason}")]
    GroupLookup { group: String, reason: String },
    #[error(
        "can't give {} to the group {group:?} ({reason}); run the service as a member of that group (the unit runs it as Group=gatehouse)",
        path.display()
    )]
    Share { path: PathBuf, group: String, reason: std::io::Error },
    #[error(
        "the control socket of the system node service, {}, is only for root and the members of the gatehouse group; run this with sudo, or join the group (sudo adduser $USER gatehouse, then log in again)",
        path.display()
    )]
    NotInGroup { path: PathBuf },
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

/// Why connecting to the socket at `path` failed, as the sentence that fits.
pub(super) fn connect_error(path: &Path, reason: std::io::Error) -> ControlError {
    // The only invalid input a path from the data dir can be: too long for a Unix socket.
    if reason.kind() == std::io::ErrorKind::InvalidInput {
        return ControlError::PathTooLong { path: path.to_owned() };
    }
    ControlError::Connect { path: path.to_owned(), reason }
}

// ---------------------------------------------------------------------------------------
// Framing: one JSON value per line, at most MAX_FRAME_BYTES
// ---------------------------------------------------------------------------------------

/// Sends `request` and splits the stream; keep the write half until the answer is read.
pub(super) async fn request(
    stream: UnixStream,
    request: ControlRequest,
) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf), ControlError> {
    let (read, mut write) = stream.into_split();
    write_frame(&mut write, &request).await?;
    Ok((BufReader::new(read), write))
}

pub(super) async fn timed<T>(work: impl Future<Output = Result<T, ControlError>>) -> Result<T, ControlError> {
    tokio::time::timeout(ANSWER_TIMEOUT, work).await.map_err(|_| ControlError::Timeout)?
}

pub(super) async fn write_event<W: AsyncWrite + Unpin>(
    write: &mut W,
    event: &ControlEvent,
) -> Result<(), ControlError> {
    write_frame(write, event).await
}

pub(super) async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
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
pub(super) async fn read_event<R: AsyncBufRead + Unpin>(read: &mut R) -> Result<ControlEvent, ControlError> {
    let frame = read_frame(read).await?.ok_or(ControlError::Closed)?;
    serde_json::from_slice(&frame).map_err(|e| ControlError::Protocol(e.to_string()))
}

/// One line without its newline; `None` at the end of the stream. A line over
/// [`MAX_FRAME_BYTES`] is refused after reading at most one byte more.
pub(super) async fn read_frame<R: AsyncBufRead + Unpin>(
    read: &mut R,
) -> Result<Option<Vec<u8>>, ControlError> {
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
        assert_eq!(
            serde_json::to_string(&ControlRequest::Jobs { limit: 20 }).unwrap(),
            r#"{"op":"jobs","limit":20}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlEvent::Jobs(Vec::new())).unwrap(),
            r#"{"event":"jobs","data":[]}"#
        );
    }
}
