//! formats::openpgp: OpenPGP v4 certificates (transferable public keys) for token keys, and
//! detached and cleartext OpenPGP signatures made by the token, in the forms GnuPG 2.2 reads
//! (`gpg --import`, `gpg --verify`). Built on rpgp; the private key never leaves the token.
//!
//! Every signature is made in three steps, so that the token call can run wherever the caller
//! runs token calls:
//!
//! 1. a builder ([`CertificateBuilder`], [`DetachedSigner`], [`CleartextSigner`]) hashes the
//!    signed material (streamed, for detached signatures) and the signature packet's metadata;
//! 2. its `into_pending()` gives the [`TokenRequest`] (scheme and input for
//!    [`Hsm::sign`](crate::hsm::Hsm::sign) / [`Hsm::sign_blocking`](crate::hsm::Hsm::sign_blocking));
//! 3. the pending value's `complete(token_signature)` turns the token's signature (in the
//!    scheme's standard encoding: DER for ECDSA) into OpenPGP's MPIs, checks the result with
//!    rpgp's own verifier against the public key packet, and serialises it.
//!
//! `finish(sign)` does steps 2 and 3 with a blocking closure (run it off the async runtime);
//! [`TokenKey`] bundles a key slot with its OpenPGP identity and also implements rpgp's
//! [`SigningKey`] for callers that want rpgp's own composition functions.
//!
//! How each key type signs an OpenPGP digest on the token:
//! - RSA: RSASSA-PKCS1-v1_5 over the digest ([`SignatureScheme::RsaPkcs1`]); one MPI.
//! - ECDSA P-256/P-384: ECDSA over the digest; the DER `Ecdsa-Sig-Value` becomes MPIs r, s.
//!   OpenPGP (RFC 9580 §5.2.3.2) wants a digest at least as long as the curve: P-384 signs
//!   with SHA-384 or SHA-512 only.
//! - Ed25519: v4 "EdDSALegacy" (algorithm 22, the legacy Ed25519 OID), the only Ed25519 form
//!   GnuPG 2.2 knows: pure Ed25519 whose *message* is the OpenPGP digest; r‖s become two MPIs.
//!
//! Text signatures (type 0x01) hash the text with every line ending as CR LF, exactly as
//! GnuPG 2.2 does: carriage returns at the end of a line (before LF or at the end of the
//! input) are dropped, lone ones inside a line kept, trailing spaces and tabs kept. Cleartext
//! signatures (RFC 4880 §7) additionally drop trailing spaces and tabs of every line, in the
//! output as well as in what is hashed, so the text shown is the text signed.

use std::fmt;
use std::sync::Arc;

use der::Decode as _;
use pgp::composed::{ArmorOptions, Deserializable as _, SignedKeyDetails, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::SignatureVersion;
use pgp::packet::{
    KeyFlags, PacketHeader, PublicKey, Signature, SignatureConfig, SignatureType, Subpacket,
    SubpacketData, UserId,
};
use pgp::ser::Serialize as _;
use pgp::types::{
    Fingerprint, KeyDetails, KeyId, KeyVersion, Mpi, PacketHeaderVersion, Password, PublicParams,
    SignatureBytes, SignedUser, SigningKey, Tag, Timestamp, VerifyingKey as _,
};
use time::OffsetDateTime;

use crate::crypto::{EcCurve, HashAlg, SignInput, SignInputBuf, SignatureScheme, VerifyingKey};
use crate::hsm::{Hsm, HsmError, KeyAlgorithm, KeySlot};

/// The longest User ID accepted, in bytes.
pub const MAX_USER_ID_LEN: usize = 1024;

/// The legacy Ed25519 curve OID of RFC 4880bis/RFC 9580 §9.2 (1.3.6.1.4.1.11591.15.1).
const ED25519_LEGACY_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01];
/// NIST P-256 (1.2.840.10045.3.1.7), without the DER tag and length.
const P256_OID: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// NIST P-384 (1.3.132.0.34), without the DER tag and length.
const P384_OID: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// Why an OpenPGP object could not be built. Messages name only the daemon's vocabulary
/// (algorithms, hashes, lengths, offsets), never the signed content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenPgpError {
    /// The User ID is empty, too long, or holds a NUL, CR or LF.
    #[error("bad user id: {0}")]
    BadUserId(&'static str),
    /// The public key is not a SubjectPublicKeyInfo of the stated algorithm.
    #[error("public key is not a usable {algorithm} key: {reason}")]
    PublicKey {
        /// The algorithm the key was said to be.
        algorithm: KeyAlgorithm,
        /// What is wrong.
        reason: String,
    },
    /// OpenPGP does not allow this hash with this key type (P-384 needs SHA-384 or SHA-512).
    #[error("OpenPGP signatures by {algorithm} keys cannot use {hash}")]
    UnsupportedHash {
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
        /// The refused hash.
        hash: HashAlg,
    },
    /// A time OpenPGP cannot represent (before 1970 or after 2106).
    #[error("time outside OpenPGP's range (1970 to 2106)")]
    TimeOutOfRange,
    /// A signature would be older than its key, which verifiers reject.
    #[error("signature time {signed} is before the key's creation time {created} (Unix seconds)")]
    SignedBeforeKeyCreation {
        /// The signature's creation time.
        signed: u32,
        /// The key's creation time.
        created: u32,
    },
    /// Input for a text or cleartext signature is not UTF-8.
    #[error("text signatures need UTF-8 text; invalid from byte {offset}")]
    NotText {
        /// Offset of the first byte that is not part of valid UTF-8.
        offset: u64,
    },
    /// The token failed or refused to sign.
    #[error("token: {0}")]
    Token(#[from] HsmError),
    /// The token's signature does not fit the key or does not verify as OpenPGP.
    #[error("the token's signature does not verify as an OpenPGP signature: {0}")]
    BadSignature(String),
    /// rpgp failed to build or serialise a packet.
    #[error("OpenPGP encoding: {0}")]
    Encoding(String),
}

fn encoding(e: pgp::errors::Error) -> OpenPgpError {
    OpenPgpError::Encoding(e.to_string())
}

/// How a detached signature hashes its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureMode {
    /// Signature type 0x00: the bytes as they are.
    Binary,
    /// Signature type 0x01: UTF-8 text with line endings canonicalised to CR LF (as GnuPG 2.2
    /// does; see the module documentation).
    Text,
}

impl SignatureMode {
    fn signature_type(self) -> SignatureType {
        match self {
            SignatureMode::Binary => SignatureType::Binary,
            SignatureMode::Text => SignatureType::Text,
        }
    }
}

fn pgp_hash(hash: HashAlg) -> HashAlgorithm {
    match hash {
        HashAlg::Sha256 => HashAlgorithm::Sha256,
        HashAlg::Sha384 => HashAlgorithm::Sha384,
        HashAlg::Sha512 => HashAlgorithm::Sha512,
    }
}

/// The armor header name of a hash (`Hash: SHA256`).
fn armor_hash_name(hash: HashAlg) -> &'static str {
    match hash {
        HashAlg::Sha256 => "SHA256",
        HashAlg::Sha384 => "SHA384",
        HashAlg::Sha512 => "SHA512",
    }
}

fn timestamp(t: OffsetDateTime) -> Result<u32, OpenPgpError> {
    u32::try_from(t.unix_timestamp()).map_err(|_| OpenPgpError::TimeOutOfRange)
}

fn armor_options() -> ArmorOptions<'static> {
    ArmorOptions {
        headers: None,
        include_checksum: true,
    }
}

/// An OpenPGP v4 public key packet for a token key: its algorithm, public key and creation
/// time. The creation time is part of the fingerprint: persist it and pass the same value to
/// get the same fingerprint (whole seconds count; fractions are dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPgpKey {
    algorithm: KeyAlgorithm,
    packet: PublicKey,
    verifier: Verifier,
}

/// The key's aws-lc verifier, which checks every token signature before it goes into a packet.
#[derive(Debug, Clone)]
struct Verifier(Arc<VerifyingKey>);

impl PartialEq for Verifier {
    fn eq(&self, other: &Self) -> bool {
        self.0.spki_der() == other.0.spki_der()
    }
}

impl Eq for Verifier {}

