//! Copies that can't succeed fail their run with a sentence that names the cause (the file,
//! bucket, endpoint, credential or node) and says what to do, and leave nothing half-written
//! under the sink prefix: no object, no unfinished multipart upload, no hidden staging file
//! (`.NAME.gh-RUN-ATTEMPT-….tmp`) in a folder. Faults a job meets on a real gateway (a real hub,
//! `gatehouse node run` processes and SeaweedFS on loopback): an unreachable endpoint (failing
//! within a minute, not after minutes of retries), a bucket that doesn't exist, a wrong secret,
//! a credential without `:`, a credential deleted between submit and run, a full disk at a
//! `file://` sink (a 2 MiB tmpfs), and an HTTPS endpoint whose certificate comes from a private
//! CA (trusted through `ca_file` or the system roots, refused without). Faults of the source,
//! made deterministic by running one part in-process with `transfer::execute`: a listed file
//! that vanished, one replaced by a FIFO, one changed before it is read, and a large one
//! changed (same size and modification time) while its parts are being uploaded. Every wait
//! is bounded.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, gateway, submit, wait_over, wait_until};
use common::data::bytes;
use common::s3::SeaweedFs;
use gatehouse::protocol::{Activity, CopySink, CopySource, ListedFile, Part, TransferProgress};
use gatehouse::transfer::{self, Checkpoint, Outcome, Reporter, TransferError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Files up to 8 MiB go up in one request, larger ones in 8 MiB parts: this is several.
const LARGE: usize = 12 << 20;

// ---- sources and sinks ----

/// A source folder with two small files and one large one; returns them by relative path.
fn make_source(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let files: BTreeMap<String, Vec<u8>> = [
        ("a.csv".to_owned(), bytes(1, 1000)),
        ("sub/b.csv".to_owned(), bytes(2, 70_000)),
        ("large.bin".to_owned(), bytes(3, LARGE)),
    ]
    .into_iter()
    .collect();
    for (path, content) in &files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }
    files
}

/// A job of one copy activity from `source` to `sink` (a `sink` object of the job spec).
fn copy_job(source: &Path, sink: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "name": "errors", "activities": [{
        "kind": "copy", "source": { "folder": source }, "sink": sink,
    }]})
}

/// An S3 sink object: `url` at `endpoint`, with the node credential `lake`.
fn s3_sink(url: &str, endpoint: &str) -> serde_json::Value {
    serde_json::json!({ "url": url, "endpoint": endpoint, "region": "us-east-1", "credential": "lake" })
}

/// Every file under `root`, hidden ones included (so a staging file shows), by relative path.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                files.insert(relative, std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    files
}

/// Asserts that a folder sink holds no staging file and only complete copies of source files.
fn assert_nothing_half_written(sink: &Path, source: &BTreeMap<String, Vec<u8>>) {
    for (path, content) in tree(sink) {
        let name = Path::new(&path).file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "a staging file was left at the sink: {path}");
        assert!(source.get(&path) == Some(&content), "{path} at the sink is not a complete copy");
    }
}

/// Asserts that nothing is under `prefix` at the S3 server: no object, no unfinished upload.
fn assert_nothing_at(s3: &SeaweedFs, prefix: &str) {
    assert_eq!(s3.list_objects(prefix), Vec::<(String, u64)>::new(), "objects left under {prefix}");
    assert_eq!(
        s3.list_multipart_uploads(prefix),
        Vec::<(String, String)>::new(),
        "unfinished multipart uploads left under {prefix}"
    );
}

// ---- jobs on a real gateway ----

