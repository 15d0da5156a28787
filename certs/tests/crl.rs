//! CRLs made by `build_crl`, checked by `openssl crl` and `openssl verify -crl_check`.
//!
//! The `openssl` binary is required: without it these tests fail (they never skip).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{LyingSigner, P256Signer, Pki, openssl_ok, openssl_text, pki, subject_key, write_pem};
use signet_certs::{
    CertError, Certificate, CertificateList, IssuerError, Profile, Reason, RequestError,
    RevokedEntry, SerialNumber, TbsSigner, build_crl, crl_to_der, crl_to_pem,
};

const HOUR: Duration = Duration::from_secs(3600);

fn crl(pki: &Pki, number: u64, revoked: &[RevokedEntry]) -> CertificateList {
    let now = SystemTime::now();
    build_crl(
        &pki.ca,
        &pki.ca_signer,
        number,
        now - Duration::from_secs(60),
        now + 24 * HOUR,
        revoked,
    )
    .unwrap()
}

fn write_crl(dir: &Path, name: &str, crl: &CertificateList) {
    std::fs::write(dir.join(name), crl_to_pem(crl).unwrap()).unwrap();
}

fn serial_of(cert: &Certificate) -> SerialNumber {
    cert.tbs_certificate().serial_number().clone()
}

/// A serial number as OpenSSL prints it: hex of the integer's value, without the leading zero
/// byte DER puts before a first byte with its high bit set.
fn hex(bytes: &[u8]) -> String {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes[start..].iter().map(|b| format!("{b:02X}")).collect()
}

/// `openssl verify -crl_check -CAfile ca.pem -CRLfile <crl> <leaf>`: (success, output).
fn verify_with_crl(dir: &Path, crl: &str, leaf: &str) -> (bool, String) {
    openssl_text(
        dir,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "ca.pem",
            "-CRLfile",
            crl,
            leaf,
        ],
    )
}

fn leaf(pki: &Pki, name: &str) -> Certificate {
    let cert = pki
        .issue(&Profile::MtlsClient, &format!("CN={name}"), subject_key())
        .unwrap();
    write_pem(pki.path(), &format!("{name}.pem"), &cert);
    cert
}

