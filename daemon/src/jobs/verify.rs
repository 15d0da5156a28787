//! jobs::verify: the daemon's check of a whole job — every signature verified in software over
//! its record with its batch's key, every batch root recomputed and found in the audit log,
//! every record of a done job signed exactly once.

use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use super::{JobsError, batch_subject, not_found, scheme_for, tree};
use crate::crypto::SignInput;
use crate::store::Store;

/// What `signetd jobs verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The job.
    pub job: Uuid,
    /// Its state.
    pub state: String,
    /// Batches checked (the done ones).
    pub batches: u64,
    /// Signatures checked.
    pub signatures: u64,
    /// Records in the job's ranges still unsigned (0 for a done job).
    pub unsigned: i64,
    /// Problems, first ones first (at most 100 listed).
    pub problems: Vec<String>,
    /// Problems in all.
    pub problem_count: u64,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problem_count == 0
    }
}

fn note(report: &mut VerifyReport, problem: String) {
    report.problem_count += 1;
    if report.problems.len() < 100 {
        report.problems.push(problem);
    }
}

pub(super) async fn run(store: &Store, id: Uuid) -> Result<VerifyReport, JobsError> {
    let job = store
        .job(id)
        .await?
        .ok_or_else(|| not_found(format!("job {id}")))?;
    let batches = store.done_batches(id).await?;
    let mut report = VerifyReport {
        job: id,
        state: job.state.clone(),
        batches: batches.len() as u64,
        signatures: 0,
        unsigned: 0,
        problems: Vec::new(),
        problem_count: 0,
    };
    // One batch per CPU at a time: verification is CPU-bound, and each batch is held whole.
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for batch in batches {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| JobsError::Invalid(e.to_string()))?;
        let store = store.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let subject = batch_subject(batch.job, batch.seq);
            let mut problems = Vec::new();
            let signed = store.batch_signatures(batch.id).await?;
            let audit_seq = store.batch_audit_seq(&subject).await?;
            let audit_root = match audit_seq {
                Some(seq) => store
                    .audit_entries(seq, 1)
                    .await?
                    .into_iter()
                    .next()
                    .and_then(|e| e.output_digest),
                None => None,
            };
            let count = signed.len() as u64;
            let key = batch.key.clone();
            let checked = tokio::task::spawn_blocking(move || {
                let mut problems = Vec::new();
                let Ok(scheme) = scheme_for(key.algorithm) else {
                    problems.push(format!("{subject}: key {} cannot sign", key.label));
                    return (problems, Vec::new());
                };
                // Parsed once for the whole batch.
                let verifier = crate::crypto::VerifyingKey::new(key.public_key.clone());
                let mut hashes = Vec::with_capacity(signed.len());
                for (i, (s, data)) in signed.iter().enumerate() {
                    if s.leaf_index as usize != i {
                        problems.push(format!("{subject}: leaf {i} has index {}", s.leaf_index));
                    }
                    if verifier
                        .verify(scheme, SignInput::Message(data), &s.signature)
                        .is_err()
                    {
                        problems.push(format!(
                            "record {}: the signature does not verify with key {}",
                            s.record, key.label
                        ));
                    }
                    hashes.push(tree::leaf_hash(s.record, &s.signature));
                }
                (problems, hashes)
            })
            .await
            .map_err(|e| JobsError::Invalid(format!("verification worker: {e}")))?;
            let (found, hashes) = checked;
            problems.extend(found);
            let root = tree::root(&hashes);
            let subject = batch_subject(batch.job, batch.seq);
            if root != batch.root {
                problems.push(format!(
                    "{subject}: stored root differs from its signatures"
                ));
            }
            if count != u64::try_from(batch.signed).unwrap_or(0) {
                problems.push(format!(
                    "{subject}: {count} signatures stored, {} recorded",
                    batch.signed
                ));
            }
            match audit_root {
                Some(r) if r == root => {}
                Some(_) => {
                    problems.push(format!("{subject}: the audit entry carries another root"))
                }
                None => problems.push(format!("{subject}: no audit entry with its root")),
            }
            Ok::<_, JobsError>((count, problems))
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (count, problems) =
            done.map_err(|e| JobsError::Invalid(format!("verification task: {e}")))??;
        report.signatures += count;
        for p in problems {
            note(&mut report, p);
        }
    }
    let (unsigned, stored) = store.job_coverage(id).await?;
    report.unsigned = unsigned;
    if job.state == "done" && unsigned != 0 {
        note(
            &mut report,
            format!("the job is done but {unsigned} of its records are unsigned"),
        );
    }
    if u64::try_from(stored).unwrap_or(0) != report.signatures {
        let problem = format!(
            "{stored} signatures belong to the job, {} to its done batches",
            report.signatures
        );
        note(&mut report, problem);
    }
    Ok(report)
}
