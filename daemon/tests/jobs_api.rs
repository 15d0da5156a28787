//! Batch jobs through the API: records ingested as JSON and NDJSON (with limits and bad input
//! changing nothing), roles, a job created, read and finished through `/v1/jobs`, a second job
//! refused while one runs, cancel, and the per-record proof checked end to end — the leaf and
//! batch path recomputed here, the batch root found in the audit entry, the entry in a signed
//! checkpoint checked by `signetd audit verify-proof`, the signature checked by OpenSSL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use base64::Engine as _;
use sha2::Digest as _;

use support::jobs::{self, Client, api, create_account, sql, sql_i64};
use support::{Instance, run_ok, s};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

fn unhex32(v: &serde_json::Value) -> [u8; 32] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// RFC 9162 §2.1.3.2, written here again so the check does not rest on the daemon's code.
fn root_from_path(leaf_hash: [u8; 32], index: u64, size: u64, path: &[[u8; 32]]) -> [u8; 32] {
    let (mut f_n, mut s_n, mut r) = (index, size - 1, leaf_hash);
    for p in path {
        assert!(s_n != 0, "proof too long");
        if f_n & 1 == 1 || f_n == s_n {
            r = sha256(&[&[1], p, &r]);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = sha256(&[&[1], &r, p]);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    assert_eq!(s_n, 0, "proof too short");
    r
}

fn post_json(
    instance: &Instance,
    daemon: &support::Daemon,
    client: &Client,
    path: &str,
    body: &str,
) -> support::CurlResult {
    api(
        instance,
        daemon,
        client,
        path,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ],
    )
}

#[test]
fn records_jobs_and_proofs_through_the_api() {
    let instance = Instance::new();
    jobs::configure(&instance, 2, 10);
    // Two workers of one claim each against three keys: a key is idle whenever a batch is
    // claimed, so least recently used first keeps the per-key counts level. (With more claims
    // in flight than keys, the first key released is the only idle one and goes next.)
    jobs::claim_batches(&instance, 1);
    instance.init();
    jobs::generate_ring(&instance, "docs", "ec-p256", 3);
    let admin = jobs::admin(&instance);
    let auditor = create_account(&instance, "auditor", "auditor");
    let feeder = create_account(&instance, "feeder", "records");
    let signer = create_account(&instance, "docs-signer", "signer:docs");
    let stranger = create_account(&instance, "stranger", "signer:other");
    let daemon = instance.serve();

    // JSON ingestion: base64 data and text.
    let body = format!(
        r#"{{"records":[{{"data":"{}"}},{{"text":"hello"}},{{"data":"{}"}}]}}"#,
        b64(b"first record"),
        b64(&[0u8, 1, 2, 255])
    );
    let r = post_json(&instance, &daemon, &feeder, "/v1/records", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    let ids: Vec<i64> = r.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // NDJSON ingestion, 200 records.
    let mut nd = String::new();
    for i in 0..200 {
        nd.push_str(&format!("{{\"text\":\"line {i}\"}}\n"));
    }
    let nd_file = jobs::write_file(&instance, "records.ndjson", nd.as_bytes());
    let r = api(
        &instance,
        &daemon,
        &feeder,
        "/v1/records",
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/x-ndjson",
            "--data-binary",
            &format!("@{nd_file}"),
        ],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["count"], 200);
    assert_eq!(sql_i64(&instance, "SELECT count(*) FROM records"), 203);

    // Bad input changes nothing (invariant 9): bad base64, unknown fields, a record over the
    // size limit, a body over the request limit.
    let before = sql_i64(&instance, "SELECT count(*) FROM records");
    for bad in [
        r#"{"records":[{"data":"not base64!"}]}"#.to_owned(),
        r#"{"records":[{"text":"a","data":"YQ=="}]}"#.to_owned(),
        r#"{"records":[{"bogus":1}]}"#.to_owned(),
        r#"{"records":[]}"#.to_owned(),
        format!(
            r#"{{"records":[{{"text":"ok"}},{{"text":"{}"}}]}}"#,
            "x".repeat(70_000)
        ),
        "[".to_owned(),
    ] {
        let file = jobs::write_file(&instance, "bad.json", bad.as_bytes());
        let r = api(
            &instance,
            &daemon,
            &feeder,
            "/v1/records",
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "--data-binary",
                &format!("@{file}"),
            ],
        );
        assert_eq!(r.status, 400, "{bad:.80}: {}", r.body);
        assert_eq!(r.json()["type"], "urn:signetd:problem:bad-request");
    }
    let huge = jobs::write_file(&instance, "huge.json", &vec![b' '; 33 * 1024 * 1024]);
    let r = api(
        &instance,
        &daemon,
        &feeder,
        "/v1/records",
        // HTTP/1.1 sends `Expect: 100-continue`: the refusal comes before the upload.
        &[
            "--http1.1",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &format!("@{huge}"),
        ],
    );
    assert_eq!(r.status, 413, "{} {}", r.body, r.stderr);
    assert_eq!(sql_i64(&instance, "SELECT count(*) FROM records"), before);

    // Roles: a signer of another ring may not add records or start a job on this ring; an
    // auditor may not start jobs. Each refusal is audited.
    let r = post_json(
        &instance,
        &daemon,
        &stranger,
        "/v1/records",
        r#"{"records":[{"text":"x"}]}"#,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let job_body = r#"{"ring":"docs","batch_size":50}"#;
    for who in [&stranger, &auditor] {
        let r = post_json(&instance, &daemon, who, "/v1/jobs", job_body);
        assert_eq!(r.status, 403, "{}", r.body);
    }
    assert!(
        sql_i64(
            &instance,
            "SELECT count(*) FROM audit_entries WHERE result = 'error:forbidden' \
             AND action IN ('records.ingest', 'jobs.create')"
        ) >= 3
    );
    // Bad job requests.
    for (body, status) in [
        (r#"{"ring":"docs","batch_size":0}"#, 400),
        (r#"{"ring":"docs","batch_size":10001}"#, 400),
        (r#"{"ring":"docs"}"#, 400),
        (r#"{"ring":"nope","batch_size":5}"#, 404),
    ] {
        let r = post_json(&instance, &daemon, &admin, "/v1/jobs", body);
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
    // A ring without keys cannot sign: refused, not left hanging.
    let r = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/rings",
        r#"{"name":"empty","algorithm":"ec-p256"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/jobs",
        r#"{"ring":"empty","batch_size":5}"#,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("no active key")
    );
    assert_eq!(sql_i64(&instance, "SELECT count(*) FROM jobs"), 0);

    // The ring's signer creates the job; the daemon's workers sign everything.
    let r = post_json(&instance, &daemon, &signer, "/v1/jobs", job_body);
    assert_eq!(r.status, 201, "{}", r.body);
    let job = r.json();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["total"], 203);
    assert_eq!(job["batches"], 5);
    assert_eq!(job["batch_size"], 50);
    assert!(job["receipt"]["seq"].is_u64());
    assert_eq!(
        jobs::wait_over(&instance, &id, Duration::from_secs(120)),
        "done"
    );
    let r = api(&instance, &daemon, &auditor, &format!("/v1/jobs/{id}"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let job = r.json();
    assert_eq!(job["state"], "done");
    assert_eq!(job["signed"], 203);
    assert_eq!(job["remaining"], 0);
    assert_eq!(job["batches_done"], 5);
    let per_key: i64 = job["per_key"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["batches"].as_i64().unwrap())
        .sum();
    assert_eq!(per_key, 5);
    let r = api(
        &instance,
        &daemon,
        &stranger,
        &format!("/v1/jobs/{id}"),
        &[],
    );
    assert_eq!(r.status, 403);
    let r = api(&instance, &daemon, &signer, "/v1/jobs", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["jobs"].as_array().unwrap().len(), 1);
    let r = api(&instance, &daemon, &stranger, "/v1/jobs", &[]);
    assert_eq!(r.status, 200);
    assert!(r.json()["jobs"].as_array().unwrap().is_empty());
    jobs::check_job(
        &instance,
        &id,
        &jobs::Expect {
            records: 203,
            keys: 3,
            balanced: true,
        },
    );
    // Done is final: cancelling it is a conflict.
    let r = api(
        &instance,
        &daemon,
        &admin,
        &format!("/v1/jobs/{id}/cancel"),
        &["-X", "POST"],
    );
    assert_eq!(r.status, 409, "{}", r.body);

    // The proof of one record, checked without the daemon's code where it matters.
    let record = ids[1];
    let r = api(
        &instance,
        &daemon,
        &signer,
        &format!("/v1/records/{record}/proof"),
        &[],
    );
    assert_eq!(r.status, 403);
    let cp = api(&instance, &daemon, &auditor, "/v1/audit/checkpoint", &[]);
    assert_eq!(cp.status, 200, "{}", cp.body);
    let mut size = cp.json()["size"].as_u64().unwrap();
    // The batch entry may be newer than the last checkpoint: wait for one that covers it.
    let r = api(
        &instance,
        &daemon,
        &auditor,
        &format!("/v1/records/{record}/proof"),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seq = r.json()["audit_entry"]["seq"].as_u64().unwrap();
    assert!(support::wait_until(Duration::from_secs(30), || {
        let cp = api(&instance, &daemon, &auditor, "/v1/audit/checkpoint", &[]);
        size = cp.json()["size"].as_u64().unwrap();
        size > seq
    }));
    let cp = api(&instance, &daemon, &auditor, "/v1/audit/checkpoint", &[]);
    let cp_json = cp.json();
    size = cp_json["size"].as_u64().unwrap();
    let r = api(
        &instance,
        &daemon,
        &auditor,
        &format!("/v1/records/{record}/proof?size={size}"),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let p = r.json();
    assert_eq!(p["record_id"], record);
    assert_eq!(unb64(&p["data"]), b"hello");
    assert_eq!(p["scheme"], "ecdsa-p256-sha256");
    let signature = unb64(&p["signature"]);
    let leaf = unb64(&p["leaf"]);
    let mut expected_leaf = vec![1u8];
    expected_leaf.extend_from_slice(&(record as u64).to_be_bytes());
    expected_leaf.extend_from_slice(&signature);
    assert_eq!(leaf, expected_leaf, "leaf = 0x01 ‖ record id ‖ signature");
    let leaf_hash = sha256(&[&[0], &leaf]);
    assert_eq!(leaf_hash, unhex32(&p["leaf_hash"]));
    let path: Vec<[u8; 32]> = p["batch_proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(unhex32)
        .collect();
    let batch_root = root_from_path(
        leaf_hash,
        p["leaf_index"].as_u64().unwrap(),
        p["batch_size"].as_u64().unwrap(),
        &path,
    );
    assert_eq!(batch_root, unhex32(&p["batch_root"]));
    // The batch root is the output digest of the batch's audit entry.
    let entry_leaf = unb64(&p["audit_entry"]["leaf"]);
    let entry = signet_merkle::Entry::decode(&entry_leaf).unwrap();
    assert_eq!(entry.output_digest, Some(batch_root));
    assert_eq!(entry.action, "jobs.batch");
    assert_eq!(entry.result, "ok");
    assert_eq!(entry.subject, p["audit_entry"]["subject"].as_str().unwrap());
    // The entry is in the tree of a signed checkpoint (the auditor's offline tool).
    let inclusion = &p["audit_inclusion"];
    assert_eq!(inclusion["size"].as_u64().unwrap(), size);
    let audit_path: Vec<[u8; 32]> = inclusion["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(unhex32)
        .collect();
    let audit_root = root_from_path(sha256(&[&[0], &entry_leaf]), seq, size, &audit_path);
    assert_eq!(hex::encode(audit_root), cp_json["root"].as_str().unwrap());
    let key = api(&instance, &daemon, &auditor, "/v1/audit/key", &[]);
    let files = [
        ("cp.json", cp.body.clone()),
        ("key.json", key.body.clone()),
        (
            "entry.json",
            serde_json::json!({ "leaf": p["audit_entry"]["leaf"] }).to_string(),
        ),
        ("proof.json", inclusion.to_string()),
    ];
    for (name, body) in &files {
        jobs::write_file(&instance, name, body.as_bytes());
    }
    let dir = instance.dir.path();
    let out = instance
        .command()
        .args([
            "audit",
            "verify-proof",
            "--checkpoint",
            s(&dir.join("cp.json")),
            "--key",
            s(&dir.join("key.json")),
            "--entry",
            s(&dir.join("entry.json")),
            "--proof",
            s(&dir.join("proof.json")),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // OpenSSL verifies the signature over the record with the key of the proof.
    let key_pem = jobs::write_file(
        &instance,
        "k.pem",
        p["key"]["public_key_pem"].as_str().unwrap().as_bytes(),
    );
    let sig = jobs::write_file(&instance, "r.sig", &signature);
    let data = jobs::write_file(&instance, "r.bin", b"hello");
    run_ok(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            &key_pem,
            "-signature",
            &sig,
            &data,
        ],
    );
    // An unsigned or unknown record has no proof.
    let r = api(
        &instance,
        &daemon,
        &auditor,
        "/v1/records/999999/proof",
        &[],
    );
    assert_eq!(r.status, 404, "{}", r.body);

    // A job runs; a second one is refused while it does; cancelling stops it.
    jobs::seed(&instance, 5000, 64);
    let r = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/jobs",
        r#"{"ring":"docs","batch_size":1}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id2 = r.json()["id"].as_str().unwrap().to_owned();
    let r = post_json(&instance, &daemon, &admin, "/v1/jobs", job_body);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.json()["detail"].as_str().unwrap().contains("running"));
    let r = api(
        &instance,
        &daemon,
        &signer,
        &format!("/v1/jobs/{id2}/cancel"),
        &["-X", "POST"],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "cancelled");
    std::thread::sleep(Duration::from_secs(1));
    let signed = sql_i64(&instance, "SELECT count(*) FROM signatures");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sql_i64(&instance, "SELECT count(*) FROM signatures"),
        signed,
        "signatures committed after the cancel"
    );
    assert!(
        signed < 203 + 5000,
        "the job finished before it could be cancelled"
    );
    // A new job picks up what the cancelled one left, and every record ends signed once.
    let r = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/jobs",
        r#"{"ring":"docs","batch_size":500}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id3 = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["total"].as_i64().unwrap(), 203 + 5000 - signed);
    assert_eq!(
        jobs::wait_over(&instance, &id3, Duration::from_secs(120)),
        "done"
    );
    assert_eq!(sql_i64(&instance, "SELECT count(*) FROM signatures"), 5203);
    assert_eq!(
        sql(
            &instance,
            "SELECT count(*) FROM records r WHERE NOT EXISTS (SELECT 1 FROM signatures s WHERE s.record_id = r.id)"
        ),
        "0"
    );
    // A second signature for a record is impossible even for the database owner's own role.
    let out = instance.pg.psql(
        "signetd",
        "INSERT INTO signatures (record_id, batch_id, leaf_index, signature) \
         SELECT record_id, batch_id, leaf_index + 100000, signature FROM signatures LIMIT 1",
    );
    assert!(out.is_err(), "a second signature was accepted");
    // Every signature refers to a record and a batch that exist, and those rows stay: the
    // references are checked once per statement (`sql/V20__signature_references_per_statement.sql`),
    // so what they refer to may not go away, not even for the owner.
    for (statement, refusal) in [
        (
            "INSERT INTO signatures (record_id, batch_id, leaf_index, signature) \
             SELECT (SELECT max(id) + 1 FROM records), batch_id, leaf_index + 100000, signature \
             FROM signatures LIMIT 1",
            "refers to a record that does not exist",
        ),
        (
            "WITH r AS (INSERT INTO records (data) VALUES ('\\x01') RETURNING id) \
             INSERT INTO signatures (record_id, batch_id, leaf_index, signature) \
             SELECT id, -1, 0, '\\x01' FROM r",
            "refers to a batch that does not exist",
        ),
        (
            "DELETE FROM records WHERE id = (SELECT min(record_id) FROM signatures)",
            "DELETE on records refused",
        ),
        (
            "UPDATE records SET data = data || '\\x00'::bytea \
             WHERE id = (SELECT min(id) FROM records)",
            "UPDATE on records refused",
        ),
        ("TRUNCATE records CASCADE", "TRUNCATE on records refused"),
        (
            "DELETE FROM batches WHERE id = (SELECT min(batch_id) FROM signatures)",
            "DELETE on batches refused",
        ),
        ("TRUNCATE batches CASCADE", "TRUNCATE on batches refused"),
    ] {
        let out = instance.pg.psql("signetd", statement);
        let err = out.expect_err(statement);
        assert!(err.to_string().contains(refusal), "{statement}: {err}");
    }
    assert_eq!(
        sql(
            &instance,
            "SELECT (SELECT count(*) FROM signatures) || ' ' || (SELECT count(*) FROM records)"
        ),
        "5203 5203"
    );
    drop(daemon);

    // The audit writer finishes batches without a client-side savepoint: a refusal must undo
    // everything of its batch inside `jobs_try_finish_batch` and come back as a value. Set a
    // batch up as claimed by "test" with a key leased, then finish it in four wrong ways.
    let batch = sql_i64(
        &instance,
        &format!("SELECT id FROM batches WHERE job_id = '{id3}' ORDER BY seq LIMIT 1"),
    );
    let first = sql_i64(
        &instance,
        &format!("SELECT first_record FROM batches WHERE id = {batch}"),
    );
    let key = sql(
        &instance,
        "SELECT k.id FROM keys k WHERE k.ring = 'docs' \
         AND NOT EXISTS (SELECT 1 FROM key_leases l WHERE l.key_id = k.id) LIMIT 1",
    );
    sql(
        &instance,
        &format!(
            "UPDATE jobs SET state = 'running', finished_at = NULL WHERE id = '{id3}'; \
             UPDATE batches SET state = 'claimed', holder = 'test', attempts = 7, \
                 claim_expires_at = now() + interval '1 hour' WHERE id = {batch}; \
             INSERT INTO key_leases (key_id, holder, expires_at) \
                 VALUES ('{key}', 'test', now() + interval '1 hour')"
        ),
    );
    let finish_with = |holder: &str, key: &str, record: i64| {
        sql(
            &instance,
            &format!(
                "SELECT jobs_try_finish_batch({batch}, '{holder}', 7, '{key}', \
                 ARRAY[{record}::bigint], ARRAY['\\x01'::bytea], decode(repeat('00', 32), 'hex'))"
            ),
        )
    };
    let state = || {
        sql(
            &instance,
            &format!(
                "SELECT b.state || ' ' || (SELECT count(*) FROM key_leases WHERE holder = 'test') \
                 || ' ' || (SELECT count(*) FROM signatures) || ' ' || j.state \
                 FROM batches b JOIN jobs j ON j.id = b.job_id WHERE b.id = {batch}"
            ),
        )
    };
    // Each refusal leaves the batch claimed, the lease held, no signature added and the job
    // running: a record signed already (invariant 6), a claim that is not the caller's, a key
    // the caller does not hold (here one that does not exist), a record outside the batch
    // (found after the batch row and the lease were changed, and undone with them).
    let nobody = "00000000-0000-0000-0000-000000000000";
    for (holder, key, record, code) in [
        ("test", key.as_str(), first, "23505 "),
        ("someone-else", key.as_str(), first, "SJ001 "),
        ("test", nobody, first, "SJ003 "),
        ("test", key.as_str(), 0, "SJ004 "),
    ] {
        let refused = finish_with(holder, key, record);
        assert!(refused.starts_with(code), "{refused}");
        assert_eq!(
            state(),
            "claimed 1 5203 running",
            "a refused batch ({code}) left changes"
        );
    }
    // A record id inside a batch's range that names no record (a batch of the job cut by
    // hand over ids past the newest record): the signatures' reference check, once per
    // statement, refuses that batch alone, and its refusal is undone with it too.
    let missing = sql_i64(&instance, "SELECT max(id) + 1000 FROM records");
    let gap = sql_i64(
        &instance,
        &format!(
            "INSERT INTO batches (job_id, seq, first_record, last_record, size, state, holder, \
                                  attempts, claim_expires_at) \
             VALUES ('{id3}', 1000000, {missing}, {missing}, 1, 'claimed', 'test', 7, \
                     now() + interval '1 hour') RETURNING id"
        ),
    );
    let refused = sql(
        &instance,
        &format!(
            "SELECT jobs_try_finish_batch({gap}, 'test', 7, '{key}', ARRAY[{missing}::bigint], \
             ARRAY['\\x01'::bytea], decode(repeat('00', 32), 'hex'))"
        ),
    );
    assert!(refused.starts_with("23503 "), "{refused}");
    assert_eq!(
        sql(
            &instance,
            &format!("SELECT state FROM batches WHERE id = {gap}")
        ),
        "claimed"
    );
    assert_eq!(
        state(),
        "claimed 1 5203 running",
        "a refused batch (23503) left changes"
    );
    // A key retired while its batch was out: the batch is refused (found after the batch was
    // finished and the key released, and undone with all of it). Every record is signed by
    // now, so the finish carries none.
    sql(
        &instance,
        &format!("UPDATE keys SET state = 'retired', retired_at = now() WHERE id = '{key}'"),
    );
    let refused = sql(
        &instance,
        &format!(
            "SELECT jobs_try_finish_batch({batch}, 'test', 7, '{key}', ARRAY[]::bigint[], \
             ARRAY[]::bytea[], decode(repeat('00', 32), 'hex'))"
        ),
    );
    assert!(refused.starts_with("SJ005 "), "{refused}");
    assert_eq!(
        state(),
        "claimed 1 5203 running",
        "a refused batch (SJ005) left changes"
    );
}
