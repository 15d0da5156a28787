//! formats::cms: detached CMS SignedData (RFC 5652) made by token keys, in the form
//! `openssl cms -verify` reads, and the verification of such signatures for `POST /v1/verify`.
//! Built on the `cms` crate's ASN.1 types; the private key never leaves the token, and the
//! content never reaches this module: callers hash it (while streaming it, or the client sends
//! only the digest) and hand in the digest.
//!
//! A signature is made in three steps, so that the token call can run wherever the caller runs
//! token calls:
//!
//! 1. [`CmsBuilder::prepare`] builds the signed attributes from the content's digest and
//!    says what the token must sign ([`PendingCms::scheme`], [`PendingCms::input_buf`]);
//! 2. the token signs (`Hsm::sign` / `Hsm::sign_blocking`);
//! 3. [`PendingCms::complete`] checks the token's signature in software against the signer
//!    certificate's public key (invariant 8) and serialises the SignedData
//!    ([`CmsSignature::to_der`], [`CmsSignature::to_pem`]).
//!
//! [`CmsBuilder::finish`] does steps 1 to 3 with a blocking closure (run it off the runtime).
//!
//! What is written:
//! - SignedData version 1, one digestAlgorithm, encapContentInfo `id-data` without eContent
//!   (detached), certificates = the signer certificate and the extra ones given, no CRLs.
//! - One SignerInfo version 1, identified by issuerAndSerialNumber of the signer certificate,
//!   with the signed attributes contentType (`id-data`), messageDigest, signingTime (UTCTime
//!   until 2049, GeneralizedTime after, whole seconds) and CMSAlgorithmProtection (RFC 6211:
//!   the digestAlgorithm and signatureAlgorithm of the SignerInfo). No unsigned attributes.
//! - Digest algorithms: `id-sha256`/`id-sha384`/`id-sha512` with absent parameters (RFC 5754).
//!
//! How each key type signs the DER of the signed attributes (as a SET, RFC 5652 §5.4):
//! - RSA: RSASSA-PKCS1-v1_5 over their digest ([`SignatureScheme::RsaPkcs1`]);
//!   signatureAlgorithm `rsaEncryption` with NULL parameters (RFC 3370 §3.2, what OpenSSL
//!   writes). Any hash.
//! - ECDSA P-256/P-384: ECDSA over their digest; the token's DER `Ecdsa-Sig-Value` is the
//!   signature value; signatureAlgorithm `ecdsa-with-SHA*` of the digest algorithm (RFC 5753).
//!   Any hash with either curve (P-384 with SHA-256 is allowed in CMS).
//! - Ed25519 (RFC 8419): pure Ed25519 over the DER itself; signatureAlgorithm `id-Ed25519`.
//!   The digest algorithm must be SHA-512 (RFC 8419 §3.1); other hashes are refused.
//!
//! Verification ([`CmsSignature::parse`], then [`CmsSignature::verify`]) reads input from
//! anyone: at most [`MAX_CMS_LEN`] bytes of strict DER (or PEM `CMS`/`PKCS7`), decoded into
//! fixed structures (no recursion deeper than the schema), with exactly one SignerInfo
//! identified by issuerAndSerialNumber, signed attributes, detached `id-data` content and
//! the algorithms above (RSA as `rsaEncryption` or `sha*WithRSAEncryption`; RSASSA-PSS is not
//! accepted). Every refusal is a [`CmsError`], never a panic.

use std::fmt;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5911, rfc5912, rfc6211, rfc8410};
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::attr::{Attribute, Attributes};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use crate::crypto::{
    CryptoError, EcCurve, HashAlg, SignInput, SignInputBuf, SignatureScheme, VerifyingKey,
};
use crate::hsm::{HsmError, KeyAlgorithm};

/// The longest CMS signature [`CmsSignature::parse`] reads, in bytes (DER, or PEM of it).
pub const MAX_CMS_LEN: usize = 1024 * 1024;

