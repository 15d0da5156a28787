//! store::pki: the SQL of accounts, certificates, their status changes and CRLs.
//!
//! Reads are `Store` methods. Changes are free functions over the audit writer's transaction, so
//! that each commits atomically with its audit entry (invariant 4); each status change also
//! bumps the revocation epoch, which tells every process that its cached OCSP answers and the
//! newest CRL are stale.

use time::OffsetDateTime;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::{KeyRecord, NewCertificate, Store, StoreError, key_from_row};

/// Advisory lock key held (per session) while a CRL is made: "signet" followed by 3. It makes
/// CRL numbers grow by one per CRL across processes.
const CRL_LOCK: i64 = 0x7369_676e_6574_0003;

/// An account.
#[derive(Debug, Clone)]
pub struct AccountRow {
    /// Stable id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Roles: `admin`, `cert-manager`, `auditor`, `signer:<ring>`.
    pub roles: Vec<String>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Deletion time; a deleted account keeps its name.
    pub deleted_at: Option<OffsetDateTime>,
}

/// A certificate the CA issued, with its owner.
#[derive(Debug, Clone)]
pub struct CertificateRow {
    /// Serial, lower-case hex.
    pub serial: String,
    /// The owning account's name, if an account owns it.
    pub account: Option<String>,
    /// The owning account's roles (empty without an account).
    pub account_roles: Vec<String>,
    /// The token key it certifies (document-signer certificates of token keys).
    pub key_id: Option<Uuid>,
    /// `mtls-client`, `tls-server`, `document-signer` or `ocsp-responder`.
    pub profile: String,
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
    /// `active`, `held` or `revoked`.
    pub status: String,
    /// RFC 5280 reason name when held (`certificateHold`) or revoked.
    pub revocation_reason: Option<String>,
    /// When the status last changed.
    pub status_changed_at: Option<OffsetDateTime>,
    /// When it was issued.
    pub created_at: OffsetDateTime,
}

/// The status of one serial, as OCSP and the CRL need it.
#[derive(Debug, Clone)]
pub struct SerialStatus {
    /// `active`, `held` or `revoked`.
    pub status: String,
    /// RFC 5280 reason name when held or revoked.
    pub reason: Option<String>,
    /// When the status last changed.
    pub changed_at: Option<OffsetDateTime>,
}

/// A signed CRL as stored.
#[derive(Debug, Clone)]
pub struct StoredCrl {
    /// CRL number.
    pub number: i64,
    /// The revocation epoch it reflects.
    pub epoch: i64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// DER.
    pub der: Vec<u8>,
}

/// What decides whether a CRL must be signed now.
#[derive(Debug, Clone, Copy)]
pub struct CrlState {
    /// The current revocation epoch.
    pub epoch: i64,
    /// The newest CRL's number, epoch, thisUpdate and nextUpdate.
    pub latest: Option<(i64, i64, OffsetDateTime, OffsetDateTime)>,
}

/// A held or revoked, unexpired certificate: one CRL entry.
#[derive(Debug, Clone)]
pub struct RevokedRow {
    /// Serial, hex.
    pub serial: String,
    /// RFC 5280 reason name.
    pub reason: String,
    /// When it was held or revoked.
    pub changed_at: OffsetDateTime,
}

/// A key whose public key may be certified, with what it is for.
#[derive(Debug, Clone)]
pub struct CertifiableKey {
    /// The key.
    pub key: KeyRecord,
    /// `signing`, `ca`, `tls`, `audit` or `ocsp`.
    pub purpose: String,
    /// The ring it belongs to, if any.
    pub ring: Option<String>,
}

/// A key of the daemon's own with one current certificate, kept in a one-row table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonKey {
    /// The delegated OCSP responder (`ocsp_responder`, key purpose `ocsp`).
    OcspResponder,
    /// The time-stamping authority (`tsa`, key purpose `tsa`).
    Tsa,
}

impl DaemonKey {
    fn table(self) -> &'static str {
        match self {
            DaemonKey::OcspResponder => "ocsp_responder",
            DaemonKey::Tsa => "tsa",
        }
    }

    fn purpose(self) -> &'static str {
        match self {
            DaemonKey::OcspResponder => "ocsp",
            DaemonKey::Tsa => "tsa",
        }
    }
}

