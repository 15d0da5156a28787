//! api::audit: the auditor's endpoints — latest checkpoint, entries (with long-poll follow),
//! inclusion and consistency proofs, and the checkpoint public key. Only the `auditor` role
//! reads them. Allowed reads are not logged (reading the log changes nothing, and logging
//! reads would feed followers an endless stream of their own reads); denied ones are.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{ApiError, Caller, require_role};
use crate::app::App;
use crate::audit::AuditError;

const ROLE: &str = "auditor";
/// Most entries per page.
const MAX_LIMIT: u64 = 1000;

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Unavailable(_) => {
                tracing::warn!(error = %e, "audit log unavailable");
                ApiError::unavailable(
                    "the audit log cannot be written now; nothing was done; retry later",
                )
            }
            AuditError::OutOfRange(m) => ApiError::bad_request(m),
            AuditError::Encoding(m) => ApiError::bad_request(m),
            AuditError::Operation { error, .. } => ApiError::from(error),
            AuditError::CallerRefused { reason, receipt } => {
                ApiError::forbidden(reason).with_receipt(receipt)
            }
            AuditError::Corrupt(_) | AuditError::Key(_) => {
                tracing::error!(error = %e, "audit log error");
                ApiError::internal()
            }
        }
    }
}

/// The newest signed checkpoint.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct CheckpointBody {
    /// The tree size it commits to.
    size: u64,
    /// The RFC 6962 root of the first `size` entries, hex.
    root: String,
    /// The checkpoint as a C2SP signed note (text), verifiable with the log's `vkey`.
    note: String,
}

const AUDITOR: &str = "Needs the `auditor` role. Allowed reads are not logged; denied ones are.";

