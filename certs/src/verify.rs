//! Software verification of the self-signature of a request, and the subject key checks that
//! go with it: which key algorithms, curves and sizes this CA certifies.
//!
//! Supported: ECDSA on P-256 and P-384 with SHA-256/384/512; RSA (2048 to 8192 bits) with
//! PKCS#1 v1.5 or PSS (MGF1 with the same hash) and SHA-256/384/512; Ed25519. Everything else
//! (SHA-1, DSA, Ed448, other curves, RSA-PSS-only keys) is refused.

use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5912, rfc8410};
use der::asn1::AnyRef;
use der::{Decode, Sequence};
use rsa_010 as rsa;
use sha2::{Digest, Sha256, Sha384, Sha512};
use signature::Verifier;
use signature::hazmat::PrehashVerifier;
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoOwned};

use crate::error::RequestError;

/// The smallest RSA modulus accepted, in bits.
pub(crate) const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus accepted, in bits (the `rsa` crate's own limit).
pub(crate) const MAX_RSA_BITS: usize = rsa::RsaPublicKey::MAX_SIZE;

/// The hash functions allowed in signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            rfc5912::ID_SHA_256 => Some(Self::Sha256),
            rfc5912::ID_SHA_384 => Some(Self::Sha384),
            rfc5912::ID_SHA_512 => Some(Self::Sha512),
            _ => None,
        }
    }

    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(message).to_vec(),
            Self::Sha384 => Sha384::digest(message).to_vec(),
            Self::Sha512 => Sha512::digest(message).to_vec(),
        }
    }
}

/// Checks that `key` is a subject key this CA certifies and that `signature` over `message` is
/// valid under it with `algorithm`.
pub(crate) fn verify_self_signature(
    key: &SubjectPublicKeyInfoOwned,
    algorithm: &AlgorithmIdentifierRef<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), RequestError> {
    let key_bits = key
        .subject_public_key
        .as_bytes()
        .ok_or(RequestError::InvalidPublicKey("BIT STRING"))?;
    let key_params = key.algorithm.parameters.as_ref().map(AnyRef::from);
    match key.algorithm.oid {
        rfc5912::ID_EC_PUBLIC_KEY => {
            verify_ecdsa(key_params, key_bits, algorithm, message, signature)
        }
        rfc5912::RSA_ENCRYPTION => {
            if !key_params.is_some_and(|p| p.is_null()) {
                return Err(RequestError::InvalidPublicKey("RSA"));
            }
            verify_rsa(key_bits, algorithm, message, signature)
        }
        rfc8410::ID_ED_25519 => {
            if key_params.is_some() {
                return Err(RequestError::InvalidPublicKey("Ed25519"));
            }
            verify_ed25519(key_bits, algorithm, message, signature)
        }
        other => Err(RequestError::UnsupportedKeyAlgorithm(other)),
    }
}

fn verify_ecdsa(
    key_params: Option<AnyRef<'_>>,
    key_bits: &[u8],
    algorithm: &AlgorithmIdentifierRef<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), RequestError> {
    // Only named curves (RFC 5480); explicit curve parameters are refused.
    let curve = key_params
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .ok_or(RequestError::InvalidPublicKey("EC (named curve)"))?;
    if curve != rfc5912::SECP_256_R_1 && curve != rfc5912::SECP_384_R_1 {
        return Err(RequestError::UnsupportedCurve(curve));
    }
    // RFC 5758: ecdsa-with-SHA* have absent parameters.
    let hash = match algorithm.oid {
        rfc5912::ECDSA_WITH_SHA_256 => Hash::Sha256,
        rfc5912::ECDSA_WITH_SHA_384 => Hash::Sha384,
        rfc5912::ECDSA_WITH_SHA_512 => Hash::Sha512,
        other => return Err(RequestError::UnsupportedSignatureAlgorithm(other)),
    };
    if algorithm.parameters.is_some() {
        return Err(RequestError::UnsupportedSignatureAlgorithm(algorithm.oid));
    }
    let prehash = hash.digest(message);
    let verified = if curve == rfc5912::SECP_256_R_1 {
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bits)
            .map_err(|_| RequestError::InvalidPublicKey("P-256"))?;
        let signature =
            p256::ecdsa::Signature::from_der(signature).map_err(|_| RequestError::BadSignature)?;
        key.verify_prehash(&prehash, &signature)
    } else {
        let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bits)
            .map_err(|_| RequestError::InvalidPublicKey("P-384"))?;
        let signature =
            p384::ecdsa::Signature::from_der(signature).map_err(|_| RequestError::BadSignature)?;
        key.verify_prehash(&prehash, &signature)
    };
    verified.map_err(|_| RequestError::BadSignature)
}

