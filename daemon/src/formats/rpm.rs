//! formats::rpm: RPM v4 packages signed by token keys — a header-only OpenPGP v4 signature
//! over the package's main header, placed in the signature header as rpm 4.x does, so that
//! `rpmkeys --checksig` (and `rpm -i`, `dnf`) verify it against the imported certificate.
//! No IO, no PKCS#11; the payload never passes through this module.
//!
//! An RPM v4 file is the *head* — a 96-byte lead, the signature header (padded to 8 bytes),
//! the main header — followed by the payload. The main header holds the package's metadata
//! and a digest of the payload; the signature header holds digests of the main header (SHA-1,
//! SHA-256), of header and payload together (MD5, sizes) and the signatures. Signing changes
//! only the signature header: the main header and the payload stay byte for byte, so every
//! digest stays valid.
//!
//! Signing a package, as for [`formats::openpgp`](super::openpgp), in steps:
//!
//! 1. [`HeadParser`] is fed the first bytes of the upload in chunks of any size and answers
//!    [`Feed::NeedMore`] or [`Feed::Complete`] (how much of the last chunk was head); the
//!    rest of the stream is the payload, which the caller copies through unchanged (to a
//!    temporary file, say). [`RpmHead::parse`] does the same over bytes already in memory.
//! 2. [`RpmHead::signer`] hashes the main header into a binary detached OpenPGP signature
//!    ([`DetachedSigner`]) and gives a [`PendingRpm`] whose [`request`](PendingRpm::request)
//!    says what the token must sign;
//! 3. [`PendingRpm::complete`] turns the token's signature into the OpenPGP packet (checked by
//!    rpgp against the key, once over the digest and once over the header bytes), builds the
//!    new signature header and gives the [`SignedHead`]: lead + signature header + padding +
//!    main header. The caller writes [`SignedHead::to_bytes`] and then the payload.
//!
//! The new signature header keeps every entry of the old one except signatures: the
//! header-only DSA (267) and RSA (268) tags, the header+payload PGP (1002), GPG (1005) and
//! PGP5 (1006) tags, rpm 6's OPENPGP (278), and the broken SHA-1 values (264, 265) that
//! `rpmsign` drops too. It holds exactly one signature, ours: under RSA (268) for RSA keys,
//! under DSA (267) for ECDSA and EdDSA keys, as the rpm crate's own signer does (rpm 4.18
//! verifies EdDSA there; its OpenPGP parser has no ECDSA, so it refuses P-256/P-384
//! certificates and reports their signatures BAD: see `tests/rpm.rs`). Digests
//! (SHA1 269, SHA256 273, MD5 1004), sizes (SIZE 1000, LONGSIZE 270, PAYLOADSIZE 1007, ...)
//! and anything unknown are kept as they are. The reserved space (1008, which `rpmbuild`
//! leaves so that a signature can be added in place) shrinks by what the signature takes, so
//! the signature header keeps its size when it can; it is dropped when the signature does
//! not fit in it.
//!
//! What comes from the `rpm` crate (rpm-rs) and what is ours: the crate parses and models
//! lead and headers ([`Lead`], [`Header`], [`IndexData`], the tag numbers), re-serialises the
//! parsed main header (we check it gives back the input byte for byte) and builds the new
//! signature header (sorting, alignment, the region tag) through its public
//! [`Header::from_entries`]. Ours: the incremental parser, because the crate only reads a
//! head from a blocking reader; the bounds checks of every count, offset and length, done
//! *before* the crate sees the bytes, because its parser indexes by offsets from the input
//! and reserves by declared counts (hostile input could make it panic or allocate gigabytes);
//! and the choice of kept and dropped tags, because the crate's signature header builder
//! drops tags it does not know and signs only with its own OpenPGP backend (rpgp 0.20, which
//! we leave out). The OpenPGP signature itself is [`formats::openpgp`](super::openpgp)'s.

use std::fmt;

use rpm::{Header, HeaderEntry, IndexData, IndexSignatureTag, IndexTag, Lead, PackageMetadata};
use time::OffsetDateTime;

use super::openpgp::{
    DetachedSignature, DetachedSigner, OpenPgpError, OpenPgpKey, PendingSignature, SignatureMode,
    TokenRequest,
};
use crate::crypto::HashAlg;
use crate::hsm::{HsmError, KeyAlgorithm};

/// Length of the lead, the fixed first part of every RPM file.
pub const LEAD_LEN: usize = 96;

/// The longest head (lead, signature header, main header) accepted: 64 MiB. Real heads are
/// kilobytes to a few megabytes (a header lists every file of the package).
pub const MAX_HEAD_LEN: usize = 64 << 20;

/// The most index entries one header may declare (rpm's `HEADER_TAGS_MAX`).
pub const MAX_INDEX_ENTRIES: u32 = 0xffff;

/// Length of a header's intro: magic, version, 4 reserved bytes, entry count, data length.
const INTRO_LEN: usize = 16;
/// Length of one index entry: tag, type, offset, count.
const ENTRY_LEN: usize = 16;
const RPM_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
/// Header magic and header version 1.
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
/// The lead's signature type for a signature header (`RPMSIGTYPE_HEADERSIG`).
const HEADERSIG_TYPE: u16 = 5;

