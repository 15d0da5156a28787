//! audit::writer: group commit. One task per process drains queued entries into one
//! transaction (one fsync), under the database-wide writer lock, and answers each caller only
//! after the commit. Checkpoints are signed in the same transaction when due, or on a timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use signet_merkle::{Checkpoint, Frontier, NoteSignature, SignedNote};
use tokio::sync::{mpsc, watch};

use super::{AuditError, Guard, Job, Mutation, Receipt, Record, entry_from};
use crate::config;
use crate::crypto::SignatureScheme;
use crate::hsm::{Hsm, KeySlot};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, audit as sql};

/// A caller's reply channel and what it will be told.
type Answer = (
    tokio::sync::oneshot::Sender<Result<Receipt, AuditError>>,
    Result<Receipt, AuditError>,
);

pub(super) struct Writer {
    store: Store,
    hsm: Hsm,
    key: Arc<KeySlot>,
    key_id: [u8; 4],
    cfg: Arc<config::Audit>,
    /// The tree as this process last committed it; `None` forces a reload.
    frontier: Option<Frontier>,
    last_checkpoint: u64,
    last_checkpoint_at: Instant,
    /// A checkpoint signed in the open transaction, saved to `checkpoint_dir` once committed.
    unsaved: Option<(u64, String)>,
    size_tx: watch::Sender<u64>,
    metrics: Metrics,
    backlog: super::Backlog,
}

impl Writer {
    pub(super) async fn new(
        store: Store,
        hsm: Hsm,
        key: Arc<KeySlot>,
        public_key: [u8; 32],
        cfg: Arc<config::Audit>,
        size_tx: watch::Sender<u64>,
        metrics: Metrics,
    ) -> Result<Self, AuditError> {
        let last_checkpoint = store.latest_checkpoint().await?.map_or(0, |c| c.size);
        Ok(Writer {
            key_id: signet_merkle::key_id(&cfg.origin, &public_key),
            store,
            hsm,
            key,
            cfg,
            frontier: None,
            last_checkpoint,
            last_checkpoint_at: Instant::now(),
            unsaved: None,
            size_tx,
            metrics,
            backlog: super::Backlog::default(),
        })
    }

    /// Reads `backlog` (requests waiting for a signing key) to decide when a group may grow.
    pub(super) fn with_backlog(mut self, backlog: super::Backlog) -> Self {
        self.backlog = backlog;
        self
    }

