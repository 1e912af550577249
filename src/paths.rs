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

/// Where the system service (`gatehouse-node.service`, as the package installs it) keeps its
/// data dir: the unit's `StateDirectory=gatehouse`, i.e. its `GATEHOUSE_HOME`.
pub const SERVICE_HOME: &str = "/var/lib/gatehouse";
/// The group whose members may reach the system service's control socket (the unit's
/// `node run --control-group`), and the user it runs as.
pub const SERVICE_GROUP: &str = "gatehouse";

/// The system service's data dir: `$GATEHOUSE_SERVICE_HOME`, else [`SERVICE_HOME`]. The
/// variable is for tests and packagers (a unit with another state directory); a window or
/// `node status|start|stop|restart` whose own data dir has no node looks for the service here.
pub fn service_home() -> PathBuf {
    std::env::var_os("GATEHOUSE_SERVICE_HOME")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(SERVICE_HOME), PathBuf::from)
}
