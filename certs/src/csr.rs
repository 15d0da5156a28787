//! PKCS#10 certification requests (RFC 2986) from untrusted clients: size-limited, strictly
//! decoded, self-signature verified, key checked; what comes out is a [`ValidatedCsr`].
//!
//! The request only proves possession of the key and proposes names. What goes into the
//! certificate (profile, subject, names, validity) is the CA's decision; the requested
//! extensions are kept for information only.

use std::net::IpAddr;

use const_oid::AssociatedOid;
use const_oid::db::rfc5912;
use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Encode, Sequence, Tag, Tagged};
use spki::{AlgorithmIdentifierRef, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use x509_cert::request::CertReqInfo;

use crate::error::{CertError, RequestError};
use crate::verify::verify_self_signature;

/// Limits applied to a certification request before and while parsing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CsrLimits {
    /// The largest accepted input in bytes, DER or PEM (default
    /// [`CsrLimits::DEFAULT_MAX_SIZE`]).
    pub max_size: usize,
}

impl CsrLimits {
    /// 16 KiB: an RSA-8192 request with a few dozen names fits easily.
    pub const DEFAULT_MAX_SIZE: usize = 16 * 1024;

    /// These limits with another maximum input size.
    #[must_use]
    pub const fn with_max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }
}

impl Default for CsrLimits {
    fn default() -> Self {
        Self {
            max_size: Self::DEFAULT_MAX_SIZE,
        }
    }
}

/// A certification request whose encoding, subject key and self-signature have been checked.
///
/// Only [`parse_csr`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedCsr {
    subject: Name,
    public_key: SubjectPublicKeyInfoOwned,
    signature_algorithm: ObjectIdentifier,
    requested_extensions: Vec<Extension>,
    requested_names: Vec<GeneralName>,
}

impl ValidatedCsr {
    /// The requested subject name (may be empty).
    pub fn subject(&self) -> &Name {
        &self.subject
    }