/// Why a CMS signature could not be made, read or verified. Messages name only the daemon's
/// vocabulary (algorithms, hashes, lengths, attribute names) and decoder positions, never the
/// signed content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmsError {
    /// A certificate handed to the builder is not an X.509 certificate.
    #[error("bad certificate: {0}")]
    Certificate(String),
    /// The signer certificate's public key is not a key of the stated algorithm.
    #[error("the signer certificate's key is not a {algorithm} key")]
    KeyMismatch {
        /// The algorithm the key was said to be.
        algorithm: KeyAlgorithm,
    },
    /// CMS does not allow this hash with this key type (Ed25519 needs SHA-512).
    #[error("CMS signatures by {algorithm} keys cannot use {hash}; Ed25519 signs with sha512")]
    UnsupportedHash {
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
        /// The refused hash.
        hash: HashAlg,
    },
    /// The content digest does not have the hash's length.
    #[error("a {hash} digest is {expected} bytes long, not {actual}")]
    DigestLength {
        /// The hash.
        hash: HashAlg,
        /// Its output length.
        expected: usize,
        /// The given length.
        actual: usize,
    },
    /// A signing time CMS cannot represent (before 1970 or after 9999).
    #[error("signing time outside 1970 to 9999")]
    TimeOutOfRange,
    /// The signing time is outside the signer certificate's validity.
    #[error("the signing time is outside the signer certificate's validity")]
    CertificateNotValid,
    /// The token failed or refused to sign.
    #[error("token: {0}")]
    Token(#[from] HsmError),
    /// The signature does not verify with the public key (or the token's signature does not
    /// verify against the signer certificate).
    #[error("the signature does not verify")]
    BadSignature,
    /// The public key given for verification is unusable or of another type than the
    /// signature's algorithm.
    #[error("unusable public key: {0}")]
    PublicKey(String),
    /// The content's digest is not the one the signature covers.
    #[error("the content digest does not match the signature's messageDigest")]
    DigestMismatch,
    /// The input is longer than [`MAX_CMS_LEN`].
    #[error("CMS input longer than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The input is not DER (or PEM) of a CMS ContentInfo with SignedData.
    #[error("malformed CMS: {0}")]
    Malformed(String),
    /// Well-formed CMS that this daemon does not verify (see the module documentation).
    #[error("unsupported CMS: {0}")]
    Unsupported(&'static str),
    /// The signed attributes are missing, duplicated or inconsistent.
    #[error("bad signed attributes: {0}")]
    BadAttributes(&'static str),
    /// A structure could not be DER-encoded.
    #[error("CMS encoding: {0}")]
    Encoding(String),
}

fn encoding(e: der::Error) -> CmsError {
    CmsError::Encoding(e.to_string())
}

fn malformed(e: der::Error) -> CmsError {
    CmsError::Malformed(e.to_string())
}

/// `id-data` (1.2.840.113549.1.7.1).
const ID_DATA: ObjectIdentifier = rfc5911::ID_DATA;

/// CMSAlgorithmProtection (RFC 6211 §2; the module uses implicit tags).
///
/// ```text
/// CMSAlgorithmProtection ::= SEQUENCE {
///     digestAlgorithm         DigestAlgorithmIdentifier,
///     signatureAlgorithm  [1] SignatureAlgorithmIdentifier OPTIONAL,
///     macAlgorithm        [2] MessageAuthenticationCodeAlgorithm OPTIONAL }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, der::Sequence)]
struct AlgorithmProtection {
    digest_algorithm: AlgorithmIdentifierOwned,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    signature_algorithm: Option<AlgorithmIdentifierOwned>,
    #[asn1(
        context_specific = "2",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    mac_algorithm: Option<AlgorithmIdentifierOwned>,
}

/// How the SignerInfo's signature is made, without the key (the curve comes from the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignatureKind {
    RsaPkcs1,
    Ecdsa,
    Ed25519,
}

impl SignatureKind {
    fn of(algorithm: KeyAlgorithm) -> SignatureKind {
        match algorithm {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                SignatureKind::RsaPkcs1
            }
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => SignatureKind::Ecdsa,
            KeyAlgorithm::Ed25519 => SignatureKind::Ed25519,
        }
    }

    /// The SignerInfo signatureAlgorithm for this kind with `hash`.
    fn algorithm_identifier(self, hash: HashAlg) -> AlgorithmIdentifierOwned {
        match self {
            SignatureKind::RsaPkcs1 => AlgorithmIdentifierOwned {
                oid: rfc5912::RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            SignatureKind::Ecdsa => AlgorithmIdentifierOwned {
                oid: match hash {
                    HashAlg::Sha256 => rfc5912::ECDSA_WITH_SHA_256,
                    HashAlg::Sha384 => rfc5912::ECDSA_WITH_SHA_384,
                    HashAlg::Sha512 => rfc5912::ECDSA_WITH_SHA_512,
                },
                parameters: None,
            },
            SignatureKind::Ed25519 => AlgorithmIdentifierOwned {
                oid: rfc8410::ID_ED_25519,
                parameters: None,
            },
        }
    }

    /// Reads a SignerInfo signatureAlgorithm, which must fit the digest algorithm `hash`.
    fn from_identifier(
        alg: &AlgorithmIdentifierOwned,
        hash: HashAlg,
    ) -> Result<SignatureKind, CmsError> {
        let null_or_absent = alg.parameters.as_ref().is_none_or(Any::is_null);
        let absent = alg.parameters.is_none();
        let oid = alg.oid;
        let rsa_hash = match oid {
            rfc5912::SHA_256_WITH_RSA_ENCRYPTION => Some(HashAlg::Sha256),
            rfc5912::SHA_384_WITH_RSA_ENCRYPTION => Some(HashAlg::Sha384),
            rfc5912::SHA_512_WITH_RSA_ENCRYPTION => Some(HashAlg::Sha512),
            _ => None,
        };
        let ecdsa_hash = match oid {
            rfc5912::ECDSA_WITH_SHA_256 => Some(HashAlg::Sha256),
            rfc5912::ECDSA_WITH_SHA_384 => Some(HashAlg::Sha384),
            rfc5912::ECDSA_WITH_SHA_512 => Some(HashAlg::Sha512),
            _ => None,
        };
        if oid == rfc5912::RSA_ENCRYPTION && null_or_absent {
            Ok(SignatureKind::RsaPkcs1)
        } else if let Some(h) = rsa_hash {
            if !null_or_absent {
                Err(CmsError::Unsupported(
                    "parameters on an RSA signature algorithm",
                ))
            } else if h != hash {
                Err(CmsError::Unsupported(
                    "the signature algorithm's hash is not the digest algorithm",
                ))
            } else {
                Ok(SignatureKind::RsaPkcs1)
            }
        } else if let Some(h) = ecdsa_hash {
            if !absent {
                Err(CmsError::Unsupported(
                    "parameters on an ECDSA signature algorithm",
                ))
            } else if h != hash {
                Err(CmsError::Unsupported(
                    "the signature algorithm's hash is not the digest algorithm",
                ))
            } else {
                Ok(SignatureKind::Ecdsa)
            }
        } else if oid == rfc8410::ID_ED_25519 {
            if !absent {
                Err(CmsError::Unsupported(
                    "parameters on an Ed25519 signature algorithm",
                ))
            } else if hash != HashAlg::Sha512 {
                Err(CmsError::Unsupported(
                    "Ed25519 with signed attributes needs the sha512 digest algorithm",
                ))
            } else {
                Ok(SignatureKind::Ed25519)
            }
        } else {
            Err(CmsError::Unsupported(
                "signature algorithm (expected RSA PKCS#1 v1.5, ECDSA or Ed25519)",
            ))
        }
    }

    /// What the token signs (or the verifier checks) for the signed attributes `attrs_der`.
    fn input(self, hash: HashAlg, attrs_der: &[u8]) -> SignInputBuf {
        match self {
            SignatureKind::Ed25519 => SignInputBuf::Message(attrs_der.to_vec()),
            SignatureKind::RsaPkcs1 | SignatureKind::Ecdsa => {
                SignInputBuf::Digest(hash.digest(attrs_der))
            }
        }
    }
}

/// The AlgorithmIdentifier of a digest algorithm, parameters absent (RFC 5754 §2).
pub(crate) fn digest_identifier(hash: HashAlg) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: match hash {
            HashAlg::Sha256 => rfc5912::ID_SHA_256,
            HashAlg::Sha384 => rfc5912::ID_SHA_384,
            HashAlg::Sha512 => rfc5912::ID_SHA_512,
        },
        parameters: None,
    }
}

