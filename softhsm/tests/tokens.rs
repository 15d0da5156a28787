//! End-to-end tests against the real SoftHSM2 and OpenSC tools: token
//! directories, tokens, key generation and the token's own report that keys
//! are locked in.

use std::fmt::Display;

use signet_softhsm::{Error, KeyKind, SoftHsm};

const SO_PIN: &str = "so-pin-1234";
const PIN: &str = "user-pin-5678";

/// Unwraps with the error's Display, which names the Debian package to
/// install when a tool is missing: a missing tool fails the test, loudly.
fn ok<T, E: Display>(result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{e}"),
    }
}

fn tempdir() -> tempfile::TempDir {
    ok(tempfile::tempdir())
}

fn expected_key_type(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Rsa2048 | KeyKind::Rsa3072 | KeyKind::Rsa4096 => "RSA",
        KeyKind::EcP256 | KeyKind::EcP384 => "EC",
        KeyKind::Ed25519 => "EC_EDWARDS",
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn every_key_kind_is_generated_locked_in_the_token() {
    let dir = tempdir();
    let hsm = ok(SoftHsm::create(dir.path()));
    ok(hsm.init_token("signing", SO_PIN, PIN));
    ok(hsm.init_token("audit", SO_PIN, PIN));
    assert!(ok(hsm.has_token("signing")));
    assert!(ok(hsm.has_token("audit")));
    assert!(!ok(hsm.has_token("ca")));

    for (n, kind) in KeyKind::ALL.iter().enumerate() {
        let id = [0x10, u8::try_from(n).unwrap_or(u8::MAX)];
        ok(hsm.generate_key("signing", PIN, &format!("key-{kind}"), &id, *kind));
    }
    ok(hsm.generate_key("audit", PIN, "checkpoint", &[0xaa], KeyKind::Ed25519));

    let keys = ok(hsm.list_private_keys("signing", PIN));
    assert_eq!(keys.len(), KeyKind::ALL.len(), "{keys:#?}");
    for (n, kind) in KeyKind::ALL.iter().enumerate() {
        let label = format!("key-{kind}");
        let Some(key) = keys.iter().find(|key| key.label == label) else {
            panic!("{label} missing from {keys:#?}");
        };
        assert_eq!(key.id, format!("10{n:02x}"));
        assert_eq!(key.key_type, expected_key_type(*kind), "{key:?}");
        for flag in ["sensitive", "always sensitive", "never extractable"] {
            assert!(key.has_access(flag), "{label} lacks {flag:?}: {key:?}");
        }
        assert!(!key.has_access("extractable"), "{label} is extractable");
        assert!(key.is_locked_in_token());
        assert!(key.usage.iter().any(|u| u == "sign"), "{key:?}");
    }

    // The other token holds only its own key.
    let audit_keys = ok(hsm.list_private_keys("audit", PIN));
    assert_eq!(audit_keys.len(), 1, "{audit_keys:#?}");
    assert_eq!(audit_keys[0].label, "checkpoint");
    assert_eq!(audit_keys[0].id, "aa");
    assert!(audit_keys[0].is_locked_in_token());
}

#[test]
fn create_is_idempotent() {
    let dir = tempdir();
    let first = ok(SoftHsm::create(dir.path()));
    assert!(first.conf_path().is_file());
    assert!(first.token_dir().is_dir());
    assert!(first.module_path().is_file());
    ok(first.init_token("keep", SO_PIN, PIN));
    let conf = ok(std::fs::read_to_string(first.conf_path()));
    assert!(conf.contains(&format!(
        "directories.tokendir = {}\n",
        first.token_dir().display()
    )));

    let second = ok(SoftHsm::create(dir.path()));
    assert_eq!(second.conf_path(), first.conf_path());
    assert_eq!(ok(std::fs::read_to_string(second.conf_path())), conf);
    assert!(
        ok(second.has_token("keep")),
        "tokens survive a second create"
    );
    assert_eq!(ok(second.token_labels()), ["keep"]);
}

#[test]
fn directories_are_independent_within_one_process() {
    let env_before = std::env::var_os(signet_softhsm::CONF_ENV);
    let (a, b) = (tempdir(), tempdir());
    let hsm_a = ok(SoftHsm::create(a.path()));
    let hsm_b = ok(SoftHsm::create(&b.path().join("nested")));
    ok(hsm_a.init_token("same", SO_PIN, PIN));
    ok(hsm_b.init_token("same", SO_PIN, PIN));
    ok(hsm_a.generate_key("same", PIN, "only-in-a", &[1], KeyKind::EcP256));
    assert_eq!(ok(hsm_a.list_private_keys("same", PIN)).len(), 1);
    assert!(ok(hsm_b.list_private_keys("same", PIN)).is_empty());
    assert!(!ok(hsm_b.has_token("other")));
    // This process's own environment was never touched.
    assert_eq!(std::env::var_os(signet_softhsm::CONF_ENV), env_before);
}

#[test]
fn duplicate_labels_are_refused() {
    let dir = tempdir();
    let hsm = ok(SoftHsm::create(dir.path()));
    ok(hsm.init_token("dup", SO_PIN, PIN));
    assert!(matches!(
        hsm.init_token("dup", SO_PIN, PIN),
        Err(Error::TokenExists { .. })
    ));
    ok(hsm.generate_key("dup", PIN, "k", &[1], KeyKind::EcP256));
    assert!(matches!(
        hsm.generate_key("dup", PIN, "k", &[2], KeyKind::EcP256),
        Err(Error::KeyExists { .. })
    ));
    assert_eq!(ok(hsm.token_labels()), ["dup"]);
}

#[test]
fn failures_name_the_problem_but_never_the_pin() {
    let dir = tempdir();
    let hsm = ok(SoftHsm::create(dir.path()));
    ok(hsm.init_token("t", SO_PIN, PIN));

    let wrong_pin = "wrong-pin-000";
    let Err(err) = hsm.list_private_keys("t", wrong_pin) else {
        panic!("a wrong PIN must fail");
    };
    let message = err.to_string();
    assert!(matches!(err, Error::ToolFailed { .. }), "{err:?}");
    assert!(message.contains("CKR_PIN_INCORRECT"), "{message}");
    assert!(!message.contains(wrong_pin), "{message}");
    assert!(!format!("{err:?}").contains(wrong_pin), "{err:?}");

    let Err(err) = hsm.generate_key("absent", PIN, "k", &[1], KeyKind::EcP256) else {
        panic!("an absent token must fail");
    };
    assert!(err.to_string().contains("absent"), "{err}");
    assert!(!err.to_string().contains(PIN), "{err}");

    let Err(err) = hsm.init_token("short-pin", SO_PIN, "12") else {
        panic!("a short PIN must be refused");
    };
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert!(!ok(hsm.has_token("short-pin")));
}
