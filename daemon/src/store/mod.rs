//! store: the only module that writes SQL. PostgreSQL through a deadpool of tokio-postgres
//! connections (TLS when the URL asks for it), migrations from `sql/` under an advisory lock,
//! and the typed queries the rest of the daemon uses.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use time::OffsetDateTime;
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::config;
use crate::hsm::KeyAlgorithm;

pub mod audit;
pub mod jobs;
pub mod notify;
pub mod pki;
pub mod rings;

mod embedded {
    refinery::embed_migrations!("../sql");
}

/// Advisory lock key held while migrations run: "signet" followed by 1.
const MIGRATION_LOCK: i64 = 0x7369_676e_6574_0001;

/// Errors of the storage layer, grouped by what the caller should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached now; retry later (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness or foreign-key rule refused the write (HTTP 409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The row to change does not exist (HTTP 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// Stored data does not parse (a bug or tampering).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The configuration of the connection is wrong.
    #[error("database configuration: {0}")]
    Config(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(code)
                if *code == SqlState::UNIQUE_VIOLATION
                    || *code == SqlState::FOREIGN_KEY_VIOLATION =>
            {
                StoreError::Conflict(e.to_string())
            }
            Some(code) if *code == SqlState::CHECK_VIOLATION => StoreError::Conflict(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The CA key.
    Ca,
    /// The API listener's TLS key.
    Tls,
    /// The audit log's checkpoint key.
    Audit,
    /// A signing key of a ring.
    Signing,
}

impl KeyPurpose {
    fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Ca => "ca",
            KeyPurpose::Tls => "tls",
            KeyPurpose::Audit => "audit",
            KeyPurpose::Signing => "signing",
        }
    }
}

/// A key held in a token, as recorded in the database.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Stable id.
    pub id: Uuid,
    /// Configured token name.
    pub token: String,
    /// Label on the token.
    pub label: String,
    /// Algorithm.
    pub algorithm: KeyAlgorithm,
    /// SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    /// SHA-256 of the SPKI, hex.
    pub fingerprint: String,
    /// `active`, `retired` or `missing`.
    pub state: String,
}

/// A certificate the CA issued, ready to be recorded.
#[derive(Debug, Clone)]
pub struct NewCertificate {
    /// Serial, hex.
    pub serial: String,
    /// Profile name (`mtls-client`, `tls-server`, `document-signer`).
    pub profile: &'static str,
    /// Subject, RFC 4514.
    pub subject: String,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// DER.
    pub der: Vec<u8>,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
}

/// The caller behind a client certificate, looked up on every request.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Account name.
    pub account: String,
    /// Account roles.
    pub roles: Vec<String>,
    /// Certificate serial, hex.
    pub serial: String,
    /// Certificate subject.
    pub subject: String,
    /// `active`, `held` or `revoked`.
    pub status: String,
    /// Whether the account was deleted.
    pub account_deleted: bool,
    /// Certificate expiry.
    pub not_after: OffsetDateTime,
}

impl Identity {
    /// Why this caller may not be served now, if it may not: the certificate is not active,
    /// the account was deleted, or the certificate has expired.
    pub fn refusal(&self, now: OffsetDateTime) -> Option<String> {
        standing_refusal(
            Some(&self.status),
            self.account_deleted,
            self.not_after,
            now,
        )
    }
}