/// Reads a digest algorithm (parameters absent or NULL).
pub(crate) fn digest_from_identifier(alg: &AlgorithmIdentifierOwned) -> Result<HashAlg, CmsError> {
    if !alg.parameters.as_ref().is_none_or(Any::is_null) {
        return Err(CmsError::Unsupported("parameters on a digest algorithm"));
    }
    match alg.oid {
        rfc5912::ID_SHA_256 => Ok(HashAlg::Sha256),
        rfc5912::ID_SHA_384 => Ok(HashAlg::Sha384),
        rfc5912::ID_SHA_512 => Ok(HashAlg::Sha512),
        _ => Err(CmsError::Unsupported(
            "digest algorithm (expected sha256, sha384 or sha512)",
        )),
    }
}

/// Whether two AlgorithmIdentifiers name the same algorithm, absent and NULL parameters being
/// the same (RFC 5754 lets writers choose).
fn same_algorithm(a: &AlgorithmIdentifierOwned, b: &AlgorithmIdentifierOwned) -> bool {
    let params = |x: &AlgorithmIdentifierOwned| x.parameters.clone().filter(|p| !p.is_null());
    a.oid == b.oid && params(a) == params(b)
}

/// Checks that `spki` is a key of `algorithm` (type and curve; RSA of any size).
fn check_key(spki: &spki::SubjectPublicKeyInfoOwned, algorithm: KeyAlgorithm) -> bool {
    let curve = || {
        spki.algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
    };
    match algorithm {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            spki.algorithm.oid == rfc5912::RSA_ENCRYPTION
        }
        KeyAlgorithm::EcP256 => {
            spki.algorithm.oid == rfc5912::ID_EC_PUBLIC_KEY
                && curve() == Some(rfc5912::SECP_256_R_1)
        }
        KeyAlgorithm::EcP384 => {
            spki.algorithm.oid == rfc5912::ID_EC_PUBLIC_KEY
                && curve() == Some(rfc5912::SECP_384_R_1)
        }
        KeyAlgorithm::Ed25519 => spki.algorithm.oid == rfc8410::ID_ED_25519,
    }
}

/// The token scheme for a signature of `kind` with `hash` by the key `spki_der`.
fn scheme_for(
    kind: SignatureKind,
    hash: HashAlg,
    spki_der: &[u8],
) -> Result<SignatureScheme, CmsError> {
    Ok(match kind {
        SignatureKind::RsaPkcs1 => SignatureScheme::RsaPkcs1(hash),
        SignatureKind::Ed25519 => SignatureScheme::Ed25519,
        SignatureKind::Ecdsa => {
            let info = spki::SubjectPublicKeyInfoRef::try_from(spki_der)
                .map_err(|e| CmsError::PublicKey(e.to_string()))?;
            let curve = info
                .algorithm
                .parameters
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            let curve = match curve {
                Some(rfc5912::SECP_256_R_1) => EcCurve::P256,
                Some(rfc5912::SECP_384_R_1) => EcCurve::P384,
                _ => {
                    return Err(CmsError::PublicKey(
                        "not a P-256 or P-384 key, as the ECDSA signature needs".into(),
                    ));
                }
            };
            SignatureScheme::Ecdsa(curve, hash)
        }
    })
}

/// Any DER-encodable value as an attribute value.
fn any_of<T: Encode>(value: &T) -> Result<Any, CmsError> {
    Any::from_der(&value.to_der().map_err(encoding)?).map_err(encoding)
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, CmsError> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value]).map_err(encoding)?,
    })
}

fn parse_certificate(der: &[u8]) -> Result<Certificate, CmsError> {
    Certificate::from_der(der).map_err(|e| CmsError::Certificate(e.to_string()))
}

