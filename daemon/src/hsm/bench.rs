//! hsm::bench: the raw token ceiling — C_Sign throughput per algorithm with 1..N sessions, no
//! HTTP, no database. Every later benchmark is reported as a ratio to these figures. Also
//! measures, apart, what the daemon adds to every signature on its own CPU: the software
//! verification before release (invariant 8), and the crypto floor the two make together: what
//! the machine's cores could release if they did nothing but sign and verify.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Hsm, HsmError, KeyAlgorithm, error};
use crate::crypto::{HashAlg, SignInput};

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
    /// Whether the keys were token objects (like the daemon's keys) or session objects.
    pub token_keys: bool,
    /// Software verifications per second on one thread with the daemon's verifier, measured
    /// after the signing (not at the same time).
    pub verify_per_second: f64,
    /// The cores of this machine (`available_parallelism`), the N of the floor.
    pub cores: usize,
    /// The crypto floor F = 1 / (1/S + 1/(N·V)): signatures per second the machine releases
    /// when every core does nothing but the token's signature (S with these sessions) and its
    /// verification before release (V per core). Every throughput benchmark is reported as a
    /// ratio to it.
    pub floor_per_second: f64,
    /// CPU time the token spends on one signature, in µs: the busy threads (sessions, at most
    /// the cores) over S. What "less the token's signing time" subtracts from host cost.
    pub sign_cpu_us: f64,
}

/// The crypto floor of `cores` cores for a token signing `sign` per second and a verifier doing
/// `verify` per second on one core: F = 1 / (1/S + 1/(N·V)).
pub fn floor(sign: f64, verify: f64, cores: usize) -> f64 {
    if sign <= 0.0 || verify <= 0.0 {
        return 0.0;
    }
    1.0 / (1.0 / sign + 1.0 / (cores.max(1) as f64 * verify))
}

/// The cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Measures C_Sign throughput on `token` for each algorithm and session count. Each thread
/// opens its own session and generates its own key, then signs what the daemon would ask the
/// token for under the algorithm's default scheme — the digest of a short message under its
/// hash (ECDSA; P-384 uses SHA-384), its DigestInfo (RSA PKCS#1 v1.5), or a 32-byte message
/// (Ed25519) — in a loop for `duration`. Session
/// keys (`CKA_TOKEN=false`) vanish with their session; with `token_keys` the keys are token
/// objects, as the daemon's are (a token may do more work per signature for those: SoftHSM2
/// checks its object store), and are destroyed afterwards.
pub fn run(
    hsm: &Hsm,
    token: &str,
    algorithms: &[KeyAlgorithm],
    sessions: &[usize],
    duration: Duration,
    token_keys: bool,
) -> Result<Vec<BenchResult>, HsmError> {
    let mut results = Vec::new();
    for &algorithm in algorithms {
        for &n in sessions {
            results.push(measure(
                hsm,
                token,
                algorithm,
                n.max(1),
                duration,
                token_keys,
            )?);
        }
    }
    Ok(results)
}

/// What one signing thread leaves behind: its count, and its key's public key and last
/// signature for the verification measurement.
struct Signed {
    count: u64,
    spki: Vec<u8>,
    signature: Vec<u8>,
}

