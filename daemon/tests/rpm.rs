//! RPM v4 packages signed by keys in a real SoftHSM2 token (`formats::rpm`), checked by an
//! independent implementation: packages built by `rpmbuild` are streamed through the head
//! parser (7-byte and 64 KiB chunks; the payload copied through, never held), signed, and
//! `rpmkeys --checksig` (rpm 4.18) reports the header signature OK against the imported
//! certificate, and BAD once one byte of the main header changed. Signing an already signed
//! package replaces its signature. Non-RPM input, a truncated head and absurd declared sizes
//! are typed errors.
//!
//! rpm runs with fixed arguments on files in temporary directories, with a private
//! `--dbpath` per key (never the system rpmdb). This binary holds one test because SoftHSM2
//! reads SOFTHSM2_CONF once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use signetd::formats::openpgp::{CertificateBuilder, TokenKey};
use signetd::formats::rpm::{
    Feed, HeadParser, RpmError, RpmHead, SIGTAG_DSA, SIGTAG_RSA, Section, SignedHead,
};
use signetd::hsm::KeyAlgorithm;
use time::OffsetDateTime;

use support::rpm::{SUMMARY, checksig, rpmbuild, rpmkeys};
use support::s;

/// What the caller persists: the key's OpenPGP creation time.
const CREATED: i64 = 1_750_000_000;
/// rpm's signature header tag for its reserved space.
const RESERVEDSPACE: u32 = 1008;

/// rpm's name of a key type in `Header V4 <alg>/SHA256 Signature`.
fn rpm_alg_name(alg: KeyAlgorithm) -> &'static str {
    match alg {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => "RSA",
        KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => "ECDSA",
        KeyAlgorithm::Ed25519 => "EdDSA",
    }
}

/// Streams `input` through the head parser in `chunk`-byte reads, signs the head on the
/// token (the three steps), and writes head + payload to `output`. Returns the signed head
/// and the most bytes the parser held.
fn sign_stream(
    input: &Path,
    output: &Path,
    token: &TokenKey,
    created: OffsetDateTime,
    chunk: usize,
) -> (SignedHead, usize) {
    let mut file = File::open(input).unwrap();
    let mut parser = HeadParser::new();
    let mut buf = vec![0u8; chunk];
    let rest = loop {
        let n = file.read(&mut buf).unwrap();
        assert!(n > 0, "{} ends inside its head", input.display());
        match parser.feed(&buf[..n]).unwrap() {
            Feed::NeedMore(missing) => assert!(missing > 0),
            Feed::Complete { used } => break buf[used..n].to_vec(),
        }
    };
    let held = parser.head_len();
    let pending = parser
        .into_head()
        .unwrap()
        .signer(token.key(), created)
        .unwrap();
    let token_signature = token.request_signature_blocking(pending.request()).unwrap();
    let signed = pending.complete(&token_signature).unwrap();
    assert_eq!(signed.input_head_len(), held);
    let mut out = File::create(output).unwrap();
    out.write_all(signed.to_bytes()).unwrap();
    out.write_all(&rest).unwrap();
    std::io::copy(&mut file, &mut out).unwrap();
    out.sync_all().unwrap();
    (signed, held)
}

/// Checks a signed package: one header signature by `token`'s key, OK; the digests OK.
fn assert_good(db: &Path, pkg: &Path, token: &TokenKey, alg: KeyAlgorithm) -> String {
    let (ok, lines, out) = checksig(db, pkg);
    let short_id = token.key().key_id()[8..].to_lowercase();
    let expected = format!(
        "Header V4 {}/SHA256 Signature, key ID {short_id}: OK",
        rpm_alg_name(alg)
    );
    assert!(ok, "rpmkeys --checksig failed for {alg}:\n{out}");
    assert_eq!(lines, std::slice::from_ref(&expected), "{out}");
    for digest in [
        "Header SHA256 digest: OK",
        "Payload SHA256 digest: OK",
        "MD5 digest: OK",
    ] {
        assert!(out.contains(digest), "{digest}:\n{out}");
    }
    expected
}

/// The package with one byte of the summary (inside the main header) changed.
fn tamper(pkg: &Path, signed: &SignedHead, out: &Path) {
    let mut bytes = std::fs::read(pkg).unwrap();
    let head = signed.to_bytes().len();
    let main_start = head - RpmHead::parse(&bytes).unwrap().header_bytes().len();
    let at = bytes[main_start..head]
        .windows(SUMMARY.len())
        .position(|w| w == SUMMARY.as_bytes())
        .expect("summary in the main header");
    bytes[main_start + at] ^= 0x01;
    std::fs::write(out, bytes).unwrap();
}

/// 20 MiB that no compressor shrinks (xorshift).
fn incompressible(path: &Path) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut data = Vec::with_capacity(20 << 20);
    while data.len() < 20 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, data).unwrap();
}

