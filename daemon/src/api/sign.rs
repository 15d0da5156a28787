//! api::sign: HTTP endpoints of online signing — keys, rings, sign, sign-batch, verify.
//!
//! `POST /v1/sign` takes the data itself as the body, streamed and hashed as it arrives (memory
//! does not grow with the upload), with the request's options in the query string. Batches and
//! verification take JSON. Every answer that signs, verifies or changes keys carries the
//! receipt of its audit entry, committed before the answer (invariant 4); the audit entry
//! holds the SHA-256 of the data, never the data.

use std::pin::Pin;

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use time::OffsetDateTime;
use uuid::Uuid;

use super::formats::{self, Format};
use super::{ApiError, Caller, require_role, with_receipt};
use crate::app::App;
use crate::audit::{self, Receipt, Record};
use crate::crypto::{EcdsaEncoding, HashAlg, SchemeError, SignInputBuf, SignatureScheme};
use crate::hsm::KeyAlgorithm;
use crate::signing::{self, KeyView, Resolved, SigningError, Target};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Most items one share of a sign-batch signs with one key taken once.
const MAX_SHARE: usize = 64;

/// The routes of this part of the API (merged into the mTLS API router).
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/v1/sign", post(sign))
        .route("/v1/sign-batch", post(sign_batch))
        .route("/v1/sign-rpm", post(sign_rpm))
        .route("/v1/verify", post(verify))
        .route("/v1/rings", get(list_rings).post(create_ring))
        .route("/v1/rings/{ring}", get(get_ring))
        .route("/v1/rings/{ring}/keys", post(generate_keys))
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/{id}", get(get_key))
        .route("/v1/keys/{id}/retire", post(retire_key))
        .route("/v1/keys/{id}/openpgp", get(get_openpgp_certificate))
}

impl From<SigningError> for ApiError {
    fn from(e: SigningError) -> Self {
        match e {
            SigningError::UnknownRing(_)
            | SigningError::UnknownKey(_)
            | SigningError::UnknownOpenPgpKey(_) => ApiError::not_found(e.to_string()),
            SigningError::KeyNotActive(_)
            | SigningError::NoActiveKey(_)
            | SigningError::Conflict(_) => ApiError::conflict(e.to_string()),
            SigningError::Invalid(m) => ApiError::bad_request(m),
            SigningError::Scheme(s) => ApiError::bad_request(s.to_string()),
            SigningError::Busy { .. } => ApiError::busy(e.to_string()),
            SigningError::Hsm(h) => ApiError::from(h),
            SigningError::Store(s) => ApiError::from(s),
            SigningError::Audit(a) => ApiError::from(a),
        }
    }
}

fn signer_role(ring: &str) -> String {
    format!("signer:{ring}")
}

/// Readers of a ring's keys: its signers and admins. Refusals are logged.
pub(super) async fn require_reader(
    app: &App,
    caller: &Caller,
    ring: &str,
    action: &str,
    subject: &str,
) -> Result<(), ApiError> {
    if caller.has_role("admin") {
        return Ok(());
    }
    require_role(app, caller, &signer_role(ring), action, subject).await
}

fn parse_target(ring: Option<String>, key: Option<String>) -> Result<Target, ApiError> {
    match (ring, key) {
        (Some(r), None) => Ok(Target::Ring(r)),
        (None, Some(k)) => Uuid::parse_str(&k)
            .map(Target::Key)
            .map_err(|_| ApiError::bad_request("key_id is not a UUID")),
        _ => Err(ApiError::bad_request(
            "name exactly one target: `ring` or `key_id`",
        )),
    }
}

/// Resolves a target and checks that the caller may sign with it (`signer:<ring>`). A ring's
/// role is checked before the ring is looked up, so callers without it learn nothing about
/// which rings exist; a key is looked up first (key ids are unguessable).
async fn authorize_signer(
    app: &App,
    caller: &Caller,
    target: &Target,
    action: &str,
) -> Result<Resolved, ApiError> {
    match target {
        Target::Ring(name) => {
            require_role(
                app,
                caller,
                &signer_role(name),
                action,
                &format!("ring:{name}"),
            )
            .await?;
        }
        Target::Key(id) => {
            let ring = app.signing.ring_of_key(*id).await?;
            require_role(
                app,
                caller,
                &signer_role(&ring),
                action,
                &format!("key:{id}"),
            )
            .await?;
        }
    }
    Ok(app.signing.resolve(target).await?)
}

fn parse_encoding(encoding: Option<&str>) -> Result<Option<EcdsaEncoding>, ApiError> {
    encoding
        .map(str::parse)
        .transpose()
        .map_err(|e: SchemeError| ApiError::bad_request(e.to_string()))
}

/// The scheme and ECDSA encoding of a request for a key of `algorithm`.
fn scheme_for(
    algorithm: KeyAlgorithm,
    hash: Option<&str>,
    padding: Option<&str>,
    encoding: Option<&str>,
) -> Result<(SignatureScheme, Option<EcdsaEncoding>), ApiError> {
    let scheme = SignatureScheme::parse_for_key(algorithm, hash, padding)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let requested = parse_encoding(encoding)?;
    scheme
        .encoding(requested)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let shown = matches!(scheme, SignatureScheme::Ecdsa(..))
        .then(|| requested.unwrap_or(EcdsaEncoding::Der));
    Ok((scheme, shown))
}

/// The signature as handed out (ECDSA: DER or r‖s).
fn encode(
    scheme: SignatureScheme,
    signature: &[u8],
    encoding: Option<EcdsaEncoding>,
) -> Result<Vec<u8>, ApiError> {
    scheme
        .encode_signature(signature, encoding.unwrap_or_default())
        .map_err(|e| {
            tracing::error!(error = %e, "cannot re-encode a signature");
            ApiError::internal()
        })
}

// ---------------------------------------------------------------------------------------------
// Streaming bodies

