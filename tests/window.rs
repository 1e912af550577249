//! The real binary opens its window: start Xvfb, run `gatehouse` with no arguments, wait for
//! the Configuration Manager window, take a screenshot and check it isn't blank. A second test
//! does the same on a data dir holding a registered node (a real hub on loopback), where the
//! window shows Home and runs the node service in-process. The PNGs are kept in
//! `tests/artifacts/` for a person to look at.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, wait_until};
use common::xvfb::Xvfb;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Kills the child when the test ends, however it ends; `.1` is where its stderr goes.
struct Killed(Child, std::path::PathBuf);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(program: &str, args: &[&str], display: &str) -> Output {
    Command::new(program)
        .args(args)
        .env("DISPLAY", display)
        .output()
        .unwrap_or_else(|e| panic!("can't run {program} ({e}); `bash tests/run.sh` installs it"))
}

/// Waits (bounded) until a window with the Configuration Manager's title exists.
fn wait_for_window(display: &str, app: &mut Killed) {
    let title = gatehouse::gui::WINDOW_TITLE;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = run("xdotool", &["search", "--name", title], display);
        if found.status.success() && !found.stdout.is_empty() {
            return;
        }
        if let Some(status) = app.0.try_wait().unwrap() {
            let stderr = std::fs::read_to_string(&app.1).unwrap_or_default();
            panic!("the binary exited ({status}) before its window appeared:\n{stderr}");
        }
        assert!(Instant::now() < deadline, "no window titled {title:?} appeared in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Screenshots the display into `tests/artifacts/{name}` until it shows more than 16 colours
/// (the first frames may still be blank) or 30 s pass; returns the colours and the path.
fn screenshot(display: &str, name: &str) -> (u32, String) {
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(name).to_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(run("import", &["-window", "root", &shot], display).status.success(), "screenshot failed");
        let counted = run("convert", &[&shot, "-format", "%k", "info:"], display);
        let colours: u32 = String::from_utf8_lossy(&counted.stdout).trim().parse().unwrap_or(0);
        if colours > 16 || Instant::now() > deadline {
            return (colours, shot);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Starts the real binary (`gatehouse ARGS`) on `display` with its own HOME (plus `env`).
fn open_window(display: &str, args: &[&str], home: &Path, env: &[(&str, &Path)]) -> Killed {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .args(args)
        .env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let log = home.join("window-stderr.log");
    command.stderr(std::fs::File::create(&log).unwrap());
    Killed(command.spawn().unwrap(), log)
}

#[test]
fn the_binary_opens_a_window_that_renders() {
    let xvfb = Xvfb::start();
    let display = xvfb.display.clone();
    let home = tempfile::tempdir().unwrap();
    let mut app = open_window(&display, &[], home.path(), &[]);

    wait_for_window(&display, &mut app);
    let (colours, shot) = screenshot(&display, "window.png");
    assert!(colours > 16, "the window looks blank: {colours} colours in {shot}");
}

#[test]
fn the_binary_shows_home_for_a_registered_node() {
    // A gateway on a real hub (loopback) and a node registered in its own data dir.
    let hub = Hub::start();
    let key = hub.create_gateway("window", &[]);
    let node = Node::register(&key, "window", &[]);

    let xvfb = Xvfb::start();
    let display = xvfb.display.clone();
    let home = tempfile::tempdir().unwrap();
    let mut app = open_window(&display, &["gui"], home.path(), &[("GATEHOUSE_HOME", node.home.path())]);
    wait_for_window(&display, &mut app);

    // With a registered node the window shows Home and starts the node service in its own
    // process: the hub sees the node come Online.
    wait_until(Duration::from_secs(60), "the window's node to be Online at the hub", || {
        hub.nodes("window").first().is_some_and(|n| n["status"] == "Online")
    });
    if let Some(status) = app.0.try_wait().unwrap() {
        panic!("the window exited ({status})");
    }
    let (colours, shot) = screenshot(&display, "home.png");
    assert!(colours > 16, "the Home tab looks blank: {colours} colours in {shot}");
}
