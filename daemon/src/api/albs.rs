//! api::albs: the albs-sign-file surface on the mTLS API — `POST /sign`, `POST /sign-batch`,
//! `GET /keys`, `GET /ping` with that service's paths, parameters, field names and answers —
//! so its clients move to signetd by presenting a client certificate instead of a bearer
//! token. `keyid` is a ring key's OpenPGP key id (16 hex digits) or fingerprint (40); access
//! follows the caller's `signer:<ring>` roles.
//!
//! Status codes kept from albs-sign-file, because its clients test them: an unknown key is 400
//! (`key X does not exist`), a key the caller may not use 403 (naming the key), an empty file
//! list 400. Signetd's own rules add: an upload over the limit is 413 (albs-sign-file answered
//! 400), a retired key 409, a malformed key id or an unsupported `sign_type`/`sign_algo` 400.
//! Every error is problem+json, whose `detail` member is where albs-sign-file put its message.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::formats::{self, Format, Hashing, Spec};
use super::upload::{self, Event};
use super::{ApiError, Caller, with_receipt};
use crate::app::App;
use crate::audit::Receipt;
use crate::crypto::HashAlg;
use crate::signing::{Resolved, Target, openpgp as pgp_ids};

/// Most files one `/sign-batch` request signs.
const MAX_BATCH_FILES: usize = 1000;

/// The routes of the albs-sign-file surface (merged into the mTLS API router).
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/sign", post(sign))
        .route("/sign-batch", post(sign_batch))
        .route("/sign-rpm", post(sign_rpm))
        .route("/keys", get(keys))
        .route("/ping", get(ping))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SignQuery {
    /// The OpenPGP key id (16 hex digits) or fingerprint (40) of the key to sign with.
    keyid: Option<String>,
    /// `detach-sign` (default) or `clear-sign`.
    sign_type: Option<String>,
    /// `SHA256` (default), `SHA384` or `SHA512`.
    sign_algo: Option<String>,
}

/// A form of files for `/sign-batch`: one or more `files` parts.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // A schema only.
struct FilesUpload {
    /// The files.
    #[schema(value_type = Vec<String>, format = Binary)]
    files: Vec<Vec<u8>>,
}

/// The signatures of a `/sign-batch` upload.
#[derive(Serialize, utoipa::ToSchema)]
struct BatchSigned {
    results: Vec<FileSignature>,
    /// Files signed.
    total: usize,
    /// Always `total` (a batch is all or nothing).
    successful: usize,
    receipt: Receipt,
}

/// One file's signature.
#[derive(Serialize, utoipa::ToSchema)]
struct FileSignature {
    /// The uploaded file name (basename).
    filename: Option<String>,
    /// Always `true`.
    success: bool,
    /// The armored detached signature, or the cleartext-signed message.
    signature: String,
}

/// The keys the caller may sign with.
#[derive(Serialize, utoipa::ToSchema)]
struct KeyIds {
    /// OpenPGP key ids (16 hex digits), sorted.
    keys: Vec<String>,
    /// Whether some active keys are not listed (the caller may not sign with them).
    restricted: bool,
    /// Always `true`.
    rpm_signing_available: bool,
}

const ALBS: &str = "albs-sign-file compatible (the endpoints of a gpg-based file-signing \
                    service): the key named by `keyid` must be one the caller may sign with.";

fn bad_query(e: &QueryRejection) -> ApiError {
    ApiError::bad_request(format!("bad query: {}", e.body_text()))
}

/// `detach-sign` (default) or `clear-sign`.
fn parse_sign_type(t: Option<&str>) -> Result<Format, ApiError> {
    match t.unwrap_or("detach-sign") {
        "detach-sign" => Ok(Format::OpenPgp),
        "clear-sign" => Ok(Format::Cleartext),
        other => Err(ApiError::bad_request(format!(
            "unknown sign_type `{other}`: use detach-sign or clear-sign"
        ))),
    }
}