    pub(super) async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = jobs.recv() => {
                    let Some(job) = job else { break };
                    let mut batch = vec![job];
                    drain(&mut jobs, &mut batch, self.cfg.max_batch);
                    if lets_group_grow(&self.cfg, batch.len(), self.backlog.len()) {
                        // Under load: let the group grow (its commit costs the database
                        // about as much as a smaller one).
                        tokio::time::sleep(Duration::from_micros(self.cfg.group_wait_micros))
                            .await;
                        drain(&mut jobs, &mut batch, self.cfg.max_batch);
                    }
                    self.commit(batch).await;
                }
                _ = tick.tick() => {
                    let due = self.last_checkpoint_at.elapsed()
                        >= Duration::from_secs(self.cfg.checkpoint_interval_secs);
                    if due && let Err(e) = self.checkpoint_now().await {
                        tracing::warn!(error = %e, "timed checkpoint failed");
                    }
                }
            }
        }
        tracing::debug!("audit writer stopped");
    }

    async fn commit(&mut self, batch: Vec<Job>) {
        let started = Instant::now();
        let count = batch.len();
        // A job is not `Sync`: the group is laid out before the first await.
        let plain = self.plain_group(&batch);
        if let Some(plain) = plain
            && let Some((frontier, receipts)) = self.append_plain(plain).await
        {
            let replies = batch
                .into_iter()
                .zip(receipts)
                .map(|(job, receipt)| (job.reply, Ok(receipt)))
                .collect();
            self.metrics
                .audit_groups
                .with_label_values(&["one-call"])
                .inc();
            return self.committed(frontier, replies, started).await;
        }
        // The plain records (no mutation) can be written again if the group fails.
        let plain: Vec<Option<Record>> = batch
            .iter()
            .map(|job| job.mutation.is_none().then(|| job.record.clone()))
            .collect();
        let (replies, outcome) = self.write(batch).await;
        let e = match outcome {
            Ok(frontier) => {
                self.metrics
                    .audit_groups
                    .with_label_values(&["general"])
                    .inc();
                return self.committed(frontier, replies, started).await;
            }
            Err(e) => e,
        };
        // Nothing of this batch is visible: the transaction rolled back.
        self.frontier = None;
        self.metrics.audit_failures.inc();
        tracing::error!(error = %e, entries = count, "audit commit failed");
        // One entry must not fail its whole group. The writer refuses what the log cannot
        // store before it joins a group, so this is a bug or an outage; while the database
        // answers, the group's plain records are written again, halving the group until the
        // one that fails stands alone. (A mutation has run and cannot run again: its caller
        // hears 503, and nothing of it is visible.)
        let retry =
            count > 1 && plain.iter().any(Option::is_some) && self.store.ping().await.is_ok();
        let mut again = Vec::new();
        for ((reply, _), record) in replies.into_iter().zip(plain) {
            match record {
                Some(record) if retry => again.push(Job {
                    record,
                    mutation: None,
                    reply,
                }),
                _ => {
                    let _ = reply.send(Err(AuditError::Unavailable(e.to_string())));
                }
            }
        }
        if !again.is_empty() {
            self.isolate(again).await;
        }
    }

    /// Commits the plain records of a failed group in halves, until each has been written or
    /// has failed alone.
    async fn isolate(&mut self, jobs: Vec<Job>) {
        let mut groups = vec![jobs];
        while let Some(group) = groups.pop() {
            let started = Instant::now();
            let records: Vec<Record> = group.iter().map(|job| job.record.clone()).collect();
            let (replies, outcome) = self.write(group).await;
            match outcome {
                Ok(frontier) => {
                    self.metrics
                        .audit_groups
                        .with_label_values(&["general"])
                        .inc();
                    self.committed(frontier, replies, started).await;
                }
                Err(e) => {
                    self.frontier = None;
                    if records.len() == 1 {
                        self.metrics.audit_failures.inc();
                        tracing::error!(
                            error = %e,
                            action = %records[0].action,
                            "an audit entry cannot be written; only its request fails"
                        );
                    }
                    let mut jobs: Vec<Job> = replies
                        .into_iter()
                        .zip(records)
                        .map(|((reply, _), record)| Job {
                            record,
                            mutation: None,
                            reply,
                        })
                        .collect();
                    if jobs.len() == 1 {
                        for job in jobs {
                            let _ = job.reply.send(Err(AuditError::Unavailable(e.to_string())));
                        }
                    } else {
                        let second = jobs.split_off(jobs.len() / 2);
                        // The first half first: entries keep their order in the log.
                        groups.push(second);
                        groups.push(jobs);
                    }
                }
            }
        }
    }

    /// After a commit: the new tree, metrics, every caller's answer, the checkpoint saved.
    async fn committed(&mut self, frontier: Frontier, replies: Vec<Answer>, started: Instant) {
        let size = frontier.size();
        self.frontier = Some(frontier);
        let _ = self.size_tx.send(size);
        self.metrics.audit_appends.inc_by(replies.len() as u64);
        self.metrics
            .audit_commit_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .audit_size
            .set(i64::try_from(size).unwrap_or(i64::MAX));
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
        self.save_checkpoint().await;
    }

    /// The common group in one round trip ([`sql::append_plain`]): plain records only, the tree
    /// as this process last committed it, no checkpoint due ([`Writer::plain_group`]). The entries are computed as if
    /// every caller may be served and nobody else appended; the database appends them only if
    /// both hold under the lock. `None` when the group is not such a group or nothing was
    /// written; [`Writer::write`] then decides (a caller refused, the frontier loaded again, a
    /// failure halved).
    async fn append_plain(&mut self, group: PlainGroup) -> Option<(Frontier, Vec<Receipt>)> {
        let conn = self.store.writer_connection().await.ok()?;
        let now = time::OffsetDateTime::now_utc();
        let outcome = sql::append_plain(
            &conn,
            group.start,
            &group.callers,
            now,
            &group.entries,
            &group.nodes,
        )
        .await;
        match outcome {
            Ok(sql::PlainAppend::Committed) => Some((group.frontier, group.receipts)),
            Ok(sql::PlainAppend::Standing) => None,
            Ok(sql::PlainAppend::Moved(_)) | Err(_) => {
                // Another process appended, or the call failed (and rolled back): the general
                // path loads the frontier again and reports a failure as it does.
                self.frontier = None;
                None
            }
        }
    }

    /// The entries, nodes and receipts of `batch` appended to the cached tree, if it may take
    /// [`Writer::append_plain`]'s path.
    fn plain_group(&self, batch: &[Job]) -> Option<PlainGroup> {
        if batch.iter().any(|job| job.mutation.is_some()) {
            return None;
        }
        let mut frontier = self.frontier.clone()?;
        let start = frontier.size();
        let end = start + batch.len() as u64;
        if end - self.last_checkpoint.min(end) >= self.cfg.checkpoint_every {
            return None;
        }
        let mut entries = Vec::with_capacity(batch.len());
        let mut nodes = Vec::new();
        let mut receipts = Vec::with_capacity(batch.len());
        for job in batch {
            let entry = entry_from(&job.record, frontier.size(), now_micros());
            let leaf = entry.encode().ok()?;
            let leaf_hash = signet_merkle::hash_leaf(&leaf);
            nodes.extend(frontier.append(leaf_hash));
            receipts.push(Receipt {
                seq: entry.seq,
                leaf_hash: hex::encode(leaf_hash),
            });
            entries.push(entry);
        }
        Some(PlainGroup {
            start,
            callers: gated_callers(batch.iter().map(|job| &job.record)),
            entries,
            nodes,
            receipts,
            frontier,
        })
    }

    /// Writes one batch. Returns each caller's reply (sent only if the commit succeeds) and the
    /// new frontier.
    async fn write(&mut self, batch: Vec<Job>) -> (Vec<Answer>, Result<Frontier, AuditError>) {
        let mut replies = Vec::with_capacity(batch.len());
        let mut jobs = Vec::with_capacity(batch.len());
        for job in batch {
            jobs.push((job.record, job.mutation));
            replies.push(job.reply);
        }
        let mut results = Vec::with_capacity(jobs.len());
        self.unsaved = None;
        let outcome: Result<Frontier, AuditError> = async {
            let mut conn = self.store.writer_connection().await?;
            let (stmts, tx) = sql::begin_writer(&mut conn).await?;
            // Invariant 7: every caller of the group is checked under the lock, in the same
            // round trip (the server runs the two statements in order, the check after the
            // lock is held), so a hold committed anywhere before this commit can take effect
            // withholds this caller's answer: `api::identify` may have let it in from its cache.
            let gated = gated_callers(jobs.iter().map(|(record, _)| record));
            let mut failures: Vec<Option<StoreError>> = jobs.iter().map(|_| None).collect();
            let had_any: Vec<bool> = jobs.iter().map(|(_, m)| m.is_some()).collect();
            // When no mutation waits for a check (all are contained and none is a gated
            // caller's), they go out in the same round trip, queued behind the lock: the
            // batch jobs' groups.
            let early = jobs.iter().all(|(record, mutation)| match mutation {
                None => true,
                Some((_, Guard::Contained)) => !is_gated(record),
                Some((_, Guard::Savepoint)) => false,
            });
            let mut contained: Vec<(usize, Mutation)> = Vec::new();
            if early {
                for (i, (_, mutation)) in jobs.iter_mut().enumerate() {
                    if let Some((mutation, _)) = mutation.take() {
                        contained.push((i, mutation));
                    }
                }
            }
            let mut mutated = !contained.is_empty();
            let (size, mut refused, ()) = tokio::try_join!(
                async { Ok::<_, AuditError>(sql::lock_writer(&tx, &stmts).await?) },
                async {
                    if gated.is_empty() {
                        Ok(HashMap::new())
                    } else {
                        Ok(sql::refused_callers(&tx, &stmts, &gated).await?)
                    }
                },
                run_contained(&tx, &mut contained, &mut failures),
            )?;
            let mut frontier = self.load_frontier(&tx, size).await?;
            // The mutations first, in order; a run of contained ones is sent back to back. A
            // refused caller's mutation does not run.
            let mut refusals: Vec<Option<String>> = Vec::with_capacity(jobs.len());
            let mut records = Vec::with_capacity(jobs.len());
            let mut had_mutation: Vec<bool> = Vec::with_capacity(jobs.len());
            for (i, (record, mutation)) in jobs.into_iter().enumerate() {
                let refusal = is_gated(&record)
                    .then(|| refused.get(&record.actor.fingerprint).cloned())
                    .flatten();
                had_mutation.push(had_any[i] && refusal.is_none());
                match mutation {
                    _ if refusal.is_some() => {}
                    None => {}
                    Some((mutation, Guard::Contained)) => {
                        mutated = true;
                        contained.push((i, mutation));
                    }
                    Some((mutation, Guard::Savepoint)) => {
                        mutated = true;
                        run_contained(&tx, &mut contained, &mut failures).await?;
                        tx.batch_execute("SAVEPOINT op")
                            .await
                            .map_err(StoreError::from)?;
                        match mutation(&tx).await {
                            Ok(()) => tx
                                .batch_execute("RELEASE SAVEPOINT op")
                                .await
                                .map_err(StoreError::from)?,
                            Err(e) => {
                                // A broken connection also fails here, which aborts the batch.
                                tx.batch_execute("ROLLBACK TO SAVEPOINT op")
                                    .await
                                    .map_err(StoreError::from)?;
                                failures[i] = Some(e);
                            }
                        }
                    }
                }
                refusals.push(refusal);
                records.push(record);
            }
            run_contained(&tx, &mut contained, &mut failures).await?;
            // A mutation of this group may itself have held or revoked a caller of it (or
            // deleted its account): the plain records are checked again after the mutations.
            let plain: Vec<usize> = (0..records.len())
                .filter(|&i| refusals[i].is_none() && is_gated(&records[i]) && !had_mutation[i])
                .collect();
            if mutated && !plain.is_empty() {
                let again: Vec<String> = plain
                    .iter()
                    .map(|&i| records[i].actor.fingerprint.clone())
                    .collect();
                refused = sql::refused_callers(&tx, &stmts, &again).await?;
                for i in plain {
                    refusals[i] = refused.get(&records[i].actor.fingerprint).cloned();
                }
            }
            let mut entries = Vec::with_capacity(records.len());
            let mut nodes = Vec::new();
            for ((mut record, failure), refusal) in records.into_iter().zip(failures).zip(refusals)
            {
                if let Some(e) = &failure {
                    record.result = format!("error:{}", store_error_kind(e));
                }
                if refusal.is_some() {
                    // The entry says what happened: the caller was refused, nothing released.
                    record.result = "error:forbidden".to_owned();
                    record.output_digest = None;
                    self.metrics.audit_callers_refused.inc();
                }
                let entry = entry_from(&record, frontier.size(), now_micros());
                let leaf = entry
                    .encode()
                    .map_err(|e| AuditError::Encoding(e.to_string()))?;
                let leaf_hash = signet_merkle::hash_leaf(&leaf);
                nodes.extend(frontier.append(leaf_hash));
                let receipt = Receipt {
                    seq: entry.seq,
                    leaf_hash: hex::encode(leaf_hash),
                };
                results.push(match (failure, refusal) {
                    (_, Some(reason)) => Err(AuditError::CallerRefused { reason, receipt }),
                    (None, None) => Ok(receipt),
                    (Some(error), None) => Err(AuditError::Operation { error, receipt }),
                });
                entries.push(entry);
            }
            if frontier.size() - self.last_checkpoint.min(frontier.size())
                >= self.cfg.checkpoint_every
            {
                sql::insert(&tx, &stmts, &entries, &nodes).await?;
                self.sign_checkpoint(&tx, &frontier).await?;
                tx.commit().await.map_err(StoreError::from)?;
            } else {
                sql::insert_and_commit(tx, &stmts, &entries, &nodes).await?;
            }
            Ok(frontier)
        }
        .await;
        // On success there is one result per job; on failure `commit` answers everyone itself.
        let answers = match outcome {
            Ok(_) => replies.into_iter().zip(results).collect(),
            Err(_) => replies
                .into_iter()
                .map(|r| (r, Err(AuditError::Unavailable("batch failed".into()))))
                .collect(),
        };
        (answers, outcome)
    }

    /// The frontier at `size`, reusing the cached one when no other process appended.
    async fn load_frontier(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        size: u64,
    ) -> Result<Frontier, AuditError> {
        if let Some(f) = &self.frontier
            && f.size() == size
        {
            return Ok(f.clone());
        }
        let found = sql::nodes(tx, &signet_merkle::frontier_ids(size)).await?;
        super::frontier_of(size, &found)
    }

    async fn sign_checkpoint(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        frontier: &Frontier,
    ) -> Result<(), AuditError> {
        let checkpoint = Checkpoint::new(self.cfg.origin.clone(), frontier.size(), frontier.root())
            .map_err(|e| AuditError::Encoding(e.to_string()))?;
        let body = checkpoint.body();
        let signature = self
            .hsm
            .sign(
                &self.key,
                SignatureScheme::Ed25519,
                body.clone().into_bytes(),
            )
            .await?;
        let line = NoteSignature::new(self.cfg.origin.clone(), self.key_id, signature)
            .map_err(|e| AuditError::Encoding(e.to_string()))?;
        let note = SignedNote::new(body, vec![line])
            .map_err(|e| AuditError::Encoding(e.to_string()))?
            .encode();
        sql::insert_checkpoint(tx, checkpoint.size(), checkpoint.root(), &note).await?;
        self.unsaved = Some((checkpoint.size(), note));
        self.last_checkpoint = checkpoint.size();
        self.last_checkpoint_at = Instant::now();
        self.metrics.audit_checkpoints.inc();
        Ok(())
    }

    /// A checkpoint of the current tree if it grew since the last one.
    async fn checkpoint_now(&mut self) -> Result<(), AuditError> {
        self.unsaved = None;
        let mut conn = self.store.writer_connection().await?;
        let (stmts, tx) = sql::begin_writer(&mut conn).await?;
        let size = sql::lock_writer(&tx, &stmts).await?;
        if size == 0 || size <= self.last_checkpoint {
            self.last_checkpoint_at = Instant::now();
            return Ok(());
        }
        let frontier = self.load_frontier(&tx, size).await?;
        self.sign_checkpoint(&tx, &frontier).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.frontier = Some(frontier);
        self.save_checkpoint().await;
        Ok(())
    }

    /// Writes the checkpoint just committed to `checkpoint_dir`. A failure does not undo the
    /// commit (the checkpoint is in the database): it is logged and counted, and the next
    /// checkpoint tries again.
    async fn save_checkpoint(&mut self) {
        let (Some((size, note)), Some(dir)) =
            (self.unsaved.take(), self.cfg.checkpoint_dir.clone())
        else {
            return;
        };
        let saved =
            tokio::task::spawn_blocking(move || super::saved::write_if_newer(&dir, &note, size))
                .await;
        match saved {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                self.metrics.audit_checkpoint_save_failures.inc();
                tracing::error!(error = %e, size, "cannot save the checkpoint to audit.checkpoint_dir");
            }
            Err(e) => {
                self.metrics.audit_checkpoint_save_failures.inc();
                tracing::error!(error = %e, size, "checkpoint save task failed");
            }
        }
    }
}

