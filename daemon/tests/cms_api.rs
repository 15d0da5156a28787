//! CMS signatures over the API (`/v1/sign?format=cms`), checked by OpenSSL: for every key
//! algorithm, `openssl cms -verify -binary -content FILE -CAfile ca.pem` accepts the detached
//! SignedData made over the data (body or multipart, DER or PEM) and over a digest the client
//! computed (`prehashed=true`), and refuses it for a changed file. The key's document-signer
//! certificate is issued by the first CMS request and reused by the next ones; it is the one
//! the SignedData carries. Several formats from one upload answer as JSON. Bad input gets a
//! problem+json 400 and no token signature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use support::cms::{cms_verify, openssl};
use support::sign::{
    account, assert_problem, call, generate, get, post_file, signatures_made, unb64, write,
};
use support::{Instance, curl, s};

/// `openssl dgst -HASH -binary`: the digest of `data`, written next to it.
fn openssl_digest(hash: &str, data: &Path) -> std::path::PathBuf {
    let out = data.with_extension(format!("{hash}.bin"));
    let (ok, _, err) = openssl(&[
        "dgst",
        &format!("-{hash}"),
        "-binary",
        "-out",
        s(&out),
        s(data),
    ]);
    assert!(ok, "openssl dgst: {err}");
    out
}

/// The Content-Type of the answer whose headers curl dumped to `headers`.
fn content_type(headers: &Path) -> String {
    std::fs::read_to_string(headers)
        .unwrap()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default()
}

