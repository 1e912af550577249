//! `gatehouse node start | stop | restart`, and who runs the node service for `node status`:
//! through systemd when the data dir is the `gatehouse-node` unit's, else through the data
//! dir's control socket (stop) and a detached `gatehouse node run` (start). It only decides
//! and waits; the socket protocol is `node::control`'s, the service `node run`'s.

use crate::node::control::ControlClient;
use crate::node::store::Store;
use anyhow::Context as _;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The systemd unit the package installs for the node service.
pub const UNIT: &str = "gatehouse-node.service";
/// How long `start` waits for the new service's control socket to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits for the service to drain and exit (the unit's TimeoutStopSec).
const STOP_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);

/// The process serving a data dir's control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub pid: u32,
    /// When the process started, if the OS says.
    pub since: Option<time::OffsetDateTime>,
}

impl std::fmt::Display for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(since) =
            self.since.and_then(|s| s.format(&time::format_description::well_known::Rfc3339).ok())
        {
            write!(f, ", since {since}")?;
        }
        Ok(())
    }
}

/// `node start`: starts the node service of `store`'s data dir unless it runs.
pub async fn start(store: &Store) -> anyhow::Result<()> {
    start_dir(store.dir(), store.is_registered()).await
}

/// `node stop`: stops the node service of `store`'s data dir if it runs.
pub async fn stop(store: &Store) -> anyhow::Result<()> {
    stop_dir(store.dir()).await
}

/// `node restart`: stops the node service if it runs, then starts it.
pub async fn restart(store: &Store) -> anyhow::Result<()> {
    stop_dir(store.dir()).await?;
    start_dir(store.dir(), store.is_registered()).await
}

/// Who serves the control socket of `dir`; `None` when nothing answers.
pub async fn running(dir: &Path) -> Option<Running> {
    let ask = async { ControlClient::connect(dir).await.ok()??.watch().await.ok() };
    let (hello, _events) = tokio::time::timeout(Duration::from_secs(5), ask).await.ok()??;
    Some(Running { pid: hello.pid, since: started_at(hello.pid) })
}

fn started_at(pid: u32) -> Option<time::OffsetDateTime> {
    use sysinfo::{Pid, ProcessesToUpdate, System};
    let pid = Pid::from_u32(pid);
    let Ok(mut system) = System::new() else { return None };
    system.refresh_processes(ProcessesToUpdate::Some(&[pid]), true);
    let seconds = system.process(pid)?.start_time();
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).ok()?).ok()
}

/// Whether systemd runs the node service of `dir`: systemd is the init system, the unit is
/// installed, and its GATEHOUSE_HOME is `dir`.
pub fn managed_by_systemd(dir: &Path) -> bool {
    if !Path::new("/run/systemd/system").is_dir() {
        return false;
    }
    let Ok(out) = Command::new("systemctl")
        .args(["show", UNIT, "--property=LoadState", "--property=Environment"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let loaded = text.lines().any(|l| l == "LoadState=loaded");
    let home = text
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .flat_map(str::split_whitespace)
        .find_map(|v| v.strip_prefix("GATEHOUSE_HOME="))
        .map(std::path::PathBuf::from);
    let same =
        |a: &Path, b: &Path| a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b);
    loaded && home.is_some_and(|home| same(&home, dir))
}

/// Starts the node service of `dir` unless it runs; prints who runs it.
async fn start_dir(dir: &Path, registered: bool) -> anyhow::Result<()> {
    if let Some(running) = running(dir).await {
        println!("the node service already runs ({running})");
        return Ok(());
    }
    anyhow::ensure!(
        registered,
        "this machine is not registered yet; register it first: gatehouse node register"
    );
    if managed_by_systemd(dir) {
        systemctl("start")?;
    } else {
        spawn_detached(dir).await?;
    }
    let running = wait_for(START_TIMEOUT, || running(dir)).await.with_context(|| {
        format!(
            "the node service did not answer within {START_TIMEOUT:?}; see its log in {}/logs",
            dir.display()
        )
    })?;
    println!("node service started ({running})");
    Ok(())
}

/// Stops the node service of `dir` (its runs drain first); prints what it stopped.
async fn stop_dir(dir: &Path) -> anyhow::Result<()> {
    let Some(was) = running(dir).await else {
        println!("the node service is not running");
        return Ok(());
    };
    if managed_by_systemd(dir) {
        systemctl("stop")?;
    } else {
        ControlClient::stop(dir).await.context("asking the node service to stop")?;
    }
    let gone = wait_for(STOP_TIMEOUT, || async {
        (running(dir).await.is_none() && !process_alive(was.pid)).then_some(())
    })
    .await;
    anyhow::ensure!(gone.is_some(), "the node service ({was}) did not stop within {STOP_TIMEOUT:?}");
    println!("node service stopped (was {was})");
    Ok(())
}

/// `node status`'s last line: which process runs the service, since when, and how it is run.
pub fn print_process(runtime: &tokio::runtime::Runtime, dir: &Path) {
    let how = if managed_by_systemd(dir) { format!(" (systemd unit {UNIT})") } else { String::new() };
    match runtime.block_on(running(dir)) {
        Some(running) => println!("Process:  {running}{how}"),
        None => println!("Process:  not running{how}; start it with: gatehouse node start"),
    }
}

fn process_alive(pid: u32) -> bool {
    // A zombie has left its socket and its work behind; only its exit status remains.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_none_or(|(_, rest)| !rest.starts_with('Z')))
}

fn systemctl(verb: &str) -> anyhow::Result<()> {
    let out = Command::new("systemctl")
        .args([verb, UNIT])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running systemctl {verb} {UNIT}"))?;
    anyhow::ensure!(
        out.status.success(),
        "systemctl {verb} {UNIT} failed: {} (as root, or see: journalctl -u {UNIT})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// `gatehouse node run` for `dir` in its own process group, outliving this command. Its
/// start-up errors (before its log is set up) are read from its stderr while it starts.
async fn spawn_detached(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().context("finding the gatehouse binary")?;
    let mut child = Command::new(exe)
        .args(["node", "run"])
        .env("GATEHOUSE_HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("starting gatehouse node run")?;
    let mut stderr = child.stderr.take().context("the child's stderr")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("waiting for gatehouse node run")? {
            let mut said = String::new();
            let _ = stderr.read_to_string(&mut said);
            let error = said.lines().rev().find(|l| l.starts_with("error: ")).unwrap_or(said.trim());
            anyhow::bail!("gatehouse node run stopped at once ({status}): {error}");
        }
        if running(dir).await.is_some() || Instant::now() >= deadline {
            // Its later stderr lines go nowhere; its log is in logs/.
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_for<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    mut probe: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}
