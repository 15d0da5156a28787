//! OCSP: requests made by `openssl ocsp` are parsed by `parse_ocsp_request`; the responses of
//! `build_ocsp_response` are verified by `openssl ocsp`, signed by the CA itself or by a
//! delegated responder.
//!
//! The `openssl` binary is required: without it these tests fail (they never skip).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{
    CA_NAME, LyingSigner, P256Signer, Pki, make_ca, openssl_ok, openssl_text, pki, subject_key,
    write_pem,
};
use signet_certs::{
    CertError, CertId, CertStatus, Certificate, HashAlgorithm, IssuerError, OcspErrorStatus,
    OcspRequest, Profile, Reason, ResponderId, SingleResponse, TbsSigner, build_ocsp_response,
    cert_id_matches_issuer, ocsp_error_response, parse_name, parse_ocsp_request,
};

const HOUR: Duration = Duration::from_secs(3600);

fn leaf(pki: &Pki, name: &str) -> Certificate {
    let cert = pki
        .issue(&Profile::MtlsClient, &format!("CN={name}"), subject_key())
        .unwrap();
    write_pem(pki.path(), &format!("{name}.pem"), &cert);
    cert
}

/// `openssl ocsp -issuer ca.pem [-<digest>] -cert <cert>... -reqout <out>` (with a nonce unless
/// `nonce` is false), parsed.
fn openssl_request(
    dir: &Path,
    out: &str,
    certs: &[&str],
    digest: Option<&str>,
    nonce: bool,
) -> OcspRequest {
    let mut args = vec!["ocsp", "-issuer", "ca.pem"];
    if let Some(digest) = digest {
        args.push(digest);
    }
    for cert in certs {
        args.extend_from_slice(&["-cert", cert]);
    }
    args.extend_from_slice(&["-reqout", out]);
    if !nonce {
        args.push("-no_nonce");
    }
    openssl_ok(dir, &args);
    parse_ocsp_request(&std::fs::read(dir.join(out)).unwrap()).unwrap()
}

fn single(cert_id: &CertId, status: CertStatus) -> SingleResponse {
    let now = SystemTime::now();
    SingleResponse {
        cert_id: cert_id.clone(),
        status,
        this_update: now - Duration::from_secs(60),
        next_update: Some(now + HOUR),
    }
}

/// A response signed by the CA key itself, identified by key hash, written to `resp.der`.
fn ca_response(pki: &Pki, responses: &[SingleResponse], nonce: Option<&[u8]>) {
    let der = build_ocsp_response(
        ResponderId::by_key_of(&pki.ca),
        &pki.ca_signer,
        vec![],
        SystemTime::now(),
        responses,
        nonce,
    )
    .unwrap();
    std::fs::write(pki.path().join("resp.der"), der).unwrap();
}

/// `openssl ocsp -respin resp.der -issuer ca.pem -cert <cert>... -CAfile ca.pem -no_nonce`:
/// verifies the response and prints each certificate's status. (`-no_nonce` because `-cert`
/// makes OpenSSL build a request of its own, whose fresh nonce the response cannot echo; the
/// nonce is checked by [`check_against_request`].)
fn check_status(dir: &Path, certs: &[&str]) -> String {
    check_status_with(dir, certs, None)
}

/// [`check_status`] with the CertIDs hashed with `digest` (such as `-sha256`).
fn check_status_with(dir: &Path, certs: &[&str], digest: Option<&str>) -> String {
    let mut args = vec!["ocsp", "-respin", "resp.der", "-issuer", "ca.pem"];
    args.extend(digest);
    for cert in certs {
        args.extend_from_slice(&["-cert", cert]);
    }
    args.extend_from_slice(&["-CAfile", "ca.pem", "-no_nonce"]);
    let (ok, text) = openssl_text(dir, &args);
    assert!(ok, "{text}");
    assert!(text.contains("Response verify OK"), "{text}");
    text
}

/// `openssl ocsp -reqin <request> -respin resp.der -issuer ca.pem -CAfile ca.pem -resp_text`:
/// verifies the response against the request OpenSSL made, including its nonce. Returns
/// (success, output).
fn check_against_request(dir: &Path, request: &str) -> (bool, String) {
    openssl_text(
        dir,
        &[
            "ocsp",
            "-reqin",
            request,
            "-respin",
            "resp.der",
            "-issuer",
            "ca.pem",
            "-CAfile",
            "ca.pem",
            "-resp_text",
        ],
    )
}

