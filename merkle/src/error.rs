//! Error types, one enum per concern, grouped by what the caller should do about them.

use crate::tree::NodeId;

/// An [`Entry`](crate::Entry) could not be encoded: a caller bug, never the log's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string field is longer than its `u16` length prefix can describe.
    #[error("field `{field}` is {len} bytes long; at most 65535 can be encoded")]
    StringTooLong {
        /// Name of the field, as in the leaf format.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
}

/// Bytes that are not a canonical version-1 audit leaf.
///
/// Decoding is strict: whatever [`Entry::encode`](crate::Entry::encode) cannot produce is
/// rejected, so one entry has exactly one encoding and therefore one leaf hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("leaf truncated in field `{field}`")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The first byte names a version this crate does not know.
    #[error("unsupported leaf version {0:#04x}")]
    UnsupportedVersion(u8),
    /// A string field is not valid UTF-8.
    #[error("field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
    },
    /// A presence flag is neither `0x00` nor `0x01`.
    #[error("field `{field}` has flag {value:#04x}; only 0x00 and 0x01 are allowed")]
    InvalidFlag {
        /// The field being read.
        field: &'static str,
        /// The byte found.
        value: u8,
    },
    /// Bytes follow the last field.
    #[error("{count} trailing byte(s) after the last field")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// A request to the tree math that cannot be satisfied: a bad index or size from the caller,
/// or a node store that lacks a node it should hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// A leaf index at or past the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("no consistency proof from size {old_size} to the smaller size {new_size}")]
    SizeDecreased {
        /// The earlier size.
        old_size: u64,
        /// The later size.
        new_size: u64,
    },
    /// [`Frontier::from_nodes`](crate::Frontier::from_nodes) got the wrong number of hashes.
    #[error("a frontier of size {size} has {expected} node(s), got {got}")]
    FrontierNodeCount {
        /// The tree size.
        size: u64,
        /// `size.count_ones()`.
        expected: usize,
        /// The number of hashes passed.
        got: usize,
    },
    /// The lookup function of [`assemble`](crate::assemble) has no hash for a node the plan
    /// needs: the node store is incomplete or behind.
    #[error("node {0} is missing from the node store")]
    MissingNode(NodeId),
}

/// A proof that does not verify. Where the proof came from the log, the log is either
/// broken or lying: keep the evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// A leaf index at or past the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The index claimed.
        index: u64,
        /// The tree size claimed.
        size: u64,
    },
    /// The later tree is smaller than the earlier one.
    #[error("size {new_size} is smaller than the earlier size {old_size}")]
    SizeDecreased {
        /// The earlier size.
        old_size: u64,
        /// The later size.
        new_size: u64,
    },
    /// The proof has more hashes than the index and sizes allow.
    #[error("proof has too many hashes")]
    ProofTooLong,
    /// The proof has fewer hashes than the index and sizes need.
    #[error("proof has too few hashes")]
    ProofTooShort,
    /// A proof that must be empty (equal sizes, or an empty earlier tree) is not.
    #[error("proof must be empty for these sizes")]
    ProofNotEmpty,
    /// The hashes recomputed from the proof do not match the root(s) given.
    #[error("recomputed root does not match")]
    RootMismatch,
}

/// A signed note or checkpoint that is malformed, unsigned by the expected key, or whose
/// signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The text is not a well-formed signed note (c2sp.org/signed-note).
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// The note text is not a well-formed checkpoint body (c2sp.org/tlog-checkpoint).
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// A key name is empty or holds a space, a plus sign or a control character.
    #[error("invalid key name {0:?}")]
    InvalidKeyName(String),
    /// A verifier key string (`<name>+<hex id>+<base64 key>`) is malformed.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    /// No signature line carries the expected key name and key id.
    #[error("no signature by key {name}+{key_id}")]
    NoMatchingSignature {
        /// The key name looked for.
        name: String,
        /// Its key id, in hex.
        key_id: String,
    },
    /// A signature line of the expected key does not verify.
    #[error("invalid signature by key {name}+{key_id}")]
    InvalidSignature {
        /// The key name.
        name: String,
        /// Its key id, in hex.
        key_id: String,
    },
}
