//! jobs::worker: the workers of one process — claim a batch, lease a key, sign, commit with
//! the batch's audit entry — plus the `LISTEN` task that wakes them when another process
//! releases a key or creates a job, and the progress gauges.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Inner, batch_subject, lock, scheme_for, tree};
use crate::audit::{Actor, AuditError, Record};
use crate::crypto::SignInputBuf;
use crate::hsm::{HsmError, KeySlot};
use crate::store::KeyRecord;
use crate::store::jobs::{self as sql, Claim, ClaimOutcome, FinishedBatch};

/// Longest pause between two looks for an idle key when every key is leased. Releases in this
/// process and (through `LISTEN`) in others wake the waiters at once; the pause bounds how late
/// a lease that simply expired (its holder died) is noticed.
const MAX_KEY_WAIT_STEP: Duration = Duration::from_millis(250);
/// Pause between looks for a claimable batch while every open batch is claimed by a live
/// worker: one of them may die, and its claim expires.
const BUSY_POLL: Duration = Duration::from_millis(500);
/// Records read at once: a worker holds at most this many records' data
/// (`jobs.max_record_bytes` each) while it signs.
const PAGE: i32 = 256;
/// Records signed per hand-off to a token thread: enough to make the hand-off's cost
/// vanish, few enough that a token thread is never taken for long (P-256: ~3 ms;
/// RSA-4096: ~0.3 s).
const SIGN_CHUNK: usize = 32;

/// One worker: claims and signs batches until the service drains.
pub(super) async fn run(inner: Arc<Inner>, index: usize) {
    let holder = format!("jobs:{}:{index}", inner.process);
    let ttl = Duration::from_secs(inner.cfg.lease_ttl_secs.max(1));
    let idle = Duration::from_secs(inner.cfg.poll_secs.max(1));
    let mut error_pause = Duration::from_millis(500);
    while !inner.shutdown.is_cancelled() {
        let work = inner.work.notified();
        tokio::pin!(work);
        work.as_mut().enable();
        let asked = Instant::now();
        let count = i32::try_from(inner.cfg.claim_batches.max(1)).unwrap_or(1);
        let pause = match inner.store.claim_batches(&holder, ttl, PAGE, count).await {
            Ok(ClaimOutcome::Claimed(claims)) => {
                error_pause = Duration::from_millis(500);
                // The claims side by side: each its own key, renewal and commit.
                let blocked = futures_util::future::join_all(
                    claims
                        .into_iter()
                        .map(|claim| process(&inner, &holder, ttl, claim, asked)),
                )
                .await;
                if !blocked.contains(&true) {
                    continue;
                }
                // No key of the ring may sign a batch (budgets used up, windows closed):
                // claiming again at once would only give it up again. A change of limits
                // wakes the workers (`Jobs::wake`); `poll_secs` bounds the wait otherwise.
                idle
            }
            Ok(ClaimOutcome::Busy(_)) => BUSY_POLL.min(idle),
            Ok(ClaimOutcome::NoJob) => idle,
            Err(e) => {
                tracing::warn!(error = %e, "jobs: cannot claim a batch");
                error_pause = (error_pause * 2).min(Duration::from_secs(30));
                error_pause
            }
        };
        tokio::select! {
            _ = &mut work => {}
            _ = tokio::time::sleep(pause) => {}
            _ = inner.shutdown.cancelled() => {}
        }
    }
    tracing::debug!(worker = %holder, "jobs: worker stopped");
}

/// Why an attempt ended without committing.
struct Failure {
    /// The leased key and how many signatures it made, when a key was leased.
    key: Option<(Uuid, i64)>,
    /// `lost` (claim or lease), `rejected` (the commit's checks failed), `error`, `shutdown`,
    /// `spent` (no key of the ring may sign the batch whole now: budgets, windows).
    kind: &'static str,
    reason: String,
    /// For `spent`: when the lease request that found no key was sent.
    spent_at: Option<Instant>,
}

impl Failure {
    fn new(kind: &'static str, key: Option<(Uuid, i64)>, reason: impl Into<String>) -> Self {
        Failure {
            key,
            kind,
            reason: reason.into(),
            spent_at: None,
        }
    }
}

