//! Proofs assembled from a Frontier-built node store against the RFC 6962 reference, and
//! verification against tampering. Property tests over random sizes, plus exhaustive small
//! trees.

use proptest::prelude::*;
use signet_merkle::{
    Hash, assemble, consistency_plan, inclusion_plan, reference, root_from_inclusion,
    verify_consistency, verify_inclusion,
};

use crate::{Store, leaves};

const MAX: u64 = 300;

fn us(n: u64) -> usize {
    usize::try_from(n).unwrap()
}

fn inclusion_case() -> impl Strategy<Value = (u64, u64)> {
    (1..=MAX).prop_flat_map(|n| (Just(n), 0..n))
}

fn consistency_case() -> impl Strategy<Value = (u64, u64)> {
    (1..=MAX).prop_flat_map(|n| (0..=n, Just(n)))
}

/// Flips the bits of `mask` in byte `byte` of the hash.
fn flip(mut h: Hash, byte: usize, mask: u8) -> Hash {
    h[byte % 32] ^= mask;
    h
}

fn inclusion_proof(store: &Store, index: u64, size: u64) -> Vec<Hash> {
    assemble(&inclusion_plan(index, size).unwrap(), store.lookup()).unwrap()
}

fn consistency_proof(store: &Store, old: u64, new: u64) -> Vec<Hash> {
    assemble(&consistency_plan(old, new).unwrap(), store.lookup()).unwrap()
}

proptest! {
    #[test]
    fn inclusion_matches_reference_and_verifies((size, index) in inclusion_case()) {
        let leaves = leaves(size);
        let store = Store::build(&leaves);
        let root = store.roots[us(size)];
        prop_assert_eq!(root, reference::root(&leaves));
        let proof = inclusion_proof(&store, index, size);
        prop_assert_eq!(&proof, &reference::inclusion_proof(us(index), &leaves));
        prop_assert_eq!(verify_inclusion(&leaves[us(index)], index, size, &proof, &root), Ok(()));
        prop_assert_eq!(root_from_inclusion(&leaves[us(index)], index, size, &proof), Ok(root));
    }

    #[test]
    fn tampered_inclusion_fails(
        (size, index) in inclusion_case(),
        target in any::<usize>(),
        byte in 0usize..32,
        mask in 1u8..=255,
    ) {
        let leaves = leaves(size);
        let store = Store::build(&leaves);
        let root = store.roots[us(size)];
        let mut proof = inclusion_proof(&store, index, size);
        let mut leaf = leaves[us(index)];
        let mut root_claimed = root;
        match target % (proof.len() + 2) {
            0 => leaf = flip(leaf, byte, mask),
            1 => root_claimed = flip(root_claimed, byte, mask),
            i => proof[i - 2] = flip(proof[i - 2], byte, mask),
        }
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root_claimed).is_err());
    }

    #[test]
    fn inclusion_at_a_wrong_index_fails((size, index) in inclusion_case(), other in 0..MAX) {
        let other = other % size;
        prop_assume!(other != index);
        let leaves = leaves(size);
        let store = Store::build(&leaves);
        let proof = inclusion_proof(&store, index, size);
        let root = store.roots[us(size)];
        prop_assert!(verify_inclusion(&leaves[us(index)], other, size, &proof, &root).is_err());
    }

    /// A proof for one size passes for another size (against that size's root) only if it
    /// is exactly that size's proof too: e.g. leaf 0 has the same path in trees of 5 and 6.
    #[test]
    fn inclusion_at_a_wrong_size_fails((size, index) in inclusion_case(), other in 1..=MAX) {
        prop_assume!(other != size && index < other);
        let leaves = leaves(size.max(other));
        let store = Store::build(&leaves);
        let proof = inclusion_proof(&store, index, size);
        let other_root = store.roots[us(other)];
        let accepted = verify_inclusion(&leaves[us(index)], index, other, &proof, &other_root).is_ok();
        let same = proof == reference::inclusion_proof(us(index), &leaves[..us(other)]);
        prop_assert_eq!(accepted, same);
    }

    #[test]
    fn consistency_matches_reference_and_verifies((old, new) in consistency_case()) {
        let leaves = leaves(new);
        let store = Store::build(&leaves);
        let proof = consistency_proof(&store, old, new);
        prop_assert_eq!(&proof, &reference::consistency_proof(us(old), &leaves));
        let (r1, r2) = (store.roots[us(old)], store.roots[us(new)]);
        prop_assert_eq!(r1, reference::root(&leaves[..us(old)]));
        prop_assert_eq!(verify_consistency(old, new, &r1, &r2, &proof), Ok(()));
    }

    #[test]
    fn tampered_consistency_fails(
        (old, new) in consistency_case(),
        target in any::<usize>(),
        byte in 0usize..32,
        mask in 1u8..=255,
    ) {
        // With an empty old tree there is nothing to bind the new root to.
        prop_assume!(old > 0);
        let leaves = leaves(new);
        let store = Store::build(&leaves);
        let mut proof = consistency_proof(&store, old, new);
        let (mut r1, mut r2) = (store.roots[us(old)], store.roots[us(new)]);
        match target % (proof.len() + 2) {
            0 => r1 = flip(r1, byte, mask),
            1 => r2 = flip(r2, byte, mask),
            i => proof[i - 2] = flip(proof[i - 2], byte, mask),
        }
        prop_assert!(verify_consistency(old, new, &r1, &r2, &proof).is_err());
    }

    /// A consistency proof passes for other sizes (with their roots) only if it is exactly
    /// the proof for those sizes too.
    #[test]
    fn consistency_at_wrong_sizes_fails(
        (old, new) in consistency_case(),
        other_old in 0..=MAX,
        other_new in 1..=MAX,
    ) {
        let leaves = leaves(MAX);
        let store = Store::build(&leaves);
        let proof = consistency_proof(&store, old, new);
        let root = |s: u64| store.roots[us(s)];

        let other_old = other_old % (new + 1);
        if other_old != old {
            let accepted = verify_consistency(other_old, new, &root(other_old), &root(new), &proof).is_ok();
            let same = proof == reference::consistency_proof(us(other_old), &leaves[..us(new)]);
            prop_assert_eq!(accepted, same, "old {} -> {}", other_old, new);
        }
        if other_new != new && other_new >= old {
            let accepted = verify_consistency(old, other_new, &root(old), &root(other_new), &proof).is_ok();
            let same = proof == reference::consistency_proof(us(old), &leaves[..us(other_new)]);
            prop_assert_eq!(accepted, same, "new {} -> {}", old, other_new);
        }
    }
}

/// Every index and every pair of sizes up to 64: plans, reference and verification agree.
#[test]
fn exhaustive_small_trees() {
    let all = leaves(64);
    let store = Store::build(&all);
    for size in 1..=64u64 {
        let leaves = &all[..us(size)];
        let root = store.roots[us(size)];
        assert_eq!(root, reference::root(leaves));
        for index in 0..size {
            let proof = inclusion_proof(&store, index, size);
            assert_eq!(proof, reference::inclusion_proof(us(index), leaves));
            verify_inclusion(&leaves[us(index)], index, size, &proof, &root).unwrap();
        }
        for old in 0..=size {
            let proof = consistency_proof(&store, old, size);
            assert_eq!(proof, reference::consistency_proof(us(old), leaves));
            verify_consistency(old, size, &store.roots[us(old)], &root, &proof).unwrap();
        }
    }
}
