//! Benchmarks of copy activities against the tools administrators use today, in one run on
//! this machine, all on loopback: a real hub and real `gatehouse node run` processes (the
//! release binary), SeaweedFS as the S3 server, rclone 1.75 and `cp -r` as peers.
//!
//! 1. **small**: 2,000 files of 1 MiB (2 GiB); **large**: 4 files of 512 MiB. Each to a
//!    `file://` folder and to the S3 server: Gatehouse on 1 node and on 3 nodes, `rclone copy`
//!    with the same parallelism and part size, and (folders only) `cp -r`; to a folder, rclone
//!    and cp also alone and followed by `sync` of the files they wrote. A fresh prefix or
//!    folder per row. MB/s (10^6 bytes per second) and the ratios Gatehouse/rclone,
//!    Gatehouse/(rclone + sync), Gatehouse/cp and Gatehouse/(cp + sync) are printed; every
//!    copy is checked afterwards (object count and bytes).
//! 2. **sql**: 5 M rows from PostgreSQL as CSV to a `file://` folder (1 node, in one part and
//!    in 4 partitions of `id`) against `psql -c "\copy (query) TO file CSV HEADER"`. The
//!    table's `id` is its primary key, as an orders table's is: a partition reads its range
//!    through the index instead of scanning the whole table (psql's one query scans it once
//!    either way).
//! 3. Peak RSS (VmHWM) of each Gatehouse node over the copies.
//! 4. CPU time (user + system, from /proc) per GB of each copy: the copier's (a gateway's nodes
//!    and the hub; the peer tool) and, to S3, the server's, which shares the same cores; from
//!    the server's cost, the most any copier could reach here (one that costs no CPU at all).
//!
//! Why two cp figures: Gatehouse commits every file durably (fsync, then the create-only link,
//! exactly once), while `cp -r` returns with the data still in the page cache. `cp -r` followed
//! by `sync FILES` (coreutils: an fsync of each copied file and folder, timed with the copy)
//! does the same durable work, so GH1/(cp + sync) is the like-for-like ratio for the target
//! "large files to file:// ≥ 80 % of cp"; GH1/cp is kept to show what durability costs. The
//! same goes for rclone, whose local backend doesn't fsync either: GH1/(rclone + sync) is the
//! like-for-like ratio to a folder.
//!
//! Gatehouse is timed from the submit request to the last run's `finished_ms` (hub clock);
//! the peers from spawn to exit. Nothing is asserted about speed. Run with
//! `cargo bench --bench transfer`, or some parts: `cargo bench --bench transfer -- small sql`.
//! Data goes to `$GATEHOUSE_BENCH_DIR` (default: a temporary folder under the target dir's
//! parent, on disk): about 4 GiB of source and as much of sink, removed at the end.
//!
//! `GATEHOUSE_BENCH_REPEAT` (default 3) runs every copy that many times, interleaved (each
//! contender once per round, so a noisy moment hits them alike; each round starts with the next
//! contender, so none is always first), and prints the median with the min–max spread; ratios
//! are of medians. `GATEHOUSE_BENCH_SCALE` (default 1) scales the data
//! (file counts of the small set, file sizes of the large set, rows of the SQL export) for
//! quick runs that show direction only.

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
/// Gatehouse's part size, which rclone gets too.
const PART_MIB: u64 = 8;
/// Runs a bench node takes at once (set on each), and what each run keeps in flight (keep in
/// step with `FILES_IN_FLIGHT` and `PARTS_IN_FLIGHT` in src/transfer/copy.rs): rclone gets the
/// same as the 1-node gateway, `--transfers` = runs × files, `--s3-upload-concurrency` and
/// `--multi-thread-streams` = parts.
const NODE_RUNS: u64 = 8;
const FILES_IN_FLIGHT: u64 = 4;
const PARTS_IN_FLIGHT: u64 = 4;

struct Dataset {
    name: &'static str,
    files: u64,
    size: u64,
}

