//! audit::verify: `signetd audit verify` — recompute the whole tree from the database, check every
//! checkpoint's signature, root and consistency with the one before, and name the first bad
//! entry — and `verify-proof`, the offline check of one entry against a checkpoint.

use std::collections::HashMap;

use signet_merkle::{Checkpoint, Entry, Frontier, Hash, NodeId, SignedNote};

use super::saved::Saved;

use crate::store::Store;

/// Entries read per query.
const CHUNK: u64 = 10_000;

/// What a clean verification covered.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Entries recomputed.
    pub entries: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The root of the whole tree, hex.
    pub root: String,
}

/// Why verification failed. `seq` names the first bad entry when one can be named.
#[derive(Debug, thiserror::Error)]
#[error("{}{reason}", seq.map(|s| format!("entry {s}: ")).unwrap_or_default())]
pub struct VerifyError {
    /// The first bad entry.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

fn bad(seq: Option<u64>, reason: impl Into<String>) -> VerifyError {
    VerifyError {
        seq,
        reason: reason.into(),
    }
}

/// Recomputes the log from the database and checks it against its stored hashes and signed
/// checkpoints, and against checkpoints `saved` outside it (their signatures already checked):
/// the log must reach each one's size, with its root there.
pub async fn verify_log(
    store: &Store,
    origin: &str,
    public_key: &[u8; 32],
    saved: &[Saved],
) -> Result<VerifyReport, VerifyError> {
    let db = |e: crate::store::StoreError| bad(None, format!("database: {e}"));
    let vk = ed25519_dalek::VerifyingKey::from_bytes(public_key)
        .map_err(|e| bad(None, format!("audit public key: {e}")))?;
    let checkpoints = store.checkpoints().await.map_err(db)?;
    // Check each checkpoint's own signature first: a forged note is named before entries.
    let mut expected = Vec::with_capacity(checkpoints.len());
    for stored in &checkpoints {
        let note = SignedNote::parse(&stored.note)
            .map_err(|e| bad(None, format!("checkpoint at size {}: {e}", stored.size)))?;
        let checkpoint = note.verify(origin, &vk).map_err(|e| {
            bad(
                None,
                format!("checkpoint at size {}: signature: {e}", stored.size),
            )
        })?;
        if checkpoint.size() != stored.size
            || *checkpoint.root() != stored.root
            || checkpoint.origin() != origin
        {
            return Err(bad(
                None,
                format!(
                    "checkpoint at size {}: signed note differs from its row",
                    stored.size
                ),
            ));
        }
        expected.push((checkpoint, None));
    }
    expected.extend(
        saved
            .iter()
            .map(|s| (s.checkpoint.clone(), Some(s.file.as_path()))),
    );
    expected.sort_by_key(|(cp, _)| cp.size());

    let mut frontier = Frontier::empty();
    let mut next_checkpoint = expected.iter().peekable();
    let mut previous: Option<(u64, Hash)> = None;
    let mut checked = 0;
    loop {
        let entries = store
            .audit_entries(frontier.size(), CHUNK)
            .await
            .map_err(db)?;
        if entries.is_empty() {
            break;
        }
        let from = frontier.size();
        let to = from + entries.len() as u64;
        // Every node these entries complete, compared with the one recomputed: a changed
        // interior node would otherwise pass here and still be served in proofs.
        let mut stored = store.audit_nodes_completed(from, to).await.map_err(db)?;
        for entry in entries {
            let seq = frontier.size();
            if entry.seq != seq {
                return Err(bad(Some(seq), "entry is missing (the sequence has a gap)"));
            }
            let leaf = entry
                .encode()
                .map_err(|e| bad(Some(seq), format!("cannot encode: {e}")))?;
            for (id, hash) in frontier.append(signet_merkle::hash_leaf(&leaf)) {
                check_node(&mut stored, id, &hash)?;
            }
            while let Some((cp, file)) = next_checkpoint.peek() {
                if cp.size() != frontier.size() {
                    break;
                }
                if *cp.root() != frontier.root() {
                    return Err(bad(
                        Some(previous.map_or(0, |(s, _)| s)),
                        format!(
                            "{} does not match the entries after size {}",
                            describe(cp, *file),
                            previous.map_or(0, |(s, _)| s)
                        ),
                    ));
                }
                if let Some((old_size, old_root)) = previous {
                    check_consistency(store, old_size, &old_root, cp.size(), cp.root()).await?;
                }
                previous = Some((cp.size(), *cp.root()));
                checked += 1;
                next_checkpoint.next();
            }
        }
        if let Some(id) = stored
            .keys()
            .min_by_key(|id| (id.index << id.level, id.level))
        {
            return Err(bad(
                Some(id.index << id.level),
                format!("node {id} is recorded but no entry completes it"),
            ));
        }
    }
    if let Some((cp, file)) = next_checkpoint.next_back() {
        // The largest checkpoint names the whole missing range.
        return Err(bad(
            Some(frontier.size()),
            format!(
                "entry is missing: the log ends at {} entries but {} covers {} (entries {}..={} \
                 are gone)",
                frontier.size(),
                describe(cp, *file),
                cp.size(),
                frontier.size(),
                cp.size() - 1
            ),
        ));
    }
    if let Some(id) = store.audit_node_beyond(frontier.size()).await.map_err(db)? {
        return Err(if id.level == 0 {
            bad(
                Some(id.index),
                "entry is missing: its leaf hash is recorded but the entry is gone",
            )
        } else {
            bad(
                Some(frontier.size()),
                format!(
                    "entry is missing: node {id} covers entries {}..{} but the log ends at {} \
                     entries",
                    id.index << id.level,
                    ((id.index + 1) << id.level) - 1,
                    frontier.size()
                ),
            )
        });
    }
    Ok(VerifyReport {
        entries: frontier.size(),
        checkpoints: checked,
        root: hex::encode(frontier.root()),
    })
}

/// Checks a recomputed node against the stored one (taken out of `stored`). Leaves keep their
/// own wording: a changed entry is found as a leaf that does not match.
fn check_node(
    stored: &mut HashMap<NodeId, Hash>,
    id: NodeId,
    computed: &Hash,
) -> Result<(), VerifyError> {
    let first = id.index << id.level;
    let last = ((id.index + 1) << id.level) - 1;
    match (stored.remove(&id), id.level) {
        (Some(h), _) if h == *computed => Ok(()),
        (Some(_), 0) => Err(bad(
            Some(first),
            "entry does not match its recorded leaf hash",
        )),
        (None, 0) => Err(bad(Some(first), "entry has no recorded leaf hash")),
        (Some(_), _) => Err(bad(
            Some(first),
            format!("node {id} does not match the entries under it ({first}..={last})"),
        )),
        (None, _) => Err(bad(
            Some(first),
            format!("node {id} over entries {first}..={last} is not recorded"),
        )),
    }
}

fn describe(checkpoint: &Checkpoint, file: Option<&std::path::Path>) -> String {
    match file {
        None => format!("the checkpoint at size {}", checkpoint.size()),
        Some(file) => format!(
            "the checkpoint saved in {} (size {})",
            file.display(),
            checkpoint.size()
        ),
    }
}

async fn check_consistency(
    store: &Store,
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
) -> Result<(), VerifyError> {
    let plan = signet_merkle::consistency_plan(old_size, new_size)
        .map_err(|e| bad(None, format!("consistency plan: {e}")))?;
    let nodes = store
        .audit_nodes(&signet_merkle::required_nodes(&plan))
        .await
        .map_err(|e| bad(None, format!("database: {e}")))?;
    let proof = signet_merkle::assemble(&plan, |id| nodes.get(&id).copied())
        .map_err(|e| bad(Some(old_size), format!("stored nodes incomplete: {e}")))?;
    signet_merkle::verify_consistency(old_size, new_size, old_root, new_root, &proof).map_err(|e| {
        bad(
            Some(old_size),
            format!("checkpoints at sizes {old_size} and {new_size} are not consistent: {e}"),
        )
    })
}

/// Checks offline that `leaf` (the canonical entry encoding) is entry `proof_seq` of the tree
/// that `note` (a checkpoint signed by `name` with `public_key`) commits to, given the audit
/// path `proof`. Returns the decoded entry.
pub fn verify_proof_offline(
    note: &str,
    name: &str,
    public_key: &[u8; 32],
    leaf: &[u8],
    proof_seq: u64,
    proof_size: u64,
    proof: &[Hash],
) -> Result<Entry, VerifyError> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(public_key)
        .map_err(|e| bad(None, format!("public key: {e}")))?;
    let checkpoint = SignedNote::parse(note)
        .map_err(|e| bad(None, format!("checkpoint: {e}")))?
        .verify(name, &vk)
        .map_err(|e| bad(None, format!("checkpoint signature: {e}")))?;
    if checkpoint.size() != proof_size {
        return Err(bad(
            None,
            format!(
                "the proof is for a tree of {proof_size} entries but the checkpoint has {}",
                checkpoint.size()
            ),
        ));
    }
    let entry = Entry::decode(leaf).map_err(|e| bad(Some(proof_seq), format!("entry: {e}")))?;
    if entry.seq != proof_seq {
        return Err(bad(
            Some(entry.seq),
            format!(
                "the entry is number {} but the proof is for {proof_seq}",
                entry.seq
            ),
        ));
    }
    signet_merkle::verify_inclusion(
        &signet_merkle::hash_leaf(leaf),
        proof_seq,
        proof_size,
        proof,
        checkpoint.root(),
    )
    .map_err(|e| {
        bad(
            Some(proof_seq),
            format!("not in the checkpointed tree: {e}"),
        )
    })?;
    Ok(entry)
}

