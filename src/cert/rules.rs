//! The checker's rules: one function per rule, each turning what was loaded into a [`Check`]
//! with a sentence that says what is wrong and what to do. Chains and names are decided by
//! rustls-webpki, the same library the peer channel verifies with, so the checker and the
//! channel can't disagree.

use super::Options;
use super::key::{self, Curve, KeyType, PrivateKey, PublicKey};
use super::load::{Bundle, Format, LoadError};
use super::profile::{self, Member, Position};
use super::report::{Check, Report, ReportFields, Rule, Status};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use sha1::Digest as _;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer as _, X509Certificate, X509Name, X509Version};

/// The KSP names Windows ships; any provider whose name says "Key Storage Provider" is one too.
const CNG_KEY_STORAGE_PROVIDERS: [&str; 2] =
    ["Microsoft Platform Crypto Provider", "Microsoft Primitive Provider"];

/// Runs every rule on a loaded file at time `at`.
pub(super) fn run(bundle: &Bundle, options: &Options, at: OffsetDateTime) -> Result<Report, LoadError> {
    let leaf_der = bundle.certs.first().ok_or(LoadError::NotACertificate)?;
    let (_, leaf) =
        X509Certificate::from_der(leaf_der).map_err(|e| LoadError::BadCertificate(e.to_string()))?;
    let (key_type, public) = key::certificate_key(&leaf);
    let private = bundle.key.as_ref().map(key::private_key);
    let sans = san_entries(&leaf);
    let dns_names: Vec<&str> = sans.iter().filter_map(|s| s.strip_prefix("DNS:")).collect();

    let (chain_check, path) = chain(bundle, &leaf, options, at);
    let profile_check = profile(bundle, &leaf, path.as_ref(), options, at);
    let checks = vec![
        format(bundle),
        version(&leaf),
        validity(&leaf, at, options.at.is_some()),
        chain_check,
        profile_check,
        hostname(leaf_der, &dns_names, &leaf, options.host.as_deref()),
        server_auth(&leaf),
        private_key(bundle, private.as_ref()),
        key_match(&key_type, public.as_ref(), private.as_ref()),
        key_storage(bundle),
        wildcard(&dns_names),
        san(&sans),
        self_signed(&leaf),
        key_size(&key_type),
    ];
    let fields = ReportFields {
        subject: leaf.subject().to_string(),
        issuer: leaf.issuer().to_string(),
        not_before: rfc3339(asn1_time(leaf.validity().not_before.timestamp())),
        not_after: rfc3339(asn1_time(leaf.validity().not_after.timestamp())),
        thumbprint_sha1: hex_upper(&sha1::Sha1::digest(leaf_der)),
        thumbprint_sha256: hex_upper(&sha2::Sha256::digest(leaf_der)),
        key: key_type.to_string(),
        sans,
    };
    Ok(Report::new(checks, fields))
}

fn pass(rule: Rule, message: impl Into<String>) -> Check {
    Check { rule, status: Status::Pass, message: message.into() }
}
fn warn(rule: Rule, message: impl Into<String>) -> Check {
    Check { rule, status: Status::Warn, message: message.into() }
}
fn fail(rule: Rule, message: impl Into<String>) -> Check {
    Check { rule, status: Status::Fail, message: message.into() }
}
fn skip(rule: Rule, message: impl Into<String>) -> Check {
    Check { rule, status: Status::Skip, message: message.into() }
}

fn format(bundle: &Bundle) -> Check {
    let intermediates = bundle.certs.len() - 1;
    let contents = format!(
        "{} and {}",
        plural(intermediates, "intermediate certificate", "intermediate certificates"),
        if bundle.key.is_some() { "a private key" } else { "no private key" },
    );
    let unreadable = bundle.certs[1..].iter().filter(|der| X509Certificate::from_der(der).is_err()).count();
    let described = match &bundle.format {
        Format::Pem => format!("PEM file: a certificate, {contents}"),
        Format::Der => "DER certificate (a .cer/.der file holds only the certificate)".to_owned(),
        Format::Pfx { protection } => {
            format!("PKCS#12 (PFX) file ({protection}): a certificate, {contents}")
        }
    };
    if unreadable > 0 {
        return warn(
            Rule::Format,
            format!(
                "{described}; {} can't be parsed and will be ignored; export the chain again",
                plural(unreadable, "intermediate", "intermediates")
            ),
        );
    }
    if bundle.extra_keys > 0 {
        return warn(
            Rule::Format,
            format!(
                "{described}; it also holds {} that will be ignored; keep one key per file",
                plural(bundle.extra_keys, "more private key", "more private keys")
            ),
        );
    }
    if bundle.ignored.is_empty() {
        pass(Rule::Format, described)
    } else {
        pass(Rule::Format, format!("{described} (ignored: {})", bundle.ignored.join(", ")))
    }
}