/// How the benchmark runs: from `GATEHOUSE_BENCH_REPEAT` and `GATEHOUSE_BENCH_SCALE`.
struct Settings {
    repeat: usize,
    scale: f64,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let repeat = var("GATEHOUSE_BENCH_REPEAT").map_or(3, |v| {
            v.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .expect("GATEHOUSE_BENCH_REPEAT: a whole number ≥ 1")
        });
        let scale = var("GATEHOUSE_BENCH_SCALE").map_or(1.0, |v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|&s| s > 0.0 && s <= 1.0)
                .expect("GATEHOUSE_BENCH_SCALE: a fraction in (0, 1]")
        });
        Settings { repeat, scale }
    }

    /// 2,000 × 1 MiB and 4 × 512 MiB, scaled: fewer small files, smaller large ones (still
    /// several parts each).
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "small counts"
    )]
    fn datasets(&self) -> [Dataset; 2] {
        let scaled = |n: u64, least: u64| ((n as f64 * self.scale).round() as u64).max(least);
        [
            Dataset { name: "small", files: scaled(2000, 1), size: MIB },
            Dataset { name: "large", files: 4, size: scaled(512, 3 * PART_MIB) * MIB },
        ]
    }

    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a count"
    )]
    fn sql_rows(&self) -> u64 {
        ((5_000_000.0 * self.scale).round() as u64).max(1000)
    }
}

/// One figure measured `repeat` times, with the CPU each copy cost.
#[derive(Default)]
struct Samples(Vec<f64>, Vec<Cpu>);

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

