//! Certificates made by signet-certs, checked by OpenSSL as an independent verifier.
//!
//! The `openssl` binary is required: without it these tests fail (they never skip).

// A test should stop at the first unexpected error, with that error in the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::error::Error as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use common::{
    CA_NAME, LyingSigner, P256Signer, Pki, ca_validity, leaf_validity, make_ca, now_minus_skew,
    openssl, openssl_ok, pki, random_serial, subject_key, write_pem,
};
use const_oid::db::{rfc5912, rfc8410};
use der::asn1::BitString;
use der::{Decode, Encode};
use signet_certs::{
    AlgorithmIdentifierOwned, CertError, Certificate, IssuerError, IssuerUrls, Name, RequestError,
    SignerError, SubjectPublicKeyInfoOwned, TbsSigner, fingerprint_sha256, issue, parse_name,
    self_signed_ca, validity,
};

// ---------------------------------------------------------------------------------------------
// Software signers standing in for HSM keys.

/// An Ed25519 key: the signature is the raw 64 bytes.
struct Ed25519Signer {
    key: ed25519_dalek::SigningKey,
}

impl TbsSigner for Ed25519Signer {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: rfc8410::ID_ED_25519,
            parameters: None,
        }
    }

    fn public_key(&self) -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned {
            algorithm: self.signature_algorithm(),
            subject_public_key: BitString::from_bytes(self.key.verifying_key().as_bytes()).unwrap(),
        }
    }

    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, SignerError> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(tbs).to_bytes().to_vec())
    }
}

/// The HSM layer's own error, carried through `SignerError`.
#[derive(Debug)]
struct TokenGone;

impl std::fmt::Display for TokenGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CKR_TOKEN_NOT_PRESENT")
    }
}

impl std::error::Error for TokenGone {}

/// Has the CA's key but the token fails at signing time.
struct FailingSigner<'a>(&'a P256Signer);

impl TbsSigner for FailingSigner<'_> {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        self.0.signature_algorithm()
    }

    fn public_key(&self) -> SubjectPublicKeyInfoOwned {
        self.0.public_key()
    }

    fn sign(&self, _tbs: &[u8]) -> Result<Vec<u8>, SignerError> {
        Err(SignerError::with_source("C_Sign failed", TokenGone))
    }
}

// ---------------------------------------------------------------------------------------------
// OpenSSL.

/// `openssl verify -CAfile ca <options> leaf`: Ok(()) if it printed "<leaf>: OK", else
/// Err(everything it printed).
fn verify(dir: &Path, ca: &str, leaf: &str, options: &[&str]) -> Result<(), String> {
    let mut args = vec!["verify", "-CAfile", ca];
    args.extend_from_slice(options);
    args.push(leaf);
    let out = openssl(dir, &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains(&format!("{leaf}: OK")) {
        Ok(())
    } else {
        Err(text)
    }
}

fn assert_verifies(dir: &Path, ca: &str, leaf: &str, options: &[&str]) {
    if let Err(text) = verify(dir, ca, leaf, options) {
        panic!("openssl verify {options:?} {leaf} against {ca} failed:\n{text}");
    }
}

/// OpenSSL must reject `leaf`, with an error message containing `why`.
fn assert_rejected(dir: &Path, ca: &str, leaf: &str, options: &[&str], why: &str) {
    match verify(dir, ca, leaf, options) {
        Ok(()) => panic!("openssl verify {options:?} accepted {leaf} against {ca}"),
        Err(text) => assert!(
            text.contains(why),
            "openssl rejected {leaf} but not with {why:?}:\n{text}"
        ),
    }
}

/// The extensions of `file` as OpenSSL prints them.
fn extensions(dir: &Path, file: &str) -> String {
    openssl_ok(
        dir,
        &[
            "x509",
            "-in",
            file,
            "-noout",
            "-ext",
            "basicConstraints,keyUsage,extendedKeyUsage,subjectAltName,crlDistributionPoints,\
             authorityInfoAccess,subjectKeyIdentifier,authorityKeyIdentifier",
        ],
    )
}

/// The header line and the indented value lines of one extension in `openssl -ext` output,
/// e.g. `("X509v3 Key Usage: critical", "Digital Signature")`. Panics if absent.
fn extension<'a>(text: &'a str, name: &str) -> (&'a str, String) {
    let mut lines = text.lines();
    let header = lines
        .by_ref()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} extension in:\n{text}"));
    let value: Vec<&str> = lines
        .take_while(|l| l.starts_with(' '))
        .map(str::trim)
        .collect();
    (header.trim_end(), value.join(" "))
}

