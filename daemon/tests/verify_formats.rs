//! `POST /v1/verify` of OpenPGP and CMS signatures made by the daemon's keys: detached
//! (armored, binary, text mode), cleartext and CMS (over the data and over a digest), as JSON
//! and as a multipart form with the document streamed; for RSA, P-256 and Ed25519 keys
//! (OpenSSL 3.0 cannot verify Ed25519 CMS; the daemon can). A changed byte is `valid: false`;
//! a signature by a key the daemon does not hold (GnuPG's own) is `valid: false` naming why; a
//! retired key still verifies and says it is retired; a caller without the ring's role gets
//! 403; a target the signature's key is not in is `valid: false`; unreadable signatures and
//! bad combinations are 400 problem+json. Every check is an audit entry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use support::cms::openssl;
use support::sign::{
    Client, account, admin, assert_problem, b64, call, generate, post_file, post_json, write,
};
use support::{CurlResult, Daemon, Instance, require_tool, s};

/// Requests as one client.
struct As<'a> {
    instance: &'a Instance,
    daemon: &'a Daemon,
    client: &'a Client,
}

impl As<'_> {
    /// `POST /v1/verify` with a JSON body.
    fn json(&self, body: serde_json::Value) -> CurlResult {
        post_json(self.instance, self.daemon, self.client, "/v1/verify", &body)
    }

    /// `POST /v1/verify?QUERY` with a multipart form: the signature, then the document.
    fn form(&self, query: &str, signature: &Path, document: Option<&Path>) -> CurlResult {
        let mut extra = vec!["-F".to_owned(), format!("signature=<{}", s(signature))];
        if let Some(d) = document {
            extra.extend(["-F".to_owned(), format!("file=@{}", s(d))]);
        }
        let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        let url = self.daemon.api_url(&format!("/v1/verify?{query}"));
        call(self.instance, self.client, &refs, &url)
    }

    /// The artefact `path` makes of `data`.
    fn sign(&self, path: &str, data: &Path) -> Vec<u8> {
        let out = data.with_extension("signature");
        let r = post_file(
            self.instance,
            self.daemon,
            self.client,
            path,
            data,
            false,
            &out,
        );
        assert_eq!(r.status, 200, "{path}: {r:?}");
        std::fs::read(out).unwrap()
    }
}

fn assert_valid(r: &CurlResult, valid: bool, what: &str) -> serde_json::Value {
    assert_eq!(r.status, 200, "{what}: {r:?}");
    let v = r.json();
    assert_eq!(v["valid"], valid, "{what}: {v}");
    assert!(v["receipt"]["seq"].is_u64(), "{what}: no receipt: {v}");
    v
}

