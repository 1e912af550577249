//! The system service and its administrators, with real processes and no change to the
//! machine: a registered node in a throwaway "service home" (`GATEHOUSE_SERVICE_HOME`, the
//! stand-in for /var/lib/gatehouse) runs `node run --control-group G`. Its socket and the way
//! to it are G's (0660, dir 0710) while its other files stay owner-only; `node status` and
//! `node start` from a data dir without a node find that service (no second one starts); a
//! window on such a data dir attaches to it, names it, reads its settings through the socket
//! and changes nothing in its dir.
//!
//! As root (with util-linux's `setpriv`) the service runs as another user, and the commands
//! as a member of G and as an outsider: the outsider is refused, by the file's mode and, with
//! the mode opened by hand, by the server's own check. The window of a member, which can't
//! read the service's node token, shows the gateway's jobs, asked for through the socket: the
//! test runs itself again under setpriv as that member (its [`ROLE`] variable says which part
//! to play), and as an outsider, who gets no jobs. Without root, everything runs as the
//! test's user with its primary group as G (the peer check's rules are unit-tested in
//! `node::control::access`). Users and groups are bare numbers: nothing is added to the system.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, wait_until};
use common::process::{Spawned, spawn};
use common::window::Window;
use gatehouse::gui::ops::OpKind;
use gatehouse::gui::{ServiceState, Tab};
use gatehouse::node::control::{ControlClient, ControlError, find_service, socket_path};
use gatehouse::protocol::{NodeState, RunState};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
/// The stand-ins for the `gatehouse` user and group, a member of the group, an outsider.
const SERVICE_UID: u32 = 4241;
const GROUP_GID: u32 = 4242;
const MEMBER_UID: u32 = 4243;
const OUTSIDER_UID: u32 = 4244;
const BINARY: &str = env!("CARGO_BIN_EXE_gatehouse");
/// Set when this test binary runs itself as another user: the part it plays there.
const ROLE: &str = "GATEHOUSE_TEST_ROLE";

