//! Who may use a control socket. By default only the user that runs the service (and root,
//! which can read the data dir anyway): the socket is 0600 in a 0700 data dir. A service
//! started with a control group (`node run --control-group gatehouse`, as the system unit
//! does) shares the socket, and nothing else, with that group: the socket is 0660 and of
//! that group, the data dir 0710 (the group passes through to the socket by name, but can't
//! list or read the dir), and the server also lets in a peer whose groups include it.
//!
//! The peer's user and primary group come from `SO_PEERCRED` (as the kernel recorded them at
//! `connect`); its supplementary groups from `/proc/PID/status` (`Groups:`) of the pid
//! `SO_PEERCRED` names, read only when the user and primary group didn't decide, and believed
//! only while that process still runs as the same user (`Uid:`), so a reused pid can't lend
//! another user its groups. `getgrouplist` would tell the groups the user *would* get at its
//! next login, not the ones the process has; the kernel's check of the socket file (0660)
//! uses the process's, and this check agrees with it.

use super::wire::ControlError;
use std::path::Path;

/// The group a service shares its control socket with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlGroup {
    /// As given (a name, or a number).
    pub name: String,
    pub gid: u32,
}

impl ControlGroup {
    /// The group named `name` (through the system's group database), or a numeric gid.
    pub fn lookup(name: &str) -> Result<ControlGroup, ControlError> {
        if let Ok(gid) = name.parse::<u32>() {
            return Ok(ControlGroup { name: name.to_owned(), gid });
        }
        match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Ok(ControlGroup { name: name.to_owned(), gid: group.gid.as_raw() }),
            Ok(None) => Err(ControlError::NoSuchGroup { group: name.to_owned() }),
            Err(e) => Err(ControlError::GroupLookup { group: name.to_owned(), reason: e.to_string() }),
        }
    }
}

/// Who connected, as far as the check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups; empty when not read.
    pub groups: Vec<u32>,
}

/// Whether `peer` may use the socket of a service run by `owner_uid`, shared with `group`
/// (if any): the same user, root, or (with a group) a member of it.
pub fn may_connect(peer: &Peer, owner_uid: u32, group: Option<u32>) -> bool {
    if peer.uid == owner_uid || peer.uid == 0 {
        return true;
    }
    group.is_some_and(|gid| peer.gid == gid || peer.groups.contains(&gid))
}

/// Whether the user and primary group alone decide (then the groups aren't read).
pub fn decided_without_groups(uid: u32, gid: u32, owner_uid: u32, group: Option<u32>) -> bool {
    uid == owner_uid || uid == 0 || group.is_none() || group == Some(gid)
}

/// The supplementary groups of process `pid`, if it still runs as `uid`; empty otherwise.
pub fn supplementary_groups(pid: u32, uid: u32) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")) else {
        return Vec::new();
    };
    groups_of_status(&text, uid)
}

/// `Groups:` of a `/proc/PID/status` text, if its `Uid:` line (real, effective, saved, fs)
/// has `uid` as its effective user; empty otherwise.
fn groups_of_status(text: &str, uid: u32) -> Vec<u32> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::split_whitespace);
    let effective = field("Uid:").and_then(|mut ids| ids.nth(1)).and_then(|id| id.parse::<u32>().ok());
    if effective != Some(uid) {
        return Vec::new();
    }
    field("Groups:").map(|ids| ids.filter_map(|id| id.parse().ok()).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer { uid, gid, groups: groups.to_vec() }
    }

    #[test]
    fn the_owner_root_and_members_of_the_shared_group_get_in_and_no_one_else() {
        let (owner, group) = (990, Some(990));
        assert!(may_connect(&peer(990, 990, &[]), owner, group), "the service's own user");
        assert!(may_connect(&peer(0, 0, &[]), owner, group), "root");
        assert!(
            may_connect(&peer(1000, 1000, &[27, 990]), owner, group),
            "a member by a supplementary group"
        );
        assert!(may_connect(&peer(1000, 990, &[]), owner, group), "a member by its primary group");
        assert!(!may_connect(&peer(1000, 1000, &[27, 100]), owner, group), "an outsider");
        // Without a shared group, membership counts for nothing.
        assert!(!may_connect(&peer(1000, 990, &[990]), owner, None));
        assert!(may_connect(&peer(990, 990, &[]), owner, None));
        assert!(decided_without_groups(990, 5, owner, group));
        assert!(!decided_without_groups(1000, 1000, owner, group));
        assert!(decided_without_groups(1000, 1000, owner, None));
    }

    #[test]
    fn groups_are_believed_only_from_a_process_of_the_same_user() {
        let status = "Name:\tgatehouse\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nGroups:\t27 990 1000 \n";
        assert_eq!(groups_of_status(status, 1000), [27, 990, 1000]);
        assert!(groups_of_status(status, 1001).is_empty(), "a reused pid lent its groups");
        assert!(groups_of_status("Uid:\t1000\t1000\t1000\t1000\nGroups:\n", 1000).is_empty());
        // This process, as the kernel says.
        let me = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid = me.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().nth(1);
        let uid: u32 = uid.unwrap().parse().unwrap();
        assert_eq!(supplementary_groups(std::process::id(), uid), groups_of_status(&me, uid));
    }

    #[test]
    fn a_group_is_found_by_name_or_number_and_a_missing_one_is_named() {
        assert_eq!(ControlGroup::lookup("root").unwrap().gid, 0);
        assert_eq!(ControlGroup::lookup("4242").unwrap().gid, 4242);
        let error = ControlGroup::lookup("no-such-group-here").unwrap_err().to_string();
        assert!(error.contains("no-such-group-here"), "{error}");
    }
}