fn version(leaf: &X509Certificate<'_>) -> Check {
    match leaf.version() {
        X509Version::V3 => pass(Rule::Version, "X.509 version 3"),
        X509Version(v) => fail(
            Rule::Version,
            format!(
                "X.509 version {}: only version 3 certificates carry the extensions (SAN, EKU) that peers check; re-issue it from a current CA",
                v + 1
            ),
        ),
    }
}

fn validity(leaf: &X509Certificate<'_>, at: OffsetDateTime, explicit: bool) -> Check {
    let not_before = asn1_time(leaf.validity().not_before.timestamp());
    let not_after = asn1_time(leaf.validity().not_after.timestamp());
    // "12 days ago" reads well for now; a chosen --at time is named instead.
    let (when, ago, ahead) = if explicit {
        (format!(" at {}", rfc3339(at)), "earlier", "later")
    } else {
        (String::new(), "ago", "from now")
    };
    if at < not_before {
        fail(
            Rule::Validity,
            format!(
                "not valid yet{when}: valid from {} ({} {ahead}); check the machine's clock or wait until then",
                rfc3339(not_before),
                days(not_before - at)
            ),
        )
    } else if at > not_after {
        fail(
            Rule::Validity,
            format!(
                "expired{when}: not after {} ({} {ago}); renew the certificate and import the new one",
                rfc3339(not_after),
                days(at - not_after)
            ),
        )
    } else {
        pass(
            Rule::Validity,
            format!("valid{when}, until {} ({} left)", rfc3339(not_after), days(not_after - at)),
        )
    }
}

/// Accepts any EKU, so the chain rule judges the path alone and `server_auth` the usage.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// The path webpki chose, copied out of its borrow: the intermediates in path order (DER) and
/// the trust anchor's subject and key as webpki holds them.
struct ChainPath {
    intermediates: Vec<Vec<u8>>,
    anchor_subject: Vec<u8>,
    anchor_spki: Vec<u8>,
}

fn chain(
    bundle: &Bundle,
    leaf: &X509Certificate<'_>,
    options: &Options,
    at: OffsetDateTime,
) -> (Check, Option<ChainPath>) {
    let extra_roots: Vec<CertificateDer<'_>> =
        options.extra_roots.iter().map(|der| CertificateDer::from(der.as_slice())).collect();
    let mut anchors: Vec<TrustAnchor<'_>> = Vec::new();
    if options.public_roots {
        anchors.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let mut bad_roots = 0;
    for root in &extra_roots {
        match webpki::anchor_from_trusted_cert(root) {
            Ok(anchor) => anchors.push(anchor),
            Err(_) => bad_roots += 1,
        }
    }
    if anchors.is_empty() {
        let check = fail(
            Rule::Chain,
            "no trusted roots to check against: --no-system-roots was given without a usable --roots file",
        );
        return (check, None);
    }
    let leaf_der = CertificateDer::from(bundle.certs[0].as_slice());
    let end_entity = match webpki::EndEntityCert::try_from(&leaf_der) {
        Ok(ee) => ee,
        Err(webpki::Error::UnsupportedCertVersion) => {
            let check = fail(
                Rule::Chain,
                "can't build a chain for a certificate older than X.509 version 3 (see `version`)",
            );
            return (check, None);
        }
        Err(e) => {
            let check =
                fail(Rule::Chain, format!("the certificate can't be verified ({e:?}); export it again"));
            return (check, None);
        }
    };
    let intermediates: Vec<CertificateDer<'_>> =
        bundle.certs[1..].iter().map(|der| CertificateDer::from(der.as_slice())).collect();
    let build = |at: OffsetDateTime, server_only: bool| -> Result<(String, ChainPath), webpki::Error> {
        let (algs, time) = (webpki::ALL_VERIFICATION_ALGS, unix_time(at));
        let path = if server_only {
            end_entity.verify_for_usage(
                algs,
                &anchors,
                &intermediates,
                time,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )?
        } else {
            end_entity.verify_for_usage(algs, &anchors, &intermediates, time, AnyUsage, None, None)?
        };
        let via = path.intermediate_certificates().count();
        let through = if via == 0 {
            String::new()
        } else {
            format!(" through {}", plural(via, "intermediate", "intermediates"))
        };
        let message = format!("chains to the trusted root \"{}\"{through}", anchor_name(path.anchor()));
        let chosen = ChainPath {
            intermediates: path.intermediate_certificates().map(|c| c.der().as_ref().to_vec()).collect(),
            anchor_subject: path.anchor().subject.as_ref().to_vec(),
            anchor_spki: path.anchor().subject_public_key_info.as_ref().to_vec(),
        };
        Ok((message, chosen))
    };
    let leaf_valid_at = asn1_time(leaf.validity().not_before.timestamp())
        + (asn1_time(leaf.validity().not_after.timestamp())
            - asn1_time(leaf.validity().not_before.timestamp()))
            / 2;
    let result = match build(at, true) {
        // The leaf's own dates are the `validity` rule's business: judge the path at a time
        // when the leaf is valid, so an expired leaf doesn't hide a broken chain or vice versa.
        Err(webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. })
            if !leaf_is_valid(leaf, at) =>
        {
            build(leaf_valid_at, true).map(|(ok, path)| {
                (format!("{ok} (the certificate's own dates are checked under `validity`)"), path)
            })
        }
        other => other,
    };
    let result = match result {
        // Likewise a leaf without serverAuth is `server_auth`'s finding; only an issuer's EKU
        // that forbids server use is a chain problem.
        Err(webpki::Error::RequiredEkuNotFoundContext(_)) if !leaf_allows_server_auth(leaf) => {
            let time = if leaf_is_valid(leaf, at) { at } else { leaf_valid_at };
            build(time, false)
        }
        other => other,
    };
    chain_outcome(result, bad_roots, bundle, leaf, options)
}

