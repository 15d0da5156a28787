//! The Merkle audit log end to end: receipts, signed checkpoints checked by OpenSSL's Ed25519,
//! proofs checked offline, follow mode, role checks, append-only grants and trigger, tamper
//! detection by `signetd audit verify`, and a kill -9 in the middle of concurrent operations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{CurlResult, Daemon, Instance, curl, run_ok, s, wait_until};

/// An account with a client certificate, made with `signetd account create`.
struct Client {
    cert: String,
    key: String,
}

fn create_account(instance: &Instance, name: &str, role: &str) -> Client {
    let dir = instance.dir.path().join("clients");
    let out = instance
        .command()
        .args([
            "account",
            "create",
            name,
            "--role",
            role,
            "--out-dir",
            s(&dir),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Client {
        cert: s(&dir.join(format!("{name}.crt"))).to_owned(),
        key: s(&dir.join(format!("{name}.key"))).to_owned(),
    }
}

fn admin(instance: &Instance) -> Client {
    Client {
        cert: s(&instance.admin_cert()).to_owned(),
        key: s(&instance.admin_key()).to_owned(),
    }
}

fn get(instance: &Instance, daemon: &Daemon, client: &Client, path: &str) -> CurlResult {
    curl(&[
        "--cacert",
        s(&instance.ca()),
        "--cert",
        &client.cert,
        "--key",
        &client.key,
        &daemon.api_url(path),
    ])
}

/// `seq:leafhash` from the Audit-Receipt header of a whoami call.
fn whoami_receipt(instance: &Instance, daemon: &Daemon, client: &Client) -> Option<(u64, String)> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--cacert",
            s(&instance.ca()),
            "--cert",
            &client.cert,
            "--key",
            &client.key,
            &daemon.api_url("/v1/whoami"),
        ])
        .output()
        .ok()?;
    let headers = String::from_utf8_lossy(&out.stdout);
    if !headers.starts_with("HTTP/2 200") && !headers.starts_with("HTTP/1.1 200") {
        return None;
    }
    let line = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("audit-receipt:"))?;
    let (seq, hash) = line.split_once(':')?.1.trim().split_once(':')?;
    Some((seq.parse().ok()?, hash.to_owned()))
}

fn audit_verify(instance: &Instance, db_url: Option<&str>) -> (bool, String) {
    match db_url {
        Some(url) => audit_verify_with(instance, &[("SIGNETD_DATABASE__URL", url)], &[]),
        None => audit_verify_with(instance, &[], &[]),
    }
}

