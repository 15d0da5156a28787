//! A PostgreSQL restart under a running daemon: `/readyz` turns unready, then ready again, and
//! requests work again — without restarting the daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{Instance, curl, curl_admin, wait_until};

#[test]
fn readiness_follows_the_database() {
    let instance = Instance::new();
    instance.init();
    let daemon = instance.serve();
    let ready = || curl(&[&daemon.public_url("/readyz")]);
    assert_eq!(ready().status, 200, "{:?}", ready());
    assert_eq!(
        curl_admin(&instance, &daemon.api_url("/v1/whoami")).status,
        200
    );

    instance.pg.stop().unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || ready().status == 503),
        "readyz stayed ready with the database down: {:?}",
        ready()
    );
    let down = ready();
    assert_eq!(down.json()["database"], "unavailable", "{down:?}");
    assert_eq!(down.json()["tokens"]["ca"], "ok");
    // Requests that need the database get a clear 503 problem, not a hang or a crash.
    let who = curl_admin(&instance, &daemon.api_url("/v1/whoami"));
    assert_eq!(who.status, 503, "{who:?}");
    assert_eq!(who.json()["status"], 503);

    instance.pg.start().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || ready().status == 200),
        "readyz did not recover: {:?}\n{}",
        ready(),
        daemon.logs()
    );
    let who = curl_admin(&instance, &daemon.api_url("/v1/whoami"));
    assert_eq!(who.status, 200, "{who:?}");
    assert_eq!(who.json()["account"], "admin");
}

/// Invariant 2 across processes rests on leases: a daemon that cannot renew its key leases
/// (here: the database is down for longer than the lease) stops lending the keys before the
/// leases may expire and drops them, since another daemon could lease them then; once the
/// database is back, it leases keys again and signs.
#[test]
fn keys_whose_lease_cannot_be_renewed_are_dropped_before_it_expires() {
    use support::sign::{account, configure_signing, generate, sign_file, write};
    let instance = Instance::new();
    configure_signing(&instance, "lease_ttl_secs = 3\nidle_release_secs = 600");
    instance.init();
    generate(&instance, "r", "ec-p256", 2);
    let signer = account(&instance, "signer", "signer:r");
    let daemon = instance.serve();
    let data = write(instance.dir.path(), "data", b"lease");
    assert_eq!(
        sign_file(&instance, &daemon, &signer, "ring=r", &data).status,
        200
    );
    let events = |event: &str| -> u64 {
        let metrics = curl(&[&daemon.metrics_url("/metrics")]).body;
        let line = format!("signetd_signing_lease_events_total{{event=\"{event}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let taken = events("taken");
    assert!(taken >= 1, "no lease was taken");
    assert_eq!(events("expired"), 0);

    instance.pg.stop().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || events("expired") >= taken),
        "leases that could not be renewed were kept: {}",
        daemon.logs()
    );
    instance.pg.start().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || {
            sign_file(&instance, &daemon, &signer, "ring=r", &data).status == 200
        }),
        "no signing after the database came back: {}",
        daemon.logs()
    );
    assert!(events("taken") > taken, "no key was leased again");
}

/// What the outage load saw: status and content type of every request, and the curl failures
/// (a transfer without an HTTP answer: connection reset, empty reply, timeout).
#[derive(Debug, Default)]
struct Outcomes {
    ok: usize,
    unavailable: usize,
    other: Vec<String>,
    unanswered: Vec<String>,
    /// 503s whose content type is not problem+json.
    not_problem: Vec<String>,
    /// When the first 200 after the restart arrived, per thread.
    ok_after_restart: usize,
}

