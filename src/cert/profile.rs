//! The certificate profile: every certificate of the path — leaf, intermediates and the trust
//! anchor — against the RFC 5280 §4.2 MUST rules and the CA/Browser Forum Baseline Requirements
//! (§7.1.2) that rustls-webpki leaves unchecked, applied the way pyca/cryptography's verifier
//! applies them. It builds no path and verifies no signature (webpki does both); it only reads
//! the extensions of the certificates it is given and says, for each violation, which
//! certificate, which extension, and what to ask the CA for.

use std::fmt;
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::prelude::{X509Certificate, X509Version};

/// Where a certificate sits in the path; intermediates count from the leaf, starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Position {
    Leaf,
    Intermediate(usize),
    Root,
}

/// One certificate of the path and where it sits.
pub(super) struct Member<'a> {
    pub position: Position,
    pub cert: &'a X509Certificate<'a>,
}

// Extension OIDs, as x509-parser prints them.
const AUTHORITY_KEY_ID: &str = "2.5.29.35";
const SUBJECT_KEY_ID: &str = "2.5.29.14";
const KEY_USAGE: &str = "2.5.29.15";
const SUBJECT_ALT_NAME: &str = "2.5.29.17";
const BASIC_CONSTRAINTS: &str = "2.5.29.19";
const NAME_CONSTRAINTS: &str = "2.5.29.30";
const CRL_DISTRIBUTION_POINTS: &str = "2.5.29.31";
const POLICY_CONSTRAINTS: &str = "2.5.29.36";
const EXTENDED_KEY_USAGE: &str = "2.5.29.37";
const AUTHORITY_INFO_ACCESS: &str = "1.3.6.1.5.5.7.1.1";

/// Extensions something on the path processes: those rustls-webpki reads (key usage, SAN,
/// basic and name constraints, CRL distribution points, EKU) and those this profile checks.
/// A critical extension outside this list refuses the path (RFC 5280 §4.2).
const UNDERSTOOD: [&str; 10] = [
    AUTHORITY_KEY_ID,
    SUBJECT_KEY_ID,
    KEY_USAGE,
    SUBJECT_ALT_NAME,
    BASIC_CONSTRAINTS,
    NAME_CONSTRAINTS,
    CRL_DISTRIBUTION_POINTS,
    POLICY_CONSTRAINTS,
    EXTENDED_KEY_USAGE,
    AUTHORITY_INFO_ACCESS,
];

/// Every violation on the path, one sentence each, in path order. `at` is the time the trust
/// anchor's own validity is judged at (the leaf's is the `validity` rule's, the intermediates'
/// webpki's).
pub(super) fn violations(path: &[Member<'_>], at: OffsetDateTime) -> Vec<String> {
    let mut out = Vec::new();
    for member in path {
        let mut found = Vec::new();
        check(member, at, &mut found);
        let name = Named(member);
        out.extend(found.into_iter().map(|v| format!("{name}: {v}")));
    }
    out
}

/// "leaf \"CN=…\"", "intermediate 2 \"…\"", "root \"…\"" (or "(empty subject)").
struct Named<'a, 'b>(&'a Member<'b>);

impl fmt::Display for Named<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.position {
            Position::Leaf => f.write_str("leaf")?,
            Position::Intermediate(n) => write!(f, "intermediate {n}")?,
            Position::Root => f.write_str("root")?,
        }
        let subject = self.0.cert.subject().to_string();
        if subject.is_empty() { f.write_str(" (empty subject)") } else { write!(f, " \"{subject}\"") }
    }
}

