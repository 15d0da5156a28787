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

    /// Signing keys and key rings (the API manages them too). Every change is audited.
    #[command(subcommand)]
    Keys(KeysCommand),

    /// Records to be signed by batch jobs (the API adds records too).
    #[command(subcommand)]
    Records(RecordsCommand),

    /// Batch jobs: sign every unsigned record with the keys of a ring (see also /v1/jobs).
    #[command(subcommand)]
    Jobs(JobsCommand),

    /// Measure the raw token ceiling: C_Sign throughput per algorithm with 1..N sessions, no
    /// HTTP, and the software verification every signature passes. Uses session keys that
    /// disappear afterwards, or temporary token objects with `--token-keys`.
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
        /// Sign with token objects, as the daemon's keys are (destroyed afterwards), instead of
        /// session objects.
        #[arg(long)]
        token_keys: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `signetd audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the whole tree from the database, check every stored node and every
    /// checkpoint's signature, root and consistency with the previous one, and name the first
    /// bad entry. Exits non-zero on any finding.
    Verify {
        /// A checkpoint held outside the database (the signed note, or the JSON of
        /// GET /v1/audit/checkpoint): the log must reach its size with its root there, so a
        /// truncated or rewritten log is found. Repeatable. The one saved in
        /// `audit.checkpoint_dir` is checked too when it exists.
        #[arg(long, value_name = "FILE")]
        checkpoint: Vec<PathBuf>,
    },
    /// Check offline, without the database, that one entry is in the tree a signed checkpoint
    /// commits to, and/or that this tree extends one the auditor saved earlier.
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
        #[arg(long, value_name = "FILE", requires = "proof")]
        entry: Option<PathBuf>,
        /// The inclusion proof: the JSON of GET /v1/audit/proof/inclusion.
        #[arg(long, value_name = "FILE", requires = "entry")]
        proof: Option<PathBuf>,
        /// An older checkpoint the auditor holds (note or JSON), which --checkpoint must extend.
        #[arg(long, value_name = "FILE", requires = "consistency")]
        trusted: Option<PathBuf>,
        /// The consistency proof from --trusted's size to --checkpoint's: the JSON of
        /// GET /v1/audit/proof/consistency.
        #[arg(long, value_name = "FILE", requires = "trusted")]
        consistency: Option<PathBuf>,
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

/// `signetd keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate keys in the token into a ring, creating the ring when it does not exist.
    Generate {
        /// The ring (1 to 63 of a-z 0-9 . _ -).
        #[arg(long)]
        ring: String,
        /// Key algorithm: rsa-2048, rsa-3072, rsa-4096, ec-p256, ec-p384, ed25519. Required to
        /// create a ring; must match an existing ring.
        #[arg(long)]
        algorithm: Option<KeyAlgorithm>,
        /// How many keys (1 to 64).
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Configured token for a new ring (default: `signing.token`).
        #[arg(long)]
        token: Option<String>,
    },
    /// List ring keys: id, ring, algorithm, state, usage, fingerprint.
    List {
        /// Only this ring.
        #[arg(long)]
        ring: Option<String>,
        /// Print JSON (with the public keys as PEM).
        #[arg(long)]
        json: bool,
    },
    /// Retire a key: it no longer signs, still verifies.
    Retire {
        /// The key id.
        id: uuid::Uuid,
    },
}

/// `signetd records ...`
#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Fill the records table with random records, fast (binary COPY in audited chunks of
    /// 50,000).
    Seed {
        /// How many records.
        #[arg(long)]
        count: u64,
        /// Bytes of random data per record.
        #[arg(long, default_value_t = 256)]
        size: usize,
    },
}

/// `signetd jobs ...`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Create a job that signs every record unsigned now with the keys of RING, in batches of
    /// BATCH_SIZE records (one key per batch, least recently used first). The daemons sharing
    /// the database work it; --work works it here too.
    Run {
        /// The ring whose keys sign.
        #[arg(long)]
        ring: String,
        /// Records per batch, fixed for the job.
        #[arg(long, default_value_t = 100)]
        batch_size: i64,
        /// Show progress on stderr until the job ends; exit non-zero unless it is done.
        #[arg(long)]
        wait: bool,
        /// Also run N workers in this process until the job ends (implies --wait).
        #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "4")]
        work: Option<usize>,
        /// Print the job as JSON when it ends (or at once, without --wait).
        #[arg(long)]
        json: bool,
    },
    /// Show a job (JSON): totals, per-key counts, rate, estimate.
    Get {
        /// Job id.
        id: uuid::Uuid,
    },
    /// List the newest jobs (JSON).
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Cancel a running job: no batch of it commits afterwards.
    Cancel {
        /// Job id.
        id: uuid::Uuid,
    },
    /// Verify a job: every signature in software, every batch root against the audit log,
    /// no record of a done job unsigned. Exits non-zero on any finding.
    Verify {
        /// Job id.
        id: uuid::Uuid,
    },
}