/// A streaming hash of the algorithm a scheme names.
pub(super) enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub(super) fn new(hash: HashAlg) -> Hasher {
        match hash {
            HashAlg::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlg::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            HashAlg::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub(super) fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// The Content-Length the client declared, if any.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Refuses a declared Content-Length over `limit` before anything is read.
fn check_length(headers: &HeaderMap, limit: u64, what: &str) -> Result<(), ApiError> {
    match declared_length(headers) {
        Some(n) if n > limit => Err(ApiError::too_large(format!(
            "{what} is limited to {limit} bytes"
        ))),
        _ => Ok(()),
    }
}

/// The request body, read once.
fn take(body: &mut Option<Body>) -> Result<Body, ApiError> {
    body.take().ok_or_else(ApiError::internal)
}

/// Feeds the body to `sink` frame by frame, refusing it (413) as soon as it crosses `limit`.
/// Returns the number of bytes read. Nothing is buffered here.
async fn stream_body(
    body: &mut Body,
    limit: u64,
    what: &str,
    mut sink: impl FnMut(&[u8]),
) -> Result<u64, ApiError> {
    let mut total: u64 = 0;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        let Some(frame) = frame else {
            return Ok(total);
        };
        let frame = frame.map_err(|e| {
            tracing::debug!(error = %e, "request body read failed");
            ApiError::bad_request("the request body could not be read")
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len() as u64);
        if total > limit {
            return Err(ApiError::too_large(format!(
                "{what} is limited to {limit} bytes"
            )));
        }
        sink(&data);
    }
}

/// Reads a whole body of at most `limit` bytes. What a refusal leaves unread is read after
/// the answer (`api::body`).
pub(super) async fn read_limited(
    headers: &HeaderMap,
    mut body: Body,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, ApiError> {
    check_length(headers, limit, what)?;
    let mut buf = Vec::new();
    stream_body(&mut body, limit, what, |d| buf.extend_from_slice(d)).await?;
    Ok(buf)
}

fn count_too_large(app: &App, e: ApiError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        app.metrics.signing_uploads_too_large.inc();
    }
    e
}

pub(super) fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    super::input::parse_json(bytes, super::input::Nul::Refused)
}

// ---------------------------------------------------------------------------------------------
// POST /v1/sign

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SignQuery {
    /// The ring to sign with (its least recently used key); or `key_id`.
    ring: Option<String>,
    /// The key to sign with (UUID); or `ring`.
    key_id: Option<String>,
    /// `sha256`, `sha384` or `sha512` (default: the key's own; none for Ed25519).
    hash: Option<String>,
    /// RSA: `pkcs1` (default) or `pss`.
    padding: Option<String>,
    /// ECDSA: `der` (default) or `raw` (r‖s).
    encoding: Option<String>,
    /// The body is a digest of the data under `hash`, not the data.
    prehashed: Option<bool>,
    /// `raw` (default), `openpgp`, `openpgp-cleartext`, `cms`, or several, comma-separated.
    format: Option<String>,
    /// OpenPGP detached signatures: ASCII armor (default `true`) or binary packets.
    armor: Option<bool>,
    /// OpenPGP detached signatures: text mode (type 0x01) instead of binary (type 0x00).
    text: Option<bool>,
    /// CMS signatures: PEM (`true`) instead of DER.
    pem: Option<bool>,
    /// CMS signatures: carry a signature time-stamp by the daemon's TSA (CAdES-T).
    timestamp: Option<bool>,
}

/// Signs an upload, streamed and hashed as it arrives: a raw signature (JSON), or OpenPGP
/// (detached or cleartext), CMS, or several formats at once (`format=raw,openpgp,cms`, JSON).
/// The body is the data itself (or, with `prehashed=true`, its digest), or a
/// `multipart/form-data` upload with a `file` part. Needs `signer:<ring>` (or `admin`).
#[utoipa::path(
    post,
    path = "/v1/sign",
    tag = "api",
    params(SignQuery),
    request_body(
        description = "The data to sign (or its digest with `prehashed=true`), or a form with a `file` part",
        content(
            (super::openapi::Binary = "application/octet-stream"),
            (super::openapi::FileUpload = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 200, description = "The signature; the content type follows `format`", content(
            (SignAnswer = "application/json"),
            (String = "application/pgp-signature"),
            (super::openapi::Binary = "application/octet-stream"),
            (String = "text/plain; charset=utf-8"),
            (String = "application/x-pem-file"),
            (super::openapi::Binary = "application/pkcs7-signature"),
        ), headers(
            ("signetd-key-id" = Option<String>, description = "The key that signed (formatted answers)"),
        )),
        (status = 400, description = "Bad options, an unknown scheme for the key, a malformed form or digest"),
        (status = 403, description = "The caller may not sign with this ring or key"),
        (status = 404, description = "No such ring or key"),
        (status = 409, description = "The key is retired, or no key of the ring may sign (budget spent, outside its window)"),
        (status = 413, description = "The upload is larger than allowed"),
        (status = 415, description = "A content type the endpoint does not take"),
        (status = 503, description = "No key became free in time, or the token or database is unavailable; retry after `Retry-After`"),
    ),
)]
async fn sign(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<SignQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // A refusal's unread body is read after the answer (`api::body`).
    let mut body = Some(body);
    let result = sign_inner(&app, &caller, q, &headers, &mut body).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE => "busy",
        Err(e) if e.status().is_client_error() => "invalid",
        Err(_) => "error",
    };
    app.metrics
        .signing_operations
        .with_label_values(&["sign", outcome])
        .inc();
    result
}

