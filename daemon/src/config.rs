//! config: the daemon's configuration — one TOML file overridden by `SIGNETD_*` variables — and the PIN sources.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::hsm::KeyAlgorithm;

/// Errors while loading the configuration or reading a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file or the environment does not form a valid configuration.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A PIN source could not be read. The message names the source, never the PIN.
    #[error("cannot read the PIN of token `{token}`: {reason}")]
    Pin {
        /// The configured token name.
        token: String,
        /// What went wrong (file missing, variable unset, ...).
        reason: String,
    },
}

/// The whole configuration. Every field has a default except the database URL and the tokens,
/// which `signetd dev` writes for you.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the three listeners bind.
    pub listen: Listen,
    /// Base URL of the public listener as clients reach it (used in printed hints and, later,
    /// in certificate CRL/OCSP URLs). Defaults to `http://<listen.public>`.
    pub public_url: Option<String>,
    /// Directory for files the daemon writes (the admin credentials written by `init`).
    pub state_dir: PathBuf,
    /// PostgreSQL.
    pub database: Database,
    /// The PKCS#11 module and its tokens.
    pub hsm: Hsm,
    /// The certificate authority.
    pub ca: Ca,
    /// The API listener's server certificate.
    pub tls: Tls,
    /// The time-stamping authority (RFC 3161).
    pub tsa: Tsa,
    /// Per-client rate limits on the mTLS API.
    pub rate_limits: RateLimits,
    /// The first administrator, created by `signetd init`.
    pub admin: Admin,
    /// The Merkle audit log.
    pub audit: Audit,
    /// Online signing: key rings, upload limits, queues, key leases.
    pub signing: Signing,
    /// Batch record signing: workers, leases, ingestion limits.
    pub jobs: Jobs,
    /// Logging.
    pub log: Log,
    /// Seconds that in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Most connections served at once per listener; further ones wait in the kernel backlog.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: Listen::default(),
            public_url: None,
            state_dir: PathBuf::from("/var/lib/signetd"),
            database: Database::default(),
            hsm: Hsm::default(),
            ca: Ca::default(),
            tls: Tls::default(),
            tsa: Tsa::default(),
            rate_limits: RateLimits::default(),
            admin: Admin::default(),
            audit: Audit::default(),
            signing: Signing::default(),
            jobs: Jobs::default(),
            log: Log::default(),
            shutdown_grace_secs: 30,
            max_connections: 4096,
        }
    }
}

/// Listener addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// mTLS API (client certificate required).
    pub api: SocketAddr,
    /// Public listener without client authentication: CA certificate, health.
    pub public: SocketAddr,
    /// Prometheus metrics.
    pub metrics: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            api: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// PostgreSQL connection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// A libpq-style URL, e.g. `postgresql://signetd@db.example/signetd?sslmode=require`, or
    /// `postgresql://postgres@/signetd?host=/run/postgresql` for a Unix socket. With
    /// `sslmode=require` the connection uses TLS and checks the server certificate.
    pub url: String,
    /// The owner role's URL, used only to apply migrations and to make the runtime role (from
    /// `url`) a member of `signetd_app`. With it, the runtime role cannot update or delete audit
    /// rows; without it, the runtime role owns the tables and only a trigger protects them.
    pub admin_url: Option<String>,
    /// Most pooled connections.
    pub pool_size: usize,
    /// Seconds to wait for a connection (to connect, or for a free pooled one).
    pub timeout_secs: u64,
    /// PEM file with the CA certificates that sign the database server's certificate; without
    /// it the system's roots are used.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            url: String::new(),
            admin_url: None,
            pool_size: 16,
            timeout_secs: 5,
            tls_ca_file: None,
        }
    }
}

/// The PKCS#11 module and the tokens the daemon uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hsm {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Token threads: most PKCS#11 calls of the request path running at once (default: 4 per
    /// CPU, at least 8; `app::default_max_parallel`).
    pub max_parallel: Option<usize>,
    /// Tokens by name (`ca`, `signing`, ...). Each is found by its label, never by slot number.
    pub tokens: BTreeMap<String, Token>,
}

impl Default for Hsm {
    fn default() -> Self {
        Self {
            module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            max_parallel: None,
            tokens: BTreeMap::new(),
        }
    }
}

