//! The `profile` rule (RFC 5280 and CA/B Forum profile of every certificate on the path), the
//! true `chain` messages for chains rustls-webpki can't build, and real public chains, in
//! process through the library against the fixtures of `tests/data/certs` (made by its
//! `make.sh`; see its README). Every profile fixture breaks one rule of an otherwise good chain,
//! and its test fails if that rule is removed or names the wrong certificate or extension.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

use gatehouse::cert::{Options, Report, Rule, Status, Verdict, check_file, read_roots};
use std::path::PathBuf;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");

fn path(file: &str) -> PathBuf {
    PathBuf::from(CERTS).join(file)
}

/// `--no-system-roots --roots ROOTS --host node1.gatehouse.test`, now.
fn options(roots: &str) -> Options {
    Options {
        password: None,
        extra_roots: read_roots(&path(roots)).unwrap(),
        public_roots: false,
        host: Some("node1.gatehouse.test".to_owned()),
        at: None,
    }
}

fn check(file: &str, options: &Options) -> Report {
    check_file(&path(file), options).unwrap_or_else(|e| panic!("{file} should be readable, got: {e}"))
}

fn rule(report: &Report, rule: Rule) -> (Status, &str) {
    let check = report.check(rule).unwrap_or_else(|| panic!("no `{rule}` in:\n{}", report.to_table()));
    (check.status, &check.message)
}

/// The root each fixture is checked against: `NAME-ca.pem` for the `profile-root-*` files.
fn roots_for(file: &str) -> String {
    if file.starts_with("profile-root-") {
        format!("{}-ca.pem", file.trim_end_matches(".pem"))
    } else {
        "ca.pem".to_owned()
    }
}

/// A fixture, the certificate the violation is on, and words its sentence must contain.
type Case = (&'static str, &'static str, &'static [&'static str]);

const VIOLATIONS: &[Case] = &[
    // Authority and subject key identifiers.
    ("profile-leaf-no-aki.pem", "leaf \"", &["no authorityKeyIdentifier"]),
    ("profile-leaf-aki-critical.pem", "leaf \"", &["authorityKeyIdentifier is marked critical"]),
    ("profile-int-no-aki.pem", "intermediate 1 \"", &["no authorityKeyIdentifier"]),
    ("profile-int-aki-issuer.pem", "intermediate 1 \"", &["authorityKeyIdentifier", "authorityCertIssuer"]),
    ("profile-int-no-ski.pem", "intermediate 1 \"", &["no subjectKeyIdentifier"]),
    ("profile-int-ski-critical.pem", "intermediate 1 \"", &["subjectKeyIdentifier is marked critical"]),
    ("profile-root-aki-issuer.pem", "root \"", &["authorityKeyIdentifier", "only a keyIdentifier"]),
    (
        "profile-root-aki-mismatch.pem",
        "root \"",
        &["authorityKeyIdentifier", "equal to its own subjectKeyIdentifier"],
    ),
    // Basic constraints.
    ("profile-root-no-bc.pem", "root \"", &["without basicConstraints"]),
    ("profile-int-bc-noncritical.pem", "intermediate 1 \"", &["basicConstraints is not marked critical"]),
    ("profile-leaf-keycertsign.pem", "leaf \"", &["keyUsage", "keyCertSign"]),
    ("profile-root-empty-subject.pem", "root (empty subject)", &["CA:TRUE", "empty subject"]),
    // Unknown critical extensions, the trust anchor too.
    ("profile-root-unknown-critical.pem", "root \"", &["critical extension 1.3.6.1.4.1.55555.1"]),
    ("profile-leaf-unknown-critical.pem", "leaf \"", &["critical extension 1.3.6.1.4.1.55555.1"]),
    // The trust anchor's own validity.
    ("profile-root-expired.pem", "root \"", &["trust anchor itself expired on 2021-01-01"]),
    // Subject alternative names.
    ("profile-leaf-san-critical.pem", "leaf \"", &["subjectAltName is marked critical"]),
    (
        "profile-leaf-empty-subject-san-noncritical.pem",
        "leaf (empty subject)",
        &["subjectAltName must be marked critical"],
    ),
    ("profile-leaf-empty-subject-no-san.pem", "leaf (empty subject)", &["no subjectAltName"]),
    ("profile-leaf-san-underscore.pem", "leaf \"", &["subjectAltName DNS:node_2.gatehouse.test"]),
    ("profile-leaf-san-empty-label.pem", "leaf \"", &["subjectAltName DNS:node2..gatehouse.test"]),
    // Name constraints.
    ("profile-leaf-name-constraints.pem", "leaf \"", &["nameConstraints", "only in CA certificates"]),
    (
        "profile-int-nc-leading-period.pem",
        "intermediate 1 \"",
        &["nameConstraints DNS:.gatehouse.test", "leading period"],
    ),
    (
        "profile-int-nc-empty.pem",
        "intermediate 1 \"",
        &["nameConstraints has neither permitted nor excluded"],
    ),
    // Policy constraints and authority information access.
    ("profile-int-pc-noncritical.pem", "intermediate 1 \"", &["policyConstraints is not marked critical"]),
    ("profile-leaf-aia-empty.pem", "leaf \"", &["authorityInfoAccess holds no access description"]),
    ("profile-leaf-aia-malformed.pem", "leaf \"", &["authorityInfoAccess extension can't be parsed"]),
];

