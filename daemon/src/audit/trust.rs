//! audit::trust: what the proof endpoints check their answers against before serving them.
//! Proofs are assembled from stored nodes, which whoever can write the database can change;
//! a proof that does not lead to a root this process trusts is refused, not served.
//!
//! The trusted tree is a frontier rebuilt from a signed checkpoint (the saved one at start,
//! later the newest in the database): its stored frontier nodes must hash to the signed root.
//! Past it, the frontier grows only by leaf hashes recomputed from the entries themselves. A
//! root at a size below the frontier's is checked by a consistency proof up to it.

use signet_merkle::{Frontier, Hash};
use tokio::sync::Mutex;

use super::AuditError;
use crate::store::Store;

/// Most entries read past the newest checkpoint to check one proof; beyond, the proof waits
/// for the next checkpoint (503).
const MAX_EXTEND: u64 = 100_000;
/// Entries read per query while extending.
const CHUNK: u64 = 5_000;

pub(super) struct Trust {
    origin: String,
    key: ed25519_dalek::VerifyingKey,
    frontier: Mutex<Frontier>,
}

impl Trust {
    /// Trusts nothing yet: the empty tree.
    pub(super) fn new(origin: String, key: ed25519_dalek::VerifyingKey) -> Self {
        Trust {
            origin,
            key,
            frontier: Mutex::new(Frontier::empty()),
        }
    }

    /// Trusts the tree the checkpoint `note` signs, if it is larger than the trusted one and
    /// the stored nodes give its root.
    pub(super) async fn adopt(&self, store: &Store, note: &str) -> Result<(), AuditError> {
        let frontier = self.checkpoint_tree(store, note).await?;
        let mut trusted = self.frontier.lock().await;
        if frontier.size() > trusted.size() {
            *trusted = frontier;
        }
        Ok(())
    }

    /// Checks that `root` is the root of the tree of the first `size` entries.
    pub(super) async fn check_root(
        &self,
        store: &Store,
        size: u64,
        root: &Hash,
    ) -> Result<(), AuditError> {
        let mut trusted = self.frontier.lock().await;
        if let Some(cp) = store.latest_checkpoint().await?
            && cp.size > trusted.size()
        {
            *trusted = self.checkpoint_tree(store, &cp.note).await?;
        }
        if size > trusted.size() {
            extend(store, &mut trusted, size).await?;
        }
        if size == trusted.size() {
            return if *root == trusted.root() {
                Ok(())
            } else {
                Err(AuditError::Corrupt(format!(
                    "the stored nodes give another root for the tree of {size} entries than \
                     its entries do"
                )))
            };
        }
        let plan = signet_merkle::consistency_plan(size, trusted.size())
            .map_err(|e| AuditError::Corrupt(e.to_string()))?;
        let nodes = store
            .audit_nodes(&signet_merkle::required_nodes(&plan))
            .await?;
        let proof = signet_merkle::assemble(&plan, |id| nodes.get(&id).copied())
            .map_err(|e| AuditError::Corrupt(e.to_string()))?;
        signet_merkle::verify_consistency(size, trusted.size(), root, &trusted.root(), &proof)
            .map_err(|e| {
                AuditError::Corrupt(format!(
                    "the stored tree of {size} entries is not a prefix of the trusted tree of {} \
                     entries: {e}",
                    trusted.size()
                ))
            })
    }

    /// The frontier of the checkpoint `note`, from stored nodes that must hash to its root.
    async fn checkpoint_tree(&self, store: &Store, note: &str) -> Result<Frontier, AuditError> {
        let checkpoint = signet_merkle::SignedNote::parse(note)
            .and_then(|n| n.verify(&self.origin, &self.key))
            .map_err(|e| AuditError::Corrupt(format!("stored checkpoint: {e}")))?;
        let size = checkpoint.size();
        let nodes = store
            .audit_nodes(&signet_merkle::frontier_ids(size))
            .await?;
        let frontier = super::frontier_of(size, &nodes)?;
        if frontier.root() != *checkpoint.root() {
            return Err(AuditError::Corrupt(format!(
                "the stored nodes of the tree of {size} entries do not give the root its signed \
                 checkpoint has"
            )));
        }
        Ok(frontier)
    }
}

/// Grows `frontier` to `size` entries by the leaf hashes of the stored entries.
async fn extend(store: &Store, frontier: &mut Frontier, size: u64) -> Result<(), AuditError> {
    if size - frontier.size() > MAX_EXTEND {
        return Err(AuditError::Unavailable(format!(
            "the tree of {size} entries is more than {MAX_EXTEND} entries past the newest \
             checkpoint; ask again after the next checkpoint"
        )));
    }
    while frontier.size() < size {
        let from = frontier.size();
        let entries = store.audit_entries(from, CHUNK.min(size - from)).await?;
        if entries.is_empty() {
            return Err(AuditError::Corrupt(format!(
                "entry {from} is missing below the size {size}"
            )));
        }
        for entry in entries {
            if entry.seq != frontier.size() {
                return Err(AuditError::Corrupt(format!(
                    "entry {} is missing",
                    frontier.size()
                )));
            }
            let leaf = entry
                .leaf_hash()
                .map_err(|e| AuditError::Corrupt(format!("entry {}: {e}", entry.seq)))?;
            frontier.append(leaf);
        }
    }
    Ok(())
}
