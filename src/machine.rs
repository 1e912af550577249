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
pub fn owner_only_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
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
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"));
    }
    let temp = dir.join(format!(".{name}.{}.tmp", crate::encoding::random_hex::<6>()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        let written = write(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        // The rename itself must survive a crash too.
        std::fs::File::open(dir)?.sync_all()?;
        Ok(written)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
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
}
