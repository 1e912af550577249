//! The node's state on disk, in its data dir: `node.toml` (settings, no secrets),
//! `secrets.bin` (node token, peer-channel key pair, credentials: sealed with ChaCha20-Poly1305 under
//! the key in `secret.key`) and `machine.id` (who this machine is, across registrations).
//!
//! **Invariant:** every file is written atomically ([`crate::machine::write_atomic`]) and
//! readable by its owner only; a crash or a refused change never leaves a half file.

use crate::machine::write_atomic;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

const SETTINGS: &str = "node.toml";
const SECRETS: &str = "secrets.bin";
const KEY: &str = "secret.key";
const MACHINE_ID: &str = "machine.id";
/// Binds sealed secrets to their purpose and format version.
const SECRETS_AAD: &[u8] = b"gatehouse node secrets v1";

/// Why the node's state can't be read or written. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("this node is not registered yet; register it with: gatehouse node register --key KEY")]
    NotRegistered,
    #[error("can't {action} {}: {reason}", path.display())]
    Io { action: &'static str, path: PathBuf, reason: std::io::Error },
    #[error("{} is damaged ({reason}); fix or remove it and register again, or restore a backup with: gatehouse node restore", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{} can't be opened with {} (the key file was replaced, or the secrets were copied from another machine); restore a backup with: gatehouse node restore, or register again", secrets.display(), key.display())]
    Unsealable { secrets: PathBuf, key: PathBuf },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a node needs to know that isn't secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    pub hub_url: String,
    pub gateway_id: String,
    pub gateway_name: String,
    pub node_id: String,
    pub node_name: String,
    /// Port of the peer channel.
    #[serde(default = "default_peer_port")]
    pub peer_port: u16,
    /// `host:port` the other nodes reach this one at (as registered).
    #[serde(default)]
    pub peer_address: String,
    /// `None`: the default formula, `max(2, min(4 × cores, 2 × GiB RAM))`.
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// The HTTP(S) proxy the node reaches the hub through, e.g. `http://proxy.corp:3128`;
    /// `None`: straight to the hub. Left out of the file when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// PEM CA certificates trusted for the hub's HTTPS besides the public roots (`node
    /// register --hub-ca`: a hub with a private CA). Left out of the file when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_ca: Option<String>,
    /// The SHA-256 fingerprint of the hub's own certificate (from the auth key of a hub that
    /// made its certificate itself): the hub's HTTPS is trusted by it instead of a CA. Left
    /// out of the file when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_pin: Option<crate::protocol::CertPin>,
    /// A loopback address (`127.0.0.1:9464`) the service serves its own `/metrics` on, for
    /// scraping on this machine; `None`: none. Left out of the file when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The opt-in automatic update window, in the machine's local time
    /// (`auto_update = { days = ["sat", "sun"], from = "02:00", to = "04:00" }`); `None`, left
    /// out of the file: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_update: Option<super::auto_update::UpdateWindow>,
}

fn default_peer_port() -> u16 {
    8060
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// One data-store credential: its version, the node it was written on, and its value, or
/// none for a deletion (a tombstone, kept so the other nodes delete it too). Never logged:
/// `Debug` leaves the value out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub version: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("version", &self.version)
            .field("origin", &self.origin)
            .field("deleted", &self.value.is_none())
            .finish()
    }
}

/// A credential as files before per-credential versions kept it (the bare value, at the
/// set's one version), or as now.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum StoredCredential {
    Value(String),
    Entry(Credential),
}

impl StoredCredential {
    /// The credential, a bare value taking the set's old one `version`.
    pub(crate) fn upgrade(self, version: u64) -> Credential {
        match self {
            StoredCredential::Value(value) => {
                Credential { version, origin: String::new(), value: Some(value) }
            }
            StoredCredential::Entry(credential) => credential,
        }
    }
}

/// What a node must keep secret. Never logged: `Debug` shows only names.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SecretsFile")]
pub struct Secrets {
    pub node_token: String,
    /// This node's own key pair for the peer channel; `None` in a data dir registered by an
    /// older version, until the node makes one on its next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_key: Option<super::peer::StaticKey>,
    /// Data-store credentials (and deletions of them) by name.
    pub credentials: BTreeMap<String, Credential>,
    /// The certificate and key the peer channel is encrypted with; `None`: not encrypted.
    pub tls: Option<crate::cert::Identity>,
    /// The admin token of the hub embedded in this data dir (express setup), if it hosts one:
    /// the hub keeps only its hash. Kept across unregistering, for the next express setup.
    /// Left out of the file when `None`, so data dirs without one stay readable by older
    /// versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_admin_token: Option<String>,
}