/// Stops the renewal task when the attempt ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One attempt at a claimed batch (claimed by a request sent at `asked`), committed or given
/// up. Returns whether the worker should wait before claiming again because no key may sign
/// the batch.
async fn process(
    inner: &Arc<Inner>,
    holder: &str,
    ttl: Duration,
    mut claim: Claim,
    asked: Instant,
) -> bool {
    let started = Instant::now();
    let m = &inner.metrics;
    m.jobs_workers_busy.inc();
    let lost = CancellationToken::new();
    let (key_tx, key_rx) = watch::channel(None);
    let _renewer = AbortOnDrop(tokio::spawn(renew(
        inner.clone(),
        holder.to_owned(),
        claim.batch,
        claim.attempt,
        ttl,
        key_rx,
        lost.clone(),
    )));
    let first_page = std::mem::take(&mut claim.page);
    let leased = claim.key.take().map(|key| (key, asked));
    let blocked = match attempt(
        inner, holder, ttl, &claim, leased, first_page, &key_tx, &lost,
    )
    .await
    {
        Ok((signed, job_done)) => {
            m.jobs_batches.with_label_values(&["ok"]).inc();
            m.jobs_records_signed.inc_by(signed);
            m.jobs_batch_duration
                .observe(started.elapsed().as_secs_f64());
            inner.key_released.notify_waiters();
            if job_done {
                tracing::info!(job = %claim.job, "job done");
                inner.work.notify_waiters();
            }
            false
        }
        Err(failure) => {
            m.jobs_batches.with_label_values(&[failure.kind]).inc();
            if failure.kind == "shutdown" {
                tracing::info!(job = %claim.job, batch = claim.seq, "jobs: batch given up at shutdown");
            } else if let Some(found) = failure.spent_at {
                // Every worker of the process meets this on every claim until a budget is
                // raised: said once.
                let first = {
                    let mut blocked = lock(&inner.budget_blocked);
                    let first = blocked.is_none();
                    *blocked = Some(blocked.map_or(found, |at| at.max(found)));
                    first
                };
                if first {
                    tracing::warn!(job = %claim.job, batch = claim.seq, reason = %failure.reason, "jobs: the job waits until a signature budget is raised");
                } else {
                    tracing::debug!(job = %claim.job, batch = claim.seq, reason = %failure.reason, "jobs: batch given up");
                }
            } else {
                tracing::warn!(job = %claim.job, batch = claim.seq, kind = failure.kind, reason = %failure.reason, "jobs: batch not committed; it will be claimed again");
            }
            if let Err(e) = inner
                .store
                .abandon_batch(claim.batch, claim.attempt, holder, failure.key)
                .await
            {
                // The claim and the lease expire on their own.
                tracing::warn!(error = %e, "jobs: cannot give the batch and key back early");
            }
            if failure.key.is_some() {
                inner.key_released.notify_waiters();
            }
            if failure.kind == "error" {
                // A token or database problem: do not hammer it.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = inner.shutdown.cancelled() => {}
                }
            }
            failure.kind == "spent"
        }
    };
    m.jobs_workers_busy.dec();
    blocked
}