#[test]
fn held_certificate_is_revoked_until_released() {
    let pki = pki();
    let dir = pki.path();
    let alice = leaf(&pki, "alice");
    leaf(&pki, "bob");

    // Deactivate alice: certificateHold.
    let held = RevokedEntry {
        serial: serial_of(&alice),
        revoked_at: SystemTime::now() - Duration::from_secs(30),
        reason: Reason::CertificateHold,
    };
    let list = crl(&pki, 7, std::slice::from_ref(&held));
    write_crl(dir, "crl.pem", &list);
    std::fs::write(dir.join("crl.der"), crl_to_der(&list).unwrap()).unwrap();

    // The CRL's signature verifies against the CA certificate.
    let (ok, text) = openssl_text(
        dir,
        &["crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout"],
    );
    assert!(ok && text.contains("verify OK"), "{text}");

    // Its content, as OpenSSL reads the DER.
    let text = openssl_ok(
        dir,
        &["crl", "-in", "crl.der", "-inform", "DER", "-noout", "-text"],
    );
    assert!(text.contains("Version 2 (0x1)"), "{text}");
    assert!(
        text.contains("Signature Algorithm: ecdsa-with-SHA256"),
        "{text}"
    );
    assert!(text.contains("X509v3 CRL Number:"), "{text}");
    let number = text
        .lines()
        .skip_while(|l| !l.contains("X509v3 CRL Number:"))
        .nth(1)
        .unwrap();
    assert_eq!(number.trim(), "7");
    assert!(text.contains("X509v3 Authority Key Identifier:"), "{text}");
    assert!(!text.contains("Issuing Distribution Point"), "{text}");
    assert!(
        text.contains(&format!("Serial Number: {}", hex(held.serial.as_bytes()))),
        "{text}"
    );
    assert!(text.contains("X509v3 CRL Reason Code:"), "{text}");
    assert!(text.contains("Certificate Hold"), "{text}");

    // The CRL's AKI is the CA's SKI.
    let ca_text = openssl_ok(dir, &["x509", "-in", "ca.pem", "-noout", "-text"]);
    let key_id = |text: &str, header: &str| {
        let line = text
            .lines()
            .skip_while(|l| !l.contains(header))
            .nth(1)
            .unwrap();
        line.trim().trim_start_matches("keyid:").to_owned()
    };
    assert_eq!(
        key_id(&text, "Authority Key Identifier"),
        key_id(&ca_text, "Subject Key Identifier")
    );

    // alice is revoked for OpenSSL, bob is not.
    let (ok, text) = verify_with_crl(dir, "crl.pem", "alice.pem");
    assert!(!ok, "{text}");
    assert!(
        text.contains("error 23") && text.contains("certificate revoked"),
        "{text}"
    );
    let (ok, text) = verify_with_crl(dir, "crl.pem", "bob.pem");
    assert!(ok && text.contains("bob.pem: OK"), "{text}");

    // Activate alice again: the next CRL no longer lists her (and has no revoked list at all).
    let empty = crl(&pki, 8, &[]);
    assert!(empty.tbs_cert_list.revoked_certificates.is_none());
    write_crl(dir, "crl.pem", &empty);
    let (ok, text) = openssl_text(
        dir,
        &["crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout"],
    );
    assert!(ok && text.contains("verify OK"), "{text}");
    let text = openssl_ok(dir, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    assert!(text.contains("No Revoked Certificates."), "{text}");
    let (ok, text) = verify_with_crl(dir, "crl.pem", "alice.pem");
    assert!(ok && text.contains("alice.pem: OK"), "{text}");
}

#[test]
fn every_reason_is_encoded() {
    let pki = pki();
    let dir = pki.path();
    let reasons = [
        (Reason::Unspecified, None),
        (Reason::KeyCompromise, Some("Key Compromise")),
        (Reason::CaCompromise, Some("CA Compromise")),
        (Reason::AffiliationChanged, Some("Affiliation Changed")),
        (Reason::Superseded, Some("Superseded")),
        (Reason::CessationOfOperation, Some("Cessation Of Operation")),
        (Reason::CertificateHold, Some("Certificate Hold")),
        (Reason::PrivilegeWithdrawn, Some("Privilege Withdrawn")),
        (Reason::AaCompromise, Some("AA Compromise")),
    ];
    let entries: Vec<RevokedEntry> = reasons
        .iter()
        .enumerate()
        .map(|(i, (reason, _))| RevokedEntry {
            serial: SerialNumber::from(1000 + i as u64),
            revoked_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            reason: *reason,
        })
        .collect();
    write_crl(dir, "crl.pem", &crl(&pki, 1, &entries));
    let (ok, text) = openssl_text(
        dir,
        &["crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout"],
    );
    assert!(ok && text.contains("verify OK"), "{text}");

    let text = openssl_ok(dir, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    // One block per entry, in order: its serial, its date, and its reason if any.
    let blocks: Vec<&str> = text.split("Serial Number: ").skip(1).collect();
    assert_eq!(blocks.len(), reasons.len(), "{text}");
    for (i, (block, (reason, name))) in blocks.iter().zip(reasons).enumerate() {
        assert!(
            block.starts_with(&format!("{:04X}", 1000 + i)),
            "{reason:?}: {block}"
        );
        assert!(
            block.contains("Revocation Date: Nov 14 22:13:20 2023 GMT"),
            "{reason:?}: {block}"
        );
        match name {
            Some(name) => assert!(block.contains(name), "{reason:?}: {block}"),
            None => assert!(!block.contains("Reason Code"), "{reason:?}: {block}"),
        }
    }
}

#[test]
fn bad_crl_requests_are_refused() {
    let pki = pki();
    let now = SystemTime::now();
    let build = |ca: &Certificate, signer: &dyn TbsSigner, this: SystemTime, next: SystemTime| {
        build_crl(ca, signer, 1, this, next, &[])
    };

    // Not the CA's key.
    let err = build(&pki.ca, &P256Signer::generate(), now, now + HOUR).unwrap_err();
    assert!(
        matches!(err, CertError::Issuer(IssuerError::KeyMismatch)),
        "{err:?}"
    );

    // nextUpdate must be after thisUpdate.
    for next in [now, now - HOUR] {
        let err = build(&pki.ca, &pki.ca_signer, now, next).unwrap_err();
        assert!(
            matches!(
                err,
                CertError::InvalidRequest(RequestError::InvalidValidity(_))
            ),
            "{err:?}"
        );
    }

    // A certificate whose keyUsage lacks cRLSign cannot issue CRLs, even with its own key.
    let leaf_signer = P256Signer::generate();
    let leaf = pki
        .issue(&Profile::MtlsClient, "CN=leaf", leaf_signer.public_key())
        .unwrap();
    let err = build(&leaf, &leaf_signer, now, now + HOUR).unwrap_err();
    assert!(
        matches!(err, CertError::Issuer(IssuerError::NotACrlIssuer)),
        "{err:?}"
    );

    // A signer that claims the CA key but signs with another: OpenSSL rejects the CRL.
    let liar = LyingSigner {
        claimed: P256Signer {
            key: pki.ca_signer.key.clone(),
        },
        actual: P256Signer::generate(),
    };
    let forged = build(&pki.ca, &liar, now, now + HOUR).unwrap();
    write_crl(pki.path(), "forged.pem", &forged);
    let (_, text) = openssl_text(
        pki.path(),
        &["crl", "-in", "forged.pem", "-CAfile", "ca.pem", "-noout"],
    );
    assert!(!text.contains("verify OK"), "{text}");
    assert!(text.contains("verify failure"), "{text}");
}
