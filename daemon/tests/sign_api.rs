//! Online signing end to end through the real daemon, checked with curl and OpenSSL: every
//! algorithm, hash and padding combination signed over the API (data and pre-hashed digests)
//! verifies with `openssl dgst -verify` / `openssl pkeyutl -verify` against the public key PEM
//! the API serves, and fails for a flipped byte (invariant 8 seen from outside). Then bad input
//! (404, 400, 413 as problem+json, invariant 9), roles and audited denials, sign-batch with
//! per-item results, all-or-nothing batches and the batch's Merkle root in the audit log
//! (invariant 4), verify, and retired keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::sign::{
    account, admin, b64, generate, get, keys_cli, openssl_verify_digest, openssl_verify_message,
    post_json, sign_file, unb64, write,
};
use support::{Instance, s};

/// (hash, padding) query options.
type Combo = (Option<&'static str>, Option<&'static str>);

/// (algorithm, ring, [(hash, padding)] the API accepts for it).
fn matrix() -> Vec<(&'static str, &'static str, Vec<Combo>)> {
    let rsa = vec![
        (Some("sha256"), Some("pkcs1")),
        (Some("sha384"), Some("pkcs1")),
        (Some("sha512"), Some("pkcs1")),
        (Some("sha256"), Some("pss")),
        (Some("sha384"), Some("pss")),
        (Some("sha512"), Some("pss")),
        (None, None),
    ];
    let ec = vec![
        (Some("sha256"), None),
        (Some("sha384"), None),
        (Some("sha512"), None),
        (None, None),
    ];
    vec![
        ("rsa-2048", "r-rsa2048", rsa.clone()),
        ("rsa-3072", "r-rsa3072", rsa.clone()),
        ("rsa-4096", "r-rsa4096", rsa),
        ("ec-p256", "r-p256", ec.clone()),
        ("ec-p384", "r-p384", ec),
        ("ed25519", "r-ed25519", vec![(None, None)]),
    ]
}

fn default_hash(algorithm: &str) -> Option<&'static str> {
    match algorithm {
        "ed25519" => None,
        "ec-p384" => Some("sha384"),
        _ => Some("sha256"),
    }
}

fn hash_bytes(hash: &str, data: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    match hash {
        "sha256" => sha2::Sha256::digest(data).to_vec(),
        "sha384" => sha2::Sha384::digest(data).to_vec(),
        _ => sha2::Sha512::digest(data).to_vec(),
    }
}

fn flip_last(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let last = b.len() - 1;
    b[last] ^= 0x01;
    b
}

