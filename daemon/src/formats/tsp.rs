//! formats::tsp: the Time-Stamp Protocol (RFC 3161, with RFC 5816's ESSCertIDv2) — requests
//! read from anyone, TSTInfo and the time-stamp token (a CMS SignedData made by the token key,
//! through [`CmsBuilder`]), and the responses, granted or rejected with the protocol's failure
//! information.
//!
//! The ASN.1 types are written here with `der`'s derives: the RustCrypto `x509-tsp` crate has
//! one release, built on `cms` 0.2 and `der` 0.7, whose types do not mix with the `cms` 0.3
//! ones the rest of the daemon uses. Field names, tags (the RFC 3161 module uses implicit
//! tags), optionality and defaults follow RFC 3161 §2.4 and RFC 4210 §5.2.3.
//!
//! What a token holds: TSTInfo version 1, the configured policy, the request's message
//! imprint, a serial number, genTime (whole seconds, UTC), the configured accuracy, ordering
//! false, the request's nonce; no tsa name, no extensions. The SignedData is version 3 with
//! eContentType id-ct-TSTInfo and the TSTInfo as eContent; its one SignerInfo carries the
//! signed attributes contentType, messageDigest, signingTime, CMSAlgorithmProtection and
//! signingCertificateV2 (the SHA-256 of the TSA certificate and its issuer and serial). The
//! TSA certificate (and the CA's) travel in the token only when the request's certReq says so.