/// One token: its label and where its user PIN comes from. Exactly one PIN source must be set.
/// A PIN is never taken from the command line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Token {
    /// The token label (CKA_LABEL of the token, as `softhsm2-util --show-slots` prints it).
    pub label: String,
    /// A file holding the PIN (trailing newline ignored). Should be mode 0600.
    pub pin_file: Option<PathBuf>,
    /// An environment variable holding the PIN.
    pub pin_env: Option<String>,
    /// A systemd credential name (`LoadCredential=`), read from `$CREDENTIALS_DIRECTORY`.
    pub pin_credential: Option<String>,
}

impl Token {
    /// Reads the PIN from the configured source.
    pub fn read_pin(&self, name: &str) -> Result<SecretString, ConfigError> {
        let fail = |reason: String| ConfigError::Pin {
            token: name.to_owned(),
            reason,
        };
        let sources = [
            self.pin_file.is_some(),
            self.pin_env.is_some(),
            self.pin_credential.is_some(),
        ];
        if sources.iter().filter(|set| **set).count() != 1 {
            return Err(fail(
                "set exactly one of pin_file, pin_env, pin_credential".into(),
            ));
        }
        let raw = if let Some(path) = &self.pin_file {
            read_secret_file(path).map_err(fail)?
        } else if let Some(var) = &self.pin_env {
            std::env::var(var)
                .map_err(|_| fail(format!("environment variable {var} is not set")))?
        } else if let Some(cred) = &self.pin_credential {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                fail("CREDENTIALS_DIRECTORY is not set (is LoadCredential= in the unit?)".into())
            })?;
            read_secret_file(&Path::new(&dir).join(cred)).map_err(fail)?
        } else {
            return Err(fail("no PIN source".into()));
        };
        let pin = raw.trim_end_matches(['\n', '\r']).to_owned();
        if pin.is_empty() {
            return Err(fail("the PIN is empty".into()));
        }
        Ok(SecretString::from(pin))
    }
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The certificate authority.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ca {
    /// Name of the token (in `hsm.tokens`) that holds the CA key.
    pub token: String,
    /// Subject of the CA certificate (RFC 4514).
    pub subject: String,
    /// Algorithm of the CA key.
    pub algorithm: KeyAlgorithm,
    /// Lifetime of the CA certificate in days.
    pub validity_days: u32,
    /// Lifetime in days of a certificate issued through the API when the request names none.
    pub leaf_validity_days: u32,
    /// The longest lifetime in days a request may ask for (and never past the CA's own expiry).
    pub max_leaf_validity_days: u32,
    /// Hours between a CRL's thisUpdate and nextUpdate. The CRL is re-signed on every status
    /// change, and when less than half of this is left.
    pub crl_validity_hours: u32,
    /// Seconds between checks for a CRL to re-sign: changes made by other processes, a
    /// re-signing that failed, or a nextUpdate coming close.
    pub crl_check_secs: u64,
    /// Who signs OCSP responses: `ca` (the CA key itself) or `delegated` (a responder key in
    /// the CA's token with a short-lived OCSPSigning certificate from the CA, renewed when a
    /// third of its lifetime is left).
    pub ocsp_responder: OcspResponder,
    /// Lifetime in days of the delegated responder's certificate.
    pub ocsp_responder_validity_days: u32,
    /// Seconds between thisUpdate and nextUpdate in OCSP responses (how long a relying party
    /// may keep one).
    pub ocsp_validity_secs: u64,
    /// Most OCSP responses kept in memory; responses are kept until a status changes.
    pub ocsp_cache_entries: usize,
}

/// Who signs OCSP responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OcspResponder {
    /// The CA key.
    Ca,
    /// A delegated responder key and certificate (RFC 6960 section 4.2.2.2).
    Delegated,
}

impl Default for Ca {
    fn default() -> Self {
        Self {
            token: "ca".into(),
            subject: "CN=signetd CA".into(),
            algorithm: KeyAlgorithm::EcP256,
            validity_days: 3650,
            leaf_validity_days: 365,
            max_leaf_validity_days: 825,
            crl_validity_hours: 24,
            crl_check_secs: 10,
            ocsp_responder: OcspResponder::Ca,
            ocsp_responder_validity_days: 30,
            ocsp_validity_secs: 3600,
            ocsp_cache_entries: 10_000,
        }
    }
}

