//! api::formats: one upload, the artefacts a request asks for — a raw signature, an OpenPGP
//! detached signature (binary or text mode, armored or not), an OpenPGP cleartext-signed
//! message — made with one key taken once, and one audit entry naming every format and the
//! SHA-256 of the input and of each artefact.
//!
//! The upload is hashed as it streams in, once per format (the ring lends its key only when the
//! upload is complete, so an OpenPGP signature, which names its key, is bound to it
//! afterwards). Only what must be signed whole is held in memory: a cleartext message (the
//! answer carries it) and an Ed25519 raw signature's message, each within its own limit.
//!
//! A CMS signature (detached SignedData) is identified by the key's document-signer
//! certificate, issued by the daemon's CA the first time the key signs CMS and found again in
//! the database afterwards (so a held or revoked certificate is never used again), and carries
//! it and the CA certificate. It needs only the content's digest: with `prehashed` the client
//! sends that digest instead of the file.

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::Digest as _;
use uuid::Uuid;

use super::sign::Hasher;
use super::upload::{self, Event, Shape};
use super::{ApiError, Caller, with_receipt};
use crate::app::App;
use crate::audit::{self, Receipt};
use crate::crypto::{EcdsaEncoding, HashAlg, SignInputBuf, SignatureScheme};
use crate::formats::cms::{CmsBuilder, CmsError, PendingCms};
use crate::formats::openpgp::{self, DetachedInput, OpenPgpError, PendingCleartext, SignatureMode};
use crate::formats::tsp::ID_AA_SIGNATURE_TIME_STAMP_TOKEN;
use crate::hsm::KeyAlgorithm;
use crate::signing::{self, Resolved};
use serde::Serialize;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One artefact kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// The token's signature itself (`/v1/sign`'s default).
    Raw,
    /// A detached OpenPGP signature.
    OpenPgp,
    /// An OpenPGP cleartext-signed message.
    Cleartext,
    /// A detached CMS SignedData (RFC 5652).
    Cms,
}

impl Format {
    pub(super) fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::OpenPgp => "openpgp",
            Format::Cleartext => "openpgp-cleartext",
            Format::Cms => "cms",
        }
    }
}

/// Parses `format=raw,openpgp,...` (no repeats).
pub(super) fn parse_formats(list: &str) -> Result<Vec<Format>, ApiError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim) {
        let f = match item {
            "raw" => Format::Raw,
            "openpgp" => Format::OpenPgp,
            "openpgp-cleartext" | "cleartext" => Format::Cleartext,
            "cms" => Format::Cms,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown format `{other}`: use raw, openpgp, openpgp-cleartext or cms"
                )));
            }
        };
        if out.contains(&f) {
            return Err(ApiError::bad_request(format!(
                "format `{item}` is named twice"
            )));
        }
        out.push(f);
    }
    if out.is_empty() {
        return Err(ApiError::bad_request("name at least one format"));
    }
    Ok(out)
}

/// What a request wants made from its upload.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    /// The formats, in the order asked for.
    pub formats: Vec<Format>,
    /// The raw signature's scheme and ECDSA encoding, if raw is asked for.
    pub raw: Option<(SignatureScheme, Option<EcdsaEncoding>)>,
    /// The hash of OpenPGP signatures.
    pub openpgp_hash: HashAlg,
    /// Detached OpenPGP signatures: text mode (type 0x01) instead of binary.
    pub openpgp_text: bool,
    /// Detached OpenPGP signatures: ASCII armor (default) instead of binary packets.
    pub armor: bool,
    /// The digest algorithm of CMS signatures.
    pub cms_hash: HashAlg,
    /// CMS signatures: PEM instead of DER.
    pub pem: bool,
    /// The body is the content's digest under `cms_hash`, not the content (CMS alone).
    pub prehashed: bool,
    /// CMS signatures carry a signature time-stamp from the daemon's TSA (CAdES-T).
    pub timestamp: bool,
}

