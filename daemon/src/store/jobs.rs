//! store::jobs: the SQL of records, signatures, jobs, batches and batch leases, and the
//! `LISTEN` connection that wakes workers of other processes.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::notify::Listener;
use super::{Store, StoreError};
use crate::config;

/// The channel on which job events are announced (`job`, `key`, `done`, `cancelled`).
pub const CHANNEL: &str = "signetd_jobs";

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// Id.
    pub id: Uuid,
    /// The ring whose keys sign.
    pub ring: String,
    /// Records per batch.
    pub batch_size: i32,
    /// `running`, `done` or `cancelled`.
    pub state: String,
    /// Records the job covers.
    pub total: i64,
    /// Batches the job was cut into.
    pub batch_count: i32,
    /// The account that created it.
    pub created_by: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// When it finished or was cancelled.
    pub finished_at: Option<OffsetDateTime>,
}

const JOB_COLUMNS: &str =
    "id, ring, batch_size, state, total, batch_count, created_by, created_at, finished_at";

fn job_from_row(r: &tokio_postgres::Row) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        id: r.try_get(0)?,
        ring: r.try_get(1)?,
        batch_size: r.try_get(2)?,
        state: r.try_get(3)?,
        total: r.try_get(4)?,
        batch_count: r.try_get(5)?,
        created_by: r.try_get(6)?,
        created_at: r.try_get(7)?,
        finished_at: r.try_get(8)?,
    })
}

/// How far a job got.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Records signed.
    pub signed: i64,
    /// Batches done.
    pub batches_done: i64,
    /// Done batches and signed records per key.
    pub per_key: Vec<KeyCount>,
}

/// One key's share of a job.
#[derive(Debug, Clone)]
pub struct KeyCount {
    /// Key id.
    pub key_id: Uuid,
    /// Key label on its token.
    pub label: String,
    /// Batches it signed.
    pub batches: i64,
    /// Records it signed.
    pub records: i64,
}

/// A batch a worker claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The job.
    pub job: Uuid,
    /// The job's ring.
    pub ring: String,
    /// Batch id.
    pub batch: i64,
    /// Position in the job.
    pub seq: i32,
    /// First record id of the range.
    pub first: i64,
    /// Last record id of the range.
    pub last: i64,
    /// The claim number: (holder, attempt) identifies this claim.
    pub attempt: i32,
    /// Records in the batch: the signatures a key must have left in its budget to sign it.
    pub size: i32,
    /// The key leased with the claim (its budget charged with `size`, the lease written into
    /// the batch's lease history), or `None` when no key that may sign the batch was idle:
    /// the worker waits for one, or gives the batch up if no key of the ring may sign it.
    pub key: Option<crate::store::KeyRecord>,
    /// The batch's first unsigned records (id, data), by id, at most the page asked for.
    pub page: Vec<(i64, Vec<u8>)>,
}

/// What a worker found when it asked for work.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// No job is running.
    NoJob,
    /// A job runs, but every open batch is claimed by a live worker.
    Busy(Uuid),
    /// Batches to sign (at least one), by seq.
    Claimed(Vec<Claim>),
}

/// The signatures of a finished batch, as the worker hands them to the audit writer.
#[derive(Debug, Clone)]
pub struct FinishedBatch {
    /// Batch id.
    pub batch: i64,
    /// The worker's holder name.
    pub holder: String,
    /// The claim number.
    pub attempt: i32,
    /// The key that signed.
    pub key: Uuid,
    /// Record ids, ascending: leaf i is record `records[i]`.
    pub records: Vec<i64>,
    /// Signature of each record.
    pub signatures: Vec<Vec<u8>>,
    /// RFC 6962 root over the leaves.
    pub root: [u8; 32],
}

/// A done batch, for proofs and verification.
#[derive(Debug, Clone)]
pub struct BatchRow {
    /// Batch id.
    pub id: i64,
    /// The job.
    pub job: Uuid,
    /// Position in the job.
    pub seq: i32,
    /// The key that signed it.
    pub key: crate::store::KeyRecord,
    /// Signatures stored.
    pub signed: i32,
    /// RFC 6962 root of its leaves.
    pub root: [u8; 32],
}

/// One signed record of a batch.
#[derive(Debug, Clone)]
pub struct SignedRecord {
    /// Record id.
    pub record: i64,
    /// Leaf index in the batch.
    pub leaf_index: i32,
    /// The signature.
    pub signature: Vec<u8>,
}