fn measure(
    hsm: &Hsm,
    token_name: &str,
    algorithm: KeyAlgorithm,
    sessions: usize,
    duration: Duration,
    token_keys: bool,
) -> Result<BenchResult, HsmError> {
    let token = hsm.token(token_name)?.clone();
    let barrier = Arc::new(Barrier::new(sessions + 1));
    let mut workers = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let token = token.clone();
        let ctx = hsm.context().clone();
        let barrier = barrier.clone();
        workers.push(std::thread::spawn(move || -> Result<Signed, HsmError> {
            let session = token.open_session(&ctx, token_keys);
            let prepared = session.and_then(|session| {
                let label = format!("signetd-bench-{}-{i}", std::process::id());
                let (mechanism, public, private) =
                    algorithm.templates(&label, &[i as u8], token_keys);
                session
                    .generate_key_pair(&mechanism, &public, &private)
                    .map(|(public, key)| (session, public, key))
                    .map_err(|e| error::map(e, &token.label))
            });
            // Everyone waits at the barrier, even after a failure, so nobody deadlocks.
            barrier.wait();
            let (session, public, key) = prepared?;
            let scheme = algorithm
                .default_scheme()
                .ok_or_else(|| HsmError::Rejected(format!("no scheme for {algorithm}")))?;
            let message = bench_message();
            let (mechanism, input) = scheme
                .prepare(SignInput::Message(&message))
                .map_err(HsmError::Scheme)?;
            let mechanism = super::cryptoki_mechanism(mechanism);
            let deadline = Instant::now() + duration;
            let mut count = 0u64;
            let mut signature = Vec::new();
            let signed = loop {
                if Instant::now() >= deadline {
                    break Ok(());
                }
                match session.sign(&mechanism, key, &input) {
                    Ok(s) => signature = s,
                    Err(e) => break Err(error::map(e, &token.label)),
                }
                count += 1;
            };
            let attributes = session
                .get_attributes(public, algorithm.public_attributes())
                .map_err(|e| error::map(e, &token.label));
            if token_keys {
                // Token objects outlive the session: remove them whatever happened.
                let _ = session.destroy_object(key);
                let _ = session.destroy_object(public);
            }
            signed?;
            Ok(Signed {
                count,
                spki: algorithm.spki_from_attributes(&attributes?)?,
                signature: scheme
                    .finish(&signature)
                    .map_err(|e| HsmError::Rejected(e.to_string()))?,
            })
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut total = 0;
    let mut first_error = None;
    let mut sample = None;
    for w in workers {
        match w.join() {
            Ok(Ok(signed)) => {
                total += signed.count;
                sample = Some(signed);
            }
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
    let verify_per_second = match sample {
        Some(signed) => measure_verify(algorithm, &signed, duration.min(Duration::from_secs(1)))?,
        None => 0.0,
    };
    let per_second = total as f64 / seconds;
    let cores = cores();
    Ok(BenchResult {
        algorithm,
        sessions,
        signatures: total,
        seconds,
        per_second,
        token_keys,
        verify_per_second,
        cores,
        floor_per_second: floor(per_second, verify_per_second, cores),
        sign_cpu_us: if per_second > 0.0 {
            1e6 * sessions.min(cores) as f64 / per_second
        } else {
            0.0
        },
    })
}

/// Verifications per second of one token signature on this thread, as the daemon verifies
/// (the key parsed once; the message hashed each time, as a record's data is).
fn measure_verify(
    algorithm: KeyAlgorithm,
    signed: &Signed,
    duration: Duration,
) -> Result<f64, HsmError> {
    let scheme = algorithm
        .default_scheme()
        .ok_or_else(|| HsmError::Rejected(format!("no scheme for {algorithm}")))?;
    let verifier = crate::crypto::VerifyingKey::new(signed.spki.clone());
    let message = bench_message();
    let input = SignInput::Message(&message);
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < duration {
        verifier
            .verify(scheme, input, &signed.signature)
            .map_err(|e| HsmError::Rejected(e.to_string()))?;
        count += 1;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// The message every benchmark signature is over: 32 bytes.
fn bench_message() -> Vec<u8> {
    HashAlg::Sha256.digest(b"signetd hsm-bench")
}

#[cfg(test)]
mod tests {
    use super::floor;

    #[test]
    fn the_floor_adds_the_signature_and_its_share_of_verification() {
        // 2 cores: 40,000 sign/s and 20,000 verify/s per core: 1/(1/40000 + 1/40000).
        assert!((floor(40_000.0, 20_000.0, 2) - 20_000.0).abs() < 1e-6);
        // RSA: verification nearly free, the floor is just under S.
        let f = floor(3_500.0, 65_000.0, 2);
        assert!(f < 3_500.0 && f > 3_400.0, "{f}");
        assert_eq!(floor(0.0, 1.0, 2), 0.0);
    }
}
