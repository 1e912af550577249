//! `gatehouse node start | stop | restart`, and who runs the node service for `node status`:
//! through systemd when the data dir is the `gatehouse-node` unit's, else through the data
//! dir's control socket (stop) and a detached `gatehouse node run` (start). Which service:
//! the data dir's own, else (when it has no node) the system service's in
//! `paths::service_home`, as the window attaches ([`target`]). It only decides and waits; the
//! socket protocol is `node::control`'s, the service `node run`'s.

use crate::node::control::{ControlClient, ControlError, find_service, is_same_dir};
use crate::node::store::Store;
use anyhow::Context as _;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
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

/// The node service a command acts on: the data dir's own, or the system service's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub dir: PathBuf,
    /// It is the system service's data dir (`paths::service_home`).
    pub system: bool,
}

impl Target {
    /// The service of `store`'s own data dir (the system service's, if it is that one).
    pub fn own(store: &Store) -> Target {
        Target {
            dir: store.dir().to_owned(),
            system: is_same_dir(store.dir(), &crate::paths::service_home()),
        }
    }

    pub fn store(&self) -> Store {
        Store::new(&self.dir)
    }
}

/// Which service `node status|start|stop|restart` act on, as a window would attach: the one
/// of `store`'s data dir if it runs or a node is registered there; else, when the system
/// service's data dir has a node (or a service answers there), that one.
/// One the caller may not reach (not root, not in its group) is refused with the sentence.
pub async fn target(store: &Store) -> anyhow::Result<Target> {
    let service_home = crate::paths::service_home();
    let own = Target::own(store);
    if own.system || store.is_registered() || running(store.dir()).await.is_some() {
        return Ok(own);
    }
    match find_service(store.dir(), false, &service_home).await {
        Ok(Some((found, _))) => return Ok(Target { dir: found.dir, system: found.system }),
        Err(e @ ControlError::NotInGroup { .. }) => return Err(e.into()),
        Ok(None) | Err(_) => {}
    }
    // Registered there but not running: `node start` starts it.
    if Store::new(&service_home).is_registered() {
        return Ok(Target { dir: service_home, system: true });
    }
    Ok(own)
}

/// `node start`: starts the node service of `target` unless it runs.
pub async fn start(target: &Target) -> anyhow::Result<()> {
    start_dir(target).await
}

/// `node stop`: stops the node service of `target` if it runs.
pub async fn stop(target: &Target) -> anyhow::Result<()> {
    stop_dir(target).await
}

/// `node restart`: stops the node service if it runs, then starts it.
pub async fn restart(target: &Target) -> anyhow::Result<()> {
    // Refused before anything stops when it couldn't be started again.
    if !managed_by_systemd(&target.dir) {
        may_spawn(target)?;
    }
    stop_dir(target).await?;
    start_dir(target).await
}

/// Whether this process may start `node run` for `target` itself: only in a data dir of its
/// own user. Another user's (the system service's, for root or its group) would get files
/// it can't read back, or can't be written at all: that one is started through systemd.
fn may_spawn(target: &Target) -> anyhow::Result<()> {
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let owner = std::fs::metadata(&target.dir).map(|m| m.uid()).ok();
    match (me, owner) {
        (Some(me), Some(owner)) if me != owner => anyhow::bail!(
            "the node service of {} runs as another user (uid {owner}), and systemd doesn't run it here; start it as that user: sudo runuser -u gatehouse -- env GATEHOUSE_HOME={} gatehouse node start{}",
            target.dir.display(),
            target.dir.display(),
            if target.system {
                " (or install the package's gatehouse-node unit: sudo systemctl start gatehouse-node)"
            } else {
                ""
            }
        ),
        _ => Ok(()),
    }
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
    loaded && home.is_some_and(|home| is_same_dir(&home, dir))
}

/// Starts the node service of `target` unless it runs; prints who runs it.
async fn start_dir(target: &Target) -> anyhow::Result<()> {
    let dir = target.dir.as_path();
    if let Some(running) = running(dir).await {
        println!("the node service already runs ({running}{})", what(target));
        return Ok(());
    }
    anyhow::ensure!(
        target.store().is_registered(),
        "this machine is not registered yet; register it first: gatehouse node register"
    );
    if managed_by_systemd(dir) {
        systemctl("start")?;
    } else {
        may_spawn(target)?;
        spawn_detached(dir).await?;
    }
    let running = wait_for(START_TIMEOUT, || running(dir)).await.with_context(|| {
        format!(
            "the node service did not answer within {START_TIMEOUT:?}; see its log in {}/logs",
            dir.display()
        )
    })?;
    println!("node service started ({running}{})", what(target));
    Ok(())
}

/// Stops the node service of `target` (its runs drain first); prints what it stopped.
async fn stop_dir(target: &Target) -> anyhow::Result<()> {
    let dir = target.dir.as_path();
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
    println!("node service stopped (was {was}{})", what(target));
    Ok(())
}

/// ", the system service in DIR" for the system service's data dir, else nothing.
fn what(target: &Target) -> String {
    if target.system { format!(", the system service in {}", target.dir.display()) } else { String::new() }
}

/// `node status`'s last line: which process runs the service, since when, and how it is run.
pub fn print_process(runtime: &tokio::runtime::Runtime, target: &Target) {
    let dir = target.dir.as_path();
    let how = if managed_by_systemd(dir) { format!(" (systemd unit {UNIT})") } else { String::new() };
    let how = format!("{}{how}", what(target));
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
