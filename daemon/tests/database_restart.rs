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
