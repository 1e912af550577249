//! Keys on both sides of a certificate: what kind and size the certificate's public key is,
//! and what public key a private key (PKCS#8, PKCS#1 or SEC1) belongs to, so the two can be
//! compared. Pure parsing and arithmetic on the bytes handed in; no I/O.

use super::load::{KeyEncoding, RawKey};
use der::Decode as _;
use p256::elliptic_curve;
use std::fmt;
use x509_parser::prelude::X509Certificate;
use x509_parser::public_key::PublicKey as X509PublicKey;

const RSA: &str = "1.2.840.113549.1.1.1";
const RSA_PSS: &str = "1.2.840.113549.1.1.10";
const EC: &str = "1.2.840.10045.2.1";
const ED25519: &str = "1.3.101.112";
const ED448: &str = "1.3.101.113";
const DSA: &str = "1.2.840.10040.4.1";

/// An elliptic curve, by its name where we know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
    Secp256k1,
    /// Any other curve, by OID.
    Other(String),
}

impl Curve {
    fn from_oid(oid: &str) -> Curve {
        match oid {
            "1.2.840.10045.3.1.7" => Curve::P256,
            "1.3.132.0.34" => Curve::P384,
            "1.3.132.0.35" => Curve::P521,
            "1.3.132.0.10" => Curve::Secp256k1,
            other => Curve::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Curve::P256 => f.write_str("P-256"),
            Curve::P384 => f.write_str("P-384"),
            Curve::P521 => f.write_str("P-521"),
            Curve::Secp256k1 => f.write_str("secp256k1"),
            Curve::Other(oid) => write!(f, "curve {oid}"),
        }
    }
}

/// The algorithm and size of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyType {
    Rsa {
        bits: usize,
    },
    Ec(Curve),
    Ed25519,
    Ed448,
    Dsa,
    /// Anything else, by algorithm OID.
    Other(String),
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa { bits } => write!(f, "RSA {bits}"),
            KeyType::Ec(curve) => write!(f, "EC {curve}"),
            KeyType::Ed25519 => f.write_str("Ed25519"),
            KeyType::Ed448 => f.write_str("Ed448"),
            KeyType::Dsa => f.write_str("DSA"),
            KeyType::Other(oid) => write!(f, "unknown key algorithm {oid}"),
        }
    }
}

/// A public key reduced to what identifies it: RSA (modulus, exponent) without leading
/// zeros, or an EC point in uncompressed form, or raw EdDSA bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    Point(Vec<u8>),
}

/// The certificate's subject public key: its type, and its identity when we can read it.
pub fn certificate_key(cert: &X509Certificate<'_>) -> (KeyType, Option<PublicKey>) {
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    let bits = spki.subject_public_key.data.as_ref();
    match oid.as_str() {
        RSA | RSA_PSS => match spki.parsed() {
            Ok(X509PublicKey::RSA(rsa)) => {
                let modulus = strip_zeros(rsa.modulus).to_vec();
                let key = PublicKey::Rsa { exponent: strip_zeros(rsa.exponent).to_vec(), modulus };
                (KeyType::Rsa { bits: bit_length(strip_zeros(rsa.modulus)) }, Some(key))
            }
            _ => (KeyType::Rsa { bits: 0 }, None),
        },
        EC => {
            let curve =
                spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map_or_else(
                    || Curve::Other("(missing)".to_owned()),
                    |o| Curve::from_oid(&o.to_id_string()),
                );
            let point = normalize_point(&curve, bits);
            (KeyType::Ec(curve), Some(PublicKey::Point(point)))
        }
        ED25519 => (KeyType::Ed25519, Some(PublicKey::Point(bits.to_vec()))),
        ED448 => (KeyType::Ed448, Some(PublicKey::Point(bits.to_vec()))),
        DSA => (KeyType::Dsa, None),
        other => (KeyType::Other(other.to_owned()), None),
    }
}

/// A private key, read far enough to know its type and, where possible, its public key.
pub struct PrivateKey {
    pub key_type: KeyType,
    /// `None` when the file doesn't carry the public half and we can't compute it (e.g. Ed448).
    pub public: Option<PublicKey>,
}

