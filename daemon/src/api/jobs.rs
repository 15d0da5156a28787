//! api::jobs: HTTP endpoints of batch record signing — records, jobs, per-record proofs.
//!
//! Roles: `admin` or `records` adds records; `admin` or `signer:<ring>` creates and cancels
//! jobs on that ring; `admin`, `auditor` or `signer:<ring>` reads them; `admin` or `auditor`
//! reads per-record proofs. Writes and denials are audited; job reads are audited too, proof
//! reads are not (like the audit log's own read endpoints).

use std::pin::Pin;

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::input;
use super::pki::WithReceipt;
use super::{ApiError, Caller, with_receipt};
use crate::app::App;
use crate::audit::Receipt;
use crate::jobs::{JobView, JobsError};

/// The routes of this part of the API (merged into the mTLS API router).
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/v1/records", post(ingest))
        .route("/v1/records/{id}/proof", get(proof))
        .route("/v1/jobs", get(list).post(create))
        .route("/v1/jobs/{id}", get(read))
        .route("/v1/jobs/{id}/cancel", post(cancel))
}

impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> Self {
        let (error, receipt) = match e {
            JobsError::Invalid(m) => (ApiError::bad_request(m), None),
            JobsError::NotFound { what, receipt } => {
                (ApiError::not_found(format!("{what} not found")), receipt)
            }
            JobsError::Conflict { reason, receipt } => (
                ApiError::new(StatusCode::CONFLICT, "conflict", "Conflict", reason),
                receipt,
            ),
            JobsError::Store(e) => (ApiError::from(e), None),
            JobsError::Audit(e) => (ApiError::from(e), None),
            JobsError::Hsm(e) => (ApiError::from(e), None),
        };
        match receipt {
            Some(r) => error.with_receipt(r),
            None => error,
        }
    }
}

/// Refuses (and logs the refusal) unless the caller holds one of `roles`.
async fn require_any(
    app: &App,
    caller: &Caller,
    roles: &[String],
    action: &str,
    subject: &str,
) -> Result<(), ApiError> {
    if roles.iter().any(|r| caller.has_role(r)) {
        return Ok(());
    }
    let record = caller.record(
        action,
        subject.to_owned(),
        &serde_json::json!({}),
        None,
        "error:forbidden",
    );
    let receipt = app.audit.append(record).await?;
    Err(ApiError::forbidden(format!(
        "this operation needs one of the roles {}",
        roles
            .iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .with_receipt(receipt))
}

fn roles(names: &[&str]) -> Vec<String> {
    names.iter().map(|r| (*r).to_owned()).collect()
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
}

fn job_id(p: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    // Job ids are unguessable: a malformed one is simply not found.
    Uuid::parse_str(&path(p)?).map_err(|_| ApiError::not_found("job not found"))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        "Content too large",
        format!("a records request is limited to {limit} bytes"),
    )
}

/// Reads a body of at most `limit` bytes; a larger declared or actual length is 413.
async fn read_body(headers: &HeaderMap, mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut buf = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            tracing::debug!(error = %e, "request body read failed");
            ApiError::bad_request("the request body could not be read")
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// POST /v1/records

/// One record: `data` (base64) or `text` (UTF-8), exactly one.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RecordItem {
    /// The record's bytes, base64.
    data: Option<String>,
    /// The record as text.
    text: Option<String>,
}

/// Records to store for the next job.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RecordsBody {
    records: Vec<RecordItem>,
}

/// `{"records": [...]}` or `[...]`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum JsonRecords {
    Object(RecordsBody),
    Array(Vec<RecordItem>),
}

fn item_bytes(i: usize, item: RecordItem) -> Result<Vec<u8>, ApiError> {
    match (item.data, item.text) {
        (Some(d), None) => base64::engine::general_purpose::STANDARD
            .decode(d.as_bytes())
            .map_err(|_| ApiError::bad_request(format!("record {i}: `data` is not base64"))),
        (None, Some(t)) => Ok(t.into_bytes()),
        _ => Err(ApiError::bad_request(format!(
            "record {i}: give exactly one of `data` (base64) and `text`"
        ))),
    }
}

