//! Checkpoints (c2sp.org/tlog-checkpoint) and the signed notes that carry them
//! (c2sp.org/signed-note), with Ed25519 signatures.
//!
//! The audit key lives in the token, so nothing here signs: the daemon takes
//! [`Checkpoint::body`], has the token sign [`signing_input`] of it, and wraps the result
//! with [`NoteSignature::ed25519`] and [`SignedNote::new`]. Verification needs only the
//! public key ([`SignedNote::verify`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, VerifyingKey};

use crate::error::NoteError;
use crate::hash::{Hash, sha256};

/// Signature type byte of Ed25519 in key ids and verifier keys (c2sp.org/signed-note).
const ALG_ED25519: u8 = 0x01;

/// The most signature lines [`SignedNote::parse`] accepts (as the Go `sumdb/note` package;
/// the specification asks for at least 16).
pub const MAX_NOTE_SIGNATURES: usize = 100;

/// The bytes a note signature covers: the note text (the checkpoint body) exactly as it
/// appears in the note, including its final newline, without the blank separator line.
pub fn signing_input(body: &str) -> &[u8] {
    body.as_bytes()
}

/// The Ed25519 key id: the first 4 bytes of
/// `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)`.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let h = sha256(&[name.as_bytes(), b"\n", &[ALG_ED25519], public_key]);
    [h[0], h[1], h[2], h[3]]
}

/// The verifier key string of the Go `golang.org/x/mod/sumdb/note` package:
/// `<name>+<key id, 8 lower-case hex digits>+<base64(0x01 ‖ public key)>`.
///
/// # Errors
///
/// [`NoteError::InvalidKeyName`] when `name` is not a valid key name.
pub fn vkey(name: &str, key: &VerifyingKey) -> Result<String, NoteError> {
    check_key_name(name)?;
    let mut material = Vec::with_capacity(33);
    material.push(ALG_ED25519);
    material.extend_from_slice(key.as_bytes());
    Ok(format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, key.as_bytes())),
        BASE64.encode(material)
    ))
}

/// Parses a verifier key string made by [`vkey`] (or by the Go `note` package) into the key
/// name and the Ed25519 public key, checking the key id.
///
/// # Errors
///
/// [`NoteError::InvalidKeyName`] or [`NoteError::MalformedVerifierKey`].
pub fn parse_vkey(vkey: &str) -> Result<(String, VerifyingKey), NoteError> {
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(NoteError::MalformedVerifierKey(
            "expected <name>+<id>+<key>",
        ));
    };
    check_key_name(name)?;
    let mut id = [0u8; 4];
    if id_hex.len() != 8 || hex::decode_to_slice(id_hex, &mut id).is_err() {
        return Err(NoteError::MalformedVerifierKey(
            "key id is not 8 hex digits",
        ));
    }
    let material = BASE64
        .decode(key_b64)
        .map_err(|_| NoteError::MalformedVerifierKey("key is not base64"))?;
    let Some((&alg, public)) = material.split_first() else {
        return Err(NoteError::MalformedVerifierKey("key is empty"));
    };
    if alg != ALG_ED25519 {
        return Err(NoteError::MalformedVerifierKey("not an Ed25519 key"));
    }
    let public: &[u8; 32] = public
        .try_into()
        .map_err(|_| NoteError::MalformedVerifierKey("Ed25519 key is not 32 bytes"))?;
    if key_id(name, public) != id {
        return Err(NoteError::MalformedVerifierKey(
            "key id does not match the key",
        ));
    }
    let key = VerifyingKey::from_bytes(public)
        .map_err(|_| NoteError::MalformedVerifierKey("not an Ed25519 public key"))?;
    Ok((name.to_owned(), key))
}

/// Key names are non-empty and hold no Unicode space, no plus sign and no control
/// character.
fn check_key_name(name: &str) -> Result<(), NoteError> {
    let bad = |c: char| c.is_whitespace() || c == '+' || c.is_control();
    if name.is_empty() || name.contains(bad) {
        return Err(NoteError::InvalidKeyName(name.to_owned()));
    }
    Ok(())
}

/// A note text is non-empty, ends in a newline and holds no control character but newline.
fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::MalformedNote("text does not end in a newline"));
    }
    if text.contains(|c: char| c < '\u{20}' && c != '\n') {
        return Err(NoteError::MalformedNote("control character in note"));
    }
    Ok(())
}

