//! `gatehouse node start | stop | restart` and the process line of `node status`, with a
//! real hub and a registered node on loopback. No systemd runs here (it is not this
//! container's init), so these go through the control socket and a detached `node run`, the
//! way they act on a machine without the unit.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, gatehouse};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Kills (SIGKILL, by pid) the detached services a test started, however it ends.
#[derive(Default)]
struct Started(Vec<u32>);

impl Drop for Started {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

fn node(home: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = gatehouse(home, args, &[]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The pid in "… (pid N, since …)" of a start or stop line.
fn pid_in(line: &str) -> u32 {
    let rest = line.split("pid ").nth(1).unwrap_or_else(|| panic!("no pid in {line:?}"));
    rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// A live process (a zombie has exited already).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

#[test]
fn start_status_restart_and_stop_act_on_the_node_service() {
    let hub = Hub::start();
    let key = hub.create_gateway("lake", &[]);
    let n1 = Node::register(&key, "n1", &[]);
    let home = n1.home.path();
    let mut started = Started::default();

    let (code, out, err) = node(home, &["node", "status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Process:  not running; start it with: gatehouse node start"), "{out}");

    let (code, out, err) = node(home, &["node", "start"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("node service started (pid "), "{out}");
    let first = pid_in(&out);
    started.0.push(first);
    assert!(alive(first), "node start printed pid {first}, which doesn't run");
    assert!(out.contains(", since 20"), "start names no start time: {out}");

    let (code, out, _) = node(home, &["node", "status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("(running now)"), "{out}");
    let process = out.lines().find(|l| l.starts_with("Process:  ")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(pid_in(process), first, "{out}");
    assert!(process.contains(", since 20"), "{process}");

    // A second start finds it running and starts nothing.
    let (code, out, _) = node(home, &["node", "start"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("the node service already runs (pid "), "{out}");
    assert_eq!(pid_in(&out), first);

    let (code, out, err) = node(home, &["node", "restart"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let mut lines = out.lines();
    let stopped = lines.next().unwrap();
    assert!(stopped.starts_with("node service stopped (was pid "), "{out}");
    assert_eq!(pid_in(stopped), first);
    let second = pid_in(lines.next().unwrap_or_else(|| panic!("restart started nothing: {out}")));
    started.0.push(second);
    assert_ne!(second, first, "restart kept the old process");
    assert!(!alive(first), "the old service {first} still runs after restart");
    assert!(alive(second));

    let (code, out, err) = node(home, &["node", "stop"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(pid_in(&out), second, "{out}");
    assert!(!alive(second), "node stop returned while {second} still runs");
    let (_, out, _) = node(home, &["node", "status"]);
    assert!(out.contains("Process:  not running"), "{out}");

    // Stopping what doesn't run is no error, as with systemctl.
    let (code, out, _) = node(home, &["node", "stop"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), "the node service is not running");
}

#[test]
fn stop_ends_a_node_run_started_in_a_terminal() {
    let hub = Hub::start();
    let key = hub.create_gateway("lake", &[]);
    let mut n1 = Node::start(&key, "n1", &[]);
    let home = n1.home.path().to_owned();
    let pid = n1.process.as_ref().unwrap().pid();
    common::cluster::wait_until(Duration::from_secs(30), "node run answering on its control socket", || {
        node(&home, &["node", "status"]).1.contains(&format!("Process:  pid {pid}"))
    });

    let (code, out, err) = node(&home, &["node", "stop"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with(&format!("node service stopped (was pid {pid}, since 20")), "{out}");
    // It exited by itself, cleanly, after draining: not killed.
    let status =
        n1.process.as_mut().unwrap().wait_timeout(Duration::from_secs(10)).expect("node run still runs");
    assert!(status.success(), "node run ended with {status}");
}

#[test]
fn start_refuses_an_unregistered_machine_with_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let (code, out, err) = node(home.path(), &["node", "start"]);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(
        err.trim(),
        "error: this machine is not registered yet; register it first: gatehouse node register"
    );
    assert!(!home.path().join("control.sock").exists(), "a service was started anyway");
}