/// The `chain` check from webpki's answer, and the path it chose for `profile`.
fn chain_outcome(
    result: Result<(String, ChainPath), webpki::Error>,
    bad_roots: usize,
    bundle: &Bundle,
    leaf: &X509Certificate<'_>,
    options: &Options,
) -> (Check, Option<ChainPath>) {
    match result {
        Ok((message, path)) if bad_roots > 0 => {
            let check = warn(
                Rule::Chain,
                format!(
                    "{message}; {} in --roots could not be used",
                    plural(bad_roots, "certificate", "certificates")
                ),
            );
            (check, Some(path))
        }
        Ok((message, path)) => (pass(Rule::Chain, message), Some(path)),
        Err(e) => {
            let message =
                webpki_limitation(&e, bundle, options).unwrap_or_else(|| chain_error(&e, leaf, options));
            (fail(Rule::Chain, message), None)
        }
    }
}

/// A chain RFC 5280 allows but rustls-webpki (and so every peer) refuses, recognised from the
/// certificates when webpki's own error would name the wrong cause.
fn webpki_limitation(error: &webpki::Error, bundle: &Bundle, options: &Options) -> Option<String> {
    use webpki::Error as E;
    const PREFIX: &str =
        "our TLS stack (rustls-webpki, which the peer channel uses too) can't validate this chain because";
    let intermediates: Vec<(usize, X509Certificate<'_>)> = bundle.certs[1..]
        .iter()
        .enumerate()
        .filter_map(|(i, der)| X509Certificate::from_der(der).ok().map(|(_, c)| (i + 1, c)))
        .collect();
    let roots: Vec<X509Certificate<'_>> = options
        .extra_roots
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .collect();
    if matches!(error, E::NameConstraintViolation | E::InvalidSignatureForPublicKey | E::UnknownIssuer) {
        let named = intermediates
            .iter()
            .map(|(n, c)| (format!("intermediate {n}"), c))
            .chain(roots.iter().map(|c| ("the root".to_owned(), c)));
        for (which, cert) in named {
            if has_directory_name_constraint(cert) {
                return Some(format!(
                    "{PREFIX} {which} \"{}\" constrains directoryName, a kind of name constraint it doesn't support, so it refuses every certificate below that CA; ask your CA for a chain whose name constraints use only DNS names and IP addresses",
                    cert.subject()
                ));
            }
        }
    }
    if matches!(
        error,
        E::PathLenConstraintViolated
            | E::InvalidSignatureForPublicKey
            | E::UnknownIssuer
            | E::NameConstraintViolation
    ) {
        for (n, cert) in &intermediates {
            if is_self_issued_not_self_signed(cert) {
                return Some(format!(
                    "{PREFIX} intermediate {n} \"{}\" is self-issued (the CA's own name on another key, as in a key rollover), and it doesn't build paths through self-issued certificates the way RFC 5280 does (it counts them toward pathLenConstraint and name constraints); ask your CA for a chain without the self-issued certificate",
                    cert.subject()
                ));
            }
        }
    }
    None
}

fn has_directory_name_constraint(cert: &X509Certificate<'_>) -> bool {
    cert.extensions().iter().any(|ext| match ext.parsed_extension() {
        ParsedExtension::NameConstraints(nc) => nc
            .permitted_subtrees
            .iter()
            .chain(nc.excluded_subtrees.iter())
            .flatten()
            .any(|subtree| matches!(subtree.base, GeneralName::DirectoryName(_))),
        _ => false,
    })
}

/// Subject and issuer are the same name but the certificate names another key as its
/// authority: a CA certifying its new key with its old one, not a root.
fn is_self_issued_not_self_signed(cert: &X509Certificate<'_>) -> bool {
    if cert.subject().as_raw() != cert.issuer().as_raw() {
        return false;
    }
    let (mut ski, mut aki) = (None, None);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0),
            ParsedExtension::AuthorityKeyIdentifier(id) => aki = id.key_identifier.as_ref().map(|k| k.0),
            _ => {}
        }
    }
    matches!((ski, aki), (Some(ski), Some(aki)) if ski != aki)
}