#[test]
fn ca_signed_responses_verify_with_openssl() {
    let pki = pki();
    let dir = pki.path();
    let alice = leaf(&pki, "alice");
    let revoked_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);

    for nonce in [true, false] {
        let request = openssl_request(dir, "req.der", &["alice.pem"], None, nonce);
        assert_eq!(request.cert_ids.len(), 1);
        let cert_id = &request.cert_ids[0];
        assert_eq!(cert_id.hash_algorithm, HashAlgorithm::Sha1);
        assert!(cert_id_matches_issuer(cert_id, &pki.ca));
        assert_eq!(&cert_id.serial, alice.tbs_certificate().serial_number());
        assert_eq!(
            *cert_id,
            CertId::new(HashAlgorithm::Sha1, &pki.ca, cert_id.serial.clone()).unwrap()
        );
        match &request.nonce {
            Some(n) => assert!(nonce && n.len() == 16, "{n:?}"),
            None => assert!(!nonce),
        }

        let cases = [
            (CertStatus::Good, vec!["alice.pem: good"]),
            (
                CertStatus::Revoked {
                    time: revoked_at,
                    reason: Some(Reason::CertificateHold),
                },
                vec![
                    "alice.pem: revoked",
                    "Reason: certificateHold",
                    "Revocation Time: Nov 14 22:13:20 2023 GMT",
                ],
            ),
            (
                CertStatus::Revoked {
                    time: revoked_at,
                    reason: Some(Reason::KeyCompromise),
                },
                vec!["alice.pem: revoked", "Reason: keyCompromise"],
            ),
            (
                CertStatus::Revoked {
                    time: revoked_at,
                    reason: None,
                },
                vec!["alice.pem: revoked"],
            ),
            (CertStatus::Unknown, vec!["alice.pem: unknown"]),
        ];
        for (status, expected) in cases {
            ca_response(&pki, &[single(cert_id, status)], request.nonce.as_deref());
            let text = check_status(dir, &["alice.pem"]);
            for line in expected {
                assert!(text.contains(line), "{status:?}: no {line:?} in\n{text}");
            }
            assert!(
                text.contains("This Update:") && text.contains("Next Update:"),
                "{text}"
            );
            if let CertStatus::Revoked { reason: None, .. } = status {
                assert!(!text.contains("Reason:"), "{text}");
            }

            // Against the request itself: the signature, and the nonce echoed (OpenSSL
            // compares it when the request had one).
            let (ok, text) = check_against_request(dir, "req.der");
            assert!(ok, "{text}");
            assert!(text.contains("Response verify OK"), "{text}");
            assert!(!text.contains("Nonce Verify error"), "{text}");
            assert!(!text.contains("WARNING: no nonce in response"), "{text}");
            assert!(
                text.contains("OCSP Response Status: successful (0x0)"),
                "{text}"
            );
            assert!(
                text.contains("Response Type: Basic OCSP Response"),
                "{text}"
            );
            assert!(text.contains("Responder Id: "), "{text}");
            assert_eq!(text.contains("OCSP Nonce"), nonce, "{text}");
        }
    }
}

#[test]
fn nonce_mismatch_is_noticed_by_openssl() {
    let pki = pki();
    let dir = pki.path();
    leaf(&pki, "alice");
    let request = openssl_request(dir, "req.der", &["alice.pem"], None, true);
    let good = [single(&request.cert_ids[0], CertStatus::Good)];

    // Another nonce: OpenSSL's check fails, so the echo test above is meaningful.
    ca_response(&pki, &good, Some(&[0x55; 16]));
    let (ok, text) = check_against_request(dir, "req.der");
    assert!(!ok && text.contains("Nonce Verify error"), "{text}");

    // No nonce at all: OpenSSL warns.
    ca_response(&pki, &good, None);
    let (_, text) = check_against_request(dir, "req.der");
    assert!(text.contains("WARNING: no nonce in response"), "{text}");
}

#[test]
fn several_certificates_and_sha256_cert_ids() {
    let pki = pki();
    let dir = pki.path();
    leaf(&pki, "alice");
    leaf(&pki, "bob");

    for digest in [None, Some("-sha256")] {
        let request = openssl_request(dir, "req.der", &["alice.pem", "bob.pem"], digest, true);
        let expected = if digest.is_some() {
            HashAlgorithm::Sha256
        } else {
            HashAlgorithm::Sha1
        };
        assert_eq!(request.cert_ids.len(), 2);
        for cert_id in &request.cert_ids {
            assert_eq!(cert_id.hash_algorithm, expected);
            assert!(cert_id_matches_issuer(cert_id, &pki.ca));
        }
        let responses = [
            single(&request.cert_ids[0], CertStatus::Good),
            single(
                &request.cert_ids[1],
                CertStatus::Revoked {
                    time: SystemTime::now() - HOUR,
                    reason: Some(Reason::CertificateHold),
                },
            ),
        ];
        ca_response(&pki, &responses, request.nonce.as_deref());
        let text = check_status_with(dir, &["alice.pem", "bob.pem"], digest);
        assert!(text.contains("alice.pem: good"), "{text}");
        assert!(text.contains("bob.pem: revoked"), "{text}");
        assert!(text.contains("Reason: certificateHold"), "{text}");
        let (ok, text) = check_against_request(dir, "req.der");
        assert!(ok && text.contains("Response verify OK"), "{text}");
        assert!(!text.contains("Nonce Verify error"), "{text}");
    }

    // A certificate of another CA (same name, other key) does not match this CA.
    let other_signer = P256Signer::generate();
    let other_ca = make_ca(&other_signer, CA_NAME);
    write_pem(dir, "ca.pem", &other_ca);
    let other = openssl_request(dir, "other.der", &["alice.pem"], None, false);
    assert!(!cert_id_matches_issuer(&other.cert_ids[0], &pki.ca));
    assert!(cert_id_matches_issuer(&other.cert_ids[0], &other_ca));
}

