//! The crate's error type, grouped by what the caller should do: install
//! something, pick another directory, fix an argument, or read the server's
//! own diagnostics.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// Everything that can go wrong while creating, starting, stopping or
/// querying a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The PostgreSQL server programs are not installed (or not where
    /// `SIGNETD_PG_BINDIR` says).
    #[error(
        "PostgreSQL server programs (initdb, postgres, pg_ctl) not found; looked in: {searched}; \
         install the Debian package `postgresql` or set SIGNETD_PG_BINDIR"
    )]
    BinariesNotFound {
        /// The places that were tried.
        searched: String,
    },

    /// A helper program is not installed.
    #[error("`{tool}` not found; install the Debian package `{package}`")]
    ToolMissing {
        /// The program name.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },

    /// Running as root, and there is no `postgres` user to run the server as.
    #[error(
        "running as root, but PostgreSQL refuses to run as root and there is no `postgres` \
         user in /etc/passwd to run it as; run as a normal user or create the postgres user \
         (Debian package postgresql creates it)"
    )]
    NoPostgresUser,

    /// Running as root, and the `postgres` user cannot reach the cluster
    /// directory through this existing parent.
    #[error(
        "{path} (mode {mode:04o}) cannot be traversed by the `postgres` user the server runs \
         as; put the cluster under a directory it can reach (for example under /tmp) or \
         `chmod o+x {path}`"
    )]
    NotTraversable {
        /// The parent directory that blocks the way.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The directory cannot hold a cluster.
    #[error("cannot use {path} for a PostgreSQL cluster: {reason}")]
    UnusablePath {
        /// The directory.
        path: PathBuf,
        /// Why not.
        reason: String,
    },

    /// The Unix socket path would exceed what the kernel accepts.
    #[error(
        "the server socket {path} would be {len} bytes long, more than the {max} allowed; \
         use a shorter cluster directory"
    )]
    SocketPathTooLong {
        /// The socket path that would be used.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The directory holds something other than a cluster, and is not
    /// empty: it is refused rather than handed over to the `postgres` user.
    #[error(
        "{path} is not empty and not a signet-pgcluster directory (found {entry:?}); \
         use an empty or new directory"
    )]
    NotAClusterDir {
        /// The directory.
        path: PathBuf,
        /// The first unexpected entry.
        entry: String,
    },

    /// A database name outside `^[a-z_][a-z0-9_]*$` (at most 63 bytes).
    #[error(
        "invalid database name {name:?}: use 1 to 63 of a-z, 0-9 and _, not starting with a digit"
    )]
    InvalidDatabaseName {
        /// The rejected name.
        name: String,
    },

    /// A PostgreSQL program ran and reported failure.
    #[error("failed to {action} ({status}): {detail}")]
    CommandFailed {
        /// What was being attempted.
        action: String,
        /// The program's exit status.
        status: ExitStatus,
        /// Its diagnostics (stderr, then stdout).
        detail: String,
    },

    /// `pg_ctl start` failed; the server log says why.
    #[error("failed to start the PostgreSQL server: {detail}\nlast lines of {}:\n{log_tail}", log.display())]
    StartFailed {
        /// pg_ctl's diagnostics.
        detail: String,
        /// The server log file.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },

    /// A file-system operation or a process spawn failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path or program.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
