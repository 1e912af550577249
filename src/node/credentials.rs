//! Data-store credentials (database passwords, object-store keys): entered on a node, kept
//! sealed in its secrets file, never sent to the hub. Every node reports its credential
//! version with its heartbeat; a node behind the highest version it sees among its peers
//! fetches that peer's set over the peer channel, inside its Noise session (encrypted to the
//! receiving node's own key), so even the unencrypted (express) channel never carries them in
//! clear, and nothing the hub holds opens them.

use super::store::{Store, StoreError};
use std::collections::BTreeMap;

/// A node's credentials and their version.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CredentialSet {
    pub version: u64,
    pub entries: BTreeMap<String, String>,
}

// Hand-written so values can't reach a log line through `{:?}`.
impl std::fmt::Debug for CredentialSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSet")
            .field("version", &self.version)
            .field("names", &self.entries.keys())
            .finish()
    }
}

/// Why a credential can't be changed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("credential names are 1 to 128 letters, digits, '-', '_' or '.'; {0:?} is not")]
    BadName(String),
    #[error("no credential named {0:?}; list them with: gatehouse node credential list")]
    Unknown(String),
    #[error("the credential value is empty; give it on standard input")]
    EmptyValue,
}

/// Reads the set from the node's secrets.
pub fn load(store: &Store) -> Result<CredentialSet, StoreError> {
    let secrets = store.secrets()?;
    Ok(CredentialSet { version: secrets.credential_version, entries: secrets.credentials })
}

/// Sets (or replaces) one credential, raising the version so every node takes this set.
pub fn set(store: &Store, name: &str, value: &str) -> Result<u64, CredentialError> {
    validate(name)?;
    if value.is_empty() {
        return Err(CredentialError::EmptyValue);
    }
    change(store, |entries| {
        entries.insert(name.to_owned(), value.to_owned());
        Ok(())
    })
}

/// Deletes one credential, raising the version.
pub fn delete(store: &Store, name: &str) -> Result<u64, CredentialError> {
    change(store, |entries| {
        entries.remove(name).map(|_| ()).ok_or_else(|| CredentialError::Unknown(name.to_owned()))
    })
}

fn change(
    store: &Store,
    edit: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), CredentialError>,
) -> Result<u64, CredentialError> {
    let mut secrets = store.secrets()?;
    edit(&mut secrets.credentials)?;
    // Versions follow the clock (milliseconds), and stay above any this node has seen: a set
    // entered later on any node wins, and peers adopt it.
    secrets.credential_version = secrets.credential_version.saturating_add(1).max(super::unix_millis());
    store.save_secrets(&secrets)?;
    Ok(secrets.credential_version)
}

/// Adopts a newer set fetched from a peer; an older or equal one is ignored.
pub fn adopt(store: &Store, set: &CredentialSet) -> Result<bool, StoreError> {
    let mut secrets = store.secrets()?;
    if set.version <= secrets.credential_version {
        return Ok(false);
    }
    secrets.credentials.clone_from(&set.entries);
    secrets.credential_version = set.version;
    store.save_secrets(&secrets)?;
    Ok(true)
}

fn validate(name: &str) -> Result<(), CredentialError> {
    let ok = (1..=128).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok { Ok(()) } else { Err(CredentialError::BadName(name.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::store::Secrets;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.save_secrets(&Secrets::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn set_and_delete_raise_the_version() {
        let (_dir, store) = store();
        let v1 = set(&store, "warehouse", "p@ss").unwrap();
        let v2 = set(&store, "lake", "key").unwrap();
        assert!(v2 > v1);
        let v3 = delete(&store, "warehouse").unwrap();
        assert!(v3 > v2);
        assert_eq!(load(&store).unwrap().entries.keys().collect::<Vec<_>>(), ["lake"]);
        assert!(matches!(delete(&store, "nope"), Err(CredentialError::Unknown(_))));
        assert!(matches!(set(&store, "bad name", "x"), Err(CredentialError::BadName(_))));
    }

    #[test]
    fn only_a_newer_set_is_adopted() {
        let (_dir, store) = store();
        let version = set(&store, "a", "1").unwrap();
        let older = CredentialSet { version: version - 1, entries: BTreeMap::new() };
        assert!(!adopt(&store, &older).unwrap());
        let newer =
            CredentialSet { version: version + 1, entries: BTreeMap::from([("b".into(), "2".into())]) };
        assert!(adopt(&store, &newer).unwrap());
        assert_eq!(load(&store).unwrap(), newer);
    }
}
