//! PKCS#12 (.pfx/.p12) decoding: verify the MAC, decrypt the safe contents and key bags
//! (PBES2/AES and legacy RC2/3DES), and return certificates, keys and their bag attributes.
//! It does no I/O and knows nothing of the checker's rules.

use cbc::cipher::{BlockCipher, BlockDecryptMut, InnerIvInit, KeyInit, block_padding::Pkcs7};
use const_oid::ObjectIdentifier as Oid;
use der::asn1::OctetString;
use der::{Any, Decode, Encode, Reader, SliceReader, Tag, Tagged};
use hmac::digest::{Digest, FixedOutputReset, core_api::BlockSizeUser};
use hmac::{Mac, SimpleHmac};
use pkcs5::pbes2::{self, Pbkdf2Prf};
use pkcs8::spki::AlgorithmIdentifierOwned;
use pkcs12::kdf::{Pkcs12KeyType, derive_key};
use pkcs12::safe_bag::{SafeBag, SafeContents};

#[derive(Debug)]
pub struct Pfx {
    /// Certificates in file order (DER of each X.509 certificate from `CertBag`s).
    pub certs: Vec<PfxCert>,
    /// Private keys (decrypted), in file order.
    pub keys: Vec<PfxKey>,
    /// How the file was protected, for the report, e.g. "PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC),
    /// MAC HMAC-SHA256" or "legacy (RC2-40 for certificates, 3DES for the key), MAC HMAC-SHA1".
    pub protection: String,
}

#[derive(Debug)]
pub struct PfxCert {
    pub der: Vec<u8>,
    #[allow(dead_code, reason = "decoded for completeness; the checker may not show it")]
    pub friendly_name: Option<String>,
    pub local_key_id: Option<Vec<u8>>,
}

pub struct PfxKey {
    /// The decrypted key as PKCS#8 `PrivateKeyInfo` DER.
    pub pkcs8_der: Vec<u8>,
    pub friendly_name: Option<String>,
    pub local_key_id: Option<Vec<u8>>,
    /// Microsoft CSP/KSP name from bag attribute 1.3.6.1.4.1.311.17.1 (a `BMPString`), if present.
    pub csp_name: Option<String>,
}

// Hand-written so a stray `{:?}` can't print key material.
impl std::fmt::Debug for PfxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PfxKey")
            .field("pkcs8_der", &format_args!("<{} bytes>", self.pkcs8_der.len()))
            .field("friendly_name", &self.friendly_name)
            .field("local_key_id", &self.local_key_id)
            .field("csp_name", &self.csp_name)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PfxError {
    /// The MAC did not verify (or decryption produced garbage) under the given password, or
    /// under either form of the empty password when none was given.
    #[error("wrong password for this PFX file; give the password it was exported with")]
    WrongPassword,
    /// Not a PKCS#12 structure, truncated, or inconsistent.
    #[error("not a valid PKCS#12 (PFX) file: {0}")]
    Malformed(String),
    /// Well-formed but uses an algorithm we don't support; say which.
    #[error("unsupported PKCS#12 protection: {0}")]
    Unsupported(String),
}

const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENCRYPTED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.6");
const ID_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
const PBMAC1: Oid = Oid::new_unwrap("1.2.840.113549.1.5.14");
const FRIENDLY_NAME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.20");
const LOCAL_KEY_ID: Oid = Oid::new_unwrap("1.2.840.113549.1.9.21");
const MS_CSP_NAME: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.17.1");
const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
const SHA224: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.4");
const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");

/// Per-KDF cap (MAC, certificate and key encryption alike): real tools write 2,048 (OpenSSL),
/// 2,000 (Windows) or 10,000 (Java keytool) iterations; a million is far above them and still
/// ends in about a second, so a crafted file can't hang the checker or the window.
const MAX_ITERATIONS: u64 = 1_000_000;
/// Total KDF work per decode (a few KDFs at the cap), so many encrypted bags, or every form of
/// the password, can't multiply the cap.
const ITERATION_BUDGET: u64 = 4_000_000;
/// PFX files are kilobytes; a cap keeps a mistaken multi-gigabyte pick from being copied around.
const MAX_INPUT: usize = 16 << 20;
/// ASN.1 nesting limit for `normalize` (PKCS#12 needs about ten levels), so recursion stays shallow.
const MAX_DEPTH: u32 = 32;
/// `der` sorts SET OF with insertion sort on decode; bound the sets so that stays cheap.
const MAX_SET_LEN: usize = 256;

