//! The frontier: resuming from stored nodes, the nodes it reports, and the O(log n) cost of
//! plans at any size.

use signet_merkle::{
    Frontier, NodeId, ProofStep, TreeError, consistency_plan, frontier_ids, inclusion_plan,
    reference, required_nodes, root_plan,
};

use crate::{Store, leaves};

fn us(n: u64) -> usize {
    usize::try_from(n).unwrap()
}

#[test]
fn resuming_from_stored_nodes_continues_the_same_tree() {
    let all = leaves(300);
    let full = Store::build(&all);
    for n in 0..=200u64 {
        let store = Store::build(&all[..us(n)]);
        let hashes = frontier_ids(n)
            .into_iter()
            .map(|id| store.nodes[&id])
            .collect();
        let mut resumed = Frontier::from_nodes(n, hashes).unwrap();
        assert_eq!(resumed, store.frontier, "size {n}");
        assert_eq!(resumed.root(), full.roots[us(n)]);
        let mut original = store.frontier.clone();
        for (i, leaf) in all[us(n)..us(n) + 40].iter().enumerate() {
            let a = resumed.append(*leaf);
            let b = original.append(*leaf);
            assert_eq!(a, b);
            assert_eq!(resumed.root(), original.root());
            assert_eq!(resumed.root(), full.roots[us(n) + i + 1]);
            assert_eq!(resumed.size(), n + u64::try_from(i).unwrap() + 1);
        }
    }
}

#[test]
fn append_reports_each_complete_node_once_with_its_subtree_hash() {
    let n = 300u64;
    let all = leaves(n);
    let store = Store::build(&all); // asserts that no node is reported twice
    // A tree of n leaves has 2n - popcount(n) complete subtrees.
    assert_eq!(store.nodes.len(), us(2 * n - u64::from(n.count_ones())));
    for (id, hash) in &store.nodes {
        let begin = us(id.index << id.level);
        let end = us((id.index + 1) << id.level);
        assert!(end <= us(n));
        assert_eq!(*hash, reference::root(&all[begin..end]), "node {id}");
    }
}

#[test]
fn append_returns_leaf_then_parents() {
    let mut f = Frontier::empty();
    let l = leaves(4);
    let ids = |v: Vec<(NodeId, _)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(ids(f.append(l[0])), vec![NodeId::leaf(0)]);
    assert_eq!(
        ids(f.append(l[1])),
        vec![NodeId::leaf(1), NodeId { level: 1, index: 0 }]
    );
    assert_eq!(ids(f.append(l[2])), vec![NodeId::leaf(2)]);
    assert_eq!(
        ids(f.append(l[3])),
        vec![
            NodeId::leaf(3),
            NodeId { level: 1, index: 1 },
            NodeId { level: 2, index: 0 }
        ]
    );
    assert_eq!(f.nodes().len(), 1);
}

#[test]
fn from_nodes_rejects_a_wrong_count() {
    assert!(matches!(
        Frontier::from_nodes(5, vec![[0; 32]; 3]),
        Err(TreeError::FrontierNodeCount {
            size: 5,
            expected: 2,
            got: 3
        })
    ));
}

fn ceil_log2(n: u64) -> usize {
    usize::try_from(u64::BITS - (n - 1).leading_zeros()).unwrap()
}

fn reads(plan: &[ProofStep]) -> usize {
    required_nodes(plan).len()
}

/// xorshift64*: a fixed pseudo-random sequence, so the test is reproducible.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Plans read at most 2·⌈log2 n⌉ + 2 nodes, at sizes up to a million and beyond. Plans are
/// arithmetic, so no tree is built.
#[test]
fn plans_read_logarithmically_many_nodes() {
    let mut rng = Rng(0x5eed);
    let mut sizes: Vec<u64> = (1..=2048).collect();
    for k in 11..=20 {
        sizes.extend([(1 << k) - 1, 1 << k, (1 << k) + 1]);
    }
    sizes.extend([999_999, 1_000_000, u64::MAX / 3, u64::MAX]);
    sizes.extend((0..2000).map(|_| 1 + rng.below(1_000_000)));

    let mut worst_inclusion = 0f64;
    let mut worst_consistency = 0f64;
    for &n in &sizes {
        let bound = 2 * ceil_log2(n) + 2;
        let mut indices = vec![0, n - 1, n / 2, n.saturating_sub(2)];
        indices.extend((0..8).map(|_| rng.below(n)));
        for &i in &indices {
            let r = reads(&inclusion_plan(i, n).unwrap());
            assert!(r <= bound, "inclusion {i}/{n}: {r} reads > {bound}");
            worst_inclusion = worst_inclusion.max(r as f64 / bound as f64);
            let r = reads(&consistency_plan(i, n).unwrap());
            assert!(r <= bound, "consistency {i}->{n}: {r} reads > {bound}");
            worst_consistency = worst_consistency.max(r as f64 / bound as f64);
        }
        let r = reads(&root_plan(n));
        assert_eq!(r, us(u64::from(n.count_ones())));
        assert!(r <= bound);
    }
    eprintln!(
        "worst reads/bound: inclusion {worst_inclusion:.2}, consistency {worst_consistency:.2}"
    );
}