/// Key (unless the claim came with one) → signatures → commit. `page` is the batch's first
/// page of unsigned records, read with the claim. Returns the records signed and whether the
/// job is done.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    inner: &Arc<Inner>,
    holder: &str,
    ttl: Duration,
    claim: &Claim,
    leased: Option<(KeyRecord, Instant)>,
    mut page: Vec<(i64, Vec<u8>)>,
    key_tx: &watch::Sender<Option<Uuid>>,
    lost: &CancellationToken,
) -> Result<(u64, bool), Failure> {
    let (key, asked) = match leased {
        Some(leased) => leased,
        None => lease_key(inner, holder, ttl, claim, lost).await?,
    };
    key_tx.send_replace(Some(key.id));
    // A lease asked for after the workers found no key that may sign: a budget was raised. (A
    // lease asked for before the finding does not count, even if it is used after it.)
    let unblocked = {
        let mut blocked = lock(&inner.budget_blocked);
        let after = blocked.is_some_and(|found| asked > found);
        if after {
            *blocked = None;
        }
        after
    };
    if unblocked {
        tracing::info!(job = %claim.job, ring = %claim.ring, "jobs: a key may sign batches again; the job goes on");
    }
    let key_id = key.id;
    let holding = |used: i64| Some((key_id, used));
    let slot = slot_for(inner, &key)
        .await
        .map_err(|e| Failure::new("error", holding(0), format!("key {}: {e}", key.label)))?;
    let scheme =
        scheme_for(key.algorithm).map_err(|e| Failure::new("error", holding(0), e.to_string()))?;
    let mut ids = Vec::with_capacity(page.len());
    let mut signatures = Vec::with_capacity(page.len());
    loop {
        let full = i32::try_from(page.len()).is_ok_and(|n| n == PAGE);
        let mut records = std::mem::take(&mut page).into_iter().peekable();
        while records.peek().is_some() {
            // Each record on its own, a chunk per hand-off to the token thread; the HSM layer
            // verifies every signature before returning it.
            let (chunk_ids, inputs): (Vec<i64>, Vec<SignInputBuf>) = records
                .by_ref()
                .take(SIGN_CHUNK)
                .map(|(id, data)| (id, SignInputBuf::Message(data)))
                .unzip();
            let made = inner
                .hsm
                .sign_each(&slot, scheme, inputs, lost.clone())
                .await
                .map_err(|e| {
                    Failure::new(
                        "error",
                        holding(signatures.len() as i64),
                        format!(
                            "signing records from {}: {e}",
                            chunk_ids.first().copied().unwrap_or_default()
                        ),
                    )
                })?;
            let complete = made.len() == chunk_ids.len();
            ids.extend(chunk_ids.into_iter().take(made.len()));
            signatures.extend(made);
            if !complete || lost.is_cancelled() {
                return Err(Failure::new(
                    "lost",
                    holding(signatures.len() as i64),
                    "batch claim or key lease lost while signing",
                ));
            }
        }
        let Some(&after) = ids.last().filter(|_| full) else {
            break;
        };
        page = inner
            .store
            .unsigned_records(after, claim.last, PAGE)
            .await
            .map_err(|e| {
                Failure::new(
                    "error",
                    holding(signatures.len() as i64),
                    format!("reading records: {e}"),
                )
            })?;
    }
    let hashes: Vec<_> = ids
        .iter()
        .zip(&signatures)
        .map(|(id, s)| tree::leaf_hash(*id, s))
        .collect();
    let root = tree::root(&hashes);
    let n = ids.len();
    let record = Record {
        actor: Actor {
            fingerprint: String::new(),
            account: "signetd".into(),
        },
        action: "jobs.batch".into(),
        subject: batch_subject(claim.job, claim.seq),
        params_digest: crate::audit::params_digest(&serde_json::json!({
            "job": claim.job,
            "batch": claim.seq,
            "ring": claim.ring,
            "key": key.fingerprint,
            "scheme": scheme.name(),
            "records": n,
            "first": ids.first(),
            "last": ids.last(),
            "holder": holder,
            "attempt": claim.attempt,
        })),
        output_digest: Some(root),
        result: "ok".into(),
    };
    let finished = FinishedBatch {
        batch: claim.batch,
        holder: holder.to_owned(),
        attempt: claim.attempt,
        key: key_id,
        records: ids,
        signatures,
        root,
    };
    let job_done = Arc::new(AtomicBool::new(false));
    let done_slot = job_done.clone();
    let result = inner
        .audit
        .append_with_contained(
            record,
            Box::new(move |tx| {
                Box::pin(async move {
                    let done = sql::finish_batch(tx, &finished).await?;
                    done_slot.store(done, Ordering::Relaxed);
                    Ok(())
                })
            }),
        )
        .await;
    let used = n as i64;
    match result {
        Ok(_) => Ok((n as u64, job_done.load(Ordering::Relaxed))),
        Err(AuditError::Operation { error, receipt }) => Err(Failure::new(
            "rejected",
            holding(used),
            format!("{error} (logged as audit entry {})", receipt.seq),
        )),
        Err(e) => Err(Failure::new("error", holding(used), e.to_string())),
    }
}

/// Leases the least recently used idle key of the claim's ring that may sign the whole batch
/// (its size reserved from the key's budget, the lease written into the lease history:
/// [`crate::store::Store::lease_batch_key`]); when every such key is leased, waits for a
/// release (woken by this process's workers and, through `LISTEN`, by other processes) or a
/// short pause, and looks again. When no key of the ring may sign a batch of this size at all
/// (budgets used up, windows closed), waiting for a release will not help: fails with `spent`.
async fn lease_key(
    inner: &Arc<Inner>,
    holder: &str,
    ttl: Duration,
    claim: &Claim,
    lost: &CancellationToken,
) -> Result<(KeyRecord, Instant), Failure> {
    let mut pause = Duration::from_millis(5);
    let mut waiting_since = None;
    let store = &inner.store;
    loop {
        let released = inner.key_released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let asked = Instant::now();
        match store
            .lease_batch_key(claim.batch, claim.attempt, holder, ttl)
            .await
        {
            Ok(Some(key)) => {
                if let Some(since) = waiting_since {
                    inner
                        .metrics
                        .jobs_key_wait
                        .observe(Instant::elapsed(&since).as_secs_f64());
                }
                return Ok((key, asked));
            }
            Ok(None) => match store
                .signable_keys(&claim.ring, i64::from(claim.size))
                .await
            {
                Ok(0) => {
                    let mut failure = Failure::new(
                        "spent",
                        None,
                        format!(
                            "no key of ring {} may sign a batch of {} records: their signature \
                             budgets are used up or they are outside their validity windows",
                            claim.ring, claim.size
                        ),
                    );
                    failure.spent_at = Some(asked);
                    return Err(failure);
                }
                Ok(_) => {
                    if waiting_since.is_none() {
                        waiting_since = Some(Instant::now());
                        inner.metrics.jobs_key_lease_waits.inc();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, ring = %claim.ring, "jobs: cannot count signable keys")
                }
            },
            Err(e) => tracing::warn!(error = %e, ring = %claim.ring, "jobs: cannot lease a key"),
        }
        tokio::select! {
            _ = &mut released => {}
            _ = tokio::time::sleep(pause) => {}
            _ = lost.cancelled() => {
                return Err(Failure::new("lost", None, "batch claim lost while waiting for a key"));
            }
            _ = inner.shutdown.cancelled() => {
                return Err(Failure::new("shutdown", None, "shutting down"));
            }
        }
        pause = (pause * 2).min(MAX_KEY_WAIT_STEP);
    }
}

