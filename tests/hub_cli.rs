//! The hub's admin command line end to end: a real `gatehouse hub serve` on loopback with its
//! own data dir, driven by the real binary (`hub gateway|key|node …`, `job …`) the way an admin
//! would, checking what they print and the exit-code convention (0 done, 1 refused by the hub,
//! 2 usage / no token / hub unreachable). Every wait is bounded; hubs die with their test.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a hub may take to print its address and token.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one admin command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment that would leak the caller's setup into the children.
const CLEARED_ENV: &[&str] = &[
    "GATEHOUSE_ADMIN_TOKEN",
    "GATEHOUSE_HUB",
    "GATEHOUSE_HUB_CA",
    "GATEHOUSE_HUB_DB",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

fn gatehouse() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    for name in CLEARED_ENV {
        command.env_remove(name);
    }
    command
}

/// A `gatehouse hub serve` on 127.0.0.1 with a throwaway data dir; killed on drop.
struct Hub {
    child: Child,
    url: String,
    token: String,
    home: tempfile::TempDir,
}

impl Hub {
    fn start() -> Hub {
        Hub::start_with(&[])
    }

    /// A hub with extra `hub serve` arguments.
    fn start_with(extra: &[&str]) -> Hub {
        let home = tempfile::tempdir().unwrap();
        let mut child = gatehouse()
            .args(["hub", "serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("GATEHOUSE_HOME", home.path())
            .env("GATEHOUSE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut hub = Hub { child, url: String::new(), token: String::new(), home };
        let deadline = Instant::now() + START_TIMEOUT;
        while hub.url.is_empty() || hub.token.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = received.recv_timeout(left).unwrap_or_else(|e| {
                panic!("the hub printed no address and token within {START_TIMEOUT:?}: {e}")
            });
            if let Some(url) = line.strip_prefix("listening on ") {
                url.trim().clone_into(&mut hub.url);
            } else if let Some(said) = line.strip_prefix("admin token written to ") {
                let path = said.split(" (").next().unwrap_or_default();
                std::fs::read_to_string(path).unwrap().trim().clone_into(&mut hub.token);
            }
        }
        assert!(hub.url.contains("://127.0.0.1:"), "unexpected address {}", hub.url);
        assert!(hub.token.starts_with("gha_"), "unexpected token form");
        hub
    }

    /// `gatehouse ARGS --hub URL` with the admin token in the environment.
    fn run(&self, args: &[&str]) -> Outcome {
        self.run_with(args, Some(&self.token), None)
    }

    fn run_with(&self, args: &[&str], token: Option<&str>, stdin: Option<&str>) -> Outcome {
        let mut command = gatehouse();
        command.args(args).args(["--hub", &self.url]);
        if let Some(token) = token {
            command.env("GATEHOUSE_ADMIN_TOKEN", token);
        }
        let outcome = run(command, stdin);
        outcome.assert_no_secret(&self.token);
        outcome
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished command printed, and its exit code.
#[derive(Debug)]
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    #[track_caller]
    fn exits(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit code {code}: {self:#?}");
        assert!(!self.stderr.contains("panicked"), "the command panicked: {self:#?}");
        self
    }

    #[track_caller]
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    #[track_caller]
    fn assert_no_secret(&self, token: &str) {
        assert!(
            !self.stdout.contains(token) && !self.stderr.contains(token),
            "the admin token was printed: {self:#?}"
        );
    }
}

/// Runs `command` to the end (bounded), feeding it `stdin`.
fn run(mut command: Command, stdin: Option<&str>) -> Outcome {
    let mut child = command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The full auth keys in a `gateway create` output, primary then secondary.
fn printed_keys(stdout: &str) -> (String, String) {
    let key = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map_or_else(|| panic!("no {label} key in:\n{stdout}"), |k| k.trim().to_owned())
    };
    (key("primary:"), key("secondary:"))
}

#[test]
fn gateways_keys_and_nodes_are_administered_from_the_command_line() {
    let hub = Hub::start();

    let created = hub.run(&["hub", "gateway", "create", "east", "--policy", "distribute"]).ok();
    let (primary, secondary) = printed_keys(&created.stdout);
    assert!(primary.starts_with("gh1_") && secondary.starts_with("gh1_"), "{created:#?}");
    assert_ne!(primary, secondary);
    assert!(created.stdout.contains("only this once"), "{created:#?}");

    let listed = hub.run(&["hub", "gateway", "list"]).ok();
    assert!(listed.stdout.contains("east") && listed.stdout.contains("distribute"), "{listed:#?}");
    let listed = hub.run(&["hub", "gateway", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["name"], "east");

    let shown = hub.run(&["hub", "gateway", "show", "east"]).ok();
    assert!(shown.stdout.contains("Gateway 'east'"), "{shown:#?}");
    assert!(shown.stdout.contains("policy distribute"), "{shown:#?}");
    assert!(!shown.stdout.contains(&primary), "show must not print keys: {shown:#?}");

    // A value the hub refuses: exit 1 and the hub's own sentence.
    let refused = hub.run(&["hub", "gateway", "set", "east", "--max-nodes", "9"]).exits(1);
    assert!(refused.stderr.contains("error: max_nodes is 9; a gateway has 1 to 4 nodes"), "{refused:#?}");
    // Nothing to change is a usage error, settled before asking the hub.
    let empty = hub.run(&["hub", "gateway", "set", "east"]).exits(2);
    assert!(empty.stderr.contains("--max-nodes"), "{empty:#?}");
    let set = hub
        .run(&["hub", "gateway", "set", "east", "--max-nodes", "2", "--cpu-threshold", "80", "--json"])
        .ok()
        .json();
    assert_eq!(set["settings"]["max_nodes"], 2);
    assert_eq!(set["settings"]["cpu_threshold"], 80);
    assert_eq!(set["settings"]["policy"], "distribute", "settings not given keep their value");
    let shown = hub.run(&["hub", "gateway", "show", "east"]).ok();
    assert!(shown.stdout.contains("bandwidth limit off"), "{shown:#?}");
    let set =
        hub.run(&["hub", "gateway", "set", "east", "--bandwidth-limit-mbps", "25", "--json"]).ok().json();
    assert_eq!(set["settings"]["bandwidth_limit_mbps"], 25);
    assert_eq!(set["settings"]["max_nodes"], 2, "settings not given keep their value");
    let set = hub.run(&["hub", "gateway", "set", "east", "--cpu-threshold", "70"]).ok();
    assert!(
        set.stdout.contains("CPU threshold 70%") && set.stdout.contains("bandwidth limit 25 Mbit/s"),
        "{set:#?}"
    );
    let limited = hub.run(&["hub", "gateway", "create", "limited", "--bandwidth-limit-mbps", "8"]).ok();
    assert!(limited.stdout.contains("bandwidth limit 8 Mbit/s"), "{limited:#?}");
    let off =
        hub.run(&["hub", "gateway", "set", "limited", "--bandwidth-limit-mbps", "0", "--json"]).ok().json();
    assert_eq!(off["settings"].get("bandwidth_limit_mbps"), None, "off is left out: {off:#}");

    // Key show: hints and times, never the full keys.
    let keys = hub.run(&["hub", "key", "show", "east"]).ok();
    assert!(!keys.stdout.contains(&primary) && !keys.stdout.contains(&secondary), "{keys:#?}");
    // `gh1_<public part>_<43 characters of secret>`; either part may itself contain '_'.
    let public_start = &primary[..primary.len() - 43];
    assert!(keys.stdout.contains(public_start) && keys.stdout.contains('…'), "{keys:#?}");
    assert!(keys.stdout.contains("gatehouse hub key regenerate east"), "{keys:#?}");

    let regenerated = hub.run(&["hub", "key", "regenerate", "east", "primary"]).ok();
    let new_key = regenerated
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("gh1_"))
        .unwrap_or_else(|| panic!("no key printed: {regenerated:#?}"))
        .to_owned();
    assert_ne!(new_key, primary);
    let hints = hub.run(&["hub", "key", "show", "east", "--json"]).ok().json();
    let hint = hints[0]["hint"].as_str().unwrap().trim_end_matches('…');
    assert!(new_key.starts_with(hint) && !primary.starts_with(hint), "{hints:#?}");

    // Keys for adding nodes: made (shown once), listed by id and start only, revoked.
    let made = hub.run(&["hub", "key", "create", "east", "--once", "--expires", "10m", "--json"]).ok().json();
    let (id, key) = (made["id"].as_str().unwrap(), made["key"].as_str().unwrap());
    assert!(key.starts_with("gh1_") && made["once"] == true, "{made:#}");
    assert_eq!(made["expires_ms"].as_i64().unwrap() - made["created_ms"].as_i64().unwrap(), 600_000);
    let listed = hub.run(&["hub", "key", "list", "east"]).ok();
    assert!(listed.stdout.contains(id) && listed.stdout.contains("once"), "{listed:#?}");
    assert!(!listed.stdout.contains(key), "a made key shown again: {listed:#?}");
    let human = hub.run(&["hub", "key", "create", "east"]).ok();
    assert!(human.stdout.contains("shown only this once") && human.stdout.contains("gh1_"), "{human:#?}");
    assert!(human.stdout.contains("gatehouse node register"), "{human:#?}");
    hub.run(&["hub", "key", "revoke", "east", id]).ok();
    let after = hub.run(&["hub", "key", "list", "east", "--json"]).ok().json();
    assert_eq!(after.as_array().unwrap().len(), 1, "the revoked key is gone, the other stays: {after:#}");
    let unparsable = hub.run(&["hub", "key", "create", "east", "--expires", "soon"]).exits(2);
    assert!(unparsable.stderr.contains("not a duration"), "{unparsable:#?}");
    let too_long = hub.run(&["hub", "key", "create", "east", "--expires", "40d"]).exits(1);
    assert!(too_long.stderr.contains("30 days") && too_long.stderr.contains("hint: "), "{too_long:#?}");

    let nodes = hub.run(&["hub", "node", "list", "east"]).ok();
    assert!(nodes.stdout.contains("no nodes yet"), "{nodes:#?}");
    assert_eq!(hub.run(&["hub", "node", "list", "east", "--json"]).ok().json(), serde_json::json!([]));
    let ghost = hub.run(&["hub", "node", "remove", "east", "ghost"]).exits(1);
    assert!(ghost.stderr.contains("has no node 'ghost'") && ghost.stderr.contains("hint: "), "{ghost:#?}");

    hub.run(&["hub", "gateway", "delete", "east"]).ok();
    let gone = hub.run(&["hub", "gateway", "show", "east"]).exits(1);
    assert!(gone.stderr.contains("error: no gateway 'east'"), "{gone:#?}");
    assert!(gone.stderr.lines().nth(1).is_some_and(|l| l.starts_with("hint: ")), "{gone:#?}");
}

#[test]
fn jobs_are_submitted_from_a_file_or_stdin_and_followed() {
    let hub = Hub::start();
    hub.run(&["hub", "gateway", "create", "west"]).ok();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.json");
    std::fs::write(
        &spec,
        r#"{"name": "copy-1", "activities": [{"kind": "echo", "message": "hi", "partitions": 2}]}"#,
    )
    .unwrap();

    let submitted = hub.run(&["job", "submit", "west", path(&spec), "--json"]).ok().json();
    let id = submitted["id"].as_str().unwrap().to_owned();
    assert_eq!(submitted["runs"].as_array().unwrap().len(), 2);

    let from_stdin = hub.run_with(
        &["job", "submit", "west", "-"],
        Some(&hub.token),
        Some(r#"{"name": "nap", "activities": [{"kind": "sleep", "millis": 10}]}"#),
    );
    let from_stdin = from_stdin.ok();
    assert!(from_stdin.stdout.contains("Submitted job 'nap'"), "{from_stdin:#?}");
    assert!(from_stdin.stdout.contains("1 run(s) queued"), "{from_stdin:#?}");

    let shown = hub.run(&["job", "show", &id]).ok();
    assert!(shown.stdout.contains("Job 'copy-1'"), "{shown:#?}");
    let run_rows: Vec<&str> = shown.stdout.lines().filter(|l| l.contains(" echo ")).collect();
    assert_eq!(run_rows.len(), 2, "{shown:#?}");
    assert!(run_rows.iter().all(|r| r.contains("queued") && r.contains(" 1 ")), "{shown:#?}");

    let listed = hub.run(&["job", "list", "west"]).ok();
    assert!(listed.stdout.contains(&id) && listed.stdout.contains("nap"), "{listed:#?}");
    let limited = hub.run(&["job", "list", "west", "--limit", "1", "--json"]).ok().json();
    assert_eq!(limited.as_array().unwrap().len(), 1);

    // A spec that isn't one is a usage error, with the reason.
    let bad = hub.run_with(&["job", "submit", "west", "-"], Some(&hub.token), Some(r#"{"name": 1}"#));
    let bad = bad.exits(2);
    assert!(bad.stderr.contains("standard input is not a job spec"), "{bad:#?}");
    let missing = hub.run(&["job", "submit", "west", path(&dir.path().join("nope.json"))]).exits(2);
    assert!(missing.stderr.contains("nope.json"), "{missing:#?}");
    // A spec the hub refuses: exit 1.
    let empty = hub.run_with(
        &["job", "submit", "west", "-"],
        Some(&hub.token),
        Some(r#"{"name": "empty", "activities": []}"#),
    );
    let empty = empty.exits(1);
    assert!(empty.stderr.contains("no activities"), "{empty:#?}");

    let unknown = hub.run(&["job", "show", "0123456789abcdef"]).exits(1);
    assert!(unknown.stderr.contains("no job"), "{unknown:#?}");
}

#[test]
fn a_job_is_cancelled_from_the_command_line_once() {
    let hub = Hub::start();
    hub.run(&["hub", "gateway", "create", "north"]).ok();
    let spec = r#"{"name": "nap", "activities": [{"kind": "sleep", "millis": 10, "partitions": 3}]}"#;
    let submit = || {
        let submitted =
            hub.run_with(&["job", "submit", "north", "-", "--json"], Some(&hub.token), Some(spec));
        submitted.ok().json()["id"].as_str().unwrap().to_owned()
    };
    let id = submit();
    let cancelled = hub.run(&["job", "cancel", &id]).ok();
    assert!(
        cancelled
            .stdout
            .contains(&format!("Cancelled job 'nap' (id {id}): 3 run(s) cancelled, 3 of them waiting")),
        "{cancelled:#?}"
    );
    let shown = hub.run(&["job", "show", &id, "--json"]).ok().json();
    assert_eq!(shown["state"], "cancelled");
    assert!(shown["runs"].as_array().unwrap().iter().all(|r| r["state"] == "cancelled"), "{shown:#}");
    let shown = hub.run(&["job", "show", &id]).ok();
    assert!(shown.stdout.contains("state:   cancelled"), "{shown:#?}");

    let again = hub.run(&["job", "cancel", &id]).exits(1);
    assert!(
        again.stderr.contains("error: job 'nap'") && again.stderr.contains("was cancelled already"),
        "{again:#?}"
    );
    let unknown = hub.run(&["job", "cancel", "0123456789abcdef"]).exits(1);
    assert!(unknown.stderr.contains("no job"), "{unknown:#?}");
    let json = hub.run(&["job", "cancel", &submit(), "--json"]).ok().json();
    assert_eq!(json["state"], "cancelled");
}

#[test]
fn job_show_follow_shows_progress_until_the_job_ends_and_exits_with_its_outcome() {
    use common::cluster::{Node, wait_until};
    let hub = Hub::start();
    let created = hub.run(&["hub", "gateway", "create", "live", "--json"]).ok().json();
    let _node = Node::start(created["keys"]["primary"].as_str().unwrap(), "n1", &[]);
    wait_until(Duration::from_secs(30), "the node Online as the dispatcher", || {
        let nodes = hub.run(&["hub", "node", "list", "live", "--json"]).ok().json();
        nodes[0]["status"] == "Online" && nodes[0]["role"] == "dispatcher"
    });
    let submit = |spec: &str| {
        let submitted = hub.run_with(&["job", "submit", "live", "-", "--json"], Some(&hub.token), Some(spec));
        submitted.ok().json()["id"].as_str().unwrap().to_owned()
    };

    let id = submit(r#"{"name": "nap", "activities": [{"kind": "sleep", "millis": 1500, "partitions": 2}]}"#);
    let followed = hub.run(&["job", "show", &id, "--follow"]).ok();
    let live: Vec<&str> = followed.stdout.lines().take_while(|l| !l.starts_with("Job 'nap'")).collect();
    assert!(!live.is_empty(), "a line per change before the table: {followed:#?}");
    assert!(live.iter().all(|l| l.ends_with("/2 runs ended")), "{followed:#?}");
    assert!(followed.stdout.contains("state:   succeeded"), "then the final table: {followed:#?}");
    assert_eq!(followed.stdout.matches(" sleep ").count(), 2, "{followed:#?}");
    let ended = hub.run(&["job", "cancel", &id]).exits(1);
    assert!(ended.stderr.contains("has ended: it succeeded"), "{ended:#?}");
    // An ended job: the table at once.
    let again = hub.run(&["job", "show", &id, "--follow", "--json"]).ok().json();
    assert_eq!(again["state"], "succeeded");

    // Cancelled while followed: exit 1, saying so.
    let id = submit(r#"{"name": "long", "activities": [{"kind": "sleep", "millis": 60000}]}"#);
    let followed = std::thread::scope(|scope| {
        let following = scope.spawn(|| hub.run(&["job", "show", &id, "--follow"]));
        wait_until(Duration::from_secs(20), "the long run running", || {
            hub.run(&["job", "show", &id, "--json"]).ok().json()["state"] == "running"
        });
        hub.run(&["job", "cancel", &id]).ok();
        following.join().unwrap()
    });
    let followed = followed.exits(1);
    assert!(followed.stdout.contains("state:   cancelled"), "{followed:#?}");
    assert!(followed.stderr.contains(&format!("error: job 'long' (id {id}) was cancelled")), "{followed:#?}");
}

#[test]
fn the_admin_token_comes_from_the_environment_or_a_file_and_is_checked() {
    let hub = Hub::start();

    let wrong = hub.run_with(&["hub", "gateway", "list"], Some("gha_not-the-token"), None).exits(1);
    assert!(wrong.stderr.contains("the admin token is not valid for this hub"), "{wrong:#?}");
    assert!(wrong.stderr.contains("GATEHOUSE_ADMIN_TOKEN"), "{wrong:#?}");
    assert!(!wrong.stderr.contains("gha_not-the-token"), "{wrong:#?}");

    let none = hub.run_with(&["hub", "gateway", "list"], None, None).exits(2);
    assert!(
        none.stderr.contains("no admin token")
            && none.stderr.contains("GATEHOUSE_ADMIN_TOKEN")
            && none.stderr.contains("--token-file"),
        "{none:#?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{}\n", hub.token)).unwrap();
    let listed = hub.run_with(&["hub", "gateway", "list", "--token-file", path(&file)], None, None).ok();
    assert!(listed.stdout.contains("No gateways yet"), "{listed:#?}");

    std::fs::write(&file, "\n").unwrap();
    let empty = hub.run_with(&["hub", "gateway", "list", "--token-file", path(&file)], None, None).exits(2);
    assert!(empty.stderr.contains("is empty"), "{empty:#?}");

    // There is no way to pass the token itself as an argument.
    let argv = hub.run_with(&["hub", "gateway", "list", "--token", "gha_x"], None, None).exits(2);
    assert!(argv.stderr.contains("--token"), "{argv:#?}");
}

#[test]
fn an_unreachable_hub_is_named_with_what_to_do() {
    // A port that was just free and is now closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut command = gatehouse();
    command.args(["hub", "gateway", "list", "--hub", &url]).env("GATEHOUSE_ADMIN_TOKEN", "gha_whatever");
    let outcome = run(command, None).exits(2);
    assert!(outcome.stderr.contains(&format!("can't reach the hub at {url}")), "{outcome:#?}");
    assert!(outcome.stderr.contains("gatehouse hub serve"), "{outcome:#?}");
    assert_eq!(outcome.stderr.lines().count(), 1, "one clear sentence: {outcome:#?}");

    // The hub URL from the environment, and a URL that isn't one.
    let mut command = gatehouse();
    command.args(["job", "list", "g"]).env("GATEHOUSE_HUB", &url).env("GATEHOUSE_ADMIN_TOKEN", "gha_x");
    let outcome = run(command, None).exits(2);
    assert!(outcome.stderr.contains(&url), "{outcome:#?}");
    let mut command = gatehouse();
    command.args(["hub", "gateway", "list", "--hub", "127.0.0.1:7070"]).env("GATEHOUSE_ADMIN_TOKEN", "gha_x");
    let outcome = run(command, None).exits(2);
    assert!(outcome.stderr.contains("not a usable hub URL"), "{outcome:#?}");
}

#[test]
fn an_https_hub_with_its_own_certificate_is_trusted_only_with_hub_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("hub.pem"), dir.path().join("hub.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-keyout", path(&key), "-out", path(&cert)])
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("this test makes a certificate with openssl (tests/run.sh installs it): {e}")
        });
    assert!(made.success(), "openssl could not make a self-signed certificate");
    let hub = Hub::start_with(&["--tls-cert", path(&cert), "--tls-key", path(&key)]);
    assert!(hub.url.starts_with("https://"), "{}", hub.url);

    let untrusted = hub.run(&["hub", "gateway", "list"]).exits(2);
    assert!(untrusted.stderr.contains("can't make a secure connection"), "{untrusted:#?}");
    assert!(untrusted.stderr.contains("--hub-ca"), "{untrusted:#?}");
    let trusted = hub.run(&["hub", "gateway", "list", "--hub-ca", path(&cert)]).ok();
    assert!(trusted.stdout.contains("No gateways yet"), "{trusted:#?}");
}

#[test]
fn the_typed_client_can_be_used_without_the_command_line() {
    use gatehouse::cli::client::{AdminClient, ClientError};
    use gatehouse::protocol::{CreateGateway, GatewaySettings, KeySlot, UpdateSettings};

    let hub = Hub::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = AdminClient::new(&hub.url, &hub.token).unwrap();
        assert!(client.healthy().await.unwrap());
        let request = CreateGateway { name: "typed".to_owned(), settings: GatewaySettings::default() };
        let created = client.create_gateway(&request).await.unwrap();
        assert_eq!(client.gateways().await.unwrap()[0].id, created.gateway.id);
        let key = client.regenerate_key(&created.gateway.id, KeySlot::Secondary).await.unwrap();
        assert_ne!(key.key, created.keys.secondary);

        let update = UpdateSettings { max_nodes: Some(0), ..UpdateSettings::default() };
        let refused = client.update_settings("typed", &update).await.unwrap_err();
        assert!(matches!(refused, ClientError::Refused { status: 400, .. }), "{refused:?}");
        assert!(refused.to_string().contains("max_nodes is 0"), "{refused}");

        let stranger = AdminClient::new(&hub.url, "gha_wrong").unwrap();
        let refused = stranger.gateways().await.unwrap_err();
        assert!(matches!(refused, ClientError::Refused { status: 401, .. }), "{refused:?}");
        assert!(refused.hint().is_some_and(|h| h.contains("GATEHOUSE_ADMIN_TOKEN")), "{refused:?}");
    });
}

#[test]
fn help_documents_the_exit_codes() {
    let outcome = run(
        {
            let mut command = gatehouse();
            command.args(["hub", "gateway", "create", "--help"]);
            command
        },
        None,
    )
    .ok();
    assert!(outcome.stdout.contains("Exit codes: 0 done; 1 the hub refused"), "{outcome:#?}");
    assert!(outcome.stdout.contains("GATEHOUSE_ADMIN_TOKEN"), "{outcome:#?}");
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_admin_token_is_in_an_owner_only_file_and_rotates() {
    use std::os::unix::fs::PermissionsExt as _;
    let hub = Hub::start();
    // Written to admin-token in the data dir, owner-only (the harness read it from there).
    let file = hub.home.path().join("admin-token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), hub.token);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // Into a pipe the new token could never be seen again: refused before the hub is asked.
    let piped = hub.run(&["hub", "token", "rotate"]).exits(2);
    assert!(piped.stderr.contains("--token-file"), "{piped:#?}");
    hub.run(&["hub", "gateway", "list"]).ok();

    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("token");
    std::fs::write(&kept, format!("{}\n", hub.token)).unwrap();
    let token_file = kept.to_str().unwrap();
    let rotated = hub.run_with(&["hub", "token", "rotate", "--token-file", token_file], None, None).ok();
    assert!(rotated.stdout.contains("old one no longer works"), "{rotated:#?}");
    let new = std::fs::read_to_string(&kept).unwrap().trim().to_owned();
    assert!(new.starts_with("gha_") && new != hub.token, "the file holds {new:?}");
    assert!(!rotated.stdout.contains(&new) && !rotated.stderr.contains(&new), "{rotated:#?}");
    assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temp file was left");

    // The old token stops working at once; the new one works; the audit trail says so.
    let old = hub.run(&["hub", "gateway", "list"]).exits(1);
    assert!(old.stderr.contains("the admin token is not valid for this hub"), "{old:#?}");
    hub.run_with(&["hub", "gateway", "list"], Some(&new), None).ok();
    let audit = hub.run_with(&["hub", "audit", "--json"], Some(&new), None).ok();
    assert!(audit.stdout.contains("admin_token.rotate"), "{audit:#?}");
    assert!(!audit.stdout.contains(&new), "the audit trail holds the token");
}

#[test]
fn a_database_password_is_never_shown_and_argv_is_warned_about() {
    let home = tempfile::tempdir().unwrap();
    let serve = |args: &[&str], env: Option<&str>| {
        let mut command = gatehouse();
        command
            .args(["hub", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("GATEHOUSE_HOME", home.path());
        if let Some(url) = env {
            command.env("GATEHOUSE_HUB_DB", url);
        }
        run(command, None).exits(2)
    };
    let url = "mysql://hub:s3cretpw@db.invalid/gh?password=0therpw";
    for (how, outcome) in [
        ("--db", serve(&["--db", url], None)),
        ("GATEHOUSE_HUB_DB", serve(&[], Some(url))),
        ("--db-file", {
            let file = home.path().join("db-url");
            std::fs::write(&file, format!("{url}\n")).unwrap();
            serve(&["--db-file", file.to_str().unwrap()], None)
        }),
    ] {
        let said = format!("{}{}", outcome.stdout, outcome.stderr);
        assert!(!said.contains("s3cretpw") && !said.contains("0therpw"), "{how} showed a password: {said}");
        assert!(said.contains("unsupported kind of database URL (mysql"), "{how}: {said}");
        let warned = said.contains("process list");
        assert_eq!(warned, how == "--db", "{how}: a warning only for a password in argv: {said}");
    }
}

/// Runs openssl with `args`, asserting success.
fn openssl(args: &[&str]) {
    let made = Command::new("openssl").args(args).stderr(Stdio::null()).stdout(Stdio::null()).status();
    let made = made.unwrap_or_else(|e| panic!("this test uses openssl (tests/run.sh installs it): {e}"));
    assert!(made.success(), "openssl {args:?} failed");
}

#[test]
fn a_node_trusts_a_hub_with_a_private_ca_with_hub_ca_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let (ca, ca_key) = (file("ca.pem"), file("ca.key"));
    let ca_args =
        ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=Gatehouse Test CA"],
            &ca_args,
            &["-keyout", &ca_key, "-out", &ca],
        ]
        .concat(),
    );
    let (cert, key, csr, ext) = (file("hub.pem"), file("hub.key"), file("hub.csr"), file("ext.cnf"));
    openssl(&[&["req"][..], &ec, &["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr]].concat());
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-days", "2", "-extfile", &ext, "-out",
        &cert,
    ]);
    let hub = Hub::start_with(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(hub.url.starts_with("https://"), "{}", hub.url);
    let created = hub.run(&["hub", "gateway", "create", "sales", "--hub-ca", &ca, "--json"]).ok();
    let auth_key = created.json()["keys"]["primary"].as_str().unwrap().to_owned();

    let node = tempfile::tempdir().unwrap();
    let peer_port = common::process::free_port().to_string();
    let register = |extra: &[&str]| {
        let mut command = gatehouse();
        command
            .args(["node", "register", "--key-stdin", "--name", "n1", "--peer-address"])
            .arg(format!("127.0.0.1:{peer_port}"))
            .args(["--peer-port", &peer_port])
            .args(extra)
            .env("GATEHOUSE_HOME", node.path());
        run(command, Some(&format!("{auth_key}\n")))
    };
    let untrusted = register(&[]).exits(2);
    assert!(untrusted.stderr.contains("--hub-ca"), "{untrusted:#?}");
    register(&["--hub-ca", &ca]).ok();
    let settings = std::fs::read_to_string(node.path().join("node.toml")).unwrap();
    assert!(settings.contains("hub_ca") && settings.contains("BEGIN CERTIFICATE"), "{settings}");

    // `node run` trusts the hub from node.toml alone: its heartbeats arrive.
    let home = node.path().to_str().unwrap().to_owned();
    let mut running = common::process::spawn_gatehouse(&["node", "run"], &[("GATEHOUSE_HOME", &home)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = hub.run(&["hub", "node", "list", "sales", "--hub-ca", &ca, "--json"]).ok().json();
        if nodes[0]["last_heartbeat_ms"].is_i64() {
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat over HTTPS within 30 s: {nodes}");
        std::thread::sleep(Duration::from_millis(200));
    }
    running.stop();
}