/// Checks offline that the tree `note` (a checkpoint signed by `name` with `public_key`)
/// commits to extends the tree of `trusted`, an older checkpoint the auditor holds, given the
/// consistency proof from `proof_from` to `proof_to` entries. Returns both checkpoints, the
/// older first.
pub fn verify_consistency_offline(
    note: &str,
    trusted: &str,
    name: &str,
    public_key: &[u8; 32],
    proof_from: u64,
    proof_to: u64,
    proof: &[Hash],
) -> Result<(Checkpoint, Checkpoint), VerifyError> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(public_key)
        .map_err(|e| bad(None, format!("public key: {e}")))?;
    let open = |text: &str, what: &str| {
        SignedNote::parse(text)
            .and_then(|n| n.verify(name, &vk))
            .map_err(|e| bad(None, format!("{what}: {e}")))
    };
    let new = open(note, "checkpoint")?;
    let old = open(trusted, "trusted checkpoint")?;
    if (proof_from, proof_to) != (old.size(), new.size()) {
        return Err(bad(
            None,
            format!(
                "the consistency proof is from {proof_from} to {proof_to} entries, but the trusted \
                 checkpoint has {} and the checkpoint {}",
                old.size(),
                new.size()
            ),
        ));
    }
    signet_merkle::verify_consistency(old.size(), new.size(), old.root(), new.root(), proof)
        .map_err(|e| {
            bad(
                Some(old.size().min(new.size())),
                format!(
                    "the checkpoint of {} entries does not extend the trusted one of {}: {e}",
                    new.size(),
                    old.size()
                ),
            )
        })?;
    Ok((old, new))
}