/// Parses a JSON body (`{"records": [...]}` or `[...]`) or NDJSON (one record object per
/// line) into record data. Nothing is stored unless every record parses.
fn parse_records(content_type: &str, raw: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
    let ndjson = matches!(
        content_type,
        "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
    );
    let items: Vec<RecordItem> = if ndjson {
        let text =
            std::str::from_utf8(raw).map_err(|_| ApiError::bad_request("NDJSON must be UTF-8"))?;
        let mut items = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if items.len() == crate::jobs::MAX_INGEST_RECORDS {
                return Err(ApiError::bad_request(format!(
                    "at most {} records per request",
                    crate::jobs::MAX_INGEST_RECORDS
                )));
            }
            items.push(
                input::parse_json(line.as_bytes(), input::Nul::Allowed).map_err(|e| {
                    ApiError::bad_request(format!("line {}: {}", n + 1, e.detail()))
                })?,
            );
        }
        items
    } else {
        // Record text is stored as bytes, so it may hold U+0000.
        match input::parse_json(raw, input::Nul::Allowed)? {
            JsonRecords::Object(b) => b.records,
            JsonRecords::Array(a) => a,
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| item_bytes(i, item))
        .collect()
}

/// Stores records (all or none) for the next job to sign. Needs `admin` or `records`; audited.
#[utoipa::path(
    post,
    path = "/v1/records",
    tag = "api",
    request_body(
        description = "JSON (`{\"records\": [...]}` or `[...]`), or NDJSON: one record object per line",
        content(
            (JsonRecords = "application/json"),
            (String = "application/x-ndjson"),
        ),
    ),
    responses(
        (status = 201, description = "The records' ids, in order", body = Ingested),
        (status = 400, description = "A malformed record; nothing was stored"),
        (status = 413, description = "Too many records or bytes"),
    ),
)]
async fn ingest(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_any(
        &app,
        &caller,
        &roles(&["admin", "records"]),
        "records.ingest",
        "records",
    )
    .await?;
    let raw = read_body(&headers, body, app.config.jobs.max_ingest_bytes).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let records = parse_records(&content_type, &raw)?;
    let (ids, receipt) = app.jobs.ingest(&caller.actor(), records).await?;
    let body = Ingested {
        count: ids.len(),
        ids,
        receipt: receipt.clone(),
    };
    Ok(with_receipt(
        (StatusCode::CREATED, Json(body)).into_response(),
        &receipt,
    ))
}

/// Stored records.
#[derive(Serialize, utoipa::ToSchema)]
struct Ingested {
    count: usize,
    ids: Vec<i64>,
    receipt: Receipt,
}

// ---------------------------------------------------------------------------------------------
// GET /v1/records/{id}/proof

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ProofQuery {
    /// Prove inclusion in the audit tree of this size (e.g. a checkpoint's), default: now.
    size: Option<u64>,
}

/// The proof that a record's signature is in its batch's tree, whose root is in the audit log.
/// Needs `admin` or `auditor`.
#[utoipa::path(
    get,
    path = "/v1/records/{id}/proof",
    tag = "api",
    params(("id" = i64, Path, description = "The record's id"), ProofQuery),
    responses(
        (status = 200, description = "The proof", body = crate::jobs::RecordProof),
        (status = 400, description = "Not a record id, or a bad `size`"),
        (status = 404, description = "No such record, or not signed yet"),
    ),
)]
async fn proof(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<i64>, PathRejection>,
    q: Result<Query<ProofQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    let subject = format!("record:{id}");
    require_any(
        &app,
        &caller,
        &roles(&["admin", "auditor"]),
        "record.proof",
        &subject,
    )
    .await?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    Ok(Json(app.jobs.proof(id, q.size).await?).into_response())
}

// ---------------------------------------------------------------------------------------------
// /v1/jobs

/// A job: sign every record stored and not yet signed with the keys of `ring`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    ring: String,
    /// Records per batch (one audit entry and one Merkle root each).
    #[schema(minimum = 1, example = 1000)]
    batch_size: i64,
}

fn job_answer(job: JobView, receipt: &Receipt) -> WithReceipt<JobView> {
    WithReceipt {
        inner: job,
        receipt: receipt.clone(),
    }
}

/// A job as read.
#[derive(Serialize, utoipa::ToSchema)]
struct JobRead {
    #[serde(flatten)]
    job: JobView,
    /// Why a running job cannot go on now: no key of its ring may sign its next batch (every
    /// budget spent, or outside its window); raising a budget resumes it. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    blocked: Option<String>,
    receipt: Receipt,
}

/// Jobs.
#[derive(Serialize, utoipa::ToSchema)]
struct JobList {
    jobs: Vec<JobView>,
    receipt: Receipt,
}