#[test]
fn signed_requests_are_accepted() {
    let pki = pki();
    let dir = pki.path();
    leaf(&pki, "alice");
    openssl_ok(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "requestor.key",
            "-out",
            "requestor.pem",
            "-subj",
            "/CN=requestor",
            "-days",
            "1",
        ],
    );
    openssl_ok(
        dir,
        &[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            "alice.pem",
            "-signer",
            "requestor.pem",
            "-signkey",
            "requestor.key",
            "-reqout",
            "signed.der",
        ],
    );
    let text = openssl_ok(dir, &["ocsp", "-reqin", "signed.der", "-req_text"]);
    assert!(text.contains("Requestor Name:"), "{text}");
    assert!(text.contains("Signature Algorithm"), "{text}");
    let request = parse_ocsp_request(&std::fs::read(dir.join("signed.der")).unwrap()).unwrap();
    assert_eq!(request.cert_ids.len(), 1);
    assert!(request.nonce.is_some());
    assert!(cert_id_matches_issuer(&request.cert_ids[0], &pki.ca));
}

#[test]
fn delegated_responder() {
    let pki = pki();
    let dir = pki.path();
    leaf(&pki, "alice");

    let responder_signer = P256Signer::generate();
    let responder = pki
        .issue(
            &Profile::OcspResponder,
            "CN=signetd OCSP responder,O=signetd",
            responder_signer.public_key(),
        )
        .unwrap();
    write_pem(dir, "responder.pem", &responder);
    let out = openssl_ok(
        dir,
        &[
            "verify",
            "-purpose",
            "ocsphelper",
            "-CAfile",
            "ca.pem",
            "responder.pem",
        ],
    );
    assert!(out.contains("responder.pem: OK"), "{out}");
    let text = openssl_ok(dir, &["x509", "-in", "responder.pem", "-noout", "-text"]);
    for expected in [
        "X509v3 Key Usage: critical",
        "Digital Signature",
        "OCSP Signing",
        "OCSP No Check",
        "CA:FALSE",
    ] {
        assert!(text.contains(expected), "no {expected:?} in\n{text}");
    }
    assert!(!text.contains("CRL Distribution Points"), "{text}");
    assert!(!text.contains("Authority Information Access"), "{text}");

    let request = openssl_request(dir, "req.der", &["alice.pem"], None, true);
    let responses = [single(&request.cert_ids[0], CertStatus::Good)];
    let by_name = ResponderId::ByName(responder.tbs_certificate().subject().clone());
    for responder_id in [ResponderId::by_key_of(&responder), by_name] {
        let der = build_ocsp_response(
            responder_id.clone(),
            &responder_signer,
            vec![responder.clone()],
            SystemTime::now(),
            &responses,
            request.nonce.as_deref(),
        )
        .unwrap();
        std::fs::write(dir.join("resp.der"), der).unwrap();
        let text = check_status(dir, &["alice.pem"]);
        assert!(text.contains("alice.pem: good"), "{responder_id:?}: {text}");
        let (ok, text) = check_against_request(dir, "req.der");
        assert!(ok && text.contains("Response verify OK"), "{text}");
        assert!(
            text.contains("Subject: O=signetd, CN=signetd OCSP responder"),
            "the responder certificate should be in the response: {text}"
        );
    }
}

