//! The peer channel between the nodes of one gateway (port 8060 by default): a Noise session
//! (`Noise_IK_25519_ChaChaPoly_BLAKE2s`) over TCP, or over TLS with the imported certificate
//! when the gateway encrypts (the certificate adds the administrator's chosen trust on top).
//!
//! Each node has its own X25519 key pair ([`StaticKey`], made at registration, private half
//! only in its sealed secrets); the hub keeps the public keys and hands every node the roster
//! of its gateway with each heartbeat answer. IK fits that exactly: the asking node already
//! knows whom it calls, so it pins the answering node's key from the roster and sends its own
//! key encrypted in the first message; the answering node accepts only a key of its current
//! roster ([`Member`]), so a node removed at the hub is shut out at the next heartbeat. The
//! handshake completes in one round trip and carries no request data (IK's first message could
//! be replayed by anyone who recorded it; a replay gets no further than the handshake, as the
//! request needs the fresh keys of the second message).
//!
//! After the handshake every frame is a Noise transport message: encrypted, authenticated and
//! numbered, so a forged, altered, replayed or reordered frame fails to open and ends the
//! connection. Before the handshake completes frames are at most [`MAX_HANDSHAKE_FRAME`]
//! bytes, so an unauthenticated connection costs next to nothing.
//!
//! One request and one answer per connection: the dispatcher hands a run to a worker, a node
//! checks that a peer is reachable, or fetches a peer's credentials.

use crate::node::credentials::CredentialSet;
use crate::protocol::RunView;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The Noise protocol of the peer channel.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Binds every handshake to this protocol and its version.
pub const PROLOGUE: &[u8] = b"gatehouse peer channel v2";
/// A peer gets this long for a whole exchange.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// An answering node gives a connection this long to authenticate (TLS and Noise handshakes).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Handshake messages are ~100 bytes; anything longer before authentication is refused.
pub const MAX_HANDSHAKE_FRAME: usize = 256;
/// A request or answer (a run with its checkpoint, a credential set) is at most this long.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// One Noise message is at most 65535 bytes, its tag included; a longer request or answer
/// goes as several, each starting with a byte that says whether more follow.
const MAX_NOISE_MESSAGE: usize = 65535;
const TAG_BYTES: usize = 16;
const CHUNK_BYTES: usize = MAX_NOISE_MESSAGE - TAG_BYTES - 1;

/// What can go wrong talking to a peer; each names the peer problem plainly.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("can't reach the peer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer didn't answer in time")]
    Timeout,
    #[error("the peer sent a frame of {0} bytes (at most {1} here)")]
    FrameTooLarge(usize, usize),
    #[error("the peer spoke something else than the peer protocol: {0}")]
    Protocol(String),
    #[error(
        "the connecting node's key is not in this gateway's current roster (removed with `gatehouse hub node remove`, or registered with another gateway); refused"
    )]
    NotInRoster,
    #[error(
        "the peer channel's encryption failed: the peer doesn't hold the key the hub has for it, or a frame was forged, altered, replayed or reordered ({0})"
    )]
    Noise(#[from] snow::Error),
    #[error(
        "{0} has no usable key for the peer channel in the hub's roster (a node of an older version that hasn't announced one yet?)"
    )]
    NoKey(String),
}

/// A node's own static key pair for the peer channel (X25519, base64). Kept in the node's
/// sealed secrets; only the public half goes to the hub. `Debug` shows the public half only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKey {
    private: String,
    public: String,
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKey").field("public", &self.public).field("private", &"***").finish()
    }
}

impl StaticKey {
    /// A fresh key pair from the operating system's random numbers.
    pub fn generate() -> Result<StaticKey, PeerError> {
        let pair = snow::Builder::new(params()).generate_keypair()?;
        Ok(StaticKey { private: STANDARD.encode(&pair.private), public: STANDARD.encode(&pair.public) })
    }

    /// The public half, as the hub and the roster carry it.
    pub fn public(&self) -> &str {
        &self.public
    }