/// A checkpoint: the origin, size and root of a log's tree at one point in time.
///
/// Its [`body`](Checkpoint::body) is the note text of c2sp.org/tlog-checkpoint:
///
/// ```text
/// <origin>\n
/// <size, decimal, no leading zeros>\n
/// <root, standard base64 with padding>\n
/// ```
///
/// Extension lines are neither written nor accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
}

impl Checkpoint {
    /// A checkpoint of the tree of `size` leaves with root `root`.
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedCheckpoint`] when `origin` is empty or holds a control
    /// character (a newline would make the body ambiguous).
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Result<Checkpoint, NoteError> {
        let origin = origin.into();
        if origin.is_empty() {
            return Err(NoteError::MalformedCheckpoint("empty origin"));
        }
        if origin.contains(|c: char| c < '\u{20}') {
            return Err(NoteError::MalformedCheckpoint(
                "control character in origin",
            ));
        }
        Ok(Checkpoint { origin, size, root })
    }

    /// The log's identity, e.g. `signetd.example.com/audit`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RFC 6962 root of the tree of [`size`](Checkpoint::size) leaves.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The note text, the bytes to sign ([`signing_input`]).
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        )
    }

    /// Parses a note text made by [`Checkpoint::body`]. Strict: exactly three lines, a
    /// canonical decimal size, a canonical base64 root of 32 bytes.
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedCheckpoint`].
    pub fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
        let Some(text) = body.strip_suffix('\n') else {
            return Err(NoteError::MalformedCheckpoint("does not end in a newline"));
        };
        let lines: Vec<&str> = text.split('\n').collect();
        let [origin, size, root] = lines[..] else {
            return Err(NoteError::MalformedCheckpoint(if lines.len() > 3 {
                "extension lines are not supported"
            } else {
                "fewer than three lines"
            }));
        };
        let canonical_decimal = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        if !canonical_decimal {
            return Err(NoteError::MalformedCheckpoint(
                "size is not a canonical decimal",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| NoteError::MalformedCheckpoint("size does not fit 64 bits"))?;
        let root: Hash = BASE64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(NoteError::MalformedCheckpoint(
                "root is not 32 bytes of base64",
            ))?;
        Checkpoint::new(origin, size, root)
    }
}

/// One signature line of a note: `— <name> <base64(key id ‖ signature)>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NoteSignature {
    name: String,
    key_id: [u8; 4],
    signature: Vec<u8>,
}

