//! jobs: batch record signing — records, jobs with a ring and a batch size, workers that claim
//! batches, lease the least recently used idle key across processes, sign each record once, and
//! store the signatures with one audit entry per batch.
//!
//! How a batch goes (see `worker.rs`): claim the next open batch of the running job
//! (`FOR UPDATE SKIP LOCKED`, with an expiry renewed while working) → lease the least recently
//! used idle key of the job's ring that may sign the whole batch, the batch's size reserved from
//! its signature budget (a `key_leases` row, renewed too; when every key is leased, wait for a
//! release without spinning; when no key may sign the batch, give it up and wait for a budget
//! to be raised) → sign each record on its own with that key (the HSM
//! layer verifies every signature before it is used) → hand the audit writer one entry whose
//! `output_digest` is the batch's Merkle root, and a mutation that, in the same transaction,
//! checks the claim and the lease, stores the signatures (a primary key forbids a second one
//! per record: invariant 6), marks the batch done, gives back what was reserved and not signed,
//! and releases the lease. A given-up attempt gives back what it did not sign. A worker that dies
//! leaves a claim and a lease that expire; the batch is claimed again and signed with another
//! (or the same, once free) key; nothing of the dead attempt was stored, and its reservation
//! stays spent (nobody knows how many signatures it made).

mod tree;
mod verify;
mod worker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use tree::{LEAF_VERSION, leaf, leaf_hash};
pub use verify::VerifyReport;

use crate::audit::{Actor, Audit, AuditError, InclusionProof, Receipt, Record};
use crate::config;
use crate::hsm::{Hsm, HsmError};
use crate::metrics::Metrics;
use crate::store::jobs::{self as sql, JobRow};
use crate::store::{Store, StoreError};

/// Most records in one ingestion request.
pub const MAX_INGEST_RECORDS: usize = 100_000;
/// Records per audited chunk of `signetd records seed`.
pub const SEED_CHUNK: u64 = 50_000;

/// Errors of batch jobs, grouped by what the caller should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobsError {
    /// The request is wrong; nothing was done.
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What.
        what: String,
        /// The entry that logged the failure, when it was logged.
        receipt: Option<Receipt>,
    },
    /// The state forbids it (a job runs already, the job is over).
    #[error("conflict: {reason}")]
    Conflict {
        /// Why, safe to show.
        reason: String,
        /// The entry that logged the failure.
        receipt: Option<Receipt>,
    },
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log.
    #[error(transparent)]
    Audit(AuditError),
    /// The token.
    #[error(transparent)]
    Hsm(#[from] HsmError),
}

impl From<AuditError> for JobsError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Operation {
                error: StoreError::NotFound(what),
                receipt,
            } => JobsError::NotFound {
                what,
                receipt: Some(receipt),
            },
            AuditError::Operation {
                error: StoreError::Conflict(reason),
                receipt,
            } => JobsError::Conflict {
                reason,
                receipt: Some(receipt),
            },
            other => JobsError::Audit(other),
        }
    }
}

fn not_found(what: String) -> JobsError {
    JobsError::NotFound {
        what,
        receipt: None,
    }
}

/// A job as served: its settings, progress, each key's share, rate and estimate.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// Id.
    pub id: Uuid,
    /// The ring whose keys sign.
    pub ring: String,
    /// Records per batch (fixed for the job).
    pub batch_size: i32,
    /// `running`, `done` or `cancelled`.
    pub state: String,
    /// Records the job covers (those unsigned when it was created).
    pub total: i64,
    /// Records signed.
    pub signed: i64,
    /// Records left.
    pub remaining: i64,
    /// Batches.
    pub batches: i32,
    /// Batches done.
    pub batches_done: i64,
    /// Each key's share: batches and records it signed.
    pub per_key: Vec<KeyShare>,
    /// Records signed per second, on average since the job was created.
    pub rate_per_sec: f64,
    /// Seconds left at that rate, while running.
    pub eta_secs: Option<f64>,
    /// Seconds since creation (until the end, once over).
    pub elapsed_secs: f64,
    /// The account that created the job.
    pub created_by: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it finished or was cancelled.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
}

/// One key's share of a job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyShare {
    /// Key id.
    pub key_id: Uuid,
    /// Key label.
    pub label: String,
    /// Batches it signed.
    pub batches: i64,
    /// Records it signed.
    pub records: i64,
}