/// The default TSA policy, under IANA's enterprise number for documentation (32473, RFC 5612):
/// a placeholder that works out of the box. Set your practice statement's OID (`tsa.policy`).
pub const DEFAULT_TSA_POLICY: &str = "1.3.6.1.4.1.32473.3161.1";

/// The time-stamping authority: its key is made in the CA's token and certified by the CA
/// under the `tsa` profile (extendedKeyUsage timeStamping, critical), renewed when a third of
/// its lifetime is left.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tsa {
    /// Whether `POST /v1/timestamp` and timestamped CMS signatures are offered.
    pub enabled: bool,
    /// The policy OID every token is issued under (dotted decimal).
    pub policy: String,
    /// Further policy OIDs a request may ask for: a token carries the policy its request
    /// names (`policy` or one of these), or `policy` when it names none.
    pub accepted_policies: Vec<String>,
    /// The accuracy of genTime, in milliseconds (at least 1).
    pub accuracy_millis: u32,
    /// Lifetime in days of the TSA certificate.
    pub validity_days: u32,
    /// Algorithm of the TSA key.
    pub algorithm: KeyAlgorithm,
}

impl Default for Tsa {
    fn default() -> Self {
        Self {
            enabled: true,
            policy: DEFAULT_TSA_POLICY.into(),
            accepted_policies: Vec::new(),
            accuracy_millis: 1000,
            validity_days: 90,
            algorithm: KeyAlgorithm::EcP256,
        }
    }
}

/// A token bucket: `per_second` requests a second on average, up to `burst` at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests a second, sustained (0: no limit).
    pub per_second: u32,
    /// Requests at once after a pause (at least `per_second`).
    pub burst: u32,
}

impl Rate {
    fn new(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }
}

/// Per-client rate limits: an account's override, else the most generous default among its
/// roles (`signer` covers every `signer:<ring>`), else `default`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Whether requests are limited at all.
    pub enabled: bool,
    /// For accounts none of whose roles is listed in `roles` (none: unlimited).
    pub default: Option<Rate>,
    /// Per role: `admin`, `cert-manager`, `auditor`, `timestamper`, `signer`.
    pub roles: BTreeMap<String, Rate>,
    /// Per account name, over its roles' defaults.
    pub accounts: BTreeMap<String, Rate>,
    /// Refusals are audited once per account per this many seconds, with their count.
    pub audit_window_secs: u64,
}

impl Default for RateLimits {
    fn default() -> Self {
        let roles = [
            ("signer", Rate::new(20_000, 40_000)),
            ("timestamper", Rate::new(2_000, 4_000)),
            ("admin", Rate::new(1_000, 2_000)),
            ("cert-manager", Rate::new(500, 1_000)),
            ("auditor", Rate::new(500, 1_000)),
        ];
        Self {
            enabled: true,
            default: Some(Rate::new(100, 200)),
            roles: roles.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            accounts: BTreeMap::new(),
            audit_window_secs: 60,
        }
    }
}

/// The server certificate of the API listener; its key lives in a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Name of the token that holds the server key.
    pub token: String,
    /// DNS names and IP addresses the server certificate is valid for.
    pub names: Vec<String>,
    /// Lifetime of the server certificate in days.
    pub validity_days: u32,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            token: "ca".into(),
            names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            validity_days: 365,
        }
    }
}

/// The first administrator account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Account name.
    pub name: String,
    /// Lifetime of the admin client certificate in days.
    pub validity_days: u32,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            name: "admin".into(),
            validity_days: 365,
        }
    }
}

