//! A second, independent S3 implementation for cross-checks: moto's server (`python3 -m
//! moto.server`, from PyPI `moto`, which `bash tests/run.sh` installs into
//! ~/.cache/gatehouse-tools and names in `GATEHOUSE_MOTO`), in memory, bound to 127.0.0.1 on
//! a free port, with one bucket, killed on drop. It answers the same signed calls as SeaweedFS
//! ([`S3Api`], which it derefs to). Moto takes any keys and checks no signature, so tests of
//! refused credentials stay with SeaweedFS; it is here for what a second server may do
//! differently: conditional writes, multipart rules, checksums, metadata, listings.

use super::s3::{
    S3Api, assert_listens_only_on_loopback, kill_group, pick_free_ports, random_text, tail, tools_dir,
};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Moto answers within a few seconds (Python imports; more on a busy two-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries at free ports, in case another process takes ours before moto binds it.
const START_ATTEMPTS: usize = 5;

const INSTALL_HINT: &str = "run `bash tests/run.sh` once (it installs PyPI `moto` into \
                            ~/.cache/gatehouse-tools/moto), or name that folder in GATEHOUSE_MOTO";

/// A running moto server; its process group is killed and its temp dir removed on drop.
pub struct Moto {
    child: Child,
    /// Holds `moto.log` (its output); moto keeps its data in memory.
    dir: tempfile::TempDir,
    api: S3Api,
}

impl std::ops::Deref for Moto {
    type Target = S3Api;

    fn deref(&self) -> &S3Api {
        &self.api
    }
}

impl Moto {
    /// Starts a server with an empty bucket and waits (bounded) until it answers; panics
    /// saying what to install or what went wrong (with the end of its log). Also asserts it
    /// listens on 127.0.0.1 only.
    pub fn start() -> Moto {
        let packages = moto_packages();
        for attempt in 1..=START_ATTEMPTS {
            let started = Instant::now();
            if let Some(server) = Moto::try_start(&packages) {
                eprintln!(
                    "moto on {} answered after {:.1?} (attempt {attempt})",
                    server.endpoint(),
                    started.elapsed()
                );
                assert_listens_only_on_loopback("moto", server.child.id());
                server.create_bucket();
                return server;
            }
            eprintln!("moto: its port was taken before it bound it; trying another");
        }
        panic!("moto: its port was taken each of {START_ATTEMPTS} times")
    }

    /// `None` when the port was taken before moto bound it.
    fn try_start(packages: &Path) -> Option<Moto> {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-moto-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir for moto: {e}"));
        let log_path = dir.path().join("moto.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let port = pick_free_ports(1)[0];
        let mut command = Command::new("python3");
        command.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()]);
        // Its config comes from here alone: no AWS_*/MOTO_* of our environment.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if ["AWS_", "MOTO_", "PYTHON"].iter().any(|prefix| key_text.starts_with(prefix)) {
                command.env_remove(key);
            }
        }
        command.env("PYTHONPATH", packages).env("HOME", dir.path()).current_dir(dir.path());
        let stderr = log.try_clone().unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
        command.stdin(Stdio::null()).stdout(log).stderr(stderr).process_group(0);
        let child = command.spawn().unwrap_or_else(|e| panic!("starting python3 -m moto.server: {e}"));
        let access_key = format!("GH{}", random_text(18).to_ascii_uppercase());
        let api = S3Api::new(port, access_key, random_text(40), "Other", log_path);
        // From here on, a panic drops `server`, which kills whatever did start.
        let mut server = Moto { child, dir, api };
        server.wait_until_ready().then_some(server)
    }

    /// Waits until moto answers a signed listing (any answer: the bucket comes after); `false`
    /// when it exited because its port was taken.
    fn wait_until_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                if self.server_log().contains("Address already in use") {
                    return false;
                }
                self.fail(&format!("exited ({status}) before it answered"));
            }
            let query = [("list-type", "2"), ("max-keys", "1")];
            let Err(last) = self.api.try_send("GET", "", &query, &[], &[], Duration::from_secs(2)) else {
                return true;
            };
            if Instant::now() >= deadline {
                self.fail(&format!("was not ready within {START_TIMEOUT:?}; last: {last}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Panics; dropping `self` then prints the end of the server log.
    fn fail(&self, what: &str) -> ! {
        panic!("moto (`python3 -m moto.server` on {}) {what} (its log follows)", self.endpoint());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- moto log, {} (last 40 lines) ---\n{}",
                self.dir.path().join("moto.log").display(),
                tail(&self.server_log(), 40)
            );
        }
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The folder holding the `moto` package and what it needs: `GATEHOUSE_MOTO`, else what
/// `tests/run.sh` installed.
fn moto_packages() -> PathBuf {
    let folder = std::env::var_os("GATEHOUSE_MOTO")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .or_else(|| tools_dir().map(|tools| tools.join("moto")));
    match folder {
        Some(folder) if folder.join("moto/__init__.py").is_file() => folder,
        Some(folder) => panic!("{} holds no moto package: {INSTALL_HINT}", folder.display()),
        None => panic!("no GATEHOUSE_MOTO and no HOME: {INSTALL_HINT}"),
    }
}