/// Asserts the job failed, each failed run with a one-line error; returns the errors.
fn failure(job: &serde_json::Value) -> Vec<String> {
    assert_eq!(job["state"], "failed", "{job:#}");
    let errors: Vec<String> = job["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["error"].as_str())
        .map(str::to_owned)
        .collect();
    assert!(!errors.is_empty(), "a failed job with no run error: {job:#}");
    eprintln!("run errors:\n{}", errors.join("\n"));
    for error in &errors {
        assert!(!error.contains('\n'), "a run error is one sentence, not several lines: {error:?}");
    }
    errors
}

/// Asserts that some run's error says every one of `says`.
fn assert_says(errors: &[String], says: &[&str]) {
    assert!(
        errors.iter().any(|error| says.iter().all(|s| error.contains(s))),
        "no run error says all of {says:?}:\n{}",
        errors.join("\n")
    );
}

/// Asserts that no run's error shows `text`.
fn assert_never_shows(errors: &[String], text: &str, what: &str) {
    assert!(errors.iter().all(|error| !error.contains(text)), "{what} is in an error: {errors:#?}");
}

/// A gateway of one node that holds the credential `lake` = `value`, reported to the hub.
fn gateway_with_credential(value: &str) -> (Hub, Vec<Node>) {
    let (hub, nodes) = gateway(1);
    set_credential(&hub, &nodes[0], value);
    (hub, nodes)
}

/// Sets `lake` on `node` and waits until the hub has heard the node holds this value (its
/// credential version moved on).
fn set_credential(hub: &Hub, node: &Node, value: &str) {
    let version = |hub: &Hub| hub.nodes("lake")[0]["metrics"]["credential_version"].as_u64().unwrap_or(0);
    let before = version(hub);
    node.set_credential("lake", value);
    wait_until(Duration::from_secs(30), "the node to report the credential", || {
        let nodes = hub.nodes("lake");
        nodes[0]["metrics"]["credential_names"] == serde_json::json!(["lake"]) && version(hub) > before
    });
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    common::process::free_port()
}

#[test]
fn an_unreachable_endpoint_fails_the_run_within_a_minute_naming_the_endpoint() {
    let (hub, _nodes) = gateway_with_credential("AKIDEXAMPLE:wJalrXUtnFEMIexample");
    let source = tempfile::tempdir().unwrap();
    make_source(source.path());
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let spec = copy_job(source.path(), &s3_sink("s3://lake/exports/", &endpoint));

    let started = Instant::now();
    let job = wait_over(&hub, &submit(&hub, &spec).unwrap());
    let took = started.elapsed();
    let errors = failure(&job);
    assert_says(&errors, &["node n1 can't reach", &endpoint, "check the endpoint URL"]);
    assert!(took < Duration::from_secs(60), "the run took {took:?} to fail: {errors:#?}");
}

#[test]
fn a_bucket_that_doesnt_exist_fails_the_run_naming_the_bucket() {
    let s3 = SeaweedFs::start();
    let (hub, _nodes) = gateway_with_credential(&s3.credential());
    let source = tempfile::tempdir().unwrap();
    make_source(source.path());
    let spec = copy_job(source.path(), &s3_sink("s3://nosuchbucket/exports/", &s3.endpoint()));

    let errors = failure(&wait_over(&hub, &submit(&hub, &spec).unwrap()));
    assert_says(&errors, &["node n1", "\"nosuchbucket\"", "doesn't exist", &s3.endpoint(), "create it"]);
    assert!(!s3.bucket_exists("nosuchbucket"), "the copy created the bucket");
    assert_nothing_at(&s3, "");
}

#[test]
fn a_wrong_secret_is_denied_and_a_credential_without_a_colon_is_refused_both_never_shown() {
    let s3 = SeaweedFs::start();
    let wrong_secret = "not-the-secret-0123456789";
    let (hub, nodes) = gateway_with_credential(&format!("{}:{wrong_secret}", s3.access_key()));
    let source = tempfile::tempdir().unwrap();
    make_source(source.path());
    let url = format!("s3://{}/exports/", s3.bucket());
    let spec = copy_job(source.path(), &s3_sink(&url, &s3.endpoint()));

    let errors = failure(&wait_over(&hub, &submit(&hub, &spec).unwrap()));
    assert_says(
        &errors,
        &["node n1 was denied", &url, &s3.endpoint(), "check the keys in the node credential \"lake\""],
    );
    assert_never_shows(&errors, wrong_secret, "the secret");
    assert_nothing_at(&s3, "exports/");

    let no_colon = "AKIDEXAMPLEwithoutacolon";
    set_credential(&hub, &nodes[0], no_colon);
    let errors = failure(&wait_over(&hub, &submit(&hub, &spec).unwrap()));
    assert_says(
        &errors,
        &["\"lake\" on node n1", "ACCESS_KEY_ID:SECRET_ACCESS_KEY", "gatehouse node credential set lake"],
    );
    assert_never_shows(&errors, no_colon, "the credential's value");
    assert_nothing_at(&s3, "exports/");
}

/// Credentials sync to every node of a gateway, so a node that lacks one the others hold
/// can't be arranged; instead the only node holds it at submit (the hub checks), then loses it
/// while stopped, and runs the job when it comes back.
#[test]
fn a_credential_deleted_after_submit_fails_the_run_naming_the_node_and_the_credential() {
    let (hub, mut nodes) = gateway_with_credential("AKIDEXAMPLE:wJalrXUtnFEMIexample");
    let source = tempfile::tempdir().unwrap();
    make_source(source.path());
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let spec = copy_job(source.path(), &s3_sink("s3://lake/exports/", &endpoint));

    nodes[0].process.as_mut().unwrap().stop();
    nodes[0].command(&["node", "credential", "delete", "lake"]);
    let id = submit(&hub, &spec).expect("taken: the hub last heard the node holds the credential");
    nodes[0].run(&[]);
    let errors = failure(&wait_over(&hub, &id));
    assert_says(&errors, &["node n1", "no credential named \"lake\"", "gatehouse node credential set lake"]);
}

/// A tmpfs of 2 MiB mounted on a temp dir, unmounted on drop (before the dir goes).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "mounting a 2 MiB tmpfs for the full-disk test needs root (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a node process not reaped yet): detach it now, it goes when unused.
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

#[test]
fn a_full_disk_at_a_folder_sink_fails_the_run_and_leaves_no_partial_or_staging_file() {
    // Declared first, so it is unmounted after the nodes are gone.
    let disk = SmallDisk::mount();
    let (hub, _nodes) = gateway(1);
    let source = tempfile::tempdir().unwrap();
    let mut expected = make_source(source.path());
    let medium = bytes(4, 3 << 20);
    std::fs::write(source.path().join("medium.bin"), &medium).unwrap();
    expected.insert("medium.bin".into(), medium);
    let sink = serde_json::json!({ "url": format!("file://{}/", disk.path().display()) });

    let errors = failure(&wait_over(&hub, &submit(&hub, &copy_job(source.path(), &sink)).unwrap()));
    let written = format!("node n1 can't write {}/", disk.path().display());
    assert_says(&errors, &[&written, "disk is full", "free space", "run the job again"]);
    assert_never_shows(&errors, ".gh-", "a hidden staging file's name (not the file's)");
    assert_nothing_half_written(disk.path(), &expected);
    let left = tree(disk.path());
    assert!(!left.contains_key("large.bin") && !left.contains_key("medium.bin"), "{:?}", left.keys());
}

#[test]
fn an_https_endpoint_with_a_private_ca_is_trusted_through_ca_file_or_the_system_roots_only() {
    let certificates_dir = tempfile::tempdir().unwrap();
    let certificates = common::s3::make_certificates(certificates_dir.path());
    let s3 = SeaweedFs::start_with(&common::s3::Options { https: Some(certificates.server.clone()) });
    let (hub, mut nodes) = gateway_with_credential(&s3.credential());
    let source = tempfile::tempdir().unwrap();
    let expected = make_source(source.path());
    let sink = |prefix: &str, ca_file: Option<&Path>| {
        let mut sink = s3_sink(&format!("s3://{}/{prefix}/", s3.bucket()), &s3.https_endpoint());
        if let Some(ca_file) = ca_file {
            sink["ca_file"] = serde_json::json!(ca_file);
        }
        copy_job(source.path(), &sink)
    };
    let assert_copied = |prefix: &str| {
        for (path, content) in &expected {
            let key = format!("{prefix}/{path}");
            assert!(s3.get_object(&key) == *content, "{key} byte for byte");
        }
        assert!(s3.list_multipart_uploads("").is_empty(), "no unfinished upload");
    };

    let job = wait_over(&hub, &submit(&hub, &sink("trusted", Some(&certificates.ca_file))).unwrap());
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_copied("trusted");

    let errors = failure(&wait_over(&hub, &submit(&hub, &sink("untrusted", None)).unwrap()));
    assert_says(&errors, &[&s3.https_endpoint(), "certificate", "not trusted", "ca_file"]);
    assert_nothing_at(&s3, "untrusted/");

    let missing = Path::new("/nonexistent/private-ca.pem");
    let errors = failure(&wait_over(&hub, &submit(&hub, &sink("missing-ca", Some(missing))).unwrap()));
    assert_says(&errors, &["/nonexistent/private-ca.pem", "ca_file"]);
    assert_nothing_at(&s3, "missing-ca/");

    // The system roots count too: the same CA in the node's SSL_CERT_FILE, no ca_file.
    nodes[0].process.as_mut().unwrap().stop();
    nodes[0].run(&[("SSL_CERT_FILE", certificates.ca_file.to_str().unwrap())]);
    let job = wait_over(&hub, &submit(&hub, &sink("system", None)).unwrap());
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_copied("system");
}

// ---- one part in-process: faults of the source, made deterministic ----

/// Takes every checkpoint (keeping the last); `hook` runs on each before it is taken.
struct Recorder {
    last: Mutex<Option<Checkpoint>>,
    hook: Box<dyn Fn(&Checkpoint) + Send + Sync>,
}

impl Recorder {
    fn new(hook: impl Fn(&Checkpoint) + Send + Sync + 'static) -> Self {
        Recorder { last: Mutex::new(None), hook: Box::new(hook) }
    }
}

impl Reporter for Recorder {
    fn progress(&self, _progress: TransferProgress) {}

    async fn checkpoint(
        &self,
        _progress: TransferProgress,
        checkpoint: &Checkpoint,
    ) -> Result<(), TransferError> {
        (self.hook)(checkpoint);
        *self.last.lock().unwrap() = Some(checkpoint.clone());
        Ok(())
    }
}

/// `name` under `root` as a listing records it now.
fn listed(root: &Path, name: &str) -> ListedFile {
    let meta = std::fs::metadata(root.join(name)).unwrap();
    ListedFile { path: name.to_owned(), size: meta.len(), modified_ms: transfer::folder::modified_ms(&meta) }
}

fn folder_sink(dir: &Path) -> CopySink {
    CopySink { url: format!("file://{}/", dir.display()), ..CopySink::default() }
}

fn s3_copy_sink(s3: &SeaweedFs, prefix: &str) -> CopySink {
    CopySink {
        url: format!("s3://{}/{prefix}/", s3.bucket()),
        endpoint: Some(s3.endpoint()),
        region: Some(s3.region().to_owned()),
        credential: Some("lake".into()),
        ca_file: None,
    }
}

/// Copies `files` of `root` to `sink` as one part, in-process on node n1, bounded by a minute;
/// `credential` is the value of every credential asked for.
fn execute(
    root: &Path,
    files: Vec<ListedFile>,
    sink: CopySink,
    credential: Option<String>,
    reporter: &Recorder,
) -> Result<Outcome, TransferError> {
    let activity = Activity::Copy {
        source: CopySource { folder: Some(root.to_str().unwrap().to_owned()), ..CopySource::default() },
        sink,
        overwrite: false,
    };
    let part = Part::Files { files };
    let credentials = move |_: &str| credential.clone();
    let ctx = transfer::Context {
        node: "n1",
        run: "run1",
        attempt: 1,
        credentials: &credentials,
        reporter,
        cancel: tokio_util::sync::CancellationToken::new(),
        bandwidth: transfer::bandwidth::Bandwidth::default(),
        checkpoint: Checkpoint::default(),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let outcome = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), transfer::execute(&activity, &part, &ctx)).await
    });
    // A read stuck in a blocking thread must not hold the test up on the way out.
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome.unwrap_or_else(|_| panic!("the copy of {} didn't end within a minute", root.display()))
}

