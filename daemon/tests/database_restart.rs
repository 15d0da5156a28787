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
