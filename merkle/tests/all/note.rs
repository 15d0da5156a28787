//! Checkpoints and signed notes: round trips, tampering, key selection, strict parsing, and
//! the example key and notes of Go's `golang.org/x/mod/sumdb/note` tests.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use signet_merkle::{
    Checkpoint, NoteError, NoteSignature, SignedNote, key_id, parse_vkey, signing_input, vkey,
};

const ORIGIN: &str = "signetd.example/audit";

fn audit_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[8; 32])
}

fn checkpoint() -> Checkpoint {
    Checkpoint::new(ORIGIN, 1234, [0xab; 32]).unwrap()
}

/// What the daemon does: body -> token signs -> wrap.
fn sign(cp: &Checkpoint, name: &str, key: &SigningKey) -> SignedNote {
    let body = cp.body();
    let sig = key.sign(signing_input(&body));
    let line = NoteSignature::ed25519(name, &key.verifying_key(), &sig).unwrap();
    SignedNote::new(body, vec![line]).unwrap()
}

#[test]
fn checkpoint_body_format() {
    let cp = checkpoint();
    let root_b64 = BASE64.encode([0xab; 32]);
    assert_eq!(cp.body(), format!("{ORIGIN}\n1234\n{root_b64}\n"));
    assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
    let empty = Checkpoint::new(ORIGIN, 0, signet_merkle::EMPTY_ROOT).unwrap();
    assert_eq!(
        empty.body(),
        format!("{ORIGIN}\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
    );
    let max = Checkpoint::new(ORIGIN, u64::MAX, [0; 32]).unwrap();
    assert_eq!(Checkpoint::parse_body(&max.body()).unwrap(), max);
}

#[test]
fn checkpoint_parsing_is_strict() {
    let root = BASE64.encode([0xab; 32]);
    let short_root = BASE64.encode([0xab; 31]);
    let unpadded = root.trim_end_matches('=').to_owned();
    let bad = [
        format!("{ORIGIN}\n1234\n{root}"),
        format!("{ORIGIN}\n1234\n{root}\n\n"),
        format!("{ORIGIN}\n1234\n{root}\nextension\n"),
        format!("{ORIGIN}\n1234\n"),
        format!("\n1234\n{root}\n"),
        format!("{ORIGIN}\n01234\n{root}\n"),
        format!("{ORIGIN}\n+1234\n{root}\n"),
        format!("{ORIGIN}\n-1\n{root}\n"),
        format!("{ORIGIN}\n\n{root}\n"),
        format!("{ORIGIN}\n 1234\n{root}\n"),
        format!("{ORIGIN}\n18446744073709551616\n{root}\n"),
        format!("{ORIGIN}\n1234\n{short_root}\n"),
        format!("{ORIGIN}\n1234\n{unpadded}\n"),
        format!("{ORIGIN}\n1234\n {root}\n"),
        format!("{ORIGIN}\r\n1234\n{root}\n"),
    ];
    for body in bad {
        assert!(
            matches!(
                Checkpoint::parse_body(&body),
                Err(NoteError::MalformedCheckpoint(_))
            ),
            "accepted {body:?}"
        );
    }
    assert!(Checkpoint::new("", 1, [0; 32]).is_err());
    assert!(Checkpoint::new("a\nb", 1, [0; 32]).is_err());
}

#[test]
fn round_trip_and_verify() {
    let cp = checkpoint();
    let note = sign(&cp, ORIGIN, &audit_key());
    let text = note.encode();
    assert!(text.starts_with(&format!("{}\n\u{2014} {ORIGIN} ", cp.body())));
    assert!(text.ends_with('\n'));
    let parsed = SignedNote::parse(&text).unwrap();
    assert_eq!(parsed, note);
    assert_eq!(parsed.encode(), text);
    assert_eq!(parsed.body(), cp.body());
    assert_eq!(parsed.signatures()[0].signature().len(), 64);
    assert_eq!(
        parsed.signatures()[0].key_id(),
        key_id(ORIGIN, audit_key().verifying_key().as_bytes())
    );
    assert_eq!(
        parsed.verify(ORIGIN, &audit_key().verifying_key()).unwrap(),
        cp
    );
    // Independent check of the signature with ed25519-dalek directly.
    let sig = ed25519_dalek::Signature::from_slice(parsed.signatures()[0].signature()).unwrap();
    audit_key()
        .verifying_key()
        .verify_strict(cp.body().as_bytes(), &sig)
        .unwrap();
}

/// Every byte of the encoded note, one flipped bit at a time (a different bit for each byte:
/// Ed25519 verification is slow in debug builds), breaks parsing or verification.
#[test]
fn any_flipped_byte_fails() {
    let note = sign(&checkpoint(), ORIGIN, &audit_key()).encode();
    let key = audit_key().verifying_key();
    let mut bytes = note.into_bytes();
    for i in 0..bytes.len() {
        let mask = 1u8 << (i % 8);
        bytes[i] ^= mask;
        let outcome = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| SignedNote::parse(t).ok())
            .map(|n| n.verify(ORIGIN, &key));
        assert!(
            !matches!(outcome, Some(Ok(_))),
            "byte {i} ^ {mask:#04x} still verifies"
        );
        bytes[i] ^= mask;
    }
}

