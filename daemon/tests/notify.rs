//! Changes reach every daemon at once (PostgreSQL LISTEN/NOTIFY): with two daemons on one
//! database and key leases long enough that the periodic renewal cannot be what notices, a
//! key retired through one daemon is no longer used by the other within 1 s, and a client
//! certificate held through one daemon is refused by the other within 1 s. Both measured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::sign::{account, admin, call, configure_signing, generate, tls_args};
use support::{Daemon, Instance, curl};

/// `POST /v1/sign?ring=r` of a few bytes as `client`: the status.
fn sign(instance: &Instance, daemon: &Daemon, client: &support::sign::Client) -> u16 {
    let url = daemon.api_url("/v1/sign?ring=r");
    call(instance, client, &["--data-binary", "hello"], &url).status
}

/// Polls `check` until it is true; the time it took (at most `limit`).
fn time_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn retirement_and_hold_reach_the_other_daemon_within_a_second() {
    let instance = Instance::new();
    // A lease renewed every 20 s: only a notice can make the other daemon stop in time.
    configure_signing(&instance, "lease_ttl_secs = 60");
    instance.init();
    let key = generate(&instance, "r", "ec-p256", 1).remove(0);
    let admin = admin(&instance);
    let signer = account(&instance, "signer", "signer:r");
    let a = instance.serve();
    let b = instance.serve();
    // B holds the key's lease and signs with it.
    for _ in 0..3 {
        assert_eq!(sign(&instance, &b, &signer), 200);
    }

    // Retire through A; B stops signing with it.
    let r = call(
        &instance,
        &admin,
        &["-X", "POST"],
        &a.api_url(&format!("/v1/keys/{key}/retire")),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let took = time_until(Duration::from_secs(5), || {
        sign(&instance, &b, &signer) != 200
    })
    .expect("daemon B still signs with a key retired through daemon A after 5 s");
    eprintln!("retirement seen by the other daemon after {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "retirement took {took:?} to reach daemon B"
    );
    // And it stays refused.
    assert_ne!(sign(&instance, &b, &signer), 200);

    // Hold the signer's certificate through A; B refuses its next request.
    generate(&instance, "r", "ec-p256", 1);
    let whoami = |d: &Daemon| {
        let mut args = tls_args(&instance, &signer);
        args.push(d.api_url("/v1/whoami"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&refs)
    };
    let me = whoami(&b);
    assert_eq!(me.status, 200, "{me:?}");
    let serial = me.json()["serial"].as_str().unwrap().to_owned();
    let r = call(
        &instance,
        &admin,
        &["-X", "POST"],
        &a.api_url(&format!("/v1/certificates/{serial}/deactivate")),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let took = time_until(Duration::from_secs(5), || whoami(&b).status == 403)
        .expect("daemon B still serves a certificate held through daemon A after 5 s");
    eprintln!("hold seen by the other daemon after {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "the hold took {took:?} to reach daemon B"
    );
}
