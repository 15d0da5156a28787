//! hsm::bench: the raw token ceiling — C_Sign throughput per algorithm with 1..N sessions, no
//! HTTP, no database. Every later benchmark is reported as a ratio to these figures.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Hsm, HsmError, KeyAlgorithm, error};
use crate::crypto::{HashAlg, SignInput, SignatureScheme};

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Key algorithm.
    pub algorithm: KeyAlgorithm,
    /// Sessions (and threads, and keys) signing at once.
    pub sessions: usize,
    /// Signatures made.
    pub signatures: u64,
    /// Wall time of the measurement.
    pub seconds: f64,
    /// Signatures per second.
    pub per_second: f64,
}

/// Measures C_Sign throughput on `token` for each algorithm and session count. Each thread
/// opens its own session and generates its own session key (`CKA_TOKEN=false`, gone when the
/// session closes), then signs a 32-byte digest (ECDSA, RSA PKCS#1 v1.5 DigestInfo) or a
/// 32-byte message (Ed25519) in a loop for `duration`.
pub fn run(
    hsm: &Hsm,
    token: &str,
    algorithms: &[KeyAlgorithm],
    sessions: &[usize],
    duration: Duration,
) -> Result<Vec<BenchResult>, HsmError> {
    let mut results = Vec::new();
    for &algorithm in algorithms {
        for &n in sessions {
            results.push(measure(hsm, token, algorithm, n.max(1), duration)?);
        }
    }
    Ok(results)
}

fn measure(
    hsm: &Hsm,
    token_name: &str,
    algorithm: KeyAlgorithm,
    sessions: usize,
    duration: Duration,
) -> Result<BenchResult, HsmError> {
    let token = hsm.token(token_name)?.clone();
    let barrier = Arc::new(Barrier::new(sessions + 1));
    let mut workers = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let token = token.clone();
        let ctx = hsm.context().clone();
        let barrier = barrier.clone();
        workers.push(std::thread::spawn(move || -> Result<u64, HsmError> {
            let session = token.open_session(&ctx, false);
            let prepared = session.and_then(|session| {
                let label = format!("signetd-bench-{i}");
                let (mechanism, public, private) = algorithm.templates(&label, &[i as u8], false);
                session
                    .generate_key_pair(&mechanism, &public, &private)
                    .map(|(_, key)| (session, key))
                    .map_err(|e| error::map(e, &token.label))
            });
            // Everyone waits at the barrier, even after a failure, so nobody deadlocks.
            barrier.wait();
            let (session, key) = prepared?;
            // What the daemon itself would ask the token for: a SHA-256 digest for ECDSA and
            // RSA PKCS#1 v1.5 (as DigestInfo), a 32-byte message for Ed25519.
            let digest = HashAlg::Sha256.digest(b"signetd hsm-bench");
            let scheme = algorithm
                .default_scheme()
                .ok_or_else(|| HsmError::Rejected(format!("no scheme for {algorithm}")))?;
            let input = match scheme {
                SignatureScheme::Ed25519 => SignInput::Message(&digest),
                _ => SignInput::Digest(&digest),
            };
            let (mechanism, input) = scheme.prepare(input).map_err(HsmError::Scheme)?;
            let mechanism = super::cryptoki_mechanism(mechanism);
            let deadline = Instant::now() + duration;
            let mut count = 0u64;
            while Instant::now() < deadline {
                session
                    .sign(&mechanism, key, &input)
                    .map_err(|e| error::map(e, &token.label))?;
                count += 1;
            }
            Ok(count)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut total = 0;
    let mut first_error = None;
    for w in workers {
        match w.join() {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(_) => {
                first_error = first_error.or(Some(HsmError::Worker("bench thread panicked".into())))
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(BenchResult {
        algorithm,
        sessions,
        signatures: total,
        seconds,
        per_second: total as f64 / seconds,
    })
}