/// Reads a private key. The error is a short phrase for the `private_key` message.
pub fn private_key(raw: &RawKey) -> Result<PrivateKey, String> {
    match raw.encoding {
        KeyEncoding::Pkcs1 => rsa_private_key(&raw.der),
        KeyEncoding::Sec1 => ec_private_key(&raw.der, None),
        KeyEncoding::Pkcs8 => {
            let info = pkcs8::PrivateKeyInfo::try_from(raw.der.as_slice())
                .map_err(|e| format!("not a valid PKCS#8 key ({e})"))?;
            let oid = info.algorithm.oid.to_string();
            match oid.as_str() {
                RSA | RSA_PSS => rsa_private_key(info.private_key),
                EC => {
                    let curve = info.algorithm.parameters_oid().ok().map(|o| Curve::from_oid(&o.to_string()));
                    ec_private_key(info.private_key, curve)
                }
                ED25519 => {
                    let seed = der::asn1::OctetStringRef::from_der(info.private_key)
                        .map_err(|e| format!("not a valid Ed25519 key ({e})"))?;
                    let seed: [u8; 32] = seed
                        .as_bytes()
                        .try_into()
                        .map_err(|_| "an Ed25519 key must be 32 bytes".to_owned())?;
                    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
                    Ok(PrivateKey {
                        key_type: KeyType::Ed25519,
                        public: Some(PublicKey::Point(public.to_vec())),
                    })
                }
                ED448 => Ok(PrivateKey {
                    key_type: KeyType::Ed448,
                    public: info.public_key.map(|p| PublicKey::Point(p.to_vec())),
                }),
                DSA => Ok(PrivateKey { key_type: KeyType::Dsa, public: None }),
                other => Ok(PrivateKey { key_type: KeyType::Other(other.to_owned()), public: None }),
            }
        }
    }
}

fn rsa_private_key(der: &[u8]) -> Result<PrivateKey, String> {
    let key = pkcs1::RsaPrivateKey::try_from(der).map_err(|e| format!("not a valid RSA key ({e})"))?;
    let modulus = strip_zeros(key.modulus.as_bytes());
    Ok(PrivateKey {
        key_type: KeyType::Rsa { bits: bit_length(modulus) },
        public: Some(PublicKey::Rsa {
            modulus: modulus.to_vec(),
            exponent: strip_zeros(key.public_exponent.as_bytes()).to_vec(),
        }),
    })
}

/// `outer_curve` comes from the PKCS#8 wrapper; a bare SEC1 key names its own curve.
fn ec_private_key(der: &[u8], outer_curve: Option<Curve>) -> Result<PrivateKey, String> {
    let key = sec1::EcPrivateKey::try_from(der).map_err(|e| format!("not a valid EC key ({e})"))?;
    let inner_curve =
        key.parameters.and_then(sec1::EcParameters::named_curve).map(|o| Curve::from_oid(&o.to_string()));
    let curve = outer_curve.or(inner_curve).ok_or_else(|| "the EC key doesn't name its curve".to_owned())?;
    let computed = match curve {
        Curve::P256 => p256::SecretKey::from_slice(key.private_key)
            .map(|k| uncompressed(&k.public_key()))
            .map_err(|_| "the P-256 private key is out of range".to_owned())
            .map(Some)?,
        Curve::P384 => p384::SecretKey::from_slice(key.private_key)
            .map(|k| uncompressed(&k.public_key()))
            .map_err(|_| "the P-384 private key is out of range".to_owned())
            .map(Some)?,
        // Other curves: trust the public key stored beside the private one, if any.
        _ => key.public_key.map(<[u8]>::to_vec),
    };
    Ok(PrivateKey { key_type: KeyType::Ec(curve), public: computed.map(PublicKey::Point) })
}

fn uncompressed<C>(key: &elliptic_curve::PublicKey<C>) -> Vec<u8>
where
    C: elliptic_curve::CurveArithmetic,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromEncodedPoint<C> + elliptic_curve::sec1::ToEncodedPoint<C>,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
{
    use elliptic_curve::sec1::ToEncodedPoint as _;
    key.to_encoded_point(false).as_bytes().to_vec()
}

/// Certificates may carry compressed points; compare in uncompressed form where we can.
fn normalize_point(curve: &Curve, bytes: &[u8]) -> Vec<u8> {
    let normalized = match curve {
        Curve::P256 => p256::PublicKey::from_sec1_bytes(bytes).ok().map(|k| uncompressed(&k)),
        Curve::P384 => p384::PublicKey::from_sec1_bytes(bytes).ok().map(|k| uncompressed(&k)),
        _ => None,
    };
    normalized.unwrap_or_else(|| bytes.to_vec())
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn bit_length(big_endian: &[u8]) -> usize {
    match big_endian.first() {
        None => 0,
        Some(&top) => (big_endian.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_counts_from_the_top_bit() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0x7f, 0x00]), 15);
    }

    #[test]
    fn strip_zeros_keeps_the_value() {
        assert_eq!(strip_zeros(&[0, 0, 1, 0]), &[1, 0]);
        assert_eq!(strip_zeros(&[0, 0]), &[] as &[u8]);
    }

    #[test]
    fn garbage_private_keys_are_errors_not_panics() {
        for encoding in [KeyEncoding::Pkcs8, KeyEncoding::Pkcs1, KeyEncoding::Sec1] {
            let raw = RawKey { encoding, der: vec![0x30, 0x03, 0x02, 0x01, 0x00] };
            assert!(private_key(&raw).is_err());
        }
    }
}
