//! Data-store credentials (database passwords, object-store keys): entered on a node, kept
//! sealed in its secrets file, never sent to the hub. Each name carries its own version
//! (milliseconds of the clock, and above the name's previous version) and a value or a
//! deletion (a tombstone). Every node reports its names and versions with its heartbeat; a
//! node fetches the set of a peer that reports a different digest and something newer, over
//! the peer channel, inside its Noise session (encrypted to the receiving node's own key), so
//! even the unencrypted (express) channel never carries them in clear and nothing the hub
//! holds opens them, and merges it per name: the higher version wins, a tie goes the same way
//! on every node ([`rank`]), so edits of different names on two nodes both survive and every
//! node ends with the same set. A version beyond this node's clock plus
//! [`CLOCK_ALLOWANCE_MS`] is refused (a bogus one would win over every later edit).
//!
//! Tombstones are kept for [`TOMBSTONE_DAYS`] days after the deletion, then dropped (they are
//! no longer reported, and pruned at the next write): a node kept away from its gateway for
//! longer than that could bring a deleted credential back, so re-register such a node rather
//! than start it.

pub use super::store::Credential;
use super::store::{Store, StoreError, StoredCredential};
pub use crate::credential_sync::CLOCK_ALLOWANCE_MS;
use crate::credential_sync::too_far_ahead;
use crate::protocol::CredentialStamp;
use std::collections::BTreeMap;

/// How long a deletion is kept, so nodes that were away learn of it.
pub const TOMBSTONE_DAYS: u64 = 30;
const TOMBSTONE_MS: u64 = TOMBSTONE_DAYS * 24 * 3600 * 1000;

/// A node's credentials (and deletions) by name.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "WireSet")]
pub struct CredentialSet {
    pub entries: BTreeMap<String, Credential>,
}

/// A set as peers send it: also the shape of nodes from before per-credential versions
/// (bare values and one version for the whole set).
#[derive(serde::Deserialize)]
struct WireSet {
    #[serde(default)]
    version: u64,
    entries: BTreeMap<String, StoredCredential>,
}

impl From<WireSet> for CredentialSet {
    fn from(wire: WireSet) -> Self {
        let entries = wire.entries.into_iter().map(|(name, c)| (name, c.upgrade(wire.version))).collect();
        CredentialSet { entries }
    }
}

// Hand-written so values can't reach a log line through `{:?}`.
impl std::fmt::Debug for CredentialSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSet").field("entries", &self.entries).finish()
    }
}

/// What a merge did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Names whose entry changed (set, replaced or deleted).
    pub changed: Vec<String>,
    /// Names (with the version offered) refused for a version ahead of the clock.
    pub refused: Vec<(String, u64)>,
}

impl CredentialSet {
    /// The value of a credential, unless it is unknown or deleted.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.entries.get(name).and_then(|c| c.value.as_deref())
    }

    /// The credentials that have a value, by name.
    pub fn live(&self) -> impl Iterator<Item = (&String, &Credential)> {
        self.entries.iter().filter(|(_, c)| c.value.is_some())
    }

    /// What this node reports at `now_ms`: every entry (sorted by name) but tombstones past
    /// their time.
    pub fn stamps(&self, now_ms: u64) -> Vec<CredentialStamp> {
        self.entries.iter().filter(|(_, c)| !expired(c, now_ms)).map(|(name, c)| stamp(name, c)).collect()
    }

    /// The newest version of any entry (0 when empty).
    pub fn newest_version(&self) -> u64 {
        self.entries.values().map(|c| c.version).max().unwrap_or(0)
    }

    /// Merges `other` in, per name: the higher [`rank`] wins. Entries whose version is ahead
    /// of `now_ms` by more than the allowance are refused (and listed); expired tombstones
    /// are dropped. Commutative and idempotent for accepted entries.
    pub fn merge(&mut self, other: &CredentialSet, now_ms: u64) -> Merged {
        let mut merged = Merged::default();
        for (name, theirs) in &other.entries {
            if too_far_ahead(theirs.version, now_ms) {
                merged.refused.push((name.clone(), theirs.version));
                continue;
            }
            if validate(name).is_err() {
                continue;
            }
            let newer = self.entries.get(name).is_none_or(|mine| rank(theirs) > rank(mine));
            if newer {
                self.entries.insert(name.clone(), theirs.clone());
                merged.changed.push(name.clone());
            }
        }
        self.prune(now_ms);
        merged
    }

    /// Drops tombstones past their time.
    pub fn prune(&mut self, now_ms: u64) {
        self.entries.retain(|_, c| !expired(c, now_ms));
    }
}

