//! Certification requests made by `openssl req` are parsed and checked by `parse_csr`; the
//! certificates issued from them verify with OpenSSL.
//!
//! The `openssl` binary is required: without it these tests fail (they never skip).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use common::{openssl_ok, pki};
use const_oid::db::{rfc5912, rfc8410};
use der::Encode;
use signet_certs::{
    CertError, CsrLimits, GeneralName, Profile, RequestError, ValidatedCsr, parse_csr,
};

/// `openssl req -new` with a fresh key made by `newkey` (as for `req -newkey`), written to
/// `<name>.csr` in PEM and `<name>.der`; returns (PEM, DER).
fn openssl_csr(dir: &Path, name: &str, newkey: &[&str], extra: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let der = format!("{name}.der");
    let mut args = vec!["req", "-new", "-nodes", "-keyout", &key, "-out", &csr];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&["-subj", "/O=signetd/CN=alice"]);
    args.extend_from_slice(extra);
    openssl_ok(dir, &args);
    openssl_ok(dir, &["req", "-in", &csr, "-outform", "DER", "-out", &der]);
    (
        std::fs::read(dir.join(&csr)).unwrap(),
        std::fs::read(dir.join(&der)).unwrap(),
    )
}

/// `openssl req -new` for an existing key file.
fn openssl_csr_for_key(dir: &Path, name: &str, key: &str, extra: &[&str]) -> Vec<u8> {
    let der = format!("{name}.der");
    let mut args = vec![
        "req", "-new", "-key", key, "-subj", "/CN=x", "-outform", "DER", "-out", &der,
    ];
    args.extend_from_slice(extra);
    openssl_ok(dir, &args);
    std::fs::read(dir.join(&der)).unwrap()
}

fn parse(input: &[u8]) -> Result<ValidatedCsr, CertError> {
    parse_csr(input, CsrLimits::default())
}

fn refusal(what: &str, input: &[u8]) -> RequestError {
    match parse(input) {
        Err(CertError::InvalidRequest(e)) => {
            println!("{what}: {e}");
            e
        }
        other => panic!("{what}: expected InvalidRequest, got {other:?}"),
    }
}

/// The public key as OpenSSL prints it for a file (`req` or `x509`).
fn openssl_pubkey(dir: &Path, command: &str, file: &str) -> String {
    openssl_ok(dir, &[command, "-in", file, "-noout", "-pubkey"])
}

/// Issues an mTLS client certificate from `csr` and checks it with OpenSSL: it verifies
/// against the CA and carries the CSR's key and subject.
fn issue_and_verify(csr: ValidatedCsr, csr_file: &str) {
    let pki = pki();
    let dir = pki.path();
    std::fs::copy(csr_file, dir.join("req.csr")).unwrap();
    let (subject, key) = csr.into_parts();
    let cert = signet_certs::issue(
        &pki.ca,
        &pki.ca_signer,
        &Profile::MtlsClient,
        subject,
        key,
        common::random_serial(),
        common::leaf_validity(),
        &pki.urls,
    )
    .unwrap();
    common::write_pem(dir, "leaf.pem", &cert);
    let out = openssl_ok(
        dir,
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            "ca.pem",
            "leaf.pem",
        ],
    );
    assert!(out.contains("leaf.pem: OK"), "{out}");
    assert_eq!(
        openssl_pubkey(dir, "x509", "leaf.pem"),
        openssl_pubkey(dir, "req", "req.csr")
    );
    let subject = openssl_ok(
        dir,
        &[
            "x509", "-in", "leaf.pem", "-noout", "-subject", "-nameopt", "RFC2253",
        ],
    );
    assert_eq!(subject.trim(), "subject=CN=alice,O=signetd");
}