impl Spec {
    /// Checks the OpenPGP hash against the key algorithm (`hash` names one, or the key's
    /// default is taken).
    pub fn openpgp_hash(algorithm: KeyAlgorithm, hash: Option<&str>) -> Result<HashAlg, ApiError> {
        let hash = match hash {
            None => openpgp::default_hash(algorithm),
            Some(h) => h
                .parse::<HashAlg>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        };
        openpgp::check_hash(algorithm, hash).map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(hash)
    }

    /// Checks the CMS digest algorithm against the key algorithm (`hash` names one, or the
    /// key's default is taken: SHA-384 for P-384, SHA-512 for Ed25519, SHA-256 otherwise).
    /// Ed25519 signs CMS with SHA-512 only (RFC 8419).
    pub fn cms_hash(algorithm: KeyAlgorithm, hash: Option<&str>) -> Result<HashAlg, ApiError> {
        let default = match algorithm {
            KeyAlgorithm::Ed25519 => HashAlg::Sha512,
            KeyAlgorithm::EcP384 => HashAlg::Sha384,
            _ => HashAlg::Sha256,
        };
        let hash = match hash {
            None => return Ok(default),
            Some(h) => h
                .parse::<HashAlg>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        };
        if algorithm == KeyAlgorithm::Ed25519 && hash != HashAlg::Sha512 {
            return Err(ApiError::bad_request(format!(
                "CMS signatures by Ed25519 keys use sha512 (RFC 8419), not {hash}"
            )));
        }
        Ok(hash)
    }

    fn has(&self, f: Format) -> bool {
        self.formats.contains(&f)
    }

    fn openpgp(&self) -> bool {
        self.has(Format::OpenPgp) || self.has(Format::Cleartext)
    }
}

/// An upload hashed for every format of a [`Spec`].
pub(super) struct Hashing {
    raw: Option<RawSink>,
    openpgp: Option<DetachedInput>,
    cleartext: Option<Vec<u8>>,
    cms: Option<CmsInput>,
    sha256: sha2::Sha256,
    bytes: u64,
    /// Bounds on what is held in memory.
    cleartext_limit: u64,
    message_limit: u64,
    /// The file name the client gave (multipart).
    pub name: Option<String>,
}

enum RawSink {
    Digest(Hasher),
    Message(Vec<u8>),
}

/// What a CMS signature is made over: the content, hashed as it streams in, or the digest the
/// client sent.
enum CmsInput {
    Content(Hasher),
    Digest(Vec<u8>),
}

impl Hashing {
    pub fn new(app: &App, spec: &Spec) -> Result<Hashing, ApiError> {
        let cfg = app.signing.config();
        let raw = spec.raw.map(|(scheme, _)| match scheme.hash() {
            Some(h) => RawSink::Digest(Hasher::new(h)),
            None => RawSink::Message(Vec::new()),
        });
        let openpgp = if spec.has(Format::OpenPgp) {
            let mode = if spec.openpgp_text {
                SignatureMode::Text
            } else {
                SignatureMode::Binary
            };
            Some(DetachedInput::new(spec.openpgp_hash, mode).map_err(openpgp_api)?)
        } else {
            None
        };
        Ok(Hashing {
            raw,
            openpgp,
            cleartext: spec.has(Format::Cleartext).then(Vec::new),
            cms: (spec.has(Format::Cms) && !spec.prehashed)
                .then(|| CmsInput::Content(Hasher::new(spec.cms_hash))),
            sha256: sha2::Sha256::new(),
            bytes: 0,
            cleartext_limit: cfg.max_cleartext_bytes.min(cfg.max_upload_bytes),
            message_limit: cfg.max_ed25519_bytes.min(cfg.max_upload_bytes),
            name: None,
        })
    }