impl OpenPgpKey {
    /// Builds the key packet from the key's SubjectPublicKeyInfo DER (what
    /// [`Hsm::generate_key`](crate::hsm::Hsm::generate_key) and [`KeySlot::public_key`]
    /// return). Refuses a key that is not of `algorithm` (wrong type, curve or modulus size).
    pub fn new(
        spki_der: &[u8],
        algorithm: KeyAlgorithm,
        created: OffsetDateTime,
    ) -> Result<Self, OpenPgpError> {
        let created = timestamp(created)?;
        let (pub_alg, params) = public_params(spki_der, algorithm)?;
        let mut body = Vec::with_capacity(6 + params.len());
        body.push(4);
        body.extend_from_slice(&created.to_be_bytes());
        body.push(pub_alg.into());
        body.extend_from_slice(&params);
        let len = u32::try_from(body.len()).map_err(|_| OpenPgpError::PublicKey {
            algorithm,
            reason: "too long".into(),
        })?;
        let packet =
            PublicKey::try_from_reader(PacketHeader::new_fixed(Tag::PublicKey, len), &body[..])
                .map_err(|e| OpenPgpError::PublicKey {
                    algorithm,
                    reason: e.to_string(),
                })?;
        let verifier = Verifier(Arc::new(VerifyingKey::new(spki_der.to_vec())));
        Ok(OpenPgpKey {
            algorithm,
            packet,
            verifier,
        })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The key's creation time, in Unix seconds.
    pub fn created(&self) -> u32 {
        self.packet.created_at().as_secs()
    }

    /// The v4 fingerprint: 40 uppercase hex digits.
    pub fn fingerprint(&self) -> String {
        hex::encode_upper(self.packet.fingerprint().as_bytes())
    }

    /// The key ID (the fingerprint's last 64 bits): 16 uppercase hex digits.
    pub fn key_id(&self) -> String {
        hex::encode_upper(self.packet.legacy_key_id())
    }

    /// The hash used when none is asked for: SHA-384 for P-384 (the shortest OpenPGP allows),
    /// SHA-256 otherwise.
    pub fn default_hash(&self) -> HashAlg {
        default_hash(self.algorithm)
    }

    /// Whether OpenPGP allows signatures by this key with `hash`.
    pub fn check_hash(&self, hash: HashAlg) -> Result<(), OpenPgpError> {
        check_hash(self.algorithm, hash)
    }

    /// The public key packet, for composing other OpenPGP objects with rpgp.
    pub fn packet(&self) -> &PublicKey {
        &self.packet
    }

    /// The token scheme that signs an OpenPGP digest of `hash` for this key.
    fn scheme(&self, hash: HashAlg) -> SignatureScheme {
        match self.algorithm {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                SignatureScheme::RsaPkcs1(hash)
            }
            KeyAlgorithm::EcP256 => SignatureScheme::Ecdsa(EcCurve::P256, hash),
            KeyAlgorithm::EcP384 => SignatureScheme::Ecdsa(EcCurve::P384, hash),
            KeyAlgorithm::Ed25519 => SignatureScheme::Ed25519,
        }
    }

    /// The OpenPGP signature MPIs from the token's signature (standard encoding: PKCS#1
    /// bytes, DER `Ecdsa-Sig-Value`, 64-byte Ed25519 r‖s).
    fn signature_bytes(&self, token_signature: &[u8]) -> Result<SignatureBytes, OpenPgpError> {
        let bad = |why: &str| OpenPgpError::BadSignature(why.to_owned());
        let mpis = match self.algorithm {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                vec![Mpi::from_slice(token_signature)]
            }
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
                let curve = if self.algorithm == KeyAlgorithm::EcP256 {
                    EcCurve::P256
                } else {
                    EcCurve::P384
                };
                let raw = curve
                    .der_to_raw(token_signature)
                    .map_err(|_| bad("not a DER ECDSA signature of the key's curve"))?;
                let (r, s) = raw.split_at(raw.len() / 2);
                vec![Mpi::from_slice(r), Mpi::from_slice(s)]
            }
            KeyAlgorithm::Ed25519 => {
                if token_signature.len() != 64 {
                    return Err(bad("an Ed25519 signature is 64 bytes"));
                }
                let (r, s) = token_signature.split_at(32);
                vec![Mpi::from_slice(r), Mpi::from_slice(s)]
            }
        };
        Ok(SignatureBytes::Mpis(mpis))
    }

    /// A v4 signature configuration with creation time and issuer (fingerprint and key ID),
    /// all in the hashed area.
    fn config(
        &self,
        typ: SignatureType,
        hash: HashAlg,
        signed: u32,
    ) -> Result<SignatureConfig, OpenPgpError> {
        self.check_hash(hash)?;
        if signed < self.created() {
            return Err(OpenPgpError::SignedBeforeKeyCreation {
                signed,
                created: self.created(),
            });
        }
        let mut config = SignatureConfig::v4(typ, self.packet.algorithm(), pgp_hash(hash));
        config.hashed_subpackets = vec![
            Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
                signed,
            )))
            .map_err(encoding)?,
            Subpacket::regular(SubpacketData::IssuerFingerprint(self.packet.fingerprint()))
                .map_err(encoding)?,
            Subpacket::regular(SubpacketData::IssuerKeyId(self.packet.legacy_key_id()))
                .map_err(encoding)?,
        ];
        Ok(config)
    }
}

/// Whether `user_id` can be a certificate's User ID: 1 to [`MAX_USER_ID_LEN`] bytes, no NUL, CR
/// or LF.
pub fn check_user_id(user_id: &str) -> Result<(), OpenPgpError> {
    if user_id.is_empty() {
        return Err(OpenPgpError::BadUserId("empty"));
    }
    if user_id.len() > MAX_USER_ID_LEN {
        return Err(OpenPgpError::BadUserId("longer than 1024 bytes"));
    }
    if user_id.contains(['\0', '\r', '\n']) {
        return Err(OpenPgpError::BadUserId("contains NUL, CR or LF"));
    }
    Ok(())
}

/// Whether OpenPGP allows signatures by keys of `algorithm` with `hash` (a digest at least as
/// long as the curve: P-384 signs with SHA-384 or SHA-512 only).
pub fn check_hash(algorithm: KeyAlgorithm, hash: HashAlg) -> Result<(), OpenPgpError> {
    match (algorithm, hash) {
        (KeyAlgorithm::EcP384, HashAlg::Sha256) => {
            Err(OpenPgpError::UnsupportedHash { algorithm, hash })
        }
        _ => Ok(()),
    }
}

/// The hash used when none is asked for: SHA-384 for P-384 (the shortest OpenPGP allows),
/// SHA-256 otherwise.
pub fn default_hash(algorithm: KeyAlgorithm) -> HashAlg {
    match algorithm {
        KeyAlgorithm::EcP384 => HashAlg::Sha384,
        _ => HashAlg::Sha256,
    }
}

/// The algorithm-specific public key fields of a v4 key packet, from an SPKI.
fn public_params(
    spki_der: &[u8],
    algorithm: KeyAlgorithm,
) -> Result<(PublicKeyAlgorithm, Vec<u8>), OpenPgpError> {
    use const_oid::db::{rfc5912, rfc8410};

    let bad = |reason: &str| OpenPgpError::PublicKey {
        algorithm,
        reason: reason.to_owned(),
    };
    let info = spki::SubjectPublicKeyInfoRef::try_from(spki_der)
        .map_err(|_| bad("not a SubjectPublicKeyInfo"))?;
    let key = info
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| bad("public key is not whole bytes"))?;
    let oid = info.algorithm.oid;
    let named_curve = || {
        info.algorithm
            .parameters
            .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok())
    };
    let mut out = Vec::new();
    let alg = match algorithm {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            #[derive(der::Sequence)]
            struct RsaPublicKey<'a> {
                modulus: der::asn1::UintRef<'a>,
                public_exponent: der::asn1::UintRef<'a>,
            }
            if oid != rfc5912::RSA_ENCRYPTION {
                return Err(bad("not an RSA key"));
            }
            let rsa = RsaPublicKey::from_der(key).map_err(|_| bad("bad RSAPublicKey"))?;
            let bits = match algorithm {
                KeyAlgorithm::Rsa2048 => 2048,
                KeyAlgorithm::Rsa3072 => 3072,
                _ => 4096,
            };
            if mpi_bits(rsa.modulus.as_bytes()) != bits {
                return Err(bad("modulus of the wrong size"));
            }
            write_mpi(&mut out, rsa.modulus.as_bytes());
            write_mpi(&mut out, rsa.public_exponent.as_bytes());
            PublicKeyAlgorithm::RSA
        }
        KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
            let (curve, curve_oid, point_len) = if algorithm == KeyAlgorithm::EcP256 {
                (rfc5912::SECP_256_R_1, P256_OID, 65)
            } else {
                (rfc5912::SECP_384_R_1, P384_OID, 97)
            };
            if oid != rfc5912::ID_EC_PUBLIC_KEY || named_curve() != Some(curve) {
                return Err(bad("not an EC key on the algorithm's curve"));
            }
            if key.len() != point_len || key.first() != Some(&0x04) {
                return Err(bad("not an uncompressed point"));
            }
            write_oid(&mut out, curve_oid);
            write_mpi(&mut out, key);
            PublicKeyAlgorithm::ECDSA
        }
        KeyAlgorithm::Ed25519 => {
            if oid != rfc8410::ID_ED_25519 || key.len() != 32 {
                return Err(bad("not an Ed25519 key"));
            }
            write_oid(&mut out, ED25519_LEGACY_OID);
            // The legacy encoding: a 0x40 prefix, then the 32-byte point, as one MPI.
            let mut point = Vec::with_capacity(33);
            point.push(0x40);
            point.extend_from_slice(key);
            write_mpi(&mut out, &point);
            PublicKeyAlgorithm::EdDSALegacy
        }
    };
    Ok((alg, out))
}

