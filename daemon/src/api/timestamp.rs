//! api::timestamp: `POST /v1/timestamp` (RFC 3161 over HTTP, §3.4: `application/timestamp-query`
//! in, `application/timestamp-reply` out) for callers with the `timestamper` (or `admin`) role,
//! and the TSA certificate on the public listener (`/tsa.pem`, `/tsa.der`).
//!
//! What a TSA client expects a TSA to refuse in the protocol gets the protocol's answer (a
//! `rejection` TimeStampResp with its failInfo, HTTP 200): a body that is not a request, an
//! unknown hash algorithm, a policy not offered, an extension. What concerns HTTP gets
//! problem+json: a wrong Content-Type (415), a body over 16 KiB (413), no role (403), the TSA
//! switched off (404), the database, token or log unavailable (503).

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{ApiError, Caller, require_role, with_receipt};
use crate::app::App;
use crate::formats::tsp;

/// The query's media type (RFC 3161 §3.4).
const QUERY_TYPE: &str = "application/timestamp-query";
/// The reply's media type.
const REPLY_TYPE: &str = "application/timestamp-reply";

/// The routes of this part of the mTLS API.
pub(super) fn routes() -> Router<App> {
    Router::new().route("/v1/timestamp", post(timestamp))
}

fn off() -> ApiError {
    ApiError::not_found("the time-stamping authority is switched off (tsa.enabled)")
}

/// An RFC 3161 time-stamp token for a digest. Needs `timestamper` or `admin`; every token
/// and every rejection is audited.
#[utoipa::path(
    post,
    path = "/v1/timestamp",
    tag = "api",
    request_body(content = super::openapi::Binary, content_type = "application/timestamp-query", description = "A DER TimeStampReq (RFC 3161 §2.4.1)"),
    responses(
        (status = 200, description = "A DER TimeStampResp: granted, or a `rejection` with its failInfo (a malformed request, an unknown hash, a policy not offered)", content_type = "application/timestamp-reply", body = super::openapi::Binary, headers(
            ("signetd-tsa-serial" = Option<String>, description = "The token's serial (granted)"),
            ("signetd-tsa-failure" = Option<String>, description = "The failInfo's name (rejected)"),
        )),
        (status = 404, description = "The TSA is switched off (`tsa.enabled`)"),
        (status = 413, description = "The request is larger than 16 KiB"),
        (status = 415, description = "Not application/timestamp-query"),
    ),
)]
async fn timestamp(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !app.ca.tsa_enabled() {
        return Err(off());
    }
    if !caller.has_role("admin") {
        require_role(&app, &caller, "timestamper", "timestamp", "tsa").await?;
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media.as_deref() != Some(QUERY_TYPE) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("a time-stamp request is sent as {QUERY_TYPE}"),
        ));
    }
    let request = super::sign::read_limited(
        &headers,
        body,
        tsp::MAX_REQUEST_LEN as u64,
        "a time-stamp request",
    )
    .await?;
    let answer = app.ca.timestamp(&caller.actor(), &request).await?;
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(REPLY_TYPE))],
        answer.der,
    )
        .into_response();
    match &answer.outcome {
        Ok((serial, receipt)) => {
            if let Ok(v) = HeaderValue::from_str(&serial.to_string()) {
                response.headers_mut().insert("signetd-tsa-serial", v);
            }
            response = with_receipt(response, receipt);
        }
        Err(rejection) => {
            if let Ok(v) = HeaderValue::from_str(rejection.failure.name()) {
                response.headers_mut().insert("signetd-tsa-failure", v);
            }
        }
    }
    Ok(response)
}

/// `GET /tsa.pem` (public): the TSA's current certificate.
#[utoipa::path(
    get,
    path = "/tsa.pem",
    tag = "public",
    responses(
        (status = 200, description = "The TSA certificate", content_type = "application/x-pem-file", body = String),
        (status = 404, description = "The TSA is switched off"),
    ),
)]
pub(super) async fn tsa_pem(State(app): State<App>) -> Result<Response, ApiError> {
    let der = app.ca.tsa_certificate().ok_or_else(off)?;
    let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &der)
        .map_err(|_| ApiError::internal())?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

/// `GET /tsa.der` (public): the TSA's current certificate, DER.
#[utoipa::path(
    get,
    path = "/tsa.der",
    tag = "public",
    responses(
        (status = 200, description = "The TSA certificate", content_type = "application/pkix-cert", body = super::openapi::Binary),
        (status = 404, description = "The TSA is switched off"),
    ),
)]
pub(super) async fn tsa_der(State(app): State<App>) -> Result<Response, ApiError> {
    let der = app.ca.tsa_certificate().ok_or_else(off)?;
    Ok(([(header::CONTENT_TYPE, "application/pkix-cert")], der).into_response())
}
