//! Scheduling end to end (invariants 2 and 3): many concurrent clients sign through rings of 4
//! keys and of 1 key while the daemon traces every token operation's key and start/end time
//! (`signing.trace_file`). No two operations overlap on one key; with 4 keys the least
//! recently used idle key is picked, so usage spreads evenly; the usage counts served by the
//! API match the trace. A full queue answers 503 with Retry-After. A key retired while its
//! lease is being taken signs no more once the retirement is answered, and a request waiting
//! for a key that gets retired hears 409 at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use support::sign::{
    Client, account, configure_signing, generate, get, post_json, sign_file, tls_args, write,
};
use support::{Daemon, Instance, s, wait_until};

/// `clients` curl processes at once, each sending `per_client` requests over its own TLS
/// connection with up to `streams` in flight (HTTP/2). Returns every status code.
#[allow(clippy::too_many_arguments)]
fn load(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    query: &str,
    data: &std::path::Path,
    clients: usize,
    per_client: usize,
    streams: usize,
) -> Vec<u16> {
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let mut args = tls_args(instance, client);
            args.extend([
                "-sS".into(),
                "--max-time".into(),
                "60".into(),
                "-Z".into(),
                "--parallel-max".into(),
                streams.to_string(),
                "-H".into(),
                "content-type: application/octet-stream".into(),
                "--data-binary".into(),
                format!("@{}", s(data)),
                "-w".into(),
                "\nCODE:%{http_code}\n".into(),
            ]);
            for _ in 0..per_client {
                args.push(daemon.api_url(&format!("/v1/sign?{query}")));
            }
            std::thread::spawn(move || Command::new("curl").args(&args).output().unwrap())
        })
        .collect();
    let mut codes = Vec::new();
    for h in handles {
        let out = h.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        codes.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("CODE:"))
                .map(|c| c.trim().parse::<u16>().unwrap()),
        );
    }
    eprintln!(
        "{} requests to {query} in {:?}",
        codes.len(),
        started.elapsed()
    );
    codes
}

/// The trace: key id → (start, end) intervals in monotonic nanoseconds.
fn read_trace(path: &std::path::Path) -> BTreeMap<String, Vec<(u128, u128)>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut ops: BTreeMap<String, Vec<(u128, u128)>> = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(key), Some(start), Some(end)) = (f.next(), f.next(), f.next()) else {
            panic!("bad trace line {line:?}");
        };
        ops.entry(key.to_owned())
            .or_default()
            .push((start.parse().unwrap(), end.parse().unwrap()));
    }
    ops
}

/// Asserts that no two operations on one key overlap; returns the most operations that ran at
/// once across the given keys.
fn check_no_overlap(ops: &BTreeMap<String, Vec<(u128, u128)>>, keys: &[String]) -> usize {
    let mut all = Vec::new();
    for key in keys {
        let mut intervals = ops.get(key).cloned().unwrap_or_default();
        intervals.sort();
        for pair in intervals.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "key {key}: operations overlap: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
        for (a, b) in intervals {
            assert!(a <= b);
            all.push((a, 1i64));
            all.push((b, -1i64));
        }
    }
    all.sort_by_key(|(t, d)| (*t, *d));
    let (mut now, mut max) = (0i64, 0i64);
    for (_, d) in all {
        now += d;
        max = max.max(now);
    }
    max as usize
}

