//! A TLS client that trusts exactly one certificate, named by the SHA-256 of its DER: the
//! hub's pin a node or the CLI holds (`client`), and the gateway's one certificate peers
//! serve each other (`node::tls`). Neutral: it knows rustls and nothing of the crate.
//!
//! Whoever issued the certificate and whatever names it holds don't matter; the fingerprint
//! is compared in constant time, and the handshake's signature is still checked against the
//! certificate's key (rustls' webpki verification), so only the holder of the private key can
//! pass.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest as _;
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

/// A client configuration (safe default protocol versions, no client certificate) that trusts
/// only the server certificate whose SHA-256 is `sha256`. A certificate of another fingerprint
/// fails the handshake with `InvalidCertificate(ApplicationVerificationFailure)`.
pub fn client_config(
    provider: Arc<CryptoProvider>,
    sha256: [u8; 32],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let verifier = PinnedCertificate { sha256, algorithms: provider.signature_verification_algorithms };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Trusts exactly the certificate whose SHA-256 is `sha256`.
#[derive(Debug)]
struct PinnedCertificate {
    sha256: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        if bool::from(presented.ct_eq(&self.sha256)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(sha256: [u8; 32]) -> PinnedCertificate {
        let provider = rustls::crypto::ring::default_provider();
        PinnedCertificate { sha256, algorithms: provider.signature_verification_algorithms }
    }

    fn check(verifier: &PinnedCertificate, der: &[u8]) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from("hub.example").unwrap();
        verifier.verify_server_cert(&CertificateDer::from(der.to_vec()), &[], &name, &[], UnixTime::now())
    }

    #[test]
    fn the_certificate_of_the_pinned_fingerprint_passes_and_any_other_fails() {
        let der = b"not really a certificate, but its bytes are what is pinned";
        let pinned = verifier(sha2::Sha256::digest(der).into());
        assert!(check(&pinned, der).is_ok());
        let other = check(&pinned, b"another certificate").unwrap_err();
        assert_eq!(
            other,
            rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
        );
    }
}