fn error_of(outcome: Result<Outcome, TransferError>) -> String {
    match outcome {
        Ok(outcome) => panic!("the copy succeeded: {outcome:?}"),
        Err(error) => {
            eprintln!("the part's error: {error}");
            error.to_string()
        }
    }
}

#[test]
fn a_listed_file_that_vanished_fails_its_part_saying_it_was_listed() {
    let source = tempfile::tempdir().unwrap();
    let sink = tempfile::tempdir().unwrap();
    let expected = make_source(source.path());
    for gone in ["sub/b.csv", "large.bin"] {
        let files: Vec<ListedFile> = expected.keys().map(|name| listed(source.path(), name)).collect();
        let kept = tempfile::tempdir().unwrap();
        std::fs::rename(source.path().join(gone), kept.path().join("file")).unwrap();
        let error =
            error_of(execute(source.path(), files, folder_sink(sink.path()), None, &Recorder::new(|_| {})));
        let path = source.path().join(gone).display().to_string();
        assert!(error.contains(&format!("node n1 can't find {path}, which was listed")), "{error}");
        assert!(error.contains("mounted at the same path on every node"), "{error}");
        assert!(!sink.path().join(gone).exists(), "{gone} appeared at the sink");
        assert_nothing_half_written(sink.path(), &expected);
        std::fs::rename(kept.path().join("file"), source.path().join(gone)).unwrap();
    }
}

