//! OCSP (RFC 6960): parsing requests from untrusted clients, and making signed basic responses
//! and unsigned error responses.
//!
//! x509-ocsp only exists for x509-cert 0.2, so the ASN.1 structures are defined here with der's
//! derive macros (in a private module, `asn1`); the public types are the parsed, checked forms.
//!
//! Requests: unsigned requests are the norm; a signed request is accepted and its signature
//! ignored (the status of a certificate is not a secret). Responses: a BasicOCSPResponse
//! (`id-pkix-ocsp-basic`) signed by the CA key itself or by a delegated responder whose
//! certificate ([`crate::Profile::OcspResponder`]) travels in the response; a request nonce
//! (RFC 8954) is echoed.

use std::time::{Duration, SystemTime};

use const_oid::db::{rfc5280, rfc5912, rfc6960};
use der::asn1::{GeneralizedTime, Null, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;

use crate::crl::Reason;
use crate::error::{CertError, IssuerError, RequestError};
use crate::signer::{IssuerKey, TbsSigner};

/// The largest OCSP request accepted, in bytes. Unsigned requests for a few certificates take
/// a few hundred bytes; this leaves room for signed requests carrying certificates.
pub const OCSP_REQUEST_MAX_SIZE: usize = 16 * 1024;

/// The most CertIDs accepted in one OCSP request.
pub const OCSP_REQUEST_MAX_CERT_IDS: usize = 16;

/// The longest nonce accepted (RFC 8954 section 2.1: 1 to 32 octets).
pub const OCSP_NONCE_MAX_LEN: usize = 32;

/// The hash algorithm of a [`CertId`]. SHA-1 is what most clients (and `openssl ocsp` by
/// default) send; RFC 6960 CertIDs use it as an identifier, not for security.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-1 (20-byte hashes).
    Sha1,
    /// SHA-256 (32-byte hashes).
    Sha256,
}

impl HashAlgorithm {
    fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            rfc5912::ID_SHA_1 => Some(Self::Sha1),
            rfc5912::ID_SHA_256 => Some(Self::Sha256),
            _ => None,
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Sha1 => rfc5912::ID_SHA_1,
            Self::Sha256 => rfc5912::ID_SHA_256,
        }
    }

    /// The length of the hash in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => Sha1::digest(data).to_vec(),
            Self::Sha256 => Sha256::digest(data).to_vec(),
        }
    }
}

/// Identifies one certificate in an OCSP request and response: hashes of its issuer's name and
/// key, and its serial number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertId {
    /// The hash algorithm of both hashes.
    pub hash_algorithm: HashAlgorithm,
    /// The hash of the issuer's distinguished name (DER).
    pub issuer_name_hash: Vec<u8>,
    /// The hash of the issuer's public key (the contents of its subjectPublicKey BIT STRING).
    pub issuer_key_hash: Vec<u8>,
    /// The certificate's serial number.
    pub serial: SerialNumber,
}

impl CertId {
    /// The CertID of the certificate with `serial` issued by `issuer`.
    pub fn new(
        hash_algorithm: HashAlgorithm,
        issuer: &Certificate,
        serial: SerialNumber,
    ) -> Result<Self, CertError> {
        let (issuer_name_hash, issuer_key_hash) =
            issuer_hashes(hash_algorithm, issuer).map_err(CertError::encoding)?;
        Ok(Self {
            hash_algorithm,
            issuer_name_hash,
            issuer_key_hash,
            serial,
        })
    }
}

/// Whether `cert_id` names a certificate issued by `ca`: its name and key hashes are those of
/// `ca`'s subject name and public key. (Whether the serial is one of `ca`'s is for the caller to
/// look up.)
pub fn cert_id_matches_issuer(cert_id: &CertId, ca: &Certificate) -> bool {
    // A certificate that was decoded re-encodes; if it did not, it matches nothing.
    issuer_hashes(cert_id.hash_algorithm, ca).is_ok_and(|(name_hash, key_hash)| {
        name_hash == cert_id.issuer_name_hash && key_hash == cert_id.issuer_key_hash
    })
}

