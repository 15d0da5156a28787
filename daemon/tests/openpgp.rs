//! OpenPGP certificates and signatures of keys in a real SoftHSM2 token (`formats::openpgp`),
//! checked by an independent implementation: GnuPG 2.2 imports every certificate (with our
//! fingerprint) and verifies every detached, text-mode and cleartext signature, and rejects each
//! once one byte of the signed material changed.
//!
//! GnuPG runs with fixed arguments on files in temporary directories, one fresh home directory
//! per key. This binary holds one test because SoftHSM2 reads SOFTHSM2_CONF once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use signetd::crypto::HashAlg;
use signetd::formats::openpgp::{
    CertificateBuilder, CleartextSigner, DetachedSigner, OpenPgpError, OpenPgpKey, SignatureMode,
    TokenKey, TokenRequest,
};
use signetd::hsm::KeyAlgorithm;
use time::OffsetDateTime;

/// What the caller persists: the key's OpenPGP creation time.
const CREATED: i64 = 1_750_000_000;

/// A GnuPG home directory of its own.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("signetd-gpg-")
            .tempdir()
            .unwrap();
        Gpg { home }
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--no-tty", "--status-fd", "1"])
            .args(args)
            .output()
            .expect("run gpg");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn import(&self, path: &Path) {
        let (ok, status, err) = self.run(&["--import", path.to_str().unwrap()]);
        assert!(ok, "gpg --import failed:\n{status}\n{err}");
        assert!(status.contains("[GNUPG:] IMPORT_OK"), "{status}\n{err}");
    }

    /// The fingerprints and key capabilities of the public keys in the keyring.
    fn list(&self) -> Vec<(String, String)> {
        let (ok, out, err) = self.run(&["--with-colons", "--list-keys"]);
        assert!(ok, "gpg --list-keys failed: {err}");
        let mut keys = Vec::new();
        let mut caps = None;
        for line in out.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            match fields[0] {
                "pub" => caps = Some(fields[11].to_owned()),
                "fpr" => keys.push((fields[9].to_owned(), caps.take().unwrap_or_default())),
                _ => {}
            }
        }
        keys
    }

    /// `gpg --list-packets`: GnuPG's own dump of the packets in a file.
    fn packets(&self, path: &Path) -> String {
        let (ok, out, err) = self.run(&["--list-packets", path.to_str().unwrap()]);
        assert!(ok, "gpg --list-packets failed: {err}");
        out
    }

    /// Verifies and returns the VALIDSIG fields; panics unless GOODSIG and VALIDSIG are there.
    fn verify_good(&self, args: &[&str]) -> Vec<String> {
        let mut full = vec!["--verify"];
        full.extend_from_slice(args);
        let (ok, status, err) = self.run(&full);
        assert!(ok, "gpg --verify {args:?} failed:\n{status}\n{err}");
        assert!(status.contains("[GNUPG:] GOODSIG "), "{status}\n{err}");
        let validsig = status
            .lines()
            .find_map(|l| l.strip_prefix("[GNUPG:] VALIDSIG "))
            .unwrap_or_else(|| panic!("no VALIDSIG:\n{status}\n{err}"));
        validsig.split(' ').map(str::to_owned).collect()
    }

    fn verify_bad(&self, args: &[&str]) {
        let mut full = vec!["--verify"];
        full.extend_from_slice(args);
        let (ok, status, err) = self.run(&full);
        assert!(
            !ok,
            "gpg --verify {args:?} accepted a changed input:\n{status}"
        );
        assert!(status.contains("[GNUPG:] BADSIG "), "{status}\n{err}");
        assert!(!status.contains("GOODSIG"), "{status}");
    }
}

