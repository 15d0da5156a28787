//! X.509 building blocks of signetd: certificate profiles and issuance, CSR parsing, CRLs and
//! OCSP, over a signer trait.
//!
//! No IO and no PKCS#11 here.
//!
//! The daemon implements [`TbsSigner`] over an HSM key; tests implement it over software keys.
//! Everything here is pure: names, keys, serials, times and revocation entries come in as
//! arguments; certificates and CRLs come out as values (encode them with [`der::Encode`] or
//! [`der::EncodePem`]), OCSP responses as DER bytes.
//!
//! - Issuing: [`self_signed_ca`], [`issue`] under a [`Profile`].
//! - Requests from clients: [`parse_csr`] (PKCS#10) and [`parse_ocsp_request`] take untrusted
//!   bytes and return checked values or a [`CertError::InvalidRequest`] whose message can be
//!   shown to the client.
//! - Revocation: [`build_crl`]; [`build_ocsp_response`] and [`ocsp_error_response`].
//!
//! **Invariant:** nothing is signed before the whole request has been checked: the signer's key
//! against the CA certificate, the profile's names, the validity.
//!
//! **Invariant:** a CSR is accepted only with a valid self-signature under a key this CA
//! certifies (EC P-256/P-384, RSA of at least 2048 bits, Ed25519); the CA, not the CSR, decides
//! what goes into the certificate.

mod crl;
mod csr;
mod error;
mod issue;
pub mod ocsp;
mod profile;
mod signer;
mod verify;

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use x509_cert::time::Time;

pub use crate::crl::{Reason, RevokedEntry, build_crl, crl_to_der, crl_to_pem};
pub use crate::csr::{CsrLimits, ValidatedCsr, parse_csr};
pub use crate::error::{CertError, EncodingError, IssuerError, RequestError, SignerError};
pub use crate::issue::{issue, self_signed_ca};
pub use crate::ocsp::{
    CertId, CertStatus, HashAlgorithm, OcspErrorStatus, OcspRequest, ResponderId, SingleResponse,
    build_ocsp_response, cert_id_matches_issuer, ocsp_error_response, parse_ocsp_request,
};
pub use crate::profile::{ID_KP_DOCUMENT_SIGNING, IssuerUrls, Profile};
pub use crate::signer::TbsSigner;

pub use der;
pub use spki;
pub use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
pub use x509_cert;
pub use x509_cert::Certificate;
pub use x509_cert::crl::CertificateList;
pub use x509_cert::ext::pkix::name::GeneralName;
pub use x509_cert::name::Name;
pub use x509_cert::serial_number::SerialNumber;
pub use x509_cert::time::Validity;

/// A positive serial number of at most 127 bits from 16 caller-provided random bytes: the
/// top bit is cleared, and an all-zero input becomes 1.
pub fn serial_from_random(mut bytes: [u8; 16]) -> SerialNumber {
    bytes[0] &= 0x7f;
    if bytes.iter().all(|&b| b == 0) {
        bytes[15] = 1;
    }
    // `SerialNumber::new` fails only for encodings longer than 20 bytes; ours is at most 16.
    #[allow(clippy::expect_used)]
    let serial = SerialNumber::new(&bytes).expect("a 16-byte serial number fits in 20 bytes");
    serial
}

/// SHA-256 of a certificate's DER encoding: the fingerprint `openssl x509 -fingerprint
/// -sha256` prints, and the one the audit log records for a client.
pub fn fingerprint_sha256(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// A validity period from `not_before` lasting `lifetime`, to the second (sub-second parts are
/// dropped). Backdating `not_before` for clock skew is the caller's choice.
pub fn validity(not_before: SystemTime, lifetime: Duration) -> Result<Validity, CertError> {
    if lifetime < Duration::from_secs(1) {
        return Err(RequestError::InvalidValidity("the lifetime is shorter than a second").into());
    }
    let out_of_range = || RequestError::InvalidValidity("a date is out of range");
    let not_after = not_before.checked_add(lifetime).ok_or_else(out_of_range)?;
    let not_before = Time::try_from(not_before).map_err(|_| out_of_range())?;
    let not_after = Time::try_from(not_after).map_err(|_| out_of_range())?;
    Ok(Validity::new(not_before, not_after))
}

/// Parses an RFC 4514 distinguished name such as `"CN=signetd CA,O=signetd"`; the empty string
/// is the empty name (allowed for TLS servers, whose identity is then in the subjectAltName).
pub fn parse_name(name: &str) -> Result<Name, CertError> {
    if name.is_empty() {
        return Ok(Name::default());
    }
    Name::from_str(name).map_err(|e| RequestError::InvalidName(e).into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_and_non_zero() {
        let serial = serial_from_random([0xff; 16]);
        assert_eq!(serial.as_bytes().len(), 16);
        assert_eq!(serial.as_bytes()[0], 0x7f);

        assert_eq!(serial_from_random([0; 16]).as_bytes(), &[1]);
        let mut top_only = [0; 16];
        top_only[0] = 0x80;
        assert_eq!(serial_from_random(top_only).as_bytes(), &[1]);

        let bytes = *b"\x12\x34\x56\x78\x9a\xbc\xde\xf0\x11\x22\x33\x44\x55\x66\x77\x88";
        assert_eq!(serial_from_random(bytes).as_bytes(), &bytes);

        // A leading zero byte is dropped; a high bit below it gets the DER sign byte back.
        let mut high = bytes;
        high[0] = 0;
        high[1] = 0x85;
        assert_eq!(
            serial_from_random(high).as_bytes(),
            [&[0u8][..], &high[1..]].concat()
        );
        let mut low = bytes;
        low[0] = 0;
        low[1] = 0x05;
        assert_eq!(serial_from_random(low).as_bytes(), &low[1..]);
    }

    #[test]
    fn fingerprint_is_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex: String = fingerprint_sha256(b"abc")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn validity_bounds() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let v = validity(start, Duration::from_secs(3600)).unwrap();
        assert_eq!(v.not_before.to_unix_duration().as_secs(), 1_700_000_000);
        assert_eq!(v.not_after.to_unix_duration().as_secs(), 1_700_003_600);

        for lifetime in [Duration::ZERO, Duration::from_millis(999)] {
            assert!(matches!(
                validity(start, lifetime),
                Err(CertError::InvalidRequest(RequestError::InvalidValidity(_)))
            ));
        }
        let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        assert!(validity(before_epoch, Duration::from_secs(3600)).is_err());
        let far = Duration::from_secs(10_000 * 366 * 86_400);
        assert!(validity(start, far).is_err());
    }

    #[test]
    fn names() {
        let name = parse_name("CN=signetd CA,O=signetd").unwrap();
        assert_eq!(name.to_string(), "CN=signetd CA,O=signetd");
        assert!(parse_name("").unwrap().is_empty());
        assert!(matches!(
            parse_name("not a name"),
            Err(CertError::InvalidRequest(RequestError::InvalidName(_)))
        ));
    }
}