    /// Hashes the next chunk; refuses (413) what cannot be held.
    pub fn update(&mut self, data: &[u8]) -> Result<(), ApiError> {
        self.bytes = self.bytes.saturating_add(data.len() as u64);
        self.sha256.update(data);
        match &mut self.raw {
            Some(RawSink::Digest(h)) => h.update(data),
            Some(RawSink::Message(m)) => {
                if self.bytes > self.message_limit {
                    return Err(ApiError::too_large(format!(
                        "an Ed25519 upload (signed whole) is limited to {} bytes",
                        self.message_limit
                    )));
                }
                m.extend_from_slice(data);
            }
            None => {}
        }
        if let Some(o) = &mut self.openpgp {
            o.update(data);
        }
        if let Some(CmsInput::Content(h)) = &mut self.cms {
            h.update(data);
        }
        if let Some(c) = &mut self.cleartext {
            if self.bytes > self.cleartext_limit {
                return Err(ApiError::too_large(format!(
                    "a cleartext-signed text is limited to {} bytes (signing.max_cleartext_bytes)",
                    self.cleartext_limit
                )));
            }
            c.extend_from_slice(data);
        }
        Ok(())
    }
}

/// Streams a single-file upload (raw body or one `file` part) into a [`Hashing`].
pub(super) async fn hash_upload(
    app: &App,
    spec: &Spec,
    headers: &HeaderMap,
    body: Body,
) -> Result<Hashing, ApiError> {
    let shape = upload::shape(headers)?;
    let limit = app.signing.config().max_upload_bytes;
    upload::check_declared(headers, &shape, limit, "an upload").map_err(|e| count(app, e))?;
    let mut hashing = Hashing::new(app, spec)?;
    let streamed = upload::stream(body, &shape, "file", 1, limit, "an upload", |ev| match ev {
        Event::Start(f) => {
            hashing.name = f.name;
            Ok(())
        }
        Event::Data(d) => hashing.update(d),
        Event::Field(..) => Ok(()),
    })
    .await
    .map_err(|e| count(app, e))?;
    if streamed.files == 0 {
        return Err(ApiError::bad_request("the form has no `file` part"));
    }
    Ok(hashing)
}

/// Reads the content digest a CMS-only request sends as its body (`prehashed`): exactly the
/// length of `spec.cms_hash`.
pub(super) async fn digest_upload(
    app: &App,
    spec: &Spec,
    headers: &HeaderMap,
    body: Body,
) -> Result<Hashing, ApiError> {
    if is_multipart(headers)? {
        return Err(ApiError::bad_request(
            "a digest is sent as the request body, not as a form",
        ));
    }
    let hash = spec.cms_hash;
    let wrong = || ApiError::bad_request(format!("a {hash} digest is {} bytes", hash.output_len()));
    let digest = super::sign::read_limited(headers, body, hash.output_len() as u64, "a digest")
        .await
        .map_err(|_| wrong())?;
    if digest.len() != hash.output_len() {
        return Err(wrong());
    }
    let mut hashing = Hashing::new(app, spec)?;
    hashing.sha256.update(&digest);
    hashing.bytes = digest.len() as u64;
    hashing.cms = Some(CmsInput::Digest(digest));
    Ok(hashing)
}

/// Whether a request's body is a multipart form.
pub(super) fn is_multipart(headers: &HeaderMap) -> Result<bool, ApiError> {
    Ok(matches!(upload::shape(headers)?, Shape::Multipart(_)))
}

/// Counts a 413 in the upload metrics.
pub(super) fn count(app: &App, e: ApiError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        app.metrics.signing_uploads_too_large.inc();
    }
    e
}

fn openpgp_api(e: OpenPgpError) -> ApiError {
    match e {
        OpenPgpError::Token(h) => ApiError::from(h),
        other => ApiError::bad_request(other.to_string()),
    }
}

fn cms_api(e: CmsError) -> ApiError {
    match e {
        CmsError::Token(h) => ApiError::from(h),
        CmsError::UnsupportedHash { .. } | CmsError::DigestLength { .. } => {
            ApiError::bad_request(e.to_string())
        }
        other => {
            tracing::error!(error = %other, "cannot make a CMS signature");
            ApiError::internal()
        }
    }
}

