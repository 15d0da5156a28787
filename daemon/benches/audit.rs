//! Audit log benchmark (not a timed test): appends per second with fsync on, at 1 and 64
//! concurrent writers, and inclusion/consistency proof latency at 1,000,000 entries, against a
//! real PostgreSQL cluster and a SoftHSM2 checkpoint key made for the run.
//!
//!     cargo bench -p signetd --bench audit -- [--seconds 5] [--writers 1,64] [--proof-size 1000000]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use signetd::audit::{Actor, Audit, Record};
use signetd::config::{self, Config};
use signetd::hsm::KeyAlgorithm;
use signetd::store::{KeyPurpose, KeyRecord, Store};

struct Args {
    seconds: f64,
    writers: Vec<usize>,
    proof_size: u64,
    samples: usize,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 5.0,
        writers: vec![1, 64],
        proof_size: 1_000_000,
        samples: 2000,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--seconds" => a.seconds = value.parse().expect("--seconds N"),
            "--writers" => {
                a.writers = value
                    .split(',')
                    .map(|w| w.parse().expect("--writers 1,64"))
                    .collect()
            }
            "--proof-size" => a.proof_size = value.parse().expect("--proof-size N"),
            "--samples" => a.samples = value.parse().expect("--samples N"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn record(i: u64) -> Record {
    Record {
        actor: Actor {
            fingerprint: String::new(),
            account: "bench".into(),
        },
        action: "bench.append".into(),
        subject: format!("item:{i}"),
        params_digest: signetd::audit::digest(&i.to_be_bytes()),
        output_digest: None,
        result: "ok".into(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn appends(audit: &Audit, writers: usize, seconds: f64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (audit, done) = (audit.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w as u64 * 1_000_000_000;
            while Instant::now() < deadline {
                audit.append(record(i)).await.expect("append");
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args = args();
    let dir = tempfile::Builder::new()
        .prefix("signetd-bench-")
        .tempdir()
        .unwrap();
    let softhsm = signet_softhsm::SoftHsm::create(&dir.path().join("softhsm")).unwrap();
    softhsm
        .init_token("bench-audit", "bench-so-pin", "bench-pin")
        .unwrap();
    std::fs::write(dir.path().join("pin"), "bench-pin").unwrap();
    // SAFETY: no other thread exists yet; SoftHSM2 reads this when the module initialises.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", softhsm.conf_path());
    }
    let pg = signet_pgcluster::TempCluster::with_options(signet_pgcluster::Options { fsync: true })
        .unwrap();
    pg.start().unwrap();
    pg.create_database("signetd").unwrap();
    pg.create_role("signetd").unwrap();

    let mut config = Config::default();
    config.database.url = pg.url_as("signetd", "signetd");
    config.database.admin_url = Some(pg.url("signetd"));
    config.database.pool_size = 32;
    config.hsm.module = softhsm.module_path().to_owned();
    config.hsm.tokens.insert(
        "audit".into(),
        config::Token {
            label: "bench-audit".into(),
            pin_file: Some(dir.path().join("pin")),
            ..config::Token::default()
        },
    );
    config.audit.checkpoint_every = 10_000;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let metrics = signetd::metrics::Metrics::new().unwrap();
        let hsm = signetd::app::open_hsm(&config, &metrics).unwrap();
        let store = Store::connect(&config.database).unwrap();
        store.migrate().await.unwrap();
        let label = "bench-audit-key".to_owned();
        let public_key = hsm
            .generate_key("audit", &label, KeyAlgorithm::Ed25519)
            .unwrap();
        let key = KeyRecord {
            id: uuid::Uuid::new_v4(),
            token: "audit".into(),
            label,
            algorithm: KeyAlgorithm::Ed25519,
            fingerprint: signetd::crypto::sha256_hex(&public_key),
            public_key,
            state: "active".into(),
        };
        store.create_key(&key, KeyPurpose::Audit).await.unwrap();
        let audit = Audit::start(store.clone(), hsm, &key, config.audit.clone(), metrics)
            .await
            .unwrap();

        println!("audit appends, fsync on, {}s each:", args.seconds);
        println!("{:>8} {:>14}", "writers", "appends/s");
        for &w in &args.writers {
            let rate = appends(&audit, w, args.seconds).await;
            println!("{w:>8} {rate:>14.0}");
        }

        // Fill to the proof size with many writers, then measure proofs.
        let fill_start = Instant::now();
        let mut tasks = Vec::new();
        let next = Arc::new(AtomicU64::new(audit.size()));
        for _ in 0..256 {
            let (audit, next, target) = (audit.clone(), next.clone(), args.proof_size);
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= target {
                        break;
                    }
                    audit.append(record(i)).await.expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let size = store.audit_size().await.unwrap();
        println!(
            "\nfilled to {size} entries in {:.1}s ({:.0} appends/s with 256 writers)",
            fill_start.elapsed().as_secs_f64(),
            (size as f64) / fill_start.elapsed().as_secs_f64()
        );

        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next_rand = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut inclusion = Vec::with_capacity(args.samples);
        for _ in 0..args.samples {
            let seq = next_rand(size);
            let t = Instant::now();
            let proof = audit.inclusion_proof(seq, Some(size)).await.unwrap();
            inclusion.push(t.elapsed());
            assert!(!proof.proof.is_empty());
        }
        let mut consistency = Vec::with_capacity(args.samples);
        for _ in 0..args.samples {
            let from = 1 + next_rand(size - 1);
            let t = Instant::now();
            audit.consistency_proof(from, size).await.unwrap();
            consistency.push(t.elapsed());
        }
        inclusion.sort();
        consistency.sort();
        println!(
            "\nproof latency at {size} entries, {} samples each:",
            args.samples
        );
        println!("{:<12} {:>10} {:>10} {:>10}", "proof", "p50", "p99", "max");
        for (name, v) in [("inclusion", &inclusion), ("consistency", &consistency)] {
            println!(
                "{name:<12} {:>8.3}ms {:>8.3}ms {:>8.3}ms",
                percentile(v, 0.5).as_secs_f64() * 1e3,
                percentile(v, 0.99).as_secs_f64() * 1e3,
                v.last().unwrap().as_secs_f64() * 1e3
            );
        }
    });
    drop(pg);
}