/// The `profile` rule over the path webpki chose or, when it chose none, over the certificates
/// in the file (and the trusted root that names the last one's issuer).
fn profile(
    bundle: &Bundle,
    leaf: &X509Certificate<'_>,
    path: Option<&ChainPath>,
    options: &Options,
    at: OffsetDateTime,
) -> Check {
    // The anchor's own certificate: from --roots, or a self-issued one in the file (a
    // cross-signed copy in the file has the anchor's name and key but isn't the root).
    let self_issued =
        |der: &&Vec<u8>| parse_cert(der).is_some_and(|c| c.subject().as_raw() == c.issuer().as_raw());
    // A self-signed leaf trusted as its own root is checked once, as the leaf.
    let not_leaf = |der: &&Vec<u8>| der.as_slice() != bundle.certs[0].as_slice();
    let candidates =
        || options.extra_roots.iter().chain(bundle.certs.iter().filter(self_issued)).filter(not_leaf);
    let (intermediates, root, anchor_only): (Vec<X509Certificate<'_>>, Option<X509Certificate<'_>>, bool) =
        if let Some(path) = path {
            let root = candidates().find(|der| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice())).is_ok_and(|a| {
                    a.subject.as_ref() == path.anchor_subject.as_slice()
                        && a.subject_public_key_info.as_ref() == path.anchor_spki.as_slice()
                })
            });
            let intermediates = path.intermediates.iter().filter_map(|der| parse_cert(der)).collect();
            let root = root.and_then(|der| parse_cert(der));
            let leaf_is_anchor = path.intermediates.is_empty()
                && webpki::anchor_from_trusted_cert(&CertificateDer::from(bundle.certs[0].as_slice()))
                    .is_ok_and(|a| a.subject.as_ref() == path.anchor_subject.as_slice());
            let anchor_only = root.is_none() && !leaf_is_anchor;
            (intermediates, root, anchor_only)
        } else {
            let mut in_file: Vec<X509Certificate<'_>> =
                bundle.certs[1..].iter().filter_map(|der| parse_cert(der)).collect();
            let file_root = match in_file.last() {
                Some(last)
                    if last.subject().as_raw() == last.issuer().as_raw()
                        && !is_self_issued_not_self_signed(last) =>
                {
                    in_file.pop()
                }
                _ => None,
            };
            let top = in_file.last().unwrap_or(leaf);
            let trusted_root = || {
                let issuer = top.issuer().as_raw();
                options
                    .extra_roots
                    .iter()
                    .filter_map(|der| parse_cert(der))
                    .find(|root| root.subject().as_raw() == issuer && issuer != top.subject().as_raw())
            };
            let root = file_root.or_else(trusted_root);
            (in_file, root, false)
        };
    let mut members = vec![Member { position: Position::Leaf, cert: leaf }];
    members.extend(
        intermediates
            .iter()
            .enumerate()
            .map(|(i, cert)| Member { position: Position::Intermediate(i + 1), cert }),
    );
    if let Some(root) = &root {
        members.push(Member { position: Position::Root, cert: root });
    }
    let violations = profile::violations(&members, at);
    if !violations.is_empty() {
        return fail(Rule::Profile, violations.join("; "));
    }
    let mut checked = vec!["the leaf".to_owned()];
    if !intermediates.is_empty() {
        checked.push(plural(intermediates.len(), "intermediate", "intermediates"));
    }
    if let Some(root) = &root {
        checked.push(format!(
            "the root \"{}\"",
            common_names(root.subject()).next().map_or_else(|| root.subject().to_string(), str::to_owned)
        ));
    }
    let what = match checked.as_slice() {
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
        [] => String::new(),
    };
    let scope = match (path, anchor_only) {
        (None, _) => " (no chain was built, see `chain`; these are the certificates in the file)",
        (Some(_), true) => " (the root is one of the public roots, known by name and key only)",
        (Some(_), false) => "",
    };
    let verb = if checked.len() == 1 { "meets" } else { "meet" };
    pass(Rule::Profile, format!("{what} {verb} the RFC 5280 and CA/B Forum certificate profile{scope}"))
}

