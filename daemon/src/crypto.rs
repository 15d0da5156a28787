//! crypto: software-only cryptography — hashing, the signature schemes the daemon offers and
//! how each is prepared for the token and encoded, and the verification that every token
//! signature passes before it leaves the daemon (invariant 8). Never holds a private key.
//!
//! A signature is made in three steps: [`SignatureScheme::prepare`] turns the client's input
//! (a message, or a digest the client computed) into what the token signs and the mechanism it
//! signs with; the token signs; [`SignatureScheme::finish`] turns the token's raw output into
//! the scheme's standard encoding, which [`SignatureScheme::verify`] checks. Hashing always
//! happens here, in software: tokens differ in which hash-and-sign mechanisms they offer
//! (SoftHSM2 has no `CKM_ECDSA_SHA256`), but all offer the raw ones.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use aws_lc_rs::signature::ParsedPublicKey;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use spki::AlgorithmIdentifierOwned;

use crate::hsm::KeyAlgorithm;

/// Errors of software verification and encoding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The public key could not be parsed or does not fit the scheme.
    #[error("unusable public key: {0}")]
    PublicKey(String),
    /// The signature is malformed or does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A structure could not be DER-encoded.
    #[error("encoding: {0}")]
    Encoding(String),
    /// The input or encoding does not fit the scheme.
    #[error(transparent)]
    Scheme(#[from] SchemeError),
}

/// Why a requested signature scheme, input or encoding is refused. Every message is safe to
/// show to the client: it names only the daemon's own vocabulary (algorithm, hash, padding and
/// encoding names, lengths), never the client's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemeError {
    /// A hash name the daemon does not know.
    #[error("unknown hash: expected one of sha256, sha384, sha512")]
    UnknownHash,
    /// A padding name the daemon does not know.
    #[error("unknown padding: expected pkcs1 or pss")]
    UnknownPadding,
    /// An ECDSA signature encoding the daemon does not know.
    #[error("unknown signature encoding: expected der or raw")]
    UnknownEncoding,
    /// A scheme name the daemon does not know.
    #[error("unknown signature scheme")]
    UnknownScheme,
    /// Padding (PKCS#1 v1.5, PSS) was asked for a key that is not RSA.
    #[error("padding applies to RSA keys only, not to {key} keys")]
    PaddingNeedsRsa {
        /// The key's algorithm.
        key: KeyAlgorithm,
    },
    /// A hash was asked for an Ed25519 key.
    #[error("Ed25519 signs the message itself (pure Ed25519) and takes no hash")]
    Ed25519TakesNoHash,
    /// A digest was given to an Ed25519 key.
    #[error("Ed25519 signs messages only; pre-hashed input (Ed25519ph) is not offered")]
    Ed25519NeedsMessage,
    /// The digest has the wrong length for its hash.
    #[error("a {hash} digest is {expected} bytes, not {actual}")]
    DigestLength {
        /// The scheme's hash.
        hash: HashAlg,
        /// The hash's output length.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// An ECDSA signature encoding was asked for a scheme that is not ECDSA.
    #[error("the signature encoding (der or raw) applies to ECDSA signatures only")]
    EncodingNeedsEcdsa,
    /// The scheme cannot be used with the key.
    #[error("signature scheme {scheme} does not fit the key's algorithm {key}")]
    KeyMismatch {
        /// The scheme.
        scheme: SignatureScheme,
        /// The key's algorithm.
        key: KeyAlgorithm,
    },
}

/// `as_str`, `Display` and `FromStr` for an enum whose variants have API names.
macro_rules! api_names {
    ($ty:ident, $unknown:expr, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The API name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = SchemeError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err($unknown),
                }
            }
        }
    };
}

api_names!(HashAlg, SchemeError::UnknownHash, { Sha256 => "sha256", Sha384 => "sha384", Sha512 => "sha512" });
api_names!(Padding, SchemeError::UnknownPadding, { Pkcs1 => "pkcs1", Pss => "pss" });
api_names!(EcdsaEncoding, SchemeError::UnknownEncoding, { Der => "der", Raw => "raw" });

/// A hash function. API names: `sha256`, `sha384`, `sha512`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HashAlg {
    /// SHA-256
    #[serde(rename = "sha256")]
    Sha256,
    /// SHA-384
    #[serde(rename = "sha384")]
    Sha384,
    /// SHA-512
    #[serde(rename = "sha512")]
    Sha512,
}

/// DER of a DigestInfo (RFC 8017 §9.2, note 1) up to the digest, for each hash.
const DIGEST_INFO_SHA256: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const DIGEST_INFO_SHA384: &[u8] = &[
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const DIGEST_INFO_SHA512: &[u8] = &[
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

impl HashAlg {
    /// Every hash.
    pub const ALL: &'static [HashAlg] = &[HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];

    /// The digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
            HashAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// The DER DigestInfo of `digest` (RFC 8017 §9.2), what PKCS#1 v1.5 signs.
    fn digest_info(self, digest: &[u8]) -> Vec<u8> {
        let prefix = match self {
            HashAlg::Sha256 => DIGEST_INFO_SHA256,
            HashAlg::Sha384 => DIGEST_INFO_SHA384,
            HashAlg::Sha512 => DIGEST_INFO_SHA512,
        };
        [prefix, digest].concat()
    }

    /// The AlgorithmIdentifier of the hash, with NULL parameters as OpenSSL writes them.
    fn algorithm_identifier(self) -> AlgorithmIdentifierOwned {
        let oid = match self {
            HashAlg::Sha256 => const_oid::db::rfc5912::ID_SHA_256,
            HashAlg::Sha384 => const_oid::db::rfc5912::ID_SHA_384,
            HashAlg::Sha512 => const_oid::db::rfc5912::ID_SHA_512,
        };
        AlgorithmIdentifierOwned {
            oid,
            parameters: Some(der::Any::null()),
        }
    }

    /// The same hash in aws-lc.
    fn aws_algorithm(self) -> &'static aws_lc_rs::digest::Algorithm {
        match self {
            HashAlg::Sha256 => &aws_lc_rs::digest::SHA256,
            HashAlg::Sha384 => &aws_lc_rs::digest::SHA384,
            HashAlg::Sha512 => &aws_lc_rs::digest::SHA512,
        }
    }

    /// Checks that `digest` has this hash's length.
    fn check_digest(self, digest: &[u8]) -> Result<(), SchemeError> {
        if digest.len() == self.output_len() {
            Ok(())
        } else {
            Err(SchemeError::DigestLength {
                hash: self,
                expected: self.output_len(),
                actual: digest.len(),
            })
        }
    }
}

/// RSA signature padding. API names: `pkcs1` (PKCS#1 v1.5), `pss` (RSASSA-PSS with MGF1 over
/// the same hash and a salt as long as the hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Padding {
    /// RSASSA-PKCS1-v1_5.
    #[serde(rename = "pkcs1")]
    Pkcs1,
    /// RSASSA-PSS, MGF1 with the signature's hash, salt length = hash length.
    #[serde(rename = "pss")]
    Pss,
}