fn assert_no_extension(text: &str, name: &str) {
    assert!(
        !text.lines().any(|l| l.starts_with(name)),
        "unexpected {name} extension in:\n{text}"
    );
}

/// The `AB:CD:...` key identifier of an SKI or AKI value (OpenSSL 1.1 prefixes AKIs with
/// `keyid:`).
fn key_id(value: &str) -> String {
    value.trim_start_matches("keyid:").trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn server_profile() -> signet_certs::Profile {
    signet_certs::Profile::TlsServer {
        dns_names: vec![
            "signetd.example".to_owned(),
            "*.api.signetd.example".to_owned(),
        ],
        ip_addresses: vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
    }
}

// ---------------------------------------------------------------------------------------------
// The CA certificate.

#[test]
fn ca_certificate_is_a_valid_self_signed_ca() {
    let pki = pki();
    let dir = pki.path();

    // -check_ss_sig makes OpenSSL check the trust anchor's own signature too.
    let out = openssl_ok(
        dir,
        &["verify", "-check_ss_sig", "-CAfile", "ca.pem", "ca.pem"],
    );
    assert!(out.contains("ca.pem: OK"), "{out}");

    let text = extensions(dir, "ca.pem");
    assert_eq!(
        extension(&text, "X509v3 Basic Constraints"),
        (
            "X509v3 Basic Constraints: critical",
            "CA:TRUE, pathlen:0".to_owned()
        )
    );
    assert_eq!(
        extension(&text, "X509v3 Key Usage"),
        (
            "X509v3 Key Usage: critical",
            "Digital Signature, Certificate Sign, CRL Sign".to_owned()
        )
    );
    let ski = key_id(&extension(&text, "X509v3 Subject Key Identifier").1);
    let aki = key_id(&extension(&text, "X509v3 Authority Key Identifier").1);
    assert_eq!(ski.len(), 20 * 3 - 1, "SKI should be 20 bytes: {ski}");
    assert_eq!(ski, aki);
    assert_no_extension(&text, "X509v3 Extended Key Usage");

    // Names keep RFC 4514 order; the serial and the fingerprint are the ones we computed.
    let out = openssl_ok(
        dir,
        &[
            "x509",
            "-in",
            "ca.pem",
            "-noout",
            "-subject",
            "-issuer",
            "-serial",
            "-fingerprint",
            "-sha256",
            "-nameopt",
            "RFC2253",
        ],
    );
    assert!(out.contains(&format!("subject={CA_NAME}\n")), "{out}");
    assert!(out.contains(&format!("issuer={CA_NAME}\n")), "{out}");
    // OpenSSL prints the integer's value: without the leading zero byte of its DER encoding.
    let serial = pki.ca.tbs_certificate().serial_number().as_bytes();
    let serial = hex(
        &serial[serial.iter().take_while(|b| **b == 0).count()..],
        "",
    );
    assert!(out.contains(&format!("serial={serial}\n")), "{out}");
    let fingerprint = hex(&fingerprint_sha256(&pki.ca.to_der().unwrap()), ":");
    assert!(
        out.to_uppercase()
            .contains(&format!("SHA256 FINGERPRINT={fingerprint}\n")),
        "{out}"
    );
}

fn hex(bytes: &[u8], sep: &str) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(sep)
}