#[test]
fn no_key_is_used_twice_at_once_and_usage_spreads_evenly() {
    let instance = Instance::new();
    let trace = instance.dir.path().join("sign-trace");
    configure_signing(
        &instance,
        &format!("trace_file = \"{}\"\nusage_flush_secs = 1", s(&trace)),
    );
    instance.init();
    let four = generate(&instance, "four", "ec-p256", 4);
    let one = generate(&instance, "one", "ec-p256", 1);
    let signer = account(&instance, "signer", "signer:four,signer:one");
    let daemon = instance.serve();
    let data = write(instance.dir.path(), "data", &[0x5a; 256]);

    // Ring of 4: 8 clients × 40 requests, 4 in flight each.
    let codes = load(&instance, &daemon, &signer, "ring=four", &data, 8, 40, 4);
    assert_eq!(codes.len(), 320);
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    let ops = read_trace(&trace);
    let counts: Vec<usize> = four
        .iter()
        .map(|k| ops.get(k).map_or(0, Vec::len))
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), 320, "{counts:?}");
    let at_once = check_no_overlap(&ops, &four);
    eprintln!("ring of 4: usage per key {counts:?}; at most {at_once} operations at once");
    // Least recently used first: every key takes its share (80 each), within ±50%.
    for c in &counts {
        assert!((40..=120).contains(c), "uneven usage: {counts:?}");
    }

    // Sequential requests go round the ring in LRU order: exactly even.
    let before = counts.clone();
    for _ in 0..8 {
        let r = sign_file(&instance, &daemon, &signer, "ring=four", &data);
        assert_eq!(r.status, 200, "{r:?}");
    }
    let ops = read_trace(&trace);
    let after: Vec<usize> = four
        .iter()
        .map(|k| ops.get(k).map_or(0, Vec::len))
        .collect();
    let added: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(added, [2, 2, 2, 2], "sequential LRU order");

    // Ring of 1: the same load is serialised on the one key.
    let codes = load(&instance, &daemon, &signer, "ring=one", &data, 8, 40, 4);
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    let ops = read_trace(&trace);
    assert_eq!(ops.get(&one[0]).map_or(0, Vec::len), 320);
    assert_eq!(check_no_overlap(&ops, &one), 1);
    // Every key of the trace belongs to one of the rings.
    assert!(ops.keys().all(|k| four.contains(k) || one.contains(k)));

    // The usage counts the API serves (flushed every second) match the trace.
    let admin = support::sign::admin(&instance);
    let expected: BTreeMap<String, usize> = ops.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let keys = get(&instance, &daemon, &admin, "/v1/keys").json();
            keys["keys"].as_array().unwrap().iter().all(|k| {
                let id = k["id"].as_str().unwrap();
                k["usage_count"].as_u64().unwrap() as usize
                    == expected.get(id).copied().unwrap_or(0)
            })
        }),
        "usage counts differ from the trace"
    );
    let metrics = support::curl(&[&daemon.metrics_url("/metrics")]).body;
    assert!(
        metrics.contains("signetd_signing_operations_total{endpoint=\"sign\",result=\"ok\"} 648"),
        "{metrics}"
    );
    assert!(metrics.contains("signetd_hsm_bad_signatures_total 0"));
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let instance = Instance::new();
    configure_signing(&instance, "queue_per_ring = 1\nqueue_timeout_ms = 3000");
    instance.init();
    generate(&instance, "slow", "rsa-4096", 1);
    let signer = account(&instance, "signer", "signer:slow");
    let daemon = instance.serve();
    let data = write(instance.dir.path(), "data", b"queue");
    let headers = instance.dir.path().join("headers");
    let mut args = tls_args(&instance, &signer);
    args.extend([
        "-sS".into(),
        "--max-time".into(),
        "60".into(),
        "-Z".into(),
        "--parallel-max".into(),
        "24".into(),
        "-D".into(),
        s(&headers).into(),
        "--data-binary".into(),
        format!("@{}", s(&data)),
        "-w".into(),
        "\nCODE:%{http_code}\n".into(),
    ]);
    for _ in 0..24 {
        args.push(daemon.api_url("/v1/sign?ring=slow"));
    }
    let out = Command::new("curl").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let codes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("CODE:"))
        .collect();
    assert_eq!(codes.len(), 24, "{text}");
    let ok = codes.iter().filter(|c| **c == "200").count();
    let busy = codes.iter().filter(|c| **c == "503").count();
    eprintln!("{ok} signed, {busy} refused with 503");
    assert!(ok >= 1 && busy >= 1 && ok + busy == 24, "{codes:?}");
    assert!(text.contains("urn:signetd:problem:busy"), "{text}");
    let headers = std::fs::read_to_string(&headers).unwrap().to_lowercase();
    assert!(headers.contains("retry-after: 1"), "{headers}");
    let metrics = support::curl(&[&daemon.metrics_url("/metrics")]).body;
    assert!(
        metrics.contains(&format!(
            "signetd_signing_queue_rejections_total{{ring=\"slow\"}} {busy}"
        )),
        "{metrics}"
    );
}