/// The delegated OCSP responder (or the TSA) as stored.
#[derive(Debug, Clone)]
pub struct ResponderRow {
    /// Its key.
    pub key: KeyRecord,
    /// Its certificate, DER.
    pub der: Vec<u8>,
    /// Its certificate's expiry.
    pub not_after: OffsetDateTime,
    /// Its certificate's issuance time.
    pub not_before: OffsetDateTime,
}

const ACCOUNT_COLUMNS: &str = "id, name, roles, created_at, deleted_at";

fn account_from_row(r: &tokio_postgres::Row) -> Result<AccountRow, StoreError> {
    Ok(AccountRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        roles: r.try_get(2)?,
        created_at: r.try_get(3)?,
        deleted_at: r.try_get(4)?,
    })
}

const CERT_COLUMNS: &str = "c.serial, a.name, coalesce(a.roles, '{}'), c.key_id, c.profile, \
     c.subject, c.fingerprint, c.der, c.not_before, c.not_after, c.status, c.revocation_reason, \
     c.status_changed_at, c.created_at";

fn cert_from_row(r: &tokio_postgres::Row) -> Result<CertificateRow, StoreError> {
    Ok(CertificateRow {
        serial: r.try_get(0)?,
        account: r.try_get(1)?,
        account_roles: r.try_get(2)?,
        key_id: r.try_get(3)?,
        profile: r.try_get(4)?,
        subject: r.try_get(5)?,
        fingerprint: r.try_get(6)?,
        der: r.try_get(7)?,
        not_before: r.try_get(8)?,
        not_after: r.try_get(9)?,
        status: r.try_get(10)?,
        revocation_reason: r.try_get(11)?,
        status_changed_at: r.try_get(12)?,
        created_at: r.try_get(13)?,
    })
}