/// The header-only RSA signature tag (`RPMSIGTAG_RSA`).
pub const SIGTAG_RSA: u32 = IndexSignatureTag::RPMSIGTAG_RSA as u32;
/// The header-only DSA signature tag (`RPMSIGTAG_DSA`), also used for ECDSA and EdDSA.
pub const SIGTAG_DSA: u32 = IndexSignatureTag::RPMSIGTAG_DSA as u32;
const SIGTAG_RESERVEDSPACE: u32 = IndexSignatureTag::RPMSIGTAG_RESERVEDSPACE as u32;
/// `RPMSIGTAG_PGP5`, not named by the crate.
const SIGTAG_PGP5: u32 = 1006;

/// Signature-header tags that are not carried over: the region (rebuilt), and every
/// signature.
const DROPPED_SIGTAGS: [u32; 9] = [
    IndexSignatureTag::HEADER_SIGNATURES as u32,
    IndexTag::RPMTAG_BADSHA1_1 as u32,
    IndexTag::RPMTAG_BADSHA1_2 as u32,
    SIGTAG_DSA,
    SIGTAG_RSA,
    IndexSignatureTag::RPMSIGTAG_OPENPGP as u32,
    IndexSignatureTag::RPMSIGTAG_PGP as u32,
    IndexSignatureTag::RPMSIGTAG_GPG as u32,
    SIGTAG_PGP5,
];

/// The signature tags [`RpmHead::signatures`] reports.
const SIGNATURE_SIGTAGS: [u32; 6] = [
    SIGTAG_DSA,
    SIGTAG_RSA,
    IndexSignatureTag::RPMSIGTAG_OPENPGP as u32,
    IndexSignatureTag::RPMSIGTAG_PGP as u32,
    IndexSignatureTag::RPMSIGTAG_GPG as u32,
    SIGTAG_PGP5,
];

/// A part of an RPM head, as named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// The 96-byte lead.
    Lead,
    /// The signature header.
    Signature,
    /// The main header.
    Main,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Lead => "lead",
            Section::Signature => "signature header",
            Section::Main => "main header",
        })
    }
}

