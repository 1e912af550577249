//! TLS for the peer channel when the gateway encrypts: every node serves the gateway's one
//! certificate, and a node trusts a peer only if the peer presents that same certificate
//! (pinned by its SHA-256 thumbprint) and proves it holds the key. A node with another
//! certificate can't talk to its peers, and the hub shows it Inactive.

use crate::cert::{Identity, KeyEncoding};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer, ServerName,
    UnixTime,
};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest as _;
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

/// Both ends of the encrypted peer channel for one identity.
#[derive(Clone)]
pub struct PeerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
}

impl PeerTls {
    pub fn new(identity: &Identity) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            identity.chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
        let key = private_key(identity);
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        let verifier = PinnedCertificate {
            thumbprint: identity.thumbprint_sha256.to_ascii_uppercase(),
            algorithms: provider.signature_verification_algorithms,
        };
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }
}

/// The identity's private key as rustls takes it.
pub(crate) fn private_key(identity: &Identity) -> PrivateKeyDer<'static> {
    match identity.key_encoding {
        KeyEncoding::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone())),
        KeyEncoding::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(identity.key.clone())),
        KeyEncoding::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(identity.key.clone())),
    }
}

/// The server name to present for `host:port` (the pin, not the name, decides trust).
pub fn server_name(address: &str) -> ServerName<'static> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host).trim_matches(['[', ']']);
    ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("gatehouse-peer").unwrap_or_else(|_| unreachable!()))
}

/// Trusts exactly one certificate: the gateway's.
#[derive(Debug)]
struct PinnedCertificate {
    thumbprint: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = crate::encoding::hex(&sha2::Sha256::digest(end_entity.as_ref())).to_ascii_uppercase();
        if bool::from(presented.as_bytes().ct_eq(self.thumbprint.as_bytes())) {
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
