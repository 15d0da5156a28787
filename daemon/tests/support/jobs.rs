//! Test support for the jobs tests: rings, seeded records, jobs run through the real CLI, and the
//! checks of the guarantees every job must keep, read straight from PostgreSQL.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::{Instance, s};

/// Appends a `[jobs]` section to the instance's configuration.
pub fn configure(instance: &Instance, workers: usize, lease_ttl_secs: u64) {
    let mut config = std::fs::read_to_string(&instance.config_path).unwrap();
    config.push_str(&format!(
        "\n[jobs]\nworkers = {workers}\nlease_ttl_secs = {lease_ttl_secs}\npoll_secs = 1\n"
    ));
    std::fs::write(&instance.config_path, config).unwrap();
}

/// Sets `jobs.claim_batches`; call right after [`configure`] (it appends to its section).
pub fn claim_batches(instance: &Instance, count: usize) {
    let mut config = std::fs::read_to_string(&instance.config_path).unwrap();
    assert!(
        config.trim_end().ends_with("poll_secs = 1"),
        "claim_batches follows configure"
    );
    config.push_str(&format!("claim_batches = {count}\n"));
    std::fs::write(&instance.config_path, config).unwrap();
}

/// Runs a `signetd` subcommand to completion within `timeout`; panics (with its output) if it
/// fails or takes longer.
pub fn signetd(instance: &Instance, args: &[&str], timeout: Duration) -> Output {
    let out = run_with_timeout(instance.command().args(args), timeout);
    assert!(
        out.status.success(),
        "signetd {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command, killing it after `timeout` (then panicking).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).unwrap();
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).unwrap();
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {timeout:?}: {}",
                String::from_utf8_lossy(&err_reader.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Generates `count` keys of `algorithm` into `ring` with `signetd keys generate`.
pub fn generate_ring(instance: &Instance, ring: &str, algorithm: &str, count: usize) {
    let mut left = count;
    while left > 0 {
        let n = left.min(50);
        signetd(
            instance,
            &[
                "keys",
                "generate",
                "--ring",
                ring,
                "--algorithm",
                algorithm,
                "--count",
                &n.to_string(),
            ],
            Duration::from_secs(300),
        );
        left -= n;
    }
}

/// Seeds `count` random records of `size` bytes with `signetd records seed`.
pub fn seed(instance: &Instance, count: u64, size: usize) {
    signetd(
        instance,
        &[
            "records",
            "seed",
            "--count",
            &count.to_string(),
            "--size",
            &size.to_string(),
        ],
        Duration::from_secs(300),
    );
}

/// Creates a job with `signetd jobs run` (without waiting) and returns its id.
pub fn start_job(instance: &Instance, ring: &str, batch_size: usize) -> String {
    let out = signetd(
        instance,
        &[
            "jobs",
            "run",
            "--ring",
            ring,
            "--batch-size",
            &batch_size.to_string(),
        ],
        Duration::from_secs(120),
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One SQL query as the database owner; the rows, `|`-separated.
pub fn sql(instance: &Instance, query: &str) -> String {
    instance
        .pg
        .psql("signetd", query)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .trim()
        .to_owned()
}

pub fn sql_i64(instance: &Instance, query: &str) -> i64 {
    let v = sql(instance, query);
    v.parse()
        .unwrap_or_else(|_| panic!("{query}: not a number: {v:?}"))
}

/// The job's state.
pub fn job_state(instance: &Instance, job: &str) -> String {
    sql(
        instance,
        &format!("SELECT state FROM jobs WHERE id = '{job}'"),
    )
}

/// Waits (bounded) until the job is over; returns its final state.
pub fn wait_over(instance: &Instance, job: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let state = job_state(instance, job);
        if state != "running" {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} still running after {timeout:?}: {}",
            sql(
                instance,
                &format!(
                    "SELECT state, count(*) FROM batches WHERE job_id = '{job}' GROUP BY state"
                )
            )
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a finished job must show, whatever happened while it ran.
pub struct Expect {
    /// Records that exist (all must be signed exactly once).
    pub records: i64,
    /// Keys in the ring.
    pub keys: i64,
    /// Whether per-key batch counts must differ by at most one (least recently used first,
    /// with nothing crashing, and fewer batches in flight — workers × `jobs.claim_batches` —
    /// than keys, so that a claim always finds more than one idle key to choose from).
    pub balanced: bool,
}

/// Checks invariants 2, 3 and 6 on a finished job, from the database; runs the daemon's own
/// verification of every signature; returns the per-key batch counts.
pub fn check_job(instance: &Instance, job: &str, expect: &Expect) -> BTreeMap<String, i64> {
    assert_eq!(job_state(instance, job), "done");
    // Invariant 6: every record has exactly one signature.
    assert_eq!(
        sql_i64(instance, "SELECT count(*) FROM records"),
        expect.records
    );
    assert_eq!(
        sql_i64(instance, "SELECT count(*) FROM signatures"),
        expect.records
    );
    assert_eq!(
        sql_i64(
            instance,
            "SELECT count(*) FROM records r WHERE NOT EXISTS \
             (SELECT 1 FROM signatures s WHERE s.record_id = r.id)"
        ),
        0,
        "unsigned records remain"
    );
    assert_eq!(
        sql_i64(
            instance,
            "SELECT count(*) FROM (SELECT record_id FROM signatures GROUP BY record_id \
             HAVING count(*) > 1) t"
        ),
        0
    );
    // Every signature belongs to a done batch of this job, which has one committed audit entry.
    assert_eq!(
        sql_i64(
            instance,
            &format!(
                "SELECT count(*) FROM signatures s JOIN batches b ON b.id = s.batch_id \
                 WHERE b.job_id = '{job}' AND b.state = 'done'"
            )
        ),
        expect.records
    );
    assert_eq!(
        sql_i64(
            instance,
            &format!(
                "SELECT count(*) FROM batches b WHERE b.job_id = '{job}' AND NOT EXISTS \
                 (SELECT 1 FROM audit_entries a WHERE a.action = 'jobs.batch' AND a.result = 'ok' \
                  AND a.subject = 'job:' || b.job_id || '/batch:' || b.seq \
                  AND a.output_digest = b.root)"
            )
        ),
        0,
        "a batch without its audit entry"
    );
    // Invariant 2 across processes: no two leases of one key overlap in time. A lease ends when
    // it is released or, if its holder died, when it expires.
    let leases = sql_i64(
        instance,
        &format!(
            "SELECT count(*) FROM batch_leases l JOIN batches b ON b.id = l.batch_id \
             WHERE b.job_id = '{job}'"
        ),
    );
    assert!(
        leases
            >= sql_i64(
                instance,
                &format!("SELECT batch_count FROM jobs WHERE id = '{job}'")
            )
    );
    let overlaps = sql(
        instance,
        "SELECT key_id, holder, leased_at, prev_end FROM ( \
           SELECT key_id, holder, leased_at, lag(coalesce(released_at, expires_at)) \
             OVER (PARTITION BY key_id ORDER BY leased_at) AS prev_end FROM batch_leases) t \
         WHERE prev_end > leased_at",
    );
    assert!(overlaps.is_empty(), "overlapping key leases: {overlaps}");
    // Every done batch was signed under a lease that covers it.
    assert_eq!(
        sql_i64(
            instance,
            &format!(
                "SELECT count(*) FROM batches b WHERE b.job_id = '{job}' AND NOT EXISTS \
                 (SELECT 1 FROM batch_leases l WHERE l.batch_id = b.id AND l.outcome = 'done' \
                  AND l.key_id = b.key_id AND l.released_at = b.finished_at)"
            )
        ),
        0
    );
    // No lease is held any more (expired ones of dead holders may stay until taken over).
    assert_eq!(
        sql_i64(
            instance,
            "SELECT count(*) FROM key_leases WHERE holder LIKE 'jobs:%' AND expires_at > now()"
        ),
        0,
        "a job lease is still held after the job ended"
    );
    // Invariant 3: least recently used first, so the counts per key stay level.
    let rows = sql(
        instance,
        &format!(
            "SELECT k.label, count(b.id) FROM keys k LEFT JOIN batches b \
               ON b.key_id = k.id AND b.job_id = '{job}' AND b.state = 'done' \
             WHERE k.ring = (SELECT ring FROM jobs WHERE id = '{job}') GROUP BY k.label"
        ),
    );
    let counts: BTreeMap<String, i64> = rows
        .lines()
        .map(|l| {
            let (k, n) = l.split_once('|').unwrap();
            (k.to_owned(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(counts.len() as i64, expect.keys);
    let (min, max) = (
        *counts.values().min().unwrap(),
        *counts.values().max().unwrap(),
    );
    if expect.balanced && max - min > 1 {
        let history = |label: &str| {
            sql(
                instance,
                &format!(
                    "SELECT l.batch_id, l.attempt, l.holder, l.leased_at, l.released_at, l.outcome \
                     FROM batch_leases l JOIN keys k ON k.id = l.key_id \
                     WHERE k.label = '{label}' ORDER BY l.leased_at"
                ),
            )
        };
        let least = counts.iter().find(|(_, n)| **n == min).unwrap().0;
        let most = counts.iter().find(|(_, n)| **n == max).unwrap().0;
        panic!(
            "per-key batch counts differ by more than 1 ({min}..={max}).\n\
             least used {least}:\n{}\nmost used {most}:\n{}\noutcomes: {}",
            history(least),
            history(most),
            sql(
                instance,
                "SELECT outcome, count(*) FROM batch_leases GROUP BY outcome"
            )
        );
    }
    // The daemon's verification of every signature, batch root and audit entry.
    let out = signetd(instance, &["jobs", "verify", job], Duration::from_secs(600));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" OK: "), "{text}");
    counts
}

/// Checks `sample` signatures with OpenSSL (`openssl dgst -verify`), the independent verifier:
/// record data, signature and public key straight from the database.
pub fn openssl_sample(instance: &Instance, job: &str, sample: usize, algorithm_hash: &str) {
    super::require_tool("openssl", "openssl");
    let rows = sql(
        instance,
        &format!(
            "SELECT s.record_id, encode(r.data, 'hex'), encode(s.signature, 'hex'), \
                    encode(k.public_key, 'hex') \
             FROM signatures s JOIN records r ON r.id = s.record_id \
             JOIN batches b ON b.id = s.batch_id JOIN keys k ON k.id = b.key_id \
             WHERE b.job_id = '{job}' ORDER BY random() LIMIT {sample}"
        ),
    );
    let dir = instance.dir.path().join("openssl");
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    for row in rows.lines() {
        let cols: Vec<&str> = row.split('|').collect();
        let decode = |v: &str| hex::decode(v).unwrap();
        let id = cols[0];
        let data = dir.join(format!("{id}.bin"));
        let sig = dir.join(format!("{id}.sig"));
        let key = dir.join(format!("{id}.pem"));
        std::fs::write(&data, decode(cols[1])).unwrap();
        std::fs::write(&sig, decode(cols[2])).unwrap();
        let spki = decode(cols[3]);
        std::fs::write(&key, pem("PUBLIC KEY", &spki)).unwrap();
        let out = Command::new("openssl")
            .args([
                "dgst",
                algorithm_hash,
                "-verify",
                s(&key),
                "-signature",
                s(&sig),
                s(&data),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl rejects the signature of record {id}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A flipped byte must fail: OpenSSL really checks.
        let mut bad = decode(cols[1]);
        bad[0] ^= 1;
        std::fs::write(&data, bad).unwrap();
        let out = Command::new("openssl")
            .args([
                "dgst",
                algorithm_hash,
                "-verify",
                s(&key),
                "-signature",
                s(&sig),
                s(&data),
            ])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "openssl accepts a changed record {id}"
        );
        checked += 1;
    }
    assert_eq!(checked, sample);
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An account with a client certificate, made with `signetd account create`.
pub struct Client {
    pub cert: String,
    pub key: String,
}

pub fn create_account(instance: &Instance, name: &str, role: &str) -> Client {
    let dir = instance.dir.path().join("clients");
    signetd(
        instance,
        &[
            "account",
            "create",
            name,
            "--role",
            role,
            "--out-dir",
            s(&dir),
        ],
        Duration::from_secs(60),
    );
    Client {
        cert: s(&dir.join(format!("{name}.crt"))).to_owned(),
        key: s(&dir.join(format!("{name}.key"))).to_owned(),
    }
}

pub fn admin(instance: &Instance) -> Client {
    Client {
        cert: s(&instance.admin_cert()).to_owned(),
        key: s(&instance.admin_key()).to_owned(),
    }
}

/// curl against the API as `client`, with extra arguments (method, body, headers).
pub fn api(
    instance: &Instance,
    daemon: &super::Daemon,
    client: &Client,
    path: &str,
    extra: &[&str],
) -> super::CurlResult {
    let ca = instance.ca();
    let url = daemon.api_url(path);
    let mut args = vec![
        "--cacert",
        s(&ca),
        "--cert",
        &client.cert,
        "--key",
        &client.key,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    super::curl(&args)
}

/// A file in the instance directory.
pub fn write_file(instance: &Instance, name: &str, contents: &[u8]) -> String {
    let path = instance.dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    s(Path::new(&path)).to_owned()
}