fn parse_cert(der: &[u8]) -> Option<X509Certificate<'_>> {
    X509Certificate::from_der(der).ok().map(|(_, cert)| cert)
}

fn chain_error(error: &webpki::Error, leaf: &X509Certificate<'_>, options: &Options) -> String {
    let trusted = match (options.public_roots, options.extra_roots.is_empty()) {
        (true, true) => "the public web roots",
        (true, false) => "the public web roots or the --roots file",
        (false, _) => "the --roots file",
    };
    match error {
        webpki::Error::UnknownIssuer => format!(
            "doesn't chain to a trusted root: no certificate from {trusted} issued it (issuer \"{}\"); put the intermediate certificates in the file, or trust your CA with --roots",
            leaf.issuer()
        ),
        webpki::Error::CaUsedAsEndEntity => "the certificate is a CA certificate (basicConstraints CA:TRUE); TLS peers refuse a CA certificate as a server certificate, so issue a leaf certificate with CA:FALSE".to_owned(),
        webpki::Error::CertExpired { .. } => "an issuing certificate in the chain has expired; get the current intermediate certificates from your CA".to_owned(),
        webpki::Error::CertNotValidYet { .. } => "an issuing certificate in the chain is not valid yet; check the machine's clock".to_owned(),
        webpki::Error::RequiredEkuNotFoundContext(_) => "an issuing CA restricts its certificates to other uses than server authentication; use a CA that may issue TLS server certificates".to_owned(),
        webpki::Error::InvalidSignatureForPublicKey => "a signature in the chain doesn't verify: an intermediate or root in the path did not sign the certificate below it; use the CA's current chain".to_owned(),
        webpki::Error::UnsupportedSignatureAlgorithmContext(_)
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => "a certificate in the chain is signed with an algorithm peers can't verify (e.g. SHA-1, or an RSA issuer key under 2048 bits); re-issue it with SHA-256 or better".to_owned(),
        webpki::Error::PathLenConstraintViolated => "the chain is longer than an issuing CA allows (pathLenConstraint); ask your CA for the correct chain".to_owned(),
        webpki::Error::NameConstraintViolation => "an issuing CA's name constraints don't allow this certificate's names; use a CA allowed to issue for them".to_owned(),
        webpki::Error::UnsupportedCriticalExtension => "the certificate has a critical extension peers don't understand, so they will refuse it; re-issue it without that extension".to_owned(),
        other => format!("the chain can't be verified ({other:?}); check that the file holds the right intermediates"),
    }
}

fn hostname(leaf_der: &[u8], dns_names: &[&str], leaf: &X509Certificate<'_>, host: Option<&str>) -> Check {
    let Some(host) = host else {
        return skip(
            Rule::Hostname,
            "no --host given; give the name peers use to reach this node to check it",
        );
    };
    let Ok(name) = ServerName::try_from(host) else {
        return fail(Rule::Hostname, format!("\"{host}\" is not a valid DNS name or IP address"));
    };
    let der = CertificateDer::from(leaf_der);
    let Ok(end_entity) = webpki::EndEntityCert::try_from(&der) else {
        return fail(Rule::Hostname, "the certificate's names can't be read (see `chain`)");
    };
    if end_entity.verify_is_valid_for_subject_name(&name).is_ok() {
        return pass(Rule::Hostname, format!("valid for {host}"));
    }
    let valid_for = if dns_names.is_empty() { "no DNS names".to_owned() } else { dns_names.join(", ") };
    let cn_hint = if common_names(leaf.subject()).any(|cn| cn.eq_ignore_ascii_case(host)) {
        format!(
            "; the subject CN is {host}, but peers match only Subject Alternative Names, so add DNS:{host} as a SAN"
        )
    } else {
        String::new()
    };
    fail(Rule::Hostname, format!("not valid for {host}; valid for {valid_for}{cn_hint}"))
}