fn issuer_hashes(
    algorithm: HashAlgorithm,
    issuer: &Certificate,
) -> der::Result<(Vec<u8>, Vec<u8>)> {
    let tbs = issuer.tbs_certificate();
    let name = tbs.subject().to_der()?;
    let key = tbs.subject_public_key_info().subject_public_key.raw_bytes();
    Ok((algorithm.digest(&name), algorithm.digest(key)))
}

/// A parsed OCSP request: what is asked, and the nonce to echo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspRequest {
    /// The certificates asked about, in request order (1 to [`OCSP_REQUEST_MAX_CERT_IDS`]).
    pub cert_ids: Vec<CertId>,
    /// The nonce of the request's nonce extension (the octets inside its OCTET STRING, 1 to
    /// [`OCSP_NONCE_MAX_LEN`] bytes), to pass to [`build_ocsp_response`].
    pub nonce: Option<Vec<u8>>,
}

/// Parses a DER `OCSPRequest` (RFC 6960 section 4.1) from an untrusted client.
///
/// Refused, as [`CertError::InvalidRequest`]: more than [`OCSP_REQUEST_MAX_SIZE`] bytes;
/// anything but strict DER of one `OCSPRequest` (including trailing data and an explicitly
/// encoded default version); no CertID or more than [`OCSP_REQUEST_MAX_CERT_IDS`]; CertIDs
/// with another hash than SHA-1 or SHA-256 or hashes of the wrong length; a nonce that is not
/// an OCTET STRING of 1 to [`OCSP_NONCE_MAX_LEN`] bytes; an extension twice; an unknown
/// critical extension. A request signature is accepted and ignored.
pub fn parse_ocsp_request(der: &[u8]) -> Result<OcspRequest, CertError> {
    Ok(parse_request(der)?)
}

fn parse_request(der: &[u8]) -> Result<OcspRequest, RequestError> {
    let invalid = RequestError::InvalidOcspRequest;
    if der.len() > OCSP_REQUEST_MAX_SIZE {
        return Err(RequestError::TooLarge {
            size: der.len(),
            limit: OCSP_REQUEST_MAX_SIZE,
        });
    }
    let request = asn1::OcspRequest::from_der(der).map_err(RequestError::MalformedOcspRequest)?;
    let tbs = request.tbs_request;
    if tbs.version.is_some() {
        // v1 is the DEFAULT, which DER omits, and the only version there is.
        return Err(invalid("the version must be omitted"));
    }
    if tbs.request_list.is_empty() {
        return Err(invalid("the request asks about no certificate"));
    }
    if tbs.request_list.len() > OCSP_REQUEST_MAX_CERT_IDS {
        return Err(invalid("the request asks about too many certificates"));
    }
    let mut cert_ids = Vec::with_capacity(tbs.request_list.len());
    for single in tbs.request_list {
        check_extensions(
            single.single_request_extensions.as_deref().unwrap_or(&[]),
            &[],
        )?;
        cert_ids.push(cert_id_from_asn1(single.req_cert)?);
    }

    let extensions = tbs.request_extensions.unwrap_or_default();
    check_extensions(&extensions, &[rfc6960::ID_PKIX_OCSP_NONCE])?;
    let nonce = extensions
        .iter()
        .find(|ext| ext.extn_id == rfc6960::ID_PKIX_OCSP_NONCE)
        .map(|ext| {
            OctetString::from_der(ext.extn_value.as_bytes())
                .ok()
                .filter(|n| (1..=OCSP_NONCE_MAX_LEN).contains(&n.as_bytes().len()))
                .map(OctetString::into_bytes)
                .ok_or(invalid("the nonce is not an OCTET STRING of 1 to 32 bytes"))
        })
        .transpose()?;

    Ok(OcspRequest {
        cert_ids,
        nonce: nonce.map(Vec::from),
    })
}