/// `SHA256`, `SHA384`, `SHA512`, as gpg's `--digest-algo` names them.
fn parse_sign_algo(a: Option<&str>) -> Result<HashAlg, ApiError> {
    match a.unwrap_or("SHA256").to_ascii_uppercase().as_str() {
        "SHA256" | "SHA-256" => Ok(HashAlg::Sha256),
        "SHA384" | "SHA-384" => Ok(HashAlg::Sha384),
        "SHA512" | "SHA-512" => Ok(HashAlg::Sha512),
        _ => Err(ApiError::bad_request(
            "unsupported sign_algo: use SHA256, SHA384 or SHA512",
        )),
    }
}

/// The key a `keyid` names, checked against the caller's roles (refusals audited) and
/// resolved to its ring's scheduler.
async fn key_for(
    app: &App,
    caller: &Caller,
    keyid: Option<&str>,
    action: &str,
) -> Result<(Uuid, Resolved), ApiError> {
    let keyid = keyid.ok_or_else(|| ApiError::bad_request("the `keyid` parameter is required"))?;
    let normal = pgp_ids::normalize_key_id(keyid).ok_or_else(|| {
        ApiError::bad_request(
            "keyid must be an OpenPGP key id (16 hex digits) or fingerprint (40 hex digits)",
        )
    })?;
    let id = app
        .signing
        .key_by_openpgp_id(&normal)
        .await
        .map_err(|e| match e {
            crate::signing::SigningError::UnknownOpenPgpKey(_) => {
                ApiError::bad_request(format!("key {normal} does not exist"))
            }
            other => ApiError::from(other),
        })?;
    let ring = app.signing.ring_of_key(id).await?;
    if !caller.has_role(&format!("signer:{ring}")) {
        let record = caller.record(
            action,
            format!("key:{id}"),
            &serde_json::json!({ "keyid": normal }),
            None,
            "error:forbidden",
        );
        let receipt = app.audit.append(record).await?;
        return Err(
            ApiError::forbidden(format!("you may not sign with key {normal}"))
                .with_receipt(receipt),
        );
    }
    let resolved = app.signing.resolve(&Target::Key(id)).await?;
    Ok((id, resolved))
}

fn spec_for(resolved: &Resolved, q: &SignQuery) -> Result<Spec, ApiError> {
    let format = parse_sign_type(q.sign_type.as_deref())?;
    // Without `sign_algo`, SHA-256 as albs-sign-file did, or the shortest hash the key allows
    // (SHA-384 for P-384); an explicit one must suit the key.
    let openpgp_hash = match q.sign_algo.as_deref() {
        None => Spec::openpgp_hash(resolved.algorithm(), None)?,
        Some(a) => Spec::openpgp_hash(
            resolved.algorithm(),
            Some(&parse_sign_algo(Some(a))?.to_string()),
        )?,
    };
    Ok(Spec {
        formats: vec![format],
        raw: None,
        openpgp_hash,
        openpgp_text: false,
        armor: true,
        cms_hash: HashAlg::Sha256,
        pem: false,
        prehashed: false,
        timestamp: false,
    })
}

fn request_params(q: &SignQuery) -> serde_json::Value {
    serde_json::json!({
        "surface": "albs-sign-file",
        "keyid": q.keyid,
        "sign_type": q.sign_type.as_deref().unwrap_or("detach-sign"),
        "sign_algo": q.sign_algo,
    })
}

/// The armored detached signature or cleartext message of one artefact.
fn text_of(a: &formats::Artefacts) -> Result<String, ApiError> {
    if let Some(s) = &a.openpgp {
        return Ok(s.armored().to_owned());
    }
    a.cleartext.clone().ok_or_else(ApiError::internal)
}

fn key_header(response: &mut Response, key: Uuid) {
    if let Ok(v) = HeaderValue::from_str(&key.to_string()) {
        response.headers_mut().insert("signetd-key-id", v);
    }
}