fn check(member: &Member<'_>, at: OffsetDateTime, out: &mut Vec<String>) {
    let cert = member.cert;
    if cert.version() != X509Version::V3 {
        out.push(format!(
            "it is X.509 version {}, and the profile requires version 3 (see `version`); ask the CA for a version 3 certificate",
            cert.version().0 + 1
        ));
        return;
    }
    let is_ca_position = member.position != Position::Leaf;
    let find = |oid: &str| cert.extensions().iter().find(|e| e.oid.to_id_string() == oid);
    let subject_empty = cert.subject().iter_attributes().next().is_none();

    unknown_critical(cert, out);
    if member.position == Position::Root {
        root_validity(cert, at, out);
    }
    key_identifiers(member, find(AUTHORITY_KEY_ID), find(SUBJECT_KEY_ID), out);
    basic_constraints(is_ca_position, find(BASIC_CONSTRAINTS), find(KEY_USAGE), subject_empty, out);
    subject_alt_name(member.position, find(SUBJECT_ALT_NAME), subject_empty, out);
    name_constraints(is_ca_position, find(NAME_CONSTRAINTS), out);
    if let Some(ext) = find(POLICY_CONSTRAINTS)
        && !ext.critical
    {
        out.push(
            "policyConstraints is not marked critical, which RFC 5280 §4.2.1.11 requires; ask the CA to re-issue it with the extension critical".to_owned(),
        );
    }
    if let Some(ext) = find(AUTHORITY_INFO_ACCESS) {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) if !aia.accessdescs.is_empty() => {}
            ParsedExtension::AuthorityInfoAccess(_) => out.push(
                "authorityInfoAccess holds no access description (RFC 5280 §4.2.2.1 requires at least one); ask the CA to re-issue it with its caIssuers URL, or without the extension".to_owned(),
            ),
            _ => out.push(malformed("authorityInfoAccess")),
        }
    }
}

fn malformed(extension: &str) -> String {
    format!("its {extension} extension can't be parsed; ask the CA to re-issue the certificate")
}

fn unknown_critical(cert: &X509Certificate<'_>, out: &mut Vec<String>) {
    for ext in cert.extensions().iter().filter(|e| e.critical) {
        let oid = ext.oid.to_id_string();
        if !UNDERSTOOD.contains(&oid.as_str()) {
            out.push(format!(
                "it has a critical extension {oid} that nothing on the path understands, and RFC 5280 §4.2 says to refuse such a certificate; ask the CA to re-issue it without that extension, or with it non-critical"
            ));
        }
    }
}

fn root_validity(cert: &X509Certificate<'_>, at: OffsetDateTime, out: &mut Vec<String>) {
    let utc = |t: i64| OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let not_before = utc(cert.validity().not_before.timestamp());
    let not_after = utc(cert.validity().not_after.timestamp());
    let day = |t: OffsetDateTime| t.date().to_string();
    if at > not_after {
        out.push(format!(
            "the trust anchor itself expired on {}; ask your CA for its current root certificate and trust that (with --roots)",
            day(not_after)
        ));
    } else if at < not_before {
        out.push(format!(
            "the trust anchor itself is not valid until {}; check the machine's clock, or ask your CA which root to trust",
            day(not_before)
        ));
    }
}