    pub(super) fn private_bytes(&self) -> Result<Vec<u8>, PeerError> {
        STANDARD
            .decode(&self.private)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| PeerError::Protocol("this node's private key is damaged".to_owned()))
    }
}

/// A node of the gateway's current roster, as the answering side checks a caller against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    /// `host:port` of its peer channel.
    pub address: String,
    /// Its public key, decoded (32 bytes).
    pub public_key: Vec<u8>,
}

impl Member {
    /// A roster entry from the hub's base64 key; `None` when the key is missing or malformed.
    pub fn new(node_id: &str, address: &str, public_key: &str) -> Option<Member> {
        let key = STANDARD.decode(public_key.trim()).ok().filter(|k| k.len() == 32)?;
        Some(Member { node_id: node_id.to_owned(), address: address.to_owned(), public_key: key })
    }
}

/// What one peer asks another.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerRequest {
    /// Are you there? (reachability for the heartbeat's `unreachable_peers`)
    Ping,
    /// The dispatcher hands you this run; start it at the hub, then run what the hub returns.
    Run { run: Box<RunView> },
    /// Send me your credentials (they travel inside this session, encrypted to my key).
    Credentials,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerResponse {
    Pong,
    /// The run was taken and will be reported to the hub by this node.
    Accepted,
    /// Not taken, with the reason (e.g. at the concurrency limit).
    Refused {
        reason: String,
    },
    /// This node's credential set.
    Credentials {
        set: CredentialSet,
    },
}

fn params() -> snow::params::NoiseParams {
    // A constant that parses: `parse` can't fail here (a unit test checks it).
    NOISE_PARAMS.parse().unwrap_or_else(|_| unreachable!())
}

async fn write_raw<S: AsyncWrite + Unpin>(stream: &mut S, message: &[u8]) -> Result<(), PeerError> {
    let len = u16::try_from(message.len()).map_err(|_| PeerError::FrameTooLarge(message.len(), 65535))?;
    // One write per frame: a separate 2-byte length would wait out Nagle's algorithm.
    let mut frame = Vec::with_capacity(message.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes into `buffer` (which must hold `max`).
async fn read_raw<'b, S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &'b mut [u8],
    max: usize,
) -> Result<&'b [u8], PeerError> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > max {
        return Err(PeerError::FrameTooLarge(len, max));
    }
    let frame = &mut buffer[..len];
    stream.read_exact(frame).await?;
    Ok(frame)
}

