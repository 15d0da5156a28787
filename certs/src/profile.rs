//! Certificate profiles: which extensions a CA or leaf certificate carries.
//!
//! The public [`Profile`] names what a leaf certificate is for. Its inputs are checked and
//! turned into typed extensions by [`LeafProfile::new`] before anything is signed; the private
//! [`BuilderProfile`] implementations then only encode.

use std::net::IpAddr;

use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5280, rfc5912, rfc6960, rfc8410};
use der::Encode;
use der::asn1::{Ia5String, Null, OctetString};
use spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;

use crate::error::{IssuerError, RequestError};

/// `id-kp-documentSigning` (RFC 9336), not in const-oid's database yet.
pub const ID_KP_DOCUMENT_SIGNING: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.36");

/// What a leaf certificate is for; decides its keyUsage, extendedKeyUsage and
/// subjectAltName extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Profile {
    /// mTLS client: keyUsage digitalSignature, extendedKeyUsage clientAuth.
    MtlsClient,
    /// TLS server: keyUsage digitalSignature (plus keyEncipherment for RSA keys),
    /// extendedKeyUsage serverAuth, and a subjectAltName with these names (at least one).
    TlsServer {
        /// DNS names (host names, or a wildcard `*.example.org`).
        dns_names: Vec<String>,
        /// IP addresses.
        ip_addresses: Vec<IpAddr>,
    },
    /// Document signer: keyUsage digitalSignature and nonRepudiation (contentCommitment),
    /// extendedKeyUsage documentSigning ([`ID_KP_DOCUMENT_SIGNING`], RFC 9336).
    DocumentSigner,
    /// Delegated OCSP responder (RFC 6960 section 4.2.2.2): keyUsage digitalSignature,
    /// extendedKeyUsage OCSPSigning, and `id-pkix-ocsp-nocheck` (relying parties do not check
    /// the responder certificate's own revocation, so issue it for a short time). It carries no
    /// cRLDistributionPoints or authorityInfoAccess.
    OcspResponder,
    /// Time-stamping authority (RFC 3161 section 2.3): keyUsage digitalSignature and
    /// nonRepudiation, and extendedKeyUsage timeStamping only, marked critical.
    TimeStamping,
}

/// Where relying parties find revocation information for certificates of this CA. Each URL
/// that is set is added to leaf certificates: `crl` as a cRLDistributionPoints extension,
/// `ocsp` as an authorityInfoAccess `id-ad-ocsp` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuerUrls {
    /// URL of the CRL (`http://` or `https://`).
    pub crl: Option<String>,
    /// URL of the OCSP responder (`http://` or `https://`).
    pub ocsp: Option<String>,
}

/// The self-signed CA certificate: basicConstraints CA:TRUE pathlen:0 (critical), keyUsage
/// keyCertSign, cRLSign and digitalSignature (to sign OCSP responses; critical), subject and
/// authority key identifiers.
#[derive(Debug)]
pub(crate) struct CaProfile {
    pub(crate) subject: Name,
}

impl BuilderProfile for CaProfile {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(ski.0.clone()),
            ..Default::default()
        };
        let subject = tbs.subject();
        let mut extensions = Vec::new();
        // This CA signs end-entity certificates only: pathlen 0.
        let basic = BasicConstraints {
            ca: true,
            path_len_constraint: Some(0),
        };
        push(&mut extensions, subject, &basic)?;
        let usage =
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign | KeyUsages::DigitalSignature);
        push(&mut extensions, subject, &usage)?;
        push(&mut extensions, subject, &ski)?;
        push(&mut extensions, subject, &aki)?;
        Ok(extensions)
    }
}

/// A leaf certificate's extensions, checked and typed; only the subject key identifier is
/// left to compute from the key at build time.
#[derive(Debug)]
pub(crate) struct LeafProfile {
    issuer: Name,
    subject: Name,
    key_usage: KeyUsage,
    extended_key_usage: ExtendedKeyUsage,
    subject_alt_name: Option<SubjectAltName>,
    authority_key_id: AuthorityKeyIdentifier,
    crl_distribution_points: Option<CrlDistributionPoints>,
    authority_info_access: Option<AuthorityInfoAccessSyntax>,
    ocsp_no_check: bool,
    /// The extendedKeyUsage is critical (time stamping).
    critical_purpose: bool,
}

