//! Tree math for a persistent log that stores the hashes of complete subtrees.
//!
//! The storage keeps one hash per [`NodeId`] that has become complete. Everything here is
//! arithmetic on indices and sizes: it says which nodes to store ([`Frontier::append`]),
//! which to read to resume ([`frontier_ids`]) and which to read for a proof
//! ([`inclusion_plan`], [`consistency_plan`], [`root_plan`]), and turns the hashes read into
//! proofs ([`assemble`]). Every plan reads O(log n) nodes.
//!
//! **Invariant:** a stored node is complete and therefore immutable: appending never changes
//! the hash of an existing [`NodeId`], so stored nodes are written once and never updated.

use std::fmt;

use crate::error::TreeError;
use crate::hash::{EMPTY_ROOT, Hash, hash_children};

/// A complete subtree: the one covering leaves `[index·2^level, (index+1)·2^level)`.
///
/// Level 0 holds the leaf hashes (`index` = leaf index). A node exists in a tree of size `n`
/// once `(index+1)·2^level ≤ n`; from then on its hash never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves; the subtree has `2^level` leaves.
    pub level: u8,
    /// Position among the nodes of that level, from the left.
    pub index: u64,
}

impl NodeId {
    /// The node of leaf `index` (level 0).
    pub const fn leaf(index: u64) -> NodeId {
        NodeId { level: 0, index }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.level, self.index)
    }
}

/// The complete nodes of the range `[begin, end)`, left to right, when `begin` is a multiple
/// of a power of two larger than `end - begin` (true of every range the plans ask for). Their
/// right fold is RFC 6962's `MTH(D[begin:end])`.
///
/// Computed in `u128` so that sizes up to `u64::MAX` cannot overflow.
fn range_nodes(begin: u128, end: u128) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    let mut pos = begin;
    let len = end - begin;
    for level in (0..=64u32).rev() {
        if len & (1u128 << level) != 0 {
            nodes.push(node_at(level, pos >> level));
            pos += 1u128 << level;
        }
    }
    nodes
}

/// Builds a [`NodeId`] from values the callers have kept within range: `level ≤ 63` and
/// `index < 2^64` for every node of a tree of at most `u64::MAX` leaves.
fn node_at(level: u32, index: u128) -> NodeId {
    NodeId {
        level: u8::try_from(level).unwrap_or(u8::MAX),
        index: u64::try_from(index).unwrap_or(u64::MAX),
    }
}

/// Which stored nodes make up the frontier of a tree of `size` leaves: the complete subtrees
/// along its right edge, left to right (largest first), one per set bit of `size`.
///
/// Load their hashes and pass them to [`Frontier::from_nodes`] to resume appending.
pub fn frontier_ids(size: u64) -> Vec<NodeId> {
    range_nodes(0, u128::from(size))
}