/// An elliptic curve for ECDSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

impl EcCurve {
    /// The curve's name as part of scheme names.
    pub fn as_str(self) -> &'static str {
        match self {
            EcCurve::P256 => "p256",
            EcCurve::P384 => "p384",
        }
    }

    /// Length in bytes of the group order, and so of `r`, `s` and the digest the token signs.
    /// Both orders are a whole number of bytes long, so cutting a digest to this many bytes is
    /// exactly the leftmost-bits truncation of FIPS 186-5 §6.4.1.
    pub fn order_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
        }
    }

    /// DER `Ecdsa-Sig-Value` → `r‖s` (each left-padded to the order length).
    pub fn der_to_raw(self, der: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            EcCurve::P256 => p256::ecdsa::Signature::from_der(der).map(|s| s.to_bytes().to_vec()),
            EcCurve::P384 => p384::ecdsa::Signature::from_der(der).map(|s| s.to_bytes().to_vec()),
        }
        .map_err(|_| CryptoError::BadSignature)
    }

    /// `r‖s` → DER `Ecdsa-Sig-Value`.
    pub fn raw_to_der(self, raw: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            EcCurve::P256 => {
                p256::ecdsa::Signature::from_slice(raw).map(|s| s.to_der().as_bytes().to_vec())
            }
            EcCurve::P384 => {
                p384::ecdsa::Signature::from_slice(raw).map(|s| s.to_der().as_bytes().to_vec())
            }
        }
        .map_err(|_| CryptoError::BadSignature)
    }
}

/// How an ECDSA signature is handed to the client. API names: `der` (the default, an ASN.1
/// `Ecdsa-Sig-Value`, what X.509, CMS and OpenSSL use) and `raw` (`r‖s`, each as long as the
/// curve order, what JOSE/WebCrypto and PKCS#11 use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum EcdsaEncoding {
    /// DER `Ecdsa-Sig-Value`.
    #[default]
    #[serde(rename = "der")]
    Der,
    /// `r‖s`.
    #[serde(rename = "raw")]
    Raw,
}

/// What is signed: the message itself, or a digest of it that the client computed with the
/// scheme's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInput<'a> {
    /// The message; the daemon hashes it (or, for Ed25519, the token signs it as is).
    Message(&'a [u8]),
    /// The digest of the message under the scheme's hash.
    Digest(&'a [u8]),
}

impl SignInput<'_> {
    /// The input's bytes, whichever kind it is.
    pub fn bytes(&self) -> &[u8] {
        match self {
            SignInput::Message(b) | SignInput::Digest(b) => b,
        }
    }

    /// An owned copy, to move to a blocking thread.
    pub fn to_buf(&self) -> SignInputBuf {
        match *self {
            SignInput::Message(m) => SignInputBuf::Message(m.to_vec()),
            SignInput::Digest(d) => SignInputBuf::Digest(d.to_vec()),
        }
    }
}

/// Bare bytes are a message: a digest is always said to be one.
impl<'a> From<&'a [u8]> for SignInput<'a> {
    fn from(message: &'a [u8]) -> Self {
        SignInput::Message(message)
    }
}

/// The owned form of [`SignInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInputBuf {
    /// The message.
    Message(Vec<u8>),
    /// The digest of the message under the scheme's hash.
    Digest(Vec<u8>),
}

/// Bare bytes are a message: a digest is always said to be one.
impl From<Vec<u8>> for SignInputBuf {
    fn from(message: Vec<u8>) -> Self {
        SignInputBuf::Message(message)
    }
}

impl From<SignInput<'_>> for SignInputBuf {
    fn from(input: SignInput<'_>) -> Self {
        input.to_buf()
    }
}

impl SignInputBuf {
    /// The borrowed form.
    pub fn as_input(&self) -> SignInput<'_> {
        match self {
            SignInputBuf::Message(m) => SignInput::Message(m),
            SignInputBuf::Digest(d) => SignInput::Digest(d),
        }
    }
}

/// A complete signature scheme: what the token computes and how the result is encoded.
/// Schemes are named `rsa-pkcs1-sha256`, `rsa-pss-sha384`, `ecdsa-p256-sha256`, `ed25519`, ...
/// (see [`SignatureScheme::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    /// RSASSA-PKCS1-v1_5 with the hash.
    RsaPkcs1(HashAlg),
    /// RSASSA-PSS with the hash, MGF1 over the same hash, salt as long as the hash.
    RsaPss(HashAlg),
    /// ECDSA on the curve over the hash (FIPS 186-5: a digest longer than the group order is
    /// cut to its leftmost bits); DER-encoded `Ecdsa-Sig-Value`.
    Ecdsa(EcCurve, HashAlg),
    /// Pure Ed25519 (RFC 8032) over the message.
    Ed25519,
}

