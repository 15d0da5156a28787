//! cli: the command line — subcommands and their options, with the help text users read.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::hsm::KeyAlgorithm;

/// signetd: a signing daemon whose keys never leave the PKCS#11 token.
///
/// Configuration comes from one TOML file (--config or SIGNETD_CONFIG) and SIGNETD_* variables,
/// with `__` between nesting levels: SIGNETD_DATABASE__URL, SIGNETD_LISTEN__API,
/// SIGNETD_HSM__TOKENS__CA__PIN_FILE. Token PINs come from a file, an environment variable or a
/// systemd credential, never from the command line.
#[derive(Debug, Parser)]
#[command(name = "signetd", version, max_term_width = 100)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(
        long,
        short,
        global = true,
        env = "SIGNETD_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create what is missing: the CA key (in the token) and certificate, the server's TLS key
    /// (in the token) and certificate, and the first admin account with a client certificate.
    ///
    /// Idempotent: a second run changes nothing and says so. The admin's private key is
    /// generated for the operator and written with mode 0600.
    Init {
        /// Where to write ca.pem, admin.crt and admin.key (default: state_dir from the
        /// configuration).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },

    /// Serve the mTLS API, the public listener and the metrics listener until SIGTERM/SIGINT,
    /// then drain in-flight requests.
    Serve,

    /// Start a complete development instance in DIR: SoftHSM2 tokens, a private PostgreSQL,
    /// init, serve. Prints curl lines that work as printed and writes DIR/env for scripts.
    /// Running it again reuses DIR.
    Dev {
        /// The instance directory.
        #[arg(long, default_value = ".signetd-dev", value_name = "DIR")]
        dir: PathBuf,
    },

    /// Audit log tools for operators and auditors.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Account tools for operators (the API manages accounts too).
    #[command(subcommand)]
    Account(AccountCommand),

    /// Measure the raw token ceiling: C_Sign throughput per algorithm with 1..N sessions, no
    /// HTTP. Uses session keys that disappear afterwards.
    HsmBench {
        /// Configured token to measure.
        #[arg(long, default_value = "signing")]
        token: String,
        /// Session counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        sessions: Vec<usize>,
        /// Algorithms, comma-separated (rsa-2048, rsa-3072, rsa-4096, ec-p256, ec-p384, ed25519).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ec-p256,ec-p384,ed25519,rsa-2048"
        )]
        algorithms: Vec<KeyAlgorithm>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `signetd audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the whole tree from the database, check every checkpoint's signature, root and
    /// consistency with the previous one, and name the first bad entry. Exits non-zero on any
    /// finding.
    Verify,
    /// Check offline, without the database, that one entry is in the tree a signed checkpoint
    /// commits to.
    VerifyProof {
        /// The checkpoint: the signed note text, or the JSON of GET /v1/audit/checkpoint.
        #[arg(long, value_name = "FILE")]
        checkpoint: PathBuf,
        /// The audit public key: PEM, or the JSON of GET /v1/audit/key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The key (and log origin) name, when --key is PEM.
        #[arg(long)]
        name: Option<String>,
        /// The entry: one element of GET /v1/audit/entries (JSON with `leaf`).
        #[arg(long, value_name = "FILE")]
        entry: PathBuf,
        /// The inclusion proof: the JSON of GET /v1/audit/proof/inclusion.
        #[arg(long, value_name = "FILE")]
        proof: PathBuf,
    },
}

/// `signetd account ...`
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account with a client certificate whose key is generated here and written
    /// with mode 0600 (for bootstrapping, e.g. the first auditor).
    Create {
        /// Account name.
        name: String,
        /// Roles: `admin`, `cert-manager`, `auditor`, `signer:RING`. Repeat or comma-separate.
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Where to write NAME.crt and NAME.key.
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// Certificate lifetime in days.
        #[arg(long, default_value_t = 365)]
        validity_days: u32,
    },
}
