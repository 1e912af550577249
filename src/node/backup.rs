//! Backups of a node's state (settings, machine id, secrets: node token, peer-channel key pair,
//! credentials, certificate), so a machine can be rebuilt or replaced without registering
//! again. The file is sealed with ChaCha20-Poly1305 under a key derived from the backup
//! password with Argon2id; its header says how, so later versions can still read it.

use super::store::{self, NodeSettings, Secrets, Store, StoreError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use std::path::Path;

const FORMAT: &str = "gatehouse-node-backup";
/// Argon2id cost: OWASP's minimum for interactive use (19 MiB, 2 passes).
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("can't {action} {}: {reason}", path.display())]
    Io { action: &'static str, path: std::path::PathBuf, reason: std::io::Error },
    #[error("{} is not a Gatehouse node backup (or it is damaged)", path.display())]
    NotABackup { path: std::path::PathBuf },
    #[error("wrong backup password for {}; nothing was restored", path.display())]
    WrongPassword { path: std::path::PathBuf },
    #[error("the backup password is too short; use at least 8 characters")]
    WeakPassword,
    #[error(
        "this machine is already registered as '{name}' with gateway '{gateway}'; unregister it first, then restore"
    )]
    AlreadyRegistered { name: String, gateway: String },
    #[error("can't derive the backup key: {0}")]
    Kdf(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    kdf: String,
    memory_kib: u32,
    passes: u32,
    salt: String,
    sealed: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    settings: NodeSettings,
    secrets: Secrets,
    machine_id: String,
}

/// Writes a backup of the node in `store` to `out` (owner-only, atomically); a file there is
/// replaced only if `replace`, else the write fails and leaves it.
pub fn backup(store: &Store, out: &Path, password: &str, replace: bool) -> Result<(), BackupError> {
    if password.chars().count() < 8 {
        return Err(BackupError::WeakPassword);
    }
    let contents =
        Contents { settings: store.settings()?, secrets: store.secrets()?, machine_id: store.machine_id()? };
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let key = derive(password, &salt, MEMORY_KIB, PASSES)?;
    let json = serde_json::to_vec(&contents).map_err(|e| BackupError::Kdf(e.to_string()))?;
    let header = Header {
        format: FORMAT.to_owned(),
        version: 1,
        kdf: "argon2id".to_owned(),
        memory_kib: MEMORY_KIB,
        passes: PASSES,
        salt: STANDARD.encode(salt),
        sealed: STANDARD.encode(store::seal(&key, &json)),
    };
    let text = serde_json::to_vec_pretty(&header).map_err(|e| BackupError::Kdf(e.to_string()))?;
    let io = |reason| BackupError::Io { action: "write", path: out.to_owned(), reason };
    if replace {
        return crate::machine::write_atomic(out, &text).map_err(io);
    }
    crate::machine::PendingFile::create(out).and_then(|file| file.commit_new(&text)).map_err(io)
}

/// Restores the node in `file` into `store`. Refuses a registered store; a wrong password or a
/// damaged file changes nothing.
pub fn restore(store: &Store, file: &Path, password: &str) -> Result<NodeSettings, BackupError> {
    if let Ok(settings) = store.settings() {
        return Err(BackupError::AlreadyRegistered {
            name: settings.node_name,
            gateway: settings.gateway_name,
        });
    }
    let not_a_backup = || BackupError::NotABackup { path: file.to_owned() };
    let bytes = std::fs::read(file).map_err(|reason| BackupError::Io {
        action: "read",
        path: file.to_owned(),
        reason,
    })?;
    let header: Header = serde_json::from_slice(&bytes).map_err(|_| not_a_backup())?;
    if header.format != FORMAT || header.version != 1 || header.kdf != "argon2id" {
        return Err(not_a_backup());
    }
    // Bounds on the cost a file may ask for, so a crafted backup can't exhaust the machine.
    if header.memory_kib > 1024 * 1024 || header.passes > 16 {
        return Err(not_a_backup());
    }
    let salt = STANDARD.decode(&header.salt).map_err(|_| not_a_backup())?;
    let sealed = STANDARD.decode(&header.sealed).map_err(|_| not_a_backup())?;
    let key = derive(password, &salt, header.memory_kib, header.passes)?;
    let json =
        store::open(&key, &sealed).ok_or_else(|| BackupError::WrongPassword { path: file.to_owned() })?;
    let contents: Contents = serde_json::from_slice(&json).map_err(|_| not_a_backup())?;
    store.ensure_dir()?;
    store.restore_machine_id(&contents.machine_id)?;
    store.save_secrets(&contents.secrets)?;
    store.save_settings(&contents.settings)?;
    Ok(contents.settings)
}

fn derive(password: &str, salt: &[u8], memory_kib: u32, passes: u32) -> Result<[u8; 32], BackupError> {
    let params =
        argon2::Params::new(memory_kib, passes, 1, Some(32)).map_err(|e| BackupError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(password.as_bytes(), salt, &mut key)
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("node"));
        let settings = NodeSettings { concurrency_limit: Some(3), ..crate::node::store::tests::settings() };
        store.save_settings(&settings).unwrap();
        let mut secrets = Secrets { node_token: "ghn_n_token".into(), ..Secrets::default() };
        secrets.credentials.insert(
            "db".into(),
            crate::node::store::Credential {
                version: 1,
                origin: String::new(),
                value: Some("hunter2".into()),
            },
        );
        store.save_secrets(&secrets).unwrap();
        (dir, store)
    }

    #[test]
    fn a_backup_restores_the_node_on_another_data_dir() {
        let (dir, store) = registered();
        let file = dir.path().join("node.backup");
        backup(&store, &file, "correct horse", false).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("ghn_n_token"),
            "the backup holds secrets in clear"
        );
        let target = Store::new(dir.path().join("rebuilt"));
        let settings = restore(&target, &file, "correct horse").unwrap();
        assert_eq!(settings, store.settings().unwrap());
        assert_eq!(target.secrets().unwrap(), store.secrets().unwrap());
        assert_eq!(target.machine_id().unwrap(), store.machine_id().unwrap());
    }

    #[test]
    fn a_wrong_password_restores_nothing() {
        let (dir, store) = registered();
        let file = dir.path().join("node.backup");
        backup(&store, &file, "correct horse", false).unwrap();
        let target = Store::new(dir.path().join("rebuilt"));
        assert!(matches!(restore(&target, &file, "wrong horse"), Err(BackupError::WrongPassword { .. })));
        assert!(!target.is_registered());
    }

    #[test]
    fn a_registered_node_is_not_overwritten() {
        let (dir, store) = registered();
        let file = dir.path().join("node.backup");
        backup(&store, &file, "correct horse", false).unwrap();
        assert!(matches!(
            restore(&store, &file, "correct horse"),
            Err(BackupError::AlreadyRegistered { .. })
        ));
    }

    #[test]
    fn damaged_files_and_short_passwords_are_refused() {
        let (dir, store) = registered();
        assert!(matches!(
            backup(&store, &dir.path().join("b"), "short", false),
            Err(BackupError::WeakPassword)
        ));
        let file = dir.path().join("garbage");
        std::fs::write(&file, b"{\"format\": 1}").unwrap();
        let target = Store::new(dir.path().join("rebuilt"));
        assert!(matches!(restore(&target, &file, "whatever!"), Err(BackupError::NotABackup { .. })));
    }
}
