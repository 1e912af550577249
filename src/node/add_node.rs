//! Adding a node to this node's gateway, from the window's "Add a node" and `gatehouse node
//! add-node-key` alike: a fresh one-time auth key from the hub (with the admin token this node
//! holds: the embedded hub's, kept since express setup), and the exact steps for the other
//! machine; or, without an admin token, the command the hub's admin runs instead; or, for a
//! full gateway, the hub's own refusal (picked by its [`ErrorCode`], never by its words).
//!
//! Also [`follow_hub`]: the node's settings re-pointed at its embedded hub after the hub
//! moved (opened to the network or back), so the node keeps working.

use super::ops::OpError;
use super::store::Store;
use crate::client::ClientError;
use crate::protocol::{CertPin, ErrorCode, NewJoinKey};
use std::fmt;
use std::time::Duration;

/// How long a key made by Add a node stays valid unused, unless the caller says.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// What Add a node came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddNode {
    /// A fresh one-time key, and how to use it.
    Key(NodeKey),
    /// The gateway has as many nodes as it may: the hub's sentence.
    Full(String),
    /// This node holds no admin token of its hub: what to run on the admin's machine.
    AskTheAdmin { command: String },
}

/// A one-time key for adding a node to the gateway, shown once.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeKey {
    /// The auth key (with the hub's certificate fingerprint when the hub made it itself).
    pub key: String,
    pub gateway: String,
    /// The hub the key names.
    pub hub_url: String,
    /// The fingerprint the key carries, if any.
    pub pin: Option<CertPin>,
    /// When it expires unused (ms since the Unix epoch).
    pub expires_ms: i64,
}

// The key is a secret: `Debug` shows only its start.
impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("key", &self.key.get(..8).unwrap_or_default())
            .field("gateway", &self.gateway)
            .field("hub_url", &self.hub_url)
            .field("pin", &self.pin)
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

impl NodeKey {
    /// The hub listens on loopback only, so no other machine can use the key.
    pub fn hub_is_local(&self) -> bool {
        reqwest::Url::parse(&self.hub_url).ok().and_then(|u| u.host_str().map(str::to_owned)).is_some_and(
            |host| {
                host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            },
        )
    }

    /// The one-line command for the other machine (the key in the environment, not in argv).
    pub fn command(&self) -> String {
        format!("GATEHOUSE_AUTH_KEY='{}' gatehouse node register --name NAME", self.key)
    }

    /// The steps for the other machine, one sentence each.
    pub fn steps(&self) -> Vec<String> {
        let mut steps = vec![
            "Install Gatehouse on the other machine.".to_owned(),
            "Open its Configuration Manager, choose Manual setup and paste the key; or run there: "
                .to_owned()
                + &self.command(),
        ];
        if let Some(pin) = &self.pin {
            steps.push(format!(
                "The key carries the fingerprint of the hub's own certificate (SHA-256 {pin}), so the new node trusts {} without a CA, and no other server.",
                self.hub_url
            ));
        }
        steps.push(format!(
            "The key registers one node and expires unused at {}.",
            crate::encoding::utc_timestamp(self.expires_ms)
        ));
        steps
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "A one-time key for a new node of gateway '{}' (shown only this once):", self.gateway)?;
        writeln!(f, "  {}", self.key)?;
        if self.hub_is_local() {
            writeln!(f, "{LOCAL_ONLY}")?;
        }
        writeln!(f, "On the other machine:")?;
        for (n, step) in self.steps().iter().enumerate() {
            writeln!(f, "  {}. {step}", n + 1)?;
        }
        Ok(())
    }
}

/// What a key of a hub on loopback means for another machine.
pub const LOCAL_ONLY: &str = "This gateway's hub listens on this machine only, so another machine can't use the key yet: open it to other machines first (Settings, Add a node: Open to other machines; or: gatehouse node hub-access network).";