/// `POST /sign?keyid=…[&sign_type=detach-sign|clear-sign][&sign_algo=SHA256]` with a
/// multipart `file`: the armored detached signature, or the cleartext-signed message, as
/// text/plain.
/// Signs one uploaded file with OpenPGP: the armored detached signature, or the cleartext-signed
/// message, as text.
#[utoipa::path(
    post,
    path = "/sign",
    tag = "api",
    operation_id = "albs_sign",
    description = ALBS,
    params(SignQuery),
    request_body(content = super::openapi::FileUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The signature", content_type = "text/plain; charset=utf-8", body = String,
         headers(
                 ("signetd-key-id" = String, description = "The key that signed"))),
        (status = 400, description = "A bad `keyid`, `sign_type`, `sign_algo` or form"),
        (status = 403, description = "The caller may not sign with this key"),
        (status = 404, description = "No such key"),
        (status = 409, description = "The key is retired, or its budget is spent"),
        (status = 413, description = "The upload is larger than allowed"),
        (status = 415, description = "A content type the endpoint does not take"),
    ),
)]
async fn sign(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<SignQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| bad_query(&e))?;
    let (_, resolved) = key_for(&app, &caller, q.keyid.as_deref(), "sign").await?;
    let spec = spec_for(&resolved, &q)?;
    let hashed = formats::hash_upload(&app, &spec, &headers, body).await?;
    let made = formats::sign_all(&app, &caller, &resolved, &spec, vec![hashed]).await?;
    let receipt = formats::audit_made(
        &app,
        &caller,
        "sign",
        &resolved,
        &spec,
        &made,
        request_params(&q),
    )
    .await?;
    let a = made.artefacts.first().ok_or_else(ApiError::internal)?;
    let mut response = (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text_of(a)?,
    )
        .into_response();
    key_header(&mut response, made.key_id);
    Ok(with_receipt(response, &receipt))
}

/// `POST /sign-batch?keyid=…` with several multipart `files`: every file signed with the key
/// taken once, all or nothing, one audit entry for the batch.
/// Signs several uploaded files with one key, all or nothing, with one audit entry.
#[utoipa::path(
    post,
    path = "/sign-batch",
    tag = "api",
    operation_id = "albs_sign_batch",
    description = ALBS,
    params(SignQuery),
    request_body(content = FilesUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Every file's signature", body = BatchSigned,
         headers(
                 ("signetd-key-id" = String, description = "The key that signed"))),
        (status = 400, description = "No files, a bad `keyid`, `sign_type`, `sign_algo` or form"),
        (status = 403, description = "The caller may not sign with this key"),
        (status = 404, description = "No such key"),
        (status = 409, description = "The key is retired, or its budget is spent"),
        (status = 413, description = "The upload is larger than allowed"),
        (status = 415, description = "A content type the endpoint does not take"),
    ),
)]
async fn sign_batch(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<SignQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| bad_query(&e))?;
    let shape = upload::shape(&headers)?;
    if shape == upload::Shape::Raw {
        return Err(ApiError::bad_request(
            "send the files as multipart/form-data `files` parts",
        ));
    }
    let (_, resolved) = key_for(&app, &caller, q.keyid.as_deref(), "sign-batch").await?;
    let spec = spec_for(&resolved, &q)?;
    let limit = app.signing.config().max_upload_bytes;
    upload::check_declared(&headers, &shape, limit, "a batch upload")?;
    let mut files: Vec<Hashing> = Vec::new();
    let streamed = upload::stream(
        body,
        &shape,
        "files",
        MAX_BATCH_FILES,
        limit,
        "a batch upload",
        |ev| match ev {
            Event::Start(f) => {
                let mut h = Hashing::new(&app, &spec)?;
                h.name = f.name;
                files.push(h);
                Ok(())
            }
            // `stream` starts every file before its data.
            Event::Data(d) => files.last_mut().ok_or_else(ApiError::internal)?.update(d),
            Event::Field(..) => Ok(()),
        },
    )
    .await
    .map_err(|e| formats::count(&app, e))?;
    if streamed.files == 0 {
        return Err(ApiError::bad_request("No files provided for signing"));
    }
    let made = formats::sign_all(&app, &caller, &resolved, &spec, files).await?;
    let receipt = formats::audit_made(
        &app,
        &caller,
        "sign-batch",
        &resolved,
        &spec,
        &made,
        request_params(&q),
    )
    .await?;
    let mut results = Vec::with_capacity(made.artefacts.len());
    for a in &made.artefacts {
        results.push(FileSignature {
            filename: a.name.clone(),
            success: true,
            signature: text_of(a)?,
        });
    }
    let total = results.len();
    let body = BatchSigned {
        results,
        total,
        successful: total,
        receipt: receipt.clone(),
    };
    let mut response = Json(body).into_response();
    key_header(&mut response, made.key_id);
    Ok(with_receipt(response, &receipt))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RpmQuery {
    /// The OpenPGP key id (16 hex digits) or fingerprint (40) of the key to sign with.
    keyid: Option<String>,
}