fn median(values: &[f64]) -> f64 {
    let sorted = sorted(values);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

/// What one copy cost in CPU time (user + system), in seconds per GB copied.
#[derive(Clone, Copy)]
struct Cpu {
    /// The copier: a gateway's nodes and the hub, or the peer tool (and the `sync` it is timed with).
    copier: f64,
    /// The S3 server.
    server: f64,
}

/// Whose CPU time a contender's copy is: processes of ours that keep running, or the
/// peer tool, a child this process waits for.
enum Copier {
    Processes(Vec<u32>),
    Children,
}

impl Copier {
    fn seconds(&self) -> f64 {
        match self {
            Copier::Processes(pids) => pids.iter().map(|&pid| cpu_seconds(&pid.to_string(), false)).sum(),
            Copier::Children => cpu_seconds("self", true),
        }
    }
}

/// CPU seconds process `pid` has used (fields 14–15 of /proc/PID/stat), or with `children`
/// those of its children it has waited for (fields 16–17).
fn cpu_seconds(pid: &str, children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let first = if children { 13 } else { 11 };
    let ticks: u64 =
        fields.get(first..first + 2).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    #[allow(clippy::cast_precision_loss, reason = "a time")]
    let seconds = ticks as f64 / rustix::param::clock_ticks_per_second() as f64;
    seconds
}

impl Samples {
    fn median(&self) -> f64 {
        median(&self.0)
    }

    /// The median of one CPU figure (`pick`) over the copies.
    fn cpu_median(&self, pick: fn(&Cpu) -> f64) -> f64 {
        median(&self.1.iter().map(pick).collect::<Vec<_>>())
    }

    /// "median (min–max)", or the one figure.
    fn show(&self, decimals: usize) -> String {
        let sorted = sorted(&self.0);
        match (sorted.first(), sorted.last()) {
            (Some(min), Some(max)) if sorted.len() > 1 => {
                format!("{:.decimals$} ({min:.decimals$}–{max:.decimals$})", self.median())
            }
            (Some(only), _) => format!("{only:.decimals$}"),
            _ => "–".to_owned(),
        }
    }
}

fn main() {
    let settings = Settings::from_env();
    let base = std::env::var_os("GATEHOUSE_BENCH_DIR")
        .map_or_else(|| std::env::temp_dir().join("gatehouse-bench"), PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    let work = tempfile::tempdir_in(&base).unwrap();
    println!(
        "# Copy benchmark ({} cores, data in {}, scale {}, {} rounds: median (min–max))",
        std::thread::available_parallelism().map_or(0, usize::from),
        work.path().display(),
        settings.scale,
        settings.repeat,
    );
    println!(
        "Gatehouse: {NODE_RUNS} runs per node, {FILES_IN_FLIGHT} small files or {PARTS_IN_FLIGHT} parts of {PART_MIB} MiB in flight per run; rclone: {} (to a folder rclone doesn't fsync what it writes; Gatehouse does)\n",
        rclone_flags().join(" ")
    );

    let s3 = s3::SeaweedFs::start();
    let hub = Hub::start();
    let one = Gateway::start(&hub, "one", 1, &s3);
    let three = Gateway::start(&hub, "three", 3, &s3);

    let mut rows: Vec<Row> = Vec::new();
    for dataset in settings.datasets() {
        if !figures::wanted(dataset.name) {
            continue;
        }
        let source = work.path().join(format!("source-{}", dataset.name));
        make_files(&source, &dataset);
        for to_s3 in [false, true] {
            rows.push(measure(
                &settings,
                &dataset,
                &source,
                to_s3,
                &Peers { hub: &hub, one: &one, three: &three, s3: &s3, work: work.path() },
            ));
        }
        let _ = std::fs::remove_dir_all(&source);
    }
    print_rows(&rows);
    print_cpu(&rows);

    if figures::wanted("sql") {
        sql(&settings, &hub, &one, work.path());
    }
    println!("\nPeak RSS of the nodes (VmHWM) over everything above:");
    for (name, pid) in
        one.nodes.iter().chain(&three.nodes).map(|n| (n.name.clone(), n.process.as_ref().unwrap().pid()))
    {
        println!("  {name}: {}", peak_rss(pid));
    }
}

/// What every measurement copies with.
struct Peers<'a> {
    hub: &'a Hub,
    one: &'a Gateway,
    three: &'a Gateway,
    s3: &'a s3::SeaweedFs,
    work: &'a Path,
}

/// One row: every contender `repeat` times, interleaved, each into a fresh folder or prefix
/// that is removed once checked.
fn measure(settings: &Settings, dataset: &Dataset, source: &Path, to_s3: bool, peers: &Peers<'_>) -> Row {
    let bytes = dataset.files * dataset.size;
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
            Target::Folder(peers.work.join(format!("sink-{}-{who}", dataset.name)))
        }
    };
    let mut row = Row { label, bytes, to_s3, ..Row::default() };
    let (files, s3) = (dataset.files, peers.s3);
    let server_pid = s3.pid().to_string();
    #[allow(clippy::cast_precision_loss, reason = "a size")]
    let gb = bytes as f64 / 1e9;
    for round in 0..settings.repeat {
        type Copy<'c> = Box<dyn Fn(&Target) -> f64 + 'c>;
        let (one, three) = (peers.one.processes(peers.hub), peers.three.processes(peers.hub));
        let mut contenders: Vec<(&str, &mut Samples, Copier, Copy<'_>)> = vec![
            ("gh1", &mut row.gh1, one, Box::new(|t| peers.one.copy(peers.hub, source, t, s3, bytes, files))),
            (
                "gh3",
                &mut row.gh3,
                three,
                Box::new(|t| peers.three.copy(peers.hub, source, t, s3, bytes, files)),
            ),
            (
                "rclone",
                &mut row.rclone,
                Copier::Children,
                Box::new(|t| rclone_copy(source, t, s3, bytes, files, false)),
            ),
        ];
        if !to_s3 {
            contenders.extend([
                (
                    "rclonesync",
                    &mut row.rclone_sync,
                    Copier::Children,
                    Box::new(|t: &Target| rclone_copy(source, t, s3, bytes, files, true)) as Copy<'_>,
                ),
                (
                    "cp",
                    &mut row.cp,
                    Copier::Children,
                    Box::new(|t: &Target| cp_copy(source, t, bytes, files, false)),
                ),
                (
                    "cpsync",
                    &mut row.cp_sync,
                    Copier::Children,
                    Box::new(|t: &Target| cp_copy(source, t, bytes, files, true)),
                ),
            ]);
        }
        // Each round starts with the next contender: the first copy of a round meets memory
        // the previous round left free for a while (slower to fill in a VM that hands free
        // memory back to its host), and no contender should always be the one that does.
        let first = round % contenders.len();
        contenders.rotate_left(first);
        for (who, samples, copier, copy) in contenders {
            let target = target(who);
            let before = (copier.seconds(), cpu_seconds(&server_pid, false));
            samples.0.push(copy(&target));
            samples.1.push(Cpu {
                copier: (copier.seconds() - before.0) / gb,
                server: (cpu_seconds(&server_pid, false) - before.1) / gb,
            });
            remove(&target, s3);
            // What the last copy left dirty (rclone and cp don't sync) is written back now,
            // untimed, not during the next contender's copy.
            let _ = Command::new("sync").status();
        }
    }
    row
}

