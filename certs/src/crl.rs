//! Certificate revocation lists (RFC 5280 section 5): full CRLs of the CA, with CRL number and
//! authority key identifier, and a reason code per entry.
//!
//! There is no issuingDistributionPoint: the CRL covers every certificate of the CA, which is
//! what `openssl verify -crl_check` and most relying parties expect of a CA's only CRL.

use std::time::{Duration, SystemTime};

use der::pem::LineEnding;
use der::{Encode, EncodePem};
use x509_cert::builder::CrlBuilder;
use x509_cert::crl::{CertificateList, RevokedCert};
use x509_cert::ext::ToExtension;
use x509_cert::ext::pkix::crl::CrlReason;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber, KeyUsages, SubjectKeyIdentifier};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;
use x509_cert::{Certificate, der::referenced::OwnedToRef};

use crate::error::{CertError, IssuerError, RequestError};
use crate::issue::{authority_key_id, check_signer_key, key_usage_allows};
use crate::signer::{IssuerKey, TbsSigner};

/// Why a certificate was revoked: the CRLReason codes of RFC 5280 section 5.3.1, used in CRL
/// entries and in OCSP `RevokedInfo`.
///
/// `removeFromCRL` (8) is absent: it only has a meaning in delta CRLs, which this CA does not
/// issue; a certificate taken off hold is simply left out of the next CRL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// 0: no reason given. CRL entries carry no reasonCode extension for it (RFC 5280 says
    /// the extension SHOULD then be absent).
    Unspecified,
    /// 1: the subject's private key is (suspected to be) compromised.
    KeyCompromise,
    /// 2: a CA's private key is (suspected to be) compromised.
    CaCompromise,
    /// 3: the subject's name or other information changed.
    AffiliationChanged,
    /// 4: the certificate has been superseded by another one.
    Superseded,
    /// 5: the certificate is no longer needed.
    CessationOfOperation,
    /// 6: the certificate is on hold (temporarily deactivated; can be released again).
    CertificateHold,
    /// 9: a privilege in the certificate has been withdrawn.
    PrivilegeWithdrawn,
    /// 10: an attribute authority's key is (suspected to be) compromised.
    AaCompromise,
}

impl Reason {
    /// The CRLReason code (RFC 5280 section 5.3.1).
    pub fn code(self) -> u8 {
        self.to_crl_reason() as u8
    }

    pub(crate) fn to_crl_reason(self) -> CrlReason {
        match self {
            Self::Unspecified => CrlReason::Unspecified,
            Self::KeyCompromise => CrlReason::KeyCompromise,
            Self::CaCompromise => CrlReason::CaCompromise,
            Self::AffiliationChanged => CrlReason::AffiliationChanged,
            Self::Superseded => CrlReason::Superseded,
            Self::CessationOfOperation => CrlReason::CessationOfOperation,
            Self::CertificateHold => CrlReason::CertificateHold,
            Self::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
            Self::AaCompromise => CrlReason::AaCompromise,
        }
    }
}

/// One revoked (or held) certificate in a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The certificate's serial number.
    pub serial: SerialNumber,
    /// When it was revoked or put on hold (to the second).
    pub revoked_at: SystemTime,
    /// Why.
    pub reason: Reason,
}

