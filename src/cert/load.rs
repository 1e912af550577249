//! Reading a certificate file: sniff PEM, DER or PKCS#12 from the bytes (not the file name),
//! and return the leaf, its intermediates and the private key if there is one. Anything that
//! can't be read at all is a [`LoadError`]; what can be read but is wrong is left to the rules.

use super::pkcs12::{self, PfxError};
use base64::Engine as _;
use std::path::PathBuf;

/// Why a file can't be checked at all. The CLI exits 2 with this one line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("can't read {}: {reason}", path.display())]
    Io { path: PathBuf, reason: std::io::Error },
    #[error("the file is empty; choose a certificate file (.pem, .crt, .cer, .der, .pfx or .p12)")]
    Empty,
    #[error(
        "the PEM block \"{label}\" has no END line, so the file looks truncated; copy or export it again"
    )]
    TruncatedPem { label: String },
    #[error("the PEM block \"{label}\" is not valid base64; copy or export the file again")]
    BadPemBase64 { label: String },
    #[error("the file holds no certificate (it has {found}); choose the file that contains the certificate")]
    NoCertificate { found: String },
    #[error("this is not a certificate file: it is neither PEM, a DER certificate nor a PKCS#12 (PFX) file")]
    NotACertificate,
    #[error("the certificate can't be parsed ({0}); export it again as PEM, DER or PFX")]
    BadCertificate(String),
    #[error("the private key is encrypted; give its password with --password")]
    EncryptedKeyNeedsPassword,
    #[error("the private key can't be decrypted with that password; check the password")]
    WrongKeyPassword,
    #[error(
        "the private key is encrypted with {0}, which can't be read; convert it with `openssl pkcs8 -topk8 -in KEY -out key.pem`"
    )]
    UnsupportedKeyEncryption(String),
    #[error(
        "the private key's encryption asks for {cost}, more than the {limit} this checker allows (OpenSSL writes 2,048 PBKDF2 iterations, or scrypt N=16384 r=8 p=1), so a crafted file can't keep it busy; export the key again with your tool's default settings"
    )]
    KeyDerivationTooCostly { cost: String, limit: String },
    #[error(
        "{} is larger than {} MiB, so it isn't a certificate file (they are a few kilobytes); choose the .pem, .crt, .cer, .der, .pfx or .p12 file",
        path.display(), limit >> 20
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(transparent)]
    Pfx(#[from] PfxError),
}

/// The most PBKDF2 iterations an encrypted key may ask for. Real tools write 2,048 (OpenSSL),
/// 2,000 (Windows), 10,000 (Java) or, following OWASP, 600,000; a million is a cap well above
/// those that still ends in about a second.
pub(super) const MAX_PBKDF2_ITERATIONS: u32 = 1_000_000;
/// The most memory an scrypt-encrypted key may ask for (128·r·N bytes): OpenSSL's own default
/// limit, twice what `openssl pkcs8 -scrypt` writes (N=16384, r=8: 16 MiB).
pub(super) const MAX_SCRYPT_MEMORY: u64 = 32 << 20;
/// scrypt's parallelization p multiplies the work; tools write 1.
pub(super) const MAX_SCRYPT_PARALLELIZATION: u16 = 16;

/// How the file was encoded, for the `format` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Pem,
    Der,
    /// PKCS#12 with a description of its protection (e.g. AES-256 or legacy RC2/3DES).
    Pfx {
        protection: String,
    },
}

/// The encoding a private key came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyEncoding {
    Pkcs8,
    /// `-----BEGIN RSA PRIVATE KEY-----`
    Pkcs1,
    /// `-----BEGIN EC PRIVATE KEY-----`
    Sec1,
}

impl KeyEncoding {
    pub fn name(self) -> &'static str {
        match self {
            KeyEncoding::Pkcs8 => "PKCS#8",
            KeyEncoding::Pkcs1 => "PKCS#1",
            KeyEncoding::Sec1 => "SEC1",
        }
    }
}

/// A private key as found in the file, still encoded.
pub struct RawKey {
    pub encoding: KeyEncoding,
    pub der: Vec<u8>,
}