impl LeafProfile {
    /// Checks the request against `profile` and prepares the extensions.
    pub(crate) fn new(
        profile: &Profile,
        issuer: Name,
        subject: Name,
        subject_key: &SubjectPublicKeyInfoOwned,
        authority_key_id: AuthorityKeyIdentifier,
        urls: &IssuerUrls,
    ) -> Result<Self, crate::CertError> {
        let key_algorithm = subject_key.algorithm.oid;
        let is_rsa = match key_algorithm {
            rfc5912::RSA_ENCRYPTION => true,
            rfc5912::ID_EC_PUBLIC_KEY | rfc8410::ID_ED_25519 | rfc8410::ID_ED_448 => false,
            other => return Err(RequestError::UnsupportedKeyAlgorithm(other).into()),
        };

        let (key_usage, purpose, subject_alt_name) = match profile {
            Profile::MtlsClient => (
                KeyUsages::DigitalSignature.into(),
                rfc5280::ID_KP_CLIENT_AUTH,
                None,
            ),
            Profile::TlsServer {
                dns_names,
                ip_addresses,
            } => {
                let mut usage = KeyUsages::DigitalSignature.into();
                if is_rsa {
                    // RSA key exchange in TLS 1.2 encrypts the premaster secret to this key.
                    usage |= KeyUsages::KeyEncipherment;
                }
                let mut names = Vec::with_capacity(dns_names.len() + ip_addresses.len());
                for dns_name in dns_names {
                    names.push(GeneralName::DnsName(parse_dns_name(dns_name)?));
                }
                names.extend(ip_addresses.iter().copied().map(GeneralName::from));
                if names.is_empty() {
                    return Err(RequestError::MissingSubjectAltName.into());
                }
                (
                    usage,
                    rfc5280::ID_KP_SERVER_AUTH,
                    Some(SubjectAltName(names)),
                )
            }
            Profile::DocumentSigner => (
                KeyUsages::DigitalSignature | KeyUsages::NonRepudiation,
                ID_KP_DOCUMENT_SIGNING,
                None,
            ),
            Profile::OcspResponder => (
                KeyUsages::DigitalSignature.into(),
                rfc5280::ID_KP_OCSP_SIGNING,
                None,
            ),
            Profile::TimeStamping => (
                KeyUsages::DigitalSignature | KeyUsages::NonRepudiation,
                rfc5280::ID_KP_TIME_STAMPING,
                None,
            ),
        };
        let critical_purpose = *profile == Profile::TimeStamping;
        // With id-pkix-ocsp-nocheck nobody looks up the responder's revocation status.
        let ocsp_no_check = *profile == Profile::OcspResponder;
        let urls = if ocsp_no_check {
            &IssuerUrls::default()
        } else {
            urls
        };
        if subject.is_empty() && subject_alt_name.is_none() {
            return Err(RequestError::EmptySubject.into());
        }

        let crl_distribution_points = urls
            .crl
            .as_deref()
            .map(|url| -> Result<_, IssuerError> {
                Ok(CrlDistributionPoints(vec![DistributionPoint {
                    distribution_point: Some(DistributionPointName::FullName(vec![
                        GeneralName::UniformResourceIdentifier(parse_url(url)?),
                    ])),
                    reasons: None,
                    crl_issuer: None,
                }]))
            })
            .transpose()?;
        let authority_info_access = urls
            .ocsp
            .as_deref()
            .map(|url| -> Result<_, IssuerError> {
                Ok(AuthorityInfoAccessSyntax(vec![AccessDescription {
                    access_method: rfc5280::ID_AD_OCSP,
                    access_location: GeneralName::UniformResourceIdentifier(parse_url(url)?),
                }]))
            })
            .transpose()?;

        Ok(Self {
            issuer,
            subject,
            key_usage: KeyUsage(key_usage),
            extended_key_usage: ExtendedKeyUsage(vec![purpose]),
            subject_alt_name,
            authority_key_id,
            crl_distribution_points,
            authority_info_access,
            ocsp_no_check,
            critical_purpose,
        })
    }
}

