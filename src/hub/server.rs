//! The hub's HTTP/1 server under the router: the accept loop with a cap on open connections,
//! TLS handshakes off that loop, a deadline for each request's headers (which also ends idle
//! connections), a bound on how long a request body may trickle, and a bounded drain at
//! shutdown. A client that connects and sends nothing, or sends a byte now and then, can't
//! hold a connection for long, so idle sockets can't crowd out the nodes' heartbeats.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use futures_util::StreamExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The default cap on open connections (`hub serve --max-connections`); more wait in the
/// listen backlog until one closes. Far above what four nodes (a heartbeat, a claim and a few
/// reports each) and some admins need, and below the file limit the systemd unit sets
/// (`LimitNOFILE`).
pub const MAX_CONNECTIONS: usize = 2048;
/// A client has this long to send a request's headers, counted from when the hub is ready to
/// read them: a new connection that sends nothing and a keep-alive connection left idle are
/// closed after it, as is one that trickles its headers. Nodes send a heartbeat every second.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body may take this long, plus a second for every [`BODY_BYTES_PER_SECOND`]
/// that arrived: a large split from a slow link gets through, a trickle is cut off.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
const BODY_BYTES_PER_SECOND: u64 = 64 * 1024;
/// How long shutdown waits for requests in flight (a claim waits up to 30 s for work).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(31);

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("it arrived too slowly (the hub reads a body for at most {}s plus 1s per {} KiB)", BODY_TIMEOUT.as_secs(), BODY_BYTES_PER_SECOND / 1024)]
    TooSlow,
    #[error("{0}")]
    Read(axum::Error),
}

/// Serves `app` on `listener` (HTTPS when `tls` is given), with at most `max_connections`
/// open, until `shutdown` is cancelled, then lets requests in flight finish (for a bounded
/// time).
pub async fn run(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    max_connections: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::map_request(bound_body));
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to close.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (app, stop, acceptor) = (app.clone(), shutdown.clone(), acceptor.clone());
        connections.spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                return serve_connection(stream, app, stop).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(tls, app, stop).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait()).await.is_err() {
        tracing::warn!(
            "requests still running {}s after shutdown began were cut off",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// One HTTP/1 connection, with keep-alive, until the client closes it, a deadline passes or
/// the hub shuts down (then the request in flight finishes first).
async fn serve_connection<I>(io: I, app: Router, stop: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("a connection ended: {e}");
            }
            return;
        }
        () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// Wraps the request's body so reading it fails once it takes longer than its bound.
async fn bound_body(request: Request) -> Request {
    let started = Instant::now();
    request.map(|body| {
        let chunks =
            futures_util::stream::unfold(Some((body.into_data_stream(), 0u64)), move |state| async move {
                let (mut stream, received) = state?;
                let allowed = BODY_TIMEOUT + Duration::from_secs(received / BODY_BYTES_PER_SECOND);
                match tokio::time::timeout_at(started + allowed, stream.next()).await {
                    Ok(Some(Ok(chunk))) => {
                        let received = received + chunk.len() as u64;
                        Some((Ok::<Bytes, BodyError>(chunk), Some((stream, received))))
                    }
                    Ok(Some(Err(e))) => Some((Err(BodyError::Read(e)), None)),
                    Ok(None) => None,
                    Err(_) => Some((Err(BodyError::TooSlow), None)),
                }
            });
        Body::from_stream(chunks)
    })
}
