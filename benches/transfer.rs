//! Benchmarks of copy activities against the tools administrators use today, in one run on
//! this machine, all on loopback: a real hub and real `gatehouse node run` processes (the
//! release binary), SeaweedFS as the S3 server, rclone 1.75 and `cp -r` as peers.
//!
//! 1. **small**: 2,000 files of 1 MiB (2 GiB); **large**: 4 files of 512 MiB. Each to a
//!    `file://` folder and to the S3 server: Gatehouse on 1 node and on 3 nodes, `rclone copy`
//!    with the same parallelism and part size, and (folders only) `cp -r`, alone and followed
//!    by `sync` of the files it wrote. A fresh prefix or folder per row. MB/s (10^6 bytes per
//!    second) and the ratios Gatehouse/rclone, Gatehouse/cp and Gatehouse/(cp + sync) are
//!    printed; every copy is checked afterwards (object count and bytes).
//! 2. **sql**: 5 M rows from PostgreSQL as CSV to a `file://` folder (1 node, 4 partitions)
//!    against `psql -c "\copy (query) TO file CSV HEADER"`.
//! 3. Peak RSS (VmHWM) of each Gatehouse node over the copies.
//!
//! Why two cp figures: Gatehouse commits every file durably (fsync, then the create-only link,
//! exactly once), while `cp -r` returns with the data still in the page cache. `cp -r` followed
//! by `sync FILES` (coreutils: an fsync of each copied file and folder, timed with the copy)
//! does the same durable work, so GH1/(cp + sync) is the like-for-like ratio for the target
//! "large files to file:// ≥ 80 % of cp"; GH1/cp is kept to show what durability costs.
//!
//! Gatehouse is timed from the submit request to the last run's `finished_ms` (hub clock);
//! the peers from spawn to exit. Nothing is asserted about speed. Run with
//! `cargo bench --bench transfer`, or some parts: `cargo bench --bench transfer -- small sql`.
//! Data goes to `$GATEHOUSE_BENCH_DIR` (default: a temporary folder under the target dir's
//! parent, on disk): about 4 GiB of source and as much of sink, removed at the end.

#![allow(clippy::unwrap_used, reason = "a benchmark: a failed setup step should stop it loudly")]

#[allow(dead_code, reason = "the benchmark uses only some of the helpers")]
#[path = "../tests/common/process.rs"]
mod process;

#[allow(dead_code, reason = "the benchmark uses only some of the helpers")]
#[path = "../tests/common/cluster.rs"]
mod cluster;

#[allow(dead_code, reason = "the benchmark uses only some of the helpers")]
#[path = "../tests/common/s3.rs"]
mod s3;

#[allow(dead_code, reason = "the benchmark uses only some of the helpers")]
#[path = "../tests/common/postgres.rs"]
mod postgres;

#[path = "support/figures.rs"]
mod figures;

use cluster::{Hub, Node, wait_until};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Gatehouse's part size and a run's files in flight, which rclone gets too.
const PART_MIB: u64 = 8;
const TRANSFERS: &str = "8";
const UPLOAD_CONCURRENCY: &str = "4";

struct Dataset {
    name: &'static str,
    files: u64,
    size: u64,
}

const SMALL: Dataset = Dataset { name: "small", files: 2000, size: MIB };
const LARGE: Dataset = Dataset { name: "large", files: 4, size: 512 * MIB };