/// What was made from one upload.
#[derive(Debug)]
pub(super) struct Artefacts {
    /// The raw signature, encoded as asked.
    pub raw: Option<Vec<u8>>,
    /// The detached OpenPGP signature.
    pub openpgp: Option<openpgp::DetachedSignature>,
    /// The cleartext-signed message.
    pub cleartext: Option<String>,
    /// The CMS signature (DER) and its PEM form.
    pub cms: Option<(Vec<u8>, String)>,
    /// The serial of the time-stamp token the CMS signature carries.
    pub cms_timestamp: Option<i64>,
    /// Bytes and SHA-256 of the input.
    pub bytes: u64,
    pub sha256: [u8; 32],
    /// The client's file name.
    pub name: Option<String>,
}

impl Artefacts {
    /// The artefact of `f` as it is returned (armored or PEM text, or bytes).
    pub fn bytes_of(&self, f: Format, armor: bool, pem: bool) -> Option<Vec<u8>> {
        match f {
            Format::Raw => self.raw.clone(),
            Format::OpenPgp => self.openpgp.as_ref().map(|s| {
                if armor {
                    s.armored().as_bytes().to_vec()
                } else {
                    s.to_bytes().to_vec()
                }
            }),
            Format::Cleartext => self.cleartext.as_ref().map(|c| c.as_bytes().to_vec()),
            Format::Cms => self.cms.as_ref().map(|(der, text)| {
                if pem {
                    text.as_bytes().to_vec()
                } else {
                    der.clone()
                }
            }),
        }
    }
}

/// The key that signed, and what it made.
#[derive(Debug)]
pub(super) struct Made {
    pub key_id: Uuid,
    pub openpgp_fingerprint: Option<String>,
    pub artefacts: Vec<Artefacts>,
}

enum Pending {
    Raw(SignatureScheme, Option<EcdsaEncoding>),
    OpenPgp(openpgp::PendingSignature),
    Cleartext(PendingCleartext),
    Cms(Box<PendingCms>),
}

