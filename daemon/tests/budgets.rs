//! Signature budgets and validity windows of ring keys: two daemons on one database sign
//! concurrently with a ring whose one key may make N signatures — exactly N are made, none
//! over (the count in the database and the successful answers agree), every later request on
//! either daemon is a 409 naming the budget, and `GET /v1/keys/ID/limits` shows none left.
//! Raising the budget lets the key sign again; a ring's per-key budget and a closed window are
//! refused the same way; a batch job does not take budgeted keys (it would not count them yet).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::jobs::sql_i64;
use support::sign::{
    Client, account, admin, assert_problem, call, configure_signing, generate, get, tls_args,
};
use support::{CurlResult, Daemon, Instance, curl};

fn sign(instance: &Instance, daemon: &Daemon, client: &Client, ring: &str) -> CurlResult {
    let mut args = tls_args(instance, client);
    args.extend(["--data-binary".to_owned(), "budget".to_owned()]);
    args.push(daemon.api_url(&format!("/v1/sign?ring={ring}")));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
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
    let r = put(
        &instance,
        &a,
        &admin,
        &format!("/v1/keys/{key}/limits"),
        &format!(r#"{{"max_signatures":{N}}}"#),
    );
    assert_eq!(r.status, 200, "{r:?}");
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
    let r = put(
        &instance,
        &a,
        &admin,
        &format!("/v1/keys/{key}/limits"),
        &format!(r#"{{"max_signatures":{}}}"#, N + 2),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let mut again = 0;
    for _ in 0..4 {
        if sign(&instance, &b, &signer, "b").status == 200 {
            again += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
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

    // Batch jobs do not take keys with budgets (they would not count them yet).
    let r = call(
        &instance,
        &admin,
        &[
            "-H",
            "content-type: application/json",
            "--data-binary",
            r#"{"ring":"c","batch_size":10}"#,
        ],
        &a.api_url("/v1/jobs"),
    );
    assert_problem(&r, 409, "without a signature budget");
}
