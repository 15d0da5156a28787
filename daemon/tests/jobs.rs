//! The batch job of the issue, whole: 100,000 seeded records, a ring of 100 P-256 keys, batch
//! size 100, run with `signetd jobs run --wait` against a real daemon. Every record ends with
//! exactly one signature (invariant 6), the daemon's verification accepts all of them and
//! OpenSSL a random sample, no two leases of one key overlap in time (invariant 2), and the
//! least recently used key goes first, so each key signs 10 batches (invariant 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::jobs::{self, Expect, sql_i64};
use support::{Instance, curl};

const RECORDS: u64 = 100_000;
const KEYS: usize = 100;
const BATCH: usize = 100;

#[test]
fn hundred_thousand_records_hundred_keys_exactly_once() {
    let instance = Instance::new();
    jobs::configure(&instance, 4, 10);
    instance.init();
    jobs::generate_ring(&instance, "records", "ec-p256", KEYS);
    let seeded = Instant::now();
    jobs::seed(&instance, RECORDS, 256);
    eprintln!(
        "seeded {RECORDS} records in {:.1}s",
        seeded.elapsed().as_secs_f64()
    );
    let daemon = instance.serve();
    // Every key's slot is made ready after start (session, login, the key found), so that no
    // first batch of a key pays for it: the 100 ring keys and the daemon's own.
    assert!(
        support::wait_until(Duration::from_secs(60), || prepared(&daemon.logs())
            .is_some()),
        "no `key slots prepared` line: {}",
        daemon.logs()
    );
    let (ready, keys) = prepared(&daemon.logs()).unwrap();
    assert!(
        ready == keys && keys > KEYS as u64,
        "{ready} of {keys} key slots prepared"
    );

    let started = Instant::now();
    let out = jobs::signetd(
        &instance,
        &[
            "jobs",
            "run",
            "--ring",
            "records",
            "--batch-size",
            &BATCH.to_string(),
            "--wait",
            "--json",
        ],
        Duration::from_secs(600),
    );
    let wall = started.elapsed();
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("100.0%"), "no progress shown: {progress}");
    eprintln!(
        "signed {RECORDS} records in {:.1}s ({:.0}/s)",
        wall.as_secs_f64(),
        RECORDS as f64 / wall.as_secs_f64()
    );
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["state"], "done");
    assert_eq!(job["total"], RECORDS);
    assert_eq!(job["signed"], RECORDS);
    assert_eq!(job["batches"], RECORDS / BATCH as u64);
    let per_key = job["per_key"].as_array().unwrap();
    assert_eq!(per_key.len(), KEYS);

    let counts = jobs::check_job(
        &instance,
        id,
        &Expect {
            records: RECORDS as i64,
            keys: KEYS as i64,
            balanced: true,
        },
    );
    // 1,000 batches over 100 keys, least recently used first: ten each.
    assert!(counts.values().all(|n| *n == 10), "{counts:?}");
    // Each batch is exactly `BATCH` records, one audit entry each.
    assert_eq!(
        sql_i64(
            &instance,
            &format!("SELECT count(*) FROM batches WHERE job_id = '{id}' AND signed <> {BATCH}")
        ),
        0
    );
    assert_eq!(
        sql_i64(
            &instance,
            "SELECT count(*) FROM audit_entries WHERE action = 'jobs.batch' AND result = 'ok'"
        ),
        (RECORDS / BATCH as u64) as i64
    );
    // The independent verifier on a random sample.
    jobs::openssl_sample(&instance, id, 50, "-sha256");

    // Metrics: batches, records, lease waits, progress.
    let metrics = curl(&[&daemon.metrics_url("/metrics")]).body;
    for needle in [
        "signetd_jobs_batches_total{result=\"ok\"} 1000",
        &format!("signetd_jobs_records_signed_total {RECORDS}"),
        "signetd_jobs_key_lease_waits_total",
        "signetd_jobs_batch_duration_seconds_count 1000",
        "signetd_jobs_running_records",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}");
    }
    drop(daemon);
}

/// The `ready` and `keys` of the daemon's `key slots prepared` log line.
fn prepared(logs: &str) -> Option<(u64, u64)> {
    logs.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let f = &v["fields"];
        if f["message"] != "key slots prepared" {
            return None;
        }
        Some((f["ready"].as_u64()?, f["keys"].as_u64()?))
    })
}

