//! Batch job benchmark (not a timed test): wall time to sign N records with a ring of K keys at
//! several batch sizes, per algorithm, against a real daemon (release build), PostgreSQL with
//! fsync on and SoftHSM2 — printed as a ratio to the time of the crypto floor measured right
//! before and right after each run (`signetd hsm-bench`: F = 1/(1/S + 1/(N·V)), S the token's
//! C_Sign/s on session keys, V one thread's verifications/s, N the cores: every record's
//! signature and its verification before release, as if the machine did nothing else), next
//! to the raw token ceiling S, with the 1-minute load average.
//!
//!     cargo bench -p signetd --bench jobs -- [--records 100000] [--keys 100] \
//!         [--batches 10,100,1000] [--algorithms ec-p256,rsa-2048] [--workers 4] [--size 256] \
//!         [--hsm-parallel N]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::Instance;
use support::jobs::{self, sql};

struct Args {
    records: u64,
    keys: usize,
    batches: Vec<usize>,
    algorithms: Vec<String>,
    workers: usize,
    size: usize,
    hsm_parallel: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        records: 100_000,
        keys: 100,
        batches: vec![10, 100, 1000],
        algorithms: vec!["ec-p256".into(), "rsa-2048".into()],
        workers: 4,
        size: 256,
        hsm_parallel: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        let list = |v: &str| v.split(',').map(str::to_owned).collect::<Vec<_>>();
        match argv[i].as_str() {
            "--records" => a.records = value.parse().expect("--records N"),
            "--keys" => a.keys = value.parse().expect("--keys N"),
            "--batches" => {
                a.batches = list(&value)
                    .iter()
                    .map(|b| b.parse().expect("--batches 10,100"))
                    .collect()
            }
            "--algorithms" => a.algorithms = list(&value),
            "--workers" => a.workers = value.parse().expect("--workers N"),
            "--size" => a.size = value.parse().expect("--size BYTES"),
            "--hsm-parallel" => a.hsm_parallel = Some(value.parse().expect("--hsm-parallel N")),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// One algorithm's limits from `signetd hsm-bench`: the ceiling S (`C_Sign`/s on session keys)
/// and the floor F, from the session count (1 to CPUs; more do not help) with the best floor.
struct Limits {
    ceiling: f64,
    floor: f64,
    sessions: usize,
}

fn limits(instance: &Instance, algorithm: &str) -> Limits {
    let sessions = std::thread::available_parallelism().map_or(2, |n| n.get());
    let list = (1..=sessions)
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let args = [
        "hsm-bench",
        "--algorithms",
        algorithm,
        "--sessions",
        &list,
        "--seconds",
        "2",
        "--json",
    ];
    let out = jobs::signetd(instance, &args, Duration::from_secs(600));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let best = results
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["algorithm"] == algorithm)
        .max_by(|a, b| {
            a["floor_per_second"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["floor_per_second"].as_f64().unwrap())
        })
        .unwrap();
    Limits {
        ceiling: best["per_second"].as_f64().unwrap(),
        floor: best["floor_per_second"].as_f64().unwrap(),
        sessions: best["sessions"].as_u64().unwrap() as usize,
    }
}

fn main() {
    let a = args();
    let instance = Instance::new();
    // Production-like durability: every audit commit (and so every batch) is fsynced.
    sql(&instance, "ALTER SYSTEM SET fsync = on");
    sql(&instance, "SELECT pg_reload_conf()");
    jobs::configure(&instance, a.workers, 30);
    // The tests checkpoint the audit log every 20 entries; production defaults here.
    let config = std::fs::read_to_string(&instance.config_path).unwrap();
    let config = config
        .replace("checkpoint_every = 20", "checkpoint_every = 1000")
        .replace(
            "checkpoint_interval_secs = 1",
            "checkpoint_interval_secs = 10",
        );
    std::fs::write(&instance.config_path, config).unwrap();
    if let Some(n) = a.hsm_parallel {
        let config = std::fs::read_to_string(&instance.config_path).unwrap();
        let config = config.replacen("[hsm]\n", &format!("[hsm]\nmax_parallel = {n}\n"), 1);
        std::fs::write(&instance.config_path, config).unwrap();
    }
    instance.init();
    for alg in &a.algorithms {
        jobs::generate_ring(&instance, &format!("bench-{alg}"), alg, a.keys);
    }
    let daemon = instance.serve();
    eprintln!("daemon pid {}", daemon.child.id());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n{} records of {} bytes, {} keys per ring, {} workers, hsm.max_parallel {}, {cpus} CPUs, fsync on\n",
        a.records,
        a.size,
        a.keys,
        a.workers,
        a.hsm_parallel.map_or_else(
            || "default (4 per CPU, at least 8)".to_owned(),
            |n| n.to_string()
        ),
    );
    println!(
        "| algorithm | batch size | wall time | records/s | floor before / after | floor time | of floor time | ceiling before / after (sessions) | of ceiling time | load |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for alg in &a.algorithms {
        for batch in &a.batches {
            jobs::seed(&instance, a.records, a.size);
            sql(&instance, "VACUUM ANALYZE records");
            // The limits right before and right after each run, so that both see the same
            // machine (a shared machine's load changes from minute to minute); the ratios are
            // taken to the higher of the two.
            let before = limits(&instance, alg);
            let load = std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
                .unwrap_or_default();
            let id = jobs::start_job(&instance, &format!("bench-{alg}"), *batch);
            // Polled seldom: each `psql` costs CPU the job would otherwise have, and the wall
            // time comes from the database, not from this loop.
            let deadline = std::time::Instant::now() + Duration::from_secs(3600);
            let state = loop {
                let state = jobs::job_state(&instance, &id);
                if state != "running" || std::time::Instant::now() > deadline {
                    break state;
                }
                std::thread::sleep(Duration::from_secs(1));
            };
            assert_eq!(state, "done");
            let wall: f64 = sql(
                &instance,
                &format!(
                    "SELECT extract(epoch FROM finished_at - created_at) FROM jobs WHERE id = '{id}'"
                ),
            )
            .parse()
            .unwrap();
            let after = limits(&instance, alg);
            let floor = before.floor.max(after.floor);
            let ceiling = before.ceiling.max(after.ceiling);
            let floor_time = a.records as f64 / floor;
            println!(
                "| {alg} | {batch} | {wall:.2} s | {:.0} | {:.0} / {:.0}/s | {floor_time:.2} s | {:.2}× | {:.0} / {:.0}/s ({}/{}) | {:.2}× | {load} |",
                a.records as f64 / wall,
                before.floor,
                after.floor,
                wall / floor_time,
                before.ceiling,
                after.ceiling,
                before.sessions,
                after.sessions,
                wall / (a.records as f64 / ceiling),
            );
        }
    }
    let metrics = support::curl(&[&daemon.metrics_url("/metrics")]).body;
    println!("\ndaemon metrics:");
    for line in metrics.lines().filter(|l| {
        l.starts_with("signetd_jobs_")
            || l.starts_with("signetd_hsm_operation_duration_seconds_sum")
            || l.starts_with("signetd_hsm_operation_duration_seconds_count")
            || l.starts_with("signetd_audit_commit_duration_seconds_sum")
            || l.starts_with("signetd_audit_commit_duration_seconds_count")
    }) {
        if !line.contains("_bucket") {
            println!("    {line}");
        }
    }
    drop(daemon);
}
