//! audit: the Merkle audit log as a service — every operation appended through one group-commit
//! writer per process (one per database at a time, by advisory lock), receipts, HSM-signed
//! checkpoints, proofs, and the follow feed. The tree math lives in `signet-merkle`.

pub mod saved;
mod trust;
mod verify;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ed25519_dalek::pkcs8::DecodePublicKey as _;
use serde::Serialize;
use sha2::Digest as _;
use signet_merkle::{Entry, Hash};
use tokio::sync::{mpsc, oneshot, watch};

pub use verify::{
    VerifyError, VerifyReport, verify_consistency_offline, verify_log, verify_proof_offline,
};

use crate::config;
use crate::hsm::{Hsm, HsmError};
use crate::store::{KeyRecord, Store, StoreError};

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The log cannot be written now: the operation fails and nothing it did is visible.
    #[error("the audit log is unavailable: {0}")]
    Unavailable(String),
    /// The operation's own database change failed; its failure is in the log under `receipt`.
    #[error("operation failed: {error}")]
    Operation {
        /// Why.
        error: StoreError,
        /// The entry recording the failure.
        receipt: Receipt,
    },
    /// The caller may no longer be served (its certificate was held or revoked, its account
    /// deleted, or the certificate expired), found by the writer inside the transaction: the
    /// operation's answer is withheld, its mutation did not run, and the refusal is in the log
    /// under `receipt`.
    #[error("caller refused: {reason}")]
    CallerRefused {
        /// Why, safe for the client.
        reason: String,
        /// The entry recording the refusal.
        receipt: Receipt,
    },
    /// A read asked for something outside the tree.
    #[error("{0}")]
    OutOfRange(String),
    /// The entry cannot be encoded (a field is too long).
    #[error("entry cannot be encoded: {0}")]
    Encoding(String),
    /// Stored data contradicts itself (a bug or tampering).
    #[error("audit data is inconsistent: {0}")]
    Corrupt(String),
    /// The audit key is missing or unusable.
    #[error("audit key: {0}")]
    Key(String),
}

impl From<StoreError> for AuditError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(m) => AuditError::Corrupt(m),
            other => AuditError::Unavailable(other.to_string()),
        }
    }
}

impl From<HsmError> for AuditError {
    fn from(e: HsmError) -> Self {
        AuditError::Unavailable(format!("checkpoint signature: {e}"))
    }
}

/// Who did it.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// SHA-256 of the caller's certificate, hex; empty for the daemon itself.
    pub fingerprint: String,
    /// Account name; empty when unknown.
    pub account: String,
}

/// What a caller asks to log. `seq` and `time` are given by the writer.
#[derive(Debug, Clone)]
pub struct Record {
    /// Who.
    pub actor: Actor,
    /// What, e.g. `whoami`, `sign`, `cert.revoke`.
    pub action: String,
    /// On what, e.g. `ring:payments`.
    pub subject: String,
    /// SHA-256 of the canonical parameters ([`params_digest`]).
    pub params_digest: Hash,
    /// Digest of what the operation produced, if anything.
    pub output_digest: Option<Hash>,
    /// `ok` or `error:<kind>`.
    pub result: String,
}

impl Record {
    /// A successful operation by `actor`; the parameters and the output are committed to by
    /// digest only.
    pub fn ok(
        actor: &Actor,
        action: &str,
        subject: String,
        params: &serde_json::Value,
        output: Option<&[u8]>,
    ) -> Record {
        Record {
            actor: actor.clone(),
            action: action.to_owned(),
            subject,
            params_digest: params_digest(params),
            output_digest: output.map(digest),
            result: "ok".to_owned(),
        }
    }
}

/// The proof of logging returned with every audited answer: the entry was committed before
/// the answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Receipt {
    /// Sequence number (leaf index).
    pub seq: u64,
    /// RFC 6962 leaf hash, hex.
    pub leaf_hash: String,
}

/// A database change made in the writer's transaction, atomically with its entry. Returning
/// an error rolls the change back (to a savepoint) and logs the failure instead.
pub type Mutation = Box<
    dyn for<'t, 'c> FnOnce(
            &'t tokio_postgres::Transaction<'c>,
        )
            -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 't>>
        + Send,
>;

struct Job {
    record: Record,
    mutation: Option<(Mutation, Guard)>,
    reply: oneshot::Sender<Result<Receipt, AuditError>>,
}

