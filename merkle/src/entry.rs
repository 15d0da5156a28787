//! The audit entry and its canonical version-1 leaf encoding (see `LEAF_FORMAT.md`).

use crate::error::{DecodeError, EncodeError};
use crate::hash::{Hash, hash_leaf};

/// The only leaf format version this crate writes and reads.
pub const ENTRY_VERSION: u8 = 0x01;

/// One audit-log entry: what was done, by whom, on what, with which outcome.
///
/// The canonical bytes ([`Entry::encode`]) are the leaf data of the Merkle tree; the leaf
/// hash is `SHA-256(0x00 ‖ bytes)`. The layout is given byte by byte in the crate docs and in
/// `merkle/LEAF_FORMAT.md`.
///
/// The codec checks structure only (lengths, UTF-8, flags). The conventions on the contents
/// (lower-case hex fingerprints, `ok` / `error:<kind>` results) are the writer's to keep.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// 0-based sequence number; equals the leaf index in the tree.
    pub seq: u64,
    /// Unix time in microseconds, UTC.
    pub time_micros: i64,
    /// SHA-256 of the caller's certificate DER in lower-case hex; `""` for the daemon itself.
    pub actor_fingerprint: String,
    /// The caller's account; `""` when unknown.
    pub actor_account: String,
    /// What was done, e.g. `sign`, `cert.revoke`, `whoami`.
    pub action: String,
    /// What it was done to, e.g. `ring:payments`, `cert:4f1a…`.
    pub subject: String,
    /// SHA-256 of the canonical request parameters (never the parameters themselves).
    pub params_digest: Hash,
    /// Digest of what the operation produced (a signature, a certificate, a batch root), if
    /// anything.
    pub output_digest: Option<Hash>,
    /// `ok` or `error:<kind>`.
    pub result: String,
}

impl Entry {
    /// The canonical version-1 leaf bytes.
    ///
    /// # Errors
    ///
    /// [`EncodeError::StringTooLong`] when a string field exceeds 65535 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let strings_len = self.actor_fingerprint.len()
            + self.actor_account.len()
            + self.action.len()
            + self.subject.len()
            + self.result.len();
        let mut out = Vec::with_capacity(1 + 8 + 8 + 5 * 2 + strings_len + 32 + 1 + 32);
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.time_micros.to_be_bytes());
        put_str(&mut out, "actor_fingerprint", &self.actor_fingerprint)?;
        put_str(&mut out, "actor_account", &self.actor_account)?;
        put_str(&mut out, "action", &self.action)?;
        put_str(&mut out, "subject", &self.subject)?;
        out.extend_from_slice(&self.params_digest);
        match &self.output_digest {
            None => out.push(0x00),
            Some(d) => {
                out.push(0x01);
                out.extend_from_slice(d);
            }
        }
        put_str(&mut out, "result", &self.result)?;
        Ok(out)
    }

    /// Parses canonical version-1 leaf bytes.
    ///
    /// Strict: a wrong version, a short field, invalid UTF-8, a presence flag other than
    /// `0x00`/`0x01` or trailing bytes are errors, so `decode(encode(e)) == e` and every
    /// accepted input is exactly `encode` of its result.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the offending field.
    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let mut r = Reader { rest: bytes };
        let version = r.byte("version")?;
        if version != ENTRY_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let seq = u64::from_be_bytes(r.array("seq")?);
        let time_micros = i64::from_be_bytes(r.array("time_micros")?);
        let actor_fingerprint = r.string("actor_fingerprint")?;
        let actor_account = r.string("actor_account")?;
        let action = r.string("action")?;
        let subject = r.string("subject")?;
        let params_digest = r.array("params_digest")?;
        let output_digest = match r.byte("has_output")? {
            0x00 => None,
            0x01 => Some(r.array("output_digest")?),
            value => {
                return Err(DecodeError::InvalidFlag {
                    field: "has_output",
                    value,
                });
            }
        };
        let result = r.string("result")?;
        if !r.rest.is_empty() {
            return Err(DecodeError::TrailingBytes {
                count: r.rest.len(),
            });
        }
        Ok(Entry {
            seq,
            time_micros,
            actor_fingerprint,
            actor_account,
            action,
            subject,
            params_digest,
            output_digest,
            result,
        })
    }

    /// The Merkle leaf hash of this entry: `SHA-256(0x00 ‖ encode())`.
    ///
    /// # Errors
    ///
    /// As [`Entry::encode`].
    pub fn leaf_hash(&self) -> Result<Hash, EncodeError> {
        Ok(hash_leaf(&self.encode()?))
    }
}