fn key_identifiers(
    member: &Member<'_>,
    aki: Option<&X509Extension<'_>>,
    ski: Option<&X509Extension<'_>>,
    out: &mut Vec<String>,
) {
    let cert = member.cert;
    let ski_value = match ski.map(X509Extension::parsed_extension) {
        Some(ParsedExtension::SubjectKeyIdentifier(id)) => Some(id.0),
        Some(_) => {
            out.push(malformed("subjectKeyIdentifier"));
            None
        }
        None => None,
    };
    if let Some(ski) = ski
        && ski.critical
    {
        out.push("subjectKeyIdentifier is marked critical, and RFC 5280 §4.2.1.2 requires it non-critical; ask the CA to re-issue it with the extension non-critical".to_owned());
    }
    if ski.is_none() && member.position != Position::Leaf {
        out.push("it has no subjectKeyIdentifier, which RFC 5280 §4.2.1.2 requires in every CA certificate; ask the CA for a re-issued CA certificate with subjectKeyIdentifier=hash".to_owned());
    }

    let self_issued = cert.subject().as_raw() == cert.issuer().as_raw();
    let Some(aki) = aki else {
        if member.position != Position::Root && !self_issued {
            out.push("it has no authorityKeyIdentifier, which RFC 5280 §4.2.1.1 requires in every certificate that isn't self-signed; ask the CA to re-issue it with authorityKeyIdentifier=keyid".to_owned());
        }
        return;
    };
    if aki.critical {
        out.push("authorityKeyIdentifier is marked critical, and RFC 5280 §4.2.1.1 requires it non-critical; ask the CA to re-issue it with the extension non-critical".to_owned());
    }
    let ParsedExtension::AuthorityKeyIdentifier(id) = aki.parsed_extension() else {
        out.push(malformed("authorityKeyIdentifier"));
        return;
    };
    let extra = id.authority_cert_issuer.is_some() || id.authority_cert_serial.is_some();
    match (member.position, id.key_identifier.as_ref()) {
        (Position::Root, key_id) => {
            let matches = key_id.is_some_and(|k| Some(k.0) == ski_value);
            if extra || !matches {
                out.push("its authorityKeyIdentifier must hold only a keyIdentifier equal to its own subjectKeyIdentifier (a root is its own authority; no authorityCertIssuer or serial, BR §7.1.2.1); ask the CA for a root certificate re-issued that way, or one without authorityKeyIdentifier".to_owned());
            }
            return;
        }
        (_, None) => out.push("authorityKeyIdentifier has no keyIdentifier, which RFC 5280 §4.2.1.1 and BR §7.1.2 require; ask the CA to re-issue it with authorityKeyIdentifier=keyid".to_owned()),
        (_, Some(_)) => {}
    }
    if extra && member.position != Position::Leaf {
        out.push("authorityKeyIdentifier carries authorityCertIssuer and serial number, which the Baseline Requirements forbid in CA certificates (BR §7.1.2.11.1); ask the CA for a CA certificate whose authorityKeyIdentifier holds only the keyIdentifier".to_owned());
    }
}

fn basic_constraints(
    is_ca_position: bool,
    bc: Option<&X509Extension<'_>>,
    ku: Option<&X509Extension<'_>>,
    subject_empty: bool,
    out: &mut Vec<String>,
) {
    let ca = match bc.map(|e| (e.critical, e.parsed_extension())) {
        Some((critical, ParsedExtension::BasicConstraints(bc))) => {
            if is_ca_position && !critical {
                out.push("basicConstraints is not marked critical, which RFC 5280 §4.2.1.9 requires in a CA certificate; ask the CA for the certificate re-issued with basicConstraints=critical,CA:TRUE".to_owned());
            }
            if is_ca_position && !bc.ca {
                out.push("it issues certificates but its basicConstraints says CA:FALSE; ask the CA for the correct CA certificate (basicConstraints=critical,CA:TRUE)".to_owned());
            }
            bc.ca
        }
        Some(_) => {
            out.push(malformed("basicConstraints"));
            false
        }
        None => {
            if is_ca_position {
                out.push("it is a CA certificate without basicConstraints, which RFC 5280 §4.2.1.9 requires (critical, CA:TRUE) in every CA certificate, the root included; ask the CA for a CA certificate that has it".to_owned());
            }
            false
        }
    };
    match ku.map(X509Extension::parsed_extension) {
        // In a CA position the missing or false CA:TRUE is already the finding.
        Some(ParsedExtension::KeyUsage(usage)) if usage.key_cert_sign() && !ca && !is_ca_position => {
            out.push("keyUsage asserts keyCertSign without basicConstraints CA:TRUE (RFC 5280 §4.2.1.3); ask the CA to re-issue it without keyCertSign".to_owned());
        }
        Some(ParsedExtension::KeyUsage(_)) | None => {}
        Some(_) => out.push(malformed("keyUsage")),
    }
    if ca && subject_empty {
        out.push("it is a CA certificate (CA:TRUE) with an empty subject, and RFC 5280 §4.1.2.6 requires a CA's subject to name it; ask the CA for a CA certificate with a subject".to_owned());
    }
}