impl Store {
    /// The account named `name` (deleted or not).
    pub async fn account(&self, name: &str) -> Result<Option<AccountRow>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"),
                &[&name],
            )
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    /// Accounts by name; deleted ones only when asked.
    pub async fn accounts(&self, include_deleted: bool) -> Result<Vec<AccountRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts \
                     WHERE $1 OR deleted_at IS NULL ORDER BY name"
                ),
                &[&include_deleted],
            )
            .await?;
        rows.iter().map(account_from_row).collect()
    }

    /// The certificates of an account, oldest first.
    pub async fn account_certificates(
        &self,
        account: &str,
    ) -> Result<Vec<CertificateRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {CERT_COLUMNS} FROM certificates c JOIN accounts a ON a.id = c.account_id \
                     WHERE a.name = $1 ORDER BY c.created_at, c.serial"
                ),
                &[&account],
            )
            .await?;
        rows.iter().map(cert_from_row).collect()
    }

    /// The certificate with this serial (lower-case hex).
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRow>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!(
                    "SELECT {CERT_COLUMNS} FROM certificates c LEFT JOIN accounts a ON a.id = c.account_id \
                     WHERE c.serial = $1"
                ),
                &[&serial],
            )
            .await?;
        row.as_ref().map(cert_from_row).transpose()
    }

    /// The newest active, unexpired certificate of a token key (its document-signer
    /// certificate), if the CA issued one: what CMS signatures carry.
    pub async fn key_certificate(
        &self,
        key_id: Uuid,
    ) -> Result<Option<CertificateRow>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!(
                    "SELECT {CERT_COLUMNS} FROM certificates c LEFT JOIN accounts a ON a.id = c.account_id \
                     WHERE c.key_id = $1 AND c.status = 'active' AND c.not_after > now() \
                     ORDER BY c.not_before DESC, c.created_at DESC LIMIT 1"
                ),
                &[&key_id],
            )
            .await?;
        row.as_ref().map(cert_from_row).transpose()
    }

    /// A recorded key with its purpose and ring.
    pub async fn certifiable_key(&self, id: Uuid) -> Result<Option<CertifiableKey>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT id, token, label, algorithm, public_key, fingerprint, state, purpose, ring \
                 FROM keys WHERE id = $1",
                &[&id],
            )
            .await?;
        row.map(|r| {
            Ok(CertifiableKey {
                key: key_from_row(&r)?,
                purpose: r.try_get(7)?,
                ring: r.try_get(8)?,
            })
        })
        .transpose()
    }

    /// Serials of the daemon's own certificates (server TLS, delegated OCSP responder), which
    /// the API does not let anyone hold or revoke.
    pub async fn daemon_serials(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT serial FROM server_tls UNION SELECT serial FROM ocsp_responder \
                 UNION SELECT serial FROM tsa",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// The current revocation epoch.
    pub async fn revocation_epoch(&self) -> Result<i64, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached("SELECT epoch FROM revocation_epoch WHERE id = 1")
            .await?;
        let row = conn.query_one(&stmt, &[]).await?;
        Ok(row.try_get(0)?)
    }

    /// The revocation epoch and the status of each serial (`None` when unknown), read in one
    /// statement so that both come from the same snapshot.
    pub async fn serial_statuses(
        &self,
        serials: &[String],
    ) -> Result<(i64, Vec<Option<SerialStatus>>), StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT (SELECT epoch FROM revocation_epoch WHERE id = 1), s.i, c.status, \
                 c.revocation_reason, c.status_changed_at \
                 FROM unnest($1::text[]) WITH ORDINALITY AS s(serial, i) \
                 LEFT JOIN certificates c ON c.serial = s.serial ORDER BY s.i",
            )
            .await?;
        let rows = conn.query(&stmt, &[&serials]).await?;
        let epoch = match rows.first() {
            Some(r) => r.try_get(0)?,
            None => self.revocation_epoch().await?,
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let status: Option<String> = r.try_get(2)?;
            out.push(match status {
                Some(status) => Some(SerialStatus {
                    status,
                    reason: r.try_get(3)?,
                    changed_at: r.try_get(4)?,
                }),
                None => None,
            });
        }
        Ok((epoch, out))
    }

    /// The newest CRL.
    pub async fn latest_crl(&self) -> Result<Option<StoredCrl>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT number, epoch, this_update, next_update, der FROM crls \
                 ORDER BY number DESC LIMIT 1",
            )
            .await?;
        let row = conn.query_opt(&stmt, &[]).await?;
        row.map(|r| {
            Ok(StoredCrl {
                number: r.try_get(0)?,
                epoch: r.try_get(1)?,
                this_update: r.try_get(2)?,
                next_update: r.try_get(3)?,
                der: r.try_get(4)?,
            })
        })
        .transpose()
    }

    /// The revocation epoch and the newest CRL's number, epoch and times.
    pub async fn crl_state(&self) -> Result<CrlState, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_one(
                "SELECT e.epoch, c.number, c.epoch, c.this_update, c.next_update \
                 FROM revocation_epoch e LEFT JOIN LATERAL \
                 (SELECT number, epoch, this_update, next_update FROM crls ORDER BY number DESC LIMIT 1) c \
                 ON true WHERE e.id = 1",
                &[],
            )
            .await?;
        let number: Option<i64> = row.try_get(1)?;
        let latest = match number {
            Some(n) => Some((n, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?)),
            None => None,
        };
        Ok(CrlState {
            epoch: row.try_get(0)?,
            latest,
        })
    }

    /// Every held or revoked certificate that has not expired, oldest change first.
    pub async fn revoked_certificates(&self) -> Result<Vec<RevokedRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT serial, revocation_reason, status_changed_at FROM certificates \
                 WHERE status <> 'active' AND not_after > now() \
                 ORDER BY status_changed_at, serial",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RevokedRow {
                    serial: r.try_get(0)?,
                    reason: r.try_get(1)?,
                    changed_at: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// The delegated OCSP responder, if one was made.
    pub async fn ocsp_responder(&self) -> Result<Option<ResponderRow>, StoreError> {
        self.key_and_certificate(DaemonKey::OcspResponder).await
    }

    /// The time-stamping authority's key and certificate, if they were made.
    pub async fn tsa(&self) -> Result<Option<ResponderRow>, StoreError> {
        self.key_and_certificate(DaemonKey::Tsa).await
    }

    /// Takes the next time-stamp serial number and checks the clock, under the row lock that
    /// every daemon sharing the database takes: reads the clock (`now`) only once the lock is
    /// held, so stamps of one clock never go backwards. `Ok(Err(last))` when `now` is before
    /// the last stamp's time `last` (nothing changes).
    pub async fn next_stamp(
        &self,
        now: impl FnOnce() -> OffsetDateTime,
    ) -> Result<Result<(i64, OffsetDateTime), OffsetDateTime>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let row = tx
            .query_one(
                "SELECT serial, last_time FROM tsa_clock WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await?;
        let serial: i64 = row.try_get(0)?;
        let last: OffsetDateTime = row.try_get(1)?;
        let now = now();
        if now < last {
            tx.rollback().await?;
            return Ok(Err(last));
        }
        let serial = serial + 1;
        tx.execute(
            "UPDATE tsa_clock SET serial = $1, last_time = $2 WHERE id = 1",
            &[&serial, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok((serial, now)))
    }

    async fn key_and_certificate(
        &self,
        which: DaemonKey,
    ) -> Result<Option<ResponderRow>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!(
                    "SELECT k.id, k.token, k.label, k.algorithm, k.public_key, k.fingerprint, \
                     k.state, c.der, c.not_after, c.not_before \
                     FROM {} o JOIN keys k ON k.id = o.key_id \
                     JOIN certificates c ON c.serial = o.serial WHERE o.id = 1",
                    which.table()
                ),
                &[],
            )
            .await?;
        row.map(|r| {
            Ok(ResponderRow {
                key: key_from_row(&r)?,
                der: r.try_get(7)?,
                not_after: r.try_get(8)?,
                not_before: r.try_get(9)?,
            })
        })
        .transpose()
    }

    /// Waits for the CRL lock (one CRL signer at a time across processes) and returns it.
    pub async fn lock_crl(&self) -> Result<CrlLock, StoreError> {
        let conn = self.pool.get().await?;
        conn.execute("SELECT pg_advisory_lock($1)", &[&CRL_LOCK])
            .await?;
        Ok(CrlLock { conn: Some(conn) })
    }
}