/// One lease of the lease history.
#[derive(Debug, Clone)]
pub struct LeaseRow {
    /// The key.
    pub key: Uuid,
    /// Its holder.
    pub holder: String,
    /// When the lease began.
    pub leased_at: OffsetDateTime,
    /// Its expiry as last renewed.
    pub expires_at: OffsetDateTime,
    /// When it was released; `None` if its holder died with it.
    pub released_at: Option<OffsetDateTime>,
}

fn to_hash(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("hash of {} bytes", bytes.len())))
}

/// Records as `jobs_unsigned_records` returns them: ids and data in two arrays of one length.
fn pair_records(ids: Vec<i64>, data: Vec<Vec<u8>>) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    if ids.len() != data.len() {
        return Err(StoreError::Corrupt(
            "unsigned records came back as unequal id and data arrays".into(),
        ));
    }
    Ok(ids.into_iter().zip(data).collect())
}

fn secs(ttl: Duration) -> f64 {
    ttl.as_secs_f64().max(0.001)
}

/// Stores records (inside an audited transaction). Returns their ids in input order.
pub async fn insert_records(
    tx: &Transaction<'_>,
    data: &[Vec<u8>],
) -> Result<Vec<i64>, StoreError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    // Identity values are drawn in insertion order, which ORDER BY fixes.
    let rows = tx
        .query(
            "INSERT INTO records (data) \
             SELECT u.d FROM unnest($1::bytea[]) WITH ORDINALITY AS u(d, n) ORDER BY u.n \
             RETURNING id",
            &[&data],
        )
        .await?;
    let mut ids = rows
        .iter()
        .map(|r| r.try_get::<_, i64>(0))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// Stores records with a binary `COPY` (inside an audited transaction): the fast path of
/// `signetd records seed`. Returns the number of rows written.
pub async fn copy_records(tx: &Transaction<'_>, data: &[Vec<u8>]) -> Result<u64, StoreError> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;

    let sink = tx
        .copy_in("COPY records (data) FROM STDIN (FORMAT binary)")
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::BYTEA]);
    let mut writer = std::pin::pin!(writer);
    for d in data {
        writer.as_mut().write(&[d]).await?;
    }
    Ok(writer.finish().await?)
}

