//! Integration tests of `signet-merkle`, in one binary to keep linking cheap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod frontier;
mod note;
mod proofs;
mod rs_merkle_agreement;
mod vectors;

use std::collections::HashMap;

use signet_merkle::{Frontier, Hash, NodeId, hash_leaf};

/// Distinct leaf hashes: `hash_leaf(i as 8 big-endian bytes)`.
pub fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| hash_leaf(&i.to_be_bytes())).collect()
}

/// A node store as the daemon keeps it: every node `Frontier::append` reported, plus the
/// root after each append (`roots[s]` = root of size `s`).
#[derive(Debug)]
pub struct Store {
    pub nodes: HashMap<NodeId, Hash>,
    pub roots: Vec<Hash>,
    pub frontier: Frontier,
}

impl Store {
    pub fn build(leaves: &[Hash]) -> Store {
        let mut frontier = Frontier::empty();
        let mut nodes = HashMap::new();
        let mut roots = vec![frontier.root()];
        for leaf in leaves {
            for (id, h) in frontier.append(*leaf) {
                assert!(nodes.insert(id, h).is_none(), "node {id} stored twice");
            }
            roots.push(frontier.root());
        }
        Store {
            nodes,
            roots,
            frontier,
        }
    }

    pub fn lookup(&self) -> impl FnMut(NodeId) -> Option<Hash> + '_ {
        |id| self.nodes.get(&id).copied()
    }
}

pub fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}