use const_oid::ObjectIdentifier;
use const_oid::db::{rfc3161, rfc5911};
use der::asn1::{BitString, GeneralizedTime, Int, OctetString, Uint};
use der::{Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::Extensions;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::serial_number::SerialNumber;

use super::cms::{CmsBuilder, CmsError, PendingCms, digest_from_identifier, digest_identifier};
use crate::crypto::HashAlg;
use crate::hsm::KeyAlgorithm;

/// The longest time-stamp request read, in bytes (a request is ~60 bytes; extensions could
/// add some).
pub const MAX_REQUEST_LEN: usize = 16 * 1024;

/// The longest nonce accepted, in bytes (OpenSSL sends 8).
pub const MAX_NONCE_LEN: usize = 32;

/// `id-ct-TSTInfo` (1.2.840.113549.1.9.16.1.4).
pub const ID_CT_TST_INFO: ObjectIdentifier = rfc3161::ID_CT_TST_INFO;

/// `id-aa-signatureTimeStampToken` (1.2.840.113549.1.9.16.2.14): the unsigned attribute of a
/// SignerInfo that holds a time-stamp token over its signature value (RFC 3161 Appendix A).
pub const ID_AA_SIGNATURE_TIME_STAMP_TOKEN: ObjectIdentifier = rfc3161::ID_AA_TIME_STAMP_TOKEN;

/// ```text
/// MessageImprint ::= SEQUENCE {
///     hashAlgorithm AlgorithmIdentifier,
///     hashedMessage OCTET STRING }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, der::Sequence)]
pub struct MessageImprint {
    /// The hash of the stamped data.
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// The stamped data's digest.
    pub hashed_message: OctetString,
}

/// ```text
/// TimeStampReq ::= SEQUENCE {
///     version        INTEGER { v1(1) },
///     messageImprint MessageImprint,
///     reqPolicy      TSAPolicyId OPTIONAL,
///     nonce          INTEGER OPTIONAL,
///     certReq        BOOLEAN DEFAULT FALSE,
///     extensions [0] IMPLICIT Extensions OPTIONAL }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, der::Sequence)]
struct TimeStampReq {
    version: Int,
    message_imprint: MessageImprint,
    #[asn1(optional = "true")]
    req_policy: Option<ObjectIdentifier>,
    #[asn1(optional = "true")]
    nonce: Option<Int>,
    #[asn1(default = "Default::default")]
    cert_req: bool,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<Extensions>,
}

/// ```text
/// Accuracy ::= SEQUENCE {
///     seconds    INTEGER OPTIONAL,
///     millis [0] INTEGER (1..999) OPTIONAL,
///     micros [1] INTEGER (1..999) OPTIONAL }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, der::Sequence)]
struct Accuracy {
    #[asn1(optional = "true")]
    seconds: Option<u32>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    millis: Option<u16>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    micros: Option<u16>,
}

/// ```text
/// TSTInfo ::= SEQUENCE {
///     version        INTEGER { v1(1) },
///     policy         TSAPolicyId,
///     messageImprint MessageImprint,
///     serialNumber   INTEGER,
///     genTime        GeneralizedTime,
///     accuracy       Accuracy OPTIONAL,
///     ordering       BOOLEAN DEFAULT FALSE,
///     nonce          INTEGER OPTIONAL,
///     tsa        [0] GeneralName OPTIONAL,
///     extensions [1] IMPLICIT Extensions OPTIONAL }
/// ```
/// (`tsa` is never written.)
#[derive(Clone, Debug, Eq, PartialEq, der::Sequence)]
struct TstInfo {
    version: u8,
    policy: ObjectIdentifier,
    message_imprint: MessageImprint,
    serial_number: Uint,
    gen_time: GeneralizedTime,
    #[asn1(optional = "true")]
    accuracy: Option<Accuracy>,
    #[asn1(default = "Default::default")]
    ordering: bool,
    #[asn1(optional = "true")]
    nonce: Option<Int>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<Extensions>,
}

/// ```text
/// PKIStatusInfo ::= SEQUENCE {
///     status       PKIStatus,
///     statusString PKIFreeText OPTIONAL,
///     failInfo     PKIFailureInfo OPTIONAL }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, der::Sequence)]
struct PkiStatusInfo {
    status: u8,
    #[asn1(optional = "true")]
    status_string: Option<Vec<String>>,
    #[asn1(optional = "true")]
    fail_info: Option<BitString>,
}

/// ```text
/// TimeStampResp ::= SEQUENCE {
///     status         PKIStatusInfo,
///     timeStampToken TimeStampToken OPTIONAL }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, der::Sequence)]
struct TimeStampResp {
    status: PkiStatusInfo,
    #[asn1(optional = "true")]
    time_stamp_token: Option<cms::content_info::ContentInfo>,
}

/// ```text
/// IssuerSerial ::= SEQUENCE {
///     issuer       GeneralNames,
///     serialNumber CertificateSerialNumber }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, der::Sequence)]
struct IssuerSerial {
    issuer: Vec<GeneralName>,
    serial_number: SerialNumber,
}

/// ```text
/// ESSCertIDv2 ::= SEQUENCE {
///     hashAlgorithm AlgorithmIdentifier DEFAULT {algorithm id-sha256},
///     certHash      Hash,
///     issuerSerial  IssuerSerial OPTIONAL }
/// ```
/// (always SHA-256, so `hashAlgorithm` is left out as DER requires of a default.)
#[derive(Clone, Debug, Eq, PartialEq, der::Sequence)]
struct EssCertIdV2 {
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<IssuerSerial>,
}

/// ```text
/// SigningCertificateV2 ::= SEQUENCE {
///     certs    SEQUENCE OF ESSCertIDv2,
///     policies SEQUENCE OF PolicyInformation OPTIONAL }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, der::Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
}

/// PKIFailureInfo bits a TSA answers with (RFC 3161 §2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `badAlg` (0): an unrecognised or unsupported hash algorithm.
    BadAlg,
    /// `badRequest` (2): a transaction not permitted or supported.
    BadRequest,
    /// `badDataFormat` (5): the data submitted has the wrong format.
    BadDataFormat,
    /// `timeNotAvailable` (14): the TSA's time source is not available.
    TimeNotAvailable,
    /// `unacceptedPolicy` (15): the requested policy is not supported.
    UnacceptedPolicy,
    /// `unacceptedExtension` (16): the requested extension is not supported.
    UnacceptedExtension,
    /// `systemFailure` (25): the request cannot be handled due to a system failure.
    SystemFailure,
}

impl Failure {
    fn bit(self) -> u8 {
        match self {
            Failure::BadAlg => 0,
            Failure::BadRequest => 2,
            Failure::BadDataFormat => 5,
            Failure::TimeNotAvailable => 14,
            Failure::UnacceptedPolicy => 15,
            Failure::UnacceptedExtension => 16,
            Failure::SystemFailure => 25,
        }
    }

