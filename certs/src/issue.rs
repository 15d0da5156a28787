//! Making certificates: the self-signed CA certificate and leaf certificates under it.

use der::Encode;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::builder::CertificateBuilder;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use x509_cert::{Certificate, der::referenced::OwnedToRef};

use crate::error::{CertError, IssuerError, RequestError};
use crate::profile::{CaProfile, IssuerUrls, LeafProfile, Profile};
use crate::signer::{IssuerKey, TbsSigner};

/// Makes the self-signed CA certificate for `signer`'s key.
///
/// Extensions: basicConstraints CA:TRUE, pathlen:0 (critical; this CA signs end-entity
/// certificates only), keyUsage keyCertSign, cRLSign and digitalSignature (critical; the last
/// one lets the CA key sign OCSP responses itself), subjectKeyIdentifier, and an
/// authorityKeyIdentifier equal to it.
pub fn self_signed_ca(
    signer: &dyn TbsSigner,
    subject: &Name,
    validity: Validity,
    serial: SerialNumber,
) -> Result<Certificate, CertError> {
    if subject.is_empty() {
        return Err(RequestError::EmptySubject.into());
    }
    check_order(&validity)?;
    let key = IssuerKey::new(signer)?;
    let profile = CaProfile {
        subject: subject.clone(),
    };
    let builder = CertificateBuilder::new(profile, serial, validity, key.spki().clone())
        .map_err(CertError::encoding)?;
    key.build(builder)
}

/// Issues a leaf certificate for `spki` under the CA certificate `ca`, signed by `signer`.
///
/// Extensions: basicConstraints CA:FALSE (critical), keyUsage (critical) and
/// extendedKeyUsage per [`Profile`], subjectAltName for [`Profile::TlsServer`],
/// subjectKeyIdentifier from `spki`, authorityKeyIdentifier = the CA's subjectKeyIdentifier,
/// and cRLDistributionPoints / authorityInfoAccess (OCSP) for each URL set in `urls` (except
/// for [`Profile::OcspResponder`], whose certificate carries `id-pkix-ocsp-nocheck` instead).
///
/// Fails before signing if `signer`'s public key is not `ca`'s, if `ca` may not sign
/// certificates, if the validity ends after `ca`'s, or if the request does not fit the profile.
#[allow(clippy::too_many_arguments)] // each argument is a distinct part of the certificate
pub fn issue(
    ca: &Certificate,
    signer: &dyn TbsSigner,
    profile: &Profile,
    subject: Name,
    spki: SubjectPublicKeyInfoOwned,
    serial: SerialNumber,
    validity: Validity,
    urls: &IssuerUrls,
) -> Result<Certificate, CertError> {
    let ca_tbs = ca.tbs_certificate();
    let key = IssuerKey::new(signer)?;
    check_signer_key(ca, &key)?;
    check_is_ca(ca)?;

    check_order(&validity)?;
    if validity.not_after.to_unix_duration() > ca_tbs.validity().not_after.to_unix_duration() {
        return Err(RequestError::InvalidValidity("notAfter is after the CA certificate's").into());
    }

    let profile = LeafProfile::new(
        profile,
        ca_tbs.subject().clone(),
        subject,
        &spki,
        authority_key_id(ca)?,
        urls,
    )?;
    let builder =
        CertificateBuilder::new(profile, serial, validity, spki).map_err(CertError::encoding)?;
    key.build(builder)
}

fn check_order(validity: &Validity) -> Result<(), RequestError> {
    if validity.not_before.to_unix_duration() >= validity.not_after.to_unix_duration() {
        return Err(RequestError::InvalidValidity(
            "notBefore is not before notAfter",
        ));
    }
    Ok(())
}

/// The signer's public key must be the CA certificate's.
pub(crate) fn check_signer_key(ca: &Certificate, key: &IssuerKey<'_>) -> Result<(), CertError> {
    let signer_key = key.spki().to_der().map_err(CertError::encoding)?;
    let ca_key = ca
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(CertError::encoding)?;
    if signer_key != ca_key {
        return Err(IssuerError::KeyMismatch.into());
    }
    Ok(())
}

/// The issuer must be a CA (basicConstraints CA:TRUE) whose keyUsage, if present, allows
/// keyCertSign (RFC 5280 section 4.2.1.9).
fn check_is_ca(ca: &Certificate) -> Result<(), IssuerError> {
    let basic = ca
        .tbs_certificate()
        .get_extension::<BasicConstraints>()
        .map_err(IssuerError::InvalidCaCertificate)?;
    if !basic.is_some_and(|(_, bc)| bc.ca) {
        return Err(IssuerError::NotACa);
    }
    if !key_usage_allows(ca, KeyUsages::KeyCertSign)? {
        return Err(IssuerError::NotACa);
    }
    Ok(())
}

/// Whether `cert`'s keyUsage allows `usage`; a certificate without keyUsage allows everything
/// (RFC 5280 section 4.2.1.3).
pub(crate) fn key_usage_allows(cert: &Certificate, usage: KeyUsages) -> Result<bool, IssuerError> {
    let key_usage = cert
        .tbs_certificate()
        .get_extension::<KeyUsage>()
        .map_err(IssuerError::InvalidCaCertificate)?;
    Ok(key_usage.is_none_or(|(_, ku)| ku.0.contains(usage)))
}

/// The leaf's authorityKeyIdentifier: the CA's subjectKeyIdentifier, or, for a CA certificate
/// without one, the same SHA-1 key identifier computed from its public key.
pub(crate) fn authority_key_id(ca: &Certificate) -> Result<AuthorityKeyIdentifier, CertError> {
    let tbs = ca.tbs_certificate();
    let ski = match tbs
        .get_extension::<SubjectKeyIdentifier>()
        .map_err(IssuerError::InvalidCaCertificate)?
    {
        Some((_, ski)) => ski,
        None => SubjectKeyIdentifier::try_from(tbs.subject_public_key_info().owned_to_ref())
            .map_err(CertError::encoding)?,
    };
    Ok(AuthorityKeyIdentifier {
        key_identifier: Some(ski.0),
        ..Default::default()
    })
}
