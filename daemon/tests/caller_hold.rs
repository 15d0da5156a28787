//! Invariant 7 under load, with identities cached per process (issue 17): `api::identify`
//! serves a known certificate from its cache, and the audit writer checks every caller of a
//! group inside its transaction, under the lock a status change commits under.
//!
//! `a_caller_held_or_revoked_mid_load_gets_no_signature_after_the_commit`: two daemons on one
//! database; four kept-alive connections (two per daemon) sign as fast as they can while an
//! admin holds the signer's certificate through one daemon. Every signature answered carries an
//! audit entry older than the hold's, each connection gets 403 once and from then on, and every
//! entry of the signer after the hold's is a refusal. Activated again it signs; revoked in the
//! middle of a second load, the same holds.
//!
//! `a_hold_the_daemon_has_not_heard_of_still_withholds_the_answer`: the certificate is held in
//! the database without the notice the daemons act on (as when the notification connection is
//! down). The daemon's cache still says active, yet the signature is withheld by the writer's
//! check: 403 with a receipt, the entry a refusal, `audit_callers_refused_total` counts it. An
//! admin held the same way cannot create an account: the mutation does not run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::jobs::sql;
use support::sign::{Client, account, admin, call, generate, post_json, tls_args};
use support::{Daemon, Instance, curl};

/// Requests per connection of a load.
const REQUESTS: usize = 1500;

/// One answer of a load: status and audit sequence number (every answer has one).
#[derive(Debug, Clone, Copy)]
struct Answer {
    status: u16,
    seq: Option<u64>,
}

/// `REQUESTS` times `POST /v1/sign?ring=r` on one kept-alive connection (one curl process):
/// each answer's status and audit receipt, in order.
fn load(instance: &Instance, daemon: &Daemon, client: &Client, name: &str) -> Vec<Answer> {
    let config = instance.dir.path().join(format!("load-{name}.curl"));
    let url = daemon.api_url("/v1/sign?ring=r");
    let mut text = String::from(
        "silent\nshow-error\ndata-binary = \"under load\"\n\
         write-out = \"%{http_code} %header{audit-receipt}\\n\"\n",
    );
    for _ in 0..REQUESTS {
        text.push_str(&format!("url = \"{url}\"\noutput = \"/dev/null\"\n"));
    }
    std::fs::write(&config, text).unwrap();
    let mut args = tls_args(instance, client);
    args.extend(["--max-time".to_owned(), "120".to_owned()]);
    args.extend(["--config".to_owned(), config.display().to_string()]);
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("run curl (install curl)");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Answer> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (status, receipt) = line.split_once(' ').unwrap_or((line, ""));
            Answer {
                status: status.parse().unwrap_or(0),
                seq: receipt.split_once(':').and_then(|(s, _)| s.parse().ok()),
            }
        })
        .collect();
    assert_eq!(answers.len(), REQUESTS, "one answer per request");
    answers
}

/// The sequence number of an audited JSON answer (its `Audit-Receipt`, also in the body).
fn receipt_seq(r: &support::CurlResult) -> u64 {
    let v = r.json();
    v["receipt"]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no receipt in {r:?}"))
}

/// Starts four connections of load (two on each daemon), then runs `change` after the first
/// signatures went out; returns the change's audit sequence number and every answer.
fn load_around(
    instance: &Instance,
    daemons: [&Daemon; 2],
    signer: &Client,
    change: impl FnOnce() -> u64,
) -> (u64, Vec<Vec<Answer>>) {
    std::thread::scope(|scope| {
        let loads: Vec<_> = (0..4)
            .map(|i| {
                let daemon = daemons[i % 2];
                scope.spawn(move || load(instance, daemon, signer, &format!("{i}")))
            })
            .collect();
        // Let the connections sign for a while.
        std::thread::sleep(Duration::from_millis(1500));
        let seq = change();
        let answers = loads.into_iter().map(|l| l.join().unwrap()).collect();
        (seq, answers)
    })
}

/// The heart of the test: nothing signed after the change committed, a refusal from then on.
fn check_load(change: &str, change_seq: u64, answers: &[Vec<Answer>]) {
    let mut signed = 0;
    let mut refused = 0;
    let mut busy = 0;
    for (i, connection) in answers.iter().enumerate() {
        let first_refusal = connection
            .iter()
            .position(|a| a.status == 403)
            .unwrap_or_else(|| panic!("connection {i} was never refused after the {change}"));
        for (n, a) in connection.iter().enumerate() {
            if a.status == 503 {
                // The ring was busy (the other daemon held the key): nothing released.
                busy += 1;
                continue;
            }
            let seq = a
                .seq
                .unwrap_or_else(|| panic!("connection {i}, answer {n} has no receipt: {a:?}"));
            match a.status {
                200 => {
                    signed += 1;
                    assert!(
                        seq < change_seq,
                        "connection {i}, answer {n}: a signature logged at {seq}, after the \
                         {change} at {change_seq}"
                    );
                    assert!(
                        n < first_refusal,
                        "connection {i}: signed again at {n} after a refusal at {first_refusal}"
                    );
                }
                403 => refused += 1,
                other => panic!("connection {i}, answer {n}: status {other}"),
            }
        }
    }
    eprintln!("{change}: {signed} signatures before it, {refused} refusals after, {busy} busy");
    assert!(
        signed > 0,
        "no signature before the {change}: the load did not overlap it"
    );
}

