//! Signed releases: the ed25519 key pair a release is signed with (`gatehouse release
//! keygen`), the signature of a file (`release sign`), and its check, which the hub does
//! before it stores a release and each node does again before it installs one. Neutral:
//! hub, node and CLI all use it, and it knows none of them.
//!
//! What is signed is not the file itself but `gatehouse-release-v1:` followed by the file's
//! SHA-256 in hex, so a file of any size is checked while it streams by (hashed, then one
//! signature check), and a signature can't be taken for one over some other kind of message.
//!
//! Files are one line each: `gatehouse-release-public-key ed25519 BASE64`, the private key
//! as `gatehouse-release-private-key ed25519 BASE64` (its 32-byte seed; owner-only, never
//! printed), the signature as `gatehouse-release-signature ed25519 BASE64`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::path::Path;

const PUBLIC_TAG: &str = "gatehouse-release-public-key ed25519 ";
const PRIVATE_TAG: &str = "gatehouse-release-private-key ed25519 ";
const SIGNATURE_TAG: &str = "gatehouse-release-signature ed25519 ";
/// What a signature covers, before the file's SHA-256 (hex).
const CONTEXT: &str = "gatehouse-release-v1:";

/// The private key's file name in `keygen --out DIR`.
pub const PRIVATE_FILE: &str = "release.key";
/// The public key's file name in `keygen --out DIR`.
pub const PUBLIC_FILE: &str = "release.pub";

/// What is wrong with a key, a signature or a release, as a sentence.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(
        "{what} is not a Gatehouse release {kind} (a line starting `{tag}`, made by `gatehouse release {made_by}`)"
    )]
    Malformed { what: String, kind: &'static str, tag: &'static str, made_by: &'static str },
    #[error(
        "the signature doesn't verify against any release key the hub trusts ({keys}); sign the file with the private key of one of them: gatehouse release sign FILE --key KEY"
    )]
    Untrusted { keys: String },
    #[error(
        "the file's SHA-256 is {actual}, not the {expected} its release names; the download was damaged or the file was changed"
    )]
    Digest { expected: String, actual: String },
    #[error("{0}")]
    Io(String),
}

/// An ed25519 public key that signs releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Reads the one-line form (`gatehouse-release-public-key ed25519 BASE64`).
    pub fn parse(text: &str, what: &str) -> Result<PublicKey, ReleaseError> {
        let malformed = || ReleaseError::Malformed {
            what: what.to_owned(),
            kind: "public key",
            tag: PUBLIC_TAG.trim_end(),
            made_by: "keygen",
        };
        let bytes = tagged(text, PUBLIC_TAG).ok_or_else(malformed)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| malformed())?;
        VerifyingKey::from_bytes(&bytes).map(PublicKey).map_err(|_| malformed())
    }

    /// The key's one-line form, as written to `release.pub` and sent to nodes.
    pub fn to_line(&self) -> String {
        format!("{PUBLIC_TAG}{}", STANDARD.encode(self.0.as_bytes()))
    }

    /// A short name for the key: the first 16 hex digits of its SHA-256.
    pub fn id(&self) -> String {
        crate::encoding::hex(&Sha256::digest(self.0.as_bytes()))[..16].to_owned()
    }
}

/// A key pair made by `release keygen`; the private half only ever goes to an owner-only file.
pub struct KeyPair {
    signing: SigningKey,
}

impl KeyPair {
    /// A fresh key pair.
    pub fn generate() -> KeyPair {
        use rand::RngCore as _;
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        KeyPair { signing: SigningKey::from_bytes(&seed) }
    }

    /// Reads the private key file's one line.
    pub fn parse(text: &str, what: &str) -> Result<KeyPair, ReleaseError> {
        let malformed = || ReleaseError::Malformed {
            what: what.to_owned(),
            kind: "private key",
            tag: PRIVATE_TAG.trim_end(),
            made_by: "keygen",
        };
        let seed: [u8; 32] =
            tagged(text, PRIVATE_TAG).ok_or_else(malformed)?.try_into().map_err(|_| malformed())?;
        Ok(KeyPair { signing: SigningKey::from_bytes(&seed) })
    }