/// Bit length of a big-endian unsigned number.
fn mpi_bits(bytes: &[u8]) -> usize {
    let bytes = strip_zeros(bytes);
    match bytes.first() {
        None => 0,
        Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// An OpenPGP MPI: a two-byte bit count, then the number without leading zero bytes. Only
/// called with public key fields, which are far below 65536 bits.
fn write_mpi(out: &mut Vec<u8>, bytes: &[u8]) {
    let bits = u16::try_from(mpi_bits(bytes)).unwrap_or(u16::MAX);
    out.extend_from_slice(&bits.to_be_bytes());
    out.extend_from_slice(strip_zeros(bytes));
}

/// A curve OID as key packets hold it: one length byte, then the DER contents.
fn write_oid(out: &mut Vec<u8>, oid: &[u8]) {
    // Every OID here is a constant of fewer than 256 bytes.
    out.push(u8::try_from(oid.len()).unwrap_or(0));
    out.extend_from_slice(oid);
}

/// What the token must sign for one OpenPGP signature: the scheme, and the OpenPGP digest
/// handed over as a digest (RSA, ECDSA) or, for Ed25519, as the message itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    scheme: SignatureScheme,
    hash: HashAlg,
    digest: Vec<u8>,
}

impl TokenRequest {
    /// The token scheme: RSA PKCS#1 v1.5, ECDSA on the key's curve, or pure Ed25519.
    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// The OpenPGP hash algorithm.
    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    /// The OpenPGP digest (of the signed material and the signature's hashed metadata).
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// The token input, for [`Hsm::sign_blocking`]: [`SignInput::Digest`], or
    /// [`SignInput::Message`] of the digest for Ed25519 (EdDSALegacy signs the digest as its
    /// message).
    pub fn input(&self) -> SignInput<'_> {
        match self.scheme {
            SignatureScheme::Ed25519 => SignInput::Message(&self.digest),
            _ => SignInput::Digest(&self.digest),
        }
    }

    /// [`TokenRequest::input`], owned, for [`Hsm::sign`].
    pub fn input_buf(&self) -> SignInputBuf {
        self.input().to_buf()
    }
}

/// A hashed signature waiting for the token: configuration, digest and key.
#[derive(Debug)]
struct Prepared {
    key: OpenPgpKey,
    config: SignatureConfig,
    request: TokenRequest,
}

impl Prepared {
    /// Hashes the signature metadata and trailer after the signed material already in
    /// `hasher`.
    fn new(
        key: &OpenPgpKey,
        config: SignatureConfig,
        mut hasher: Box<dyn pgp_digest::DynDigest + Send>,
        hash: HashAlg,
    ) -> Result<Self, OpenPgpError> {
        let len = config.hash_signature_data(&mut hasher).map_err(encoding)?;
        hasher.update(&config.trailer(len).map_err(encoding)?);
        let digest = hasher.finalize().to_vec();
        Ok(Prepared {
            request: TokenRequest {
                scheme: key.scheme(hash),
                hash,
                digest,
            },
            key: key.clone(),
            config,
        })
    }

    /// The signature packet with the token's signature, checked against the key over the
    /// OpenPGP digest first. The check is aws-lc's (the key parsed once), not rpgp's: for RSA
    /// rpgp verifies in pure Rust, several times slower, and it was the largest cost a format
    /// added to a raw signature (README, "Formats benchmark"). What follows the check is only
    /// the conversion of the checked bytes into the packet's MPIs, which the tests check
    /// against rpgp and `gpg --verify`.
    fn complete(self, token_signature: &[u8]) -> Result<Signature, OpenPgpError> {
        self.key
            .verifier
            .0
            .verify(self.request.scheme, self.request.input(), token_signature)
            .map_err(|e| OpenPgpError::BadSignature(e.to_string()))?;
        let bytes = self.key.signature_bytes(token_signature)?;
        let digest = &self.request.digest;
        Signature::from_config(self.config, [digest[0], digest[1]], bytes).map_err(encoding)
    }
}

fn new_hasher(hash: HashAlg) -> Result<Box<dyn pgp_digest::DynDigest + Send>, OpenPgpError> {
    pgp_hash(hash)
        .new_hasher()
        .map_err(|e| OpenPgpError::Encoding(e.to_string()))
}

/// Builds a certificate (transferable public key): the key packet, one User ID, and a positive
/// self-certification (type 0x13) with key flags certify + sign, preferred hashes SHA-512,
/// SHA-384, SHA-256, creation time and issuer.
#[derive(Debug, Clone)]
pub struct CertificateBuilder {
    key: OpenPgpKey,
    user_id: UserId,
    hash: HashAlg,
    signed: u32,
}

impl CertificateBuilder {
    /// A certificate for `key` and `user_id` (1 to [`MAX_USER_ID_LEN`] bytes, no NUL, CR or LF;
    /// conventionally `Name <email>`). The self-certification uses the key's
    /// [default hash](OpenPgpKey::default_hash) and the key's creation time, so building it
    /// again gives the same certificate metadata.
    pub fn new(key: &OpenPgpKey, user_id: &str) -> Result<Self, OpenPgpError> {
        check_user_id(user_id)?;
        let user_id = UserId::from_str(PacketHeaderVersion::New, user_id).map_err(encoding)?;
        Ok(CertificateBuilder {
            hash: key.default_hash(),
            signed: key.created(),
            key: key.clone(),
            user_id,
        })
    }

    /// The self-certification's hash instead of the default.
    pub fn hash(mut self, hash: HashAlg) -> Result<Self, OpenPgpError> {
        self.key.check_hash(hash)?;
        self.hash = hash;
        Ok(self)
    }

    /// The self-certification's creation time instead of the key's (not before it).
    pub fn signed_at(mut self, signed: OffsetDateTime) -> Result<Self, OpenPgpError> {
        let signed = timestamp(signed)?;
        if signed < self.key.created() {
            return Err(OpenPgpError::SignedBeforeKeyCreation {
                signed,
                created: self.key.created(),
            });
        }
        self.signed = signed;
        Ok(self)
    }

    /// Hashes the certification; the result says what the token must sign.
    pub fn into_pending(self) -> Result<PendingCertificate, OpenPgpError> {
        let mut config = self
            .key
            .config(SignatureType::CertPositive, self.hash, self.signed)?;
        let mut flags = KeyFlags::default();
        flags.set_certify(true);
        flags.set_sign(true);
        let prefs = vec![
            HashAlgorithm::Sha512,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha256,
        ];
        config.hashed_subpackets.extend([
            Subpacket::regular(SubpacketData::KeyFlags(flags)).map_err(encoding)?,
            Subpacket::regular(SubpacketData::PreferredHashAlgorithms(prefs.into()))
                .map_err(encoding)?,
        ]);

        // RFC 9580 §5.2.4: 0x99, two-byte length, the key packet body; then 0xB4, four-byte
        // length, the User ID.
        let mut hasher = new_hasher(self.hash)?;
        let body = self.key.packet.to_bytes().map_err(encoding)?;
        let body_len = u16::try_from(body.len())
            .map_err(|_| OpenPgpError::Encoding("key packet too long".into()))?;
        hasher.update(&[0x99]);
        hasher.update(&body_len.to_be_bytes());
        hasher.update(&body);
        let id = self.user_id.id();
        let id_len = u32::try_from(id.len())
            .map_err(|_| OpenPgpError::BadUserId("longer than 1024 bytes"))?;
        hasher.update(&[0xb4]);
        hasher.update(&id_len.to_be_bytes());
        hasher.update(id);
        Ok(PendingCertificate {
            prepared: Prepared::new(&self.key, config, hasher, self.hash)?,
            user_id: self.user_id,
        })
    }

