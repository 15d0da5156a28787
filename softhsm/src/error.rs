//! The crate's error type: what went wrong while preparing tokens, grouped by
//! what the caller should do about it.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// Everything that can go wrong while creating token directories, tokens and
/// keys.
///
/// No variant ever carries a PIN: command lines are never copied into
/// messages, and tool output is scrubbed of the PINs that were passed in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SoftHSM2 PKCS#11 module is not installed (or not where the
    /// `SIGNETD_SOFTHSM_MODULE` override says).
    #[error(
        "SoftHSM2 PKCS#11 module (libsofthsm2.so) not found; looked in: {searched}; \
         install the Debian package `softhsm2` or set SIGNETD_SOFTHSM_MODULE"
    )]
    ModuleNotFound {
        /// The places that were tried, comma-separated.
        searched: String,
    },

    /// A command-line tool this crate drives is not installed.
    #[error("`{tool}` not found on PATH; install the Debian package `{package}`")]
    ToolMissing {
        /// The program name, e.g. `pkcs11-tool`.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },

    /// A tool ran and reported failure.
    #[error("`{tool}` failed to {action} ({status}): {detail}")]
    ToolFailed {
        /// The program name.
        tool: &'static str,
        /// What was being attempted, in words (never the command line).
        action: String,
        /// The tool's exit status.
        status: ExitStatus,
        /// The tool's diagnostics (stderr, or stdout when stderr was empty),
        /// with every PIN replaced by `<redacted>`.
        detail: String,
    },

    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A path cannot be written into the SoftHSM2 configuration file.
    #[error("unusable token directory {path}: {reason}")]
    InvalidPath {
        /// The offending path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: &'static str,
    },

    /// An argument (label, PIN, key id) was rejected before any tool ran.
    /// The message never repeats a PIN.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// A token with this label already exists in the directory; tokens are
    /// found by label, so a second one would be ambiguous.
    #[error("a token labelled {label:?} already exists in {dir}")]
    TokenExists {
        /// The token label.
        label: String,
        /// The token directory.
        dir: PathBuf,
    },

    /// A private key with this label already exists on the token; keys are
    /// found by label, so a second one would be ambiguous.
    #[error("token {token:?} already holds a private key labelled {label:?}")]
    KeyExists {
        /// The token label.
        token: String,
        /// The key label.
        label: String,
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