/// Builds a detached CMS signature over content the caller hashed.
#[derive(Debug, Clone)]
pub struct CmsBuilder {
    signer: Certificate,
    extra: Vec<Certificate>,
    algorithm: KeyAlgorithm,
    hash: HashAlg,
    signing_time: Time,
    /// The encapsulated content's type, and the content when it is carried (not detached).
    content_type: ObjectIdentifier,
    econtent: Option<Vec<u8>>,
    /// Signed attributes beyond the four standard ones.
    more_attrs: Vec<Attribute>,
    /// Whether the certificates travel in the SignedData.
    with_certificates: bool,
}

impl CmsBuilder {
    /// A signature by the key of `signer_cert_der` (an X.509 certificate, DER; normally the
    /// token key's document-signer certificate), a `algorithm` key, over content hashed with
    /// `hash`, signed at `signing_time` (whole seconds; the certificate must be valid then).
    ///
    /// Refuses a certificate that does not parse, whose key is not of `algorithm` (type and
    /// curve), a hash other than SHA-512 for Ed25519, and a time outside the certificate's
    /// validity.
    pub fn new(
        signer_cert_der: &[u8],
        algorithm: KeyAlgorithm,
        hash: HashAlg,
        signing_time: OffsetDateTime,
    ) -> Result<Self, CmsError> {
        let signer = parse_certificate(signer_cert_der)?;
        if !check_key(
            signer.tbs_certificate().subject_public_key_info(),
            algorithm,
        ) {
            return Err(CmsError::KeyMismatch { algorithm });
        }
        if algorithm == KeyAlgorithm::Ed25519 && hash != HashAlg::Sha512 {
            return Err(CmsError::UnsupportedHash { algorithm, hash });
        }
        let secs =
            u64::try_from(signing_time.unix_timestamp()).map_err(|_| CmsError::TimeOutOfRange)?;
        let secs = std::time::Duration::from_secs(secs);
        let signing_time = Time::from(
            der::DateTime::from_unix_duration(secs).map_err(|_| CmsError::TimeOutOfRange)?,
        );
        let validity = signer.tbs_certificate().validity();
        if secs < validity.not_before.to_unix_duration()
            || secs > validity.not_after.to_unix_duration()
        {
            return Err(CmsError::CertificateNotValid);
        }
        Ok(CmsBuilder {
            signer,
            extra: Vec::new(),
            algorithm,
            hash,
            signing_time,
            content_type: ID_DATA,
            econtent: None,
            more_attrs: Vec::new(),
            with_certificates: true,
        })
    }

    /// Carries `content` of type `content_type` inside the SignedData (as a time-stamp token
    /// carries its TSTInfo) instead of signing detached `id-data`. The digest handed to
    /// [`prepare`](Self::prepare) is then the digest of `content`.
    pub fn encapsulated(mut self, content_type: ObjectIdentifier, content: Vec<u8>) -> Self {
        self.content_type = content_type;
        self.econtent = Some(content);
        self
    }

    /// Adds the signed attribute `oid` with the one value `value_der` (DER).
    pub fn signed_attribute(
        mut self,
        oid: ObjectIdentifier,
        value_der: &[u8],
    ) -> Result<Self, CmsError> {
        let value = Any::from_der(value_der).map_err(encoding)?;
        self.more_attrs.push(attribute(oid, value)?);
        Ok(self)
    }

    /// Leaves the certificates out of the SignedData (a verifier has them already).
    pub fn without_certificates(mut self) -> Self {
        self.with_certificates = false;
        self
    }

    /// Carries one more certificate (DER) in the SignedData, e.g. the CA certificate.
    pub fn certificate(mut self, cert_der: &[u8]) -> Result<Self, CmsError> {
        self.extra.push(parse_certificate(cert_der)?);
        Ok(self)
    }

    /// Carries each of `certs_der` (DER certificates) in the SignedData.
    pub fn certificates<'a>(
        mut self,
        certs_der: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, CmsError> {
        for der in certs_der {
            self = self.certificate(der)?;
        }
        Ok(self)
    }

    /// Builds the signed attributes for content whose digest under the builder's hash is
    /// `content_digest`; the result says what the token must sign.
    pub fn prepare(self, content_digest: &[u8]) -> Result<PendingCms, CmsError> {
        let hash = self.hash;
        if content_digest.len() != hash.output_len() {
            return Err(CmsError::DigestLength {
                hash,
                expected: hash.output_len(),
                actual: content_digest.len(),
            });
        }
        let kind = SignatureKind::of(self.algorithm);
        let digest_alg = digest_identifier(hash);
        let signature_alg = kind.algorithm_identifier(hash);
        let protection = AlgorithmProtection {
            digest_algorithm: digest_alg.clone(),
            signature_algorithm: Some(signature_alg.clone()),
            mac_algorithm: None,
        };
        let digest = OctetString::new(content_digest).map_err(encoding)?;
        let mut attrs = vec![
            attribute(rfc5911::ID_CONTENT_TYPE, any_of(&self.content_type)?)?,
            attribute(rfc5911::ID_MESSAGE_DIGEST, any_of(&digest)?)?,
            attribute(rfc5911::ID_SIGNING_TIME, any_of(&self.signing_time)?)?,
            attribute(
                rfc6211::ID_AA_CMS_ALGORITHM_PROTECTION,
                any_of(&protection)?,
            )?,
        ];
        attrs.extend(self.more_attrs);
        let attrs: Attributes = SetOfVec::try_from(attrs).map_err(encoding)?;
        let attrs_der = attrs.to_der().map_err(encoding)?;
        let spki_der = self
            .signer
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(encoding)?;
        let scheme = scheme_for(kind, hash, &spki_der)?;
        Ok(PendingCms {
            input: kind.input(hash, &attrs_der),
            scheme,
            spki_der,
            attrs,
            digest_alg,
            signature_alg,
            signer: self.signer,
            extra: self.extra,
            content_type: self.content_type,
            econtent: self.econtent,
            with_certificates: self.with_certificates,
        })
    }