    /// [`into_pending`](Self::into_pending), the token call `sign` (blocking: run it off the
    /// async runtime), then [`complete`](PendingCertificate::complete).
    pub fn finish(
        self,
        sign: impl FnOnce(&TokenRequest) -> Result<Vec<u8>, HsmError>,
    ) -> Result<Certificate, OpenPgpError> {
        let pending = self.into_pending()?;
        let signature = sign(pending.request())?;
        pending.complete(&signature)
    }
}

/// A certificate whose self-certification waits for the token's signature.
#[derive(Debug)]
pub struct PendingCertificate {
    prepared: Prepared,
    user_id: UserId,
}

impl PendingCertificate {
    /// What the token must sign.
    pub fn request(&self) -> &TokenRequest {
        &self.prepared.request
    }

    /// The certificate, with the token's signature of [`request`](Self::request) (in the
    /// scheme's standard encoding, as [`Hsm::sign`] returns it).
    pub fn complete(self, token_signature: &[u8]) -> Result<Certificate, OpenPgpError> {
        let key = self.prepared.key.clone();
        let signature = self.prepared.complete(token_signature)?;
        let user = SignedUser::new(self.user_id, vec![signature]);
        let signed = SignedPublicKey::new(
            key.packet.clone(),
            SignedKeyDetails::new(vec![], vec![], vec![user], vec![]),
            vec![],
        );
        // rpgp's own check of the self-certification (our hashing against its).
        signed
            .verify_bindings()
            .map_err(|e| OpenPgpError::BadSignature(e.to_string()))?;
        let binary = signed.to_bytes().map_err(encoding)?;
        let armored = signed
            .to_armored_string(armor_options())
            .map_err(encoding)?;
        Ok(Certificate {
            key,
            binary,
            armored,
        })
    }
}

/// An OpenPGP certificate (transferable public key) in binary and ASCII-armored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    key: OpenPgpKey,
    binary: Vec<u8>,
    armored: String,
}

impl Certificate {
    /// A stored certificate (binary packets, as [`Certificate::to_bytes`] gave them), checked
    /// again: its primary key must be `key` and its User ID binding must verify.
    pub fn from_bytes(key: &OpenPgpKey, bytes: &[u8]) -> Result<Self, OpenPgpError> {
        let signed = SignedPublicKey::from_bytes(bytes)
            .map_err(|e| OpenPgpError::BadSignature(format!("stored certificate: {e}")))?;
        if signed.primary_key.fingerprint() != key.packet.fingerprint() {
            return Err(OpenPgpError::BadSignature(
                "stored certificate: another primary key".into(),
            ));
        }
        signed
            .verify_bindings()
            .map_err(|e| OpenPgpError::BadSignature(e.to_string()))?;
        let armored = signed
            .to_armored_string(armor_options())
            .map_err(encoding)?;
        Ok(Certificate {
            key: key.clone(),
            binary: bytes.to_vec(),
            armored,
        })
    }

    /// The User IDs the certificate binds.
    pub fn user_ids(&self) -> Vec<String> {
        SignedPublicKey::from_bytes(&self.binary[..])
            .map(|k| {
                k.details
                    .users
                    .iter()
                    .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The primary key.
    pub fn key(&self) -> &OpenPgpKey {
        &self.key
    }

    /// The v4 fingerprint: 40 uppercase hex digits.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint()
    }

    /// The key ID: 16 uppercase hex digits.
    pub fn key_id(&self) -> String {
        self.key.key_id()
    }

    /// The binary packets (`gpg --import` reads them, as do keyrings).
    pub fn to_bytes(&self) -> &[u8] {
        &self.binary
    }

    /// ASCII armor: `-----BEGIN PGP PUBLIC KEY BLOCK-----`.
    pub fn armored(&self) -> &str {
        &self.armored
    }
}

/// The signed material of a detached signature, hashed as it streams in before the signing key
/// is chosen (a ring lends its key only once the upload is complete); memory does not grow
/// with the input. [`DetachedInput::into_pending`] binds it to a key.
pub struct DetachedInput {
    hash: HashAlg,
    mode: SignatureMode,
    hasher: Box<dyn pgp_digest::DynDigest + Send>,
    text: Option<TextCanon>,
    len: u64,
}

impl fmt::Debug for DetachedInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetachedInput")
            .field("hash", &self.hash)
            .field("mode", &self.mode)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl DetachedInput {
    /// Input for a signature with `hash` in `mode`.
    pub fn new(hash: HashAlg, mode: SignatureMode) -> Result<Self, OpenPgpError> {
        Ok(DetachedInput {
            hash,
            mode,
            hasher: new_hasher(hash)?,
            text: (mode == SignatureMode::Text).then(TextCanon::default),
            len: 0,
        })
    }

    /// Hashes the next chunk of the input.
    pub fn update(&mut self, chunk: &[u8]) {
        self.len = self.len.saturating_add(chunk.len() as u64);
        match &mut self.text {
            None => self.hasher.update(chunk),
            Some(text) => text.update(chunk, &mut *self.hasher),
        }
    }

    /// The number of input bytes hashed so far.
    pub fn input_len(&self) -> u64 {
        self.len
    }

    /// Ends the input and binds it to `key`, signing at `created` (not before the key's
    /// creation); the result says what the token must sign. Text mode refuses input that is
    /// not UTF-8 here, and a key refuses a hash OpenPGP does not allow it.
    pub fn into_pending(
        self,
        key: &OpenPgpKey,
        created: OffsetDateTime,
    ) -> Result<PendingSignature, OpenPgpError> {
        let config = key.config(self.mode.signature_type(), self.hash, timestamp(created)?)?;
        if let Some(text) = self.text {
            text.finish()?;
        }
        Ok(PendingSignature {
            prepared: Prepared::new(key, config, self.hasher, self.hash)?,
        })
    }
}

/// A detached signature by a key known from the start, over input streamed in chunks of any
/// size; memory does not grow with the input.
pub struct DetachedSigner {
    key: OpenPgpKey,
    created: OffsetDateTime,
    input: DetachedInput,
}

impl fmt::Debug for DetachedSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetachedSigner")
            .field("key", &self.key.fingerprint())
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

impl DetachedSigner {
    /// A signature by `key` with `hash`, made at `created` (not before the key's creation),
    /// in `mode`.
    pub fn new(
        key: &OpenPgpKey,
        hash: HashAlg,
        created: OffsetDateTime,
        mode: SignatureMode,
    ) -> Result<Self, OpenPgpError> {
        // Refuse a bad hash or time now, not after the whole input.
        key.config(mode.signature_type(), hash, timestamp(created)?)?;
        Ok(DetachedSigner {
            key: key.clone(),
            created,
            input: DetachedInput::new(hash, mode)?,
        })
    }

    /// Hashes the next chunk of the input.
    pub fn update(&mut self, chunk: &[u8]) {
        self.input.update(chunk);
    }

    /// The number of input bytes hashed so far.
    pub fn input_len(&self) -> u64 {
        self.input.input_len()
    }

    /// Ends the input; the result says what the token must sign. Text mode refuses input that
    /// is not UTF-8 here.
    pub fn into_pending(self) -> Result<PendingSignature, OpenPgpError> {
        self.input.into_pending(&self.key, self.created)
    }

    /// [`into_pending`](Self::into_pending), the token call `sign` (blocking: run it off the
    /// async runtime), then [`complete`](PendingSignature::complete).
    pub fn finish(
        self,
        sign: impl FnOnce(&TokenRequest) -> Result<Vec<u8>, HsmError>,
    ) -> Result<DetachedSignature, OpenPgpError> {
        let pending = self.into_pending()?;
        let signature = sign(pending.request())?;
        pending.complete(&signature)
    }
}

/// A detached signature waiting for the token's signature.
#[derive(Debug)]
pub struct PendingSignature {
    prepared: Prepared,
}

impl PendingSignature {
    /// What the token must sign.
    pub fn request(&self) -> &TokenRequest {
        &self.prepared.request
    }

    /// The signature, with the token's signature of [`request`](Self::request) (in the
    /// scheme's standard encoding, as [`Hsm::sign`] returns it).
    pub fn complete(self, token_signature: &[u8]) -> Result<DetachedSignature, OpenPgpError> {
        DetachedSignature::new(self.prepared.complete(token_signature)?)
    }
}

/// A detached OpenPGP signature (one signature packet) in binary and ASCII-armored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedSignature {
    binary: Vec<u8>,
    armored: String,
}

impl DetachedSignature {
    fn new(signature: Signature) -> Result<Self, OpenPgpError> {
        let detached = pgp::composed::DetachedSignature::new(signature);
        Ok(DetachedSignature {
            binary: detached.to_bytes().map_err(encoding)?,
            armored: detached
                .to_armored_string(armor_options())
                .map_err(encoding)?,
        })
    }