#[test]
fn ed25519_ca_issues_verifiable_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let signer = Ed25519Signer {
        key: ed25519_dalek::SigningKey::from_bytes(&rand::random()),
    };
    let ca = make_ca(&signer, "CN=signetd Ed25519 CA,O=signetd");
    write_pem(dir, "ca.pem", &ca);
    let out = openssl_ok(
        dir,
        &["verify", "-check_ss_sig", "-CAfile", "ca.pem", "ca.pem"],
    );
    assert!(out.contains("ca.pem: OK"), "{out}");

    let leaf = issue(
        &ca,
        &signer,
        &signet_certs::Profile::MtlsClient,
        parse_name("CN=client").unwrap(),
        subject_key(),
        random_serial(),
        leaf_validity(),
        &IssuerUrls::default(),
    )
    .unwrap();
    write_pem(dir, "leaf.pem", &leaf);
    assert_verifies(dir, "ca.pem", "leaf.pem", &["-purpose", "sslclient"]);
    let text = openssl_ok(dir, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(text.contains("Signature Algorithm: ED25519"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Leaf profiles.

#[test]
fn mtls_client_certificate() {
    let pki = pki();
    let dir = pki.path();
    let leaf = pki
        .issue(
            &signet_certs::Profile::MtlsClient,
            "CN=alice,O=signetd",
            subject_key(),
        )
        .unwrap();
    write_pem(dir, "client.pem", &leaf);

    assert_verifies(dir, "ca.pem", "client.pem", &[]);
    assert_verifies(dir, "ca.pem", "client.pem", &["-purpose", "sslclient"]);
    assert_rejected(
        dir,
        "ca.pem",
        "client.pem",
        &["-purpose", "sslserver"],
        "certificate purpose",
    );

    let text = extensions(dir, "client.pem");
    assert_eq!(
        extension(&text, "X509v3 Basic Constraints"),
        ("X509v3 Basic Constraints: critical", "CA:FALSE".to_owned())
    );
    assert_eq!(
        extension(&text, "X509v3 Key Usage"),
        ("X509v3 Key Usage: critical", "Digital Signature".to_owned())
    );
    assert_eq!(
        extension(&text, "X509v3 Extended Key Usage").1,
        "TLS Web Client Authentication"
    );
    assert_no_extension(&text, "X509v3 Subject Alternative Name");
    assert_issuer_links(&pki, &text);
}

/// AKI = the CA's SKI, SKI present, and the CRL / OCSP URLs.
fn assert_issuer_links(pki: &Pki, leaf_ext: &str) {
    let ca_ext = extensions(pki.path(), "ca.pem");
    let ca_ski = key_id(&extension(&ca_ext, "X509v3 Subject Key Identifier").1);
    let aki = key_id(&extension(leaf_ext, "X509v3 Authority Key Identifier").1);
    let ski = key_id(&extension(leaf_ext, "X509v3 Subject Key Identifier").1);
    assert_eq!(aki, ca_ski);
    assert_ne!(ski, ca_ski);
    assert_eq!(
        extension(leaf_ext, "X509v3 CRL Distribution Points").1,
        "Full Name: URI:http://ca.signetd.example/ca.crl"
    );
    assert_eq!(
        extension(leaf_ext, "Authority Information Access").1,
        "OCSP - URI:http://ca.signetd.example/ocsp"
    );
}

#[test]
fn tls_server_certificate() {
    let pki = pki();
    let dir = pki.path();
    let leaf = pki
        .issue(&server_profile(), "CN=signetd.example", subject_key())
        .unwrap();
    write_pem(dir, "server.pem", &leaf);

    assert_verifies(dir, "ca.pem", "server.pem", &[]);
    assert_verifies(dir, "ca.pem", "server.pem", &["-purpose", "sslserver"]);
    assert_rejected(
        dir,
        "ca.pem",
        "server.pem",
        &["-purpose", "sslclient"],
        "certificate purpose",
    );
    // OpenSSL matches host names and addresses against the subjectAltName.
    for options in [
        ["-verify_hostname", "signetd.example"],
        ["-verify_hostname", "x.api.signetd.example"],
        ["-verify_ip", "127.0.0.1"],
        ["-verify_ip", "::1"],
    ] {
        assert_verifies(dir, "ca.pem", "server.pem", &options);
    }
    assert_rejected(
        dir,
        "ca.pem",
        "server.pem",
        &["-verify_hostname", "other.example"],
        "hostname mismatch",
    );
    assert_rejected(
        dir,
        "ca.pem",
        "server.pem",
        &["-verify_ip", "10.0.0.1"],
        "IP address mismatch",
    );

    let text = extensions(dir, "server.pem");
    assert_eq!(
        extension(&text, "X509v3 Basic Constraints"),
        ("X509v3 Basic Constraints: critical", "CA:FALSE".to_owned())
    );
    // An EC key: no keyEncipherment.
    assert_eq!(
        extension(&text, "X509v3 Key Usage"),
        ("X509v3 Key Usage: critical", "Digital Signature".to_owned())
    );
    assert_eq!(
        extension(&text, "X509v3 Extended Key Usage").1,
        "TLS Web Server Authentication"
    );
    // Non-critical, since the subject is not empty.
    assert_eq!(
        extension(&text, "X509v3 Subject Alternative Name"),
        (
            "X509v3 Subject Alternative Name:",
            "DNS:signetd.example, DNS:*.api.signetd.example, IP Address:127.0.0.1, \
             IP Address:0:0:0:0:0:0:0:1"
                .to_owned()
        )
    );
    assert_issuer_links(&pki, &text);
}

#[test]
fn tls_server_with_empty_subject_has_critical_san() {
    let pki = pki();
    let dir = pki.path();
    let leaf = pki.issue(&server_profile(), "", subject_key()).unwrap();
    write_pem(dir, "server.pem", &leaf);
    assert_verifies(
        dir,
        "ca.pem",
        "server.pem",
        &[
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "signetd.example",
        ],
    );
    let text = extensions(dir, "server.pem");
    assert_eq!(
        extension(&text, "X509v3 Subject Alternative Name").0,
        "X509v3 Subject Alternative Name: critical"
    );
}

#[test]
fn tls_server_rsa_key_gets_key_encipherment() {
    let pki = pki();
    let dir = pki.path();
    // OpenSSL makes the RSA subject key: only its public half matters here.
    openssl_ok(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.key",
        ],
    );
    openssl_ok(
        dir,
        &[
            "pkey",
            "-in",
            "rsa.key",
            "-pubout",
            "-outform",
            "DER",
            "-out",
            "rsa.pub.der",
        ],
    );
    let der = std::fs::read(dir.join("rsa.pub.der")).unwrap();
    let rsa_key = SubjectPublicKeyInfoOwned::from_der(&der).unwrap();
    assert_eq!(rsa_key.algorithm.oid, rfc5912::RSA_ENCRYPTION);

    let leaf = pki
        .issue(&server_profile(), "CN=signetd.example", rsa_key)
        .unwrap();
    write_pem(dir, "server.pem", &leaf);
    assert_verifies(dir, "ca.pem", "server.pem", &["-purpose", "sslserver"]);
    let text = extensions(dir, "server.pem");
    assert_eq!(
        extension(&text, "X509v3 Key Usage"),
        (
            "X509v3 Key Usage: critical",
            "Digital Signature, Key Encipherment".to_owned()
        )
    );
}

#[test]
fn document_signer_certificate() {
    let pki = pki();
    let dir = pki.path();
    let leaf = pki
        .issue(
            &signet_certs::Profile::DocumentSigner,
            "CN=release signing,O=signetd",
            subject_key(),
        )
        .unwrap();
    write_pem(dir, "doc.pem", &leaf);

    assert_verifies(dir, "ca.pem", "doc.pem", &[]);
    // `any` is OpenSSL's purpose for "any use the extensions allow".
    assert_verifies(dir, "ca.pem", "doc.pem", &["-purpose", "any"]);
    for purpose in ["sslclient", "sslserver"] {
        assert_rejected(
            dir,
            "ca.pem",
            "doc.pem",
            &["-purpose", purpose],
            "certificate purpose",
        );
    }

    let text = extensions(dir, "doc.pem");
    assert_eq!(
        extension(&text, "X509v3 Key Usage"),
        (
            "X509v3 Key Usage: critical",
            "Digital Signature, Non Repudiation".to_owned()
        )
    );
    // OpenSSL 3.0 has no name for id-kp-documentSigning (RFC 9336); later versions may.
    let eku = extension(&text, "X509v3 Extended Key Usage").1;
    assert!(
        eku == "1.3.6.1.5.5.7.3.36" || eku == "Document Signing",
        "unexpected extendedKeyUsage {eku:?}"
    );
    assert_no_extension(&text, "X509v3 Subject Alternative Name");
    assert_issuer_links(&pki, &text);
}

#[test]
fn urls_are_optional() {
    let mut pki = pki();
    pki.urls = IssuerUrls::default();
    let leaf = pki
        .issue(&signet_certs::Profile::MtlsClient, "CN=bob", subject_key())
        .unwrap();
    write_pem(pki.path(), "client.pem", &leaf);
    assert_verifies(
        pki.path(),
        "ca.pem",
        "client.pem",
        &["-purpose", "sslclient"],
    );
    let text = extensions(pki.path(), "client.pem");
    assert_no_extension(&text, "X509v3 CRL Distribution Points");
    assert_no_extension(&text, "Authority Information Access");

    pki.urls = IssuerUrls {
        crl: None,
        ocsp: Some("http://ocsp.signetd.example".to_owned()),
    };
    let leaf = pki
        .issue(&signet_certs::Profile::MtlsClient, "CN=bob", subject_key())
        .unwrap();
    write_pem(pki.path(), "client.pem", &leaf);
    let text = extensions(pki.path(), "client.pem");
    assert_no_extension(&text, "X509v3 CRL Distribution Points");
    assert_eq!(
        extension(&text, "Authority Information Access").1,
        "OCSP - URI:http://ocsp.signetd.example"
    );
}

// ---------------------------------------------------------------------------------------------
// Wrong keys.

#[test]
fn leaf_of_another_ca_key_is_rejected() {
    let pki = pki();
    let dir = pki.path();

    // Same CA name, different key: the leaf must not chain to the real CA.
    let other_signer = P256Signer::generate();
    let other_ca = make_ca(&other_signer, CA_NAME);
    let leaf = issue(
        &other_ca,
        &other_signer,
        &signet_certs::Profile::MtlsClient,
        parse_name("CN=mallory").unwrap(),
        subject_key(),
        random_serial(),
        leaf_validity(),
        &pki.urls,
    )
    .unwrap();
    write_pem(dir, "other.pem", &leaf);
    write_pem(dir, "other-ca.pem", &other_ca);
    assert_verifies(dir, "other-ca.pem", "other.pem", &[]);
    assert_rejected(
        dir,
        "ca.pem",
        "other.pem",
        &[],
        "unable to get local issuer certificate",
    );

    // A signer that claims the CA's key but signs with another one gets past `issue` (which
    // trusts the signer's public key), but not past OpenSSL's signature check.
    let liar = LyingSigner {
        claimed: P256Signer {
            key: pki.ca_signer.key.clone(),
        },
        actual: P256Signer::generate(),
    };
    let forged = issue(
        &pki.ca,
        &liar,
        &signet_certs::Profile::MtlsClient,
        parse_name("CN=mallory").unwrap(),
        subject_key(),
        random_serial(),
        leaf_validity(),
        &pki.urls,
    )
    .unwrap();
    write_pem(dir, "forged.pem", &forged);
    assert_rejected(
        dir,
        "ca.pem",
        "forged.pem",
        &[],
        "certificate signature failure",
    );
}

#[test]
fn signer_that_does_not_match_the_ca_is_refused() {
    let pki = pki();
    let err = issue(
        &pki.ca,
        &P256Signer::generate(),
        &signet_certs::Profile::MtlsClient,
        parse_name("CN=alice").unwrap(),
        subject_key(),
        random_serial(),
        leaf_validity(),
        &pki.urls,
    )
    .unwrap_err();
    assert!(
        matches!(err, CertError::Issuer(IssuerError::KeyMismatch)),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Refusals before signing.

#[test]
fn bad_requests_are_refused() {
    let pki = pki();
    let no_names = signet_certs::Profile::TlsServer {
        dns_names: vec![],
        ip_addresses: vec![],
    };
    let bad_name = signet_certs::Profile::TlsServer {
        dns_names: vec!["bad name.example".to_owned()],
        ip_addresses: vec![],
    };
    let x25519_key = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: rfc8410::ID_X_25519,
            parameters: None,
        },
        subject_public_key: BitString::from_bytes(&[9; 32]).unwrap(),
    };

    let cases: Vec<(&str, Result<Certificate, CertError>)> = vec![
        (
            "server without names",
            pki.issue(&no_names, "CN=x", subject_key()),
        ),
        (
            "invalid DNS name",
            pki.issue(&bad_name, "CN=x", subject_key()),
        ),
        (
            "client with empty subject",
            pki.issue(&signet_certs::Profile::MtlsClient, "", subject_key()),
        ),
        (
            "key agreement key",
            pki.issue(&signet_certs::Profile::MtlsClient, "CN=x", x25519_key),
        ),
    ];
    for (what, result) in cases {
        let err = result.expect_err(what);
        assert!(
            matches!(err, CertError::InvalidRequest(_)),
            "{what}: {err:?}"
        );
        println!("{what}: {err}");
    }
    assert!(matches!(
        pki.issue(&no_names, "CN=x", subject_key()),
        Err(CertError::InvalidRequest(
            RequestError::MissingSubjectAltName
        ))
    ));
    assert!(matches!(
        pki.issue(&bad_name, "CN=x", subject_key()),
        Err(CertError::InvalidRequest(RequestError::InvalidDnsName(n))) if n == "bad name.example"
    ));

    // A leaf may not outlive its CA.
    let too_long = validity(now_minus_skew(), Duration::from_secs(20 * 365 * 86_400)).unwrap();
    let err = issue(
        &pki.ca,
        &pki.ca_signer,
        &signet_certs::Profile::MtlsClient,
        parse_name("CN=x").unwrap(),
        subject_key(),
        random_serial(),
        too_long,
        &pki.urls,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CertError::InvalidRequest(RequestError::InvalidValidity(_))
        ),
        "{err:?}"
    );

    // A CA certificate needs a subject.
    let err = self_signed_ca(
        &pki.ca_signer,
        &Name::default(),
        ca_validity(),
        random_serial(),
    )
    .unwrap_err();
    assert!(
        matches!(err, CertError::InvalidRequest(RequestError::EmptySubject)),
        "{err:?}"
    );
}

#[test]
fn bad_issuers_are_refused() {
    let mut pki = pki();

    // A leaf certificate cannot issue, even with its own key.
    let leaf_signer = P256Signer::generate();
    let leaf = pki
        .issue(
            &signet_certs::Profile::MtlsClient,
            "CN=leaf",
            leaf_signer.public_key(),
        )
        .unwrap();
    let err = issue(
        &leaf,
        &leaf_signer,
        &signet_certs::Profile::MtlsClient,
        parse_name("CN=x").unwrap(),
        subject_key(),
        random_serial(),
        leaf_validity(),
        &IssuerUrls::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, CertError::Issuer(IssuerError::NotACa)),
        "{err:?}"
    );

    // A signer whose algorithm does not fit its key.
    struct RsaAlgOnEcKey(P256Signer);
    impl TbsSigner for RsaAlgOnEcKey {
        fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
            AlgorithmIdentifierOwned {
                oid: rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
                parameters: Some(der::Any::null()),
            }
        }
        fn public_key(&self) -> SubjectPublicKeyInfoOwned {
            self.0.public_key()
        }
        fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, SignerError> {
            self.0.sign(tbs)
        }
    }
    let err = self_signed_ca(
        &RsaAlgOnEcKey(P256Signer::generate()),
        &parse_name(CA_NAME).unwrap(),
        ca_validity(),
        random_serial(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CertError::Issuer(IssuerError::UnsupportedSignatureAlgorithm { .. })
        ),
        "{err:?}"
    );

    // Issuer URLs must be http(s) URLs.
    pki.urls.crl = Some("ldap://ca.signetd.example/crl".to_owned());
    let err = pki
        .issue(&signet_certs::Profile::MtlsClient, "CN=x", subject_key())
        .unwrap_err();
    assert!(
        matches!(err, CertError::Issuer(IssuerError::InvalidUrl(_))),
        "{err:?}"
    );
}

#[test]
fn signer_failure_keeps_its_cause() {
    let pki = pki();
    let err = issue(
        &pki.ca,
        &FailingSigner(&pki.ca_signer),
        &signet_certs::Profile::MtlsClient,
        parse_name("CN=alice").unwrap(),
        subject_key(),
        random_serial(),
        leaf_validity(),
        &pki.urls,
    )
    .unwrap_err();
    let CertError::Signer(signer_err) = &err else {
        panic!("expected a signer error, got {err:?}");
    };
    assert_eq!(signer_err.message(), "C_Sign failed");
    // The HSM layer finds its own error again in the source chain.
    let cause = err.source().and_then(|e| e.source()).unwrap();
    assert!(cause.downcast_ref::<TokenGone>().is_some(), "{cause:?}");
}
