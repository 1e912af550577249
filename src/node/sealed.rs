//! Credentials the credential manager (`gatehouse credential set --gateway G`, on any
//! machine) seals for one node, and the proof that a node's key is the gateway's.
//!
//! **Sealing.** The value is encrypted on the admin machine, once per node, to that node's
//! X25519 public key with the one-way Noise pattern `Noise_N_25519_ChaChaPoly_BLAKE2s`: an
//! ephemeral X25519 key, BLAKE2s HKDF, ChaCha20-Poly1305 (the peer channel's own primitives,
//! from `snow`). The prologue binds the gateway id, the node id, the credential name, its
//! version and whether it is a deletion ([`Binding`]), so the hub, which carries the sealed
//! bytes, can't move one to another node, name or version, nor turn a value into a deletion:
//! it fails to open. Only the node's private key (in its sealed secrets) opens it. A sealed
//! box proves nothing about its sender: who may send one is the hub's check (the admin token
//! or a credential-manager token of that gateway).
//!
//! **Key proofs.** When the gateway encrypts its peer channel, each node signs its X25519
//! public key (bound to its gateway and node ids) with its certificate's private key
//! ([`prove`]); the admin checks the chain with the rules of `gatehouse cert check` and the
//! signature ([`verify_proof`]) before sealing, so the keys don't rest on the hub's word.

use super::peer::StaticKey;
use crate::protocol::KeyProof;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The Noise pattern a sealed credential is made with.
const NOISE_SEAL: &str = "Noise_N_25519_ChaChaPoly_BLAKE2s";
/// Starts every prologue: this format and its version.
const SEAL_CONTEXT: &[u8] = b"gatehouse sealed credential v1";
/// Starts every signed key: this format and its version.
const PROOF_CONTEXT: &[u8] = b"gatehouse credential key v1";
pub use crate::protocol::{MAX_CREDENTIAL_VALUE_BYTES as MAX_VALUE_BYTES, MAX_SEALED_CHARS};

/// What a sealed credential is bound to: it opens only for this node, name and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    pub gateway_id: &'a str,
    pub node_id: &'a str,
    pub name: &'a str,
    pub version: u64,
    pub deleted: bool,
}

impl Binding<'_> {
    fn prologue(&self) -> Vec<u8> {
        let mut out = SEAL_CONTEXT.to_vec();
        for field in [self.gateway_id, self.node_id, self.name] {
            push_field(&mut out, field.as_bytes());
        }
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(u8::from(self.deleted));
        out
    }
}

/// Length-prefixed, so no two field lists give the same bytes.
fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

/// Why a credential can't be sealed or opened, or a key proof made or accepted.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "node {0} has no usable peer-channel key at the hub (a node of an older version?); upgrade it, or remove it from the gateway"
    )]
    BadPublicKey(String),
    #[error("the credential value is longer than {MAX_VALUE_BYTES} bytes")]
    TooLong,
    #[error("the credential value is empty; give it on standard input")]
    Empty,
    #[error(
        "the sealed credential doesn't open with this node's key: it was sealed for another node, key, name or version, or changed on the way"
    )]
    DoesNotOpen,
    #[error("the encryption failed: {0}")]
    Noise(#[from] snow::Error),
    #[error("this node's certificate key can't sign its peer-channel key: {0}")]
    CantSign(String),
}

/// Why a node's key proof is refused, in words for the admin.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error(
        "node {node} presented no certificate for its key, though the gateway encrypts its peer channel (a node of an older version, or one that hasn't sent its first heartbeat since it started); wait a few seconds, or upgrade it"
    )]
    Missing { node: String },
    #[error(
        "node {node}'s certificate is not trusted here: {reason}. Give the gateway's CA with --roots FILE (the same file as for `gatehouse cert check --roots`), or check that the node holds the gateway's certificate"
    )]
    Untrusted { node: String, reason: String },
    #[error(
        "node {node}'s certificate did not sign the peer-channel key the hub hands out for it ({reason}); the hub or the node is not what it should be, so nothing was sent"
    )]
    BadSignature { node: String, reason: String },
}

fn seal_params() -> snow::params::NoiseParams {
    // A constant that parses (a unit test seals and opens with it).
    NOISE_SEAL.parse().unwrap_or_else(|_| unreachable!())
}

