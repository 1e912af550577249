//! The credential manager with real processes on loopback: `gatehouse credential set|list|
//! delete --gateway G` run as a separate admin process (its own data dir, no node registered
//! there) against a 3-node gateway whose peer channel is encrypted. The value reaches every
//! node (read back from each node's sealed secrets), and never appears in the hub's files, in
//! any process's output or log, in any HTTP answer, or in any argv. A node certificate the
//! admin machine doesn't trust and a revoked credential-manager token are refused with their
//! sentences; a node that was down while a credential was set is shown behind (and waited
//! for at the hub) until it catches up after its restart.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, gatehouse, wait_until};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");
const VALUE: &str = "s3cr3t-from-the-admin-machine";
const LATER: &str = "an0ther-s3cr3t-set-while-n3-was-down";

fn cert(name: &str) -> String {
    format!("{CERTS}{name}")
}

/// Runs `gatehouse credential …` as an admin machine would: its own (empty) data dir, the
/// token in the environment, `stdin` as standard input.
fn admin(home: &Path, hub: &Hub, token: &str, args: &[&str], stdin: &str) -> Output {
    let mut all: Vec<&str> = vec!["credential"];
    all.extend(args);
    all.extend(["--hub", &hub.url]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(&all)
        .env("GATEHOUSE_HOME", home)
        .env("GATEHOUSE_ADMIN_TOKEN", token)
        .env_remove("GATEHOUSE_AUTH_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    for stream in [&output.stdout, &output.stderr] {
        assert!(!contains(stream, VALUE) && !contains(stream, LATER), "the admin command printed a value");
    }
    output
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn contains(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Any file under `dir` (recursively) holds `needle` in clear.
fn files_contain(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().filter_map(Result::ok).any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            files_contain(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| contains(&bytes, needle))
        }
    })
}

/// The value a node holds for `name`, read from its sealed secrets (never printed).
fn value_on(node: &Node, name: &str) -> Option<String> {
    let store = gatehouse::node::store::Store::new(node.home.path());
    gatehouse::node::credentials::load(&store).ok()?.value(name).map(str::to_owned)
}

