//! Known-answer tests: the RFC 6962 test vectors of Google's certificate-transparency-go and
//! transparency-dev/merkle (`proof/verify_test.go`).

use signet_merkle::{
    EMPTY_ROOT, Hash, ProofError, assemble, consistency_plan, hash_leaf, inclusion_plan, reference,
    root_from_inclusion, verify_consistency, verify_inclusion,
};

use crate::{Store, h};

const LEAF_DATA: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Roots of the trees of sizes 1..=8 over `LEAF_DATA`.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, proof). The Go file numbers leaves from 1; these are 0-based.
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

/// (index or old size, size or new size, leaf hash or old root, root or new root, proof,
/// what was corrupted).
type Probe = (u64, u64, Hash, Hash, Vec<Hash>, &'static str);

fn leaf_hashes() -> Vec<Hash> {
    LEAF_DATA
        .iter()
        .map(|d| hash_leaf(&hex::decode(d).unwrap()))
        .collect()
}

fn root(size: u64) -> Hash {
    h(ROOTS[usize::try_from(size).unwrap() - 1])
}

fn hashes(p: &[&str]) -> Vec<Hash> {
    p.iter().map(|s| h(s)).collect()
}

#[test]
fn empty_root() {
    assert_eq!(
        EMPTY_ROOT,
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(reference::root(&[]), EMPTY_ROOT);
}

#[test]
fn roots_of_sizes_1_to_8() {
    let leaves = leaf_hashes();
    let store = Store::build(&leaves);
    assert_eq!(store.roots[0], EMPTY_ROOT);
    for size in 1..=8u64 {
        let n = usize::try_from(size).unwrap();
        assert_eq!(store.roots[n], root(size), "frontier root of size {size}");
        assert_eq!(
            reference::root(&leaves[..n]),
            root(size),
            "reference root {size}"
        );
        let from_store = signet_merkle::assemble_root(size, store.lookup()).unwrap();
        assert_eq!(from_store, root(size), "assembled root of size {size}");
    }
}

#[test]
fn inclusion_vectors() {
    let leaves = leaf_hashes();
    let store = Store::build(&leaves);
    for (index, size, proof) in INCLUSION {
        let want = hashes(proof);
        let i = usize::try_from(index).unwrap();
        let n = usize::try_from(size).unwrap();
        let plan = inclusion_plan(index, size).unwrap();
        assert_eq!(
            assemble(&plan, store.lookup()).unwrap(),
            want,
            "{index}/{size}"
        );
        assert_eq!(reference::inclusion_proof(i, &leaves[..n]), want);
        verify_inclusion(&leaves[i], index, size, &want, &root(size)).unwrap();
        assert_eq!(
            root_from_inclusion(&leaves[i], index, size, &want).unwrap(),
            root(size)
        );
        corrupted_inclusion_fails(&leaves[i], index, size, &want, &root(size));
    }
}

/// The probes of transparency-dev's `corruptInclusionProof`.
fn corrupted_inclusion_fails(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) {
    let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    let mut probes: Vec<Probe> = vec![
        (
            index.wrapping_sub(1),
            size,
            *leaf,
            *root,
            proof.to_vec(),
            "index - 1",
        ),
        (index + 1, size, *leaf, *root, proof.to_vec(), "index + 1"),
        (index ^ 2, size, *leaf, *root, proof.to_vec(), "index ^ 2"),
        (index, size * 2, *leaf, *root, proof.to_vec(), "size * 2"),
        (index, size / 2, *leaf, *root, proof.to_vec(), "size / 2"),
        (index, size, some, *root, proof.to_vec(), "wrong leaf"),
        (index, size, *leaf, EMPTY_ROOT, proof.to_vec(), "empty root"),
        (index, size, *leaf, some, proof.to_vec(), "random root"),
        (
            index,
            size,
            *leaf,
            *root,
            [proof, &[*root]].concat(),
            "trailing root",
        ),
        (
            index,
            size,
            *leaf,
            *root,
            [&[*root], proof].concat(),
            "preceding root",
        ),
    ];
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i][0] ^= 8;
        probes.push((index, size, *leaf, *root, p, "modified proof"));
    }
    if !proof.is_empty() {
        let p = proof[..proof.len() - 1].to_vec();
        probes.push((index, size, *leaf, *root, p, "removed component"));
    }
    if proof.len() > 1 {
        let p = [&proof[..1], &[some], &proof[1..]].concat();
        probes.push((index, size, *leaf, *root, p, "inserted component"));
    }
    for (i, s, l, r, p, what) in probes {
        assert!(
            verify_inclusion(&l, i, s, &p, &r).is_err(),
            "{what}: accepted for {index}/{size}"
        );
    }
}