/// Why a package could not be parsed or signed. Messages name only offsets, sizes and fixed
/// reasons, never the package's content: they can go back to the client as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpmError {
    /// The input does not start with an RPM lead (or an RPM this module does not sign).
    #[error("not an RPM v4 package: {0}")]
    NotRpm(&'static str),
    /// A header is malformed.
    #[error("bad RPM {section} at byte {offset}: {reason}")]
    BadHeader {
        /// Which header.
        section: Section,
        /// Offset in the package of the intro or index entry at fault.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The head declares more than [`MAX_HEAD_LEN`] bytes.
    #[error("RPM head longer than {limit} bytes")]
    TooLarge {
        /// The limit, [`MAX_HEAD_LEN`].
        limit: usize,
    },
    /// The input ended inside the head.
    #[error("the input ends inside the RPM head: {missing} more bytes needed")]
    Truncated {
        /// How many more bytes the head needs, at least.
        missing: usize,
    },
    /// The OpenPGP signature could not be made (hash, time, or a token signature that does
    /// not verify).
    #[error("OpenPGP: {0}")]
    OpenPgp(#[from] OpenPgpError),
    /// The token failed or refused to sign.
    #[error("token: {0}")]
    Token(#[from] HsmError),
    /// The new head could not be built (a bug, not the input's fault).
    #[error("RPM encoding: {0}")]
    Encoding(&'static str),
}

/// What [`HeadParser::feed`] made of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The whole chunk was head, and the head needs at least this many more bytes.
    NeedMore(usize),
    /// The head is complete: its last bytes were the first `used` bytes of this chunk (0 when
    /// it was already complete). The rest of the chunk, and of the stream, is the payload.
    Complete {
        /// How many bytes of this chunk belonged to the head.
        used: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Lead,
    SigIntro,
    MainIntro,
    MainBody,
    Done,
    Failed,
}

/// Incremental, sync, no-IO parser of an RPM head. Feed it the package's first bytes in
/// chunks of any size; it keeps only the head (at most [`MAX_HEAD_LEN`] bytes, growing as
/// bytes arrive, never by a declared size) and checks each part as soon as it is complete:
/// lead magic, header magic, entry counts and data lengths, then every index entry's type,
/// offset, count and alignment against its header's data. After an error it stays failed.
#[derive(Debug)]
pub struct HeadParser {
    buf: Vec<u8>,
    /// Length the buffer must reach before the next check.
    want: usize,
    stage: Stage,
    /// Where the signature header's data ends (before its padding).
    sig_end: usize,
    /// Where the main header starts.
    main_start: usize,
}

impl Default for HeadParser {
    fn default() -> Self {
        Self::new()
    }
}

impl HeadParser {
    /// A parser at the start of a package.
    pub fn new() -> Self {
        HeadParser {
            buf: Vec::with_capacity(LEAD_LEN + INTRO_LEN),
            want: LEAD_LEN,
            stage: Stage::Lead,
            sig_end: 0,
            main_start: 0,
        }
    }

    /// Takes the next chunk of the package. Of a chunk that completes the head, only the
    /// first [`used`](Feed::Complete::used) bytes are taken.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Feed, RpmError> {
        let mut used = 0;
        loop {
            match self.stage {
                Stage::Done => return Ok(Feed::Complete { used }),
                Stage::Failed => return Err(RpmError::NotRpm("the head was already refused")),
                _ => {}
            }
            let rest = chunk.get(used..).unwrap_or(&[]);
            let take = self.want.saturating_sub(self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(rest.get(..take).unwrap_or(&[]));
            used += take;
            if self.buf.len() < self.want {
                return Ok(Feed::NeedMore(self.want - self.buf.len()));
            }
            if let Err(e) = self.advance() {
                self.stage = Stage::Failed;
                self.buf = Vec::new();
                return Err(e);
            }
        }
    }

    /// How many bytes of the head were taken so far.
    pub fn head_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the head is complete.
    pub fn is_complete(&self) -> bool {
        self.stage == Stage::Done
    }

    /// The parsed head, once [`feed`](Self::feed) said [`Feed::Complete`]; before that
    /// [`RpmError::Truncated`].
    pub fn into_head(self) -> Result<RpmHead, RpmError> {
        match self.stage {
            Stage::Done => RpmHead::from_checked(self.buf, self.main_start),
            Stage::Failed => Err(RpmError::NotRpm("the head was already refused")),
            _ => Err(RpmError::Truncated {
                missing: self.want.saturating_sub(self.buf.len()),
            }),
        }
    }

    /// Checks what just became complete and says what to wait for next.
    fn advance(&mut self) -> Result<(), RpmError> {
        match self.stage {
            Stage::Lead => {
                check_lead(&self.buf)?;
                self.want = LEAD_LEN + INTRO_LEN;
                self.stage = Stage::SigIntro;
            }
            Stage::SigIntro => {
                let (entries, data) = intro(&self.buf, LEAD_LEN, Section::Signature)?;
                let end = header_end(LEAD_LEN, entries, data)?;
                let padding = (8 - data % 8) % 8;
                self.sig_end = end;
                self.main_start = end.checked_add(padding).ok_or(TOO_LARGE)?;
                self.want = bounded(self.main_start.checked_add(INTRO_LEN))?;
                self.stage = Stage::MainIntro;
            }
            Stage::MainIntro => {
                let sig = self.buf.get(LEAD_LEN..self.sig_end).unwrap_or(&[]);
                check_entries(sig, LEAD_LEN, Section::Signature)?;
                let (entries, data) = intro(&self.buf, self.main_start, Section::Main)?;
                self.want = header_end(self.main_start, entries, data)?;
                self.stage = Stage::MainBody;
            }
            Stage::MainBody => {
                let main = self.buf.get(self.main_start..).unwrap_or(&[]);
                check_entries(main, self.main_start, Section::Main)?;
                check_region(main, self.main_start)?;
                self.stage = Stage::Done;
            }
            Stage::Done | Stage::Failed => {}
        }
        Ok(())
    }
}

const TOO_LARGE: RpmError = RpmError::TooLarge {
    limit: MAX_HEAD_LEN,
};

fn bounded(len: Option<usize>) -> Result<usize, RpmError> {
    match len {
        Some(len) if len <= MAX_HEAD_LEN => Ok(len),
        _ => Err(TOO_LARGE),
    }
}

fn be_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn check_lead(lead: &[u8]) -> Result<(), RpmError> {
    if lead.get(..4) != Some(&RPM_MAGIC[..]) {
        return Err(RpmError::NotRpm("no RPM lead magic"));
    }
    // rpm reads lead versions 3 and 4 (`rpmLeadCheck`).
    match lead.get(4) {
        Some(3 | 4) => {}
        _ => return Err(RpmError::NotRpm("unsupported lead version")),
    }
    if be_u16(lead, 78) != Some(HEADERSIG_TYPE) {
        return Err(RpmError::NotRpm(
            "no signature header (old-style signature type)",
        ));
    }
    Ok(())
}

/// The entry count and data length of the header whose intro starts at `at`.
fn intro(buf: &[u8], at: usize, section: Section) -> Result<(usize, usize), RpmError> {
    let bad = |reason| RpmError::BadHeader {
        section,
        offset: at as u64,
        reason,
    };
    if buf.get(at..at + 4) != Some(&HEADER_MAGIC[..]) {
        return Err(bad("no header magic"));
    }
    let entries = be_u32(buf, at + 8).ok_or(bad("short intro"))?;
    let data = be_u32(buf, at + 12).ok_or(bad("short intro"))?;
    if entries == 0 {
        return Err(bad("no index entries"));
    }
    if entries > MAX_INDEX_ENTRIES {
        return Err(bad("more than 65535 index entries"));
    }
    let data = usize::try_from(data).map_err(|_| TOO_LARGE)?;
    if data > MAX_HEAD_LEN {
        return Err(TOO_LARGE);
    }
    Ok((entries as usize, data))
}

/// Where a header starting at `start` with `entries` entries and `data` bytes of data ends.
fn header_end(start: usize, entries: usize, data: usize) -> Result<usize, RpmError> {
    bounded(
        entries
            .checked_mul(ENTRY_LEN)
            .and_then(|index| index.checked_add(INTRO_LEN))
            .and_then(|n| n.checked_add(data))
            .and_then(|n| n.checked_add(start)),
    )
}

/// Checks every index entry of a complete header (`header`: intro, index, data; `at`: its
/// offset in the package) as rpm does (`hdrblobVerifyInfo`): a known data type, at least one
/// item, an offset inside the data and aligned for the type, and the items inside the data
/// (strings NUL-terminated there). The entries' lengths must also add up to at most the data
/// length, which real headers (each value stored once) always meet; it bounds the work of
/// walking strings to the data length. Strings of the signature header must be UTF-8 (they
/// are hex digests; the crate would rewrite others lossily).
fn check_entries(header: &[u8], at: usize, section: Section) -> Result<(), RpmError> {
    let bad = |offset: usize, reason| RpmError::BadHeader {
        section,
        offset: offset as u64,
        reason,
    };
    let (entries, data_len) = intro(header, 0, section).map_err(|e| match e {
        RpmError::BadHeader { reason, .. } => bad(at, reason),
        other => other,
    })?;
    let data_start = INTRO_LEN + entries * ENTRY_LEN;
    let data = header
        .get(data_start..data_start + data_len)
        .ok_or(bad(at, "shorter than declared"))?;
    let mut total: usize = 0;
    for i in 0..entries {
        let e = INTRO_LEN + i * ENTRY_LEN;
        let here = at + e;
        let field = |n: usize| be_u32(header, e + 4 * n).ok_or(bad(here, "short index"));
        let typ = field(1)?;
        let offset = field(2)?;
        let count = field(3)?;
        if count == 0 {
            return Err(bad(here, "entry without items"));
        }
        let offset = usize::try_from(offset).map_err(|_| bad(here, "offset outside the data"))?;
        if offset >= data_len {
            return Err(bad(here, "offset outside the data"));
        }
        let count = count as usize;
        let fixed = |size: usize| -> Result<usize, RpmError> {
            if offset % size != 0 {
                return Err(bad(here, "misaligned data"));
            }
            count
                .checked_mul(size)
                .filter(|len| *len <= data_len - offset)
                .ok_or(bad(here, "items outside the data"))
        };
        let len = match typ {
            // CHAR, INT8, BIN: `count` bytes.
            1 | 2 | 7 => fixed(1)?,
            3 => fixed(2)?,
            4 => fixed(4)?,
            5 => fixed(8)?,
            // STRING: exactly one.
            6 if count != 1 => return Err(bad(here, "a STRING entry holds one string")),
            // STRING, STRING_ARRAY, I18NSTRING.
            6 | 8 | 9 => {
                let utf8 = section == Section::Signature;
                strings_len(data, offset, count, utf8).map_err(|reason| bad(here, reason))?
            }
            _ => return Err(bad(here, "unknown data type")),
        };
        total = total
            .checked_add(len)
            .filter(|t| *t <= data_len)
            .ok_or(bad(here, "entries overlap"))?;
    }
    Ok(())
}

/// The length of `count` NUL-terminated strings at `offset` of `data`.
fn strings_len(
    data: &[u8],
    offset: usize,
    count: usize,
    utf8: bool,
) -> Result<usize, &'static str> {
    let mut pos = offset;
    for _ in 0..count {
        let rest = data.get(pos..).unwrap_or(&[]);
        let nul = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or("string not terminated inside the data")?;
        if utf8 && std::str::from_utf8(&rest[..nul]).is_err() {
            return Err("string is not UTF-8");
        }
        pos += nul + 1;
    }
    Ok(pos - offset)
}

/// The main header must open with its immutable region (tag 63, 16 bytes of BIN): rpm 4.x
/// verifies header signatures only over headers that have one.
fn check_region(header: &[u8], at: usize) -> Result<(), RpmError> {
    let e = INTRO_LEN;
    let entry = (
        be_u32(header, e),
        be_u32(header, e + 4),
        be_u32(header, e + 12),
    );
    if entry
        != (
            Some(IndexTag::RPMTAG_HEADERIMMUTABLE as u32),
            Some(7),
            Some(16),
        )
    {
        return Err(RpmError::BadHeader {
            section: Section::Main,
            offset: (at + e) as u64,
            reason: "no immutable region (not an RPM v4 header)",
        });
    }
    Ok(())
}

/// A parsed RPM head: the bytes of lead, signature header and main header, with the crate's
/// model of lead and signature header.
#[derive(Debug, Clone)]
pub struct RpmHead {
    bytes: Vec<u8>,
    main_start: usize,
    lead: Lead,
    signature: Header<IndexSignatureTag>,
    nevra: Option<String>,
    header_sha256: [u8; 32],
}

impl RpmHead {
    /// Parses the head at the start of `package` (the whole package or just its first bytes;
    /// what follows the head is ignored). A head cut short is [`RpmError::Truncated`].
    pub fn parse(package: &[u8]) -> Result<RpmHead, RpmError> {
        let mut parser = HeadParser::new();
        match parser.feed(package)? {
            Feed::NeedMore(missing) => Err(RpmError::Truncated { missing }),
            Feed::Complete { .. } => parser.into_head(),
        }
    }

    /// `bytes` passed [`HeadParser`]'s checks; the main header starts at `main_start`.
    fn from_checked(bytes: Vec<u8>, main_start: usize) -> Result<RpmHead, RpmError> {
        let refused = RpmError::NotRpm("refused by the RPM header parser");
        let metadata = PackageMetadata::parse(&mut &bytes[..]).map_err(|_| refused)?;
        let main = bytes.get(main_start..).unwrap_or(&[]);
        // The crate's model of the main header must give back the input byte for byte.
        if metadata.header_bytes().ok().as_deref() != Some(main) {
            return Err(RpmError::NotRpm(
                "main header does not survive the RPM header parser",
            ));
        }
        let nevra = metadata.get_nevra().ok().map(|n| n.to_string());
        let digest = HashAlg::Sha256.digest(main);
        let header_sha256 = digest
            .as_slice()
            .try_into()
            .map_err(|_| RpmError::Encoding("SHA-256 digest of the wrong length"))?;
        Ok(RpmHead {
            lead: metadata.lead,
            signature: metadata.signature,
            bytes,
            main_start,
            nevra,
            header_sha256,
        })
    }

    /// The head's length: the payload starts at this offset of the package.
    pub fn head_len(&self) -> usize {
        self.bytes.len()
    }

    /// The main header (intro, index, data): the bytes a header-only signature signs.
    pub fn header_bytes(&self) -> &[u8] {
        self.bytes.get(self.main_start..).unwrap_or(&[])
    }

    /// SHA-256 of the main header (rpm's `RPMSIGTAG_SHA256`, in binary), for the audit entry.
    pub fn header_sha256(&self) -> &[u8; 32] {
        &self.header_sha256
    }

    /// `name-[epoch:]version-release.arch`, if the header names them in UTF-8.
    pub fn nevra(&self) -> Option<&str> {
        self.nevra.as_deref()
    }

    /// The signature header's tags, in order.
    pub fn signature_tags(&self) -> Vec<u32> {
        self.signature
            .get_all_entries()
            .map(|entries| entries.into_iter().map(|(tag, _)| tag).collect())
            .unwrap_or_default()
    }

    /// The signatures in the signature header: (tag, OpenPGP packet bytes as stored).
    pub fn signatures(&self) -> Vec<(u32, Vec<u8>)> {
        let Ok(entries) = self.signature.get_all_entries() else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter(|(tag, _)| SIGNATURE_SIGTAGS.contains(tag))
            .map(|(tag, data)| match data {
                IndexData::Bin(bytes) => (tag, bytes),
                IndexData::StringTag(s) => (tag, s.into_bytes()),
                IndexData::StringArray(v) => (tag, v.concat().into_bytes()),
                _ => (tag, Vec::new()),
            })
            .collect()
    }

    /// Hashes the main header for a header-only signature by `key` made at `created` (not
    /// before the key's creation), with the key's [default hash](OpenPgpKey::default_hash)
    /// (SHA-256; SHA-384 for P-384). The result says what the token must sign.
    pub fn signer(self, key: &OpenPgpKey, created: OffsetDateTime) -> Result<PendingRpm, RpmError> {
        let mut signer =
            DetachedSigner::new(key, key.default_hash(), created, SignatureMode::Binary)?;
        signer.update(self.header_bytes());
        Ok(PendingRpm {
            pending: signer.into_pending()?,
            key: key.clone(),
            head: self,
        })
    }

    /// [`signer`](Self::signer), the token call `sign` (blocking: run it off the async
    /// runtime), then [`complete`](PendingRpm::complete).
    pub fn sign(
        self,
        key: &OpenPgpKey,
        created: OffsetDateTime,
        sign: impl FnOnce(&TokenRequest) -> Result<Vec<u8>, HsmError>,
    ) -> Result<SignedHead, RpmError> {
        let pending = self.signer(key, created)?;
        let signature = sign(pending.request())?;
        pending.complete(&signature)
    }
}

/// A package head whose signature waits for the token.
#[derive(Debug)]
pub struct PendingRpm {
    head: RpmHead,
    key: OpenPgpKey,
    pending: PendingSignature,
}

impl PendingRpm {
    /// What the token must sign.
    pub fn request(&self) -> &TokenRequest {
        self.pending.request()
    }

    /// The signed head, with the token's signature of [`request`](Self::request) (in the
    /// scheme's standard encoding, as [`Hsm::sign`](crate::hsm::Hsm::sign) returns it).
    pub fn complete(self, token_signature: &[u8]) -> Result<SignedHead, RpmError> {
        let PendingRpm { head, key, pending } = self;
        // Checked with aws-lc over the digest here, and below by rpgp over the header bytes.
        let signature = pending.complete(token_signature)?;
        verify_over(&key, signature.to_bytes(), head.header_bytes())?;

        let tag = match key.algorithm() {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => SIGTAG_RSA,
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 | KeyAlgorithm::Ed25519 => SIGTAG_DSA,
        };
        let old = head
            .signature
            .get_all_entries()
            .map_err(|_| RpmError::Encoding("signature header entries"))?;
        let had_reserved = old.iter().any(|(t, _)| *t == SIGTAG_RESERVEDSPACE);
        let mut entries: Vec<HeaderEntry> = old
            .into_iter()
            .filter(|(t, _)| !DROPPED_SIGTAGS.contains(t) && *t != SIGTAG_RESERVEDSPACE)
            .map(|(t, data)| HeaderEntry::new(t, data))
            .collect();
        entries.push(HeaderEntry::new(
            tag,
            IndexData::Bin(signature.to_bytes().to_vec()),
        ));
        let mut section = signature_section(&head.lead, entries.clone())?;
        let old_len = head.main_start - LEAD_LEN;
        if had_reserved {
            // Another index entry (16 bytes) and its data: what is left of the old size.
            let room = old_len.saturating_sub(section.len() + ENTRY_LEN);
            if room > 0 {
                entries.push(HeaderEntry::new(
                    SIGTAG_RESERVEDSPACE,
                    IndexData::Bin(vec![0; room]),
                ));
                section = signature_section(&head.lead, entries)?;
            }
        }

        let main = head.header_bytes();
        let mut bytes = Vec::with_capacity(LEAD_LEN + section.len() + main.len());
        bytes.extend_from_slice(head.bytes.get(..LEAD_LEN).unwrap_or(&[]));
        bytes.extend_from_slice(&section);
        bytes.extend_from_slice(main);
        // What we give out must parse as what we meant: our checks, the crate's parser, one
        // signature (ours) under the tag.
        let check = RpmHead::parse(&bytes)
            .map_err(|_| RpmError::Encoding("the new head does not parse"))?;
        if check.head_len() != bytes.len()
            || check.header_bytes() != main
            || check.signatures() != [(tag, signature.to_bytes().to_vec())]
        {
            return Err(RpmError::Encoding("the new head is not what was built"));
        }
        Ok(SignedHead {
            bytes,
            tag,
            input_head_len: head.head_len(),
            header_sha256: head.header_sha256,
            nevra: head.nevra,
            key_id: key.key_id(),
            fingerprint: key.fingerprint(),
            signature,
        })
    }
}

/// rpgp's check of a binary signature packet over `data`.
fn verify_over(key: &OpenPgpKey, signature: &[u8], data: &[u8]) -> Result<(), RpmError> {
    use pgp::composed::Deserializable as _;
    let parsed = pgp::composed::DetachedSignature::from_bytes(signature)
        .map_err(|e| OpenPgpError::BadSignature(e.to_string()))?;
    parsed
        .verify(key.packet(), data)
        .map_err(|e| OpenPgpError::BadSignature(e.to_string()))?;
    Ok(())
}

/// The signature header with `entries` (plus the region the crate adds) and its padding,
/// serialised by the crate. The crate writes a signature header only as part of a whole
/// head, so this writes one with an empty main header and cuts that off again.
fn signature_section(lead: &Lead, entries: Vec<HeaderEntry>) -> Result<Vec<u8>, RpmError> {
    let write = |signature: Header<IndexSignatureTag>| -> Result<Vec<u8>, RpmError> {
        let metadata = PackageMetadata {
            lead: lead.clone(),
            signature,
            header: Header::<IndexTag>::from_entries(Vec::new(), IndexTag::RPMTAG_HEADERIMMUTABLE),
        };
        let mut out = Vec::new();
        metadata
            .write(&mut out)
            .map_err(|_| RpmError::Encoding("writing the signature header"))?;
        Ok(out)
    };
    let signature =
        Header::<IndexSignatureTag>::from_entries(entries, IndexSignatureTag::HEADER_SIGNATURES);
    let full = write(signature)?;
    // An empty signature header is an intro alone (16 bytes, no padding).
    let empty = write(Header::<IndexSignatureTag>::new_empty())?;
    let main_len = empty
        .len()
        .checked_sub(LEAD_LEN + INTRO_LEN)
        .ok_or(RpmError::Encoding("empty head"))?;
    full.get(LEAD_LEN..full.len().saturating_sub(main_len))
        .map(<[u8]>::to_vec)
        .ok_or(RpmError::Encoding("signature header length"))
}

/// The new head: lead, signature header with the token's signature, padding, main header.
/// Write [`to_bytes`](Self::to_bytes), then the payload that followed
/// [`input_head_len`](Self::input_head_len) bytes of the input.
#[derive(Debug, Clone)]
pub struct SignedHead {
    bytes: Vec<u8>,
    tag: u32,
    input_head_len: usize,
    header_sha256: [u8; 32],
    nevra: Option<String>,
    key_id: String,
    fingerprint: String,
    signature: DetachedSignature,
}

impl SignedHead {
    /// Lead, signature header (with padding) and main header.
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// [`to_bytes`](Self::to_bytes), owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The length of the head in the input: the payload started there.
    pub fn input_head_len(&self) -> usize {
        self.input_head_len
    }

    /// The signature-header tag holding the signature: [`SIGTAG_RSA`] or [`SIGTAG_DSA`].
    pub fn signature_tag(&self) -> u32 {
        self.tag
    }

    /// The OpenPGP signature packet over the main header (as stored in the tag).
    pub fn signature(&self) -> &DetachedSignature {
        &self.signature
    }

    /// SHA-256 of the signed main header, for the audit entry.
    pub fn header_sha256(&self) -> &[u8; 32] {
        &self.header_sha256
    }

    /// `name-[epoch:]version-release.arch` of the package, if its header names them.
    pub fn nevra(&self) -> Option<&str> {
        self.nevra.as_deref()
    }

    /// The signing key's ID: 16 uppercase hex digits (rpm shows the last 8, lowercase).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The signing key's v4 fingerprint: 40 uppercase hex digits.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    /// A binary lead (the crate makes one only with its `payload` feature): parsed by the
    /// crate from hand-made bytes followed by two empty headers.
    fn lead() -> Lead {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&RPM_MAGIC);
        bytes.extend_from_slice(&[3, 0, 0, 0, 0, 0]);
        let mut name = [0u8; 66];
        name[..10].copy_from_slice(b"demo-1.0-1");
        bytes.extend_from_slice(&name);
        bytes.extend_from_slice(&[0, 1, 0, 5]);
        bytes.extend_from_slice(&[0; 16]);
        for _ in 0..2 {
            bytes.extend_from_slice(&HEADER_MAGIC);
            bytes.extend_from_slice(&[0; 12]);
        }
        PackageMetadata::parse(&mut &bytes[..]).unwrap().lead
    }

    /// A small head built with the crate: a signature header with digests, reserved space
    /// and an old RSA "signature", a main header with a few tags.
    fn synthetic_head() -> Vec<u8> {
        let main = Header::<IndexTag>::from_entries(
            vec![
                HeaderEntry::new(
                    IndexTag::RPMTAG_NAME as u32,
                    IndexData::StringTag("demo".into()),
                ),
                HeaderEntry::new(
                    IndexTag::RPMTAG_VERSION as u32,
                    IndexData::StringTag("1.0".into()),
                ),
                HeaderEntry::new(
                    IndexTag::RPMTAG_RELEASE as u32,
                    IndexData::StringTag("1".into()),
                ),
                HeaderEntry::new(
                    IndexTag::RPMTAG_ARCH as u32,
                    IndexData::StringTag("noarch".into()),
                ),
                HeaderEntry::new(
                    IndexTag::RPMTAG_SUMMARY as u32,
                    IndexData::I18NString(vec!["A demo".into()]),
                ),
                HeaderEntry::new(IndexTag::RPMTAG_SIZE as u32, IndexData::Int32(vec![1234])),
                HeaderEntry::new(
                    IndexTag::RPMTAG_FILEMODES as u32,
                    IndexData::Int16(vec![0o644, 0o755]),
                ),
            ],
            IndexTag::RPMTAG_HEADERIMMUTABLE,
        );
        let mut main_bytes = Vec::new();
        PackageMetadata {
            lead: lead(),
            signature: Header::new_empty(),
            header: main.clone(),
        }
        .write(&mut main_bytes)
        .unwrap();
        let main_bytes = main_bytes[LEAD_LEN + INTRO_LEN..].to_vec();
        let sha256 = hex::encode(HashAlg::Sha256.digest(&main_bytes));
        let signature = Header::<IndexSignatureTag>::from_entries(
            vec![
                HeaderEntry::new(
                    IndexSignatureTag::RPMSIGTAG_SHA256 as u32,
                    IndexData::StringTag(sha256),
                ),
                HeaderEntry::new(
                    IndexSignatureTag::RPMSIGTAG_SIZE as u32,
                    IndexData::Int32(vec![5000]),
                ),
                HeaderEntry::new(SIGTAG_RSA, IndexData::Bin(vec![0x89; 40])),
                HeaderEntry::new(SIGTAG_RESERVEDSPACE, IndexData::Bin(vec![0; 301])),
            ],
            IndexSignatureTag::HEADER_SIGNATURES,
        );
        let mut out = Vec::new();
        PackageMetadata {
            lead: lead(),
            signature,
            header: main,
        }
        .write(&mut out)
        .unwrap();
        out
    }

    fn p256_key() -> (p256::ecdsa::SigningKey, OpenPgpKey) {
        use p256::pkcs8::EncodePublicKey as _;
        let signer = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("key");
        let spki = signer.verifying_key().to_public_key_der().expect("spki");
        let key = OpenPgpKey::new(
            spki.as_bytes(),
            KeyAlgorithm::EcP256,
            OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
        )
        .expect("key");
        (signer, key)
    }

    fn p256_sign(signer: &p256::ecdsa::SigningKey, r: &TokenRequest) -> Vec<u8> {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let sig: p256::ecdsa::Signature = signer.sign_prehash(r.digest()).expect("sign");
        sig.to_der().as_bytes().to_vec()
    }

    #[test]
    fn parses_in_any_chunking() {
        let mut package = synthetic_head();
        let head_len = package.len();
        package.extend_from_slice(b"PAYLOAD");
        let whole = RpmHead::parse(&package).unwrap();
        assert_eq!(whole.head_len(), head_len);
        assert_eq!(whole.nevra(), Some("demo-1.0-1.noarch"));
        for size in [1, 7, 16, 95, 96, 97, 1000, package.len()] {
            let mut parser = HeadParser::new();
            let mut fed = 0;
            let mut payload = Vec::new();
            for chunk in package.chunks(size) {
                if parser.is_complete() {
                    payload.extend_from_slice(chunk);
                    continue;
                }
                match parser.feed(chunk).unwrap() {
                    Feed::NeedMore(n) => {
                        fed += chunk.len();
                        assert!(n > 0);
                    }
                    Feed::Complete { used } => {
                        fed += used;
                        payload.extend_from_slice(&chunk[used..]);
                    }
                }
            }
            assert_eq!(fed, head_len, "chunks of {size}");
            assert_eq!(payload, b"PAYLOAD");
            let head = parser.into_head().unwrap();
            assert_eq!(head.header_bytes(), whole.header_bytes());
        }
        // Cut anywhere inside the head: truncated, never anything else.
        for cut in 0..head_len {
            assert!(
                matches!(
                    RpmHead::parse(&package[..cut]),
                    Err(RpmError::Truncated { missing }) if missing > 0
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn hostile_heads_are_refused_without_panics() {
        let head = synthetic_head();
        assert!(matches!(
            RpmHead::parse(&[0u8; 200]),
            Err(RpmError::NotRpm(_))
        ));
        // Huge declared counts and lengths.
        for (at, value) in [
            (LEAD_LEN + 8, 0x00ff_ffffu32),
            (LEAD_LEN + 8, 0),
            (LEAD_LEN + 12, 0xffff_fff0),
            (LEAD_LEN + 12, (MAX_HEAD_LEN as u32) + 1),
        ] {
            let mut bad = head.clone();
            bad[at..at + 4].copy_from_slice(&value.to_be_bytes());
            let err = RpmHead::parse(&bad).unwrap_err();
            assert!(
                matches!(err, RpmError::BadHeader { .. } | RpmError::TooLarge { .. }),
                "{err}"
            );
        }
        // Every single-byte change and every 0xff run over the head: an error or a head, never
        // a panic.
        for i in 0..head.len() {
            for v in [0x00, 0xff, head[i] ^ 0x80] {
                let mut bad = head.clone();
                bad[i] = v;
                let _ = RpmHead::parse(&bad);
            }
            let mut bad = head.clone();
            for b in bad.iter_mut().skip(i).take(4) {
                *b = 0xff;
            }
            let _ = RpmHead::parse(&bad);
        }
        // A pseudo-random walk of multi-byte damage.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut bad = head.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % bad.len();
                bad[i] = (x >> 32) as u8;
            }
            let _ = RpmHead::parse(&bad);
        }
    }

    #[test]
    fn signing_replaces_the_signature_and_keeps_the_rest() {
        let (signer, key) = p256_key();
        let package = synthetic_head();
        let head = RpmHead::parse(&package).unwrap();
        let main = head.header_bytes().to_vec();
        let tags_before = head.signature_tags();
        assert!(tags_before.contains(&SIGTAG_RSA));
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_100).unwrap();
        let signed = head.sign(&key, now, |r| Ok(p256_sign(&signer, r))).unwrap();
        assert_eq!(signed.signature_tag(), SIGTAG_DSA);
        assert_eq!(signed.input_head_len(), package.len());
        assert_eq!(signed.fingerprint(), key.fingerprint());
        assert_eq!(
            &signed.header_sha256()[..],
            &HashAlg::Sha256.digest(&main)[..]
        );
        // Same size: the reserved space gave up what the signature took.
        assert_eq!(signed.to_bytes().len(), package.len());
        assert_eq!(signed.to_bytes()[..LEAD_LEN], package[..LEAD_LEN]);
        let again = RpmHead::parse(signed.to_bytes()).unwrap();
        assert_eq!(again.header_bytes(), &main[..]);
        let tags = again.signature_tags();
        assert!(!tags.contains(&SIGTAG_RSA), "{tags:?}");
        for kept in [
            IndexSignatureTag::RPMSIGTAG_SHA256 as u32,
            IndexSignatureTag::RPMSIGTAG_SIZE as u32,
            SIGTAG_RESERVEDSPACE,
        ] {
            assert!(tags.contains(&kept), "{tags:?}");
        }
        let sigs = again.signatures();
        assert_eq!(sigs.len(), 1);
        verify_over(&key, &sigs[0].1, &main).unwrap();

        // A signature by another key never leaves.
        let other = p256::ecdsa::SigningKey::from_slice(&[8u8; 32]).unwrap();
        let head = RpmHead::parse(&package).unwrap();
        assert!(matches!(
            head.sign(&key, now, |r| Ok(p256_sign(&other, r))),
            Err(RpmError::OpenPgp(OpenPgpError::BadSignature(_)))
        ));
    }
}