    /// The subject public key: EC P-256 or P-384, RSA of 2048 to 8192 bits, or Ed25519.
    pub fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.public_key
    }

    /// The algorithm of the request's self-signature.
    pub fn signature_algorithm(&self) -> ObjectIdentifier {
        self.signature_algorithm
    }

    /// All extensions of the extensionRequest attribute, as requested (informational).
    pub fn requested_extensions(&self) -> &[Extension] {
        &self.requested_extensions
    }

    /// The names of a requested subjectAltName extension, in request order (informational).
    pub fn requested_names(&self) -> &[GeneralName] {
        &self.requested_names
    }

    /// The requested DNS names (informational; the CA checks whatever it certifies).
    pub fn requested_dns_names(&self) -> Vec<&str> {
        self.requested_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DnsName(dns) => Some(dns.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The requested IP addresses (informational). Entries that are neither 4 nor 16 bytes
    /// long are skipped.
    pub fn requested_ip_addresses(&self) -> Vec<IpAddr> {
        self.requested_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                    4 => <[u8; 4]>::try_from(ip.as_bytes()).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(ip.as_bytes()).ok().map(IpAddr::from),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The subject name and the subject public key, to pass on to [`crate::issue`].
    pub fn into_parts(self) -> (Name, SubjectPublicKeyInfoOwned) {
        (self.subject, self.public_key)
    }
}

/// PEM labels of certification requests: RFC 7468's, and the older one some tools still write.
const PEM_LABELS: [&str; 2] = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// The outer `CertificationRequest`, keeping the signed `certificationRequestInfo` as it came,
/// since the signature covers those exact bytes.
#[derive(Sequence)]
struct RawCertReq<'a> {
    info: AnyRef<'a>,
    algorithm: AlgorithmIdentifierRef<'a>,
    signature: BitStringRef<'a>,
}

/// Parses a certification request (DER, or PEM with label `CERTIFICATE REQUEST`) from an
/// untrusted client and checks it:
///
/// - at most `limits.max_size` bytes;
/// - strict DER, one `CertificationRequest` and nothing after it; version 1;
/// - a subject key this CA certifies: EC P-256 or P-384 (named curve), RSA
///   (`rsaEncryption`) of 2048 to 8192 bits, or Ed25519;
/// - a valid self-signature: ECDSA with SHA-256/384/512, RSA PKCS#1 v1.5 or PSS (MGF1, same
///   hash) with SHA-256/384/512, or Ed25519;
/// - at most one extensionRequest attribute, with decodable extensions, none twice; a
///   subjectAltName among them must decode. Other attributes are ignored.
///
/// Every refusal is a [`CertError::InvalidRequest`] whose message can be shown to the client.
pub fn parse_csr(der_or_pem: &[u8], limits: CsrLimits) -> Result<ValidatedCsr, CertError> {
    if der_or_pem.len() > limits.max_size {
        return Err(RequestError::TooLarge {
            size: der_or_pem.len(),
            limit: limits.max_size,
        }
        .into());
    }
    let pem;
    let der = match strip_pem(der_or_pem) {
        Some(text) => {
            let (label, der) = der::pem::decode_vec(text)
                .map_err(|e| RequestError::MalformedCsr(der::Error::from(e)))?;
            if !PEM_LABELS.contains(&label) {
                return Err(
                    RequestError::InvalidCsr("the PEM label is not CERTIFICATE REQUEST").into(),
                );
            }
            pem = der;
            pem.as_slice()
        }
        None => der_or_pem,
    };
    Ok(parse_der(der)?)
}

/// The input without surrounding whitespace if it looks like PEM, else `None`.
fn strip_pem(input: &[u8]) -> Option<&[u8]> {
    let trimmed = input.trim_ascii();
    trimmed.starts_with(b"-----BEGIN ").then_some(trimmed)
}

fn parse_der(der: &[u8]) -> Result<ValidatedCsr, RequestError> {
    let raw = RawCertReq::from_der(der).map_err(RequestError::MalformedCsr)?;
    if raw.info.tag() != Tag::Sequence {
        return Err(RequestError::InvalidCsr(
            "certificationRequestInfo is not a SEQUENCE",
        ));
    }
    // Strict DER decoding makes this re-encoding byte-identical to the input.
    let info_der = raw.info.to_der().map_err(RequestError::MalformedCsr)?;
    let info = CertReqInfo::from_der(&info_der).map_err(RequestError::MalformedCsr)?;
    let signature = raw
        .signature
        .as_bytes()
        .ok_or(RequestError::InvalidCsr("the signature has unused bits"))?;

    verify_self_signature(&info.public_key, &raw.algorithm, &info_der, signature)?;

    let requested_extensions = extension_request(&info)?;
    let mut requested_names = Vec::new();
    for ext in &requested_extensions {
        if ext.extn_id == SubjectAltName::OID {
            let san = SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(|_| {
                RequestError::InvalidCsr("the requested subjectAltName does not decode")
            })?;
            requested_names = san.0;
        }
    }

    Ok(ValidatedCsr {
        subject: info.subject,
        public_key: info.public_key,
        signature_algorithm: raw.algorithm.oid,
        requested_extensions,
        requested_names,
    })
}

/// The extensions of the extensionRequest attribute (PKCS#9), if any.
fn extension_request(info: &CertReqInfo) -> Result<Vec<Extension>, RequestError> {
    let mut found = None;
    for attribute in info.attributes.iter() {
        if attribute.oid != rfc5912::ID_EXTENSION_REQ {
            continue;
        }
        let mut values = attribute.values.iter();
        let (Some(value), None, None) = (values.next(), values.next(), found.as_ref()) else {
            return Err(RequestError::InvalidCsr(
                "there is more than one extension request",
            ));
        };
        let extensions = value
            .decode_as::<Vec<Extension>>()
            .map_err(|_| RequestError::InvalidCsr("the extension request does not decode"))?;
        let mut seen: Vec<ObjectIdentifier> = Vec::with_capacity(extensions.len());
        for ext in &extensions {
            if seen.contains(&ext.extn_id) {
                return Err(RequestError::InvalidCsr(
                    "an extension is requested more than once",
                ));
            }
            seen.push(ext.extn_id);
        }
        found = Some(extensions);
    }
    Ok(found.unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn refusal(input: &[u8]) -> RequestError {
        match parse_csr(input, CsrLimits::default()) {
            Err(CertError::InvalidRequest(e)) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(refusal(b""), RequestError::MalformedCsr(_)));
        assert!(matches!(refusal(b"hello"), RequestError::MalformedCsr(_)));
        assert!(matches!(
            refusal(&[0x30, 0x00]),
            RequestError::MalformedCsr(_)
        ));
        assert!(matches!(
            refusal(
                b"-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n"
            ),
            RequestError::MalformedCsr(_)
        ));
    }

    #[test]
    fn size_limit_comes_first() {
        let limits = CsrLimits::default().with_max_size(10);
        assert!(matches!(
            parse_csr(&[0; 11], limits),
            Err(CertError::InvalidRequest(RequestError::TooLarge {
                size: 11,
                limit: 10
            }))
        ));
    }

    #[test]
    fn pem_label_must_be_a_request() {
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &[0x30, 0x00])
            .unwrap();
        assert!(matches!(
            refusal(pem.as_bytes()),
            RequestError::InvalidCsr(_)
        ));
    }
}
