//! The signer trait, and the adapter that lets x509-cert's builders use it.
//!
//! x509-cert's [`Builder`] wants a `Keypair + DynSignatureAlgorithmIdentifier` only to learn the
//! issuer's public key and the signature algorithm; the signing itself happens between
//! [`Builder::finalize`] and [`Builder::assemble`], where [`IssuerKey::build`] calls
//! [`TbsSigner::sign`]. Certificates, CRLs (`CrlBuilder`) and OCSP responses all go through
//! [`IssuerKey`].

use std::fmt;

use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5912, rfc8410};
use der::asn1::{Any, BitString};
use signature::Keypair;
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SubjectPublicKeyInfoOwned,
};
use x509_cert::builder::Builder;

use crate::error::{CertError, IssuerError, SignerError};

/// Anything that can sign a to-be-signed structure with the issuer's key (an HSM key in the
/// daemon, a software key in tests).
///
/// This crate does not verify the signatures it receives: the signer is expected to check its
/// own output against its public key (the daemon's HSM layer does, invariant 8).
pub trait TbsSigner {
    /// AlgorithmIdentifier of the signatures produced: `ecdsa-with-SHA256` (and -384, -512)
    /// without parameters, `sha256WithRSAEncryption` (and -384, -512) with NULL parameters,
    /// `id-RSASSA-PSS` with its parameters, or `id-Ed25519`/`id-Ed448` without parameters.
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned;

    /// The issuer's public key.
    fn public_key(&self) -> SubjectPublicKeyInfoOwned;

    /// Signs `tbs` (DER). Returns the bytes that go into the signature BIT STRING (for ECDSA:
    /// a DER `Ecdsa-Sig-Value`; for RSA and EdDSA: the raw signature).
    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, SignerError>;
}

/// A [`TbsSigner`] with its public key and algorithm fetched once and checked against each
/// other, usable as the "signer" of any x509-cert [`Builder`].
pub(crate) struct IssuerKey<'a> {
    signer: &'a dyn TbsSigner,
    public_key: IssuerPublicKey,
    algorithm: AlgorithmIdentifierOwned,
}

impl fmt::Debug for IssuerKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerKey")
            .field("public_key", &self.public_key)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl<'a> IssuerKey<'a> {
    /// Asks `signer` for its key and algorithm, and checks that they fit together.
    pub(crate) fn new(signer: &'a dyn TbsSigner) -> Result<Self, CertError> {
        let public_key = signer.public_key();
        let algorithm = signer.signature_algorithm();
        check_algorithm(&algorithm, &public_key)?;
        Ok(Self {
            signer,
            public_key: IssuerPublicKey(public_key),
            algorithm,
        })
    }

    /// The signer's public key.
    pub(crate) fn spki(&self) -> &SubjectPublicKeyInfoOwned {
        &self.public_key.0
    }

    /// The signer's signature algorithm.
    pub(crate) fn algorithm(&self) -> &AlgorithmIdentifierOwned {
        &self.algorithm
    }

    /// Finalizes `builder`, signs the to-be-signed bytes with the signer, and assembles the
    /// signed object.
    pub(crate) fn build<B: Builder>(&self, mut builder: B) -> Result<B::Output, CertError> {
        let tbs = builder.finalize(self).map_err(CertError::encoding)?;
        let signature = self.sign(&tbs)?;
        builder
            .assemble(signature, self)
            .map_err(CertError::encoding)
    }

    /// Signs DER `tbs` bytes and wraps the signature in a BIT STRING; for structures without
    /// an x509-cert builder (OCSP `ResponseData`).
    pub(crate) fn sign(&self, tbs: &[u8]) -> Result<BitString, CertError> {
        let signature = self.signer.sign(tbs)?;
        if signature.is_empty() {
            return Err(SignerError::new("the signer returned an empty signature").into());
        }
        BitString::from_bytes(&signature).map_err(CertError::encoding)
    }
}

impl Keypair for IssuerKey<'_> {
    type VerifyingKey = IssuerPublicKey;

    fn verifying_key(&self) -> IssuerPublicKey {
        self.public_key.clone()
    }
}