#[test]
fn openssl_requests_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let san = ["-addext", "subjectAltName=DNS:alice.example,IP:127.0.0.1"];

    // EC P-256 with a subjectAltName request, as PEM and as DER.
    let (pem, der) = openssl_csr(
        dir,
        "p256",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &san,
    );
    let from_pem = parse(&pem).unwrap();
    let from_der = parse(&der).unwrap();
    assert_eq!(from_pem, from_der);
    assert_eq!(from_der.subject().to_string(), "CN=alice,O=signetd");
    assert_eq!(
        from_der.public_key().algorithm.oid,
        rfc5912::ID_EC_PUBLIC_KEY
    );
    assert_eq!(from_der.signature_algorithm(), rfc5912::ECDSA_WITH_SHA_256);
    assert_eq!(from_der.requested_dns_names(), vec!["alice.example"]);
    assert_eq!(
        from_der.requested_ip_addresses(),
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
    );
    assert_eq!(from_der.requested_names().len(), 2);
    assert!(matches!(
        from_der.requested_names()[0],
        GeneralName::DnsName(_)
    ));
    assert_eq!(from_der.requested_extensions().len(), 1);
    // The SPKI is the CSR's, byte for byte.
    let key_der = from_der.public_key().to_der().unwrap();
    let openssl_key = openssl_ok(dir, &["req", "-in", "p256.csr", "-noout", "-pubkey"]);
    let openssl_key = der::pem::decode_vec(openssl_key.as_bytes()).unwrap().1;
    assert_eq!(key_der, openssl_key);

    // PEM with CRLF line endings and surrounding whitespace.
    let crlf = String::from_utf8(pem.clone())
        .unwrap()
        .replace('\n', "\r\n");
    assert_eq!(parse(format!("\n  {crlf}\n").as_bytes()).unwrap(), from_der);

    // EC P-384 signed with SHA-384, no extensions.
    let (_, der) = openssl_csr(
        dir,
        "p384",
        &[
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-sha384",
        ],
        &[],
    );
    let csr = parse(&der).unwrap();
    assert_eq!(csr.signature_algorithm(), rfc5912::ECDSA_WITH_SHA_384);
    assert!(csr.requested_names().is_empty());
    assert!(csr.requested_extensions().is_empty());

    // P-256 key, SHA-512 signature (the hash is longer than the curve).
    let key = "p256.key";
    let der = openssl_csr_for_key(dir, "p256-sha512", key, &["-sha512"]);
    assert_eq!(
        parse(&der).unwrap().signature_algorithm(),
        rfc5912::ECDSA_WITH_SHA_512
    );

    // RSA 2048, PKCS#1 v1.5 with SHA-256 and SHA-512.
    let (_, der) = openssl_csr(dir, "rsa", &["-newkey", "rsa:2048"], &san);
    let csr = parse(&der).unwrap();
    assert_eq!(csr.public_key().algorithm.oid, rfc5912::RSA_ENCRYPTION);
    assert_eq!(
        csr.signature_algorithm(),
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION
    );
    assert_eq!(csr.requested_dns_names(), vec!["alice.example"]);
    let der = openssl_csr_for_key(dir, "rsa-sha512", "rsa.key", &["-sha512"]);
    assert_eq!(
        parse(&der).unwrap().signature_algorithm(),
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION
    );

    // RSA-PSS signatures over an rsaEncryption key: salt = hash length, and OpenSSL's
    // default (the largest salt).
    for (name, sigopts) in [
        (
            "pss32",
            &[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ][..],
        ),
        ("pss-max", &["-sigopt", "rsa_padding_mode:pss"][..]),
    ] {
        let mut extra = vec!["-sha256"];
        extra.extend_from_slice(sigopts);
        let der = openssl_csr_for_key(dir, name, "rsa.key", &extra);
        let csr = parse(&der).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(csr.signature_algorithm(), rfc5912::ID_RSASSA_PSS, "{name}");
    }

    // Ed25519.
    let (_, der) = openssl_csr(dir, "ed25519", &["-newkey", "ed25519"], &[]);
    let csr = parse(&der).unwrap();
    assert_eq!(csr.public_key().algorithm.oid, rfc8410::ID_ED_25519);
    assert_eq!(csr.signature_algorithm(), rfc8410::ID_ED_25519);

    // Each verifier really checks: one flipped bit at the end of the signature fails it.
    for name in [
        "p384",
        "p256-sha512",
        "rsa",
        "rsa-sha512",
        "pss32",
        "pss-max",
        "ed25519",
    ] {
        let mut der = std::fs::read(dir.join(format!("{name}.der"))).unwrap();
        assert!(parse(&der).is_ok(), "{name}");
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert!(
            matches!(
                parse(&der),
                Err(CertError::InvalidRequest(RequestError::BadSignature))
            ),
            "{name} with a corrupted signature"
        );
    }

    // Certificates issued from the requests carry their keys and verify.
    for name in ["p256", "p384", "rsa", "ed25519"] {
        let file = dir.join(format!("{name}.csr"));
        let csr = parse(&std::fs::read(&file).unwrap()).unwrap();
        issue_and_verify(csr, file.to_str().unwrap());
    }
}