/// What the token is asked to do for one signature. Every mechanism is a raw one: the daemon
/// hashes in software.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMechanism {
    /// CKM_RSA_PKCS over a DER DigestInfo the daemon built.
    RsaPkcs,
    /// CKM_RSA_PKCS_PSS over a digest, with `hashAlg` and MGF1 of this hash and a salt as long
    /// as the digest.
    RsaPss(HashAlg),
    /// CKM_ECDSA over a digest the daemon computed (cut to the order length); the token returns
    /// r‖s.
    Ecdsa,
    /// CKM_EDDSA (pure) over the message.
    Eddsa,
}

impl SignatureScheme {
    /// Every scheme the daemon offers.
    pub const ALL: &'static [SignatureScheme] = &[
        SignatureScheme::RsaPkcs1(HashAlg::Sha256),
        SignatureScheme::RsaPkcs1(HashAlg::Sha384),
        SignatureScheme::RsaPkcs1(HashAlg::Sha512),
        SignatureScheme::RsaPss(HashAlg::Sha256),
        SignatureScheme::RsaPss(HashAlg::Sha384),
        SignatureScheme::RsaPss(HashAlg::Sha512),
        SignatureScheme::Ecdsa(EcCurve::P256, HashAlg::Sha256),
        SignatureScheme::Ecdsa(EcCurve::P256, HashAlg::Sha384),
        SignatureScheme::Ecdsa(EcCurve::P256, HashAlg::Sha512),
        SignatureScheme::Ecdsa(EcCurve::P384, HashAlg::Sha256),
        SignatureScheme::Ecdsa(EcCurve::P384, HashAlg::Sha384),
        SignatureScheme::Ecdsa(EcCurve::P384, HashAlg::Sha512),
        SignatureScheme::Ed25519,
    ];

    /// The scheme for signing with a `key` key, from the request's optional hash and padding.
    /// Defaults: RSA → PKCS#1 v1.5 with SHA-256 (a padding alone keeps SHA-256, a hash alone
    /// keeps PKCS#1 v1.5); P-256 → SHA-256; P-384 → SHA-384; Ed25519 → pure Ed25519. Any hash
    /// goes with either curve. Refused with a client-safe reason: padding on a key that is not
    /// RSA, any hash with Ed25519.
    pub fn for_key(
        key: KeyAlgorithm,
        hash: Option<HashAlg>,
        padding: Option<Padding>,
    ) -> Result<SignatureScheme, SchemeError> {
        match key {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let hash = hash.unwrap_or(HashAlg::Sha256);
                Ok(match padding.unwrap_or(Padding::Pkcs1) {
                    Padding::Pkcs1 => SignatureScheme::RsaPkcs1(hash),
                    Padding::Pss => SignatureScheme::RsaPss(hash),
                })
            }
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
                if padding.is_some() {
                    return Err(SchemeError::PaddingNeedsRsa { key });
                }
                let (curve, default) = if key == KeyAlgorithm::EcP256 {
                    (EcCurve::P256, HashAlg::Sha256)
                } else {
                    (EcCurve::P384, HashAlg::Sha384)
                };
                Ok(SignatureScheme::Ecdsa(curve, hash.unwrap_or(default)))
            }
            KeyAlgorithm::Ed25519 => {
                if padding.is_some() {
                    return Err(SchemeError::PaddingNeedsRsa { key });
                }
                if hash.is_some() {
                    return Err(SchemeError::Ed25519TakesNoHash);
                }
                Ok(SignatureScheme::Ed25519)
            }
        }
    }

    /// [`SignatureScheme::for_key`] from the API's strings (`hash`: `sha256` | `sha384` |
    /// `sha512`; `padding`: `pkcs1` | `pss`).
    pub fn parse_for_key(
        key: KeyAlgorithm,
        hash: Option<&str>,
        padding: Option<&str>,
    ) -> Result<SignatureScheme, SchemeError> {
        let hash = hash.map(str::parse).transpose()?;
        let padding = padding.map(str::parse).transpose()?;
        SignatureScheme::for_key(key, hash, padding)
    }

    /// The stable name: `rsa-pkcs1-sha256`, `rsa-pss-sha512`, `ecdsa-p384-sha384`, `ed25519`.
    pub fn name(self) -> &'static str {
        use EcCurve::{P256, P384};
        use HashAlg::{Sha256, Sha384, Sha512};
        match self {
            SignatureScheme::RsaPkcs1(Sha256) => "rsa-pkcs1-sha256",
            SignatureScheme::RsaPkcs1(Sha384) => "rsa-pkcs1-sha384",
            SignatureScheme::RsaPkcs1(Sha512) => "rsa-pkcs1-sha512",
            SignatureScheme::RsaPss(Sha256) => "rsa-pss-sha256",
            SignatureScheme::RsaPss(Sha384) => "rsa-pss-sha384",
            SignatureScheme::RsaPss(Sha512) => "rsa-pss-sha512",
            SignatureScheme::Ecdsa(P256, Sha256) => "ecdsa-p256-sha256",
            SignatureScheme::Ecdsa(P256, Sha384) => "ecdsa-p256-sha384",
            SignatureScheme::Ecdsa(P256, Sha512) => "ecdsa-p256-sha512",
            SignatureScheme::Ecdsa(P384, Sha256) => "ecdsa-p384-sha256",
            SignatureScheme::Ecdsa(P384, Sha384) => "ecdsa-p384-sha384",
            SignatureScheme::Ecdsa(P384, Sha512) => "ecdsa-p384-sha512",
            SignatureScheme::Ed25519 => "ed25519",
        }
    }

    /// The hash, if the scheme has one (all but Ed25519).
    pub fn hash(self) -> Option<HashAlg> {
        match self {
            SignatureScheme::RsaPkcs1(h)
            | SignatureScheme::RsaPss(h)
            | SignatureScheme::Ecdsa(_, h) => Some(h),
            SignatureScheme::Ed25519 => None,
        }
    }

    /// The RSA padding, for RSA schemes.
    pub fn padding(self) -> Option<Padding> {
        match self {
            SignatureScheme::RsaPkcs1(_) => Some(Padding::Pkcs1),
            SignatureScheme::RsaPss(_) => Some(Padding::Pss),
            SignatureScheme::Ecdsa(..) | SignatureScheme::Ed25519 => None,
        }
    }

    /// Whether a key of this algorithm can sign under this scheme.
    pub fn fits(self, key: KeyAlgorithm) -> bool {
        match self {
            SignatureScheme::RsaPkcs1(_) | SignatureScheme::RsaPss(_) => matches!(
                key,
                KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096
            ),
            SignatureScheme::Ecdsa(EcCurve::P256, _) => key == KeyAlgorithm::EcP256,
            SignatureScheme::Ecdsa(EcCurve::P384, _) => key == KeyAlgorithm::EcP384,
            SignatureScheme::Ed25519 => key == KeyAlgorithm::Ed25519,
        }
    }

    /// Checks, without hashing anything, that a `key` key can sign `input` under this scheme:
    /// the scheme fits the key, a digest has the hash's length, Ed25519 gets a message.
    pub fn check(self, key: KeyAlgorithm, input: SignInput<'_>) -> Result<(), SchemeError> {
        if !self.fits(key) {
            return Err(SchemeError::KeyMismatch { scheme: self, key });
        }
        self.check_input(input)
    }

    fn check_input(self, input: SignInput<'_>) -> Result<(), SchemeError> {
        match (self.hash(), input) {
            (None, SignInput::Message(_)) => Ok(()),
            (None, SignInput::Digest(_)) => Err(SchemeError::Ed25519NeedsMessage),
            (Some(_), SignInput::Message(_)) => Ok(()),
            (Some(h), SignInput::Digest(d)) => h.check_digest(d),
        }
    }

    /// The digest of `input` under the scheme's hash (hashing a message, checking a digest's
    /// length), for schemes with a hash.
    fn digest_of(self, hash: HashAlg, input: SignInput<'_>) -> Result<Cow<'_, [u8]>, SchemeError> {
        match input {
            SignInput::Message(m) => Ok(Cow::Owned(hash.digest(m))),
            SignInput::Digest(d) => {
                hash.check_digest(d)?;
                Ok(Cow::Borrowed(d))
            }
        }
    }

    /// The token mechanism and its input for signing `input`. Refuses a digest of the wrong
    /// length and a digest for Ed25519.
    pub fn prepare(self, input: SignInput<'_>) -> Result<(TokenMechanism, Vec<u8>), SchemeError> {
        self.check_input(input)?;
        Ok(match self {
            SignatureScheme::RsaPkcs1(h) => (
                TokenMechanism::RsaPkcs,
                h.digest_info(&self.digest_of(h, input)?),
            ),
            SignatureScheme::RsaPss(h) => (
                TokenMechanism::RsaPss(h),
                self.digest_of(h, input)?.into_owned(),
            ),
            SignatureScheme::Ecdsa(curve, h) => {
                let mut digest = self.digest_of(h, input)?.into_owned();
                // FIPS 186-5 truncation, done here so that tokens that refuse digests longer
                // than the order (SoftHSM2 2.6.1 accepts and truncates them the same way)
                // sign the same value that every verifier computes.
                digest.truncate(curve.order_len());
                (TokenMechanism::Ecdsa, digest)
            }
            SignatureScheme::Ed25519 => (TokenMechanism::Eddsa, input.bytes().to_vec()),
        })
    }

    /// Turns the token's raw output into the scheme's standard encoding (ECDSA: r‖s → DER).
    pub fn finish(self, raw: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            SignatureScheme::Ecdsa(curve, _) => curve.raw_to_der(raw),
            SignatureScheme::RsaPkcs1(_)
            | SignatureScheme::RsaPss(_)
            | SignatureScheme::Ed25519 => Ok(raw.to_vec()),
        }
    }

    /// The encoding to hand out: `None` → DER for ECDSA (and the only encoding of the other
    /// schemes); an explicit encoding is refused for schemes that are not ECDSA.
    pub fn encoding(self, requested: Option<EcdsaEncoding>) -> Result<EcdsaEncoding, SchemeError> {
        match (self, requested) {
            (_, None) => Ok(EcdsaEncoding::Der),
            (SignatureScheme::Ecdsa(..), Some(e)) => Ok(e),
            (_, Some(_)) => Err(SchemeError::EncodingNeedsEcdsa),
        }
    }

    /// Re-encodes a signature from the standard encoding (what [`SignatureScheme::finish`]
    /// returns) to `encoding`. `Raw` is for ECDSA only.
    pub fn encode_signature(
        self,
        signature: &[u8],
        encoding: EcdsaEncoding,
    ) -> Result<Vec<u8>, CryptoError> {
        match (self, encoding) {
            (_, EcdsaEncoding::Der) => Ok(signature.to_vec()),
            (SignatureScheme::Ecdsa(curve, _), EcdsaEncoding::Raw) => curve.der_to_raw(signature),
            (_, EcdsaEncoding::Raw) => Err(SchemeError::EncodingNeedsEcdsa.into()),
        }
    }

    /// Turns a signature in `encoding` back into the standard encoding (to verify a raw r‖s).
    pub fn decode_signature(
        self,
        signature: &[u8],
        encoding: EcdsaEncoding,
    ) -> Result<Vec<u8>, CryptoError> {
        match (self, encoding) {
            (_, EcdsaEncoding::Der) => Ok(signature.to_vec()),
            (SignatureScheme::Ecdsa(curve, _), EcdsaEncoding::Raw) => curve.raw_to_der(signature),
            (_, EcdsaEncoding::Raw) => Err(SchemeError::EncodingNeedsEcdsa.into()),
        }
    }

    /// Verifies `signature` (in the scheme's standard encoding) over `input` with the public
    /// key `spki_der` (SubjectPublicKeyInfo DER), in software, parsing the key for this one
    /// call. For many signatures by one key, [`VerifyingKey`] parses once.
    pub fn verify(
        self,
        spki_der: &[u8],
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.check_input(input)?;
        let key = self.parse_public_key(spki_der)?;
        self.verify_parsed(&key, input, signature)
    }

    /// The aws-lc verification algorithm of the scheme. RSA: moduli of 2,048 to 8,192 bits;
    /// PSS with MGF1 over the same hash and a salt exactly as long as the digest. ECDSA: a
    /// canonical DER `Ecdsa-Sig-Value`; a digest longer than the group order is cut to its
    /// leftmost bits (FIPS 186-5), as the token does.
    fn aws_algorithm(self) -> &'static dyn aws_lc_rs::signature::VerificationAlgorithm {
        use aws_lc_rs::signature as s;
        match self {
            SignatureScheme::RsaPkcs1(HashAlg::Sha256) => &s::RSA_PKCS1_2048_8192_SHA256,
            SignatureScheme::RsaPkcs1(HashAlg::Sha384) => &s::RSA_PKCS1_2048_8192_SHA384,
            SignatureScheme::RsaPkcs1(HashAlg::Sha512) => &s::RSA_PKCS1_2048_8192_SHA512,
            SignatureScheme::RsaPss(HashAlg::Sha256) => &s::RSA_PSS_2048_8192_SHA256,
            SignatureScheme::RsaPss(HashAlg::Sha384) => &s::RSA_PSS_2048_8192_SHA384,
            SignatureScheme::RsaPss(HashAlg::Sha512) => &s::RSA_PSS_2048_8192_SHA512,
            SignatureScheme::Ecdsa(EcCurve::P256, HashAlg::Sha256) => &s::ECDSA_P256_SHA256_ASN1,
            SignatureScheme::Ecdsa(EcCurve::P256, HashAlg::Sha384) => &s::ECDSA_P256_SHA384_ASN1,
            SignatureScheme::Ecdsa(EcCurve::P256, HashAlg::Sha512) => &s::ECDSA_P256_SHA512_ASN1,
            SignatureScheme::Ecdsa(EcCurve::P384, HashAlg::Sha256) => &s::ECDSA_P384_SHA256_ASN1,
            SignatureScheme::Ecdsa(EcCurve::P384, HashAlg::Sha384) => &s::ECDSA_P384_SHA384_ASN1,
            SignatureScheme::Ecdsa(EcCurve::P384, HashAlg::Sha512) => &s::ECDSA_P384_SHA512_ASN1,
            SignatureScheme::Ed25519 => &s::ED25519,
        }
    }

    /// Parses `spki_der` as a public key of this scheme's key type.
    fn parse_public_key(self, spki_der: &[u8]) -> Result<ParsedPublicKey, CryptoError> {
        // aws-lc also takes bare encodings (a SEC1 point, a PKCS#1 RSAPublicKey, 32 raw Ed25519
        // bytes); keys here are always SubjectPublicKeyInfo, so check the outer structure and
        // the key's algorithm first.
        let info = spki::SubjectPublicKeyInfoRef::try_from(spki_der)
            .map_err(|e| CryptoError::PublicKey(e.to_string()))?;
        let oid = info.algorithm.oid;
        let fits = match self {
            SignatureScheme::RsaPkcs1(_) | SignatureScheme::RsaPss(_) => {
                oid == const_oid::db::rfc5912::RSA_ENCRYPTION
            }
            SignatureScheme::Ecdsa(curve, _) => {
                let named = info
                    .algorithm
                    .parameters
                    .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok());
                oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY
                    && named
                        == Some(match curve {
                            EcCurve::P256 => const_oid::db::rfc5912::SECP_256_R_1,
                            EcCurve::P384 => const_oid::db::rfc5912::SECP_384_R_1,
                        })
            }
            SignatureScheme::Ed25519 => oid == const_oid::db::rfc8410::ID_ED_25519,
        };
        if !fits {
            return Err(CryptoError::PublicKey(format!(
                "the public key ({oid}) is not a key for {self}"
            )));
        }
        ParsedPublicKey::new(self.aws_algorithm(), spki_der)
            .map_err(|e| CryptoError::PublicKey(e.to_string()))
    }

    /// Verifies with a key parsed for this scheme (the input was checked by the caller).
    fn verify_parsed(
        self,
        key: &ParsedPublicKey,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        let verified = match (self.hash(), input) {
            (Some(h), SignInput::Digest(d)) => {
                h.check_digest(d)?;
                aws_lc_rs::digest::Digest::import_less_safe(d, h.aws_algorithm())
                    .and_then(|digest| key.verify_digest_sig(&digest, signature))
            }
            (_, SignInput::Message(m)) => key.verify_sig(m, signature),
            (None, SignInput::Digest(_)) => return Err(SchemeError::Ed25519NeedsMessage.into()),
        };
        verified.map_err(|_| CryptoError::BadSignature)
    }

    /// The X.509/CMS AlgorithmIdentifier of signatures under this scheme: `ecdsa-with-SHA*`
    /// without parameters (RFC 5758), `sha*WithRSAEncryption` with NULL parameters and
    /// `id-RSASSA-PSS` with explicit parameters (RFC 4055), `id-Ed25519` without parameters
    /// (RFC 8410).
    pub fn algorithm_identifier(self) -> Result<AlgorithmIdentifierOwned, CryptoError> {
        use const_oid::db::{rfc5912, rfc8410};
        let (oid, parameters) = match self {
            SignatureScheme::RsaPkcs1(h) => {
                let oid = match h {
                    HashAlg::Sha256 => rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
                    HashAlg::Sha384 => rfc5912::SHA_384_WITH_RSA_ENCRYPTION,
                    HashAlg::Sha512 => rfc5912::SHA_512_WITH_RSA_ENCRYPTION,
                };
                (oid, Some(der::Any::null()))
            }
            SignatureScheme::RsaPss(h) => {
                let params = RsaPssParams {
                    hash: h.algorithm_identifier(),
                    mask_gen: AlgorithmIdentifierOwned {
                        oid: rfc5912::ID_MGF_1,
                        parameters: Some(
                            der::Any::encode_from(&h.algorithm_identifier())
                                .map_err(|e| CryptoError::Encoding(e.to_string()))?,
                        ),
                    },
                    // At most 64: fits a u8.
                    salt_len: u8::try_from(h.output_len()).unwrap_or(u8::MAX),
                };
                let any = der::Any::encode_from(&params)
                    .map_err(|e| CryptoError::Encoding(e.to_string()))?;
                (rfc5912::ID_RSASSA_PSS, Some(any))
            }
            SignatureScheme::Ecdsa(_, h) => {
                let oid = match h {
                    HashAlg::Sha256 => rfc5912::ECDSA_WITH_SHA_256,
                    HashAlg::Sha384 => rfc5912::ECDSA_WITH_SHA_384,
                    HashAlg::Sha512 => rfc5912::ECDSA_WITH_SHA_512,
                };
                (oid, None)
            }
            SignatureScheme::Ed25519 => (rfc8410::ID_ED_25519, None),
        };
        Ok(AlgorithmIdentifierOwned { oid, parameters })
    }
}