#[test]
fn a_listed_file_replaced_by_a_fifo_fails_its_part_instead_of_waiting_forever() {
    let source = tempfile::tempdir().unwrap();
    let sink = tempfile::tempdir().unwrap();
    let expected = make_source(source.path());
    let files: Vec<ListedFile> = expected.keys().map(|name| listed(source.path(), name)).collect();
    let fifo = source.path().join("a.csv");
    std::fs::remove_file(&fifo).unwrap();
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success(), "mkfifo {}", fifo.display());

    let error =
        error_of(execute(source.path(), files, folder_sink(sink.path()), None, &Recorder::new(|_| {})));
    assert!(error.contains(&format!("{} changed while it was being copied", fifo.display())), "{error}");
    assert!(!sink.path().join("a.csv").exists(), "a.csv appeared at the sink");
    assert_nothing_half_written(sink.path(), &expected);
}

#[test]
fn a_file_changed_after_listing_fails_its_part_naming_it_and_writes_nothing_of_it() {
    let source = tempfile::tempdir().unwrap();
    let sink = tempfile::tempdir().unwrap();
    let expected = make_source(source.path());
    let files: Vec<ListedFile> = expected.keys().map(|name| listed(source.path(), name)).collect();
    let changed = source.path().join("sub/b.csv");
    std::fs::write(&changed, b"rewritten after the listing\n").unwrap();

    let error =
        error_of(execute(source.path(), files, folder_sink(sink.path()), None, &Recorder::new(|_| {})));
    assert!(error.contains(&format!("{} changed while it was being copied", changed.display())), "{error}");
    assert!(error.contains("run the job again once the file stays unchanged"), "{error}");
    assert!(!sink.path().join("sub/b.csv").exists(), "the changed file appeared at the sink");
    assert_nothing_half_written(sink.path(), &expected);
}