fn main() {
    let base = std::env::var_os("GATEHOUSE_BENCH_DIR")
        .map_or_else(|| std::env::temp_dir().join("gatehouse-bench"), PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    let work = tempfile::tempdir_in(&base).unwrap();
    println!(
        "# Copy benchmark ({} cores, data in {})",
        std::thread::available_parallelism().map_or(0, usize::from),
        work.path().display()
    );
    println!(
        "rclone: --transfers {TRANSFERS} --s3-upload-concurrency {UPLOAD_CONCURRENCY} --s3-chunk-size {PART_MIB}M --s3-upload-cutoff {PART_MIB}M; Gatehouse: defaults (8 MiB parts)\n"
    );

    let s3 = s3::SeaweedFs::start();
    let hub = Hub::start();
    let one = Gateway::start(&hub, "one", 1, &s3);
    let three = Gateway::start(&hub, "three", 3, &s3);

    let mut rows: Vec<Row> = Vec::new();
    for dataset in [SMALL, LARGE] {
        if !figures::wanted(dataset.name) {
            continue;
        }
        let source = work.path().join(format!("source-{}", dataset.name));
        make_files(&source, &dataset);
        let bytes = dataset.files * dataset.size;
        for to_s3 in [false, true] {
            let sink = if to_s3 { "S3" } else { "file://" };
            let label = format!(
                "{} ({} × {}) → {sink}",
                dataset.name,
                dataset.files,
                gatehouse::encoding::binary_size(dataset.size)
            );
            let target = |who: &str| {
                if to_s3 {
                    Target::S3(format!("{}-{who}-{}", dataset.name, rand_suffix()))
                } else {
                    Target::Folder(work.path().join(format!("sink-{}-{who}", dataset.name)))
                }
            };
            let gh1 = one.copy(&hub, &source, &target("gh1"), &s3, bytes, dataset.files);
            let gh3 = three.copy(&hub, &source, &target("gh3"), &s3, bytes, dataset.files);
            let rclone = rclone_copy(&source, &target("rclone"), &s3, bytes, dataset.files);
            let cp = (!to_s3).then(|| cp_copy(&source, &target("cp"), bytes, dataset.files, false));
            let cp_sync = (!to_s3).then(|| cp_copy(&source, &target("cpsync"), bytes, dataset.files, true));
            rows.push(Row { label, bytes, gh1, gh3, rclone, cp, cp_sync });
            for dir in ["gh1", "gh3", "rclone", "cp", "cpsync"] {
                let _ = std::fs::remove_dir_all(work.path().join(format!("sink-{}-{dir}", dataset.name)));
            }
        }
        let _ = std::fs::remove_dir_all(&source);
    }
    print_rows(&rows);

    if figures::wanted("sql") {
        sql(&hub, &one, work.path());
    }
    println!("\nPeak RSS of the nodes (VmHWM) over everything above:");
    for (name, pid) in
        one.nodes.iter().chain(&three.nodes).map(|n| (n.name.clone(), n.process.as_ref().unwrap().pid()))
    {
        println!("  {name}: {}", peak_rss(pid));
    }
}

/// A gateway of `count` running nodes holding the S3 credential.
struct Gateway {
    name: String,
    nodes: Vec<Node>,
}

enum Target {
    Folder(PathBuf),
    /// A prefix in the S3 server's bucket.
    S3(String),
}

impl Gateway {
    fn start(hub: &Hub, name: &str, count: usize, s3: &s3::SeaweedFs) -> Gateway {
        let key = hub.create_gateway(name, &["--policy", "distribute"]);
        let nodes: Vec<Node> = (1..=count).map(|i| Node::start(&key, &format!("{name}{i}"), &[])).collect();
        nodes[0].set_credential("lake", &s3.credential());
        wait_until(Duration::from_secs(60), "the nodes Online and holding the credential", || {
            let list = hub.nodes(name);
            list.len() == count
                && list.iter().all(|n| {
                    n["status"] == "Online" && n["metrics"]["credential_names"] == serde_json::json!(["lake"])
                })
        });
        std::thread::sleep(Duration::from_millis(1500));
        Gateway { name: name.to_owned(), nodes }
    }

    /// Copies `source` to `target` with one job; returns MB/s (hub clock, submit → last run).
    fn copy(
        &self,
        hub: &Hub,
        source: &Path,
        target: &Target,
        s3: &s3::SeaweedFs,
        bytes: u64,
        files: u64,
    ) -> f64 {
        let sink = match target {
            Target::Folder(dir) => serde_json::json!({ "url": format!("file://{}/", dir.display()) }),
            Target::S3(prefix) => serde_json::json!({
                "url": format!("s3://{}/{prefix}/", s3.bucket()), "endpoint": s3.endpoint(),
                "region": s3.region(), "credential": "lake",
            }),
        };
        let spec = serde_json::json!({ "name": "bench", "activities": [
            { "kind": "copy", "source": { "folder": source }, "sink": sink }
        ]});
        let seconds = run_job(hub, &self.name, &spec);
        check(target, s3, bytes, files);
        mb_per_second(bytes, seconds)
    }
}

fn rclone_copy(source: &Path, target: &Target, s3: &s3::SeaweedFs, bytes: u64, files: u64) -> f64 {
    let destination = match target {
        Target::Folder(dir) => dir.to_str().unwrap().to_owned(),
        Target::S3(prefix) => format!("bench:{}/{prefix}", s3.bucket()),
    };
    let chunk = format!("{PART_MIB}M");
    let args = [
        "--config",
        "/dev/null",
        "copy",
        source.to_str().unwrap(),
        &destination,
        "--transfers",
        TRANSFERS,
        "--checkers",
        TRANSFERS,
        "--s3-upload-concurrency",
        UPLOAD_CONCURRENCY,
        "--s3-chunk-size",
        &chunk,
        "--s3-upload-cutoff",
        &chunk,
    ];
    let started = Instant::now();
    let output = s3.rclone("bench", &args, Duration::from_secs(900));
    let seconds = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "rclone: {}", String::from_utf8_lossy(&output.stderr));
    check(target, s3, bytes, files);
    mb_per_second(bytes, seconds)
}