/// How the writer keeps a failing mutation from spoiling the rest of its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// A client-side `SAVEPOINT` before and `RELEASE` (or `ROLLBACK TO`) after: two more round
    /// trips, for any mutation.
    Savepoint,
    /// None needed: the mutation undoes its own changes when it fails (a server-side exception
    /// block) and reports such a failure as [`StoreError::Conflict`]. Any other error aborts the
    /// writer's transaction.
    Contained,
}

/// SHA-256 of the canonical JSON of `params` (keys sorted, no whitespace): the parameters are
/// committed to without being stored.
pub fn params_digest(params: &serde_json::Value) -> Hash {
    // serde_json's default map is a BTreeMap: keys serialize sorted.
    let bytes = serde_json::to_vec(params).unwrap_or_default();
    sha2::Sha256::digest(bytes).into()
}

/// SHA-256 of `data`.
pub fn digest(data: &[u8]) -> Hash {
    sha2::Sha256::digest(data).into()
}

/// The audit log. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    jobs: mpsc::Sender<Job>,
    backlog: Backlog,
    size: watch::Receiver<u64>,
    store: Store,
    public_key: Arc<[u8; 32]>,
    cfg: Arc<config::Audit>,
    trust: Arc<trust::Trust>,
}

/// How many requests wait upstream of the log for a signing key, counted by whoever makes them
/// wait ([`Backlog::enter`]). While many do, the token has that much work queued whichever
/// way, so the writer may let a group grow (`audit.group_wait_backlog`): the wait costs the
/// group's callers latency, not a signature.
#[derive(Debug, Clone, Default)]
pub struct Backlog(Arc<AtomicUsize>);

/// One request counted in a [`Backlog`] until dropped.
#[derive(Debug)]
pub struct BacklogGuard(Arc<AtomicUsize>);

impl Backlog {
    /// Counts one waiting request until the guard is dropped (also when its future is).
    pub fn enter(&self) -> BacklogGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        BacklogGuard(self.0.clone())
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for BacklogGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("origin", &self.cfg.origin)
            .field("size", &*self.size.borrow())
            .finish()
    }
}

/// The audit key's raw Ed25519 public key.
pub fn ed25519_public_key(key: &KeyRecord) -> Result<[u8; 32], AuditError> {
    ed25519_dalek::VerifyingKey::from_public_key_der(&key.public_key)
        .map(|k| k.to_bytes())
        .map_err(|e| AuditError::Key(format!("the audit key must be Ed25519: {e}")))
}