/// `POST /sign-rpm?keyid=…` with a multipart `file` (or the package as the body): the signed
/// package, `application/x-rpm`, named by the upload's basename.
#[utoipa::path(
    post,
    path = "/sign-rpm",
    tag = "api",
    operation_id = "albs_sign_rpm",
    description = ALBS,
    params(RpmQuery),
    request_body(
        description = "The package as a `file` part, or as the body",
        content(
            (super::openapi::FileUpload = "multipart/form-data"),
            (super::openapi::Binary = "application/x-rpm"),
            (super::openapi::Binary = "application/octet-stream"),
        ),
    ),
    responses(
        (status = 200, description = "The signed package, named by the upload's basename", content_type = "application/x-rpm", body = super::openapi::Binary),
        (status = 400, description = "Not an RPM package this daemon can sign, or a bad `keyid`"),
        (status = 403, description = "The caller may not sign with this key"),
        (status = 404, description = "No such key"),
        (status = 409, description = "The key is retired, or its budget is spent"),
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
    let Query(q) = q.map_err(|e| bad_query(&e))?;
    let (_, resolved) = key_for(&app, &caller, q.keyid.as_deref(), "sign-rpm").await?;
    let signed = super::rpm::sign_package(&app, &resolved, &headers, body).await?;
    let receipt = super::rpm::audit_package(
        &app,
        &caller,
        "sign-rpm",
        &resolved,
        &signed,
        serde_json::json!({ "surface": "albs-sign-file", "keyid": q.keyid }),
    )
    .await?;
    super::rpm::answer(signed, &receipt)
}

/// `GET /keys`: the OpenPGP key ids of the active keys the caller may sign with.
#[utoipa::path(
    get,
    path = "/keys",
    tag = "api",
    operation_id = "albs_keys",
    description = ALBS,
    responses((status = 200, description = "The key ids", body = KeyIds)),
)]
async fn keys(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let all = app.signing.keys(None).await?;
    let mut mine = Vec::new();
    let mut active = 0usize;
    for view in all.iter().filter(|v| v.state == "active") {
        active += 1;
        if caller.has_role(&format!("signer:{}", view.key.ring)) {
            mine.push(pgp_ids::key_packet(&view.key)?.key_id());
        }
    }
    mine.sort();
    let restricted = mine.len() < active;
    let receipt = app
        .audit
        .append(caller.record(
            "key.list",
            "keys".to_owned(),
            &serde_json::json!({ "surface": "albs-sign-file" }),
            None,
            "ok",
        ))
        .await?;
    let body = KeyIds {
        keys: mine,
        restricted,
        rpm_signing_available: true,
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

/// `GET /ping`: `"pong"`.
#[utoipa::path(
    get,
    path = "/ping",
    tag = "api",
    operation_id = "albs_ping",
    description = ALBS,
    responses((status = 200, description = "`\"pong\"`", body = String, content_type = "application/json", example = json!("pong"))),
)]
async fn ping(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let receipt = app
        .audit
        .append(caller.record(
            "ping",
            "daemon".to_owned(),
            &serde_json::json!({}),
            None,
            "ok",
        ))
        .await?;
    Ok(with_receipt(Json("pong").into_response(), &receipt))
}