/// Decode `der` with `password`. `None` means no password was given: then try the empty password
/// both ways OpenSSL does (the `BMPString` of "" i.e. two zero bytes, and a zero-length password).
///
/// # Errors
///
/// [`PfxError::WrongPassword`] if the MAC (or, without a MAC, the decryption) fails under every
/// form of the password; [`PfxError::Malformed`] or [`PfxError::Unsupported`] otherwise.
pub fn decode(der: &[u8], password: Option<&str>) -> Result<Pfx, PfxError> {
    if der.len() > MAX_INPUT {
        return unsupported("files larger than 16 MiB");
    }
    let pfx = pkcs12::pfx::Pfx::from_der(&normalize(der)?).map_err(mal("PFX"))?;
    let auth_safe = match pfx.auth_safe.content_type {
        ID_DATA => pfx.auth_safe.content.decode_as::<OctetString>().map_err(mal("authSafe"))?,
        ID_SIGNED_DATA => return unsupported("public-key integrity mode (signedData)"),
        other => return Err(PfxError::Malformed(format!("authSafe content type {other}"))),
    };
    let auth_safe = auth_safe.as_bytes();
    let candidates = passwords(password.unwrap_or(""));
    let mut budget = ITERATION_BUDGET;
    let Some(mac_data) = pfx.mac_data else {
        // Without a MAC only failed decryption can tell a wrong password; try each candidate.
        for pw in &candidates {
            match Ctx::new(pw, false, &mut budget).run(auth_safe, "no MAC") {
                Err(PfxError::WrongPassword) => {}
                result => return result,
            }
        }
        return Err(PfxError::WrongPassword);
    };
    let (oid, salt) = (mac_data.mac.algorithm.oid, mac_data.mac_salt.as_bytes());
    let (tag, iterations) = (mac_data.mac.digest.as_bytes(), mac_data.iterations);
    let (verify, name): (Verify, _) = match oid {
        SHA1 => (verify_mac::<sha1::Sha1>, "SHA1"),
        SHA224 => (verify_mac::<sha2::Sha224>, "SHA224"),
        SHA256 => (verify_mac::<sha2::Sha256>, "SHA256"),
        SHA384 => (verify_mac::<sha2::Sha384>, "SHA384"),
        SHA512 => (verify_mac::<sha2::Sha512>, "SHA512"),
        PBMAC1 => return unsupported("PBMAC1 integrity (RFC 9579); export again with an HMAC-SHA256 MAC"),
        other => return Err(PfxError::Unsupported(format!("MAC algorithm {other}"))),
    };
    let mac_name = format!("MAC HMAC-{name}");
    for pw in &candidates {
        charge(&mut budget, iterations)?;
        if verify(&pw.bmp, salt, iterations, auth_safe, tag) {
            return Ctx::new(pw, true, &mut budget).run(auth_safe, &mac_name);
        }
    }
    Err(PfxError::WrongPassword)
}

/// Cheap sniff: does this DER look like a PFX (outer SEQUENCE with version 3 and authSafe)?
/// Used to pick the loader. Accepts BER lengths and doesn't check that the file is complete, so a
/// truncated PFX still reaches [`decode`] and gets a precise error.
#[must_use]
pub fn looks_like_pfx(der: &[u8]) -> bool {
    let Some(rest) = der.strip_prefix(&[0x30]) else { return false };
    read_len(rest).is_ok_and(|(_, rest)| rest.starts_with(&[0x02, 0x01, 0x03, 0x30]))
}

type Verify = fn(&[u8], &[u8], i32, &[u8], &[u8]) -> bool;

fn verify_mac<D>(bmp: &[u8], salt: &[u8], iterations: i32, data: &[u8], tag: &[u8]) -> bool
where
    D: Digest + FixedOutputReset + BlockSizeUser,
{
    let key = derive_key::<D>(bmp, salt, Pkcs12KeyType::Mac, iterations, <D as Digest>::output_size());
    let Ok(mut mac) = <SimpleHmac<D> as KeyInit>::new_from_slice(&key) else { return false };
    mac.update(data);
    mac.verify_slice(tag).is_ok() // constant-time comparison
}

/// One way of turning the password into bytes: the PKCS#12 KDF wants a NUL-terminated
/// `BMPString`, PBES2 wants the plain UTF-8.
struct Password {
    bmp: Vec<u8>,
    utf8: Vec<u8>,
}

fn passwords(pw: &str) -> Vec<Password> {
    let utf8 = pw.as_bytes().to_vec();
    if pw.is_empty() {
        // OpenSSL writes the empty password as two zero bytes but also accepts zero length.
        return vec![Password { bmp: vec![0, 0], utf8: Vec::new() }, Password { bmp: Vec::new(), utf8 }];
    }
    let mut candidates = vec![Password { bmp: bmp_string(pw), utf8: utf8.clone() }];
    if !pw.is_ascii() {
        // OpenSSL before 1.1.0 widened each UTF-8 byte on its own; its apps still try that.
        let mut bmp: Vec<u8> = pw.bytes().flat_map(|b| [0, b]).collect();
        bmp.extend([0, 0]);
        candidates.push(Password { bmp, utf8 });
    }
    candidates
}