/// The newest signed checkpoint of the audit log.
#[utoipa::path(
    get,
    path = "/v1/audit/checkpoint",
    tag = "api",
    description = AUDITOR,
    responses(
        (status = 200, description = "The newest checkpoint", body = CheckpointBody),
        (status = 404, description = "No checkpoint has been signed yet"),
    ),
)]
pub(super) async fn checkpoint(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<CheckpointBody>, ApiError> {
    require_role(&app, &caller, ROLE, "audit.checkpoint", "audit").await?;
    let cp = app
        .audit
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ApiError::not_found("no checkpoint has been signed yet"))?;
    Ok(Json(CheckpointBody {
        size: cp.size,
        root: hex::encode(cp.root),
        note: cp.note,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EntriesQuery {
    /// The first sequence number (default 0).
    from: Option<u64>,
    /// Most entries to return (default 100; at most 1,000).
    limit: Option<u64>,
    /// Seconds to wait for the first entry at or after `from` (follow mode); at most the
    /// configured `audit.max_wait_secs` (default 60).
    wait: Option<u64>,
}

/// One entry as served: its fields, the canonical leaf (base64) and the leaf hash.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct EntryBody {
    seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    time: OffsetDateTime,
    actor_fingerprint: String,
    actor_account: String,
    action: String,
    subject: String,
    params_digest: String,
    output_digest: Option<String>,
    result: String,
    leaf: String,
    leaf_hash: String,
}

/// A page of entries.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct EntriesBody {
    entries: Vec<EntryBody>,
    /// The next `from` to ask for.
    next: u64,
}

/// Entries of the audit log from `from` on; with `wait`, a long poll for the next one.
#[utoipa::path(
    get,
    path = "/v1/audit/entries",
    tag = "api",
    description = AUDITOR,
    params(EntriesQuery),
    responses(
        (status = 200, description = "The entries (possibly none) and the next `from`", body = EntriesBody),
        (status = 400, description = "A bad query, or `from` past any sequence number the log can hold"),
    ),
)]
pub(super) async fn entries(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<EntriesQuery>, QueryRejection>,
) -> Result<Json<EntriesBody>, ApiError> {
    require_role(&app, &caller, ROLE, "audit.entries", "audit").await?;
    let q = query(q)?;
    let from = q.from.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let wait = Duration::from_secs(q.wait.unwrap_or(0));
    let found = app.audit.entries(from, limit, wait).await?;
    let mut entries = Vec::with_capacity(found.len());
    for e in found {
        let leaf = e.encode().map_err(|err| {
            tracing::error!(seq = e.seq, error = %err, "stored entry cannot be encoded");
            ApiError::internal()
        })?;
        let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.time_micros) * 1000)
            .map_err(|_| ApiError::internal())?;
        entries.push(EntryBody {
            seq: e.seq,
            time,
            leaf_hash: hex::encode(signet_merkle::hash_leaf(&leaf)),
            leaf: base64::engine::general_purpose::STANDARD.encode(&leaf),
            actor_fingerprint: e.actor_fingerprint,
            actor_account: e.actor_account,
            action: e.action,
            subject: e.subject,
            params_digest: hex::encode(e.params_digest),
            output_digest: e.output_digest.map(hex::encode),
            result: e.result,
        });
    }
    let next = entries.last().map_or(from, |e| e.seq + 1);
    Ok(Json(EntriesBody { entries, next }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct InclusionQuery {
    /// The entry's sequence number.
    seq: u64,
    /// The tree size to prove against (default: the newest checkpoint's).
    size: Option<u64>,
}

/// An RFC 6962 inclusion proof of entry `seq` in the tree of `size`.
#[utoipa::path(
    get,
    path = "/v1/audit/proof/inclusion",
    tag = "api",
    description = AUDITOR,
    params(InclusionQuery),
    responses(
        (status = 200, description = "The proof", body = crate::audit::InclusionProof),
        (status = 400, description = "`seq` or `size` out of range"),
        (status = 404, description = "No checkpoint has been signed yet"),
    ),
)]
pub(super) async fn inclusion(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<crate::audit::InclusionProof>, ApiError> {
    require_role(&app, &caller, ROLE, "audit.proof", "audit").await?;
    let q = query(q)?;
    Ok(Json(app.audit.inclusion_proof(q.seq, q.size).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ConsistencyQuery {
    /// The older tree size.
    from: u64,
    /// The newer tree size.
    to: u64,
}

/// An RFC 6962 consistency proof between the trees of sizes `from` and `to`.
#[utoipa::path(
    get,
    path = "/v1/audit/proof/consistency",
    tag = "api",
    description = AUDITOR,
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "The proof", body = crate::audit::ConsistencyProof),
        (status = 400, description = "The sizes are out of range"),
    ),
)]
pub(super) async fn consistency(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<crate::audit::ConsistencyProof>, ApiError> {
    require_role(&app, &caller, ROLE, "audit.proof", "audit").await?;
    let q = query(q)?;
    Ok(Json(app.audit.consistency_proof(q.from, q.to).await?))
}

/// The checkpoint signing key.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuditKey)]
pub(super) struct KeyBody {
    name: String,
    algorithm: &'static str,
    key_id: String,
    public_key_pem: String,
    /// The verifier key in the format of Go's golang.org/x/mod/sumdb/note.
    vkey: String,
}

/// The public key that signs the log's checkpoints (Ed25519).
#[utoipa::path(
    get,
    path = "/v1/audit/key",
    tag = "api",
    description = AUDITOR,
    responses((status = 200, description = "The checkpoint key", body = KeyBody)),
)]
pub(super) async fn key(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> Result<(StatusCode, Json<KeyBody>), ApiError> {
    require_role(&app, &caller, ROLE, "audit.key", "audit").await?;
    let public = app.audit.public_key();
    let name = app.audit.origin().to_owned();
    let key_id = signet_merkle::key_id(&name, &public);
    let pem = {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map_err(|_| ApiError::internal())?
            .to_public_key_pem(der::pem::LineEnding::LF)
            .map_err(|_| ApiError::internal())?
    };
    let mut raw = vec![0x01];
    raw.extend_from_slice(&public);
    Ok((
        StatusCode::OK,
        Json(KeyBody {
            vkey: format!(
                "{name}+{}+{}",
                hex::encode(key_id),
                base64::engine::general_purpose::STANDARD.encode(raw)
            ),
            name,
            algorithm: "ed25519",
            key_id: hex::encode(key_id),
            public_key_pem: pem,
        }),
    ))
}