/// Everything read from one file.
pub struct Bundle {
    pub format: Format,
    /// DER certificates, leaf first.
    pub certs: Vec<Vec<u8>>,
    pub key: Option<RawKey>,
    /// More private keys than the one used; the file is ambiguous.
    pub extra_keys: usize,
    /// PEM blocks that were neither certificates nor keys (labels), reported but ignored.
    pub ignored: Vec<String>,
    /// The Microsoft CSP/KSP name stored with a PFX key (bag attribute 1.3.6.1.4.1.311.17.1).
    pub csp_name: Option<String>,
}

/// Reads `bytes` as PEM, DER or PKCS#12; `password` opens a PFX or an encrypted PKCS#8 key.
pub fn load(bytes: &[u8], password: Option<&str>) -> Result<Bundle, LoadError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(LoadError::Empty);
    }
    if contains(bytes, b"-----BEGIN ") {
        return load_pem(bytes, password);
    }
    if looks_like_certificate(bytes) {
        return Ok(Bundle {
            format: Format::Der,
            certs: vec![bytes.to_vec()],
            key: None,
            extra_keys: 0,
            ignored: Vec::new(),
            csp_name: None,
        });
    }
    if pkcs12::looks_like_pfx(bytes) {
        return load_pfx(bytes, password);
    }
    Err(LoadError::NotACertificate)
}

/// Reads every certificate in a PEM or DER file of trust anchors (`--roots`).
pub fn load_roots(bytes: &[u8]) -> Result<Vec<Vec<u8>>, LoadError> {
    let bundle = load(bytes, None)?;
    if matches!(bundle.format, Format::Pfx { .. }) {
        return Err(LoadError::NotACertificate);
    }
    Ok(bundle.certs)
}

fn load_pem(bytes: &[u8], password: Option<&str>) -> Result<Bundle, LoadError> {
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    let mut ignored = Vec::new();
    for block in pem_blocks(bytes)? {
        match block.label.as_str() {
            "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE" => certs.push(block.der),
            "PRIVATE KEY" => keys.push(RawKey { encoding: KeyEncoding::Pkcs8, der: block.der }),
            "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
                let encoding =
                    if block.label == "RSA PRIVATE KEY" { KeyEncoding::Pkcs1 } else { KeyEncoding::Sec1 };
                let der = match &block.dek_info {
                    Some(dek_info) => legacy::decrypt(&block.der, dek_info, password)?,
                    None => block.der,
                };
                keys.push(RawKey { encoding, der });
            }
            "ENCRYPTED PRIVATE KEY" => keys.push(decrypt_pkcs8(&block.der, password)?),
            // OpenSSL writes curve parameters before SEC1 keys; they carry nothing we need.
            "EC PARAMETERS" => {}
            other => ignored.push(other.to_owned()),
        }
    }
    if certs.is_empty() {
        let found = match (keys.len(), ignored.first()) {
            (0, None) => "no PEM blocks".to_owned(),
            (0, Some(label)) => format!("a \"{label}\" block"),
            _ => "only a private key".to_owned(),
        };
        return Err(LoadError::NoCertificate { found });
    }
    let extra_keys = keys.len().saturating_sub(1);
    Ok(Bundle {
        format: Format::Pem,
        certs,
        key: keys.into_iter().next(),
        extra_keys,
        ignored,
        csp_name: None,
    })
}

fn decrypt_pkcs8(der: &[u8], password: Option<&str>) -> Result<RawKey, LoadError> {
    let password = password.ok_or(LoadError::EncryptedKeyNeedsPassword)?;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der)
        .map_err(|e| LoadError::BadCertificate(format!("encrypted private key: {e}")))?;
    check_key_derivation(&info.encryption_algorithm)?;
    let doc = info.decrypt(password).map_err(|_| LoadError::WrongKeyPassword)?;
    Ok(RawKey { encoding: KeyEncoding::Pkcs8, der: doc.as_bytes().to_vec() })
}