/// The Merkle audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// Name of the token that holds the Ed25519 checkpoint key.
    pub token: String,
    /// The log's origin line in checkpoints, and the name of its signing key
    /// (C2SP tlog-checkpoint), e.g. `signetd.example.com/audit`.
    pub origin: String,
    /// Sign a checkpoint after this many new entries...
    pub checkpoint_every: u64,
    /// ...or after this many seconds with new entries, whichever comes first.
    pub checkpoint_interval_secs: u64,
    /// Most entries committed in one group transaction.
    pub max_batch: usize,
    /// Under load, how long the writer lets a group grow before it commits, in microseconds
    /// (tokio's timer rounds it up to whole milliseconds); 0 commits every group at once. A
    /// group's commit costs the database about as much for one entry as for twenty, so a
    /// larger group costs less per request, for this much more latency.
    pub group_wait_micros: u64,
    /// The wait applies only when this many entries were already queued when the writer
    /// turned to the group: a lone or light caller never waits.
    pub group_wait_from: usize,
    /// ...or when at least this many requests wait for a signing key (the token has that much
    /// work queued, so the wait costs the group's callers latency, not throughput); 0: never.
    pub group_wait_backlog: usize,
    /// Most seconds a follower's long poll (`wait`) may last.
    pub max_wait_secs: u64,
    /// Where the newest signed checkpoint is also written (file `checkpoint`, a C2SP signed
    /// note) as it is made, outside the database: a verifier holding it finds a database whose
    /// log was truncated or rewritten, and the daemon refuses to start on one. Default:
    /// `<state_dir>/checkpoints`. Copy it off the host (or make it a mount of another one) to
    /// keep it out of reach of whoever can rewrite the database.
    pub checkpoint_dir: Option<PathBuf>,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            token: "audit".into(),
            origin: "signetd/audit".into(),
            checkpoint_every: 1000,
            checkpoint_interval_secs: 10,
            max_batch: 4096,
            group_wait_micros: 1000,
            group_wait_from: 8,
            group_wait_backlog: 16,
            max_wait_secs: 60,
            checkpoint_dir: None,
        }
    }
}

/// Online signing (`POST /v1/sign`, `/v1/sign-batch`, `/v1/verify`) and key rings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signing {
    /// The token (in `hsm.tokens`) where new ring keys are generated unless a request names
    /// another.
    pub token: String,
    /// Largest upload `POST /v1/sign` accepts, in bytes. A larger Content-Length is refused
    /// with 413 before the body is read; a body without one is counted as it streams and
    /// refused as soon as it crosses the limit. The upload is hashed as it arrives, so memory
    /// does not grow with it.
    pub max_upload_bytes: u64,
    /// Largest upload for Ed25519 keys: pure Ed25519 signs the message itself, which must be
    /// held in memory whole, so its limit is separate and smaller.
    pub max_ed25519_bytes: u64,
    /// Largest text an OpenPGP cleartext signature (`format=openpgp-cleartext`, albs-sign-file
    /// `sign_type=clear-sign`) accepts: the answer carries the text, so it is held in memory.
    pub max_cleartext_bytes: u64,
    /// Largest JSON body of `/v1/sign-batch` and `/v1/verify`, in bytes.
    pub max_json_bytes: u64,
    /// Most items in one `/v1/sign-batch` request.
    pub batch_max_items: usize,
    /// Most items of one batch signing at once (each through the ring's scheduler).
    pub batch_parallel: usize,
    /// Most requests waiting for a key of one ring; more are refused with 503 and
    /// `Retry-After`. Bounds memory under overload.
    pub queue_per_ring: usize,
    /// Milliseconds a request may wait for a key before it is refused with 503.
    pub queue_timeout_ms: u64,
    /// Seconds a key lease (the row that keeps one key with one process, invariant 2) lasts
    /// without renewal; renewed every third of it while held.
    pub lease_ttl_secs: u64,
    /// Seconds a leased key may stay idle before the lease is released for other processes
    /// and batch jobs.
    pub idle_release_secs: u64,
    /// Seconds between flushes of key usage counters to the database.
    pub usage_flush_secs: u64,
    /// Debugging and tests only: append one line `KEY_ID START_NS END_NS` per token
    /// signature (monotonic nanoseconds since the daemon started) to this file. Off by
    /// default.
    pub trace_file: Option<PathBuf>,
}

