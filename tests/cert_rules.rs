//! The certificate checker's rules, in process through the library, against the fixtures in
//! `tests/data/certs` (see its README for what each file is and what the checker should say).
//! Every rule has at least one test here that fails if the rule is broken, in both directions
//! where that makes sense.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

use gatehouse::cert::{
    LoadError, Options, PfxError, Report, Rule, Status, Verdict, check_bytes, check_file, read_roots,
};
use sha1::Digest as _;
use std::path::PathBuf;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");

fn path(file: &str) -> PathBuf {
    PathBuf::from(CERTS).join(file)
}

fn bytes(file: &str) -> Vec<u8> {
    std::fs::read(path(file)).unwrap_or_else(|e| panic!("reading fixture {file}: {e}"))
}

/// Checks a fixture that must be readable.
fn check(file: &str, options: &Options) -> Report {
    check_file(&path(file), options).unwrap_or_else(|e| panic!("{file} should be readable, got: {e}"))
}

/// Checks a fixture that must not be readable.
fn load_error(file: &str, options: &Options) -> LoadError {
    match check_file(&path(file), options) {
        Ok(report) => panic!("{file} should be unreadable, got {}:\n{}", report.verdict, report.to_table()),
        Err(e) => e,
    }
}

/// The README's "standard invocation": `--no-system-roots --roots ca.pem --host node1.gatehouse.test`,
/// now (the fixtures are valid from the moment they were made for 20 years).
fn standard() -> Options {
    Options {
        password: None,
        extra_roots: read_roots(&path("ca.pem")).unwrap(),
        public_roots: false,
        host: Some("node1.gatehouse.test".to_owned()),
        at: None,
    }
}

fn with_password(password: &str) -> Options {
    Options { password: Some(password.to_owned()), ..standard() }
}

fn with_host(host: &str) -> Options {
    Options { host: Some(host.to_owned()), ..standard() }
}

fn at(time: OffsetDateTime) -> Options {
    Options { at: Some(time), ..standard() }
}

fn rfc3339(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &Rfc3339).unwrap()
}

fn status(report: &Report, rule: Rule) -> Status {
    report.check(rule).unwrap_or_else(|| panic!("no `{rule}` check in:\n{}", report.to_table())).status
}

fn message(report: &Report, rule: Rule) -> &str {
    &report.check(rule).unwrap_or_else(|| panic!("no `{rule}` check in:\n{}", report.to_table())).message
}

#[track_caller]
fn assert_status(report: &Report, rule: Rule, expected: Status) {
    assert_eq!(status(report, rule), expected, "`{rule}` in:\n{}", report.to_table());
}

/// The validity window of the leaf in `file`, read with x509-parser rather than the checker.
fn leaf_validity(file: &str) -> (OffsetDateTime, OffsetDateTime) {
    let der = leaf_der(file);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let not_before = OffsetDateTime::from_unix_timestamp(cert.validity().not_before.timestamp()).unwrap();
    let not_after = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).unwrap();
    (not_before, not_after)
}

/// The first certificate of a PEM fixture, as DER.
fn leaf_der(file: &str) -> Vec<u8> {
    let pem = bytes(file);
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    assert_eq!(pem.label, "CERTIFICATE", "{file} must start with its leaf certificate");
    pem.contents
}

fn hex_upper(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut hex, b| {
        write!(hex, "{b:02X}").unwrap();
        hex
    })
}

// ---------------------------------------------------------------------------------------------
// The README's table, file by file.

/// What a rule may report for a fixture under the standard invocation.
#[derive(Clone, Copy)]
enum Expect {
    Is(Status),
    /// Either of two outcomes is acceptable (the README leaves the choice to the checker).
    Either(Status, Status),
}

impl Expect {
    fn allows(self, status: Status) -> bool {
        match self {
            Expect::Is(s) => s == status,
            Expect::Either(a, b) => a == status || b == status,
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Is(s) => write!(f, "{s}"),
            Expect::Either(a, b) => write!(f, "{a} or {b}"),
        }
    }
}

const PASS: Expect = Expect::Is(Status::Pass);
const WARN: Expect = Expect::Is(Status::Warn);
const FAIL: Expect = Expect::Is(Status::Fail);
const SKIP: Expect = Expect::Is(Status::Skip);
const PASS_OR_SKIP: Expect = Expect::Either(Status::Pass, Status::Skip);

/// The expected status of every rule for `file`: `listed` as given, the rest `pass`, except
/// `key_storage`, which the spec makes `skip` for anything but a PFX, and `wildcard`, which
/// may be `pass` or `skip` for a certificate without any '*' (nothing to judge).
fn expected(file: &str, listed: &[(Rule, Expect)]) -> Vec<(Rule, Expect)> {
    Rule::ALL
        .iter()
        .map(|&rule| {
            let default = match rule {
                Rule::KeyStorage if !is_pfx(file) => SKIP,
                Rule::Wildcard if !file.contains("wildcard") => PASS_OR_SKIP,
                _ => PASS,
            };
            let listed = listed.iter().find(|(r, _)| *r == rule).map(|&(_, e)| e);
            (rule, listed.unwrap_or(default))
        })
        .collect()
}