    /// The private key file's line. Write it only to an owner-only file.
    pub fn private_line(&self) -> String {
        format!("{PRIVATE_TAG}{}", STANDARD.encode(self.signing.to_bytes()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// The signature line of a file whose SHA-256 (hex) is `sha256`.
    pub fn sign(&self, sha256: &str) -> String {
        let signature = self.signing.sign(message(sha256).as_bytes());
        format!("{SIGNATURE_TAG}{}", STANDARD.encode(signature.to_bytes()))
    }
}

/// Checks the signature line `signature` of a file whose SHA-256 (hex) is `sha256` against
/// `trusted`; returns the key that made it.
pub fn verify<'k>(
    sha256: &str,
    signature: &str,
    trusted: &'k [PublicKey],
) -> Result<&'k PublicKey, ReleaseError> {
    let malformed = || ReleaseError::Malformed {
        what: "the signature".to_owned(),
        kind: "signature",
        tag: SIGNATURE_TAG.trim_end(),
        made_by: "sign",
    };
    let bytes: [u8; 64] =
        tagged(signature, SIGNATURE_TAG).ok_or_else(malformed)?.try_into().map_err(|_| malformed())?;
    let signature = Signature::from_bytes(&bytes);
    let message = message(&sha256.to_ascii_lowercase());
    trusted.iter().find(|key| key.0.verify(message.as_bytes(), &signature).is_ok()).ok_or_else(|| {
        let keys = if trusted.is_empty() {
            "none".to_owned()
        } else {
            trusted.iter().map(PublicKey::id).collect::<Vec<_>>().join(", ")
        };
        ReleaseError::Untrusted { keys }
    })
}

/// The SHA-256 (hex) of a file, read in pieces.
pub fn sha256_file(path: &Path) -> Result<String, ReleaseError> {
    use std::io::Read as _;
    let io = |e: std::io::Error| ReleaseError::Io(format!("can't read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(crate::encoding::hex(&hasher.finalize()))
}

/// The platform a binary runs on, as releases name it (`linux-x86_64`).
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

fn message(sha256: &str) -> String {
    format!("{CONTEXT}{sha256}")
}

/// The bytes after `tag` on the text's first non-empty line, base64-decoded.
fn tagged(text: &str, tag: &str) -> Option<Vec<u8>> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    STANDARD.decode(line.strip_prefix(tag.trim_end())?.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_signature_verifies_against_its_key_only_and_for_its_digest_only() {
        let (ours, theirs) = (KeyPair::generate(), KeyPair::generate());
        let signature = ours.sign(SHA);
        let trusted = [theirs.public(), ours.public()];
        assert_eq!(verify(SHA, &signature, &trusted).unwrap(), &ours.public());
        let other = SHA.replace('9', "8");
        assert!(matches!(verify(&other, &signature, &trusted), Err(ReleaseError::Untrusted { .. })));
        let error = verify(SHA, &signature, &[theirs.public()]).unwrap_err().to_string();
        assert!(error.contains(&theirs.public().id()), "{error}");
        assert!(verify(SHA, "gatehouse-release-signature ed25519 AAAA", &trusted).is_err());
    }

    #[test]
    fn keys_read_back_from_their_lines_and_refuse_the_other_kind() {
        let pair = KeyPair::generate();
        let public = PublicKey::parse(&pair.public().to_line(), "release.pub").unwrap();
        assert_eq!(public, pair.public());
        let again = KeyPair::parse(&format!("{}\n", pair.private_line()), "release.key").unwrap();
        assert_eq!(again.public(), pair.public());
        let error = PublicKey::parse(&pair.private_line(), "release.key").unwrap_err().to_string();
        assert!(error.starts_with("release.key is not a Gatehouse release public key"), "{error}");
        assert!(KeyPair::parse(&pair.public().to_line(), "release.pub").is_err());
    }
}