/// The proof that a record's signature is in its batch's tree, whose root is in the audit log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordProof {
    /// The record.
    pub record_id: i64,
    /// Its data, base64.
    pub data: String,
    /// The job that signed it.
    pub job: Uuid,
    /// The batch's position in the job.
    pub batch: i32,
    /// The signing key.
    pub key: ProofKey,
    /// The signature scheme (`ecdsa-p256-sha256`, `rsa-pkcs1-sha256`, `ed25519`).
    pub scheme: &'static str,
    /// The signature, base64 (DER for ECDSA).
    pub signature: String,
    /// The canonical leaf (`0x01 ‖ record id u64 BE ‖ signature`), base64.
    pub leaf: String,
    /// SHA-256(0x00 ‖ leaf), hex.
    pub leaf_hash: String,
    /// The leaf's index in the batch.
    pub leaf_index: u64,
    /// Leaves in the batch.
    pub batch_size: u64,
    /// RFC 6962 audit path from the leaf to the batch root, hex.
    pub batch_proof: Vec<String>,
    /// The batch root, hex: the `output_digest` of the audit entry.
    pub batch_root: String,
    /// The batch's audit entry.
    pub audit_entry: ProofEntry,
    /// Its inclusion in the audit log's tree.
    pub audit_inclusion: InclusionProof,
}

/// The signing key in a proof.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProofKey {
    /// Key id.
    pub id: Uuid,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub fingerprint: String,
    /// Algorithm.
    pub algorithm: &'static str,
    /// The public key, PEM.
    pub public_key_pem: String,
}

/// The audit entry of a batch in a proof.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProofEntry {
    /// Sequence number.
    pub seq: u64,
    /// `job:<id>/batch:<seq>`.
    pub subject: String,
    /// The canonical audit leaf (LEAF_FORMAT.md), base64.
    pub leaf: String,
    /// Its leaf hash, hex.
    pub leaf_hash: String,
}

/// The batch job service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    hsm: Hsm,
    audit: Audit,
    metrics: Metrics,
    cfg: config::Jobs,
    db: config::Database,
    /// This process, in holder names.
    process: Uuid,
    /// A key lease was released (here, or elsewhere through `LISTEN`).
    key_released: Notify,
    /// A job was created, a batch may have become claimable, or signature limits changed.
    work: Notify,
    /// The workers found that no key may sign the running job's batches (budgets used up,
    /// windows closed): said once in the log, until a key is leased by a request sent after
    /// the one that found none. Holds when that request was sent.
    budget_blocked: Mutex<Option<std::time::Instant>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Token slots of the keys this process signed with.
    slots: Mutex<std::collections::HashMap<Uuid, Arc<crate::hsm::KeySlot>>>,
}