fn verify_rsa(
    key_bits: &[u8],
    algorithm: &AlgorithmIdentifierRef<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), RequestError> {
    let key = rsa_public_key(key_bits)?;
    let params = algorithm.parameters;
    match algorithm.oid {
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION
        | rfc5912::SHA_384_WITH_RSA_ENCRYPTION
        | rfc5912::SHA_512_WITH_RSA_ENCRYPTION => {
            // RFC 4055 section 5: NULL, but verifiers must accept absent parameters too.
            if params.is_some_and(|p| !p.is_null()) {
                return Err(RequestError::UnsupportedSignatureAlgorithm(algorithm.oid));
            }
            let signature = rsa::pkcs1v15::Signature::try_from(signature)
                .map_err(|_| RequestError::BadSignature)?;
            let verified = match algorithm.oid {
                rfc5912::SHA_256_WITH_RSA_ENCRYPTION => {
                    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key).verify(message, &signature)
                }
                rfc5912::SHA_384_WITH_RSA_ENCRYPTION => {
                    rsa::pkcs1v15::VerifyingKey::<Sha384>::new(key).verify(message, &signature)
                }
                _ => rsa::pkcs1v15::VerifyingKey::<Sha512>::new(key).verify(message, &signature),
            };
            verified.map_err(|_| RequestError::BadSignature)
        }
        rfc5912::ID_RSASSA_PSS => {
            let (hash, salt_len) = pss_params(params.ok_or(
                RequestError::UnsupportedSignatureAlgorithm(rfc5912::ID_RSASSA_PSS),
            )?)?;
            let signature =
                rsa::pss::Signature::try_from(signature).map_err(|_| RequestError::BadSignature)?;
            let verified = match hash {
                Hash::Sha256 => rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(key, salt_len)
                    .verify(message, &signature),
                Hash::Sha384 => rsa::pss::VerifyingKey::<Sha384>::new_with_salt_len(key, salt_len)
                    .verify(message, &signature),
                Hash::Sha512 => rsa::pss::VerifyingKey::<Sha512>::new_with_salt_len(key, salt_len)
                    .verify(message, &signature),
            };
            verified.map_err(|_| RequestError::BadSignature)
        }
        other => Err(RequestError::UnsupportedSignatureAlgorithm(other)),
    }
}

/// Decodes a PKCS#1 `RSAPublicKey` and checks its size before the `rsa` crate sees it (which
/// would accept 1024-bit keys).
fn rsa_public_key(key_bits: &[u8]) -> Result<rsa::RsaPublicKey, RequestError> {
    let invalid = || RequestError::InvalidPublicKey("RSA");
    let key = rsa::pkcs1::RsaPublicKeyRef::from_der(key_bits).map_err(|_| invalid())?;
    let modulus = key.modulus.as_bytes();
    let bits = match modulus.first() {
        Some(&top) => modulus.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(RequestError::RsaKeySize {
            bits,
            min: MIN_RSA_BITS,
            max: MAX_RSA_BITS,
        });
    }
    rsa::RsaPublicKey::try_from(key).map_err(|_| invalid())
}

/// `RSASSA-PSS-params` (RFC 4055 section 3.1). Every field has a SHA-1 default, which is
/// refused, so the hash and mask generation function must be present.
#[derive(Sequence)]
struct PssParams<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierRef<'a>>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifierRef<'a>>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    salt_len: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    trailer_field: Option<u8>,
}

/// The hash and salt length of PSS parameters, if they are MGF1 with the same SHA-2 hash and
/// the standard trailer.
fn pss_params(params: AnyRef<'_>) -> Result<(Hash, usize), RequestError> {
    let unsupported = || RequestError::UnsupportedSignatureAlgorithm(rfc5912::ID_RSASSA_PSS);
    let params: PssParams<'_> = params.decode_as().map_err(|_| unsupported())?;
    let hash_alg = params.hash.ok_or_else(unsupported)?;
    let hash = Hash::from_oid(hash_alg.oid).ok_or_else(unsupported)?;
    let mgf = params.mask_gen.ok_or_else(unsupported)?;
    let mgf_hash = mgf
        .parameters
        .and_then(|p| p.decode_as::<AlgorithmIdentifierRef<'_>>().ok())
        .ok_or_else(unsupported)?;
    let null_or_absent = |p: Option<AnyRef<'_>>| p.is_none_or(|p| p.is_null());
    let fits = mgf.oid == rfc5912::ID_MGF_1
        && mgf_hash.oid == hash_alg.oid
        && null_or_absent(hash_alg.parameters)
        && null_or_absent(mgf_hash.parameters)
        // DER omits a DEFAULT value: an explicit trailerField must not be 1.
        && params.trailer_field.is_none();
    if !fits {
        return Err(unsupported());
    }
    // The default salt length (20) belongs to the SHA-1 default; it is still valid with SHA-2.
    let salt_len = params.salt_len.unwrap_or(20);
    let salt_len = usize::try_from(salt_len).map_err(|_| unsupported())?;
    Ok((hash, salt_len))
}

fn verify_ed25519(
    key_bits: &[u8],
    algorithm: &AlgorithmIdentifierRef<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), RequestError> {
    // RFC 8410: id-Ed25519 with absent parameters.
    if algorithm.oid != rfc8410::ID_ED_25519 || algorithm.parameters.is_some() {
        return Err(RequestError::UnsupportedSignatureAlgorithm(algorithm.oid));
    }
    let key_bytes: &[u8; 32] = key_bits
        .try_into()
        .map_err(|_| RequestError::InvalidPublicKey("Ed25519"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(key_bytes)
        .map_err(|_| RequestError::InvalidPublicKey("Ed25519"))?;
    let signature =
        ed25519_dalek::Signature::from_slice(signature).map_err(|_| RequestError::BadSignature)?;
    // Strict verification: no small-order keys, no malleable signatures.
    key.verify_strict(message, &signature)
        .map_err(|_| RequestError::BadSignature)
}