/// VALIDSIG fields: 0 fingerprint, 4 signature version, 6 public key algorithm, 7 hash
/// algorithm, 8 signature class, 9 primary key fingerprint.
fn check_validsig(fields: &[String], key: &OpenPgpKey, hash: HashAlg, class: &str) {
    let fpr = key.fingerprint();
    let pk_alg = match key.algorithm() {
        KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => "19",
        KeyAlgorithm::Ed25519 => "22",
        _ => "1",
    };
    let hash_alg = match hash {
        HashAlg::Sha256 => "8",
        HashAlg::Sha384 => "9",
        HashAlg::Sha512 => "10",
    };
    assert_eq!(fields[0], fpr, "{fields:?}");
    assert_eq!(fields[4], "4", "{fields:?}");
    assert_eq!(fields[6], pk_alg, "{fields:?}");
    assert_eq!(fields[7], hash_alg, "{fields:?}");
    assert_eq!(fields[8], class, "{fields:?}");
    assert_eq!(fields[9], fpr, "{fields:?}");
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A copy of `data` with one byte changed.
fn tampered(data: &[u8], at: usize) -> Vec<u8> {
    let mut out = data.to_vec();
    out[at] ^= 0x01;
    out
}

/// Streams `data` into a signer in uneven chunks (one byte, a 64 KiB block, 7 bytes, ...).
fn stream(signer: &mut DetachedSigner, data: &[u8]) {
    let sizes = [1usize, 65_536, 7, 100_003];
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        signer.update(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    assert_eq!(signer.input_len(), data.len() as u64);
}

#[test]
fn token_keys_make_openpgp_certificates_and_signatures_gnupg_verifies() {
    support::require_tool("gpg", "gnupg");
    let instance = support::Instance::new();
    let (hsm, _metrics) = instance.in_process_hsm();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    let created = OffsetDateTime::from_unix_timestamp(CREATED).unwrap();

    // A few hundred KB of binary data, streamed in several chunks.
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let data_path = write(dir, "data.bin", &data);
    let bad_data_path = write(dir, "data-bad.bin", &tampered(&data, 150_000));

    // Text with CRLF and LF endings, trailing spaces and tabs, lines starting with '-' and
    // "From ", an armor line, non-ASCII text.
    let text = "Release notes  \r\n- first item\t\r\nFrom the team:\n\
                -----BEGIN PGP SIGNATURE-----\n  indented line\nGrüße, 世界\n\nlast line\n";
    let text_path = write(dir, "notes.txt", text.as_bytes());
    // The same text with LF only: the same text signature (line endings are canonical).
    let text_lf_path = write(dir, "notes-lf.txt", text.replace("\r\n", "\n").as_bytes());
    let bad_text_path = write(
        dir,
        "notes-bad.txt",
        text.replace("team", "tean").as_bytes(),
    );

    let algorithms = [
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa4096,
    ];
    for alg in algorithms {
        let started = Instant::now();
        let label = format!("pgp-{alg}");
        let spki = hsm.generate_key("signing", &label, alg).unwrap();
        let slot = hsm.key("signing", &label, alg).unwrap();
        let token = TokenKey::new(hsm.clone(), slot, created).unwrap();
        let key = token.key().clone();
        assert_eq!(key.algorithm(), alg);
        assert_eq!(key.created(), CREATED as u32);

        // The same creation time gives the same fingerprint; another one a different one.
        let again = OpenPgpKey::new(&spki, alg, created).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert_eq!(again.key_id(), key.key_id());
        let later = OpenPgpKey::new(&spki, alg, created + time::Duration::seconds(1)).unwrap();
        assert_ne!(later.fingerprint(), key.fingerprint());
        assert_eq!(key.fingerprint().len(), 40);
        assert!(
            key.fingerprint()
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_eq!(key.key_id(), key.fingerprint()[24..]);

        // The certificate, made on the token, imported by GnuPG with our fingerprint.
        let user_id = format!("Signet test {alg} <{alg}@signetd.invalid>");
        let cert = CertificateBuilder::new(&key, &user_id)
            .unwrap()
            .finish(|r| token.request_signature_blocking(r))
            .unwrap();
        assert_eq!(cert.fingerprint(), key.fingerprint());
        assert!(
            cert.armored()
                .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
        );
        let gpg = Gpg::new();
        gpg.import(&write(
            dir,
            &format!("{alg}.asc"),
            cert.armored().as_bytes(),
        ));
        let listed = gpg.list();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].0, key.fingerprint(), "{listed:?}");
        // Sign and certify (GnuPG lists the key's usable capabilities in capitals too).
        assert!(
            listed[0].1.contains('s') && listed[0].1.contains('c'),
            "{listed:?}"
        );
        // GnuPG's reading of the self-certification.
        let cert_packets = gpg.packets(&dir.join(format!("{alg}.asc")));
        let fpr = key.fingerprint();
        for expected in [
            "version 4, algo ".to_owned(),
            format!("created {CREATED}, md5len 0, sigclass 0x13"),
            "(key flags: 03)".to_owned(),
            "(pref-hash-algos: 10 9 8)".to_owned(),
            format!("(issuer fpr v4 {fpr})"),
            format!("(issuer key ID {})", key.key_id()),
        ] {
            assert!(
                cert_packets.contains(&expected),
                "{expected}:\n{cert_packets}"
            );
        }
        if alg == KeyAlgorithm::Ed25519 {
            assert!(
                cert_packets.contains("ed25519 (1.3.6.1.4.1.11591.15.1)"),
                "{cert_packets}"
            );
        }
        // The binary certificate imports into another keyring as the same key.
        let gpg_bin = Gpg::new();
        gpg_bin.import(&write(dir, &format!("{alg}.pgp"), cert.to_bytes()));
        assert_eq!(gpg_bin.list()[0].0, key.fingerprint());

        // Detached signatures over the streamed file, binary and armored, with each hash the
        // key type allows.
        let hashes: &[HashAlg] = match alg {
            KeyAlgorithm::EcP384 => &[HashAlg::Sha384, HashAlg::Sha512],
            _ => &[HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512],
        };
        for &hash in hashes {
            let mut signer =
                DetachedSigner::new(&key, hash, OffsetDateTime::now_utc(), SignatureMode::Binary)
                    .unwrap();
            stream(&mut signer, &data);
            let sig = signer
                .finish(|r| token.request_signature_blocking(r))
                .unwrap();
            let bin = write(dir, &format!("{alg}-{hash}.sig"), sig.to_bytes());
            let asc = write(dir, &format!("{alg}-{hash}.asc"), sig.armored().as_bytes());
            assert!(sig.armored().starts_with("-----BEGIN PGP SIGNATURE-----\n"));
            let sig_packets = gpg.packets(&bin);
            for expected in [
                "sigclass 0x00".to_owned(),
                "hashed subpkt 2 len 4 (sig created".to_owned(),
                format!("hashed subpkt 33 len 21 (issuer fpr v4 {fpr})"),
                format!("hashed subpkt 16 len 8 (issuer key ID {})", key.key_id()),
            ] {
                assert!(
                    sig_packets.contains(&expected),
                    "{expected}:\n{sig_packets}"
                );
            }
            for path in [&bin, &asc] {
                let fields = gpg.verify_good(&[s(path), s(&data_path)]);
                check_validsig(&fields, &key, hash, "00");
                gpg.verify_bad(&[s(path), s(&bad_data_path)]);
            }
        }

        // The async route: the digest is signed on a token thread by `Hsm::sign`.
        let mut signer = DetachedSigner::new(
            &key,
            key.default_hash(),
            OffsetDateTime::now_utc(),
            SignatureMode::Binary,
        )
        .unwrap();
        stream(&mut signer, &data);
        let pending = signer.into_pending().unwrap();
        let token_sig = runtime
            .block_on(token.request_signature(pending.request()))
            .unwrap();
        let sig = pending.complete(&token_sig).unwrap();
        let path = write(dir, &format!("{alg}-async.sig"), sig.to_bytes());
        let fields = gpg.verify_good(&[s(&path), s(&data_path)]);
        check_validsig(&fields, &key, key.default_hash(), "00");

        // rpgp's own signing through the `SigningKey` implementation of the token key.
        {
            use pgp::packet::{SignatureConfig, SignatureType, Subpacket, SubpacketData};
            use pgp::types::{KeyDetails as _, Password, SigningKey as _, Timestamp};
            let mut config =
                SignatureConfig::v4(SignatureType::Binary, token.algorithm(), token.hash_alg());
            config.hashed_subpackets = vec![
                Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now())).unwrap(),
                Subpacket::regular(SubpacketData::IssuerFingerprint(token.fingerprint())).unwrap(),
            ];
            let signature = config.sign(&token, &Password::empty(), &data[..]).unwrap();
            let detached = pgp::composed::DetachedSignature::new(signature);
            let bytes = pgp::ser::Serialize::to_bytes(&detached).unwrap();
            let path = write(dir, &format!("{alg}-rpgp.sig"), &bytes);
            let fields = gpg.verify_good(&[s(&path), s(&data_path)]);
            check_validsig(&fields, &key, key.default_hash(), "00");
        }

        // A text-mode detached signature: the CRLF file and its LF twin verify, a changed one
        // does not.
        let hash = *hashes.last().unwrap();
        let mut signer =
            DetachedSigner::new(&key, hash, OffsetDateTime::now_utc(), SignatureMode::Text)
                .unwrap();
        for chunk in text.as_bytes().chunks(5) {
            signer.update(chunk);
        }
        let sig = signer
            .finish(|r| token.request_signature_blocking(r))
            .unwrap();
        let asc = write(dir, &format!("{alg}-text.asc"), sig.armored().as_bytes());
        for file in [&text_path, &text_lf_path] {
            let fields = gpg.verify_good(&[s(&asc), s(file)]);
            check_validsig(&fields, &key, hash, "01");
        }
        gpg.verify_bad(&[s(&asc), s(&bad_text_path)]);

        // Cleartext: verifies, and GnuPG recovers the text (dash-escaping undone, trailing
        // whitespace dropped, LF endings); a changed body line does not verify.
        let hash = key.default_hash();
        let msg = CleartextSigner::sign(
            &key,
            hash,
            OffsetDateTime::now_utc(),
            text.as_bytes(),
            |r| token.request_signature_blocking(r),
        )
        .unwrap();
        assert!(msg.starts_with(&format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: {}\n\nRelease notes\n- - first item\n\
             - From the team:\n- -----BEGIN PGP SIGNATURE-----\n",
            hash.as_str().to_uppercase()
        )));
        let msg_path = write(dir, &format!("{alg}-clear.asc"), msg.as_bytes());
        let fields = gpg.verify_good(&[s(&msg_path)]);
        check_validsig(&fields, &key, hash, "01");
        let out_path = dir.join(format!("{alg}-clear.out"));
        let (ok, status, err) = gpg.run(&["--output", s(&out_path), "--decrypt", s(&msg_path)]);
        assert!(ok, "gpg --decrypt failed:\n{status}\n{err}");
        let recovered = std::fs::read_to_string(&out_path).unwrap();
        let expected: String = text
            .split('\n')
            .map(|l| l.trim_end_matches([' ', '\t', '\r']))
            .collect::<Vec<_>>()
            .join("\n");
        // The text ends with LF, which only ends its last line: gpg gives back exactly this.
        assert_eq!(recovered, expected);
        // Trailing whitespace added to a line does not matter to the cleartext framework.
        let spaced = msg.replacen("Release notes\n", "Release notes \t \n", 1);
        gpg.verify_good(&[s(&write(
            dir,
            &format!("{alg}-clear-sp.asc"),
            spaced.as_bytes(),
        ))]);
        for (from, to) in [("last line", "last linE"), ("- - first", "- - firsT")] {
            let bad = msg.replacen(from, to, 1);
            assert_ne!(bad, msg);
            gpg.verify_bad(&[s(&write(
                dir,
                &format!("{alg}-clear-bad.asc"),
                bad.as_bytes(),
            ))]);
        }
        eprintln!("{alg}: {:?}", started.elapsed());
    }

    // Refusals before anything reaches the token.
    let spki = hsm
        .public_key("signing", "pgp-ed25519", KeyAlgorithm::Ed25519)
        .unwrap();
    let key = OpenPgpKey::new(&spki, KeyAlgorithm::Ed25519, created).unwrap();
    let never = |_: &TokenRequest| -> Result<Vec<u8>, signetd::hsm::HsmError> {
        panic!("the token must not be asked")
    };
    assert!(matches!(
        CleartextSigner::sign(&key, HashAlg::Sha256, created, b"caf\xe9", never),
        Err(OpenPgpError::NotText { offset: 3 })
    ));
    let mut signer =
        DetachedSigner::new(&key, HashAlg::Sha256, created, SignatureMode::Text).unwrap();
    signer.update(b"\x00\xff");
    assert!(matches!(
        signer.finish(never),
        Err(OpenPgpError::NotText { offset: 1 })
    ));
    assert!(matches!(
        CertificateBuilder::new(&key, "two\nlines"),
        Err(OpenPgpError::BadUserId(_))
    ));
    let p384 = hsm
        .public_key("signing", "pgp-ec-p384", KeyAlgorithm::EcP384)
        .unwrap();
    let p384 = OpenPgpKey::new(&p384, KeyAlgorithm::EcP384, created).unwrap();
    assert!(matches!(
        DetachedSigner::new(&p384, HashAlg::Sha256, created, SignatureMode::Binary),
        Err(OpenPgpError::UnsupportedHash { .. })
    ));
    // The SPKI of one algorithm is not taken as another's.
    assert!(matches!(
        OpenPgpKey::new(&spki, KeyAlgorithm::EcP256, created),
        Err(OpenPgpError::PublicKey { .. })
    ));
}
