//! The parsers of untrusted input (`parse_csr`, `parse_ocsp_request`) never panic: a seeded,
//! deterministic run over random bytes and mutations of real requests made by `openssl`.
//!
//! This is the stable, always-run companion of the cargo-fuzz targets in `certs/fuzz/`.
//! The `openssl` binary is required for the seeds: without it this test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::openssl_ok;
use signet_certs::{CertError, CsrLimits, parse_csr, parse_ocsp_request};

/// SplitMix64: tiny, seedable, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

/// One to four random edits of `seed`, biased towards the DER structure: bit flips, byte
/// changes, length bytes pushed up or down, insertions, deletions, truncation, duplicated or
/// spliced runs.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        if data.is_empty() {
            data.push(rng.byte());
        }
        let at = rng.below(data.len());
        match rng.below(9) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = rng.byte(),
            2 => {
                // A length byte after a tag: one more or one less, or a long form.
                let after_tag = data
                    .iter()
                    .skip(at)
                    .position(|&b| matches!(b, 0x02..=0x06 | 0x30 | 0x31 | 0xa0..=0xa3))
                    .map(|p| at + p + 1);
                if let Some(len_at) = after_tag.filter(|&i| i < data.len()) {
                    data[len_at] = match rng.below(4) {
                        0 => data[len_at].wrapping_add(1),
                        1 => data[len_at].wrapping_sub(1),
                        2 => 0x80 | rng.byte(),
                        _ => 0xff,
                    };
                }
            }
            3 => data.insert(at, rng.byte()),
            4 => {
                data.remove(at);
            }
            5 => data.truncate(at),
            6 => {
                let len = rng.below(32).min(data.len() - at);
                let run = data[at..at + len].to_vec();
                let to = rng.below(data.len() + 1);
                data.splice(to..to, run);
            }
            7 => {
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let len = rng.below(64).min(other.len() - from);
                    let end = (at + len).min(data.len());
                    data.splice(at..end, other[from..from + len].iter().copied());
                }
            }
            _ => {
                let len = rng.below(8);
                data.extend(rng.bytes(len));
            }
        }
    }
    data
}

/// Runs `parse` on `input`; a panic fails the test with the input in hex, so that it can be
/// replayed. Returns the outcome's name ("accepted", or the refusal's variant) for
/// [`Outcomes`].
fn no_panic<T>(
    what: &str,
    input: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<T, CertError>,
) -> String {
    let outcome = catch_unwind(AssertUnwindSafe(|| parse(input).map(|_| ())));
    match outcome {
        Ok(Ok(())) => "accepted".to_owned(),
        Ok(Err(CertError::InvalidRequest(refusal))) => {
            let name = format!("{refusal:?}");
            name.split(['(', ' ']).next().unwrap_or_default().to_owned()
        }
        Ok(Err(other)) => panic!(
            "{what}: a parser returned a non-request error {other:?} for {}",
            hex(input)
        ),
        Err(_) => panic!("{what}: the parser panicked on {}", hex(input)),
    }
}

/// How often each outcome occurred: shows that the mutations reach deep into the parsers
/// (signature checks, extension rules), not only the first tag.
#[derive(Default)]
struct Outcomes(std::collections::BTreeMap<String, usize>);

impl Outcomes {
    fn add(&mut self, outcome: String) {
        *self.0.entry(outcome).or_default() += 1;
    }