/// No extension twice, and no critical extension other than those in `understood`.
fn check_extensions(
    extensions: &[Extension],
    understood: &[ObjectIdentifier],
) -> Result<(), RequestError> {
    for (i, ext) in extensions.iter().enumerate() {
        if extensions[..i].iter().any(|e| e.extn_id == ext.extn_id) {
            return Err(RequestError::InvalidOcspRequest(
                "an extension appears more than once",
            ));
        }
        if ext.critical && !understood.contains(&ext.extn_id) {
            return Err(RequestError::InvalidOcspRequest(
                "the request has an unknown critical extension",
            ));
        }
    }
    Ok(())
}

fn cert_id_from_asn1(cert_id: asn1::CertId) -> Result<CertId, RequestError> {
    let unsupported = || {
        RequestError::InvalidOcspRequest(
            "unsupported CertID hash algorithm (SHA-1 and SHA-256 are supported)",
        )
    };
    let algorithm = HashAlgorithm::from_oid(cert_id.hash_algorithm.oid).ok_or_else(unsupported)?;
    // NULL or absent parameters (RFC 5754 section 2).
    if cert_id
        .hash_algorithm
        .parameters
        .as_ref()
        .is_some_and(|p| !p.is_null())
    {
        return Err(unsupported());
    }
    let issuer_name_hash = cert_id.issuer_name_hash.into_bytes().into_vec();
    let issuer_key_hash = cert_id.issuer_key_hash.into_bytes().into_vec();
    if issuer_name_hash.len() != algorithm.output_len()
        || issuer_key_hash.len() != algorithm.output_len()
    {
        return Err(RequestError::InvalidOcspRequest(
            "a CertID hash has the wrong length for its algorithm",
        ));
    }
    Ok(CertId {
        hash_algorithm: algorithm,
        issuer_name_hash,
        issuer_key_hash,
        serial: cert_id.serial_number,
    })
}

/// Names the responder in a response: RFC 6960 `ResponderID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponderId {
    /// The subject name of the responder's certificate.
    ByName(Name),
    /// The SHA-1 hash of the responder's public key (the contents of its subjectPublicKey
    /// BIT STRING). The usual choice; see [`ResponderId::by_key`].
    ByKey([u8; 20]),
}

impl ResponderId {
    /// The by-key id of a public key.
    pub fn by_key(key: &SubjectPublicKeyInfoOwned) -> Self {
        Self::ByKey(Sha1::digest(key.subject_public_key.raw_bytes()).into())
    }

    /// The by-key id of a certificate's public key.
    pub fn by_key_of(cert: &Certificate) -> Self {
        Self::by_key(cert.tbs_certificate().subject_public_key_info())
    }
}

/// The status of one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertStatus {
    /// Issued by this CA and not revoked or held.
    Good,
    /// Revoked, or on hold ([`Reason::CertificateHold`]).
    Revoked {
        /// When it was revoked (to the second).
        time: SystemTime,
        /// Why; `None` leaves the reason out.
        reason: Option<Reason>,
    },
    /// Not known to this responder (for example, not issued by this CA).
    Unknown,
}

/// The answer about one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SingleResponse {
    /// The certificate, as the request named it.
    pub cert_id: CertId,
    /// Its status.
    pub status: CertStatus,
    /// When the status was known to be correct (to the second).
    pub this_update: SystemTime,
    /// When newer information will be available; must be after `this_update`. `None` says
    /// newer information is always available.
    pub next_update: Option<SystemTime>,
}