    /// The binary signature packet (a `.sig` file).
    pub fn to_bytes(&self) -> &[u8] {
        &self.binary
    }

    /// ASCII armor: `-----BEGIN PGP SIGNATURE-----` (an `.asc` file).
    pub fn armored(&self) -> &str {
        &self.armored
    }
}

/// A cleartext-signed message (RFC 4880 §7, RFC 9580 §7): the text, readable, followed by a
/// text-mode signature.
#[derive(Debug)]
pub struct CleartextSigner;

impl CleartextSigner {
    /// Prepares a cleartext signature of `text` (UTF-8, else [`OpenPgpError::NotText`]) by
    /// `key` with `hash`, made at `created`. Every line loses its trailing spaces, tabs and
    /// CRs (in the output too) and is dash-escaped if it starts with `-` or `From `; the
    /// output uses LF line endings. A final line ending only ends the last line and is not
    /// signed, as with `gpg --clearsign`, so `gpg --decrypt` gives back the text as it was
    /// (save for the dropped whitespace).
    pub fn prepare(
        key: &OpenPgpKey,
        hash: HashAlg,
        created: OffsetDateTime,
        text: &[u8],
    ) -> Result<PendingCleartext, OpenPgpError> {
        let text = std::str::from_utf8(text).map_err(|e| OpenPgpError::NotText {
            offset: e.valid_up_to() as u64,
        })?;
        let config = key.config(SignatureType::Text, hash, timestamp(created)?)?;
        let mut hasher = new_hasher(hash)?;
        let mut body = String::with_capacity(text.len() + 16);
        let text = text.strip_suffix('\n').unwrap_or(text);
        for (i, line) in text.split('\n').enumerate() {
            let line = line.trim_end_matches([' ', '\t', '\r']);
            if i > 0 {
                hasher.update(b"\r\n");
                body.push('\n');
            }
            hasher.update(line.as_bytes());
            if line.starts_with('-') || line.starts_with("From ") {
                body.push_str("- ");
            }
            body.push_str(line);
        }
        Ok(PendingCleartext {
            prepared: Prepared::new(key, config, hasher, hash)?,
            body,
        })
    }

    /// [`prepare`](Self::prepare), the token call `sign` (blocking: run it off the async
    /// runtime), then [`complete`](PendingCleartext::complete).
    pub fn sign(
        key: &OpenPgpKey,
        hash: HashAlg,
        created: OffsetDateTime,
        text: &[u8],
        sign: impl FnOnce(&TokenRequest) -> Result<Vec<u8>, HsmError>,
    ) -> Result<String, OpenPgpError> {
        let pending = Self::prepare(key, hash, created, text)?;
        let signature = sign(pending.request())?;
        pending.complete(&signature)
    }
}

/// A cleartext-signed message waiting for the token's signature.
#[derive(Debug)]
pub struct PendingCleartext {
    prepared: Prepared,
    /// The dash-escaped text, LF line endings, without the line ending before the signature.
    body: String,
}

impl PendingCleartext {
    /// What the token must sign.
    pub fn request(&self) -> &TokenRequest {
        &self.prepared.request
    }

    /// The whole message (`-----BEGIN PGP SIGNED MESSAGE-----` … `-----END PGP
    /// SIGNATURE-----`), with the token's signature of [`request`](Self::request).
    pub fn complete(self, token_signature: &[u8]) -> Result<String, OpenPgpError> {
        let hash = self.prepared.request.hash;
        let signature = DetachedSignature::new(self.prepared.complete(token_signature)?)?;
        let mut out = String::with_capacity(self.body.len() + signature.armored.len() + 64);
        out.push_str("-----BEGIN PGP SIGNED MESSAGE-----\nHash: ");
        out.push_str(armor_hash_name(hash));
        out.push_str("\n\n");
        out.push_str(&self.body);
        out.push('\n');
        out.push_str(&signature.armored);
        Ok(out)
    }
}

/// The longest detached signature or cleartext-signed message [`SignatureToCheck`] and
/// [`CleartextToCheck`] read (a signature is well under 2 KiB; a cleartext message is bounded
/// by the caller's own limit below this).
pub const MAX_SIGNATURE_LEN: usize = 64 * 1024;

/// Why a signature offered for verification cannot be checked at all (a malformed or
/// unsupported one, as opposed to one that does not verify).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not a detached OpenPGP signature (armored or binary), or more than one.
    #[error("not an OpenPGP signature: {0}")]
    Malformed(String),
    /// A signature this daemon never makes: another version, type or hash.
    #[error("unsupported OpenPGP signature: {0}")]
    Unsupported(String),
    /// Over [`MAX_SIGNATURE_LEN`].
    #[error("an OpenPGP signature is limited to {MAX_SIGNATURE_LEN} bytes")]
    TooLong,
}

fn hash_of(alg: HashAlgorithm) -> Result<HashAlg, ReadError> {
    match alg {
        HashAlgorithm::Sha256 => Ok(HashAlg::Sha256),
        HashAlgorithm::Sha384 => Ok(HashAlg::Sha384),
        HashAlgorithm::Sha512 => Ok(HashAlg::Sha512),
        other => Err(ReadError::Unsupported(format!("hash {other:?}"))),
    }
}

/// Who a signature says made it: issuer fingerprints (40 hex digits) and key ids (16),
/// upper case, as [`OpenPgpKey::fingerprint`] and [`OpenPgpKey::key_id`] write them.
fn issuers(signature: &Signature) -> Vec<String> {
    let mut ids: Vec<String> = signature
        .issuer_fingerprint()
        .iter()
        .map(|f| hex::encode_upper(f.as_bytes()))
        .collect();
    ids.extend(
        signature
            .issuer_key_id()
            .iter()
            .map(|k| hex::encode_upper(k.as_ref())),
    );
    ids
}

fn created_of(signature: &Signature) -> Option<OffsetDateTime> {
    signature
        .created()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(i64::from(t.as_secs())).ok())
}

/// A detached OpenPGP signature offered for verification: one v4 signature packet of a
/// binary (0x00) or text (0x01) document with SHA-256/384/512, armored or binary. The
/// document is then streamed into [`input`](Self::input) and checked with
/// [`verify`](Self::verify); memory does not grow with it.
#[derive(Debug, Clone)]
pub struct SignatureToCheck {
    signature: Signature,
    hash: HashAlg,
    mode: SignatureMode,
}

