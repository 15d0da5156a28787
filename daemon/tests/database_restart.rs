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

/// What the outage load saw, per phase (0: before the outage, 1: database down, 2: database
/// back; the phase in which a curl process started).
#[derive(Debug, Default)]
struct Outcomes {
    /// 200s and 503s.
    ok: [usize; 3],
    unavailable: [usize; 3],
    /// Any other status.
    other: Vec<String>,
    /// Transfers without an HTTP answer: connection reset, empty reply, stream reset, timeout.
    unanswered: Vec<String>,
    /// 503s that are not problem+json.
    not_problem: Vec<String>,
}

impl Outcomes {
    fn add(&mut self, o: Outcomes) {
        for phase in 0..3 {
            self.ok[phase] += o.ok[phase];
            self.unavailable[phase] += o.unavailable[phase];
        }
        self.other.extend(o.other);
        self.unanswered.extend(o.unanswered);
        self.not_problem.extend(o.not_problem);
    }

    fn summary(&self) -> String {
        let ok: usize = self.ok.iter().sum();
        let unavailable: usize = self.unavailable.iter().sum();
        format!(
            "200: {ok} {:?}, 503: {unavailable} {:?}, other: {}, no answer: {} \
             (per phase: before, down, back)",
            self.ok,
            self.unavailable,
            self.other.len(),
            self.unanswered.len()
        )
    }
}

/// Issue 13: a database outage of 5 s under a signing load. Every request gets an HTTP answer
/// — 200, or a 503 problem while the database is away — none a connection reset, an empty
/// reply or a reset stream; signing works again once the database is back, without a daemon
/// restart. The load: client loops over HTTP/1.1 and HTTP/2, each running one curl process
/// after another, each process sending `PER_PROCESS` uploads over its connections
/// (`PARALLEL` at once). The uploads are 64 KiB, more than one read: a 503 given before the
/// body was read (the identity check needs the database, and runs before any handler) must
/// still arrive, which takes reading the rest after the answer (`api::body`); dropped
/// unread, it cost an HTTP/2 stream reset or, over HTTP/1.1, a connection closed on unread
/// data: before that fix (commit f49cc86), 160 to 190 of about 8,600 requests here got no
/// answer.
#[test]
fn a_database_outage_under_load_answers_every_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;
    use support::s;
    use support::sign::{account, configure_signing, generate, tls_args, write};

    const CLIENTS: usize = 4;
    const PARALLEL: usize = 4;
    const PER_PROCESS: usize = 20;

    let instance = Instance::new();
    configure_signing(&instance, "lease_ttl_secs = 3\nidle_release_secs = 600");
    instance.init();
    generate(&instance, "r", "ec-p256", 4);
    let signer = account(&instance, "signer", "signer:r");
    let daemon = instance.serve();
    let data = write(instance.dir.path(), "data", &vec![b'u'; 64 * 1024]);
    let url = daemon.api_url("/v1/sign?ring=r");

    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut args = tls_args(&instance, &signer);
            args.extend([
                "-sS".into(),
                "--max-time".into(),
                "30".into(),
                if c % 2 == 0 { "--http1.1" } else { "--http2" }.into(),
                "-Z".into(),
                "--parallel-max".into(),
                PARALLEL.to_string(),
                "-H".into(),
                "content-type: application/octet-stream".into(),
                "--data-binary".into(),
                format!("@{}", s(&data)),
                "-w".into(),
                "\nCODE:%{http_code} %{content_type} %{exitcode} %{errormsg}\n".into(),
            ]);
            args.extend(std::iter::repeat_n(url.clone(), PER_PROCESS));
            let (phase, stop) = (phase.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut out = Outcomes::default();
                // Bounded even if the main thread never says stop.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let during = phase.load(Ordering::SeqCst);
                    let run = std::process::Command::new("curl")
                        .args(&args)
                        .output()
                        .unwrap();
                    let text = String::from_utf8_lossy(&run.stdout);
                    let mut seen = 0;
                    for line in text.lines().filter_map(|l| l.strip_prefix("CODE:")) {
                        seen += 1;
                        let mut fields = line.splitn(3, ' ');
                        let code = fields.next().unwrap_or("");
                        let content_type = fields.next().unwrap_or("");
                        let error = fields.next().unwrap_or("");
                        match code {
                            "200" => out.ok[during] += 1,
                            "503" => {
                                out.unavailable[during] += 1;
                                if !content_type.starts_with("application/problem+json") {
                                    out.not_problem.push(format!("phase {during}: {line}"));
                                }
                            }
                            "000" => out.unanswered.push(format!("phase {during}: {error}")),
                            _ => out.other.push(format!("phase {during}: {line}")),
                        }
                    }
                    if seen != PER_PROCESS {
                        out.unanswered.push(format!(
                            "phase {during}: curl reported {seen} of {PER_PROCESS} transfers \
                             (exit {:?}): {}",
                            run.status.code(),
                            String::from_utf8_lossy(&run.stderr)
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
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let mut all = Outcomes::default();
    for client in clients {
        all.add(client.join().unwrap());
    }
    let counts = all.summary();
    eprintln!("outage load: {counts}");
    // The daemon's log without the lines every request writes.
    let logs = || {
        let logs = daemon.logs();
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| !l.contains("\"served\"") && !l.contains("\"database unavailable\""))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let first = |v: &[String]| v[..v.len().min(20)].to_vec();
    assert!(
        all.unanswered.is_empty(),
        "requests without an HTTP answer ({counts}): {:#?}\n{}",
        first(&all.unanswered),
        logs()
    );
    assert!(
        all.other.is_empty(),
        "answers other than 200 and 503 ({counts}): {:#?}\n{}",
        first(&all.other),
        logs()
    );
    assert!(
        all.not_problem.is_empty(),
        "503s that are not problem+json ({counts}): {:#?}",
        first(&all.not_problem)
    );
    assert!(all.ok[0] > 0, "no signing before the outage ({counts})");
    assert!(all.unavailable[1] > 0, "the outage was not seen ({counts})");
    assert!(
        all.ok[2] > 0,
        "no signing after the database came back ({counts}):\n{}",
        logs()
    );
}