impl Audit {
    /// Starts the writer task for this process.
    pub async fn start(
        store: Store,
        hsm: Hsm,
        key: &KeyRecord,
        cfg: config::Audit,
        metrics: crate::metrics::Metrics,
    ) -> Result<Audit, AuditError> {
        let public_key = ed25519_public_key(key)?;
        let slot = {
            let (h, k) = (hsm.clone(), key.clone());
            tokio::task::spawn_blocking(move || h.key(&k.token, &k.label, k.algorithm))
                .await
                .map_err(|e| AuditError::Key(e.to_string()))??
        };
        let size = store.audit_size().await?;
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&public_key)
            .map_err(|e| AuditError::Key(format!("the audit key: {e}")))?;
        let trust = Arc::new(trust::Trust::new(cfg.origin.clone(), vk));
        if let Some(dir) = &cfg.checkpoint_dir {
            check_saved(&store, &trust, dir, &cfg.origin, &vk, size).await?;
        }
        let (size_tx, size_rx) = watch::channel(size);
        let (jobs, rx) = mpsc::channel(cfg.max_batch.max(1) * 4);
        let cfg = Arc::new(cfg);
        let backlog = Backlog::default();
        let writer = writer::Writer::new(
            store.clone(),
            hsm,
            slot,
            public_key,
            cfg.clone(),
            size_tx,
            metrics,
        )
        .await?
        .with_backlog(backlog.clone());
        tokio::spawn(writer.run(rx));
        Ok(Audit {
            jobs,
            backlog,
            size: size_rx,
            store,
            public_key: Arc::new(public_key),
            cfg,
            trust,
        })
    }

    /// The count of requests waiting for a signing key, which the writer reads.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Appends `record` and returns its receipt once the entry is durably committed.
    pub async fn append(&self, record: Record) -> Result<Receipt, AuditError> {
        self.submit(record, None).await
    }

    /// [`Audit::append_with`] for a mutation that contains its own failures: it runs in one
    /// server-side subtransaction (a PL/pgSQL exception block), so that a refusal undoes only
    /// its own changes, and it reports that refusal as [`StoreError::Conflict`]. The writer then
    /// spares the two round trips of a savepoint; any other error from the mutation fails the
    /// whole commit (every caller in it gets [`AuditError::Unavailable`]).
    pub async fn append_with_contained(
        &self,
        record: Record,
        mutation: Mutation,
    ) -> Result<Receipt, AuditError> {
        self.submit(record, Some((mutation, Guard::Contained)))
            .await
    }

    /// Runs `mutation` and appends `record` in one transaction: both are committed, or
    /// neither is. If the mutation fails, its failure is logged instead and returned.
    pub async fn append_with(
        &self,
        record: Record,
        mutation: Mutation,
    ) -> Result<Receipt, AuditError> {
        self.submit(record, Some((mutation, Guard::Savepoint)))
            .await
    }

    async fn submit(
        &self,
        record: Record,
        mutation: Option<(Mutation, Guard)>,
    ) -> Result<Receipt, AuditError> {
        // Refuse what cannot be encoded or stored before it reaches the writer: a record that
        // failed in the writer's transaction would fail every other record of its group.
        // (The API's edge refuses such text first; this is the writer's own guard.)
        storable(&record)?;
        probe_entry(&record)
            .encode()
            .map_err(|e| AuditError::Encoding(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                record,
                mutation,
                reply,
            })
            .await
            .map_err(|_| AuditError::Unavailable("the audit writer stopped".into()))?;
        answer
            .await
            .map_err(|_| AuditError::Unavailable("the audit writer stopped".into()))?
    }

    /// The number of entries this process knows of.
    pub fn size(&self) -> u64 {
        *self.size.borrow()
    }

    /// The configured origin (also the checkpoint key's name).
    pub fn origin(&self) -> &str {
        &self.cfg.origin
    }

    /// The raw Ed25519 checkpoint public key.
    pub fn public_key(&self) -> [u8; 32] {
        *self.public_key
    }

    /// Entries from `from` on (at most `limit`), waiting up to `wait` for the first one when
    /// there is none yet: the follow feed.
    pub async fn entries(
        &self,
        from: u64,
        limit: u64,
        wait: Duration,
    ) -> Result<Vec<Entry>, AuditError> {
        // Sequence numbers are stored as bigint: a `from` past that range names no entry the
        // log can ever hold (the client's error, not a corrupt store).
        if i64::try_from(from).is_err() {
            return Err(AuditError::OutOfRange(format!(
                "from {from} is past any sequence number the log can hold ({})",
                i64::MAX
            )));
        }
        let deadline =
            tokio::time::Instant::now() + wait.min(Duration::from_secs(self.cfg.max_wait_secs));
        let mut size = self.size.clone();
        loop {
            let found = self.store.audit_entries(from, limit).await?;
            if !found.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(found);
            }
            // Woken by this process's writer, or after a second for other processes' entries.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
                size.wait_for(|s| *s > from),
            )
            .await;
        }
    }

    /// The inclusion proof of entry `seq` in the tree of `size` entries (default: now), with
    /// the leaf hash and the root.
    pub async fn inclusion_proof(
        &self,
        seq: u64,
        size: Option<u64>,
    ) -> Result<InclusionProof, AuditError> {
        let current = self.store.audit_size().await?;
        let size = size.unwrap_or(current);
        if seq >= size || size > current {
            return Err(AuditError::OutOfRange(format!(
                "need seq < size <= {current}, got seq {seq}, size {size}"
            )));
        }
        let plan = signet_merkle::inclusion_plan(seq, size)
            .map_err(|e| AuditError::OutOfRange(e.to_string()))?;
        let leaf_id = signet_merkle::NodeId {
            level: 0,
            index: seq,
        };
        let mut ids = signet_merkle::required_nodes(&plan);
        ids.extend(signet_merkle::frontier_ids(size));
        ids.push(leaf_id);
        let nodes = self.store.audit_nodes(&ids).await?;
        let lookup = |id: signet_merkle::NodeId| nodes.get(&id).copied();
        let proof = signet_merkle::assemble(&plan, lookup)
            .map_err(|e| AuditError::Corrupt(e.to_string()))?;
        let root = root_of(size, &nodes)?;
        // Served only if it leads from the entry itself to a root this process trusts.
        let entry = self
            .store
            .audit_entries(seq, 1)
            .await?
            .into_iter()
            .next()
            .filter(|e| e.seq == seq)
            .ok_or_else(|| AuditError::Corrupt(format!("entry {seq} is missing")))?;
        let leaf_hash = entry
            .leaf_hash()
            .map_err(|e| AuditError::Corrupt(format!("entry {seq}: {e}")))?;
        if nodes.get(&leaf_id) != Some(&leaf_hash) {
            return Err(AuditError::Corrupt(format!(
                "entry {seq} does not match its recorded leaf hash"
            )));
        }
        if signet_merkle::root_from_inclusion(&leaf_hash, seq, size, &proof).ok() != Some(root) {
            return Err(AuditError::Corrupt(format!(
                "the stored nodes on the path of entry {seq} do not lead to the stored root of \
                 the tree of {size} entries"
            )));
        }
        self.trust.check_root(&self.store, size, &root).await?;
        Ok(InclusionProof {
            seq,
            size,
            leaf_hash: hex::encode(leaf_hash),
            root: hex::encode(root),
            proof: proof.iter().map(hex::encode).collect(),
        })
    }

    /// The consistency proof between the trees of `from` and `to` entries.
    pub async fn consistency_proof(
        &self,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyProof, AuditError> {
        let current = self.store.audit_size().await?;
        if from == 0 || from > to || to > current {
            return Err(AuditError::OutOfRange(format!(
                "need 0 < from <= to <= {current}, got from {from}, to {to}"
            )));
        }
        let plan = signet_merkle::consistency_plan(from, to)
            .map_err(|e| AuditError::OutOfRange(e.to_string()))?;
        let mut ids = signet_merkle::required_nodes(&plan);
        ids.extend(signet_merkle::frontier_ids(from));
        ids.extend(signet_merkle::frontier_ids(to));
        let nodes = self.store.audit_nodes(&ids).await?;
        let proof = signet_merkle::assemble(&plan, |id| nodes.get(&id).copied())
            .map_err(|e| AuditError::Corrupt(e.to_string()))?;
        let (from_root, to_root) = (root_of(from, &nodes)?, root_of(to, &nodes)?);
        // Served only if it holds and ends at a root this process trusts.
        signet_merkle::verify_consistency(from, to, &from_root, &to_root, &proof).map_err(|e| {
            AuditError::Corrupt(format!(
                "the stored nodes give no consistent trees of {from} and {to} entries: {e}"
            ))
        })?;
        self.trust.check_root(&self.store, to, &to_root).await?;
        Ok(ConsistencyProof {
            from,
            to,
            from_root: hex::encode(from_root),
            to_root: hex::encode(to_root),
            proof: proof.iter().map(hex::encode).collect(),
        })
    }

    /// The newest signed checkpoint.
    pub async fn latest_checkpoint(
        &self,
    ) -> Result<Option<crate::store::audit::StoredCheckpoint>, AuditError> {
        Ok(self.store.latest_checkpoint().await?)
    }
}