impl SignatureToCheck {
    /// Reads `bytes`: ASCII armor (`-----BEGIN PGP SIGNATURE-----`) or binary packets.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReadError> {
        if bytes.len() > MAX_SIGNATURE_LEN {
            return Err(ReadError::TooLong);
        }
        let malformed = |e: pgp::errors::Error| ReadError::Malformed(e.to_string());
        let found = if bytes
            .trim_ascii_start()
            .starts_with(b"-----BEGIN PGP SIGNATURE-----")
        {
            pgp::composed::DetachedSignature::from_armor_single(bytes)
                .map_err(malformed)?
                .0
        } else {
            let mut many =
                pgp::composed::DetachedSignature::from_bytes_many(bytes).map_err(malformed)?;
            let first = many
                .next()
                .ok_or_else(|| ReadError::Malformed("no signature packet".into()))?
                .map_err(malformed)?;
            if many.next().is_some() {
                return Err(ReadError::Malformed("more than one packet".into()));
            }
            first
        };
        let signature = found.signature;
        Self::from_signature(signature)
    }

    fn from_signature(signature: Signature) -> Result<Self, ReadError> {
        let mode = match signature.typ() {
            Some(SignatureType::Binary) => SignatureMode::Binary,
            Some(SignatureType::Text) => SignatureMode::Text,
            other => {
                return Err(ReadError::Unsupported(format!(
                    "signature type {other:?}; a detached signature is binary or text"
                )));
            }
        };
        if signature.config().map(SignatureConfig::version) != Some(SignatureVersion::V4) {
            return Err(ReadError::Unsupported(format!(
                "signature version {:?}; signetd makes v4",
                signature.version()
            )));
        }
        let hash = hash_of(
            signature
                .hash_alg()
                .ok_or_else(|| ReadError::Unsupported("no hash algorithm".into()))?,
        )?;
        Ok(SignatureToCheck {
            signature,
            hash,
            mode,
        })
    }

    /// The issuer fingerprints and key ids the signature names (upper-case hex).
    pub fn issuers(&self) -> Vec<String> {
        issuers(&self.signature)
    }

    /// Its hash algorithm.
    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    /// Binary or text.
    pub fn mode(&self) -> SignatureMode {
        self.mode
    }

    /// Its creation time, if it names one.
    pub fn created(&self) -> Option<OffsetDateTime> {
        created_of(&self.signature)
    }

    /// A hasher for the document, to feed in chunks of any size.
    pub fn input(&self) -> Result<DetachedInput, OpenPgpError> {
        DetachedInput::new(self.hash, self.mode)
    }

    /// Whether the document hashed into `input` is signed by `key`. `Ok(false)` for a
    /// signature that does not verify, by another key, or (text mode) over input that is not
    /// UTF-8.
    pub fn verify(&self, input: DetachedInput, key: &OpenPgpKey) -> Result<bool, OpenPgpError> {
        let Some(config) = self.signature.config() else {
            return Ok(false);
        };
        let Some(bytes) = self.signature.signature() else {
            return Ok(false);
        };
        if input.hash != self.hash || input.mode != self.mode {
            return Ok(false);
        }
        let ours = [key.fingerprint(), key.key_id()];
        if !self.issuers().iter().any(|i| ours.contains(i)) {
            return Ok(false);
        }
        if let Some(text) = input.text
            && text.finish().is_err()
        {
            return Ok(false);
        }
        let mut hasher = input.hasher;
        let len = config.hash_signature_data(&mut hasher).map_err(encoding)?;
        hasher.update(&config.trailer(len).map_err(encoding)?);
        let digest = hasher.finalize();
        if self.signature.signed_hash_value() != Some([digest[0], digest[1]]) {
            return Ok(false);
        }
        Ok(key
            .packet
            .verify(pgp_hash(self.hash), &digest, bytes)
            .is_ok())
    }
}

/// A cleartext-signed message offered for verification (`-----BEGIN PGP SIGNED
/// MESSAGE-----`, one signature).
#[derive(Debug, Clone)]
pub struct CleartextToCheck {
    message: pgp::composed::CleartextSignedMessage,
    hash: HashAlg,
}

impl CleartextToCheck {
    /// Reads a whole message (UTF-8, at most [`MAX_SIGNATURE_LEN`] plus `limit` bytes of text).
    pub fn parse(message: &[u8]) -> Result<Self, ReadError> {
        let text = std::str::from_utf8(message)
            .map_err(|_| ReadError::Malformed("a cleartext-signed message is UTF-8 text".into()))?;
        let (message, _) = pgp::composed::CleartextSignedMessage::from_string(text)
            .map_err(|e| ReadError::Malformed(e.to_string()))?;
        let [signature] = message.signatures() else {
            return Err(ReadError::Unsupported(format!(
                "{} signatures; signetd makes one",
                message.signatures().len()
            )));
        };
        let checked = SignatureToCheck::from_signature(signature.clone())?;
        if checked.mode != SignatureMode::Text {
            return Err(ReadError::Unsupported(
                "a cleartext signature is a text signature".into(),
            ));
        }
        Ok(CleartextToCheck {
            hash: checked.hash,
            message,
        })
    }

    /// The issuer fingerprints and key ids the signature names (upper-case hex).
    pub fn issuers(&self) -> Vec<String> {
        self.message
            .signatures()
            .first()
            .map(issuers)
            .unwrap_or_default()
    }

    /// Its hash algorithm.
    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    /// Its creation time, if it names one.
    pub fn created(&self) -> Option<OffsetDateTime> {
        self.message.signatures().first().and_then(created_of)
    }

    /// The signed text, dash-escaping undone and trailing whitespace dropped, LF line endings.
    pub fn text(&self) -> String {
        self.message.signed_text().replace("\r\n", "\n")
    }

    /// Whether `key` signed the message.
    pub fn verify(&self, key: &OpenPgpKey) -> bool {
        self.message.verify(&key.packet).is_ok()
    }
}

/// Text-mode canonicalisation as GnuPG 2.2 hashes text signatures: LF becomes CR LF, CRs
/// right before an LF or at the end of the input are dropped, other CRs kept. Also checks that
/// the input is UTF-8. Holds only a count of pending CRs and at most three bytes of a
/// character split between chunks.
#[derive(Debug, Default)]
struct TextCanon {
    pending_cr: u64,
    utf8: Utf8Stream,
}

impl TextCanon {
    fn update(&mut self, chunk: &[u8], hasher: &mut (dyn pgp_digest::DynDigest + Send)) {
        self.utf8.update(chunk);
        let mut rest = chunk;
        while !rest.is_empty() {
            let end = rest
                .iter()
                .position(|b| *b == b'\r' || *b == b'\n')
                .unwrap_or(rest.len());
            if end > 0 {
                self.flush_cr(hasher);
                hasher.update(&rest[..end]);
            }
            match rest.get(end) {
                Some(b'\r') => self.pending_cr += 1,
                Some(_) => {
                    self.pending_cr = 0;
                    hasher.update(b"\r\n");
                }
                None => {}
            }
            rest = rest.get(end + 1..).unwrap_or(&[]);
        }
    }

    /// CRs followed by something other than LF belong to the text.
    fn flush_cr(&mut self, hasher: &mut (dyn pgp_digest::DynDigest + Send)) {
        const CRS: [u8; 64] = [b'\r'; 64];
        while self.pending_cr > 0 {
            let n = self.pending_cr.min(CRS.len() as u64);
            hasher.update(&CRS[..n as usize]);
            self.pending_cr -= n;
        }
    }

    /// Pending CRs at the end are dropped, as GnuPG does.
    fn finish(self) -> Result<(), OpenPgpError> {
        self.utf8.finish()
    }
}

/// Incremental UTF-8 validation over chunks.
#[derive(Debug, Default)]
struct Utf8Stream {
    /// Bytes of a character that the last chunk cut.
    partial: [u8; 4],
    partial_len: usize,
    /// Bytes seen before the current chunk.
    offset: u64,
    /// Offset of the first invalid byte.
    error: Option<u64>,
}

impl Utf8Stream {
    fn update(&mut self, chunk: &[u8]) {
        let start = self.offset;
        self.offset = self.offset.saturating_add(chunk.len() as u64);
        if self.error.is_some() {
            return;
        }
        let mut rest = chunk;
        let mut rest_start = start;
        if self.partial_len > 0 {
            let char_start = start - self.partial_len as u64;
            let width = utf8_width(self.partial[0]);
            let take = (width - self.partial_len).min(rest.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&rest[..take]);
            self.partial_len += take;
            rest = &rest[take..];
            rest_start += take as u64;
            if self.partial_len < width {
                return;
            }
            if std::str::from_utf8(&self.partial[..width]).is_err() {
                self.error = Some(char_start);
                return;
            }
            self.partial_len = 0;
        }
        if let Err(e) = std::str::from_utf8(rest) {
            let valid = e.valid_up_to();
            let tail = &rest[valid..];
            if e.error_len().is_some() || tail.len() > 3 {
                self.error = Some(rest_start + valid as u64);
            } else {
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len();
            }
        }
    }

    fn finish(self) -> Result<(), OpenPgpError> {
        match self.error {
            Some(offset) => Err(OpenPgpError::NotText { offset }),
            None if self.partial_len > 0 => Err(OpenPgpError::NotText {
                offset: self.offset - self.partial_len as u64,
            }),
            None => Ok(()),
        }
    }
}

/// Length of the UTF-8 sequence a lead byte starts (the byte is one `from_utf8` accepted as
/// the start of an incomplete character, so 2 to 4).
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        _ => 2,
    }
}