/// Removes a checked copy, so rounds don't fill the disk.
fn remove(target: &Target, s3: &s3::SeaweedFs) {
    match target {
        Target::Folder(dir) => {
            let _ = std::fs::remove_dir_all(dir);
        }
        Target::S3(prefix) => {
            let path = format!("bench:{}/{prefix}", s3.bucket());
            let output =
                s3.rclone("bench", &["--config", "/dev/null", "purge", &path], Duration::from_secs(300));
            if !output.status.success() {
                eprintln!("removing {path}: {}", String::from_utf8_lossy(&output.stderr));
            }
        }
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
    /// Its nodes' processes and the hub's.
    fn processes(&self, hub: &Hub) -> Copier {
        let nodes = self.nodes.iter().filter_map(|n| n.process.as_ref().map(process::Spawned::pid));
        Copier::Processes(nodes.chain([hub.process.pid()]).collect())
    }

    fn start(hub: &Hub, name: &str, count: usize, s3: &s3::SeaweedFs) -> Gateway {
        let key = hub.create_gateway(name, &["--policy", "distribute"]);
        let runs = NODE_RUNS.to_string();
        let nodes: Vec<Node> = (1..=count)
            .map(|i| {
                let mut node = Node::register(&key, &format!("{name}{i}"), &[]);
                node.command(&["node", "set-concurrency", &runs]);
                node.run(&[]);
                node
            })
            .collect();
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

/// rclone's flags for the same parallelism and part size as the 1-node gateway.
fn rclone_flags() -> Vec<String> {
    let transfers = (NODE_RUNS * FILES_IN_FLIGHT).to_string();
    let chunk = format!("{PART_MIB}M");
    let parts = PARTS_IN_FLIGHT.to_string();
    [
        "--transfers",
        &transfers,
        "--checkers",
        &transfers,
        "--s3-upload-concurrency",
        &parts,
        "--s3-chunk-size",
        &chunk,
        "--s3-upload-cutoff",
        &chunk,
        "--multi-thread-streams",
        &parts,
        "--multi-thread-chunk-size",
        &chunk,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `rclone copy`; with `sync` (folders only), timed until what it wrote is on disk too.
fn rclone_copy(
    source: &Path,
    target: &Target,
    s3: &s3::SeaweedFs,
    bytes: u64,
    files: u64,
    sync: bool,
) -> f64 {
    let destination = match target {
        Target::Folder(dir) => dir.to_str().unwrap().to_owned(),
        Target::S3(prefix) => format!("bench:{}/{prefix}", s3.bucket()),
    };
    let flags = rclone_flags();
    let mut args = vec!["--config", "/dev/null", "copy", source.to_str().unwrap(), &destination];
    args.extend(flags.iter().map(String::as_str));
    let started = Instant::now();
    let output = s3.rclone("bench", &args, Duration::from_secs(900));
    assert!(output.status.success(), "rclone: {}", String::from_utf8_lossy(&output.stderr));
    if let (true, Target::Folder(dir)) = (sync, target) {
        sync_written(dir);
    }
    let seconds = started.elapsed().as_secs_f64();
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
        sync_written(dir);
    }
    let seconds = started.elapsed().as_secs_f64();
    let (count, total) = folder_totals(dir);
    assert_eq!((count, total), (files, bytes), "cp copied everything");
    mb_per_second(bytes, seconds)
}

/// `sync FILE…` of every file and folder under `dir`: an fsync of each, as Gatehouse does
/// before it says a file is done.
fn sync_written(dir: &Path) {
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

#[derive(Default)]
struct Row {
    label: String,
    bytes: u64,
    /// To the S3 server (else to a folder): only then is the server's CPU time counted.
    to_s3: bool,
    gh1: Samples,
    gh3: Samples,
    rclone: Samples,
    /// `rclone copy` followed by `sync` of what it wrote (folders).
    rclone_sync: Samples,
    cp: Samples,
    /// `cp -r` followed by `sync` of what it wrote.
    cp_sync: Samples,
}

fn print_rows(rows: &[Row]) {
    println!(
        "| copy | GiB | Gatehouse 1 node MB/s | Gatehouse 3 nodes MB/s | rclone MB/s | rclone + sync MB/s | cp -r MB/s | cp -r + sync MB/s | GH1/rclone | GH3/rclone | GH1/(rclone + sync) | GH1/cp | GH1/(cp + sync) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        #[allow(clippy::cast_precision_loss, reason = "a size to print")]
        let gib = row.bytes as f64 / (1u64 << 30) as f64;
        let ratio = |ours: &Samples, peer: &Samples| {
            if peer.0.is_empty() { "–".to_owned() } else { format!("{:.2}", ours.median() / peer.median()) }
        };
        println!(
            "| {} | {gib:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            row.gh1.show(0),
            row.gh3.show(0),
            row.rclone.show(0),
            row.rclone_sync.show(0),
            row.cp.show(0),
            row.cp_sync.show(0),
            ratio(&row.gh1, &row.rclone),
            ratio(&row.gh3, &row.rclone),
            ratio(&row.gh1, &row.rclone_sync),
            ratio(&row.gh1, &row.cp),
            ratio(&row.gh1, &row.cp_sync),
        );
    }
}

/// What each copy cost in CPU time: the copier's and (to S3) the server's, in seconds per GB
/// (medians). Both share this machine's cores, so a server busy near all of them bounds
/// every copier alike.
fn print_cpu(rows: &[Row]) {
    println!(
        "\nCPU seconds per GB copied (user + system; Gatehouse: its nodes and the hub), copier / S3 server:"
    );
    println!(
        "| copy | Gatehouse 1 node | Gatehouse 3 nodes | rclone | rclone + sync | cp -r | cp -r + sync |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        let cost = |samples: &Samples| match (samples.1.is_empty(), row.to_s3) {
            (true, _) => "–".to_owned(),
            (false, true) => {
                format!("{:.2} / {:.2}", samples.cpu_median(|c| c.copier), samples.cpu_median(|c| c.server))
            }
            (false, false) => format!("{:.2}", samples.cpu_median(|c| c.copier)),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            cost(&row.gh1),
            cost(&row.gh3),
            cost(&row.rclone),
            cost(&row.rclone_sync),
            cost(&row.cp),
            cost(&row.cp_sync),
        );
    }
    // The S3 server shares these cores: all copies together use about all of them, so the
    // server's own cost per GB bounds what any copier can reach, however little it costs.
    #[allow(clippy::cast_precision_loss, reason = "a core count")]
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    for row in rows.iter().filter(|row| row.to_s3 && !row.gh1.1.is_empty()) {
        let server = row.gh1.cpu_median(|c| c.server);
        let ceiling = cores / server * 1000.0;
        println!(
            "{}: with a copier costing no CPU at all, the server's {server:.2} s/GB on {cores} cores allows at most {ceiling:.0} MB/s = {:.2}× rclone's median",
            row.label,
            ceiling / row.rclone.median()
        );
    }
}

/// 5 M rows (scaled) as CSV: Gatehouse (1 node, 4 partitions, to a folder) against psql's
/// \copy, interleaved, `repeat` times each.
fn sql(settings: &Settings, hub: &Hub, one: &Gateway, work: &Path) {
    let rows = settings.sql_rows();
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
             now() - (g || ' seconds')::interval AS placed FROM generate_series(1, {rows}) g; \
             ALTER TABLE orders ADD PRIMARY KEY (id); ANALYZE orders"
        ),
        None,
    );
    let (mut gh, mut gh_one, mut peer) = (Samples::default(), Samples::default(), Samples::default());
    let (mut gh_bytes, mut psql_bytes) = (0, 0);
    for round in 0..settings.repeat {
        let psql_dir = work.join(format!("psql-{round}"));
        std::fs::create_dir_all(&psql_dir).unwrap();
        let seconds = psql("\\copy (SELECT * FROM orders) TO 'orders.csv' CSV HEADER", Some(&psql_dir));
        psql_bytes = std::fs::metadata(psql_dir.join("orders.csv")).unwrap().len();
        peer.0.push(mb_per_second(psql_bytes, seconds));
        let _ = std::fs::remove_dir_all(&psql_dir);

        for (partitions, samples) in [(4, &mut gh), (1, &mut gh_one)] {
            let sink = work.join(format!("sql-sink-{round}-{partitions}"));
            let mut source =
                serde_json::json!({ "postgres": url, "query": "SELECT * FROM orders", "format": "csv" });
            if partitions > 1 {
                source["partition_column"] = "id".into();
                source["partitions"] = partitions.into();
            }
            let spec = serde_json::json!({ "name": "export", "activities": [{ "kind": "copy",
                "source": source, "sink": { "url": format!("file://{}/", sink.display()) } }]});
            let seconds = run_job(hub, &one.name, &spec);
            gh_bytes = folder_totals(&sink).1;
            samples.0.push(mb_per_second(gh_bytes, seconds));
            let _ = std::fs::remove_dir_all(&sink);
        }
    }
    println!("\n| export of {rows} rows as CSV | MB | MB/s |\n|---|---|---|");
    #[allow(clippy::cast_precision_loss, reason = "sizes to print")]
    for (who, samples, bytes) in [
        ("Gatehouse, 1 node, 4 partitions", &gh, gh_bytes),
        ("Gatehouse, 1 node, one part", &gh_one, gh_bytes),
        ("psql \\copy", &peer, psql_bytes),
    ] {
        println!("| {who} | {:.0} | {} |", bytes as f64 / 1e6, samples.show(0));
    }
    println!(
        "Gatehouse/psql: {:.2} in 4 partitions, {:.2} in one part (ratios of median rates; psql's file has one header, ours one per partition; Gatehouse fsyncs what it wrote, psql doesn't)",
        gh.median() / peer.median(),
        gh_one.median() / peer.median()
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
