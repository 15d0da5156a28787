//! jobs::tree: the Merkle tree of one batch — the canonical leaf of a (record id, signature)
//! pair, the batch root that goes into the batch's audit entry, and per-record inclusion
//! proofs. The tree is RFC 6962's (the same hashing as the audit log, through `signet-merkle`).
//!
//! # Batch leaf format, version 1
//!
//! ```text
//! offset  size  field
//! 0       1     version     0x01
//! 1       8     record_id   u64, big-endian
//! 9       n     signature   the signature as stored and served (DER for ECDSA,
//!                           the raw block for RSA, 64 bytes for Ed25519), to the end
//! ```
//!
//! The leaf hash is `SHA-256(0x00 ‖ leaf)`, node hashes `SHA-256(0x01 ‖ left ‖ right)`. The
//! leaves of a batch are its records in ascending id order; leaf `i` is the `i`-th. The batch
//! root is RFC 6962's `MTH` over them; the batch's audit entry (`action = "jobs.batch"`,
//! `subject = "job:<job id>/batch:<seq>"`) carries it as `output_digest`.

use std::collections::HashMap;

use signet_merkle::{Frontier, Hash, NodeId};

/// The leaf format version.
pub const LEAF_VERSION: u8 = 0x01;

/// The canonical leaf of one signed record.
pub fn leaf(record_id: i64, signature: &[u8]) -> Vec<u8> {
    let mut leaf = Vec::with_capacity(9 + signature.len());
    leaf.push(LEAF_VERSION);
    // Record ids are positive (identity column); the cast keeps the bits.
    leaf.extend_from_slice(&(record_id as u64).to_be_bytes());
    leaf.extend_from_slice(signature);
    leaf
}

/// The leaf hash of one signed record.
pub fn leaf_hash(record_id: i64, signature: &[u8]) -> Hash {
    signet_merkle::hash_leaf(&leaf(record_id, signature))
}

/// The RFC 6962 root over leaf hashes.
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    let mut frontier = Frontier::empty();
    for h in leaf_hashes {
        frontier.append(*h);
    }
    frontier.root()
}

/// The inclusion proof of leaf `index` in the tree of `leaf_hashes`, and the root. `None` when
/// `index` is out of range.
pub fn proof(leaf_hashes: &[Hash], index: usize) -> Option<(Vec<Hash>, Hash)> {
    let size = leaf_hashes.len() as u64;
    let plan = signet_merkle::inclusion_plan(index as u64, size).ok()?;
    let mut nodes: HashMap<NodeId, Hash> = HashMap::new();
    let mut frontier = Frontier::empty();
    for h in leaf_hashes {
        nodes.extend(frontier.append(*h));
    }
    let path = signet_merkle::assemble(&plan, |id| nodes.get(&id).copied()).ok()?;
    Some((path, frontier.root()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn leaf_layout() {
        let l = leaf(0x0102, &[0xaa, 0xbb]);
        assert_eq!(l, vec![1, 0, 0, 0, 0, 0, 0, 1, 2, 0xaa, 0xbb]);
    }

    #[test]
    fn root_and_proofs_agree_with_the_reference() {
        for n in 1..40usize {
            let hashes: Vec<Hash> = (0..n)
                .map(|i| leaf_hash(i as i64 + 7, &[i as u8; 70]))
                .collect();
            let r = root(&hashes);
            assert_eq!(r, signet_merkle::reference::root(&hashes));
            for i in 0..n {
                let (path, r2) = proof(&hashes, i).unwrap();
                assert_eq!(r2, r);
                assert_eq!(path, signet_merkle::reference::inclusion_proof(i, &hashes));
                signet_merkle::verify_inclusion(&hashes[i], i as u64, n as u64, &path, &r).unwrap();
            }
            assert!(proof(&hashes, n).is_none());
        }
    }
}