async fn sign_inner(
    app: &App,
    caller: &Caller,
    q: Result<Query<SignQuery>, QueryRejection>,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let target = parse_target(q.ring.clone(), q.key_id.clone())?;
    let resolved = authorize_signer(app, caller, &target, "sign").await?;
    let formats = match q.format.as_deref() {
        None => vec![Format::Raw],
        Some(list) => formats::parse_formats(list)?,
    };
    if formats != [Format::Raw] || formats::is_multipart(headers)? {
        return sign_formats(app, caller, &resolved, &q, formats, headers, take(body)?).await;
    }
    if q.armor.is_some() || q.text.is_some() {
        return Err(ApiError::bad_request(
            "`armor` and `text` apply to OpenPGP formats only",
        ));
    }
    if q.pem.is_some() || q.timestamp.is_some() {
        return Err(ApiError::bad_request(
            "`pem` and `timestamp` apply to format `cms` only",
        ));
    }
    let (scheme, encoding) = scheme_for(
        resolved.algorithm(),
        q.hash.as_deref(),
        q.padding.as_deref(),
        q.encoding.as_deref(),
    )?;
    let cfg = app.signing.config();
    let prehashed = q.prehashed.unwrap_or(false);

    // What the token signs, and the SHA-256 of the body for the audit entry.
    let (input, bytes, body_sha256) = match (prehashed, scheme.hash()) {
        (true, None) => return Err(SchemeError::Ed25519NeedsMessage.into_api()),
        (true, Some(hash)) => {
            let limit = hash.output_len() as u64;
            let digest = read_limited(headers, take(body)?, limit, "a digest")
                .await
                .map_err(|_| {
                    ApiError::bad_request(format!("a {hash} digest is {} bytes", hash.output_len()))
                })?;
            let n = digest.len() as u64;
            let sha = audit::digest(&digest);
            (SignInputBuf::Digest(digest), n, sha)
        }
        (false, None) => {
            let limit = cfg.max_ed25519_bytes.min(cfg.max_upload_bytes);
            let body = take(body)?;
            let message = read_limited(headers, body, limit, "an Ed25519 upload (signed whole)")
                .await
                .map_err(|e| count_too_large(app, e))?;
            let n = message.len() as u64;
            let sha = audit::digest(&message);
            (SignInputBuf::Message(message), n, sha)
        }
        (false, Some(hash)) => {
            let limit = cfg.max_upload_bytes;
            check_length(headers, limit, "an upload").map_err(|e| count_too_large(app, e))?;
            let mut hasher = Hasher::new(hash);
            let mut sha256 = (hash != HashAlg::Sha256).then(sha2::Sha256::new);
            let mut upload = take(body)?;
            let streamed = stream_body(&mut upload, limit, "an upload", |d| {
                hasher.update(d);
                if let Some(s) = &mut sha256 {
                    s.update(d);
                }
            })
            .await;
            let n = streamed.map_err(|e| count_too_large(app, e))?;
            let digest = hasher.finish();
            let sha: [u8; 32] = match sha256 {
                Some(s) => s.finalize().into(),
                None => digest
                    .as_slice()
                    .try_into()
                    .map_err(|_| ApiError::internal())?,
            };
            (SignInputBuf::Digest(digest), n, sha)
        }
    };
    let kind = if prehashed { "digest" } else { "message" };
    let signed = app.signing.sign(&resolved, scheme, input).await?;
    let signature = encode(scheme, &signed.signature, encoding)?;
    let params = serde_json::json!({
        "target": resolved.subject(),
        "key_id": signed.key_id,
        "scheme": scheme.name(),
        "encoding": encoding.map(EcdsaEncoding::as_str),
        "input": kind,
        "bytes": bytes,
        "sha256": hex::encode(body_sha256),
    });
    let record = caller.record("sign", resolved.subject(), &params, Some(&signature), "ok");
    let receipt = app.audit.append(record).await?;
    let body = RawSignature {
        key_id: signed.key_id,
        ring: resolved.ring().to_owned(),
        algorithm: resolved.algorithm().as_str(),
        scheme: scheme.name(),
        encoding: encoding.map(EcdsaEncoding::as_str),
        input: kind,
        bytes,
        sha256: hex::encode(body_sha256),
        signature: B64.encode(&signature),
        receipt: receipt.clone(),
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

/// The JSON answers of `/v1/sign`: one raw signature, or several formats.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // A schema only: the handler answers with either type directly.
enum SignAnswer {
    Raw(Box<RawSignature>),
    Formats(Box<formats::FormatsAnswer>),
}

/// A raw signature.
#[derive(Serialize, utoipa::ToSchema)]
struct RawSignature {
    /// The key that signed.
    key_id: Uuid,
    /// Its ring.
    ring: String,
    /// `ec-p256`, `ec-p384`, `ed25519`, `rsa-2048`, `rsa-3072` or `rsa-4096`.
    algorithm: &'static str,
    /// The signature scheme, e.g. `ecdsa-p256-sha256`, `rsa-pkcs1-sha256`, `ed25519`.
    scheme: &'static str,
    /// ECDSA: `der` or `raw`; null for other algorithms.
    encoding: Option<&'static str>,
    /// `message` (the data) or `digest` (prehashed).
    input: &'static str,
    /// Bytes received.
    bytes: u64,
    /// SHA-256 of the bytes received, hex (what the audit entry records).
    sha256: String,
    /// The signature, base64.
    signature: String,
    receipt: Receipt,
}

/// `/v1/sign` with formats other than raw alone, or a multipart upload: one key, every
/// artefact, one audit entry.
async fn sign_formats(
    app: &App,
    caller: &Caller,
    resolved: &Resolved,
    q: &SignQuery,
    formats: Vec<Format>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Any format but raw names its own hash; Ed25519's raw signature then names none.
    let formatted = formats.iter().any(|f| *f != Format::Raw);
    let openpgp = formats.contains(&Format::OpenPgp) || formats.contains(&Format::Cleartext);
    let cms = formats.contains(&Format::Cms);
    let prehashed = q.prehashed.unwrap_or(false);
    if prehashed && formats != [Format::Cms] {
        return Err(ApiError::bad_request(if openpgp {
            "OpenPGP signatures need the data itself, not a digest"
        } else if cms {
            "a digest (`prehashed`) can be signed as format `cms` alone"
        } else {
            "a digest is sent as the request body, not as a form"
        }));
    }
    if !formats.contains(&Format::OpenPgp) && (q.armor.is_some() || q.text.is_some()) {
        return Err(ApiError::bad_request(
            "`armor` and `text` apply to detached OpenPGP signatures only",
        ));
    }
    if !cms && (q.pem.is_some() || q.timestamp.is_some()) {
        return Err(ApiError::bad_request(
            "`pem` and `timestamp` apply to format `cms` only",
        ));
    }
    let timestamp = q.timestamp.unwrap_or(false);
    if timestamp && !app.ca.tsa_enabled() {
        return Err(ApiError::bad_request(
            "the time-stamping authority is switched off (tsa.enabled): no `timestamp`",
        ));
    }
    let algorithm = resolved.algorithm();
    let raw = if formats.contains(&Format::Raw) {
        let hash = if formatted && algorithm == KeyAlgorithm::Ed25519 {
            // Pure Ed25519 names no hash; the other formats' hash is not the raw one's.
            None
        } else {
            q.hash.as_deref()
        };
        Some(scheme_for(
            algorithm,
            hash,
            q.padding.as_deref(),
            q.encoding.as_deref(),
        )?)
    } else {
        if q.padding.is_some() || q.encoding.is_some() {
            return Err(ApiError::bad_request(
                "`padding` and `encoding` apply to raw signatures only",
            ));
        }
        None
    };
    // Each format's hash is checked only where that format is asked for (P-384 may sign a
    // raw SHA-256 digest, not an OpenPGP one).
    let openpgp_hash = if openpgp {
        formats::Spec::openpgp_hash(algorithm, q.hash.as_deref())?
    } else {
        crate::formats::openpgp::default_hash(algorithm)
    };
    let cms_hash = if cms {
        formats::Spec::cms_hash(algorithm, q.hash.as_deref())?
    } else {
        HashAlg::Sha256
    };
    let spec = formats::Spec {
        openpgp_hash,
        formats,
        raw,
        openpgp_text: q.text.unwrap_or(false),
        armor: q.armor.unwrap_or(true),
        cms_hash,
        pem: q.pem.unwrap_or(false),
        prehashed,
        timestamp,
    };
    let hashed = if prehashed {
        formats::digest_upload(app, &spec, headers, body).await?
    } else {
        formats::hash_upload(app, &spec, headers, body).await?
    };
    let made = formats::sign_all(app, caller, resolved, &spec, vec![hashed]).await?;
    let receipt = formats::audit_made(
        app,
        caller,
        "sign",
        resolved,
        &spec,
        &made,
        serde_json::json!({}),
    )
    .await?;
    if spec.formats == [Format::Raw] {
        // A multipart upload of a raw signature answers as `/v1/sign` always did.
        let (scheme, encoding) = spec.raw.ok_or_else(ApiError::internal)?;
        let a = made.artefacts.first().ok_or_else(ApiError::internal)?;
        let body = RawSignature {
            key_id: made.key_id,
            ring: resolved.ring().to_owned(),
            algorithm: algorithm.as_str(),
            scheme: scheme.name(),
            encoding: encoding.map(EcdsaEncoding::as_str),
            input: "message",
            bytes: a.bytes,
            sha256: hex::encode(a.sha256),
            signature: a
                .raw
                .as_ref()
                .map(|r| B64.encode(r))
                .ok_or_else(ApiError::internal)?,
            receipt: receipt.clone(),
        };
        return Ok(with_receipt(Json(body).into_response(), &receipt));
    }
    formats::answer(resolved, &spec, &made, &receipt)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RpmQuery {
    /// The ring to sign with; or `key_id`.
    ring: Option<String>,
    /// The key to sign with (UUID); or `ring`.
    key_id: Option<String>,
}

/// `POST /v1/sign-rpm?ring=…|key_id=…`: the package (body or multipart `file`) back with a
/// new header signature.
#[utoipa::path(
    post,
    path = "/v1/sign-rpm",
    tag = "api",
    params(RpmQuery),
    request_body(
        description = "An RPM package (v4 header), or a form with a `file` part",
        content(
            (super::openapi::Binary = "application/x-rpm"),
            (super::openapi::Binary = "application/octet-stream"),
            (super::openapi::FileUpload = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 200, description = "The package with its new header signature", content_type = "application/x-rpm", body = super::openapi::Binary),
        (status = 400, description = "Not an RPM package this daemon can sign, or bad options"),
        (status = 403, description = "The caller may not sign with this ring or key"),
        (status = 404, description = "No such ring or key"),
        (status = 409, description = "The key is retired, or no key of the ring may sign"),
        (status = 413, description = "The package is larger than allowed"),
        (status = 415, description = "A content type the endpoint does not take"),
    ),
)]
async fn sign_rpm(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<RpmQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let target = parse_target(q.ring, q.key_id)?;
    let resolved = authorize_signer(&app, &caller, &target, "sign-rpm").await?;
    let signed = super::rpm::sign_package(&app, &resolved, &headers, body).await?;
    let receipt = super::rpm::audit_package(
        &app,
        &caller,
        "sign-rpm",
        &resolved,
        &signed,
        serde_json::json!({}),
    )
    .await?;
    super::rpm::answer(signed, &receipt)
}

trait IntoApi {
    fn into_api(self) -> ApiError;
}

impl IntoApi for SchemeError {
    fn into_api(self) -> ApiError {
        ApiError::bad_request(self.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// POST /v1/sign-batch

/// A batch of items signed under one scheme.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    /// The ring to sign with; or `key_id`.
    ring: Option<String>,
    /// The key to sign with (UUID); or `ring`.
    key_id: Option<String>,
    /// `sha256`, `sha384` or `sha512`.
    hash: Option<String>,
    /// RSA: `pkcs1` (default) or `pss`.
    padding: Option<String>,
    /// ECDSA: `der` (default) or `raw`.
    encoding: Option<String>,
    /// All or nothing: one bad item fails the batch and no signature is returned.
    #[serde(default)]
    atomic: bool,
    items: Vec<BatchItem>,
}

/// One item: exactly one of `data` and `digest`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    /// The data, base64.
    data: Option<String>,
    /// A digest of the data under the scheme's hash, base64.
    digest: Option<String>,
}

/// Why one item was not signed.
#[derive(Serialize, Clone, utoipa::ToSchema)]
struct ItemError {
    status: u16,
    #[serde(rename = "type")]
    type_: String,
    detail: String,
}

impl ItemError {
    fn from_api(e: &ApiError) -> ItemError {
        ItemError {
            status: e.status().as_u16(),
            type_: format!("urn:signetd:problem:{}", e.kind()),
            detail: e.detail().to_owned(),
        }
    }
}

/// One item's outcome, in item order.
#[derive(Serialize, utoipa::ToSchema)]
struct ItemResult {
    index: usize,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    /// Index of this signature among the batch's leaves (see `batch_root`).
    #[serde(skip_serializing_if = "Option::is_none")]
    leaf_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemError>,
}

/// A validated item: the input and what the audit entry records about it.
struct Prepared {
    input: SignInputBuf,
    kind: &'static str,
    bytes: usize,
    sha256: String,
}

fn prepare_item(
    item: BatchItem,
    scheme: SignatureScheme,
    algorithm: KeyAlgorithm,
    ed25519_limit: u64,
) -> Result<Prepared, ApiError> {
    let decode = |s: &str, what: &str| {
        B64.decode(s)
            .map_err(|_| ApiError::bad_request(format!("`{what}` is not base64")))
    };
    let (input, kind) = match (item.data, item.digest) {
        (Some(d), None) => (SignInputBuf::Message(decode(&d, "data")?), "message"),
        (None, Some(d)) => (SignInputBuf::Digest(decode(&d, "digest")?), "digest"),
        _ => {
            return Err(ApiError::bad_request(
                "an item has exactly one of `data` and `digest`",
            ));
        }
    };
    scheme
        .check(algorithm, input.as_input())
        .map_err(SchemeError::into_api)?;
    let bytes = match &input {
        SignInputBuf::Message(m) | SignInputBuf::Digest(m) => m,
    };
    if scheme == SignatureScheme::Ed25519 && bytes.len() as u64 > ed25519_limit {
        return Err(ApiError::too_large(format!(
            "an Ed25519 item is limited to {ed25519_limit} bytes"
        )));
    }
    Ok(Prepared {
        kind,
        bytes: bytes.len(),
        sha256: hex::encode(audit::digest(bytes)),
        input,
    })
}

fn problem_with_items(e: &ApiError, items: Vec<serde_json::Value>) -> Response {
    let body = serde_json::json!({
        "type": format!("urn:signetd:problem:{}", e.kind()),
        "title": "Batch refused",
        "status": e.status().as_u16(),
        "detail": e.detail(),
        "items": items,
    });
    let mut r = (e.status(), Json(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if e.status() == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// Signs every item on its own (each through the ring's scheduler, `signing.batch_parallel`
/// at a time) and answers per item. One audit entry covers the batch: its output digest is the
/// RFC 6962 Merkle root over `SHA-256(0x00 ‖ signature)` of the signed items' signatures as
/// returned, in item order (`leaf_index`), so every returned signature is covered by the
/// committed entry and a client can recompute the root from the answer.
#[utoipa::path(
    post,
    path = "/v1/sign-batch",
    tag = "api",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "Each item's signature or error; one audit entry covers the batch", body = BatchAnswer),
        (status = 400, description = "A malformed batch; with `atomic`, any invalid item (the problem's `items` lists them)"),
        (status = 403, description = "The caller may not sign with this ring or key"),
        (status = 404, description = "No such ring or key"),
        (status = 409, description = "The key is retired, or no key of the ring may sign"),
        (status = 413, description = "The batch has too many items or bytes"),
        (status = 415, description = "Not JSON"),
    ),
)]
async fn sign_batch(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cfg = app.signing.config().clone();
    let raw = read_limited(&headers, body, cfg.max_json_bytes, "a batch")
        .await
        .map_err(|e| count_too_large(&app, e))?;
    let req: BatchRequest = json_body(&raw)?;
    drop(raw);
    let target = parse_target(req.ring, req.key_id)?;
    let resolved = authorize_signer(&app, &caller, &target, "sign-batch").await?;
    let (scheme, encoding) = scheme_for(
        resolved.algorithm(),
        req.hash.as_deref(),
        req.padding.as_deref(),
        req.encoding.as_deref(),
    )?;
    let n = req.items.len();
    if n == 0 {
        return Err(ApiError::bad_request("a batch has at least one item"));
    }
    if n > cfg.batch_max_items {
        return Err(ApiError::too_large(format!(
            "a batch has at most {} items",
            cfg.batch_max_items
        )));
    }
    let ed_limit = cfg.max_ed25519_bytes.min(cfg.max_upload_bytes);
    let prepared: Vec<Result<Prepared, ApiError>> = req
        .items
        .into_iter()
        .map(|item| prepare_item(item, scheme, resolved.algorithm(), ed_limit))
        .collect();
    let invalid: Vec<serde_json::Value> = prepared
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.as_ref().err().map(|e| (i, e)))
        .map(|(i, e)| serde_json::json!({ "index": i, "error": ItemError::from_api(e) }))
        .collect();
    if req.atomic && !invalid.is_empty() {
        let e = ApiError::bad_request(format!(
            "{} of {n} items are invalid; nothing was signed",
            invalid.len()
        ));
        return Ok(problem_with_items(&e, invalid));
    }

    // Sign in at most `batch_parallel` shares at once, each with one key taken once (one key
    // hand-over and one token-thread wake-up per share, not per item).
    let mut outcomes: Vec<Option<Result<signing::Signed, ApiError>>> =
        (0..n).map(|_| None).collect();
    let mut meta: Vec<Option<(&'static str, usize, String)>> = Vec::with_capacity(n);
    let mut valid = Vec::new();
    for (i, p) in prepared.into_iter().enumerate() {
        match p {
            Ok(p) => {
                meta.push(Some((p.kind, p.bytes, p.sha256)));
                valid.push((i, p.input));
            }
            Err(e) => {
                meta.push(None);
                outcomes[i] = Some(Err(e));
            }
        }
    }
    let share = valid
        .len()
        .div_ceil(cfg.batch_parallel.max(1))
        .clamp(1, MAX_SHARE);
    let mut queue = Vec::new();
    let mut valid = valid.into_iter().peekable();
    while valid.peek().is_some() {
        let (indexes, inputs): (Vec<usize>, Vec<SignInputBuf>) = valid.by_ref().take(share).unzip();
        queue.push((indexes, inputs));
    }
    queue.reverse();
    let mut running = tokio::task::JoinSet::new();
    let mut failed_atomic: Option<ApiError> = None;
    loop {
        while running.len() < cfg.batch_parallel && failed_atomic.is_none() {
            let Some((indexes, inputs)) = queue.pop() else {
                break;
            };
            let (s, r) = (app.signing.clone(), resolved.clone());
            running.spawn(async move { (indexes, s.sign_each(&r, scheme, inputs).await) });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (indexes, result) = joined.map_err(|e| {
            tracing::error!(error = %e, "batch share task failed");
            ApiError::internal()
        })?;
        match result {
            Ok((key_id, signatures)) => {
                app.metrics
                    .signing_operations
                    .with_label_values(&["sign-batch-item", "ok"])
                    .inc_by(signatures.len() as u64);
                for (i, signature) in indexes.into_iter().zip(signatures) {
                    outcomes[i] = Some(Ok(signing::Signed { key_id, signature }));
                }
            }
            Err(e) => {
                let e = ApiError::from(e);
                app.metrics
                    .signing_operations
                    .with_label_values(&["sign-batch-item", item_outcome(&e)])
                    .inc_by(indexes.len() as u64);
                if req.atomic && failed_atomic.is_none() {
                    failed_atomic = Some(ApiError::new(
                        e.status(),
                        e.kind(),
                        "Batch failed",
                        format!(
                            "item {} failed: {}; nothing was returned",
                            indexes.first().copied().unwrap_or_default(),
                            e.detail()
                        ),
                    ));
                }
                for i in indexes {
                    outcomes[i] = Some(Err(e.clone()));
                }
            }
        }
    }
    if let Some(e) = failed_atomic {
        // Signatures made before the failure are dropped here, never returned.
        return Err(e);
    }

    // Encode, build the batch tree, log once, answer.
    let mut frontier = signet_merkle::Frontier::empty();
    let mut results = Vec::with_capacity(n);
    let mut audit_items = Vec::with_capacity(n);
    let (mut signed_count, mut failed_count) = (0u64, 0u64);
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let meta_i = meta.get(i).cloned().flatten();
        match outcome {
            Some(Ok(signed)) => {
                let signature = encode(scheme, &signed.signature, encoding)?;
                let leaf_index = frontier.size();
                frontier.append(signet_merkle::hash_leaf(&signature));
                signed_count += 1;
                audit_items.push(serde_json::json!({
                    "index": i,
                    "key_id": signed.key_id,
                    "input": meta_i.as_ref().map(|m| m.0),
                    "bytes": meta_i.as_ref().map(|m| m.1),
                    "sha256": meta_i.as_ref().map(|m| m.2.clone()),
                    "leaf_index": leaf_index,
                }));
                results.push(ItemResult {
                    index: i,
                    status: 200,
                    key_id: Some(signed.key_id),
                    signature: Some(B64.encode(&signature)),
                    leaf_index: Some(leaf_index),
                    error: None,
                });
            }
            Some(Err(e)) => {
                failed_count += 1;
                audit_items.push(serde_json::json!({ "index": i, "status": e.status().as_u16() }));
                results.push(ItemResult {
                    index: i,
                    status: e.status().as_u16(),
                    key_id: None,
                    signature: None,
                    leaf_index: None,
                    error: Some(ItemError::from_api(&e)),
                });
            }
            None => {
                failed_count += 1;
                results.push(ItemResult {
                    index: i,
                    status: 500,
                    key_id: None,
                    signature: None,
                    leaf_index: None,
                    error: Some(ItemError::from_api(&ApiError::internal())),
                });
            }
        }
    }
    let root = frontier.root();
    let params = serde_json::json!({
        "target": resolved.subject(),
        "scheme": scheme.name(),
        "encoding": encoding.map(EcdsaEncoding::as_str),
        "atomic": req.atomic,
        "items": audit_items,
    });
    let record = Record {
        output_digest: (signed_count > 0).then_some(root),
        ..caller.record("sign-batch", resolved.subject(), &params, None, "ok")
    };
    let receipt = app.audit.append(record).await?;
    let body = BatchAnswer {
        ring: resolved.ring().to_owned(),
        algorithm: resolved.algorithm().as_str(),
        scheme: scheme.name(),
        encoding: encoding.map(EcdsaEncoding::as_str),
        signed: signed_count,
        failed: failed_count,
        batch_root: hex::encode(root),
        results,
        receipt: receipt.clone(),
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

/// The answer to a batch.
#[derive(Serialize, utoipa::ToSchema)]
struct BatchAnswer {
    ring: String,
    algorithm: &'static str,
    scheme: &'static str,
    /// ECDSA: `der` or `raw`.
    encoding: Option<&'static str>,
    /// Items signed.
    signed: u64,
    /// Items not signed.
    failed: u64,
    /// RFC 6962 root over `SHA-256(0x00 ‖ signature)` of the signed items' signatures in item
    /// order (`leaf_index`), hex: the audit entry's output digest.
    batch_root: String,
    results: Vec<ItemResult>,
    receipt: Receipt,
}

fn item_outcome(e: &ApiError) -> &'static str {
    if e.status() == StatusCode::SERVICE_UNAVAILABLE {
        "busy"
    } else if e.status().is_client_error() {
        "invalid"
    } else {
        "error"
    }
}

// ---------------------------------------------------------------------------------------------
// POST /v1/verify

/// A signature to check, with the data (`data`, base64) or its `digest` (base64).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    /// Raw signatures: the ring whose keys (retired ones too) may have made it; or `key_id`.
    ring: Option<String>,
    /// The key (UUID).
    key_id: Option<String>,
    hash: Option<String>,
    padding: Option<String>,
    encoding: Option<String>,
    /// The signed data, base64.
    data: Option<String>,
    /// A digest of the signed data, base64.
    digest: Option<String>,
    /// Base64 (raw, binary OpenPGP, DER CMS) or the armored / PEM / cleartext text.
    signature: String,
    /// `raw` (default), `openpgp`, `openpgp-cleartext` or `cms` (`api::verify`).
    format: Option<String>,
}

/// The query of a multipart verification (a JSON one names all in its body).
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct VerifyQuery {
    /// Multipart only: `openpgp`, `openpgp-cleartext` or `cms`.
    format: Option<String>,
    /// Multipart only: the ring the signer must belong to.
    ring: Option<String>,
    /// Multipart only: the key that must have signed.
    key_id: Option<String>,
}

/// The answers of `/v1/verify`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // A schema only: the handlers answer with either type directly.
enum VerifyAnswer {
    Raw(RawVerification),
    Format(super::verify::FormatVerification),
}

/// The verification of a raw signature.
#[derive(Serialize, utoipa::ToSchema)]
struct RawVerification {
    valid: bool,
    /// The key that made it, when it is valid.
    key_id: Option<Uuid>,
    ring: String,
    scheme: &'static str,
    receipt: Receipt,
}

/// A target that may be left out (formatted signatures name their key).
fn optional_target(ring: Option<String>, key: Option<String>) -> Result<Option<Target>, ApiError> {
    if ring.is_none() && key.is_none() {
        return Ok(None);
    }
    parse_target(ring, key).map(Some)
}

/// Checks a signature in software against one key, or against every key of a ring (retired
/// keys too); OpenPGP and CMS signatures against the key they name (`api::verify`). Answers
/// 200 with `valid` either way; a malformed request is a 400.
#[utoipa::path(
    post,
    path = "/v1/verify",
    tag = "api",
    params(VerifyQuery),
    request_body(
        description = "JSON, or a form with a `signature` part then a `file` part (streamed)",
        content(
            (VerifyRequest = "application/json"),
            (super::openapi::VerifyUpload = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 200, description = "Whether the signature is valid, and by which key; audited", body = VerifyAnswer),
        (status = 400, description = "A malformed request or signature"),
        (status = 403, description = "The caller may not read this ring or key"),
        (status = 404, description = "No such ring or key"),
        (status = 413, description = "The request is larger than allowed"),
        (status = 415, description = "A content type the endpoint does not take"),
    ),
)]
async fn verify(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<VerifyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    if formats::is_multipart(&headers)? {
        let format = match q.format.as_deref().map(super::verify::parse_format) {
            Some(Ok(Format::Raw)) => {
                return Err(ApiError::bad_request(
                    "raw signatures are verified with a JSON body",
                ));
            }
            Some(f) => f?,
            None => {
                return Err(ApiError::bad_request(
                    "a multipart verification names its `format` (openpgp, openpgp-cleartext \
                     or cms) in the query",
                ));
            }
        };
        let target = optional_target(q.ring, q.key_id)?;
        return super::verify::multipart(&app, &caller, format, target, &headers, body).await;
    }
    if q.format.is_some() || q.ring.is_some() || q.key_id.is_some() {
        return Err(ApiError::bad_request(
            "a JSON verification names `format`, `ring` and `key_id` in its body",
        ));
    }
    let cfg = app.signing.config().clone();
    let raw = read_limited(&headers, body, cfg.max_json_bytes, "a verification request")
        .await
        .map_err(|e| count_too_large(&app, e))?;
    let req: VerifyRequest = json_body(&raw)?;
    drop(raw);
    let format = req
        .format
        .as_deref()
        .map(super::verify::parse_format)
        .transpose()?;
    if let Some(format) = format.filter(|f| *f != Format::Raw) {
        if req.hash.is_some() || req.padding.is_some() || req.encoding.is_some() {
            return Err(ApiError::bad_request(
                "`hash`, `padding` and `encoding` apply to raw signatures; an OpenPGP or CMS \
                 signature names its own",
            ));
        }
        let target = optional_target(req.ring, req.key_id)?;
        let signature = super::verify::signature_bytes(format, &req.signature)?;
        let mut check = super::verify::Check::new(format, &signature)?;
        let decode = |s: &str, what: &str| {
            B64.decode(s)
                .map_err(|_| ApiError::bad_request(format!("`{what}` is not base64")))
        };
        match (req.data, req.digest) {
            (Some(d), None) => {
                check.start()?;
                check.update(&decode(&d, "data")?)?;
            }
            (None, Some(d)) => check.digest(decode(&d, "digest")?)?,
            (None, None) => {}
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request("send `data` or `digest`, not both"));
            }
        }
        return super::verify::conclude(&app, &caller, format, target, check).await;
    }
    let target = parse_target(req.ring, req.key_id)?;
    let ring = match &target {
        Target::Ring(r) => r.clone(),
        Target::Key(id) => app.signing.ring_of_key(*id).await?,
    };
    let subject = match &target {
        Target::Ring(r) => format!("ring:{r}"),
        Target::Key(id) => format!("key:{id}"),
    };
    require_reader(&app, &caller, &ring, "verify", &subject).await?;
    let keys = app.signing.verification_keys(&target).await?;
    let algorithm = match keys.first() {
        Some(k) => k.key.algorithm,
        None => app.signing.ring(&ring).await?.algorithm,
    };
    let (scheme, encoding) = scheme_for(
        algorithm,
        req.hash.as_deref(),
        req.padding.as_deref(),
        req.encoding.as_deref(),
    )?;
    let prepared = prepare_item(
        BatchItem {
            data: req.data,
            digest: req.digest,
        },
        scheme,
        algorithm,
        u64::MAX,
    )?;
    let signature = B64
        .decode(&req.signature)
        .map_err(|_| ApiError::bad_request("`signature` is not base64"))?;
    let standard = scheme.decode_signature(&signature, encoding.unwrap_or_default());
    let input = prepared.input;
    let (spkis, ids): (Vec<Vec<u8>>, Vec<Uuid>) = keys
        .iter()
        .map(|k| (k.key.public_key.clone(), k.key.id))
        .unzip();
    let verified_by = match standard {
        Ok(sig) => tokio::task::spawn_blocking(move || {
            spkis
                .iter()
                .position(|spki| scheme.verify(spki, input.as_input(), &sig).is_ok())
        })
        .await
        .map_err(|_| ApiError::internal())?
        .and_then(|i| ids.get(i).copied()),
        Err(_) => None,
    };
    let valid = verified_by.is_some();
    app.metrics
        .signing_operations
        .with_label_values(&["verify", if valid { "ok" } else { "invalid" }])
        .inc();
    let params = serde_json::json!({
        "target": subject,
        "scheme": scheme.name(),
        "input": prepared.kind,
        "bytes": prepared.bytes,
        "sha256": prepared.sha256,
        "signature_sha256": hex::encode(audit::digest(&signature)),
        "valid": valid,
        "key_id": verified_by,
    });
    let result = if valid { "ok" } else { "ok:invalid-signature" };
    let record = caller.record("verify", subject, &params, None, result);
    let receipt = app.audit.append(record).await?;
    let body = RawVerification {
        valid,
        key_id: verified_by,
        ring,
        scheme: scheme.name(),
        receipt: receipt.clone(),
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

// ---------------------------------------------------------------------------------------------
// Rings and keys

/// A ring key.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Key)]
struct KeyBody {
    id: Uuid,
    ring: String,
    algorithm: &'static str,
    token: String,
    label: String,
    fingerprint: String,
    public_key_pem: String,
    usage_count: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    last_used_at: Option<OffsetDateTime>,
    /// `active`, `retired` or `missing`.
    state: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    retired_at: Option<OffsetDateTime>,
    /// The OpenPGP v4 fingerprint (40 hex digits) of the key's certificate.
    openpgp_fingerprint: String,
    /// The OpenPGP key id (16 hex digits).
    openpgp_key_id: String,
    /// The audit entry of the read or change that answered with this key.
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<Receipt>,
}

fn key_body(view: &KeyView) -> Result<KeyBody, ApiError> {
    let k = &view.key;
    let packet = signing::openpgp::key_packet(k)?;
    let pem = der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &k.key.public_key)
        .map_err(|_| ApiError::internal())?;
    Ok(KeyBody {
        id: k.key.id,
        ring: k.ring.clone(),
        algorithm: k.key.algorithm.as_str(),
        token: k.key.token.clone(),
        label: k.key.label.clone(),
        fingerprint: k.key.fingerprint.clone(),
        public_key_pem: pem,
        usage_count: k.usage_count,
        last_used_at: k.last_used_at,
        state: view.state,
        created_at: k.created_at,
        retired_at: k.retired_at,
        openpgp_fingerprint: packet.fingerprint(),
        openpgp_key_id: packet.key_id(),
        receipt: None,
    })
}