#[test]
fn token_keys_sign_rpm_headers_rpmkeys_verifies() {
    support::require_tool("rpmbuild", "rpm");
    support::require_tool("rpmkeys", "rpm");
    let instance = support::Instance::new();
    let (hsm, _metrics) = instance.in_process_hsm();
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    let created = OffsetDateTime::from_unix_timestamp(CREATED).unwrap();

    let small = rpmbuild(dir, "signet-demo", None);
    let blob = dir.join("blob.bin");
    incompressible(&blob);
    let big = rpmbuild(dir, "signet-big", Some(&blob));
    let big_len = std::fs::metadata(&big).unwrap().len();
    assert!(big_len > 20 << 20, "{big_len}");

    // rpmbuild's output: digests and reserved space, no signature.
    let bytes = std::fs::read(&small).unwrap();
    let unsigned = RpmHead::parse(&bytes).unwrap();
    assert!(unsigned.signatures().is_empty());
    assert!(unsigned.signature_tags().contains(&RESERVEDSPACE));
    assert_eq!(unsigned.nevra(), Some("signet-demo-1.0-1.noarch"));
    let (_, lines, out) = checksig(&dir.join("empty-db"), &small);
    assert!(lines.is_empty(), "{out}");

    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    let mut previous: Option<(PathBuf, KeyAlgorithm)> = None;
    for alg in [
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::EcP256,
    ] {
        let label = format!("rpm-{alg}");
        hsm.generate_key("signing", &label, alg).unwrap();
        let slot = hsm.key("signing", &label, alg).unwrap();
        let token = TokenKey::new(hsm.clone(), slot, created).unwrap();
        let cert = CertificateBuilder::new(
            token.key(),
            &format!("Signet RPM {alg} <rpm@signetd.invalid>"),
        )
        .unwrap()
        .finish(|r| token.request_signature_blocking(r))
        .unwrap();
        let cert_path = dir.join(format!("{alg}.asc"));
        std::fs::write(&cert_path, cert.armored()).unwrap();
        let db = dir.join(format!("db-{alg}"));
        std::fs::create_dir_all(&db).unwrap();
        let (ok, out) = rpmkeys(&db, &["--import", s(&cert_path)]);
        if !ok && alg == KeyAlgorithm::EcP256 {
            // rpm 4.18's OpenPGP parser has no ECDSA: it refuses the certificate, and a
            // package signed by the key cannot be verified. Signed all the same, to show what
            // rpm makes of it; the whole check below runs once an rpm imports the key.
            eprintln!("{alg}: rpmkeys --import refused: {}", out.trim());
            let signed_path = dir.join(format!("small-{alg}.rpm"));
            let (signed, _) =
                sign_stream(&small, &signed_path, &token, OffsetDateTime::now_utc(), 7);
            assert_eq!(signed.signature_tag(), SIGTAG_DSA);
            // rpm 4.18: "Header DSA signature: BAD (package tag 267: invalid OpenPGP
            // signature)" (its parser does not know public key algorithm 19).
            let (ok, lines, out) = checksig(&db, &signed_path);
            assert!(!ok && lines.is_empty(), "{out}");
            let line = out
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("Header DSA signature: "))
                .unwrap_or_else(|| panic!("no header signature line:\n{out}"));
            assert!(!line.contains(": OK"), "{out}");
            refused.push(format!("{alg}: {line}"));
            continue;
        }
        assert!(ok, "rpmkeys --import {alg}:\n{out}");

        // The small package, fed 7 bytes at a time.
        let now = OffsetDateTime::now_utc();
        let signed_path = dir.join(format!("small-{alg}.rpm"));
        let (signed, held) = sign_stream(&small, &signed_path, &token, now, 7);
        assert_eq!(held, unsigned.head_len());
        let tag = if rpm_alg_name(alg) == "RSA" {
            SIGTAG_RSA
        } else {
            SIGTAG_DSA
        };
        assert_eq!(signed.signature_tag(), tag);
        assert_eq!(signed.key_id(), token.key().key_id());
        assert_eq!(signed.fingerprint(), token.key().fingerprint());
        assert_eq!(signed.header_sha256(), unsigned.header_sha256());
        assert_eq!(signed.nevra(), Some("signet-demo-1.0-1.noarch"));
        // The reserved space made room: the main header stays where it was.
        assert_eq!(signed.to_bytes().len(), unsigned.head_len());
        let line = assert_good(&db, &signed_path, &token, alg);
        eprintln!("{alg}: {line}");
        accepted.push(line);

        // One byte of the main header changed: BAD.
        let bad_path = dir.join(format!("small-{alg}-bad.rpm"));
        tamper(&signed_path, &signed, &bad_path);
        let (ok, lines, out) = checksig(&db, &bad_path);
        assert!(!ok, "a changed header verified for {alg}:\n{out}");
        assert_eq!(lines.len(), 1, "{out}");
        assert!(
            lines[0].ends_with(": BAD") || lines[0].ends_with("NOT OK"),
            "{out}"
        );
        eprintln!("{alg}, changed header: {}", lines[0]);

        // Signed again by the same key: the old signature replaced, not added to.
        let resigned_path = dir.join(format!("small-{alg}-again.rpm"));
        let (resigned, _) = sign_stream(
            &signed_path,
            &resigned_path,
            &token,
            now + time::Duration::seconds(1),
            65_536,
        );
        assert_ne!(
            resigned.signature().to_bytes(),
            signed.signature().to_bytes()
        );
        let head = RpmHead::parse(&std::fs::read(&resigned_path).unwrap()).unwrap();
        let sigs = head.signatures();
        assert_eq!(sigs.len(), 1, "{:?}", head.signature_tags());
        assert_eq!(sigs[0], (tag, resigned.signature().to_bytes().to_vec()));
        assert_good(&db, &resigned_path, &token, alg);

        // The previous algorithm's signed package, signed by this key: only this key's
        // signature is left (a different tag where the algorithms differ).
        if let Some((prev_path, prev_alg)) = &previous {
            let cross_path = dir.join(format!("small-{prev_alg}-then-{alg}.rpm"));
            sign_stream(prev_path, &cross_path, &token, now, 4096);
            let head = RpmHead::parse(&std::fs::read(&cross_path).unwrap()).unwrap();
            let tags: Vec<u32> = head.signatures().into_iter().map(|(t, _)| t).collect();
            assert_eq!(tags, [tag], "{:?}", head.signature_tags());
            assert_good(&db, &cross_path, &token, alg);
        }
        previous = Some((signed_path.clone(), alg));

        // 20 MiB of payload streams past in 64 KiB reads; only the head is held.
        let big_signed = dir.join(format!("big-{alg}.rpm"));
        let (signed, held) = sign_stream(&big, &big_signed, &token, now, 65_536);
        assert!(held < 64 * 1024, "the parser held {held} bytes");
        assert_eq!(
            std::fs::metadata(&big_signed).unwrap().len(),
            big_len - held as u64 + signed.to_bytes().len() as u64
        );
        assert_good(&db, &big_signed, &token, alg);
    }
    eprintln!("rpmkeys accepted:\n{}", accepted.join("\n"));
    eprintln!("rpmkeys refused:\n{}", refused.join("\n"));
    // RSA and Ed25519 at least; P-256 where the rpm has ECDSA.
    assert!(accepted.len() >= 2, "{accepted:?}");

    // Input that is not an RPM head.
    let not_rpm = b"<!DOCTYPE html><html>not a package</html>".repeat(10);
    assert!(matches!(RpmHead::parse(&not_rpm), Err(RpmError::NotRpm(_))));
    let mut parser = HeadParser::new();
    assert!(matches!(parser.feed(&not_rpm), Err(RpmError::NotRpm(_))));
    assert!(parser.feed(&bytes).is_err(), "a failed parser stays failed");
    // Truncated: one byte short of the head, and a lead alone.
    let head_len = unsigned.head_len();
    assert!(matches!(
        RpmHead::parse(&bytes[..head_len - 1]),
        Err(RpmError::Truncated { missing: 1 })
    ));
    assert!(matches!(
        RpmHead::parse(&bytes[..96]),
        Err(RpmError::Truncated { .. })
    ));
    let mut parser = HeadParser::new();
    assert_eq!(parser.feed(&bytes[..100]).unwrap(), Feed::NeedMore(12));
    assert!(matches!(
        parser.into_head(),
        Err(RpmError::Truncated { missing: 12 })
    ));
    // A huge declared index count in the signature header, and in the main header.
    let mut huge = bytes.clone();
    huge[96 + 8..96 + 12].copy_from_slice(&0x0100_0000u32.to_be_bytes());
    let err = RpmHead::parse(&huge).unwrap_err();
    assert!(
        matches!(
            err,
            RpmError::BadHeader {
                section: Section::Signature,
                offset: 96,
                ..
            }
        ),
        "{err}"
    );
    eprintln!("huge index count: {err}");
    let main_start = head_len - unsigned.header_bytes().len();
    let mut huge = bytes.clone();
    huge[main_start + 8..main_start + 12].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        RpmHead::parse(&huge),
        Err(RpmError::BadHeader {
            section: Section::Main,
            ..
        })
    ));
    // A declared data length past the limit.
    let mut huge = bytes.clone();
    huge[main_start + 12..main_start + 16].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
    assert!(matches!(
        RpmHead::parse(&huge),
        Err(RpmError::TooLarge { .. })
    ));
}
