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