#[test]
fn every_combination_signed_by_the_api_verifies_with_openssl() {
    let instance = Instance::new();
    instance.init();
    let rings = matrix();
    for (alg, ring, _) in &rings {
        generate(&instance, ring, alg, 1);
    }
    let roles: Vec<String> = rings
        .iter()
        .map(|(_, r, _)| format!("signer:{r}"))
        .collect();
    let signer = account(&instance, "signer", &roles.join(","));
    let daemon = instance.serve();
    let dir = instance.dir.path().join("api-matrix");
    std::fs::create_dir_all(&dir).unwrap();

    let mut checked = Vec::new();
    for (alg, ring, combos) in &rings {
        // The served public key, as PEM, is what OpenSSL checks against.
        let keys = get(
            &instance,
            &daemon,
            &signer,
            &format!("/v1/keys?ring={ring}"),
        );
        assert_eq!(keys.status, 200, "{keys:?}");
        let keys = keys.json();
        let key = &keys["keys"][0];
        assert_eq!(key["algorithm"], *alg);
        assert_eq!(key["state"], "active");
        let pem = write(
            &dir,
            &format!("{ring}.pem"),
            key["public_key_pem"].as_str().unwrap().as_bytes(),
        );
        let key_id = key["id"].as_str().unwrap().to_owned();

        for (hash, padding) in combos {
            let pss = *padding == Some("pss");
            let effective_hash = hash.or(default_hash(alg));
            let mut query = format!("ring={ring}");
            if let Some(h) = hash {
                query.push_str(&format!("&hash={h}"));
            }
            if let Some(p) = padding {
                query.push_str(&format!("&padding={p}"));
            }
            let what = format!("{alg} {query}");
            let stem = what.replace([' ', '&', '='], "_");
            let message = format!("signetd API {what}").into_bytes();
            let data = write(&dir, &format!("{stem}.msg"), &message);

            // Over the data.
            let r = sign_file(&instance, &daemon, &signer, &query, &data);
            assert_eq!(r.status, 200, "{what}: {r:?}");
            let answer = r.json();
            assert_eq!(answer["key_id"], key_id.as_str());
            assert_eq!(answer["algorithm"], *alg);
            assert!(answer["receipt"]["seq"].is_u64(), "{answer}");
            let sig = unb64(answer["signature"].as_str().unwrap());
            let sig_path = write(&dir, &format!("{stem}.sig"), &sig);
            let (ok, out) = openssl_verify_message(&pem, effective_hash, pss, &data, &sig_path);
            assert!(ok, "{what}: OpenSSL did not verify: {out}");
            let bad = write(&dir, &format!("{stem}.bad"), &flip_last(&sig));
            let (ok, out) = openssl_verify_message(&pem, effective_hash, pss, &data, &bad);
            assert!(!ok, "{what}: a flipped signature verified: {out}");
            let bad_data = write(&dir, &format!("{stem}.badmsg"), &flip_last(&message));
            let (ok, _) = openssl_verify_message(&pem, effective_hash, pss, &bad_data, &sig_path);
            assert!(!ok, "{what}: a flipped message verified");
            checked.push(format!("{what} data"));

            // Over a digest the client computed.
            if let Some(h) = effective_hash {
                let digest = hash_bytes(h, &message);
                let digest_path = write(&dir, &format!("{stem}.dgst"), &digest);
                let r = sign_file(
                    &instance,
                    &daemon,
                    &signer,
                    &format!("{query}&prehashed=true"),
                    &digest_path,
                );
                assert_eq!(r.status, 200, "{what} prehashed: {r:?}");
                let sig = unb64(r.json()["signature"].as_str().unwrap());
                let sig_path = write(&dir, &format!("{stem}.dsig"), &sig);
                let (ok, out) = openssl_verify_digest(&pem, h, pss, &digest_path, &sig_path);
                assert!(ok, "{what} prehashed: OpenSSL did not verify: {out}");
                let bad = write(&dir, &format!("{stem}.dbad"), &flip_last(&sig));
                let (ok, _) = openssl_verify_digest(&pem, h, pss, &digest_path, &bad);
                assert!(!ok, "{what} prehashed: a flipped signature verified");
                // OpenSSL over the data accepts the signature over its digest too.
                let (ok, out) = openssl_verify_message(&pem, Some(h), pss, &data, &sig_path);
                assert!(ok, "{what} prehashed vs data: {out}");
                checked.push(format!("{what} digest"));
            }

            // ECDSA as r‖s on request: the right length, and the API's verify accepts it.
            if alg.starts_with("ec-") {
                let r = sign_file(
                    &instance,
                    &daemon,
                    &signer,
                    &format!("{query}&encoding=raw"),
                    &data,
                );
                assert_eq!(r.status, 200, "{what} raw: {r:?}");
                let answer = r.json();
                assert_eq!(answer["encoding"], "raw");
                let raw = unb64(answer["signature"].as_str().unwrap());
                assert_eq!(raw.len(), if *alg == "ec-p256" { 64 } else { 96 });
                let mut body = serde_json::json!({
                    "key_id": key_id, "data": b64(&message),
                    "signature": b64(&raw), "encoding": "raw",
                });
                if let Some(h) = hash {
                    body["hash"] = (*h).into();
                }
                let v = post_json(&instance, &daemon, &signer, "/v1/verify", &body);
                assert_eq!(v.status, 200, "{v:?}");
                assert_eq!(v.json()["valid"], true, "{what} raw verify");
                body["signature"] = b64(&flip_last(&raw)).into();
                let v = post_json(&instance, &daemon, &signer, "/v1/verify", &body);
                assert_eq!(v.json()["valid"], false, "{what} flipped raw verify");
            }
        }
    }
    // 3 RSA × 7 requests × 2 inputs + 2 curves × 4 × 2 + Ed25519 data.
    assert_eq!(checked.len(), 3 * 7 * 2 + 2 * 4 * 2 + 1, "{checked:#?}");
    eprintln!(
        "signed through the API and verified by OpenSSL ({}):\n  {}",
        checked.len(),
        checked.join("\n  ")
    );
}

