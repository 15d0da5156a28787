//! Agreement with an independent implementation: `rs_merkle` with an RFC 6962 hasher.
//!
//! rs_merkle 1.5 builds the tree level by level and promotes an unpaired last node
//! unchanged (`concat_and_hash(left, None) = left`), which gives RFC 6962's tree when
//! `concat_and_hash` is overridden to hash `0x01 ‖ left ‖ right`. Leaves are given to it
//! already hashed with the `0x00` prefix.

use rs_merkle::{Hasher, MerkleTree};
use signet_merkle::{Hash, assemble, hash_children, hash_leaf, inclusion_plan};

use crate::{Store, leaves};

#[derive(Clone)]
struct Rfc6962;

impl Hasher for Rfc6962 {
    type Hash = Hash;

    fn hash(data: &[u8]) -> Hash {
        hash_leaf(data)
    }

    fn concat_and_hash(left: &Hash, right: Option<&Hash>) -> Hash {
        match right {
            Some(right) => hash_children(left, right),
            None => *left,
        }
    }
}

#[test]
fn roots_agree_for_sizes_1_to_1000() {
    let all = leaves(1000);
    let store = Store::build(&all);
    for n in 1..=1000usize {
        let tree = MerkleTree::<Rfc6962>::from_leaves(&all[..n]);
        assert_eq!(tree.root(), Some(store.roots[n]), "size {n}");
    }
}

#[test]
fn single_leaf_proofs_agree_up_to_64() {
    let all = leaves(64);
    let store = Store::build(&all);
    for n in 1..=64usize {
        let tree = MerkleTree::<Rfc6962>::from_leaves(&all[..n]);
        let size = u64::try_from(n).unwrap();
        for i in 0..n {
            let theirs = tree.proof(&[i]).proof_hashes().to_vec();
            let index = u64::try_from(i).unwrap();
            let ours = assemble(&inclusion_plan(index, size).unwrap(), store.lookup()).unwrap();
            assert_eq!(theirs, ours, "leaf {i} of {n}");
            assert!(
                tree.proof(&[i])
                    .verify(store.roots[n], &[i], &all[i..=i], n)
            );
        }
    }
}

#[test]
fn rs_merkle_leaf_hasher_is_rfc6962() {
    assert_eq!(
        hex::encode(Rfc6962::hash(b"")),
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    );
}