/// `secrets.bin` as read: also the shape from before per-credential versions (bare values
/// and one `credential_version` for the whole set), which loads as entries of that version.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SecretsFile {
    node_token: String,
    peer_key: Option<super::peer::StaticKey>,
    /// The shared gateway secret older versions kept here: read and dropped, never written.
    #[serde(rename = "gateway_secret")]
    _gateway_secret: Dropped,
    credentials: BTreeMap<String, StoredCredential>,
    credential_version: u64,
    tls: Option<crate::cert::Identity>,
    hub_admin_token: Option<String>,
}

impl From<SecretsFile> for Secrets {
    fn from(file: SecretsFile) -> Self {
        let version = file.credential_version;
        Secrets {
            node_token: file.node_token,
            peer_key: file.peer_key,
            credentials: file.credentials.into_iter().map(|(name, c)| (name, c.upgrade(version))).collect(),
            tls: file.tls,
            hub_admin_token: file.hub_admin_token,
        }
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("node_token", &"***")
            .field("peer_key", &self.peer_key)
            .field("credentials", &self.credentials)
            .field("tls", &self.tls)
            .field("hub_admin_token", &self.hub_admin_token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// A field older versions wrote, read whatever it holds and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped;

impl<'de> Deserialize<'de> for Dropped {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Dropped)
    }
}

/// The data dir of one node.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the data dir (owner-only) if needed.
    pub fn ensure_dir(&self) -> Result<()> {
        crate::machine::owner_only_dir(&self.dir).map_err(|reason| self.io("create", &self.dir, reason))
    }

    /// This machine's id: made once, kept across registrations.
    pub fn machine_id(&self) -> Result<String> {
        let path = self.dir.join(MACHINE_ID);
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
            Ok(_) => Err(StoreError::Corrupt { path, reason: "it is empty".to_owned() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.ensure_dir()?;
                let id = crate::encoding::random_hex::<16>();
                write_atomic(&path, id.as_bytes()).map_err(|reason| self.io("write", &path, reason))?;
                Ok(id)
            }
            Err(reason) => Err(self.io("read", &path, reason)),
        }
    }

    /// Takes over the machine id of a restored backup, so the hub sees the same machine.
    pub fn restore_machine_id(&self, id: &str) -> Result<()> {
        let path = self.dir.join(MACHINE_ID);
        write_atomic(&path, id.as_bytes()).map_err(|reason| self.io("write", &path, reason))
    }

    pub fn is_registered(&self) -> bool {
        self.dir.join(SETTINGS).exists()
    }