/// Whether processes can be run as other users here.
fn cross_user() -> bool {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    root && Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Who runs a command: a uid, its primary gid and its supplementary groups.
#[derive(Clone, Copy)]
struct As {
    uid: u32,
    gid: u32,
    groups: &'static [u32],
}

/// `gatehouse ARGS` as `who` (through setpriv) or, without `who`, as this test's user.
fn command(who: Option<As>, args: &[&str], env: &[(&str, &Path)]) -> Command {
    let mut command = match who {
        Some(who) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", who.uid)).arg(format!("--regid={}", who.gid));
            if who.groups.is_empty() {
                c.arg("--clear-groups");
            } else {
                let groups: Vec<String> = who.groups.iter().map(u32::to_string).collect();
                c.arg(format!("--groups={}", groups.join(",")));
            }
            c.arg("--").arg(BINARY);
            c
        }
        None => Command::new(BINARY),
    };
    // Not the test's HOME: the other users can't reach it.
    command
        .args(args)
        .env_remove("GATEHOUSE_SERVICE_HOME")
        .env_remove("GATEHOUSE_HOME")
        .env("HOME", "/nonexistent");
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

fn output(mut command: Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn chown_all(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_all(&entry.unwrap().path(), uid, gid);
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every file under `dir` but the socket, with its mode.
fn files(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            found.extend(files(&path));
        }
        if path != socket_path(dir) {
            found.push((path, meta));
        }
    }
    found
}

/// A registered node in its own "service home", run with a control group.
struct SystemService {
    hub: Hub,
    node: Node,
    process: Spawned,
    /// Who runs it (`None`: this test's user) and the group its socket is shared with.
    runner: Option<As>,
    group: u32,
}

impl SystemService {
    fn start() -> SystemService {
        let hub = Hub::start();
        let key = hub.create_gateway("gw", &[]);
        let node = Node::register(&key, "svc", &[]);
        let dir = node.home.path().to_owned();
        let (runner, group) = if cross_user() {
            chown_all(&dir, SERVICE_UID, GROUP_GID);
            (Some(As { uid: SERVICE_UID, gid: GROUP_GID, groups: &[] }), GROUP_GID)
        } else {
            (None, std::fs::metadata("/proc/self").unwrap().gid())
        };
        let group_arg = group.to_string();
        let run = command(
            runner,
            &["node", "run", "--control-group", &group_arg],
            &[("GATEHOUSE_HOME", dir.as_path())],
        );
        let mut process = spawn(run, format!("gatehouse node run --control-group {group}"));
        let runtime = runtime();
        wait_until(LIMIT, "the service's control socket to answer", || {
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!("the service stopped ({status}): {}", process.stderr());
            }
            runtime.block_on(ControlClient::connect(&dir)).ok().flatten().is_some()
        });
        SystemService { hub, node, process, runner, group }
    }

    fn dir(&self) -> &Path {
        self.node.home.path()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A data dir without a node, for `who`.
fn own_dir(who: Option<As>) -> tempfile::TempDir {
    let own = tempfile::tempdir().unwrap();
    if let Some(who) = who {
        chown_all(own.path(), who.uid, who.gid);
    }
    own
}

#[test]
fn a_member_of_the_control_group_finds_the_system_service_and_an_outsider_is_refused() {
    let mut service = SystemService::start();
    let dir = service.dir().to_owned();
    let pid = service.process.pid();

    // The socket and the way to it are the group's; nothing else is anyone's but the owner's.
    assert_eq!(mode(&dir), 0o710, "the data dir");
    assert_eq!(std::fs::metadata(&dir).unwrap().gid(), service.group);
    let socket = socket_path(&dir);
    assert_eq!(mode(&socket), 0o660, "the control socket");
    assert_eq!(std::fs::metadata(&socket).unwrap().gid(), service.group);
    // (What lies deeper, the log files, is behind those owner-only dirs.)
    let top: Vec<_> = files(&dir).into_iter().filter(|(p, _)| p.parent() == Some(dir.as_path())).collect();
    assert!(top.iter().any(|(p, _)| p.ends_with("secrets.bin")), "{top:?}");
    for (path, meta) in &top {
        let expected = if meta.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(meta.permissions().mode() & 0o7777, expected, "{}", path.display());
    }

    // `node status` and `node start` from a data dir without a node: the system service.
    let member = service.runner.map(|_| As { uid: MEMBER_UID, gid: MEMBER_UID, groups: &[GROUP_GID] });
    let own = own_dir(member);
    let env = [("GATEHOUSE_HOME", own.path()), ("GATEHOUSE_SERVICE_HOME", dir.as_path())];
    let status = output(command(member, &["node", "status"], &env));
    let said = text(&status);
    assert!(status.status.success(), "{said}");
    assert!(said.contains("Node:     svc (gateway 'gw')"), "{said}");
    assert!(said.contains(&format!("Process:  pid {pid}")), "{said}");
    assert!(said.contains(&format!("the system service in {}", dir.display())), "{said}");
    let start = output(command(member, &["node", "start"], &env));
    let said = text(&start);
    assert!(start.status.success(), "{said}");
    assert!(said.contains(&format!("the node service already runs (pid {pid}")), "{said}");
    assert!(!socket_path(own.path()).exists(), "a second service started in the member's data dir");
    assert!(service.process.child.try_wait().unwrap().is_none(), "the service stopped");

    // The library call the window makes, as this test's user (the owner, or root).
    let runtime = runtime();
    let (found, _client) = runtime.block_on(find_service(own.path(), false, &dir)).unwrap().unwrap();
    assert!(found.system && found.dir == dir);
    let settings = runtime.block_on(ControlClient::settings(&dir)).unwrap();
    assert_eq!(settings.node_name, "svc");
    // A data dir with a node of its own never looks elsewhere.
    assert!(runtime.block_on(find_service(own.path(), true, &dir)).unwrap().is_none());

    if service.runner.is_none() {
        return;
    }
    // An outsider is stopped by the mode of the way to the socket, with the sentence…
    let outsider = Some(As { uid: OUTSIDER_UID, gid: OUTSIDER_UID, groups: &[] });
    let theirs = own_dir(outsider);
    let env = [("GATEHOUSE_HOME", theirs.path()), ("GATEHOUSE_SERVICE_HOME", dir.as_path())];
    let refused = output(command(outsider, &["node", "status"], &env));
    let said = text(&refused);
    assert!(!refused.status.success(), "an outsider saw the service: {said}");
    assert!(said.contains("only for root and the members of the gatehouse group"), "{said}");
    // …and, with the modes opened by hand, by the server, which hangs up on it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = output(command(outsider, &["node", "status"], &env));
    let said = text(&refused);
    assert!(!refused.status.success(), "the server let an outsider in: {said}");
    assert!(!said.contains(&format!("pid {pid}")), "the outsider was told the service's pid: {said}");
    wait_until(LIMIT, "the service to log the refusal", || {
        let log = service.process.stderr();
        log.contains("refused a connection from another user") && log.contains(&OUTSIDER_UID.to_string())
    });
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710)).unwrap();

    // A member stops it through the socket.
    let member_env = [("GATEHOUSE_HOME", own.path()), ("GATEHOUSE_SERVICE_HOME", dir.as_path())];
    let stop = output(command(member, &["node", "stop"], &member_env));
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(
        service.process.wait_timeout(LIMIT).is_some_and(|s| s.success()),
        "the service didn't stop cleanly"
    );
}

