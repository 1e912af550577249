//! `gatehouse cert check` as a user runs it: the real binary, its exit codes (0 accepted,
//! 1 rejected, 2 unreadable), its one-line errors and its `--json` document.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");

/// `gatehouse cert check <args>` in the fixture folder, with no stdin and no password from the
/// environment.
fn gatehouse() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .current_dir(CERTS)
        .args(["cert", "check"])
        .env_remove("GATEHOUSE_CERT_PASSWORD")
        // A panic would print its backtrace, which the unreadable-input test looks for.
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    command
}

/// The README's standard invocation plus `args`.
fn check(args: &[&str]) -> Output {
    let mut command = gatehouse();
    command.args(["--no-system-roots", "--roots", "ca.pem", "--host", "node1.gatehouse.test"]).args(args);
    command.output().unwrap()
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or_else(|| panic!("killed by a signal: {output:?}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(output))
        .unwrap_or_else(|e| panic!("--json output doesn't parse ({e}):\n{}", stdout(output)))
}

fn rule_status(report: &serde_json::Value, rule: &str) -> String {
    let checks = report["checks"].as_array().unwrap();
    let check = checks.iter().find(|c| c["rule"] == rule).unwrap_or_else(|| panic!("no `{rule}` check"));
    check["status"].as_str().unwrap().to_owned()
}

#[test]
fn an_accepted_certificate_exits_0() {
    let output = check(&["good.pem"]);
    assert_eq!(code(&output), 0, "{output:?}");
    let table = stdout(&output);
    assert!(table.contains("accepted"), "{table}");
    for rule in ["format", "chain", "hostname", "key_match", "key_size"] {
        assert!(table.contains(rule), "the table should list `{rule}`:\n{table}");
    }
}

#[test]
fn an_accepted_certificate_with_warnings_exits_0() {
    let output = check(&["--json", "multi-san.pem"]);
    assert_eq!(code(&output), 0, "{output:?}");
    assert_eq!(json(&output)["verdict"], "accepted_with_warnings");
}

#[test]
fn a_rejected_certificate_exits_1() {
    for file in ["mismatch.pem", "client-only.pem", "rsa1024.pem"] {
        let output = check(&[file]);
        assert_eq!(code(&output), 1, "{file}: {output:?}");
    }
    let wrong_host = ["--no-system-roots", "--roots", "ca.pem", "--host", "node2.gatehouse.test", "good.pem"];
    let output = gatehouse().args(wrong_host).output().unwrap();
    assert_eq!(code(&output), 1, "{output:?}");
    // The public roots alone don't know the test CA.
    let output = gatehouse().args(["--host", "node1.gatehouse.test", "--json", "good.pem"]).output().unwrap();
    assert_eq!(code(&output), 1, "{output:?}");
    assert_eq!(rule_status(&json(&output), "chain"), "fail");
    // Nor does another CA.
    let output =
        gatehouse().args(["--no-system-roots", "--roots", "other-ca.pem", "good.pem"]).output().unwrap();
    assert_eq!(code(&output), 1, "{output:?}");
}

#[test]
fn unreadable_input_exits_2_with_one_line_and_no_panic() {
    let cases: &[&[&str]] = &[
        &["garbage.bin"],
        &["truncated.pem"],
        &["empty.pem"],
        &["key-only.pem"],
        &["not-a-cert.txt"],
        &["does-not-exist.pem"],
        &["--password", "wrong", "good.pfx"],
        &["good.pfx"],
        &["good-encrypted.pem"],
        &["--password", "secret", "costly-pbkdf2.pem"],
        &["--password", "secret", "costly-scrypt.pem"],
        &["--password", "secret", "costly.pfx"],
    ];
    for args in cases {
        let output = check(args);
        let err = stderr(&output);
        assert_eq!(code(&output), 2, "{args:?}: {output:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: stderr should be one line:\n{err}");
        assert!(!err.trim().is_empty(), "{args:?}: stderr should give a reason");
        let lower = err.to_lowercase();
        assert!(!lower.contains("panicked") && !lower.contains("backtrace"), "{args:?}: {err}");
        assert!(stdout(&output).is_empty(), "{args:?}: no report for unreadable input");
    }
}

#[test]
fn dev_zero_ends_at_once_with_exit_2() {
    let mut child =
        gatehouse().arg("/dev/zero").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Bounded wait: a checker that read /dev/zero whole would never end.
    let mut ended = None;
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            ended = Some(status);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if ended.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    assert!(ended.is_some(), "`cert check /dev/zero` did not end within a minute");
    assert_eq!(code(&output), 2, "{output:?}");
    let err = stderr(&output);
    assert!(err.contains("/dev/zero is larger than 4 MiB"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_wrong_pfx_password_says_so() {
    let output = check(&["--password", "wrong", "good.pfx"]);
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).to_lowercase().contains("password"), "{}", stderr(&output));
}

#[test]
fn json_output_has_exactly_the_documented_keys() {
    let mut expected = vec![
        "verdict",
        "checks",
        "subject",
        "issuer",
        "sans",
        "not_before",
        "not_after",
        "thumbprint_sha1",
        "thumbprint_sha256",
        "key",
    ];
    expected.sort_unstable();
    for (file, exit, verdict) in [
        ("good.pem", 0, "accepted"),
        ("multi-san.pem", 0, "accepted_with_warnings"),
        ("mismatch.pem", 1, "rejected"),
    ] {
        let output = check(&["--json", file]);
        assert_eq!(code(&output), exit, "{file}: {output:?}");
        let report = json(&output);
        let mut keys: Vec<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, expected, "{file}");
        assert_eq!(report["verdict"], verdict, "{file}");
        let checks = report["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 14, "{file}: one check per rule");
        for check in checks {
            let mut keys: Vec<&str> = check.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["message", "rule", "status"], "{file}");
        }
        assert!(report["sans"].is_array());
    }
}

#[test]
fn password_stdin_opens_a_pfx() {
    let run = |input: &str| {
        let mut command = gatehouse();
        command.args(["--no-system-roots", "--roots", "ca.pem", "--password-stdin", "--json", "good.pfx"]);
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let output = run("secret\n");
    assert_eq!(code(&output), 0, "{output:?}");
    let report = json(&output);
    assert_eq!(rule_status(&report, "key_match"), "pass");
    assert_eq!(rule_status(&report, "key_storage"), "pass");
    let output = run("wrong\n");
    assert_eq!(code(&output), 2, "{output:?}");
}

#[test]
fn password_stdin_reads_one_line_and_does_not_wait_for_the_end_of_input() {
    let mut child = gatehouse()
        .args(["--no-system-roots", "--roots", "ca.pem", "--password-stdin", "good.pfx"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep stdin open: a caller piping from a longer-lived process must not hang the check.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"secret\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("gatehouse waited for the end of stdin after the password line");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    drop(stdin);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_password_can_come_from_the_environment() {
    let output = gatehouse()
        .args(["--no-system-roots", "--roots", "ca.pem", "good.pfx"])
        .env("GATEHOUSE_CERT_PASSWORD", "secret")
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{output:?}");
}

#[test]
fn at_checks_validity_at_that_time() {
    let output = check(&["--json", "--at", "2100-01-01T00:00:00Z", "good.pem"]);
    assert_eq!(code(&output), 1, "{output:?}");
    assert_eq!(rule_status(&json(&output), "validity"), "fail");
    let output = check(&["--json", "--at", "2030-01-01T00:00:00Z", "good.pem"]);
    assert_eq!(code(&output), 0, "{output:?}");
    assert_eq!(rule_status(&json(&output), "validity"), "pass");
}

#[test]
fn a_bad_at_value_exits_2() {
    for value in ["yesterday", "2030-01-01", "2030-13-01T00:00:00Z", ""] {
        let output = check(&["--at", value, "good.pem"]);
        assert_eq!(code(&output), 2, "--at {value:?}: {output:?}");
        assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
        assert!(stdout(&output).is_empty());
    }
}

#[test]
fn a_missing_roots_file_exits_2() {
    let output = gatehouse().args(["--no-system-roots", "--roots", "nope.pem", "good.pem"]).output().unwrap();
    assert_eq!(code(&output), 2, "{output:?}");
    assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
}