/// An authenticated session with one peer over `stream`.
pub struct Session<S> {
    stream: S,
    noise: snow::TransportState,
    /// The peer's node id, from the roster (the asking side: the node it called).
    pub peer: String,
    /// The start of the next message, read ahead by [`accept_request`]: its data so far, and
    /// whether it is complete.
    begun: Option<(Vec<u8>, bool)>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Sends one message (as one or more Noise transport messages).
    pub async fn send<T: Serialize>(&mut self, value: &T) -> Result<(), PeerError> {
        let body = serde_json::to_vec(value).map_err(|e| PeerError::Protocol(e.to_string()))?;
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(PeerError::FrameTooLarge(body.len(), MAX_MESSAGE_BYTES));
        }
        let mut out = vec![0u8; MAX_NOISE_MESSAGE];
        // JSON is never empty, so there is always at least one chunk.
        let count = body.len().div_ceil(CHUNK_BYTES);
        for (index, chunk) in body.chunks(CHUNK_BYTES).enumerate() {
            let more = u8::from(index + 1 < count);
            let plain = [&[more][..], chunk].concat();
            let len = self.noise.write_message(&plain, &mut out)?;
            write_raw(&mut self.stream, &out[..len]).await?;
        }
        Ok(())
    }

    /// Receives one message; any frame that doesn't open (forged, altered, replayed,
    /// reordered) ends the session with an error.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, PeerError> {
        // Grows as authenticated bytes arrive, never reserved ahead.
        let (mut body, mut complete) = self.begun.take().unwrap_or_default();
        while !complete {
            complete = self.read_frame(&mut body).await?;
        }
        serde_json::from_slice(&body).map_err(|e| PeerError::Protocol(e.to_string()))
    }

    /// Reads and opens one transport frame, adding its data to `body`; true when it was the
    /// message's last.
    async fn read_frame(&mut self, body: &mut Vec<u8>) -> Result<bool, PeerError> {
        let mut frame = vec![0u8; MAX_NOISE_MESSAGE];
        let mut plain = vec![0u8; MAX_NOISE_MESSAGE];
        let message = read_raw(&mut self.stream, &mut frame, MAX_NOISE_MESSAGE).await?;
        let len = self.noise.read_message(message, &mut plain)?;
        let (&more, data) = plain[..len]
            .split_first()
            .ok_or_else(|| PeerError::Protocol("an empty transport message".to_owned()))?;
        if body.len() + data.len() > MAX_MESSAGE_BYTES {
            return Err(PeerError::FrameTooLarge(body.len() + data.len(), MAX_MESSAGE_BYTES));
        }
        body.extend_from_slice(data);
        Ok(more == 0)
    }

    /// The answering side's second half: reads the request, lets `handle` answer it, sends
    /// the answer, each step within [`EXCHANGE_TIMEOUT`].
    pub async fn answer<F, Fut>(mut self, handle: F) -> Result<String, PeerError>
    where
        F: FnOnce(String, PeerRequest) -> Fut,
        Fut: Future<Output = PeerResponse>,
    {
        let request: PeerRequest =
            tokio::time::timeout(EXCHANGE_TIMEOUT, self.recv()).await.map_err(|_| PeerError::Timeout)??;
        let response = handle(self.peer.clone(), request).await;
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.send(&response))
            .await
            .map_err(|_| PeerError::Timeout)??;
        Ok(self.peer)
    }
}

/// The calling side's handshake: pins `peer`'s key, proves our own.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    me: &StaticKey,
    peer: &Member,
) -> Result<Session<S>, PeerError> {
    let private = me.private_bytes()?;
    let mut handshake = snow::Builder::new(params())
        .local_private_key(&private)?
        .remote_public_key(&peer.public_key)?
        .prologue(PROLOGUE)?
        .build_initiator()?;
    let mut buffer = [0u8; MAX_HANDSHAKE_FRAME];
    // No payload: IK's first message can be replayed, so it carries nothing of the request.
    let len = handshake.write_message(&[], &mut buffer)?;
    write_raw(&mut stream, &buffer[..len]).await?;
    let mut frame = [0u8; MAX_HANDSHAKE_FRAME];
    let message = read_raw(&mut stream, &mut frame, MAX_HANDSHAKE_FRAME).await?;
    handshake.read_message(message, &mut buffer)?;
    let noise = handshake.into_transport_mode()?;
    Ok(Session { stream, noise, peer: peer.node_id.clone(), begun: None })
}

/// The answering side's handshake: accepts a caller whose key is in `roster` only.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    me: &StaticKey,
    roster: &[Member],
) -> Result<Session<S>, PeerError> {
    let private = me.private_bytes()?;
    let mut handshake =
        snow::Builder::new(params()).local_private_key(&private)?.prologue(PROLOGUE)?.build_responder()?;
    let mut frame = [0u8; MAX_HANDSHAKE_FRAME];
    let mut buffer = [0u8; MAX_HANDSHAKE_FRAME];
    let message = read_raw(&mut stream, &mut frame, MAX_HANDSHAKE_FRAME).await?;
    handshake.read_message(message, &mut buffer)?;
    let caller = handshake.get_remote_static().unwrap_or_default();
    let member = roster.iter().find(|m| m.public_key == caller).ok_or(PeerError::NotInRoster)?;
    let len = handshake.write_message(&[], &mut buffer)?;
    write_raw(&mut stream, &buffer[..len]).await?;
    let noise = handshake.into_transport_mode()?;
    Ok(Session { stream, noise, peer: member.node_id.clone(), begun: None })
}