/// The compact range of a tree: the hashes of the complete subtrees along its right edge.
///
/// That is all an appender needs: the next leaf, the nodes it completes and the root follow
/// from it, in O(log n) hashing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    /// Left to right, strictly decreasing levels, ids as [`frontier_ids`] gives them.
    nodes: Vec<(NodeId, Hash)>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn empty() -> Frontier {
        Frontier::default()
    }

    /// Resumes at `size` from the stored hashes of [`frontier_ids`]`(size)`, in that order.
    ///
    /// # Errors
    ///
    /// [`TreeError::FrontierNodeCount`] when the number of hashes is not `size.count_ones()`.
    pub fn from_nodes(size: u64, hashes: Vec<Hash>) -> Result<Frontier, TreeError> {
        let ids = frontier_ids(size);
        if ids.len() != hashes.len() {
            return Err(TreeError::FrontierNodeCount {
                size,
                expected: ids.len(),
                got: hashes.len(),
            });
        }
        Ok(Frontier {
            size,
            nodes: ids.into_iter().zip(hashes).collect(),
        })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier's nodes and hashes, left to right.
    pub fn nodes(&self) -> &[(NodeId, Hash)] {
        &self.nodes
    }

    /// Appends a leaf hash and returns every node that became complete: the leaf itself
    /// (level 0) first, then each parent it completed, bottom up. Store them all.
    ///
    /// # Panics
    ///
    /// When the tree already holds `u64::MAX` leaves. A log cannot get there: at a billion
    /// appends a second it would take 584 years.
    pub fn append(&mut self, leaf_hash: Hash) -> Vec<(NodeId, Hash)> {
        assert!(self.size < u64::MAX, "Merkle tree is full");
        let mut id = NodeId::leaf(self.size);
        let mut hash = leaf_hash;
        let mut completed = vec![(id, hash)];
        // Levels decrease left to right, so only the last node can pair with the carry.
        while let Some(&(left_id, left_hash)) = self.nodes.last() {
            if left_id.level != id.level {
                break;
            }
            self.nodes.pop();
            hash = hash_children(&left_hash, &hash);
            id = NodeId {
                level: id.level + 1,
                index: id.index >> 1,
            };
            completed.push((id, hash));
        }
        self.nodes.push((id, hash));
        self.size += 1;
        completed
    }

    /// The RFC 6962 root of the current tree ([`EMPTY_ROOT`] for size 0).
    pub fn root(&self) -> Hash {
        fold(self.nodes.iter().map(|(_, h)| *h)).unwrap_or(EMPTY_ROOT)
    }
}

/// Right fold with [`hash_children`]: `H(a, H(b, H(c, d)))` for `[a, b, c, d]`. `None` when
/// empty.
fn fold(hashes: impl DoubleEndedIterator<Item = Hash>) -> Option<Hash> {
    let mut rev = hashes.rev();
    let last = rev.next()?;
    Some(rev.fold(last, |acc, left| hash_children(&left, &acc)))
}

/// One hash of a proof, as the nodes to read for it.
///
/// Usually a single complete node. Where the proof needs the hash of an incomplete subtree
/// (the right part of a tree whose size is not a power of two), it is the complete nodes of
/// that subtree, left to right; their hashes folded right to left with
/// [`hash_children`] give its RFC 6962 hash. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProofStep {
    nodes: Vec<NodeId>,
}

impl ProofStep {
    /// The nodes to read, left to right. Never empty.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The proof hash: the right fold of the nodes' hashes.
    ///
    /// # Errors
    ///
    /// [`TreeError::MissingNode`] when `lookup` has no hash for a node.
    pub fn hash(&self, mut lookup: impl FnMut(NodeId) -> Option<Hash>) -> Result<Hash, TreeError> {
        let hashes = self
            .nodes
            .iter()
            .map(|&id| lookup(id).ok_or(TreeError::MissingNode(id)))
            .collect::<Result<Vec<_>, _>>()?;
        // `nodes` is never empty (both constructors ensure it), so `fold` returns `Some` and
        // the fallback is never used.
        Ok(fold(hashes.into_iter()).unwrap_or(EMPTY_ROOT))
    }
}

/// Turns one proof hash per range into steps, skipping nothing: all ranges are non-empty.
fn step(begin: u128, end: u128) -> Option<ProofStep> {
    let nodes = range_nodes(begin, end);
    (!nodes.is_empty()).then_some(ProofStep { nodes })
}

/// The audit path of the node `(level, index)` up to the root of a tree of `size` leaves:
/// the sibling at each level where one exists, bottom up. Levels where the node has no
/// sibling (it is the last, unpaired, at that level) contribute nothing, as in RFC 6962.
fn path_from(start_level: u32, node_index: u128, size: u128) -> Vec<ProofStep> {
    let mut steps = Vec::new();
    for level in start_level..=64 {
        let width = 1u128 << level;
        let node = node_index >> (level - start_level);
        if node == 0 && width >= size {
            break; // `node` is the root
        }
        let sibling_begin = (node ^ 1) * width;
        if sibling_begin >= size {
            continue; // no right sibling at this level
        }
        let sibling_end = (sibling_begin + width).min(size);
        steps.extend(step(sibling_begin, sibling_end));
    }
    steps
}