#[test]
fn bad_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // RSA keys under 2048 bits.
    let (_, der) = openssl_csr(dir, "rsa1024", &["-newkey", "rsa:1024"], &[]);
    assert!(matches!(
        refusal("RSA-1024", &der),
        RequestError::RsaKeySize {
            bits: 1024,
            min: 2048,
            ..
        }
    ));

    // A corrupted signature: the last byte of the DER is the last byte of the signature.
    let (_, mut der) = openssl_csr(
        dir,
        "p256",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &[],
    );
    assert!(parse(&der).is_ok());
    let last = der.len() - 1;
    der[last] ^= 0x01;
    assert!(matches!(
        refusal("corrupted signature", &der),
        RequestError::BadSignature
    ));
    der[last] ^= 0x01;

    // A changed subject no longer matches the signature.
    let alice = der.windows(5).position(|w| w == b"alice").unwrap();
    let mut renamed = der.clone();
    renamed[alice] = b'A';
    assert!(matches!(
        refusal("changed subject", &renamed),
        RequestError::BadSignature
    ));

    // Trailing data after the DER, and truncation.
    let mut trailing = der.clone();
    trailing.push(0);
    assert!(matches!(
        refusal("trailing data", &trailing),
        RequestError::MalformedCsr(_)
    ));
    assert!(matches!(
        refusal("truncated", &der[..der.len() - 1]),
        RequestError::MalformedCsr(_)
    ));

    // Garbage.
    let garbage: Vec<u8> = (0..500u32).map(|i| (i * 7 + 3) as u8).collect();
    assert!(matches!(
        refusal("garbage", &garbage),
        RequestError::MalformedCsr(_)
    ));
    assert!(matches!(
        refusal("text", b"please sign my key"),
        RequestError::MalformedCsr(_)
    ));

    // Too large, whatever it is; and a smaller limit applies to a valid request.
    let huge = vec![0x30; CsrLimits::DEFAULT_MAX_SIZE + 1];
    assert!(matches!(
        refusal("oversized", &huge),
        RequestError::TooLarge {
            limit: CsrLimits::DEFAULT_MAX_SIZE,
            ..
        }
    ));
    assert!(matches!(
        parse_csr(&der, CsrLimits::default().with_max_size(der.len() - 1)),
        Err(CertError::InvalidRequest(RequestError::TooLarge { .. }))
    ));

    // A certificate is not a request.
    let pem = std::fs::read_to_string(dir.join("p256.csr")).unwrap();
    let relabeled = pem.replace("CERTIFICATE REQUEST", "CERTIFICATE");
    assert!(matches!(
        refusal("PEM label", relabeled.as_bytes()),
        RequestError::InvalidCsr(_)
    ));

    // SHA-1 signatures.
    let der = openssl_csr_for_key(dir, "sha1", "p256.key", &["-sha1"]);
    assert!(matches!(
        refusal("ECDSA with SHA-1", &der),
        RequestError::UnsupportedSignatureAlgorithm(oid) if oid.to_string() == "1.2.840.10045.4.1"
    ));

    // DSA keys.
    openssl_ok(
        dir,
        &[
            "genpkey",
            "-genparam",
            "-algorithm",
            "DSA",
            "-pkeyopt",
            "dsa_paramgen_bits:1024",
            "-out",
            "dsa.param",
        ],
    );
    let (_, der) = openssl_csr(dir, "dsa", &["-newkey", "dsa:dsa.param"], &[]);
    assert!(matches!(
        refusal("DSA", &der),
        RequestError::UnsupportedKeyAlgorithm(oid) if oid == rfc5912::ID_DSA
    ));

    // Ed448 keys (no verifier here), and curves other than P-256 and P-384.
    let (_, der) = openssl_csr(dir, "ed448", &["-newkey", "ed448"], &[]);
    assert!(matches!(
        refusal("Ed448", &der),
        RequestError::UnsupportedKeyAlgorithm(oid) if oid == rfc8410::ID_ED_448
    ));
    let (_, der) = openssl_csr(
        dir,
        "p521",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"],
        &[],
    );
    assert!(matches!(
        refusal("P-521", &der),
        RequestError::UnsupportedCurve(oid) if oid == rfc5912::SECP_521_R_1
    ));

    // RSA-PSS-only keys (id-RSASSA-PSS in the SPKI) are not certified.
    openssl_ok(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA-PSS",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsapss.key",
        ],
    );
    let der = openssl_csr_for_key(dir, "rsapss", "rsapss.key", &[]);
    assert!(matches!(
        refusal("RSA-PSS key", &der),
        RequestError::UnsupportedKeyAlgorithm(oid) if oid == rfc5912::ID_RSASSA_PSS
    ));

    // An X25519 key (key agreement only; OpenSSL cannot sign a request with it, so take an
    // Ed25519 request and change its key's algorithm).
    let (_, ed) = openssl_csr(dir, "ed25519", &["-newkey", "ed25519"], &[]);
    let ed25519_oid = [0x06, 0x03, 0x2b, 0x65, 0x70];
    let at = ed.windows(5).position(|w| w == ed25519_oid).unwrap();
    let mut x25519 = ed.clone();
    x25519[at + 4] = 0x6e;
    assert!(matches!(
        refusal("X25519", &x25519),
        RequestError::UnsupportedKeyAlgorithm(oid) if oid == rfc8410::ID_X_25519
    ));
}