#[test]
fn flipped_signature_byte_is_an_invalid_signature() {
    let note = sign(&checkpoint(), ORIGIN, &audit_key());
    let line = &note.signatures()[0];
    for i in 0..64 {
        let mut sig = line.signature().to_vec();
        sig[i] ^= 0x01;
        let bad = NoteSignature::new(line.name(), line.key_id(), sig).unwrap();
        let bad = SignedNote::new(note.body(), vec![bad]).unwrap();
        assert!(
            matches!(
                bad.verify(ORIGIN, &audit_key().verifying_key()),
                Err(NoteError::InvalidSignature { .. })
            ),
            "byte {i}"
        );
    }
}

#[test]
fn key_selection() {
    let cp = checkpoint();
    let note = sign(&cp, ORIGIN, &audit_key());
    let good = audit_key().verifying_key();
    let other = other_key().verifying_key();
    // Wrong name: no line of that key.
    assert!(matches!(
        note.verify("someone.else/audit", &good),
        Err(NoteError::NoMatchingSignature { .. })
    ));
    // Wrong key under the right name: different key id, so no line either.
    assert!(matches!(
        note.verify(ORIGIN, &other),
        Err(NoteError::NoMatchingSignature { .. })
    ));
    // Right name and key id but a signature by another key: invalid, not ignored.
    let forged_sig = other_key().sign(cp.body().as_bytes());
    let forged = NoteSignature::new(
        ORIGIN,
        key_id(ORIGIN, good.as_bytes()),
        forged_sig.to_bytes().to_vec(),
    )
    .unwrap();
    let forged = SignedNote::new(cp.body(), vec![forged]).unwrap();
    assert!(matches!(
        forged.verify(ORIGIN, &good),
        Err(NoteError::InvalidSignature { .. })
    ));
    // A cosigner's line next to ours is ignored; ours still verifies, and so does theirs.
    let body = cp.body();
    let ours = NoteSignature::ed25519(ORIGIN, &good, &audit_key().sign(body.as_bytes())).unwrap();
    let witness = NoteSignature::ed25519(
        "witness.example/w1",
        &other,
        &other_key().sign(body.as_bytes()),
    )
    .unwrap();
    let cosigned = SignedNote::new(body, vec![witness, ours]).unwrap();
    let reparsed = SignedNote::parse(&cosigned.encode()).unwrap();
    assert_eq!(reparsed.verify(ORIGIN, &good).unwrap(), cp);
    assert_eq!(reparsed.verify("witness.example/w1", &other).unwrap(), cp);
    // Same name and key id twice, one of them bad: rejected.
    let twice = SignedNote::new(
        cp.body(),
        vec![note.signatures()[0].clone(), forged.signatures()[0].clone()],
    )
    .unwrap();
    assert!(twice.verify(ORIGIN, &good).is_err());
}

#[test]
fn note_parsing_is_strict() {
    let note = sign(&checkpoint(), ORIGIN, &audit_key());
    let body = note.body().to_owned();
    let line = note.encode()[body.len() + 1..].to_owned();
    let blob = line.rsplit(' ').next().unwrap().trim_end().to_owned();
    let unpadded = blob.trim_end_matches('=');
    let bad = vec![
        body.clone(),
        format!("{body}\n"),
        format!("{body}\n{}", line.trim_end()),
        format!("\x01{body}\n{line}"),
        format!("{body}\n{line}Unexpected line.\n"),
        format!("{body}\n\u{2014} Bad Name {blob}\n"),
        format!("{body}\n\u{2014} a+b {blob}\n"),
        format!("{body}\n- {ORIGIN} {blob}\n"),
        format!("{body}\n\u{2014}{ORIGIN} {blob}\n"),
        format!("{body}\n\u{2014} {ORIGIN}  {blob}\n"),
        format!("{body}\n\u{2014} {ORIGIN} {unpadded}\n"),
        format!("{body}\n\u{2014} {ORIGIN} AAAAAA==\n"),
        format!("{body}\n\u{2014} {ORIGIN}\n"),
        format!("{body}\n{}", line.repeat(101)),
        format!("{}\r\n{line}", body.trim_end()),
        format!("{body}\n\t{line}"),
    ];
    for text in bad {
        assert!(SignedNote::parse(&text).is_err(), "accepted {text:?}");
    }
    // Up to 100 signatures are fine.
    assert!(SignedNote::parse(&format!("{body}\n{}", line.repeat(100))).is_ok());
    // Construction enforces the same rules.
    assert!(SignedNote::new("no newline", note.signatures().to_vec()).is_err());
    assert!(SignedNote::new(body.clone(), vec![]).is_err());
    assert!(NoteSignature::new("", [0; 4], vec![1]).is_err());
    assert!(NoteSignature::new("a b", [0; 4], vec![1]).is_err());
    assert!(NoteSignature::new("a", [0; 4], vec![]).is_err());
}