    /// [`prepare`](Self::prepare), the token call `sign` (blocking: run it off the async
    /// runtime; e.g. `|scheme, input| hsm.sign_blocking(&slot, scheme, input)`), then
    /// [`complete`](PendingCms::complete).
    pub fn finish(
        self,
        content_digest: &[u8],
        sign: impl FnOnce(SignatureScheme, SignInput<'_>) -> Result<Vec<u8>, HsmError>,
    ) -> Result<CmsSignature, CmsError> {
        let pending = self.prepare(content_digest)?;
        let signature = sign(pending.scheme(), pending.input())?;
        pending.complete(&signature)
    }
}

/// A CMS signature whose signed attributes wait for the token's signature.
pub struct PendingCms {
    scheme: SignatureScheme,
    input: SignInputBuf,
    spki_der: Vec<u8>,
    attrs: Attributes,
    digest_alg: AlgorithmIdentifierOwned,
    signature_alg: AlgorithmIdentifierOwned,
    signer: Certificate,
    extra: Vec<Certificate>,
    content_type: ObjectIdentifier,
    econtent: Option<Vec<u8>>,
    with_certificates: bool,
}

impl fmt::Debug for PendingCms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCms")
            .field("scheme", &self.scheme)
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

impl PendingCms {
    /// The token scheme: RSA PKCS#1 v1.5 or ECDSA with the digest algorithm, or pure Ed25519.
    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// What the token signs, for `Hsm::sign_blocking`: the digest of the signed attributes
    /// (RSA, ECDSA), or their DER as the message (Ed25519).
    pub fn input(&self) -> SignInput<'_> {
        self.input.as_input()
    }

    /// [`PendingCms::input`], owned, for `Hsm::sign`.
    pub fn input_buf(&self) -> SignInputBuf {
        self.input.clone()
    }

    /// The scheme and the owned input together.
    pub fn request(&self) -> (SignatureScheme, SignInputBuf) {
        (self.scheme, self.input.clone())
    }

    /// The signature, with the token's signature of [`input`](Self::input) (in the scheme's
    /// standard encoding, as `Hsm::sign` returns it: DER for ECDSA). The token's signature is
    /// verified against the signer certificate's public key first; one that does not verify
    /// is refused ([`CmsError::BadSignature`]) and never serialised.
    pub fn complete(self, token_signature: &[u8]) -> Result<CmsSignature, CmsError> {
        VerifyingKey::new(self.spki_der.clone())
            .verify(self.scheme, self.input.as_input(), token_signature)
            .map_err(|e| match e {
                CryptoError::PublicKey(reason) => CmsError::PublicKey(reason),
                _ => CmsError::BadSignature,
            })?;
        let tbs = self.signer.tbs_certificate();
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        });
        let signer_info = SignerInfo {
            version: CmsVersion::V1,
            sid,
            digest_alg: self.digest_alg.clone(),
            signed_attrs: Some(self.attrs),
            signature_algorithm: self.signature_alg,
            signature: OctetString::new(token_signature).map_err(encoding)?,
            unsigned_attrs: None,
        };
        let mut certs = vec![CertificateChoices::Certificate(self.signer)];
        certs.extend(self.extra.into_iter().map(CertificateChoices::Certificate));
        // A SET OF: DER order, and one copy of a certificate given twice.
        let mut set = SetOfVec::new();
        for cert in certs {
            if !set.iter().any(|c| *c == cert) {
                set.insert(cert).map_err(encoding)?;
            }
        }
        let econtent = self
            .econtent
            .as_ref()
            .map(|c| any_of(&OctetString::new(c.as_slice()).map_err(encoding)?))
            .transpose()?;
        let signed_data = SignedData {
            // RFC 5652 §5.1: version 3 when the content is not id-data.
            version: if self.content_type == ID_DATA {
                CmsVersion::V1
            } else {
                CmsVersion::V3
            },
            digest_algorithms: SetOfVec::try_from(vec![self.digest_alg]).map_err(encoding)?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: self.content_type,
                econtent,
            },
            certificates: self.with_certificates.then_some(CertificateSet(set)),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info]).map_err(encoding)?),
        };
        let content_info = ContentInfo {
            content_type: rfc5911::ID_SIGNED_DATA,
            content: any_of(&signed_data)?,
        };
        let der = content_info.to_der().map_err(encoding)?;
        // What we hand out is what we read back.
        let expect = match self.econtent {
            None => Content::Detached,
            Some(_) => Content::Encapsulated(self.content_type),
        };
        CmsSignature::from_der(der, expect)
    }
}

/// The signer of a SignerInfo: the issuer and serial number of its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerId {
    issuer: Name,
    serial: SerialNumber,
}

impl SignerId {
    /// The issuer's name as DER.
    pub fn issuer_der(&self) -> Result<Vec<u8>, CmsError> {
        self.issuer.to_der().map_err(encoding)
    }

    /// The issuer's name as an RFC 4514 string.
    pub fn issuer(&self) -> String {
        self.issuer.to_string()
    }