#[test]
fn openpgp_and_cms_signatures_verify_through_the_api() {
    require_tool("gpg", "gnupg");
    let instance = Instance::new();
    instance.init();
    let rings = [("rsa", "rsa-2048"), ("p256", "ec-p256"), ("ed", "ed25519")];
    let ids: Vec<String> = rings
        .iter()
        .map(|(r, a)| generate(&instance, r, a, 1).remove(0))
        .collect();
    let signer = account(&instance, "release", "signer:rsa,signer:p256,signer:ed");
    let outsider = account(&instance, "outsider", "signer:p256");
    let admin = admin(&instance);
    let daemon = instance.serve();
    let me = As {
        instance: &instance,
        daemon: &daemon,
        client: &signer,
    };
    let other = As {
        instance: &instance,
        daemon: &daemon,
        client: &outsider,
    };
    let dir = instance.dir.path();
    let data = write(dir, "notes.txt", b"Release 1.2\n- fixed\ttabs  \r\nend");
    let changed = b"Release 1.3\n- fixed\ttabs  \r\nend";
    let text = String::from_utf8(std::fs::read(&data).unwrap()).unwrap();

    for ((ring, _), id) in rings.iter().zip(&ids) {
        let what = |f: &str| format!("{ring} {f}");
        // Detached OpenPGP: armored, binary, text mode; JSON and multipart.
        for query in [
            "format=openpgp",
            "format=openpgp&armor=false",
            "format=openpgp&text=true",
        ] {
            let sig = me.sign(&format!("/v1/sign?key_id={id}&{query}"), &data);
            let armored = sig.starts_with(b"-----BEGIN PGP SIGNATURE");
            let signature = if armored {
                String::from_utf8(sig.clone()).unwrap()
            } else {
                b64(&sig)
            };
            let v = assert_valid(
                &me.json(serde_json::json!({
                    "format": "openpgp", "signature": signature, "data": b64(text.as_bytes()),
                })),
                true,
                &what(query),
            );
            assert_eq!(v["key_id"], id.as_str(), "{v}");
            assert_eq!(v["ring"], *ring, "{v}");
            assert_eq!(v["key_state"], "active", "{v}");
            assert_eq!(
                v["openpgp_fingerprint"].as_str().map(str::len),
                Some(40),
                "{v}"
            );
            assert!(v["signed_at"].is_string(), "{v}");
            assert_valid(
                &me.json(serde_json::json!({
                    "format": "openpgp", "signature": signature, "data": b64(changed),
                })),
                false,
                &what(&format!("{query} changed")),
            );
            let sig_path = write(dir, "detached.sig", &sig);
            assert_valid(
                &me.form("format=openpgp", &sig_path, Some(&data)),
                true,
                &what(&format!("{query} multipart")),
            );
            let other = write(dir, "changed.txt", changed);
            let v = assert_valid(
                &me.form("format=openpgp", &sig_path, Some(&other)),
                false,
                &what(&format!("{query} multipart changed")),
            );
            assert!(
                v["reason"].as_str().unwrap().contains("does not verify"),
                "{v}"
            );
        }

        // Cleartext: the message is its own document.
        let msg = me.sign(
            &format!("/v1/sign?key_id={id}&format=openpgp-cleartext"),
            &data,
        );
        let msg = String::from_utf8(msg).unwrap();
        assert_valid(
            &me.json(serde_json::json!({
                "format": "openpgp-cleartext", "signature": msg,
            })),
            true,
            &what("cleartext"),
        );
        let edited = msg.replace("end", "End");
        assert_valid(
            &me.json(serde_json::json!({
                "format": "openpgp-cleartext", "signature": edited,
            })),
            false,
            &what("cleartext edited"),
        );
        let msg_path = write(dir, "message.asc", msg.as_bytes());
        assert_valid(
            &me.form("format=openpgp-cleartext", &msg_path, None),
            true,
            &what("cleartext multipart"),
        );

        // CMS: DER and PEM, over the data and over its digest.
        let der = me.sign(&format!("/v1/sign?key_id={id}&format=cms"), &data);
        let pem = me.sign(&format!("/v1/sign?key_id={id}&format=cms&pem=true"), &data);
        let hash = if *ring == "ed" { "sha512" } else { "sha256" };
        let digest_path = dir.join("digest.bin");
        let (ok, _, err) = openssl(&[
            "dgst",
            &format!("-{hash}"),
            "-binary",
            "-out",
            s(&digest_path),
            s(&data),
        ]);
        assert!(ok, "{err}");
        let digest = std::fs::read(&digest_path).unwrap();
        for (signature, content) in [
            (
                b64(&der),
                serde_json::json!({ "data": b64(text.as_bytes()) }),
            ),
            (
                String::from_utf8(pem.clone()).unwrap(),
                serde_json::json!({ "digest": b64(&digest) }),
            ),
        ] {
            let mut body = serde_json::json!({ "format": "cms", "signature": signature });
            body.as_object_mut()
                .unwrap()
                .extend(content.as_object().unwrap().clone());
            let v = assert_valid(&me.json(body), true, &what("cms"));
            assert_eq!(v["key_id"], id.as_str(), "{v}");
            assert_eq!(v["hash"], hash, "{v}");
            assert_eq!(v["certificate"]["status"], "active", "{v}");
        }
        let v = assert_valid(
            &me.json(serde_json::json!({
                "format": "cms", "signature": b64(&der), "data": b64(changed),
            })),
            false,
            &what("cms changed"),
        );
        assert!(v["reason"].as_str().unwrap().contains("digest"), "{v}");
        let der_path = write(dir, "sig.p7s", &der);
        assert_valid(
            &me.form("format=cms", &der_path, Some(&data)),
            true,
            &what("cms multipart"),
        );
        let other = write(dir, "changed.txt", changed);
        assert_valid(
            &me.form("format=cms", &der_path, Some(&other)),
            false,
            &what("cms multipart changed"),
        );
    }

    // A target the signing key is not in: not valid, and says so.
    let rsa = &ids[0];
    let sig = me.sign(&format!("/v1/sign?key_id={rsa}&format=openpgp"), &data);
    let sig_text = String::from_utf8(sig).unwrap();
    let v = assert_valid(
        &me.json(serde_json::json!({
            "format": "openpgp", "ring": "ed", "signature": sig_text, "data": b64(text.as_bytes()),
        })),
        false,
        "outside the target",
    );
    assert!(
        v["reason"].as_str().unwrap().contains("outside the target"),
        "{v}"
    );
    assert_valid(
        &me.json(serde_json::json!({
            "format": "openpgp", "key_id": rsa, "signature": sig_text, "data": b64(text.as_bytes()),
        })),
        true,
        "inside the target",
    );

    // A caller without the key's ring role: 403.
    let r = other.json(serde_json::json!({
        "format": "openpgp", "signature": sig_text, "data": b64(text.as_bytes()),
    }));
    assert_eq!(r.status, 403, "{r:?}");

    // A signature by a key the daemon does not hold: GnuPG's own.
    let home = tempfile::tempdir().unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    gpg(&[
        "--quick-gen-key",
        "Someone Else <else@example.com>",
        "ed25519",
        "sign",
        "never",
    ]);
    let foreign = dir.join("foreign.asc");
    gpg(&[
        "--armor",
        "--detach-sign",
        "--output",
        s(&foreign),
        s(&data),
    ]);
    let v = assert_valid(
        &me.json(serde_json::json!({
            "format": "openpgp",
            "signature": std::fs::read_to_string(&foreign).unwrap(),
            "data": b64(text.as_bytes()),
        })),
        false,
        "foreign key",
    );
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("no key of this daemon"),
        "{v}"
    );
    assert!(v["key_id"].is_null(), "{v}");

    // A retired key still verifies, and says it is retired.
    let der = me.sign(&format!("/v1/sign?key_id={rsa}&format=cms"), &data);
    let r = call(
        &instance,
        &admin,
        &["-X", "POST"],
        &daemon.api_url(&format!("/v1/keys/{rsa}/retire")),
    );
    assert_eq!(r.status, 200, "{r:?}");
    for (format, signature) in [("openpgp", sig_text.clone()), ("cms", b64(&der))] {
        let v = assert_valid(
            &me.json(serde_json::json!({
                "format": format, "signature": signature, "data": b64(text.as_bytes()),
            })),
            true,
            &format!("retired {format}"),
        );
        assert_eq!(v["key_state"], "retired", "{v}");
    }

    // Unreadable or ill-combined requests: 400 problem+json.
    let data_b64 = b64(text.as_bytes());
    for (body, detail) in [
        (
            serde_json::json!({"format": "openpgp", "signature": "bm90IGEgc2lnbmF0dXJl", "data": data_b64}),
            "not an OpenPGP signature",
        ),
        (
            serde_json::json!({"format": "cms", "signature": "bm90IGEgc2lnbmF0dXJl", "data": data_b64}),
            "malformed CMS",
        ),
        (
            serde_json::json!({"format": "openpgp", "signature": sig_text}),
            "send the signed data",
        ),
        (
            serde_json::json!({"format": "openpgp", "signature": sig_text, "digest": b64(&[0u8; 32])}),
            "only a CMS signature",
        ),
        (
            serde_json::json!({"format": "cms", "signature": b64(&der), "digest": b64(&[0u8; 20])}),
            "a digest is 32 bytes",
        ),
        (
            serde_json::json!({"format": "cms", "signature": b64(&der), "data": data_b64, "digest": b64(&[0u8; 32])}),
            "not both",
        ),
        (
            serde_json::json!({"format": "openpgp-cleartext", "signature": sig_text}),
            "not an OpenPGP signature",
        ),
        (
            serde_json::json!({"format": "openpgp", "hash": "sha256", "signature": sig_text, "data": data_b64}),
            "apply to raw signatures",
        ),
        (
            serde_json::json!({"format": "openpgp,cms", "signature": sig_text, "data": data_b64}),
            "name one format",
        ),
        (
            serde_json::json!({"format": "pkcs7", "signature": sig_text, "data": data_b64}),
            "unknown format",
        ),
    ] {
        let r = me.json(body.clone());
        assert_problem(&r, 400, detail);
    }
    let sig_path = write(dir, "detached.asc", sig_text.as_bytes());
    let r = me.form("", &sig_path, Some(&data));
    assert_problem(&r, 400, "names its `format`");
    // The document before the signature.
    let r = call(
        &instance,
        &signer,
        &[
            "-F",
            &format!("file=@{}", s(&data)),
            "-F",
            &format!("signature=<{}", s(&sig_path)),
        ],
        &daemon.api_url("/v1/verify?format=openpgp"),
    );
    assert_problem(&r, 400, "before the `file` part");
}