impl BuilderProfile for LeafProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let subject = tbs.subject();
        let mut extensions = Vec::new();
        let basic = BasicConstraints {
            ca: false,
            path_len_constraint: None,
        };
        push(&mut extensions, subject, &basic)?;
        push(&mut extensions, subject, &self.key_usage)?;
        let mut eku = self.extended_key_usage.to_extension(subject, &extensions)?;
        // RFC 3161 section 2.3: a TSA's extendedKeyUsage MUST be critical.
        eku.critical |= self.critical_purpose;
        extensions.push(eku);
        if let Some(san) = &self.subject_alt_name {
            // Critical exactly when the subject is empty (RFC 5280 section 4.2.1.6).
            push(&mut extensions, subject, san)?;
        }
        push(
            &mut extensions,
            subject,
            &SubjectKeyIdentifier::try_from(spk)?,
        )?;
        push(&mut extensions, subject, &self.authority_key_id)?;
        if let Some(dp) = &self.crl_distribution_points {
            push(&mut extensions, subject, dp)?;
        }
        if let Some(aia) = &self.authority_info_access {
            push(&mut extensions, subject, aia)?;
        }
        if self.ocsp_no_check {
            // id-pkix-ocsp-nocheck ::= NULL, non-critical (RFC 6960 section 4.2.2.2.1).
            extensions.push(Extension {
                extn_id: rfc6960::ID_PKIX_OCSP_NOCHECK,
                critical: false,
                extn_value: OctetString::new(Null.to_der()?)?,
            });
        }
        Ok(extensions)
    }
}

/// Encodes `ext` with its default criticality and appends it.
fn push<'a, E>(extensions: &mut Vec<Extension>, subject: &Name, ext: &'a E) -> der::Result<()>
where
    &'a E: ToExtension<Error = der::Error>,
{
    let ext = ext.to_extension(subject, extensions)?;
    extensions.push(ext);
    Ok(())
}

/// A host name of letters, digits and hyphens (RFC 1123), or a wildcard whose `*` is the whole
/// leftmost label. IP addresses belong in [`Profile::TlsServer::ip_addresses`].
fn parse_dns_name(name: &str) -> Result<Ia5String, RequestError> {
    let invalid = || RequestError::InvalidDnsName(name.to_owned());
    if name.is_empty() || name.len() > 253 || name.parse::<IpAddr>().is_ok() {
        return Err(invalid());
    }
    let mut labels = name.split('.').peekable();
    if labels.peek() == Some(&"*") {
        labels.next();
        if labels.peek().is_none() {
            return Err(invalid());
        }
    }
    for label in labels {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(invalid());
        }
    }
    Ia5String::new(name).map_err(|_| invalid())
}

/// An `http://` or `https://` URL with a host, of printable ASCII without spaces.
fn parse_url(url: &str) -> Result<Ia5String, IssuerError> {
    let invalid = || IssuerError::InvalidUrl(url.to_owned());
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(invalid)?;
    if rest.is_empty() || rest.starts_with('/') || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ia5String::new(url).map_err(|_| invalid())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        for good in [
            "localhost",
            "signetd.example.org",
            "*.example.org",
            "a-b.c1.example",
            "xn--bcher-kva.example",
        ] {
            assert!(parse_dns_name(good).is_ok(), "{good} should be accepted");
        }
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "example.org.",
            "-a.example",
            "a-.example",
            "foo.*.example",
            "a*.example",
            "bücher.example",
            "has space.example",
            "10.0.0.1",
            "::1",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(parse_dns_name(bad), Err(RequestError::InvalidDnsName(_))),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn urls() {
        assert!(parse_url("http://ca.example/crl.der").is_ok());
        assert!(parse_url("https://ca.example:8443/ocsp").is_ok());
        for bad in [
            "",
            "ca.example/crl",
            "ftp://ca.example/crl",
            "http://",
            "http:///crl",
            "http://ca.example/a crl",
            "http://cä.example/",
        ] {
            assert!(
                matches!(parse_url(bad), Err(IssuerError::InvalidUrl(_))),
                "{bad:?} should be rejected"
            );
        }
    }
}
