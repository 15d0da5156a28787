//! api::verify: `POST /v1/verify` of OpenPGP and CMS signatures (the raw signatures' path is
//! in `api::sign`). The signature names its key — an OpenPGP issuer fingerprint or key id, a
//! CMS signer's issuer and serial number (the key's document-signer certificate) — so the
//! request need not; a `ring` or `key_id` it does name restricts which keys count. Retired
//! keys verify as active ones do, and so does a CMS signature whose certificate is held,
//! revoked or expired: the answer says the key's state and the certificate's status, and the
//! caller decides what they mean for it.
//!
//! Two shapes. JSON (`format`, `signature` as armored/PEM text or base64, `data` or, for CMS,
//! `digest` in base64), held whole within `signing.max_json_bytes`. Or `multipart/form-data`
//! with `?format=…`: a `signature` part first, then the document as a `file` part, streamed
//! (`signing.max_upload_bytes`; memory does not grow with it). A cleartext-signed message is
//! its own document: the `signature` member or part holds it, and nothing else is sent.
//!
//! A signature that does not verify, names a key this daemon does not hold, or was made by a
//! key outside the target is an answer (`valid: false` and a `reason`), not an error; one
//! that cannot be read is a 400. Every check is an audit entry.

use axum::Json;
use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use der::{Decode as _, Encode as _};
use serde::Serialize;
use sha2::Digest as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::formats::{self, Format};
use super::sign::{Hasher, require_reader};
use super::upload::{self, Event};
use super::{ApiError, Caller, with_receipt};
use crate::app::App;
use crate::audit::{self, Receipt};
use crate::crypto::HashAlg;
use crate::formats::cms::{CmsError, CmsSignature};
use crate::formats::openpgp::{
    CleartextToCheck, DetachedInput, OpenPgpError, ReadError, SignatureToCheck,
};
use crate::signing::{SigningError, Target};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The one format a verification names (not raw: `api::sign` checks those).
pub(super) fn parse_format(name: &str) -> Result<Format, ApiError> {
    match formats::parse_formats(name)?.as_slice() {
        [f] => Ok(*f),
        _ => Err(ApiError::bad_request(
            "a verification checks one signature: name one format",
        )),
    }
}

/// A signature offered for verification, read.
enum Offered {
    OpenPgp(SignatureToCheck),
    Cleartext(CleartextToCheck),
    Cms(Box<CmsSignature>),
}

/// What the document is checked as.
enum Content {
    /// OpenPGP: the document hashed as the signature hashes it.
    OpenPgp(DetachedInput),
    /// CMS: the document hashed under the signature's digest algorithm.
    CmsData(Hasher),
    /// CMS: the digest the client sent.
    CmsDigest(Vec<u8>),
    /// A cleartext message is its own document.
    Cleartext,
}

/// One verification in progress: the signature read, the document hashed as it arrives.
pub(super) struct Check {
    offered: Offered,
    content: Content,
    /// Whether any document (or digest) was given.
    given: bool,
    input: &'static str,
    bytes: u64,
    sha256: sha2::Sha256,
    signature_sha256: [u8; 32],
}

