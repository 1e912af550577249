//! The S3 harness in `tests/common/s3.rs` really works, and the server behaves as the product
//! relies on: a signed PUT/GET round-trips any key, user metadata comes back on HEAD, a
//! create-only PUT on an existing key is refused, unfinished multipart uploads are listed until
//! aborted, the server listens on loopback only and leaves nothing behind, two run side by side,
//! and rclone copies a folder into it.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::s3::{SeaweedFs, rclone_command, run_bounded};
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bound for each rclone run (a few small files take well under a second).
const RCLONE_TIMEOUT: Duration = Duration::from_secs(120);

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[tokio::test]
async fn the_bucket_exists_lists_empty_and_refuses_unsigned_requests() {
    // Inside a tokio runtime on purpose: the helpers must work from async tests too.
    let s3 = SeaweedFs::start();
    assert_eq!(s3.request("HEAD", "", &[], &[], &[]).status, 200, "HEAD on the bucket");
    assert_eq!(s3.list_objects(""), Vec::<(String, u64)>::new());
    assert_eq!(s3.list_multipart_uploads(""), Vec::<(String, String)>::new());
    assert_eq!(s3.credential(), format!("{}:{}", s3.access_key(), s3.secret_key()));
    assert!(s3.endpoint().starts_with("http://127.0.0.1:"), "{}", s3.endpoint());

    // Without a signature the bucket is closed: the credentials are what let us in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let url = format!("{}/{}?list-type=2", s3.endpoint(), s3.bucket());
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 403, "an unsigned listing of {url}");
}

#[test]
fn a_signed_put_then_get_round_trips_bytes_under_a_key_with_unicode_and_a_space() {
    let s3 = SeaweedFs::start();
    let key = "exports/naïve café ✔/part 1+2=3 (ü).csv";
    let bytes: Vec<u8> = (0..=255_u8).cycle().take(100_000).collect();
    s3.put_object(key, &bytes);
    assert_eq!(s3.get_object(key), bytes);
    assert_eq!(s3.list_objects("exports/"), vec![(key.to_owned(), 100_000)]);
    assert_eq!(s3.list_objects("exports/naïve café ✔/"), vec![(key.to_owned(), 100_000)]);
    assert_eq!(s3.list_objects("other/"), Vec::<(String, u64)>::new());
    // An empty object is an object too.
    s3.put_object("exports/empty", b"");
    assert_eq!(s3.get_object("exports/empty"), b"");
    assert_eq!(s3.list_objects("exports/e"), vec![("exports/empty".to_owned(), 0)]);
}

#[test]
fn a_listing_follows_continuation_tokens_past_one_page() {
    let s3 = SeaweedFs::start();
    // max-keys is the server's (1000); more than that many keys need a second page.
    let keys: Vec<String> = (0..1005).map(|i| format!("many/{i:04}")).collect();
    std::thread::scope(|scope| {
        for chunk in keys.chunks(260) {
            let s3 = &s3;
            scope.spawn(move || chunk.iter().for_each(|key| s3.put_object(key, key.as_bytes())));
        }
    });
    let listed = s3.list_objects("many/");
    let expected: Vec<(String, u64)> = keys.iter().map(|key| (key.clone(), 9)).collect();
    assert_eq!(listed, expected);
}

#[test]
fn metadata_set_on_put_comes_back_on_head() {
    let s3 = SeaweedFs::start();
    let bytes = b"id,name\n1,ada\n";
    let sha256 = sha256_hex(bytes);
    let reply = s3.request(
        "PUT",
        "runs/1/table.csv",
        &[],
        &[("x-amz-meta-sha256", &sha256), ("x-amz-meta-rows", "1"), ("content-type", "text/csv")],
        bytes,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let metadata = s3.head_metadata("runs/1/table.csv");
    assert_eq!(metadata.get("sha256"), Some(&sha256), "{metadata:?}");
    assert_eq!(metadata.get("rows").map(String::as_str), Some("1"), "{metadata:?}");
    assert_eq!(s3.get_object("runs/1/table.csv"), bytes);
}

#[test]
fn a_create_only_put_on_an_existing_key_is_refused_with_412() {
    let s3 = SeaweedFs::start();
    let create_only = [("if-none-match", "*")];
    let first = s3.request("PUT", "runs/2/done", &[], &create_only, b"first");
    assert_eq!(first.status, 200, "a create-only PUT of a new key: {}", first.text());
    let second = s3.request("PUT", "runs/2/done", &[], &create_only, b"second");
    assert_eq!(second.status, 412, "a create-only PUT of an existing key: {}", second.text());
    assert_eq!(s3.get_object("runs/2/done"), b"first", "the refused PUT must not overwrite");
    // A plain PUT still overwrites.
    s3.put_object("runs/2/done", b"third");
    assert_eq!(s3.get_object("runs/2/done"), b"third");
}

#[test]
fn a_started_multipart_upload_is_listed_until_it_is_aborted() {
    let s3 = SeaweedFs::start();
    let key = "runs/3/big file.bin";
    let upload_id = s3.create_multipart_upload(key);
    assert!(!upload_id.is_empty());
    let part = s3.request("PUT", key, &[("partNumber", "1"), ("uploadId", &upload_id)], &[], &[7; 1024]);
    assert_eq!(part.status, 200, "UploadPart: {}", part.text());

    assert_eq!(s3.list_multipart_uploads("runs/3/"), vec![(key.to_owned(), upload_id.clone())]);
    assert_eq!(s3.list_multipart_uploads("runs/4/"), Vec::<(String, String)>::new());
    // Unfinished, it is no object.
    assert_eq!(s3.list_objects("runs/3/"), Vec::<(String, u64)>::new());

    s3.abort_multipart_upload(key, &upload_id);
    assert_eq!(s3.list_multipart_uploads(""), Vec::<(String, String)>::new());
    assert_eq!(s3.list_objects(""), Vec::<(String, u64)>::new());
}

#[test]
fn the_server_listens_only_on_loopback() {
    let s3 = SeaweedFs::start();
    s3.assert_listens_only_on_loopback();
    let addresses = s3.listening_addresses();
    let s3_port: u16 = s3.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        addresses.contains(&SocketAddr::from((Ipv4Addr::LOCALHOST, s3_port))),
        "S3's port {s3_port} is not among {addresses:?}"
    );
    // Five HTTP ports (S3, filer, master, volume, admin), each with a gRPC port; nothing else,
    // in particular not the fixed Iceberg/Lance ports that would clash between parallel tests.
    let ports: HashSet<u16> = addresses.iter().map(SocketAddr::port).collect();
    assert_eq!(ports.len(), 10, "{addresses:?}");
    for fixed in [8181, 8182, 9101, 9102] {
        assert!(!ports.contains(&fixed), "listens on fixed port {fixed}: {addresses:?}");
    }
}

