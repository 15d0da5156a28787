//! Every key type generated through the daemon's HSM layer in a real SoftHSM2 token is
//! sensitive, always sensitive and never extractable — as the token reports it through PKCS#11
//! and as `pkcs11-tool --list-objects` (OpenSC) independently shows — and signs.
//!
//! This binary holds one test because SoftHSM2 reads SOFTHSM2_CONF once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use signetd::crypto::{EcCurve, HashAlg, SignInput, SignatureScheme};
use signetd::hsm::KeyAlgorithm;

#[test]
fn generated_keys_never_leave_the_token() {
    let instance = support::Instance::new();
    let (hsm, _metrics) = instance.in_process_hsm();

    for alg in KeyAlgorithm::ALL {
        let label = format!("k-{alg}");
        let spki = hsm.generate_key("signing", &label, *alg).unwrap();
        assert!(!spki.is_empty());
        let info = hsm.key_info("signing", &label).unwrap();
        assert!(info.sensitive, "{alg}: {info:?}");
        assert!(!info.extractable, "{alg}: {info:?}");
        assert!(info.always_sensitive, "{alg}: {info:?}");
        assert!(info.never_extractable, "{alg}: {info:?}");
        // The public key read back later is the one generation returned.
        assert_eq!(hsm.public_key("signing", &label, *alg).unwrap(), spki);
        // Keys with a default scheme sign, and the signature verifies in software.
        if let Some(scheme) = alg.default_scheme() {
            let key = hsm.key("signing", &label, *alg).unwrap();
            let sig = hsm
                .sign_blocking(&key, scheme, SignInput::Message(b"message"))
                .unwrap();
            // The slot signs with a session copy of the key (SoftHSM2 checks a token object's
            // file on every use), which the token keeps just as locked in.
            let (token_object, copy) = hsm.signing_object_info(&key).unwrap();
            assert!(!token_object, "{alg}: the slot signs with the token object");
            assert!(copy.sensitive && !copy.extractable, "{alg}: {copy:?}");
            assert!(
                copy.always_sensitive && copy.never_extractable,
                "{alg}: {copy:?}"
            );
            // Lookups by label still see the token object only.
            assert_eq!(hsm.key_info("signing", &label).unwrap(), info);
            scheme
                .verify(&spki, SignInput::Message(b"message"), &sig)
                .unwrap();
            assert!(
                scheme
                    .verify(&spki, SignInput::Message(b"messagE"), &sig)
                    .is_err()
            );
        }
    }

    // The independent view: OpenSC's pkcs11-tool lists every key as locked in the token.
    let listed = instance
        .softhsm
        .list_private_keys("test-signing", support::PIN)
        .unwrap();
    for alg in KeyAlgorithm::ALL {
        let label = format!("k-{alg}");
        let key = listed
            .iter()
            .find(|k| k.label == label)
            .unwrap_or_else(|| panic!("{label} not listed: {listed:?}"));
        assert!(key.is_locked_in_token(), "{label}: {key:?}");
        assert!(
            !key.usage.iter().any(|u| u == "decrypt" || u == "unwrap"),
            "{label} may only sign: {key:?}"
        );
    }

    // The P-256 signature also verifies with OpenSSL, given the public key the token reports.
    let key = hsm
        .key("signing", "k-ec-p256", KeyAlgorithm::EcP256)
        .unwrap();
    let sig = hsm
        .sign_blocking(
            &key,
            SignatureScheme::Ecdsa(EcCurve::P256, HashAlg::Sha256),
            SignInput::Message(b"hello openssl"),
        )
        .unwrap();
    let dir = instance.dir.path();
    std::fs::write(dir.join("msg"), b"hello openssl").unwrap();
    std::fs::write(dir.join("sig"), &sig).unwrap();
    std::fs::write(dir.join("pub.der"), key.public_key()).unwrap();
    let out = support::run_ok(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            support::s(&dir.join("pub.der")),
            "-keyform",
            "DER",
            "-signature",
            support::s(&dir.join("sig")),
            support::s(&dir.join("msg")),
        ],
    );
    assert!(out.contains("Verified OK"), "{out}");
}