fn server_auth(leaf: &X509Certificate<'_>) -> Check {
    match leaf.extended_key_usage() {
        Ok(None) => {
            pass(Rule::ServerAuth, "no Extended Key Usage extension, so server authentication is allowed")
        }
        Ok(Some(eku)) if eku.value.server_auth => {
            pass(Rule::ServerAuth, "Extended Key Usage allows server authentication")
        }
        Ok(Some(eku)) => {
            let mut allowed = Vec::new();
            let names = [
                (eku.value.client_auth, "client authentication"),
                (eku.value.code_signing, "code signing"),
                (eku.value.email_protection, "e-mail protection"),
                (eku.value.time_stamping, "time stamping"),
                (eku.value.ocsp_signing, "OCSP signing"),
                (eku.value.any, "anyExtendedKeyUsage, which TLS peers don't accept for servers"),
            ];
            allowed.extend(names.iter().filter(|(on, _)| *on).map(|(_, name)| (*name).to_owned()));
            allowed.extend(eku.value.other.iter().map(x509_parser::der_parser::oid::Oid::to_id_string));
            fail(
                Rule::ServerAuth,
                format!(
                    "Extended Key Usage allows only {} but not server authentication (1.3.6.1.5.5.7.3.1); request a certificate with extendedKeyUsage serverAuth (the \"Web Server\" template)",
                    allowed.join(", ")
                ),
            )
        }
        Err(_) => fail(
            Rule::ServerAuth,
            "the Extended Key Usage extension is malformed or repeated; re-issue the certificate",
        ),
    }
}

fn leaf_allows_server_auth(leaf: &X509Certificate<'_>) -> bool {
    matches!(leaf.extended_key_usage(), Ok(None))
        || matches!(leaf.extended_key_usage(), Ok(Some(eku)) if eku.value.server_auth)
}

fn leaf_is_valid(leaf: &X509Certificate<'_>, at: OffsetDateTime) -> bool {
    let validity = leaf.validity();
    asn1_time(validity.not_before.timestamp()) <= at && at <= asn1_time(validity.not_after.timestamp())
}

fn private_key(bundle: &Bundle, private: Option<&Result<PrivateKey, String>>) -> Check {
    match (private, &bundle.format) {
        (None, Format::Der) => warn(
            Rule::PrivateKey,
            "a .cer/.der file holds no private key, and a node needs the key to serve TLS; import a PFX, or a PEM that includes the key",
        ),
        (None, _) => warn(
            Rule::PrivateKey,
            "the file holds no private key, and a node needs the key to serve TLS; import a file that includes the key",
        ),
        (Some(Err(reason)), _) => {
            fail(Rule::PrivateKey, format!("the private key can't be read: {reason}; export the key again"))
        }
        (Some(Ok(key)), _) => {
            let encoding = bundle.key.as_ref().map_or("", |k| k.encoding.name());
            pass(Rule::PrivateKey, format!("{encoding} {} private key found", key.key_type))
        }
    }
}

fn key_match(
    cert_type: &KeyType,
    cert_key: Option<&PublicKey>,
    private: Option<&Result<PrivateKey, String>>,
) -> Check {
    let key = match private {
        None => return skip(Rule::KeyMatch, "no private key to compare"),
        Some(Err(_)) => return skip(Rule::KeyMatch, "the private key can't be read (see `private_key`)"),
        Some(Ok(key)) => key,
    };
    let mismatch = || {
        fail(
            Rule::KeyMatch,
            format!(
                "the private key ({}) does not belong to this certificate ({}); use the key that was created with this certificate's request",
                key.key_type, cert_type
            ),
        )
    };
    if !same_algorithm(&key.key_type, cert_type) {
        return mismatch();
    }
    match (cert_key, key.public.as_ref()) {
        (Some(cert), Some(private)) if cert == private => {
            pass(Rule::KeyMatch, "the private key belongs to the certificate")
        }
        (Some(_), Some(_)) => mismatch(),
        _ => skip(
            Rule::KeyMatch,
            format!(
                "can't compare a {} key with the certificate; the file doesn't carry its public half",
                key.key_type
            ),
        ),
    }
}

fn same_algorithm(a: &KeyType, b: &KeyType) -> bool {
    match (a, b) {
        (KeyType::Rsa { .. }, KeyType::Rsa { .. }) => true,
        (KeyType::Ec(x), KeyType::Ec(y)) => x == y,
        _ => a == b,
    }
}

fn key_storage(bundle: &Bundle) -> Check {
    if !matches!(bundle.format, Format::Pfx { .. }) {
        return skip(
            Rule::KeyStorage,
            "only PFX files record which Windows key storage provider held the key",
        );
    }
    match bundle.csp_name.as_deref() {
        None => pass(Rule::KeyStorage, "no Windows key storage provider recorded"),
        Some(name) if is_cng_provider(name) => fail(
            Rule::KeyStorage,
            format!(
                "the key was stored by the Windows CNG key storage provider \"{name}\", which the gateway can't use; on Windows, import the PFX with `certutil -csp \"Microsoft Enhanced RSA and AES Cryptographic Provider\" -importpfx FILE` and export it again"
            ),
        ),
        Some(name) => pass(Rule::KeyStorage, format!("key stored by the CryptoAPI provider \"{name}\"")),
    }
}