    pub fn settings(&self) -> Result<NodeSettings> {
        let path = self.dir.join(SETTINGS);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotRegistered),
            Err(reason) => return Err(self.io("read", &path, reason)),
        };
        toml::from_str(&text).map_err(|e| StoreError::Corrupt { path, reason: one_line(&e.to_string()) })
    }

    pub fn save_settings(&self, settings: &NodeSettings) -> Result<()> {
        self.ensure_dir()?;
        let path = self.dir.join(SETTINGS);
        let text = toml::to_string(settings)
            .map_err(|e| StoreError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        write_atomic(&path, text.as_bytes()).map_err(|reason| self.io("write", &path, reason))
    }

    pub fn secrets(&self) -> Result<Secrets> {
        let path = self.dir.join(SECRETS);
        let sealed = match std::fs::read(&path) {
            Ok(sealed) => sealed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotRegistered),
            Err(reason) => return Err(self.io("read", &path, reason)),
        };
        let key = self.key(false)?;
        let unsealable = || StoreError::Unsealable { secrets: path.clone(), key: self.dir.join(KEY) };
        let json = open(&key, &sealed).ok_or_else(unsealable)?;
        serde_json::from_slice(&json)
            .map_err(|e| StoreError::Corrupt { path: path.clone(), reason: e.to_string() })
    }

    /// When the secrets file was last written (`None` if unknown).
    pub fn secrets_modified(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.dir.join(SECRETS)).and_then(|m| m.modified()).ok()
    }

    pub fn save_secrets(&self, secrets: &Secrets) -> Result<()> {
        self.ensure_dir()?;
        let key = self.key(true)?;
        let path = self.dir.join(SECRETS);
        let json = serde_json::to_vec(secrets)
            .map_err(|e| StoreError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        write_atomic(&path, &seal(&key, &json)).map_err(|reason| self.io("write", &path, reason))
    }

    /// Keeps the admin token of the hub embedded in this data dir in the sealed secrets
    /// (registered or not), keeping what else is there: the hub stores only its hash.
    pub fn remember_hub_admin_token(&self, token: &str) -> Result<()> {
        let mut secrets = match self.secrets() {
            Ok(secrets) => secrets,
            Err(StoreError::NotRegistered) => Secrets::default(),
            Err(e) => return Err(e),
        };
        secrets.hub_admin_token = Some(token.to_owned());
        self.save_secrets(&secrets)
    }

    /// Forgets the registration (settings and secrets); the machine id and key stay, and so
    /// does the admin token of an embedded hub (it belongs to this data dir, not to the
    /// registration).
    pub fn forget_registration(&self) -> Result<()> {
        let hub_admin_token = self.secrets().ok().and_then(|secrets| secrets.hub_admin_token);
        let remove = |name: &str| {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(reason) => Err(self.io("remove", &path, reason)),
            }
        };
        // Settings first: they are what says "registered".
        remove(SETTINGS)?;
        match hub_admin_token {
            Some(token) => self.save_secrets(&Secrets { hub_admin_token: Some(token), ..Secrets::default() }),
            None => remove(SECRETS),
        }
    }

    /// The sealing key, created on first use if `create`.
    fn key(&self, create: bool) -> Result<[u8; 32]> {
        let path = self.dir.join(KEY);
        match std::fs::read(&path) {
            Ok(bytes) => bytes
                .try_into()
                .map_err(|_| StoreError::Corrupt { path, reason: "it is not a 32-byte key".to_owned() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                write_atomic(&path, &key).map_err(|reason| self.io("write", &path, reason))?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::Unsealable { secrets: self.dir.join(SECRETS), key: path })
            }
            Err(reason) => Err(self.io("read", &path, reason)),
        }
    }

    #[allow(clippy::unused_self, reason = "reads better at the call sites beside self.dir")]
    fn io(&self, action: &'static str, path: &Path, reason: std::io::Error) -> StoreError {
        StoreError::Io { action, path: path.to_owned(), reason }
    }
}

/// `nonce (12 bytes) || ciphertext+tag`.
pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    // Encryption with a valid key and nonce only fails for absurd sizes (> 256 GiB).
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: SECRETS_AAD })
        .unwrap_or_default();
    [nonce.as_slice(), &sealed].concat()
}

