//! Where Gatehouse keeps its files on this machine: `$GATEHOUSE_HOME`, else the platform
//! data dir (`$XDG_DATA_HOME/gatehouse`, else `~/.local/share/gatehouse`).

use std::path::PathBuf;

/// The data dir; not created here.
pub fn data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("GATEHOUSE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("gatehouse");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/gatehouse")
}

/// Creates the data dir if needed, readable by its owner only.
pub fn ensure_data_dir() -> std::io::Result<PathBuf> {
    let dir = data_dir();
    crate::machine::owner_only_dir(&dir)?;
    Ok(dir)
}
