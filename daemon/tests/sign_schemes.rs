//! Every signature scheme the signing API offers, end to end through a real SoftHSM2 token: one
//! key per algorithm is generated through the daemon's HSM layer, and for every combination of
//! (key algorithm, hash, padding, message or digest) that `SignatureScheme::for_key` accepts, a
//! signature is made in the token through `Hsm::sign`, verified in software by the daemon
//! (invariant 8), and verified independently by OpenSSL against the public key as PEM. A
//! signature with one flipped byte, and a flipped message (or digest) byte, must fail in
//! OpenSSL. ECDSA signatures re-encoded as r‖s and back must still verify. Refused combinations
//! must be refused before the token is asked.
//!
//! This binary holds one test because SoftHSM2 reads SOFTHSM2_CONF once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use signetd::crypto::{
    EcdsaEncoding, HashAlg, Padding, SchemeError, SignInput, SignInputBuf, SignatureScheme,
};
use signetd::hsm::{Hsm, HsmError, KeyAlgorithm};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Digest,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Digest => "digest",
        }
    }
}

/// Every scheme `for_key` gives for some (hash, padding) request on a `key` key.
fn accepted_schemes(key: KeyAlgorithm) -> Vec<SignatureScheme> {
    let mut found = Vec::new();
    for hash in [
        None,
        Some(HashAlg::Sha256),
        Some(HashAlg::Sha384),
        Some(HashAlg::Sha512),
    ] {
        for padding in [None, Some(Padding::Pkcs1), Some(Padding::Pss)] {
            if let Ok(scheme) = SignatureScheme::for_key(key, hash, padding)
                && !found.contains(&scheme)
            {
                found.push(scheme);
            }
        }
    }
    found
}

