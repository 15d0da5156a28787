//! Signature budgets and validity windows of ring keys (issue 16).
//!
//! `two_daemons_never_overrun_a_key_budget`: two daemons on one database sign concurrently
//! with a ring whose one key may make N signatures — exactly N are made, none over (the count in
//! the database and the successful answers agree), every later request on either daemon is a
//! 409 naming the budget, and `GET /v1/keys/ID/limits` shows none left. Raising the budget lets
//! the key sign again; a ring's per-key budget and a closed window are refused the same way; a
//! job on a ring none of whose keys may sign is refused with 409.
//!
//! `two_daemons_and_a_batch_job_share_one_key_budget`: the Done-when of issue 16 — two daemons
//! answer bursts of `/v1/sign` while both run batch-job workers over 200 records in batches of
//! 10, all with one key whose budget is 120. Job batches reserve their whole size when they
//! lease the key, online requests spend one each: the signatures stored for the job plus the
//! successful online answers are exactly 120, the job stops at a whole number of batches and
//! says why (`blocked`), both daemons hear the `key.spent` notice and answer 409, and raising
//! the budget by what the job still needs lets it finish with the budget used exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::jobs::{Expect, check_job, configure as configure_jobs, sql, sql_i64, wait_over};
use support::sign::{
    Client, account, admin, assert_problem, call, configure_signing, generate, get,
};
use support::{CurlResult, Daemon, Instance, curl};

fn sign(instance: &Instance, daemon: &Daemon, client: &Client, ring: &str) -> CurlResult {
    let url = daemon.api_url(&format!("/v1/sign?ring={ring}"));
    call(instance, client, &["--data-binary", "budget"], &url)
}

fn put(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    path: &str,
    body: &str,
) -> CurlResult {
    call(
        instance,
        client,
        &[
            "-X",
            "PUT",
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ],
        &daemon.api_url(path),
    )
}

