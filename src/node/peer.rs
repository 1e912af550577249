//! The peer channel between the nodes of one gateway (port 8060 by default): length-prefixed
//! JSON frames over TCP, or over TLS with the imported certificate when the gateway encrypts.
//! Both ends prove they hold the gateway secret with HMAC-SHA256 over fresh nonces, so the
//! secret itself never crosses the wire and a recorded handshake can't be replayed.
//!
//! One request and one answer per connection: the dispatcher hands a run to a worker, or a
//! node checks that a peer is reachable.

use crate::protocol::RunView;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Frames above this are refused before they are read.
const MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// A peer gets this long for a whole exchange.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
const CONTEXT: &[u8] = b"gatehouse peer channel v1";

/// What can go wrong talking to a peer; each names the peer problem plainly.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("can't reach the peer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer didn't answer in time")]
    Timeout,
    #[error("the peer sent a frame of {0} bytes (at most {MAX_FRAME_BYTES})")]
    FrameTooLarge(u32),
    #[error("the peer spoke something else than the peer protocol: {0}")]
    Protocol(String),
    #[error("the peer doesn't hold this gateway's secret (is it registered with another gateway?)")]
    NotAuthenticated,
}

/// The server's opening: a fresh nonce to prove the secret over.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Challenge {
    nonce: String,
}

/// The client's proof, and its own nonce for the server to prove the secret over.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello {
    node_id: String,
    proof: String,
    nonce: String,
}

/// The server's proof; the request follows.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Welcome {
    node_id: String,
    proof: String,
}

/// What one peer asks another.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerRequest {
    /// Are you there? (reachability for the heartbeat's `unreachable_peers`)
    Ping,
    /// The dispatcher hands you this run; start it at the hub, then run it.
    Run { run: Box<RunView> },
    /// Send me your credentials (sealed for this gateway).
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
    /// This node's credential set, sealed under a key derived from the gateway secret.
    Credentials {
        sealed: String,
    },
}