/// The CRL lock, held on a pooled connection of its own. [`CrlLock::release`] unlocks it; if it
/// is dropped instead (an error, a cancelled request), its connection is closed rather than
/// returned to the pool, which releases the lock too.
#[derive(Debug)]
pub struct CrlLock {
    conn: Option<deadpool_postgres::Object>,
}

impl CrlLock {
    /// Unlocks and returns the connection to the pool.
    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(conn) = self.conn.take()
            && let Err(e) = conn
                .execute("SELECT pg_advisory_unlock($1)", &[&CRL_LOCK])
                .await
        {
            drop(deadpool_postgres::Object::take(conn));
            return Err(e.into());
        }
        Ok(())
    }
}

impl Drop for CrlLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Closing the session releases its advisory locks.
            drop(deadpool_postgres::Object::take(conn));
        }
    }
}

async fn bump_epoch(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1",
        &[],
    )
    .await?;
    Ok(())
}

/// Creates an account without certificates (inside an audited transaction). A taken name is a
/// conflict.
pub async fn create_account(
    tx: &Transaction<'_>,
    id: Uuid,
    name: &str,
    roles: &[String],
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO accounts (id, name, roles) VALUES ($1, $2, $3)",
        &[&id, &name, &roles],
    )
    .await?;
    Ok(())
}

/// Records a certificate issued to the live account `account`, or for the token key `key_id`
/// (inside an audited transaction). A deleted or missing account is `NotFound`.
pub async fn insert_certificate(
    tx: &Transaction<'_>,
    account: Option<&str>,
    key_id: Option<Uuid>,
    c: &NewCertificate,
) -> Result<(), StoreError> {
    let inserted = tx
        .execute(
            "INSERT INTO certificates (serial, account_id, key_id, profile, subject, fingerprint, der, not_before, not_after) \
             SELECT $1, a.id, $3, $4, $5, $6, $7, $8, $9 FROM (SELECT 1) one \
             LEFT JOIN accounts a ON a.name = $2 AND a.deleted_at IS NULL \
             WHERE $2::text IS NULL OR a.id IS NOT NULL",
            &[
                &c.serial,
                &account,
                &key_id,
                &c.profile,
                &c.subject,
                &c.fingerprint,
                &c.der,
                &c.not_before,
                &c.not_after,
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::NotFound("no such account".into()));
    }
    Ok(())
}

