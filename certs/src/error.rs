//! Errors of this crate, grouped by what the caller should do about them.

use std::error::Error as StdError;
use std::fmt;

use const_oid::ObjectIdentifier;

/// Why a certificate, CRL or OCSP response could not be made, or a request (CSR, OCSP request)
/// was refused. Nothing was signed unless the variant says so.
///
/// The variants are grouped by who has to act: the requester ([`CertError::InvalidRequest`]),
/// the operator ([`CertError::Issuer`]), the signer/HSM layer ([`CertError::Signer`]), or a
/// developer ([`CertError::Encoding`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The request (subject, subject key, names, validity) is unacceptable. Nothing was
    /// signed; tell the requester (an HTTP 4xx). The message is safe to show them.
    #[error(transparent)]
    InvalidRequest(#[from] RequestError),

    /// The issuing side (CA certificate, signer key or algorithm, issuer URLs) cannot issue
    /// this. Nothing was signed; this is a configuration problem for the operator.
    #[error(transparent)]
    Issuer(#[from] IssuerError),

    /// The signer failed. The signer's own error is in the [`source`](StdError::source)
    /// chain, so the HSM layer can decide whether to retry.
    #[error("the signer failed")]
    Signer(#[source] SignerError),

    /// A structure could not be DER-encoded. This is a bug, not something the caller can fix.
    #[error("DER encoding failed")]
    Encoding(#[source] EncodingError),
}

impl From<SignerError> for CertError {
    fn from(err: SignerError) -> Self {
        Self::Signer(err)
    }
}

/// What is wrong with a request: the parts of a certificate request, a PKCS#10 CSR, or an OCSP
/// request. Messages are safe to show to the requester: they contain only request data (names,
/// OIDs, sizes) and DER positions, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The distinguished name string does not parse (RFC 4514).
    #[error("invalid distinguished name: {0}")]
    InvalidName(der::Error),

    /// The subject name is empty and the certificate would carry no other identity.
    #[error("the subject name is empty and the profile carries no subject alternative names")]
    EmptySubject,

    /// A TLS server certificate needs at least one DNS name or IP address.
    #[error("a TLS server certificate needs at least one DNS name or IP address")]
    MissingSubjectAltName,

    /// A DNS name is not a valid host name (letters, digits, hyphens; optional leading `*.`).
    #[error("invalid DNS name {0:?}")]
    InvalidDnsName(String),

    /// The subject public key uses an algorithm this CA does not certify.
    #[error("unsupported subject public key algorithm {0}")]
    UnsupportedKeyAlgorithm(ObjectIdentifier),

    /// The validity period is empty, out of range, or outlasts the CA certificate; or a CRL's
    /// or OCSP response's nextUpdate is not after its thisUpdate.
    #[error("invalid validity: {0}")]
    InvalidValidity(&'static str),

    /// The encoded request (CSR or OCSP request) is larger than the limit; it was not parsed.
    #[error("the request is {size} bytes long, more than the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// The certification request is not a DER (or PEM) PKCS#10 `CertificationRequest`:
    /// garbage, a wrong structure, non-DER encoding, or trailing data.
    #[error("malformed certification request: {0}")]
    MalformedCsr(der::Error),

    /// The certification request is well-formed DER but not acceptable (wrong PEM label, a
    /// duplicated or undecodable extension request, ...).
    #[error("invalid certification request: {0}")]
    InvalidCsr(&'static str),

    /// The elliptic curve of an EC subject key is not P-256 or P-384.
    #[error("unsupported elliptic curve {0}")]
    UnsupportedCurve(ObjectIdentifier),

    /// The RSA subject key is too short (or longer than a verifier accepts).
    #[error("RSA keys must have {min} to {max} bits; this one has {bits}")]
    RsaKeySize {
        /// Bits of the key's modulus.
        bits: usize,
        /// The smallest accepted size.
        min: usize,
        /// The largest accepted size.
        max: usize,
    },

    /// The subject public key cannot be decoded for its algorithm (not a point on the curve, a
    /// malformed RSA key, ...).
    #[error("the subject public key is not a valid {0} key")]
    InvalidPublicKey(&'static str),

    /// The request's signature algorithm is unknown, insecure (SHA-1), has wrong parameters,
    /// or does not fit the key.
    #[error("signature algorithm {0} is not supported for this key")]
    UnsupportedSignatureAlgorithm(ObjectIdentifier),

    /// The request's self-signature does not verify with its own public key.
    #[error("the request's signature does not verify with its public key")]
    BadSignature,

    /// The OCSP request is not a DER `OCSPRequest` (RFC 6960): garbage, a wrong structure,
    /// non-DER encoding, or trailing data.
    #[error("malformed OCSP request: {0}")]
    MalformedOcspRequest(der::Error),

    /// The OCSP request is well-formed DER but not acceptable (no or too many CertIDs, an
    /// unsupported hash algorithm, a bad nonce, an unknown critical extension, ...).
    #[error("invalid OCSP request: {0}")]
    InvalidOcspRequest(&'static str),
}

/// Why the issuing CA cannot issue. Each of these is a configuration error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    /// The signer's public key is not the public key of the CA certificate.
    #[error("the signer's public key is not the CA certificate's public key")]
    KeyMismatch,

    /// The issuer certificate is not a CA certificate that may sign certificates
    /// (basicConstraints CA:TRUE, keyUsage keyCertSign).
    #[error("the issuer certificate is not a CA certificate allowed to sign certificates")]
    NotACa,

    /// The issuer certificate's extensions cannot be decoded.
    #[error("the CA certificate's extensions cannot be decoded: {0}")]
    InvalidCaCertificate(der::Error),

    /// The signer's signature algorithm does not fit its key, or is not supported.
    #[error("signature algorithm {algorithm} is not supported with key algorithm {key}")]
    UnsupportedSignatureAlgorithm {
        /// The signer's signature algorithm.
        algorithm: ObjectIdentifier,
        /// The algorithm of the signer's public key.
        key: ObjectIdentifier,
    },

    /// A CRL or OCSP URL is not an `http://` or `https://` URL of printable ASCII.
    #[error("invalid issuer URL {0:?}")]
    InvalidUrl(String),

    /// The issuer certificate's keyUsage does not allow signing CRLs (cRLSign).
    #[error("the issuer certificate is not allowed to sign CRLs")]
    NotACrlIssuer,

    /// The OCSP responder certificate lacks the OCSPSigning extended key usage, or the
    /// responder id names another key or name than the signer's.
    #[error("the OCSP responder certificate or id does not fit the signer")]
    NotAnOcspResponder,

    /// The CA certificate has a shape this crate cannot make CRLs for: its
    /// authorityKeyIdentifier is not its own key identifier (it is not self-issued), and
    /// x509-cert's CRL builder would copy it into the CRL.
    #[error("CRLs for this CA certificate are not supported: {0}")]
    UnsupportedCaCertificate(&'static str),
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A signer (an HSM key in the daemon, a software key in tests) could not sign.
///
/// Opaque: a message plus, optionally, the signer's own error as [`source`](StdError::source),
/// which the daemon can downcast to its HSM error type. The message must not contain secrets
/// (PINs, key material).
#[derive(Debug)]
pub struct SignerError {
    message: String,
    source: Option<BoxError>,
}

impl SignerError {
    /// A signer error with a message and no underlying cause.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A signer error with a message and the error that caused it.
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The message given at construction.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SignerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for SignerError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The underlying DER or builder error of [`CertError::Encoding`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EncodingError(BoxError);

impl EncodingError {
    pub(crate) fn new(err: impl Into<BoxError>) -> Self {
        Self(err.into())
    }
}

impl CertError {
    /// Wraps a DER error raised while encoding.
    pub(crate) fn encoding(err: impl Into<BoxError>) -> Self {
        Self::Encoding(EncodingError::new(err))
    }
}