/// Signs every upload of `hashed` in every format of `spec` with one key of `target`, taken
/// once; each signature is verified before release (the token layer, rpgp for OpenPGP, the
/// signer certificate's key for CMS). A CMS signature's certificate is issued on `caller`'s
/// behalf when the key has none.
pub(super) async fn sign_all(
    app: &App,
    caller: &Caller,
    target: &Resolved,
    spec: &Spec,
    hashed: Vec<Hashing>,
) -> Result<Made, ApiError> {
    let algorithm = target.algorithm();
    // Bad requests never take a key.
    if let Some((scheme, _)) = spec.raw {
        for h in &hashed {
            if let Some(RawSink::Message(m)) = &h.raw {
                scheme
                    .check(algorithm, SignInputBuf::Message(m.clone()).as_input())
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            }
        }
    }
    let held = app.signing.hold(target).await?;
    let key_id = held.id();
    let packet = if spec.openpgp() {
        Some(app.signing.openpgp_key(key_id).await?)
    } else {
        None
    };
    let time = packet.as_ref().map_or_else(
        time::OffsetDateTime::now_utc,
        signing::openpgp::signing_time,
    );
    let cms_builder = if spec.has(Format::Cms) {
        let cert = app.ca.signer_certificate(&caller.actor(), key_id).await?;
        let ca = app.ca_der.as_ref();
        let builder = CmsBuilder::new(
            &cert,
            algorithm,
            spec.cms_hash,
            time::OffsetDateTime::now_utc(),
        )
        .and_then(|b| b.certificate(ca))
        .map_err(cms_api)?;
        Some(builder)
    } else {
        None
    };
    let mut items = Vec::new();
    let mut pending: Vec<Vec<Pending>> = Vec::with_capacity(hashed.len());
    let mut meta = Vec::with_capacity(hashed.len());
    for h in hashed {
        let Hashing {
            mut raw,
            mut openpgp,
            mut cleartext,
            mut cms,
            sha256,
            bytes,
            name,
            ..
        } = h;
        let mut mine = Vec::new();
        for f in &spec.formats {
            match f {
                Format::Raw => {
                    let (scheme, encoding) = spec.raw.ok_or_else(ApiError::internal)?;
                    let input = match raw.take() {
                        Some(RawSink::Digest(hasher)) => SignInputBuf::Digest(hasher.finish()),
                        Some(RawSink::Message(m)) => SignInputBuf::Message(m),
                        None => return Err(ApiError::internal()),
                    };
                    items.push((scheme, input));
                    mine.push(Pending::Raw(scheme, encoding));
                }
                Format::OpenPgp => {
                    let input = openpgp.take().ok_or_else(ApiError::internal)?;
                    let key = packet.as_ref().ok_or_else(ApiError::internal)?;
                    let p = input.into_pending(key, time).map_err(openpgp_api)?;
                    items.push((p.request().scheme(), p.request().input_buf()));
                    mine.push(Pending::OpenPgp(p));
                }
                Format::Cleartext => {
                    let text = cleartext.take().ok_or_else(ApiError::internal)?;
                    let key = packet.as_ref().ok_or_else(ApiError::internal)?;
                    let p = openpgp::CleartextSigner::prepare(key, spec.openpgp_hash, time, &text)
                        .map_err(openpgp_api)?;
                    items.push((p.request().scheme(), p.request().input_buf()));
                    mine.push(Pending::Cleartext(p));
                }
                Format::Cms => {
                    let digest = match cms.take() {
                        Some(CmsInput::Content(hasher)) => hasher.finish(),
                        Some(CmsInput::Digest(d)) => d,
                        None => return Err(ApiError::internal()),
                    };
                    let builder = cms_builder.clone().ok_or_else(ApiError::internal)?;
                    let p = builder.prepare(&digest).map_err(cms_api)?;
                    items.push(p.request());
                    mine.push(Pending::Cms(Box::new(p)));
                }
            }
        }
        pending.push(mine);
        meta.push((bytes, sha256.finalize().into(), name));
    }
    let mut signatures = app.signing.sign_held(held, items).await?.into_iter();
    let mut artefacts = Vec::with_capacity(pending.len());
    for (mine, (bytes, sha256, name)) in pending.into_iter().zip(meta) {
        let mut a = Artefacts {
            raw: None,
            openpgp: None,
            cleartext: None,
            cms: None,
            cms_timestamp: None,
            bytes,
            sha256,
            name,
        };
        for p in mine {
            let sig = signatures.next().ok_or_else(ApiError::internal)?;
            match p {
                Pending::Raw(scheme, encoding) => {
                    a.raw = Some(
                        scheme
                            .encode_signature(&sig, encoding.unwrap_or_default())
                            .map_err(|e| {
                                tracing::error!(error = %e, "cannot re-encode a signature");
                                ApiError::internal()
                            })?,
                    );
                }
                Pending::OpenPgp(p) => a.openpgp = Some(p.complete(&sig).map_err(withheld)?),
                Pending::Cleartext(p) => a.cleartext = Some(p.complete(&sig).map_err(withheld)?),
                Pending::Cms(p) => {
                    let mut signature = p.complete(&sig).map_err(cms_withheld)?;
                    if spec.timestamp {
                        // CAdES-T: a time-stamp token over the signature value, by our TSA.
                        let (token, serial) = app
                            .ca
                            .timestamp_signature(
                                &caller.actor(),
                                signature.signature_value(),
                                spec.cms_hash,
                            )
                            .await?;
                        signature = signature
                            .with_unsigned_attribute(ID_AA_SIGNATURE_TIME_STAMP_TOKEN, &token)
                            .map_err(cms_api)?;
                        a.cms_timestamp = Some(serial);
                    }
                    let pem = signature.to_pem().map_err(cms_api)?;
                    a.cms = Some((signature.to_der().to_vec(), pem));
                }
            }
        }
        artefacts.push(a);
    }
    Ok(Made {
        key_id,
        openpgp_fingerprint: packet.map(|p| p.fingerprint()),
        artefacts,
    })
}

/// A token signature that rpgp's own check refused is withheld (invariant 8).
fn withheld(e: OpenPgpError) -> ApiError {
    tracing::error!(error = %e, "an OpenPGP signature failed its check; withheld");
    ApiError::internal()
}

/// A token signature that does not verify against the signer certificate is withheld.
fn cms_withheld(e: CmsError) -> ApiError {
    match e {
        CmsError::Token(h) => ApiError::from(h),
        other => {
            tracing::error!(error = %other, "a CMS signature failed its check; withheld");
            ApiError::internal()
        }
    }
}

