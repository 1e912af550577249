//! A small typed client for the hub's HTTP API: one method per endpoint, taking and returning
//! `protocol` types, failing with a typed [`ClientError`]. Admins (the CLI, express setup,
//! benchmarks) call it with the admin token; nodes with an auth key to register, then with
//! their node token. It shares nothing with the hub but the wire types.
//!
//! The token is sent as a bearer token marked sensitive, and never appears in `Debug`
//! output or in error messages. HTTPS uses rustls on ring, trusting the public web roots plus
//! any extra roots the caller hands in (for a hub with its own CA or a self-signed certificate).

use crate::protocol::{
    AuditEntry, CertPin, ClaimRequest, CreateGateway, CreateToken, CreatedGateway, CreatedJoinKey,
    CreatedToken, ErrorBody, FinishRun, GatewayCredentials, GatewayView, Heartbeat, HeartbeatResponse,
    JobSpec, JobView, JobsQuery, JoinKeyInfo, KeyInfo, KeySlot, NewJoinKey, NewRelease, NodeView,
    PutCredential, PutCredentialAnswer, RegeneratedKey, RegisterRequest, RegisterResponse, ReleaseView,
    RunProgress, RunView, SettingsPatch, SplitRun, StartRun, SubmitJob, TokenInfo, TokenKind,
};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection to the hub may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request that carries a piece of a release, or a whole release file, may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Idle connections to the hub are dropped after this (below the hub's 10 s header deadline).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an unexpected answer an error message quotes.
const QUOTE_CHARS: usize = 120;

/// Why an admin request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The hub URL can't be used.
    #[error("{url:?} is not a usable hub URL: {reason}")]
    BadUrl { url: String, reason: String },
    /// The proxy URL can't be used.
    #[error("{proxy:?} is not a usable proxy URL: {reason}")]
    BadProxy { proxy: String, reason: String },
    /// Something the caller passed can't be sent (a token with line breaks, a name of `..`).
    #[error("{0}")]
    BadInput(String),
    /// The HTTP client could not be set up (TLS roots, for example).
    #[error("can't set up the HTTP client: {0}")]
    Setup(String),
    /// No connection to the hub, or no answer in time.
    #[error(
        "can't reach the hub at {url} ({reason}); is it running? Start one with `gatehouse hub serve`, or point --hub (or GATEHOUSE_HUB) at the right address"
    )]
    Unreachable { url: String, reason: String },
    /// A connection, but no TLS session: an untrusted certificate, or no HTTPS there.
    #[error(
        "can't make a secure connection to the hub at {url} ({reason}); check that it serves HTTPS there, and if its certificate comes from a private CA or is self-signed, trust it with --hub-ca PEM (or GATEHOUSE_HUB_CA)"
    )]
    Tls { url: String, reason: String },
    /// The hub's certificate is not the one the auth key (or node.toml's `hub_pin`) names.
    #[error(
        "the hub at {url} showed a certificate whose SHA-256 fingerprint is not the one in the auth key, so nothing was sent to it; the key was made by another hub (or before the hub made a new certificate), or something else answered in its place. Make a new key on the gateway's machine (Add a node) and paste it unchanged"
    )]
    PinMismatch { url: String },
    /// The hub answered with an error: it refused the request (4xx) or failed at it (5xx).
    #[error("{}", body.error)]
    Refused { status: u16, body: ErrorBody },
    /// Something answered, but not the way a Gatehouse hub does.
    #[error(
        "the server at {url} gave an answer a Gatehouse hub doesn't give (HTTP {status}: {detail}); is --hub the hub's address?"
    )]
    Unexpected { url: String, status: u16, detail: String },
}

impl ClientError {
    /// The hint that goes with a refusal, if any.
    pub fn hint(&self) -> Option<&str> {
        match self {
            ClientError::Refused { body, .. } => body.hint.as_deref(),
            _ => None,
        }
    }

    /// True when the hub itself said no (as opposed to not being reached or understood).
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Refused { .. })
    }
}