/// `cp -r` of `source` into the folder; with `sync`, timed until every copied file and folder
/// is on disk too (`sync FILE…`, an fsync of each, as Gatehouse does before it says done).
fn cp_copy(source: &Path, target: &Target, bytes: u64, files: u64, sync: bool) -> f64 {
    let Target::Folder(dir) = target else { unreachable!("cp copies to folders") };
    let started = Instant::now();
    let status = Command::new("cp").arg("-r").arg(source).arg(dir).status().unwrap();
    assert!(status.success());
    if sync {
        let written: Vec<PathBuf> = walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
            .map(walkdir::DirEntry::into_path)
            .collect();
        for batch in written.chunks(500) {
            let status = Command::new("sync").arg("--").args(batch).status().unwrap();
            assert!(status.success(), "sync of the copied files");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (count, total) = folder_totals(dir);
    assert_eq!((count, total), (files, bytes), "cp copied everything");
    mb_per_second(bytes, seconds)
}

/// Checks the copy holds every file with every byte (counts and sizes; the tests check content).
fn check(target: &Target, s3: &s3::SeaweedFs, bytes: u64, files: u64) {
    let (count, total) = match target {
        Target::Folder(dir) => folder_totals(dir),
        Target::S3(prefix) => {
            let objects = s3.list_objects(&format!("{prefix}/"));
            (objects.len() as u64, objects.iter().map(|(_, size)| size).sum())
        }
    };
    assert_eq!((count, total), (files, bytes), "the copy holds every file");
}

fn folder_totals(dir: &Path) -> (u64, u64) {
    let mut found = (0, 0);
    for entry in
        walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file())
    {
        found.0 += 1;
        found.1 += entry.metadata().map_or(0, |m| m.len());
    }
    found
}

fn make_files(dir: &Path, dataset: &Dataset) {
    std::fs::create_dir_all(dir).unwrap();
    let mut block = vec![0u8; usize::try_from(MIB).unwrap()];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..dataset.files {
        let sub = dir.join(format!("d{:02}", i % 20));
        std::fs::create_dir_all(&sub).unwrap();
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(sub.join(format!("f{i:05}.bin"))).unwrap());
        for _ in 0..dataset.size / MIB {
            // xorshift: incompressible, different in every block.
            for chunk in block.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            file.write_all(&block).unwrap();
        }
        file.flush().unwrap();
    }
    // Every tool reads from the page cache alike.
    let _ = Command::new("sync").status();
}

struct Row {
    label: String,
    bytes: u64,
    gh1: f64,
    gh3: f64,
    rclone: f64,
    cp: Option<f64>,
    /// `cp -r` followed by `sync` of what it wrote.
    cp_sync: Option<f64>,
}

