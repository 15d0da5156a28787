//! Transparency-log building blocks for signetd's audit log (RFC 6962 / RFC 9162), usable by
//! the daemon and by offline auditors alike.
//!
//! No IO, no database, no clock: bytes, indices and sizes come in, hashes, plans, proofs and
//! notes come out.
//!
//! - [`hash_leaf`], [`hash_children`], [`EMPTY_ROOT`]: RFC 6962 §2.1 hashing.
//! - [`Entry`]: an audit entry and its canonical leaf encoding (below).
//! - [`Frontier`], [`frontier_ids`]: appending to a tree whose complete subtrees are stored
//!   by [`NodeId`]; [`inclusion_plan`], [`consistency_plan`], [`root_plan`],
//!   [`required_nodes`], [`assemble`]: which stored nodes a proof needs (O(log n) of them)
//!   and how to turn them into the proof.
//! - [`verify_inclusion`], [`verify_consistency`]: RFC 9162 §2.1.3.2 and §2.1.4.2.
//! - [`Checkpoint`], [`SignedNote`]: checkpoints in the C2SP signed-note format, Ed25519.
//! - [`reference`](mod@reference): RFC 6962's recursive definitions, the oracle of the tests.
//!
//! **Invariant:** nothing here signs; the audit key stays in the token. This crate says
//! which bytes to sign ([`signing_input`]) and checks signatures with the public key.
//!
//! # Audit leaf format, version 1
//!
//! The leaf data of the tree is the canonical encoding of an [`Entry`]; the leaf hash is
//! `SHA-256(0x00 ‖ leaf data)`. All integers are big-endian. `str` is a `u16` byte length
//! followed by that many bytes of UTF-8 (at most 65535 bytes; longer is an encoding error).
//!
//! ```text
//! offset  size     field              contents
//! 0       1        version            0x01
//! 1       8        seq                u64, 0-based sequence number = leaf index
//! 9       8        time_micros        i64, Unix time in microseconds, UTC (two's complement)
//! 17      2+n      actor_fingerprint  str: SHA-256 of the caller's certificate DER,
//!                                     lower-case hex; "" for the daemon itself
//! …       2+n      actor_account      str: "" when unknown
//! …       2+n      action             str: e.g. "sign", "cert.revoke", "whoami"
//! …       2+n      subject            str: e.g. "ring:payments", "cert:4f1a…"
//! …       32       params_digest      SHA-256 of the canonical request parameters
//! …       1        has_output         0x00 or 0x01
//! …       32       output_digest      only when has_output = 0x01: digest of what the
//!                                     operation produced (signature, certificate, batch root)
//! …       2+n      result             str: "ok" or "error:<kind>"
//! (end)                               nothing may follow
//! ```
//!
//! Decoding is strict (unknown version, short input, invalid UTF-8, a flag other than
//! 0x00/0x01, trailing bytes: all errors), so an entry has exactly one encoding.
//! `merkle/LEAF_FORMAT.md` repeats this with a worked example in hex, for writers of
//! independent verifiers; a unit test keeps its example equal to the encoder's output.

mod entry;
mod error;
mod hash;
mod note;
pub mod reference;
mod tree;
mod verify;

pub use crate::entry::{ENTRY_VERSION, Entry};
pub use crate::error::{DecodeError, EncodeError, NoteError, ProofError, TreeError};
pub use crate::hash::{EMPTY_ROOT, Hash, hash_children, hash_leaf};
pub use crate::note::{
    Checkpoint, MAX_NOTE_SIGNATURES, NoteSignature, SignedNote, key_id, parse_vkey, signing_input,
    vkey,
};
pub use crate::tree::{
    Frontier, NodeId, ProofStep, assemble, assemble_root, consistency_plan, frontier_ids,
    inclusion_plan, required_nodes, root_plan,
};
pub use crate::verify::{root_from_inclusion, verify_consistency, verify_inclusion};

/// The `ed25519-dalek` this crate's note API is written against.
pub use ed25519_dalek;
