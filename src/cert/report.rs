//! The checker's result: one [`Check`] per rule, the [`Verdict`] they add up to, the
//! certificate's identifying fields, and the two ways to print it (table and JSON).
//! It computes nothing about certificates itself.

use serde::Serialize;
use std::fmt;

/// The rules, in the order they are reported. The ids are part of the CLI's JSON contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Format,
    Version,
    Validity,
    Chain,
    Profile,
    Hostname,
    ServerAuth,
    PrivateKey,
    KeyMatch,
    KeyStorage,
    Wildcard,
    San,
    SelfSigned,
    KeySize,
}

impl Rule {
    pub const ALL: [Rule; 14] = [
        Rule::Format,
        Rule::Version,
        Rule::Validity,
        Rule::Chain,
        Rule::Profile,
        Rule::Hostname,
        Rule::ServerAuth,
        Rule::PrivateKey,
        Rule::KeyMatch,
        Rule::KeyStorage,
        Rule::Wildcard,
        Rule::San,
        Rule::SelfSigned,
        Rule::KeySize,
    ];

    /// The id used in JSON and on screen, e.g. `server_auth`.
    pub fn id(self) -> &'static str {
        match self {
            Rule::Format => "format",
            Rule::Version => "version",
            Rule::Validity => "validity",
            Rule::Chain => "chain",
            Rule::Profile => "profile",
            Rule::Hostname => "hostname",
            Rule::ServerAuth => "server_auth",
            Rule::PrivateKey => "private_key",
            Rule::KeyMatch => "key_match",
            Rule::KeyStorage => "key_storage",
            Rule::Wildcard => "wildcard",
            Rule::San => "san",
            Rule::SelfSigned => "self_signed",
            Rule::KeySize => "key_size",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// The outcome of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    /// The rule does not apply (e.g. `hostname` without `--host`).
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule's outcome with a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub rule: Rule,
    pub status: Status,
    pub message: String,
}

/// What all checks add up to: any `fail` rejects, any `warn` qualifies an acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accepted,
    AcceptedWithWarnings,
    Rejected,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::AcceptedWithWarnings => "accepted_with_warnings",
            Verdict::Rejected => "rejected",
        }
    }

    /// The CLI's exit code: 0 for an accepted certificate (warnings or not), 1 for a rejected one.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Accepted | Verdict::AcceptedWithWarnings => 0,
            Verdict::Rejected => 1,
        }
    }

    fn from_checks(checks: &[Check]) -> Verdict {
        if checks.iter().any(|c| c.status == Status::Fail) {
            Verdict::Rejected
        } else if checks.iter().any(|c| c.status == Status::Warn) {
            Verdict::AcceptedWithWarnings
        } else {
            Verdict::Accepted
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The certificate checker's full answer about one file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub checks: Vec<Check>,
    pub subject: String,
    pub issuer: String,
    /// Every SAN entry in certificate order, e.g. `DNS:node1.corp.example`, `IP:10.0.0.5`.
    pub sans: Vec<String>,
    /// RFC 3339, UTC.
    pub not_before: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    /// Upper-case hex without separators, as Windows shows thumbprints.
    pub thumbprint_sha1: String,
    pub thumbprint_sha256: String,
    /// The public key, e.g. `RSA 2048`, `EC P-256`, `Ed25519`.
    pub key: String,
}

impl Report {
    /// Builds a report; the verdict is derived from the checks so the two can't disagree.
    pub(crate) fn new(checks: Vec<Check>, fields: ReportFields) -> Report {
        Report {
            verdict: Verdict::from_checks(&checks),
            checks,
            subject: fields.subject,
            issuer: fields.issuer,
            sans: fields.sans,
            not_before: fields.not_before,
            not_after: fields.not_after,
            thumbprint_sha1: fields.thumbprint_sha1,
            thumbprint_sha256: fields.thumbprint_sha256,
            key: fields.key,
        }
    }

    /// The check for `rule`; every report has exactly one per rule.
    pub fn check(&self, rule: Rule) -> Option<&Check> {
        self.checks.iter().find(|c| c.rule == rule)
    }

    /// The JSON document of `gatehouse cert check --json`.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and enums can't fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The human table of `gatehouse cert check`.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "Subject:     {}", self.subject);
        let _ = writeln!(out, "Issuer:      {}", self.issuer);
        let _ = writeln!(out, "SANs:        {}", none_if_empty(&self.sans.join(", ")));
        let _ = writeln!(out, "Valid:       {} to {}", self.not_before, self.not_after);
        let _ = writeln!(out, "Key:         {}", self.key);
        let _ = writeln!(out, "SHA-1:       {}", self.thumbprint_sha1);
        let _ = writeln!(out, "SHA-256:     {}", self.thumbprint_sha256);
        let _ = writeln!(out);
        let width = Rule::ALL.iter().map(|r| r.id().len()).max().unwrap_or(0);
        for check in &self.checks {
            let _ = writeln!(
                out,
                "  {:<4}  {:<width$}  {}",
                check.status.as_str().to_uppercase(),
                check.rule.id(),
                check.message,
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "Verdict: {}", self.verdict);
        out
    }
}

fn none_if_empty(s: &str) -> &str {
    if s.is_empty() { "(none)" } else { s }
}

/// The descriptive fields of a report, gathered by the checker.
pub(crate) struct ReportFields {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    pub thumbprint_sha1: String,
    pub thumbprint_sha256: String,
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: Status) -> Check {
        Check { rule: Rule::Format, status, message: String::new() }
    }

    #[test]
    fn any_fail_rejects_and_any_warn_qualifies() {
        use Status::{Fail, Pass, Skip, Warn};
        let verdict = |s: &[Status]| Verdict::from_checks(&s.iter().map(|&x| check(x)).collect::<Vec<_>>());
        assert_eq!(verdict(&[Pass, Skip]), Verdict::Accepted);
        assert_eq!(verdict(&[Pass, Warn, Skip]), Verdict::AcceptedWithWarnings);
        assert_eq!(verdict(&[Warn, Fail]), Verdict::Rejected);
        assert_eq!(Verdict::Rejected.exit_code(), 1);
        assert_eq!(Verdict::AcceptedWithWarnings.exit_code(), 0);
    }

    #[test]
    fn rule_ids_serialize_as_snake_case() {
        for rule in Rule::ALL {
            assert_eq!(serde_json::to_value(rule).unwrap(), rule.id());
        }
    }
}