/// Seals `value` (`None`: a deletion) for the node whose X25519 public key (base64) is
/// `public_key`; returns the sealed bytes in base64.
pub fn seal(public_key: &str, binding: &Binding<'_>, value: Option<&str>) -> Result<String, SealError> {
    let key = STANDARD
        .decode(public_key.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| SealError::BadPublicKey(binding.node_id.to_owned()))?;
    let payload = match value {
        Some("") => return Err(SealError::Empty),
        Some(v) if v.len() > MAX_VALUE_BYTES => return Err(SealError::TooLong),
        Some(v) => [&[1u8][..], v.as_bytes()].concat(),
        None => vec![0u8],
    };
    let prologue = binding.prologue();
    let mut noise =
        snow::Builder::new(seal_params()).remote_public_key(&key)?.prologue(&prologue)?.build_initiator()?;
    let mut out = vec![0u8; payload.len() + 64];
    let len = noise.write_message(&payload, &mut out)?;
    Ok(STANDARD.encode(&out[..len]))
}

/// Opens a sealed credential with this node's key: the value, or `None` for a deletion.
/// Anything sealed for another key or binding, or changed, is refused.
pub fn open(key: &StaticKey, binding: &Binding<'_>, sealed: &str) -> Result<Option<String>, SealError> {
    if sealed.len() > MAX_SEALED_CHARS {
        return Err(SealError::DoesNotOpen);
    }
    let bytes = STANDARD.decode(sealed.trim()).map_err(|_| SealError::DoesNotOpen)?;
    let private = key.private_bytes().map_err(|_| SealError::DoesNotOpen)?;
    let prologue = binding.prologue();
    let mut noise = snow::Builder::new(seal_params())
        .local_private_key(&private)?
        .prologue(&prologue)?
        .build_responder()?;
    let mut plain = vec![0u8; bytes.len()];
    let len = noise.read_message(&bytes, &mut plain).map_err(|_| SealError::DoesNotOpen)?;
    match plain[..len].split_first() {
        Some((0, [])) if binding.deleted => Ok(None),
        Some((1, value)) if !binding.deleted && !value.is_empty() => {
            String::from_utf8(value.to_vec()).map(Some).map_err(|_| SealError::DoesNotOpen)
        }
        _ => Err(SealError::DoesNotOpen),
    }
}

/// What a node's certificate signs: its X25519 public key, bound to its gateway and node.
fn proof_message(gateway_id: &str, node_id: &str, public_key: &str) -> Vec<u8> {
    let mut out = PROOF_CONTEXT.to_vec();
    for field in [gateway_id, node_id, public_key.trim()] {
        push_field(&mut out, field.as_bytes());
    }
    out
}

/// The signature schemes a proof may use, by the name it carries.
const SCHEMES: [(&str, rustls::SignatureScheme); 4] = [
    ("ed25519", rustls::SignatureScheme::ED25519),
    ("ecdsa-p256-sha256", rustls::SignatureScheme::ECDSA_NISTP256_SHA256),
    ("ecdsa-p384-sha384", rustls::SignatureScheme::ECDSA_NISTP384_SHA384),
    ("rsa-pss-sha256", rustls::SignatureScheme::RSA_PSS_SHA256),
];

/// This node's proof that `public_key` is its own: signed with the private key of the
/// certificate it encrypts the peer channel with, the chain beside it.
pub fn prove(
    identity: &crate::cert::Identity,
    gateway_id: &str,
    node_id: &str,
    public_key: &str,
) -> Result<KeyProof, SealError> {
    let key = rustls::crypto::ring::sign::any_supported_type(&super::tls::private_key(identity))
        .map_err(|e| SealError::CantSign(e.to_string()))?;
    let offered: Vec<rustls::SignatureScheme> = SCHEMES.iter().map(|(_, s)| *s).collect();
    let signer = key
        .choose_scheme(&offered)
        .ok_or_else(|| SealError::CantSign("its key type has none of the schemes used here".to_owned()))?;
    let scheme = SCHEMES
        .iter()
        .find(|(_, s)| *s == signer.scheme())
        .map(|(name, _)| (*name).to_owned())
        .ok_or_else(|| SealError::CantSign("an unexpected signature scheme".to_owned()))?;
    let signature = signer
        .sign(&proof_message(gateway_id, node_id, public_key))
        .map_err(|e| SealError::CantSign(e.to_string()))?;
    Ok(KeyProof {
        chain: identity.chain.iter().map(|der| STANDARD.encode(der)).collect(),
        scheme,
        signature: STANDARD.encode(signature),
    })
}