fn read_error(e: ReadError) -> ApiError {
    match e {
        ReadError::TooLong => ApiError::too_large(e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    }
}

fn cms_read_error(e: CmsError) -> ApiError {
    match e {
        CmsError::TooLarge { .. } => ApiError::too_large(e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    }
}

fn openpgp_internal(e: OpenPgpError) -> ApiError {
    tracing::error!(error = %e, "cannot check an OpenPGP signature");
    ApiError::internal()
}

/// A `signature` member of a JSON request: armored or PEM text as it is, else base64.
pub(super) fn signature_bytes(format: Format, text: &str) -> Result<Vec<u8>, ApiError> {
    if format == Format::Cleartext || text.trim_start().starts_with("-----BEGIN ") {
        return Ok(text.as_bytes().to_vec());
    }
    B64.decode(text.trim())
        .map_err(|_| ApiError::bad_request("`signature` is neither armored (PEM) text nor base64"))
}

impl Check {
    /// Reads the signature of `format` (armored, PEM, binary or DER).
    pub fn new(format: Format, signature: &[u8]) -> Result<Check, ApiError> {
        let signature_sha256 = audit::digest(signature);
        let (offered, content) = match format {
            Format::OpenPgp => {
                let sig = SignatureToCheck::parse(signature).map_err(read_error)?;
                let input = sig.input().map_err(openpgp_internal)?;
                (Offered::OpenPgp(sig), Content::OpenPgp(input))
            }
            Format::Cleartext => {
                let msg = CleartextToCheck::parse(signature).map_err(read_error)?;
                (Offered::Cleartext(msg), Content::Cleartext)
            }
            Format::Cms => {
                let sig = CmsSignature::parse(signature).map_err(cms_read_error)?;
                let hasher = Hasher::new(sig.digest_algorithm());
                (Offered::Cms(Box::new(sig)), Content::CmsData(hasher))
            }
            Format::Raw => return Err(ApiError::internal()),
        };
        Ok(Check {
            given: matches!(content, Content::Cleartext),
            offered,
            content,
            input: "message",
            bytes: 0,
            sha256: sha2::Sha256::new(),
            signature_sha256,
        })
    }

    fn hash(&self) -> HashAlg {
        match &self.offered {
            Offered::OpenPgp(s) => s.hash(),
            Offered::Cleartext(m) => m.hash(),
            Offered::Cms(s) => s.digest_algorithm(),
        }
    }

    /// Starts the document (a second one is refused).
    pub fn start(&mut self) -> Result<(), ApiError> {
        match self.content {
            Content::Cleartext => Err(ApiError::bad_request(
                "a cleartext-signed message carries its text: send no other data",
            )),
            _ if self.given => Err(ApiError::bad_request("send one document")),
            _ => {
                self.given = true;
                Ok(())
            }
        }
    }

    /// Hashes the next chunk of the document.
    pub fn update(&mut self, data: &[u8]) -> Result<(), ApiError> {
        self.bytes = self.bytes.saturating_add(data.len() as u64);
        self.sha256.update(data);
        match &mut self.content {
            Content::OpenPgp(input) => input.update(data),
            Content::CmsData(hasher) => hasher.update(data),
            Content::CmsDigest(_) | Content::Cleartext => return Err(ApiError::internal()),
        }
        Ok(())
    }

    /// The document's digest instead of the document (CMS only), of the signature's digest
    /// algorithm's length.
    pub fn digest(&mut self, digest: Vec<u8>) -> Result<(), ApiError> {
        if !matches!(self.content, Content::CmsData(_)) {
            return Err(ApiError::bad_request(
                "only a CMS signature is checked against a digest; send `data`",
            ));
        }
        let hash = self.hash();
        if digest.len() != hash.output_len() {
            return Err(ApiError::bad_request(format!(
                "the signature's digest algorithm is {hash}: a digest is {} bytes",
                hash.output_len()
            )));
        }
        self.given = true;
        self.input = "digest";
        self.bytes = digest.len() as u64;
        self.sha256.update(&digest);
        self.content = Content::CmsDigest(digest);
        Ok(())
    }
}

/// The key a signature names, if this daemon holds it, with what else its lookup found.
struct Signer {
    key_id: Uuid,
    /// CMS: the certificate's SubjectPublicKeyInfo, serial, status and end of validity.
    certificate: Option<(Vec<u8>, String, String, OffsetDateTime)>,
}

async fn find_signer(app: &App, offered: &Offered) -> Result<Option<Signer>, ApiError> {
    let issuers = match offered {
        Offered::OpenPgp(s) => s.issuers(),
        Offered::Cleartext(m) => m.issuers(),
        Offered::Cms(sig) => {
            let signer = sig.signer();
            let Some(row) = app.store.certificate(&signer.serial_hex()).await? else {
                return Ok(None);
            };
            let (Some(key_id), true) = (row.key_id, signer.matches_certificate(&row.der)) else {
                return Ok(None);
            };
            let spki = x509_cert::Certificate::from_der(&row.der)
                .and_then(|c| c.tbs_certificate().subject_public_key_info().to_der())
                .map_err(|e| {
                    tracing::error!(error = %e, serial = %row.serial, "a stored certificate does not parse");
                    ApiError::internal()
                })?;
            return Ok(Some(Signer {
                key_id,
                certificate: Some((spki, row.serial, row.status, row.not_after)),
            }));
        }
    };
    for id in issuers {
        match app.signing.key_by_openpgp_id(&id).await {
            Ok(key_id) => {
                return Ok(Some(Signer {
                    key_id,
                    certificate: None,
                }));
            }
            Err(SigningError::UnknownOpenPgpKey(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Whether the signature verifies with `signer`'s key, and if not, why.
async fn verify_with(
    app: &App,
    check: Check,
    signer: &Signer,
) -> Result<Result<(), String>, ApiError> {
    let invalid = |why: &str| Ok(Err(why.to_owned()));
    match (check.offered, check.content) {
        (Offered::OpenPgp(sig), Content::OpenPgp(input)) => {
            let key = app.signing.openpgp_key(signer.key_id).await?;
            if sig.verify(input, &key).map_err(openpgp_internal)? {
                Ok(Ok(()))
            } else {
                invalid("the signature does not verify for this data")
            }
        }
        (Offered::Cleartext(msg), Content::Cleartext) => {
            let key = app.signing.openpgp_key(signer.key_id).await?;
            if msg.verify(&key) {
                Ok(Ok(()))
            } else {
                invalid("the signature does not verify for this text")
            }
        }
        (Offered::Cms(sig), content) => {
            let digest = match content {
                Content::CmsData(hasher) => hasher.finish(),
                Content::CmsDigest(d) => d,
                _ => return Err(ApiError::internal()),
            };
            let Some((spki, ..)) = &signer.certificate else {
                return Err(ApiError::internal());
            };
            match sig.verify(&digest, spki) {
                Ok(_) => Ok(Ok(())),
                Err(CmsError::DigestMismatch) => {
                    invalid("the data's digest is not the one the signature covers")
                }
                Err(CmsError::BadSignature | CmsError::PublicKey(_)) => {
                    invalid("the signature does not verify with the signer certificate's key")
                }
                Err(e) => Err(cms_read_error(e)),
            }
        }
        _ => Err(ApiError::internal()),
    }
}

/// Ends a verification: finds the key the signature names, checks the caller may read its
/// ring (`signer:<ring>` or admin), verifies, appends the audit entry and answers.
pub(super) async fn conclude(
    app: &App,
    caller: &Caller,
    format: Format,
    target: Option<Target>,
    check: Check,
) -> Result<Response, ApiError> {
    if !check.given {
        return Err(ApiError::bad_request(match format {
            Format::Cms => "send the signed data (`data`, a `file` part) or its `digest`",
            _ => "send the signed data (`data`, a `file` part)",
        }));
    }
    let target_subject = target.as_ref().map(|t| match t {
        Target::Ring(r) => format!("ring:{r}"),
        Target::Key(id) => format!("key:{id}"),
    });
    // A named target is checked first, as for raw signatures.
    if let (Some(t), Some(subject)) = (&target, &target_subject) {
        let ring = match t {
            Target::Ring(r) => {
                app.signing.ring(r).await?;
                r.clone()
            }
            Target::Key(id) => app.signing.ring_of_key(*id).await?,
        };
        require_reader(app, caller, &ring, "verify", subject).await?;
    }
    let signer = find_signer(app, &check.offered).await?;
    let hash = check.hash();
    let sha256: [u8; 32] = check.sha256.clone().finalize().into();
    let (input, bytes, signature_sha256) = (check.input, check.bytes, check.signature_sha256);
    let signed_at = match &check.offered {
        Offered::OpenPgp(s) => s.created(),
        Offered::Cleartext(m) => m.created(),
        Offered::Cms(s) => s.signing_time(),
    };
    let mut found = None;
    let outcome: Result<(), String> = match &signer {
        None => Err("the signature names no key of this daemon".into()),
        Some(s) => {
            let key = app
                .signing
                .verification_keys(&Target::Key(s.key_id))
                .await?
                .pop()
                .ok_or_else(ApiError::internal)?;
            let subject = format!("key:{}", s.key_id);
            require_reader(app, caller, &key.ring, "verify", &subject).await?;
            let inside = match &target {
                None => true,
                Some(Target::Key(id)) => *id == s.key_id,
                Some(Target::Ring(r)) => *r == key.ring,
            };
            let result = if inside {
                verify_with(app, check, s).await?
            } else {
                Err("the signature was made by a key outside the target".into())
            };
            found = Some(key);
            result
        }
    };
    let valid = outcome.is_ok();
    app.metrics
        .signing_operations
        .with_label_values(&["verify", if valid { "ok" } else { "invalid" }])
        .inc();
    let key_id = found.as_ref().map(|k| k.key.id);
    let certificate = signer.as_ref().and_then(|s| s.certificate.as_ref()).map(
        |(_, serial, status, not_after)| SignerCertificate {
            serial: serial.clone(),
            status: status.clone(),
            not_after: not_after.format(&Rfc3339).ok(),
        },
    );
    let openpgp_fingerprint = match (&found, format) {
        (Some(k), Format::OpenPgp | Format::Cleartext) => {
            Some(app.signing.openpgp_key(k.key.id).await?.fingerprint())
        }
        _ => None,
    };
    let subject = target_subject
        .or_else(|| key_id.map(|id| format!("key:{id}")))
        .unwrap_or_else(|| "signature".into());
    let reason = outcome.err();
    let params = serde_json::json!({
        "target": subject,
        "format": format.name(),
        "hash": hash.to_string(),
        "input": input,
        "bytes": bytes,
        "sha256": hex::encode(sha256),
        "signature_sha256": hex::encode(signature_sha256),
        "valid": valid,
        "key_id": key_id,
        "certificate": certificate.as_ref().map(|c| &c.serial),
    });
    let result = if valid { "ok" } else { "ok:invalid-signature" };
    let record = caller.record("verify", subject, &params, None, result);
    let receipt = app.audit.append(record).await?;
    let body = FormatVerification {
        valid,
        reason,
        format: format.name(),
        hash: hash.to_string(),
        key_id,
        ring: found.as_ref().map(|k| k.ring.clone()),
        key_state: found.as_ref().map(|k| k.key.state.clone()),
        openpgp_fingerprint,
        certificate,
        signed_at: signed_at.and_then(|t| t.format(&Rfc3339).ok()),
        receipt: receipt.clone(),
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

/// The verification of an OpenPGP or CMS signature.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct FormatVerification {
    valid: bool,
    /// Why the signature is not valid (null when it is).
    reason: Option<String>,
    /// `openpgp`, `openpgp-cleartext` or `cms`.
    format: &'static str,
    hash: String,
    /// The daemon's key the signature names, if it is one.
    key_id: Option<Uuid>,
    ring: Option<String>,
    /// `active`, `retired` or `missing`.
    key_state: Option<String>,
    openpgp_fingerprint: Option<String>,
    /// CMS: the document-signer certificate in the signature.
    certificate: Option<SignerCertificate>,
    /// The signature's creation or signing time, RFC 3339.
    signed_at: Option<String>,
    receipt: Receipt,
}

/// A document-signer certificate found in a CMS signature.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct SignerCertificate {
    /// Hex.
    serial: String,
    /// `active`, `held` or `revoked`.
    status: String,
    /// RFC 3339.
    not_after: Option<String>,
}

/// `POST /v1/verify?format=…[&ring=…|key_id=…]` with a multipart form: a `signature` part,
/// then the document as a `file` part (none for a cleartext message), streamed.
pub(super) async fn multipart(
    app: &App,
    caller: &Caller,
    format: Format,
    target: Option<Target>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let shape = upload::shape(headers)?;
    let limit = app.signing.config().max_upload_bytes;
    upload::check_declared(headers, &shape, limit, "a verification upload")?;
    let mut check: Option<Check> = None;
    upload::stream_keeping(
        body,
        &shape,
        "file",
        &["signature"],
        1,
        limit,
        "a verification upload",
        |ev| match ev {
            Event::Field(name, _) if name != "signature" => Ok(()),
            Event::Field(_, value) => {
                if check.is_some() {
                    return Err(ApiError::bad_request("send one `signature` part"));
                }
                check = Some(Check::new(format, value)?);
                Ok(())
            }
            Event::Start(_) => check
                .as_mut()
                .ok_or_else(|| {
                    ApiError::bad_request("send the `signature` part before the `file` part")
                })?
                .start(),
            Event::Data(d) => check.as_mut().ok_or_else(ApiError::internal)?.update(d),
        },
    )
    .await
    .map_err(|e| formats::count(app, e))?;
    let check = check.ok_or_else(|| ApiError::bad_request("the form has no `signature` part"))?;
    conclude(app, caller, format, target, check).await
}
