//! Benchmarks of the Configuration Manager window: the real release binary (`gatehouse gui`)
//! on a virtual X display (Xvfb, software GL), with a real hub (`gatehouse hub serve`,
//! SQLite) and real nodes on loopback, started with the integration tests' helpers
//! (`tests/common/process.rs`, `tests/common/cluster.rs`). Figures are printed, never asserted.
//!
//! 1. **Start-up**: wall time from `Command::spawn` to the window's log line `first frame
//!    drawn` on stderr (read on a thread, timed as it arrives), split into process start →
//!    window created (the rest of the figure) and window created → first frame (the number the
//!    line itself carries). Two data dirs: (a) a fresh one, where the setup wizard shows,
//!    a new empty dir for every start; (b) one holding a registered node, where Home shows and
//!    the window starts the node service in-process, the same dir for every start. One
//!    unmeasured start first (disk cache, Mesa's shader cache), then `STARTS` measured ones
//!    per case, each window killed before the next starts.
//! 2. **Idle memory**: a gateway of 4 nodes, 3 of them `gatehouse node run` processes and the
//!    4th the window (Home, node service in-process). Once the hub says all 4 are Online, the
//!    window sits idle for 60 s; then its VmRSS and VmHWM from `/proc/PID/status` (split into
//!    anonymous and file-backed, and how much of it is Mesa's GL driver, from `smaps`), and the
//!    same for one of the headless nodes, which has been up as long.
//!
//! Run it with `cargo bench --bench gui`, or only one part with `cargo bench --bench gui --
//! startup` (or `memory`). It needs Xvfb and Mesa's GL (`bash tests/run.sh` installs them).

#![allow(clippy::unwrap_used, reason = "a benchmark: a failed setup step should stop it loudly")]

#[allow(dead_code, reason = "the benchmark uses only some of the helpers")]
#[path = "../tests/common/process.rs"]
mod process;

#[allow(dead_code, reason = "the benchmark uses only some of the helpers")]
#[path = "../tests/common/cluster.rs"]
mod cluster;

#[path = "../tests/common/xvfb.rs"]
mod xvfb;
use xvfb::Xvfb;

#[path = "support/figures.rs"]
mod figures;
use figures::{ms, percentile, process_cpu, seconds, thousands};

use gatehouse::protocol::{NodeState, NodeView};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Measured starts per data dir (after one unmeasured start).
const STARTS: usize = 5;
const NODES: usize = 4;
const STARTUP_GATEWAY: &str = "startup";
const MEMORY_GATEWAY: &str = "four";
const IDLE_FOR: Duration = Duration::from_secs(60);
/// How often the window's RSS is read during the idle minute.
const IDLE_SAMPLE: Duration = Duration::from_secs(15);
/// What the window logs right after its first frame.
const FIRST_FRAME: &str = "first frame drawn";

// Bounds on every wait, so a window or node that never comes ends the benchmark with a message.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(60);
const ONLINE_TIMEOUT: Duration = Duration::from_secs(60);
/// A start counts only if the window is still running this long after its first frame.
const STILL_RUNNING_AFTER: Duration = Duration::from_millis(300);

const FIRST_FRAME_TARGET: Duration = Duration::from_millis(500);
const MEMORY_TARGET_BYTES: u64 = 120_000_000;

fn main() {
    // `cargo bench --bench gui -- startup` runs only that part; no names: all.
    let run = figures::wanted;
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "gatehouse GUI benchmark: release binary, Xvfb + Mesa (software GL), hub on SQLite, loopback, {cpus} CPUs"
    );

    let xvfb = Xvfb::start();
    println!("Xvfb on display {}", xvfb.display);
    let hub = cluster::Hub::start();

    let startup = run("startup").then(|| startup_bench(&xvfb, &hub));
    let memory = run("memory").then(|| memory_bench(&xvfb, &hub));

    if let Some(startup) = &startup {
        print_startup(startup);
    }
    if let Some(memory) = &memory {
        print_memory(memory);
    }
    println!("\n(whole benchmark: {:.0} s)", started.elapsed().as_secs_f64());
}

