//! The real binary opens its window: start Xvfb, run `gatehouse` with no arguments, wait for
//! the Configuration Manager window, take a screenshot and check it isn't blank. The PNG is
//! kept in `tests/artifacts/` for a person to look at.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

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

/// Starts Xvfb on the first free display number and waits for its socket.
fn start_xvfb() -> (Killed, String) {
    let number = (90..200).find(|n| !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()).unwrap();
    let display = format!(":{number}");
    let xvfb = Command::new("Xvfb")
        .args([display.as_str(), "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("can't start Xvfb; `bash tests/run.sh` installs it");
    let xvfb = Killed(xvfb);
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "Xvfb did not start in 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (xvfb, display)
}

#[test]
fn the_binary_opens_a_window_that_renders() {
    let (_xvfb, display) = start_xvfb();
    let home = tempfile::tempdir().unwrap();
    let app = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _app = Killed(app);

    let title = gatehouse::gui::WINDOW_TITLE;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = run("xdotool", &["search", "--name", title], &display);
        if found.status.success() && !found.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no window titled {title:?} appeared in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The first frames may still be blank; give rendering a bounded while to show content.
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("window.png");
    let shot = shot.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let colours = loop {
        assert!(run("import", &["-window", "root", shot], &display).status.success(), "screenshot failed");
        let counted = run("convert", &[shot, "-format", "%k", "info:"], &display);
        let colours: u32 = String::from_utf8_lossy(&counted.stdout).trim().parse().unwrap_or(0);
        if colours > 16 || Instant::now() > deadline {
            break colours;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(colours > 16, "the window looks blank: {colours} colours in {shot}");
}