/// The plaintext, or `None` if the key is wrong or the bytes were changed.
pub fn open(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, ciphertext) = sealed.split_at_checked(12)?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: SECRETS_AAD }).ok()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Settings of a registered node, for tests here and in `backup`.
    pub(crate) fn settings() -> NodeSettings {
        NodeSettings {
            hub_url: "http://127.0.0.1:7070".into(),
            gateway_id: "g".into(),
            gateway_name: "sales".into(),
            node_id: "n".into(),
            node_name: "node1".into(),
            peer_port: 8060,
            peer_address: "127.0.0.1:8060".into(),
            concurrency_limit: None,
            log_level: "info".into(),
            proxy: None,
            hub_ca: None,
            hub_pin: None,
            metrics_listen: None,
            auto_update: None,
        }
    }

    #[test]
    fn settings_and_secrets_round_trip_and_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("node"));
        assert!(matches!(store.settings(), Err(StoreError::NotRegistered)));
        store.save_settings(&settings()).unwrap();
        let mut secrets = Secrets { node_token: "ghn_x_secret".into(), ..Secrets::default() };
        secrets.credentials.insert(
            "warehouse".into(),
            Credential { version: 1, origin: "node1".into(), value: Some("p@ss".into()) },
        );
        store.save_secrets(&secrets).unwrap();
        assert_eq!(store.settings().unwrap(), settings());
        assert_eq!(store.secrets().unwrap(), secrets);
        let on_disk = std::fs::read(store.dir().join(SECRETS)).unwrap();
        assert!(!on_disk.windows(4).any(|w| w == b"p@ss"), "a credential is stored in the clear");
        #[cfg(unix)]
        for name in [SETTINGS, SECRETS, KEY] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(store.dir().join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} is {mode:o}");
        }
        assert!(!format!("{secrets:?}").contains("p@ss"));
    }

    #[test]
    fn the_hub_admin_token_is_hidden_sealed_and_outlives_the_registration() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.save_settings(&settings()).unwrap();
        let secrets = Secrets {
            node_token: "ghn_x_secret".into(),
            hub_admin_token: Some("gha_admin_secret".into()),
            ..Secrets::default()
        };
        store.save_secrets(&secrets).unwrap();
        assert!(!format!("{secrets:?}").contains("gha_admin_secret"));
        let on_disk = std::fs::read(store.dir().join(SECRETS)).unwrap();
        assert!(!on_disk.windows(6).any(|w| w == b"gha_ad"), "the admin token is stored in the clear");

        store.forget_registration().unwrap();
        assert!(!store.is_registered());
        let kept = store.secrets().unwrap();
        assert_eq!(kept, Secrets { hub_admin_token: Some("gha_admin_secret".into()), ..Secrets::default() });

        // Without one, nothing of the registration is left.
        store.save_secrets(&Secrets::default()).unwrap();
        store.forget_registration().unwrap();
        assert!(matches!(store.secrets(), Err(StoreError::NotRegistered)));
    }

    #[test]
    fn secrets_from_before_per_credential_versions_load_with_the_set_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.save_secrets(&Secrets::default()).unwrap();
        let old = br#"{"node_token":"t","gateway_secret":"g","credentials":{"db":"p@ss","lake":"k:s"},"credential_version":42,"tls":null}"#;
        write_atomic(&dir.path().join(SECRETS), &seal(&store.key(false).unwrap(), old)).unwrap();
        let secrets = store.secrets().unwrap();
        let db = &secrets.credentials["db"];
        assert_eq!((db.version, db.value.as_deref(), db.origin.as_str()), (42, Some("p@ss"), ""));
        assert_eq!(secrets.credentials["lake"].version, 42);
        assert!(!format!("{secrets:?}").contains("p@ss"));
        // Written back in the new shape, it reads the same.
        store.save_secrets(&secrets).unwrap();
        assert_eq!(store.secrets().unwrap(), secrets);
    }

    #[test]
    fn a_damaged_settings_file_is_named_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        std::fs::write(dir.path().join(SETTINGS), "hub_url = [broken").unwrap();
        let error = store.settings().unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("node.toml is damaged"), "{error}");
        assert_eq!(std::fs::read_to_string(dir.path().join(SETTINGS)).unwrap(), "hub_url = [broken");
    }

    #[test]
    fn tampered_or_foreign_secrets_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.save_secrets(&Secrets { node_token: "t".into(), ..Secrets::default() }).unwrap();
        let path = dir.path().join(SECRETS);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(store.secrets(), Err(StoreError::Unsealable { .. })));
        assert!(open(&[7; 32], &seal(&[8; 32], b"x")).is_none());
        assert_eq!(open(&[7; 32], &seal(&[7; 32], b"x")).as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn secrets_of_an_older_version_open_and_drop_the_gateway_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        // What versions with a shared gateway secret wrote.
        let old = serde_json::json!({
            "node_token": "ghn_x_secret",
            "gateway_secret": "the-old-shared-secret",
            "credentials": { "warehouse": "p@ss" },
            "credential_version": 3,
            "tls": null,
        });
        let key = store.key(true).unwrap();
        write_atomic(&dir.path().join(SECRETS), &seal(&key, old.to_string().as_bytes())).unwrap();
        let mut secrets = store.secrets().unwrap();
        assert_eq!(secrets.node_token, "ghn_x_secret");
        assert_eq!(secrets.credentials["warehouse"].version, 3);
        assert!(secrets.peer_key.is_none());
        secrets.peer_key = Some(crate::node::peer::StaticKey::generate().unwrap());
        store.save_secrets(&secrets).unwrap();
        let json = open(&key, &std::fs::read(dir.path().join(SECRETS)).unwrap()).unwrap();
        assert!(!String::from_utf8_lossy(&json).contains("the-old-shared-secret"));
        assert_eq!(store.secrets().unwrap(), secrets);
    }

    #[test]
    fn the_machine_id_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let id = store.machine_id().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(store.machine_id().unwrap(), id);
    }
}