/// A client for one hub, authenticated with one bearer token (admin token, auth key or node
/// token, depending on who calls).
#[derive(Clone)]
pub struct HubClient {
    base: Url,
    token: HeaderValue,
    http: reqwest::Client,
    /// The hub's certificate is checked by its fingerprint, not by a CA.
    pinned: bool,
}

/// The admin's view of the same client.
pub type AdminClient = HubClient;

impl fmt::Debug for HubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubClient")
            .field("base", &self.base.as_str())
            .field("token", &"***")
            .finish_non_exhaustive()
    }
}

impl HubClient {
    /// A client for the hub at `base` (e.g. `http://127.0.0.1:7070`), trusting the public web
    /// roots for HTTPS.
    pub fn new(base: &str, token: &str) -> Result<Self, ClientError> {
        Self::build(base, token, &Trust::Roots(Vec::new()), None)
    }

    /// Like [`HubClient::new`], but the hub's HTTPS certificate must be the one whose SHA-256
    /// fingerprint is `pin` (an embedded hub's own certificate), whoever signed it.
    pub fn pinned(base: &str, token: &str, pin: CertPin) -> Result<Self, ClientError> {
        Self::build(base, token, &Trust::Pin(pin), None)
    }

    /// Like [`HubClient::new`], reaching the hub through the HTTP(S) proxy `proxy` when one is
    /// given (see [`parse_proxy`]). A hub on this machine is always reached directly.
    pub fn with_proxy(base: &str, token: &str, proxy: Option<&str>) -> Result<Self, ClientError> {
        let proxy = proxy.map(parse_proxy).transpose()?;
        Self::build(base, token, &Trust::Roots(Vec::new()), proxy)
    }

    /// Like [`HubClient::new`], also trusting `roots` for HTTPS (a private CA, or the hub's
    /// own self-signed certificate).
    pub fn with_extra_roots(
        base: &str,
        token: &str,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, ClientError> {
        Self::build(base, token, &Trust::Roots(roots), None)
    }

    /// A node's client: through `proxy` when one is given, also trusting the PEM CA
    /// certificates in `hub_ca` (a hub with a private CA), or, with `hub_pin`, only the hub
    /// certificate of that fingerprint (an embedded hub's own certificate).
    pub fn for_node(
        base: &str,
        token: &str,
        proxy: Option<&str>,
        hub_ca: Option<&str>,
        hub_pin: Option<CertPin>,
    ) -> Result<Self, ClientError> {
        let proxy = proxy.map(parse_proxy).transpose()?;
        let trust = match hub_pin {
            Some(pin) => Trust::Pin(pin),
            None => {
                Trust::Roots(hub_ca.map(|pem| pem_roots(pem.as_bytes())).transpose()?.unwrap_or_default())
            }
        };
        Self::build(base, token, &trust, proxy)
    }

    fn build(base: &str, token: &str, trust: &Trust, proxy: Option<Url>) -> Result<Self, ClientError> {
        let bad_url = |reason: &str| ClientError::BadUrl { url: base.to_owned(), reason: reason.to_owned() };
        let mut url = Url::parse(base.trim()).map_err(|e| bad_url(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_url("use http://HOST:PORT or https://HOST:PORT"));
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(bad_url("it has no host; use http://HOST:PORT"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad_url("leave out the user and password; the token authenticates"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad_url("leave out the query and fragment"));
        }
        // A hub behind a path prefix (https://example.com/gatehouse) keeps it.
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(ClientError::BadInput("the token is empty".to_owned()));
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ClientError::BadInput(
                "the token holds characters that can't be sent (line breaks or control characters)"
                    .to_owned(),
            )
        })?;
        header.set_sensitive(true);
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(trust)?)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // The hub closes a connection that sends no request for 10 s; forgetting ours
            // sooner keeps a request from going out on one the hub is closing.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
        if let Some(proxy) = proxy {
            let bad_proxy = |e: reqwest::Error| ClientError::BadProxy {
                proxy: proxy.to_string(),
                reason: root_cause(&e),
            };
            // An embedded hub (express setup) listens on loopback, which no proxy can reach.
            let no_proxy = reqwest::NoProxy::from_string("localhost,127.0.0.1,::1");
            builder =
                builder.proxy(reqwest::Proxy::all(proxy.clone()).map_err(bad_proxy)?.no_proxy(no_proxy));
        }
        let http = builder.build().map_err(|e| ClientError::Setup(root_cause(&e)))?;
        let pinned = matches!(trust, Trust::Pin(_));
        Ok(HubClient { base: url, token: header, http, pinned })
    }

