//! The Configuration Manager driven headless through its accessibility tree (egui_kittest):
//! type into the real widgets, click the real buttons, read what a person would see.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use gatehouse::gui::{ConfigManager, GuiPrefs, Tab};
use std::time::{Duration, Instant};

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");

fn harness(tab: Tab) -> Harness<'static, ConfigManager> {
    Harness::builder().with_size(egui::vec2(1000.0, 800.0)).build_ui_state(
        |ui, app: &mut ConfigManager| {
            app.logic();
            app.ui(ui);
        },
        ConfigManager::new(GuiPrefs { tab }),
    )
}

/// Fills the Certificate page, clicks "Check certificate" and waits (bounded) for the report.
fn check_certificate(harness: &mut Harness<'static, ConfigManager>, file: &str, password: &str) {
    type_into(harness, "Certificate file", &format!("{CERTS}{file}"));
    if !password.is_empty() {
        type_into(harness, "PFX password", password);
    }
    type_into(harness, "Trusted root CA (optional)", &format!("{CERTS}ca.pem"));
    harness.get_by_label("Check certificate").click();
    // A spinner repaints every frame while the check runs, so step instead of run.
    harness.run_steps(2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while harness.state().certificate.checking {
        assert!(Instant::now() < deadline, "the certificate check did not finish in 20 s");
        std::thread::sleep(Duration::from_millis(20));
        harness.step();
    }
    harness.run();
}

fn type_into(harness: &mut Harness<'static, ConfigManager>, label: &str, text: &str) {
    harness.get_by_label(label).focus();
    harness.run();
    harness.get_by_label(label).type_text(text);
    harness.run();
}

#[test]
fn a_good_certificate_shows_accepted() {
    let mut harness = harness(Tab::Certificate);
    check_certificate(&mut harness, "good.pem", "");
    assert!(harness.query_by_label("Verdict: accepted").is_some(), "the verdict is not shown as accepted");
    // Every rule is listed, with its mark.
    for rule in gatehouse::cert::Rule::ALL {
        assert!(harness.query_by_label(rule.id()).is_some(), "rule {rule} is not shown");
    }
    assert!(harness.query_by_label("✖ fail").is_none(), "a good certificate shows a failing rule");
}

#[test]
fn a_cng_pfx_shows_the_key_storage_failure() {
    let mut harness = harness(Tab::Certificate);
    check_certificate(&mut harness, "cng-software.pfx", "secret");
    assert!(harness.query_by_label("Verdict: rejected").is_some(), "the verdict is not shown as rejected");
    let expected =
        "key storage provider \"Microsoft Software Key Storage Provider\", which the gateway can't use";
    assert!(harness.query_by_label_contains(expected).is_some(), "the key_storage failure is not shown");
    assert!(harness.query_by_label("✖ fail").is_some(), "no rule is marked as failed");
}

#[test]
fn an_unreadable_file_shows_why() {
    let mut harness = harness(Tab::Certificate);
    check_certificate(&mut harness, "truncated.pem", "");
    assert!(harness.query_by_label_contains("looks truncated").is_some(), "the reason is not shown");
    assert!(harness.query_by_label_contains("Verdict").is_none());
}

#[test]
fn check_is_disabled_until_a_file_is_given() {
    let mut harness = harness(Tab::Certificate);
    harness.get_by_label("Check certificate").click();
    harness.run();
    assert!(!harness.state().certificate.checking, "a check started without a file");
}

#[test]
fn the_help_tab_shows_the_version() {
    let mut harness = harness(Tab::Certificate);
    harness.get_by_label("Help").click();
    harness.run();
    assert_eq!(harness.state().prefs.tab, Tab::Help);
    let version = format!("Version {}", env!("CARGO_PKG_VERSION"));
    assert!(harness.query_by_label(&version).is_some(), "{version} is not shown");
}