/// UTF-16BE plus a two-byte terminator, as OpenSSL's `OPENSSL_utf82uni` (surrogates included).
fn bmp_string(pw: &str) -> Vec<u8> {
    pw.encode_utf16().chain([0]).flat_map(u16::to_be_bytes).collect()
}

fn charge(
    budget: &mut u64,
    iterations: impl TryInto<u64> + std::fmt::Display + Copy,
) -> Result<(), PfxError> {
    let n = iterations.try_into().ok().filter(|n| (1..=MAX_ITERATIONS).contains(n)).ok_or_else(|| {
        PfxError::Unsupported(format!(
            "{iterations} key-derivation iterations, where real tools write 2,000 to 10,000 and this checker allows 1 to {MAX_ITERATIONS} so a crafted file can't keep it busy; export the file again with your tool's default settings"
        ))
    })?;
    *budget = budget.checked_sub(n).ok_or_else(|| {
        PfxError::Unsupported(format!(
            "more key-derivation work in one file than this checker allows ({ITERATION_BUDGET} iterations in all); export the file again with your tool's default settings"
        ))
    })?;
    Ok(())
}

fn mal<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> PfxError {
    move |e| PfxError::Malformed(format!("{what}: {e}"))
}

fn unsupported<T>(what: &str) -> Result<T, PfxError> {
    Err(PfxError::Unsupported(what.to_owned()))
}

/// How an unencrypted safe or key bag is described in `Pfx::protection`.
const PLAIN: &str = "unencrypted";

/// State of one decoding attempt under one password candidate.
struct Ctx<'a> {
    pw: &'a Password,
    mac_verified: bool,
    budget: &'a mut u64,
    certs: Vec<PfxCert>,
    keys: Vec<PfxKey>,
    cert_schemes: Vec<String>,
    key_schemes: Vec<String>,
}