/// A ring: keys of one algorithm that sign interchangeably.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Ring)]
struct RingBody {
    name: String,
    algorithm: &'static str,
    token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    /// The User ID of its keys' OpenPGP certificates.
    openpgp_user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<KeyBody>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<Receipt>,
}

fn ring_body(r: &crate::store::rings::Ring, keys: Option<Vec<KeyBody>>) -> RingBody {
    RingBody {
        name: r.name.clone(),
        algorithm: r.algorithm.as_str(),
        token: r.token.clone(),
        created_at: r.created_at,
        openpgp_user_id: r
            .openpgp_user_id
            .clone()
            .unwrap_or_else(|| signing::openpgp::default_user_id(&r.name)),
        keys,
        receipt: None,
    }
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
}

pub(super) fn key_id(p: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    Uuid::parse_str(&path(p)?).map_err(|_| ApiError::not_found("no such key"))
}

/// Logs a read and returns its receipt.
pub(super) async fn audit_read(
    app: &App,
    caller: &Caller,
    action: &str,
    subject: String,
    params: serde_json::Value,
) -> Result<Receipt, ApiError> {
    Ok(app
        .audit
        .append(caller.record(action, subject, &params, None, "ok"))
        .await?)
}

/// The rings the caller may sign with (every ring for `admin`). Audited.
#[utoipa::path(
    get,
    path = "/v1/rings",
    tag = "api",
    responses((status = 200, description = "The rings", body = RingList)),
)]
async fn list_rings(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let rings = app.signing.rings().await?;
    let visible: Vec<RingBody> = rings
        .iter()
        .filter(|r| caller.has_role("admin") || caller.has_role(&signer_role(&r.name)))
        .map(|r| ring_body(r, None))
        .collect();
    let receipt = audit_read(
        &app,
        &caller,
        "ring.list",
        "rings".into(),
        serde_json::json!({}),
    )
    .await?;
    let body = RingList {
        rings: visible,
        receipt: receipt.clone(),
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

/// Rings.
#[derive(Serialize, utoipa::ToSchema)]
struct RingList {
    rings: Vec<RingBody>,
    receipt: Receipt,
}

/// A new ring.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRing {
    /// Lower case letters, digits, `.`, `_`, `-`; starts with a letter or digit; at most 63.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$", example = "payments")]
    name: String,
    /// `ec-p256`, `ec-p384`, `ed25519`, `rsa-2048`, `rsa-3072` or `rsa-4096`.
    #[schema(example = "ec-p256")]
    algorithm: String,
    /// The token its keys live in (default: the signing token).
    token: Option<String>,
    /// The User ID of the ring keys' OpenPGP certificates.
    openpgp_user_id: Option<String>,
}

fn parse_algorithm(s: &str) -> Result<KeyAlgorithm, ApiError> {
    s.parse().map_err(ApiError::bad_request)
}

/// Creates a ring (no keys yet). Needs `admin`; audited.
#[utoipa::path(
    post,
    path = "/v1/rings",
    tag = "api",
    request_body = CreateRing,
    responses(
        (status = 201, description = "The new ring", body = RingBody),
        (status = 400, description = "A bad name, algorithm or body"),
        (status = 404, description = "No such token"),
        (status = 409, description = "The ring exists"),
        (status = 413, description = "The body is larger than allowed"),
        (status = 415, description = "Not JSON"),
    ),
)]
async fn create_ring(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = read_limited(&headers, body, 64 * 1024, "a ring request").await?;
    let req: CreateRing = json_body(&raw)?;
    require_role(
        &app,
        &caller,
        "admin",
        "ring.create",
        &format!("ring:{}", req.name),
    )
    .await?;
    let algorithm = parse_algorithm(&req.algorithm)?;
    let (ring, receipt) = app
        .signing
        .create_ring(
            &caller.actor(),
            &req.name,
            algorithm,
            req.token.as_deref(),
            req.openpgp_user_id.as_deref(),
        )
        .await?;
    let body = RingBody {
        receipt: Some(receipt.clone()),
        ..ring_body(&ring, Some(Vec::new()))
    };
    Ok(with_receipt(
        (StatusCode::CREATED, Json(body)).into_response(),
        &receipt,
    ))
}