    /// The name RFC 3161 gives it.
    pub fn name(self) -> &'static str {
        match self {
            Failure::BadAlg => "badAlg",
            Failure::BadRequest => "badRequest",
            Failure::BadDataFormat => "badDataFormat",
            Failure::TimeNotAvailable => "timeNotAvailable",
            Failure::UnacceptedPolicy => "unacceptedPolicy",
            Failure::UnacceptedExtension => "unacceptedExtension",
            Failure::SystemFailure => "systemFailure",
        }
    }

    /// The failInfo BIT STRING with this one bit set, in DER (trailing zero bits dropped).
    fn bit_string(self) -> Result<BitString, der::Error> {
        let bit = self.bit();
        let mut bytes = vec![0u8; usize::from(bit / 8) + 1];
        bytes[usize::from(bit / 8)] = 0x80 >> (bit % 8);
        BitString::new(7 - bit % 8, bytes)
    }
}

/// A request refused in the protocol: the failure and a text for the statusString.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({})", .text, .failure.name())]
pub struct Rejection {
    /// The failInfo bit.
    pub failure: Failure,
    /// Why, for the client (no secret, no input echoed beyond names).
    pub text: String,
}

impl Rejection {
    /// A rejection with `failure` and `text`.
    pub fn new(failure: Failure, text: impl Into<String>) -> Rejection {
        Rejection {
            failure,
            text: text.into(),
        }
    }
}

/// A time-stamp request, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The message imprint's hash.
    pub hash: HashAlg,
    /// The imprint's digest (of `hash`'s length).
    pub digest: Vec<u8>,
    /// The policy the client asked for, if any.
    pub policy: Option<ObjectIdentifier>,
    /// The nonce, to be echoed.
    pub nonce: Option<Int>,
    /// Whether the token should carry the TSA's certificate.
    pub cert_req: bool,
}

impl Request {
    /// The message imprint's digest as hex, for audit entries.
    pub fn imprint_hex(&self) -> String {
        hex::encode(&self.digest)
    }

    /// The nonce as hex (big-endian two's complement, as encoded), for audit entries.
    pub fn nonce_hex(&self) -> Option<String> {
        self.nonce.as_ref().map(|n| hex::encode(n.as_bytes()))
    }
}

/// Reads a DER `TimeStampReq` from anyone. Refusals are [`Rejection`]s, as the protocol
/// answers them: not DER of a request (`badDataFormat`), a version other than 1
/// (`badRequest`), a hash other than SHA-256/384/512 (`badAlg`), an imprint of the wrong
/// length (`badDataFormat`), any extension (`unacceptedExtension`), a nonce that is not
/// positive or is over [`MAX_NONCE_LEN`] bytes (`badRequest`). `policies` are those the TSA
/// accepts; a request naming another gets `unacceptedPolicy`.
pub fn parse_request(der: &[u8], policies: &[ObjectIdentifier]) -> Result<Request, Rejection> {
    if der.len() > MAX_REQUEST_LEN {
        return Err(Rejection::new(
            Failure::BadDataFormat,
            format!("a time-stamp request is at most {MAX_REQUEST_LEN} bytes"),
        ));
    }
    let req = TimeStampReq::from_der(der).map_err(|e| {
        Rejection::new(
            Failure::BadDataFormat,
            format!("not a DER TimeStampReq: {e}"),
        )
    })?;
    if req.version.as_bytes() != [1] {
        return Err(Rejection::new(
            Failure::BadRequest,
            "only version 1 requests are answered",
        ));
    }
    let hash = digest_from_identifier(&req.message_imprint.hash_algorithm).map_err(|_| {
        Rejection::new(
            Failure::BadAlg,
            "the message imprint's hash must be sha256, sha384 or sha512",
        )
    })?;
    let digest = req.message_imprint.hashed_message.as_bytes().to_vec();
    if digest.len() != hash.output_len() {
        return Err(Rejection::new(
            Failure::BadDataFormat,
            format!(
                "a {hash} message imprint is {} bytes, not {}",
                hash.output_len(),
                digest.len()
            ),
        ));
    }
    if req.extensions.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(Rejection::new(
            Failure::UnacceptedExtension,
            "no request extension is supported",
        ));
    }
    if let Some(policy) = req.req_policy
        && !policies.contains(&policy)
    {
        return Err(Rejection::new(
            Failure::UnacceptedPolicy,
            format!("policy {policy} is not offered by this TSA"),
        ));
    }
    if let Some(nonce) = &req.nonce {
        let bytes = nonce.as_bytes();
        if bytes.len() > MAX_NONCE_LEN || bytes.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(Rejection::new(
                Failure::BadRequest,
                format!("a nonce is a positive integer of at most {MAX_NONCE_LEN} bytes"),
            ));
        }
    }
    Ok(Request {
        hash,
        digest,
        policy: req.req_policy,
        nonce: req.nonce,
        cert_req: req.cert_req,
    })
}