/// The audit parameters and output of a format request: formats, hash, input digest and
/// each artefact's SHA-256, so one entry covers everything returned.
pub(super) fn audit_params(
    target: &Resolved,
    spec: &Spec,
    made: &Made,
    extra: serde_json::Value,
) -> (serde_json::Value, Vec<u8>) {
    let mut files = Vec::new();
    let mut all = Vec::new();
    for a in &made.artefacts {
        let mut outputs = serde_json::Map::new();
        for f in &spec.formats {
            if let Some(b) = a.bytes_of(*f, spec.armor, spec.pem) {
                outputs.insert(f.name().into(), hex::encode(audit::digest(&b)).into());
                all.extend_from_slice(&b);
            }
        }
        files.push(serde_json::json!({
            "name": a.name,
            "bytes": a.bytes,
            "sha256": hex::encode(a.sha256),
            "outputs": outputs,
            "timestamp_serial": a.cms_timestamp,
        }));
    }
    let params = serde_json::json!({
        "target": target.subject(),
        "key_id": made.key_id,
        "openpgp_fingerprint": made.openpgp_fingerprint,
        "formats": spec.formats.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "scheme": spec.raw.map(|(s, _)| s.name()),
        "encoding": spec.raw.and_then(|(_, e)| e).map(EcdsaEncoding::as_str),
        "openpgp_hash": spec.openpgp().then(|| spec.openpgp_hash.to_string()),
        "openpgp_text": spec.openpgp_text,
        "armor": spec.armor,
        "cms_hash": spec.has(Format::Cms).then(|| spec.cms_hash.to_string()),
        "pem": spec.pem,
        "timestamp": spec.timestamp,
        "input": if spec.prehashed { "digest" } else { "message" },
        "files": files,
        "request": extra,
    });
    (params, all)
}

/// The answer to `/v1/sign` with formats: one non-raw format → the artefact itself (with the
/// receipt and key in headers); several → JSON with each.
pub(super) fn answer(
    target: &Resolved,
    spec: &Spec,
    made: &Made,
    receipt: &Receipt,
) -> Result<Response, ApiError> {
    let a = made.artefacts.first().ok_or_else(ApiError::internal)?;
    let mut response = match spec.formats.as_slice() {
        [Format::OpenPgp] => {
            let sig = a.openpgp.as_ref().ok_or_else(ApiError::internal)?;
            if spec.armor {
                (
                    [(header::CONTENT_TYPE, "application/pgp-signature")],
                    sig.armored().to_owned(),
                )
                    .into_response()
            } else {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    sig.to_bytes().to_vec(),
                )
                    .into_response()
            }
        }
        [Format::Cleartext] => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            a.cleartext.clone().ok_or_else(ApiError::internal)?,
        )
            .into_response(),
        [Format::Cms] => {
            let (der, pem) = a.cms.clone().ok_or_else(ApiError::internal)?;
            let mut r = if spec.pem {
                ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response()
            } else {
                ([(header::CONTENT_TYPE, "application/pkcs7-signature")], der).into_response()
            };
            if let Some(v) = a
                .cms_timestamp
                .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
            {
                r.headers_mut().insert("signetd-tsa-serial", v);
            }
            r
        }
        _ => {
            let mut signatures = FormatSignatures::default();
            for f in &spec.formats {
                match f {
                    Format::Raw => {
                        signatures.raw = Some(RawPart {
                            scheme: spec.raw.map(|(s, _)| s.name()),
                            encoding: spec.raw.and_then(|(_, e)| e).map(EcdsaEncoding::as_str),
                            signature: a.raw.as_ref().map(|r| B64.encode(r)),
                        });
                    }
                    Format::OpenPgp => {
                        let sig = a.openpgp.as_ref().ok_or_else(ApiError::internal)?;
                        signatures.openpgp = Some(OpenPgpPart {
                            hash: spec.openpgp_hash.to_string(),
                            mode: if spec.openpgp_text { "text" } else { "binary" },
                            armored: sig.armored().to_owned(),
                            signature: B64.encode(sig.to_bytes()),
                        });
                    }
                    Format::Cleartext => {
                        signatures.cleartext = Some(CleartextPart {
                            hash: spec.openpgp_hash.to_string(),
                            message: a.cleartext.clone(),
                        });
                    }
                    Format::Cms => {
                        let (der, pem) = a.cms.as_ref().ok_or_else(ApiError::internal)?;
                        signatures.cms = Some(CmsPart {
                            hash: spec.cms_hash.to_string(),
                            signature: B64.encode(der),
                            pem: pem.clone(),
                            timestamp_serial: a.cms_timestamp,
                        });
                    }
                }
            }
            let body = FormatsAnswer {
                key_id: made.key_id,
                ring: target.ring().to_owned(),
                algorithm: target.algorithm().as_str(),
                openpgp_fingerprint: made.openpgp_fingerprint.clone(),
                bytes: a.bytes,
                sha256: hex::encode(a.sha256),
                formats: spec.formats.iter().map(|f| f.name()).collect(),
                signatures,
                receipt: receipt.clone(),
            };
            Json(body).into_response()
        }
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&made.key_id.to_string()) {
        h.insert("signetd-key-id", v);
    }
    if let Some(fpr) = &made.openpgp_fingerprint
        && let Ok(v) = HeaderValue::from_str(fpr)
    {
        h.insert("openpgp-fingerprint", v);
    }
    Ok(with_receipt(response, receipt))
}