/// The total order of two writes of one name (the higher wins): version, origin, deletion
/// (as [`crate::credential_sync::rank`] orders what nodes report), then the value, so even
/// equal stamps with different values end the same on every node.
pub fn rank(c: &Credential) -> (u64, &str, bool, Option<&str>) {
    (c.version, c.origin.as_str(), c.value.is_none(), c.value.as_deref())
}

fn stamp(name: &str, c: &Credential) -> CredentialStamp {
    CredentialStamp {
        name: name.to_owned(),
        version: c.version,
        origin: c.origin.clone(),
        deleted: c.value.is_none(),
    }
}

fn expired(c: &Credential, now_ms: u64) -> bool {
    c.value.is_none() && c.version.saturating_add(TOMBSTONE_MS) < now_ms
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
    Ok(CredentialSet { entries: store.secrets()?.credentials })
}

/// Sets (or replaces) one credential; returns its new version.
pub fn set(store: &Store, name: &str, value: &str) -> Result<u64, CredentialError> {
    validate(name)?;
    if value.is_empty() {
        return Err(CredentialError::EmptyValue);
    }
    change(store, name, Some(value.to_owned()))
}

/// Deletes one credential (it stays as a tombstone, so the other nodes delete it too);
/// returns the tombstone's version.
pub fn delete(store: &Store, name: &str) -> Result<u64, CredentialError> {
    change(store, name, None)
}

fn change(store: &Store, name: &str, value: Option<String>) -> Result<u64, CredentialError> {
    let mut secrets = store.secrets()?;
    let previous = secrets.credentials.get(name);
    if value.is_none() && previous.is_none_or(|c| c.value.is_none()) {
        return Err(CredentialError::Unknown(name.to_owned()));
    }
    // The clock (milliseconds), and above the name's previous version, so this write wins
    // everywhere. A previous version ahead of the clock was refused by every peer: not
    // followed, or this name could never sync again.
    let now = super::unix_millis();
    let previous = previous.map_or(0, |c| c.version);
    let version = if too_far_ahead(previous, now) { now } else { previous.saturating_add(1).max(now) };
    let origin = store.settings().map(|s| s.node_name).unwrap_or_default();
    secrets.credentials.insert(name.to_owned(), Credential { version, origin, value });
    secrets.credentials.retain(|_, c| !expired(c, now));
    store.save_secrets(&secrets)?;
    Ok(version)
}

