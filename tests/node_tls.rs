//! Encryption on the peer channel, with real processes on loopback: nodes registered with the
//! gateway's certificate talk TLS (a real client, `openssl s_client`, sees that certificate)
//! and refuse plaintext; runs still flow between them; a node with another certificate is
//! Inactive at the hub, with the reason; a rejected certificate is refused before it is used.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, gatehouse, wait_until};
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");

fn cert(name: &str) -> String {
    format!("{CERTS}{name}")
}

/// The SHA-256 fingerprint `openssl x509` prints, as upper-case hex without colons.
fn openssl_fingerprint(pem: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl is installed by tests/run.sh");
    child.stdin.take().unwrap().write_all(pem).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim().rsplit('=').next().unwrap_or_default().replace(':', "").to_ascii_uppercase()
}

#[test]
fn encrypted_peers_talk_tls_refuse_plaintext_and_spot_a_foreign_certificate() {
    let hub = Hub::start();
    let key = hub.create_gateway("secure", &["--policy", "distribute"]);
    let good = ["--cert", &cert("good.pem"), "--roots", &cert("ca.pem")].map(str::to_owned);
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let n1 = Node::start(&key, "n1", &good);
    let _n2 = Node::start(&key, "n2", &good);
    wait_until(Duration::from_secs(30), "two encrypted nodes Online", || {
        let nodes = hub.nodes("secure");
        nodes.len() == 2 && nodes.iter().all(|n| n["status"] == "Online")
    });
    // The dispatcher learns its peer's room from its own next heartbeat's answer.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(hub.admin(&["hub", "gateway", "show", "secure"])["encryption"], true);

    // A real TLS client sees the gateway's certificate on the peer port.
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &n1.peer_address, "-showcerts"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed by tests/run.sh");
    let shown = String::from_utf8_lossy(&output.stdout);
    let first = shown.find("-----BEGIN CERTIFICATE-----").expect("openssl s_client saw no certificate");
    let end = shown[first..].find("-----END CERTIFICATE-----").unwrap() + first + 25;
    let leaf = &shown[first..end];
    let expected = openssl_fingerprint(
        &std::fs::read(cert("good.der"))
            .map(|der| {
                // good.der is the leaf in DER; let openssl render it as PEM for the comparison.
                let mut child = Command::new("openssl")
                    .args(["x509", "-inform", "DER"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(&der).unwrap();
                child.wait_with_output().unwrap().stdout
            })
            .unwrap(),
    );
    assert_eq!(openssl_fingerprint(leaf.as_bytes()), expected);

    // Plaintext gets no peer protocol: no 4-byte length and JSON challenge, just a TLS alert
    // or a closed connection.
    let mut plain = std::net::TcpStream::connect(&n1.peer_address).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(b"\x00\x00\x00\x02{}").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("nonce"), "the peer answered plaintext: {answer:?}");

    // Runs flow between the encrypted nodes.
    let spec = serde_json::json!({ "name": "job", "activities": [{ "kind": "sleep", "millis": 1000, "partitions": 16 }] });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let id =
        hub.admin(&["job", "submit", "secure", file.to_str().unwrap()])["id"].as_str().unwrap().to_owned();
    let mut job = serde_json::Value::Null;
    wait_until(Duration::from_secs(60), "the job to succeed over TLS", || {
        job = hub.admin(&["job", "show", &id]);
        job["state"] == "succeeded"
    });
    let nodes: std::collections::BTreeSet<&str> =
        job["runs"].as_array().unwrap().iter().filter_map(|r| r["node_name"].as_str()).collect();
    assert_eq!(nodes.len(), 2, "runs didn't cross the encrypted channel: {nodes:?}");

    // A third node with another certificate: Inactive, and the reason says why.
    let other = ["--cert", &cert("ec-p256.pem"), "--roots", &cert("ca.pem")].map(str::to_owned);
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    let _n3 = Node::start(&key, "n3", &other);
    wait_until(Duration::from_secs(30), "the foreign node to be Inactive", || {
        hub.nodes("secure").iter().any(|n| {
            n["name"] == "n3"
                && n["status"] == "Inactive"
                && n["reason"].as_str().is_some_and(|r| r.contains("certificate differs"))
        })
    });
}

#[test]
fn a_rejected_certificate_is_refused_with_its_report() {
    let hub = Hub::start();
    let key = hub.create_gateway("secure", &[]);
    let home = tempfile::tempdir().unwrap();
    let output = gatehouse(
        home.path(),
        &[
            "node",
            "register",
            "--name",
            "n1",
            "--peer-address",
            "127.0.0.1:1",
            "--cert",
            &cert("client-only.pem"),
            "--roots",
            &cert("ca.pem"),
        ],
        &[("GATEHOUSE_AUTH_KEY", &key)],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FAIL  server_auth"), "the report is not shown: {stderr}");
    assert!(stderr.contains("can't encrypt the peer channel"), "{stderr}");
    assert!(!home.path().join("node.toml").exists());
    assert!(hub.nodes("secure").is_empty(), "a node was registered with a rejected certificate");
}

#[test]
fn remote_access_turns_encryption_on_for_a_single_node_gateway_and_refuses_a_rejected_certificate() {
    let hub = Hub::start();
    let key = hub.create_gateway("solo", &[]);
    let mut node = Node::register(&key, "n1", &[]);
    let port = node.peer_address.rsplit_once(':').unwrap().1.to_owned();

    let refused = gatehouse(
        node.home.path(),
        &[
            "node",
            "enable-remote-access",
            "--port",
            &port,
            "--cert",
            &cert("rsa1024.pem"),
            "--roots",
            &cert("ca.pem"),
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("FAIL  key_size"), "the report is not shown: {stderr}");

    node.command(&[
        "node",
        "enable-remote-access",
        "--port",
        &port,
        "--cert",
        &cert("good.pem"),
        "--roots",
        &cert("ca.pem"),
    ]);
    node.run(&[]);
    wait_until(Duration::from_secs(30), "the gateway to follow its single node into encryption", || {
        let gateway = hub.admin(&["hub", "gateway", "show", "solo"]);
        gateway["encryption"] == true && gateway["nodes"][0]["status"] == "Online"
    });
    // The peer port now speaks TLS: openssl completes a handshake there.
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &node.peer_address])
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed by tests/run.sh");
    assert!(String::from_utf8_lossy(&output.stdout).contains("BEGIN CERTIFICATE"));
}
