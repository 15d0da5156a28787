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
            AuditError::Corrupt(_) | AuditError::Key(_) => {
                tracing::error!(error = %e, "audit log error");
                ApiError::internal()
            }
        }
    }
}

#[derive(Serialize)]
pub(super) struct CheckpointBody {
    size: u64,
    root: String,
    note: String,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EntriesQuery {
    from: Option<u64>,
    limit: Option<u64>,
    /// Seconds to wait for the first entry at or after `from` (follow mode).
    wait: Option<u64>,
}

/// One entry as served: its fields, the canonical leaf (base64) and the leaf hash.
#[derive(Serialize)]
pub(super) struct EntryBody {
    seq: u64,
    #[serde(with = "time::serde::rfc3339")]
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

#[derive(Serialize)]
pub(super) struct EntriesBody {
    entries: Vec<EntryBody>,
    /// The next `from` to ask for.
    next: u64,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InclusionQuery {
    seq: u64,
    size: Option<u64>,
}

pub(super) async fn inclusion(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<crate::audit::InclusionProof>, ApiError> {
    require_role(&app, &caller, ROLE, "audit.proof", "audit").await?;
    let q = query(q)?;
    Ok(Json(app.audit.inclusion_proof(q.seq, q.size).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsistencyQuery {
    from: u64,
    to: u64,
}

pub(super) async fn consistency(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<crate::audit::ConsistencyProof>, ApiError> {
    require_role(&app, &caller, ROLE, "audit.proof", "audit").await?;
    let q = query(q)?;
    Ok(Json(app.audit.consistency_proof(q.from, q.to).await?))
}

#[derive(Serialize)]
pub(super) struct KeyBody {
    name: String,
    algorithm: &'static str,
    key_id: String,
    public_key_pem: String,
    /// The verifier key in the format of Go's golang.org/x/mod/sumdb/note.
    vkey: String,
}

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
