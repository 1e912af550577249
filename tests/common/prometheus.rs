//! Prometheus text expositions in tests: their samples by name, and `promtool check metrics`
//! (Prometheus's own linter) run on them.

use std::collections::HashMap;
use std::process::Command;

/// The samples of an exposition: `name{labels}` → value as written (integers have no fraction).
pub fn samples(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// Runs `promtool check metrics` on the text; panics with its complaints if it has any.
pub fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed by tests/run.sh");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
