//! store::rings: the SQL of key rings, key usage and key leases. A lease row makes one key serve
//! one holder at a time across daemon processes (invariant 2); the least recently used idle key
//! is leased first (invariant 3).

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::{KeyPurpose, KeyRecord, Store, StoreError, insert_key, key_from_row};
use crate::hsm::KeyAlgorithm;

/// A ring: a named group of keys of one algorithm on one token.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Name.
    pub name: String,
    /// Algorithm of every key in the ring.
    pub algorithm: KeyAlgorithm,
    /// Configured token name that holds the ring's keys.
    pub token: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// The User ID of its keys' OpenPGP certificates, if set (else the default).
    pub openpgp_user_id: Option<String>,
}

/// A key of a ring with its usage.
#[derive(Debug, Clone)]
pub struct RingKey {
    /// The key.
    pub key: KeyRecord,
    /// The ring.
    pub ring: String,
    /// Signatures made (as recorded; online signing records usage in batches).
    pub usage_count: i64,
    /// When it last signed.
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was retired (it no longer signs, still verifies).
    pub retired_at: Option<OffsetDateTime>,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

const RING_KEY_COLUMNS: &str = "id, token, label, algorithm, public_key, fingerprint, state, ring, usage_count, last_used_at, retired_at, created_at";

fn ring_key_from_row(r: &tokio_postgres::Row) -> Result<RingKey, StoreError> {
    Ok(RingKey {
        key: key_from_row(r)?,
        ring: r.try_get(7)?,
        usage_count: r.try_get(8)?,
        last_used_at: r.try_get(9)?,
        retired_at: r.try_get(10)?,
        created_at: r.try_get(11)?,
    })
}

fn ring_from_row(r: &tokio_postgres::Row) -> Result<Ring, StoreError> {
    let algorithm: String = r.try_get(1)?;
    Ok(Ring {
        name: r.try_get(0)?,
        algorithm: algorithm.parse().map_err(StoreError::Corrupt)?,
        token: r.try_get(2)?,
        created_at: r.try_get(3)?,
        openpgp_user_id: r.try_get(4)?,
    })
}

const RING_COLUMNS: &str = "name, algorithm, token, created_at, openpgp_user_id";

fn interval_secs(ttl: Duration) -> f64 {
    ttl.as_secs_f64().max(0.001)
}

/// Creates a ring (inside an audited transaction). A ring that exists is a conflict.
pub async fn insert_ring(
    tx: &Transaction<'_>,
    name: &str,
    algorithm: KeyAlgorithm,
    token: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO rings (name, algorithm, token) VALUES ($1, $2, $3)",
        &[&name, &algorithm.as_str(), &token],
    )
    .await?;
    Ok(())
}

/// Records a key generated on the token as a member of `ring` (inside an audited transaction).
pub async fn insert_ring_key(
    tx: &Transaction<'_>,
    key: &KeyRecord,
    ring: &str,
) -> Result<(), StoreError> {
    insert_key(tx, key, KeyPurpose::Signing).await?;
    let n = tx
        .execute("UPDATE keys SET ring = $2 WHERE id = $1", &[&key.id, &ring])
        .await?;
    if n != 1 {
        return Err(StoreError::NotFound(format!("key {}", key.id)));
    }
    Ok(())
}

/// Retires a key: it no longer signs, still verifies (inside an audited transaction).
pub async fn retire_key(tx: &Transaction<'_>, id: Uuid) -> Result<(), StoreError> {
    let n = tx
        .execute(
            "UPDATE keys SET state = 'retired', retired_at = coalesce(retired_at, now()) \
             WHERE id = $1 AND ring IS NOT NULL",
            &[&id],
        )
        .await?;
    if n != 1 {
        return Err(StoreError::NotFound(format!("key {id}")));
    }
    super::notify::send(tx, &super::notify::Notice::KeyRetired(id)).await
}

