//! The certificate checker: reads a PEM, DER or PKCS#12 file and tells whether a node can use
//! the certificate to encrypt the peer channel, rule by rule, each with a sentence a person can
//! act on. It reads only the file it is given and knows nothing of the CLI or the GUI.
//!
//! **Invariant:** the rules see only the bytes and [`Options`]; the clock is read once, here.

mod key;
mod load;
mod pkcs12;
mod report;
mod rules;

pub use load::{Format, LoadError};
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
    let bundle = load::load(bytes, options.password.as_deref())?;
    let at = options.at.unwrap_or_else(OffsetDateTime::now_utc);
    rules::run(&bundle, options, at)
}

/// Reads the trust anchors of a `--roots` file (PEM with one or more certificates, or DER).
pub fn read_roots(path: &Path) -> Result<Vec<Vec<u8>>, LoadError> {
    load::load_roots(&read(path)?)
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|reason| LoadError::Io { path: path.to_owned(), reason })
}