impl NoteSignature {
    /// A signature line from its parts, for any signature type.
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidKeyName`], or [`NoteError::MalformedNote`] for an empty
    /// signature.
    pub fn new(
        name: impl Into<String>,
        key_id: [u8; 4],
        signature: Vec<u8>,
    ) -> Result<NoteSignature, NoteError> {
        let name = name.into();
        check_key_name(&name)?;
        if signature.is_empty() {
            return Err(NoteError::MalformedNote("empty signature"));
        }
        Ok(NoteSignature {
            name,
            key_id,
            signature,
        })
    }

    /// The signature line of an Ed25519 signature made elsewhere (by the token) over
    /// [`signing_input`] of the body; the key id is derived from `name` and `key`.
    ///
    /// The signature is not checked here; [`SignedNote::verify`] does that.
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidKeyName`].
    pub fn ed25519(
        name: impl Into<String>,
        key: &VerifyingKey,
        signature: &Signature,
    ) -> Result<NoteSignature, NoteError> {
        let name = name.into();
        let id = key_id(&name, key.as_bytes());
        NoteSignature::new(name, id, signature.to_bytes().to_vec())
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The signature bytes (after the key id).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// A signed note: a text and one or more signature lines (c2sp.org/signed-note).
///
/// ```text
/// <text, ending in \n>
/// \n
/// — <key name> <base64(4-byte key id ‖ signature)>\n
/// …
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedNote {
    body: String,
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// A note from its text (for a checkpoint, [`Checkpoint::body`]) and signatures.
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedNote`] when the text does not end in a newline or holds a
    /// control character, or when there are no signatures or more than
    /// [`MAX_NOTE_SIGNATURES`].
    pub fn new(
        body: impl Into<String>,
        signatures: Vec<NoteSignature>,
    ) -> Result<SignedNote, NoteError> {
        let body = body.into();
        check_text(&body)?;
        if signatures.is_empty() {
            return Err(NoteError::MalformedNote("no signatures"));
        }
        if signatures.len() > MAX_NOTE_SIGNATURES {
            return Err(NoteError::MalformedNote("too many signatures"));
        }
        Ok(SignedNote { body, signatures })
    }

    /// The note text, including its final newline.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// The note as text: body, blank line, signature lines.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.body.len() + 1 + self.signatures.len() * 120);
        out.push_str(&self.body);
        out.push('\n');
        for s in &self.signatures {
            let mut blob = Vec::with_capacity(4 + s.signature.len());
            blob.extend_from_slice(&s.key_id);
            blob.extend_from_slice(&s.signature);
            out.push_str("\u{2014} ");
            out.push_str(&s.name);
            out.push(' ');
            out.push_str(&BASE64.encode(blob));
            out.push('\n');
        }
        out
    }

    /// Parses a note. Strict: no control characters but newline, a blank line before the
    /// signatures (the last blank line of the note), every line after it a well-formed
    /// signature line ending in a newline, canonical base64, at least one signature and at
    /// most [`MAX_NOTE_SIGNATURES`]. Signatures are not verified here.
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedNote`] or [`NoteError::InvalidKeyName`].
    pub fn parse(text: &str) -> Result<SignedNote, NoteError> {
        check_text(text)?;
        let Some(split) = text.rfind("\n\n") else {
            return Err(NoteError::MalformedNote(
                "no blank line before the signatures",
            ));
        };
        let (body, sigs) = (&text[..=split], &text[split + 2..]);
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(NoteError::MalformedNote("no signatures"));
        };
        let mut signatures = Vec::new();
        for line in sigs.split('\n') {
            if signatures.len() == MAX_NOTE_SIGNATURES {
                return Err(NoteError::MalformedNote("too many signatures"));
            }
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(NoteError::MalformedNote("signature line without em dash"));
            };
            let Some((name, blob)) = rest.split_once(' ') else {
                return Err(NoteError::MalformedNote("signature line without signature"));
            };
            check_key_name(name)?;
            let blob = BASE64
                .decode(blob)
                .map_err(|_| NoteError::MalformedNote("signature is not canonical base64"))?;
            if blob.len() < 5 {
                return Err(NoteError::MalformedNote("signature too short"));
            }
            let (id, signature) = blob.split_at(4);
            let key_id = [id[0], id[1], id[2], id[3]];
            signatures.push(NoteSignature::new(name, key_id, signature.to_vec())?);
        }
        SignedNote::new(body, signatures)
    }

    /// Checks the signature(s) of the Ed25519 key `name`/`key` and returns the note text.
    ///
    /// Lines of other keys are ignored, as the specification requires. Every line that
    /// carries this key's name and key id must verify.
    ///
    /// # Errors
    ///
    /// [`NoteError::NoMatchingSignature`] when no line carries this key's name and key id,
    /// [`NoteError::InvalidSignature`] when one does and does not verify.
    pub fn verify_text(&self, name: &str, key: &VerifyingKey) -> Result<&str, NoteError> {
        let id = key_id(name, key.as_bytes());
        let mut matched = false;
        for s in self
            .signatures
            .iter()
            .filter(|s| s.name == name && s.key_id == id)
        {
            matched = true;
            let ok = Signature::from_slice(&s.signature)
                .is_ok_and(|sig| key.verify_strict(signing_input(&self.body), &sig).is_ok());
            if !ok {
                return Err(NoteError::InvalidSignature {
                    name: name.to_owned(),
                    key_id: hex::encode(id),
                });
            }
        }
        if !matched {
            return Err(NoteError::NoMatchingSignature {
                name: name.to_owned(),
                key_id: hex::encode(id),
            });
        }
        Ok(&self.body)
    }

    /// Checks the signature(s) of the Ed25519 key `name`/`key` as
    /// [`verify_text`](SignedNote::verify_text) does, then parses the text as a checkpoint.
    ///
    /// The checkpoint's origin is not compared with anything: check it against the log you
    /// expect.
    ///
    /// # Errors
    ///
    /// As [`verify_text`](SignedNote::verify_text), and [`NoteError::MalformedCheckpoint`].
    pub fn verify(&self, name: &str, key: &VerifyingKey) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse_body(self.verify_text(name, key)?)
    }
}