fn is_cng_provider(name: &str) -> bool {
    name.to_ascii_lowercase().contains("key storage provider")
        || CNG_KEY_STORAGE_PROVIDERS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

fn wildcard(dns_names: &[&str]) -> Check {
    let wildcards: Vec<&str> = dns_names.iter().copied().filter(|n| n.contains('*')).collect();
    if wildcards.is_empty() {
        return skip(Rule::Wildcard, "no wildcard names");
    }
    for name in &wildcards {
        let well_formed = name.strip_prefix("*.").is_some_and(|rest| {
            !rest.contains('*') && rest.split('.').filter(|l| !l.is_empty()).count() >= 2
        });
        if !well_formed {
            return fail(
                Rule::Wildcard,
                format!(
                    "\"{name}\" is not a valid wildcard: '*' is allowed only as the whole leftmost label (e.g. *.corp.example, with at least two labels after it) and matches exactly one label; re-issue the certificate with such a name"
                ),
            );
        }
    }
    pass(
        Rule::Wildcard,
        format!(
            "{} each match exactly one label (e.g. {} matches node1.{} but not a.node1.{})",
            wildcards.join(", "),
            wildcards[0],
            &wildcards[0][2..],
            &wildcards[0][2..]
        ),
    )
}

fn san(sans: &[String]) -> Check {
    match sans {
        // Not a fail: the rule is about which SAN the gateway uses, and `hostname` rejects a
        // certificate that doesn't match the node's name. But say plainly that none can.
        [] => warn(
            Rule::San,
            "no Subject Alternative Name: peers match names only against SANs (the subject CN is not used), so no peer can verify this node by name; re-issue with a DNS SAN for this node",
        ),
        [only] => pass(Rule::San, format!("one SAN entry: {only}")),
        [.., last] => warn(
            Rule::San,
            format!(
                "{} SAN entries; the gateway uses only the last one, {last}, so peers must reach this node by that name (or re-issue with one SAN)",
                sans.len()
            ),
        ),
    }
}

fn self_signed(leaf: &X509Certificate<'_>) -> Check {
    if leaf.subject().as_raw() != leaf.issuer().as_raw() {
        return pass(Rule::SelfSigned, format!("issued by \"{}\"", leaf.issuer()));
    }
    // Same name on both sides but different key identifiers: a CA that reuses its subject's name.
    let mut ski = None;
    let mut aki = None;
    for ext in leaf.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0),
            ParsedExtension::AuthorityKeyIdentifier(id) => aki = id.key_identifier.as_ref().map(|k| k.0),
            _ => {}
        }
    }
    if let (Some(ski), Some(aki)) = (ski, aki)
        && ski != aki
    {
        return pass(Rule::SelfSigned, format!("issued by \"{}\"", leaf.issuer()));
    }
    warn(
        Rule::SelfSigned,
        "the certificate is self-signed: every other node must be told to trust it (with --roots), and other tools will distrust it; prefer a certificate from your organisation's CA",
    )
}

fn key_size(key_type: &KeyType) -> Check {
    const ADVICE: &str = "re-issue with RSA 2048–8192 bits, EC P-256/P-384 or Ed25519";
    match key_type {
        KeyType::Rsa { bits } if (2048..=8192).contains(bits) => {
            pass(Rule::KeySize, format!("RSA {bits}-bit key"))
        }
        KeyType::Rsa { bits } => fail(
            Rule::KeySize,
            format!(
                "RSA {bits}-bit key: the peer channel (rustls) verifies RSA signatures only for 2048–8192-bit keys, so peers couldn't connect; {ADVICE}"
            ),
        ),
        KeyType::Ec(Curve::P256 | Curve::P384) | KeyType::Ed25519 => {
            pass(Rule::KeySize, format!("{key_type} key"))
        }
        other => {
            fail(Rule::KeySize, format!("{other} key: the peer channel (rustls) can't use it; {ADVICE}"))
        }
    }
}