/// A token key with its OpenPGP identity: signs [`TokenRequest`]s through the HSM layer
/// (which verifies every signature in software before returning it), and implements rpgp's
/// [`SigningKey`] so rpgp's own composition functions can sign with the token.
#[derive(Debug, Clone)]
pub struct TokenKey {
    hsm: Hsm,
    slot: Arc<KeySlot>,
    key: OpenPgpKey,
}

impl TokenKey {
    /// The OpenPGP key of `slot` created at `created` (the persisted creation time).
    pub fn new(
        hsm: Hsm,
        slot: Arc<KeySlot>,
        created: OffsetDateTime,
    ) -> Result<Self, OpenPgpError> {
        let key = OpenPgpKey::new(slot.public_key(), slot.algorithm(), created)?;
        Ok(TokenKey { hsm, slot, key })
    }

    /// The OpenPGP public key.
    pub fn key(&self) -> &OpenPgpKey {
        &self.key
    }

    /// Signs `request` on the token, on this thread: call it only off the async runtime
    /// (inside `spawn_blocking`), e.g. as the `finish` closure there.
    pub fn request_signature_blocking(&self, request: &TokenRequest) -> Result<Vec<u8>, HsmError> {
        self.hsm
            .sign_blocking(&self.slot, request.scheme(), request.input())
    }

    /// Signs `request` on a token thread, with the HSM layer's bounded parallelism (for async
    /// callers: [`into_pending`](DetachedSigner::into_pending), this, then `complete`).
    pub async fn request_signature(&self, request: &TokenRequest) -> Result<Vec<u8>, HsmError> {
        self.hsm
            .sign(&self.slot, request.scheme(), request.input_buf())
            .await
    }
}

impl KeyDetails for TokenKey {
    fn version(&self) -> KeyVersion {
        self.key.packet.version()
    }

    fn legacy_key_id(&self) -> KeyId {
        self.key.packet.legacy_key_id()
    }

    fn fingerprint(&self) -> Fingerprint {
        self.key.packet.fingerprint()
    }

    fn algorithm(&self) -> PublicKeyAlgorithm {
        self.key.packet.algorithm()
    }

    fn created_at(&self) -> Timestamp {
        self.key.packet.created_at()
    }

    fn legacy_v3_expiration_days(&self) -> Option<u16> {
        None
    }

    fn public_params(&self) -> &PublicParams {
        self.key.packet.public_params()
    }
}

impl SigningKey for TokenKey {
    /// Signs the OpenPGP digest `data` on the token (blocking). The password is not used: the
    /// token session is already logged in.
    fn sign(
        &self,
        _key_pw: &Password,
        hash: HashAlgorithm,
        data: &[u8],
    ) -> pgp::errors::Result<SignatureBytes> {
        let message = |message: String| pgp::errors::Error::Message {
            message,
            backtrace: None,
        };
        let hash = match hash {
            HashAlgorithm::Sha256 => HashAlg::Sha256,
            HashAlgorithm::Sha384 => HashAlg::Sha384,
            HashAlgorithm::Sha512 => HashAlg::Sha512,
            other => return Err(message(format!("token keys do not sign with {other:?}"))),
        };
        self.key
            .check_hash(hash)
            .map_err(|e| message(e.to_string()))?;
        let request = TokenRequest {
            scheme: self.key.scheme(hash),
            hash,
            digest: data.to_vec(),
        };
        let signature = self
            .request_signature_blocking(&request)
            .map_err(|e| message(e.to_string()))?;
        self.key
            .signature_bytes(&signature)
            .map_err(|e| message(e.to_string()))
    }