/// Makes a successful OCSP response (DER `OCSPResponse` carrying an `id-pkix-ocsp-basic`
/// BasicOCSPResponse), signed by `signer`.
///
/// `signer` is the CA key itself (then `responder_certs` is empty) or a delegated responder's
/// key, whose certificate issued by the CA ([`crate::Profile::OcspResponder`]) comes first in
/// `responder_certs`. `nonce` is the request's nonce ([`OcspRequest::nonce`]), echoed in a
/// nonce extension. Times are taken to the second.
///
/// Fails before signing if `responder` does not name the signer's key (by key) or the
/// responder certificate (by name), if the first responder certificate is not for the signer's
/// key or lacks the OCSPSigning extended key usage, or if a nextUpdate is not after its
/// thisUpdate.
pub fn build_ocsp_response(
    responder: ResponderId,
    signer: &dyn TbsSigner,
    responder_certs: Vec<Certificate>,
    produced_at: SystemTime,
    responses: &[SingleResponse],
    nonce: Option<&[u8]>,
) -> Result<Vec<u8>, CertError> {
    let key = IssuerKey::new(signer)?;
    check_responder(&responder, &key, responder_certs.first())?;

    let mut single_responses = Vec::with_capacity(responses.len());
    for response in responses {
        single_responses.push(single_response_to_asn1(response)?);
    }
    let response_extensions = nonce
        .map(|nonce| -> der::Result<_> {
            Ok(vec![Extension {
                extn_id: rfc6960::ID_PKIX_OCSP_NONCE,
                critical: false,
                extn_value: OctetString::new(OctetString::new(nonce)?.to_der()?)?,
            }])
        })
        .transpose()
        .map_err(CertError::encoding)?;
    let tbs_response_data = asn1::ResponseData {
        version: None,
        responder_id: match responder {
            ResponderId::ByName(name) => asn1::ResponderId::ByName(name),
            ResponderId::ByKey(hash) => asn1::ResponderId::ByKey(
                OctetString::new(hash.as_slice()).map_err(CertError::encoding)?,
            ),
        },
        produced_at: generalized_time(produced_at)?,
        responses: single_responses,
        response_extensions,
    };

    let tbs = tbs_response_data.to_der().map_err(CertError::encoding)?;
    let signature = key.sign(&tbs)?;
    let basic = asn1::BasicOcspResponse {
        tbs_response_data,
        signature_algorithm: key.algorithm().clone(),
        signature,
        certs: (!responder_certs.is_empty()).then_some(responder_certs),
    };
    let response = asn1::OcspResponse {
        response_status: asn1::ResponseStatus::Successful,
        response_bytes: Some(asn1::ResponseBytes {
            response_type: rfc6960::ID_PKIX_OCSP_BASIC,
            response: OctetString::new(basic.to_der().map_err(CertError::encoding)?)
                .map_err(CertError::encoding)?,
        }),
    };
    response.to_der().map_err(CertError::encoding)
}

fn check_responder(
    responder: &ResponderId,
    key: &IssuerKey<'_>,
    responder_cert: Option<&Certificate>,
) -> Result<(), CertError> {
    match responder {
        ResponderId::ByKey(_) if *responder != ResponderId::by_key(key.spki()) => {
            return Err(IssuerError::NotAnOcspResponder.into());
        }
        ResponderId::ByName(name)
            if responder_cert.is_some_and(|cert| cert.tbs_certificate().subject() != name) =>
        {
            return Err(IssuerError::NotAnOcspResponder.into());
        }
        _ => {}
    }
    if let Some(cert) = responder_cert {
        let tbs = cert.tbs_certificate();
        if tbs.subject_public_key_info() != key.spki() {
            return Err(IssuerError::KeyMismatch.into());
        }
        let eku = tbs
            .get_extension::<ExtendedKeyUsage>()
            .map_err(IssuerError::InvalidCaCertificate)?;
        if !eku.is_some_and(|(_, eku)| eku.0.contains(&rfc5280::ID_KP_OCSP_SIGNING)) {
            return Err(IssuerError::NotAnOcspResponder.into());
        }
    }
    Ok(())
}

fn single_response_to_asn1(response: &SingleResponse) -> Result<asn1::SingleResponse, CertError> {
    let cert_id = &response.cert_id;
    let cert_status = match response.status {
        CertStatus::Good => asn1::CertStatus::Good(Null),
        CertStatus::Revoked { time, reason } => asn1::CertStatus::Revoked(asn1::RevokedInfo {
            revocation_time: generalized_time(time)?,
            revocation_reason: reason.map(Reason::to_crl_reason),
        }),
        CertStatus::Unknown => asn1::CertStatus::Unknown(Null),
    };
    let this_update = generalized_time(response.this_update)?;
    let next_update = response.next_update.map(generalized_time).transpose()?;
    if next_update.is_some_and(|next| next.to_unix_duration() <= this_update.to_unix_duration()) {
        return Err(RequestError::InvalidValidity("nextUpdate is not after thisUpdate").into());
    }
    Ok(asn1::SingleResponse {
        cert_id: asn1::CertId {
            // NULL parameters, as OpenSSL and most responders write them.
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: cert_id.hash_algorithm.oid(),
                parameters: Some(der::Any::null()),
            },
            issuer_name_hash: OctetString::new(cert_id.issuer_name_hash.as_slice())
                .map_err(CertError::encoding)?,
            issuer_key_hash: OctetString::new(cert_id.issuer_key_hash.as_slice())
                .map_err(CertError::encoding)?,
            serial_number: cert_id.serial.clone(),
        },
        cert_status,
        this_update,
        next_update,
        single_extensions: None,
    })
}