/// Makes a full CRL of the CA certificate `ca`, signed by `signer` (the CA key).
///
/// The CRL is v2 with the CRL number `crl_number` (which must grow with every CRL the CA
/// issues; the caller keeps it) and an authorityKeyIdentifier equal to the CA's key
/// identifier. Each entry carries a reasonCode extension, except for
/// [`Reason::Unspecified`]. An empty `revoked` gives a CRL without a revokedCertificates list
/// (RFC 5280 requires it to be absent rather than empty). Times are taken to the second.
///
/// Fails before signing if `signer`'s key is not `ca`'s, if `ca` may not sign CRLs (its
/// keyUsage lacks cRLSign), or if `next_update` is not after `this_update`.
pub fn build_crl(
    ca: &Certificate,
    signer: &dyn TbsSigner,
    crl_number: u64,
    this_update: SystemTime,
    next_update: SystemTime,
    revoked: &[RevokedEntry],
) -> Result<CertificateList, CertError> {
    let key = IssuerKey::new(signer)?;
    check_signer_key(ca, &key)?;
    if !key_usage_allows(ca, KeyUsages::CRLSign)? {
        return Err(IssuerError::NotACrlIssuer.into());
    }
    check_builder_aki(ca)?;

    let this_update = crl_time(this_update)?;
    let next_update = crl_time(next_update)?;
    if next_update.to_unix_duration() <= this_update.to_unix_duration() {
        return Err(RequestError::InvalidValidity("nextUpdate is not after thisUpdate").into());
    }
    let issuer = ca.tbs_certificate().subject();
    let mut entries = Vec::with_capacity(revoked.len());
    for entry in revoked {
        let crl_entry_extensions = match entry.reason {
            Reason::Unspecified => None,
            reason => Some(vec![
                reason
                    .to_crl_reason()
                    .to_extension(issuer, &[])
                    .map_err(CertError::encoding)?,
            ]),
        };
        entries.push(RevokedCert {
            serial_number: entry.serial.clone(),
            revocation_date: crl_time(entry.revoked_at)?,
            crl_entry_extensions,
        });
    }

    let crl_number = CrlNumber::try_from(crl_number).map_err(CertError::encoding)?;
    let mut builder = CrlBuilder::new_with_this_update(ca, crl_number, this_update)
        .map_err(CertError::encoding)?
        .with_next_update(Some(next_update));
    if !entries.is_empty() {
        builder = builder.with_certificates(entries.into_iter());
    }
    key.build(builder)
}

/// The DER encoding of a CRL (what `application/pkix-crl` carries).
pub fn crl_to_der(crl: &CertificateList) -> Result<Vec<u8>, CertError> {
    crl.to_der().map_err(CertError::encoding)
}

/// The PEM encoding of a CRL (`-----BEGIN X509 CRL-----`, LF line endings).
pub fn crl_to_pem(crl: &CertificateList) -> Result<String, CertError> {
    crl.to_pem(LineEnding::LF).map_err(CertError::encoding)
}

/// A time to the second, as UTCTime until 2049 and GeneralizedTime after (RFC 5280).
fn crl_time(time: SystemTime) -> Result<Time, RequestError> {
    let out_of_range = || RequestError::InvalidValidity("a date is out of range");
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| out_of_range())?;
    let whole_seconds = SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
    Time::try_from(whole_seconds).map_err(|_| out_of_range())
}

/// x509-cert's `CrlBuilder` copies the CA certificate's own authorityKeyIdentifier into the
/// CRL (falling back to a key identifier computed from its key). That is right for the
/// self-signed CA certificates this crate makes, whose AKI is their SKI, but would name the
/// wrong key for a CA certificate issued by another CA; refuse those rather than sign a CRL that
/// no relying party can match to its issuer.
fn check_builder_aki(ca: &Certificate) -> Result<(), CertError> {
    let tbs = ca.tbs_certificate();
    let builder_aki = match tbs
        .get_extension::<AuthorityKeyIdentifier>()
        .map_err(IssuerError::InvalidCaCertificate)?
    {
        Some((_, aki)) => aki,
        None => {
            let ski = SubjectKeyIdentifier::try_from(tbs.subject_public_key_info().owned_to_ref())
                .map_err(CertError::encoding)?;
            AuthorityKeyIdentifier {
                key_identifier: Some(ski.0),
                ..Default::default()
            }
        }
    };
    if builder_aki != authority_key_id(ca)? {
        return Err(IssuerError::UnsupportedCaCertificate(
            "its authorityKeyIdentifier is not its own key identifier",
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reason_extension(reason: Reason) -> x509_cert::ext::Extension {
        let name = x509_cert::name::Name::default();
        reason.to_crl_reason().to_extension(&name, &[]).unwrap()
    }

    #[test]
    fn reason_codes() {
        let codes = [
            (Reason::Unspecified, 0),
            (Reason::KeyCompromise, 1),
            (Reason::CaCompromise, 2),
            (Reason::AffiliationChanged, 3),
            (Reason::Superseded, 4),
            (Reason::CessationOfOperation, 5),
            (Reason::CertificateHold, 6),
            (Reason::PrivilegeWithdrawn, 9),
            (Reason::AaCompromise, 10),
        ];
        for (reason, code) in codes {
            assert_eq!(reason.code(), code, "{reason:?}");
            // id-ce-cRLReasons, non-critical, ENUMERATED code.
            let ext = reason_extension(reason);
            assert_eq!(ext.extn_id.to_string(), "2.5.29.21");
            assert!(!ext.critical);
            assert_eq!(ext.extn_value.as_bytes(), &[0x0a, 0x01, code]);
        }
    }
}