/// Checks a node's key proof: its chain by the rules of `gatehouse cert check` (validity and
/// chain to a trusted root, with `options`' roots), then that its leaf signed `public_key`
/// for this gateway and node. `node` names the node in the sentences.
pub fn verify_proof(
    proof: Option<&KeyProof>,
    node: &str,
    gateway_id: &str,
    node_id: &str,
    public_key: &str,
    options: &crate::cert::Options,
) -> Result<(), ProofError> {
    use crate::cert::{Rule, Status};
    let proof = proof.ok_or_else(|| ProofError::Missing { node: node.to_owned() })?;
    let untrusted = |reason: String| ProofError::Untrusted { node: node.to_owned(), reason };
    let bad = |reason: &str| ProofError::BadSignature { node: node.to_owned(), reason: reason.to_owned() };
    let chain: Vec<Vec<u8>> = proof
        .chain
        .iter()
        .map(|c| STANDARD.decode(c))
        .collect::<Result<_, _>>()
        .map_err(|_| untrusted("its certificate chain is not base64".to_owned()))?;
    let leaf = chain.first().ok_or_else(|| untrusted("its certificate chain is empty".to_owned()))?;
    let pem: String = chain.iter().map(|der| pem_block(der)).collect();
    let report = crate::cert::check_bytes(pem.as_bytes(), options).map_err(|e| untrusted(e.to_string()))?;
    for rule in [Rule::Validity, Rule::Chain] {
        if let Some(check) = report.checks.iter().find(|c| c.rule == rule && c.status == Status::Fail) {
            return Err(untrusted(check.message.clone()));
        }
    }
    let algorithm: &dyn rustls::pki_types::SignatureVerificationAlgorithm = match proof.scheme.as_str() {
        "ed25519" => webpki::ring::ED25519,
        "ecdsa-p256-sha256" => webpki::ring::ECDSA_P256_SHA256,
        "ecdsa-p384-sha384" => webpki::ring::ECDSA_P384_SHA384,
        "rsa-pss-sha256" => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        _ => return Err(bad("an unknown signature scheme")),
    };
    let signature = STANDARD.decode(&proof.signature).map_err(|_| bad("the signature is not base64"))?;
    let der = rustls::pki_types::CertificateDer::from(leaf.as_slice());
    let end_entity =
        webpki::EndEntityCert::try_from(&der).map_err(|_| bad("the certificate can't be read"))?;
    end_entity
        .verify_signature(algorithm, &proof_message(gateway_id, node_id, public_key), &signature)
        .map_err(|_| bad("the signature doesn't verify"))
}