impl<'a> Ctx<'a> {
    fn new(pw: &'a Password, mac_verified: bool, budget: &'a mut u64) -> Self {
        let (certs, keys, cert_schemes, key_schemes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        Ctx { pw, mac_verified, budget, certs, keys, cert_schemes, key_schemes }
    }

    fn run(mut self, auth_safe: &[u8], mac_name: &str) -> Result<Pfx, PfxError> {
        let safes = Vec::<cms::content_info::ContentInfo>::from_der(&normalize(auth_safe)?)
            .map_err(mal("AuthenticatedSafe"))?;
        for safe in safes {
            match safe.content_type {
                ID_DATA => {
                    let data = safe.content.decode_as::<OctetString>().map_err(mal("data"))?;
                    self.safe_contents(&normalize(data.as_bytes())?, PLAIN, 0)?;
                }
                ID_ENCRYPTED_DATA => {
                    let content = safe.content.to_der().map_err(mal("encryptedData"))?;
                    let (alg, ciphertext) = encrypted_data(&content)?;
                    let (plain, scheme) = self.decrypt(&alg, &ciphertext)?;
                    let plain = normalize(&plain).map_err(|_| self.bad_decrypt())?;
                    self.safe_contents(&plain, &scheme, 0)?;
                }
                ID_ENVELOPED_DATA => return unsupported("public-key privacy mode (envelopedData)"),
                other => return Err(PfxError::Unsupported(format!("safe content type {other}"))),
            }
        }
        let part = |schemes: &[String]| (!schemes.is_empty()).then(|| schemes.join(" and "));
        let body = match (part(&self.cert_schemes), part(&self.key_schemes)) {
            (None, None) => "no certificates or keys".to_owned(),
            (Some(a), None) | (None, Some(a)) => a,
            (Some(a), Some(b)) if a == b => a,
            (Some(a), Some(b)) => match (a.strip_prefix("legacy "), b.strip_prefix("legacy ")) {
                (Some(a), Some(b)) => format!("legacy ({a} for certificates, {b} for the key)"),
                _ => format!("{a} for certificates, {b} for the key"),
            },
        };
        let protection = format!("{body}, {mac_name}");
        Ok(Pfx { certs: self.certs, keys: self.keys, protection })
    }

    /// A decryption that fails its padding or yields garbage: with no MAC that is how a wrong
    /// password shows; after the MAC verified it means the file itself is inconsistent.
    fn bad_decrypt(&self) -> PfxError {
        if self.mac_verified {
            PfxError::Malformed("the contents don't decrypt with the password that verified the MAC".into())
        } else {
            PfxError::WrongPassword
        }
    }

    fn safe_contents(&mut self, der: &[u8], outer: &str, depth: u32) -> Result<(), PfxError> {
        let bags = SafeContents::from_der(der)
            .map_err(|e| if outer == PLAIN { mal("SafeContents")(e) } else { self.bad_decrypt() })?;
        for bag in bags {
            let value = explicit0(&bag.bag_value).map_err(mal("SafeBag"))?;
            let (friendly_name, local_key_id, csp_name) = attributes(&bag);
            match bag.bag_id {
                pkcs12::PKCS_12_CERT_BAG_OID => {
                    let cert = pkcs12::cert_type::CertBag::from_der(value).map_err(mal("CertBag"))?;
                    if cert.cert_id == pkcs12::PKCS_12_X509_CERT_OID {
                        let der = cert.cert_value.into_bytes();
                        self.certs.push(PfxCert { der, friendly_name, local_key_id });
                        push_new(&mut self.cert_schemes, outer);
                    }
                }
                pkcs12::PKCS_12_KEY_BAG_OID | pkcs12::PKCS_12_PKCS8_KEY_BAG_OID => {
                    let (pkcs8_der, scheme) = if bag.bag_id == pkcs12::PKCS_12_KEY_BAG_OID {
                        (value.to_vec(), outer.to_owned())
                    } else {
                        let info = pkcs12::pbe_params::EncryptedPrivateKeyInfo::from_der(value)
                            .map_err(mal("ShroudedKeyBag"))?;
                        let (plain, scheme) =
                            self.decrypt(&info.encryption_algorithm, info.encrypted_data.as_bytes())?;
                        (normalize(&plain).map_err(|_| self.bad_decrypt())?, scheme)
                    };
                    if pkcs8::PrivateKeyInfo::from_der(&pkcs8_der).is_err() {
                        return Err(if scheme == PLAIN {
                            PfxError::Malformed("KeyBag is not PKCS#8".into())
                        } else {
                            self.bad_decrypt()
                        });
                    }
                    self.keys.push(PfxKey { pkcs8_der, friendly_name, local_key_id, csp_name });
                    push_new(&mut self.key_schemes, &scheme);
                }
                pkcs12::PKCS_12_SAFE_CONTENTS_BAG_OID if depth < 4 => {
                    self.safe_contents(value, outer, depth + 1)?;
                }
                // CRLs, secrets, SDSI certificates and unknown bags carry nothing the checker uses.
                _ => {}
            }
        }
        Ok(())
    }

    fn decrypt(
        &mut self,
        alg: &AlgorithmIdentifierOwned,
        data: &[u8],
    ) -> Result<(Vec<u8>, String), PfxError> {
        let params = alg
            .parameters
            .as_ref()
            .ok_or_else(|| PfxError::Malformed(format!("no parameters for {}", alg.oid)))?;
        let params = params.to_der().map_err(mal("encryption parameters"))?;
        if alg.oid == pbes2::PBES2_OID {
            return self.pbes2(&params, data);
        }
        let (name, key_len) = match alg.oid {
            pkcs12::PKCS_12_PBE_WITH_SHAAND3_KEY_TRIPLE_DES_CBC => ("3DES", 24),
            pkcs12::PKCS_12_PBE_WITH_SHAAND2_KEY_TRIPLE_DES_CBC => ("2-key 3DES", 16),
            pkcs12::PKCS_12_PBE_WITH_SHAAND128_BIT_RC2_CBC => ("RC2-128", 16),
            pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC => ("RC2-40", 5),
            pkcs12::PKCS_12_PBE_WITH_SHAAND128_BIT_RC4 | pkcs12::PKCS_12_PBE_WITH_SHAAND40_BIT_RC4 => {
                return unsupported("legacy RC4 encryption; export again with AES");
            }
            other => return Err(PfxError::Unsupported(format!("encryption algorithm {other}"))),
        };
        let p = pkcs12::pbe_params::Pkcs12PbeParams::from_der(&params).map_err(mal("PBE parameters"))?;
        charge(self.budget, p.iterations)?;
        charge(self.budget, p.iterations)?; // key and IV are derived separately
        let (salt, bmp) = (p.salt.as_bytes(), self.pw.bmp.as_slice());
        let key = derive_key::<sha1::Sha1>(bmp, salt, Pkcs12KeyType::EncryptionKey, p.iterations, key_len);
        let iv = derive_key::<sha1::Sha1>(bmp, salt, Pkcs12KeyType::Iv, p.iterations, 8);
        let plain = match name {
            "3DES" => des::TdesEde3::new_from_slice(&key).ok().and_then(|c| cbc_decrypt(c, &iv, data)),
            "2-key 3DES" => des::TdesEde2::new_from_slice(&key).ok().and_then(|c| cbc_decrypt(c, &iv, data)),
            // The effective key bits are the whole key: 40 or 128.
            _ => cbc_decrypt(rc2::Rc2::new_with_eff_key_len(&key, key_len * 8), &iv, data),
        };
        Ok((plain.ok_or_else(|| self.bad_decrypt())?, format!("legacy {name}")))
    }

    fn pbes2(&mut self, params: &[u8], data: &[u8]) -> Result<(Vec<u8>, String), PfxError> {
        // Look at the OIDs first so an unknown cipher is reported as such, not as a parse error.
        let generic = pkcs12::pbe_params::Pbes2Params::from_der(params).map_err(mal("PBES2 parameters"))?;
        if generic.kdf.oid != pbes2::PBKDF2_OID {
            return Err(PfxError::Unsupported(format!("PBES2 key derivation {}", generic.kdf.oid)));
        }
        let cipher = match generic.encryption.oid {
            pbes2::AES_128_CBC_OID => "AES-128-CBC",
            pbes2::AES_192_CBC_OID => "AES-192-CBC",
            pbes2::AES_256_CBC_OID => "AES-256-CBC",
            pbes2::DES_EDE3_CBC_OID => "3DES-CBC",
            other => return Err(PfxError::Unsupported(format!("PBES2 cipher {other}"))),
        };
        let p = pbes2::Parameters::from_der(params).map_err(mal("PBES2 parameters"))?;
        let kdf =
            p.kdf.pbkdf2().ok_or_else(|| PfxError::Malformed("PBES2 without PBKDF2 parameters".into()))?;
        let prf = match kdf.prf {
            Pbkdf2Prf::HmacWithSha224 => "SHA224",
            Pbkdf2Prf::HmacWithSha256 => "SHA256",
            Pbkdf2Prf::HmacWithSha384 => "SHA384",
            Pbkdf2Prf::HmacWithSha512 => "SHA512",
            // pkcs5 gates SHA-1 behind its `sha1-insecure` feature, which this build doesn't enable.
            _ => return unsupported("PBES2 with PBKDF2-HMAC-SHA1; export again with PBKDF2-HMAC-SHA256"),
        };
        charge(self.budget, kdf.iteration_count)?;
        let mut buf = data.to_vec();
        let len = match p.decrypt_in_place(&self.pw.utf8, &mut buf) {
            Ok(plain) => plain.len(),
            Err(pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed) => return Err(self.bad_decrypt()),
            Err(e) => return Err(PfxError::Malformed(format!("PBES2: {e}"))),
        };
        buf.truncate(len);
        Ok((buf, format!("PBES2 (PBKDF2-HMAC-{prf}, {cipher})")))
    }
}

fn cbc_decrypt<C: BlockCipher + BlockDecryptMut>(cipher: C, iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let mut buf = data.to_vec();
    let dec = cbc::Decryptor::<C>::inner_iv_slice_init(cipher, iv).ok()?;
    let len = dec.decrypt_padded_mut::<Pkcs7>(&mut buf).ok()?.len();
    buf.truncate(len);
    Some(buf)
}

fn push_new(list: &mut Vec<String>, scheme: &str) {
    if !list.iter().any(|s| s == scheme) {
        list.push(scheme.to_owned());
    }
}

/// `EncryptedData` read by hand: BER writers (NSS, macOS) split `encryptedContent [0] IMPLICIT
/// OCTET STRING` into segments, which survive `normalize` as a constructed [0] that the `cms`
/// type rejects. Unprotected attributes are skipped.
fn encrypted_data(der: &[u8]) -> Result<(AlgorithmIdentifierOwned, Vec<u8>), PfxError> {
    let mut reader = SliceReader::new(der).map_err(mal("encryptedData"))?;
    let (alg, content) = reader
        .sequence(|r| {
            let _version: u8 = r.decode()?;
            let inner = r.sequence(|r| {
                let _content_type: Oid = r.decode()?;
                Ok((r.decode::<AlgorithmIdentifierOwned>()?, r.decode::<Any>()?))
            })?;
            while !r.is_finished() {
                r.decode::<Any>()?;
            }
            Ok(inner)
        })
        .and_then(|result| reader.finish(result))
        .map_err(mal("encryptedData"))?;
    match content.tag() {
        Tag::ContextSpecific { constructed: false, number } if number.value() == 0 => {
            Ok((alg, content.value().to_vec()))
        }
        Tag::ContextSpecific { constructed: true, number } if number.value() == 0 => {
            Ok((alg, join_segments(content.value())?))
        }
        tag => Err(PfxError::Malformed(format!("encryptedData: unexpected {tag}"))),
    }
}

/// The content of a `[0] EXPLICIT` wrapper (how `pkcs12` hands out `bagValue`).
fn explicit0(tlv: &[u8]) -> der::Result<&[u8]> {
    let any = der::AnyRef::from_der(tlv)?;
    match any.tag() {
        Tag::ContextSpecific { constructed: true, number } if number.value() == 0 => Ok(any.value()),
        tag => Err(tag.value_error()),
    }
}

/// friendlyName, localKeyId and the Microsoft CSP name; values that don't parse are ignored.
fn attributes(bag: &SafeBag) -> (Option<String>, Option<Vec<u8>>, Option<String>) {
    let (mut friendly, mut key_id, mut csp) = (None, None, None);
    for attr in bag.bag_attributes.iter().flat_map(|set| set.iter()) {
        let Some(value) = attr.values.iter().next() else { continue };
        match attr.oid {
            FRIENDLY_NAME => friendly = text(value),
            LOCAL_KEY_ID => key_id = value.decode_as::<OctetString>().ok().map(OctetString::into_bytes),
            MS_CSP_NAME => csp = text(value),
            _ => {}
        }
    }
    (friendly, key_id, csp)
}

fn text(value: &Any) -> Option<String> {
    let s = match value.tag() {
        Tag::BmpString => {
            let units =
                value.value().chunks_exact(2).map(|c| u16::from_be_bytes(c.try_into().unwrap_or_default()));
            char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
        }
        Tag::Utf8String => String::from_utf8(value.value().to_vec()).ok()?,
        _ => return None,
    };
    Some(s.trim_end_matches('\0').to_owned())
}

/// Re-encodes BER as DER where the two differ in PFX files from NSS, macOS and Java (indefinite
/// lengths, constructed OCTET STRINGs, long-form lengths) so `der` can read them. Primitive
/// contents are copied untouched, so the bytes under the MAC stay exactly as written.
fn normalize(input: &[u8]) -> Result<Vec<u8>, PfxError> {
    let mut rest = input;
    let mut out = Vec::with_capacity(input.len());
    tlv(&mut rest, 0, &mut out)?;
    if !rest.is_empty() {
        return Err(PfxError::Malformed("trailing data after the structure".into()));
    }
    Ok(out)
}

fn truncated() -> PfxError {
    PfxError::Malformed("the file is truncated or its lengths are inconsistent".into())
}

/// Returns (length, rest); `None` for the indefinite form.
fn read_len(input: &[u8]) -> Result<(Option<usize>, &[u8]), PfxError> {
    let (&first, mut rest) = input.split_first().ok_or_else(truncated)?;
    if first < 0x80 {
        return Ok((Some(usize::from(first)), rest));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 {
        return Ok((None, rest));
    }
    if count > 4 {
        return Err(truncated());
    }
    let mut len = 0usize;
    for _ in 0..count {
        let (&b, tail) = rest.split_first().ok_or_else(truncated)?;
        (len, rest) = ((len << 8) | usize::from(b), tail);
    }
    Ok((Some(len), rest))
}

fn push_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    let bytes = len.to_be_bytes();
    let significant = bytes.iter().skip_while(|&&b| b == 0).count();
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            out.push(0x80 | u8::try_from(significant).unwrap_or(8));
            out.extend(bytes.iter().skip(bytes.len() - significant));
        }
    }
}