/// Sets key `key`'s own budget to `max` as `admin`; the answer must be 200.
fn set_budget(
    instance: &Instance,
    daemon: &Daemon,
    admin: &Client,
    key: &str,
    max: i64,
) -> CurlResult {
    let r = put(
        instance,
        daemon,
        admin,
        &format!("/v1/keys/{key}/limits"),
        &format!(r#"{{"max_signatures":{max}}}"#),
    );
    assert_eq!(r.status, 200, "{r:?}");
    r
}

/// `POST /v1/jobs` over `ring` in batches of `batch_size`.
fn create_job(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    ring: &str,
    batch_size: i64,
) -> CurlResult {
    call(
        instance,
        client,
        &[
            "-H",
            "content-type: application/json",
            "--data-binary",
            &format!(r#"{{"ring":"{ring}","batch_size":{batch_size}}}"#),
        ],
        &daemon.api_url("/v1/jobs"),
    )
}

#[test]
fn two_daemons_never_overrun_a_key_budget() {
    const N: i64 = 15;
    let instance = Instance::new();
    // A request that cannot have the key (the other daemon holds it) gives up after 0.5 s.
    configure_signing(&instance, "queue_timeout_ms = 500");
    instance.init();
    let key = generate(&instance, "b", "ec-p256", 1).remove(0);
    let admin = admin(&instance);
    let signer = account(&instance, "signer", "signer:b,signer:c");
    let a = instance.serve();
    let b = instance.serve();
    let r = set_budget(&instance, &a, &admin, &key, N);
    assert_eq!(r.json()["remaining"], N, "{r:?}");

    // Two daemons, two threads each, more requests than the budget.
    let statuses: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .map(|d| {
                let (instance, signer) = (&instance, &signer);
                scope.spawn(move || {
                    (0..12)
                        .map(|_| {
                            let r = sign(instance, d, signer, "b");
                            (r.status, r.body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let made = statuses.iter().filter(|(s, _)| *s == 200).count() as i64;
    assert_eq!(made, N, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|(s, _)| *s == 200 || *s == 409 || *s == 503),
        "{statuses:?}"
    );
    let spent = sql_i64(
        &instance,
        &format!("SELECT signatures_spent FROM keys WHERE id = '{key}'"),
    );
    assert_eq!(spent, N, "the database counted {spent}");
    // Afterwards both daemons refuse with 409, naming the budget.
    for d in [&a, &b] {
        let r = sign(&instance, d, &signer, "b");
        assert_problem(&r, 409, "budget");
    }
    let limits = get(&instance, &a, &signer, &format!("/v1/keys/{key}/limits")).json();
    assert_eq!(limits["signatures_spent"], N, "{limits}");
    assert_eq!(limits["remaining"], 0, "{limits}");

    // A larger budget: the key signs again (through the other daemon, told by a notice).
    set_budget(&instance, &a, &admin, &key, N + 2);
    let mut again = 0;
    for _ in 0..4 {
        if sign(&instance, &b, &signer, "b").status == 200 {
            again += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        again, 2,
        "two more signatures after raising the budget by two"
    );

    // A closed window.
    let r = put(
        &instance,
        &a,
        &admin,
        &format!("/v1/keys/{key}/limits"),
        r#"{"usable_until":"2001-01-01T00:00:00Z"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = sign(&instance, &a, &signer, "b");
    assert_eq!(r.status, 409, "{r:?}");

    // A ring's per-key budget, for keys without their own.
    generate(&instance, "c", "ec-p256", 2);
    let r = put(
        &instance,
        &a,
        &admin,
        "/v1/rings/c/limits",
        r#"{"key_max_signatures":3}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let made = (0..12)
        .filter(|_| sign(&instance, &a, &signer, "c").status == 200)
        .count();
    assert_eq!(made, 6, "two keys of three signatures each");
    assert_problem(&sign(&instance, &a, &signer, "c"), 409, "budget");

    // Bad limits and non-admins.
    for body in [
        r#"{"max_signatures":-1}"#,
        r#"{"usable_from":"2030-01-01T00:00:00Z","usable_until":"2029-01-01T00:00:00Z"}"#,
        r#"{"max":1}"#,
    ] {
        let r = put(
            &instance,
            &a,
            &admin,
            &format!("/v1/keys/{key}/limits"),
            body,
        );
        assert_eq!(r.status, 400, "{body}: {r:?}");
    }
    let r = put(
        &instance,
        &a,
        &signer,
        &format!("/v1/keys/{key}/limits"),
        r#"{"max_signatures":100}"#,
    );
    assert_eq!(r.status, 403, "{r:?}");

    // A job needs a key that may sign: every key of ring c has used its budget up.
    let r = create_job(&instance, &a, &admin, "c", 10);
    assert_problem(&r, 409, "no key of ring c may sign now");
}

/// `/v1/sign` on `daemon` in bursts of `burst` requests with `pause` between bursts, until three
/// answers in a row are 409 (the budget is used up) — at most `max` requests and until
/// `deadline`. Returns every status, with the body of the last answer.
fn bursts(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    burst: usize,
    pause: Duration,
    max: usize,
    deadline: Instant,
) -> (Vec<u16>, CurlResult) {
    let mut statuses = Vec::new();
    let mut last = None;
    'outer: while statuses.len() < max && Instant::now() < deadline {
        for _ in 0..burst {
            let r = sign(instance, daemon, client, "j");
            statuses.push(r.status);
            last = Some(r);
            if statuses.len() >= 3 && statuses[statuses.len() - 3..].iter().all(|s| *s == 409) {
                break 'outer;
            }
        }
        std::thread::sleep(pause);
    }
    (statuses, last.expect("at least one request"))
}

fn job_view(instance: &Instance, daemon: &Daemon, client: &Client, job: &str) -> serde_json::Value {
    let r = get(instance, daemon, client, &format!("/v1/jobs/{job}"));
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

#[test]
fn two_daemons_and_a_batch_job_share_one_key_budget() {
    const N: i64 = 120;
    const RECORDS: i64 = 200;
    const BATCH: i64 = 10;
    let instance = Instance::new();
    // A request that cannot have the one key (the other daemon or a job worker holds it) gives
    // up after 0.3 s with 503 and is tried again; an online daemon idle for a second gives the
    // key back, so the lease moves between the online daemons and the job workers.
    configure_signing(&instance, "queue_timeout_ms = 300\nidle_release_secs = 1");
    configure_jobs(&instance, 2, 10);
    instance.init();
    let key = generate(&instance, "j", "ec-p256", 1).remove(0);
    let admin = admin(&instance);
    let signer = account(&instance, "signer", "signer:j");
    let records: Vec<String> = (0..RECORDS)
        .map(|i| format!(r#"{{"text":"record {i}"}}"#))
        .collect();
    let body = format!(r#"{{"records":[{}]}}"#, records.join(","));
    let a = instance.serve();
    let b = instance.serve();
    let r = call(
        &instance,
        &admin,
        &[
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
        ],
        &a.api_url("/v1/records"),
    );
    assert_eq!(r.status, 201, "{r:?}");
    set_budget(&instance, &a, &admin, &key, N);

    // Some online signatures first, through both daemons.
    let mut online = 0i64;
    for i in 0..20 {
        let d = if i % 2 == 0 { &a } else { &b };
        let r = sign(&instance, d, &signer, "j");
        assert!(r.status == 200 || r.status == 503, "{r:?}");
        online += i64::from(r.status == 200);
    }
    assert!(
        online >= 5,
        "only {online} online signatures before the job"
    );

    // Bursts of online requests on both daemons, and the job created in their midst: an online
    // daemon holds the key when the job starts, gives it back when it pauses, and takes it
    // again between two batches or after the job's workers ran out of budget.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (job, results) = std::thread::scope(|scope| {
        let handles: Vec<_> = [(&a, 1200), (&b, 1700)]
            .into_iter()
            .map(|(d, pause_ms)| {
                let (instance, signer) = (&instance, &signer);
                scope.spawn(move || {
                    bursts(
                        instance,
                        d,
                        signer,
                        4,
                        Duration::from_millis(pause_ms),
                        400,
                        deadline,
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(900));
        let r = create_job(&instance, &a, &admin, "j", BATCH);
        assert_eq!(r.status, 201, "{r:?}");
        let job = r.json()["id"].as_str().unwrap().to_owned();
        let results: Vec<(Vec<u16>, CurlResult)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        (job, results)
    });
    for (statuses, last) in &results {
        assert!(
            statuses.iter().all(|s| [200, 409, 503].contains(s)),
            "{statuses:?}"
        );
        // Each stopped on the used-up budget, not on a bound.
        assert_problem(last, 409, "budget");
        online += statuses.iter().filter(|s| **s == 200).count() as i64;
    }

    // The job stops at a whole number of batches and says why; no attempt holds a lease.
    let quiet = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let view = job_view(&instance, &a, &signer, &job);
        let open = sql_i64(
            &instance,
            &format!(
                "SELECT count(*) FROM batch_leases l JOIN batches b ON b.id = l.batch_id \
                 WHERE b.job_id = '{job}' AND l.released_at IS NULL"
            ),
        );
        // A job that is over has nothing to wait for (the figures below say what went wrong).
        if open == 0 && (view["blocked"].is_string() || view["state"] != "running") {
            break view;
        }
        assert!(Instant::now() < quiet, "the job does not settle: {view}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let stored = sql_i64(
        &instance,
        &format!(
            "SELECT count(*) FROM signatures s JOIN batches b ON b.id = s.batch_id \
             WHERE b.job_id = '{job}'"
        ),
    );
    let spent = sql_i64(
        &instance,
        &format!("SELECT signatures_spent FROM keys WHERE id = '{key}'"),
    );
    assert_eq!(
        (stored + online, spent),
        (N, N),
        "job {stored} + online {online} signatures, {spent} counted, budget {N}"
    );
    let busy: usize = results
        .iter()
        .map(|(st, _)| st.iter().filter(|s| **s == 503).count())
        .sum();
    eprintln!("budget {N}: job {stored} + online {online} signatures ({busy} answers 503)");
    assert!(
        stored > 0,
        "the job signed nothing before the budget ran out"
    );
    assert!(
        stored < RECORDS && stored % BATCH == 0,
        "job signed {stored}"
    );
    assert_eq!(view["state"], "running", "{view}");
    assert_eq!(view["signed"], stored, "{view}");
    let why = view["blocked"].as_str().unwrap();
    for part in ["ring j", "batch of 10 records", "budget", "resumes"] {
        assert!(why.contains(part), "{part:?} not in {why:?}");
    }
    // Nothing is left reserved: every attempt that reserved settled.
    assert_eq!(
        sql_i64(
            &instance,
            "SELECT coalesce(sum(reserved), 0) FROM batch_leases"
        ),
        0
    );
    // Later online requests on both daemons: 409 naming the budget. Both heard the key.spent
    // notice; the job's workers said once per daemon that the job waits.
    for d in [&a, &b] {
        assert_problem(&sign(&instance, d, &signer, "j"), 409, "budget");
        assert!(
            d.logs()
                .contains("signature budget is used up is no longer lent here"),
            "{}",
            d.logs()
        );
    }
    // Said once per daemon and wait: again only after the daemon saw a key sign batches again
    // (a reservation given back by a batch that was given up, e.g. when a loaded machine let a
    // claim expire, makes room for one more batch).
    let (said, resumed): (usize, usize) = [&a, &b]
        .iter()
        .map(|d| {
            let logs = d.logs();
            (
                logs.matches("the job waits until a signature budget")
                    .count(),
                logs.matches("a key may sign batches again").count(),
            )
        })
        .fold((0, 0), |(s, r), (ds, dr)| (s + ds, r + dr));
    assert!(
        (1..=2 + resumed).contains(&said),
        "said {said} times, resumed {resumed} times"
    );
    let metrics: String = [&a, &b]
        .iter()
        .map(|d| curl(&[d.metrics_url("/metrics").as_str()]).body)
        .collect();
    assert!(
        metrics.contains("signetd_jobs_batches_total{result=\"spent\"}"),
        "{metrics}"
    );

    // A budget raised by what the job still needs: it finishes, and the budget is used exactly.
    let left = RECORDS - stored;
    set_budget(&instance, &b, &admin, &key, N + left);
    assert_eq!(
        wait_over(&instance, &job, Duration::from_secs(60)),
        "done",
        "the job did not resume"
    );
    let view = job_view(&instance, &b, &signer, &job);
    assert_eq!(view["signed"], RECORDS, "{view}");
    assert!(view.get("blocked").is_none(), "{view}");
    assert_eq!(
        sql_i64(
            &instance,
            &format!("SELECT signatures_spent FROM keys WHERE id = '{key}'")
        ),
        N + left
    );
    check_job(
        &instance,
        &job,
        &Expect {
            records: RECORDS,
            keys: 1,
            balanced: true,
        },
    );

    // A given-up attempt gives back what it reserved and did not make, exactly once. (Here an
    // attempt row made by hand: the daemon gives up a reserving attempt only when its lease is
    // lost or the token fails mid-batch.)
    let batch = sql_i64(
        &instance,
        &format!("SELECT min(id) FROM batches WHERE job_id = '{job}'"),
    );
    sql(
        &instance,
        &format!(
            "INSERT INTO batch_leases (batch_id, attempt, key_id, holder, leased_at, expires_at, \
             reserved) VALUES ({batch}, 1000, '{key}', 'test', now(), now(), 10)"
        ),
    );
    let settle = format!("SELECT coalesce(jobs_settle_reservation({batch}, 1000, 4), -1)");
    assert_eq!(sql_i64(&instance, &settle), 6, "10 reserved, 4 made");
    assert_eq!(sql_i64(&instance, &settle), -1, "settled already");
    assert_eq!(
        sql_i64(
            &instance,
            &format!("SELECT signatures_spent FROM keys WHERE id = '{key}'")
        ),
        N + left - 6
    );
}