#[test]
fn a_window_without_a_node_of_its_own_attaches_to_the_system_service_and_changes_nothing_there() {
    let mut service = SystemService::start();
    let dir = service.dir().to_owned();
    let pid = service.process.pid();
    let before: Vec<(PathBuf, u32, u32)> =
        files(&dir).into_iter().map(|(p, m)| (p, m.uid(), m.permissions().mode())).collect();
    let node_toml = std::fs::read(dir.join("node.toml")).unwrap();

    let own = tempfile::tempdir().unwrap();
    let mut window = Window::open_attaching(own.path(), &dir, Tab::Home);
    window.wait_for("the window to attach to the system service", LIMIT, |app| {
        matches!(&app.state.service, ServiceState::Attached { pid: p, system: true, data_dir } if *p == pid && *data_dir == dir)
    });
    window.wait_for("the service's status through the socket", LIMIT, |app| {
        app.state.status.as_ref().is_some_and(|s| s.hub_connected && s.state == Some(NodeState::Online))
    });
    assert!(window.shows(&format!(
        "Service: attached to the system service gatehouse-node (pid {pid}, {})",
        dir.display()
    )));
    let app = window.harness.state();
    assert_eq!(app.state.settings.as_ref().map(|s| s.node_name.as_str()), Some("svc"), "settings not read");
    assert_eq!(app.state.data_dir.as_deref(), Some(dir.as_path()));
    assert!(!socket_path(own.path()).exists(), "the window started a second service");

    // Settings of another user's service: refused with the command to run instead.
    if service.runner.is_some() {
        window.harness.state_mut().prefs.tab = Tab::Settings;
        window.wait_for("the credential list's answer", LIMIT, |app| {
            app.settings.answer(OpKind::CredentialList).is_some()
        });
        let answer = window.harness.state().settings.answer(OpKind::CredentialList).cloned().unwrap();
        let refusal = answer.unwrap_err();
        assert!(refusal.contains("only its own user can read and change"), "{refusal}");
        assert!(refusal.contains("gatehouse node credential list"), "{refusal}");
    }
    let after: Vec<(PathBuf, u32, u32)> =
        files(&dir).into_iter().map(|(p, m)| (p, m.uid(), m.permissions().mode())).collect();
    let kept = |list: &[(PathBuf, u32, u32)]| {
        list.iter()
            .filter(|(p, ..)| !p.starts_with(dir.join("logs")) && !p.ends_with("status.json"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(kept(&after), kept(&before), "the window changed the service's files");
    assert_eq!(std::fs::read(dir.join("node.toml")).unwrap(), node_toml);

    window.harness.state_mut().prefs.tab = Tab::Home;
    window.harness.step();
    window.click("Stop");
    window.wait_for("the service to stop", LIMIT, |app| {
        matches!(app.state.service, ServiceState::Stopped { .. })
    });
    assert!(
        service.process.wait_timeout(LIMIT).is_some_and(|s| s.success()),
        "the service didn't stop cleanly"
    );
    // This window has no node to run itself: Start says where the service is.
    window.click("Start");
    window.wait_for("Start to answer", LIMIT, |app| {
        matches!(&app.state.service, ServiceState::Stopped { reason: Some(r) } if r.contains("sudo systemctl start gatehouse-node"))
    });
    assert!(!socket_path(own.path()).exists(), "Start ran a node in the window's own data dir");
}

#[test]
fn a_members_window_shows_the_system_services_jobs_and_an_outsider_gets_none() {
    if let Ok(role) = std::env::var(ROLE) {
        play(&role);
        return;
    }
    let mut service = SystemService::start();
    let dir = service.dir().to_owned();
    let spec = serde_json::json!({ "name": "nightly-echo", "activities": [{ "kind": "echo", "message": "hi", "partitions": 2 }] });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), spec.to_string()).unwrap();
    let hub = &service.hub;
    let id =
        hub.admin(&["job", "submit", "gw", file.path().to_str().unwrap()])["id"].as_str().unwrap().to_owned();
    wait_until(LIMIT, "the job to succeed", || hub.admin(&["job", "show", &id])["state"] == "succeeded");

    if service.runner.is_none() {
        // The window is the service's own user's: it still asks through the socket.
        let own = tempfile::tempdir().unwrap();
        window_shows_the_jobs(own.path(), &dir, &id);
        return;
    }
    let member = As { uid: MEMBER_UID, gid: MEMBER_UID, groups: &[GROUP_GID] };
    let own = own_dir(Some(member));
    run_as(member, "member", &[("GATEHOUSE_TEST_OWN", own.path()), ("GATEHOUSE_TEST_SERVICE", &dir)], &id);

    // An outsider asking for the jobs is stopped by the way to the socket…
    let outsider = As { uid: OUTSIDER_UID, gid: OUTSIDER_UID, groups: &[] };
    run_as(outsider, "outsider-at-the-door", &[("GATEHOUSE_TEST_SERVICE", &dir)], &id);
    // …and, with the modes opened by hand, by the server, which hangs up on it.
    let socket = socket_path(&dir);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    run_as(outsider, "outsider-let-in", &[("GATEHOUSE_TEST_SERVICE", &dir)], &id);
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710)).unwrap();
    wait_until(LIMIT, "the service to log the refusal", || {
        let log = service.process.stderr();
        log.contains("refused a connection from another user") && log.contains(&OUTSIDER_UID.to_string())
    });
    assert!(service.process.child.try_wait().unwrap().is_none(), "the service stopped");
}