    fn assert_reached(&self, outcomes: &[&str]) {
        println!("{:?}", self.0);
        for outcome in outcomes {
            assert!(
                self.0.contains_key(*outcome),
                "no input ended in {outcome}: {:?}",
                self.0
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Random bytes, and random bytes that start like a DER SEQUENCE.
fn random_inputs(rng: &mut Rng, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let len = rng.below(600);
            let mut input = rng.bytes(len);
            if i % 2 == 0 && input.len() >= 2 {
                input[0] = 0x30;
                input[1] = if len < 130 { len as u8 - 2 } else { 0x82 };
            }
            input
        })
        .collect()
}

#[test]
fn csr_parser_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut seeds = Vec::new();
    for (name, newkey) in [
        (
            "p256",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
        ("ed25519", &["-newkey", "ed25519"][..]),
    ] {
        let der = format!("{name}.der");
        let key = format!("{name}.key");
        let mut args = vec![
            "req",
            "-new",
            "-nodes",
            "-keyout",
            &key,
            "-outform",
            "DER",
            "-out",
            &der,
            "-subj",
            "/O=signetd/CN=fuzz",
            "-addext",
            "subjectAltName=DNS:fuzz.example,IP:10.0.0.1",
        ];
        args.extend_from_slice(newkey);
        openssl_ok(dir, &args);
        seeds.push(std::fs::read(dir.join(&der)).unwrap());
    }
    for seed in &seeds {
        parse_csr(seed, CsrLimits::default()).unwrap();
    }

    let mut rng = Rng(0x5eed_c5c5);
    let limits = CsrLimits::default();
    let parse = |input: &[u8]| parse_csr(input, limits);
    let mut outcomes = Outcomes::default();
    for input in random_inputs(&mut rng, 1000) {
        outcomes.add(no_panic("random CSR", &input, parse));
    }
    for i in 0..3000 {
        let seed = &seeds[i % seeds.len()];
        let other = &seeds[(i + 1) % seeds.len()];
        let input = mutate(&mut rng, seed, other);
        outcomes.add(no_panic("mutated CSR", &input, parse));
        // The same bytes as PEM.
        if i % 10 == 0 {
            let pem =
                der::pem::encode_string("CERTIFICATE REQUEST", der::pem::LineEnding::LF, &input)
                    .unwrap();
            outcomes.add(no_panic("mutated CSR (PEM)", pem.as_bytes(), parse));
        }
    }
    // The mutations above come from fresh `openssl` keys, so which refusals they reach varies
    // from run to run; InvalidCsr is also reached on purpose, through a PEM of the wrong label
    // around each seed.
    for seed in &seeds {
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, seed).unwrap();
        outcomes.add(no_panic(
            "CSR under another PEM label",
            pem.as_bytes(),
            parse,
        ));
    }
    outcomes.assert_reached(&["accepted", "MalformedCsr", "BadSignature", "InvalidCsr"]);
}

#[test]
fn ocsp_request_parser_never_panics() {
    let pki = common::pki();
    let dir = pki.path();
    let leaf = pki
        .issue(
            &signet_certs::Profile::MtlsClient,
            "CN=fuzz",
            common::subject_key(),
        )
        .unwrap();
    common::write_pem(dir, "leaf.pem", &leaf);
    let mut seeds = Vec::new();
    for (name, extra) in [
        ("nonce.der", &[][..]),
        ("no-nonce.der", &["-no_nonce"][..]),
        ("sha256.der", &["-sha256"][..]),
    ] {
        let mut args = vec!["ocsp", "-issuer", "ca.pem"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-cert", "leaf.pem", "-cert", "leaf.pem", "-reqout", name]);
        openssl_ok(dir, &args);
        seeds.push(std::fs::read(dir.join(name)).unwrap());
    }
    for seed in &seeds {
        parse_ocsp_request(seed).unwrap();
    }

    let mut rng = Rng(0x0c5b_5eed);
    let mut outcomes = Outcomes::default();
    for input in random_inputs(&mut rng, 1000) {
        outcomes.add(no_panic("random OCSP request", &input, parse_ocsp_request));
    }
    for i in 0..4000 {
        let seed = &seeds[i % seeds.len()];
        let other = &seeds[(i + 1) % seeds.len()];
        let input = mutate(&mut rng, seed, other);
        outcomes.add(no_panic("mutated OCSP request", &input, parse_ocsp_request));
    }
    outcomes.assert_reached(&["accepted", "MalformedOcspRequest", "InvalidOcspRequest"]);
}