/// A GeneralizedTime to the second (RFC 6960 section 4.2.2.1 via RFC 5280: no fractions).
fn generalized_time(time: SystemTime) -> Result<GeneralizedTime, RequestError> {
    let out_of_range = || RequestError::InvalidValidity("a date is out of range");
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| out_of_range())?;
    GeneralizedTime::from_unix_duration(Duration::from_secs(since_epoch.as_secs()))
        .map_err(|_| out_of_range())
}

/// The unsuccessful OCSP response statuses (RFC 6960 section 4.2.1), which carry no signed
/// response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OcspErrorStatus {
    /// 1: the request did not parse or is not acceptable ([`parse_ocsp_request`] failed).
    MalformedRequest,
    /// 2: the responder failed (database, signer).
    InternalError,
    /// 3: the responder cannot answer now; try again later.
    TryLater,
    /// 6: the responder may not answer this request (for example, another CA's certificate).
    Unauthorized,
}

/// The DER `OCSPResponse` for an unsuccessful status: `SEQUENCE { ENUMERATED status }`,
/// unsigned, as RFC 6960 prescribes.
pub fn ocsp_error_response(status: OcspErrorStatus) -> Vec<u8> {
    let code = match status {
        OcspErrorStatus::MalformedRequest => asn1::ResponseStatus::MalformedRequest,
        OcspErrorStatus::InternalError => asn1::ResponseStatus::InternalError,
        OcspErrorStatus::TryLater => asn1::ResponseStatus::TryLater,
        OcspErrorStatus::Unauthorized => asn1::ResponseStatus::Unauthorized,
    };
    // Five fixed bytes; written out rather than encoded so that this cannot fail.
    vec![0x30, 0x03, 0x0a, 0x01, code as u8]
}