/// `signetd audit verify ARGS` with settings overridden by `env`.
fn audit_verify_with(instance: &Instance, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let out = instance
        .command()
        .args(["audit", "verify"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn psql_as(instance: &Instance, user: &str, db: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            s(instance.pg.socket_dir()),
            "-p",
            &instance.pg.port().to_string(),
            "-U",
            user,
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .unwrap()
}

#[test]
fn receipts_checkpoints_proofs_and_roles() {
    let instance = Instance::new();
    instance.init();
    let auditor = create_account(&instance, "auditor", "auditor");
    let admin = admin(&instance);
    let daemon = instance.serve();

    // Every answer carries its receipt; receipts grow.
    let (first, _) = whoami_receipt(&instance, &daemon, &admin).expect("receipt");
    for _ in 0..25 {
        whoami_receipt(&instance, &daemon, &admin).expect("receipt");
    }
    let (last, last_hash) = whoami_receipt(&instance, &daemon, &admin).expect("receipt");
    assert!(last > first);

    // Only auditors read the log; the refusal is itself logged.
    let denied = get(&instance, &daemon, &admin, "/v1/audit/entries");
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.json()["status"], 403);

    // A checkpoint covering the last receipt appears (every 20 entries or every second).
    let mut checkpoint = serde_json::Value::Null;
    assert!(wait_until(Duration::from_secs(10), || {
        let r = get(&instance, &daemon, &auditor, "/v1/audit/checkpoint");
        if r.status == 200 {
            checkpoint = r.json();
            checkpoint["size"].as_u64().unwrap() > last
        } else {
            false
        }
    }));
    let size = checkpoint["size"].as_u64().unwrap();
    let note = checkpoint["note"].as_str().unwrap().to_owned();
    assert!(
        note.starts_with(&format!("test.signetd/audit\n{size}\n")),
        "{note}"
    );

    // OpenSSL's Ed25519 verifies the checkpoint signature with the served public key.
    let key = get(&instance, &daemon, &auditor, "/v1/audit/key").json();
    let dir = instance.dir.path();
    std::fs::write(
        dir.join("audit.pub.pem"),
        key["public_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    let (body, sigline) = note.split_once("\n\n").unwrap();
    std::fs::write(dir.join("body"), format!("{body}\n")).unwrap();
    let b64 = sigline.trim_end().rsplit(' ').next().unwrap();
    let raw = base64_decode(b64);
    assert_eq!(raw.len(), 68, "4-byte key id + 64-byte signature");
    std::fs::write(dir.join("sig"), &raw[4..]).unwrap();
    let verified = run_ok(
        "openssl",
        &[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            s(&dir.join("audit.pub.pem")),
            "-rawin",
            "-in",
            s(&dir.join("body")),
            "-sigfile",
            s(&dir.join("sig")),
        ],
    );
    assert!(
        verified.contains("Signature Verified Successfully"),
        "{verified}"
    );
    let mut forged = raw[4..].to_vec();
    forged[10] ^= 1;
    std::fs::write(dir.join("forged"), &forged).unwrap();
    let rejected = Command::new("openssl")
        .args([
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            s(&dir.join("audit.pub.pem")),
            "-rawin",
            "-in",
            s(&dir.join("body")),
            "-sigfile",
            s(&dir.join("forged")),
        ])
        .output()
        .unwrap();
    assert!(!rejected.status.success());

    // The entry of the last receipt, its inclusion proof at the checkpoint, checked offline.
    let entries = get(
        &instance,
        &daemon,
        &auditor,
        &format!("/v1/audit/entries?from={last}&limit=1"),
    )
    .json();
    let entry = &entries["entries"][0];
    assert_eq!(entry["seq"], last);
    assert_eq!(entry["leaf_hash"], last_hash.as_str());
    assert_eq!(entry["action"], "whoami");
    assert_eq!(entry["actor_account"], "admin");
    let proof = get(
        &instance,
        &daemon,
        &auditor,
        &format!("/v1/audit/proof/inclusion?seq={last}&size={size}"),
    );
    assert_eq!(proof.status, 200, "{proof:?}");
    std::fs::write(dir.join("checkpoint.json"), checkpoint.to_string()).unwrap();
    std::fs::write(dir.join("key.json"), key.to_string()).unwrap();
    std::fs::write(dir.join("entry.json"), entry.to_string()).unwrap();
    std::fs::write(dir.join("proof.json"), &proof.body).unwrap();
    let offline = |entry_file: &str, proof_file: &str| {
        Command::new(env!("CARGO_BIN_EXE_signetd"))
            .args([
                "audit",
                "verify-proof",
                "--checkpoint",
                s(&dir.join("checkpoint.json")),
                "--key",
                s(&dir.join("key.json")),
                "--entry",
                s(&dir.join(entry_file)),
                "--proof",
                s(&dir.join(proof_file)),
            ])
            .env_remove("SIGNETD_CONFIG")
            .output()
            .unwrap()
    };
    let ok = offline("entry.json", "proof.json");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // A proof with one changed byte, or another entry, does not verify.
    let mut bad: serde_json::Value = serde_json::from_str(&proof.body).unwrap();
    let first_hash = bad["proof"][0].as_str().unwrap().to_owned();
    let flipped = format!(
        "{}{}",
        if first_hash.starts_with('0') {
            "1"
        } else {
            "0"
        },
        &first_hash[1..]
    );
    bad["proof"][0] = serde_json::Value::String(flipped);
    std::fs::write(dir.join("bad-proof.json"), bad.to_string()).unwrap();
    assert!(!offline("entry.json", "bad-proof.json").status.success());
    let other = get(
        &instance,
        &daemon,
        &auditor,
        &format!("/v1/audit/entries?from={first}&limit=1"),
    )
    .json();
    std::fs::write(dir.join("other.json"), other["entries"][0].to_string()).unwrap();
    assert!(!offline("other.json", "proof.json").status.success());

    // Consistency between two tree sizes, as served.
    let consistency = get(
        &instance,
        &daemon,
        &auditor,
        &format!("/v1/audit/proof/consistency?from={}&to={size}", first + 1),
    );
    assert_eq!(consistency.status, 200, "{consistency:?}");
    let c = consistency.json();
    let hashes: Vec<[u8; 32]> = c["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hex32(h.as_str().unwrap()))
        .collect();
    signet_merkle::verify_consistency(
        first + 1,
        size,
        &hex32(c["from_root"].as_str().unwrap()),
        &hex32(c["to_root"].as_str().unwrap()),
        &hashes,
    )
    .unwrap();
    assert_eq!(c["to_root"], checkpoint["root"]);

    // Bad queries are 400 problems; proofs beyond the tree are refused.
    let bad_query = get(
        &instance,
        &daemon,
        &auditor,
        "/v1/audit/proof/inclusion?seq=abc",
    );
    assert_eq!(bad_query.status, 400);
    assert_eq!(bad_query.json()["status"], 400);
    let beyond = get(
        &instance,
        &daemon,
        &auditor,
        "/v1/audit/proof/inclusion?seq=999999",
    );
    assert_eq!(beyond.status, 400);

    // Follow mode: a long poll from the end returns as soon as a new entry is committed.
    let next = get(
        &instance,
        &daemon,
        &auditor,
        "/v1/audit/entries?from=0&limit=1000",
    )
    .json()["next"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    let poll = {
        let (ca, cert, key, url) = (
            s(&instance.ca()).to_owned(),
            auditor.cert.clone(),
            auditor.key.clone(),
            daemon.api_url(&format!("/v1/audit/entries?from={next}&wait=20")),
        );
        std::thread::spawn(move || curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &url]))
    };
    std::thread::sleep(Duration::from_millis(500));
    let (seq, _) = whoami_receipt(&instance, &daemon, &admin).unwrap();
    let followed = poll.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the long poll did not wake up"
    );
    assert_eq!(followed.json()["entries"][0]["seq"], seq, "{followed:?}");

    // The checkpoint the auditor kept (`checkpoint.json`) and a newer one: the newer tree
    // extends the kept one, checked offline with the served consistency proof.
    let mut newer = serde_json::Value::Null;
    assert!(wait_until(Duration::from_secs(10), || {
        newer = get(&instance, &daemon, &auditor, "/v1/audit/checkpoint").json();
        newer["size"].as_u64().is_some_and(|n| n > size)
    }));
    let to = newer["size"].as_u64().unwrap();
    std::fs::write(dir.join("newer.json"), newer.to_string()).unwrap();
    let c = get(
        &instance,
        &daemon,
        &auditor,
        &format!("/v1/audit/proof/consistency?from={size}&to={to}"),
    );
    assert_eq!(c.status, 200, "{c:?}");
    std::fs::write(dir.join("consistency.json"), &c.body).unwrap();
    let mut flipped: serde_json::Value = serde_json::from_str(&c.body).unwrap();
    let first_hash = flipped["proof"][0].as_str().unwrap().to_owned();
    flipped["proof"][0] = serde_json::Value::String(format!(
        "{}{}",
        if first_hash.starts_with('0') {
            "1"
        } else {
            "0"
        },
        &first_hash[1..]
    ));
    std::fs::write(dir.join("bad-consistency.json"), flipped.to_string()).unwrap();
    let extends = |checkpoint: &str, trusted: &str, proof: &str| {
        Command::new(env!("CARGO_BIN_EXE_signetd"))
            .args(["audit", "verify-proof", "--checkpoint"])
            .arg(dir.join(checkpoint))
            .arg("--key")
            .arg(dir.join("key.json"))
            .arg("--trusted")
            .arg(dir.join(trusted))
            .arg("--consistency")
            .arg(dir.join(proof))
            .env_remove("SIGNETD_CONFIG")
            .output()
            .unwrap()
    };
    let ok = extends("newer.json", "checkpoint.json", "consistency.json");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "of {to} entries extends the trusted one of {size}"
        )),
        "{stdout}"
    );
    for (checkpoint, trusted, proof) in [
        ("checkpoint.json", "newer.json", "consistency.json"),
        ("newer.json", "checkpoint.json", "bad-consistency.json"),
    ] {
        let out = extends(checkpoint, trusted, proof);
        assert!(
            !out.status.success(),
            "{checkpoint} extends {trusted} by {proof}?"
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("BAD: "));
    }

    // The whole log verifies.
    let (ok, out) = audit_verify(&instance, None);
    assert!(ok, "{out}");
    assert!(out.contains("audit log OK"), "{out}");

    // Append-only: the daemon's role may not change audit rows; the trigger stops even the owner.
    let as_daemon = psql_as(
        &instance,
        "signetd",
        "signetd",
        "UPDATE audit_entries SET result = 'ok' WHERE seq = 0",
    );
    assert!(!as_daemon.status.success());
    assert!(
        String::from_utf8_lossy(&as_daemon.stderr).contains("permission denied"),
        "{as_daemon:?}"
    );
    let delete = psql_as(
        &instance,
        "signetd",
        "signetd",
        "DELETE FROM audit_entries WHERE seq = 0",
    );
    assert!(!delete.status.success());
    let truncate = psql_as(&instance, "signetd", "signetd", "TRUNCATE audit_nodes");
    assert!(!truncate.status.success());
    let as_owner = psql_as(
        &instance,
        "postgres",
        "signetd",
        "UPDATE audit_entries SET result = 'ok' WHERE seq = 0",
    );
    assert!(!as_owner.status.success());
    assert!(
        String::from_utf8_lossy(&as_owner.stderr).contains("append-only"),
        "{as_owner:?}"
    );
}

