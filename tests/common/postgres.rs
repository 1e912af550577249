//! A throwaway PostgreSQL cluster for one test: `initdb` into a fresh temp dir, a server on
//! 127.0.0.1 and a free port (fsync off, trust auth for the `gatehouse` role), one database
//! to start with and more on demand, all stopped and removed on drop. Uses Debian's
//! `/usr/lib/postgresql/<ver>/bin` (highest version), else `initdb`/`pg_ctl` on PATH. As root,
//! the server runs as the `postgres` system user, since PostgreSQL refuses to run as root.

use std::ffi::OsStr;
use std::io::{Read as _, Seek as _};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The superuser `initdb` creates; every URL connects as it (trust auth, no password).
const USER: &str = "gatehouse";
/// The database `start` creates.
const FIRST_DATABASE: &str = "gatehouse";
/// Tries at a free port, in case another process takes the one we picked before the server
/// binds it.
const START_ATTEMPTS: usize = 5;
/// How long `pg_ctl` waits for the server to start or stop (its `-t`).
const PG_CTL_WAIT_SECS: u64 = 30;
/// Bounds for the commands themselves: `initdb` is the slow one (about a second when idle,
/// much more on a busy two-core machine).
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(PG_CTL_WAIT_SECS + 15);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

const INSTALL_HINT: &str = "install the `postgresql` package (`bash tests/run.sh` does, \
                            or `apt-get install postgresql`)";

/// A running throwaway cluster; stopped (`pg_ctl stop -m immediate`) and deleted on drop.
pub struct Postgres {
    /// Holds `data/` (the cluster), `server.log` and the Unix socket; removed on drop.
    dir: tempfile::TempDir,
    /// Where `initdb`, `pg_ctl` (and usually `createdb`) are.
    bin: PathBuf,
    port: u16,
    /// Run the server commands through `runuser -u postgres --` (we are root).
    run_as_postgres_user: bool,
}

impl Postgres {
    /// Starts a new cluster with an empty database; panics saying what to install or what
    /// went wrong (with the end of the server log).
    pub fn start() -> Postgres {
        let bin = bin_dir().clone();
        let run_as_postgres_user = running_as_root();
        if run_as_postgres_user {
            let user = Command::new("id").args(["-u", "postgres"]).output();
            assert!(
                user.is_ok_and(|o| o.status.success()),
                "the tests run as root, PostgreSQL refuses to run as root, and there is no \
                 `postgres` system user to run it as: {INSTALL_HINT}; it creates that user"
            );
        }
        // /tmp, not $TMPDIR: the `postgres` user must reach the dir, and the socket path must
        // stay short (Unix sockets allow ~107 bytes).
        let base = if Path::new("/tmp").is_dir() { PathBuf::from("/tmp") } else { std::env::temp_dir() };
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pg-")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("creating a temp dir in {}: {e}", base.display()));
        // From here on, a panic drops `postgres`, which stops whatever did start.
        let mut postgres = Postgres { dir, bin, port: 0, run_as_postgres_user };
        if run_as_postgres_user {
            let mut chown = Command::new("chown");
            chown.arg("postgres").arg(postgres.dir());
            run_bounded(chown, CLIENT_TIMEOUT)
                .unwrap_or_else(|e| panic!("handing the temp dir to postgres: {e}"));
        }
        postgres.initdb();
        postgres.start_server();
        postgres.create_database(FIRST_DATABASE);
        postgres
    }

    /// `postgres://gatehouse@127.0.0.1:<port>/<db>` for the database `start` created.
    pub fn url(&self) -> String {
        self.url_of(FIRST_DATABASE)
    }