#[test]
fn consistency_vectors() {
    let leaves = leaf_hashes();
    let store = Store::build(&leaves);
    for (old, new, proof) in CONSISTENCY {
        let want = hashes(proof);
        let m = usize::try_from(old).unwrap();
        let n = usize::try_from(new).unwrap();
        let plan = consistency_plan(old, new).unwrap();
        assert_eq!(
            assemble(&plan, store.lookup()).unwrap(),
            want,
            "{old}->{new}"
        );
        assert_eq!(reference::consistency_proof(m, &leaves[..n]), want);
        verify_consistency(old, new, &root(old), &root(new), &want).unwrap();
        if !want.is_empty() {
            corrupted_consistency_fails(old, new, &root(old), &root(new), &want);
        }
    }
}

/// The probes of transparency-dev's `corruptConsistencyProof`.
fn corrupted_consistency_fails(old: u64, new: u64, r1: &Hash, r2: &Hash, proof: &[Hash]) {
    let wrong = hash_leaf(b"WrongRoot");
    let p = proof.to_vec();
    let mut probes: Vec<Probe> = vec![
        (old - 1, new, *r1, *r2, p.clone(), "old - 1"),
        (old + 1, new, *r1, *r2, p.clone(), "old + 1"),
        (old ^ 2, new, *r1, *r2, p.clone(), "old ^ 2"),
        (old, new * 2, *r1, *r2, p.clone(), "new * 2"),
        (old, new / 2, *r1, *r2, p.clone(), "new / 2"),
        (old, new, wrong, *r2, p.clone(), "wrong root1"),
        (old, new, *r1, wrong, p.clone(), "wrong root2"),
        (old, new, *r2, *r1, p.clone(), "swapped roots"),
        (old, new, *r1, *r2, vec![], "empty proof"),
        (
            old,
            new,
            *r1,
            *r2,
            [proof, &[*r1]].concat(),
            "trailing root1",
        ),
        (
            old,
            new,
            *r1,
            *r2,
            [proof, &[*r2]].concat(),
            "trailing root2",
        ),
        (
            old,
            new,
            *r1,
            *r2,
            [&[*r1], proof].concat(),
            "preceding root1",
        ),
        (
            old,
            new,
            *r1,
            *r2,
            [&[*r2], proof].concat(),
            "preceding root2",
        ),
        (
            old,
            new,
            *r1,
            *r2,
            [&proof[..1], proof].concat(),
            "preceding proof[0]",
        ),
        (
            old,
            new,
            *r1,
            *r2,
            p[..p.len() - 1].to_vec(),
            "truncated proof",
        ),
    ];
    for i in 0..proof.len() {
        let mut q = p.clone();
        q[i][0] ^= 16;
        probes.push((old, new, *r1, *r2, q, "modified proof"));
    }
    for (o, n, a, b, q, what) in probes {
        assert!(
            verify_consistency(o, n, &a, &b, &q).is_err(),
            "{what}: accepted for {old}->{new}"
        );
    }
}

#[test]
fn consistency_edge_cases() {
    let r = root(3);
    // Empty old tree: empty proof, old root must be the empty root.
    verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]).unwrap();
    verify_consistency(0, 3, &EMPTY_ROOT, &r, &[]).unwrap();
    assert_eq!(
        verify_consistency(0, 3, &r, &r, &[]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(0, 3, &EMPTY_ROOT, &r, &[r]),
        Err(ProofError::ProofNotEmpty)
    );
    // Equal sizes: empty proof, equal roots.
    verify_consistency(3, 3, &r, &r, &[]).unwrap();
    assert_eq!(
        verify_consistency(3, 3, &r, &root(4), &[]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(3, 3, &r, &r, &[r]),
        Err(ProofError::ProofNotEmpty)
    );
    // Time travel.
    assert_eq!(
        verify_consistency(4, 3, &root(4), &r, &[]),
        Err(ProofError::SizeDecreased {
            old_size: 4,
            new_size: 3
        })
    );
    assert_eq!(
        verify_consistency(1, 2, &root(1), &root(2), &[]),
        Err(ProofError::ProofTooShort)
    );
}

#[test]
fn inclusion_edge_cases() {
    let leaf = hash_leaf(b"data");
    // One leaf: the root is the leaf hash and the proof is empty.
    verify_inclusion(&leaf, 0, 1, &[], &leaf).unwrap();
    assert_eq!(
        verify_inclusion(&leaf, 0, 1, &[leaf], &leaf),
        Err(ProofError::ProofTooLong)
    );
    for (index, size) in [(0, 0), (1, 0), (2, 1), (1, 1)] {
        assert_eq!(
            verify_inclusion(&leaf, index, size, &[], &leaf),
            Err(ProofError::IndexOutOfRange { index, size })
        );
    }
    assert_eq!(
        verify_inclusion(&leaf, 0, 2, &[], &leaf),
        Err(ProofError::ProofTooShort)
    );
}