// ---- the window ----

/// A running `gatehouse gui`: its stderr lines arrive, timed, on `lines`; killed on drop.
struct Window {
    child: Child,
    /// When `Command::spawn` was called.
    spawned: Instant,
    lines: Receiver<(Instant, String)>,
    /// Everything it logged so far, for messages.
    log: Arc<Mutex<Vec<String>>>,
    /// Its `$HOME` (eframe keeps the window's state there), unless the caller owns one.
    _home: Option<tempfile::TempDir>,
}

impl Window {
    /// Starts the window on the data dir `data_dir`, with `$HOME` and `$XDG_RUNTIME_DIR` =
    /// `home` (a new temporary dir if `None`).
    fn spawn(display: &str, data_dir: &Path, home: Option<&Path>) -> Window {
        let own_home = home.is_none().then(|| tempfile::tempdir().unwrap());
        let home = home.or(own_home.as_ref().map(tempfile::TempDir::path)).unwrap();
        let binary = env!("CARGO_BIN_EXE_gatehouse");
        let mut command = Command::new(binary);
        command
            .arg("gui")
            .env("DISPLAY", display)
            .env("GATEHOUSE_HOME", data_dir)
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", home)
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("XDG_DATA_HOME")
            .env_remove("GATEHOUSE_LOG")
            .env_remove("GATEHOUSE_AUTH_KEY")
            .env_remove("GATEHOUSE_HUB")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {binary} gui: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        // Reads every line (so the pipe never fills) and stamps it as it arrives.
        std::thread::spawn(move || {
            let mut stderr = BufReader::new(stderr);
            let mut line = Vec::new();
            while stderr.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let at = Instant::now();
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                sink.lock().unwrap_or_else(PoisonError::into_inner).push(text.clone());
                // Nobody listens once the waits are over; keep draining anyway.
                let _ = sender.send((at, text));
                line.clear();
            }
        });
        Window { child, spawned, lines, log, _home: own_home }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stderr line containing `needle`; returns when it arrived and the line.
    fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> (Instant, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.contains(needle) => return (at, line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("logged no line containing {needle:?} within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(200));
                    let status = self.child.try_wait().ok().flatten();
                    self.fail(&format!(
                        "closed stderr ({}) before a line containing {needle:?}",
                        status.map_or_else(|| "still running".to_owned(), |s| s.to_string())
                    ))
                }
            }
        }
    }

    /// Panics unless the window still runs.
    fn check_running(&mut self, when: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.fail(&format!("exited ({status}) {when}"));
        }
    }

    fn fail(&self, what: &str) -> ! {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let tail = &log[log.len().saturating_sub(30)..];
        panic!("`gatehouse gui` {what}\n--- stderr (last 30 lines) ---\n{}", tail.join("\n"));
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- start-up ----

/// One start: spawn → the first-frame line, and the part the window itself timed.
#[derive(Clone, Copy)]
struct Start {
    total: Duration,
    /// Window created → first frame drawn, as the line says (whole ms).
    in_window: Option<Duration>,
}

struct StartupFigures {
    fresh: Vec<Start>,
    fresh_warmup: Start,
    registered: Vec<Start>,
    registered_warmup: Start,
}

/// Starts the window once and times its first frame; kills it after.
fn time_start(display: &str, data_dir: &Path, home: &Path) -> Start {
    let mut window = Window::spawn(display, data_dir, Some(home));
    let (at, line) = window.wait_for_line(FIRST_FRAME, FIRST_FRAME_TIMEOUT);
    let total = at - window.spawned;
    std::thread::sleep(STILL_RUNNING_AFTER);
    window.check_running("right after its first frame");
    Start { total, in_window: frame_ms(&line) }
}

/// The `N` of "first frame drawn, N ms after the window was created".
fn frame_ms(line: &str) -> Option<Duration> {
    let after = &line[line.find(FIRST_FRAME)? + FIRST_FRAME.len()..];
    let digits: String =
        after.trim_start_matches([',', ' ']).chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().map(Duration::from_millis)
}

fn startup_bench(xvfb: &Xvfb, hub: &cluster::Hub) -> StartupFigures {
    println!("\n[startup] {STARTS} starts per data dir, after one unmeasured start");
    // (a) a fresh data dir every time: the setup wizard.
    let home = tempfile::tempdir().unwrap();
    let fresh_start = || {
        let data = tempfile::tempdir().unwrap();
        time_start(&xvfb.display, data.path(), home.path())
    };
    let fresh_warmup = fresh_start();
    let fresh: Vec<Start> = (0..STARTS).map(|_| fresh_start()).collect();
    println!("  fresh data dir (wizard): {}", each(&fresh));

    // (b) a registered node: Home, and the node service starts in the window's process.
    let key = hub.create_gateway(STARTUP_GATEWAY, &[]);
    let node = cluster::Node::register(&key, "window", &[]);
    let home = tempfile::tempdir().unwrap();
    let registered_start = || time_start(&xvfb.display, node.home.path(), home.path());
    let registered_warmup = registered_start();
    let registered: Vec<Start> = (0..STARTS).map(|_| registered_start()).collect();
    println!("  registered node (Home):  {}", each(&registered));
    StartupFigures { fresh, fresh_warmup, registered, registered_warmup }
}

fn each(starts: &[Start]) -> String {
    let all: Vec<String> = starts.iter().map(|s| ms(s.total)).collect();
    format!("{} ms", all.join(", "))
}

// ---- idle memory ----

struct MemoryFigures {
    /// Spawn → the hub lists all 4 nodes Online.
    settled: Duration,
    idle_for: Duration,
    /// The window's VmRSS (kB) every `IDLE_SAMPLE` of the idle minute, from its start.
    window_rss_samples: Vec<u64>,
    window: ProcessMemory,
    node_name: String,
    node: ProcessMemory,
    statuses: String,
}

struct ProcessMemory {
    rss_kb: u64,
    hwm_kb: u64,
    /// VmRSS split: anonymous (heap, stacks) and file-backed (the binary, shared libraries).
    anon_kb: u64,
    file_kb: u64,
    /// Resident in Mesa's GL driver libraries (libLLVM, `dri/*.so`, libgallium).
    mesa_kb: u64,
    /// CPU time over the idle minute.
    idle_cpu: Duration,
    /// CPU time over its whole life.
    cpu: Duration,
    threads: u64,
}

fn memory_bench(xvfb: &Xvfb, hub: &cluster::Hub) -> MemoryFigures {
    println!(
        "\n[memory] a gateway of {NODES} nodes: 3 × `node run`, 1 × the window; idle {IDLE_FOR:?} on Home"
    );
    let key = hub.create_gateway(MEMORY_GATEWAY, &[]);
    let nodes: Vec<cluster::Node> =
        (1..NODES).map(|i| cluster::Node::start(&key, &format!("n{i}"), &[])).collect();
    let window_node = cluster::Node::register(&key, &format!("n{NODES}"), &[]);
    let mut window = Window::spawn(&xvfb.display, window_node.home.path(), None);
    window.wait_for_line(FIRST_FRAME, FIRST_FRAME_TIMEOUT);

    let deadline = Instant::now() + ONLINE_TIMEOUT;
    let list = loop {
        let list = node_list(hub);
        let online = list.iter().filter(|n| n.status == NodeState::Online).count();
        if list.len() == NODES && online == NODES {
            break list;
        }
        window.check_running("while the gateway settled");
        if Instant::now() >= deadline {
            window.fail(&format!(
                "is in a gateway whose {NODES} nodes weren't all Online within {ONLINE_TIMEOUT:?}: {}",
                brief(&list)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let settled = window.spawned.elapsed();
    println!("  all {NODES} Online {} after the window started: {}", seconds(settled), brief(&list));

    let headless = &nodes[0];
    let node_pid = headless.process.as_ref().unwrap().pid();
    let (window_cpu, node_cpu) = (cpu_of(window.pid()), cpu_of(node_pid));
    let idle_started = Instant::now();
    let mut window_rss_samples = Vec::new();
    let mut sampled = Duration::ZERO;
    loop {
        window_rss_samples.push(proc_status(window.pid(), "VmRSS").unwrap_or(0));
        if sampled >= IDLE_FOR {
            break;
        }
        sampled += IDLE_SAMPLE;
        std::thread::sleep((idle_started + sampled).saturating_duration_since(Instant::now()));
    }
    let idle_for = idle_started.elapsed();
    window.check_running("during the idle minute");
    let window_memory = memory_of(window.pid(), window_cpu);
    let node_memory = memory_of(node_pid, node_cpu);
    let statuses = brief(&node_list(hub));
    MemoryFigures {
        settled,
        idle_for,
        window_rss_samples,
        window: window_memory,
        node_name: headless.name.clone(),
        node: node_memory,
        statuses,
    }
}

fn node_list(hub: &cluster::Hub) -> Vec<NodeView> {
    hub.nodes(MEMORY_GATEWAY)
        .into_iter()
        .map(|n| serde_json::from_value(n).unwrap_or_else(|e| panic!("the hub's node list: {e}")))
        .collect()
}

fn brief(list: &[NodeView]) -> String {
    let each: Vec<String> = list
        .iter()
        .map(|n| {
            format!(
                "{} {:?} {:?}{}",
                n.name,
                n.status,
                n.role,
                n.reason.as_ref().map_or(String::new(), |r| format!(" ({r})"))
            )
        })
        .collect();
    each.join("; ")
}

fn cpu_of(pid: u32) -> Duration {
    process_cpu(&pid.to_string())
}

fn memory_of(pid: u32, cpu_before: Duration) -> ProcessMemory {
    let field = |name: &str| {
        proc_status(pid, name).unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status; is it running?"))
    };
    let cpu = cpu_of(pid);
    ProcessMemory {
        rss_kb: field("VmRSS"),
        hwm_kb: field("VmHWM"),
        anon_kb: field("RssAnon"),
        file_kb: field("RssFile"),
        mesa_kb: mesa_rss_kb(pid),
        idle_cpu: cpu.saturating_sub(cpu_before),
        cpu,
        threads: field("Threads"),
    }
}

/// The number on a line of `/proc/PID/status` (kB for the Vm… lines).
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident kB of the mappings of Mesa's driver libraries, from `/proc/PID/smaps`: under
/// Xvfb that is llvmpipe (software GL), whose LLVM a GPU driver wouldn't load.
fn mesa_rss_kb(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut mesa = false;
    let mut total = 0;
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            if mesa {
                total += kb.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|range| range.contains('-') && !range.ends_with(':'))
        {
            // A mapping's header: "start-end perms offset dev inode [path]".
            let path = line.split_whitespace().nth(5).unwrap_or("");
            mesa = path.contains("libLLVM") || path.contains("/dri/") || path.contains("libgallium");
        }
    }
    total
}

// ---- the table ----

fn verdict(target: &str, met: bool) -> String {
    format!("{target}: {}", if met { "met" } else { "missed" })
}

fn row(what: &str, figure: &str, note: &str) {
    println!("  {what:<46} {figure:<24} {note}");
}

fn min_median_max(sorted: &[Duration]) -> String {
    format!(
        "{} / {} / {}",
        ms(sorted.first().copied().unwrap_or_default()),
        ms(percentile(sorted, 50)),
        ms(sorted.last().copied().unwrap_or_default())
    )
}

fn print_startup(f: &StartupFigures) {
    println!(
        "\n== Start-up: `gatehouse gui` spawned → `{FIRST_FRAME}` on stderr, Xvfb 1024×768, {STARTS} starts each =="
    );
    row("", "min / median / max (ms)", "");
    for (what, starts, warmup) in [
        ("fresh data dir (setup wizard)", &f.fresh, f.fresh_warmup),
        ("registered node (Home, service in-process)", &f.registered, f.registered_warmup),
    ] {
        let mut totals: Vec<Duration> = starts.iter().map(|s| s.total).collect();
        totals.sort();
        let mut framing: Vec<Duration> = starts.iter().filter_map(|s| s.in_window).collect();
        framing.sort();
        let mut before: Vec<Duration> =
            starts.iter().filter_map(|s| s.in_window.map(|w| s.total.saturating_sub(w))).collect();
        before.sort();
        let max = totals.last().copied().unwrap_or_default();
        row(
            what,
            &min_median_max(&totals),
            &format!(
                "target {}; unmeasured first start {} ms",
                verdict("< 500 ms", max < FIRST_FRAME_TARGET),
                ms(warmup.total)
            ),
        );
        row("  spawn → window created", &min_median_max(&before), "");
        row("  window created → first frame (its own log)", &min_median_max(&framing), "whole ms");
    }
}

#[allow(clippy::cast_precision_loss, reason = "kilobytes shown as megabytes")]
fn megabytes(kb: u64) -> String {
    format!("{:.1} MB", (kb * 1024) as f64 / 1e6)
}

#[allow(clippy::cast_precision_loss, reason = "a count of kilobytes, printed")]
fn print_memory(m: &MemoryFigures) {
    println!(
        "\n== Idle memory: the window on Home in a {NODES}-node gateway (3 × `node run` + the window), Xvfb =="
    );
    row("all Online after the window started", &seconds(m.settled), "");
    row(
        &format!("window VmRSS after {:.0} s idle", m.idle_for.as_secs_f64()),
        &format!("{} ({} kB)", megabytes(m.window.rss_kb), thousands(m.window.rss_kb as f64)),
        &format!("target {}", verdict("< 120 MB", m.window.rss_kb * 1024 < MEMORY_TARGET_BYTES)),
    );
    row(
        "  of which anonymous / file-backed",
        &format!("{} / {}", megabytes(m.window.anon_kb), megabytes(m.window.file_kb)),
        &format!("file-backed includes Mesa's GL driver: {}", megabytes(m.window.mesa_kb)),
    );
    row("window VmHWM (peak RSS)", &megabytes(m.window.hwm_kb), "");
    let samples: Vec<String> =
        m.window_rss_samples.iter().map(|kb| format!("{:.1}", (kb * 1024) as f64 / 1e6)).collect();
    row(
        &format!("window VmRSS every {} s of the idle minute", IDLE_SAMPLE.as_secs()),
        &format!("{} MB", samples.join(" → ")),
        "the first one right after all were Online",
    );
    row(
        "window CPU during the idle minute",
        &seconds(m.window.idle_cpu),
        &format!("{} over its life; {} threads", seconds(m.window.cpu), m.window.threads),
    );
    row(
        &format!("for comparison: `node run` {} VmRSS", m.node_name),
        &megabytes(m.node.rss_kb),
        &format!(
            "VmHWM {}; anonymous {}, file-backed {}",
            megabytes(m.node.hwm_kb),
            megabytes(m.node.anon_kb),
            megabytes(m.node.file_kb)
        ),
    );
    row(
        &format!("for comparison: `node run` {} CPU, idle minute", m.node_name),
        &seconds(m.node.idle_cpu),
        &format!("{} over its life; {} threads", seconds(m.node.cpu), m.node.threads),
    );
    row("hub says at the end", "", &m.statuses);
}