/// Issue 13: a database outage of 5 s under a signing load. Every request gets an HTTP answer
/// — 200, or 503 problem+json while the database is away — none a connection reset or an
/// empty reply; signing works again once the database is back, without a daemon restart.
/// Load: several client loops, each one curl process after another, every process sending a
/// batch of requests over one connection (HTTP/1.1 keep-alive or HTTP/2 streams).
#[test]
fn a_database_outage_under_load_answers_every_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    use std::time::Instant;
    use support::s;
    use support::sign::{account, configure_signing, generate, tls_args, write};

    let instance = Instance::new();
    configure_signing(&instance, "lease_ttl_secs = 3\nidle_release_secs = 600");
    instance.init();
    generate(&instance, "r", "ec-p256", 4);
    let signer = account(&instance, "signer", "signer:r");
    let daemon = instance.serve();
    let data = write(instance.dir.path(), "data", b"outage");
    let url = daemon.api_url("/v1/sign?ring=r");

    // 0: before the outage, 1: database down, 2: database back.
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let threads = env("OUTAGE_THREADS", 4);
    let parallel = env("OUTAGE_PARALLEL", 4);
    let per_process = env("OUTAGE_PER_PROCESS", 20);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mut args = tls_args(&instance, &signer);
            args.extend([
                "-sS".into(),
                "--max-time".into(),
                "30".into(),
                if t % 2 == 0 { "--http1.1" } else { "--http2" }.into(),
                "-Z".into(),
                "--parallel-max".into(),
                parallel.to_string(),
                "-H".into(),
                "content-type: application/octet-stream".into(),
                "--data-binary".into(),
                format!("@{}", s(&data)),
                "-w".into(),
                "\nCODE:%{http_code} %{content_type} %{exitcode} %{errormsg}\n".into(),
            ]);
            for _ in 0..per_process {
                args.push(url.clone());
            }
            let (phase, stop) = (phase.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut out = Outcomes::default();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let during = phase.load(Ordering::SeqCst);
                    let run = std::process::Command::new("curl")
                        .args(&args)
                        .output()
                        .unwrap();
                    let text = String::from_utf8_lossy(&run.stdout);
                    let stderr = String::from_utf8_lossy(&run.stderr);
                    let mut seen = 0;
                    for line in text.lines().filter_map(|l| l.strip_prefix("CODE:")) {
                        seen += 1;
                        let mut f = line.splitn(3, ' ');
                        let code = f.next().unwrap_or("");
                        let ctype = f.next().unwrap_or("");
                        let rest = f.next().unwrap_or("");
                        match code {
                            "200" => {
                                out.ok += 1;
                                if during == 2 {
                                    out.ok_after_restart += 1;
                                }
                            }
                            "503" => {
                                out.unavailable += 1;
                                if !ctype.starts_with("application/problem+json") {
                                    out.not_problem.push(line.to_owned());
                                }
                            }
                            "000" => out.unanswered.push(format!("phase {during}: {rest}")),
                            _ => out.other.push(format!("phase {during}: {line}")),
                        }
                    }
                    if seen != per_process {
                        out.unanswered.push(format!(
                            "phase {during}: curl reported {seen} of {per_process} transfers \
                             (exit {:?}): {stderr}",
                            run.status.code()
                        ));
                    }
                }
                out
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(2));
    instance.pg.stop().unwrap();
    phase.store(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(5));
    instance.pg.start().unwrap();
    phase.store(2, Ordering::SeqCst);
    // Signing must come back: wait for the first 200s, then load a little longer.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let mut all = Outcomes::default();
    for h in handles {
        let o = h.join().unwrap();
        all.ok += o.ok;
        all.unavailable += o.unavailable;
        all.ok_after_restart += o.ok_after_restart;
        all.other.extend(o.other);
        all.unanswered.extend(o.unanswered);
        all.not_problem.extend(o.not_problem);
    }
    let counts = format!(
        "200: {}, 503: {}, other: {}, no answer: {}, 200 after the restart: {}",
        all.ok,
        all.unavailable,
        all.other.len(),
        all.unanswered.len(),
        all.ok_after_restart
    );
    eprintln!("outage load: {counts}");
    if let Ok(path) = std::env::var("OUTAGE_LOG_FILE") {
        std::fs::write(path, daemon.logs()).unwrap();
    }
    let logs = || {
        let logs = daemon.logs();
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| !l.contains("\"served\""))
            .collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    assert!(
        all.unanswered.is_empty(),
        "requests without an HTTP answer ({counts}): {:#?}\n{}",
        &all.unanswered[..all.unanswered.len().min(20)],
        logs()
    );
    assert!(
        all.other.is_empty(),
        "answers other than 200 and 503 ({counts}): {:#?}\n{}",
        &all.other[..all.other.len().min(20)],
        logs()
    );
    assert!(
        all.not_problem.is_empty(),
        "503s that are not problem+json ({counts}): {:?}",
        &all.not_problem[..all.not_problem.len().min(20)]
    );
    assert!(all.unavailable > 0, "the outage was not seen ({counts})");
    assert!(
        all.ok_after_restart > 0,
        "no signing after the database came back ({counts}):\n{}",
        logs()
    );
}