fn hex32(s: &str) -> [u8; 32] {
    let v: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["base64", "-d", "-A"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(s.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    out.stdout
}

#[test]
fn tampering_is_found_and_named() {
    let instance = Instance::new();
    instance.init();
    let admin = admin(&instance);
    {
        let daemon = instance.serve();
        for _ in 0..45 {
            whoami_receipt(&instance, &daemon, &admin).expect("receipt");
        }
        // Past 168 entries, so node 3/20 (entries 160..=167) exists: one connection, many
        // requests.
        let (url, ca) = (daemon.api_url("/v1/whoami"), instance.ca());
        let mut args = vec![
            "-o",
            "/dev/null",
            "--cacert",
            s(&ca),
            "--cert",
            &admin.cert,
            "--key",
            &admin.key,
        ];
        args.extend(std::iter::repeat_n(url.as_str(), 140));
        curl(&args);
        // Wait for a checkpoint past entry 40.
        assert!(wait_until(Duration::from_secs(10), || {
            instance
                .pg
                .psql(
                    "signetd",
                    "SELECT coalesce(max(size), 0) FROM audit_checkpoints",
                )
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
                >= 40
        }));
    }
    let (ok, out) = audit_verify(&instance, None);
    assert!(ok, "{out}");
    let checkpoint: u64 = instance
        .pg
        .psql("signetd", "SELECT max(size) FROM audit_checkpoints")
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let size: u64 = instance
        .pg
        .psql("signetd", "SELECT count(*) FROM audit_entries")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(size >= 168, "{size} entries");
    // Each tampering on its own copy of the database, as a superuser bypassing the trigger.
    let cases: BTreeMap<&str, (&str, u64, &str)> = BTreeMap::from([
        (
            "t_byte",
            (
                "UPDATE audit_entries SET params_digest = set_byte(params_digest, 3, get_byte(params_digest, 3) # 1) WHERE seq = 17",
                17,
                "does not match its recorded leaf hash",
            ),
        ),
        (
            "t_delete",
            ("DELETE FROM audit_entries WHERE seq = 23", 23, "gap"),
        ),
        (
            "t_swap",
            (
                "UPDATE audit_entries a SET time = b.time, action = b.action, subject = b.subject, params_digest = b.params_digest, \
              actor_fingerprint = b.actor_fingerprint, actor_account = b.actor_account, output_digest = b.output_digest, result = b.result \
              FROM (SELECT * FROM audit_entries WHERE seq IN (8, 9)) b WHERE a.seq IN (8, 9) AND b.seq = 17 - a.seq",
                8,
                "does not match its recorded leaf hash",
            ),
        ),
        (
            "t_truncate",
            (
                "DELETE FROM audit_entries WHERE seq >= 30",
                30,
                "entry is missing",
            ),
        ),
        // Interior nodes: the entries are intact, the proofs served from these rows are not.
        (
            "t_node_3_20",
            (
                "UPDATE audit_nodes SET hash = sha256(hash) WHERE level = 3 AND idx = 20",
                160,
                "node 3/20 does not match the entries under it (160..=167)",
            ),
        ),
        (
            "t_node_1_0",
            (
                "UPDATE audit_nodes SET hash = sha256(hash) WHERE level = 1 AND idx = 0",
                0,
                "node 1/0 does not match the entries under it (0..=1)",
            ),
        ),
        (
            "t_node_gone",
            (
                "DELETE FROM audit_nodes WHERE level = 2 AND idx = 1",
                4,
                "node 2/1 over entries 4..=7 is not recorded",
            ),
        ),
        (
            "t_node_extra",
            (
                "INSERT INTO audit_nodes SELECT 4, max(idx) + 1, sha256('x') FROM audit_nodes WHERE level = 4",
                size,
                "but the log ends at",
            ),
        ),
    ]);
    for (db, (sql, expected, reason)) in &cases {
        instance
            .pg
            .psql(
                "postgres",
                &format!("CREATE DATABASE {db} TEMPLATE signetd"),
            )
            .unwrap();
        instance
            .pg
            .psql(
                db,
                &format!("SET session_replication_role = replica; {sql}"),
            )
            .unwrap();
        let (ok, out) = audit_verify(&instance, Some(&instance.pg.url_as("signetd", db)));
        assert!(!ok, "{db}: tampering not found: {out}");
        assert!(
            out.contains(&format!("first bad entry: {expected}\n")),
            "{db}: expected entry {expected} named (checkpoint {checkpoint}): {out}"
        );
        assert!(out.contains(reason), "{db}: expected {reason:?}: {out}");
    }
}

/// A copy of the instance's database, changed by `sql` as a superuser bypassing the
/// append-only trigger; returns the daemon's URL of the copy.
fn tampered_copy(instance: &Instance, db: &str, sql: &str) -> String {
    instance
        .pg
        .psql(
            "postgres",
            &format!("CREATE DATABASE {db} TEMPLATE signetd"),
        )
        .unwrap();
    instance
        .pg
        .psql(
            db,
            &format!("SET session_replication_role = replica; {sql}"),
        )
        .unwrap();
    instance.pg.url_as("signetd", db)
}

fn sql_u64(instance: &Instance, sql: &str) -> u64 {
    let out = instance.pg.psql("signetd", sql).unwrap();
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {out:?}: {e}"))
}

#[test]
fn a_saved_checkpoint_finds_truncation_and_proofs_refuse_changed_nodes() {
    let instance = Instance::new();
    instance.init();
    let admin = admin(&instance);
    let auditor = create_account(&instance, "auditor", "auditor");
    {
        let daemon = instance.serve();
        let (url, ca) = (daemon.api_url("/v1/whoami"), instance.ca());
        for _ in 0..3 {
            let mut args = vec![
                "-o",
                "/dev/null",
                "--cacert",
                s(&ca),
                "--cert",
                &admin.cert,
                "--key",
                &admin.key,
            ];
            args.extend(std::iter::repeat_n(url.as_str(), 40));
            curl(&args);
            // Checkpoints come every 20 entries or every second.
            std::thread::sleep(Duration::from_millis(1200));
        }
        assert!(wait_until(Duration::from_secs(10), || {
            sql_u64(
                &instance,
                "SELECT count(*) FROM audit_checkpoints WHERE size >= 20",
            ) >= 3
        }));
    }
    // The newest checkpoint left the database as it was made.
    let saved = instance.out.join("checkpoints").join("checkpoint");
    let note = std::fs::read_to_string(&saved).expect("the saved checkpoint");
    let size = sql_u64(&instance, "SELECT max(size) FROM audit_checkpoints");
    let newest = instance
        .pg
        .psql(
            "signetd",
            "SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
        )
        .unwrap();
    assert_eq!(note.trim_end(), newest.trim_end(), "saved {saved:?}");
    let held = instance.dir.path().join("held-checkpoint");
    std::fs::write(&held, &note).unwrap();
    let (ok, out) = audit_verify_with(&instance, &[], &["--checkpoint", s(&held)]);
    assert!(ok, "{out}");
    assert!(
        out.contains("(2 of them held outside the database)"),
        "{out}"
    );

    // The tail cut back to an older checkpoint, with its nodes and the newer checkpoint rows:
    // what is left is consistent in itself.
    let cut = sql_u64(
        &instance,
        &format!("SELECT max(size) FROM audit_checkpoints WHERE size < {size}"),
    );
    let url = tampered_copy(
        &instance,
        "t_cut",
        &format!(
            "DELETE FROM audit_entries WHERE seq >= {cut}; \
             DELETE FROM audit_nodes WHERE (idx + 1) * (1::bigint << level) > {cut}; \
             DELETE FROM audit_checkpoints WHERE size > {cut}"
        ),
    );
    let nowhere = instance.dir.path().join("no-checkpoints");
    let db_only = [
        ("SIGNETD_DATABASE__URL", url.as_str()),
        ("SIGNETD_AUDIT__CHECKPOINT_DIR", s(&nowhere)),
    ];
    let (ok, out) = audit_verify_with(&instance, &db_only, &[]);
    assert!(ok, "from the database alone the cut is invisible: {out}");
    let gone = format!("(entries {cut}..={} are gone)", size - 1);
    for (what, (ok, out)) in [
        (
            "--checkpoint",
            audit_verify_with(&instance, &db_only, &["--checkpoint", s(&held)]),
        ),
        ("the saved checkpoint", audit_verify(&instance, Some(&url))),
    ] {
        assert!(!ok, "{what}: the cut is not found: {out}");
        assert!(
            out.contains(&format!("first bad entry: {cut}\n")) && out.contains(&gone),
            "{what}: expected entries {cut}.. named: {out}"
        );
    }
    // The daemon refuses to start on the cut log rather than append to it.
    let mut serve = instance
        .command()
        .env("SIGNETD_DATABASE__URL", &url)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(Duration::from_secs(30), || {
        serve.try_wait().unwrap().is_some()
    });
    if !exited {
        serve.kill().unwrap();
    }
    let refused = serve.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&refused.stderr);
    assert!(
        exited && !refused.status.success(),
        "serve did not refuse the cut log: {logs}"
    );
    assert!(
        logs.contains(&format!("entries {cut}..={} are gone", size - 1)),
        "{logs}"
    );

    // Changed nodes under the checkpoint: a leaf hash (entry 5) and an interior node (1/0,
    // entries 0..=1). The daemon starts (neither is on the checkpoint's frontier) and refuses
    // every proof that would be built on them.
    let url = tampered_copy(
        &instance,
        "t_nodes",
        "UPDATE audit_nodes SET hash = sha256(hash) WHERE (level = 1 AND idx = 0) OR (level = 0 AND idx = 5)",
    );
    let dir = instance.dir.path().join("t_nodes-checkpoints");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&held, dir.join("checkpoint")).unwrap();
    let daemon = instance.serve_with(&[
        ("SIGNETD_DATABASE__URL", &url),
        ("SIGNETD_AUDIT__CHECKPOINT_DIR", s(&dir)),
    ]);
    for (path, status) in [
        (format!("/v1/audit/proof/inclusion?seq=2&size={size}"), 500),
        (format!("/v1/audit/proof/inclusion?seq=5&size={size}"), 500),
        ("/v1/audit/proof/inclusion?seq=3".to_owned(), 500),
        (format!("/v1/audit/proof/consistency?from=2&to={size}"), 500),
        // Proofs that use none of the changed nodes are served.
        (format!("/v1/audit/proof/consistency?from=1&to={size}"), 200),
        (
            format!("/v1/audit/proof/inclusion?seq={}&size={size}", size - 1),
            200,
        ),
        (format!("/v1/audit/proof/inclusion?seq={}", size - 1), 200),
        (format!("/v1/audit/proof/consistency?from=8&to={size}"), 200),
        ("/v1/audit/proof/consistency?from=8".to_owned(), 400),
    ] {
        let r = get(&instance, &daemon, &auditor, &path);
        assert_eq!(r.status, status, "{path}: {r:?}");
        if status != 200 {
            assert_eq!(r.json()["status"], status, "{path}: {r:?}");
        }
    }
    let logs = daemon.logs.lock().unwrap().join("\n");
    assert!(
        logs.contains("does not match its recorded leaf hash")
            && logs.contains("do not lead to the stored root"),
        "the refusals are logged: {logs}"
    );
}

