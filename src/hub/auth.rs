//! Secrets the hub hands out and checks: the admin token, gateway auth keys and node tokens.
//! Only SHA-256 hashes are stored (the secrets are 256 random bits, so a fast hash is
//! enough), and every comparison is constant-time.
//!
//! Formats:
//! - auth key: `gh1_<base64url(hub_url|gateway_id)>_<43 chars: 32 random bytes, base64url>`,
//!   self-contained, so a node needs nothing else to find its hub and gateway;
//! - node token: `ghn_<node_id>_<secret>`; admin token: `gha_<secret>`;
//! - purpose tokens: `ghm_<token_id>_<secret>` (metrics), `ghv_<token_id>_<secret>` (viewer).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

use crate::protocol::TokenKind;
pub use crate::protocol::parse_auth_key;

/// Length of a secret: 32 bytes in base64url without padding.
const SECRET_CHARS: usize = crate::protocol::SECRET_CHARS;

/// 32 random bytes, base64url without padding (43 characters).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A random id for gateways, nodes, jobs and runs (128 bits, hex).
pub fn new_id() -> String {
    crate::encoding::random_hex::<16>()
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> String {
    crate::encoding::hex(&sha2::Sha256::digest(secret.as_bytes()))
}

/// Does `secret` hash to `stored`? Constant-time in the compared bytes.
pub fn verify(secret: &str, stored: &str) -> bool {
    hash(secret).as_bytes().ct_eq(stored.as_bytes()).into()
}

/// A new admin token.
pub fn new_admin_token() -> String {
    format!("gha_{}", new_secret())
}

/// A new auth key for a gateway on the hub at `hub_url`.
pub fn new_auth_key(hub_url: &str, gateway_id: &str) -> String {
    format!("gh1_{}_{}", URL_SAFE_NO_PAD.encode(format!("{hub_url}|{gateway_id}")), new_secret())
}

/// What the admin may see of a key after it was shown once: its public start and the first
/// characters of its secret.
pub fn key_hint(key: &str) -> String {
    let keep = key.len().saturating_sub(SECRET_CHARS - 4);
    format!("{}…", key.get(..keep).unwrap_or_default())
}

/// A new node token for `node_id`.
pub fn new_node_token(node_id: &str) -> String {
    format!("ghn_{node_id}_{}", new_secret())
}

/// The node id a node token claims to belong to.
pub fn node_of_token(token: &str) -> Option<&str> {
    id_of_token(token, "ghn_")
}

/// A new purpose token of `kind` with id `token_id`.
pub fn new_purpose_token(kind: TokenKind, token_id: &str) -> String {
    format!("{}{token_id}_{}", kind.prefix(), new_secret())
}

/// The kind and token id a purpose token claims.
pub fn purpose_token_id(token: &str) -> Option<(TokenKind, &str)> {
    TokenKind::ALL.into_iter().find_map(|kind| Some((kind, id_of_token(token, kind.prefix())?)))
}

/// The id in a `<prefix><id>_<secret>` token, if it has that shape.
fn id_of_token<'a>(token: &'a str, prefix: &str) -> Option<&'a str> {
    let (id, secret) = token.strip_prefix(prefix)?.split_once('_')?;
    (secret.len() == SECRET_CHARS && !id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AuthKey, MalformedKey};

    #[test]
    fn an_auth_key_carries_its_hub_and_gateway() {
        for _ in 0..200 {
            // Random secrets hit '_' and '-' in base64url often enough to matter.
            let key = new_auth_key("http://127.0.0.1:7070", "gw_1");
            let parsed = parse_auth_key(&key).unwrap();
            assert_eq!(
                parsed,
                AuthKey {
                    hub_url: "http://127.0.0.1:7070".into(),
                    gateway_id: "gw_1".into(),
                    key: key.clone(),
                    pin: None
                }
            );
            // With a pin: the same key to send, and the pin.
            let pin = crate::protocol::CertPin([7; 32]);
            let pinned = crate::protocol::pinned_auth_key(&key, &pin);
            assert_eq!(parse_auth_key(&pinned).unwrap(), AuthKey { pin: Some(pin), ..parsed });
        }
    }

    #[test]
    fn a_pin_reads_as_hex_with_or_without_colons_and_nothing_else() {
        use crate::protocol::{CertPin, MalformedPin};
        let hex = "ab".repeat(32);
        let pin = CertPin::parse(&hex).unwrap();
        assert_eq!(pin.hex(), hex);
        let openssl = format!("SHA256:{}", vec!["AB"; 32].join(":"));
        assert_eq!(CertPin::parse(&openssl), Ok(pin));
        for bad in ["", "ab", &"ab".repeat(31), &"zz".repeat(32), &"ab".repeat(33)] {
            assert_eq!(CertPin::parse(bad), Err(MalformedPin), "{bad:?}");
        }
        let key = new_auth_key("http://hub", "g1");
        for bad in [format!("{key}."), format!("{key}.abc"), format!("{key}.{hex}")] {
            assert_eq!(parse_auth_key(&bad), Err(MalformedKey), "{bad:?}");
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = new_auth_key("http://hub", "g1");
        for bad in ["", "gh1_", "gh2_abc_def", &good[..good.len() - 1], &good.replace("gh1_", "")] {
            assert_eq!(parse_auth_key(bad), Err(MalformedKey), "{bad:?}");
        }
    }

    #[test]
    fn only_the_right_secret_verifies() {
        let token = new_admin_token();
        let stored = hash(&token);
        assert!(verify(&token, &stored));
        assert!(!verify(&new_admin_token(), &stored));
        assert!(!verify("", &stored));
    }

    #[test]
    fn node_tokens_name_their_node() {
        let token = new_node_token("abc123");
        assert_eq!(node_of_token(&token), Some("abc123"));
        assert_eq!(node_of_token("ghn_abc123_short"), None);
        assert_eq!(node_of_token("gha_x"), None);
    }

    #[test]
    fn a_key_hint_does_not_reveal_the_secret() {
        let key = new_auth_key("http://hub", "g1");
        let hint = key_hint(&key);
        let secret = &key[key.len() - SECRET_CHARS..];
        assert!(!hint.contains(secret));
        assert!(hint.starts_with("gh1_"));
    }
}