fn pem_block(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");

    fn binding(deleted: bool) -> Binding<'static> {
        Binding { gateway_id: "g1", node_id: "n1", name: "warehouse", version: 1_800_000_000_000, deleted }
    }

    #[test]
    fn a_sealed_value_opens_with_the_nodes_key_only() {
        let key = StaticKey::generate().unwrap();
        let sealed = seal(key.public(), &binding(false), Some("hunter2")).unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(open(&key, &binding(false), &sealed).unwrap().as_deref(), Some("hunter2"));
        let other = StaticKey::generate().unwrap();
        assert!(matches!(open(&other, &binding(false), &sealed), Err(SealError::DoesNotOpen)));
        // Two seals of one value differ (a fresh ephemeral key each time).
        assert_ne!(sealed, seal(key.public(), &binding(false), Some("hunter2")).unwrap());
    }

    #[test]
    fn a_tampered_ciphertext_is_refused() {
        let key = StaticKey::generate().unwrap();
        let sealed = STANDARD.decode(seal(key.public(), &binding(false), Some("hunter2")).unwrap()).unwrap();
        for at in [0, 31, 32, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[at] ^= 1;
            let changed = STANDARD.encode(&changed);
            assert!(
                matches!(open(&key, &binding(false), &changed), Err(SealError::DoesNotOpen)),
                "byte {at}"
            );
        }
        let cut = STANDARD.encode(&sealed[..sealed.len() - 1]);
        assert!(open(&key, &binding(false), &cut).is_err());
        assert!(open(&key, &binding(false), "not base64!").is_err());
        assert!(open(&key, &binding(false), "").is_err());
    }

    #[test]
    fn wrong_associated_data_is_refused() {
        let key = StaticKey::generate().unwrap();
        let right = binding(false);
        let sealed = seal(key.public(), &right, Some("hunter2")).unwrap();
        let wrong = [
            Binding { gateway_id: "g2", ..right },
            Binding { node_id: "n2", ..right },
            Binding { name: "lake", ..right },
            Binding { version: right.version + 1, ..right },
            Binding { deleted: true, ..right },
        ];
        for binding in wrong {
            assert!(matches!(open(&key, &binding, &sealed), Err(SealError::DoesNotOpen)), "{binding:?}");
        }
        // A field boundary can't be moved: ("g1", "n1x") is not ("g1n", "1x").
        let shifted = Binding { gateway_id: "g1n", node_id: "1", ..right };
        assert!(open(&key, &shifted, &sealed).is_err());
    }

    #[test]
    fn a_deletion_is_sealed_too_and_bad_values_are_refused() {
        let key = StaticKey::generate().unwrap();
        let sealed = seal(key.public(), &binding(true), None).unwrap();
        assert_eq!(open(&key, &binding(true), &sealed).unwrap(), None);
        assert!(open(&key, &binding(false), &sealed).is_err());
        assert!(matches!(seal(key.public(), &binding(false), Some("")), Err(SealError::Empty)));
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(matches!(seal(key.public(), &binding(false), Some(&long)), Err(SealError::TooLong)));
        let longest = "x".repeat(MAX_VALUE_BYTES);
        let sealed = seal(key.public(), &binding(false), Some(&longest)).unwrap();
        assert!(sealed.len() <= MAX_SEALED_CHARS);
        assert_eq!(open(&key, &binding(false), &sealed).unwrap().as_deref(), Some(longest.as_str()));
        assert!(matches!(seal("short", &binding(false), Some("v")), Err(SealError::BadPublicKey(_))));
    }

    fn identity(file: &str) -> crate::cert::Identity {
        let options = crate::cert::Options {
            extra_roots: crate::cert::read_roots(std::path::Path::new(&format!("{CERTS}ca.pem"))).unwrap(),
            ..crate::cert::Options::default()
        };
        crate::cert::identity(std::path::Path::new(&format!("{CERTS}{file}")), &options).unwrap().1.unwrap()
    }

    fn roots(file: &str) -> crate::cert::Options {
        crate::cert::Options {
            extra_roots: crate::cert::read_roots(std::path::Path::new(&format!("{CERTS}{file}"))).unwrap(),
            ..crate::cert::Options::default()
        }
    }

    #[test]
    fn a_key_proof_verifies_against_the_gateways_ca_only() {
        let key = StaticKey::generate().unwrap();
        for file in ["good.pem", "ec-p256.pem", "ed25519.pem"] {
            let proof = prove(&identity(file), "g1", "n1", key.public()).unwrap();
            verify_proof(Some(&proof), "n1", "g1", "n1", key.public(), &roots("ca.pem")).unwrap();
            let other = StaticKey::generate().unwrap();
            let wrong_key = verify_proof(Some(&proof), "n1", "g1", "n1", other.public(), &roots("ca.pem"));
            assert!(matches!(wrong_key, Err(ProofError::BadSignature { .. })), "{file}");
            let wrong_node = verify_proof(Some(&proof), "n1", "g1", "n2", key.public(), &roots("ca.pem"));
            assert!(matches!(wrong_node, Err(ProofError::BadSignature { .. })), "{file}");
        }
        let proof = prove(&identity("good.pem"), "g1", "n1", key.public()).unwrap();
        let foreign = verify_proof(Some(&proof), "n1", "g1", "n1", key.public(), &roots("other-ca.pem"));
        let Err(ProofError::Untrusted { reason, .. }) = foreign else { panic!("{foreign:?}") };
        assert!(!reason.is_empty());
        let public_only = crate::cert::Options::default();
        assert!(verify_proof(Some(&proof), "n1", "g1", "n1", key.public(), &public_only).is_err());
        assert!(matches!(
            verify_proof(None, "n1", "g1", "n1", key.public(), &roots("ca.pem")),
            Err(ProofError::Missing { .. })
        ));
        let mut forged = proof.clone();
        forged.signature = STANDARD.encode([0u8; 64]);
        assert!(verify_proof(Some(&forged), "n1", "g1", "n1", key.public(), &roots("ca.pem")).is_err());
    }
}