/// Merges a set fetched from a peer into the node's secrets (written only if something
/// changed); returns the set now held and what the merge did.
pub fn merge(store: &Store, set: &CredentialSet) -> Result<(CredentialSet, Merged), StoreError> {
    let mut secrets = store.secrets()?;
    let mut mine = CredentialSet { entries: std::mem::take(&mut secrets.credentials) };
    let before = mine.clone();
    let merged = mine.merge(set, super::unix_millis());
    if mine != before {
        secrets.credentials.clone_from(&mine.entries);
        store.save_secrets(&secrets)?;
    }
    Ok((mine, merged))
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

    const NOW: u64 = 1_800_000_000_000;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.save_secrets(&Secrets::default()).unwrap();
        (dir, store)
    }

    fn entry(version: u64, origin: &str, value: Option<&str>) -> Credential {
        Credential { version, origin: origin.into(), value: value.map(str::to_owned) }
    }

    fn set_of(entries: &[(&str, Credential)]) -> CredentialSet {
        CredentialSet { entries: entries.iter().map(|(n, c)| ((*n).to_owned(), c.clone())).collect() }
    }

    fn merged(a: &CredentialSet, b: &CredentialSet) -> CredentialSet {
        let mut out = a.clone();
        out.merge(b, NOW);
        out
    }

    #[test]
    fn set_and_delete_give_each_name_its_own_version_and_keep_a_tombstone() {
        let (_dir, store) = store();
        let before = super::super::unix_millis();
        let v1 = set(&store, "warehouse", "p@ss").unwrap();
        let v2 = set(&store, "lake", "key").unwrap();
        assert!(v1 >= before, "versions follow the clock");
        let v3 = delete(&store, "warehouse").unwrap();
        assert!(v3 > v1);
        let set_now = load(&store).unwrap();
        assert_eq!(set_now.live().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["lake"]);
        assert_eq!(set_now.entries["lake"].version, v2);
        assert_eq!(set_now.entries["warehouse"].value, None, "a deletion is kept as a tombstone");
        assert!(matches!(delete(&store, "warehouse"), Err(CredentialError::Unknown(_))));
        assert!(matches!(delete(&store, "nope"), Err(CredentialError::Unknown(_))));
        assert!(matches!(set(&store, "bad name", "x"), Err(CredentialError::BadName(_))));
        assert!(set(&store, "warehouse", "again").unwrap() > v3);
    }

    #[test]
    fn a_version_ahead_of_the_clock_is_not_followed_by_the_next_edit() {
        let (_dir, store) = store();
        let far = super::super::unix_millis() + 10 * 365 * 24 * 3600 * 1000;
        store
            .save_secrets(&Secrets {
                credentials: BTreeMap::from([("db".into(), entry(far, "", Some("old")))]),
                ..Secrets::default()
            })
            .unwrap();
        let version = set(&store, "db", "new").unwrap();
        assert!(version < far && !too_far_ahead(version, super::super::unix_millis()));
    }

    #[test]
    fn merging_keeps_the_higher_version_of_each_name_and_is_commutative_and_idempotent() {
        let a =
            set_of(&[("db", entry(NOW - 10, "n1", Some("a1"))), ("lake", entry(NOW - 5, "n1", Some("l1")))]);
        let b = set_of(&[("db", entry(NOW - 3, "n2", Some("a2"))), ("s3", entry(NOW - 7, "n2", Some("s")))]);
        let ab = merged(&a, &b);
        assert_eq!(ab, merged(&b, &a));
        assert_eq!(merged(&ab, &a), ab);
        assert_eq!(merged(&ab, &ab), ab);
        assert_eq!(ab.value("db"), Some("a2"), "the later edit of one name wins");
        assert_eq!(ab.value("lake"), Some("l1"), "edits of different names both survive");
        assert_eq!(ab.value("s3"), Some("s"));
        let c = set_of(&[("lake", entry(NOW - 1, "n3", Some("l3")))]);
        assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    }

    #[test]
    fn a_tombstone_deletes_older_values_and_loses_to_newer_ones() {
        let value = set_of(&[("db", entry(NOW - 10, "n1", Some("v")))]);
        let tombstone = set_of(&[("db", entry(NOW - 5, "n2", None))]);
        let newer = set_of(&[("db", entry(NOW - 1, "n1", Some("w")))]);
        assert_eq!(merged(&value, &tombstone), tombstone);
        assert_eq!(merged(&tombstone, &value), tombstone);
        assert_eq!(merged(&tombstone, &newer).value("db"), Some("w"));
        let mut merge = value.clone();
        assert_eq!(merge.merge(&tombstone, NOW).changed, ["db"]);
        assert_eq!(merge.value("db"), None);
        assert!(merge.stamps(NOW)[0].deleted);
    }

    #[test]
    fn tombstones_are_dropped_after_their_time() {
        let old = set_of(&[("db", entry(NOW - TOMBSTONE_MS - 1, "n1", None))]);
        assert!(old.stamps(NOW).is_empty(), "an expired tombstone is not reported");
        let mut mine = set_of(&[("db", entry(NOW - TOMBSTONE_MS - 10, "n2", Some("v")))]);
        mine.merge(&old, NOW);
        assert!(mine.entries.is_empty(), "the deletion still applies, and its tombstone goes");
    }

    #[test]
    fn a_tie_goes_the_same_way_on_every_node() {
        let one = set_of(&[("db", entry(NOW, "n1", Some("x")))]);
        let two = set_of(&[("db", entry(NOW, "n2", Some("y")))]);
        assert_eq!(merged(&one, &two), merged(&two, &one));
        assert_eq!(merged(&one, &two).value("db"), Some("y"), "the higher origin wins a tie");
        let deleted = set_of(&[("db", entry(NOW, "n1", None))]);
        assert_eq!(merged(&one, &deleted), merged(&deleted, &one));
        let same_stamp = set_of(&[("db", entry(NOW, "n1", Some("z")))]);
        assert_eq!(merged(&one, &same_stamp), merged(&same_stamp, &one));
    }

    #[test]
    fn a_version_ahead_of_the_clock_is_refused_and_the_rest_merges() {
        let mut mine = set_of(&[("db", entry(NOW - 10, "n1", Some("v")))]);
        let theirs = set_of(&[
            ("db", entry(u64::MAX, "n2", Some("frozen"))),
            ("lake", entry(NOW + CLOCK_ALLOWANCE_MS + 1, "n2", Some("early"))),
            ("s3", entry(NOW + CLOCK_ALLOWANCE_MS, "n2", Some("in time"))),
        ]);
        let merge = mine.merge(&theirs, NOW);
        assert_eq!(
            merge.refused,
            [("db".to_owned(), u64::MAX), ("lake".to_owned(), NOW + CLOCK_ALLOWANCE_MS + 1)]
        );
        assert_eq!(merge.changed, ["s3"]);
        assert_eq!(mine.value("db"), Some("v"));
        assert_eq!(mine.value("lake"), None);
    }

    #[test]
    fn merging_into_the_store_writes_only_a_change() {
        let (_dir, store) = store();
        set(&store, "a", "1").unwrap();
        let before = store.secrets_modified();
        let (held, done) = merge(&store, &load(&store).unwrap()).unwrap();
        assert!(done.changed.is_empty());
        assert_eq!(store.secrets_modified(), before);
        let newer = set_of(&[("b", entry(super::super::unix_millis(), "n2", Some("2")))]);
        let (held_now, done) = merge(&store, &newer).unwrap();
        assert_eq!(done.changed, ["b"]);
        assert_eq!(load(&store).unwrap(), held_now);
        assert_eq!(held_now.value("a"), held.value("a"));
    }

    #[test]
    fn a_set_crosses_the_wire_whole_and_never_shows_a_value_in_debug() {
        let set = set_of(&[("db", entry(7, "n1", Some("hunter2"))), ("gone", entry(8, "n1", None))]);
        let wire = serde_json::to_string(&set).unwrap();
        assert_eq!(serde_json::from_str::<CredentialSet>(&wire).unwrap(), set);
        assert!(!format!("{set:?}").contains("hunter2"));
    }

    #[test]
    fn a_set_from_a_node_before_per_credential_versions_opens_with_its_version() {
        let old = serde_json::json!({"version": 9, "entries": {"db": "hunter2"}});
        let set: CredentialSet = serde_json::from_value(old).unwrap();
        assert_eq!(set, set_of(&[("db", entry(9, "", Some("hunter2")))]));
    }
}