fn put_str(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), EncodeError> {
    let len = u16::try_from(s.len()).map_err(|_| EncodeError::StringTooLong {
        field,
        len: s.len(),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(field, N)?;
        // `take` returned exactly N bytes, so the conversion cannot fail; map it anyway
        // rather than unwrap.
        bytes
            .try_into()
            .map_err(|_| DecodeError::Truncated { field })
    }

    fn byte(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = u16::from_be_bytes(self.array(field)?);
        let bytes = self.take(field, usize::from(len))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The worked example of `LEAF_FORMAT.md`: a signing operation by a client.
    pub(crate) fn example_sign() -> Entry {
        Entry {
            seq: 42,
            time_micros: 1_700_000_000_000_000,
            actor_fingerprint: "4f1a".repeat(16),
            actor_account: "alice".into(),
            action: "sign".into(),
            subject: "ring:payments".into(),
            params_digest: [0x11; 32],
            output_digest: Some([0x22; 32]),
            result: "ok".into(),
        }
    }

    /// The second worked example: an operation of the daemon itself, with no output and an
    /// error result.
    fn example_daemon() -> Entry {
        Entry {
            seq: 0,
            time_micros: -1,
            actor_fingerprint: String::new(),
            actor_account: String::new(),
            action: "checkpoint".into(),
            subject: "log".into(),
            params_digest: [0; 32],
            output_digest: None,
            result: "error:hsm".into(),
        }
    }

    // Written out by hand from the format description, field by field, so that a change to
    // the encoder cannot silently re-bless itself.
    const EXAMPLE_SIGN_HEX: &str = concat!(
        "01",                                                               // version
        "000000000000002a",                                                 // seq = 42
        "00060a24181e4000", // time_micros = 1_700_000_000_000_000
        "0040",             // len 64
        "3466316134663161346631613466316134663161346631613466316134663161", // "4f1a" x 8
        "3466316134663161346631613466316134663161346631613466316134663161", // "4f1a" x 8
        "0005",
        "616c696365", // "alice"
        "0004",
        "7369676e", // "sign"
        "000d",
        "72696e673a7061796d656e7473", // "ring:payments"
        "1111111111111111111111111111111111111111111111111111111111111111", // params_digest
        "01",                         // has_output
        "2222222222222222222222222222222222222222222222222222222222222222", // output_digest
        "0002",
        "6f6b", // "ok"
    );

    const EXAMPLE_DAEMON_HEX: &str = concat!(
        "01",
        "0000000000000000", // seq = 0
        "ffffffffffffffff", // time_micros = -1
        "0000",             // actor_fingerprint = ""
        "0000",             // actor_account = ""
        "000a",
        "636865636b706f696e74", // "checkpoint"
        "0003",
        "6c6f67", // "log"
        "0000000000000000000000000000000000000000000000000000000000000000",
        "00", // no output
        "0009",
        "6572726f723a68736d", // "error:hsm"
    );

    const EXAMPLE_SIGN_LEAF_HASH: &str =
        "18c6a2aa3f75a3971b09936efc5b10571a283f49a4965d19723edd64170b82f6";

    #[test]
    fn golden_vectors() {
        assert_eq!(
            hex::encode(example_sign().encode().unwrap()),
            EXAMPLE_SIGN_HEX
        );
        assert_eq!(
            hex::encode(example_daemon().encode().unwrap()),
            EXAMPLE_DAEMON_HEX
        );
        assert_eq!(
            hex::encode(example_sign().leaf_hash().unwrap()),
            EXAMPLE_SIGN_LEAF_HASH
        );
    }

    #[test]
    fn leaf_format_doc_shows_the_golden_vector() {
        // Tidy check: the document outside verifiers are written from must show the same
        // bytes as the test above.
        // Lines made only of hex digits and spaces hold the example bytes.
        let doc: String = include_str!("../LEAF_FORMAT.md")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| l.chars().all(|c| c.is_ascii_hexdigit() || c == ' '))
            .flat_map(|l| l.chars().filter(char::is_ascii_hexdigit))
            .collect();
        assert!(
            doc.contains(EXAMPLE_SIGN_HEX),
            "LEAF_FORMAT.md example bytes"
        );
        assert!(
            doc.contains(EXAMPLE_SIGN_LEAF_HASH),
            "LEAF_FORMAT.md leaf hash"
        );
    }

    #[test]
    fn round_trip() {
        for e in [example_sign(), example_daemon()] {
            assert_eq!(Entry::decode(&e.encode().unwrap()).unwrap(), e);
        }
        let mut e = example_sign();
        e.subject = "ü".repeat(65535 / 2);
        e.action = "x".repeat(65535);
        e.seq = u64::MAX;
        e.time_micros = i64::MIN;
        assert_eq!(Entry::decode(&e.encode().unwrap()).unwrap(), e);
    }

    #[test]
    fn overlong_string_is_an_encode_error() {
        let mut e = example_sign();
        e.subject = "x".repeat(65536);
        assert_eq!(
            e.encode(),
            Err(EncodeError::StringTooLong {
                field: "subject",
                len: 65536
            })
        );
        assert!(e.leaf_hash().is_err());
    }

    #[test]
    fn strict_decoding() {
        let good = example_sign().encode().unwrap();

        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            Entry::decode(&trailing),
            Err(DecodeError::TrailingBytes { count: 1 })
        );

        for version in [0x00, 0x02, 0xff] {
            let mut v = good.clone();
            v[0] = version;
            assert_eq!(
                Entry::decode(&v),
                Err(DecodeError::UnsupportedVersion(version))
            );
        }

        // Every proper prefix is truncated, never accepted.
        for n in 0..good.len() {
            assert!(
                matches!(
                    Entry::decode(&good[..n]),
                    Err(DecodeError::Truncated { .. })
                ),
                "prefix of {n} bytes"
            );
        }

        // has_output flag: offset 1+8+8 + (2+64) + (2+5) + (2+4) + (2+13) + 32.
        let flag_at = 17 + 66 + 7 + 6 + 15 + 32;
        assert_eq!(good[flag_at], 0x01);
        let mut bad_flag = good.clone();
        bad_flag[flag_at] = 0x02;
        assert_eq!(
            Entry::decode(&bad_flag),
            Err(DecodeError::InvalidFlag {
                field: "has_output",
                value: 2
            })
        );

        // Invalid UTF-8 in actor_account ("alice" starts at 17 + 66 + 2).
        let mut bad_utf8 = good.clone();
        bad_utf8[17 + 66 + 2] = 0xff;
        assert_eq!(
            Entry::decode(&bad_utf8),
            Err(DecodeError::InvalidUtf8 {
                field: "actor_account"
            })
        );
    }
}