/// A recorder that, once a part of the large upload is stored, changes bytes of the large
/// file's last part (not read yet) and puts its modification time back: same size, same time,
/// other content, which only the hash can tell.
fn changing_the_last_part(path: PathBuf) -> Recorder {
    let changed = std::sync::atomic::AtomicBool::new(false);
    Recorder::new(move |checkpoint| {
        let stored = checkpoint.upload.as_ref().map_or(0, |u| u.parts.iter().flatten().count());
        if stored >= 1 && !changed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            use std::os::unix::fs::FileExt as _;
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let size = file.metadata().unwrap().len();
            file.write_all_at(b"changed while it was being uploaded", size - 1000).unwrap();
            file.set_modified(modified).unwrap();
        }
    })
}

/// A large file of six parts: four are read ahead, so the last is read after a part is stored.
fn make_large_source(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let content = bytes(5, (41 << 20) + 12_345);
    std::fs::write(root.join("huge.bin"), &content).unwrap();
    BTreeMap::from([("huge.bin".to_owned(), content)])
}

#[test]
fn a_large_file_changed_during_its_upload_fails_and_leaves_no_upload_or_staging_file() {
    let s3 = SeaweedFs::start();
    let source = tempfile::tempdir().unwrap();
    let expected = make_large_source(source.path());
    let huge = source.path().join("huge.bin");
    let says = format!("{} changed while it was being copied", huge.display());

    let recorder = changing_the_last_part(huge.clone());
    let files = vec![listed(source.path(), "huge.bin")];
    let error = error_of(execute(
        source.path(),
        files,
        s3_copy_sink(&s3, "changed"),
        Some(s3.credential()),
        &recorder,
    ));
    assert!(error.contains(&says), "{error}");
    assert_nothing_at(&s3, "changed/");
    let left = recorder.last.lock().unwrap().clone().unwrap();
    assert!(left.upload.is_none(), "the last checkpoint still names the aborted upload: {left:?}");

    std::fs::write(&huge, &expected["huge.bin"]).unwrap();
    let sink = tempfile::tempdir().unwrap();
    let files = vec![listed(source.path(), "huge.bin")];
    let error = error_of(execute(
        source.path(),
        files,
        folder_sink(sink.path()),
        None,
        &changing_the_last_part(huge),
    ));
    assert!(error.contains(&says), "{error}");
    assert!(tree(sink.path()).is_empty(), "left at the folder sink: {:?}", tree(sink.path()).keys());
}

#[test]
fn a_credential_missing_on_the_node_that_runs_the_part_is_named_with_the_node() {
    let source = tempfile::tempdir().unwrap();
    let expected = make_source(source.path());
    let files: Vec<ListedFile> = expected.keys().map(|name| listed(source.path(), name)).collect();
    let sink = CopySink {
        url: "s3://lake/exports/".into(),
        endpoint: Some(format!("http://127.0.0.1:{}", closed_port())),
        region: Some("us-east-1".into()),
        credential: Some("lake".into()),
        ca_file: None,
    };
    let error = error_of(execute(source.path(), files, sink, None, &Recorder::new(|_| {})));
    assert_eq!(
        error,
        "node n1 holds no credential named \"lake\"; set it on a node with: gatehouse node credential set lake"
    );
}