    fn hash_alg(&self) -> HashAlgorithm {
        pgp_hash(self.key.default_hash())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;

    /// Hashes `chunks` through the text canonicaliser, returning what was hashed.
    fn canon(chunks: &[&[u8]]) -> (Vec<u8>, Result<(), OpenPgpError>) {
        #[derive(Clone, Default)]
        struct Collect(Vec<u8>);
        impl pgp_digest::DynDigest for Collect {
            fn update(&mut self, data: &[u8]) {
                self.0.extend_from_slice(data);
            }
            fn finalize_into(self, _: &mut [u8]) -> Result<(), pgp_digest::InvalidBufferSize> {
                Ok(())
            }
            fn finalize_into_reset(
                &mut self,
                _: &mut [u8],
            ) -> Result<(), pgp_digest::InvalidBufferSize> {
                Ok(())
            }
            fn reset(&mut self) {}
            fn output_size(&self) -> usize {
                0
            }
            fn box_clone(&self) -> Box<dyn pgp_digest::DynDigest> {
                Box::new(self.clone())
            }
        }
        let mut out = Collect::default();
        let mut text = TextCanon::default();
        for c in chunks {
            text.update(c, &mut out);
        }
        (out.0, text.finish())
    }

    #[test]
    fn text_mode_canonicalises_like_gnupg() {
        // Each case was checked against `gpg --textmode --detach-sign` / `gpg --verify`.
        let cases: &[(&[u8], &[u8])] = &[
            (b"hello  \nworld\t\n", b"hello  \r\nworld\t\r\n"),
            (b"a\r\nb", b"a\r\nb"),
            (b"a\r\r\nb", b"a\r\nb"),
            (b"abc\r", b"abc"),
            (b"a\rb\n", b"a\rb\r\n"),
            (b"\n\n", b"\r\n\r\n"),
            (b"", b""),
        ];
        for (input, expected) in cases {
            let (whole, ok) = canon(&[input]);
            assert!(ok.is_ok());
            assert_eq!(&whole, expected, "{input:?}");
            // Every split into two chunks gives the same bytes.
            for i in 0..=input.len() {
                let (split, _) = canon(&[&input[..i], &input[i..]]);
                assert_eq!(&split, expected, "{input:?} split at {i}");
            }
        }
        // Byte by byte, with a CR run across chunks.
        let input = b"x\r\r\ry\r\r\n";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(canon(&chunks).0, b"x\r\r\ry\r\n");
    }

    #[test]
    fn utf8_is_checked_across_chunks() {
        let text = "grüße, 世界 🦀\n".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let (_, ok) = canon(&[&text[..i], &text[i..j], &text[j..]]);
                assert!(ok.is_ok(), "split at {i}, {j}");
            }
        }
        let bad = [&b"ok "[..], &[0xe4, 0xb8][..], &[0x41][..]];
        assert!(matches!(
            canon(&bad).1,
            Err(OpenPgpError::NotText { offset: 3 })
        ));
        let truncated = [&b"ok"[..], &[0xf0, 0x9f, 0xa6][..]];
        assert!(matches!(
            canon(&truncated).1,
            Err(OpenPgpError::NotText { offset: 2 })
        ));
        let latin1 = [&b"caf"[..], &[0xe9][..], &b" au lait"[..]];
        assert!(matches!(
            canon(&latin1).1,
            Err(OpenPgpError::NotText { offset: 3 })
        ));
        assert!(matches!(
            canon(&[&[0xff][..]]).1,
            Err(OpenPgpError::NotText { offset: 0 })
        ));
    }

    fn p256_key(created: i64) -> (p256::ecdsa::SigningKey, OpenPgpKey) {
        use p256::pkcs8::EncodePublicKey as _;
        let signer = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("key");
        let spki = signer.verifying_key().to_public_key_der().expect("spki");
        let key = OpenPgpKey::new(
            spki.as_bytes(),
            KeyAlgorithm::EcP256,
            OffsetDateTime::from_unix_timestamp(created).expect("time"),
        )
        .expect("key");
        (signer, key)
    }

    fn ed25519_key() -> (ed25519_dalek::SigningKey, OpenPgpKey) {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        let signer = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
        let spki = signer.verifying_key().to_public_key_der().expect("spki");
        let key = OpenPgpKey::new(
            spki.as_bytes(),
            KeyAlgorithm::Ed25519,
            OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
        )
        .expect("key");
        (signer, key)
    }

    /// Signs a request as the token would (standard encodings), in software.
    fn p256_sign(signer: &p256::ecdsa::SigningKey, r: &TokenRequest) -> Vec<u8> {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let digest = &r.digest()[..32];
        let sig: p256::ecdsa::Signature = signer.sign_prehash(digest).expect("sign");
        sig.to_der().as_bytes().to_vec()
    }

    #[test]
    fn key_packet_fingerprint_depends_on_key_and_time() {
        let (_, a) = p256_key(1_700_000_000);
        let (_, b) = p256_key(1_700_000_000);
        let (_, c) = p256_key(1_700_000_001);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint().len(), 40);
        assert_eq!(a.key_id(), a.fingerprint()[24..]);
        assert_eq!(a.created(), 1_700_000_000);
        // The fingerprint is SHA-1 over 0x99, length, the packet body.
        let body = a.packet().to_bytes().expect("body");
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
        h.update(&[0x99, 0, u8::try_from(body.len()).expect("short")]);
        h.update(&body);
        assert_eq!(hex::encode_upper(h.finish()), a.fingerprint());
        // EdDSALegacy: algorithm 22 and the legacy curve OID.
        let (_, ed) = ed25519_key();
        let body = ed.packet().to_bytes().expect("body");
        assert_eq!(body[5], 22);
        assert_eq!(&body[6..16], &[&[9u8][..], ED25519_LEGACY_OID].concat()[..]);
        assert_eq!(&body[16..19], &[0x01, 0x07, 0x40]);
    }

    #[test]
    fn keys_of_the_wrong_kind_and_bad_times_are_refused() {
        let (_, key) = p256_key(1_700_000_000);
        use p256::pkcs8::EncodePublicKey as _;
        let spki = p256::ecdsa::SigningKey::from_slice(&[7u8; 32])
            .expect("key")
            .verifying_key()
            .to_public_key_der()
            .expect("spki");
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        for alg in [
            KeyAlgorithm::EcP384,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa2048,
        ] {
            assert!(matches!(
                OpenPgpKey::new(spki.as_bytes(), alg, now),
                Err(OpenPgpError::PublicKey { .. })
            ));
        }
        assert!(matches!(
            OpenPgpKey::new(b"junk", KeyAlgorithm::EcP256, now),
            Err(OpenPgpError::PublicKey { .. })
        ));
        let before_1970 = OffsetDateTime::from_unix_timestamp(-1).expect("time");
        assert!(matches!(
            OpenPgpKey::new(spki.as_bytes(), KeyAlgorithm::EcP256, before_1970),
            Err(OpenPgpError::TimeOutOfRange)
        ));
        let earlier = OffsetDateTime::from_unix_timestamp(1_600_000_000).expect("time");
        assert!(matches!(
            DetachedSigner::new(&key, HashAlg::Sha256, earlier, SignatureMode::Binary),
            Err(OpenPgpError::SignedBeforeKeyCreation { .. })
        ));
    }

    #[test]
    fn user_ids_are_validated() {
        let (_, key) = p256_key(1_700_000_000);
        for bad in [
            "",
            "a\nb",
            "a\rb",
            "nul\0",
            &"x".repeat(MAX_USER_ID_LEN + 1),
        ] {
            assert!(
                matches!(
                    CertificateBuilder::new(&key, bad),
                    Err(OpenPgpError::BadUserId(_))
                ),
                "{bad:?}"
            );
        }
        assert!(CertificateBuilder::new(&key, &"x".repeat(MAX_USER_ID_LEN)).is_ok());
        assert!(CertificateBuilder::new(&key, "Signet <signet@example.org>").is_ok());
    }

    #[test]
    fn p384_needs_a_long_hash() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        use p384::pkcs8::EncodePublicKey as _;
        let spki = p384::ecdsa::SigningKey::from_slice(&[9u8; 48])
            .expect("key")
            .verifying_key()
            .to_public_key_der()
            .expect("spki");
        let key = OpenPgpKey::new(spki.as_bytes(), KeyAlgorithm::EcP384, now).expect("key");
        assert_eq!(key.default_hash(), HashAlg::Sha384);
        assert!(matches!(
            DetachedSigner::new(&key, HashAlg::Sha256, now, SignatureMode::Binary),
            Err(OpenPgpError::UnsupportedHash { .. })
        ));
        assert!(DetachedSigner::new(&key, HashAlg::Sha512, now, SignatureMode::Binary).is_ok());
    }

    #[test]
    fn certificate_and_signatures_with_a_software_p256_signer() {
        let (signer, key) = p256_key(1_700_000_000);
        let cert = CertificateBuilder::new(&key, "Test <t@example.org>")
            .expect("uid")
            .finish(|r| {
                assert_eq!(
                    r.scheme(),
                    SignatureScheme::Ecdsa(EcCurve::P256, HashAlg::Sha256)
                );
                assert!(matches!(r.input(), SignInput::Digest(d) if d.len() == 32));
                Ok(p256_sign(&signer, r))
            })
            .expect("certificate");
        assert!(
            cert.armored()
                .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
        );
        let (parsed, _) = SignedPublicKey::from_string(cert.armored()).expect("parse");
        parsed.verify_bindings().expect("self-signature");
        assert_eq!(
            hex::encode_upper(parsed.fingerprint().as_bytes()),
            key.fingerprint()
        );
        assert_eq!(
            SignedPublicKey::from_bytes(cert.to_bytes()).expect("binary"),
            parsed
        );

        // Detached, streamed in uneven chunks, checked by rpgp over the whole input.
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_100).expect("time");
        let mut s =
            DetachedSigner::new(&key, HashAlg::Sha512, now, SignatureMode::Binary).expect("signer");
        for chunk in data.chunks(7_777) {
            s.update(chunk);
        }
        assert_eq!(s.input_len(), 100_000);
        let sig = s.finish(|r| Ok(p256_sign(&signer, r))).expect("signature");
        let (parsed_sig, _) =
            pgp::composed::DetachedSignature::from_string(sig.armored()).expect("parse");
        parsed_sig.verify(key.packet(), &data).expect("verifies");
        assert!(parsed_sig.verify(key.packet(), &data[1..]).is_err());

        // A signature from another key is caught before it leaves.
        let other = p256::ecdsa::SigningKey::from_slice(&[8u8; 32]).expect("key");
        let s =
            DetachedSigner::new(&key, HashAlg::Sha256, now, SignatureMode::Binary).expect("signer");
        assert!(matches!(
            s.finish(|r| Ok(p256_sign(&other, r))),
            Err(OpenPgpError::BadSignature(_))
        ));
        // Token errors pass through.
        let s =
            DetachedSigner::new(&key, HashAlg::Sha256, now, SignatureMode::Text).expect("signer");
        assert!(matches!(
            s.finish(|_| Err(HsmError::Worker("down".into()))),
            Err(OpenPgpError::Token(_))
        ));
    }

    #[test]
    fn cleartext_with_a_software_ed25519_signer() {
        use ed25519_dalek::Signer as _;
        let (signer, key) = ed25519_key();
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_100).expect("time");
        let text = "Hello  \n- dash\r\nFrom here\t\n-----BEGIN PGP SIGNATURE-----\nend\n";
        let msg = CleartextSigner::sign(&key, HashAlg::Sha256, now, text.as_bytes(), |r| {
            assert_eq!(r.scheme(), SignatureScheme::Ed25519);
            let SignInput::Message(m) = r.input() else {
                panic!("EdDSALegacy signs the digest as a message")
            };
            Ok(signer.sign(m).to_bytes().to_vec())
        })
        .expect("cleartext");
        let expected_head = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nHello\n- - dash\n\
             - From here\n- -----BEGIN PGP SIGNATURE-----\nend\n-----BEGIN PGP SIGNATURE-----\n";
        assert!(msg.starts_with(expected_head), "{msg}");
        let (parsed, _) = pgp::composed::CleartextSignedMessage::from_string(&msg).expect("parse");
        parsed.verify(key.packet()).expect("verifies");
        assert_eq!(
            parsed.signed_text(),
            "Hello\r\n- dash\r\nFrom here\r\n-----BEGIN PGP SIGNATURE-----\r\nend"
        );
        // Only one final line ending is dropped: an empty last line stays.
        let two = CleartextSigner::sign(&key, HashAlg::Sha256, now, b"a\n\n", |r| {
            Ok(signer.sign(r.digest()).to_bytes().to_vec())
        })
        .expect("cleartext");
        assert!(
            two.contains("\n\na\n\n-----BEGIN PGP SIGNATURE-----"),
            "{two}"
        );
        assert!(matches!(
            CleartextSigner::prepare(&key, HashAlg::Sha256, now, b"caf\xe9"),
            Err(OpenPgpError::NotText { offset: 3 })
        ));
        // The digest is over the canonical text: SHA-256 of the whole hashed stream.
        let pending = CleartextSigner::prepare(&key, HashAlg::Sha256, now, b"x").expect("ok");
        assert_eq!(pending.request().digest().len(), 32);
    }
}