/// Every entry of `fingerprint` after `seq` is a refusal, and there are some.
fn refusals_logged_after(instance: &Instance, fingerprint: &str, seq: u64) {
    let results = sql(
        instance,
        &format!(
            "SELECT string_agg(DISTINCT result, ',') FROM audit_entries \
             WHERE actor_fingerprint = '{fingerprint}' AND seq > {seq}"
        ),
    );
    assert_eq!(results, "error:forbidden", "entries after {seq}");
}

fn whoami(instance: &Instance, daemon: &Daemon, client: &Client) -> serde_json::Value {
    let r = call(instance, client, &[], &daemon.api_url("/v1/whoami"));
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

fn sign_once(instance: &Instance, daemon: &Daemon, client: &Client) -> support::CurlResult {
    call(
        instance,
        client,
        &["--data-binary", "once", "-D", "/dev/stderr"],
        &daemon.api_url("/v1/sign?ring=r"),
    )
}

#[test]
fn a_caller_held_or_revoked_mid_load_gets_no_signature_after_the_commit() {
    let instance = Instance::new();
    instance.init();
    // Keys enough for both daemons to lease some.
    generate(&instance, "r", "ec-p256", 4);
    let admin = admin(&instance);
    let signer = account(&instance, "signer", "signer:r");
    let a = instance.serve();
    let b = instance.serve();
    let me = whoami(&instance, &a, &signer);
    let serial = me["serial"].as_str().unwrap().to_owned();
    let fingerprint = me["fingerprint"].as_str().unwrap().to_owned();

    // Held through daemon B while both daemons sign for the signer.
    let (held_at, answers) = load_around(&instance, [&a, &b], &signer, || {
        let r = call(
            &instance,
            &admin,
            &["-X", "POST"],
            &b.api_url(&format!("/v1/certificates/{serial}/deactivate")),
        );
        assert_eq!(r.status, 200, "{r:?}");
        receipt_seq(&r)
    });
    check_load("hold", held_at, &answers);
    refusals_logged_after(&instance, &fingerprint, held_at);

    // Active again: it signs on both daemons.
    let r = call(
        &instance,
        &admin,
        &["-X", "POST"],
        &a.api_url(&format!("/v1/certificates/{serial}/activate")),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let activated_at = receipt_seq(&r);
    for d in [&a, &b] {
        assert_eq!(sign_once(&instance, d, &signer).status, 200);
    }

    // Revoked through daemon A in the middle of a second load.
    let (revoked_at, answers) = load_around(&instance, [&a, &b], &signer, || {
        let r = call(
            &instance,
            &admin,
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "--data-binary",
                r#"{"reason":"keyCompromise"}"#,
            ],
            &a.api_url(&format!("/v1/certificates/{serial}/revoke")),
        );
        assert_eq!(r.status, 200, "{r:?}");
        receipt_seq(&r)
    });
    assert!(revoked_at > activated_at);
    check_load("revocation", revoked_at, &answers);
    refusals_logged_after(&instance, &fingerprint, revoked_at);
}

#[test]
fn a_hold_the_daemon_has_not_heard_of_still_withholds_the_answer() {
    let instance = Instance::new();
    instance.init();
    generate(&instance, "r", "ec-p256", 1);
    let admin = admin(&instance);
    let signer = account(&instance, "signer", "signer:r");
    let a = instance.serve();
    let me = whoami(&instance, &a, &signer);
    let fingerprint = me["fingerprint"].as_str().unwrap().to_owned();
    // Known and cached by the daemon.
    assert_eq!(sign_once(&instance, &a, &signer).status, 200);

    // Held behind the daemons' backs: no notice, the cache still says active.
    sql(
        &instance,
        &format!(
            "UPDATE certificates SET status = 'held', revocation_reason = 'certificateHold', status_changed_at = now() WHERE fingerprint = '{fingerprint}'"
        ),
    );
    let r = sign_once(&instance, &a, &signer);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("held"), "{r:?}");
    assert!(
        r.stderr.to_ascii_lowercase().contains("audit-receipt:"),
        "the refusal is audited: {r:?}"
    );
    let last = sql(
        &instance,
        &format!(
            "SELECT action || ' ' || result || ' ' || (output_digest IS NULL) FROM audit_entries \
             WHERE actor_fingerprint = '{fingerprint}' ORDER BY seq DESC LIMIT 1"
        ),
    );
    assert_eq!(
        last, "sign error:forbidden true",
        "the entry records the refusal"
    );
    let metrics = curl(&[&a.metrics_url("/metrics")]);
    let refused = metrics
        .body
        .lines()
        .find(|l| l.contains("audit_callers_refused_total ") && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("no audit_callers_refused_total: {}", metrics.body));
    assert!(refused.ends_with(" 1"), "{refused}");

    // An admin held the same way changes nothing: the mutation does not run.
    let admin_fp = whoami(&instance, &a, &admin)["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    sql(
        &instance,
        &format!(
            "UPDATE certificates SET status = 'held', revocation_reason = 'certificateHold', status_changed_at = now() WHERE fingerprint = '{admin_fp}'"
        ),
    );
    let body = serde_json::json!({ "name": "newcomer", "roles": ["signer:r"] });
    let r = post_json(&instance, &a, &admin, "/v1/accounts", &body);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        sql(
            &instance,
            "SELECT count(*) FROM accounts WHERE name = 'newcomer'"
        ),
        "0"
    );
}