/// Renews the batch claim and, once leased, the key lease, every third of the ttl. Cancels
/// `lost` when either was lost — or when renewals kept failing (the database cannot be
/// reached) until the next one might come after the lease expired: the worker must stop using
/// the key before another process may lease it.
async fn renew(
    inner: Arc<Inner>,
    holder: String,
    batch: i64,
    attempt: i32,
    ttl: Duration,
    key: watch::Receiver<Option<Uuid>>,
    lost: CancellationToken,
) {
    let every = ttl / 3;
    // Measured from before the request that took or extended the lease: never later than
    // the real expiry.
    let mut valid_until = tokio::time::Instant::now() + ttl;
    loop {
        tokio::time::sleep(every).await;
        let sent = tokio::time::Instant::now();
        let leased = *key.borrow();
        let lease = match leased {
            Some(k) => inner.store.renew_lease(k, &holder, ttl).await,
            None => Ok(true),
        };
        let claim = inner.store.renew_claim(batch, attempt, &holder, ttl).await;
        match (lease, claim) {
            (Ok(true), Ok(true)) => valid_until = sent + ttl,
            (Ok(false), _) | (_, Ok(false)) => {
                lost.cancel();
                return;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "jobs: cannot renew a batch claim or key lease");
                if tokio::time::Instant::now() + every >= valid_until {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

/// The token slot of a ring key, checked against the recorded public key.
async fn slot_for(inner: &Arc<Inner>, key: &KeyRecord) -> Result<Arc<KeySlot>, HsmError> {
    if let Some(slot) = lock(&inner.slots).get(&key.id) {
        return Ok(slot.clone());
    }
    let (hsm, k) = (inner.hsm.clone(), key.clone());
    let slot = tokio::task::spawn_blocking(move || hsm.key(&k.token, &k.label, k.algorithm))
        .await
        .map_err(|e| HsmError::Worker(e.to_string()))??;
    if slot.public_key() != key.public_key.as_slice() {
        return Err(HsmError::Rejected(format!(
            "key `{}` on the token differs from the recorded public key",
            key.label
        )));
    }
    lock(&inner.slots).insert(key.id, slot.clone());
    Ok(slot)
}

/// Listens for other processes' job events (`LISTEN signetd_jobs`) and wakes the workers;
/// reconnects with backoff when the connection drops.
pub(super) async fn listen(inner: Arc<Inner>) {
    let mut pause = Duration::from_secs(1);
    loop {
        let opened = tokio::select! {
            r = crate::store::Store::listen_jobs(&inner.db) => r,
            _ = inner.shutdown.cancelled() => return,
        };
        match opened {
            Ok(mut listener) => {
                pause = Duration::from_secs(1);
                // Anything may have happened while nobody listened.
                inner.work.notify_waiters();
                inner.key_released.notify_waiters();
                loop {
                    tokio::select! {
                        event = listener.recv() => match event.as_deref() {
                            Some("key") => inner.key_released.notify_waiters(),
                            Some(_) => inner.work.notify_waiters(),
                            None => break,
                        },
                        _ = inner.shutdown.cancelled() => return,
                    }
                }
                tracing::warn!("jobs: the notification connection dropped; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "jobs: cannot listen for job events"),
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = inner.shutdown.cancelled() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// Keeps the progress gauges of the running job current.
pub(super) async fn gauges(inner: Arc<Inner>) {
    let m = &inner.metrics;
    loop {
        match inner.store.running_job().await {
            Ok(Some(job)) => match inner.store.job_progress(job.id).await {
                Ok(p) => {
                    m.jobs_running.set(1);
                    m.jobs_running_total.set(job.total);
                    m.jobs_running_signed.set(p.signed);
                }
                Err(e) => tracing::debug!(error = %e, "jobs: progress"),
            },
            Ok(None) => {
                m.jobs_running.set(0);
                m.jobs_running_total.set(0);
                m.jobs_running_signed.set(0);
            }
            Err(e) => tracing::debug!(error = %e, "jobs: progress"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = inner.shutdown.cancelled() => return,
        }
    }
}