/// Starts a job (one runs at a time). Needs `admin` or `signer:<ring>`; audited.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "api",
    operation_id = "create_job",
    request_body = CreateJob,
    responses(
        (status = 201, description = "The job", body = WithReceipt<JobView>),
        (status = 400, description = "A bad batch size or body"),
        (status = 404, description = "No such ring"),
        (status = 409, description = "A job is running, there is nothing to sign, or no key of the ring may sign"),
        (status = 413, description = "The body is larger than allowed"),
    ),
)]
async fn create(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, 64 * 1024).await?;
    let req: CreateJob = input::parse_json(&raw, input::Nul::Refused)?;
    let who = roles(&["admin", &format!("signer:{}", req.ring)]);
    require_any(
        &app,
        &caller,
        &who,
        "jobs.create",
        &format!("ring:{}", req.ring),
    )
    .await?;
    let (job, receipt) = app
        .jobs
        .create(&caller.actor(), &req.ring, req.batch_size)
        .await?;
    Ok(with_receipt(
        (StatusCode::CREATED, Json(job_answer(job, &receipt))).into_response(),
        &receipt,
    ))
}

/// A job's settings and progress. Needs `admin`, `auditor` or `signer:<ring>`; audited.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "api",
    operation_id = "get_job",
    params(("id" = String, Path, description = "The job's id (UUID)")),
    responses(
        (status = 200, description = "The job", body = JobRead),
        (status = 404, description = "No such job"),
    ),
)]
async fn read(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(p)?;
    let subject = format!("job:{id}");
    let job = app.jobs.get(id).await?;
    let who = roles(&["admin", "auditor", &format!("signer:{}", job.ring)]);
    require_any(&app, &caller, &who, "jobs.get", &subject).await?;
    let blocked = app.jobs.blocked(&job).await?;
    let receipt = app
        .audit
        .append(caller.record("jobs.get", subject, &serde_json::json!({}), None, "ok"))
        .await?;
    let body = JobRead {
        job,
        blocked,
        receipt: receipt.clone(),
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Most jobs, newest first (default 100).
    limit: Option<i64>,
}

/// The jobs the caller may read, newest first. Audited.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "api",
    operation_id = "list_jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "The jobs", body = JobList),
        (status = 400, description = "A bad `limit`"),
    ),
)]
async fn list(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let all = caller.has_role("admin") || caller.has_role("auditor");
    let signer = caller.roles.iter().any(|r| r.starts_with("signer:"));
    if !all && !signer {
        require_any(
            &app,
            &caller,
            &roles(&["admin", "auditor", "signer:<ring>"]),
            "jobs.list",
            "jobs",
        )
        .await?;
    }
    let jobs = app.jobs.list(q.limit.unwrap_or(100)).await?;
    let visible: Vec<_> = jobs
        .into_iter()
        .filter(|j| all || caller.has_role(&format!("signer:{}", j.ring)))
        .collect();
    let receipt = app
        .audit
        .append(caller.record(
            "jobs.list",
            "jobs".into(),
            &serde_json::json!({}),
            None,
            "ok",
        ))
        .await?;
    let body = JobList {
        jobs: visible,
        receipt: receipt.clone(),
    };
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

/// Cancels a running job: batches in flight are not committed. Needs `admin` or
/// `signer:<ring>`; audited.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "api",
    operation_id = "cancel_job",
    params(("id" = String, Path, description = "The job's id (UUID)")),
    responses(
        (status = 200, description = "The cancelled job", body = WithReceipt<JobView>),
        (status = 404, description = "No such job"),
        (status = 409, description = "The job is not running"),
    ),
)]
async fn cancel(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(p)?;
    let job = app.jobs.get(id).await?;
    let who = roles(&["admin", &format!("signer:{}", job.ring)]);
    require_any(&app, &caller, &who, "jobs.cancel", &format!("job:{id}")).await?;
    let (job, receipt) = app.jobs.cancel(&caller.actor(), id).await?;
    Ok(with_receipt(
        Json(job_answer(job, &receipt)).into_response(),
        &receipt,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn records_parse_from_json_and_ndjson() {
        let json = br#"{"records":[{"data":"aGk="},{"text":"yo"}]}"#;
        assert_eq!(
            parse_records("application/json", json).unwrap(),
            vec![b"hi".to_vec(), b"yo".to_vec()]
        );
        let array = br#"[{"text":"a"}]"#;
        assert_eq!(parse_records("", array).unwrap(), vec![b"a".to_vec()]);
        let nd = b"{\"text\":\"a\"}\n\n{\"data\":\"Yg==\"}\n";
        assert_eq!(
            parse_records("application/x-ndjson", nd).unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        for bad in [
            &br#"{"records":[{"data":"%%%"}]}"#[..],
            br#"{"records":[{"data":"aGk=","text":"x"}]}"#,
            br#"{"records":[{}]}"#,
            br#"{"records":[{"bogus":1}]}"#,
            b"not json",
        ] {
            assert!(parse_records("application/json", bad).is_err());
        }
        assert!(parse_records("application/x-ndjson", b"{\"text\":1}\n").is_err());
    }
}