/// Runs openssl with fixed arguments; returns whether it succeeded and everything it printed.
fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The OpenSSL command that verifies `sig` over `data` (a message or a digest) under `scheme`.
fn openssl_verify(
    scheme: SignatureScheme,
    kind: Kind,
    pem: &Path,
    data: &Path,
    sig: &Path,
) -> (bool, String) {
    let (pem, data, sig) = (support::s(pem), support::s(data), support::s(sig));
    let pss = scheme.padding() == Some(Padding::Pss);
    let mut args: Vec<String> = Vec::new();
    let mut push = |a: &[&str]| args.extend(a.iter().map(|s| (*s).to_owned()));
    match (scheme.hash(), kind) {
        (None, _) => push(&[
            "pkeyutl", "-verify", "-pubin", "-inkey", pem, "-rawin", "-in", data, "-sigfile", sig,
        ]),
        (Some(hash), Kind::Message) => {
            let flag = format!("-{hash}");
            push(&["dgst", &flag, "-verify", pem, "-signature", sig]);
            if pss {
                push(&[
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    "rsa_pss_saltlen:digest",
                ]);
            }
            push(&[data]);
        }
        (Some(hash), Kind::Digest) => {
            let digest = format!("digest:{hash}");
            push(&[
                "pkeyutl", "-verify", "-pubin", "-inkey", pem, "-in", data, "-sigfile", sig,
                "-pkeyopt", &digest,
            ]);
            if pss {
                push(&[
                    "-pkeyopt",
                    "rsa_padding_mode:pss",
                    "-pkeyopt",
                    "rsa_pss_saltlen:digest",
                ]);
            }
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(&args)
}

fn verified(out: &str) -> bool {
    out.contains("Verified OK") || out.contains("Signature Verified Successfully")
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    flipped[at] ^= 0x01;
    flipped
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn every_scheme_signs_in_the_token_and_verifies_with_openssl() {
    let instance = support::Instance::new();
    let (hsm, metrics) = instance.in_process_hsm();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let token_signatures = || {
        metrics
            .hsm_duration
            .with_label_values(&["sign"])
            .get_sample_count()
    };
    let dir = instance.dir.path().join("sign-schemes");
    std::fs::create_dir_all(&dir).unwrap();

    let mut matrix = Vec::new();
    for alg in KeyAlgorithm::ALL {
        let label = format!("schemes-{alg}");
        let spki = hsm.generate_key("signing", &label, *alg).unwrap();
        let pem = der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &spki).unwrap();
        let pem_path = write(&dir, &format!("{alg}.pem"), pem.as_bytes());
        let key = hsm.key("signing", &label, *alg).unwrap();

        // The schemes the API can ask of this key are exactly these.
        let schemes = accepted_schemes(*alg);
        let names: BTreeSet<&str> = schemes.iter().map(|s| s.name()).collect();
        let expected: BTreeSet<&str> = match alg {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => [
                "rsa-pkcs1-sha256",
                "rsa-pkcs1-sha384",
                "rsa-pkcs1-sha512",
                "rsa-pss-sha256",
                "rsa-pss-sha384",
                "rsa-pss-sha512",
            ]
            .into(),
            KeyAlgorithm::EcP256 => [
                "ecdsa-p256-sha256",
                "ecdsa-p256-sha384",
                "ecdsa-p256-sha512",
            ]
            .into(),
            KeyAlgorithm::EcP384 => [
                "ecdsa-p384-sha256",
                "ecdsa-p384-sha384",
                "ecdsa-p384-sha512",
            ]
            .into(),
            KeyAlgorithm::Ed25519 => ["ed25519"].into(),
        };
        assert_eq!(names, expected, "{alg}");
        assert_eq!(
            alg.default_scheme(),
            Some(SignatureScheme::for_key(*alg, None, None).unwrap())
        );

        for scheme in schemes {
            for kind in [Kind::Message, Kind::Digest] {
                let Some(hash) = scheme.hash() else {
                    // Pure Ed25519 takes no digest: checked with the refusals below.
                    if kind == Kind::Digest {
                        continue;
                    }
                    assert_eq!(scheme, SignatureScheme::Ed25519);
                    let message = format!("signetd {scheme} {alg} message").into_bytes();
                    check_one(
                        &rt, &hsm, &key, &spki, &dir, &pem_path, scheme, kind, &message,
                    );
                    matrix.push(format!("{alg} {scheme} {}", kind.as_str()));
                    continue;
                };
                let message = format!("signetd {scheme} {alg} {}", kind.as_str()).into_bytes();
                let data = match kind {
                    Kind::Message => message,
                    Kind::Digest => hash.digest(&message),
                };
                check_one(&rt, &hsm, &key, &spki, &dir, &pem_path, scheme, kind, &data);
                matrix.push(format!("{alg} {scheme} {}", kind.as_str()));
            }
        }
    }
    // 3 RSA sizes × 6 schemes × 2 inputs + 2 curves × 3 hashes × 2 inputs + Ed25519 message.
    assert_eq!(matrix.len(), 3 * 6 * 2 + 2 * 3 * 2 + 1, "{matrix:#?}");
    eprintln!(
        "signed in the token and verified by OpenSSL ({}):\n  {}",
        matrix.len(),
        matrix.join("\n  ")
    );

    // Refusals: each is refused with its client-safe reason, and the token is never asked.
    let before = token_signatures();
    let refused = [
        (
            KeyAlgorithm::EcP256,
            None,
            Some(Padding::Pss),
            SchemeError::PaddingNeedsRsa {
                key: KeyAlgorithm::EcP256,
            },
        ),
        (
            KeyAlgorithm::EcP384,
            Some(HashAlg::Sha384),
            Some(Padding::Pkcs1),
            SchemeError::PaddingNeedsRsa {
                key: KeyAlgorithm::EcP384,
            },
        ),
        (
            KeyAlgorithm::Ed25519,
            Some(HashAlg::Sha512),
            None,
            SchemeError::Ed25519TakesNoHash,
        ),
        (
            KeyAlgorithm::Ed25519,
            None,
            Some(Padding::Pss),
            SchemeError::PaddingNeedsRsa {
                key: KeyAlgorithm::Ed25519,
            },
        ),
    ];
    for (alg, hash, padding, want) in refused {
        let got = SignatureScheme::for_key(alg, hash, padding);
        assert_eq!(got, Err(want), "{alg} hash={hash:?} padding={padding:?}");
        eprintln!("refused {alg} hash={hash:?} padding={padding:?}: {want}");
    }
    assert_eq!(
        SignatureScheme::parse_for_key(KeyAlgorithm::Rsa2048, Some("sha1"), None),
        Err(SchemeError::UnknownHash)
    );
    assert_eq!(
        SignatureScheme::parse_for_key(KeyAlgorithm::Rsa2048, None, Some("oaep")),
        Err(SchemeError::UnknownPadding)
    );
    let key_of = |alg: KeyAlgorithm| hsm.key("signing", &format!("schemes-{alg}"), alg).unwrap();
    let ed = key_of(KeyAlgorithm::Ed25519);
    let rsa = key_of(KeyAlgorithm::Rsa2048);
    let p256 = key_of(KeyAlgorithm::EcP256);
    let cases: Vec<(_, SignatureScheme, SignInputBuf, SchemeError)> = vec![
        (
            &ed,
            SignatureScheme::Ed25519,
            SignInputBuf::Digest(HashAlg::Sha512.digest(b"m")),
            SchemeError::Ed25519NeedsMessage,
        ),
        (
            &rsa,
            SignatureScheme::RsaPss(HashAlg::Sha384),
            SignInputBuf::Digest(HashAlg::Sha256.digest(b"m")),
            SchemeError::DigestLength {
                hash: HashAlg::Sha384,
                expected: 48,
                actual: 32,
            },
        ),
        (
            &p256,
            SignatureScheme::for_key(KeyAlgorithm::EcP256, Some(HashAlg::Sha512), None).unwrap(),
            SignInputBuf::Digest(vec![0; 32]),
            SchemeError::DigestLength {
                hash: HashAlg::Sha512,
                expected: 64,
                actual: 32,
            },
        ),
        (
            &p256,
            SignatureScheme::RsaPss(HashAlg::Sha256),
            SignInputBuf::Message(b"m".to_vec()),
            SchemeError::KeyMismatch {
                scheme: SignatureScheme::RsaPss(HashAlg::Sha256),
                key: KeyAlgorithm::EcP256,
            },
        ),
        (
            &p256,
            SignatureScheme::for_key(KeyAlgorithm::EcP384, None, None).unwrap(),
            SignInputBuf::Message(b"m".to_vec()),
            SchemeError::KeyMismatch {
                scheme: SignatureScheme::for_key(KeyAlgorithm::EcP384, None, None).unwrap(),
                key: KeyAlgorithm::EcP256,
            },
        ),
        (
            &rsa,
            SignatureScheme::Ed25519,
            SignInputBuf::Message(b"m".to_vec()),
            SchemeError::KeyMismatch {
                scheme: SignatureScheme::Ed25519,
                key: KeyAlgorithm::Rsa2048,
            },
        ),
    ];
    for (key, scheme, input, want) in cases {
        let blocking = hsm.sign_blocking(key, scheme, input.as_input());
        assert!(
            matches!(&blocking, Err(HsmError::Scheme(e)) if *e == want),
            "{scheme} on {}: {blocking:?}",
            key.algorithm()
        );
        let err = rt.block_on(hsm.sign(key, scheme, input)).unwrap_err();
        assert!(matches!(&err, HsmError::Scheme(e) if *e == want), "{err:?}");
        assert!(!err.is_transient());
        eprintln!("refused {scheme} on {}: {err}", key.algorithm());
    }
    assert_eq!(
        SignatureScheme::RsaPkcs1(HashAlg::Sha256).encoding(Some(EcdsaEncoding::Raw)),
        Err(SchemeError::EncodingNeedsEcdsa)
    );
    assert_eq!(
        token_signatures(),
        before,
        "a refused request reached the token"
    );
    assert_eq!(metrics.hsm_bad_signatures.get(), 0);
}

/// Signs `data` (a message or a digest, per `kind`) in the token under `scheme`, then checks
/// the signature in software and with OpenSSL, and that tampering is caught.
#[allow(clippy::too_many_arguments)]
fn check_one(
    rt: &tokio::runtime::Runtime,
    hsm: &Hsm,
    key: &std::sync::Arc<signetd::hsm::KeySlot>,
    spki: &[u8],
    dir: &Path,
    pem: &Path,
    scheme: SignatureScheme,
    kind: Kind,
    data: &[u8],
) {
    let what = format!("{} {scheme} {}", key.algorithm(), kind.as_str());
    let input = match kind {
        Kind::Message => SignInputBuf::Message(data.to_vec()),
        Kind::Digest => SignInputBuf::Digest(data.to_vec()),
    };
    let sig = rt
        .block_on(hsm.sign(key, scheme, input.clone()))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    scheme
        .verify(spki, input.as_input(), &sig)
        .unwrap_or_else(|e| panic!("{what}: {e}"));

    let stem = what.replace(' ', "_");
    let data_path = write(dir, &format!("{stem}.in"), data);
    let sig_path = write(dir, &format!("{stem}.sig"), &sig);
    let (ok, out) = openssl_verify(scheme, kind, pem, &data_path, &sig_path);
    assert!(
        ok && verified(&out),
        "{what}: OpenSSL did not verify: {out}"
    );

    // One flipped signature byte (the last: s of ECDSA, the low end of RSA), and one flipped
    // byte of the data: OpenSSL must refuse both.
    let flipped_sig = flip(&sig, sig.len() - 1);
    assert!(
        scheme.verify(spki, input.as_input(), &flipped_sig).is_err(),
        "{what}: the daemon's verifier took a flipped signature"
    );
    let bad_sig = write(dir, &format!("{stem}.badsig"), &flipped_sig);
    let (ok, out) = openssl_verify(scheme, kind, pem, &data_path, &bad_sig);
    assert!(
        !ok && !verified(&out),
        "{what}: flipped signature verified: {out}"
    );
    // (The first byte: an ECDSA digest longer than the group order is cut to its leftmost
    // bytes, see below.)
    let bad_data = write(dir, &format!("{stem}.badin"), &flip(data, 0));
    let (ok, out) = openssl_verify(scheme, kind, pem, &bad_data, &sig_path);
    assert!(
        !ok && !verified(&out),
        "{what}: flipped data verified: {out}"
    );
    let tampered = match kind {
        Kind::Message => SignInput::Message(&flip(data, 0)).to_buf(),
        Kind::Digest => SignInput::Digest(&flip(data, 0)).to_buf(),
    };
    assert!(scheme.verify(spki, tampered.as_input(), &sig).is_err());

    // ECDSA: r‖s for clients that want it, and back to DER, which OpenSSL still accepts.
    if let SignatureScheme::Ecdsa(curve, _) = scheme {
        assert_eq!(scheme.encoding(None), Ok(EcdsaEncoding::Der));
        let raw = scheme.encode_signature(&sig, EcdsaEncoding::Raw).unwrap();
        assert_eq!(raw.len(), 2 * curve.order_len(), "{what}");
        let der = scheme.decode_signature(&raw, EcdsaEncoding::Raw).unwrap();
        assert_eq!(der, sig, "{what}: DER → r‖s → DER changed the signature");
        let der_path = write(dir, &format!("{stem}.fromraw"), &der);
        let (ok, out) = openssl_verify(scheme, kind, pem, &data_path, &der_path);
        assert!(ok && verified(&out), "{what}: r‖s → DER: {out}");

        // FIPS 186-5 §6.4.1: only the leftmost order-length bytes of a longer digest are
        // signed (P-256 with SHA-384/512). OpenSSL and the daemon's verifier agree on it: a
        // change past that length is not seen by either.
        if kind == Kind::Digest && data.len() > curve.order_len() {
            let past = flip(data, curve.order_len());
            let past_path = write(dir, &format!("{stem}.pastorder"), &past);
            let (ok, out) = openssl_verify(scheme, kind, pem, &past_path, &sig_path);
            assert!(
                ok && verified(&out),
                "{what}: OpenSSL does not truncate: {out}"
            );
            scheme
                .verify(spki, SignInput::Digest(&past), &sig)
                .unwrap_or_else(|e| panic!("{what}: the daemon does not truncate: {e}"));
        }
    } else {
        assert!(scheme.encode_signature(&sig, EcdsaEncoding::Raw).is_err());
    }
}