#[test]
fn a_dropped_server_leaves_no_process_port_or_file_behind() {
    let s3 = SeaweedFs::start();
    s3.put_object("a", b"a");
    let pid = s3.pid();
    let dir = s3.dir().to_owned();
    let ports: Vec<u16> = s3.listening_addresses().iter().map(SocketAddr::port).collect();
    let s3_address: SocketAddr = s3.endpoint().trim_start_matches("http://").parse().unwrap();
    drop(s3);

    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&s3_address, Duration::from_millis(200)).is_ok() {
        assert!(Instant::now() < deadline, "{s3_address} still accepts connections 5 s after drop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&command_line).contains("mini"), "weed (pid {pid}) still runs");
    assert!(!dir.exists(), "{} is left behind", dir.display());
    let sockets: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.starts_with("seaweedfs-")
                && ports.iter().any(|port| name.ends_with(&format!("-{port}.sock")))
        })
        .collect();
    assert_eq!(sockets, Vec::<String>::new(), "sockets left in /tmp");
}

#[test]
fn two_servers_run_side_by_side_and_keep_their_objects_apart() {
    // Started at the same moment, as parallel tests would.
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(SeaweedFs::start);
        let second = scope.spawn(SeaweedFs::start);
        (first.join().unwrap(), second.join().unwrap())
    });
    assert_ne!(first.endpoint(), second.endpoint());
    assert_ne!(first.access_key(), second.access_key());
    first.put_object("only-in-first", b"1");
    assert_eq!(first.list_objects(""), vec![("only-in-first".to_owned(), 1)]);
    assert_eq!(second.list_objects(""), Vec::<(String, u64)>::new());
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn rclone_runs_and_copies_a_folder_into_the_bucket() {
    let mut version = rclone_command();
    version.arg("version");
    let version = run_bounded(version, RCLONE_TIMEOUT);
    let printed = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.status.success(),
        "rclone version: {printed}{}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert!(printed.starts_with("rclone v1."), "rclone version printed {printed:?}");

    let s3 = SeaweedFs::start();
    let source = tempfile::tempdir().unwrap();
    let files: [(&str, Vec<u8>); 3] = [
        ("a.csv", b"id\n1\n".to_vec()),
        ("nested/b c.json", br#"{"b":1}"#.to_vec()),
        ("nested/deeper/zeros.bin", vec![0; 300_000]),
    ];
    for (name, bytes) in &files {
        write(&source.path().join(name), bytes);
    }
    let source_arg = source.path().to_str().unwrap();
    let target = format!("X:{}/backup", s3.bucket());
    let copy = s3.rclone("X", &["copy", source_arg, &target], RCLONE_TIMEOUT);
    assert!(
        copy.status.success(),
        "rclone copy {source_arg} {target} failed ({}):\n{}{}",
        copy.status,
        String::from_utf8_lossy(&copy.stdout),
        String::from_utf8_lossy(&copy.stderr)
    );

    let mut expected: Vec<(String, u64)> =
        files.iter().map(|(name, bytes)| (format!("backup/{name}"), bytes.len() as u64)).collect();
    expected.sort();
    assert_eq!(s3.list_objects("backup/"), expected);
    for (name, bytes) in &files {
        assert_eq!(&s3.get_object(&format!("backup/{name}")), bytes, "backup/{name}");
    }
    // rclone's own view agrees.
    let listing = s3.rclone("X", &["lsf", "-R", "--files-only", &target], RCLONE_TIMEOUT);
    let mut names: Vec<String> =
        String::from_utf8_lossy(&listing.stdout).lines().map(str::to_owned).collect();
    names.sort();
    let mut wanted: Vec<String> = files.iter().map(|(name, _)| (*name).to_owned()).collect();
    wanted.sort();
    assert_eq!(names, wanted, "rclone lsf: {}", String::from_utf8_lossy(&listing.stderr));
    // Small files go up in single PUTs: no unfinished upload is left.
    assert_eq!(s3.list_multipart_uploads(""), Vec::<(String, String)>::new());
}
