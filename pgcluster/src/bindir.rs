//! Finding the PostgreSQL server programs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// The environment variable that overrides [`find_bindir`].
pub const BINDIR_ENV: &str = "SIGNETD_PG_BINDIR";

/// Where Debian and Ubuntu install one directory per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The programs a cluster needs from the server installation.
const SERVER_PROGRAMS: [&str; 3] = ["initdb", "postgres", "pg_ctl"];

/// Finds the directory holding `initdb`, `postgres` and `pg_ctl`.
///
/// In order: `SIGNETD_PG_BINDIR` (when set, the only place looked at), the
/// highest `/usr/lib/postgresql/<N>/bin` that holds all three programs,
/// then `pg_config --bindir`. The Debian directories come before `PATH` on
/// purpose: `/usr/bin` holds wrappers (and some machines have other
/// wrappers in `/usr/local/bin`) rather than the programs themselves.
pub fn find_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_server_programs(&dir) {
            Ok(dir)
        } else {
            Err(Error::BinariesNotFound {
                searched: format!("{BINDIR_ENV}={}", dir.display()),
            })
        };
    }
    if let Some(dir) = highest_debian_bindir() {
        return Ok(dir);
    }
    if let Some(dir) = pg_config_bindir().filter(|dir| has_server_programs(dir)) {
        return Ok(dir);
    }
    Err(Error::BinariesNotFound {
        searched: format!("{DEBIAN_ROOT}/<version>/bin, `pg_config --bindir`"),
    })
}

fn has_server_programs(dir: &Path) -> bool {
    SERVER_PROGRAMS
        .iter()
        .all(|program| dir.join(program).is_file())
}

fn highest_debian_bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(DEBIAN_ROOT)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server_programs(bin))
        .collect();
    versions.sort_by_key(|(version, _)| *version);
    versions.pop().map(|(_, bin)| bin)
}

fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}