fn print_rows(rows: &[Row]) {
    println!(
        "| copy | GiB | Gatehouse 1 node MB/s | Gatehouse 3 nodes MB/s | rclone MB/s | cp -r MB/s | cp -r + sync MB/s | GH1/rclone | GH3/rclone | GH1/cp | GH1/(cp + sync) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let figure = |value: Option<f64>| value.map_or("–".to_owned(), |v| format!("{v:.0}"));
    for row in rows {
        #[allow(clippy::cast_precision_loss, reason = "a size to print")]
        let gib = row.bytes as f64 / (1u64 << 30) as f64;
        let ratio =
            |peer: Option<f64>| peer.map_or("–".to_owned(), |peer| format!("{:.2}", row.gh1 / peer));
        println!(
            "| {} | {gib:.1} | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} | {:.2} | {} | {} |",
            row.label,
            row.gh1,
            row.gh3,
            row.rclone,
            figure(row.cp),
            figure(row.cp_sync),
            row.gh1 / row.rclone,
            row.gh3 / row.rclone,
            ratio(row.cp),
            ratio(row.cp_sync),
        );
    }
}

/// 5 M rows as CSV: Gatehouse (1 node, 4 partitions, to a folder) against psql's \copy.
fn sql(hub: &Hub, one: &Gateway, work: &Path) {
    const ROWS: u64 = 5_000_000;
    let pg = postgres::Postgres::start();
    let url = pg.new_database("sales");
    let psql = |command: &str, out: Option<&Path>| {
        let started = Instant::now();
        let mut cmd = Command::new("psql");
        cmd.arg(&url).args(["-v", "ON_ERROR_STOP=1", "-q", "-c", command]);
        if let Some(dir) = out {
            cmd.current_dir(dir);
        }
        let output = cmd.output().unwrap();
        assert!(output.status.success(), "psql: {}", String::from_utf8_lossy(&output.stderr));
        started.elapsed().as_secs_f64()
    };
    psql(
        &format!(
            "CREATE TABLE orders AS SELECT g AS id, 'customer ' || (g % 9973) AS customer, (g % 1000) * 1.25 AS amount, \
             now() - (g || ' seconds')::interval AS placed FROM generate_series(1, {ROWS}) g"
        ),
        None,
    );
    let psql_dir = work.join("psql");
    std::fs::create_dir_all(&psql_dir).unwrap();
    let psql_seconds = psql("\\copy (SELECT * FROM orders) TO 'orders.csv' CSV HEADER", Some(&psql_dir));
    let psql_bytes = std::fs::metadata(psql_dir.join("orders.csv")).unwrap().len();

    let sink = work.join("sql-sink");
    let spec = serde_json::json!({ "name": "export", "activities": [{ "kind": "copy",
        "source": { "postgres": url, "query": "SELECT * FROM orders", "format": "csv",
                    "partition_column": "id", "partitions": 4 },
        "sink": { "url": format!("file://{}/", sink.display()) } }]});
    let gh_seconds = run_job(hub, &one.name, &spec);
    let (_, gh_bytes) = folder_totals(&sink);
    println!("\n| export of {ROWS} rows as CSV | seconds | MB | MB/s |\n|---|---|---|---|");
    #[allow(clippy::cast_precision_loss, reason = "sizes to print")]
    for (who, seconds, bytes) in
        [("Gatehouse, 1 node, 4 partitions", gh_seconds, gh_bytes), ("psql \\copy", psql_seconds, psql_bytes)]
    {
        println!(
            "| {who} | {seconds:.2} | {:.0} | {:.0} |",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / seconds
        );
    }
    println!(
        "Gatehouse/psql: {:.2} (rate ratio; psql's file has one header, ours one per partition)",
        psql_seconds / gh_seconds
    );
}

/// Submits `spec` to `gateway` and waits for it to succeed; the seconds from its creation to
/// its last run's end, by the hub's clock.
fn run_job(hub: &Hub, gateway: &str, spec: &serde_json::Value) -> f64 {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), spec.to_string()).unwrap();
    let job = hub.admin(&["job", "submit", gateway, file.path().to_str().unwrap()]);
    let id = job["id"].as_str().unwrap().to_owned();
    let created = job["created_ms"].as_i64().unwrap();
    let mut shown = serde_json::Value::Null;
    wait_until(Duration::from_secs(900), "the job to end", || {
        std::thread::sleep(Duration::from_millis(200));
        shown = hub.admin(&["job", "show", &id]);
        ["succeeded", "failed", "cancelled"].contains(&shown["state"].as_str().unwrap_or(""))
    });
    assert_eq!(shown["state"], "succeeded", "{shown:#}");
    let finished =
        shown["runs"].as_array().unwrap().iter().filter_map(|r| r["finished_ms"].as_i64()).max().unwrap();
    #[allow(clippy::cast_precision_loss, reason = "a time")]
    let seconds = (finished - created) as f64 / 1000.0;
    seconds
}

fn peak_rss(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .map_or("?".to_owned(), |l| l["VmHWM:".len()..].trim().to_owned())
}

#[allow(clippy::cast_precision_loss, reason = "a rate")]
fn mb_per_second(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds.max(1e-9)
}

fn rand_suffix() -> String {
    gatehouse::encoding::random_hex::<4>()
}