    /// The serial number's bytes (the DER INTEGER contents, big-endian).
    pub fn serial(&self) -> &[u8] {
        self.serial.as_bytes()
    }

    /// The serial number as lower-case hex of [`SignerId::serial`].
    pub fn serial_hex(&self) -> String {
        hex::encode(self.serial.as_bytes())
    }

    /// Whether the certificate `cert_der` (DER) has this issuer and serial number. False for
    /// anything that does not parse.
    pub fn matches_certificate(&self, cert_der: &[u8]) -> bool {
        Certificate::from_der(cert_der).is_ok_and(|c| {
            let tbs = c.tbs_certificate();
            *tbs.issuer() == self.issuer && *tbs.serial_number() == self.serial
        })
    }
}

/// What [`CmsSignature::verify`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The digest algorithm (what the content was hashed with).
    pub hash: HashAlg,
    /// The scheme the signature verified under.
    pub scheme: SignatureScheme,
    /// The signer's issuer and serial number.
    pub signer: SignerId,
    /// The signingTime attribute, if the signature has one (the signer's claim).
    pub signing_time: Option<OffsetDateTime>,
}

/// A detached CMS SignedData with one signer: made by [`PendingCms::complete`] or read by
/// [`CmsSignature::parse`].
#[derive(Clone)]
pub struct CmsSignature {
    der: Vec<u8>,
    hash: HashAlg,
    kind: SignatureKind,
    signer: SignerId,
    /// The signed attributes as a SET (what was signed).
    attrs_der: Vec<u8>,
    message_digest: Vec<u8>,
    signing_time: Option<OffsetDateTime>,
    signature: Vec<u8>,
    certificates: Vec<Vec<u8>>,
    /// The encapsulated content, when the signature carries it.
    econtent: Option<Vec<u8>>,
}

/// What a SignedData is expected to hold as content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// Detached `id-data`.
    Detached,
    /// Content of this type carried inside.
    Encapsulated(ObjectIdentifier),
}

impl fmt::Debug for CmsSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmsSignature")
            .field("hash", &self.hash)
            .field("kind", &self.kind)
            .field("signer", &self.signer)
            .field("signing_time", &self.signing_time)
            .field("len", &self.der.len())
            .finish_non_exhaustive()
    }
}

/// The one value of the one attribute of type `oid`, if there is one; refused when the type
/// appears twice or with other than one value (RFC 5652 §11).
fn single_value<'a>(
    attrs: &'a Attributes,
    oid: ObjectIdentifier,
    what: &'static str,
) -> Result<Option<&'a Any>, CmsError> {
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    let Some(attr) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(CmsError::BadAttributes(what));
    }
    let mut values = attr.values.iter();
    match (values.next(), values.next()) {
        (Some(v), None) => Ok(Some(v)),
        _ => Err(CmsError::BadAttributes(what)),
    }
}

fn decode_any<T: for<'a> Decode<'a, Error = der::Error>>(
    value: &Any,
    what: &'static str,
) -> Result<T, CmsError> {
    let der = value.to_der().map_err(|_| CmsError::BadAttributes(what))?;
    T::from_der(&der).map_err(|_| CmsError::BadAttributes(what))
}

impl CmsSignature {
    /// Reads a CMS signature: DER, or PEM with the label `CMS` (`openssl cms -outform PEM`)
    /// or `PKCS7`. Refuses (with a typed error, never a panic) input longer than
    /// [`MAX_CMS_LEN`], anything that is not strict DER of a ContentInfo holding SignedData,
    /// and SignedData this daemon does not verify: not exactly one SignerInfo, a signer not
    /// named by issuerAndSerialNumber, embedded content, no signed attributes, a contentType
    /// attribute other than `id-data`, a missing or wrongly sized messageDigest, a
    /// CMSAlgorithmProtection attribute that does not match the SignerInfo's algorithms,
    /// and algorithms other than those in the module documentation.
    pub fn parse(der_or_pem: &[u8]) -> Result<CmsSignature, CmsError> {
        if der_or_pem.len() > MAX_CMS_LEN {
            return Err(CmsError::TooLarge { max: MAX_CMS_LEN });
        }
        let start = der_or_pem
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(der_or_pem.len());
        if der_or_pem[start..].starts_with(b"-----BEGIN ") {
            let (label, der) = der::pem::decode_vec(&der_or_pem[start..])
                .map_err(|e| CmsError::Malformed(format!("PEM: {e}")))?;
            if label != "CMS" && label != "PKCS7" {
                return Err(CmsError::Malformed(
                    "PEM label is not CMS or PKCS7".to_owned(),
                ));
            }
            CmsSignature::from_der(der, Content::Detached)
        } else {
            CmsSignature::from_der(der_or_pem.to_vec(), Content::Detached)
        }
    }

    /// Reads a DER SignedData that carries content of type `content_type` (a time-stamp
    /// token: id-ct-TSTInfo), with the checks of [`parse`](Self::parse) otherwise.
    pub fn parse_encapsulated(
        der: &[u8],
        content_type: ObjectIdentifier,
    ) -> Result<CmsSignature, CmsError> {
        if der.len() > MAX_CMS_LEN {
            return Err(CmsError::TooLarge { max: MAX_CMS_LEN });
        }
        CmsSignature::from_der(der.to_vec(), Content::Encapsulated(content_type))
    }

