//! The real `gatehouse` binary as a child process: start it with arguments and environment,
//! wait (bounded) for a line on its stdout, stop it with SIGTERM or SIGKILL, and never leave it
//! running after the test, however the test ends.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long `stop` waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running `gatehouse`; killed (SIGKILL) and reaped on drop.
pub struct Spawned {
    pub child: Child,
    /// What the process was started with, for messages.
    command: String,
    /// Stdout lines, read on a background thread so waits can time out.
    lines: Receiver<String>,
    /// Stdout lines already read that matched no prefix, for messages.
    seen: Vec<String>,
    /// Everything the process wrote to stderr so far (its log).
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// Starts the test build of `gatehouse` with `args` and extra `env`, stdin closed, stdout and
/// stderr captured.
pub fn spawn_gatehouse(args: &[&str], env: &[(&str, &str)]) -> Spawned {
    spawn_binary(std::path::Path::new(env!("CARGO_BIN_EXE_gatehouse")), args, env)
}

/// Like [`spawn_gatehouse`], from another copy of the binary (a test that updates one).
pub fn spawn_binary(binary: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Spawned {
    let mut command = Command::new(binary);
    command.args(args).envs(env.iter().copied());
    spawn(command, format!("gatehouse {}", args.join(" ")))
}

/// Starts `child` (a `gatehouse` behind a wrapper such as `setpriv`, say) the way
/// [`spawn_gatehouse`] does; `command` names it in messages.
pub fn spawn(mut child: Command, command: String) -> Spawned {
    let mut child = child
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command}: {e}"));

    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        while stdout.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_owned();
            if sender.send(text).is_err() {
                break;
            }
            line.clear();
        }
    });

    let mut pipe = child.stderr.take().expect("stderr is piped");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        let mut buffer = [0_u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buffer) {
            sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(&buffer[..n]);
        }
    });

    Spawned { child, command, lines, seen: Vec::new(), stderr }
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            .into_owned()
    }

    /// Reads stdout lines until one starts with `prefix` and returns the rest of that line.
    /// Panics, with what the process printed, if none comes within `timeout` or stdout closes.
    pub fn read_line_matching(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => match line.strip_prefix(prefix) {
                    Some(rest) => return rest.to_owned(),
                    None => self.seen.push(line),
                },
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("printed no line starting with {prefix:?} within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Give the stderr reader a moment to catch the last words.
                    let status = self.wait_timeout(Duration::from_secs(2));
                    self.fail(&format!(
                        "closed stdout ({}) before a line starting with {prefix:?}",
                        status.map_or_else(|| "still running".to_owned(), |s| s.to_string())
                    ))
                }
            }
        }
    }

    /// The admin token a first-started `hub serve` made: it says where it wrote it (stdout is
    /// no terminal here, so the token itself is never printed), and the file holds it.
    pub fn read_admin_token(&mut self, timeout: Duration) -> String {
        let said = self.read_line_matching("admin token written to ", timeout);
        let path = said.split(" (").next().unwrap_or_default().to_owned();
        let token = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading the admin token file {path}: {e}"));
        token.trim().to_owned()
    }

    /// SIGKILL, then reap. Returns how the process ended.
    pub fn kill9(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().unwrap_or_else(|e| panic!("waiting for `{}`: {e}", self.command))
    }

    /// SIGTERM, then wait up to 10 s for the process to exit, then SIGKILL. Returns how the
    /// process ended (a signal in the status means it had to be killed).
    pub fn stop(&mut self) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if sent {
            if let Some(status) = self.wait_timeout(STOP_GRACE) {
                return status;
            }
            eprintln!("`{}` ignored SIGTERM for {STOP_GRACE:?}; sending SIGKILL", self.command);
        } else {
            eprintln!("could not send SIGTERM with `kill` (is procps installed?); sending SIGKILL");
        }
        self.kill9()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn fail(&self, what: &str) -> ! {
        let stderr = self.stderr();
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "`{}` {what}\n--- stdout so far ---\n{}\n--- stderr (last 30 lines) ---\n{}",
            self.command,
            self.seen.join("\n"),
            tail.join("\n")
        );
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Another process may take it before
/// the caller binds it; prefer `--listen 127.0.0.1:0` and reading the printed address.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|e| panic!("finding a free port on 127.0.0.1: {e}"))
        .port()
}