/// Refuses an encrypted key whose key derivation costs more than real tools ever ask for,
/// before deriving anything, and names schemes that can't be decrypted at all.
fn check_key_derivation(scheme: &pkcs5::EncryptionScheme<'_>) -> Result<(), LoadError> {
    use pkcs5::pbes2::Kdf;
    let params = match scheme {
        pkcs5::EncryptionScheme::Pbes2(params) => params,
        pkcs5::EncryptionScheme::Pbes1(_) => {
            return Err(LoadError::UnsupportedKeyEncryption("PBES1 (DES or RC2 with MD5 or SHA-1)".into()));
        }
        _ => return Err(LoadError::UnsupportedKeyEncryption("an unknown password-based scheme".into())),
    };
    match &params.kdf {
        Kdf::Pbkdf2(p) if p.iteration_count > MAX_PBKDF2_ITERATIONS => {
            Err(LoadError::KeyDerivationTooCostly {
                cost: format!("{} PBKDF2 iterations", p.iteration_count),
                limit: format!("{MAX_PBKDF2_ITERATIONS}"),
            })
        }
        Kdf::Scrypt(p) => {
            let memory = 128u64.saturating_mul(u64::from(p.block_size)).saturating_mul(p.cost_parameter);
            if memory > MAX_SCRYPT_MEMORY || p.parallelization > MAX_SCRYPT_PARALLELIZATION {
                Err(LoadError::KeyDerivationTooCostly {
                    cost: format!(
                        "scrypt N={} r={} p={} ({} MiB)",
                        p.cost_parameter,
                        p.block_size,
                        p.parallelization,
                        memory >> 20
                    ),
                    limit: format!(
                        "{} MiB with p up to {MAX_SCRYPT_PARALLELIZATION}",
                        MAX_SCRYPT_MEMORY >> 20
                    ),
                })
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

fn load_pfx(bytes: &[u8], password: Option<&str>) -> Result<Bundle, LoadError> {
    let pfx = pkcs12::decode(bytes, password)?;
    let mut keys = pfx.keys.into_iter();
    let key = keys.next();
    let extra_keys = keys.count();
    // The leaf is the certificate paired with the key by localKeyId; failing that, the one
    // whose public key the private key belongs to; failing that, the first.
    let mut certs: Vec<_> = pfx.certs.into_iter().collect();
    let by_key_id = key
        .as_ref()
        .and_then(|k| k.local_key_id.as_ref())
        .and_then(|key_id| certs.iter().position(|c| c.local_key_id.as_ref() == Some(key_id)));
    let by_public_key = || {
        let raw = RawKey { encoding: KeyEncoding::Pkcs8, der: key.as_ref()?.pkcs8_der.clone() };
        let public = super::key::private_key(&raw).ok()?.public?;
        certs.iter().position(|c| {
            x509_parser::parse_x509_certificate(&c.der)
                .is_ok_and(|(_, cert)| super::key::certificate_key(&cert).1.as_ref() == Some(&public))
        })
    };
    if let Some(pos) = by_key_id.or_else(by_public_key) {
        let leaf = certs.remove(pos);
        certs.insert(0, leaf);
    }
    if certs.is_empty() {
        let found = if key.is_some() { "only a private key" } else { "nothing" };
        return Err(LoadError::NoCertificate { found: found.to_owned() });
    }
    Ok(Bundle {
        format: Format::Pfx { protection: pfx.protection },
        certs: certs.into_iter().map(|c| c.der).collect(),
        csp_name: key.as_ref().and_then(|k| k.csp_name.clone()),
        key: key.map(|k| RawKey { encoding: KeyEncoding::Pkcs8, der: k.pkcs8_der }),
        extra_keys,
        ignored: Vec::new(),
    })
}

struct PemBlock {
    label: String,
    der: Vec<u8>,
    /// `DEK-Info` of a legacy OpenSSL-encrypted key (`Proc-Type: 4,ENCRYPTED`).
    dek_info: Option<String>,
}

/// Splits PEM text into blocks. Lenient about line length and stray text between blocks
/// (as OpenSSL is), strict about a BEGIN without its END, which means a truncated file.
fn pem_blocks(bytes: &[u8]) -> Result<Vec<PemBlock>, LoadError> {
    let text = String::from_utf8_lossy(bytes);
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line.trim().strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut base64 = String::new();
        let mut closed = false;
        let mut dek_info = None;
        for body in lines.by_ref() {
            let body = body.trim();
            if body == end {
                closed = true;
                break;
            }
            // RFC 1421 headers: DEK-Info says how a legacy encrypted key was encrypted.
            match body.split_once(':') {
                Some((header, value)) if header.trim().eq_ignore_ascii_case("DEK-Info") => {
                    dek_info = Some(value.trim().to_owned());
                }
                Some(_) => {}
                None => base64.push_str(body),
            }
        }
        if !closed {
            return Err(LoadError::TruncatedPem { label: label.to_owned() });
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(base64.as_bytes())
            .map_err(|_| LoadError::BadPemBase64 { label: label.to_owned() })?;
        blocks.push(PemBlock { label: label.to_owned(), der, dek_info });
    }
    Ok(blocks)
}

/// Keys encrypted the old OpenSSL way (`openssl genrsa -aes256`, `-traditional`): the key is
/// MD5-based `EVP_BytesToKey(password, iv[..8])`, the cipher CBC with PKCS#7 padding.
mod legacy {
    use super::LoadError;
    use cbc::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
    use md5::Digest as _;

    pub fn decrypt(der: &[u8], dek_info: &str, password: Option<&str>) -> Result<Vec<u8>, LoadError> {
        let password = password.ok_or(LoadError::EncryptedKeyNeedsPassword)?;
        let (cipher, iv_hex) = dek_info.split_once(',').ok_or_else(|| unsupported(dek_info))?;
        let iv = hex(iv_hex.trim()).ok_or_else(|| unsupported(dek_info))?;
        let salt = iv.get(..8).ok_or_else(|| unsupported(dek_info))?;
        let cipher = cipher.trim().to_ascii_uppercase();
        let key_len = match cipher.as_str() {
            "AES-128-CBC" => 16,
            "AES-192-CBC" | "DES-EDE3-CBC" => 24,
            "AES-256-CBC" => 32,
            "DES-CBC" => 8,
            _ => return Err(unsupported(&cipher)),
        };
        let key = bytes_to_key(password.as_bytes(), salt, key_len);
        let plain = match cipher.as_str() {
            "AES-128-CBC" => run::<cbc::Decryptor<aes::Aes128>>(&key, &iv, der),
            "AES-192-CBC" => run::<cbc::Decryptor<aes::Aes192>>(&key, &iv, der),
            "AES-256-CBC" => run::<cbc::Decryptor<aes::Aes256>>(&key, &iv, der),
            "DES-EDE3-CBC" => run::<cbc::Decryptor<des::TdesEde3>>(&key, &iv, der),
            _ => run::<cbc::Decryptor<des::Des>>(&key, &iv, der),
        };
        // A wrong password fails the padding, or (1 time in 256) yields bytes that aren't DER.
        match plain {
            Some(plain) if plain.first() == Some(&0x30) => Ok(plain),
            _ => Err(LoadError::WrongKeyPassword),
        }
    }

    fn run<C: KeyIvInit + BlockDecryptMut>(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        C::new_from_slices(key, iv).ok()?.decrypt_padded_vec_mut::<Pkcs7>(data).ok()
    }

    fn bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> Vec<u8> {
        let mut key = Vec::with_capacity(len + 16);
        let mut previous: Vec<u8> = Vec::new();
        while key.len() < len {
            let mut md5 = md5::Md5::new();
            md5.update(&previous);
            md5.update(password);
            md5.update(salt);
            previous = md5.finalize().to_vec();
            key.extend_from_slice(&previous);
        }
        key.truncate(len);
        key
    }

    fn hex(text: &str) -> Option<Vec<u8>> {
        if !text.len().is_multiple_of(2) {
            return None;
        }
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
    }

    fn unsupported(what: &str) -> LoadError {
        LoadError::UnsupportedKeyEncryption(what.to_owned())
    }
}

/// A DER certificate is a SEQUENCE whose first element is the TBSCertificate SEQUENCE; a PFX
/// starts with INTEGER 3 instead. Parse to be sure rather than trust the tag bytes.
fn looks_like_certificate(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x30)
        && x509_parser::parse_x509_certificate(bytes).is_ok_and(|(rest, _)| rest.is_empty())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_whitespace_files_are_empty() {
        assert!(matches!(load(b"", None), Err(LoadError::Empty)));
        assert!(matches!(load(b" \n\t", None), Err(LoadError::Empty)));
    }

    #[test]
    fn begin_without_end_is_truncated() {
        let err = load(b"-----BEGIN CERTIFICATE-----\nMIIB\n", None).err();
        assert!(matches!(err, Some(LoadError::TruncatedPem { label }) if label == "CERTIFICATE"));
    }

    #[test]
    fn pem_with_only_a_key_names_what_it_found() {
        let err = load(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", None).err();
        assert!(matches!(err, Some(LoadError::NoCertificate { found }) if found == "only a private key"));
    }

    #[test]
    fn text_is_not_a_certificate() {
        assert!(matches!(load(b"hello world", None), Err(LoadError::NotACertificate)));
    }
}