/// Why a caller with this standing may not be served (`status` `None`: no such certificate);
/// `None` when it may. The one rule behind `api::identify` and the audit writer's check of
/// every caller of a group ([`audit::refused_callers`]).
pub fn standing_refusal(
    status: Option<&str>,
    account_deleted: bool,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<String> {
    match status {
        None => Some("this client certificate is not registered".to_owned()),
        Some(s) if s != "active" => Some(format!("this client certificate is {s}")),
        Some(_) if account_deleted => Some("this account was deleted".to_owned()),
        Some(_) if not_after < now => Some("this client certificate has expired".to_owned()),
        Some(_) => None,
    }
}

/// Pool statistics for metrics.
#[derive(Debug, Clone, Copy)]
pub struct PoolStatus {
    /// Connections that exist.
    pub size: usize,
    /// Idle connections.
    pub available: usize,
    /// Callers waiting.
    pub waiting: usize,
}

/// The database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// The owner's connection settings, for migrations, when they differ from the runtime role.
    admin: Option<tokio_postgres::Config>,
    /// The runtime role, to be made a member of `signetd_app` by the owner.
    runtime_user: Option<String>,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Connection settings may hold passwords: never print them.
        f.debug_struct("Store")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Builds the pool. No connection is made until first use, so a database that is down at
    /// start is reported by `/readyz` rather than preventing the start.
    pub fn connect(cfg: &config::Database) -> Result<Self, StoreError> {
        if cfg.url.is_empty() {
            return Err(StoreError::Config(
                "database.url is not set (SIGNETD_DATABASE__URL)".into(),
            ));
        }
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let pg = pg_config(&cfg.url, timeout)?;
        let admin = cfg
            .admin_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(|u| pg_config(u, timeout))
            .transpose()?;
        let runtime_user = pg.get_user().map(str::to_owned);
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(cfg)?);
        let manager = Manager::from_config(
            pg,
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Store {
            pool,
            admin,
            runtime_user,
            tls,
        })
    }

    /// Applies the migrations in `sql/` that are not applied yet, as the owner role
    /// (`database.admin_url`) when one is configured, and makes the runtime role a member of
    /// `signetd_app`, which may append to the audit log but never change it. An advisory lock
    /// makes concurrent starts of several daemons take turns.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.admin {
            Some(admin) => {
                let (mut client, connection) = admin.connect(self.tls.clone()).await?;
                let task = tokio::spawn(connection);
                let result = migrate_on(&mut client).await;
                let granted = match (&result, self.runtime_user()) {
                    (Ok(()), Some(user)) => client
                        .batch_execute(&format!("GRANT signetd_app TO {}", quote_ident(&user)))
                        .await
                        .map_err(StoreError::from),
                    _ => Ok(()),
                };
                drop(client);
                task.abort();
                result.and(granted)
            }
            None => {
                let mut conn = self.pool.get().await?;
                let client: &mut tokio_postgres::Client = &mut conn;
                migrate_on(client).await?;
                tracing::warn!(
                    "database.admin_url is not set: the runtime role owns the audit tables, so \
                     only the trigger keeps them append-only; use a separate owner role in production"
                );
                Ok(())
            }
        }
    }

    fn runtime_user(&self) -> Option<String> {
        let admin_user = self.admin.as_ref()?.get_user()?;
        let runtime = self.runtime_user.as_deref()?;
        (runtime != admin_user).then(|| runtime.to_owned())
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Pool statistics.
    pub fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus {
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }

    /// Every recorded key.
    pub async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT id, token, label, algorithm, public_key, fingerprint, state FROM keys ORDER BY created_at",
                &[],
            )
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Marks a key `active` or `missing` after comparing with the token.
    pub async fn set_key_state(&self, id: Uuid, state: &str) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.execute("UPDATE keys SET state = $2 WHERE id = $1", &[&id, &state])
            .await?;
        Ok(())
    }

    /// The CA key and certificate, if `init` has run.
    pub async fn ca(&self) -> Result<Option<(KeyRecord, Vec<u8>)>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT k.id, k.token, k.label, k.algorithm, k.public_key, k.fingerprint, k.state, c.certificate \
                 FROM ca c JOIN keys k ON k.id = c.key_id WHERE c.id = 1",
                &[],
            )
            .await?;
        row.map(|r| Ok((key_from_row(&r)?, r.try_get(7)?)))
            .transpose()
    }

    /// The server key, certificate DER and names, if `init` has run.
    pub async fn server_tls(
        &self,
    ) -> Result<Option<(KeyRecord, Vec<u8>, Vec<String>)>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT k.id, k.token, k.label, k.algorithm, k.public_key, k.fingerprint, k.state, c.der, s.names \
                 FROM server_tls s JOIN keys k ON k.id = s.key_id JOIN certificates c ON c.serial = s.serial \
                 WHERE s.id = 1",
                &[],
            )
            .await?;
        row.map(|r| Ok((key_from_row(&r)?, r.try_get(7)?, r.try_get(8)?)))
            .transpose()
    }

    /// The active audit key, if `init` created one.
    pub async fn audit_key(&self) -> Result<Option<KeyRecord>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT id, token, label, algorithm, public_key, fingerprint, state FROM keys \
                 WHERE purpose = 'audit' AND state = 'active' ORDER BY created_at DESC LIMIT 1",
                &[],
            )
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Records a key.
    pub async fn create_key(&self, key: &KeyRecord, purpose: KeyPurpose) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        insert_key(&tx, key, purpose).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether an account with this name exists (deleted or not).
    pub async fn account_exists(&self, name: &str) -> Result<bool, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt("SELECT 1 FROM accounts WHERE name = $1", &[&name])
            .await?;
        Ok(row.is_some())
    }

    /// The caller holding the certificate with this SHA-256 fingerprint.
    pub async fn identity(&self, fingerprint: &str) -> Result<Option<Identity>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT a.name, a.roles, c.serial, c.subject, c.status, a.deleted_at IS NOT NULL, c.not_after \
                 FROM certificates c JOIN accounts a ON a.id = c.account_id WHERE c.fingerprint = $1",
            )
            .await?;
        let row = conn.query_opt(&stmt, &[&fingerprint]).await?;
        row.map(|r| {
            Ok(Identity {
                account: r.try_get(0)?,
                roles: r.try_get(1)?,
                serial: r.try_get(2)?,
                subject: r.try_get(3)?,
                status: r.try_get(4)?,
                account_deleted: r.try_get(5)?,
                not_after: r.try_get(6)?,
            })
        })
        .transpose()
    }
}