/// A ring key's signature budget and validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLimits {
    /// The key's own budget, if it has one.
    pub own_max: Option<i64>,
    /// The budget of each key of its ring, if the ring has one.
    pub ring_max: Option<i64>,
    /// Signatures counted against the budget.
    pub spent: i64,
    /// Not before.
    pub usable_from: Option<OffsetDateTime>,
    /// Not from.
    pub usable_until: Option<OffsetDateTime>,
}

impl KeyLimits {
    /// The budget that applies: the key's own, else its ring's.
    pub fn max(&self) -> Option<i64> {
        self.own_max.or(self.ring_max)
    }

    /// Whether any limit applies.
    pub fn any(&self) -> bool {
        self.max().is_some() || self.usable_from.is_some() || self.usable_until.is_some()
    }

    /// Why the key may not make `n` more signatures now, if it may not.
    pub fn refusal(&self, id: Uuid, n: i64, now: OffsetDateTime) -> Option<String> {
        if let Some(from) = self.usable_from.filter(|f| now < *f) {
            return Some(format!("key {id} may sign only from {from}"));
        }
        if let Some(until) = self.usable_until.filter(|u| now >= *u) {
            return Some(format!("key {id} may sign only until {until}"));
        }
        match self.max() {
            Some(max) if self.spent + n > max => Some(format!(
                "key {id} has used {} of its budget of {max} signatures",
                self.spent
            )),
            _ => None,
        }
    }
}

/// Sets a key's own budget and window (inside an audited transaction), announced to every
/// daemon.
pub async fn set_key_limits(
    tx: &Transaction<'_>,
    id: Uuid,
    max: Option<i64>,
    usable_from: Option<OffsetDateTime>,
    usable_until: Option<OffsetDateTime>,
) -> Result<(), StoreError> {
    let n = tx
        .execute(
            "UPDATE keys SET max_signatures = $2, usable_from = $3, usable_until = $4 \
             WHERE id = $1 AND ring IS NOT NULL",
            &[&id, &max, &usable_from, &usable_until],
        )
        .await?;
    if n != 1 {
        return Err(StoreError::NotFound(format!("key {id}")));
    }
    super::notify::send(tx, &super::notify::Notice::LimitsChanged).await
}

/// Sets the budget of every key of a ring that has none of its own (inside an audited
/// transaction), announced to every daemon.
pub async fn set_ring_limits(
    tx: &Transaction<'_>,
    ring: &str,
    key_max: Option<i64>,
) -> Result<(), StoreError> {
    let n = tx
        .execute(
            "UPDATE rings SET key_max_signatures = $2 WHERE name = $1",
            &[&ring, &key_max],
        )
        .await?;
    if n != 1 {
        return Err(StoreError::NotFound(format!("ring {ring}")));
    }
    super::notify::send(tx, &super::notify::Notice::LimitsChanged).await
}