    /// Creates another database in this cluster (for tests that want isolation) and returns
    /// its URL. `name`: lowercase letters, digits and `_`, starting with a letter.
    pub fn new_database(&self, name: &str) -> String {
        self.create_database(name);
        self.url_of(name)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's temp dir: `data/`, `server.log` and the Unix socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server has logged so far.
    pub fn server_log(&self) -> String {
        std::fs::read(self.log_path()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    fn url_of(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("server.log")
    }

    fn initdb(&self) {
        let mut initdb = self.server_command("initdb");
        initdb.arg("-D").arg(self.data_dir());
        initdb.args(["-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8", "--locale=C"]);
        run_bounded(initdb, INITDB_TIMEOUT).unwrap_or_else(|e| panic!("creating a PostgreSQL cluster: {e}"));
    }

    /// Starts the server on a free port, retrying with another port if ours was taken.
    fn start_server(&mut self) {
        for attempt in 1..=START_ATTEMPTS {
            self.port = pick_port();
            let log_before = self.server_log().len();
            let options = format!("-k {} -h 127.0.0.1 -p {} -F", self.dir().display(), self.port);
            let mut pg_ctl = self.server_command("pg_ctl");
            pg_ctl.arg("start").arg("-D").arg(self.data_dir()).arg("-l").arg(self.log_path());
            pg_ctl.args(["-w", "-t", &PG_CTL_WAIT_SECS.to_string(), "-o", &options]);
            let Err(error) = run_bounded(pg_ctl, PG_CTL_TIMEOUT) else { return };
            let log = self.server_log();
            let new_log = log.get(log_before..).unwrap_or(&log);
            let port_taken = new_log.contains("Address already in use") || new_log.contains("could not bind");
            if port_taken && attempt < START_ATTEMPTS {
                eprintln!("PostgreSQL: port {} was taken; trying another", self.port);
                self.stop_server();
                continue;
            }
            panic!(
                "starting PostgreSQL on 127.0.0.1:{} (attempt {attempt} of {START_ATTEMPTS}): {error}\n\
                 --- server log (last 20 lines) ---\n{}",
                self.port,
                tail(&log, 20)
            );
        }
    }

    fn create_database(&self, name: &str) {
        let valid = name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        assert!(
            valid,
            "database name {name:?}: use lowercase letters, digits and `_`, starting with a letter"
        );
        let createdb = self.bin.join("createdb");
        let mut command = hermetic(Command::new(if createdb.is_file() {
            createdb.as_os_str()
        } else {
            OsStr::new("createdb")
        }));
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-w", name]);
        if let Err(error) = run_bounded(command, CLIENT_TIMEOUT) {
            panic!(
                "creating database {name}: {error}\n--- server log (last 20 lines) ---\n{}",
                tail(&self.server_log(), 20)
            );
        }
    }

    /// A command from the PostgreSQL bin dir, run as `postgres` when we are root.
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.run_as_postgres_user {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            Command::new(program)
        };
        // The test's working dir may be closed to the `postgres` user.
        command.current_dir(self.dir());
        hermetic(command)
    }

    /// Stops the server if it runs: `pg_ctl stop -m immediate`, else SIGKILL to the pid in
    /// `postmaster.pid`. Never panics (it runs in `drop`).
    fn stop_server(&self) {
        let pid_file = self.data_dir().join("postmaster.pid");
        if !pid_file.exists() {
            return;
        }
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl.arg("stop").arg("-D").arg(self.data_dir());
        pg_ctl.args(["-m", "immediate", "-w", "-t", &PG_CTL_WAIT_SECS.to_string()]);
        let Err(error) = run_bounded(pg_ctl, PG_CTL_TIMEOUT) else { return };
        // Only a process that is still our postmaster: the pid may be stale and reused.
        let data_dir = self.data_dir().to_string_lossy().into_owned();
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next().and_then(|line| line.trim().parse::<u32>().ok()))
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&data_dir))
            });
        eprintln!("PostgreSQL in {}: pg_ctl stop failed ({error}); killing {pid:?}", self.dir().display());
        if let Some(pid) = pid {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_server();
        // Then `dir` drops and removes the cluster.
    }
}

/// The dir with `initdb` and `pg_ctl`: the highest `/usr/lib/postgresql/<ver>/bin`, else PATH.
fn bin_dir() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
        let debian = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version: Option<Vec<u32>> =
                    entry.file_name().to_str()?.split('.').map(|part| part.parse().ok()).collect();
                Some((version?, entry.path().join("bin")))
            })
            .filter(|(_, bin)| has_tools(bin))
            .max();
        if let Some((_, bin)) = debian {
            return bin;
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .find(|dir| has_tools(dir))
            .unwrap_or_else(|| {
                panic!("PostgreSQL's initdb and pg_ctl are in neither /usr/lib/postgresql/*/bin nor PATH: {INSTALL_HINT}")
            })
    })
}

fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let id = Command::new("id").arg("-u").output().unwrap_or_else(|e| panic!("running `id -u`: {e}"));
        String::from_utf8_lossy(&id.stdout).trim() == "0"
    })
}

/// A port on 127.0.0.1 that was free a moment ago.
fn pick_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|e| panic!("finding a free port on 127.0.0.1: {e}"))
        .port()
}

/// No `PG*` variables from the environment (they would redirect the tools), English messages
/// (we look for "Address already in use"), no stdin.
fn hermetic(mut command: Command) -> Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(key);
        }
    }
    command.env("LC_ALL", "C").env("LANG", "C").stdin(Stdio::null());
    command
}

/// Runs `command` in its own process group with output to a temp file; kills the group if it
/// takes longer than `timeout`. `Err` says what ran, how it ended and what it printed.
fn run_bounded(mut command: Command, timeout: Duration) -> Result<String, String> {
    let described = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    let mut output =
        tempfile::tempfile().map_err(|e| format!("`{described}`: a temp file for its output: {e}"))?;
    let clone = |file: &std::fs::File| file.try_clone().map_err(|e| format!("`{described}`: {e}"));
    command.stdout(clone(&output)?).stderr(clone(&output)?).process_group(0);
    let mut child = command.spawn().map_err(|e| format!("`{described}` could not start: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("did not finish within {timeout:?}"));
            }
            Err(e) => break Err(format!("could not be waited for: {e}")),
        }
    };
    let mut bytes = Vec::new();
    let _ = output.rewind();
    let _ = output.read_to_end(&mut bytes);
    let printed = String::from_utf8_lossy(&bytes).into_owned();
    match status {
        Ok(status) if status.success() => Ok(printed),
        Ok(status) => Err(format!("`{described}` failed ({status}):\n{}", printed.trim_end())),
        Err(how) => Err(format!("`{described}` {how}:\n{}", printed.trim_end())),
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
