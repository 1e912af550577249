//! A virtual X display for tests and the GUI benchmark: Xvfb on the first free display
//! number, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long Xvfb may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running Xvfb and its display (`:N`).
pub struct Xvfb {
    process: Child,
    pub display: String,
}

impl Xvfb {
    /// Starts Xvfb on the first free display number and waits (bounded) for its socket. Other
    /// tests and runs on this machine may start servers at the same moment: a number is ours
    /// only once its lock file names our Xvfb; if another server won it, try the next one.
    pub fn start() -> Xvfb {
        // Within this process, one caller at a time picks a number.
        static PICKING: Mutex<()> = Mutex::new(());
        let _picking = PICKING.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = |n: u32| {
            Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                || Path::new(&format!("/tmp/.X{n}-lock")).exists()
        };
        for number in (90..200).filter(|&n| !taken(n)) {
            let display = format!(":{number}");
            let process = Command::new("Xvfb")
                .args([display.as_str(), "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("can't start Xvfb ({e}); `bash tests/run.sh` installs it"));
            let mut xvfb = Xvfb { process, display };
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
            let lock = format!("/tmp/.X{number}-lock");
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if xvfb.process.try_wait().unwrap().is_some() {
                    break; // another server took the number first
                }
                let owner =
                    std::fs::read_to_string(&lock).ok().and_then(|pid| pid.trim().parse::<u32>().ok());
                if socket.exists() && owner == Some(xvfb.process.id()) {
                    return xvfb;
                }
                assert!(
                    Instant::now() < deadline,
                    "Xvfb {} did not start within {START_TIMEOUT:?}",
                    xvfb.display
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("no free X display number in :90–:199");
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