/// Moves a certificate from one of the states `from` to `to` with `reason` (inside an audited
/// transaction) and bumps the revocation epoch. A certificate in another state is a conflict:
/// the check and the change are one statement, so concurrent changes cannot both succeed.
pub async fn change_status(
    tx: &Transaction<'_>,
    serial: &str,
    from: &[&str],
    to: &str,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    let from: Vec<String> = from.iter().map(|s| (*s).to_owned()).collect();
    let changed = tx
        .execute(
            "UPDATE certificates SET status = $2, revocation_reason = $3, status_changed_at = now() \
             WHERE serial = $1 AND status = ANY($4)",
            &[&serial, &to, &reason, &from],
        )
        .await?;
    if changed != 1 {
        return Err(StoreError::Conflict(format!(
            "certificate {serial} is no longer in the expected state"
        )));
    }
    bump_epoch(tx).await?;
    super::notify::send(
        tx,
        &super::notify::Notice::CertificateStatus(serial.to_owned()),
    )
    .await
}

/// Marks an account deleted and revokes its certificates that are not revoked yet, with
/// reason cessationOfOperation (inside an audited transaction). `expected` are the serials the
/// caller saw and logged; if the set changed meanwhile, nothing is done (a conflict).
pub async fn delete_account(
    tx: &Transaction<'_>,
    name: &str,
    expected: &[String],
) -> Result<(), StoreError> {
    let row = tx
        .query_opt(
            "UPDATE accounts SET deleted_at = now() WHERE name = $1 AND deleted_at IS NULL RETURNING id",
            &[&name],
        )
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("account {name} is already deleted")))?;
    let id: Uuid = row.try_get(0)?;
    let rows = tx
        .query(
            "UPDATE certificates SET status = 'revoked', revocation_reason = 'cessationOfOperation', \
             status_changed_at = now() WHERE account_id = $1 AND status <> 'revoked' RETURNING serial",
            &[&id],
        )
        .await?;
    let mut revoked = rows
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()?;
    revoked.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    if revoked != expected {
        return Err(StoreError::Conflict(format!(
            "the certificates of account {name} changed meanwhile"
        )));
    }
    if !revoked.is_empty() {
        bump_epoch(tx).await?;
    }
    super::notify::send(tx, &super::notify::Notice::AccountDeleted(name.to_owned())).await
}

/// Records a signed CRL (inside an audited transaction). Its number must be new.
pub async fn insert_crl(tx: &Transaction<'_>, crl: &StoredCrl) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO crls (number, epoch, this_update, next_update, der) VALUES ($1, $2, $3, $4, $5)",
        &[
            &crl.number,
            &crl.epoch,
            &crl.this_update,
            &crl.next_update,
            &crl.der,
        ],
    )
    .await?;
    Ok(())
}

/// Records the delegated OCSP responder: its key (when `new_key`), its certificate, and the
/// pointer to both (inside an audited transaction).
pub async fn set_ocsp_responder(
    tx: &Transaction<'_>,
    key: &KeyRecord,
    new_key: bool,
    certificate: &NewCertificate,
) -> Result<(), StoreError> {
    set_daemon_key(tx, DaemonKey::OcspResponder, key, new_key, certificate).await
}

/// Records a daemon key of `which` kind: its key (when `new_key`), its certificate, and the
/// pointer to both (inside an audited transaction).
pub async fn set_daemon_key(
    tx: &Transaction<'_>,
    which: DaemonKey,
    key: &KeyRecord,
    new_key: bool,
    certificate: &NewCertificate,
) -> Result<(), StoreError> {
    if new_key {
        tx.execute(
            "INSERT INTO keys (id, token, label, algorithm, purpose, public_key, fingerprint) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &key.id,
                &key.token,
                &key.label,
                &key.algorithm.as_str(),
                &which.purpose(),
                &key.public_key,
                &key.fingerprint,
            ],
        )
        .await?;
    }
    insert_certificate(tx, None, None, certificate).await?;
    tx.execute(
        &format!(
            "INSERT INTO {} (id, key_id, serial) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET key_id = $1, serial = $2, updated_at = now()",
            which.table()
        ),
        &[&key.id, &certificate.serial],
    )
    .await?;
    Ok(())
}
