//! RPM package signing over the API (`POST /sign-rpm`, albs-sign-file's surface, and
//! `POST /v1/sign-rpm`), checked by rpm itself: the key's OpenPGP certificate from
//! `GET /v1/keys/ID/openpgp` goes into a private rpmdb with `rpmkeys --import`, and
//! `rpmkeys --checksig` reports the header signature of the answered package OK, and not OK
//! once a byte of its header changed. Not-an-RPM is 400 and signs nothing; a 50 MB package
//! streams through without the daemon's memory growing by its size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use support::rpm::{SUMMARY, checksig, rpmbuild, rpmkeys};
use support::sign::{account, configure_signing, generate, get, rss_kib, tls_args, write};
use support::{CurlResult, Instance, curl, require_tool, s};

fn post(
    instance: &Instance,
    client: &support::sign::Client,
    extra: &[&str],
    url: &str,
) -> CurlResult {
    let mut args = tls_args(instance, client);
    args.extend(["--max-time".to_owned(), "60".to_owned()]);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args.push(url.to_owned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

/// A copy of `pkg` with one byte of its summary (inside the main header) changed.
fn tamper(pkg: &Path, out: &Path) {
    let mut bytes = std::fs::read(pkg).unwrap();
    let at = bytes
        .windows(SUMMARY.len())
        .position(|w| w == SUMMARY.as_bytes())
        .expect("the summary");
    bytes[at] ^= 0x01;
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn signed_packages_pass_rpmkeys_checksig() {
    require_tool("rpmbuild", "rpm");
    require_tool("rpmkeys", "rpm");
    let instance = Instance::new();
    instance.init();
    let rsa = generate(&instance, "rpm-rsa", "rsa-2048", 1).remove(0);
    let ed = generate(&instance, "rpm-ed", "ed25519", 1).remove(0);
    configure_signing(&instance, "max_upload_bytes = 67108864");
    let signer = account(&instance, "rel", "signer:rpm-rsa,signer:rpm-ed");
    let daemon = instance.serve();
    let pid = daemon.child.id();
    let dir = instance.dir.path();
    let pkg = rpmbuild(dir, "signet-api", None);
    let blob = dir.join("blob.bin");
    {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut data = Vec::with_capacity(50 << 20);
        while data.len() < 50_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(&blob, data).unwrap();
    }
    let big = rpmbuild(dir, "signet-big", Some(&blob));
    assert!(std::fs::metadata(&big).unwrap().len() > 50_000_000);

    let mut rss_before = None;
    for (ring, id, alg) in [("rpm-rsa", &rsa, "RSA"), ("rpm-ed", &ed, "EdDSA")] {
        let listed = get(&instance, &daemon, &signer, &format!("/v1/keys/{id}")).json();
        let keyid = listed["openpgp_key_id"].as_str().unwrap().to_owned();
        let cert = dir.join(format!("{ring}.asc"));
        let r = post(
            &instance,
            &signer,
            &["-o", s(&cert)],
            &daemon.api_url(&format!("/v1/keys/{id}/openpgp")),
        );
        assert_eq!(r.status, 200, "{r:?}");
        let db = dir.join(format!("rpmdb-{ring}"));
        std::fs::create_dir_all(&db).unwrap();
        let (ok, out) = rpmkeys(&db, &["--import", s(&cert)]);
        assert!(ok, "rpmkeys --import: {out}");
        let short = keyid[8..].to_lowercase();

        // albs-sign-file: multipart, a hostile file name comes back as a basename.
        let signed = dir.join(format!("{ring}-signed.rpm"));
        let field = format!("file=@{};filename=../../etc/cron.d/payload.rpm", s(&pkg));
        let r = post(
            &instance,
            &signer,
            &[
                "-F",
                &field,
                "-D",
                s(&dir.join("headers")),
                "-o",
                s(&signed),
            ],
            &daemon.api_url(&format!("/sign-rpm?keyid={keyid}")),
        );
        assert_eq!(r.status, 200, "{r:?}");
        let headers = std::fs::read_to_string(dir.join("headers"))
            .unwrap()
            .to_lowercase();
        assert!(
            headers.contains("content-type: application/x-rpm"),
            "{headers}"
        );
        assert!(headers.contains("filename=\"payload.rpm\""), "{headers}");
        assert!(headers.contains("audit-receipt: "), "{headers}");
        let (ok, lines, out) = checksig(&db, &signed);
        let want = format!("Header V4 {alg}/SHA256 Signature, key ID {short}: OK");
        assert!(ok && lines.contains(&want), "{want}:\n{out}");
        let bad = dir.join("tampered.rpm");
        tamper(&signed, &bad);
        let (_, lines, out) = checksig(&db, &bad);
        assert!(!lines.contains(&want), "a changed header passed:\n{out}");

        // /v1/sign-rpm with the package as the body; signing again replaces the signature.
        let again = dir.join(format!("{ring}-again.rpm"));
        let body = format!("@{}", s(&signed));
        let r = post(
            &instance,
            &signer,
            &["--data-binary", &body, "-o", s(&again)],
            &daemon.api_url(&format!("/v1/sign-rpm?ring={ring}")),
        );
        assert_eq!(r.status, 200, "{r:?}");
        let (ok, lines, out) = checksig(&db, &again);
        assert!(ok && lines == [want.clone()], "one signature, ours:\n{out}");

        // 50 MB through multipart: the payload streams via a spool file, not memory.
        if rss_before.is_none() {
            rss_before = Some(rss_kib(pid));
        }
        let signed_big = dir.join("big-signed.rpm");
        let field = format!("file=@{}", s(&big));
        let r = post(
            &instance,
            &signer,
            &["-F", &field, "-o", s(&signed_big)],
            &daemon.api_url(&format!("/sign-rpm?keyid={keyid}")),
        );
        assert_eq!(r.status, 200, "{r:?}");
        let (ok, lines, out) = checksig(&db, &signed_big);
        assert!(ok && lines.contains(&want), "50 MB package:\n{out}");
        assert!(
            out.contains("Payload SHA256 digest: OK") || out.contains("MD5 digest: OK"),
            "{out}"
        );
    }
    let grown = rss_kib(pid).saturating_sub(rss_before.unwrap()) / 1024;
    eprintln!("RSS grew by {grown} MiB over two 50 MB packages");
    assert!(
        grown < 40,
        "RSS grew by {grown} MiB: a package was buffered"
    );

    // Not an RPM: 400, nothing signed; over the limit: 413.
    let junk = write(dir, "junk.rpm", b"this is not an RPM package at all, not even close......................................................");
    let field = format!("file=@{}", s(&junk));
    let r = post(
        &instance,
        &signer,
        &["-F", &field],
        &daemon.api_url(&format!("/v1/sign-rpm?key_id={rsa}")),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("not a valid RPM package"),
        "{r:?}"
    );
    let over = dir.join("over.rpm");
    std::fs::File::create(&over)
        .unwrap()
        .set_len(70 << 20)
        .unwrap();
    let field = format!("file=@{}", s(&over));
    let r = post(
        &instance,
        &signer,
        &["--http1.1", "-F", &field],
        &daemon.api_url(&format!("/v1/sign-rpm?key_id={rsa}")),
    );
    assert_eq!(r.status, 413, "{r:?}");
}