/// RSASSA-PSS-params (RFC 4055 §3.1), with every field written out (trailerField is always 1,
/// its default, and so omitted).
#[derive(der::Sequence)]
struct RsaPssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    hash: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT")]
    mask_gen: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    salt_len: u8,
}

/// A public key kept for verifying many signatures, as each key slot does (invariant 8): its
/// SubjectPublicKeyInfo DER, and the key parsed by aws-lc once per scheme, on first use.
pub struct VerifyingKey {
    spki_der: Vec<u8>,
    parsed: [OnceLock<Result<ParsedPublicKey, String>>; SignatureScheme::ALL.len()],
}

impl VerifyingKey {
    /// Keeps `spki_der`; parsing waits for the first verification under each scheme.
    pub fn new(spki_der: Vec<u8>) -> Self {
        VerifyingKey {
            spki_der,
            parsed: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// [`SignatureScheme::verify`] with this key, parsed once per scheme.
    pub fn verify(
        &self,
        scheme: SignatureScheme,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        scheme.check_input(input)?;
        let index = SignatureScheme::ALL
            .iter()
            .position(|s| *s == scheme)
            .ok_or_else(|| CryptoError::PublicKey(format!("no verifier for {scheme}")))?;
        let parsed = self.parsed[index].get_or_init(|| {
            scheme
                .parse_public_key(&self.spki_der)
                .map_err(|e| e.to_string())
        });
        match parsed {
            Ok(key) => scheme.verify_parsed(key, input, signature),
            Err(reason) => Err(CryptoError::PublicKey(reason.clone())),
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("spki_sha256", &sha256_hex(&self.spki_der))
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SignatureScheme {
    type Err = SchemeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SignatureScheme::ALL
            .iter()
            .copied()
            .find(|scheme| scheme.name() == s)
            .ok_or(SchemeError::UnknownScheme)
    }
}

/// SHA-256 of `data` as lower-case hex: the fingerprint format used for certificates and keys.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode as _;
    use p256::pkcs8::EncodePublicKey as _;
    use signature::hazmat::PrehashSigner as _;

    use HashAlg::{Sha256, Sha384, Sha512};
    use KeyAlgorithm::{EcP256, EcP384, Ed25519, Rsa2048, Rsa3072, Rsa4096};
    use Padding::{Pkcs1, Pss};

    /// `for_key` over every (hash, padding) request for one key, as `name` or `!error text`.
    fn check_for_key(key: KeyAlgorithm, expect: [[&str; 3]; 4]) {
        let hashes = [None, Some(Sha256), Some(Sha384), Some(Sha512)];
        let paddings = [None, Some(Pkcs1), Some(Pss)];
        for (hash, row) in hashes.iter().zip(expect) {
            for (padding, want) in paddings.iter().zip(row) {
                let got = match SignatureScheme::for_key(key, *hash, *padding) {
                    Ok(s) => {
                        assert!(s.fits(key), "{s} must fit {key}");
                        s.name().to_owned()
                    }
                    Err(e) => format!("!{e}"),
                };
                assert_eq!(got, want, "{key} hash={hash:?} padding={padding:?}");
            }
        }
    }

    #[test]
    fn for_key_accepts_and_refuses() {
        //             padding: none                 pkcs1                 pss
        let rsa = [
            ["rsa-pkcs1-sha256", "rsa-pkcs1-sha256", "rsa-pss-sha256"], // hash: none
            ["rsa-pkcs1-sha256", "rsa-pkcs1-sha256", "rsa-pss-sha256"], // sha256
            ["rsa-pkcs1-sha384", "rsa-pkcs1-sha384", "rsa-pss-sha384"], // sha384
            ["rsa-pkcs1-sha512", "rsa-pkcs1-sha512", "rsa-pss-sha512"], // sha512
        ];
        for key in [Rsa2048, Rsa3072, Rsa4096] {
            check_for_key(key, rsa);
        }
        let pad256 = "!padding applies to RSA keys only, not to ec-p256 keys";
        check_for_key(
            EcP256,
            [
                ["ecdsa-p256-sha256", pad256, pad256],
                ["ecdsa-p256-sha256", pad256, pad256],
                ["ecdsa-p256-sha384", pad256, pad256],
                ["ecdsa-p256-sha512", pad256, pad256],
            ],
        );
        let pad384 = "!padding applies to RSA keys only, not to ec-p384 keys";
        check_for_key(
            EcP384,
            [
                ["ecdsa-p384-sha384", pad384, pad384],
                ["ecdsa-p384-sha256", pad384, pad384],
                ["ecdsa-p384-sha384", pad384, pad384],
                ["ecdsa-p384-sha512", pad384, pad384],
            ],
        );
        let pad_ed = "!padding applies to RSA keys only, not to ed25519 keys";
        let hash_ed = "!Ed25519 signs the message itself (pure Ed25519) and takes no hash";
        check_for_key(
            Ed25519,
            [
                ["ed25519", pad_ed, pad_ed],
                [hash_ed, pad_ed, pad_ed],
                [hash_ed, pad_ed, pad_ed],
                [hash_ed, pad_ed, pad_ed],
            ],
        );
    }

    #[test]
    fn api_names_parse() -> Result<(), serde_json::Error> {
        let parse = |h: Option<&str>, p: Option<&str>, key| {
            SignatureScheme::parse_for_key(key, h, p).map(SignatureScheme::name)
        };
        assert_eq!(
            parse(Some("sha384"), Some("pss"), Rsa3072),
            Ok("rsa-pss-sha384")
        );
        assert_eq!(parse(None, None, EcP384), Ok("ecdsa-p384-sha384"));
        assert_eq!(
            parse(Some("SHA256"), None, Rsa2048),
            Err(SchemeError::UnknownHash)
        );
        assert_eq!(
            parse(Some("sha1"), None, Rsa2048),
            Err(SchemeError::UnknownHash)
        );
        assert_eq!(
            parse(None, Some("oaep"), Rsa2048),
            Err(SchemeError::UnknownPadding)
        );
        // The hash is parsed before the key is looked at: unknown names win over misfits.
        assert_eq!(
            parse(Some("md5"), None, Ed25519),
            Err(SchemeError::UnknownHash)
        );
        assert_eq!("raw".parse(), Ok(EcdsaEncoding::Raw));
        assert_eq!("der".parse(), Ok(EcdsaEncoding::Der));
        assert_eq!(
            "r||s".parse::<EcdsaEncoding>(),
            Err(SchemeError::UnknownEncoding)
        );
        for scheme in SignatureScheme::ALL {
            assert_eq!(scheme.name().parse(), Ok(*scheme));
            assert!(
                KeyAlgorithm::ALL.iter().any(|k| scheme.fits(*k)),
                "{scheme} fits no key"
            );
        }
        assert_eq!(
            "rsa-pss-sha1".parse::<SignatureScheme>(),
            Err(SchemeError::UnknownScheme)
        );
        let json: HashAlg = serde_json::from_str("\"sha512\"")?;
        assert_eq!(json, Sha512);
        assert!(serde_json::from_str::<Padding>("\"PSS\"").is_err());
        Ok(())
    }

    #[test]
    fn digest_lengths_are_checked() {
        for scheme in SignatureScheme::ALL {
            let Some(hash) = scheme.hash() else {
                continue;
            };
            let good = vec![1u8; hash.output_len()];
            assert!(scheme.prepare(SignInput::Digest(&good)).is_ok(), "{scheme}");
            for len in [0, 20, 31, 32, 33, 47, 48, 49, 63, 64, 65] {
                if len == hash.output_len() {
                    continue;
                }
                let bad = vec![1u8; len];
                assert_eq!(
                    scheme.prepare(SignInput::Digest(&bad)),
                    Err(SchemeError::DigestLength {
                        hash,
                        expected: hash.output_len(),
                        actual: len,
                    }),
                    "{scheme} with {len} bytes"
                );
            }
        }
        let short = SignatureScheme::RsaPss(Sha384)
            .prepare(SignInput::Digest(&[0; 32]))
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(short, Err("a sha384 digest is 48 bytes, not 32".to_owned()));
        assert_eq!(
            SignatureScheme::Ed25519.prepare(SignInput::Digest(&[0; 64])),
            Err(SchemeError::Ed25519NeedsMessage)
        );
    }

    #[test]
    fn prepare_builds_what_the_token_signs() -> Result<(), SchemeError> {
        let msg = b"to be signed";
        let (mech, input) = SignatureScheme::RsaPkcs1(Sha384).prepare(SignInput::Message(msg))?;
        assert_eq!(mech, TokenMechanism::RsaPkcs);
        assert_eq!(input, [DIGEST_INFO_SHA384, &Sha384.digest(msg)].concat());
        let (mech, input) = SignatureScheme::RsaPss(Sha512).prepare(SignInput::Message(msg))?;
        assert_eq!(mech, TokenMechanism::RsaPss(Sha512));
        assert_eq!(input, Sha512.digest(msg));
        // P-256 with SHA-512: the leftmost 256 bits of the digest (FIPS 186-5 §6.4.1).
        let digest = Sha512.digest(msg);
        let (mech, input) =
            SignatureScheme::Ecdsa(EcCurve::P256, Sha512).prepare(SignInput::Digest(&digest))?;
        assert_eq!(mech, TokenMechanism::Ecdsa);
        assert_eq!(input, digest[..32]);
        // P-384 with SHA-256: the whole digest.
        let (_, input) =
            SignatureScheme::Ecdsa(EcCurve::P384, Sha256).prepare(SignInput::Message(msg))?;
        assert_eq!(input, Sha256.digest(msg));
        let (mech, input) = SignatureScheme::Ed25519.prepare(SignInput::Message(msg))?;
        assert_eq!(mech, TokenMechanism::Eddsa);
        assert_eq!(input, msg);
        Ok(())
    }

    #[test]
    fn digest_info_prefixes_are_der() {
        // Each prefix is a DigestInfo SEQUENCE whose length covers the prefix rest and digest.
        for h in HashAlg::ALL {
            let info = h.digest_info(&h.digest(b""));
            assert_eq!(usize::from(info[1]) + 2, info.len(), "{h}");
            assert_eq!(
                info[info.len() - h.output_len() - 1],
                u8::try_from(h.output_len()).unwrap_or(0)
            );
        }
    }

    #[test]
    fn encodings() {
        let ec = SignatureScheme::Ecdsa(EcCurve::P256, Sha256);
        assert_eq!(ec.encoding(None), Ok(EcdsaEncoding::Der));
        assert_eq!(
            ec.encoding(Some(EcdsaEncoding::Raw)),
            Ok(EcdsaEncoding::Raw)
        );
        for scheme in [SignatureScheme::RsaPss(Sha256), SignatureScheme::Ed25519] {
            assert_eq!(scheme.encoding(None), Ok(EcdsaEncoding::Der));
            assert_eq!(
                scheme.encoding(Some(EcdsaEncoding::Raw)),
                Err(SchemeError::EncodingNeedsEcdsa)
            );
            assert_eq!(
                scheme.encoding(Some(EcdsaEncoding::Der)),
                Err(SchemeError::EncodingNeedsEcdsa)
            );
            assert!(
                scheme
                    .encode_signature(&[1; 64], EcdsaEncoding::Raw)
                    .is_err()
            );
        }
    }

    #[test]
    fn pss_algorithm_identifier_is_what_openssl_writes() -> Result<(), Box<dyn std::error::Error>> {
        // `openssl req -x509 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest
        // -sha256`: the signatureAlgorithm of the certificate.
        let openssl = hex::decode(
            "304106092a864886f70d01010a3034a00f300d06096086480165030402010500\
             a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120",
        )?;
        let ours = SignatureScheme::RsaPss(Sha256)
            .algorithm_identifier()?
            .to_der()?;
        assert_eq!(hex::encode(ours), hex::encode(openssl));
        let pkcs1 = SignatureScheme::RsaPkcs1(Sha512)
            .algorithm_identifier()?
            .to_der()?;
        assert_eq!(hex::encode(pkcs1), "300d06092a864886f70d01010d0500");
        Ok(())
    }

    #[test]
    fn p256_round_trip_and_tamper() -> Result<(), Box<dyn std::error::Error>> {
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32])?;
        let spki = key.verifying_key().to_public_key_der()?;
        for hash in HashAlg::ALL {
            let scheme = SignatureScheme::Ecdsa(EcCurve::P256, *hash);
            let (mech, input) = scheme.prepare(SignInput::Message(b"hello"))?;
            assert_eq!(mech, TokenMechanism::Ecdsa);
            let sig: p256::ecdsa::Signature = key.sign_prehash(&input)?;
            let der = scheme.finish(&sig.to_bytes())?;
            scheme.verify(spki.as_bytes(), SignInput::Message(b"hello"), &der)?;
            let digest = hash.digest(b"hello");
            scheme.verify(spki.as_bytes(), SignInput::Digest(&digest), &der)?;
            assert!(
                scheme
                    .verify(spki.as_bytes(), SignInput::Message(b"hellO"), &der)
                    .is_err()
            );
            let mut flipped = der.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert!(
                scheme
                    .verify(spki.as_bytes(), SignInput::Message(b"hello"), &flipped)
                    .is_err()
            );
            let raw = scheme.encode_signature(&der, EcdsaEncoding::Raw)?;
            assert_eq!(raw.len(), 64);
            assert_eq!(scheme.decode_signature(&raw, EcdsaEncoding::Raw)?, der);
            // The wrong curve's scheme does not take this key.
            let p384 = SignatureScheme::Ecdsa(EcCurve::P384, *hash);
            assert!(matches!(
                p384.verify(spki.as_bytes(), SignInput::Message(b"hello"), &der),
                Err(CryptoError::PublicKey(_))
            ));
        }
        Ok(())
    }

    #[test]
    fn verifying_key_parses_once_and_stays_strict() -> Result<(), Box<dyn std::error::Error>> {
        let key = p256::ecdsa::SigningKey::from_slice(&[9u8; 32])?;
        let spki = key.verifying_key().to_public_key_der()?;
        let verifier = VerifyingKey::new(spki.as_bytes().to_vec());
        let scheme = SignatureScheme::Ecdsa(EcCurve::P256, Sha256);
        let (_, input) = scheme.prepare(SignInput::Message(b"record"))?;
        let sig: p256::ecdsa::Signature = key.sign_prehash(&input)?;
        let der = scheme.finish(&sig.to_bytes())?;
        for _ in 0..2 {
            verifier.verify(scheme, SignInput::Message(b"record"), &der)?;
            verifier.verify(scheme, SignInput::Digest(&input), &der)?;
        }
        assert!(
            verifier
                .verify(scheme, SignInput::Message(b"recorD"), &der)
                .is_err()
        );
        // A digest of the wrong length is a scheme error, not a bad signature.
        assert!(matches!(
            verifier.verify(scheme, SignInput::Digest(&input[..31]), &der),
            Err(CryptoError::Scheme(SchemeError::DigestLength { .. }))
        ));
        // BER is not DER: r with a needless leading zero byte is refused.
        let (r, s) = (sig.r().to_bytes(), sig.s().to_bytes());
        let mut ber = vec![0x30, 0, 0x02, 34, 0, 0];
        ber.extend_from_slice(&r);
        ber.extend_from_slice(&[0x02, 33, 0]);
        ber.extend_from_slice(&s);
        ber[1] = u8::try_from(ber.len() - 2)?;
        assert!(
            verifier
                .verify(scheme, SignInput::Message(b"record"), &ber)
                .is_err()
        );
        // Another key type's schemes and a key that is no SubjectPublicKeyInfo are refused.
        assert!(matches!(
            verifier.verify(
                SignatureScheme::Ed25519,
                SignInput::Message(b"record"),
                &der
            ),
            Err(CryptoError::PublicKey(_))
        ));
        assert!(matches!(
            VerifyingKey::new(key.verifying_key().to_sec1_bytes().to_vec()).verify(
                scheme,
                SignInput::Message(b"record"),
                &der
            ),
            Err(CryptoError::PublicKey(_))
        ));

        // Ed25519: the message only.
        let ed = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let ed_spki =
            ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_der(&ed.verifying_key())?;
        let ed_verifier = VerifyingKey::new(ed_spki.as_bytes().to_vec());
        let ed_sig = ed25519_dalek::Signer::sign(&ed, b"record").to_bytes();
        ed_verifier.verify(
            SignatureScheme::Ed25519,
            SignInput::Message(b"record"),
            &ed_sig,
        )?;
        assert!(matches!(
            ed_verifier.verify(
                SignatureScheme::Ed25519,
                SignInput::Digest(&[0; 32]),
                &ed_sig
            ),
            Err(CryptoError::Scheme(SchemeError::Ed25519NeedsMessage))
        ));
        let mut bad = ed_sig;
        bad[63] ^= 0x10;
        assert!(
            ed_verifier
                .verify(
                    SignatureScheme::Ed25519,
                    SignInput::Message(b"record"),
                    &bad
                )
                .is_err()
        );
        Ok(())
    }
}