/// Creates a job and cuts every record unsigned now into batches of `batch_size` (inside an
/// audited transaction). A job that finds nothing to sign is done at once. Conflict when a
/// job is running already or no active key of the ring may sign now (a key with some budget
/// left is enough: the job waits, `blocked`, for batches it cannot sign whole); not found when
/// the ring does not exist.
pub async fn create_job(
    tx: &Transaction<'_>,
    id: Uuid,
    ring: &str,
    batch_size: i32,
    created_by: &str,
) -> Result<JobRow, StoreError> {
    let inserted = tx
        .execute(
            "INSERT INTO jobs (id, ring, batch_size, state, created_by) \
             SELECT $1, name, $3, 'running', $4 FROM rings WHERE name = $2",
            &[&id, &ring, &batch_size, &created_by],
        )
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
                StoreError::Conflict("a job is running already".into())
            }
            _ => e.into(),
        })?;
    if inserted != 1 {
        return Err(StoreError::NotFound(format!("ring {ring}")));
    }
    let usable: i64 = tx
        .query_one("SELECT rings_signable_keys($1, 1)", &[&ring])
        .await?
        .try_get(0)?;
    if usable == 0 {
        return Err(StoreError::Conflict(format!(
            "no key of ring {ring} may sign now: it has no active key, or their signature \
             budgets are used up or they are outside their validity windows"
        )));
    }
    tx.execute(
        "INSERT INTO batches (job_id, seq, first_record, last_record, size) \
         SELECT $1, n::integer, min(id), max(id), count(*)::integer FROM ( \
           SELECT r.id, (row_number() OVER (ORDER BY r.id) - 1) / $2 AS n FROM records r \
            WHERE NOT EXISTS (SELECT 1 FROM signatures s WHERE s.record_id = r.id)) t \
         GROUP BY n",
        &[&id, &i64::from(batch_size)],
    )
    .await?;
    let row = tx
        .query_one(
            &format!(
                "UPDATE jobs j SET total = b.total, batch_count = b.n, \
                   state = CASE WHEN b.n = 0 THEN 'done' ELSE 'running' END, \
                   finished_at = CASE WHEN b.n = 0 THEN clock_timestamp() END \
                 FROM (SELECT coalesce(sum(size), 0)::bigint AS total, count(*)::integer AS n \
                       FROM batches WHERE job_id = $1) b \
                 WHERE j.id = $1 RETURNING {}",
                JOB_COLUMNS
                    .split(", ")
                    .map(|c| format!("j.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[&id],
        )
        .await?;
    tx.execute("SELECT pg_notify($1, 'job')", &[&CHANNEL])
        .await?;
    job_from_row(&row)
}

/// Cancels a running job (inside an audited transaction): no batch of it commits afterwards.
pub async fn cancel_job(tx: &Transaction<'_>, id: Uuid) -> Result<JobRow, StoreError> {
    let row = tx
        .query_opt(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
    let job = job_from_row(&row)?;
    if job.state != "running" {
        return Err(StoreError::Conflict(format!("job {id} is {}", job.state)));
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE jobs SET state = 'cancelled', finished_at = clock_timestamp() \
                 WHERE id = $1 RETURNING {JOB_COLUMNS}"
            ),
            &[&id],
        )
        .await?;
    tx.execute("SELECT pg_notify($1, 'cancelled')", &[&CHANNEL])
        .await?;
    job_from_row(&row)
}

/// Finishes a batch (inside the audit writer's transaction), in one round trip and its own
/// server-side subtransaction (`jobs_try_finish_batch`, for
/// [`crate::audit::Audit::append_with_contained`]): checks that the caller still holds the
/// claim and the key lease and that the job runs, stores the signatures, marks the batch done,
/// and releases the key lease, recording the key's last use as the time the batch began (see
/// `jobs_release_key` in `sql/V6__jobs.sql`: ordering keys by the end of their last batch would
/// let per-key counts drift apart with many batches in flight). Returns whether the job is
/// done. A refusal — claim or lease lost, job not running, a record signed already (invariant
/// 6) — leaves nothing of the batch and is [`StoreError::Conflict`].
pub async fn finish_batch(tx: &Transaction<'_>, b: &FinishedBatch) -> Result<bool, StoreError> {
    // Typed: one round trip, no prepare (the audit writer's transaction has no statement cache).
    let rows = tx
        .query_typed(
            "SELECT jobs_try_finish_batch($1, $2, $3, $4, $5, $6, $7)",
            &[
                (&b.batch, Type::INT8),
                (&b.holder, Type::TEXT),
                (&b.attempt, Type::INT4),
                (&b.key, Type::UUID),
                (&b.records, Type::INT8_ARRAY),
                (&b.signatures, Type::BYTEA_ARRAY),
                (&b.root.as_slice(), Type::BYTEA),
            ],
        )
        .await?;
    let outcome: String = rows
        .first()
        .ok_or_else(|| StoreError::Corrupt("jobs_try_finish_batch returned no row".into()))?
        .try_get(0)?;
    match outcome.as_str() {
        "done" => Ok(true),
        "open" => Ok(false),
        refusal => Err(StoreError::Conflict(refusal.to_owned())),
    }
}

impl Store {
    /// One job.
    pub async fn job(&self, id: Uuid) -> Result<Option<JobRow>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// The newest jobs first.
    pub async fn jobs(&self, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC LIMIT $1"),
                &[&limit],
            )
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// The running job, if any.
    pub async fn running_job(&self) -> Result<Option<JobRow>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running'"),
                &[],
            )
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Signed records, done batches, and the share of each key.
    pub async fn job_progress(&self, id: Uuid) -> Result<Progress, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT b.key_id, k.label, count(*), sum(b.signed)::bigint \
                 FROM batches b JOIN keys k ON k.id = b.key_id \
                 WHERE b.job_id = $1 AND b.state = 'done' GROUP BY b.key_id, k.label \
                 ORDER BY k.label",
                &[&id],
            )
            .await?;
        let mut progress = Progress::default();
        for r in &rows {
            let count = KeyCount {
                key_id: r.try_get(0)?,
                label: r.try_get(1)?,
                batches: r.try_get(2)?,
                records: r.try_get(3)?,
            };
            progress.signed += count.records;
            progress.batches_done += count.batches;
            progress.per_key.push(count);
        }
        Ok(progress)
    }

    /// Claims up to `count` of the next open batches of the running job for `holder` until
    /// `ttl` from now — pending ones, or ones whose claim expired (their worker died) — leases
    /// for each the least recently used idle key of the job's ring that may sign it whole
    /// (reserving its size from the key's budget, see [`Store::lease_batch_key`]; the first
    /// batch gets the least recently used key), and reads each batch's first `page` unsigned
    /// records: one call, one commit, five statements however many batches
    /// (`jobs_claim_batches`, `sql/V17__claim_several_batches.sql`). Concurrent callers in any
    /// process never get the same batch or key (`FOR UPDATE SKIP LOCKED`).
    pub async fn claim_batches(
        &self,
        holder: &str,
        ttl: Duration,
        page: i32,
        count: i32,
    ) -> Result<ClaimOutcome, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT c.o_job, c.o_ring, c.o_batch, c.o_seq, c.o_first, c.o_last, c.o_attempt, \
                        c.o_ids, c.o_data, c.o_size, \
                        k.id, k.token, k.label, k.algorithm, k.public_key, k.fingerprint, k.state \
                 FROM jobs_claim_batches($1, $2, $3, $4) c LEFT JOIN keys k ON k.id = c.o_key",
            )
            .await?;
        let rows = conn
            .query(&stmt, &[&holder, &secs(ttl), &page, &count])
            .await?;
        let Some(first) = rows.first() else {
            return Ok(ClaimOutcome::NoJob);
        };
        if first.try_get::<_, Option<i64>>(2)?.is_none() {
            return Ok(ClaimOutcome::Busy(first.try_get(0)?));
        }
        let mut claims = Vec::with_capacity(rows.len());
        for row in &rows {
            let key = match row.try_get::<_, Option<Uuid>>(10)? {
                Some(_) => Some(KeyColumns { row, at: 10 }.read()?),
                None => None,
            };
            claims.push(Claim {
                job: row.try_get(0)?,
                ring: row.try_get(1)?,
                batch: row.try_get(2)?,
                seq: row.try_get(3)?,
                first: row.try_get(4)?,
                last: row.try_get(5)?,
                attempt: row.try_get(6)?,
                size: row.try_get(9)?,
                key,
                page: pair_records(row.try_get(7)?, row.try_get(8)?)?,
            });
        }
        Ok(ClaimOutcome::Claimed(claims))
    }

    /// The unsigned records of a batch's range with an id above `after`, by id, at most
    /// `limit` of them (a batch is read in pages, so a worker's memory stays bounded).
    pub async fn unsigned_records(
        &self,
        after: i64,
        last: i64,
        limit: i32,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached("SELECT r_ids, r_data FROM jobs_unsigned_records($1, $2, $3)")
            .await?;
        let row = conn.query_one(&stmt, &[&after, &last, &limit]).await?;
        pair_records(row.try_get(0)?, row.try_get(1)?)
    }

    /// Leases a key for the batch attempt `holder` claimed (`jobs_lease_key` in
    /// `sql/V14__job_budgets.sql`): the least recently used idle key of the job's ring that may
    /// sign the whole batch now, with the batch's size reserved from its budget and the lease
    /// written into the batch's lease history with the reservation — one transaction, the key
    /// row locked, so a reservation never races an online spend and never goes unrecorded.
    /// `None` when no such key is idle (or the claim is no longer `holder`'s).
    pub async fn lease_batch_key(
        &self,
        batch: i64,
        attempt: i32,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<crate::store::KeyRecord>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT k.id, k.token, k.label, k.algorithm, k.public_key, k.fingerprint, k.state \
                 FROM keys k WHERE k.id = (SELECT jobs_lease_key($1, $2, $3, $4))",
            )
            .await?;
        let row = conn
            .query_opt(&stmt, &[&batch, &attempt, &holder, &secs(ttl)])
            .await?;
        row.map(|r| KeyColumns { row: &r, at: 0 }.read())
            .transpose()
    }

    /// The size of the running job `job`'s next open batch when no key of its ring may sign a
    /// batch of that size now (budgets used up, windows closed): the job is blocked until a
    /// budget is raised. `None` when it is not running or can go on.
    pub async fn job_blocked(&self, job: Uuid) -> Result<Option<i32>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT b.size FROM jobs j CROSS JOIN LATERAL ( \
                   SELECT n.size FROM batches n WHERE n.job_id = j.id AND n.state <> 'done' \
                    ORDER BY n.seq LIMIT 1) b \
                 WHERE j.id = $1 AND j.state = 'running' \
                   AND rings_signable_keys(j.ring, b.size) = 0",
                &[&job],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Extends a batch claim (and copies the key lease's expiry, renewed by the caller just
    /// before, into the lease history). `false` means the claim was lost.
    pub async fn renew_claim(
        &self,
        batch: i64,
        attempt: i32,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "WITH claim AS ( \
                   UPDATE batches SET claim_expires_at = clock_timestamp() + make_interval(secs => $4) \
                    WHERE id = $1 AND attempts = $2 AND holder = $3 AND state = 'claimed' \
                      AND claim_expires_at >= clock_timestamp() RETURNING id), \
                 lease AS ( \
                   UPDATE batch_leases l SET expires_at = k.expires_at FROM key_leases k \
                    WHERE l.batch_id = $1 AND l.attempt = $2 AND l.released_at IS NULL \
                      AND k.key_id = l.key_id AND k.holder = l.holder RETURNING 1) \
                 SELECT (SELECT count(*) FROM claim), (SELECT count(*) FROM lease)",
            )
            .await?;
        let row = conn
            .query_one(&stmt, &[&batch, &attempt, &holder, &secs(ttl)])
            .await?;
        Ok(row.try_get::<_, i64>(0)? == 1)
    }

    /// Gives a batch up: its claim goes back to pending (if still this worker's), the key
    /// lease (if `key` is given and still held) is released with `used` signatures recorded
    /// (`jobs_release_key`: the key keeps its place in the order of least recent use), and the
    /// part of the attempt's budget reservation that was not used goes back to the key
    /// (`jobs_settle_reservation`: once, whether or not the lease is still held — the worker
    /// stopped signing). The lease history says when. One transaction, so the history never
    /// claims a lease longer than it was.
    pub async fn abandon_batch(
        &self,
        batch: i64,
        attempt: i32,
        holder: &str,
        key: Option<(Uuid, i64)>,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        tx.execute(
            "UPDATE batches SET state = 'pending', claim_expires_at = NULL \
             WHERE id = $1 AND attempts = $2 AND holder = $3 AND state = 'claimed'",
            &[&batch, &attempt, &holder],
        )
        .await?;
        let made = key.map_or(0, |(_, used)| used);
        tx.execute(
            "SELECT jobs_settle_reservation($1, $2, $3)",
            &[&batch, &attempt, &made],
        )
        .await?;
        if let Some((key, used)) = key {
            let released: bool = tx
                .query_one(
                    "SELECT jobs_release_key($1, $2, $3)",
                    &[&key, &holder, &used],
                )
                .await?
                .try_get(0)?;
            if released {
                tx.execute(
                    "UPDATE batch_leases SET released_at = clock_timestamp(), outcome = 'abandoned' \
                     WHERE batch_id = $1 AND attempt = $2 AND released_at IS NULL",
                    &[&batch, &attempt],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The done batches of a job, by position.
    pub async fn done_batches(&self, job: Uuid) -> Result<Vec<BatchRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT b.id, b.job_id, b.seq, b.signed, b.root, \
                        k.id, k.token, k.label, k.algorithm, k.public_key, k.fingerprint, k.state \
                 FROM batches b JOIN keys k ON k.id = b.key_id \
                 WHERE b.job_id = $1 AND b.state = 'done' ORDER BY b.seq",
                &[&job],
            )
            .await?;
        rows.iter().map(|r| batch_from_row(r, 5)).collect()
    }

    /// The signatures of a batch by leaf index, with each record's data.
    pub async fn batch_signatures(
        &self,
        batch: i64,
    ) -> Result<Vec<(SignedRecord, Vec<u8>)>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT s.record_id, s.leaf_index, s.signature, r.data \
                 FROM signatures s JOIN records r ON r.id = s.record_id \
                 WHERE s.batch_id = $1 ORDER BY s.leaf_index",
                &[&batch],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    SignedRecord {
                        record: r.try_get(0)?,
                        leaf_index: r.try_get(1)?,
                        signature: r.try_get(2)?,
                    },
                    r.try_get(3)?,
                ))
            })
            .collect()
    }

    /// Everything the proof of one record needs: its data, its batch, and every signature of
    /// the batch (to rebuild the batch's tree). `None` when the record is not signed; not
    /// found when it does not exist.
    #[allow(clippy::type_complexity)]
    pub async fn record_proof_data(
        &self,
        record: i64,
    ) -> Result<Option<(Vec<u8>, BatchRow, Vec<SignedRecord>)>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT r.data, s.batch_id FROM records r \
                 LEFT JOIN signatures s ON s.record_id = r.id WHERE r.id = $1",
                &[&record],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("record {record}")))?;
        let data: Vec<u8> = row.try_get(0)?;
        let Some(batch_id) = row.try_get::<_, Option<i64>>(1)? else {
            return Ok(None);
        };
        let row = conn
            .query_one(
                "SELECT b.id, b.job_id, b.seq, b.signed, b.root, \
                        k.id, k.token, k.label, k.algorithm, k.public_key, k.fingerprint, k.state \
                 FROM batches b JOIN keys k ON k.id = b.key_id WHERE b.id = $1",
                &[&batch_id],
            )
            .await?;
        let batch = batch_from_row(&row, 5)?;
        let rows = conn
            .query(
                "SELECT record_id, leaf_index, signature FROM signatures \
                 WHERE batch_id = $1 ORDER BY leaf_index",
                &[&batch_id],
            )
            .await?;
        let leaves = rows
            .iter()
            .map(|r| {
                Ok(SignedRecord {
                    record: r.try_get(0)?,
                    leaf_index: r.try_get(1)?,
                    signature: r.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((data, batch, leaves)))
    }

    /// The sequence number of the audit entry that committed a batch (subject
    /// `job:<id>/batch:<seq>`), if any.
    pub async fn batch_audit_seq(&self, subject: &str) -> Result<Option<u64>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT seq FROM audit_entries \
                 WHERE action = 'jobs.batch' AND result = 'ok' AND subject = $1",
                &[&subject],
            )
            .await?;
        row.map(|r| {
            let seq: i64 = r.try_get(0)?;
            u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("audit seq {seq}")))
        })
        .transpose()
    }

    /// Records with an id in a job's ranges that are still unsigned, and signatures stored for
    /// the job's batches.
    pub async fn job_coverage(&self, job: Uuid) -> Result<(i64, i64), StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_one(
                "SELECT \
                   (SELECT count(*) FROM batches b JOIN records r \
                      ON r.id BETWEEN b.first_record AND b.last_record \
                    WHERE b.job_id = $1 \
                      AND NOT EXISTS (SELECT 1 FROM signatures s WHERE s.record_id = r.id)), \
                   (SELECT count(*) FROM signatures s JOIN batches b ON b.id = s.batch_id \
                    WHERE b.job_id = $1)",
                &[&job],
            )
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// The lease history of a job's batches, by key and start.
    pub async fn job_leases(&self, job: Uuid) -> Result<Vec<LeaseRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT l.key_id, l.holder, l.leased_at, l.expires_at, l.released_at \
                 FROM batch_leases l JOIN batches b ON b.id = l.batch_id \
                 WHERE b.job_id = $1 ORDER BY l.key_id, l.leased_at",
                &[&job],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseRow {
                    key: r.try_get(0)?,
                    holder: r.try_get(1)?,
                    leased_at: r.try_get(2)?,
                    expires_at: r.try_get(3)?,
                    released_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Opens a connection of its own that `LISTEN`s on [`CHANNEL`]: other processes' job
    /// events reach this one at once.
    pub async fn listen_jobs(cfg: &config::Database) -> Result<Listener, StoreError> {
        super::notify::listen_to(cfg, CHANNEL).await
    }
}