#[test]
fn vkey_round_trip() {
    let key = audit_key().verifying_key();
    let v = vkey(ORIGIN, &key).unwrap();
    let id = hex::encode(key_id(ORIGIN, key.as_bytes()));
    assert!(v.starts_with(&format!("{ORIGIN}+{id}+")));
    assert_eq!(parse_vkey(&v).unwrap(), (ORIGIN.to_owned(), key));
    assert!(vkey("bad name", &key).is_err());
}

// The example keys and notes of golang.org/x/mod/sumdb/note (note_test.go).
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter_signing_key() -> SigningKey {
    let material = BASE64
        .decode(PETER_SKEY.splitn(5, '+').nth(4).unwrap())
        .unwrap();
    assert_eq!(material[0], 0x01);
    SigningKey::from_bytes(&material[1..].try_into().unwrap())
}

#[test]
fn go_note_vectors() {
    let sk = peter_signing_key();
    let pk = sk.verifying_key();
    // Key id and verifier key string as Go computes them.
    assert_eq!(
        key_id("PeterNeumann", pk.as_bytes()),
        [0xc7, 0x4f, 0x20, 0xa3]
    );
    assert_eq!(vkey("PeterNeumann", &pk).unwrap(), PETER_VKEY);
    assert_eq!(
        parse_vkey(PETER_VKEY).unwrap(),
        ("PeterNeumann".to_owned(), pk)
    );

    // Ed25519 is deterministic: signing Go's text reproduces Go's note byte for byte.
    let sig = sk.sign(signing_input(GO_TEXT));
    let line = NoteSignature::ed25519("PeterNeumann", &pk, &sig).unwrap();
    let note = SignedNote::new(GO_TEXT, vec![line]).unwrap();
    let go_note = format!("{GO_TEXT}\n{PETER_SIG}");
    assert_eq!(note.encode(), go_note);

    // Go's note parses and verifies; it is not a checkpoint.
    let parsed = SignedNote::parse(&go_note).unwrap();
    assert_eq!(parsed.verify_text("PeterNeumann", &pk).unwrap(), GO_TEXT);
    assert!(matches!(
        parsed.verify("PeterNeumann", &pk),
        Err(NoteError::MalformedCheckpoint(_))
    ));
    let tampered = go_note.replace("cryptography", "cryptographY");
    assert!(matches!(
        SignedNote::parse(&tampered)
            .unwrap()
            .verify_text("PeterNeumann", &pk),
        Err(NoteError::InvalidSignature { .. })
    ));

    // Two signers; each verifies with its own key and ignores the other's line.
    let (enoch_name, enoch) = parse_vkey(ENOCH_VKEY).unwrap();
    let both = SignedNote::parse(&format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}")).unwrap();
    assert_eq!(both.signatures().len(), 2);
    assert_eq!(both.verify_text("PeterNeumann", &pk).unwrap(), GO_TEXT);
    assert_eq!(both.verify_text(&enoch_name, &enoch).unwrap(), GO_TEXT);
    assert_eq!(both.signatures()[1].key_id(), [0xaf, 0x0c, 0xfe, 0x78]);

    // Go's malformed messages.
    let bad = [
        GO_TEXT.to_owned(),
        format!("{GO_TEXT}\n"),
        format!("{GO_TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\x01{GO_TEXT}\n{PETER_SIG}"),
        format!(
            "{GO_TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
        ),
        format!("{GO_TEXT}\n{PETER_SIG}Unexpected line.\n"),
        format!("{GO_TEXT}\n{}", PETER_SIG.repeat(101)),
    ];
    for text in bad {
        assert!(SignedNote::parse(&text).is_err(), "accepted {text:?}");
    }
}

/// Go's `TestNewVerifier`: every proper substring and every single-byte increment of the
/// verifier key is rejected.
#[test]
fn go_vkey_manglings_are_rejected() {
    assert!(parse_vkey(PETER_VKEY).is_ok());
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i != 0 || j != b.len() {
                let s = std::str::from_utf8(&b[i..j]).unwrap();
                assert!(parse_vkey(s).is_err(), "accepted {s:?}");
            }
        }
    }
    let mut m = b.to_vec();
    for i in 0..m.len() {
        m[i] += 1;
        let s = std::str::from_utf8(&m).unwrap();
        assert!(parse_vkey(s).is_err(), "accepted {s:?}");
        m[i] -= 1;
    }
    // Wrong key length and unknown algorithm, each with a matching key hash.
    assert!(
        parse_vkey("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
            .is_err()
    );
    assert!(
        parse_vkey("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW").is_err()
    );
    let _: VerifyingKey = parse_vkey(ENOCH_VKEY).unwrap().1;
}
