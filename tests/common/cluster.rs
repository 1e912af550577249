//! A hub and nodes as real processes on loopback, for tests that need a whole gateway: start
//! a hub, run admin commands against it, register and run nodes, wait (bounded) for states.

use super::process::{Spawned, free_port, spawn_gatehouse};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `gatehouse hub serve` with its admin token.
pub struct Hub {
    pub process: Spawned,
    pub url: String,
    pub token: String,
    home_dir: tempfile::TempDir,
}

/// A registered node, running unless stopped.
pub struct Node {
    pub name: String,
    pub home: tempfile::TempDir,
    pub peer_address: String,
    pub process: Option<Spawned>,
}

impl Hub {
    pub fn start() -> Hub {
        Hub::start_with(&[])
    }

    /// Starts a hub with extra `hub serve` flags.
    pub fn start_with(extra: &[&str]) -> Hub {
        let home = tempfile::tempdir().unwrap();
        let mut args = vec!["hub", "serve", "--listen", "127.0.0.1:0"];
        args.extend(extra);
        let mut process = spawn_gatehouse(&args, &[("GATEHOUSE_HOME", home.path().to_str().unwrap())]);
        let url = process.read_line_matching("listening on ", Duration::from_secs(30));
        let token = process.read_admin_token(Duration::from_secs(10));
        Hub { process, url, token, home_dir: home }
    }

    /// Stops the hub (SIGTERM), leaves it down for `down`, and starts it again on the same
    /// address and database, as an administrator restarting it would.
    pub fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.start_again();
    }

    /// Stops the hub (SIGTERM); [`Hub::start_again`] brings it back.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts a stopped hub again on the same address and database.
    pub fn start_again(&mut self) {
        let address = self.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let mut process = spawn_gatehouse(
            &["hub", "serve", "--listen", &address],
            &[("GATEHOUSE_HOME", self.home_dir.path().to_str().unwrap())],
        );
        let url = process.read_line_matching("listening on ", Duration::from_secs(30));
        assert_eq!(url, self.url, "the hub came back on its address");
        self.process = process;
    }

    /// Runs an admin command with `--json` and returns its output, asserting success.
    pub fn admin(&self, args: &[&str]) -> serde_json::Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--hub", &self.url, "--json"]);
        let output = gatehouse(Path::new("/nonexistent"), &all, &[("GATEHOUSE_ADMIN_TOKEN", &self.token)]);
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap_or_default()
    }

    /// Creates a gateway; returns its primary auth key.
    pub fn create_gateway(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["hub", "gateway", "create", name];
        args.extend(extra);
        self.admin(&args)["keys"]["primary"].as_str().unwrap().to_owned()
    }

    /// The hub's data dir (its SQLite database lives there).
    pub fn home(&self) -> &Path {
        self.home_dir.path()
    }

    /// The gateway's nodes as the hub shows them.
    pub fn nodes(&self, gateway: &str) -> Vec<serde_json::Value> {
        self.admin(&["hub", "node", "list", gateway]).as_array().cloned().unwrap_or_default()
    }
}

impl Node {
    /// Registers a node on a free loopback peer port (plus `extra` register flags) and starts
    /// `gatehouse node run` for it.
    pub fn start(key: &str, name: &str, extra: &[&str]) -> Node {
        let mut node = Node::register(key, name, extra);
        node.run(&[]);
        node
    }

    /// Registers a node on a free loopback peer port (plus `extra` register flags).
    pub fn register(key: &str, name: &str, extra: &[&str]) -> Node {
        let home = tempfile::tempdir().unwrap();
        let port = free_port().to_string();
        let peer_address = format!("127.0.0.1:{port}");
        let mut args =
            vec!["node", "register", "--name", name, "--peer-port", &port, "--peer-address", &peer_address];
        args.extend(extra);
        let output = gatehouse(home.path(), &args, &[("GATEHOUSE_AUTH_KEY", key)]);
        assert!(output.status.success(), "registering {name}: {}", String::from_utf8_lossy(&output.stderr));
        Node { name: name.to_owned(), home, peer_address, process: None }
    }

    /// Runs a `gatehouse node …` command for this node, asserting success.
    pub fn command(&self, args: &[&str]) -> Output {
        let output = gatehouse(self.home.path(), args, &[]);
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output
    }

    /// Sets a data-store credential on this node, its value on standard input as users give it.
    pub fn set_credential(&self, name: &str, value: &str) {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["node", "credential", "set", name])
            .env("GATEHOUSE_HOME", self.home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{value}\n").as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }

    /// Starts `gatehouse node run` with extra environment.
    pub fn run(&mut self, env: &[(&str, &str)]) {
        let home = self.home.path().to_str().unwrap().to_owned();
        let mut all = vec![("GATEHOUSE_HOME", home.as_str())];
        all.extend(env);
        self.process = Some(spawn_gatehouse(&["node", "run"], &all));
    }
}

/// Runs `gatehouse` to completion with `GATEHOUSE_HOME` = `home`.
pub fn gatehouse(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .env("GATEHOUSE_HOME", home)
        .env_remove("GATEHOUSE_AUTH_KEY")
        .env_remove("GATEHOUSE_CERT_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Polls `done` every 200 ms until it holds; panics after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A hub, a gateway named `lake` with `distribute`, and `count` running nodes, all Online.
pub fn gateway(count: usize) -> (Hub, Vec<Node>) {
    let hub = Hub::start();
    let key = hub.create_gateway("lake", &["--policy", "distribute"]);
    let nodes: Vec<Node> = (1..=count).map(|i| Node::start(&key, &format!("n{i}"), &[])).collect();
    wait_until(Duration::from_secs(30), "every node Online with a dispatcher", || {
        let list = hub.nodes("lake");
        list.len() == count
            && list.iter().all(|n| n["status"] == "Online")
            && list.iter().filter(|n| n["role"] == "dispatcher").count() == 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    (hub, nodes)
}

/// Submits a job spec to the gateway `lake` with `gatehouse job submit`: the job's id, or
/// what the CLI printed on stderr.
pub fn submit(hub: &Hub, spec: &serde_json::Value) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let output = gatehouse(
        Path::new("/nonexistent"),
        &["job", "submit", "lake", file.to_str().unwrap(), "--hub", &hub.url, "--json"],
        &[("GATEHOUSE_ADMIN_TOKEN", &hub.token)],
    );
    if output.status.success() {
        let job: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        Ok(job["id"].as_str().unwrap().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Waits (bounded) until the job is over; returns it as `gatehouse job show --json` does.
pub fn wait_over(hub: &Hub, id: &str) -> serde_json::Value {
    let mut job = serde_json::Value::Null;
    wait_until(Duration::from_secs(120), "the job to end", || {
        job = hub.admin(&["job", "show", id]);
        ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or(""))
    });
    job
}