/// Which nodes make up the inclusion proof (RFC 6962 `PATH(index, D[size])`, bottom up) of
/// leaf `index` in the tree of `size` leaves.
///
/// # Errors
///
/// [`TreeError::IndexOutOfRange`] when `index >= size`.
pub fn inclusion_plan(index: u64, size: u64) -> Result<Vec<ProofStep>, TreeError> {
    if index >= size {
        return Err(TreeError::IndexOutOfRange { index, size });
    }
    Ok(path_from(0, u128::from(index), u128::from(size)))
}

/// Which nodes make up the consistency proof (RFC 6962 `PROOF(old_size, D[new_size])`)
/// from the tree of `old_size` leaves to the tree of `new_size` leaves.
///
/// Empty when `old_size` is 0 or equals `new_size`.
///
/// # Errors
///
/// [`TreeError::SizeDecreased`] when `old_size > new_size`.
pub fn consistency_plan(old_size: u64, new_size: u64) -> Result<Vec<ProofStep>, TreeError> {
    if old_size > new_size {
        return Err(TreeError::SizeDecreased { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // The last (smallest) complete subtree of the old tree, [old - 2^k, old) with
    // k = trailing zeros of old. The proof is that node (unless it is the whole old tree,
    // which the verifier already has as the old root) followed by its path in the new tree.
    let level = old_size.trailing_zeros();
    let index = u128::from((old_size - 1) >> level);
    let mut steps = Vec::new();
    if index != 0 {
        steps.push(ProofStep {
            nodes: vec![node_at(level, index)],
        });
    }
    steps.extend(path_from(level, index, u128::from(new_size)));
    Ok(steps)
}

/// Which nodes give the root of the tree of `size` leaves: its frontier, as one step.
/// Empty for size 0 (the root is then [`EMPTY_ROOT`]); see [`assemble_root`].
pub fn root_plan(size: u64) -> Vec<ProofStep> {
    step(0, u128::from(size)).into_iter().collect()
}

/// Every node a plan reads, deduplicated, in order of first use: fetch them in one query.
pub fn required_nodes(plan: &[ProofStep]) -> Vec<NodeId> {
    let mut seen = std::collections::HashSet::new();
    plan.iter()
        .flat_map(|s| s.nodes.iter().copied())
        .filter(|id| seen.insert(*id))
        .collect()
}

/// Turns a plan and the stored hashes into proof hashes, one per step.
///
/// # Errors
///
/// [`TreeError::MissingNode`] when `lookup` has no hash for a node of the plan.
pub fn assemble(
    plan: &[ProofStep],
    mut lookup: impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, TreeError> {
    plan.iter().map(|s| s.hash(&mut lookup)).collect()
}

/// The root of the tree of `size` leaves from the stored hashes of [`root_plan`]`(size)`.
///
/// # Errors
///
/// [`TreeError::MissingNode`] when `lookup` has no hash for a frontier node.
pub fn assemble_root(
    size: u64,
    lookup: impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Hash, TreeError> {
    Ok(assemble(&root_plan(size), lookup)?
        .first()
        .copied()
        .unwrap_or(EMPTY_ROOT))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(level: u8, index: u64) -> NodeId {
        NodeId { level, index }
    }

    #[test]
    fn frontier_ids_follow_the_bits_of_size() {
        assert!(frontier_ids(0).is_empty());
        assert_eq!(frontier_ids(1), vec![id(0, 0)]);
        assert_eq!(frontier_ids(6), vec![id(2, 0), id(1, 2)]);
        assert_eq!(frontier_ids(7), vec![id(2, 0), id(1, 2), id(0, 6)]);
        assert_eq!(frontier_ids(8), vec![id(3, 0)]);
        let all = frontier_ids(u64::MAX);
        assert_eq!(all.len(), 64);
        assert_eq!(all[0], id(63, 0));
        assert_eq!(all[63], id(0, u64::MAX - 1));
    }

    #[test]
    fn plans_for_the_rfc_examples() {
        // Inclusion of leaf 5 in a tree of 7 (RFC 6962 §2.1.3 example: e, j, k): leaf 4, then [6,7), then
        // [0,4).
        let plan = inclusion_plan(5, 7).unwrap();
        let ids: Vec<_> = plan.iter().map(|s| s.nodes().to_vec()).collect();
        assert_eq!(ids, vec![vec![id(0, 4)], vec![id(0, 6)], vec![id(2, 0)]]);
        // Inclusion of leaf 0 in 7: leaf 1, [2,4), then the incomplete [4,7) = [4,6) + 6.
        let ids: Vec<_> = inclusion_plan(0, 7)
            .unwrap()
            .iter()
            .map(|s| s.nodes().to_vec())
            .collect();
        assert_eq!(
            ids,
            vec![vec![id(0, 1)], vec![id(1, 1)], vec![id(1, 2), id(0, 6)]]
        );
        // Consistency 3 -> 7 (RFC 6962 §2.1.3 example): c, d, g, l = leaf 2, leaf 3, [0,2), [4,7).
        let ids: Vec<_> = consistency_plan(3, 7)
            .unwrap()
            .iter()
            .map(|s| s.nodes().to_vec())
            .collect();
        assert_eq!(
            ids,
            vec![
                vec![id(0, 2)],
                vec![id(0, 3)],
                vec![id(1, 0)],
                vec![id(1, 2), id(0, 6)]
            ]
        );
        // Consistency 6 -> 7: i, j, k = [4,6), leaf 6, [0,4).
        let ids: Vec<_> = consistency_plan(6, 7)
            .unwrap()
            .iter()
            .map(|s| s.nodes().to_vec())
            .collect();
        assert_eq!(ids, vec![vec![id(1, 2)], vec![id(0, 6)], vec![id(2, 0)]]);
        // Consistency 4 -> 7: just [4,7).
        let ids: Vec<_> = consistency_plan(4, 7)
            .unwrap()
            .iter()
            .map(|s| s.nodes().to_vec())
            .collect();
        assert_eq!(ids, vec![vec![id(1, 2), id(0, 6)]]);
    }

    #[test]
    fn plan_errors() {
        assert_eq!(
            inclusion_plan(0, 0),
            Err(TreeError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            inclusion_plan(7, 7),
            Err(TreeError::IndexOutOfRange { index: 7, size: 7 })
        );
        assert_eq!(
            consistency_plan(8, 7),
            Err(TreeError::SizeDecreased {
                old_size: 8,
                new_size: 7
            })
        );
        assert!(consistency_plan(0, 7).unwrap().is_empty());
        assert!(consistency_plan(7, 7).unwrap().is_empty());
        assert!(inclusion_plan(0, 1).unwrap().is_empty());
        assert!(root_plan(0).is_empty());
    }

    #[test]
    fn extreme_sizes_do_not_overflow() {
        let n = u64::MAX;
        assert_eq!(inclusion_plan(n - 1, n).unwrap().len(), 63);
        assert_eq!(inclusion_plan(0, n).unwrap().len(), 64);
        assert!(!consistency_plan(n - 1, n).unwrap().is_empty());
        assert!(!consistency_plan(1, n).unwrap().is_empty());
        assert_eq!(root_plan(n)[0].nodes().len(), 64);
    }

    #[test]
    fn missing_node_is_reported() {
        let plan = inclusion_plan(0, 2).unwrap();
        assert_eq!(
            assemble(&plan, |_| None),
            Err(TreeError::MissingNode(id(0, 1)))
        );
    }

    #[test]
    fn from_nodes_checks_the_count() {
        assert_eq!(
            Frontier::from_nodes(3, vec![[0; 32]]),
            Err(TreeError::FrontierNodeCount {
                size: 3,
                expected: 2,
                got: 1
            })
        );
        assert_eq!(Frontier::from_nodes(0, vec![]).unwrap(), Frontier::empty());
    }
}
