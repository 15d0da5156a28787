//! Signature formats over the API, checked by stock tools: every ring key's OpenPGP
//! certificate (`GET /v1/keys/ID/openpgp`) imports into GnuPG 2.2 with the fingerprint the key
//! listing shows; `gpg --verify` accepts detached binary, detached armored, text-mode and
//! cleartext signatures from `/v1/sign?format=…` and from the albs-sign-file surface (`/sign`,
//! `/sign-batch`, curl `-F` and Python `requests` with `files=` and `cert=`), and rejects each
//! once a byte changed. Bad input gets 4xx problem+json and signs nothing. A 50 MB multipart
//! upload is signed in each streamed format without the daemon's memory growing by its size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::cms::cms_verify;
use support::sign::{
    Client, account, admin, assert_problem, call, configure_signing, generate, get,
    openssl_verify_message, post_file, post_json, rss_kib, signatures_made, tls_args, unb64, write,
};
use support::{Daemon, Instance, curl, require_tool, s};

/// A GnuPG home directory of its own.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        require_tool("gpg", "gnupg");
        Gpg {
            home: tempfile::Builder::new()
                .prefix("signetd-gpg-")
                .tempdir()
                .unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--no-tty", "--status-fd", "1"])
            .args(args)
            .output()
            .expect("run gpg");
        (
            out.status.success(),
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn import(&self, path: &Path) -> String {
        let (ok, out) = self.run(&["--import", s(path)]);
        assert!(ok && out.contains("[GNUPG:] IMPORT_OK"), "{out}");
        let (ok, list) = self.run(&["--with-colons", "--list-keys"]);
        assert!(ok, "{list}");
        list.lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("a fingerprint")
            .to_owned()
    }

    /// `gpg --verify SIG [DATA]`: whether GnuPG reports a good signature by `fingerprint`.
    fn verifies(&self, sig: &Path, data: Option<&Path>, fingerprint: &str) -> (bool, String) {
        let mut args = vec!["--verify", s(sig)];
        if let Some(d) = data {
            args.push(s(d));
        }
        let (ok, out) = self.run(&args);
        let good = ok
            && out.contains("[GNUPG:] GOODSIG")
            && out.contains(&format!("[GNUPG:] VALIDSIG {fingerprint}"));
        (good, out)
    }
}

fn flip_last_text_byte(path: &Path, out: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.iter().rposition(u8::is_ascii_alphabetic).unwrap();
    bytes[i] ^= 0x20;
    std::fs::write(out, bytes).unwrap();
}

/// A ring's key, its OpenPGP identity as listed and its certificate imported into a fresh
/// GnuPG home.
struct Key {
    id: String,
    fingerprint: String,
    key_id: String,
    gpg: Gpg,
}

fn key_with_certificate(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    id: &str,
    dir: &Path,
) -> Key {
    let listed = get(instance, daemon, client, &format!("/v1/keys/{id}")).json();
    let fingerprint = listed["openpgp_fingerprint"].as_str().unwrap().to_owned();
    let key_id = listed["openpgp_key_id"].as_str().unwrap().to_owned();
    assert_eq!(fingerprint.len(), 40);
    assert!(fingerprint.ends_with(&key_id), "{fingerprint} {key_id}");
    let asc = dir.join(format!("{id}.asc"));
    let r = call(
        instance,
        client,
        &["-o", s(&asc)],
        &daemon.api_url(&format!("/v1/keys/{id}/openpgp")),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let armored = std::fs::read_to_string(&asc).unwrap();
    assert!(armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    let gpg = Gpg::new();
    assert_eq!(
        gpg.import(&asc),
        fingerprint,
        "GnuPG computes another fingerprint"
    );
    // Binary packets, asked again: the stored certificate, the same key.
    let bin = dir.join(format!("{id}.gpg"));
    let r = call(
        instance,
        client,
        &["-o", s(&bin)],
        &daemon.api_url(&format!("/v1/keys/{id}/openpgp?armor=false")),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(Gpg::new().import(&bin), fingerprint);
    Key {
        id: id.to_owned(),
        fingerprint,
        key_id,
        gpg,
    }
}

#[test]
fn openpgp_signatures_of_every_key_algorithm_verify_with_gnupg() {
    let instance = Instance::new();
    instance.init();
    let algorithms = [
        ("rsa2048", "rsa-2048"),
        ("rsa3072", "rsa-3072"),
        ("rsa4096", "rsa-4096"),
        ("p256", "ec-p256"),
        ("p384", "ec-p384"),
        ("ed25519", "ed25519"),
    ];
    let admin = admin(&instance);
    let roles: Vec<String> = algorithms
        .iter()
        .map(|(r, _)| format!("signer:{r}"))
        .collect();
    let signer = account(&instance, "release", &roles.join(","));
    let daemon = instance.serve();
    // One ring names its User ID; the others take the default.
    let r = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/rings",
        &serde_json::json!({
            "name": "rsa2048", "algorithm": "rsa-2048",
            "openpgp_user_id": "Release Signing <release@example.com>",
        }),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.json()["openpgp_user_id"],
        "Release Signing <release@example.com>"
    );
    let dir = instance.dir.path();
    let data = write(
        dir,
        "data.txt",
        b"Release notes\n-----\nFrom here on   \r\nsigned\ttext\t \n\nlast line",
    );
    for (ring, algorithm) in algorithms {
        let id = generate(&instance, ring, algorithm, 1).remove(0);
        let key = key_with_certificate(&instance, &daemon, &signer, &id, dir);
        let (ok, list) = key.gpg.run(&["--with-colons", "--list-keys"]);
        assert!(ok);
        if ring == "rsa2048" {
            assert!(
                list.contains("Release Signing <release@example.com>"),
                "{list}"
            );
        } else {
            assert!(list.contains(&format!("signetd ring {ring}")), "{list}");
        }
        let tampered = dir.join("tampered.txt");
        flip_last_text_byte(&data, &tampered);

        // Detached, armored (the default), binary, text mode; body and multipart.
        for (query, form) in [
            ("format=openpgp", false),
            ("format=openpgp&armor=false", false),
            ("format=openpgp&text=true", false),
            ("format=openpgp&hash=sha512", true),
        ] {
            let sig = dir.join(format!("{ring}.sig"));
            let path = format!("/v1/sign?key_id={}&{query}", key.id);
            let r = post_file(&instance, &daemon, &signer, &path, &data, form, &sig);
            assert_eq!(r.status, 200, "{ring} {query}: {r:?}");
            let (good, out) = key.gpg.verifies(&sig, Some(&data), &key.fingerprint);
            assert!(good, "{ring} {query}: gpg refused:\n{out}");
            let (good, _) = key.gpg.verifies(&sig, Some(&tampered), &key.fingerprint);
            assert!(!good, "{ring} {query}: gpg accepted a changed file");
            let armored = std::fs::read(&sig)
                .unwrap()
                .starts_with(b"-----BEGIN PGP SIGNATURE");
            assert_eq!(armored, !query.contains("armor=false"), "{ring} {query}");
        }

        // Cleartext: the message carries the text; GnuPG checks it, and refuses it edited.
        let msg = dir.join(format!("{ring}.msg"));
        let path = format!("/v1/sign?key_id={}&format=openpgp-cleartext", key.id);
        let r = post_file(&instance, &daemon, &signer, &path, &data, false, &msg);
        assert_eq!(r.status, 200, "{ring} cleartext: {r:?}");
        let text = std::fs::read_to_string(&msg).unwrap();
        assert!(text.contains("- -----\n"), "dash-escaped: {text}");
        assert!(
            text.contains("From here on\n"),
            "trailing whitespace dropped: {text}"
        );
        let (good, out) = key.gpg.verifies(&msg, None, &key.fingerprint);
        assert!(good, "{ring} cleartext: gpg refused:\n{out}");
        let edited = dir.join("edited.msg");
        std::fs::write(&edited, text.replace("last line", "last linE")).unwrap();
        let (good, _) = key.gpg.verifies(&edited, None, &key.fingerprint);
        assert!(!good, "{ring}: gpg accepted an edited cleartext message");

        // Several formats from one upload: one JSON answer, one audit entry.
        let path = format!("/v1/sign?key_id={}&format=raw,openpgp", key.id);
        let answer_file = dir.join("multi.json");
        let r = post_file(
            &instance,
            &daemon,
            &signer,
            &path,
            &data,
            true,
            &answer_file,
        );
        assert_eq!(r.status, 200, "{ring} multi: {r:?}");
        let answer: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&answer_file).unwrap()).unwrap();
        assert_eq!(answer["formats"], serde_json::json!(["raw", "openpgp"]));
        assert_eq!(answer["openpgp_fingerprint"], key.fingerprint.as_str());
        let sig = write(
            dir,
            "multi.asc",
            answer["signatures"]["openpgp"]["armored"]
                .as_str()
                .unwrap()
                .as_bytes(),
        );
        let (good, out) = key.gpg.verifies(&sig, Some(&data), &key.fingerprint);
        assert!(good, "{ring} multi: {out}");
        let listed = get(&instance, &daemon, &signer, &format!("/v1/keys/{}", key.id)).json();
        let pem = write(
            dir,
            "multi.pem",
            listed["public_key_pem"].as_str().unwrap().as_bytes(),
        );
        let raw = write(
            dir,
            "multi.raw",
            &unb64(answer["signatures"]["raw"]["signature"].as_str().unwrap()),
        );
        let digest = (algorithm != "ed25519").then(|| {
            answer["signatures"]["raw"]["scheme"]
                .as_str()
                .unwrap()
                .rsplit('-')
                .next()
                .unwrap()
                .to_owned()
        });
        let (ok, out) = openssl_verify_message(&pem, digest.as_deref(), false, &data, &raw);
        assert!(ok, "{ring} raw of multi: {out}");

        // The albs-sign-file surface: key id or fingerprint, detached and cleartext.
        for (keyid, query) in [
            (key.key_id.as_str(), ""),
            (key.fingerprint.as_str(), "&sign_type=clear-sign"),
            (&key.key_id.to_lowercase()[..], "&sign_algo=SHA512"),
        ] {
            let out = dir.join("albs.asc");
            let path = format!("/sign?keyid={keyid}{query}");
            let r = post_file(&instance, &daemon, &signer, &path, &data, true, &out);
            assert_eq!(r.status, 200, "{ring} /sign {query}: {r:?}");
            let clear = query.contains("clear-sign");
            let (good, gpg_out) =
                key.gpg
                    .verifies(&out, (!clear).then_some(data.as_path()), &key.fingerprint);
            assert!(good, "{ring} /sign {query}: {gpg_out}");
            if query.contains("SHA512") {
                // VALIDSIG field 8 is the hash algorithm: 10 = SHA-512.
                let line = gpg_out
                    .lines()
                    .find(|l| l.starts_with("[GNUPG:] VALIDSIG"))
                    .unwrap();
                assert_eq!(line.split(' ').nth(9), Some("10"), "{line}");
            }
        }
    }
}

#[test]
fn albs_sign_file_surface_answers_as_it_did_and_refuses_bad_input() {
    let instance = Instance::new();
    instance.init();
    let rsa = generate(&instance, "release", "rsa-2048", 1).remove(0);
    let p384 = generate(&instance, "p384", "ec-p384", 1).remove(0);
    let other = generate(&instance, "secret", "ed25519", 1).remove(0);
    configure_signing(&instance, "max_upload_bytes = 1048576");
    let signer = account(&instance, "ci", "signer:release,signer:p384");
    let owner = account(&instance, "owner", "signer:secret");
    let auditor = account(&instance, "auditor", "auditor");
    let daemon = instance.serve();
    let dir = instance.dir.path();
    let key = key_with_certificate(&instance, &daemon, &signer, &rsa, dir);
    let p384_key =
        get(&instance, &daemon, &signer, &format!("/v1/keys/{p384}")).json()["openpgp_key_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let other_key =
        get(&instance, &daemon, &owner, &format!("/v1/keys/{other}")).json()["openpgp_key_id"]
            .as_str()
            .unwrap()
            .to_owned();

    // GET /ping and GET /keys.
    let r = call(&instance, &signer, &[], &daemon.api_url("/ping"));
    assert_eq!((r.status, r.body.as_str()), (200, "\"pong\""), "{r:?}");
    let r = call(&instance, &signer, &[], &daemon.api_url("/keys"));
    assert_eq!(r.status, 200, "{r:?}");
    let mut expected = vec![key.key_id.clone(), p384_key.clone()];
    expected.sort();
    assert_eq!(r.json()["keys"], serde_json::json!(expected));
    assert_eq!(r.json()["restricted"], true);
    let r = call(&instance, &owner, &[], &daemon.api_url("/keys"));
    assert_eq!(r.json()["keys"], serde_json::json!([other_key]));

    // POST /sign-batch with three files: every signature verifies; names come back.
    let files: Vec<PathBuf> = (0..3)
        .map(|i| write(dir, &format!("f{i}.txt"), format!("file {i}\n").as_bytes()))
        .collect();
    let fields: Vec<String> = files.iter().map(|f| format!("files=@{}", s(f))).collect();
    let mut extra = Vec::new();
    for f in &fields {
        extra.extend(["-F", f.as_str()]);
    }
    let r = call(
        &instance,
        &signer,
        &extra,
        &daemon.api_url(&format!("/sign-batch?keyid={}", key.key_id)),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let answer = r.json();
    assert_eq!(
        (answer["total"].as_u64(), answer["successful"].as_u64()),
        (Some(3), Some(3))
    );
    for (i, result) in answer["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(result["filename"], format!("f{i}.txt"));
        assert_eq!(result["success"], true);
        let sig = write(
            dir,
            "batch.asc",
            result["signature"].as_str().unwrap().as_bytes(),
        );
        let (good, out) = key.gpg.verifies(&sig, Some(&files[i]), &key.fingerprint);
        assert!(good, "batch file {i}: {out}");
        let (good, _) = key
            .gpg
            .verifies(&sig, Some(&files[(i + 1) % 3]), &key.fingerprint);
        assert!(!good);
    }

    // A Python client (requests, files= and cert=) as albs-sign-file's clients are written.
    require_tool("python3", "python3");
    let script = write(
        dir,
        "client.py",
        br#"
import json, sys
import requests
base, ca, cert, key, keyid, path = sys.argv[1:7]
# verify= per call: requests lets REQUESTS_CA_BUNDLE override a session's own.
kw = {"verify": ca, "cert": (cert, key)}
out = {}
out["ping"] = requests.get(base + "/ping", **kw).json()
out["keys"] = requests.get(base + "/keys", **kw).json()["keys"]
with open(path, "rb") as f:
    r = requests.post(base + "/sign", params={"keyid": keyid}, files={"file": ("notes.txt", f)}, **kw)
out["sign_status"] = r.status_code
out["sign_type"] = r.headers["content-type"]
out["signature"] = r.text
with open(path, "rb") as f1, open(path, "rb") as f2:
    r = requests.post(base + "/sign-batch", params={"keyid": keyid, "sign_type": "detach-sign"},
                      files=[("files", ("a.txt", f1)), ("files", ("b.txt", f2))], **kw)
out["batch"] = r.json()
r = requests.post(base + "/sign", params={"keyid": "DEADBEEFDEADBEEF"}, files={"file": ("x", b"x")}, **kw)
out["unknown"] = [r.status_code, r.json()["detail"]]
print(json.dumps(out))
"#,
    );
    let base = daemon.api_url("");
    let out = Command::new("python3")
        .args([
            s(&script),
            base.trim_end_matches('/'),
            s(&instance.ca()),
            &signer.cert,
            &signer.key,
            &key.key_id,
            s(&files[0]),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed (needs the `requests` module: Debian package python3-requests):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(py["ping"], "pong");
    assert_eq!(py["sign_status"], 200);
    assert!(
        py["sign_type"].as_str().unwrap().starts_with("text/plain"),
        "{py}"
    );
    let sig = write(dir, "py.asc", py["signature"].as_str().unwrap().as_bytes());
    assert!(key.gpg.verifies(&sig, Some(&files[0]), &key.fingerprint).0);
    assert_eq!(py["batch"]["total"], 2);
    assert_eq!(py["batch"]["results"][1]["filename"], "b.txt");
    assert_eq!(py["unknown"][0], 400);
    assert!(
        py["unknown"][1]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );

    // A raw signature from a multipart upload answers as /v1/sign always did (P-384 may sign
    // a raw SHA-256 digest; only OpenPGP needs SHA-384 or longer).
    let file_field = format!("file=@{}", s(&files[0]));
    let r = call(
        &instance,
        &signer,
        &["-F", &file_field],
        &daemon.api_url(&format!("/v1/sign?key_id={p384}&hash=sha256")),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["scheme"], "ecdsa-p384-sha256", "{r:?}");
    assert_eq!(r.json()["bytes"], 7);

    // Bad input: a clear 4xx problem, nothing signed.
    let before = signatures_made(&daemon);
    let sign = |client: &Client, query: &str, extra: &[&str]| {
        call(
            &instance,
            client,
            extra,
            &daemon.api_url(&format!("/sign?{query}")),
        )
    };
    let form = ["-F", file_field.as_str()];
    assert_problem(
        &sign(&signer, "keyid=DEADBEEFDEADBEEF", &form),
        400,
        "does not exist",
    );
    assert_problem(
        &sign(&signer, &format!("keyid={other_key}"), &form),
        403,
        &other_key,
    );
    assert_problem(
        &sign(&signer, "keyid=not-hex!", &form),
        400,
        "OpenPGP key id",
    );
    assert_problem(&sign(&signer, "", &form), 400, "keyid");
    assert_problem(
        &sign(
            &signer,
            &format!("keyid={p384_key}&sign_algo=SHA256"),
            &form,
        ),
        400,
        "cannot use sha256",
    );
    assert_problem(
        &sign(
            &signer,
            &format!("keyid={}&sign_algo=MD5", key.key_id),
            &form,
        ),
        400,
        "sign_algo",
    );
    assert_problem(
        &sign(
            &signer,
            &format!("keyid={}&sign_type=sign", key.key_id),
            &form,
        ),
        400,
        "sign_type",
    );
    // Garbage multipart, a form without the file part, an empty batch.
    let garbage = write(dir, "garbage", b"--nope\r\nthis is not a form\r\n");
    let garbage_body = format!("@{}", s(&garbage));
    assert_problem(
        &sign(
            &signer,
            &format!("keyid={}", key.key_id),
            &[
                "-H",
                "content-type: multipart/form-data; boundary=XYZ",
                "--data-binary",
                &garbage_body,
            ],
        ),
        400,
        "multipart",
    );
    assert_problem(
        &sign(
            &signer,
            &format!("keyid={}", key.key_id),
            &["-F", "other=1"],
        ),
        400,
        "`file`",
    );
    let r = call(
        &instance,
        &signer,
        &["-F", "sign_type=detach-sign"],
        &daemon.api_url(&format!("/sign-batch?keyid={}", key.key_id)),
    );
    assert_problem(&r, 400, "No files provided");
    // Over the limit (1 MiB here): 413, by declared length and while streaming.
    let big = write(dir, "big", &vec![b'x'; 2 * 1024 * 1024]);
    let big_field = format!("file=@{}", s(&big));
    let r = sign(
        &signer,
        &format!("keyid={}", key.key_id),
        &["-F", &big_field],
    );
    assert_problem(&r, 413, "limited to 1048576 bytes");
    let r = sign(
        &signer,
        &format!("keyid={}", key.key_id),
        &["-H", "Transfer-Encoding: chunked", "-F", &big_field],
    );
    assert_problem(&r, 413, "limited to 1048576 bytes");
    // The same rules on /v1/sign.
    let r = call(
        &instance,
        &signer,
        &["--data-binary", "x"],
        &daemon.api_url(&format!("/v1/sign?key_id={rsa}&format=openpgp,pdf")),
    );
    assert_problem(&r, 400, "unknown format");
    let r = call(
        &instance,
        &signer,
        &["--data-binary", "x"],
        &daemon.api_url(&format!(
            "/v1/sign?key_id={p384}&format=openpgp&hash=sha256"
        )),
    );
    assert_problem(&r, 400, "cannot use sha256");
    let r = call(
        &instance,
        &signer,
        &["--data-binary", "\u{ff}\u{fe}"],
        &daemon.api_url(&format!(
            "/v1/sign?key_id={rsa}&format=openpgp&prehashed=true"
        )),
    );
    assert_problem(&r, 400, "data itself");
    let r = call(
        &instance,
        &signer,
        &[],
        &daemon.api_url(&format!("/v1/keys/{other}/openpgp")),
    );
    assert_problem(&r, 403, "signer:secret");
    assert_eq!(
        signatures_made(&daemon),
        before,
        "a refused request signed something"
    );

    // Every refusal is in the log under the caller.
    let entries = get(
        &instance,
        &daemon,
        &auditor,
        "/v1/audit/entries?from=0&limit=1000",
    )
    .json();
    let refused = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["actor_account"] == "ci" && e["result"].as_str().unwrap_or("").starts_with("error:")
        })
        .count();
    assert!(refused >= 15, "{refused} refusals logged: {entries}");
}

#[test]
fn fifty_megabytes_through_multipart_in_each_streamed_format_keep_memory_flat() {
    let instance = Instance::new();
    instance.init();
    let rsa = generate(&instance, "big", "rsa-2048", 1).remove(0);
    configure_signing(&instance, "max_upload_bytes = 67108864");
    let signer = account(&instance, "big", "signer:big");
    let daemon = instance.serve();
    let pid = daemon.child.id();
    let dir = instance.dir.path();
    let key = key_with_certificate(&instance, &daemon, &signer, &rsa, dir);
    let fifty = dir.join("fifty");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&fifty).unwrap());
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..(50_000_000 / 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    }
    let small = write(dir, "small", b"warm up");
    let out = dir.join("answer.bin");
    let r = post_file(
        &instance,
        &daemon,
        &signer,
        &format!("/sign?keyid={}", key.key_id),
        &small,
        true,
        &out,
    );
    assert_eq!(r.status, 200, "{r:?}");
    // The first CMS signature issues the key's document-signer certificate.
    let cms_path = format!("/v1/sign?key_id={rsa}&format=cms");
    let r = post_file(&instance, &daemon, &signer, &cms_path, &small, true, &out);
    assert_eq!(r.status, 200, "{r:?}");
    let ca = write(
        dir,
        "ca.pem",
        curl(&[&daemon.public_url("/ca.pem")]).body.as_bytes(),
    );
    let signer_cert = write(
        dir,
        "signer.pem",
        get(
            &instance,
            &daemon,
            &signer,
            &format!("/v1/keys/{rsa}/certificate?format=pem"),
        )
        .body
        .as_bytes(),
    );
    let rss_before = rss_kib(pid);
    for path in [
        format!("/sign?keyid={}", key.key_id),
        format!("/v1/sign?key_id={rsa}&format=openpgp&armor=false"),
        format!("/v1/sign?key_id={rsa}&format=raw,openpgp"),
        cms_path,
    ] {
        let mut args = tls_args(&instance, &signer);
        let field = format!("file=@{}", s(&fifty));
        args.extend(["--max-time", "60", "-F", &field, "-o", s(&out)].map(String::from));
        args.push(daemon.api_url(&path));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = curl(&refs);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        if path.contains("format=cms") {
            let (good, out) = cms_verify(&out, "DER", &fifty, &ca, &signer_cert);
            assert!(good, "{path}: openssl cms -verify: {out}");
            continue;
        }
        let sig = if path.contains("raw,") {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
            assert_eq!(v["bytes"], 50_000_000);
            write(
                dir,
                "fifty.asc",
                v["signatures"]["openpgp"]["armored"]
                    .as_str()
                    .unwrap()
                    .as_bytes(),
            )
        } else {
            out.clone()
        };
        let (good, gpg_out) = key.gpg.verifies(&sig, Some(&fifty), &key.fingerprint);
        assert!(
            good,
            "{path}: {gpg_out}\n{:?}",
            String::from_utf8_lossy(&std::fs::read(&sig).unwrap()[..])
        );
    }
    let rss_after = rss_kib(pid);
    let grown_mib = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!("RSS {rss_before} KiB → {rss_after} KiB (+{grown_mib} MiB) after 200 MB of uploads");
    assert!(
        grown_mib < 40,
        "RSS grew by {grown_mib} MiB: an upload was buffered"
    );
    // Over the limit: 413 by declared length.
    let over = dir.join("over");
    std::fs::File::create(&over)
        .unwrap()
        .set_len(70 * 1024 * 1024)
        .unwrap();
    let field = format!("file=@{}", s(&over));
    let r = call(
        &instance,
        &signer,
        &["--http1.1", "-F", &field],
        &daemon.api_url(&format!("/sign?keyid={}", key.key_id)),
    );
    assert_problem(&r, 413, "limited to 67108864 bytes");
}