/// A ring with its keys. Needs `signer:<ring>` or `admin`; audited.
#[utoipa::path(
    get,
    path = "/v1/rings/{ring}",
    tag = "api",
    params(("ring" = String, Path, description = "The ring's name")),
    responses(
        (status = 200, description = "The ring and its keys", body = RingBody),
        (status = 404, description = "No such ring"),
    ),
)]
async fn get_ring(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = path(p)?;
    let subject = format!("ring:{name}");
    require_reader(&app, &caller, &name, "ring.get", &subject).await?;
    let ring = app.signing.ring(&name).await?;
    let keys = app.signing.keys(Some(&name)).await?;
    let keys = keys.iter().map(key_body).collect::<Result<Vec<_>, _>>()?;
    let receipt = audit_read(&app, &caller, "ring.get", subject, serde_json::json!({})).await?;
    let body = RingBody {
        receipt: Some(receipt.clone()),
        ..ring_body(&ring, Some(keys))
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

/// Keys to generate in the token (an empty body: one key of the ring's algorithm).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GenerateRequest {
    /// The ring's algorithm (required when the ring does not exist yet: it is created).
    algorithm: Option<String>,
    /// How many keys (default 1).
    #[schema(minimum = 1, maximum = 64)]
    count: Option<usize>,
    /// The token (default: the ring's).
    token: Option<String>,
}

/// Generates keys in the token for a ring, creating the ring if needed. Needs `admin`;
/// each key is audited.
#[utoipa::path(
    post,
    path = "/v1/rings/{ring}/keys",
    tag = "api",
    params(("ring" = String, Path, description = "The ring's name")),
    request_body(content = Option<GenerateRequest>, content_type = "application/json"),
    responses(
        (status = 201, description = "The new keys", body = GeneratedKeys),
        (status = 400, description = "A bad algorithm, count or body"),
        (status = 404, description = "No such token"),
        (status = 409, description = "The algorithm differs from the ring's"),
        (status = 413, description = "The body is larger than allowed"),
        (status = 415, description = "Not JSON"),
    ),
)]
async fn generate_keys(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ring = path(p)?;
    require_role(
        &app,
        &caller,
        "admin",
        "key.generate",
        &format!("ring:{ring}"),
    )
    .await?;
    let raw = read_limited(&headers, body, 64 * 1024, "a key request").await?;
    let req: GenerateRequest = if raw.is_empty() {
        GenerateRequest {
            algorithm: None,
            count: None,
            token: None,
        }
    } else {
        json_body(&raw)?
    };
    let algorithm = req.algorithm.as_deref().map(parse_algorithm).transpose()?;
    let generated = app
        .signing
        .generate_keys(
            &caller.actor(),
            &ring,
            algorithm,
            req.count.unwrap_or(1),
            req.token.as_deref(),
        )
        .await?;
    let mut keys = Vec::new();
    let mut last = None;
    for (k, receipt) in &generated.keys {
        let view = KeyView {
            state: signing::key_state(k),
            key: k.clone(),
        };
        keys.push(KeyBody {
            receipt: Some(receipt.clone()),
            ..key_body(&view)?
        });
        last = Some(receipt.clone());
    }
    let body = GeneratedKeys {
        ring: ring_body(&generated.ring, None),
        ring_created: generated.ring_created,
        keys,
    };
    let response = (StatusCode::CREATED, Json(body)).into_response();
    Ok(match last {
        Some(r) => with_receipt(response, &r),
        None => response,
    })
}

