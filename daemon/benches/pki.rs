//! Certificate authority benchmark (not a timed test): certificates issued per second (CSR →
//! certificate: parse and check the CSR, sign in the token, verify the signature, store it
//! with its audit entry, fsync on) and OCSP responses per second (with a nonce, so signed
//! every time; and without, so answered from the cache after the first), each printed as a
//! ratio to the crypto floor of the CA key (one key, so one session: its C_Sign and the
//! verification before release, `signetd hsm-bench`'s F) and to its raw token ceiling, both
//! measured before and after in the same run, next to the audit append rate (the commit every
//! issuance waits for). Runs the daemon's own service
//! functions against a real PostgreSQL cluster and SoftHSM2 tokens made for the run; CSRs and
//! OCSP requests are made by OpenSSL.
//!
//!     cargo bench -p signetd --bench pki -- [--seconds 5] [--concurrency 1,16]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use signetd::audit::Actor;
use signetd::config::{self, Config};
use signetd::hsm::KeyAlgorithm;
use signetd::pki::service::{CsrRequest, OcspOutcome, ProfileName};

struct Args {
    seconds: f64,
    concurrency: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 5.0,
        concurrency: vec![1, 16],
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--seconds" => a.seconds = value.parse().expect("--seconds N"),
            "--concurrency" => {
                a.concurrency = value
                    .split(',')
                    .map(|w| w.parse().expect("--concurrency 1,16"))
                    .collect()
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the benchmark needs `openssl` (Debian package `openssl`)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `op` from `tasks` concurrent tasks for `seconds`; returns operations per second.
async fn rate<F, Fut>(tasks: usize, seconds: f64, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (op, done) = (op.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            let mut i = t as u64;
            while Instant::now() < deadline {
                op(i).await;
                done.fetch_add(1, Ordering::Relaxed);
                i += tasks as u64;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args = args();
    let dir = tempfile::Builder::new()
        .prefix("signetd-bench-pki-")
        .tempdir()
        .unwrap();
    let softhsm = signet_softhsm::SoftHsm::create(&dir.path().join("softhsm")).unwrap();
    for token in ["bench-ca", "bench-audit"] {
        softhsm
            .init_token(token, "bench-so-pin", "bench-pin")
            .unwrap();
    }
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
    config.state_dir = dir.path().join("state");
    config.public_url = Some("http://ca.bench.invalid".into());
    for (name, label) in [("ca", "bench-ca"), ("audit", "bench-audit")] {
        config.hsm.tokens.insert(
            name.into(),
            config::Token {
                label: label.into(),
                pin_file: Some(dir.path().join("pin")),
                ..config::Token::default()
            },
        );
    }
    config.audit.checkpoint_every = 10_000;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let metrics = signetd::app::new_metrics().unwrap();
        let hsm = signetd::app::open_hsm(&config, &metrics).unwrap();
        let store = signetd::store::Store::connect(&config.database).unwrap();
        let state = config.state_dir.clone();
        signetd::pki::init(&config, &hsm, &store, &metrics, &state)
            .await
            .unwrap();

        // The limits of every CA signature, before and after: raw C_Sign on the CA's token
        // (ec-p256) and the crypto floor of one session (the CA key is one key: one session).
        let limits = |hsm: &signetd::hsm::Hsm| {
            signetd::hsm::bench::run(
                hsm,
                "ca",
                &[KeyAlgorithm::EcP256],
                &[1],
                Duration::from_secs_f64(args.seconds.min(3.0)),
                false,
            )
            .unwrap()
            .remove(0)
        };
        let before = limits(&hsm);
        let bench_hsm = hsm.clone();

        let (app, _tls) = signetd::app::App::start(config, hsm, store, metrics)
            .await
            .unwrap();
        let actor = Actor {
            fingerprint: String::new(),
            account: "bench".into(),
        };
        let (account, _) = app
            .ca
            .create_account(&actor, "bench", &["signer:bench".to_owned()])
            .await
            .unwrap();

        // CSRs and OCSP requests made by OpenSSL.
        let work = dir.path();
        let mut csrs = Vec::new();
        for i in 0..8 {
            let (key, csr) = (format!("c{i}.key"), format!("c{i}.csr"));
            openssl(
                work,
                &["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-subj", &format!("/CN=bench{i}"), "-keyout", &key, "-out", &csr],
            );
            csrs.push(std::fs::read(work.join(&csr)).unwrap());
        }
        let csrs = Arc::new(csrs);

        // The floor under every audited operation: one audit append (group commit, fsync).
        // (operation, concurrency, per second, whether it signs in the token)
        let mut rows: Vec<(&str, usize, f64, bool)> = Vec::new();
        for &c in &args.concurrency {
            let (audit, actor) = (app.audit.clone(), actor.clone());
            let r = rate(c, args.seconds, move |i| {
                let (audit, actor) = (audit.clone(), actor.clone());
                async move {
                    let record = signetd::audit::Record {
                        actor,
                        action: "bench.append".into(),
                        subject: format!("item:{i}"),
                        params_digest: signetd::audit::digest(&i.to_be_bytes()),
                        output_digest: None,
                        result: "ok".into(),
                    };
                    audit.append(record).await.unwrap();
                }
            })
            .await;
            rows.push(("audit append alone (the commit every issuance waits for)", c, r, false));
        }

        let mut issued_pem = None;
        for &c in &args.concurrency {
            let (ca, acct, actor, csrs) = (app.ca.clone(), account.clone(), actor.clone(), csrs.clone());
            let r = rate(c, args.seconds, move |i| {
                let (ca, acct, actor, csrs) = (ca.clone(), acct.clone(), actor.clone(), csrs.clone());
                async move {
                    let request = CsrRequest {
                        profile: ProfileName::MtlsClient,
                        csr: csrs[(i % csrs.len() as u64) as usize].clone(),
                        validity_days: None,
                        names: Vec::new(),
                    };
                    ca.issue_from_csr(&actor, &acct, request).await.unwrap();
                }
            })
            .await;
            rows.push(("certificate issued (CSR P-256 → mtls-client, audited)", c, r, true));
        }
        let certs = app.store.account_certificates("bench").await.unwrap();
        if let Some(c) = certs.first() {
            issued_pem = Some(der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &c.der).unwrap());
        }
        std::fs::write(work.join("leaf.pem"), issued_pem.unwrap()).unwrap();
        std::fs::write(work.join("ca.pem"), app.ca_pem.as_str()).unwrap();
        openssl(work, &["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-reqout", "nonce.der"]);
        openssl(
            work,
            &["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-no_nonce", "-reqout", "plain.der"],
        );
        let with_nonce = Arc::new(std::fs::read(work.join("nonce.der")).unwrap());
        let plain = Arc::new(std::fs::read(work.join("plain.der")).unwrap());

        let ocsp = [
            ("OCSP response, nonce (status query + signature every time)", with_nonce, true),
            ("OCSP response, no nonce (cached; one epoch query)", plain, false),
        ];
        for (name, request, signs) in ocsp {
            for &c in &args.concurrency {
                let (ca, req) = (app.ca.clone(), request.clone());
                let r = rate(c, args.seconds, move |_| {
                    let (ca, req) = (ca.clone(), req.clone());
                    async move {
                        let answer = ca.ocsp(&req).await;
                        assert!(matches!(answer.outcome, OcspOutcome::Successful { .. }));
                    }
                })
                .await;
                rows.push((name, c, r, signs));
            }
        }

        let after = limits(&bench_hsm);
        let floor = before.floor_per_second.max(after.floor_per_second);
        let ceiling = before.per_second.max(after.per_second);
        println!(
            "CA key (ec-p256, one key: one session), before / after: ceiling S {:.0} / {:.0} \
             C_Sign/s, verify V {:.0} / {:.0}/s on 1 thread, crypto floor F = 1/(1/S + 1/({}V)) \
             {:.0} / {:.0}/s",
            before.per_second,
            after.per_second,
            before.verify_per_second,
            after.verify_per_second,
            before.cores,
            before.floor_per_second,
            after.floor_per_second,
        );
        println!("{}s each; of F and of S: over the higher of before and after (signing operations only)\n", args.seconds);
        println!("| operation | concurrency | per second | of F | of S |");
        println!("|---|---:|---:|---:|---:|");
        for (name, c, r, signs) in rows {
            let (of_floor, of_ceiling) = if signs {
                (format!("{:.1}%", 100.0 * r / floor), format!("{:.1}%", 100.0 * r / ceiling))
            } else {
                ("-".to_owned(), "-".to_owned())
            };
            println!("| {name} | {c} | {r:.0} | {of_floor} | {of_ceiling} |");
        }
    });
    drop(pg);
}