/// A key retired while the daemon is taking its lease for a waiting request (the lease
/// committed just before the retirement, the key slot still opening) must not join the ring
/// afterwards: once the retirement is answered, the key signs no more. Each round races the
/// first request of a fresh one-key ring against the key's retirement, the retirement a
/// little later each round to sweep the lease window.
#[test]
fn a_key_retired_while_its_lease_is_taken_signs_no_more() {
    const ROUNDS: usize = 16;
    let instance = Instance::new();
    instance.init();
    let keys: Vec<String> = (0..ROUNDS)
        .map(|i| generate(&instance, &format!("race{i}"), "ec-p256", 1).remove(0))
        .collect();
    let roles: Vec<String> = (0..ROUNDS).map(|i| format!("signer:race{i}")).collect();
    let signer = account(&instance, "signer", &roles.join(","));
    let admin = support::sign::admin(&instance);
    let daemon = instance.serve();
    let data = write(instance.dir.path(), "data", b"race");
    let mut signed_first = 0;
    for (i, key) in keys.iter().enumerate() {
        let ring = format!("ring=race{i}");
        let retire_path = format!("/v1/keys/{key}/retire");
        let (first, retired) = std::thread::scope(|scope| {
            let first = scope.spawn(|| sign_file(&instance, &daemon, &signer, &ring, &data));
            std::thread::sleep(Duration::from_micros(700 * (i as u64 % 8)));
            let retired = scope.spawn(|| {
                post_json(
                    &instance,
                    &daemon,
                    &admin,
                    &retire_path,
                    &serde_json::json!({}),
                )
            });
            (first.join().unwrap(), retired.join().unwrap())
        });
        assert_eq!(retired.status, 200, "round {i}: {retired:?}");
        // Signed before the retirement, or refused: the ring has no active key left.
        assert!(matches!(first.status, 200 | 409), "round {i}: {first:?}");
        signed_first += usize::from(first.status == 200);
        for _ in 0..3 {
            let r = sign_file(&instance, &daemon, &signer, &ring, &data);
            assert_eq!(
                r.status, 409,
                "round {i}: the retired key {key} signed: {r:?}"
            );
        }
    }
    eprintln!("{signed_first} of {ROUNDS} first requests signed before the retirement");
}

/// A request for one key by id that waits for it (another daemon holds its lease) hears 409
/// as soon as the key is retired — through this daemon's API, or by another process — not 503
/// at the queue timeout.
#[test]
fn a_request_waiting_for_a_retired_key_hears_409() {
    let instance = Instance::new();
    configure_signing(&instance, "queue_timeout_ms = 30000");
    instance.init();
    let keys = generate(&instance, "held", "ec-p256", 2);
    let signer = account(&instance, "signer", "signer:held");
    let admin = support::sign::admin(&instance);
    let daemon = instance.serve();
    let data = write(instance.dir.path(), "data", b"waiting");
    for (key, by_api) in [(&keys[0], true), (&keys[1], false)] {
        instance
            .pg
            .psql(
                "signetd",
                &format!(
                    "INSERT INTO key_leases (key_id, holder, expires_at) \
                     VALUES ('{key}', 'another-daemon', now() + interval '1 hour')"
                ),
            )
            .unwrap();
        let started = Instant::now();
        let waited = std::thread::scope(|scope| {
            let waiting = scope
                .spawn(|| sign_file(&instance, &daemon, &signer, &format!("key_id={key}"), &data));
            // Long enough for the request to queue behind the other daemon's lease.
            std::thread::sleep(Duration::from_millis(1000));
            if by_api {
                let r = post_json(
                    &instance,
                    &daemon,
                    &admin,
                    &format!("/v1/keys/{key}/retire"),
                    &serde_json::json!({}),
                );
                assert_eq!(r.status, 200, "{r:?}");
            } else {
                support::sign::keys_cli(&instance, &["retire", key]);
            }
            waiting.join().unwrap()
        });
        let how = if by_api { "the API" } else { "the CLI" };
        assert_eq!(waited.status, 409, "retired by {how}: {waited:?}");
        assert!(
            waited.body.contains("retired"),
            "retired by {how}: {waited:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "retired by {how}: the answer took {:?}",
            started.elapsed()
        );
    }
}