fn proof(secret: &str, nonce: &[u8], node_id: &str) -> String {
    // Any key length is valid for HMAC, so `new_from_slice` can't fail here.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(CONTEXT);
    mac.update(nonce);
    mac.update(node_id.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn verify(secret: &str, nonce: &[u8], node_id: &str, presented: &str) -> bool {
    let Ok(presented) = STANDARD.decode(presented) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(CONTEXT);
    mac.update(nonce);
    mac.update(node_id.as_bytes());
    mac.verify_slice(&presented).is_ok()
}

fn nonce() -> [u8; 32] {
    let mut nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

async fn write_frame<S: AsyncWrite + Unpin, T: Serialize>(
    stream: &mut S,
    value: &T,
) -> Result<(), PeerError> {
    let body = serde_json::to_vec(value).map_err(|e| PeerError::Protocol(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| PeerError::FrameTooLarge(u32::MAX))?;
    if len > MAX_FRAME_BYTES {
        return Err(PeerError::FrameTooLarge(len));
    }
    // One write per frame: a separate 4-byte length would wait out Nagle's algorithm.
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(())
}

async fn read_frame<S: AsyncRead + Unpin, T: DeserializeOwned>(stream: &mut S) -> Result<T, PeerError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME_BYTES {
        return Err(PeerError::FrameTooLarge(len));
    }
    let mut body = vec![0u8; usize::try_from(len).unwrap_or(0)];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| PeerError::Protocol(e.to_string()))
}

/// The asking side: authenticate on `stream`, send `request`, return the answer.
pub async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &str,
    my_node_id: &str,
    request: &PeerRequest,
) -> Result<(String, PeerResponse), PeerError> {
    let exchange = async {
        let challenge: Challenge = read_frame(stream).await?;
        let server_nonce =
            STANDARD.decode(&challenge.nonce).map_err(|e| PeerError::Protocol(e.to_string()))?;
        let my_nonce = nonce();
        let hello = Hello {
            node_id: my_node_id.to_owned(),
            proof: proof(secret, &server_nonce, my_node_id),
            nonce: STANDARD.encode(my_nonce),
        };
        write_frame(stream, &hello).await?;
        let welcome: Welcome = read_frame(stream).await?;
        if !verify(secret, &my_nonce, &welcome.node_id, &welcome.proof) {
            return Err(PeerError::NotAuthenticated);
        }
        write_frame(stream, request).await?;
        let response: PeerResponse = read_frame(stream).await?;
        Ok((welcome.node_id, response))
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await.map_err(|_| PeerError::Timeout)?
}

/// The answering side: authenticate the asker on `stream`, read its request, let `handle`
/// answer it. Returns the asker's node id.
pub async fn answer<S, F, Fut>(
    stream: &mut S,
    secret: &str,
    my_node_id: &str,
    handle: F,
) -> Result<String, PeerError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(String, PeerRequest) -> Fut,
    Fut: Future<Output = PeerResponse>,
{
    let handshake = async {
        let my_nonce = nonce();
        write_frame(stream, &Challenge { nonce: STANDARD.encode(my_nonce) }).await?;
        let hello: Hello = read_frame(stream).await?;
        if !verify(secret, &my_nonce, &hello.node_id, &hello.proof) {
            return Err(PeerError::NotAuthenticated);
        }
        let client_nonce = STANDARD.decode(&hello.nonce).map_err(|e| PeerError::Protocol(e.to_string()))?;
        let welcome =
            Welcome { node_id: my_node_id.to_owned(), proof: proof(secret, &client_nonce, my_node_id) };
        write_frame(stream, &welcome).await?;
        let request: PeerRequest = read_frame(stream).await?;
        Ok((hello.node_id, request))
    };
    let (peer, request) =
        tokio::time::timeout(EXCHANGE_TIMEOUT, handshake).await.map_err(|_| PeerError::Timeout)??;
    let response = handle(peer.clone(), request).await;
    tokio::time::timeout(EXCHANGE_TIMEOUT, write_frame(stream, &response))
        .await
        .map_err(|_| PeerError::Timeout)??;
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange(
        client_secret: &str,
        server_secret: &str,
    ) -> (Result<(String, PeerResponse), PeerError>, Result<String, PeerError>) {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let server_secret = server_secret.to_owned();
        let server = tokio::spawn(async move {
            answer(&mut b, &server_secret, "server", |_, request| async move {
                match request {
                    PeerRequest::Ping | PeerRequest::Credentials => PeerResponse::Pong,
                    PeerRequest::Run { .. } => PeerResponse::Accepted,
                }
            })
            .await
        });
        let client = ask(&mut a, client_secret, "client", &PeerRequest::Ping).await;
        drop(a);
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn peers_with_the_same_secret_talk() {
        let (client, server) = exchange("s3cret", "s3cret").await;
        assert_eq!(client.unwrap(), ("server".to_owned(), PeerResponse::Pong));
        assert_eq!(server.unwrap(), "client");
    }

    #[tokio::test]
    async fn a_peer_without_the_secret_is_refused() {
        let (client, server) = exchange("wrong", "s3cret").await;
        assert!(client.is_err());
        assert!(matches!(server, Err(PeerError::NotAuthenticated)));
    }

    #[test]
    fn a_proof_is_bound_to_its_nonce_and_node() {
        let p = proof("s", b"nonce-1", "n1");
        assert!(verify("s", b"nonce-1", "n1", &p));
        assert!(!verify("s", b"nonce-2", "n1", &p));
        assert!(!verify("s", b"nonce-1", "n2", &p));
        assert!(!verify("t", b"nonce-1", "n1", &p));
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_reading() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&(MAX_FRAME_BYTES + 1).to_be_bytes()).await.unwrap();
        let result: Result<Challenge, _> = read_frame(&mut b).await;
        assert!(matches!(result, Err(PeerError::FrameTooLarge(_))));
    }
}