/// More workers than keys: most claims find every key leased, so the worker holds its batch
/// and waits for a key (`key_lease_waits`), and the guarantees still hold — one signature per
/// record, no overlapping leases, each batch's lease in its history. (Not per-key balance: with
/// every key busy, the one released first is the only idle one and goes next.)
#[test]
fn more_workers_than_keys_wait_for_a_key() {
    const RECORDS: u64 = 3_000;
    let instance = Instance::new();
    jobs::configure(&instance, 8, 10);
    instance.init();
    jobs::generate_ring(&instance, "few", "ec-p256", 2);
    jobs::seed(&instance, RECORDS, 64);
    let daemon = instance.serve();
    let id = jobs::start_job(&instance, "few", 10);
    assert_eq!(
        jobs::wait_over(&instance, &id, Duration::from_secs(300)),
        "done"
    );
    let counts = jobs::check_job(
        &instance,
        &id,
        &Expect {
            records: RECORDS as i64,
            keys: 2,
            balanced: false,
        },
    );
    assert_eq!(counts.values().sum::<i64>(), (RECORDS / 10) as i64);
    // Every done batch has exactly one lease in its history, taken by the batch's key.
    assert_eq!(
        sql_i64(
            &instance,
            &format!(
                "SELECT count(*) FROM batches b WHERE b.job_id = '{id}' AND NOT EXISTS \
                 (SELECT 1 FROM batch_leases l WHERE l.batch_id = b.id AND l.attempt = b.attempts \
                  AND l.key_id = b.key_id AND l.outcome = 'done')"
            )
        ),
        0
    );
    let metrics = curl(&[&daemon.metrics_url("/metrics")]).body;
    let waits: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("signetd_jobs_key_lease_waits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lease wait metric in {metrics}"));
    assert!(waits > 0.0, "8 workers and 2 keys never waited for a key");
    drop(daemon);
}

/// A key retired while a job runs finishes no batch after its retirement: the batch it had
/// out is refused (SJ005) or stopped at the next lease renewal, given up and signed again with
/// another key; the job still ends with every record signed once, and the retired key's lease
/// is given back.
#[test]
fn a_key_retired_during_a_job_finishes_no_batch_after_it() {
    const RECORDS: u64 = 6_000;
    let instance = Instance::new();
    jobs::configure(&instance, 4, 6);
    instance.init();
    jobs::generate_ring(&instance, "rotating", "rsa-2048", 4);
    jobs::seed(&instance, RECORDS, 64);
    let daemon = instance.serve();
    let admin = jobs::admin(&instance);
    let id = jobs::start_job(&instance, "rotating", 100);
    // A key a worker holds right now.
    let started = Instant::now();
    let key = loop {
        let leased = jobs::sql(&instance, "SELECT key_id FROM key_leases LIMIT 1");
        if !leased.is_empty() {
            break leased;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no key was ever leased"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = jobs::api(
        &instance,
        &daemon,
        &admin,
        &format!("/v1/keys/{key}/retire"),
        &["-X", "POST"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        jobs::wait_over(&instance, &id, Duration::from_secs(300)),
        "done"
    );
    jobs::check_job(
        &instance,
        &id,
        &Expect {
            records: RECORDS as i64,
            keys: 4,
            balanced: false,
        },
    );
    let after = format!(
        "SELECT count(*) FROM batches b JOIN keys k ON k.id = b.key_id \
         WHERE k.id = '{key}' AND b.finished_at > k.retired_at"
    );
    assert_eq!(
        sql_i64(&instance, &after),
        0,
        "a retired key finished a batch"
    );
    assert_eq!(
        sql_i64(
            &instance,
            &format!("SELECT count(*) FROM key_leases WHERE key_id = '{key}'")
        ),
        0,
        "the retired key is still leased"
    );
    let given_up = sql_i64(
        &instance,
        &format!("SELECT count(*) FROM batch_leases WHERE key_id = '{key}' AND outcome <> 'done'"),
    );
    eprintln!("batches given up with the retired key: {given_up}");
    drop(daemon);
}