/// The answering side up to the first frame of the request: the handshake against `roster`,
/// then that frame opened. IK's first message can be replayed by anyone who recorded it, and
/// the answering side can't tell; only the first transport frame proves that the caller holds
/// the key now. So a connection counts as authenticated (and gives back its handshake slot)
/// only once this returns: a flood of replayed hellos holds no more than unauthenticated
/// connections do.
pub async fn accept_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    me: &StaticKey,
    roster: &[Member],
) -> Result<Session<S>, PeerError> {
    let mut session = accept(stream, me, roster).await?;
    let mut body = Vec::new();
    let complete = session.read_frame(&mut body).await?;
    session.begun = Some((body, complete));
    Ok(session)
}

/// The asking side: authenticate on `stream` against `peer`'s pinned key, send `request`,
/// return the answer, all within [`EXCHANGE_TIMEOUT`].
pub async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    me: &StaticKey,
    peer: &Member,
    request: &PeerRequest,
) -> Result<PeerResponse, PeerError> {
    let exchange = async {
        let mut session = connect(stream, me, peer).await?;
        session.send(request).await?;
        session.recv().await
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await.map_err(|_| PeerError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn member(id: &str, key: &StaticKey) -> Member {
        Member::new(id, "127.0.0.1:1", key.public()).unwrap()
    }

    fn handler(
        ran: &Arc<AtomicBool>,
    ) -> impl FnOnce(String, PeerRequest) -> std::future::Ready<PeerResponse> + use<> {
        let ran = Arc::clone(ran);
        move |_, request| {
            ran.store(true, Ordering::SeqCst);
            std::future::ready(match request {
                PeerRequest::Ping => PeerResponse::Pong,
                PeerRequest::Credentials => PeerResponse::Credentials { set: CredentialSet::default() },
                PeerRequest::Run { .. } => PeerResponse::Accepted,
            })
        }
    }

    /// A client asks a server that knows `roster`; returns both sides' results.
    async fn exchange(
        client: &StaticKey,
        server: &StaticKey,
        roster: Vec<Member>,
    ) -> (Result<PeerResponse, PeerError>, Result<String, PeerError>, bool) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let ran = Arc::new(AtomicBool::new(false));
        let server_key = server.clone();
        let handle = handler(&ran);
        let answering =
            tokio::spawn(async move { accept(b, &server_key, &roster).await?.answer(handle).await });
        let asked = ask(a, client, &member("server", server), &PeerRequest::Ping).await;
        (asked, answering.await.unwrap(), ran.load(Ordering::SeqCst))
    }

    #[test]
    fn the_noise_parameters_parse() {
        assert!(NOISE_PARAMS.parse::<snow::params::NoiseParams>().is_ok());
        let key = StaticKey::generate().unwrap();
        assert!(!format!("{key:?}").contains(&key.private));
    }

    #[tokio::test]
    async fn peers_of_one_roster_talk() {
        let (client, server) = (StaticKey::generate().unwrap(), StaticKey::generate().unwrap());
        let (asked, answered, ran) = exchange(&client, &server, vec![member("client", &client)]).await;
        assert_eq!(asked.unwrap(), PeerResponse::Pong);
        assert_eq!(answered.unwrap(), "client");
        assert!(ran);
    }

    #[tokio::test]
    async fn a_caller_outside_the_roster_is_refused_before_its_request() {
        let (client, server) = (StaticKey::generate().unwrap(), StaticKey::generate().unwrap());
        let someone = StaticKey::generate().unwrap();
        let (asked, answered, ran) = exchange(&client, &server, vec![member("other", &someone)]).await;
        assert!(asked.is_err());
        assert!(matches!(answered, Err(PeerError::NotInRoster)), "{answered:?}");
        assert!(!ran, "the request of a caller outside the roster was handled");
    }

    #[tokio::test]
    async fn a_server_without_the_pinned_key_is_refused() {
        let (client, server) = (StaticKey::generate().unwrap(), StaticKey::generate().unwrap());
        let impostor = StaticKey::generate().unwrap();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let roster = vec![member("client", &client)];
        let answering = tokio::spawn(async move { accept(b, &impostor, &roster).await.map(|_| ()) });
        // The client pins `server`'s key; the impostor can't open the first message.
        let asked = ask(a, &client, &member("server", &server), &PeerRequest::Ping).await;
        assert!(asked.is_err());
        assert!(matches!(answering.await.unwrap(), Err(PeerError::Noise(_))));
    }

    /// Reads one raw frame off a stream, as a man in the middle sees it.
    async fn raw<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
        let mut frame = vec![0u8; MAX_NOISE_MESSAGE];
        read_raw(stream, &mut frame, MAX_NOISE_MESSAGE).await.unwrap().to_vec()
    }

    /// A connected pair of sessions whose frames a test relays by hand: (client session,
    /// client's far end, server's near end, server task).
    async fn relayed(
        client: &StaticKey,
        server: &StaticKey,
    ) -> (
        Session<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<Result<Session<tokio::io::DuplexStream>, PeerError>>,
    ) {
        let (client_end, mut client_far) = tokio::io::duplex(256 * 1024);
        let (mut server_near, server_end) = tokio::io::duplex(256 * 1024);
        let (server_key, roster) = (server.clone(), vec![member("client", client)]);
        let accepting = tokio::spawn(async move { accept(server_end, &server_key, &roster).await });
        let (client, target) = (client.clone(), member("server", server));
        let connecting = tokio::spawn(async move { connect(client_end, &client, &target).await });
        // Relay the handshake both ways untouched.
        let first = raw(&mut client_far).await;
        write_raw(&mut server_near, &first).await.unwrap();
        let second = raw(&mut server_near).await;
        write_raw(&mut client_far, &second).await.unwrap();
        (connecting.await.unwrap().unwrap(), client_far, server_near, accepting)
    }

    #[tokio::test]
    async fn a_forged_frame_is_refused() {
        let (client, server) = (StaticKey::generate().unwrap(), StaticKey::generate().unwrap());
        let (mut session, mut client_far, mut server_near, accepting) = relayed(&client, &server).await;
        session.send(&PeerRequest::Ping).await.unwrap();
        let mut frame = raw(&mut client_far).await;
        // Flip one bit of the ciphertext, as an attacker on an unencrypted network could.
        frame[3] ^= 0x01;
        write_raw(&mut server_near, &frame).await.unwrap();
        let mut answering = accepting.await.unwrap().unwrap();
        assert!(matches!(answering.recv::<PeerRequest>().await, Err(PeerError::Noise(_))));

        // A frame made up from nothing fares no better.
        let (mut session, mut client_far, mut server_near, accepting) = relayed(&client, &server).await;
        session.send(&PeerRequest::Ping).await.unwrap();
        let genuine = raw(&mut client_far).await;
        write_raw(&mut server_near, &vec![0x42; genuine.len()]).await.unwrap();
        let mut answering = accepting.await.unwrap().unwrap();
        assert!(matches!(answering.recv::<PeerRequest>().await, Err(PeerError::Noise(_))));
    }

    #[tokio::test]
    async fn a_replayed_or_reordered_frame_is_refused() {
        let (client, server) = (StaticKey::generate().unwrap(), StaticKey::generate().unwrap());
        // Replayed within the session: the second copy fails to open.
        let (mut session, mut client_far, mut server_near, accepting) = relayed(&client, &server).await;
        session.send(&PeerRequest::Ping).await.unwrap();
        let first = raw(&mut client_far).await;
        write_raw(&mut server_near, &first).await.unwrap();
        write_raw(&mut server_near, &first).await.unwrap();
        let mut answering = accepting.await.unwrap().unwrap();
        assert!(matches!(answering.recv::<PeerRequest>().await, Ok(PeerRequest::Ping)));
        assert!(matches!(answering.recv::<PeerRequest>().await, Err(PeerError::Noise(_))));

        // Reordered: the second frame delivered first fails to open.
        let (mut session, mut client_far, mut server_near, accepting) = relayed(&client, &server).await;
        session.send(&PeerRequest::Ping).await.unwrap();
        session.send(&PeerRequest::Credentials).await.unwrap();
        let (one, two) = (raw(&mut client_far).await, raw(&mut client_far).await);
        write_raw(&mut server_near, &two).await.unwrap();
        write_raw(&mut server_near, &one).await.unwrap();
        let mut answering = accepting.await.unwrap().unwrap();
        assert!(matches!(answering.recv::<PeerRequest>().await, Err(PeerError::Noise(_))));
    }

    #[tokio::test]
    async fn a_recorded_exchange_replayed_over_tcp_gets_nothing() {
        let (client, server) = (StaticKey::generate().unwrap(), StaticKey::generate().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let (server_key, roster, ran_here) =
            (server.clone(), vec![member("client", &client)], Arc::clone(&ran));
        let serving = tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..2 {
                let (stream, _) = listener.accept().await.unwrap();
                let handle = handler(&ran_here);
                let result = async { accept(stream, &server_key, &roster).await?.answer(handle).await }.await;
                results.push(result);
            }
            results
        });

        // Record what the genuine client sends on a first connection (through a recording relay).
        let (recorder, mut far) = tokio::io::duplex(64 * 1024);
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut tcp_read, mut tcp_write) = tcp.into_split();
        let target = member("server", &server);
        let asking = tokio::spawn({
            let client = client.clone();
            async move { ask(recorder, &client, &target, &PeerRequest::Credentials).await }
        });
        let hello = raw(&mut far).await;
        write_raw(&mut tcp_write, &hello).await.unwrap();
        let reply = raw(&mut tcp_read).await;
        write_raw(&mut far, &reply).await.unwrap();
        let request = raw(&mut far).await;
        write_raw(&mut tcp_write, &request).await.unwrap();
        let answer = raw(&mut tcp_read).await;
        write_raw(&mut far, &answer).await.unwrap();
        assert!(matches!(asking.await.unwrap(), Ok(PeerResponse::Credentials { .. })));
        assert!(ran.swap(false, Ordering::SeqCst));

        // Replay both of its frames on a new connection: the handshake answer is fresh, so the
        // recorded request doesn't open, and nothing is handed out.
        let mut again = tokio::net::TcpStream::connect(address).await.unwrap();
        write_raw(&mut again, &hello).await.unwrap();
        let _fresh = raw(&mut again).await;
        write_raw(&mut again, &request).await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, again.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "the replayed request got an answer");
        let results = serving.await.unwrap();
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(PeerError::Noise(_))), "{:?}", results[1]);
        assert!(!ran.load(Ordering::SeqCst), "a replayed request was handled");
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_reading() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&1000u16.to_be_bytes()).await.unwrap();
        let mut buffer = [0u8; MAX_HANDSHAKE_FRAME];
        let result = read_raw(&mut b, &mut buffer, MAX_HANDSHAKE_FRAME).await;
        assert!(matches!(result, Err(PeerError::FrameTooLarge(1000, MAX_HANDSHAKE_FRAME))));
    }

    #[tokio::test]
    async fn long_messages_cross_in_several_frames() {
        let (client, server) = (StaticKey::generate().unwrap(), StaticKey::generate().unwrap());
        let (mut session, mut client_far, mut server_near, accepting) = relayed(&client, &server).await;
        let long = "x".repeat(200_000);
        let relay = tokio::spawn(async move {
            for _ in 0..4 {
                let frame = raw(&mut client_far).await;
                write_raw(&mut server_near, &frame).await.unwrap();
            }
            (client_far, server_near)
        });
        session.send(&long).await.unwrap();
        let _ends = relay.await.unwrap();
        let mut answering = accepting.await.unwrap().unwrap();
        assert_eq!(answering.recv::<String>().await.unwrap(), long);
    }
}