fn batch_from_row(r: &tokio_postgres::Row, key_at: usize) -> Result<BatchRow, StoreError> {
    let root: Vec<u8> = r.try_get(4)?;
    let key_row = KeyColumns { row: r, at: key_at };
    Ok(BatchRow {
        id: r.try_get(0)?,
        job: r.try_get(1)?,
        seq: r.try_get(2)?,
        signed: r.try_get(3)?,
        root: to_hash(&root)?,
        key: key_row.read()?,
    })
}

/// The seven columns of a key row (as `keys` orders them) starting at column `at`.
struct KeyColumns<'a> {
    row: &'a tokio_postgres::Row,
    at: usize,
}

impl KeyColumns<'_> {
    fn read(&self) -> Result<crate::store::KeyRecord, StoreError> {
        let r = self.row;
        let a = self.at;
        let algorithm: String = r.try_get(a + 3)?;
        Ok(crate::store::KeyRecord {
            id: r.try_get(a)?,
            token: r.try_get(a + 1)?,
            label: r.try_get(a + 2)?,
            algorithm: algorithm.parse().map_err(StoreError::Corrupt)?,
            public_key: r.try_get(a + 4)?,
            fingerprint: r.try_get(a + 5)?,
            state: r.try_get(a + 6)?,
        })
    }
}