#[test]
fn cms_signatures_of_every_key_algorithm_verify_with_openssl() {
    support::require_tool("openssl", "openssl");
    let instance = Instance::new();
    instance.init();
    let algorithms = [
        ("rsa2048", "rsa-2048", "sha256"),
        ("p256", "ec-p256", "sha256"),
        ("p384", "ec-p384", "sha384"),
        ("ed25519", "ed25519", "sha512"),
    ];
    let roles: Vec<String> = algorithms
        .iter()
        .map(|(r, _, _)| format!("signer:{r}"))
        .collect();
    let signer = account(&instance, "docs", &roles.join(","));
    let ids: Vec<String> = algorithms
        .iter()
        .map(|(ring, algorithm, _)| generate(&instance, ring, algorithm, 1).remove(0))
        .collect();
    let daemon = instance.serve();
    let dir = instance.dir.path();
    let ca = write(
        dir,
        "ca.pem",
        curl(&[&daemon.public_url("/ca.pem")]).body.as_bytes(),
    );
    let data = write(
        dir,
        "contract.pdf",
        b"%PDF-1.7\nterms\n\x00\x01binary\xff tail",
    );
    let tampered = write(
        dir,
        "tampered.pdf",
        b"%PDF-1.7\nterms\n\x00\x01binary\xff taiL",
    );

    for ((ring, _, hash), id) in algorithms.iter().zip(&ids) {
        let cert_path = format!("/v1/keys/{id}/certificate?format=pem");
        let r = get(&instance, &daemon, &signer, &cert_path);
        assert_eq!(r.status, 404, "{ring}: no certificate before CMS: {r:?}");

        // Data, as the body: DER, `application/pkcs7-signature`.
        let sig = dir.join(format!("{ring}.p7s"));
        let headers = dir.join("headers.txt");
        let r = call(
            &instance,
            &signer,
            &[
                "--data-binary",
                &format!("@{}", s(&data)),
                "-D",
                s(&headers),
                "-o",
                s(&sig),
            ],
            &daemon.api_url(&format!("/v1/sign?key_id={id}&format=cms")),
        );
        assert_eq!(r.status, 200, "{ring}: {r:?}");
        assert_eq!(content_type(&headers), "application/pkcs7-signature");
        let r = get(&instance, &daemon, &signer, &cert_path);
        assert_eq!(r.status, 200, "{ring}: the first CMS request issues: {r:?}");
        let signer_cert = write(dir, &format!("{ring}-signer.pem"), r.body.as_bytes());
        let (good, out) = cms_verify(&sig, "DER", &data, &ca, &signer_cert);
        assert!(good, "{ring} DER: {out}");
        let (good, _) = cms_verify(&sig, "DER", &tampered, &ca, &signer_cert);
        assert!(!good, "{ring}: OpenSSL accepted a changed file");
        // The SignedData carries the signer's and the CA's certificates.
        let (ok, carried, err) =
            openssl(&["pkcs7", "-inform", "DER", "-in", s(&sig), "-print_certs"]);
        assert!(ok, "{err}");
        assert!(
            carried.contains(r.body.trim()),
            "{ring}: signer not carried"
        );
        let ca_text = std::fs::read_to_string(&ca).unwrap();
        assert!(carried.contains(ca_text.trim()), "{ring}: CA not carried");

        // Multipart, PEM.
        let pem = dir.join(format!("{ring}.pem.p7s"));
        let path = format!("/v1/sign?key_id={id}&format=cms&pem=true");
        let r = post_file(&instance, &daemon, &signer, &path, &data, true, &pem);
        assert_eq!(r.status, 200, "{ring} PEM: {r:?}");
        let text = std::fs::read_to_string(&pem).unwrap();
        assert!(text.starts_with("-----BEGIN CMS-----"), "{text}");
        let (good, out) = cms_verify(&pem, "PEM", &data, &ca, &signer_cert);
        assert!(good, "{ring} PEM: {out}");

        // The digest mode: the client sends the content's digest, OpenSSL checks the content.
        let digest = openssl_digest(hash, &data);
        let path = format!("/v1/sign?key_id={id}&format=cms&prehashed=true&hash={hash}");
        let r = post_file(&instance, &daemon, &signer, &path, &digest, false, &sig);
        assert_eq!(r.status, 200, "{ring} digest: {r:?}");
        let (good, out) = cms_verify(&sig, "DER", &data, &ca, &signer_cert);
        assert!(good, "{ring} digest mode: {out}");
        let (good, _) = cms_verify(&sig, "DER", &tampered, &ca, &signer_cert);
        assert!(!good, "{ring} digest mode: OpenSSL accepted a changed file");

        // One upload, three formats, one JSON answer.
        let answer = dir.join("multi.json");
        let path = format!("/v1/sign?key_id={id}&format=raw,openpgp,cms");
        let r = post_file(&instance, &daemon, &signer, &path, &data, true, &answer);
        assert_eq!(r.status, 200, "{ring} multi: {r:?}");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&answer).unwrap()).unwrap();
        assert_eq!(v["formats"], serde_json::json!(["raw", "openpgp", "cms"]));
        assert_eq!(v["signatures"]["cms"]["hash"], *hash, "{v}");
        let der = write(
            dir,
            "multi.p7s",
            &unb64(v["signatures"]["cms"]["signature"].as_str().unwrap()),
        );
        let (good, out) = cms_verify(&der, "DER", &data, &ca, &signer_cert);
        assert!(good, "{ring} multi: {out}");
        let pem = write(
            dir,
            "multi.pem",
            v["signatures"]["cms"]["pem"].as_str().unwrap().as_bytes(),
        );
        let (good, out) = cms_verify(&pem, "PEM", &data, &ca, &signer_cert);
        assert!(good, "{ring} multi PEM: {out}");

        // Every request signed with the certificate the first one issued.
        let r = get(&instance, &daemon, &signer, &cert_path);
        assert_eq!(
            std::fs::read_to_string(&signer_cert).unwrap(),
            r.body,
            "{ring}: a second certificate was issued"
        );
    }

    // An explicit hash other than the key's default (RSA, SHA-512), digest mode.
    let rsa = &ids[0];
    let digest = openssl_digest("sha512", &data);
    let sig = dir.join("rsa-sha512.p7s");
    let path = format!("/v1/sign?key_id={rsa}&format=cms&hash=sha512&prehashed=true");
    let r = post_file(&instance, &daemon, &signer, &path, &digest, false, &sig);
    assert_eq!(r.status, 200, "{r:?}");
    let rsa_cert = dir.join("rsa2048-signer.pem");
    let (good, out) = cms_verify(&sig, "DER", &data, &ca, &rsa_cert);
    assert!(good, "RSA SHA-512: {out}");
    let (ok, printed, err) =
        openssl(&["cms", "-cmsout", "-print", "-inform", "DER", "-in", s(&sig)]);
    assert!(ok, "{err}");
    assert!(printed.contains("sha512"), "{printed}");

    // Bad input: 400 problem+json, no token signature.
    let before = signatures_made(&daemon);
    let ed = &ids[3];
    let sha256 = openssl_digest("sha256", &data);
    let out = dir.join("refused");
    for (path, file, form, detail) in [
        (
            format!("/v1/sign?key_id={rsa}&format=cms&prehashed=true"),
            &digest,
            false,
            "a sha256 digest is 32 bytes",
        ),
        (
            format!("/v1/sign?key_id={rsa}&format=cms&prehashed=true&hash=sha384"),
            &sha256,
            false,
            "a sha384 digest is 48 bytes",
        ),
        (
            format!("/v1/sign?key_id={rsa}&format=cms&prehashed=true"),
            &sha256,
            true,
            "not as a form",
        ),
        (
            format!("/v1/sign?key_id={rsa}&format=raw,cms&prehashed=true"),
            &sha256,
            false,
            "format `cms` alone",
        ),
        (
            format!("/v1/sign?key_id={ed}&format=cms&hash=sha256"),
            &data,
            false,
            "use sha512",
        ),
        (
            format!("/v1/sign?key_id={rsa}&format=openpgp&pem=true"),
            &data,
            false,
            "`pem` and `timestamp` apply to format `cms` only",
        ),
        (
            format!("/v1/sign?key_id={rsa}&pem=false"),
            &data,
            false,
            "`pem` and `timestamp` apply to format `cms` only",
        ),
        (
            format!("/v1/sign?key_id={rsa}&format=cms&hash=md5"),
            &data,
            false,
            "unknown hash",
        ),
        (
            format!("/v1/sign?key_id={rsa}&format=cms,pkcs7"),
            &data,
            false,
            "unknown format `pkcs7`",
        ),
    ] {
        let r = post_file(&instance, &daemon, &signer, &path, file, form, &out);
        let answer = support::CurlResult {
            body: std::fs::read_to_string(&out).unwrap_or_default(),
            ..r
        };
        assert_problem(&answer, 400, detail);
    }
    assert_eq!(
        signatures_made(&daemon),
        before,
        "a refused request reached the token"
    );
}
