//! Streaming uploads: a 150 MB upload is refused with 413 — before the body is read when it
//! declares its length, as soon as it crosses the limit when it is chunked — and a 50 MB
//! upload is signed correctly (OpenSSL verifies the signature over the file). The daemon's
//! resident memory does not grow by the size of the uploads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::Digest as _;
use support::sign::{
    account, generate, get, openssl_verify_message, rss_kib, tls_args, unb64, write,
};
use support::{Instance, curl, s};

/// Writes `size` bytes of a non-repeating pattern (so nothing compresses it away) and returns
/// the file and its SHA-256.
fn big_file(dir: &Path, name: &str, size: usize) -> (PathBuf, Vec<u8>) {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut hasher = sha2::Sha256::new();
    let mut block = [0u8; 1 << 16];
    let mut written = 0usize;
    let mut counter = 0u64;
    while written < size {
        for chunk in block.chunks_mut(8) {
            counter = counter
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            chunk.copy_from_slice(&counter.to_le_bytes());
        }
        let n = (size - written).min(block.len());
        f.write_all(&block[..n]).unwrap();
        hasher.update(&block[..n]);
        written += n;
    }
    f.flush().unwrap();
    (path, hasher.finalize().to_vec())
}

#[test]
fn big_uploads_are_refused_early_and_memory_stays_flat() {
    let instance = Instance::new();
    instance.init();
    let ids = generate(&instance, "up", "rsa-2048", 1);
    let signer = account(&instance, "signer", "signer:up");
    let daemon = instance.serve();
    let pid = daemon.child.id();
    let dir = instance.dir.path();
    let (huge, _) = big_file(dir, "huge", 150_000_000);
    let (fifty, fifty_sha) = big_file(dir, "fifty", 50_000_000);
    let upload = |file: &Path, extra: &[&str]| {
        let mut args = tls_args(&instance, &signer);
        args.extend(["-X".into(), "POST".into(), "-T".into(), s(file).into()]);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args.push(daemon.api_url("/v1/sign?ring=up"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&refs)
    };

    // Warm up (first lease, sessions, pools), then measure.
    let small = write(dir, "small", b"warm up");
    assert_eq!(upload(&small, &[]).status, 200);
    let rss_before = rss_kib(pid);

    // Declared length over the limit: 413 before the body is read (curl sends
    // `Expect: 100-continue` and gets the 413 instead of the go-ahead). Over HTTP/2 the daemon
    // answers 413 too and resets the stream, which curl 7.88 reports as a stream error rather
    // than the status, so this uses HTTP/1.1.
    let started = std::time::Instant::now();
    let r = upload(&huge, &["--http1.1"]);
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["type"], "urn:signetd:problem:too-large");
    let early = started.elapsed();
    eprintln!("413 with Content-Length after {early:?}");
    assert!(
        early < std::time::Duration::from_secs(1),
        "the body was read first: {early:?}"
    );
    // Chunked, no length: counted while streaming, refused once past 100 MiB.
    let r = upload(&huge, &["--http1.1", "-H", "Transfer-Encoding: chunked"]);
    assert_eq!(r.status, 413, "{r:?}");

    // 50 MB: signed over the whole file.
    let r = upload(&fifty, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let answer = r.json();
    assert_eq!(answer["bytes"], 50_000_000);
    assert_eq!(answer["sha256"].as_str().unwrap(), hex::encode(&fifty_sha));
    assert_eq!(answer["key_id"], ids[0].as_str());
    let rss_after = rss_kib(pid);
    let grown_mib = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!("RSS {rss_before} KiB → {rss_after} KiB (+{grown_mib} MiB) after 350 MB of uploads");
    assert!(
        grown_mib < 40,
        "RSS grew by {grown_mib} MiB: the upload was buffered"
    );

    // OpenSSL verifies the signature over the 50 MB file with the served public key.
    let key = get(&instance, &daemon, &signer, &format!("/v1/keys/{}", ids[0])).json();
    let pem = write(
        dir,
        "up.pem",
        key["public_key_pem"].as_str().unwrap().as_bytes(),
    );
    let sig = write(
        dir,
        "fifty.sig",
        &unb64(answer["signature"].as_str().unwrap()),
    );
    let (ok, out) = openssl_verify_message(&pem, Some("sha256"), false, &fifty, &sig);
    assert!(ok, "{out}");
    let mut bad = unb64(answer["signature"].as_str().unwrap());
    bad[0] ^= 1;
    let bad = write(dir, "fifty.bad", &bad);
    let (ok, _) = openssl_verify_message(&pem, Some("sha256"), false, &fifty, &bad);
    assert!(!ok);
    let metrics = curl(&[&daemon.metrics_url("/metrics")]).body;
    assert!(
        metrics.contains("signetd_signing_uploads_too_large_total 2"),
        "{metrics}"
    );
}