fn subject_alt_name(
    position: Position,
    san: Option<&X509Extension<'_>>,
    subject_empty: bool,
    out: &mut Vec<String>,
) {
    let Some(san) = san else {
        if position == Position::Leaf && subject_empty {
            out.push("its subject is empty and it has no subjectAltName, so nothing names it (RFC 5280 §4.2.1.6); ask the CA to re-issue it with a critical subjectAltName holding the node's DNS name".to_owned());
        }
        return;
    };
    if position == Position::Leaf {
        match (subject_empty, san.critical) {
            (true, false) => out.push("its subject is empty, so subjectAltName must be marked critical (RFC 5280 §4.2.1.6); ask the CA to re-issue it with the extension critical, or with a subject".to_owned()),
            (false, true) => out.push("subjectAltName is marked critical although the subject isn't empty (BR §7.1.2.7.12 requires it non-critical then); ask the CA to re-issue it with the extension non-critical".to_owned()),
            _ => {}
        }
    }
    let ParsedExtension::SubjectAlternativeName(names) = san.parsed_extension() else {
        out.push(malformed("subjectAltName"));
        return;
    };
    for name in &names.general_names {
        // A name with '*' is the `wildcard` rule's to judge.
        if let GeneralName::DNSName(dns) = name
            && !dns.contains('*')
            && !is_preferred_name(dns)
        {
            out.push(format!(
                "subjectAltName DNS:{dns} is not a valid DNS name (RFC 5280 §4.2.1.6: letters, digits and hyphens in non-empty labels of at most 63, no underscores); ask the CA to re-issue it with valid names only"
            ));
        }
    }
}

fn name_constraints(is_ca_position: bool, nc: Option<&X509Extension<'_>>, out: &mut Vec<String>) {
    let Some(nc) = nc else { return };
    if !is_ca_position {
        out.push("it has nameConstraints, which RFC 5280 §4.2.1.10 allows only in CA certificates; ask the CA to re-issue the server certificate without it".to_owned());
        return;
    }
    let ParsedExtension::NameConstraints(nc) = nc.parsed_extension() else {
        out.push(malformed("nameConstraints"));
        return;
    };
    let permitted = nc.permitted_subtrees.as_deref().unwrap_or_default();
    let excluded = nc.excluded_subtrees.as_deref().unwrap_or_default();
    if permitted.is_empty() && excluded.is_empty() {
        out.push("nameConstraints has neither permitted nor excluded subtrees, which RFC 5280 §4.2.1.10 forbids; ask the CA for the CA certificate re-issued with the constraints it means, or without the extension".to_owned());
    }
    for subtree in permitted.iter().chain(excluded) {
        if let GeneralName::DNSName(dns) = &subtree.base
            && !dns.is_empty()
            && !is_preferred_name(dns)
        {
            let why = if dns.starts_with('.') {
                "a dNSName constraint has no leading period (\"example.com\" already covers its subdomains)"
            } else {
                "a dNSName constraint is a DNS name"
            };
            out.push(format!(
                "nameConstraints DNS:{dns} is malformed: {why} (RFC 5280 §4.2.1.10); ask the CA for the CA certificate re-issued with well-formed constraints"
            ));
        }
    }
}

/// RFC 1034 §3.5 preferred name syntax as RFC 1123 relaxed it: dot-separated labels of 1–63
/// letters, digits and hyphens, not starting or ending with a hyphen; at most 253 characters.
pub(super) fn is_preferred_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferred_name_syntax() {
        assert!(is_preferred_name("node1.gatehouse.test"));
        assert!(is_preferred_name("1.aws-lbr.amazonaws.com"));
        assert!(!is_preferred_name("node_1.gatehouse.test"));
        assert!(!is_preferred_name("node1..gatehouse.test"));
        assert!(!is_preferred_name(".gatehouse.test"));
        assert!(!is_preferred_name("gatehouse.test."));
        assert!(!is_preferred_name("-node.gatehouse.test"));
        assert!(!is_preferred_name(""));
        assert!(!is_preferred_name(&format!("{}.test", "a".repeat(64))));
    }
}