fn is_pfx(file: &str) -> bool {
    std::path::Path::new(file).extension().is_some_and(|e| e.eq_ignore_ascii_case("pfx"))
}

/// A fixture, the password that opens it, and the rules that don't simply pass.
type Row = (&'static str, Option<&'static str>, &'static [(Rule, Expect)]);

/// The README's "Expected results" table (standard invocation; unlisted rules pass).
const README_TABLE: &[Row] = &[
    ("good.pem", None, &[]),
    ("good-pkcs1.pem", None, &[]),
    ("good-encrypted.pem", Some("secret"), &[]),
    ("good-scrypt.pem", Some("secret"), &[]),
    ("good-chain-only.pem", None, &[(Rule::PrivateKey, WARN), (Rule::KeyMatch, SKIP)]),
    ("good.der", None, &[(Rule::PrivateKey, WARN), (Rule::KeyMatch, SKIP), (Rule::Chain, FAIL)]),
    ("good.cer", None, &[(Rule::PrivateKey, WARN), (Rule::KeyMatch, SKIP), (Rule::Chain, FAIL)]),
    ("good.pfx", Some("secret"), &[]),
    ("good-legacy.pfx", Some("secret"), &[]),
    ("good-nopass.pfx", None, &[]),
    ("cng-software.pfx", Some("secret"), &[(Rule::KeyStorage, FAIL)]),
    ("cng-platform.pfx", Some("secret"), &[(Rule::KeyStorage, FAIL)]),
    ("cng-smartcard.pfx", Some("secret"), &[(Rule::KeyStorage, FAIL)]),
    ("csp-legacy.pfx", Some("secret"), &[]),
    ("ec-p256.pem", None, &[]),
    ("ec-p384.pem", None, &[]),
    ("ec-p521.pem", None, &[(Rule::KeySize, FAIL), (Rule::KeyMatch, PASS_OR_SKIP)]),
    ("ec-secp256k1.pem", None, &[(Rule::KeySize, FAIL), (Rule::KeyMatch, PASS_OR_SKIP)]),
    ("ed25519.pem", None, &[]),
    ("ed448.pem", None, &[(Rule::KeySize, FAIL), (Rule::KeyMatch, PASS_OR_SKIP)]),
    ("rsa1024.pem", None, &[(Rule::KeySize, FAIL)]),
    ("rsa8192.pem", None, &[]),
    ("rsa9216.pem", None, &[(Rule::KeySize, FAIL)]),
    ("multi-san.pem", None, &[(Rule::San, WARN)]),
    ("wildcard.pem", None, &[]),
    ("bad-wildcard.pem", None, &[(Rule::Wildcard, FAIL), (Rule::Hostname, FAIL)]),
    ("bad-wildcard-middle.pem", None, &[(Rule::Wildcard, FAIL), (Rule::Hostname, FAIL)]),
    ("cn-only.pem", None, &[(Rule::Hostname, FAIL)]),
    ("no-san.pem", None, &[(Rule::Hostname, FAIL), (Rule::San, WARN)]),
    ("client-only.pem", None, &[(Rule::ServerAuth, FAIL)]),
    ("no-eku.pem", None, &[]),
    ("self-signed.pem", None, &[(Rule::SelfSigned, WARN), (Rule::Chain, FAIL)]),
    (
        "v1.pem",
        None,
        &[
            (Rule::Version, FAIL),
            (Rule::Hostname, FAIL),
            (Rule::Chain, FAIL),
            (Rule::Profile, FAIL),
            (Rule::San, WARN),
        ],
    ),
    ("mismatch.pem", None, &[(Rule::KeyMatch, FAIL)]),
];

#[test]
fn every_readable_fixture_gets_the_readme_result_rule_by_rule() {
    let mut wrong = Vec::new();
    for &(file, password, listed) in README_TABLE {
        let options = Options { password: password.map(str::to_owned), ..standard() };
        let report = match check_file(&path(file), &options) {
            Ok(report) => report,
            Err(e) => {
                wrong.push(format!("{file}: unreadable: {e}"));
                continue;
            }
        };
        let expected = expected(file, listed);
        for &(rule, expect) in &expected {
            let got = status(&report, rule);
            if !expect.allows(got) {
                wrong.push(format!(
                    "{file}: `{rule}` is {got}, expected {expect}: {}",
                    message(&report, rule)
                ));
            }
        }
        let verdict = if listed.iter().any(|(_, e)| matches!(e, Expect::Is(Status::Fail))) {
            Verdict::Rejected
        } else if listed.iter().any(|(_, e)| matches!(e, Expect::Is(Status::Warn))) {
            Verdict::AcceptedWithWarnings
        } else {
            Verdict::Accepted
        };
        if report.verdict != verdict {
            wrong.push(format!("{file}: verdict {}, expected {verdict}", report.verdict));
        }
    }
    assert!(wrong.is_empty(), "{} differences from the README:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn every_report_has_one_check_per_rule_in_rule_order() {
    for &(file, password, _) in README_TABLE {
        let options = Options { password: password.map(str::to_owned), ..standard() };
        let Ok(report) = check_file(&path(file), &options) else { continue };
        let rules: Vec<Rule> = report.checks.iter().map(|c| c.rule).collect();
        assert_eq!(rules, Rule::ALL, "{file}");
        for check in &report.checks {
            assert!(!check.message.trim().is_empty(), "{file}: `{}` has no message", check.rule);
        }
    }
}

#[test]
fn the_verdict_is_rejected_on_any_fail_else_qualified_by_any_warn() {
    for &(file, password, _) in README_TABLE {
        let options = Options { password: password.map(str::to_owned), ..standard() };
        let Ok(report) = check_file(&path(file), &options) else { continue };
        let has = |s: Status| report.checks.iter().any(|c| c.status == s);
        let verdict = if has(Status::Fail) {
            Verdict::Rejected
        } else if has(Status::Warn) {
            Verdict::AcceptedWithWarnings
        } else {
            Verdict::Accepted
        };
        assert_eq!(report.verdict, verdict, "{file}:\n{}", report.to_table());
    }
    assert_eq!(check("good.pem", &standard()).verdict, Verdict::Accepted);
    assert_eq!(check("multi-san.pem", &standard()).verdict, Verdict::AcceptedWithWarnings);
    assert_eq!(check("mismatch.pem", &standard()).verdict, Verdict::Rejected);
}

// ---------------------------------------------------------------------------------------------
// format, version, validity

#[test]
fn good_pem_is_accepted_against_its_own_ca() {
    let report = check("good.pem", &standard());
    assert_eq!(report.verdict, Verdict::Accepted, "{}", report.to_table());
    for rule in Rule::ALL {
        let allowed = match rule {
            Rule::KeyStorage => SKIP,
            Rule::Wildcard => PASS_OR_SKIP,
            _ => PASS,
        };
        assert!(allowed.allows(status(&report, rule)), "`{rule}` in:\n{}", report.to_table());
    }
}

#[test]
fn format_names_pem_der_and_pfx_files() {
    let cases = [
        ("good.pem", None, "pem"),
        ("good.der", None, "der"),
        ("good.cer", None, "der"),
        ("good.pfx", Some("secret"), "pfx"),
        ("good-legacy.pfx", Some("secret"), "pfx"),
    ];
    for (file, password, name) in cases {
        let report = check(file, &Options { password: password.map(str::to_owned), ..standard() });
        assert_status(&report, Rule::Format, Status::Pass);
        let text = message(&report, Rule::Format).to_lowercase();
        assert!(text.contains(name), "{file}: format message should name {name}: {text}");
    }
}

#[test]
fn version_3_passes_and_version_1_fails() {
    assert_status(&check("good.pem", &standard()), Rule::Version, Status::Pass);
    let v1 = check("v1.pem", &standard());
    assert_status(&v1, Rule::Version, Status::Fail);
    assert_eq!(v1.verdict, Verdict::Rejected);
}

#[test]
fn validity_fails_before_not_before_and_after_not_after() {
    let (not_before, not_after) = leaf_validity("good.pem");
    let cases = [
        (not_before - Duration::days(1), Status::Fail),
        (not_before - Duration::seconds(1), Status::Fail),
        (not_before, Status::Pass),
        (not_before + Duration::days(365), Status::Pass),
        (not_after, Status::Pass),
        (not_after + Duration::seconds(1), Status::Fail),
        (not_after + Duration::days(1), Status::Fail),
    ];
    for (time, expected) in cases {
        let report = check("good.pem", &at(time));
        assert_eq!(status(&report, Rule::Validity), expected, "at {time}:\n{}", report.to_table());
        if expected == Status::Fail {
            assert_eq!(report.verdict, Verdict::Rejected, "at {time}");
        }
    }
}

#[test]
fn validity_fails_in_2000_and_in_2100_and_passes_in_2030() {
    let report = check("good.pem", &at(rfc3339("2000-01-01T00:00:00Z")));
    assert_status(&report, Rule::Validity, Status::Fail);
    let report = check("good.pem", &at(rfc3339("2100-01-01T00:00:00Z")));
    assert_status(&report, Rule::Validity, Status::Fail);
    let report = check("good.pem", &at(rfc3339("2030-01-01T00:00:00Z")));
    assert_status(&report, Rule::Validity, Status::Pass);
    assert_eq!(report.verdict, Verdict::Accepted, "{}", report.to_table());
}

#[test]
fn validity_is_judged_now_without_at() {
    let (not_before, not_after) = leaf_validity("good.pem");
    let now = OffsetDateTime::now_utc();
    let expected = if (not_before..=not_after).contains(&now) { Status::Pass } else { Status::Fail };
    assert_status(&check("good.pem", &standard()), Rule::Validity, expected);
}

// ---------------------------------------------------------------------------------------------
// chain

#[test]
fn good_pem_is_rejected_with_only_the_public_roots() {
    let options = Options { extra_roots: Vec::new(), public_roots: true, ..standard() };
    let report = check("good.pem", &options);
    assert_status(&report, Rule::Chain, Status::Fail);
    assert_eq!(report.verdict, Verdict::Rejected);
}

#[test]
fn good_pem_is_rejected_when_roots_is_another_ca() {
    let options = Options { extra_roots: read_roots(&path("other-ca.pem")).unwrap(), ..standard() };
    let report = check("good.pem", &options);
    assert_status(&report, Rule::Chain, Status::Fail);
    assert_eq!(report.verdict, Verdict::Rejected);
}

#[test]
fn roots_add_anchors_to_the_public_roots() {
    let options = Options { public_roots: true, ..standard() };
    assert_status(&check("good.pem", &options), Rule::Chain, Status::Pass);
}

#[test]
fn no_system_roots_without_roots_trusts_nothing() {
    let options = Options { extra_roots: Vec::new(), public_roots: false, ..standard() };
    assert_status(&check("good.pem", &options), Rule::Chain, Status::Fail);
}

#[test]
fn a_der_file_without_its_intermediate_does_not_chain() {
    assert_status(&check("good.der", &standard()), Rule::Chain, Status::Fail);
    // Trusting the intermediate as well completes the path.
    let mut roots = read_roots(&path("ca.pem")).unwrap();
    roots.extend(read_roots(&path("int.pem")).unwrap());
    let options = Options { extra_roots: roots, ..standard() };
    assert_status(&check("good.der", &options), Rule::Chain, Status::Pass);
}

#[test]
fn read_roots_reads_pem_and_der_and_refuses_missing_files() {
    assert_eq!(read_roots(&path("ca.pem")).unwrap().len(), 1);
    assert_eq!(read_roots(&path("good.der")).unwrap(), vec![bytes("good.der")]);
    assert!(matches!(read_roots(&path("does-not-exist.pem")), Err(LoadError::Io { .. })));
    assert!(read_roots(&path("garbage.bin")).is_err());
}

// ---------------------------------------------------------------------------------------------
// hostname

#[test]
fn hostname_is_skipped_without_host() {
    let report = check("good.pem", &Options { host: None, ..standard() });
    assert_status(&report, Rule::Hostname, Status::Skip);
}

#[test]
fn hostname_must_match_a_dns_san() {
    assert_status(&check("good.pem", &with_host("node1.gatehouse.test")), Rule::Hostname, Status::Pass);
    let report = check("good.pem", &with_host("node2.gatehouse.test"));
    assert_status(&report, Rule::Hostname, Status::Fail);
    assert_eq!(report.verdict, Verdict::Rejected);
}

#[test]
fn hostname_matches_every_dns_san_of_a_multi_san_certificate() {
    for host in ["node1.gatehouse.test", "node2.gatehouse.test", "last.gatehouse.test"] {
        assert_status(&check("multi-san.pem", &with_host(host)), Rule::Hostname, Status::Pass);
    }
    assert_status(&check("multi-san.pem", &with_host("node3.gatehouse.test")), Rule::Hostname, Status::Fail);
}

#[test]
fn wildcard_matches_exactly_one_label() {
    let cases = [
        ("a.gatehouse.test", Status::Pass),
        ("node1.gatehouse.test", Status::Pass),
        ("a.b.gatehouse.test", Status::Fail),
        ("gatehouse.test", Status::Fail),
        ("a.other.test", Status::Fail),
    ];
    for (host, expected) in cases {
        let report = check("wildcard.pem", &with_host(host));
        assert_eq!(status(&report, Rule::Hostname), expected, "--host {host}:\n{}", report.to_table());
    }
}

#[test]
fn a_wildcard_that_is_not_a_whole_label_matches_nothing() {
    for host in ["node1.gatehouse.test", "nodea.gatehouse.test", "node.gatehouse.test"] {
        assert_status(&check("bad-wildcard.pem", &with_host(host)), Rule::Hostname, Status::Fail);
    }
    for host in ["node1.a.gatehouse.test", "node1.gatehouse.test"] {
        assert_status(&check("bad-wildcard-middle.pem", &with_host(host)), Rule::Hostname, Status::Fail);
    }
}

#[test]
fn the_subject_cn_is_not_used_for_the_hostname() {
    // cn-only.pem: CN=node1.gatehouse.test, SAN DNS:other.gatehouse.test.
    assert_status(&check("cn-only.pem", &with_host("node1.gatehouse.test")), Rule::Hostname, Status::Fail);
    assert_status(&check("cn-only.pem", &with_host("other.gatehouse.test")), Rule::Hostname, Status::Pass);
    // no-san.pem: CN=node1.gatehouse.test and no SAN at all.
    assert_status(&check("no-san.pem", &with_host("node1.gatehouse.test")), Rule::Hostname, Status::Fail);
}

// ---------------------------------------------------------------------------------------------
// server_auth

#[test]
fn a_client_only_eku_fails_server_auth() {
    let report = check("client-only.pem", &standard());
    assert_status(&report, Rule::ServerAuth, Status::Fail);
    assert_eq!(report.verdict, Verdict::Rejected);
}

#[test]
fn no_eku_or_an_eku_with_server_auth_passes() {
    assert_status(&check("no-eku.pem", &standard()), Rule::ServerAuth, Status::Pass);
    assert_status(&check("good.pem", &standard()), Rule::ServerAuth, Status::Pass);
    assert_status(&check("v1.pem", &standard()), Rule::ServerAuth, Status::Pass);
}

// ---------------------------------------------------------------------------------------------
// key_size

#[test]
fn key_size_allows_rsa_2048_to_8192_p256_p384_and_ed25519_only() {
    let cases = [
        ("good.pem", "RSA 2048", Status::Pass),
        ("rsa8192.pem", "RSA 8192", Status::Pass),
        ("ec-p256.pem", "P-256", Status::Pass),
        ("ec-p384.pem", "P-384", Status::Pass),
        ("ed25519.pem", "Ed25519", Status::Pass),
        ("rsa1024.pem", "RSA 1024", Status::Fail),
        ("rsa9216.pem", "RSA 9216", Status::Fail),
        ("ec-p521.pem", "P-521", Status::Fail),
        ("ec-secp256k1.pem", "secp256k1", Status::Fail),
        ("ed448.pem", "Ed448", Status::Fail),
    ];
    for (file, key, expected) in cases {
        let report = check(file, &standard());
        assert_eq!(status(&report, Rule::KeySize), expected, "{file}:\n{}", report.to_table());
        assert!(report.key.contains(key), "{file}: key field {:?} should name {key}", report.key);
        if expected == Status::Fail {
            assert_eq!(report.verdict, Verdict::Rejected, "{file}");
        }
    }
}

#[test]
fn a_key_size_failure_says_why() {
    let cases = [
        ("rsa1024.pem", "1024"),
        ("rsa9216.pem", "9216"),
        ("ec-p521.pem", "P-521"),
        ("ec-secp256k1.pem", "secp256k1"),
        ("ed448.pem", "Ed448"),
    ];
    for (file, named) in cases {
        let report = check(file, &standard());
        let text = message(&report, Rule::KeySize);
        assert!(text.contains(named), "{file}: the key_size message should name {named}: {text}");
        assert!(text.len() > named.len() + 20, "{file}: the key_size message should say why: {text}");
    }
}

// ---------------------------------------------------------------------------------------------
// san, wildcard, self_signed

#[test]
fn more_than_one_san_warns_and_names_the_last_entry() {
    let report = check("multi-san.pem", &standard());
    assert_status(&report, Rule::San, Status::Warn);
    let text = message(&report, Rule::San);
    assert!(text.contains("last.gatehouse.test"), "{text}");
    assert_eq!(report.verdict, Verdict::AcceptedWithWarnings);
    assert_eq!(
        report.sans,
        ["DNS:node1.gatehouse.test", "DNS:node2.gatehouse.test", "IP:127.0.0.1", "DNS:last.gatehouse.test"]
    );
}

#[test]
fn one_san_passes_the_san_rule() {
    assert_status(&check("good.pem", &standard()), Rule::San, Status::Pass);
    assert_status(&check("cn-only.pem", &standard()), Rule::San, Status::Pass);
}

#[test]
fn no_san_at_all_warns_that_no_peer_can_match_the_name() {
    // Peers match only SANs, never the CN: the certificate can't be verified by any name.
    let report = check("no-san.pem", &Options { host: None, ..standard() });
    assert_status(&report, Rule::San, Status::Warn);
    assert!(message(&report, Rule::San).contains("no Subject Alternative Name"), "{}", report.to_table());
    assert_status(&report, Rule::Hostname, Status::Skip);
    assert_eq!(report.verdict, Verdict::AcceptedWithWarnings, "{}", report.to_table());
}

#[test]
fn a_wildcard_as_the_whole_leftmost_label_passes() {
    let report = check("wildcard.pem", &standard());
    assert_status(&report, Rule::Wildcard, Status::Pass);
    assert_eq!(report.verdict, Verdict::Accepted, "{}", report.to_table());
}

#[test]
fn a_wildcard_anywhere_else_fails_and_is_named() {
    for (file, name) in
        [("bad-wildcard.pem", "node*.gatehouse.test"), ("bad-wildcard-middle.pem", "node1.*.gatehouse.test")]
    {
        let report = check(file, &standard());
        assert_status(&report, Rule::Wildcard, Status::Fail);
        assert!(
            message(&report, Rule::Wildcard).contains(name),
            "{file}: {}",
            message(&report, Rule::Wildcard)
        );
        assert_eq!(report.verdict, Verdict::Rejected);
    }
}

#[test]
fn names_without_a_wildcard_never_fail_the_wildcard_rule() {
    for file in ["good.pem", "multi-san.pem", "no-san.pem"] {
        let got = status(&check(file, &standard()), Rule::Wildcard);
        assert!(PASS_OR_SKIP.allows(got), "{file}: wildcard {got}");
    }
}

#[test]
fn a_self_signed_certificate_warns() {
    let report = check("self-signed.pem", &standard());
    assert_status(&report, Rule::SelfSigned, Status::Warn);
    assert_status(&check("good.pem", &standard()), Rule::SelfSigned, Status::Pass);
}

#[test]
fn a_self_signed_certificate_trusted_with_roots_is_accepted_with_warnings() {
    let options = Options { extra_roots: read_roots(&path("self-signed.pem")).unwrap(), ..standard() };
    let report = check("self-signed.pem", &options);
    assert_status(&report, Rule::Chain, Status::Pass);
    assert_status(&report, Rule::SelfSigned, Status::Warn);
    assert_eq!(report.verdict, Verdict::AcceptedWithWarnings, "{}", report.to_table());
}

// ---------------------------------------------------------------------------------------------
// private_key, key_match

#[test]
fn a_file_without_a_key_warns_about_the_private_key() {
    for file in ["good-chain-only.pem", "good.der", "good.cer"] {
        let report = check(file, &standard());
        assert_status(&report, Rule::PrivateKey, Status::Warn);
        assert_status(&report, Rule::KeyMatch, Status::Skip);
    }
    let report = check("good-chain-only.pem", &standard());
    assert_eq!(report.verdict, Verdict::AcceptedWithWarnings, "{}", report.to_table());
}

#[test]
fn a_key_of_another_certificate_fails_key_match() {
    let report = check("mismatch.pem", &standard());
    assert_status(&report, Rule::PrivateKey, Status::Pass);
    assert_status(&report, Rule::KeyMatch, Status::Fail);
    assert_eq!(report.verdict, Verdict::Rejected);
}

#[test]
fn a_key_of_another_algorithm_fails_key_match() {
    // good.pem's leaf and int, then the Ed25519 key of ed25519.pem.
    let good = String::from_utf8(bytes("good-chain-only.pem")).unwrap();
    let ed25519 = String::from_utf8(bytes("ed25519.pem")).unwrap();
    let key_start = ed25519.find("-----BEGIN PRIVATE KEY-----").unwrap();
    let mixed = format!("{good}{}", &ed25519[key_start..]);
    let report = check_bytes(mixed.as_bytes(), &standard()).unwrap();
    assert_status(&report, Rule::KeyMatch, Status::Fail);
}

#[test]
fn pkcs8_pkcs1_sec1_and_encrypted_pkcs8_keys_all_match_their_certificate() {
    let cases = [
        ("good.pem", None, "PKCS#8"),
        ("good-pkcs1.pem", None, "PKCS#1"),
        ("ec-p256.pem", None, "SEC1"),
        ("ec-p384.pem", None, "PKCS#8"),
        ("ed25519.pem", None, "PKCS#8"),
        ("rsa8192.pem", None, "PKCS#8"),
        ("good-encrypted.pem", Some("secret"), "PKCS#8"),
        // Legacy OpenSSL PEM encryption (Proc-Type: 4,ENCRYPTED): AES-256 and 3DES.
        ("good-legacy-encrypted.pem", Some("secret"), "PKCS#1"),
        ("ec-p256-legacy-encrypted.pem", Some("secret"), "SEC1"),
    ];
    for (file, password, encoding) in cases {
        let report = check(file, &Options { password: password.map(str::to_owned), ..standard() });
        assert_status(&report, Rule::PrivateKey, Status::Pass);
        assert_status(&report, Rule::KeyMatch, Status::Pass);
        assert!(
            message(&report, Rule::PrivateKey).contains(encoding),
            "{file}: private_key should name {encoding}: {}",
            message(&report, Rule::PrivateKey)
        );
    }
}

#[test]
fn keys_the_checker_cannot_derive_never_fail_key_match() {
    for file in ["ec-p521.pem", "ec-secp256k1.pem", "ed448.pem"] {
        let got = status(&check(file, &standard()), Rule::KeyMatch);
        assert!(PASS_OR_SKIP.allows(got), "{file}: key_match {got}");
    }
}

#[test]
fn a_legacy_encrypted_key_needs_its_password() {
    for file in ["good-legacy-encrypted.pem", "ec-p256-legacy-encrypted.pem"] {
        let wrong = check_file(&path(file), &Options { password: Some("wrong".into()), ..standard() });
        assert!(matches!(wrong, Err(LoadError::WrongKeyPassword)), "{file}: {:?}", wrong.err());
        let none = check_file(&path(file), &Options { password: None, ..standard() });
        assert!(matches!(none, Err(LoadError::EncryptedKeyNeedsPassword)), "{file}: {:?}", none.err());
    }
}

#[test]
fn an_encrypted_key_without_a_password_is_a_load_error() {
    let err = load_error("good-encrypted.pem", &standard());
    assert!(matches!(err, LoadError::EncryptedKeyNeedsPassword), "{err:?}");
}

#[test]
fn an_encrypted_key_with_the_wrong_password_is_never_a_key_mismatch() {
    match check_file(&path("good-encrypted.pem"), &with_password("wrong")) {
        Err(err) => assert!(matches!(err, LoadError::WrongKeyPassword), "{err:?}"),
        Ok(report) => {
            assert_ne!(status(&report, Rule::PrivateKey), Status::Pass);
            assert_ne!(status(&report, Rule::KeyMatch), Status::Fail);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PFX and key_storage

#[test]
fn pfx_files_load_with_their_key() {
    let cases = [
        ("good.pfx", Some("secret")),
        ("good-legacy.pfx", Some("secret")),
        ("good-nopass.pfx", None),
        ("good-nopass.pfx", Some("")),
    ];
    for (file, password) in cases {
        let report = check(file, &Options { password: password.map(str::to_owned), ..standard() });
        assert_status(&report, Rule::Format, Status::Pass);
        assert_status(&report, Rule::Chain, Status::Pass);
        assert_status(&report, Rule::PrivateKey, Status::Pass);
        assert_status(&report, Rule::KeyMatch, Status::Pass);
        assert_status(&report, Rule::KeyStorage, Status::Pass);
        assert_eq!(report.verdict, Verdict::Accepted, "{file}:\n{}", report.to_table());
        // The leaf comes first, whatever order the bags are in.
        assert_eq!(report.thumbprint_sha256, hex_upper(&sha2::Sha256::digest(bytes("good.der"))), "{file}");
    }
}

#[test]
fn a_pfx_with_the_wrong_password_is_a_wrong_password_error() {
    for (file, password) in
        [("good.pfx", Some("wrong")), ("good.pfx", None), ("good-nopass.pfx", Some("secret"))]
    {
        let err = load_error(file, &Options { password: password.map(str::to_owned), ..standard() });
        assert!(matches!(err, LoadError::Pfx(PfxError::WrongPassword)), "{file} with {password:?}: {err:?}");
    }
}

#[test]
fn a_key_from_a_cng_key_storage_provider_fails_key_storage() {
    let cases = [
        ("cng-software.pfx", "Microsoft Software Key Storage Provider"),
        ("cng-platform.pfx", "Microsoft Platform Crypto Provider"),
        ("cng-smartcard.pfx", "Microsoft Smart Card Key Storage Provider"),
    ];
    for (file, provider) in cases {
        let report = check(file, &with_password("secret"));
        assert_status(&report, Rule::KeyStorage, Status::Fail);
        let text = message(&report, Rule::KeyStorage);
        assert!(text.contains(provider), "{file}: key_storage should name {provider:?}: {text}");
        assert_status(&report, Rule::KeyMatch, Status::Pass);
        assert_eq!(report.verdict, Verdict::Rejected);
    }
}

#[test]
fn a_key_from_a_legacy_csp_passes_key_storage() {
    let report = check("csp-legacy.pfx", &with_password("secret"));
    assert_status(&report, Rule::KeyStorage, Status::Pass);
    assert_eq!(report.verdict, Verdict::Accepted, "{}", report.to_table());
}

#[test]
fn key_storage_is_skipped_for_anything_but_a_pfx() {
    for file in ["good.pem", "good.der", "good-pkcs1.pem"] {
        assert_status(&check(file, &standard()), Rule::KeyStorage, Status::Skip);
    }
}

// ---------------------------------------------------------------------------------------------
// Unreadable input

#[test]
fn every_unreadable_fixture_is_a_load_error() {
    let options = standard();
    let empty = load_error("empty.pem", &options);
    assert!(matches!(empty, LoadError::Empty), "{empty:?}");
    let truncated = load_error("truncated.pem", &options);
    assert!(matches!(truncated, LoadError::TruncatedPem { .. }), "{truncated:?}");
    let key_only = load_error("key-only.pem", &options);
    assert!(matches!(key_only, LoadError::NoCertificate { .. }), "{key_only:?}");
    let garbage = load_error("garbage.bin", &options);
    assert!(matches!(garbage, LoadError::NotACertificate), "{garbage:?}");
    let text = load_error("not-a-cert.txt", &options);
    assert!(matches!(text, LoadError::NotACertificate), "{text:?}");
    let missing = load_error("does-not-exist.pem", &options);
    assert!(matches!(missing, LoadError::Io { .. }), "{missing:?}");
}

#[test]
fn key_derivation_beyond_what_tools_write_is_refused_before_it_starts() {
    for (file, cost) in [("costly-pbkdf2.pem", "2000000 PBKDF2 iterations"), ("costly-scrypt.pem", "p=64")] {
        let err = load_error(file, &with_password("secret"));
        assert!(matches!(err, LoadError::KeyDerivationTooCostly { .. }), "{file}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(cost) && text.contains("export the key again"), "{file}: {text}");
    }
    let err = load_error("costly.pfx", &with_password("secret"));
    assert!(matches!(err, LoadError::Pfx(PfxError::Unsupported(_))), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("2000000 key-derivation iterations") && text.contains("export the file again"),
        "{text}"
    );
    // What the tools write by default still opens (good-scrypt.pem is in the README table too).
    assert_status(&check("good-scrypt.pem", &with_password("secret")), Rule::PrivateKey, Status::Pass);
}

#[test]
fn a_file_over_the_size_cap_is_refused_without_reading_it_whole() {
    let dir = std::env::temp_dir().join(format!("gatehouse-cert-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.pem");
    // Sparse: the cap is judged from the size, so nothing is written or read.
    std::fs::File::create(&big).unwrap().set_len(gatehouse::cert::MAX_FILE_SIZE + 1).unwrap();
    let err = check_file(&big, &standard()).err();
    assert!(matches!(err, Some(LoadError::TooLarge { .. })), "{err:?}");
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("larger than 4 MiB") && text.contains("choose the"), "{text}");
    // At the cap it is read, and judged by its contents.
    std::fs::File::create(&big).unwrap().set_len(gatehouse::cert::MAX_FILE_SIZE).unwrap();
    assert!(matches!(check_file(&big, &standard()), Err(LoadError::NotACertificate)));
    std::fs::remove_dir_all(&dir).unwrap();
    // An endless device is cut off one byte past the cap.
    let err = check_file(std::path::Path::new("/dev/zero"), &standard()).err();
    assert!(matches!(err, Some(LoadError::TooLarge { .. })), "{err:?}");
    assert!(matches!(read_roots(std::path::Path::new("/dev/zero")), Err(LoadError::TooLarge { .. })));
}

#[test]
fn load_errors_read_as_one_line() {
    let options = standard();
    for file in ["empty.pem", "truncated.pem", "key-only.pem", "garbage.bin", "not-a-cert.txt", "nope.pem"] {
        let text = load_error(file, &options).to_string();
        assert!(!text.trim().is_empty() && !text.contains('\n'), "{file}: {text:?}");
    }
    let text = load_error("good.pfx", &with_password("wrong")).to_string();
    assert!(text.contains("password") && !text.contains('\n'), "{text:?}");
}

// ---------------------------------------------------------------------------------------------
// The report's fields and JSON

#[test]
fn the_report_describes_the_leaf() {
    let report = check("good.pem", &standard());
    let der = leaf_der("good.pem");
    assert_eq!(der, bytes("good.der"));
    assert_eq!(report.thumbprint_sha1, hex_upper(&sha1::Sha1::digest(&der)));
    assert_eq!(report.thumbprint_sha256, hex_upper(&sha2::Sha256::digest(&der)));
    assert!(report.subject.contains("node1.gatehouse.test"), "{}", report.subject);
    assert!(report.issuer.contains("Gatehouse Test Intermediate CA"), "{}", report.issuer);
    assert_eq!(report.sans, ["DNS:node1.gatehouse.test"]);
    assert_eq!(report.key, "RSA 2048");
    let (not_before, not_after) = leaf_validity("good.pem");
    assert_eq!(rfc3339(&report.not_before), not_before);
    assert_eq!(rfc3339(&report.not_after), not_after);
}

#[test]
fn the_json_report_has_exactly_the_documented_keys() {
    let top = [
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
    for (file, password) in [("good.pem", None), ("mismatch.pem", None), ("good.pfx", Some("secret"))] {
        let report = check(file, &Options { password: password.map(str::to_owned), ..standard() });
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let object = json.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = top.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected, "{file}");
        assert_eq!(json["verdict"], report.verdict.as_str());
        let checks = json["checks"].as_array().unwrap();
        assert_eq!(checks.len(), Rule::ALL.len());
        for (check, rule) in checks.iter().zip(Rule::ALL) {
            let mut keys: Vec<&str> = check.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["message", "rule", "status"], "{file}");
            assert_eq!(check["rule"], rule.id());
            assert!(["pass", "warn", "fail", "skip"].contains(&check["status"].as_str().unwrap()));
            assert!(check["message"].is_string());
        }
        assert_eq!(json["sans"], serde_json::json!(report.sans));
        assert_eq!(json["thumbprint_sha256"], report.thumbprint_sha256);
    }
}
