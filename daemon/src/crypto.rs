//! crypto: software-only cryptography — hashing, signature encodings, and the verification that
//! every token signature passes before it leaves the daemon (invariant 8). Never holds a private key.

use ed25519_dalek::pkcs8::DecodePublicKey as _;
use sha2::Digest as _;
use signature::hazmat::PrehashVerifier as _;

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
    /// The signature scheme does not fit the key.
    #[error("scheme {0:?} does not fit this key")]
    Unsupported(SignatureScheme),
}

/// A hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    /// SHA-256
    Sha256,
    /// SHA-384
    Sha384,
    /// SHA-512
    Sha512,
}

impl HashAlg {
    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
            HashAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// A complete signature scheme: what the token computes and how the result is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// ECDSA over P-256 with SHA-256; DER-encoded `Ecdsa-Sig-Value`.
    EcdsaP256Sha256,
    /// ECDSA over P-384 with SHA-384; DER-encoded `Ecdsa-Sig-Value`.
    EcdsaP384Sha384,
    /// Pure Ed25519.
    Ed25519,
}

/// What the token is asked to do for one signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMechanism {
    /// CKM_ECDSA over a digest the daemon computed; the token returns r‖s.
    Ecdsa,
    /// CKM_EDDSA (pure) over the message.
    Eddsa,
}

impl SignatureScheme {
    /// The token mechanism and its input for signing `message`.
    pub fn prepare(self, message: &[u8]) -> (TokenMechanism, Vec<u8>) {
        match self {
            SignatureScheme::EcdsaP256Sha256 => {
                (TokenMechanism::Ecdsa, HashAlg::Sha256.digest(message))
            }
            SignatureScheme::EcdsaP384Sha384 => {
                (TokenMechanism::Ecdsa, HashAlg::Sha384.digest(message))
            }
            SignatureScheme::Ed25519 => (TokenMechanism::Eddsa, message.to_vec()),
        }
    }

    /// Turns the token's raw output into the scheme's standard encoding.
    pub fn finish(self, raw: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            SignatureScheme::EcdsaP256Sha256 => p256::ecdsa::Signature::from_slice(raw)
                .map(|s| s.to_der().as_bytes().to_vec())
                .map_err(|_| CryptoError::BadSignature),
            SignatureScheme::EcdsaP384Sha384 => p384::ecdsa::Signature::from_slice(raw)
                .map(|s| s.to_der().as_bytes().to_vec())
                .map_err(|_| CryptoError::BadSignature),
            SignatureScheme::Ed25519 => Ok(raw.to_vec()),
        }
    }

    /// Verifies `signature` (in the scheme's standard encoding) over `message` with the public
    /// key `spki_der`.
    pub fn verify(
        self,
        spki_der: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        let key_err = |e: &dyn std::fmt::Display| CryptoError::PublicKey(e.to_string());
        match self {
            SignatureScheme::EcdsaP256Sha256 => {
                let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki_der)
                    .map_err(|e| key_err(&e))?;
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| CryptoError::BadSignature)?;
                key.verify_prehash(&HashAlg::Sha256.digest(message), &sig)
                    .map_err(|_| CryptoError::BadSignature)
            }
            SignatureScheme::EcdsaP384Sha384 => {
                let key = p384::ecdsa::VerifyingKey::from_public_key_der(spki_der)
                    .map_err(|e| key_err(&e))?;
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .map_err(|_| CryptoError::BadSignature)?;
                key.verify_prehash(&HashAlg::Sha384.digest(message), &sig)
                    .map_err(|_| CryptoError::BadSignature)
            }
            SignatureScheme::Ed25519 => {
                let key = ed25519_dalek::VerifyingKey::from_public_key_der(spki_der)
                    .map_err(|e| key_err(&e))?;
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| CryptoError::BadSignature)?;
                key.verify_strict(message, &sig)
                    .map_err(|_| CryptoError::BadSignature)
            }
        }
    }
}

/// SHA-256 of `data` as lower-case hex: the fingerprint format used for certificates and keys.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::EncodePublicKey as _;
    use signature::hazmat::PrehashSigner as _;

    #[test]
    fn p256_round_trip_and_tamper() -> Result<(), Box<dyn std::error::Error>> {
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32])?;
        let spki = key.verifying_key().to_public_key_der()?;
        let scheme = SignatureScheme::EcdsaP256Sha256;
        let (mech, input) = scheme.prepare(b"hello");
        assert_eq!(mech, TokenMechanism::Ecdsa);
        let sig: p256::ecdsa::Signature = key.sign_prehash(&input)?;
        let der = scheme.finish(&sig.to_bytes())?;
        scheme.verify(spki.as_bytes(), b"hello", &der)?;
        assert!(scheme.verify(spki.as_bytes(), b"hellO", &der).is_err());
        let mut flipped = der.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(scheme.verify(spki.as_bytes(), b"hello", &flipped).is_err());
        Ok(())
    }
}
