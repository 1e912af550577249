//! Secrets the hub hands out and checks: the admin token, gateway auth keys and node tokens.
//! Only SHA-256 hashes are stored (the secrets are 256 random bits, so a fast hash is
//! enough), and every comparison is constant-time.
//!
//! Formats:
//! - auth key: `gh1_<base64url(hub_url|gateway_id)>_<43 chars: 32 random bytes, base64url>`,
//!   self-contained, so a node needs nothing else to find its hub and gateway;
//! - node token: `ghn_<node_id>_<secret>`; admin token: `gha_<secret>`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

const SECRET_CHARS: usize = 43;

/// 32 random bytes, base64url without padding (43 characters).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A random id for gateways, nodes, jobs and runs (128 bits, hex).
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> String {
    hex(&sha2::Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
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

/// What an auth key says about itself, plus the whole key for checking its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKey {
    pub hub_url: String,
    pub gateway_id: String,
}

/// Why a string is not an auth key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this is not a Gatehouse auth key (it starts with gh1_); copy the whole key from the hub: gatehouse hub key regenerate"
)]
pub struct MalformedKey;

/// Reads the public part of an auth key. The secret part is checked against the stored hash.
pub fn parse_auth_key(key: &str) -> Result<AuthKey, MalformedKey> {
    let body = key.trim().strip_prefix("gh1_").ok_or(MalformedKey)?;
    // base64url may itself contain '_', so split by the secret's fixed length, not by '_'.
    let split = body.len().checked_sub(SECRET_CHARS + 1).ok_or(MalformedKey)?;
    let (public, secret) = (body.get(..split).ok_or(MalformedKey)?, body.get(split..).ok_or(MalformedKey)?);
    let secret = secret.strip_prefix('_').ok_or(MalformedKey)?;
    if URL_SAFE_NO_PAD.decode(secret).map(|b| b.len()) != Ok(32) {
        return Err(MalformedKey);
    }
    let decoded = URL_SAFE_NO_PAD.decode(public).map_err(|_| MalformedKey)?;
    let text = String::from_utf8(decoded).map_err(|_| MalformedKey)?;
    let (hub_url, gateway_id) = text.rsplit_once('|').ok_or(MalformedKey)?;
    if hub_url.is_empty() || gateway_id.is_empty() {
        return Err(MalformedKey);
    }
    Ok(AuthKey { hub_url: hub_url.to_owned(), gateway_id: gateway_id.to_owned() })
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
    let (node_id, secret) = token.strip_prefix("ghn_")?.split_once('_')?;
    (secret.len() == SECRET_CHARS && !node_id.is_empty()).then_some(node_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auth_key_carries_its_hub_and_gateway() {
        for _ in 0..200 {
            // Random secrets hit '_' and '-' in base64url often enough to matter.
            let key = new_auth_key("http://127.0.0.1:7070", "gw_1");
            let parsed = parse_auth_key(&key).unwrap();
            assert_eq!(
                parsed,
                AuthKey { hub_url: "http://127.0.0.1:7070".into(), gateway_id: "gw_1".into() }
            );
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