/// Whether the writer lets a group of `queued` entries grow for `audit.group_wait_micros`
/// before it commits: when it is not full, and many entries are queued already
/// (`audit.group_wait_from`) or many requests wait for a signing key (`audit.group_wait_backlog`:
/// the token has work whichever way, so the wait costs the group's callers latency, not
/// throughput). A lone or light caller never waits.
fn lets_group_grow(cfg: &config::Audit, queued: usize, backlog: usize) -> bool {
    cfg.group_wait_micros > 0
        && queued < cfg.max_batch
        && (queued >= cfg.group_wait_from
            || (cfg.group_wait_backlog > 0 && backlog >= cfg.group_wait_backlog))
}

/// Moves queued jobs into `batch` until it holds `max` or the queue is empty.
fn drain(jobs: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>, max: usize) {
    while batch.len() < max {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// A group of plain records laid out for [`Writer::append_plain`].
struct PlainGroup {
    /// The log's size the entries assume.
    start: u64,
    /// The callers checked under the lock.
    callers: Vec<String>,
    entries: Vec<signet_merkle::Entry>,
    nodes: Vec<(signet_merkle::NodeId, signet_merkle::Hash)>,
    receipts: Vec<Receipt>,
    /// The tree once they are appended.
    frontier: Frontier,
}

/// Runs the contained mutations gathered so far, concurrently on the writer's connection:
/// tokio-postgres sends their queries back to back and the server runs them in that order, so
/// they cost one round trip instead of one each. A refusal ([`StoreError::Conflict`]) is that
/// mutation's failure; any other error fails the whole transaction.
async fn run_contained(
    tx: &tokio_postgres::Transaction<'_>,
    contained: &mut Vec<(usize, Mutation)>,
    failures: &mut [Option<StoreError>],
) -> Result<(), AuditError> {
    if contained.is_empty() {
        return Ok(());
    }
    let (indexes, running): (Vec<usize>, Vec<_>) = contained
        .drain(..)
        .map(|(i, mutation)| (i, mutation(tx)))
        .unzip();
    let outcomes = futures_util::future::join_all(running).await;
    for (i, outcome) in indexes.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => {}
            Err(e @ StoreError::Conflict(_)) => {
                if let Some(slot) = failures.get_mut(i) {
                    *slot = Some(e);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Whether the writer checks this record's caller before it commits: an operation that
/// succeeded on behalf of a client certificate. (Refusals and failures are logged as they are;
/// the daemon's own entries have no caller.)
fn is_gated(record: &Record) -> bool {
    !record.actor.fingerprint.is_empty() && record.result == "ok"
}

/// The distinct callers of a group whose records are gated ([`is_gated`]).
fn gated_callers<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<String> {
    let mut callers: Vec<String> = records
        .filter(|record| is_gated(record))
        .map(|record| record.actor.fingerprint.clone())
        .collect();
    callers.sort_unstable();
    callers.dedup();
    callers
}

fn store_error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Conflict(_) => "conflict",
        StoreError::Corrupt(_) => "corrupt",
        StoreError::Config(_) => "config",
        StoreError::Migration(_) => "migration",
        StoreError::NotFound(_) => "not_found",
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_grows_only_under_load() {
        let cfg = config::Audit::default();
        let (from, backlog, max) = (cfg.group_wait_from, cfg.group_wait_backlog, cfg.max_batch);
        // A light caller commits at once; many entries queued, or many requests waiting for a
        // key, let the group grow; a full group never waits.
        assert!(!lets_group_grow(&cfg, 1, 0));
        assert!(!lets_group_grow(&cfg, from - 1, backlog - 1));
        assert!(lets_group_grow(&cfg, from, 0));
        assert!(lets_group_grow(&cfg, 1, backlog));
        assert!(!lets_group_grow(&cfg, max, backlog));
        let never = config::Audit {
            group_wait_backlog: 0,
            ..cfg.clone()
        };
        assert!(!lets_group_grow(&never, 1, usize::MAX));
        assert!(lets_group_grow(&never, from, 0));
        let off = config::Audit {
            group_wait_micros: 0,
            ..cfg
        };
        assert!(!lets_group_grow(&off, from, backlog));
    }
}
