//! The certificate checker: reads a PEM, DER or PKCS#12 file and tells whether a node can use
//! the certificate to encrypt the peer channel, rule by rule, each with a sentence a person can
//! act on. It reads only the file it is given and knows nothing of the CLI or the GUI.
//!
//! **Invariant:** the rules see only the bytes and [`Options`]; the clock is read once, in
//! `load_and_check`.

mod key;
mod load;
mod pkcs12;
mod profile;
mod report;
mod rules;

pub use load::{Format, KeyEncoding, LoadError};
pub use pkcs12::PfxError;
pub use report::{Check, Report, Rule, Status, Verdict};

use std::fmt;
use std::path::Path;
use time::OffsetDateTime;

/// What to check the certificate against.
#[derive(Clone)]
pub struct Options {
    /// Opens a PFX file or an encrypted PKCS#8 key. `None` tries the empty password.
    pub password: Option<String>,
    /// Extra trust anchors (DER), e.g. the organisation's own root CA.
    pub extra_roots: Vec<Vec<u8>>,
    /// Trust the public web roots (Mozilla's list, as every node does) besides `extra_roots`.
    pub public_roots: bool,
    /// The name peers use to reach the node; `None` skips the `hostname` rule.
    pub host: Option<String>,
    /// Check validity at this time instead of now.
    pub at: Option<OffsetDateTime>,
}

impl Default for Options {
    fn default() -> Self {
        Options { password: None, extra_roots: Vec::new(), public_roots: true, host: None, at: None }
    }
}

// Hand-written so the password can never reach a log line through `{:?}`.
impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("extra_roots", &self.extra_roots.len())
            .field("public_roots", &self.public_roots)
            .field("host", &self.host)
            .field("at", &self.at)
            .finish()
    }
}

/// Checks the certificate in `path`.
pub fn check_file(path: &Path, options: &Options) -> Result<Report, LoadError> {
    let bytes = read(path)?;
    check_bytes(&bytes, options)
}

/// Checks a certificate file's contents.
pub fn check_bytes(bytes: &[u8], options: &Options) -> Result<Report, LoadError> {
    load_and_check(bytes, options).map(|(_, report)| report)
}

/// Loads a file's contents and runs every rule: the one place the clock is read.
fn load_and_check(bytes: &[u8], options: &Options) -> Result<(load::Bundle, Report), LoadError> {
    let bundle = load::load(bytes, options.password.as_deref())?;
    let at = options.at.unwrap_or_else(OffsetDateTime::now_utc);
    let report = rules::run(&bundle, options, at)?;
    Ok((bundle, report))
}

/// A certificate a node can serve TLS with: the chain (leaf first) and its private key.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    pub key_encoding: KeyEncoding,
    pub key: Vec<u8>,
    /// SHA-256 of the leaf, upper-case hex: what peers pin and the hub compares.
    pub thumbprint_sha256: String,
}

// Hand-written so the private key can't reach a log line through `{:?}`.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("chain", &self.chain.len())
            .field("key_encoding", &self.key_encoding)
            .field("key", &"***")
            .field("thumbprint_sha256", &self.thumbprint_sha256)
            .finish()
    }
}

/// Checks the certificate in `path` and, unless the report rejects it or it has no private
/// key, returns what a node serves TLS with.
pub fn identity(path: &Path, options: &Options) -> Result<(Report, Option<Identity>), LoadError> {
    let (bundle, report) = load_and_check(&read(path)?, options)?;
    let identity = match (&bundle.key, report.verdict) {
        (Some(key), Verdict::Accepted | Verdict::AcceptedWithWarnings) => Some(Identity {
            chain: bundle.certs.clone(),
            key_encoding: key.encoding,
            key: key.der.clone(),
            thumbprint_sha256: report.thumbprint_sha256.clone(),
        }),
        _ => None,
    };
    Ok((report, identity))
}

/// Reads the trust anchors of a `--roots` file (PEM with one or more certificates, or DER).
pub fn read_roots(path: &Path) -> Result<Vec<Vec<u8>>, LoadError> {
    load::load_roots(&read(path)?)
}

/// The largest file the checker reads: certificate files are kilobytes and a PEM of every
/// public root is about 200 KiB; anything bigger (or endless, like `/dev/zero`) is a wrong pick.
pub const MAX_FILE_SIZE: u64 = 4 << 20;

/// Reads at most [`MAX_FILE_SIZE`] bytes: a larger regular file is refused from its size alone,
/// a device or pipe after one byte more than the limit.
fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read as _;
    let io = |reason| LoadError::Io { path: path.to_owned(), reason };
    let too_large = || LoadError::TooLarge { path: path.to_owned(), limit: MAX_FILE_SIZE };
    let file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().is_ok_and(|m| m.is_file() && m.len() > MAX_FILE_SIZE) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    Ok(bytes)
}