#[test]
fn openssl_rejects_responses_from_the_wrong_key() {
    let pki = pki();
    let dir = pki.path();
    leaf(&pki, "alice");
    let request = openssl_request(dir, "req.der", &["alice.pem"], None, false);
    let responses = [single(&request.cert_ids[0], CertStatus::Good)];

    // A signer that claims the CA key but signs with another.
    let liar = LyingSigner {
        claimed: P256Signer {
            key: pki.ca_signer.key.clone(),
        },
        actual: P256Signer::generate(),
    };
    let der = build_ocsp_response(
        ResponderId::by_key_of(&pki.ca),
        &liar,
        vec![],
        SystemTime::now(),
        &responses,
        None,
    )
    .unwrap();
    std::fs::write(dir.join("resp.der"), der).unwrap();
    let (ok, text) = check_against_request(dir, "req.der");
    assert!(!ok && text.contains("Response Verify Failure"), "{text}");

    // A responder certified by another CA.
    let other_signer = P256Signer::generate();
    let other_ca = make_ca(&other_signer, "CN=other CA");
    let rogue_signer = P256Signer::generate();
    let rogue = signet_certs::issue(
        &other_ca,
        &other_signer,
        &Profile::OcspResponder,
        parse_name("CN=rogue responder").unwrap(),
        rogue_signer.public_key(),
        common::random_serial(),
        common::leaf_validity(),
        &Default::default(),
    )
    .unwrap();
    let der = build_ocsp_response(
        ResponderId::by_key_of(&rogue),
        &rogue_signer,
        vec![rogue],
        SystemTime::now(),
        &responses,
        None,
    )
    .unwrap();
    std::fs::write(dir.join("resp.der"), der).unwrap();
    let (ok, text) = check_against_request(dir, "req.der");
    assert!(!ok && text.contains("Response Verify Failure"), "{text}");
}

#[test]
fn bad_responders_are_refused() {
    let pki = pki();
    let cert_id = CertId::new(HashAlgorithm::Sha1, &pki.ca, common::random_serial()).unwrap();
    let responses = [single(&cert_id, CertStatus::Good)];
    let build = |id: ResponderId, signer: &dyn TbsSigner, certs: Vec<Certificate>| {
        build_ocsp_response(id, signer, certs, SystemTime::now(), &responses, None)
    };

    // The responder id names another key than the signer's.
    let err = build(
        ResponderId::by_key(&P256Signer::generate().public_key()),
        &pki.ca_signer,
        vec![],
    )
    .unwrap_err();
    assert!(
        matches!(err, CertError::Issuer(IssuerError::NotAnOcspResponder)),
        "{err:?}"
    );

    // A delegated certificate without OCSPSigning.
    let client_signer = P256Signer::generate();
    let client = pki
        .issue(
            &Profile::MtlsClient,
            "CN=client",
            client_signer.public_key(),
        )
        .unwrap();
    let err = build(
        ResponderId::by_key_of(&client),
        &client_signer,
        vec![client.clone()],
    )
    .unwrap_err();
    assert!(
        matches!(err, CertError::Issuer(IssuerError::NotAnOcspResponder)),
        "{err:?}"
    );

    // A responder certificate for another key than the signer's.
    let responder_signer = P256Signer::generate();
    let responder = pki
        .issue(
            &Profile::OcspResponder,
            "CN=responder",
            responder_signer.public_key(),
        )
        .unwrap();
    let err = build(
        ResponderId::by_key_of(&pki.ca),
        &pki.ca_signer,
        vec![responder.clone()],
    )
    .unwrap_err();
    assert!(
        matches!(err, CertError::Issuer(IssuerError::KeyMismatch)),
        "{err:?}"
    );

    // By name, but not the responder certificate's name.
    let err = build(
        ResponderId::ByName(parse_name("CN=someone else").unwrap()),
        &responder_signer,
        vec![responder],
    )
    .unwrap_err();
    assert!(
        matches!(err, CertError::Issuer(IssuerError::NotAnOcspResponder)),
        "{err:?}"
    );

    // nextUpdate before thisUpdate.
    let mut backwards = single(&cert_id, CertStatus::Good);
    backwards.next_update = Some(backwards.this_update - HOUR);
    let err = build_ocsp_response(
        ResponderId::by_key_of(&pki.ca),
        &pki.ca_signer,
        vec![],
        SystemTime::now(),
        &[backwards],
        None,
    )
    .unwrap_err();
    assert!(matches!(err, CertError::InvalidRequest(_)), "{err:?}");
}

#[test]
fn error_responses_are_understood_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for (status, text) in [
        (OcspErrorStatus::MalformedRequest, "malformedrequest (1)"),
        (OcspErrorStatus::InternalError, "internalerror (2)"),
        (OcspErrorStatus::TryLater, "trylater (3)"),
        (OcspErrorStatus::Unauthorized, "unauthorized (6)"),
    ] {
        std::fs::write(dir.join("err.der"), ocsp_error_response(status)).unwrap();
        let (_, out) = openssl_text(dir, &["ocsp", "-respin", "err.der", "-noverify"]);
        assert!(
            out.contains(&format!("Responder Error: {text}")),
            "{status:?}: {out}"
        );
    }
}
