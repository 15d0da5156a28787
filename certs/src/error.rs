//! Errors of this crate, grouped by what the caller should do about them.

use std::error::Error as StdError;
use std::fmt;

use const_oid::ObjectIdentifier;

/// Why a certificate could not be made. Nothing was signed unless the variant says so.
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

/// What is wrong with a certificate request. Messages contain only request data (names), never
/// key material.
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

    /// The validity period is empty, out of range, or outlasts the CA certificate.
    #[error("invalid validity: {0}")]
    InvalidValidity(&'static str),
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
