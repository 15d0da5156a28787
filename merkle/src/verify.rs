//! Proof verification as specified in RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
//! (consistency). Needs nothing but the proof: this is what an offline auditor runs.

use crate::error::ProofError;
use crate::hash::{EMPTY_ROOT, Hash, hash_children};

/// The root that an inclusion proof leads to (RFC 9162 §2.1.3.2 without the final
/// comparison).
///
/// # Errors
///
/// [`ProofError::IndexOutOfRange`], or [`ProofError::ProofTooLong`] /
/// [`ProofError::ProofTooShort`] when the proof's length does not fit `index` and `size`.
pub fn root_from_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::ProofTooLong);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = hash_children(p, &r);
            if f_n & 1 == 0 {
                // A right edge without right siblings: skip the levels where the node is
                // promoted unchanged.
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = hash_children(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::ProofTooShort);
    }
    Ok(r)
}

/// Checks that `proof` shows the leaf `leaf_hash` at `index` in the tree of `size` leaves
/// whose root is `root` (RFC 9162 §2.1.3.2).
///
/// # Errors
///
/// As [`root_from_inclusion`], and [`ProofError::RootMismatch`].
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion(leaf_hash, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of
/// `old_size` leaves with root `old_root` (RFC 9162 §2.1.4.2).
///
/// RFC 9162 defines proofs for `0 < old_size < new_size`. The other cases are settled here
/// as follows: equal sizes need an empty proof and equal roots; an empty old tree needs an
/// empty proof and `old_root` = [`EMPTY_ROOT`] (every tree extends the empty one).
///
/// # Errors
///
/// [`ProofError::SizeDecreased`], [`ProofError::ProofNotEmpty`],
/// [`ProofError::ProofTooLong`], [`ProofError::ProofTooShort`] or
/// [`ProofError::RootMismatch`].
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeDecreased { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::ProofNotEmpty);
        }
        let matches = if old_size == 0 {
            *old_root == EMPTY_ROOT
        } else {
            old_root == new_root
        };
        return if matches {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }

    // 1. An empty proof fails.
    let Some((first, rest)) = proof.split_first() else {
        return Err(ProofError::ProofTooShort);
    };
    // 2. If old_size is a power of two, the old root is the implicit first element.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (first, rest)
    };
    // 3.-4.
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // 5.
    let mut f_r = *seed;
    let mut s_r = *seed;
    // 6.
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::ProofTooLong);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = hash_children(c, &f_r);
            s_r = hash_children(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = hash_children(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // 7.
    if s_n != 0 {
        return Err(ProofError::ProofTooShort);
    }
    if f_r == *old_root && s_r == *new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}