impl Jobs {
    /// Starts the service. No worker runs until [`Jobs::run_workers`]: one-shot commands that
    /// build the application state (account creation, `jobs run` without `--work`) must not
    /// claim batches they would abandon when they exit.
    pub async fn start(
        store: Store,
        hsm: Hsm,
        audit: Audit,
        metrics: Metrics,
        config: &config::Config,
    ) -> Result<Jobs, StoreError> {
        Ok(Jobs {
            inner: Arc::new(Inner {
                store,
                hsm,
                audit,
                metrics,
                cfg: config.jobs.clone(),
                db: config.database.clone(),
                process: Uuid::new_v4(),
                key_released: Notify::new(),
                work: Notify::new(),
                budget_blocked: Mutex::new(None),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                slots: Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }

    /// Starts `jobs.workers` workers in this process (with `workers` given, that many), the
    /// `LISTEN` task that wakes them for other processes' events, and the progress gauges.
    /// They run until [`Jobs::drain`].
    pub fn run_workers(&self, workers: Option<usize>) {
        let n = workers.unwrap_or(self.inner.cfg.workers);
        if n == 0 {
            tracing::info!("jobs: no workers in this process (jobs.workers = 0)");
            return;
        }
        let inner = self.inner.clone();
        self.inner.tracker.spawn(worker::listen(inner));
        let inner = self.inner.clone();
        self.inner.tracker.spawn(worker::gauges(inner));
        for i in 0..n {
            let inner = self.inner.clone();
            self.inner.tracker.spawn(worker::run(inner, i));
        }
        tracing::info!(workers = n, process = %self.inner.process, "jobs: workers started");
    }

    /// Something workers wait for may have changed (a signature budget or window, here or in
    /// another process): every waiting worker looks again at once, rather than after
    /// `jobs.poll_secs`.
    pub fn wake(&self) {
        self.inner.work.notify_waiters();
        self.inner.key_released.notify_waiters();
    }

    /// Why a running job cannot go on, if it cannot: no key of its ring may sign its next
    /// open batch whole (budgets used up or windows closed). Shown by `GET /v1/jobs/{id}`.
    pub async fn blocked(&self, job: &JobView) -> Result<Option<String>, JobsError> {
        if job.state != "running" {
            return Ok(None);
        }
        Ok(self.inner.store.job_blocked(job.id).await?.map(|size| {
            format!(
                "no key of ring {} may sign the next batch of {size} records: their signature \
                 budgets are used up or they are outside their validity windows; raising a \
                 budget (PUT /v1/keys/ID/limits or /v1/rings/{}/limits) resumes the job",
                job.ring, job.ring
            )
        }))
    }

    /// Stops the workers: no new batch is claimed, batches in flight are finished (or given
    /// up, if still waiting for a key), within `grace`.
    pub async fn drain(&self, grace: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("jobs: workers did not stop within the grace period");
        }
    }

    /// Creates a job over every record unsigned now, signed by `ring`'s keys in batches of
    /// `batch_size`. Audited. Conflict when a job runs already.
    pub async fn create(
        &self,
        actor: &Actor,
        ring: &str,
        batch_size: i64,
    ) -> Result<(JobView, Receipt), JobsError> {
        let max = i64::from(self.inner.cfg.max_batch_size);
        let size = i32::try_from(batch_size)
            .ok()
            .filter(|s| (1..=max).contains(&i64::from(*s)))
            .ok_or_else(|| JobsError::Invalid(format!("batch_size must be 1..={max}")))?;
        let id = Uuid::new_v4();
        let record = Record::ok(
            actor,
            "jobs.create",
            format!("job:{id}"),
            &serde_json::json!({ "ring": ring, "batch_size": size }),
            None,
        );
        let created = Arc::new(Mutex::new(None));
        let (slot, ring_name, by) = (created.clone(), ring.to_owned(), actor.account.clone());
        let receipt = self
            .inner
            .audit
            .append_with(
                record,
                Box::new(move |tx| {
                    Box::pin(async move {
                        let job = sql::create_job(tx, id, &ring_name, size, &by).await?;
                        *lock(&slot) = Some(job);
                        Ok(())
                    })
                }),
            )
            .await?;
        self.inner.work.notify_waiters();
        let job = lock(&created)
            .take()
            .ok_or_else(|| JobsError::Store(StoreError::Corrupt("job not returned".into())))?;
        tracing::info!(job = %job.id, ring = %job.ring, batch_size = size, total = job.total, batches = job.batch_count, "job created");
        Ok((self.view(job).await?, receipt))
    }

    /// Cancels a running job: no batch of it commits afterwards. Audited.
    pub async fn cancel(&self, actor: &Actor, id: Uuid) -> Result<(JobView, Receipt), JobsError> {
        let record = Record::ok(
            actor,
            "jobs.cancel",
            format!("job:{id}"),
            &serde_json::json!({}),
            None,
        );
        let cancelled = Arc::new(Mutex::new(None));
        let slot = cancelled.clone();
        let receipt = self
            .inner
            .audit
            .append_with(
                record,
                Box::new(move |tx| {
                    Box::pin(async move {
                        let job = sql::cancel_job(tx, id).await?;
                        *lock(&slot) = Some(job);
                        Ok(())
                    })
                }),
            )
            .await?;
        let job = lock(&cancelled)
            .take()
            .ok_or_else(|| JobsError::Store(StoreError::Corrupt("job not returned".into())))?;
        tracing::info!(job = %id, "job cancelled");
        Ok((self.view(job).await?, receipt))
    }

    /// One job with its progress.
    pub async fn get(&self, id: Uuid) -> Result<JobView, JobsError> {
        let job = self
            .inner
            .store
            .job(id)
            .await?
            .ok_or_else(|| not_found(format!("job {id}")))?;
        self.view(job).await
    }

    /// The newest jobs (without per-key shares).
    pub async fn list(&self, limit: i64) -> Result<Vec<JobView>, JobsError> {
        let jobs = self.inner.store.jobs(limit.clamp(1, 1000)).await?;
        let mut views = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut v = self.view(job).await?;
            v.per_key.clear();
            views.push(v);
        }
        Ok(views)
    }

    async fn view(&self, job: JobRow) -> Result<JobView, JobsError> {
        let progress = self.inner.store.job_progress(job.id).await?;
        let end = job.finished_at.unwrap_or_else(OffsetDateTime::now_utc);
        let elapsed = (end - job.created_at).as_seconds_f64().max(0.0);
        let rate = if elapsed > 0.0 {
            progress.signed as f64 / elapsed
        } else {
            0.0
        };
        let remaining = (job.total - progress.signed).max(0);
        let eta = (job.state == "running" && rate > 0.0).then(|| remaining as f64 / rate);
        Ok(JobView {
            id: job.id,
            ring: job.ring,
            batch_size: job.batch_size,
            state: job.state,
            total: job.total,
            signed: progress.signed,
            remaining,
            batches: job.batch_count,
            batches_done: progress.batches_done,
            per_key: progress
                .per_key
                .into_iter()
                .map(|k| KeyShare {
                    key_id: k.key_id,
                    label: k.label,
                    batches: k.batches,
                    records: k.records,
                })
                .collect(),
            rate_per_sec: rate,
            eta_secs: eta,
            elapsed_secs: elapsed,
            created_by: job.created_by,
            created_at: job.created_at,
            finished_at: job.finished_at,
        })
    }

    /// Stores records (each at most `jobs.max_record_bytes`). Audited: the entry commits to
    /// the data through `output_digest` = SHA-256 over the SHA-256 of each record, in order.
    /// Returns the new ids in input order.
    pub async fn ingest(
        &self,
        actor: &Actor,
        records: Vec<Vec<u8>>,
    ) -> Result<(Vec<i64>, Receipt), JobsError> {
        if records.is_empty() {
            return Err(JobsError::Invalid("no records".into()));
        }
        if records.len() > MAX_INGEST_RECORDS {
            return Err(JobsError::Invalid(format!(
                "at most {MAX_INGEST_RECORDS} records per request"
            )));
        }
        let max = self.inner.cfg.max_record_bytes;
        if let Some(i) = records.iter().position(|r| r.len() > max) {
            return Err(JobsError::Invalid(format!(
                "record {i} is larger than {max} bytes"
            )));
        }
        let bytes: usize = records.iter().map(Vec::len).sum();
        let record = Record {
            actor: actor.clone(),
            action: "records.ingest".into(),
            subject: "records".into(),
            params_digest: crate::audit::params_digest(
                &serde_json::json!({ "count": records.len(), "bytes": bytes }),
            ),
            output_digest: Some(data_digest(&records)),
            result: "ok".into(),
        };
        let ids = Arc::new(Mutex::new(Vec::new()));
        let slot = ids.clone();
        let receipt = self
            .inner
            .audit
            .append_with(
                record,
                Box::new(move |tx| {
                    Box::pin(async move {
                        *lock(&slot) = sql::insert_records(tx, &records).await?;
                        Ok(())
                    })
                }),
            )
            .await?;
        let ids = std::mem::take(&mut *lock(&ids));
        Ok((ids, receipt))
    }

    /// Fills the records table with `count` records of `size` random bytes, by binary `COPY`
    /// in audited chunks of [`SEED_CHUNK`]. Calls `progress` with the records stored so far.
    pub async fn seed(
        &self,
        actor: &Actor,
        count: u64,
        size: usize,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, JobsError> {
        if size == 0 || size > self.inner.cfg.max_record_bytes {
            return Err(JobsError::Invalid(format!(
                "size must be 1..={} bytes",
                self.inner.cfg.max_record_bytes
            )));
        }
        let mut done = 0u64;
        while done < count {
            let n = (count - done).min(SEED_CHUNK);
            let chunk = tokio::task::spawn_blocking(move || random_records(n, size))
                .await
                .map_err(|e| JobsError::Invalid(format!("random data: {e}")))?
                .map_err(|e| JobsError::Invalid(format!("random data: {e}")))?;
            let record = Record {
                actor: actor.clone(),
                action: "records.seed".into(),
                subject: "records".into(),
                params_digest: crate::audit::params_digest(
                    &serde_json::json!({ "count": n, "size": size }),
                ),
                output_digest: Some(data_digest(&chunk)),
                result: "ok".into(),
            };
            self.inner
                .audit
                .append_with(
                    record,
                    Box::new(move |tx| {
                        Box::pin(async move {
                            sql::copy_records(tx, &chunk).await?;
                            Ok(())
                        })
                    }),
                )
                .await?;
            done += n;
            progress(done);
        }
        Ok(done)
    }

    /// The proof for one signed record, with the audit log's inclusion proof in the tree of
    /// `size` entries (default: the current tree).
    pub async fn proof(&self, record: i64, size: Option<u64>) -> Result<RecordProof, JobsError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (data, batch, leaves) = self
            .inner
            .store
            .record_proof_data(record)
            .await?
            .ok_or_else(|| not_found(format!("a signature of record {record}")))?;
        let hashes: Vec<_> = leaves
            .iter()
            .map(|l| leaf_hash(l.record, &l.signature))
            .collect();
        let index = leaves
            .iter()
            .position(|l| l.record == record)
            .ok_or_else(|| corrupt(format!("record {record} missing from its batch")))?;
        let (path, root) = tree::proof(&hashes, index)
            .ok_or_else(|| corrupt(format!("no proof for record {record}")))?;
        if root != batch.root {
            return Err(corrupt(format!(
                "batch {} of job {}: stored root differs from its signatures",
                batch.seq, batch.job
            )));
        }
        let subject = batch_subject(batch.job, batch.seq);
        let seq = self
            .inner
            .store
            .batch_audit_seq(&subject)
            .await?
            .ok_or_else(|| corrupt(format!("no audit entry for {subject}")))?;
        let entry = self
            .inner
            .audit
            .entries(seq, 1, Duration::ZERO)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| corrupt(format!("audit entry {seq} is missing")))?;
        if entry.output_digest != Some(batch.root) {
            return Err(corrupt(format!(
                "audit entry {seq} does not carry the root of {subject}"
            )));
        }
        let entry_leaf = entry
            .encode()
            .map_err(|e| corrupt(format!("audit entry {seq}: {e}")))?;
        let inclusion = self.inner.audit.inclusion_proof(seq, size).await?;
        let signed = &leaves[index];
        let scheme = scheme_for(batch.key.algorithm)?;
        let pem = der::pem::encode_string(
            "PUBLIC KEY",
            der::pem::LineEnding::LF,
            &batch.key.public_key,
        )
        .map_err(|e| corrupt(format!("public key: {e}")))?;
        Ok(RecordProof {
            record_id: record,
            data: b64.encode(&data),
            job: batch.job,
            batch: batch.seq,
            key: ProofKey {
                id: batch.key.id,
                fingerprint: batch.key.fingerprint.clone(),
                algorithm: batch.key.algorithm.as_str(),
                public_key_pem: pem,
            },
            scheme: scheme.name(),
            signature: b64.encode(&signed.signature),
            leaf: b64.encode(leaf(record, &signed.signature)),
            leaf_hash: hex::encode(hashes[index]),
            leaf_index: index as u64,
            batch_size: hashes.len() as u64,
            batch_proof: path.iter().map(hex::encode).collect(),
            batch_root: hex::encode(root),
            audit_entry: ProofEntry {
                seq,
                subject,
                leaf_hash: hex::encode(signet_merkle::hash_leaf(&entry_leaf)),
                leaf: b64.encode(&entry_leaf),
            },
            audit_inclusion: inclusion,
        })
    }

    /// Checks a job against everything it claims: each signature verifies (in software)
    /// over its record with its batch's key, each batch's root is the root of its signatures
    /// and is the `output_digest` of its audit entry, and no record of a done job is unsigned.
    pub async fn verify(&self, id: Uuid) -> Result<VerifyReport, JobsError> {
        verify::run(&self.inner.store, id).await
    }
}

/// The audit subject of a batch.
pub fn batch_subject(job: Uuid, seq: i32) -> String {
    format!("job:{job}/batch:{seq}")
}

/// The scheme a job signs with for keys of `algorithm`: the algorithm's default
/// (ECDSA with SHA-256/384 in DER, RSA PKCS#1 v1.5 with SHA-256, pure Ed25519).
pub fn scheme_for(
    algorithm: crate::hsm::KeyAlgorithm,
) -> Result<crate::crypto::SignatureScheme, JobsError> {
    algorithm
        .default_scheme()
        .ok_or_else(|| JobsError::Invalid(format!("{algorithm} keys cannot sign records")))
}

fn corrupt(m: String) -> JobsError {
    JobsError::Store(StoreError::Corrupt(m))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the slot holds a plain value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// SHA-256 over the SHA-256 of each record, in order.
fn data_digest(records: &[Vec<u8>]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut outer = sha2::Sha256::new();
    for r in records {
        outer.update(sha2::Sha256::digest(r));
    }
    outer.finalize().into()
}

fn random_records(n: u64, size: usize) -> Result<Vec<Vec<u8>>, getrandom::Error> {
    let total = usize::try_from(n)
        .unwrap_or(usize::MAX)
        .saturating_mul(size);
    let mut buf = vec![0u8; total];
    getrandom::fill(&mut buf)?;
    Ok(buf.chunks(size).map(<[u8]>::to_vec).collect())
}