fn credential(hub: &Hub, name: &str) -> serde_json::Value {
    let view = hub.admin(&["hub", "gateway", "show", "secure"]);
    view["credentials"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap_or_default()
}

/// `credential list --json` as the admin machine sees it.
fn listed(home: &Path, hub: &Hub) -> serde_json::Value {
    let output = admin(home, hub, &hub.token, &["list", "--gateway", "secure", "--json"], "");
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The command lines of this test's child processes (and their children) hold no value.
fn assert_no_value_in_argv() {
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            assert!(
                !contains(&cmdline, VALUE) && !contains(&cmdline, LATER),
                "a value in {}",
                entry.path().display()
            );
        }
    }
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one cluster for the whole story: starting three encrypted nodes is the slow part"
)]
fn the_credential_manager_reaches_every_node_of_an_encrypted_gateway_and_nothing_else() {
    let hub = Hub::start();
    let key = hub.create_gateway("secure", &["--policy", "distribute"]);
    let tls = ["--cert", &cert("good.pem"), "--roots", &cert("ca.pem")].map(str::to_owned);
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let n1 = Node::start(&key, "n1", &tls);
    let n2 = Node::start(&key, "n2", &tls);
    let mut n3 = Node::start(&key, "n3", &tls);
    wait_until(Duration::from_secs(30), "three encrypted nodes Online", || {
        let nodes = hub.nodes("secure");
        nodes.len() == 3 && nodes.iter().all(|n| n["status"] == "Online")
    });
    assert_eq!(hub.admin(&["hub", "gateway", "show", "secure"])["encryption"], true);
    let machine = tempfile::tempdir().unwrap();
    let home = machine.path();
    let roots = cert("ca.pem");

    // A certificate the admin machine doesn't trust is refused, and nothing is sent.
    let foreign = cert("other-ca.pem");
    for extra in [&["--roots", foreign.as_str()][..], &[]] {
        let mut args = vec!["set", "warehouse", "--gateway", "secure"];
        args.extend(extra);
        let refused = admin(home, &hub, &hub.token, &args, &format!("{VALUE}\n"));
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
        assert!(text(&refused).contains("certificate is not trusted here"), "{}", text(&refused));
        assert!(text(&refused).contains("--roots FILE"), "{}", text(&refused));
    }
    assert!(listed(home, &hub)["pending"].as_array().unwrap().is_empty(), "a refused set sent nothing");

    // Set from the admin machine with the gateway's CA: every node gets the value.
    let set = admin(
        home,
        &hub,
        &hub.token,
        &["set", "warehouse", "--gateway", "secure", "--roots", &roots],
        &format!("{VALUE}\n"),
    );
    assert!(set.status.success(), "{}", text(&set));
    assert!(text(&set).contains("credential \"warehouse\" set on gateway 'secure'"), "{}", text(&set));
    assert!(!text(&set).contains("vouches"), "an encrypted gateway's keys are checked, not vouched for");
    for node in [&n1, &n2, &n3] {
        wait_until(Duration::from_secs(30), &format!("{} to hold the value", node.name), || {
            value_on(node, "warehouse").as_deref() == Some(VALUE)
        });
    }
    wait_until(Duration::from_secs(30), "the hub to see every node at the same version", || {
        let warehouse = credential(&hub, "warehouse");
        warehouse["nodes_current"] == serde_json::json!(["n1", "n2", "n3"]) && warehouse["origin"] == "admin"
    });
    wait_until(Duration::from_secs(30), "the hub to forget what every node took", || {
        let list = listed(home, &hub);
        list["pending"].as_array().unwrap().is_empty() && list["in_sync"] == true
    });
    let list = admin(home, &hub, &hub.token, &["list", "--gateway", "secure"], "");
    assert!(text(&list).contains("warehouse\tversion"), "{}", text(&list));
    assert!(text(&list).contains("in sync"), "{}", text(&list));

    // A credential-manager token works for its gateway until it is revoked.
    let made = hub.admin(&["hub", "token", "create", "--credential-manager", "--gateway", "secure"]);
    let token = made["token"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ghc_"), "{made}");
    let with_token =
        admin(home, &hub, &token, &["set", "lake", "--gateway", "secure", "--roots", &roots], "lake-key\n");
    assert!(with_token.status.success(), "{}", text(&with_token));
    hub.admin(&["hub", "token", "revoke", &id]);
    let revoked =
        admin(home, &hub, &token, &["set", "lake", "--gateway", "secure", "--roots", &roots], "again\n");
    assert_eq!(revoked.status.code(), Some(1), "{}", text(&revoked));
    assert!(
        text(&revoked).contains("the credential-manager token is not valid (it may have been revoked)"),
        "{}",
        text(&revoked)
    );
    let listing = admin(home, &hub, &token, &["list", "--gateway", "secure"], "");
    assert_eq!(listing.status.code(), Some(1), "a revoked token can't list either: {}", text(&listing));

    // A node down while a credential is set is behind (and waited for) until it is back.
    let mut first_n3 = n3.process.take().unwrap();
    first_n3.stop();
    let first_n3_log = first_n3.stderr();
    wait_until(Duration::from_secs(30), "n3 Offline", || {
        hub.nodes("secure").iter().any(|n| n["name"] == "n3" && n["status"] == "Offline")
    });
    let later = admin(
        home,
        &hub,
        &hub.token,
        &["set", "warehouse", "--gateway", "secure", "--roots", &roots],
        &format!("{LATER}\n"),
    );
    assert!(later.status.success(), "{}", text(&later));
    for node in [&n1, &n2] {
        wait_until(Duration::from_secs(30), &format!("{} to hold the new value", node.name), || {
            value_on(node, "warehouse").as_deref() == Some(LATER)
        });
    }
    wait_until(Duration::from_secs(30), "the list to name n3 behind", || {
        let shown = text(&admin(home, &hub, &hub.token, &["list", "--gateway", "secure"], ""));
        shown.contains("OUT OF SYNC")
            && shown.contains("n3: behind, offline")
            && shown.contains("waiting at the hub for: n3 (offline)")
    });
    assert_eq!(
        value_on(&n3, "warehouse").as_deref(),
        Some(VALUE),
        "n3 was down: it still holds the old value"
    );
    n3.run(&[]);
    wait_until(Duration::from_secs(30), "n3 to catch up", || {
        value_on(&n3, "warehouse").as_deref() == Some(LATER)
    });
    wait_until(Duration::from_secs(30), "the list to show the gateway in sync", || {
        let list = listed(home, &hub);
        list["in_sync"] == true && list["pending"].as_array().unwrap().is_empty()
    });

    // A deletion through the credential manager reaches every node too.
    let deleted =
        admin(home, &hub, &hub.token, &["delete", "lake", "--gateway", "secure", "--roots", &roots], "");
    assert!(deleted.status.success(), "{}", text(&deleted));
    for node in [&n1, &n2, &n3] {
        wait_until(Duration::from_secs(30), &format!("{} to delete lake", node.name), || {
            value_on(node, "lake").is_none()
        });
    }
    wait_until(Duration::from_secs(30), "the hub to see lake deleted", || {
        credential(&hub, "lake")["deleted"] == true
    });
    let gone =
        admin(home, &hub, &hub.token, &["delete", "lake", "--gateway", "secure", "--roots", &roots], "");
    assert_eq!(gone.status.code(), Some(2), "{}", text(&gone));
    assert!(text(&gone).contains("no credential named \"lake\""), "{}", text(&gone));

    // The audit trail names the credentials, never a value.
    let audit = hub.admin(&["hub", "audit", "--gateway", "secure"]).to_string();
    assert!(audit.contains("credential warehouse set"), "{audit}");
    assert!(audit.contains("credential manager token"), "{audit}");

    // Nowhere in clear: not in the hub's files (its database), any node's files or logs, any
    // process's stderr, any HTTP answer the admin got (checked in `admin`), nor any argv.
    assert_no_value_in_argv();
    for secret in [VALUE, LATER] {
        assert!(!files_contain(hub.home(), secret), "the hub's files contain a credential");
        assert!(!contains(hub.process.stderr().as_bytes(), secret), "the hub logged a credential");
        for node in [&n1, &n2, &n3] {
            assert!(!files_contain(node.home.path(), secret), "{}'s files contain a credential", node.name);
            let stderr = node.process.as_ref().unwrap().stderr();
            assert!(!contains(stderr.as_bytes(), secret), "{} logged a credential", node.name);
        }
        assert!(!contains(first_n3_log.as_bytes(), secret), "n3 logged a credential before its restart");
        assert!(!files_contain(home, secret), "the admin machine kept a credential");
        let view = hub.admin(&["hub", "gateway", "show", "secure"]).to_string();
        assert!(!view.contains(secret));
    }
    let raw = common::http::get(
        &format!("{}/api/v1/gateways/secure/credentials", hub.url),
        common::http::Auth::Bearer(&hub.token),
    );
    assert!(!raw.body.contains(VALUE) && !raw.body.contains(LATER));
}

#[test]
fn a_gateway_without_a_certificate_uses_the_keys_the_hub_vouches_for_and_says_so() {
    let hub = Hub::start();
    let key = hub.create_gateway("secure", &[]);
    let n1 = Node::start(&key, "n1", &[]);
    let n2 = Node::start(&key, "n2", &[]);
    wait_until(Duration::from_secs(30), "two nodes Online", || {
        let nodes = hub.nodes("secure");
        nodes.len() == 2 && nodes.iter().all(|n| n["status"] == "Online")
    });
    let machine = tempfile::tempdir().unwrap();
    let set = admin(
        machine.path(),
        &hub,
        &hub.token,
        &["set", "warehouse", "--gateway", "secure"],
        &format!("{VALUE}\n"),
    );
    assert!(set.status.success(), "{}", text(&set));
    assert!(
        text(&set).contains(
            "Gateway 'secure' has no certificate: the nodes' keys are the ones the hub vouches for."
        ),
        "{}",
        text(&set)
    );
    for node in [&n1, &n2] {
        wait_until(Duration::from_secs(30), &format!("{} to hold the value", node.name), || {
            value_on(node, "warehouse").as_deref() == Some(VALUE)
        });
    }
    let listed = gatehouse(n1.home.path(), &["node", "credential", "list"], &[]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("through the credential manager"));
    // A token for another gateway can't touch this one; nor can no token at all.
    hub.create_gateway("other", &[]);
    let made = hub.admin(&["hub", "token", "create", "--credential-manager", "--gateway", "other"]);
    let other =
        admin(machine.path(), &hub, made["token"].as_str().unwrap(), &["list", "--gateway", "secure"], "");
    assert_eq!(other.status.code(), Some(1), "{}", text(&other));
    assert!(text(&other).contains("for another gateway than 'secure'"), "{}", text(&other));
    // Asking a credential-manager token with --metrics-like kinds' flags is a usage error.
    let bad = gatehouse(
        Path::new("/nonexistent"),
        &["hub", "token", "create", "--credential-manager", "--hub", &hub.url],
        &[("GATEHOUSE_ADMIN_TOKEN", &hub.token)],
    );
    assert_eq!(bad.status.code(), Some(2), "--credential-manager needs --gateway");
    assert!(!files_contain(hub.home(), VALUE));
}