    fn from_der(der: Vec<u8>, expect: Content) -> Result<CmsSignature, CmsError> {
        let content_info = ContentInfo::from_der(&der).map_err(malformed)?;
        if content_info.content_type != rfc5911::ID_SIGNED_DATA {
            return Err(CmsError::Unsupported("the ContentInfo is not SignedData"));
        }
        let signed = SignedData::from_der(&content_info.content.to_der().map_err(malformed)?)
            .map_err(malformed)?;
        let encap = &signed.encap_content_info;
        let econtent = match expect {
            Content::Detached => {
                if encap.econtent_type != ID_DATA {
                    return Err(CmsError::Unsupported("content type other than id-data"));
                }
                if encap.econtent.is_some() {
                    return Err(CmsError::Unsupported(
                        "the content is embedded; only detached signatures are verified",
                    ));
                }
                None
            }
            Content::Encapsulated(oid) => {
                if encap.econtent_type != oid {
                    return Err(CmsError::Unsupported(
                        "not the expected encapsulated content type",
                    ));
                }
                let content = encap
                    .econtent
                    .as_ref()
                    .ok_or(CmsError::Unsupported("no encapsulated content"))?;
                let octets: OctetString = decode_any(content, "eContent")
                    .map_err(|_| CmsError::Malformed("eContent is not an OCTET STRING".into()))?;
                Some(octets.as_bytes().to_vec())
            }
        };
        let mut signers = signed.signer_infos.0.iter();
        let signer_info = match (signers.next(), signers.next()) {
            (Some(si), None) => si,
            _ => return Err(CmsError::Unsupported("not exactly one SignerInfo")),
        };
        let signer = match &signer_info.sid {
            SignerIdentifier::IssuerAndSerialNumber(isn) => SignerId {
                issuer: isn.issuer.clone(),
                serial: isn.serial_number.clone(),
            },
            SignerIdentifier::SubjectKeyIdentifier(_) => {
                return Err(CmsError::Unsupported(
                    "signer named by subjectKeyIdentifier, not issuerAndSerialNumber",
                ));
            }
        };
        let hash = digest_from_identifier(&signer_info.digest_alg)?;
        let kind = SignatureKind::from_identifier(&signer_info.signature_algorithm, hash)?;
        let attrs = signer_info
            .signed_attrs
            .as_ref()
            .ok_or(CmsError::Unsupported("no signed attributes"))?;

        let content_type = single_value(attrs, rfc5911::ID_CONTENT_TYPE, "contentType")?
            .ok_or(CmsError::BadAttributes("no contentType"))?;
        let content_type: ObjectIdentifier = decode_any(content_type, "contentType")?;
        if content_type != encap.econtent_type {
            return Err(CmsError::BadAttributes(
                "contentType is not the encapsulated content type",
            ));
        }

        let digest = single_value(attrs, rfc5911::ID_MESSAGE_DIGEST, "messageDigest")?
            .ok_or(CmsError::BadAttributes("no messageDigest"))?;
        let digest: OctetString = decode_any(digest, "messageDigest")?;
        if digest.as_bytes().len() != hash.output_len() {
            return Err(CmsError::BadAttributes(
                "messageDigest does not have the digest algorithm's length",
            ));
        }

        let signing_time = single_value(attrs, rfc5911::ID_SIGNING_TIME, "signingTime")?
            .map(|v| -> Result<OffsetDateTime, CmsError> {
                let time: Time = decode_any(v, "signingTime")?;
                let secs = i64::try_from(time.to_unix_duration().as_secs())
                    .map_err(|_| CmsError::BadAttributes("signingTime"))?;
                OffsetDateTime::from_unix_timestamp(secs)
                    .map_err(|_| CmsError::BadAttributes("signingTime"))
            })
            .transpose()?;

        if let Some(value) = single_value(
            attrs,
            rfc6211::ID_AA_CMS_ALGORITHM_PROTECTION,
            "CMSAlgorithmProtection",
        )? {
            let protection: AlgorithmProtection = decode_any(value, "CMSAlgorithmProtection")?;
            let signature_matches = protection
                .signature_algorithm
                .as_ref()
                .is_some_and(|a| same_algorithm(a, &signer_info.signature_algorithm));
            if !same_algorithm(&protection.digest_algorithm, &signer_info.digest_alg)
                || !signature_matches
                || protection.mac_algorithm.is_some()
            {
                return Err(CmsError::BadAttributes(
                    "CMSAlgorithmProtection does not match the SignerInfo's algorithms",
                ));
            }
        }

        let attrs_der = attrs.to_der().map_err(malformed)?;
        let certificates = match &signed.certificates {
            Some(set) => set
                .0
                .iter()
                .filter_map(|c| match c {
                    CertificateChoices::Certificate(cert) => Some(cert.to_der()),
                    CertificateChoices::Other(_) => None,
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(malformed)?,
            None => Vec::new(),
        };
        Ok(CmsSignature {
            hash,
            kind,
            signer,
            attrs_der,
            message_digest: digest.as_bytes().to_vec(),
            signing_time,
            signature: signer_info.signature.as_bytes().to_vec(),
            certificates,
            econtent,
            der,
        })
    }

    /// The encapsulated content (time-stamp tokens), if the signature carries one.
    pub fn econtent(&self) -> Option<&[u8]> {
        self.econtent.as_deref()
    }

    /// The SignerInfo's signature value (what a signature time-stamp covers).
    pub fn signature_value(&self) -> &[u8] {
        &self.signature
    }

    /// The same signature with the unsigned attribute `oid` = `value_der` (DER) added to its
    /// SignerInfo (e.g. id-aa-signatureTimeStampToken). The signed part is unchanged.
    pub fn with_unsigned_attribute(
        &self,
        oid: ObjectIdentifier,
        value_der: &[u8],
    ) -> Result<CmsSignature, CmsError> {
        let content_info = ContentInfo::from_der(&self.der).map_err(malformed)?;
        let mut signed = SignedData::from_der(&content_info.content.to_der().map_err(malformed)?)
            .map_err(malformed)?;
        let mut infos: Vec<SignerInfo> = signed.signer_infos.0.iter().cloned().collect();
        let info = infos
            .first_mut()
            .ok_or(CmsError::Unsupported("not exactly one SignerInfo"))?;
        let mut unsigned: Vec<Attribute> = info
            .unsigned_attrs
            .as_ref()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default();
        unsigned.push(attribute(oid, Any::from_der(value_der).map_err(encoding)?)?);
        info.unsigned_attrs = Some(SetOfVec::try_from(unsigned).map_err(encoding)?);
        signed.signer_infos = SignerInfos(SetOfVec::try_from(infos).map_err(encoding)?);
        let der = ContentInfo {
            content_type: rfc5911::ID_SIGNED_DATA,
            content: any_of(&signed)?,
        }
        .to_der()
        .map_err(encoding)?;
        let expect = match (&self.econtent, signed.encap_content_info.econtent_type) {
            (None, _) => Content::Detached,
            (Some(_), oid) => Content::Encapsulated(oid),
        };
        CmsSignature::from_der(der, expect)
    }

    /// The unsigned attribute `oid`'s one value (DER), if the SignerInfo has it.
    pub fn unsigned_attribute(&self, oid: ObjectIdentifier) -> Result<Option<Vec<u8>>, CmsError> {
        let content_info = ContentInfo::from_der(&self.der).map_err(malformed)?;
        let signed = SignedData::from_der(&content_info.content.to_der().map_err(malformed)?)
            .map_err(malformed)?;
        let Some(info) = signed.signer_infos.0.iter().next() else {
            return Ok(None);
        };
        let Some(attrs) = &info.unsigned_attrs else {
            return Ok(None);
        };
        single_value(attrs, oid, "unsigned attribute")?
            .map(|v| v.to_der().map_err(encoding))
            .transpose()
    }

    /// The DER encoding (what `openssl cms -inform DER` reads).
    pub fn to_der(&self) -> &[u8] {
        &self.der
    }

    /// The PEM encoding, label `CMS` (what `openssl cms -inform PEM` reads), LF line endings.
    pub fn to_pem(&self) -> Result<String, CmsError> {
        der::pem::encode_string("CMS", der::pem::LineEnding::LF, &self.der)
            .map_err(|e| CmsError::Encoding(e.to_string()))
    }

    /// The digest algorithm: hash the content with it, then call [`verify`](Self::verify).
    pub fn digest_algorithm(&self) -> HashAlg {
        self.hash
    }

    /// The signer's issuer and serial number, to find its certificate (and so its key).
    pub fn signer(&self) -> &SignerId {
        &self.signer
    }

    /// The signingTime attribute, if there is one (the signer's claim, not a timestamp).
    pub fn signing_time(&self) -> Option<OffsetDateTime> {
        self.signing_time
    }

    /// The messageDigest attribute: the digest of the content the signature covers.
    pub fn message_digest(&self) -> &[u8] {
        &self.message_digest
    }

    /// The certificates the SignedData carries (DER), in its order. They are the sender's
    /// claim: trust a key only through the caller's own records or a verified chain.
    pub fn certificates(&self) -> &[Vec<u8>] {
        &self.certificates
    }

    /// The carried certificate with the signer's issuer and serial number, if any (not
    /// trusted by itself; see [`certificates`](Self::certificates)).
    pub fn signer_certificate(&self) -> Option<&[u8]> {
        self.certificates
            .iter()
            .find(|c| self.signer.matches_certificate(c))
            .map(Vec::as_slice)
    }

    /// Verifies the signature for content whose digest under
    /// [`digest_algorithm`](Self::digest_algorithm) is `content_digest`, with the public key
    /// `spki_der` (SubjectPublicKeyInfo DER): the digest has the hash's length and equals the
    /// messageDigest attribute, and the signature over the signed attributes verifies with the
    /// key. (contentType and CMSAlgorithmProtection were checked by [`parse`](Self::parse).)
    /// A key of another type than the signature's algorithm is refused with
    /// [`CmsError::PublicKey`]; one that does not verify with [`CmsError::BadSignature`].
    pub fn verify(&self, content_digest: &[u8], spki_der: &[u8]) -> Result<Verified, CmsError> {
        if content_digest.len() != self.hash.output_len() {
            return Err(CmsError::DigestLength {
                hash: self.hash,
                expected: self.hash.output_len(),
                actual: content_digest.len(),
            });
        }
        if content_digest != self.message_digest.as_slice() {
            return Err(CmsError::DigestMismatch);
        }
        let scheme = scheme_for(self.kind, self.hash, spki_der)?;
        let input = self.kind.input(self.hash, &self.attrs_der);
        scheme
            .verify(spki_der, input.as_input(), &self.signature)
            .map_err(|e| match e {
                CryptoError::PublicKey(reason) => CmsError::PublicKey(reason),
                _ => CmsError::BadSignature,
            })?;
        Ok(Verified {
            hash: self.hash,
            scheme,
            signer: self.signer.clone(),
            signing_time: self.signing_time,
        })
    }
}
