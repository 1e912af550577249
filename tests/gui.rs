//! The Configuration Manager driven headless through its accessibility tree (egui_kittest):
//! type into the real widgets, click the real buttons, read what a person would see.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::window::Window;
use egui_kittest::kittest::Queryable as _;
use gatehouse::gui::Tab;
use std::time::Duration;

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");

/// A window on a fresh data dir, on `tab`; its harness and data dir.
fn harness(tab: Tab) -> Window {
    Window::open(tab)
}

/// Fills the Certificate page, clicks "Check certificate" and waits (bounded) for the report.
fn check_certificate(window: &mut Window, file: &str, password: &str) {
    window.type_into("Certificate file", &format!("{CERTS}{file}"));
    if !password.is_empty() {
        window.type_into("PFX password", password);
    }
    window.type_into("Trusted root CA (optional)", &format!("{CERTS}ca.pem"));
    window.click("Check certificate");
    window.wait_for("the certificate check", Duration::from_secs(20), |app| !app.certificate.checking);
}

#[test]
fn a_good_certificate_shows_accepted() {
    let mut harness = harness(Tab::Certificate);
    check_certificate(&mut harness, "good.pem", "");
    assert!(
        harness.harness.query_by_label("Verdict: accepted").is_some(),
        "the verdict is not shown as accepted"
    );
    // Every rule is listed, with its mark.
    for rule in gatehouse::cert::Rule::ALL {
        assert!(harness.harness.query_by_label(rule.id()).is_some(), "rule {rule} is not shown");
    }
    assert!(harness.harness.query_by_label("✖ fail").is_none(), "a good certificate shows a failing rule");
}

#[test]
fn a_cng_pfx_shows_the_key_storage_failure() {
    let mut harness = harness(Tab::Certificate);
    check_certificate(&mut harness, "cng-software.pfx", "secret");
    assert!(
        harness.harness.query_by_label("Verdict: rejected").is_some(),
        "the verdict is not shown as rejected"
    );
    let expected =
        "key storage provider \"Microsoft Software Key Storage Provider\", which the gateway can't use";
    assert!(
        harness.harness.query_by_label_contains(expected).is_some(),
        "the key_storage failure is not shown"
    );
    assert!(harness.harness.query_by_label("✖ fail").is_some(), "no rule is marked as failed");
}

#[test]
fn an_unreadable_file_shows_why() {
    let mut harness = harness(Tab::Certificate);
    check_certificate(&mut harness, "truncated.pem", "");
    assert!(harness.harness.query_by_label_contains("looks truncated").is_some(), "the reason is not shown");
    assert!(harness.harness.query_by_label_contains("Verdict").is_none());
}

#[test]
fn check_is_disabled_until_a_file_is_given() {
    let mut harness = harness(Tab::Certificate);
    harness.click("Check certificate");
    assert!(!harness.harness.state().certificate.checking, "a check started without a file");
}

#[test]
fn the_help_tab_shows_the_version() {
    let mut harness = harness(Tab::Certificate);
    harness.click("Help");
    assert_eq!(harness.harness.state().prefs.tab, Tab::Help);
    let version = format!("Version {}", env!("CARGO_PKG_VERSION"));
    assert!(harness.harness.query_by_label(&version).is_some(), "{version} is not shown");
}