#[test]
fn kill_9_loses_no_answered_entry() {
    let instance = Instance::new();
    instance.init();
    let admin = Arc::new(admin(&instance));
    let instance = Arc::new(instance);
    let mut daemon = instance.serve();
    let answered = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ca = s(&instance.ca()).to_owned();
    let url = daemon.api_url("/v1/whoami");
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (answered, stop, admin, ca, url) = (
            answered.clone(),
            stop.clone(),
            admin.clone(),
            ca.clone(),
            url.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let out = Command::new("curl")
                    .args([
                        "-sS",
                        "--max-time",
                        "5",
                        "-D",
                        "-",
                        "-o",
                        "/dev/null",
                        "--cacert",
                        &ca,
                        "--cert",
                        &admin.cert,
                        "--key",
                        &admin.key,
                        &url,
                    ])
                    .output()
                    .unwrap();
                let headers = String::from_utf8_lossy(&out.stdout).to_string();
                if let Some(line) = headers
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("audit-receipt:"))
                    && let Some((seq, hash)) =
                        line.split_once(':').unwrap().1.trim().split_once(':')
                {
                    answered
                        .lock()
                        .unwrap()
                        .push((seq.parse::<u64>().unwrap(), hash.to_owned()));
                }
            }
        }));
    }
    assert!(wait_until(Duration::from_secs(20), || answered
        .lock()
        .unwrap()
        .len()
        >= 40));
    daemon.child.kill().unwrap(); // SIGKILL
    daemon.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 40);

    // After a restart the log verifies and holds every answered entry.
    let daemon = instance.serve();
    let (ok, out) = audit_verify(&instance, None);
    assert!(ok, "{out}");
    for (seq, hash) in &answered {
        let row = instance
            .pg
            .psql(
                "signetd",
                &format!(
                    "SELECT encode(hash, 'hex') FROM audit_nodes WHERE level = 0 AND idx = {seq}"
                ),
            )
            .unwrap();
        assert_eq!(row.trim(), hash, "answered entry {seq} is not in the log");
    }
    drop(daemon);
}