/// Refuses a log that the checkpoint saved in `dir` does not fit (truncated, rewritten, or
/// another database), and trusts that checkpoint's tree for the proofs served.
async fn check_saved(
    store: &Store,
    trust: &trust::Trust,
    dir: &std::path::Path,
    origin: &str,
    key: &ed25519_dalek::VerifyingKey,
    size: u64,
) -> Result<(), AuditError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        AuditError::Unavailable(format!("audit.checkpoint_dir {}: {e}", dir.display()))
    })?;
    let file = saved::path(dir);
    let Some(saved) = saved::read(&file, origin, key).map_err(AuditError::Corrupt)? else {
        return Ok(());
    };
    let refuse = |why: String| {
        AuditError::Corrupt(format!(
            "{why}; the log was truncated or rewritten, or this is another database. Find out \
             why before starting; if the log was replaced on purpose, move {} away",
            file.display()
        ))
    };
    let saved_size = saved.checkpoint.size();
    if saved_size > size {
        return Err(refuse(format!(
            "the database's audit log has {size} entries but the checkpoint saved in {} covers \
             {saved_size}: entries {size}..={} are gone",
            file.display(),
            saved_size - 1
        )));
    }
    trust.adopt(store, &saved.note).await.map_err(|e| match e {
        AuditError::Corrupt(m) => refuse(format!(
            "the checkpoint saved in {} does not fit the database's log: {m}",
            file.display()
        )),
        other => other,
    })
}