/// Moves one element from `input` to `out` as DER.
fn tlv(input: &mut &[u8], depth: u32, out: &mut Vec<u8>) -> Result<(), PfxError> {
    if depth > MAX_DEPTH {
        return Err(PfxError::Malformed("nested too deeply".into()));
    }
    let (&tag, rest) = input.split_first().ok_or_else(truncated)?;
    if tag & 0x1f == 0x1f {
        return Err(PfxError::Malformed("unexpected high-number tag".into()));
    }
    let (len, rest) = read_len(rest)?;
    if tag & 0x20 == 0 {
        let len = len.ok_or_else(truncated)?;
        let (body, rest) = rest.split_at_checked(len).ok_or_else(truncated)?;
        push_header(out, tag, len);
        out.extend_from_slice(body);
        *input = rest;
        return Ok(());
    }
    // Children go straight into `out` and are moved behind the header afterwards, so peak memory
    // stays near twice the input however deep the nesting.
    let start = out.len();
    let mut count = 0usize;
    if let Some(len) = len {
        let (mut body, rest) = rest.split_at_checked(len).ok_or_else(truncated)?;
        *input = rest;
        while !body.is_empty() {
            tlv(&mut body, depth + 1, out)?;
            count += 1;
        }
    } else {
        *input = rest;
        loop {
            if let Some(after) = input.strip_prefix(&[0, 0]) {
                *input = after;
                break;
            }
            tlv(input, depth + 1, out)?;
            count += 1;
        }
    }
    if tag == 0x31 && count > MAX_SET_LEN {
        return Err(PfxError::Malformed("a SET has too many elements".into()));
    }
    let body = out.split_off(start);
    // DER has no constructed OCTET STRING: join the (already primitive) segments.
    let (tag, body) = if tag == 0x24 { (0x04, join_segments(&body)?) } else { (tag, body) };
    push_header(out, tag, body.len());
    out.extend_from_slice(&body);
    Ok(())
}