    /// The hub's base URL.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// `GET /healthz`: true when the hub answers. Needs no token.
    pub async fn healthy(&self) -> Result<bool, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut().map_err(|()| self.no_path())?.pop_if_empty().push("healthz");
        let response = self.http.get(url.clone()).send().await.map_err(|e| self.unreachable(&e))?;
        Ok(response.status().is_success())
    }

    /// `POST /api/v1/gateways`: the new gateway with both auth keys in full (the only time).
    pub async fn create_gateway(&self, request: &CreateGateway) -> Result<CreatedGateway, ClientError> {
        self.call(Method::POST, &["gateways"], None, Some(request)).await
    }

    /// `GET /api/v1/gateways`
    pub async fn gateways(&self) -> Result<Vec<GatewayView>, ClientError> {
        self.call(Method::GET, &["gateways"], None, None::<&()>).await
    }

    /// `GET /api/v1/gateways/{gateway}`, by id or name.
    pub async fn gateway(&self, gateway: &str) -> Result<GatewayView, ClientError> {
        self.call(Method::GET, &["gateways", gateway], None, None::<&()>).await
    }

    /// `DELETE /api/v1/gateways/{gateway}`, with its nodes and jobs.
    pub async fn delete_gateway(&self, gateway: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["gateways", gateway]).await
    }

    /// `PATCH /api/v1/gateways/{gateway}/settings`: only the given fields change. Takes an
    /// `UpdateSettings` or a `SettingsPatch` (which also holds the bandwidth limit).
    pub async fn update_settings<U>(&self, gateway: &str, update: &U) -> Result<GatewayView, ClientError>
    where
        U: Clone + Into<SettingsPatch>,
    {
        let patch: SettingsPatch = update.clone().into();
        self.call(Method::PATCH, &["gateways", gateway, "settings"], None, Some(&patch)).await
    }

    /// `GET /api/v1/gateways/{gateway}/keys`: hints and creation times, never full keys.
    pub async fn keys(&self, gateway: &str) -> Result<Vec<KeyInfo>, ClientError> {
        self.call(Method::GET, &["gateways", gateway, "keys"], None, None::<&()>).await
    }

    /// `POST /api/v1/gateways/{gateway}/keys/{slot}/regenerate`: the new key, shown once.
    pub async fn regenerate_key(&self, gateway: &str, slot: KeySlot) -> Result<RegeneratedKey, ClientError> {
        let slot = match slot {
            KeySlot::Primary => "primary",
            KeySlot::Secondary => "secondary",
        };
        self.call(Method::POST, &["gateways", gateway, "keys", slot, "regenerate"], None, None::<&()>).await
    }

    /// `POST /api/v1/gateways/{gateway}/join-keys`: a key for adding nodes, shown once.
    pub async fn create_join_key(
        &self,
        gateway: &str,
        request: &NewJoinKey,
    ) -> Result<CreatedJoinKey, ClientError> {
        self.call(Method::POST, &["gateways", gateway, "join-keys"], None, Some(request)).await
    }

    /// `GET /api/v1/gateways/{gateway}/join-keys`: the keys made for adding nodes, newest first.
    pub async fn join_keys(&self, gateway: &str) -> Result<Vec<JoinKeyInfo>, ClientError> {
        self.call(Method::GET, &["gateways", gateway, "join-keys"], None, None::<&()>).await
    }

    /// `DELETE /api/v1/gateways/{gateway}/join-keys/{id}`
    pub async fn revoke_join_key(&self, gateway: &str, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["gateways", gateway, "join-keys", id]).await
    }

    /// `GET /api/v1/gateways/{gateway}/nodes`
    pub async fn nodes(&self, gateway: &str) -> Result<Vec<NodeView>, ClientError> {
        self.call(Method::GET, &["gateways", gateway, "nodes"], None, None::<&()>).await
    }

    /// `DELETE /api/v1/gateways/{gateway}/nodes/{node}`, by node id or name.
    pub async fn remove_node(&self, gateway: &str, node: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["gateways", gateway, "nodes", node]).await
    }

    /// `POST /api/v1/gateways/{gateway}/jobs`
    pub async fn submit_job(&self, gateway: &str, spec: &JobSpec) -> Result<JobView, ClientError> {
        let body = SubmitJob { spec: spec.clone() };
        self.call(Method::POST, &["gateways", gateway, "jobs"], None, Some(&body)).await
    }

    /// `GET /api/v1/gateways/{gateway}/jobs[?limit=N]`, newest first.
    pub async fn jobs(&self, gateway: &str, limit: Option<u32>) -> Result<Vec<JobView>, ClientError> {
        self.find_jobs(gateway, &JobsQuery { limit, ..JobsQuery::default() }).await
    }

    /// `GET /api/v1/gateways/{gateway}/jobs` with filters (state, time range, limit), newest
    /// first.
    pub async fn find_jobs(&self, gateway: &str, query: &JobsQuery) -> Result<Vec<JobView>, ClientError> {
        let mut pairs = Vec::new();
        if let Some(n) = query.limit {
            pairs.push(("limit", n.to_string()));
        }
        if let Some(state) = query.state {
            pairs.push(("state", state.as_str().to_owned()));
        }
        if let Some(ms) = query.since_ms {
            pairs.push(("since_ms", ms.to_string()));
        }
        if let Some(ms) = query.until_ms {
            pairs.push(("until_ms", ms.to_string()));
        }
        self.call(Method::GET, &["gateways", gateway, "jobs"], Some(&pairs), None::<&()>).await
    }

    /// `POST /api/v1/jobs/{job}/rerun`: a new job with the runs of this failed or cancelled
    /// one that didn't succeed. Refused (409) while it runs or when it succeeded.
    pub async fn rerun_job(&self, job: &str) -> Result<JobView, ClientError> {
        self.call(Method::POST, &["jobs", job, "rerun"], None, None::<&()>).await
    }

    /// `POST /api/v1/tokens`: a new token of `kind`, shown once.
    pub async fn create_token(&self, kind: TokenKind) -> Result<CreatedToken, ClientError> {
        self.call(Method::POST, &["tokens"], None, Some(&CreateToken { kind, gateway: None })).await
    }

    /// `POST /api/v1/tokens` for a token made for one gateway (a credential-manager token).
    pub async fn create_gateway_token(
        &self,
        kind: TokenKind,
        gateway: &str,
    ) -> Result<CreatedToken, ClientError> {
        let request = CreateToken { kind, gateway: Some(gateway.to_owned()) };
        self.call(Method::POST, &["tokens"], None, Some(&request)).await
    }

    /// `GET /api/v1/gateways/{gateway}/credentials`: the nodes' keys to seal for, and the
    /// gateway's credential state (names and versions, never values).
    pub async fn credentials(&self, gateway: &str) -> Result<GatewayCredentials, ClientError> {
        self.call(Method::GET, &["gateways", gateway, "credentials"], None, None::<&()>).await
    }

    /// `POST /api/v1/gateways/{gateway}/credentials`: a credential sealed for each node.
    pub async fn put_credential(
        &self,
        gateway: &str,
        request: &PutCredential,
    ) -> Result<PutCredentialAnswer, ClientError> {
        self.call(Method::POST, &["gateways", gateway, "credentials"], None, Some(request)).await
    }

    /// `POST /api/v1/admin-token/rotate`: a new admin token; this client's stops working.
    pub async fn rotate_admin_token(&self) -> Result<crate::protocol::RotatedAdminToken, ClientError> {
        self.call(Method::POST, &["admin-token", "rotate"], None, None::<&()>).await
    }

    /// `GET /api/v1/tokens`: ids, kinds and times, never the tokens.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.call(Method::GET, &["tokens"], None, None::<&()>).await
    }

    /// `DELETE /api/v1/tokens/{id}`
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["tokens", id]).await
    }

    /// `GET /api/v1/audit[?gateway=G&limit=N]`: the newest entries of the audit trail, oldest
    /// first.
    pub async fn audit(
        &self,
        gateway: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<AuditEntry>, ClientError> {
        let mut pairs = Vec::new();
        if let Some(g) = gateway {
            pairs.push(("gateway", g.to_owned()));
        }
        if let Some(n) = limit {
            pairs.push(("limit", n.to_string()));
        }
        self.call(Method::GET, &["audit"], Some(&pairs), None::<&()>).await
    }

    /// `GET /api/v1/jobs/{job}`, with its runs.
    pub async fn job(&self, job: &str) -> Result<JobView, ClientError> {
        self.call(Method::GET, &["jobs", job], None, None::<&()>).await
    }

    /// `POST /api/v1/jobs/{job}/cancel`: every run not yet ended is cancelled; the job as it is
    /// then. Refused (409) when the job has ended already.
    pub async fn cancel_job(&self, job: &str) -> Result<JobView, ClientError> {
        self.call(Method::POST, &["jobs", job, "cancel"], None, None::<&()>).await
    }

    // ---- node endpoints (the client holds an auth key to register, else a node token) ----

    /// `POST /api/v1/register` with a gateway auth key: the node's own credentials.
    pub async fn register(&self, request: &RegisterRequest) -> Result<RegisterResponse, ClientError> {
        self.call(Method::POST, &["register"], None, Some(request)).await
    }

    /// `POST /api/v1/heartbeat` with the node token: role, status and peers.
    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<HeartbeatResponse, ClientError> {
        self.call(Method::POST, &["heartbeat"], None, Some(beat)).await
    }

    /// `GET /api/v1/node/jobs[?limit=N]` with the node token: the recent jobs of this node's
    /// gateway, newest first (20 unless `limit` says, at most 100), without parts.
    pub async fn node_jobs(&self, limit: Option<u32>) -> Result<Vec<JobView>, ClientError> {
        let limit: Vec<_> = limit.map(|n| ("limit", n.to_string())).into_iter().collect();
        self.call(Method::GET, &["node", "jobs"], Some(&limit), None::<&()>).await
    }

    /// `POST /api/v1/unregister` with the node token: the node removes itself.
    pub async fn unregister(&self) -> Result<(), ClientError> {
        self.call_empty(Method::POST, &["unregister"]).await
    }

    /// `POST /api/v1/dispatch/claim`: up to `max` queued runs for the dispatcher, waiting up
    /// to `wait_ms` for one.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<Vec<RunView>, ClientError> {
        self.call(Method::POST, &["dispatch", "claim"], None, Some(request)).await
    }

    /// `POST /api/v1/runs/{run}/start`: this worker takes a run handed to it.
    pub async fn start_run(&self, run: &str, attempt: u32) -> Result<RunView, ClientError> {
        self.call(Method::POST, &["runs", run, "start"], None, Some(&StartRun { attempt })).await
    }

    /// `POST /api/v1/runs/{run}/progress`, with a checkpoint when one is given: `Ok` means the
    /// hub took it for the current attempt.
    pub async fn run_progress(&self, run: &str, progress: &RunProgress) -> Result<(), ClientError> {
        let url = self.url(&["runs", run, "progress"])?;
        self.send(Method::POST, url, Some(progress)).await.map(|_| ())
    }

    /// `POST /api/v1/runs/{run}/split`: a copy's listing run ends with the parts it found,
    /// which become queued runs. Refused (409) when the attempt isn't this node's any more.
    pub async fn split_run(&self, run: &str, split: &SplitRun) -> Result<(), ClientError> {
        let url = self.url(&["runs", run, "split"])?;
        self.send(Method::POST, url, Some(split)).await.map(|_| ())
    }

    /// `POST /api/v1/runs/{run}/finish`: the attempt's outcome, once.
    pub async fn finish_run(&self, run: &str, finish: &FinishRun) -> Result<RunView, ClientError> {
        self.call(Method::POST, &["runs", run, "finish"], None, Some(finish)).await
    }

    // ---- releases ----

    /// `POST /api/v1/releases` (admin): begins a release; refused unless its signature
    /// verifies against a key the hub trusts.
    pub async fn begin_release(&self, release: &NewRelease) -> Result<ReleaseView, ClientError> {
        self.call(Method::POST, &["releases"], None, Some(release)).await
    }

    /// `PUT /api/v1/releases/{id}/parts/{seq}` (admin): one piece of the release's file.
    pub async fn put_release_part(&self, id: &str, seq: u32, data: Vec<u8>) -> Result<(), ClientError> {
        let url = self.url(&["releases", id, "parts", &seq.to_string()])?;
        let request = self
            .http
            .put(url.clone())
            .header(AUTHORIZATION, self.token.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .timeout(TRANSFER_TIMEOUT)
            .body(data);
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        Self::answer(&url, status, text).map(|_| ())
    }

    /// `POST /api/v1/releases/{id}/publish` (admin): the hub checks the pieces' SHA-256.
    pub async fn publish_release(&self, id: &str) -> Result<ReleaseView, ClientError> {
        self.call(Method::POST, &["releases", id, "publish"], None, None::<&()>).await
    }

    /// `GET /api/v1/releases` (admin).
    pub async fn releases(&self) -> Result<Vec<ReleaseView>, ClientError> {
        self.call(Method::GET, &["releases"], None, None::<&()>).await
    }

    /// `GET /api/v1/releases/{id}/file` (node token): the release's file, written to `out` as
    /// it arrives; returns its SHA-256 (hex) and length. Checking them is the caller's job.
    pub async fn download_release(
        &self,
        id: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<(String, u64), ClientError> {
        use sha2::{Digest as _, Sha256};
        let url = self.url(&["releases", id, "file"])?;
        let mut response = self
            .http
            .get(url.clone())
            .header(AUTHORIZATION, self.token.clone())
            .timeout(TRANSFER_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.map_err(|e| self.unreachable(&e))?;
            return Self::answer(&url, status, text).map(|_| (String::new(), 0));
        }
        let mut hasher = Sha256::new();
        let mut length = 0u64;
        while let Some(piece) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            hasher.update(&piece);
            length += piece.len() as u64;
            out.write_all(&piece)
                .map_err(|e| ClientError::BadInput(format!("can't write the download: {e}")))?;
        }
        Ok((crate::encoding::hex(&hasher.finalize()), length))
    }

    // ---- plumbing ----

    /// `base` + `api/v1/` + the segments, each percent-encoded as needed.
    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        if let Some(bad) = segments.iter().find(|s| s.is_empty() || **s == "." || **s == "..") {
            return Err(ClientError::BadInput(format!(
                "{bad:?} can't be used as a name in a request; use the id instead (see `gatehouse hub gateway list`)"
            )));
        }
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| self.no_path())?;
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        Ok(url)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&[(&str, String)]>,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut url = self.url(segments)?;
        for (name, value) in query.unwrap_or_default() {
            url.query_pairs_mut().append_pair(name, value);
        }
        let (status, text) = self.send(method, url.clone(), body).await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Unexpected {
            url: url.to_string(),
            status: status.as_u16(),
            detail: format!("{e} in {}", quote(&text)),
        })
    }

    async fn call_empty(&self, method: Method, segments: &[&str]) -> Result<(), ClientError> {
        let url = self.url(segments)?;
        self.send(method, url, None::<&()>).await.map(|_| ())
    }

    /// Sends one request; a success status gives its body, anything else an error.
    async fn send<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<(StatusCode, String), ClientError> {
        let mut request = self.http.request(method, url.clone()).header(AUTHORIZATION, self.token.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        Self::answer(&url, status, text)
    }

    /// A success status gives the body, anything else the hub's refusal or an error.
    fn answer(url: &Url, status: StatusCode, text: String) -> Result<(StatusCode, String), ClientError> {
        if status.is_success() {
            return Ok((status, text));
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ClientError::Refused { status: status.as_u16(), body }),
            Err(_) => Err(ClientError::Unexpected {
                url: url.to_string(),
                status: status.as_u16(),
                detail: if text.trim().is_empty() { "an empty body".to_owned() } else { quote(&text) },
            }),
        }
    }

    fn no_path(&self) -> ClientError {
        ClientError::BadUrl { url: self.base.to_string(), reason: "it can't have a path".to_owned() }
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        let url = self.base.as_str().trim_end_matches('/').to_owned();
        if let Some(tls) = tls_cause(e) {
            if self.pinned && matches!(tls, rustls::Error::InvalidCertificate(_)) {
                return ClientError::PinMismatch { url };
            }
            return ClientError::Tls { url, reason: tls.to_string() };
        }
        let reason = if e.is_timeout() { "no answer in time".to_owned() } else { root_cause(e) };
        ClientError::Unreachable { url, reason }
    }
}

