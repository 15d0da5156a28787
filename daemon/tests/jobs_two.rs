//! Two daemon processes sharing one PostgreSQL and one token directory work one job together,
//! with the guarantees of one: every record signed exactly once (invariant 6), no two leases of
//! one key overlapping in time across the processes (invariant 2), least recently used keys
//! first (invariant 3), and both processes doing part of the work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::jobs::{self, Expect, sql_i64};
use support::{Instance, curl};

const RECORDS: u64 = 30_000;
const KEYS: usize = 100;

fn records_signed(daemon: &support::Daemon) -> u64 {
    let metrics = curl(&[&daemon.metrics_url("/metrics")]).body;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("signetd_jobs_records_signed_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn two_daemons_work_one_job() {
    let instance = Instance::new();
    jobs::configure(&instance, 3, 10);
    instance.init();
    jobs::generate_ring(&instance, "shared", "ec-p256", KEYS);
    jobs::seed(&instance, RECORDS, 128);
    let a = instance.serve();
    let b = instance.serve();
    let id = jobs::start_job(&instance, "shared", 100);
    assert_eq!(
        jobs::wait_over(&instance, &id, Duration::from_secs(300)),
        "done"
    );
    jobs::check_job(
        &instance,
        &id,
        &Expect {
            records: RECORDS as i64,
            keys: KEYS as i64,
            balanced: true,
        },
    );
    // Both processes worked: their holders (jobs:<process>:<worker>) both hold leases in the
    // history, and their counters add up to the job.
    let processes = sql_i64(
        &instance,
        "SELECT count(DISTINCT split_part(holder, ':', 2)) FROM batch_leases",
    );
    assert_eq!(processes, 2, "only one daemon worked");
    let (na, nb) = (records_signed(&a), records_signed(&b));
    eprintln!("daemon a signed {na}, daemon b signed {nb}");
    assert!(na > 0 && nb > 0);
    assert_eq!(na + nb, RECORDS);
    // Interleaved, not one after the other: each key was used by both processes' workers.
    let shared_keys = sql_i64(
        &instance,
        "SELECT count(*) FROM (SELECT key_id FROM batch_leases GROUP BY key_id \
         HAVING count(DISTINCT split_part(holder, ':', 2)) = 2) t",
    );
    eprintln!("{shared_keys} keys were leased by both daemons");
    jobs::openssl_sample(&instance, &id, 20, "-sha256");
    drop((a, b));
}