/// A TSA's accuracy (RFC 3161 `Accuracy`): at least one part non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accuracy3161 {
    /// Whole seconds.
    pub seconds: u32,
    /// Milliseconds (0..=999).
    pub millis: u16,
    /// Microseconds (0..=999).
    pub micros: u16,
}

impl Accuracy3161 {
    fn encode(self) -> Accuracy {
        Accuracy {
            seconds: (self.seconds > 0).then_some(self.seconds),
            millis: (self.millis > 0).then_some(self.millis),
            micros: (self.micros > 0).then_some(self.micros),
        }
    }
}

/// What a token says besides the request: the TSA's policy, serial number, time and accuracy.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// The policy the token is issued under.
    pub policy: ObjectIdentifier,
    /// The serial number (unique across the TSA).
    pub serial: u64,
    /// genTime (whole seconds are kept).
    pub gen_time: OffsetDateTime,
    /// The accuracy of genTime.
    pub accuracy: Accuracy3161,
}

fn encoding(e: der::Error) -> CmsError {
    CmsError::Encoding(e.to_string())
}

/// The DER TSTInfo of `stamp` for `request`.
pub fn tst_info(request: &Request, stamp: &Stamp) -> Result<Vec<u8>, CmsError> {
    let secs =
        u64::try_from(stamp.gen_time.unix_timestamp()).map_err(|_| CmsError::TimeOutOfRange)?;
    let gen_time = GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map_err(|_| CmsError::TimeOutOfRange)?;
    let info = TstInfo {
        version: 1,
        policy: stamp.policy,
        message_imprint: MessageImprint {
            hash_algorithm: digest_identifier(request.hash),
            hashed_message: OctetString::new(request.digest.clone()).map_err(encoding)?,
        },
        serial_number: Uint::new(&stamp.serial.to_be_bytes()).map_err(encoding)?,
        gen_time,
        accuracy: Some(stamp.accuracy.encode()),
        ordering: false,
        nonce: request.nonce.clone(),
        extensions: None,
    };
    info.to_der().map_err(encoding)
}

/// The signingCertificateV2 attribute value for the TSA certificate `tsa_cert_der`: its
/// SHA-256 and its issuer and serial number.
fn signing_certificate_v2(tsa_cert_der: &[u8]) -> Result<Vec<u8>, CmsError> {
    let cert =
        Certificate::from_der(tsa_cert_der).map_err(|e| CmsError::Certificate(e.to_string()))?;
    let tbs = cert.tbs_certificate();
    SigningCertificateV2 {
        certs: vec![EssCertIdV2 {
            cert_hash: OctetString::new(HashAlg::Sha256.digest(tsa_cert_der)).map_err(encoding)?,
            issuer_serial: Some(IssuerSerial {
                issuer: vec![GeneralName::DirectoryName(tbs.issuer().clone())],
                serial_number: tbs.serial_number().clone(),
            }),
        }],
    }
    .to_der()
    .map_err(encoding)
}

/// Prepares the time-stamp token for `request`: TSTInfo of `stamp`, signed with SHA-256 by
/// the `algorithm` key of the TSA certificate `tsa_cert_der`, carrying `chain_der` (the TSA
/// certificate first, then the CA's) only when the request asks for certificates. The result
/// says what the token must sign; its `complete` gives the token (a ContentInfo).
pub fn prepare_token(
    request: &Request,
    stamp: &Stamp,
    tsa_cert_der: &[u8],
    algorithm: KeyAlgorithm,
    chain_der: &[&[u8]],
) -> Result<PendingCms, CmsError> {
    let tst = tst_info(request, stamp)?;
    let hash = if algorithm == KeyAlgorithm::Ed25519 {
        HashAlg::Sha512
    } else {
        HashAlg::Sha256
    };
    let digest = hash.digest(&tst);
    let mut builder = CmsBuilder::new(tsa_cert_der, algorithm, hash, stamp.gen_time)?
        .encapsulated(ID_CT_TST_INFO, tst)
        .signed_attribute(
            rfc5911::ID_AA_SIGNING_CERTIFICATE_V_2,
            &signing_certificate_v2(tsa_cert_der)?,
        )?;
    if request.cert_req {
        builder = builder.certificates(chain_der.iter().copied())?;
    } else {
        builder = builder.without_certificates();
    }
    builder.prepare(&digest)
}

