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
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::sign::{audit_read, json_body, key_id, read_limited, require_reader};
use super::{ApiError, Caller, require_role, with_receipt};
use crate::app::App;
use crate::audit::Receipt;
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

/// A key's budget and window, and how much is left.
#[derive(Serialize, utoipa::ToSchema)]
struct LimitsBody {
    key_id: Uuid,
    /// The budget that applies (the key's own, else its ring's); null: none.
    max_signatures: Option<i64>,
    /// The key's own budget.
    own_max_signatures: Option<i64>,
    /// The ring's per-key budget.
    ring_max_signatures: Option<i64>,
    /// Signatures counted against the budget.
    signatures_spent: i64,
    /// Signatures left; null: no budget.
    remaining: Option<i64>,
    /// RFC 3339; null: no start.
    usable_from: Option<String>,
    /// RFC 3339; null: no end.
    usable_until: Option<String>,
    receipt: Receipt,
}

fn limits_body(id: Uuid, l: &KeyLimits, receipt: &Receipt) -> LimitsBody {
    LimitsBody {
        key_id: id,
        max_signatures: l.max(),
        own_max_signatures: l.own_max,
        ring_max_signatures: l.ring_max,
        signatures_spent: l.spent,
        remaining: l.max().map(|m| (m - l.spent).max(0)),
        usable_from: rfc3339(l.usable_from),
        usable_until: rfc3339(l.usable_until),
        receipt: receipt.clone(),
    }
}

/// A key's signature budget and validity window, and how much is left. Needs `signer:<ring>`
/// or `admin`; audited.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/limits",
    tag = "api",
    params(("id" = String, Path, description = "The key's id (UUID)")),
    responses(
        (status = 200, description = "The limits", body = LimitsBody),
        (status = 404, description = "No such key"),
    ),
)]
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
    let body = limits_body(id, &limits, &receipt);
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

/// A key's own limits; each may be null or left out (no such limit of its own).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyLimitsRequest {
    /// Most signatures the key may make in all.
    #[serde(default)]
    #[schema(minimum = 0, example = 100000)]
    max_signatures: Option<i64>,
    /// RFC 3339: not before.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    usable_from: Option<OffsetDateTime>,
    /// RFC 3339: not from then on (after `usable_from`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2027-12-31T00:00:00Z")]
    usable_until: Option<OffsetDateTime>,
}

/// `PUT /v1/keys/ID/limits` `{"max_signatures", "usable_from", "usable_until"}` (each may be
/// null or left out: no such limit of the key's own).
#[utoipa::path(
    put,
    path = "/v1/keys/{id}/limits",
    tag = "api",
    params(("id" = String, Path, description = "The key's id (UUID)")),
    request_body = KeyLimitsRequest,
    responses(
        (status = 200, description = "The limits now", body = LimitsBody),
        (status = 400, description = "A negative budget, a window that ends before it starts, a bad body"),
        (status = 404, description = "No such key"),
        (status = 413, description = "The body is larger than allowed"),
    ),
)]
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
    let body = limits_body(id, &limits, &receipt);
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

/// A ring's per-key budget.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RingLimitsRequest {
    /// The budget of each key of the ring that has none of its own; null: none.
    #[serde(default)]
    #[schema(minimum = 0)]
    key_max_signatures: Option<i64>,
}

/// A ring's per-key budget, as set.
#[derive(Serialize, utoipa::ToSchema)]
struct RingLimitsBody {
    ring: String,
    key_max_signatures: Option<i64>,
    receipt: Receipt,
}

/// `PUT /v1/rings/NAME/limits` `{"key_max_signatures"}`: the budget of each key of the ring
/// that has none of its own (null: none).
#[utoipa::path(
    put,
    path = "/v1/rings/{ring}/limits",
    tag = "api",
    params(("ring" = String, Path, description = "The ring's name")),
    request_body = RingLimitsRequest,
    responses(
        (status = 200, description = "The ring's per-key budget now", body = RingLimitsBody),
        (status = 400, description = "A negative budget or a bad body"),
        (status = 404, description = "No such ring"),
        (status = 413, description = "The body is larger than allowed"),
    ),
)]
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
    let body = RingLimitsBody {
        ring,
        key_max_signatures: req.key_max_signatures,
        receipt: receipt.clone(),
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}