/// Every SAN entry, in order, as `DNS:…`, `IP:…`, `email:…`, `URI:…`.
fn san_entries(leaf: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = leaf.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => format!("DNS:{dns}"),
            GeneralName::IPAddress(bytes) => format!("IP:{}", ip_address(bytes)),
            GeneralName::RFC822Name(email) => format!("email:{email}"),
            GeneralName::URI(uri) => format!("URI:{uri}"),
            GeneralName::DirectoryName(dn) => format!("DirName:{dn}"),
            GeneralName::RegisteredID(oid) => format!("RID:{oid}"),
            GeneralName::OtherName(oid, _) => format!("othername:{oid}"),
            GeneralName::X400Address(_) | GeneralName::EDIPartyName(_) | GeneralName::Invalid(..) => {
                "(unsupported name)".to_owned()
            }
        })
        .collect()
}

fn ip_address(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).map(|b| std::net::Ipv4Addr::from(b).to_string()).unwrap_or_default(),
        16 => {
            <[u8; 16]>::try_from(bytes).map(|b| std::net::Ipv6Addr::from(b).to_string()).unwrap_or_default()
        }
        _ => hex_upper(bytes),
    }
}

fn common_names<'a>(name: &'a X509Name<'_>) -> impl Iterator<Item = &'a str> {
    name.iter_common_name().filter_map(|cn| cn.as_str().ok())
}

/// webpki's anchors hold the subject's contents without the outer SEQUENCE; wrap it again to parse.
fn anchor_name(anchor: &TrustAnchor<'_>) -> String {
    let inner = anchor.subject.as_ref();
    let mut der = vec![0x30];
    let len = inner.len();
    if len < 0x80 {
        der.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        der.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
        der.extend_from_slice(&bytes[skip..]);
    }
    der.extend_from_slice(inner);
    match X509Name::from_der(&der) {
        Ok((_, name)) => common_names(&name).next().map_or_else(|| name.to_string(), str::to_owned),
        Err(_) => "(unreadable name)".to_owned(),
    }
}

fn asn1_time(timestamp: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(timestamp).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn unix_time(at: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(at.unix_timestamp()).unwrap_or(0)))
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

fn days(span: time::Duration) -> String {
    let days = span.whole_days();
    if days == 0 {
        format!("{} hours", span.whole_hours())
    } else {
        plural(usize::try_from(days).unwrap_or(0), "day", "days")
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

fn hex_upper(bytes: &[u8]) -> String {
    crate::encoding::hex(bytes).to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cng_providers_are_recognised_by_name() {
        assert!(is_cng_provider("Microsoft Software Key Storage Provider"));
        assert!(is_cng_provider("Microsoft Smart Card Key Storage Provider"));
        assert!(is_cng_provider("Microsoft Platform Crypto Provider"));
        assert!(!is_cng_provider("Microsoft Enhanced RSA and AES Cryptographic Provider"));
        assert!(!is_cng_provider("Microsoft Base Smart Card Crypto Provider"));
    }

    #[test]
    fn wildcard_must_be_the_whole_leftmost_label() {
        let status = |name: &str| wildcard(&[name]).status;
        assert_eq!(status("*.gatehouse.test"), Status::Pass);
        assert_eq!(status("node*.gatehouse.test"), Status::Fail);
        assert_eq!(status("node1.*.gatehouse.test"), Status::Fail);
        assert_eq!(status("*.*.gatehouse.test"), Status::Fail);
        assert_eq!(status("*.test"), Status::Fail);
        assert_eq!(wildcard(&["node1.gatehouse.test"]).status, Status::Skip);
    }

    #[test]
    fn san_warning_names_the_last_entry() {
        let sans = ["DNS:a.test".to_owned(), "IP:127.0.0.1".to_owned(), "DNS:last.test".to_owned()];
        let check = san(&sans);
        assert_eq!(check.status, Status::Warn);
        assert!(check.message.contains("DNS:last.test"), "{}", check.message);
        assert_eq!(san(&sans[..1]).status, Status::Pass);
        assert_eq!(san(&[]).status, Status::Warn);
    }

    #[test]
    fn key_size_bounds_follow_rustls() {
        let status = |key: KeyType| key_size(&key).status;
        assert_eq!(status(KeyType::Rsa { bits: 2047 }), Status::Fail);
        assert_eq!(status(KeyType::Rsa { bits: 2048 }), Status::Pass);
        assert_eq!(status(KeyType::Rsa { bits: 8192 }), Status::Pass);
        assert_eq!(status(KeyType::Rsa { bits: 8193 }), Status::Fail);
        assert_eq!(status(KeyType::Ec(Curve::P256)), Status::Pass);
        assert_eq!(status(KeyType::Ec(Curve::P384)), Status::Pass);
        assert_eq!(status(KeyType::Ec(Curve::P521)), Status::Fail);
        assert_eq!(status(KeyType::Ed25519), Status::Pass);
        assert_eq!(status(KeyType::Ed448), Status::Fail);
    }
}