/// Makes a one-time key for adding a node to this node's gateway, valid `lifetime` (30
/// minutes unless said), through the hub's admin token this node holds.
pub async fn add_node_key(store: &Store, lifetime: Option<Duration>) -> Result<AddNode, OpError> {
    let settings = store.settings()?;
    let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME);
    let Some(token) = store.secrets()?.hub_admin_token else {
        return Ok(AddNode::AskTheAdmin {
            command: format!(
                "gatehouse hub key create {} --once --expires {}",
                settings.gateway_name,
                lifetime_text(lifetime)
            ),
        });
    };
    let client = super::hub_client(&settings, &token).map_err(OpError::Hub)?;
    let request = NewJoinKey { once: true, expires_in_seconds: Some(lifetime.as_secs().max(1)) };
    match client.create_join_key(&settings.gateway_id, &request).await {
        Ok(made) => {
            let parsed =
                crate::protocol::parse_auth_key(&made.key).map_err(|e| OpError::Place(e.to_string()))?;
            Ok(AddNode::Key(NodeKey {
                key: made.key,
                gateway: settings.gateway_name,
                hub_url: parsed.hub_url,
                pin: parsed.pin,
                expires_ms: made.info.expires_ms,
            }))
        }
        Err(ClientError::Refused { body, .. }) if body.code == Some(ErrorCode::GatewayFull) => {
            Ok(AddNode::Full(body.error))
        }
        Err(e) => Err(OpError::Hub(e)),
    }
}

/// `30m`, `2h`, `45s`: how `hub key create --expires` reads it.
fn lifetime_text(lifetime: Duration) -> String {
    let seconds = lifetime.as_secs();
    match seconds {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Where the node's settings now point after [`follow_hub`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedHub {
    pub hub_url: String,
    pub peer_address: String,
}

/// Re-points this node at its embedded hub after the hub moved: its URL, its certificate's
/// pin (or none, back on loopback), and the peer address's host (an IP) to the hub's, so the
/// nodes of other machines reach this one where they reach the hub.
pub fn follow_hub(
    store: &Store,
    hub_url: &str,
    pin: Option<CertPin>,
    host: std::net::IpAddr,
) -> Result<FollowedHub, OpError> {
    let mut settings = store.settings()?;
    hub_url.clone_into(&mut settings.hub_url);
    settings.hub_pin = pin;
    settings.hub_ca = None;
    if let Some((old, port)) = settings.peer_address.rsplit_once(':')
        && old.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok()
    {
        settings.peer_address =
            std::net::SocketAddr::new(host, port.parse().unwrap_or(settings.peer_port)).to_string();
    }
    store.save_settings(&settings)?;
    Ok(FollowedHub { hub_url: settings.hub_url, peer_address: settings.peer_address })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hub_url: &str) -> NodeKey {
        NodeKey {
            key: "gh1_secret".to_owned(),
            gateway: "g".to_owned(),
            hub_url: hub_url.to_owned(),
            pin: Some(CertPin([0xab; 32])),
            expires_ms: 0,
        }
    }

    #[test]
    fn the_steps_name_the_command_the_pin_and_a_hub_on_loopback() {
        let local = key("http://127.0.0.1:7070");
        assert!(local.hub_is_local());
        assert!(local.to_string().contains(LOCAL_ONLY));
        let network = key("https://192.0.2.7:7070");
        assert!(!network.hub_is_local());
        let text = network.to_string();
        assert!(!text.contains(LOCAL_ONLY), "{text}");
        assert!(text.contains("GATEHOUSE_AUTH_KEY='gh1_secret' gatehouse node register"), "{text}");
        assert!(text.contains(&"ab".repeat(32)), "{text}");
        assert!(!format!("{network:?}").contains("secret"));
    }

    #[test]
    fn a_lifetime_reads_as_hub_key_create_takes_it() {
        assert_eq!(lifetime_text(DEFAULT_LIFETIME), "30m");
        assert_eq!(lifetime_text(Duration::from_secs(7200)), "2h");
        assert_eq!(lifetime_text(Duration::from_secs(1)), "1s");
    }
}