/// Keys made by `POST /v1/rings/{ring}/keys`.
#[derive(Serialize, utoipa::ToSchema)]
struct GeneratedKeys {
    ring: RingBody,
    /// Whether the ring was created by this request.
    ring_created: bool,
    /// Each with the receipt of its audit entry.
    keys: Vec<KeyBody>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct KeysQuery {
    /// Only this ring's keys.
    ring: Option<String>,
}

/// The keys the caller may read (of one ring with `ring`). Audited.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "api",
    params(KeysQuery),
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 404, description = "No such ring"),
    ),
)]
async fn list_keys(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<KeysQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    if let Some(r) = &q.ring {
        require_reader(&app, &caller, r, "key.list", &format!("ring:{r}")).await?;
    }
    let keys = app.signing.keys(q.ring.as_deref()).await?;
    let visible = keys
        .iter()
        .filter(|k| caller.has_role("admin") || caller.has_role(&signer_role(&k.key.ring)))
        .map(key_body)
        .collect::<Result<Vec<_>, _>>()?;
    let subject = q
        .ring
        .as_ref()
        .map_or_else(|| "keys".to_owned(), |r| format!("ring:{r}"));
    let receipt = audit_read(&app, &caller, "key.list", subject, serde_json::json!({})).await?;
    let body = KeyList {
        keys: visible,
        receipt: receipt.clone(),
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

/// Keys.
#[derive(Serialize, utoipa::ToSchema)]
struct KeyList {
    keys: Vec<KeyBody>,
    receipt: Receipt,
}

/// One key. Needs `signer:<ring>` or `admin`; audited.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}",
    tag = "api",
    params(("id" = String, Path, description = "The key's id (UUID)")),
    responses(
        (status = 200, description = "The key", body = KeyBody),
        (status = 404, description = "No such key"),
    ),
)]
async fn get_key(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = key_id(p)?;
    let view = app.signing.key(id).await?;
    let subject = format!("key:{id}");
    require_reader(&app, &caller, &view.key.ring, "key.get", &subject).await?;
    let receipt = audit_read(&app, &caller, "key.get", subject, serde_json::json!({})).await?;
    let body = KeyBody {
        receipt: Some(receipt.clone()),
        ..key_body(&view)?
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CertificateQuery {
    /// `true` (default): ASCII armor; `false`: binary packets.
    armor: Option<bool>,
}

/// `GET /v1/keys/ID/openpgp`: the key's OpenPGP certificate, made in the token and stored the
/// first time it is asked for (an audited change), served from the database afterwards.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/openpgp",
    tag = "api",
    params(("id" = String, Path, description = "The key's id (UUID)"), CertificateQuery),
    responses(
        (status = 200, description = "The OpenPGP certificate (transferable public key), armored or binary", content(
            (String = "application/pgp-keys"),
        ), headers(
            ("signetd-key-id" = String, description = "The key"),
            ("openpgp-fingerprint" = String, description = "Its OpenPGP v4 fingerprint"),
        )),
        (status = 404, description = "No such key"),
        (status = 409, description = "The key is not active and has no certificate yet"),
    ),
)]
async fn get_openpgp_certificate(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<CertificateQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = key_id(p)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let view = app.signing.key(id).await?;
    let subject = format!("key:{id}");
    require_reader(&app, &caller, &view.key.ring, "key.openpgp", &subject).await?;
    let certificate = app.signing.openpgp_certificate(&caller.actor(), id).await?;
    let receipt = audit_read(
        &app,
        &caller,
        "key.openpgp",
        subject,
        serde_json::json!({ "openpgp_fingerprint": certificate.fingerprint() }),
    )
    .await?;
    let armor = q.armor.unwrap_or(true);
    let mut response = if armor {
        (
            [(header::CONTENT_TYPE, "application/pgp-keys")],
            certificate.armored().to_owned(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/pgp-keys")],
            certificate.to_bytes().to_vec(),
        )
            .into_response()
    };
    set_key_headers(&mut response, id, &certificate.fingerprint());
    Ok(with_receipt(response, &receipt))
}

/// The headers naming the key behind an answer that is not JSON.
fn set_key_headers(response: &mut Response, key: Uuid, openpgp_fingerprint: &str) {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&key.to_string()) {
        h.insert("signetd-key-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(openpgp_fingerprint) {
        h.insert("openpgp-fingerprint", v);
    }
}

/// Retires a key: it signs no more (every daemon stops lending it at once) and still
/// verifies. Needs `admin`; audited.
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/retire",
    tag = "api",
    params(("id" = String, Path, description = "The key's id (UUID)")),
    responses(
        (status = 200, description = "The retired key", body = KeyBody),
        (status = 404, description = "No such key"),
        (status = 409, description = "The key is retired already"),
    ),
)]
async fn retire_key(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = key_id(p)?;
    require_role(&app, &caller, "admin", "key.retire", &format!("key:{id}")).await?;
    let (view, receipt) = app.signing.retire_key(&caller.actor(), id).await?;
    let body = KeyBody {
        receipt: Some(receipt.clone()),
        ..key_body(&view)?
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target(Some("r".into()), None).ok(),
            Some(Target::Ring("r".into()))
        );
        assert!(parse_target(None, None).is_err());
        assert!(parse_target(Some("r".into()), Some(Uuid::nil().to_string())).is_err());
        assert_eq!(
            parse_target(None, Some("not-a-uuid".into()))
                .err()
                .map(|e| e.status()),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn schemes_and_encodings() {
        let (s, e) = scheme_for(KeyAlgorithm::EcP256, None, None, Some("raw"))
            .ok()
            .unzip();
        assert_eq!(s.map(SignatureScheme::name), Some("ecdsa-p256-sha256"));
        assert_eq!(e.flatten(), Some(EcdsaEncoding::Raw));
        let (_, e) = scheme_for(KeyAlgorithm::EcP384, None, None, None)
            .ok()
            .unzip();
        assert_eq!(e.flatten(), Some(EcdsaEncoding::Der));
        let (_, e) = scheme_for(KeyAlgorithm::Rsa2048, None, Some("pss"), None)
            .ok()
            .unzip();
        assert_eq!(e, Some(None));
        for (alg, hash, padding, enc) in [
            (KeyAlgorithm::EcP256, None, Some("pss"), None),
            (KeyAlgorithm::Ed25519, Some("sha512"), None, None),
            (KeyAlgorithm::Rsa2048, None, None, Some("raw")),
            (KeyAlgorithm::Rsa2048, Some("md5"), None, None),
        ] {
            let got = scheme_for(alg, hash, padding, enc)
                .err()
                .map(|e| e.status());
            assert_eq!(
                got,
                Some(StatusCode::BAD_REQUEST),
                "{alg} {hash:?} {padding:?} {enc:?}"
            );
        }
    }

    #[test]
    fn ring_names() {
        assert!(signing::valid_ring_name("payments"));
        assert!(signing::valid_ring_name("a.b_c-1"));
        assert!(!signing::valid_ring_name(""));
        assert!(!signing::valid_ring_name("-x"));
        assert!(!signing::valid_ring_name("Upper"));
        assert!(!signing::valid_ring_name(&"a".repeat(64)));
    }
}