fn join_segments(mut segments: &[u8]) -> Result<Vec<u8>, PfxError> {
    let mut joined = Vec::new();
    while let Some((&tag, rest)) = segments.split_first() {
        let (len, rest) = read_len(rest)?;
        let (body, rest) = rest.split_at_checked(len.ok_or_else(truncated)?).ok_or_else(truncated)?;
        if tag != 0x04 {
            return Err(PfxError::Malformed("OCTET STRING segment of the wrong type".into()));
        }
        joined.extend_from_slice(body);
        segments = rest;
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        s.chunks(2).map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap()).collect()
    }

    fn tlv_of(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let body = parts.concat();
        let mut out = Vec::new();
        push_header(&mut out, tag, body.len());
        out.extend(body);
        out
    }

    fn oid(oid: Oid) -> Vec<u8> {
        oid.to_der().unwrap()
    }

    fn bag(kind: Oid, value: &[u8], attrs: &[(Oid, Vec<u8>)]) -> Vec<u8> {
        let attrs: Vec<_> =
            attrs.iter().map(|(o, v)| tlv_of(0x30, &[&oid(*o), &tlv_of(0x31, &[v])])).collect();
        let attrs = tlv_of(0x31, &attrs.iter().map(Vec::as_slice).collect::<Vec<_>>());
        tlv_of(0x30, &[&oid(kind), &tlv_of(0xa0, &[value]), &attrs])
    }

    const CERT: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x07]; // never parsed here, only carried
    const ED25519: &str =
        "302e020100300506032b657004220420 0101010101010101010101010101010101010101010101010101010101010101";

    /// A data safe with a `CertBag` and a PBES2 `ShroudedKeyBag`, with an HMAC-SHA256 MAC when `mac` is set.
    fn handmade_pfx(password: &str, mac: bool) -> Vec<u8> {
        let cert_bag =
            tlv_of(0x30, &[&oid(pkcs12::PKCS_12_X509_CERT_OID), &tlv_of(0xa0, &[&tlv_of(4, &[CERT])])]);
        let bmp = |s: &str| tlv_of(0x1e, &[&bmp_string(s)[..s.len() * 2]]);
        let cert = bag(
            pkcs12::PKCS_12_CERT_BAG_OID,
            &cert_bag,
            &[(FRIENDLY_NAME, bmp("leaf")), (LOCAL_KEY_ID, tlv_of(4, &[&[1, 2]]))],
        );
        let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(1000, &[7; 8], &[9; 16]).unwrap();
        let encrypted = params.encrypt(password, &hex(ED25519)).unwrap();
        let alg = tlv_of(0x30, &[&oid(pbes2::PBES2_OID), &params.to_der().unwrap()]);
        let shrouded = tlv_of(0x30, &[&alg, &tlv_of(4, &[&encrypted])]);
        let key = bag(
            pkcs12::PKCS_12_PKCS8_KEY_BAG_OID,
            &shrouded,
            &[(MS_CSP_NAME, bmp("KSP")), (LOCAL_KEY_ID, tlv_of(4, &[&[1, 2]]))],
        );
        let safe =
            tlv_of(0x30, &[&oid(ID_DATA), &tlv_of(0xa0, &[&tlv_of(4, &[&tlv_of(0x30, &[&cert, &key])])])]);
        let auth_safe = tlv_of(0x30, &[&safe]);
        let mut mac_data = Vec::new();
        if mac {
            let key =
                derive_key::<sha2::Sha256>(&bmp_string(password), &[5; 8], Pkcs12KeyType::Mac, 1000, 32);
            let mut hmac = <SimpleHmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
            hmac.update(&auth_safe);
            let digest = tlv_of(
                0x30,
                &[&tlv_of(0x30, &[&oid(SHA256), &[5, 0]]), &tlv_of(4, &[&hmac.finalize().into_bytes()])],
            );
            mac_data = tlv_of(0x30, &[&digest, &tlv_of(4, &[&[5; 8]]), &[2, 2, 0x03, 0xe8]]);
        }
        let content = tlv_of(0x30, &[&oid(ID_DATA), &tlv_of(0xa0, &[&tlv_of(4, &[&auth_safe])])]);
        tlv_of(0x30, &[&[2, 1, 3], &content, &mac_data])
    }

    #[test]
    fn kdf_matches_published_vectors() {
        let kdf = |pw: &str, salt: &str, id, iterations, len| {
            derive_key::<sha1::Sha1>(&bmp_string(pw), &hex(salt), id, iterations, len)
        };
        let (enc, iv) = (Pkcs12KeyType::EncryptionKey, Pkcs12KeyType::Iv);
        assert_eq!(
            kdf("smeg", "0A58CF64530D823F", enc, 1, 24),
            hex("8AAAE6297B6CB04642AB5B077851284EB7128F1A2A7FBCA3")
        );
        assert_eq!(kdf("smeg", "0A58CF64530D823F", iv, 1, 8), hex("79993DFE048D3B76"));
        let enc = Pkcs12KeyType::EncryptionKey;
        assert_eq!(
            kdf("queeg", "1682C0FC5B3F7EC5", enc, 1000, 24),
            hex("483DD6E919D7DE2E8E648BA8F862F3FBFBDC2BCB2C02957F")
        );
    }

    #[test]
    fn passwords_become_bmp_strings() {
        assert_eq!(bmp_string(""), [0, 0]);
        assert_eq!(bmp_string("a€"), [0, 0x61, 0x20, 0xac, 0, 0]);
        assert_eq!(bmp_string("😀"), [0xd8, 0x3d, 0xde, 0x00, 0, 0]);
        let empty = passwords("");
        assert_eq!((empty[0].bmp.as_slice(), empty[1].bmp.as_slice()), (&[0u8, 0][..], &[][..]));
        assert_eq!(passwords("é")[1].bmp, [0, 0xc3, 0, 0xa9, 0, 0]);
    }

    #[test]
    fn sniffs_only_pfx() {
        assert!(looks_like_pfx(&handmade_pfx("pw", true)));
        assert!(looks_like_pfx(&hex("3080 020103 3080")));
        for garbage in ["", "30", "3003020103", "308203", "0201033000", "3082010a02010230"] {
            assert!(!looks_like_pfx(&hex(garbage)), "{garbage}");
        }
    }

    #[test]
    fn normalizes_ber_to_der() {
        let ber = hex("3080 2480 0402 6162 0401 63 0000 0281 0105 0000");
        assert_eq!(normalize(&ber).unwrap(), hex("3008 0403 616263 020105"));
        assert!(normalize(&hex("3080 0201 05")).is_err());
        assert!(normalize(&hex("3003 020105 00")).is_err());
    }

    #[test]
    fn decodes_handmade_pfx() {
        let pfx = decode(&handmade_pfx("pw", true), Some("pw")).unwrap();
        let expected = "unencrypted for certificates, PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for the key";
        assert_eq!(pfx.protection, format!("{expected}, MAC HMAC-SHA256"));
        assert_eq!((pfx.certs.len(), pfx.keys.len()), (1, 1));
        assert_eq!(pfx.certs[0].der, CERT);
        assert_eq!(pfx.certs[0].friendly_name.as_deref(), Some("leaf"));
        assert_eq!(pfx.keys[0].pkcs8_der, hex(ED25519));
        assert_eq!(pfx.keys[0].csp_name.as_deref(), Some("KSP"));
        assert_eq!(pfx.keys[0].local_key_id.as_deref(), Some(&[1u8, 2][..]));
        assert!(format!("{pfx:?}").contains("<48 bytes>"), "Debug must not show the key");
        assert!(matches!(decode(&handmade_pfx("pw", true), Some("nope")), Err(PfxError::WrongPassword)));
        assert!(matches!(decode(&handmade_pfx("pw", true), None), Err(PfxError::WrongPassword)));
        // Without a MAC the wrong password is caught by the padding or the PKCS#8 check.
        assert!(decode(&handmade_pfx("", false), None).is_ok());
        assert!(matches!(decode(&handmade_pfx("pw", false), Some("nope")), Err(PfxError::WrongPassword)));
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let good = handmade_pfx("pw", false);
        for round in 0..3000 {
            let mut bytes = good.clone();
            for _ in 0..=next() % 4 {
                let at = usize::try_from(next()).unwrap() % bytes.len();
                match next() % 3 {
                    0 => bytes[at] ^= 1 << (next() % 8),
                    1 => bytes.truncate(at),
                    _ => bytes[at] = [0x00, 0x80, 0x84, 0xff][round % 4],
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let _ = decode(&bytes, Some("pw"));
            let random: Vec<u8> = (0..next() % 64).map(|_| next().to_le_bytes()[0]).collect();
            assert!(decode(&random, None).is_err());
        }
        let deep = [&[0x30, 0x80][..]].repeat(100_000).concat();
        assert!(matches!(decode(&deep, None), Err(PfxError::Malformed(_))));
        let mut budget = ITERATION_BUDGET;
        assert!([0, -5, 1_000_001].into_iter().all(|n| charge(&mut budget, n).is_err()));
        for _ in 0..4 {
            assert!(charge(&mut budget, 1_000_000).is_ok());
        }
        assert!(charge(&mut budget, 1).is_err(), "the budget is spent");
        let big_set = tlv_of(0x31, &vec![&[5u8, 0][..]; 1000]);
        assert!(matches!(normalize(&big_set), Err(PfxError::Malformed(_))));
    }
}