/// The tree of `size` entries from its stored frontier nodes.
pub(crate) fn frontier_of(
    size: u64,
    nodes: &std::collections::HashMap<signet_merkle::NodeId, Hash>,
) -> Result<signet_merkle::Frontier, AuditError> {
    let hashes = signet_merkle::frontier_ids(size)
        .into_iter()
        .map(|id| {
            nodes
                .get(&id)
                .copied()
                .ok_or_else(|| AuditError::Corrupt(format!("node {id} is missing")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    signet_merkle::Frontier::from_nodes(size, hashes)
        .map_err(|e| AuditError::Corrupt(e.to_string()))
}

/// The root of the tree of `size` entries from its stored frontier nodes.
pub(crate) fn root_of(
    size: u64,
    nodes: &std::collections::HashMap<signet_merkle::NodeId, Hash>,
) -> Result<Hash, AuditError> {
    frontier_of(size, nodes).map(|f| f.root())
}

/// An inclusion proof as served.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InclusionProof {
    /// Leaf index.
    pub seq: u64,
    /// Tree size.
    pub size: u64,
    /// The leaf hash, hex.
    pub leaf_hash: String,
    /// The root of the tree of `size`, hex.
    pub root: String,
    /// Audit path, hex, leaf to root.
    pub proof: Vec<String>,
}

/// A consistency proof as served.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsistencyProof {
    /// Old size.
    pub from: u64,
    /// New size.
    pub to: u64,
    /// Root at `from`, hex.
    pub from_root: String,
    /// Root at `to`, hex.
    pub to_root: String,
    /// The proof, hex.
    pub proof: Vec<String>,
}

/// Whether the log can store `record`'s text: PostgreSQL text cannot hold NUL.
fn storable(record: &Record) -> Result<(), AuditError> {
    for (field, text) in [
        ("actor fingerprint", record.actor.fingerprint.as_str()),
        ("actor account", record.actor.account.as_str()),
        ("action", record.action.as_str()),
        ("subject", record.subject.as_str()),
        ("result", record.result.as_str()),
    ] {
        if text.contains('\0') {
            return Err(AuditError::Encoding(format!(
                "the entry's {field} holds a NUL character, which the log cannot store"
            )));
        }
    }
    Ok(())
}

fn probe_entry(record: &Record) -> Entry {
    entry_from(record, 0, 0)
}

fn entry_from(record: &Record, seq: u64, time_micros: i64) -> Entry {
    Entry {
        seq,
        time_micros,
        actor_fingerprint: record.actor.fingerprint.clone(),
        actor_account: record.actor.account.clone(),
        action: record.action.clone(),
        subject: record.subject.clone(),
        params_digest: record.params_digest,
        output_digest: record.output_digest,
        result: record.result.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_backlog_counts_each_waiter_until_it_is_dropped_also_with_its_future() {
        let backlog = Backlog::default();
        let (a, b) = (backlog.enter(), backlog.enter());
        assert_eq!(backlog.len(), 2);
        drop(a);
        assert_eq!(backlog.len(), 1);
        // A request dropped while it waits (its client went away) is no longer counted.
        let waiting = {
            let backlog = backlog.clone();
            tokio::spawn(async move {
                let _waiting = backlog.enter();
                std::future::pending::<()>().await;
            })
        };
        while backlog.len() < 2 {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert_eq!(backlog.len(), 1);
        drop(b);
        assert!(backlog.is_empty());
    }

    #[test]
    fn a_nul_in_any_text_field_is_refused_before_the_writer() {
        let clean = Record {
            actor: Actor {
                fingerprint: "ab".into(),
                account: "alice".into(),
            },
            action: "sign".into(),
            subject: "ring:r".into(),
            params_digest: [0; 32],
            output_digest: None,
            result: "ok".into(),
        };
        assert!(storable(&clean).is_ok());
        let mut bad = clean.clone();
        bad.subject = "ring:\0".into();
        let e = storable(&bad).unwrap_err();
        assert!(e.to_string().contains("subject"), "{e}");
        let mut bad = clean;
        bad.actor.account = "a\0b".into();
        assert!(storable(&bad).is_err());
    }
}
