//! RFC 6962 §2.1 transcribed literally: `MTH`, `PATH` and `PROOF` by recursion over all
//! leaf hashes. O(n) per call; an oracle for tests, not for production.

use crate::hash::{EMPTY_ROOT, Hash, hash_children};

/// The largest power of two smaller than `n` (`n > 1`).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// `MTH(D[n])` over leaf hashes (the leaves already hashed with `0x00`).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [leaf] => *leaf,
        _ => {
            let k = split(leaves.len());
            hash_children(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// `PATH(m, D[n])`: the inclusion proof of leaf `m`, bottom up. Empty when `m` is out of
/// range (RFC 6962 leaves that undefined).
pub fn inclusion_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if leaves.len() <= 1 || m >= leaves.len() {
        return Vec::new();
    }
    let k = split(leaves.len());
    if m < k {
        let mut p = inclusion_proof(m, &leaves[..k]);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = inclusion_proof(m - k, &leaves[k..]);
        p.push(root(&leaves[..k]));
        p
    }
}

/// `PROOF(m, D[n])`: the consistency proof from the first `m` leaves to all of them. Empty
/// when `m` is 0 or `m >= n`.
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if m == 0 || m >= leaves.len() {
        return Vec::new();
    }
    subproof(m, leaves, true)
}

fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if b { Vec::new() } else { vec![root(leaves)] };
    }
    let k = split(n);
    if m <= k {
        let mut p = subproof(m, &leaves[..k], b);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = subproof(m - k, &leaves[k..], false);
        p.push(root(&leaves[..k]));
        p
    }
}