/// The ASN.1 structures of RFC 6960 (module `OCSP-2013-88`, explicitly tagged), as they are on
/// the wire.
mod asn1 {
    use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString};
    use der::{Choice, Enumerated, Sequence};
    use spki::AlgorithmIdentifierOwned;
    use x509_cert::Certificate;
    use x509_cert::ext::Extensions;
    use x509_cert::ext::pkix::crl::CrlReason;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;

    /// ```text
    /// OCSPRequest ::= SEQUENCE {
    ///     tbsRequest              TBSRequest,
    ///     optionalSignature   [0] EXPLICIT Signature OPTIONAL }
    /// ```
    #[derive(Clone, Debug, Sequence)]
    pub(super) struct OcspRequest {
        pub(super) tbs_request: TbsRequest,
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) optional_signature: Option<Signature>,
    }

    /// ```text
    /// TBSRequest ::= SEQUENCE {
    ///     version             [0] EXPLICIT Version DEFAULT v1,
    ///     requestorName       [1] EXPLICIT GeneralName OPTIONAL,
    ///     requestList             SEQUENCE OF Request,
    ///     requestExtensions   [2] EXPLICIT Extensions OPTIONAL }
    /// ```
    /// The version is read as OPTIONAL so that an encoded default can be refused.
    #[derive(Clone, Debug, Sequence)]
    pub(super) struct TbsRequest {
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) version: Option<u8>,
        #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) requestor_name: Option<GeneralName>,
        pub(super) request_list: Vec<Request>,
        #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) request_extensions: Option<Extensions>,
    }

    /// ```text
    /// Signature ::= SEQUENCE {
    ///     signatureAlgorithm      AlgorithmIdentifier,
    ///     signature               BIT STRING,
    ///     certs               [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL }
    /// ```
    #[derive(Clone, Debug, Sequence)]
    pub(super) struct Signature {
        pub(super) signature_algorithm: AlgorithmIdentifierOwned,
        pub(super) signature: BitString,
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) certs: Option<Vec<Certificate>>,
    }

    /// ```text
    /// Request ::= SEQUENCE {
    ///     reqCert                     CertID,
    ///     singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
    /// ```
    #[derive(Clone, Debug, Sequence)]
    pub(super) struct Request {
        pub(super) req_cert: CertId,
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) single_request_extensions: Option<Extensions>,
    }

    /// ```text
    /// CertID ::= SEQUENCE {
    ///     hashAlgorithm           AlgorithmIdentifier,
    ///     issuerNameHash          OCTET STRING,
    ///     issuerKeyHash           OCTET STRING,
    ///     serialNumber            CertificateSerialNumber }
    /// ```
    #[derive(Clone, Debug, Sequence)]
    pub(super) struct CertId {
        pub(super) hash_algorithm: AlgorithmIdentifierOwned,
        pub(super) issuer_name_hash: OctetString,
        pub(super) issuer_key_hash: OctetString,
        pub(super) serial_number: SerialNumber,
    }

    /// ```text
    /// OCSPResponse ::= SEQUENCE {
    ///     responseStatus          OCSPResponseStatus,
    ///     responseBytes       [0] EXPLICIT ResponseBytes OPTIONAL }
    /// ```
    #[derive(Clone, Debug, Sequence)]
    pub(super) struct OcspResponse {
        pub(super) response_status: ResponseStatus,
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) response_bytes: Option<ResponseBytes>,
    }

    /// `OCSPResponseStatus ::= ENUMERATED { ... }` (4 is not used).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Enumerated)]
    #[repr(u32)]
    pub(super) enum ResponseStatus {
        Successful = 0,
        MalformedRequest = 1,
        InternalError = 2,
        TryLater = 3,
        SigRequired = 5,
        Unauthorized = 6,
    }

    /// ```text
    /// ResponseBytes ::= SEQUENCE {
    ///     responseType            OBJECT IDENTIFIER,
    ///     response                OCTET STRING }
    /// ```
    #[derive(Clone, Debug, Sequence)]
    pub(super) struct ResponseBytes {
        pub(super) response_type: ObjectIdentifier,
        pub(super) response: OctetString,
    }

    /// ```text
    /// BasicOCSPResponse ::= SEQUENCE {
    ///     tbsResponseData         ResponseData,
    ///     signatureAlgorithm      AlgorithmIdentifier,
    ///     signature               BIT STRING,
    ///     certs               [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL }
    /// ```
    #[derive(Clone, Debug, Sequence)]
    pub(super) struct BasicOcspResponse {
        pub(super) tbs_response_data: ResponseData,
        pub(super) signature_algorithm: AlgorithmIdentifierOwned,
        pub(super) signature: BitString,
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) certs: Option<Vec<Certificate>>,
    }

    /// ```text
    /// ResponseData ::= SEQUENCE {
    ///     version             [0] EXPLICIT Version DEFAULT v1,
    ///     responderID             ResponderID,
    ///     producedAt              GeneralizedTime,
    ///     responses               SEQUENCE OF SingleResponse,
    ///     responseExtensions  [1] EXPLICIT Extensions OPTIONAL }
    /// ```
    /// The version is always left out (DER omits the default).
    #[derive(Clone, Debug, Sequence)]
    pub(super) struct ResponseData {
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) version: Option<u8>,
        pub(super) responder_id: ResponderId,
        pub(super) produced_at: GeneralizedTime,
        pub(super) responses: Vec<SingleResponse>,
        #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) response_extensions: Option<Extensions>,
    }

    /// ```text
    /// ResponderID ::= CHOICE {
    ///     byName              [1] Name,
    ///     byKey               [2] KeyHash }
    /// ```
    #[derive(Clone, Debug, Choice)]
    pub(super) enum ResponderId {
        #[asn1(context_specific = "1", tag_mode = "EXPLICIT", constructed = "true")]
        ByName(Name),
        #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
        ByKey(OctetString),
    }

    /// ```text
    /// SingleResponse ::= SEQUENCE {
    ///     certID                  CertID,
    ///     certStatus              CertStatus,
    ///     thisUpdate              GeneralizedTime,
    ///     nextUpdate          [0] EXPLICIT GeneralizedTime OPTIONAL,
    ///     singleExtensions    [1] EXPLICIT Extensions OPTIONAL }
    /// ```
    #[derive(Clone, Debug, Sequence)]
    pub(super) struct SingleResponse {
        pub(super) cert_id: CertId,
        pub(super) cert_status: CertStatus,
        pub(super) this_update: GeneralizedTime,
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) next_update: Option<GeneralizedTime>,
        #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) single_extensions: Option<Extensions>,
    }

    /// ```text
    /// CertStatus ::= CHOICE {
    ///     good                [0] IMPLICIT NULL,
    ///     revoked             [1] IMPLICIT RevokedInfo,
    ///     unknown             [2] IMPLICIT UnknownInfo }
    /// UnknownInfo ::= NULL
    /// ```
    #[derive(Clone, Debug, Choice)]
    pub(super) enum CertStatus {
        #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
        Good(Null),
        #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
        Revoked(RevokedInfo),
        #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
        Unknown(Null),
    }

    /// ```text
    /// RevokedInfo ::= SEQUENCE {
    ///     revocationTime          GeneralizedTime,
    ///     revocationReason    [0] EXPLICIT CRLReason OPTIONAL }
    /// ```
    #[derive(Clone, Debug, Sequence)]
    pub(super) struct RevokedInfo {
        pub(super) revocation_time: GeneralizedTime,
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        pub(super) revocation_reason: Option<CrlReason>,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_are_der_ocsp_responses() {
        for (status, code) in [
            (OcspErrorStatus::MalformedRequest, 1),
            (OcspErrorStatus::InternalError, 2),
            (OcspErrorStatus::TryLater, 3),
            (OcspErrorStatus::Unauthorized, 6),
        ] {
            let bytes = ocsp_error_response(status);
            let parsed = asn1::OcspResponse::from_der(&bytes).unwrap();
            assert_eq!(parsed.response_status as u8, code);
            assert!(parsed.response_bytes.is_none());
            let encoded = asn1::OcspResponse {
                response_status: parsed.response_status,
                response_bytes: None,
            }
            .to_der()
            .unwrap();
            assert_eq!(encoded, bytes);
        }
    }

    #[test]
    fn garbage_requests_are_refused() {
        for input in [&b""[..], b"\x30\x00", b"\x30\x03\x30\x01\x00", b"hello"] {
            assert!(
                matches!(
                    parse_ocsp_request(input),
                    Err(CertError::InvalidRequest(
                        RequestError::MalformedOcspRequest(_)
                    ))
                ),
                "{input:?}"
            );
        }
        assert!(matches!(
            parse_ocsp_request(&vec![0x30; OCSP_REQUEST_MAX_SIZE + 1]),
            Err(CertError::InvalidRequest(RequestError::TooLarge { .. }))
        ));
    }

    fn request_der(tbs: asn1::TbsRequest) -> Vec<u8> {
        asn1::OcspRequest {
            tbs_request: tbs,
            optional_signature: None,
        }
        .to_der()
        .unwrap()
    }

    fn cert_id(oid: ObjectIdentifier, hash_len: usize) -> asn1::CertId {
        asn1::CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid,
                parameters: Some(der::Any::null()),
            },
            issuer_name_hash: OctetString::new(vec![1; hash_len]).unwrap(),
            issuer_key_hash: OctetString::new(vec![2; hash_len]).unwrap(),
            serial_number: SerialNumber::from(42u32),
        }
    }

    fn tbs(cert_ids: Vec<asn1::CertId>, extensions: Option<Vec<Extension>>) -> asn1::TbsRequest {
        asn1::TbsRequest {
            version: None,
            requestor_name: None,
            request_list: cert_ids
                .into_iter()
                .map(|req_cert| asn1::Request {
                    req_cert,
                    single_request_extensions: None,
                })
                .collect(),
            request_extensions: extensions,
        }
    }

    fn nonce_ext(nonce: &[u8], critical: bool) -> Extension {
        Extension {
            extn_id: rfc6960::ID_PKIX_OCSP_NONCE,
            critical,
            extn_value: OctetString::new(OctetString::new(nonce).unwrap().to_der().unwrap())
                .unwrap(),
        }
    }

    fn invalid(der: &[u8]) -> &'static str {
        match parse_ocsp_request(der) {
            Err(CertError::InvalidRequest(RequestError::InvalidOcspRequest(why))) => why,
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn request_rules() {
        let sha1 = rfc5912::ID_SHA_1;
        let ok = parse_ocsp_request(&request_der(tbs(
            vec![cert_id(sha1, 20), cert_id(rfc5912::ID_SHA_256, 32)],
            Some(vec![nonce_ext(&[7; 16], false)]),
        )))
        .unwrap();
        assert_eq!(ok.cert_ids.len(), 2);
        assert_eq!(ok.cert_ids[0].hash_algorithm, HashAlgorithm::Sha1);
        assert_eq!(ok.cert_ids[1].hash_algorithm, HashAlgorithm::Sha256);
        assert_eq!(ok.cert_ids[0].serial, SerialNumber::from(42u32));
        assert_eq!(ok.nonce.as_deref(), Some(&[7; 16][..]));

        // An explicit version (even v1) is not DER.
        let mut versioned = tbs(vec![cert_id(sha1, 20)], None);
        versioned.version = Some(0);
        assert_eq!(
            invalid(&request_der(versioned)),
            "the version must be omitted"
        );

        assert!(invalid(&request_der(tbs(vec![], None))).contains("no certificate"));
        let many = vec![cert_id(sha1, 20); OCSP_REQUEST_MAX_CERT_IDS + 1];
        assert!(invalid(&request_der(tbs(many, None))).contains("too many"));
        assert!(
            invalid(&request_der(tbs(
                vec![cert_id(rfc5912::ID_SHA_384, 48)],
                None
            )))
            .contains("hash algorithm")
        );
        assert!(invalid(&request_der(tbs(vec![cert_id(sha1, 32)], None))).contains("length"));

        for bad_nonce in [&[][..], &[0; 33][..]] {
            let der = request_der(tbs(
                vec![cert_id(sha1, 20)],
                Some(vec![nonce_ext(bad_nonce, false)]),
            ));
            assert!(invalid(&der).contains("nonce"));
        }
        let twice = request_der(tbs(
            vec![cert_id(sha1, 20)],
            Some(vec![nonce_ext(&[1], false), nonce_ext(&[2], false)]),
        ));
        assert!(invalid(&twice).contains("more than once"));
        // A critical nonce is understood; another critical extension is not.
        let critical_nonce = request_der(tbs(
            vec![cert_id(sha1, 20)],
            Some(vec![nonce_ext(&[1; 32], true)]),
        ));
        assert!(parse_ocsp_request(&critical_nonce).is_ok());
        let mut unknown = nonce_ext(&[1], true);
        unknown.extn_id = ObjectIdentifier::new_unwrap("1.2.3.4");
        let der = request_der(tbs(vec![cert_id(sha1, 20)], Some(vec![unknown.clone()])));
        assert!(invalid(&der).contains("critical"));
        unknown.critical = false;
        let der = request_der(tbs(vec![cert_id(sha1, 20)], Some(vec![unknown])));
        assert!(parse_ocsp_request(&der).unwrap().nonce.is_none());

        // Trailing data after the request.
        let mut trailing = request_der(tbs(vec![cert_id(sha1, 20)], None));
        trailing.push(0);
        assert!(matches!(
            parse_ocsp_request(&trailing),
            Err(CertError::InvalidRequest(
                RequestError::MalformedOcspRequest(_)
            ))
        ));
    }
}