#[test]
fn every_profile_rule_refuses_its_fixture_naming_the_certificate_and_the_extension() {
    let mut wrong = Vec::new();
    for &(file, who, words) in VIOLATIONS {
        let report = check(file, &options(&roots_for(file)));
        let (status, message) = rule(&report, Rule::Profile);
        if status != Status::Fail {
            wrong.push(format!("{file}: profile is {status}: {message}"));
            continue;
        }
        if report.verdict != Verdict::Rejected {
            wrong.push(format!("{file}: verdict {}", report.verdict));
        }
        // The violation's sentence: from the certificate's name to the next one's, if any.
        let Some(start) = message.find(who) else {
            wrong.push(format!("{file}: profile doesn't name {who:?}: {message}"));
            continue;
        };
        let sentence = &message[start..];
        for word in words {
            if !sentence.contains(word) {
                wrong.push(format!("{file}: the sentence about {who:?} lacks {word:?}: {message}"));
            }
        }
        if !sentence.contains("ask ") {
            wrong.push(format!("{file}: the sentence doesn't say what to ask for: {message}"));
        }
    }
    assert!(wrong.is_empty(), "{} wrong:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn each_profile_fixture_breaks_only_its_own_rule() {
    // One violation per fixture: the message names exactly one certificate.
    for &(file, _, _) in VIOLATIONS {
        let report = check(file, &options(&roots_for(file)));
        let (_, message) = rule(&report, Rule::Profile);
        let named = ["leaf \"", "leaf (", "intermediate 1 ", "root \"", "root ("]
            .iter()
            .map(|who| message.matches(who).count())
            .sum::<usize>();
        assert_eq!(named, 1, "{file}: expected one violation: {message}");
    }
}

#[test]
fn the_good_variants_pass_every_rule() {
    for file in
        ["profile-leaf-empty-subject.pem", "profile-int-good.pem", "profile-root-good.pem", "good.pem"]
    {
        let report = check(file, &options(&roots_for(file)));
        assert_eq!(report.verdict, Verdict::Accepted, "{file}:\n{}", report.to_table());
        let (status, message) = rule(&report, Rule::Profile);
        assert_eq!(status, Status::Pass, "{file}: {message}");
        assert!(message.contains("the root \""), "{file}: the root is checked too: {message}");
    }
    let report = check("good.pem", &options("ca.pem"));
    let (_, message) = rule(&report, Rule::Profile);
    assert!(
        message.starts_with("the leaf, 1 intermediate and the root \"Gatehouse Test Root CA\""),
        "{message}"
    );
}

#[test]
fn the_trust_anchor_counts_even_though_webpki_accepts_the_path() {
    // webpki sees only a root's name and key, so these chains pass `chain`; `profile` refuses.
    for file in [
        "profile-root-no-bc.pem",
        "profile-root-unknown-critical.pem",
        "profile-root-expired.pem",
        "profile-root-aki-mismatch.pem",
    ] {
        let report = check(file, &options(&roots_for(file)));
        assert_eq!(rule(&report, Rule::Chain).0, Status::Pass, "{file}:\n{}", report.to_table());
        assert_eq!(rule(&report, Rule::Profile).0, Status::Fail, "{file}:\n{}", report.to_table());
    }
}

#[test]
fn without_a_chain_the_certificates_in_the_file_are_checked() {
    // The leaf's own intermediate isn't trusted here, so no chain is built; the file's
    // intermediate still gets its profile check.
    let report = check("profile-int-pc-noncritical.pem", &options("other-ca.pem"));
    assert_eq!(rule(&report, Rule::Chain).0, Status::Fail);
    let (status, message) = rule(&report, Rule::Profile);
    assert_eq!(status, Status::Fail, "{message}");
    assert!(message.contains("intermediate 1 \"") && message.contains("policyConstraints"), "{message}");
    let report = check("good.der", &options("ca.pem"));
    let (status, message) = rule(&report, Rule::Profile);
    assert_eq!(status, Status::Pass, "{message}");
    assert!(message.contains("no chain was built"), "{message}");
}

#[test]
fn a_self_issued_intermediate_gets_the_true_reason() {
    let report = check("self-issued-intermediate.pem", &options("ca.pem"));
    let (status, message) = rule(&report, Rule::Chain);
    assert_eq!(status, Status::Fail, "{message}");
    assert!(message.starts_with("our TLS stack"), "{message}");
    assert!(message.contains("can't validate this chain because intermediate 1"), "{message}");
    assert!(message.contains("self-issued"), "{message}");
    assert!(!message.contains("signature"), "webpki's signature error is not the reason: {message}");
    assert_eq!(report.verdict, Verdict::Rejected);
}

#[test]
fn a_directory_name_constraint_gets_the_true_reason() {
    let report = check("name-constraint-dirname.pem", &options("ca.pem"));
    let (status, message) = rule(&report, Rule::Chain);
    assert_eq!(status, Status::Fail, "{message}");
    assert!(message.starts_with("our TLS stack"), "{message}");
    assert!(message.contains("intermediate 1") && message.contains("directoryName"), "{message}");
    assert!(!message.contains("don't allow this certificate's names"), "{message}");
    // The profile itself has nothing against the chain.
    assert_eq!(rule(&report, Rule::Profile).0, Status::Pass, "{}", report.to_table());
}

/// When rustls-platform-verifier's real-world tests check these chains.
fn real_world_time() -> OffsetDateTime {
    OffsetDateTime::parse("2026-08-12T10:22:53Z", &Rfc3339).unwrap()
}

#[test]
fn real_public_chains_pass_at_a_fixed_time() {
    for (file, root, host, via) in [
        ("real-letsencrypt-org.pem", "real-isrg-root-x1.pem", "letsencrypt.org", "3 intermediates"),
        ("real-aws-amazon-com.pem", "real-amazon-root-ca-1.pem", "aws.amazon.com", "1 intermediate"),
    ] {
        let options = Options { host: Some(host.to_owned()), at: Some(real_world_time()), ..options(root) };
        let report = check(file, &options);
        let table = report.to_table();
        assert_eq!(
            rule(&report, Rule::Chain),
            (Status::Pass, rule(&report, Rule::Chain).1),
            "{file}:\n{table}"
        );
        assert!(rule(&report, Rule::Chain).1.contains(via), "{file}:\n{table}");
        assert_eq!(rule(&report, Rule::Profile).0, Status::Pass, "{file}:\n{table}");
        assert!(rule(&report, Rule::Profile).1.contains("and the root \""), "{file}:\n{table}");
        assert_eq!(rule(&report, Rule::Hostname).0, Status::Pass, "{file}:\n{table}");
        // No private key in a server's chain: accepted with that warning only.
        assert_eq!(report.verdict, Verdict::AcceptedWithWarnings, "{file}:\n{table}");
        let warned: Vec<Rule> =
            report.checks.iter().filter(|c| c.status == Status::Warn).map(|c| c.rule).collect();
        assert!(warned.iter().all(|r| matches!(r, Rule::PrivateKey | Rule::San)), "{file}:\n{table}");
        // Against the built-in public roots, the root is known by name and key only.
        let public = Options { extra_roots: Vec::new(), public_roots: true, ..options };
        let report = check(file, &public);
        assert_eq!(rule(&report, Rule::Chain).0, Status::Pass, "{file}:\n{}", report.to_table());
        let (status, message) = rule(&report, Rule::Profile);
        assert_eq!(status, Status::Pass, "{file}: {message}");
        assert!(message.contains("public roots"), "{file}: {message}");
    }
}