impl Default for Signing {
    fn default() -> Self {
        Self {
            token: "signing".into(),
            max_upload_bytes: 100 * 1024 * 1024,
            max_ed25519_bytes: 1024 * 1024,
            max_cleartext_bytes: 16 * 1024 * 1024,
            max_json_bytes: 16 * 1024 * 1024,
            batch_max_items: 256,
            batch_parallel: 4,
            queue_per_ring: 256,
            queue_timeout_ms: 5000,
            lease_ttl_secs: 15,
            idle_release_secs: 10,
            usage_flush_secs: 2,
            trace_file: None,
        }
    }
}

/// Batch record signing (`/v1/jobs`, `/v1/records`, `signetd jobs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jobs {
    /// Workers per `signetd serve` process. 0: this process works no job (other daemons
    /// sharing the database do).
    pub workers: usize,
    /// Batches a worker claims in one database call and signs at once, each with its own
    /// leased key (1 to 64). At small batch sizes the database's work per claim, not the
    /// token, bounds a job; claiming several at a time shares it. A worker holds up to this
    /// many claims and key leases, so `workers × claim_batches` batches are in flight.
    pub claim_batches: u32,
    /// Seconds a batch claim and its key lease last without renewal; both are renewed every
    /// third of it while a worker uses them. A worker that dies holds them this long at most:
    /// then its batch is claimed again and its key can be leased again.
    pub lease_ttl_secs: u64,
    /// Seconds between looks for a new job when no notification arrives (other processes'
    /// events normally arrive at once through PostgreSQL `LISTEN`).
    pub poll_secs: u64,
    /// Largest batch size a job may ask for.
    pub max_batch_size: u32,
    /// Largest record accepted by `POST /v1/records`, in bytes.
    pub max_record_bytes: usize,
    /// Largest `POST /v1/records` body, in bytes (JSON or NDJSON, base64 inside).
    pub max_ingest_bytes: usize,
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            workers: 4,
            claim_batches: 4,
            lease_ttl_secs: 30,
            poll_secs: 2,
            max_batch_size: 10_000,
            max_record_bytes: 64 * 1024,
            max_ingest_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `signetd=debug,info`. `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Top-level scalar settings, overridable as `SIGNETD_<NAME>`.
const SCALARS: &[&str] = &[
    "public_url",
    "state_dir",
    "shutdown_grace_secs",
    "max_connections",
];
/// Sections, overridable as `SIGNETD_<SECTION>__<FIELD>`.
const SECTIONS: &[&str] = &[
    "listen", "database", "hsm", "ca", "tls", "admin", "audit", "signing", "jobs", "log",
];

fn is_setting(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    match key.split_once("__") {
        Some((section, rest)) => SECTIONS.contains(&section) && !rest.is_empty(),
        None => SCALARS.contains(&key.as_str()),
    }
}

impl Config {
    /// Loads defaults, then the TOML file (if given), then `SIGNETD_*` variables, where `__`
    /// separates nesting levels: `SIGNETD_DATABASE__URL`, `SIGNETD_LISTEN__API`,
    /// `SIGNETD_HSM__TOKENS__CA__PIN_FILE`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "configuration file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only variables that name a setting count: SIGNETD_CONFIG names the file, and the
        // variables of `signetd dev`'s env file (SIGNETD_CA, SIGNETD_API_URL, ...) describe an
        // instance for clients, so they must not be read as settings.
        let env = Env::prefixed("SIGNETD_")
            .filter(|key| is_setting(key.as_str()))
            .split("__")
            .lowercase(true);
        let mut config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if config.audit.checkpoint_dir.is_none() {
            config.audit.checkpoint_dir = Some(config.state_dir.join("checkpoints"));
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (role, token) in [
            ("ca", &self.ca.token),
            ("tls", &self.tls.token),
            ("audit", &self.audit.token),
        ] {
            if !self.hsm.tokens.contains_key(token) {
                return Err(ConfigError::Invalid(format!(
                    "{role}.token = \"{token}\" is not among hsm.tokens"
                )));
            }
        }
        let ca = &self.ca;
        if ca.leaf_validity_days == 0
            || ca.leaf_validity_days > ca.max_leaf_validity_days
            || ca.crl_validity_hours == 0
            || ca.crl_check_secs == 0
            || ca.ocsp_responder_validity_days == 0
            || ca.ocsp_validity_secs == 0
        {
            return Err(ConfigError::Invalid(
                "ca: leaf_validity_days must be in 1..=max_leaf_validity_days; crl_validity_hours, \
                 crl_check_secs, ocsp_responder_validity_days and ocsp_validity_secs must be > 0"
                    .into(),
            ));
        }
        for role in self.rate_limits.roles.keys() {
            if !["signer", "timestamper", "admin", "cert-manager", "auditor"]
                .contains(&role.as_str())
            {
                return Err(ConfigError::Invalid(format!(
                    "rate_limits.roles.{role}: not a role (signer, timestamper, admin, \
                     cert-manager, auditor)"
                )));
            }
        }
        if self.rate_limits.audit_window_secs == 0 {
            return Err(ConfigError::Invalid(
                "rate_limits.audit_window_secs must be > 0".into(),
            ));
        }
        let tsa = &self.tsa;
        for oid in std::iter::once(&tsa.policy).chain(&tsa.accepted_policies) {
            if const_oid::ObjectIdentifier::new(oid).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "tsa: policy {oid:?} is not a dotted-decimal object identifier"
                )));
            }
        }
        if tsa.accuracy_millis == 0 || tsa.validity_days == 0 {
            return Err(ConfigError::Invalid(
                "tsa.accuracy_millis and tsa.validity_days must be > 0".into(),
            ));
        }
        if self.tls.names.is_empty() {
            return Err(ConfigError::Invalid("tls.names is empty".into()));
        }
        if self.audit.origin.is_empty() || self.audit.origin.contains(['\n', ' ', '+']) {
            return Err(ConfigError::Invalid(
                "audit.origin must be non-empty, without spaces, newlines or '+'".into(),
            ));
        }
        if self.audit.checkpoint_every == 0 || self.audit.max_batch == 0 {
            return Err(ConfigError::Invalid(
                "audit.checkpoint_every and audit.max_batch must be > 0".into(),
            ));
        }
        if self.audit.group_wait_micros > 100_000 {
            return Err(ConfigError::Invalid(
                "audit.group_wait_micros is at most 100000 (0.1 s): every request under load \
                 waits for it"
                    .into(),
            ));
        }
        let jobs = &self.jobs;
        if jobs.lease_ttl_secs == 0
            || jobs.poll_secs == 0
            || jobs.max_batch_size == 0
            || jobs.max_record_bytes == 0
            || jobs.max_ingest_bytes == 0
        {
            return Err(ConfigError::Invalid(
                "jobs.lease_ttl_secs, poll_secs, max_batch_size, max_record_bytes and \
                 max_ingest_bytes must be > 0"
                    .into(),
            ));
        }
        if !(1..=64).contains(&jobs.claim_batches) {
            return Err(ConfigError::Invalid(
                "jobs.claim_batches must be between 1 and 64".into(),
            ));
        }
        let sg = &self.signing;
        if sg.batch_max_items == 0
            || sg.batch_parallel == 0
            || sg.queue_per_ring == 0
            || sg.lease_ttl_secs == 0
            || sg.usage_flush_secs == 0
        {
            return Err(ConfigError::Invalid(
                "signing.batch_max_items, batch_parallel, queue_per_ring, lease_ttl_secs and \
                 usage_flush_secs must be > 0"
                    .into(),
            ));
        }
        // Renewed every third of the lease by a maintenance task that wakes twice a second,
        // and a key is lent only while its lease holds a third longer: shorter leases could
        // lapse between two renewals.
        if sg.lease_ttl_secs < 3 {
            return Err(ConfigError::Invalid(
                "signing.lease_ttl_secs must be at least 3".into(),
            ));
        }
        if self.database.pool_size == 0 {
            return Err(ConfigError::Invalid(
                "database.pool_size must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// The public listener's base URL.
    pub fn public_base_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen.public))
    }

    /// Renders the configuration as TOML (used by `signetd dev` to write its file).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn pin_needs_exactly_one_source() {
        let token = Token {
            label: "t".into(),
            ..Token::default()
        };
        assert!(matches!(token.read_pin("t"), Err(ConfigError::Pin { .. })));
    }

    #[test]
    fn pin_file_is_trimmed_and_never_in_errors() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pin");
        std::fs::write(&path, "s3cret\n")?;
        let token = Token {
            label: "t".into(),
            pin_file: Some(path),
            ..Token::default()
        };
        assert_eq!(token.read_pin("t")?.expose_secret(), "s3cret");
        let missing = Token {
            label: "t".into(),
            pin_file: Some(dir.path().join("absent")),
            ..Token::default()
        };
        let err = missing
            .read_pin("t")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("absent"), "{err}");
        Ok(())
    }

    #[test]
    fn only_setting_variables_count() {
        assert!(is_setting("DATABASE__URL"));
        assert!(is_setting("HSM__TOKENS__CA__PIN_FILE"));
        assert!(is_setting("PUBLIC_URL"));
        assert!(!is_setting("CA"));
        assert!(!is_setting("CONFIG"));
        assert!(!is_setting("DATABASE_URL"));
        assert!(!is_setting("CLIENT_CERT"));
        assert!(!is_setting("DATABASE__"));
    }

    #[test]
    fn file_and_defaults_combine() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[database]\nurl = \"postgresql://x@/y\"\n[hsm.tokens.ca]\nlabel = \"L\"\npin_env = \"P\"\n[hsm.tokens.audit]\nlabel = \"A\"\npin_env = \"P\"\n",
        )?;
        let config = Config::load(Some(&path))?;
        assert_eq!(config.database.url, "postgresql://x@/y");
        assert_eq!(config.hsm.tokens["ca"].label, "L");
        assert_eq!(config.listen.api.port(), 8443);
        std::fs::write(&path, "[database]\nurl = 1\nbogus = 2\n")?;
        assert!(Config::load(Some(&path)).is_err());
        Ok(())
    }

    #[test]
    fn signing_leases_outlast_two_renewals() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.toml");
        let base = "[database]\nurl = \"postgresql://x@/y\"\n[hsm.tokens.ca]\nlabel = \"L\"\npin_env = \"P\"\n[hsm.tokens.audit]\nlabel = \"A\"\npin_env = \"P\"\n";
        std::fs::write(&path, format!("{base}[signing]\nlease_ttl_secs = 2\n"))?;
        let err = Config::load(Some(&path)).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("lease_ttl_secs")),
            "{err:?}"
        );
        std::fs::write(&path, format!("{base}[signing]\nlease_ttl_secs = 3\n"))?;
        assert_eq!(Config::load(Some(&path))?.signing.lease_ttl_secs, 3);
        Ok(())
    }

    #[test]
    fn audit_group_wait_is_bounded() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.toml");
        let base = "[database]\nurl = \"postgresql://x@/y\"\n[hsm.tokens.ca]\nlabel = \"L\"\npin_env = \"P\"\n[hsm.tokens.audit]\nlabel = \"A\"\npin_env = \"P\"\n";
        std::fs::write(
            &path,
            format!("{base}[audit]\ngroup_wait_micros = 100001\n"),
        )?;
        let err = Config::load(Some(&path)).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("group_wait_micros")),
            "{err:?}"
        );
        std::fs::write(&path, format!("{base}[audit]\ngroup_wait_micros = 0\n"))?;
        let audit = Config::load(Some(&path))?.audit;
        assert_eq!((audit.group_wait_micros, audit.group_wait_from), (0, 8));
        Ok(())
    }

    #[test]
    fn jobs_claim_batches_is_bounded() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.toml");
        let base = "[database]\nurl = \"postgresql://x@/y\"\n[hsm.tokens.ca]\nlabel = \"L\"\npin_env = \"P\"\n[hsm.tokens.audit]\nlabel = \"A\"\npin_env = \"P\"\n";
        for bad in [0, 65] {
            std::fs::write(&path, format!("{base}[jobs]\nclaim_batches = {bad}\n"))?;
            let err = Config::load(Some(&path)).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("claim_batches")),
                "{bad}: {err:?}"
            );
        }
        std::fs::write(&path, base)?;
        assert_eq!(Config::load(Some(&path))?.jobs.claim_batches, 4);
        std::fs::write(&path, format!("{base}[jobs]\nclaim_batches = 64\n"))?;
        assert_eq!(Config::load(Some(&path))?.jobs.claim_batches, 64);
        Ok(())
    }
}