/// Runs this test again as `who`, playing `role` with `env` and the job `id`; it must pass.
fn run_as(who: As, role: &str, env: &[(&str, &Path)], id: &str) {
    let test = "a_members_window_shows_the_system_services_jobs_and_an_outsider_gets_none";
    let groups: Vec<String> = who.groups.iter().map(u32::to_string).collect();
    let mut command = Command::new("setpriv");
    command.arg(format!("--reuid={}", who.uid)).arg(format!("--regid={}", who.gid));
    if groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        command.arg(format!("--groups={}", groups.join(",")));
    }
    command.arg("--").arg(std::env::current_exe().unwrap()).args([test, "--exact", "--nocapture"]);
    command.env(ROLE, role).env("GATEHOUSE_TEST_JOB", id).env("HOME", "/nonexistent");
    command.env_remove("GATEHOUSE_HOME").env_remove("GATEHOUSE_SERVICE_HOME");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = spawn(command, format!("this test as uid {} ({role})", who.uid));
    let status = child.wait_timeout(2 * LIMIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "as uid {} ({role}) it failed or didn't end ({status:?}):\n{}",
        who.uid,
        child.stderr()
    );
}

/// The part this test plays when it runs itself as another user.
fn play(role: &str) {
    let var = |name: &str| PathBuf::from(std::env::var_os(name).unwrap());
    let dir = var("GATEHOUSE_TEST_SERVICE");
    let id = std::env::var("GATEHOUSE_TEST_JOB").unwrap();
    match role {
        "member" => {
            // What the window couldn't do before: the node token is the service user's alone.
            assert!(std::fs::read(dir.join("node.toml")).is_err(), "a member read the service's files");
            window_shows_the_jobs(&var("GATEHOUSE_TEST_OWN"), &dir, &id);
        }
        "outsider-at-the-door" | "outsider-let-in" => {
            let refused = match runtime().block_on(ControlClient::jobs(&dir, 20)) {
                Ok(jobs) => panic!("an outsider was given the gateway's jobs: {jobs:?}"),
                Err(e) => e,
            };
            // At the door, the socket's mode; let in, the server, which hangs up unanswered.
            let by_the_mode = matches!(&refused, ControlError::Connect { reason, .. } if reason.kind() == std::io::ErrorKind::PermissionDenied);
            assert_eq!(by_the_mode, role == "outsider-at-the-door", "{refused:?}");
        }
        other => panic!("no such role {other:?}"),
    }
}

/// A window on `own` (no node) attaches to the service of `dir` and its Jobs tab lists the job
/// `id` with the runs the service's node ran.
fn window_shows_the_jobs(own: &Path, dir: &Path, id: &str) {
    let mut window = Window::open_attaching(own, dir, Tab::Jobs);
    window.wait_for("the window to attach to the system service", LIMIT, |app| {
        matches!(&app.state.service, ServiceState::Attached { system: true, data_dir, .. } if data_dir == dir)
    });
    window.wait_for("the Jobs tab to list the job with its runs", LIMIT, |app| {
        matches!(&app.state.jobs, Some(Ok(jobs)) if jobs.iter().any(|j| j.id == id && j.runs.len() >= 2))
    });
    window.harness.step();
    let jobs = window.harness.state().state.jobs.clone().unwrap().unwrap();
    let job = jobs.iter().find(|j| j.id == id).unwrap();
    assert_eq!(job.name, "nightly-echo");
    for run in &job.runs {
        assert_eq!(run.node_name.as_deref(), Some("svc"), "{run:?}");
        assert_eq!(run.state, RunState::Succeeded, "{run:?}");
        assert_eq!(run.attempts.len(), 1, "{run:?}");
    }
    assert!(window.shows(&format!("nightly-echo — succeeded ({id})")), "the job isn't drawn");
    assert!(!socket_path(own).exists(), "the window started a second service");
}