/// Several formats of one upload, in one JSON answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct FormatsAnswer {
    /// The key that signed every format.
    key_id: Uuid,
    ring: String,
    algorithm: &'static str,
    /// The OpenPGP v4 fingerprint of the key, when an OpenPGP format was asked for.
    openpgp_fingerprint: Option<String>,
    /// Bytes received.
    bytes: u64,
    /// SHA-256 of the bytes received, hex.
    sha256: String,
    /// The formats asked for, in order.
    formats: Vec<&'static str>,
    signatures: FormatSignatures,
    receipt: Receipt,
}

/// One member per format asked for.
#[derive(Default, Serialize, utoipa::ToSchema)]
struct FormatSignatures {
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<RawPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    openpgp: Option<OpenPgpPart>,
    #[serde(rename = "openpgp-cleartext", skip_serializing_if = "Option::is_none")]
    #[schema(rename = "openpgp-cleartext")]
    cleartext: Option<CleartextPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cms: Option<CmsPart>,
}

/// A raw signature among several formats.
#[derive(Serialize, utoipa::ToSchema)]
struct RawPart {
    scheme: Option<&'static str>,
    /// ECDSA: `der` or `raw`.
    encoding: Option<&'static str>,
    /// Base64.
    signature: Option<String>,
}

/// A detached OpenPGP signature.
#[derive(Serialize, utoipa::ToSchema)]
struct OpenPgpPart {
    hash: String,
    /// `binary` (signature type 0x00) or `text` (0x01).
    mode: &'static str,
    /// ASCII-armored.
    armored: String,
    /// The binary packets, base64.
    signature: String,
}

/// A cleartext-signed message.
#[derive(Serialize, utoipa::ToSchema)]
struct CleartextPart {
    hash: String,
    message: Option<String>,
}

/// A CMS SignedData (detached).
#[derive(Serialize, utoipa::ToSchema)]
struct CmsPart {
    hash: String,
    /// DER, base64.
    signature: String,
    /// PEM.
    pem: String,
    /// The serial of the signature time-stamp token, when `timestamp=true`.
    timestamp_serial: Option<i64>,
}

/// Appends the one audit entry of a format request.
pub(super) async fn audit_made(
    app: &App,
    caller: &Caller,
    action: &str,
    target: &Resolved,
    spec: &Spec,
    made: &Made,
    extra: serde_json::Value,
) -> Result<Receipt, ApiError> {
    let (params, outputs) = audit_params(target, spec, made, extra);
    let record = caller.record(action, target.subject(), &params, Some(&outputs), "ok");
    Ok(app.audit.append(record).await?)
}
