//! Who runs the server: this process's user, or — when that is root, which
//! PostgreSQL refuses — the `postgres` system user, with the directory
//! permissions that user needs.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The system user the server runs as when this process is root.
const SERVER_USER: &str = "postgres";

/// The unprivileged user that initdb, pg_ctl and postgres run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: PathBuf,
    /// Primary and supplementary groups, for the traversal check.
    groups: Vec<u32>,
}

/// Whether this process runs with effective uid 0.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory
    // of ours (POSIX: "shall always be successful").
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    euid == 0
}

/// The `postgres` user from /etc/passwd, with its groups from /etc/group.
pub(crate) fn server_user() -> Result<RunAs> {
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| Error::io("reading /etc/passwd to find the postgres user", e))?;
    let (uid, gid, home) = passwd
        .lines()
        .find_map(|line| parse_passwd_line(line, SERVER_USER))
        .ok_or(Error::NoPostgresUser)?;
    let mut groups = vec![gid];
    // Without /etc/group only the primary group counts; the traversal check
    // then errs on the side of refusing.
    if let Ok(group) = fs::read_to_string("/etc/group") {
        groups.extend(
            group
                .lines()
                .filter_map(|line| parse_group_line(line, SERVER_USER)),
        );
    }
    Ok(RunAs {
        uid,
        gid,
        home,
        groups,
    })
}

/// `name:pw:uid:gid:gecos:home:shell` → (uid, gid, home) for `user`.
fn parse_passwd_line(line: &str, user: &str) -> Option<(u32, u32, PathBuf)> {
    let mut fields = line.split(':');
    if fields.next()? != user {
        return None;
    }
    let _password = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    let _gecos = fields.next()?;
    let home = PathBuf::from(fields.next()?);
    Some((uid, gid, home))
}

/// `name:pw:gid:member,member` → gid, if `user` is a member.
fn parse_group_line(line: &str, user: &str) -> Option<u32> {
    let mut fields = line.split(':');
    let _name = fields.next()?;
    let _password = fields.next()?;
    let gid = fields.next()?.parse().ok()?;
    let members = fields.next()?;
    members.split(',').any(|m| m.trim() == user).then_some(gid)
}

impl RunAs {
    /// Whether this user may search (traverse) a directory with these
    /// owner, group and mode bits, by the POSIX class rules (owner class
    /// first, then group, then others; ACLs are not consulted).
    fn can_traverse(&self, meta: &fs::Metadata) -> bool {
        let mode = meta.mode();
        if meta.uid() == self.uid {
            mode & 0o100 != 0
        } else if self.groups.contains(&meta.gid()) {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }

    /// Checks, before anything is created, that the parents of `dir` that
    /// already exist let this user through (`dir` itself is handed over).
    pub(crate) fn check_existing_parents(&self, dir: &Path) -> Result<()> {
        let Some(existing) = dir.ancestors().skip(1).find(|path| path.exists()) else {
            return Ok(());
        };
        let existing = fs::canonicalize(existing)
            .map_err(|e| Error::io(format!("resolving {}", existing.display()), e))?;
        existing
            .ancestors()
            .try_for_each(|parent| self.check_traversable(parent))
    }

    /// Makes every parent of `dir` traversable for this user: directories
    /// this process just created are opened to 0755; an existing one that
    /// blocks the way is an error (it is not ours to loosen).
    pub(crate) fn open_path_to(&self, dir: &Path, created: &[PathBuf]) -> Result<()> {
        for parent in dir.ancestors().skip(1) {
            if created.iter().any(|c| c == parent) {
                set_mode(parent, 0o755)?;
            }
            self.check_traversable(parent)?;
        }
        Ok(())
    }

    fn check_traversable(&self, path: &Path) -> Result<()> {
        let meta = fs::metadata(path)
            .map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?;
        if self.can_traverse(&meta) {
            Ok(())
        } else {
            Err(Error::NotTraversable {
                path: path.to_path_buf(),
                mode: meta.mode() & 0o7777,
            })
        }
    }

    /// Hands a directory or file of the cluster over to this user.
    pub(crate) fn take(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| Error::io(format!("changing the owner of {}", path.display()), e))
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting mode {mode:o} on {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group_lines() {
        let line = "postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash";
        assert_eq!(
            parse_passwd_line(line, "postgres"),
            Some((101, 104, PathBuf::from("/var/lib/postgresql")))
        );
        assert_eq!(parse_passwd_line(line, "postgre"), None);
        assert_eq!(
            parse_passwd_line("postgres:x:abc:1::/:/bin/sh", "postgres"),
            None
        );
        assert_eq!(
            parse_group_line("ssl-cert:x:103:postgres", "postgres"),
            Some(103)
        );
        assert_eq!(parse_group_line("a:x:7:bob, postgres", "postgres"), Some(7));
        assert_eq!(parse_group_line("a:x:7:postgresql", "postgres"), None);
        assert_eq!(parse_group_line("a:x:7:", "postgres"), None);
    }
}
