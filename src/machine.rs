//! What the hub and the node both need from this machine, and nothing more: its host name,
//! owner-only directories, and files written atomically. Neutral ground: it knows neither
//! the hub nor the node, so both may use it without depending on each other.
//!
//! **Invariant:** a file written here is either its old or its new content, never a mix, and
//! readable by its owner only.

use std::io::Write as _;
use std::path::Path;

/// The machine's host name: the default node and gateway name, and how an address on every
/// interface is named.
pub fn host_name() -> String {
    sysinfo::System::host_name().ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "gatehouse-node".to_owned())
}

/// Creates `dir` (and its parents) if needed and makes it readable by its owner only: data
/// dirs hold tokens, keys and databases.
///
/// Only a folder that is Gatehouse's to lock down is changed: one made here, or one that
/// exists, belongs to the user running this, and is not a system folder (`/`, `/etc`, `/usr`,
/// `/var`, `/tmp`, …) or the home folder. Any other is refused, unchanged, with a sentence
/// naming what to do (it is mostly `GATEHOUSE_HOME` set to the wrong place).
///
/// One mode is kept as it is: [`SOCKET_GROUP_DIR_MODE`] (0710), which a node service whose
/// control socket is shared with a group set on purpose (`node run --control-group`): the
/// group may pass through to the socket by its name, but can't list or read anything.
pub fn owner_only_dir(dir: &Path) -> std::io::Result<()> {
    let found = match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            may_lock_down(dir)?;
            Some(meta)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            None
        }
        Err(e) => return Err(e),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let shared = found.is_some_and(|m| m.permissions().mode() & 0o7777 == SOCKET_GROUP_DIR_MODE);
        if !shared {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    #[cfg(not(unix))]
    let _ = found;
    Ok(())
}

/// The mode of a data dir whose control socket its group may reach: the owner's, plus
/// passing through (no listing, no reading) for the group.
pub const SOCKET_GROUP_DIR_MODE: u32 = 0o710;

/// Folders a data dir must never be: making one of them owner-only would break the machine.
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/local",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/tmp",
    "/var/cache",
];

/// Refuses an existing `dir` that isn't Gatehouse's to make owner-only (see [`owner_only_dir`]).
fn may_lock_down(dir: &Path) -> std::io::Result<()> {
    let refuse = |why: String| {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} {why}; Gatehouse makes its data dir readable by its owner only, so it won't use that folder: set GATEHOUSE_HOME to a folder of Gatehouse's own (e.g. /var/lib/gatehouse, which it creates) and try again",
                dir.display()
            ),
        ))
    };
    let real = dir.canonicalize()?;
    let meta = std::fs::metadata(&real)?;
    if !meta.is_dir() {
        return refuse("is not a folder".to_owned());
    }
    if SYSTEM_DIRS.iter().any(|system| real == Path::new(system)) {
        return refuse("is a system folder".to_owned());
    }
    let home =
        std::env::var_os("HOME").filter(|h| !h.is_empty()).and_then(|h| Path::new(&h).canonicalize().ok());
    if home.is_some_and(|home| home == real) {
        return refuse("is your home folder".to_owned());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        // The owner of /proc/self is the user this process runs as (Linux).
        if let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid())
            && meta.uid() != me
        {
            return refuse(format!("belongs to another user (uid {}, not {me})", meta.uid()));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` so that `path` is either the old or the new content, never a mix:
/// a temp file beside it (owner-only), fsync, rename over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Like [`write_atomic`], for content written piece by piece (a zip, say): `write` fills the
/// temp file, which is then synced and renamed over `path`. Answers what `write` returned.
/// On any failure the temp file is removed and `path` is left as it was.
pub fn write_atomic_with<T>(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mut pending = PendingFile::create(path)?;
    let written = write(&mut pending.file)?;
    pending.commit()?;
    Ok(written)
}

/// A file of [`write_atomic`]'s kind opened before its content exists: the owner-only temp
/// file beside `path` is made at once, so a place that can't be written is known before
/// anything that can't be undone (a token made at the hub, say). Dropped without
/// [`PendingFile::commit`], the temp file goes and `path` stays as it was.
pub struct PendingFile {
    temp: std::path::PathBuf,
    path: std::path::PathBuf,
    file: std::fs::File,
    committed: bool,
}

impl PendingFile {
    /// Opens the temp file beside `path` (`.NAME.RANDOM.tmp`, mode 0600, never an existing one).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let dir = parent_of(path);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"));
        }
        let temp = dir.join(format!(".{name}.{}.tmp", crate::encoding::random_hex::<6>()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&temp)?;
        Ok(Self { temp, path: path.to_owned(), file, committed: false })
    }

    /// Writes `bytes` and commits.
    pub fn commit_bytes(mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.commit()
    }

    /// Like [`PendingFile::commit_bytes`], but never replaces a file at `path`: one that is
    /// there (even made a moment ago) fails the commit with `AlreadyExists`, and stays.
    pub fn commit_new(mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.sync_all()?;
        // A hard link is made only where no file is: no check-then-rename race.
        match std::fs::hard_link(&self.temp, &self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(e),
            // A file system without hard links (FAT on a USB stick): check, then rename.
            Err(_) if std::fs::symlink_metadata(&self.path).is_ok() => {
                return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
            }
            Err(_) => std::fs::rename(&self.temp, &self.path)?,
        }
        std::fs::File::open(parent_of(&self.path))?.sync_all()
    }

    /// Syncs the temp file and renames it over `path` (then syncs the directory).
    pub fn commit(mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.temp, &self.path)?;
        self.committed = true;
        // The rename itself must survive a crash too.
        std::fs::File::open(parent_of(&self.path))?.sync_all()
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_leave_no_temp_files_and_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn a_failed_piecewise_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"old").unwrap();
        let failed = write_atomic_with(&path, |file| {
            file.write_all(b"half")?;
            Err::<(), _>(std::io::Error::other("the source went away"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_owner_only_dir_is_made_with_its_parents() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("a/b");
        owner_only_dir(&inner).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&inner).unwrap().permissions().mode() & 0o777, 0o700);
        }
    }

    #[test]
    fn system_folders_and_other_users_folders_are_refused() {
        // Only the check: a regression must not get to chmod a real system folder.
        for system in ["/", "/etc", "/usr", "/tmp", "/var/lib"] {
            let error = may_lock_down(Path::new(system)).unwrap_err();
            assert!(error.to_string().contains("is a system folder"), "{system}: {error}");
            assert!(error.to_string().contains("GATEHOUSE_HOME"), "{error}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(owner_only_dir(&file).unwrap_err().to_string().contains("is not a folder"));
        // An existing folder of ours is fine, and made owner-only.
        owner_only_dir(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
            assert_eq!(std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777, 0o700);
            // A dir opened to its group on purpose (only passing through) stays so; any
            // other group or world bit is taken away.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o710)).unwrap();
            owner_only_dir(dir.path()).unwrap();
            assert_eq!(std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777, 0o710);
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
            owner_only_dir(dir.path()).unwrap();
            assert_eq!(std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777, 0o700);
            // Someone else's folder, when we may hand one over (as root): refused, unchanged.
            if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
                let theirs = dir.path().join("theirs");
                std::fs::create_dir(&theirs).unwrap();
                std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
                std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
                let error = owner_only_dir(&theirs).unwrap_err();
                assert!(error.to_string().contains("belongs to another user"), "{error}");
                assert_eq!(std::fs::metadata(&theirs).unwrap().permissions().mode() & 0o777, 0o755);
            }
        }
    }
}