fn status_info(
    status: u8,
    text: Option<String>,
    failure: Option<Failure>,
) -> Result<PkiStatusInfo, der::Error> {
    Ok(PkiStatusInfo {
        status,
        status_string: text.map(|t| vec![t]),
        fail_info: failure.map(Failure::bit_string).transpose()?,
    })
}

/// A `granted` TimeStampResp holding `token_der` (a ContentInfo).
pub fn granted(token_der: &[u8]) -> Result<Vec<u8>, CmsError> {
    let token = cms::content_info::ContentInfo::from_der(token_der).map_err(encoding)?;
    TimeStampResp {
        status: status_info(0, None, None).map_err(encoding)?,
        time_stamp_token: Some(token),
    }
    .to_der()
    .map_err(encoding)
}

/// A `rejection` TimeStampResp with the failure bit and text of `rejection`.
pub fn rejected(rejection: &Rejection) -> Vec<u8> {
    let encode = || -> Result<Vec<u8>, der::Error> {
        TimeStampResp {
            status: status_info(2, Some(rejection.text.clone()), Some(rejection.failure))?,
            time_stamp_token: None,
        }
        .to_der()
    };
    // Both parts are bounded and of fixed shape; should encoding fail anyway, the bare
    // status `rejection` (30 03 02 01 02 in a SEQUENCE) still says no.
    encode().unwrap_or_else(|_| vec![0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x02])
}

/// `systemFailure` rejection without text, for answers that must not say more.
pub fn system_failure() -> Vec<u8> {
    rejected(&Rejection::new(
        Failure::SystemFailure,
        "the TSA cannot answer now",
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request_der(hash: AlgorithmIdentifierOwned, digest: &[u8], nonce: Option<&[u8]>) -> Vec<u8> {
        TimeStampReq {
            version: Int::new(&[1]).unwrap(),
            message_imprint: MessageImprint {
                hash_algorithm: hash,
                hashed_message: OctetString::new(digest).unwrap(),
            },
            req_policy: None,
            nonce: nonce.map(|n| Int::new(n).unwrap()),
            cert_req: true,
            extensions: None,
        }
        .to_der()
        .unwrap()
    }

    #[test]
    fn requests_are_read_and_refused_with_the_right_failure() {
        let sha256 = digest_identifier(HashAlg::Sha256);
        let ok = parse_request(&request_der(sha256.clone(), &[7; 32], Some(&[1, 2])), &[]).unwrap();
        assert_eq!(ok.hash, HashAlg::Sha256);
        assert!(ok.cert_req);
        assert_eq!(ok.nonce_hex().as_deref(), Some("0102"));
        let fail = |der: &[u8]| parse_request(der, &[]).unwrap_err().failure;
        assert_eq!(
            fail(&request_der(sha256.clone(), &[7; 20], None)),
            Failure::BadDataFormat
        );
        let sha1 = AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap("1.3.14.3.2.26"),
            parameters: None,
        };
        assert_eq!(fail(&request_der(sha1, &[7; 20], None)), Failure::BadAlg);
        assert_eq!(fail(b"\x30\x03\x02\x01"), Failure::BadDataFormat);
        assert_eq!(
            fail(&request_der(sha256, &[7; 32], Some(&[0x80]))),
            Failure::BadRequest
        );
    }

    #[test]
    fn failure_bits_are_minimal_der() {
        assert_eq!(
            Failure::BadAlg.bit_string().unwrap().to_der().unwrap(),
            [0x03, 0x02, 0x07, 0x80]
        );
        assert_eq!(
            Failure::SystemFailure
                .bit_string()
                .unwrap()
                .to_der()
                .unwrap(),
            [0x03, 0x05, 0x06, 0x00, 0x00, 0x00, 0x40]
        );
    }
}
