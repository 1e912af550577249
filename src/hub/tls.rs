//! HTTPS for the hub: the rustls server configuration from --tls-cert/--tls-key (the
//! handshakes run in `server`, off the accept loop, so one slow client can't stall the others).

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Why the hub's certificate can't be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("can't read {}: {reason}", path.display())]
    Read { path: std::path::PathBuf, reason: String },
    #[error(
        "the certificate and key don't work together ({0}); give the key that belongs to the certificate"
    )]
    Config(rustls::Error),
}

// Not `#[from]`: that would make the rustls error a `source` too, and print it twice.
impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Config(e)
    }
}

/// A rustls server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read_error = |path: &Path, reason: String| TlsError::Read { path: path.to_owned(), reason };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_error(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(read_error(cert, "it holds no PEM certificate".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| read_error(key, format!("no usable PEM private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}