impl Store {
    /// One ring.
    pub async fn ring(&self, name: &str) -> Result<Option<Ring>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!("SELECT {RING_COLUMNS} FROM rings WHERE name = $1"),
                &[&name],
            )
            .await?;
        row.as_ref().map(ring_from_row).transpose()
    }

    /// Every ring, by name.
    pub async fn rings(&self) -> Result<Vec<Ring>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!("SELECT {RING_COLUMNS} FROM rings ORDER BY name"),
                &[],
            )
            .await?;
        rows.iter().map(ring_from_row).collect()
    }

    /// The keys of a ring, least recently used first.
    pub async fn ring_keys(&self, ring: &str) -> Result<Vec<RingKey>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {RING_KEY_COLUMNS} FROM keys WHERE ring = $1 \
                     ORDER BY last_used_at NULLS FIRST, created_at, id"
                ),
                &[&ring],
            )
            .await?;
        rows.iter().map(ring_key_from_row).collect()
    }

    /// The budget and window of ring key `id`.
    pub async fn key_limits(&self, id: Uuid) -> Result<Option<KeyLimits>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT k.max_signatures, r.key_max_signatures, k.signatures_spent, \
                 k.usable_from, k.usable_until \
                 FROM keys k JOIN rings r ON r.name = k.ring WHERE k.id = $1",
                &[&id],
            )
            .await?;
        row.map(|r| {
            Ok(KeyLimits {
                own_max: r.try_get(0)?,
                ring_max: r.try_get(1)?,
                spent: r.try_get(2)?,
                usable_from: r.try_get(3)?,
                usable_until: r.try_get(4)?,
            })
        })
        .transpose()
    }

    /// How many active keys of `ring` may make `need` more signatures now (budget left,
    /// inside their windows): 0 means waiting for a lease will not help.
    pub async fn signable_keys(&self, ring: &str, need: i64) -> Result<i64, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached("SELECT rings_signable_keys($1, $2)")
            .await?;
        Ok(conn.query_one(&stmt, &[&ring, &need]).await?.try_get(0)?)
    }

    /// Counts `n` signatures of key `id` against its budget, if the budget and the window
    /// allow them, in the one statement that checks them (`keys_spend` in
    /// `sql/V14__job_budgets.sql`: no number of daemons and job workers can overrun it; the
    /// spend that uses the budget up announces `key.spent`). `Ok(Err(why))` when they do not
    /// (nothing counted).
    pub async fn spend_signatures(
        &self,
        id: Uuid,
        n: i64,
    ) -> Result<Result<(), String>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn.prepare_cached("SELECT keys_spend($1, $2)").await?;
        let counted: Option<i64> = conn.query_one(&stmt, &[&id, &n]).await?.try_get(0)?;
        if counted.is_some() {
            return Ok(Ok(()));
        }
        drop(conn);
        let why = self
            .key_limits(id)
            .await?
            .and_then(|l| l.refusal(id, n, OffsetDateTime::now_utc()))
            .unwrap_or_else(|| format!("key {id} may not sign now"));
        Ok(Err(why))
    }

    /// One ring key by id.
    pub async fn ring_key(&self, id: Uuid) -> Result<Option<RingKey>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!("SELECT {RING_KEY_COLUMNS} FROM keys WHERE id = $1 AND ring IS NOT NULL"),
                &[&id],
            )
            .await?;
        row.as_ref().map(ring_key_from_row).transpose()
    }

    /// Adds usage in bulk: `(key, signatures, last used)`. Online signing flushes its counters
    /// with this, so the hot path does not write per signature.
    pub async fn record_key_usage(
        &self,
        usage: &[(Uuid, i64, OffsetDateTime)],
    ) -> Result<(), StoreError> {
        if usage.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = usage.iter().map(|u| u.0).collect();
        let counts: Vec<i64> = usage.iter().map(|u| u.1).collect();
        let times: Vec<OffsetDateTime> = usage.iter().map(|u| u.2).collect();
        let conn = self.pool.get().await?;
        conn.execute(
            "UPDATE keys k SET usage_count = k.usage_count + u.n, \
             last_used_at = greatest(k.last_used_at, u.t) \
             FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS u(id, n, t) WHERE k.id = u.id",
            &[&ids, &counts, &times],
        )
        .await?;
        Ok(())
    }

    /// Leases the least recently used active key of `ring` that nobody holds (or whose lease
    /// expired) to `holder` for `ttl`, skipping `exclude`. Concurrent callers, in any process,
    /// never get the same key: the key row is locked (`FOR UPDATE SKIP LOCKED`) while the lease
    /// is written. Only keys that may make one more signature now are leased (budget left,
    /// inside their windows). Returns `None` when every such key is leased.
    pub async fn lease_lru_key(
        &self,
        ring: &str,
        holder: &str,
        ttl: Duration,
        exclude: &[Uuid],
    ) -> Result<Option<RingKey>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {RING_KEY_COLUMNS} FROM keys \
                 WHERE id = (SELECT rings_lease_lru_key($1, $2, $3, $4))"
            ))
            .await?;
        let row = conn
            .query_opt(&stmt, &[&ring, &holder, &interval_secs(ttl), &exclude])
            .await?;
        row.as_ref().map(ring_key_from_row).transpose()
    }

    /// Leases one given key (if idle) to `holder` for `ttl`.
    pub async fn lease_key(
        &self,
        id: Uuid,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let conn = self.pool.get().await?;
        let n = conn
            .execute(
                "INSERT INTO key_leases (key_id, holder, acquired_at, expires_at) \
                 VALUES ($1, $2, clock_timestamp(), clock_timestamp() + make_interval(secs => $3)) \
                 ON CONFLICT (key_id) DO UPDATE SET holder = excluded.holder, \
                   acquired_at = excluded.acquired_at, expires_at = excluded.expires_at \
                 WHERE key_leases.expires_at < clock_timestamp()",
                &[&id, &holder, &interval_secs(ttl)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Extends a lease that `holder` still holds on a key that may still sign. `false` means
    /// the lease was lost (expired and taken over, or released) or the key retired: the holder
    /// must stop using the key.
    pub async fn renew_lease(
        &self,
        id: Uuid,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let conn = self.pool.get().await?;
        let n = conn
            .execute(
                "UPDATE key_leases l SET expires_at = clock_timestamp() + make_interval(secs => $3) \
                 FROM keys k \
                 WHERE l.key_id = $1 AND l.holder = $2 AND l.expires_at >= clock_timestamp() \
                   AND k.id = l.key_id AND k.state = 'active' AND k.retired_at IS NULL",
                &[&id, &holder, &interval_secs(ttl)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Releases a lease and records the key's use: `used` more signatures, last used now.
    pub async fn release_lease(&self, id: Uuid, holder: &str, used: i64) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        release_lease(&**conn, id, holder, used).await
    }
}

/// [`Store::release_lease`] inside a transaction (batch jobs release with their results).
pub async fn release_lease(
    client: &impl tokio_postgres::GenericClient,
    id: Uuid,
    holder: &str,
    used: i64,
) -> Result<(), StoreError> {
    client
        .execute(
            "DELETE FROM key_leases WHERE key_id = $1 AND holder = $2",
            &[&id, &holder],
        )
        .await?;
    client
        .execute(
            "UPDATE keys SET last_used_at = clock_timestamp(), usage_count = usage_count + $2 WHERE id = $1",
            &[&id, &used],
        )
        .await?;
    Ok(())
}

/// Creates `name` unless it exists (inside an audited transaction), and checks that an
/// existing ring has this algorithm and token. Returns whether the ring was created. A ring of
/// another algorithm or token is a conflict.
pub async fn ensure_ring(
    tx: &Transaction<'_>,
    name: &str,
    algorithm: KeyAlgorithm,
    token: &str,
    openpgp_user_id: Option<&str>,
) -> Result<bool, StoreError> {
    let created = tx
        .execute(
            "INSERT INTO rings (name, algorithm, token, openpgp_user_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
            &[&name, &algorithm.as_str(), &token, &openpgp_user_id],
        )
        .await?;
    let row = tx
        .query_one(
            "SELECT algorithm, token FROM rings WHERE name = $1",
            &[&name],
        )
        .await?;
    let (alg, tok): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    if alg != algorithm.as_str() || tok != token {
        return Err(StoreError::Conflict(format!(
            "ring {name} holds {alg} keys on token {tok}"
        )));
    }
    Ok(created == 1)
}

/// Stores a key's first OpenPGP certificate; refused (`Conflict`) if it has one already.
pub async fn set_openpgp_certificate(
    tx: &Transaction<'_>,
    id: Uuid,
    certificate: &[u8],
) -> Result<(), StoreError> {
    let n = tx
        .execute(
            "UPDATE keys SET openpgp_certificate = $2 \
             WHERE id = $1 AND ring IS NOT NULL AND openpgp_certificate IS NULL",
            &[&id, &certificate],
        )
        .await?;
    if n != 1 {
        return Err(StoreError::Conflict(format!(
            "key {id} has an OpenPGP certificate already"
        )));
    }
    Ok(())
}

impl Store {
    /// A ring key's stored OpenPGP certificate (binary packets), if one was made.
    pub async fn openpgp_certificate(&self, id: Uuid) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT openpgp_certificate FROM keys WHERE id = $1 AND ring IS NOT NULL",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.flatten())
    }

    /// Every ring key, by ring, then least recently used first.
    pub async fn all_ring_keys(&self) -> Result<Vec<RingKey>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {RING_KEY_COLUMNS} FROM keys WHERE ring IS NOT NULL \
                     ORDER BY ring, last_used_at NULLS FIRST, created_at, id"
                ),
                &[],
            )
            .await?;
        rows.iter().map(ring_key_from_row).collect()
    }

    /// Renews every lease in `ids` that `holder` still holds, in one statement, and returns
    /// the ids renewed whose key may still sign (active, not retired). A key missing from the
    /// answer must no longer be used by the holder: its lease was lost or the key retired.
    pub async fn renew_leases(
        &self,
        ids: &[Uuid],
        holder: &str,
        ttl: Duration,
    ) -> Result<Vec<Uuid>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "UPDATE key_leases l SET expires_at = clock_timestamp() + make_interval(secs => $3) \
                 FROM keys k \
                 WHERE l.key_id = ANY($1::uuid[]) AND l.holder = $2 \
                   AND l.expires_at >= clock_timestamp() AND k.id = l.key_id \
                 RETURNING l.key_id, k.state = 'active' AND k.retired_at IS NULL",
                &[&ids, &holder, &interval_secs(ttl)],
            )
            .await?;
        let mut usable = Vec::with_capacity(rows.len());
        for r in rows {
            let id: Uuid = r.try_get(0)?;
            let active: bool = r.try_get(1)?;
            if active {
                usable.push(id);
            }
        }
        Ok(usable)
    }

    /// Leases one given key to `holder` for `ttl` if it may sign (active, not retired) and
    /// nobody else holds it; returns the key when leased.
    pub async fn lease_active_key(
        &self,
        id: Uuid,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<RingKey>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!(
                    "WITH candidate AS ( \
                       SELECT k.id FROM keys k \
                       WHERE k.id = $1 AND k.ring IS NOT NULL AND k.state = 'active' \
                         AND k.retired_at IS NULL FOR UPDATE OF k), \
                     leased AS ( \
                       INSERT INTO key_leases (key_id, holder, acquired_at, expires_at) \
                       SELECT id, $2, clock_timestamp(), clock_timestamp() + make_interval(secs => $3) \
                       FROM candidate \
                       ON CONFLICT (key_id) DO UPDATE SET holder = excluded.holder, \
                         acquired_at = excluded.acquired_at, expires_at = excluded.expires_at \
                       WHERE key_leases.expires_at < clock_timestamp() \
                       RETURNING key_id) \
                     SELECT {RING_KEY_COLUMNS} FROM keys WHERE id = (SELECT key_id FROM leased)"
                ),
                &[&id, &holder, &interval_secs(ttl)],
            )
            .await?;
        row.as_ref().map(ring_key_from_row).transpose()
    }

    /// Releases every lease `holder` still has (at shutdown), without recording usage.
    pub async fn release_all_leases(&self, holder: &str) -> Result<u64, StoreError> {
        let conn = self.pool.get().await?;
        Ok(conn
            .execute("DELETE FROM key_leases WHERE holder = $1", &[&holder])
            .await?)
    }
}