/// Checks an HTTP(S) proxy URL (`http://proxy.corp:3128`) the way [`HubClient::with_proxy`]
/// uses it. A user and password in the URL are refused: node.toml, where the proxy is kept,
/// holds no secrets.
pub fn parse_proxy(proxy: &str) -> Result<Url, ClientError> {
    let proxy = proxy.trim();
    let bad = |reason: &str| ClientError::BadProxy { proxy: proxy.to_owned(), reason: reason.to_owned() };
    if !proxy.contains("://") {
        return Err(bad("it needs a scheme; use http://HOST:PORT"));
    }
    let url = Url::parse(proxy).map_err(|e| bad(&e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        // Echoed back without the password.
        let mut shown = url.clone();
        if url.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        return Err(ClientError::BadProxy {
            proxy: shown.to_string(),
            reason: "leave out the user and password; proxies that ask for them are not supported".to_owned(),
        });
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("use http://HOST:PORT or https://HOST:PORT"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(bad("it has no host; use http://HOST:PORT"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("leave out the path, query and fragment; use http://HOST:PORT"));
    }
    Ok(url)
}

/// rustls on ring with the public web roots and `extra` roots.
/// The certificates in PEM text, as roots to trust besides the public ones (`--hub-ca`);
/// text holding none is refused.
pub fn pem_roots(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    use rustls::pki_types::pem::PemObject as _;
    let roots = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::BadInput(format!("the hub's CA certificate is not valid PEM ({e})")))?;
    if roots.is_empty() {
        return Err(ClientError::BadInput(
            "the hub's CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(roots)
}

/// How the hub's HTTPS certificate is trusted.
enum Trust {
    /// Signed by a public web root or one of these.
    Roots(Vec<CertificateDer<'static>>),
    /// Exactly the certificate of this fingerprint.
    Pin(CertPin),
}

fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let setup = |e: rustls::Error| ClientError::Setup(e.to_string());
    let config = match trust {
        Trust::Roots(extra) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for cert in extra {
                roots
                    .add(cert.clone())
                    .map_err(|e| ClientError::Setup(format!("an extra root certificate is unusable: {e}")))?;
            }
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(setup)?
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
        // The pin came with the auth key, from the hub itself: whoever issued the certificate
        // doesn't matter, only that it is the one the hub showed.
        Trust::Pin(pin) => crate::pinned_tls::client_config(provider, pin.0).map_err(setup)?,
    };
    Ok(config)
}

/// The innermost cause of an error: "Connection refused (os error 111)" rather than
/// "error sending request for url (…)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The TLS failure somewhere in an error's chain. rustls errors travel inside (nested)
/// `io::Error`s, whose `source` skips the error they wrap, so those are opened by hand.
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(cause) = next {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match cause.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    None
}

/// The start of an unexpected answer, on one line.
fn quote(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = line.chars();
    let start: String = chars.by_ref().take(QUOTE_CHARS).collect();
    if chars.next().is_some() { format!("{start:?}…") } else { format!("{start:?}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_a_path_prefix_and_encode_names() {
        let client = AdminClient::new("https://example.com/gatehouse", "gha_x").unwrap();
        assert_eq!(
            client.url(&["gateways", "a b/c"]).unwrap().as_str(),
            "https://example.com/gatehouse/api/v1/gateways/a%20b%2Fc"
        );
        let client = AdminClient::new("http://127.0.0.1:7070/", "gha_x").unwrap();
        assert_eq!(client.url(&["jobs", "j"]).unwrap().as_str(), "http://127.0.0.1:7070/api/v1/jobs/j");
        assert!(matches!(client.url(&["gateways", ".."]), Err(ClientError::BadInput(_))));
    }

    #[test]
    fn bad_urls_and_tokens_are_refused_before_sending() {
        assert!(matches!(AdminClient::new("ftp://hub", "t"), Err(ClientError::BadUrl { .. })));
        assert!(matches!(AdminClient::new("127.0.0.1:7070", "t"), Err(ClientError::BadUrl { .. })));
        assert!(matches!(AdminClient::new("http://u:p@hub", "t"), Err(ClientError::BadUrl { .. })));
        assert!(matches!(AdminClient::new("http://hub", " "), Err(ClientError::BadInput(_))));
        assert!(matches!(AdminClient::new("http://hub", "a\nb"), Err(ClientError::BadInput(_))));
    }

    #[test]
    fn proxies_are_checked_before_use() {
        assert_eq!(parse_proxy(" http://proxy.corp:3128 ").unwrap().as_str(), "http://proxy.corp:3128/");
        assert!(parse_proxy("https://proxy.corp").is_ok());
        for bad in ["proxy.corp:3128", "socks5://proxy:1080", "http://proxy/path", "http://", "not a url"] {
            assert!(matches!(parse_proxy(bad), Err(ClientError::BadProxy { .. })), "{bad} was accepted");
        }
        let error = parse_proxy("http://me:hunter2@proxy.corp:3128").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(matches!(
            HubClient::with_proxy("http://hub", "t", Some("ftp://proxy")),
            Err(ClientError::BadProxy { .. })
        ));
    }

    /// A one-shot HTTP proxy on loopback: answers the first request with `200 {}` and hands
    /// back its request line.
    async fn one_shot_proxy() -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = tokio::io::BufReader::new(stream);
            let mut request_line = String::new();
            stream.read_line(&mut request_line).await.unwrap();
            let mut header = String::new();
            while stream.read_line(&mut header).await.unwrap() > 2 {
                header.clear();
            }
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
            request_line
        });
        (format!("http://{address}"), task)
    }

    #[tokio::test]
    async fn a_proxied_client_sends_through_the_proxy_but_not_to_loopback() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (proxy, seen) = one_shot_proxy().await;
        let client = HubClient::with_proxy("http://hub.invalid:7070", "t", Some(&proxy)).unwrap();
        assert!(client.healthy().await.unwrap());
        assert_eq!(seen.await.unwrap().trim_end(), "GET http://hub.invalid:7070/healthz HTTP/1.1");

        // A hub on loopback is reached directly: the proxy sees nothing.
        let (proxy, seen) = one_shot_proxy().await;
        let hub = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", hub.local_addr().unwrap());
        drop(hub);
        let client = HubClient::with_proxy(&url, "t", Some(&proxy)).unwrap();
        assert!(client.healthy().await.is_err(), "the closed loopback port answered");
        assert!(!seen.is_finished(), "the proxy was used for a loopback hub");
        seen.abort();
    }

    #[test]
    fn debug_never_shows_the_token() {
        let client = AdminClient::new("http://hub", "gha_secret").unwrap();
        assert!(!format!("{client:?}").contains("secret"));
    }
}