impl DynSignatureAlgorithmIdentifier for IssuerKey<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(self.algorithm.clone())
    }
}

/// The issuer's public key, in the shape x509-cert's builders ask for.
#[derive(Clone, Debug)]
pub(crate) struct IssuerPublicKey(SubjectPublicKeyInfoOwned);

impl EncodePublicKey for IssuerPublicKey {
    fn to_public_key_der(&self) -> spki::Result<spki::Document> {
        Ok(spki::Document::encode_msg(&self.0)?)
    }
}

/// Accepts only signature algorithms that fit the key, with the parameters RFC 5758, RFC 4055
/// and RFC 8410 require, so that a misconfigured signer cannot produce certificates that no
/// verifier accepts.
fn check_algorithm(
    algorithm: &AlgorithmIdentifierOwned,
    key: &SubjectPublicKeyInfoOwned,
) -> Result<(), IssuerError> {
    const ECDSA: [ObjectIdentifier; 3] = [
        rfc5912::ECDSA_WITH_SHA_256,
        rfc5912::ECDSA_WITH_SHA_384,
        rfc5912::ECDSA_WITH_SHA_512,
    ];
    const RSA_PKCS1: [ObjectIdentifier; 3] = [
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION,
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION,
    ];

    let alg = algorithm.oid;
    let params = algorithm.parameters.as_ref();
    let fits = match key.algorithm.oid {
        rfc5912::ID_EC_PUBLIC_KEY => ECDSA.contains(&alg) && params.is_none(),
        rfc5912::RSA_ENCRYPTION => {
            (RSA_PKCS1.contains(&alg) && params.is_some_and(Any::is_null))
                || (alg == rfc5912::ID_RSASSA_PSS && params.is_some())
        }
        rfc8410::ID_ED_25519 => alg == rfc8410::ID_ED_25519 && params.is_none(),
        rfc8410::ID_ED_448 => alg == rfc8410::ID_ED_448 && params.is_none(),
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(IssuerError::UnsupportedSignatureAlgorithm {
            algorithm: alg,
            key: key.algorithm.oid,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn alg(oid: ObjectIdentifier, parameters: Option<Any>) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned { oid, parameters }
    }

    fn key(oid: ObjectIdentifier) -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned {
            algorithm: alg(oid, None),
            subject_public_key: BitString::from_bytes(&[4; 65]).unwrap(),
        }
    }

    #[test]
    fn algorithms_must_fit_the_key() {
        let ec = key(rfc5912::ID_EC_PUBLIC_KEY);
        let rsa = key(rfc5912::RSA_ENCRYPTION);
        let ed = key(rfc8410::ID_ED_25519);
        let null = Some(Any::null());

        let accepted = [
            (alg(rfc5912::ECDSA_WITH_SHA_256, None), &ec),
            (alg(rfc5912::ECDSA_WITH_SHA_384, None), &ec),
            (
                alg(rfc5912::SHA_256_WITH_RSA_ENCRYPTION, null.clone()),
                &rsa,
            ),
            (alg(rfc8410::ID_ED_25519, None), &ed),
        ];
        for (a, k) in accepted {
            assert!(check_algorithm(&a, k).is_ok(), "{a:?} should fit {k:?}");
        }

        let rejected = [
            (alg(rfc5912::ECDSA_WITH_SHA_256, null.clone()), &ec),
            (alg(rfc5912::SHA_256_WITH_RSA_ENCRYPTION, null.clone()), &ec),
            (alg(rfc5912::SHA_256_WITH_RSA_ENCRYPTION, None), &rsa),
            (alg(rfc5912::ECDSA_WITH_SHA_256, None), &rsa),
            (alg(rfc5912::ECDSA_WITH_SHA_256, None), &ed),
            (alg(rfc5912::SHA_1_WITH_RSA_ENCRYPTION, null), &rsa),
        ];
        for (a, k) in rejected {
            assert!(
                matches!(
                    check_algorithm(&a, k),
                    Err(IssuerError::UnsupportedSignatureAlgorithm { .. })
                ),
                "{a:?} should not fit {k:?}"
            );
        }
    }
}
