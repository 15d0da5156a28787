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
    let mut cmd = instance.command();
    cmd.args(["audit", "verify"]);
    if let Some(url) = db_url {
        cmd.env("SIGNETD_DATABASE__URL", url);
    }
    let out = cmd.output().unwrap();
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
