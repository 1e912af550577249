//! A virtual X display for tests and the GUI benchmark: Xvfb on a display number it picks,
//! killed on drop.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long Xvfb may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running Xvfb and its display (`:N`).
pub struct Xvfb {
    process: Child,
    pub display: String,
}

impl Xvfb {
    /// Starts Xvfb and waits (bounded) until it accepts clients. Xvfb picks a free display
    /// number itself and writes it to `-displayfd` only once it listens: a socket file can
    /// exist a moment before that (a window started then couldn't connect), and picking a
    /// number here would race other tests and runs starting servers at the same moment.
    pub fn start() -> Xvfb {
        let mut process = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("can't start Xvfb ({e}); `bash tests/run.sh` installs it"));
        let stdout = process.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut xvfb = Xvfb { process, display: String::new() };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.trim().parse::<u32>().is_ok() => xvfb.display = format!(":{}", line.trim()),
            Ok(line) => panic!("Xvfb didn't start (it said {line:?})"),
            Err(e) => panic!("Xvfb did not start within {START_TIMEOUT:?} ({e})"),
        }
        xvfb
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