fn problem(r: &support::CurlResult, status: u16) -> serde_json::Value {
    assert_eq!(r.status, status, "{r:?}");
    let body = r.json();
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:signetd:problem:"),
        "{body}"
    );
    body
}

#[test]
fn bad_input_roles_batches_verify_and_retired_keys() {
    let instance = Instance::new();
    support::sign::configure_signing(
        &instance,
        "batch_max_items = 8\nmax_ed25519_bytes = 4096\nusage_flush_secs = 1",
    );
    instance.init();
    let p256 = generate(&instance, "p256", "ec-p256", 2);
    let ed = generate(&instance, "ed", "ed25519", 1);
    let rsa = generate(&instance, "rsa", "rsa-2048", 1);
    // The CLI refuses a ring of another algorithm.
    let clash = instance
        .command()
        .args([
            "keys",
            "generate",
            "--ring",
            "p256",
            "--algorithm",
            "rsa-2048",
        ])
        .output()
        .unwrap();
    assert!(!clash.status.success());
    let signer = account(
        &instance,
        "signer",
        "signer:p256,signer:ed,signer:rsa,signer:ghost",
    );
    let other = account(&instance, "other", "signer:rsa");
    let auditor = account(&instance, "auditor", "auditor");
    let admin = admin(&instance);
    let daemon = instance.serve();
    let dir = instance.dir.path().join("api-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let small = write(&dir, "small", b"hello signetd");

    // Unknown ring and key → 404; malformed requests → 400; all problem+json.
    problem(
        &sign_file(&instance, &daemon, &signer, "ring=ghost", &small),
        404,
    );
    let nokey = format!("key_id={}", uuid::Uuid::new_v4());
    problem(&sign_file(&instance, &daemon, &signer, &nokey, &small), 404);
    // The refusal comes before the body is needed; the daemon reads the small rest anyway, so
    // an HTTP/2 client still sending gets the answer and not a reset stream (curl: exit 92).
    let sixty_k = write(&dir, "sixty-k", &[7u8; 60_000]);
    for body in [&small, &sixty_k] {
        for _ in 0..20 {
            problem(
                &sign_file(&instance, &daemon, &signer, "ring=ghost", body),
                404,
            );
        }
    }
    for (query, needle) in [
        ("ring=p256&padding=pss", "padding applies to RSA keys only"),
        ("ring=ed&hash=sha512", "Ed25519"),
        ("ring=rsa&encoding=raw", "ECDSA"),
        ("ring=rsa&hash=md5", "unknown hash"),
        ("ring=p256&key_id=x", "exactly one target"),
        ("", "exactly one target"),
        ("ring=p256&colour=blue", "bad query"),
        ("ring=ed&prehashed=true", "Ed25519"),
    ] {
        let body = problem(&sign_file(&instance, &daemon, &signer, query, &small), 400);
        assert!(
            body["detail"].as_str().unwrap().contains(needle),
            "{query}: {body}"
        );
    }
    let short_digest = write(&dir, "short", &[7u8; 20]);
    let body = problem(
        &sign_file(
            &instance,
            &daemon,
            &signer,
            "ring=p256&hash=sha384&prehashed=true",
            &short_digest,
        ),
        400,
    );
    assert!(
        body["detail"].as_str().unwrap().contains("48 bytes"),
        "{body}"
    );
    // Ed25519 signs the message whole: its own, smaller limit. Refused by its declared
    // length, the small body is still read to its end first (see the 404s above).
    let big = write(&dir, "big", &vec![1u8; 5000]);
    for _ in 0..20 {
        problem(
            &sign_file(&instance, &daemon, &signer, "ring=ed", &big),
            413,
        );
    }
    let r = sign_file(&instance, &daemon, &signer, "ring=ed", &small);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["key_id"], ed[0].as_str());

    // Roles: only signers of the ring sign; admins manage keys but do not sign; denials are
    // audited.
    problem(
        &sign_file(&instance, &daemon, &other, "ring=p256", &small),
        403,
    );
    let by_key = format!("key_id={}", p256[0]);
    problem(&sign_file(&instance, &daemon, &other, &by_key, &small), 403);
    problem(
        &sign_file(&instance, &daemon, &admin, "ring=p256", &small),
        403,
    );
    let r = sign_file(&instance, &daemon, &signer, &by_key, &small);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["key_id"], p256[0].as_str());
    let listing = get(&instance, &daemon, &other, "/v1/keys?ring=p256");
    problem(&listing, 403);
    let generated = post_json(
        &instance,
        &daemon,
        &signer,
        "/v1/rings/p256/keys",
        &serde_json::json!({"count": 1}),
    );
    problem(&generated, 403);

    // Sign-batch: per-item answers; one bad item does not sink the others.
    let items = serde_json::json!([
        {"data": b64(b"first")},
        {"data": "%%% not base64"},
        {"digest": b64(&[1u8; 20])},
        {"digest": b64(&hash_bytes("sha256", b"fourth"))},
        {"data": b64(b"x"), "digest": b64(&[0u8; 32])},
    ]);
    let r = post_json(
        &instance,
        &daemon,
        &signer,
        "/v1/sign-batch",
        &serde_json::json!({"ring": "p256", "items": items}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let batch = r.json();
    let statuses: Vec<u64> = batch["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 400, 400, 200, 400], "{batch}");
    assert_eq!(batch["signed"], 2);
    // The batch root is the RFC 6962 root over the returned signatures.
    let leaves: Vec<[u8; 32]> = batch["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["signature"].as_str())
        .map(|s| signet_merkle::hash_leaf(&unb64(s)))
        .collect();
    let root = hex::encode(signet_merkle::reference::root(&leaves));
    assert_eq!(batch["batch_root"].as_str().unwrap(), root);
    // ... and it is the output digest of the committed audit entry of the batch.
    let seq = batch["receipt"]["seq"].as_u64().unwrap();
    let entries = get(
        &instance,
        &daemon,
        &auditor,
        &format!("/v1/audit/entries?from={seq}&limit=1"),
    );
    assert_eq!(entries.status, 200, "{entries:?}");
    let entry = &entries.json()["entries"][0];
    assert_eq!(entry["action"], "sign-batch");
    assert_eq!(entry["output_digest"].as_str().unwrap(), root);
    assert_eq!(entry["actor_account"], "signer");
    // Each signature verifies through the API (with the key that made it).
    {
        let (item, data) = (&batch["results"][0], b"first".as_slice());
        let v = post_json(
            &instance,
            &daemon,
            &signer,
            "/v1/verify",
            &serde_json::json!({"key_id": item["key_id"], "data": b64(data), "signature": item["signature"]}),
        );
        assert_eq!(v.json()["valid"], true, "{v:?}");
    }
    // All or nothing: one bad item refuses the batch; nothing is signed.
    let r = post_json(
        &instance,
        &daemon,
        &signer,
        "/v1/sign-batch",
        &serde_json::json!({"ring": "p256", "atomic": true, "items": items}),
    );
    let body = problem(&r, 400);
    assert_eq!(body["items"].as_array().unwrap().len(), 3, "{body}");
    assert!(!r.body.contains("signature\""), "{body}");
    // Too many items → 413.
    let many: Vec<serde_json::Value> = (0..9)
        .map(|_| serde_json::json!({"data": "AA=="}))
        .collect();
    problem(
        &post_json(
            &instance,
            &daemon,
            &signer,
            "/v1/sign-batch",
            &serde_json::json!({"ring": "p256", "items": many}),
        ),
        413,
    );
    problem(
        &post_json(
            &instance,
            &daemon,
            &signer,
            "/v1/sign-batch",
            &serde_json::json!({"ring": "p256", "items": [], "extra": 1}),
        ),
        400,
    );

    // Verify against a whole ring finds the key; a flipped signature is invalid, not an error.
    let r = sign_file(&instance, &daemon, &signer, "ring=rsa&padding=pss", &small);
    let sig = unb64(r.json()["signature"].as_str().unwrap());
    let v = post_json(
        &instance,
        &daemon,
        &signer,
        "/v1/verify",
        &serde_json::json!({"ring": "rsa", "padding": "pss", "data": b64(b"hello signetd"), "signature": b64(&sig)}),
    );
    assert_eq!(v.status, 200, "{v:?}");
    assert_eq!(v.json()["valid"], true);
    assert_eq!(v.json()["key_id"], rsa[0].as_str());
    let v = post_json(
        &instance,
        &daemon,
        &signer,
        "/v1/verify",
        &serde_json::json!({"ring": "rsa", "padding": "pss", "data": b64(b"hello signetd"), "signature": b64(&flip_last(&sig))}),
    );
    assert_eq!(v.json()["valid"], false);

    // Retire: the key no longer signs, still verifies, and shows as retired with its usage.
    let r = post_json(
        &instance,
        &daemon,
        &admin,
        &format!("/v1/keys/{}/retire", rsa[0]),
        &serde_json::json!({}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["state"], "retired");
    let body = problem(
        &sign_file(
            &instance,
            &daemon,
            &signer,
            &format!("key_id={}", rsa[0]),
            &small,
        ),
        409,
    );
    assert!(
        body["detail"].as_str().unwrap().contains("retired"),
        "{body}"
    );
    problem(
        &sign_file(&instance, &daemon, &signer, "ring=rsa", &small),
        409,
    );
    let v = post_json(
        &instance,
        &daemon,
        &signer,
        "/v1/verify",
        &serde_json::json!({"key_id": rsa[0], "padding": "pss", "data": b64(b"hello signetd"), "signature": b64(&sig)}),
    );
    assert_eq!(v.json()["valid"], true, "a retired key still verifies");
    assert!(support::wait_until(
        std::time::Duration::from_secs(10),
        || {
            let k = get(&instance, &daemon, &admin, &format!("/v1/keys/{}", rsa[0])).json();
            k["state"] == "retired" && k["usage_count"].as_i64().unwrap() >= 1
        }
    ));
    let k = get(&instance, &daemon, &admin, &format!("/v1/keys/{}", rsa[0])).json();
    assert!(k["last_used_at"].is_string(), "{k}");
    assert!(k["retired_at"].is_string(), "{k}");
    let listed = keys_cli(&instance, &["list", "--ring", "rsa"]);
    assert!(listed.contains("retired"), "{listed}");
    // Retired by the CLI, another process: the daemon stops signing with it within a third
    // of the lease time (it renews its leases and drops retired keys).
    let out = keys_cli(&instance, &["retire", &p256[1]]);
    assert!(out.contains("retired key"), "{out}");
    let by_second = format!("key_id={}", p256[1]);
    assert!(support::wait_until(
        std::time::Duration::from_secs(15),
        || { sign_file(&instance, &daemon, &signer, &by_second, &small).status == 409 }
    ));
    for _ in 0..5 {
        let r = sign_file(&instance, &daemon, &signer, "ring=p256", &small);
        assert_eq!(r.json()["key_id"], p256[0].as_str(), "a retired key signed");
    }

    // Admin: rings through the API; a generated key is immediately usable.
    let r = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/rings",
        &serde_json::json!({"name": "api-ring", "algorithm": "ec-p384"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    problem(
        &post_json(
            &instance,
            &daemon,
            &admin,
            "/v1/rings",
            &serde_json::json!({"name": "Bad Name", "algorithm": "ec-p384"}),
        ),
        400,
    );
    problem(
        &post_json(
            &instance,
            &daemon,
            &admin,
            "/v1/rings",
            &serde_json::json!({"name": "api-ring", "algorithm": "ec-p384"}),
        ),
        409,
    );
    let r = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/rings/api-ring/keys",
        &serde_json::json!({"count": 2}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["keys"].as_array().unwrap().len(), 2);
    let ring = get(&instance, &daemon, &admin, "/v1/rings/api-ring").json();
    assert_eq!(ring["keys"].as_array().unwrap().len(), 2, "{ring}");
    problem(&get(&instance, &daemon, &admin, "/v1/rings/nope"), 404);

    // Denials are in the audit log.
    let entries = get(&instance, &daemon, &auditor, "/v1/audit/entries?limit=1000").json();
    let denied: Vec<&serde_json::Value> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["result"] == "error:forbidden")
        .collect();
    let denied_sign = denied
        .iter()
        .filter(|e| e["action"] == "sign" && e["actor_account"] == "other")
        .count();
    assert_eq!(denied_sign, 2, "{denied:#?}");
    assert!(
        denied
            .iter()
            .any(|e| e["action"] == "sign" && e["actor_account"] == "admin")
    );
    assert!(
        denied
            .iter()
            .any(|e| e["action"] == "key.generate" && e["actor_account"] == "signer")
    );
    // The uploaded data is never in the log: only its SHA-256 inside the parameters digest.
    assert!(!entries.to_string().contains("hello signetd"));
    let _ = s(&dir);
}