/// Records the CA key and certificate (inside an audited transaction).
pub async fn create_ca(
    tx: &Transaction<'_>,
    key: &KeyRecord,
    certificate: &[u8],
) -> Result<(), StoreError> {
    insert_key(tx, key, KeyPurpose::Ca).await?;
    tx.execute(
        "INSERT INTO ca (id, key_id, certificate) VALUES (1, $1, $2)",
        &[&key.id, &certificate],
    )
    .await?;
    Ok(())
}

/// Records a new server key (when `new_key` is set) and certificate, replacing the current one
/// (inside an audited transaction).
pub async fn set_server_tls(
    tx: &Transaction<'_>,
    key: &KeyRecord,
    new_key: bool,
    certificate: &NewCertificate,
    names: &[String],
) -> Result<(), StoreError> {
    if new_key {
        insert_key(tx, key, KeyPurpose::Tls).await?;
    }
    insert_certificate(tx, None, certificate).await?;
    tx.execute(
        "INSERT INTO server_tls (id, key_id, serial, names) VALUES (1, $1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET key_id = $1, serial = $2, names = $3, updated_at = now()",
        &[&key.id, &certificate.serial, &names],
    )
    .await?;
    Ok(())
}

/// Creates an account with its first certificate (inside an audited transaction).
pub async fn create_account_with_certificate(
    tx: &Transaction<'_>,
    id: Uuid,
    name: &str,
    roles: &[String],
    certificate: &NewCertificate,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO accounts (id, name, roles) VALUES ($1, $2, $3)",
        &[&id, &name, &roles],
    )
    .await?;
    insert_certificate(tx, Some(id), certificate).await?;
    Ok(())
}

async fn insert_key(
    tx: &Transaction<'_>,
    key: &KeyRecord,
    purpose: KeyPurpose,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO keys (id, token, label, algorithm, purpose, public_key, fingerprint) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &key.id,
            &key.token,
            &key.label,
            &key.algorithm.as_str(),
            &purpose.as_str(),
            &key.public_key,
            &key.fingerprint,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_certificate(
    tx: &Transaction<'_>,
    account: Option<Uuid>,
    c: &NewCertificate,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO certificates (serial, account_id, profile, subject, fingerprint, der, not_before, not_after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &c.serial,
            &account,
            &c.profile,
            &c.subject,
            &c.fingerprint,
            &c.der,
            &c.not_before,
            &c.not_after,
        ],
    )
    .await?;
    Ok(())
}

fn key_from_row(r: &tokio_postgres::Row) -> Result<KeyRecord, StoreError> {
    let algorithm: String = r.try_get(3)?;
    Ok(KeyRecord {
        id: r.try_get(0)?,
        token: r.try_get(1)?,
        label: r.try_get(2)?,
        algorithm: algorithm.parse().map_err(StoreError::Corrupt)?,
        public_key: r.try_get(4)?,
        fingerprint: r.try_get(5)?,
        state: r.try_get(6)?,
    })
}

async fn migrate_on(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(client)
        .await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = result.map_err(|e| StoreError::Migration(e.to_string()))?;
    unlocked?;
    for m in report.applied_migrations() {
        tracing::info!(migration = %m, "applied migration");
    }
    Ok(())
}

fn pg_config(url: &str, timeout: Duration) -> Result<tokio_postgres::Config, StoreError> {
    let mut pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Config(e.to_string()))?;
    pg.connect_timeout(timeout);
    if pg.get_application_name().is_none() {
        pg.application_name("signetd");
    }
    Ok(pg)
}

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The rustls client configuration for database connections: the configured CA file, or the
/// system's roots.
fn client_tls(cfg: &config::Database) -> Result<rustls::ClientConfig, StoreError> {
    use rustls_pki_types::pem::PemObject as _;

    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &cfg.tls_ca_file {
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| StoreError::Config(format!("{}: {e}", path.display())))?
        {
            let cert = cert.map_err(|e| StoreError::Config(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| StoreError::Config(format!("{}: {e}", path.display())))?;
        }
    } else {
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // Skip the odd unparsable system certificate rather than refusing to start.
            let _ = roots.add(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
