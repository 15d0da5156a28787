//! api::limits: signature budgets and validity windows of ring keys —
//! `GET /v1/keys/ID/limits` (readers of the ring: how much is left), `PUT /v1/keys/ID/limits`
//! and `PUT /v1/rings/NAME/limits` (admins). A key past its budget or outside its window signs
//! no more: 409 with the reason (`api::sign`), counted exactly across daemons
//! (`Store::spend_signatures`).

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use time::OffsetDateTime;

use super::sign::{audit_read, json_body, key_id, read_limited, receipt_json, require_reader};
use super::{ApiError, Caller, require_role, with_receipt};
use crate::app::App;
use crate::store::rings::KeyLimits;

/// The routes of this part of the mTLS API.
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/v1/keys/{id}/limits", get(get_limits).put(set_limits))
        .route("/v1/rings/{ring}/limits", put(set_ring_limits))
}

const MAX_BODY: u64 = 4096;

fn rfc3339(t: Option<OffsetDateTime>) -> Option<String> {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
}

fn limits_json(l: &KeyLimits) -> serde_json::Value {
    serde_json::json!({
        "max_signatures": l.max(),
        "own_max_signatures": l.own_max,
        "ring_max_signatures": l.ring_max,
        "signatures_spent": l.spent,
        "remaining": l.max().map(|m| (m - l.spent).max(0)),
        "usable_from": rfc3339(l.usable_from),
        "usable_until": rfc3339(l.usable_until),
    })
}

async fn get_limits(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = key_id(p)?;
    let view = app.signing.key(id).await?;
    let subject = format!("key:{id}");
    require_reader(&app, &caller, &view.key.ring, "key.limits.get", &subject).await?;
    let limits = app
        .signing
        .key_limits(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such key"))?;
    let receipt = audit_read(
        &app,
        &caller,
        "key.limits.get",
        subject,
        serde_json::json!({}),
    )
    .await?;
    let mut body = limits_json(&limits);
    body["key_id"] = serde_json::json!(id);
    body["receipt"] = receipt_json(&receipt);
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyLimitsRequest {
    #[serde(default)]
    max_signatures: Option<i64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    usable_from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    usable_until: Option<OffsetDateTime>,
}

/// `PUT /v1/keys/ID/limits` `{"max_signatures", "usable_from", "usable_until"}` (each may be
/// null or left out: no such limit of the key's own).
async fn set_limits(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = key_id(p)?;
    require_role(&app, &caller, "admin", "key.limits", &format!("key:{id}")).await?;
    let raw = read_limited(&headers, body, MAX_BODY, "a limits request").await?;
    let req: KeyLimitsRequest = json_body(&raw)?;
    let receipt = app
        .signing
        .set_key_limits(
            &caller.actor(),
            id,
            req.max_signatures,
            req.usable_from,
            req.usable_until,
        )
        .await?;
    let limits = app
        .signing
        .key_limits(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such key"))?;
    let mut body = limits_json(&limits);
    body["key_id"] = serde_json::json!(id);
    body["receipt"] = receipt_json(&receipt);
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RingLimitsRequest {
    #[serde(default)]
    key_max_signatures: Option<i64>,
}

/// `PUT /v1/rings/NAME/limits` `{"key_max_signatures"}`: the budget of each key of the ring
/// that has none of its own (null: none).
async fn set_ring_limits(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(ring) = p.map_err(|_| ApiError::not_found("no such ring"))?;
    require_role(
        &app,
        &caller,
        "admin",
        "ring.limits",
        &format!("ring:{ring}"),
    )
    .await?;
    let raw = read_limited(&headers, body, MAX_BODY, "a limits request").await?;
    let req: RingLimitsRequest = json_body(&raw)?;
    let receipt = app
        .signing
        .set_ring_limits(&caller.actor(), &ring, req.key_max_signatures)
        .await?;
    let body = serde_json::json!({
        "ring": ring,
        "key_max_signatures": req.key_max_signatures,
        "receipt": receipt_json(&receipt),
    });
    Ok(with_receipt(Json(body).into_response(), &receipt))
}
