//! The hub's HTTP/1 server under the router: the accept loop with a cap on open connections
//! (overall, and per client address), TLS handshakes off that loop, a deadline for each
//! request's headers (which also ends idle connections), a bound on how long a request body
//! may trickle, and a bounded drain at shutdown. A client that connects and sends nothing, or sends a byte now and then, can't
//! hold a connection for long, so idle sockets can't crowd out the nodes' heartbeats.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use futures_util::StreamExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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
/// The default cap on connections open from one client address
/// (`hub serve --max-connections-per-address`): a quarter of the overall cap, so one address
/// can't hold every place, while nodes that share an address (several on one machine, or
/// behind one NAT) still fit.
pub fn per_address_default(max_connections: usize) -> usize {
    (max_connections / 4).max(1)
}
/// A client address beyond its cap is named at WARN at most this often.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(60);
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

/// How many connections the hub keeps open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Open connections from one client address at most; more are closed at once.
    pub per_address: usize,
}

/// Connections open per client address; a place is given back when its [`AddressSlot`] drops.
struct PerAddress {
    cap: usize,
    state: Mutex<PerAddressState>,
}

#[derive(Default)]
struct PerAddressState {
    open: HashMap<IpAddr, usize>,
    /// When a refusal was last logged at WARN, and how many went unlogged since.
    logged: Option<Instant>,
    unlogged: u64,
}

struct AddressSlot {
    addresses: Arc<PerAddress>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut state) = self.addresses.state.lock()
            && let Some(count) = state.open.get_mut(&self.address)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.open.remove(&self.address);
            }
        }
    }
}

impl PerAddress {
    /// A place for a connection from `address`, or `None` (logged) when it has its cap open.
    fn admit(self: &Arc<Self>, address: IpAddr) -> Option<AddressSlot> {
        // std Mutex, never held across .await.
        let mut state = self.state.lock().ok()?;
        let open = state.open.get(&address).copied().unwrap_or(0);
        if open < self.cap {
            state.open.insert(address, open + 1);
            return Some(AddressSlot { addresses: Arc::clone(self), address });
        }
        let now = Instant::now();
        if state.logged.is_none_or(|at| now.duration_since(at) >= REFUSALS_LOGGED_EVERY) {
            let unlogged = std::mem::take(&mut state.unlogged);
            state.logged = Some(now);
            tracing::warn!(
                %address,
                "closed a connection at once: this address has {open} open, the most one address may have (--max-connections-per-address); {unlogged} more refused since the last such line"
            );
        } else {
            state.unlogged += 1;
            tracing::debug!(%address, "closed a connection at once: this address has {open} open");
        }
        None
    }
}

/// Serves `app` on `listener` (HTTPS when `tls` is given) within `limits`, until `shutdown`
/// is cancelled, then lets requests in flight finish (for a bounded time).
pub async fn run(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::map_request(bound_body));
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let addresses = Arc::new(PerAddress {
        cap: limits.per_address.max(1),
        state: Mutex::new(PerAddressState::default()),
    });
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
        let Some(address_slot) = addresses.admit(peer.ip()) else {
            drop((stream, slot));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, stop, acceptor) = (app.clone(), shutdown.clone(), acceptor.clone());
        connections.spawn(async move {
            // The address's place first: once the overall one is free the loop may accept the
            // next connection from this address at once, and must find its place free too.
            let _slots = (address_slot, slot);
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
