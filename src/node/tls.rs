//! TLS for the peer channel when the gateway encrypts: every node serves the gateway's one
//! certificate, and a node trusts a peer only if the peer presents that same certificate
//! (pinned by its SHA-256 thumbprint) and proves it holds the key. A node with another
//! certificate can't talk to its peers, and the hub shows it Inactive.

use crate::cert::{Identity, KeyEncoding};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer, ServerName,
};
use std::sync::Arc;

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
        let client = crate::pinned_tls::client_config(provider, thumbprint(identity)?)?;
        Ok(PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }
}

/// The identity's thumbprint as the 32 bytes peers pin.
fn thumbprint(identity: &Identity) -> Result<[u8; 32], rustls::Error> {
    crate::encoding::hex_decode(&identity.thumbprint_sha256)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            rustls::Error::General(
                "the gateway certificate's SHA-256 thumbprint in the node's secrets is not 64 hex digits; set the gateway's certificate again".to_owned(),
            )
        })
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
