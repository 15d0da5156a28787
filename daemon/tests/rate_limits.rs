//! Per-client rate limits: an account over its limit (an override of 5 requests a second) gets
//! 429 problem+json with `Retry-After` while another account is served normally at the same
//! time; the refusals are counted per account in metrics and audited as one `rate-limit` entry
//! per account and window with their count, not one entry per refused request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::sign::{Client, account, get, tls_args};
use support::{Daemon, Instance, curl, wait_until};

/// `n` requests to `GET /v1/whoami` over one kept-alive connection: the status of each, and
/// the headers curl dumped.
fn burst(instance: &Instance, daemon: &Daemon, client: &Client, n: usize) -> (Vec<u16>, String) {
    let headers = instance
        .dir
        .path()
        .join(format!("headers-{}.txt", client.cert.len() + n));
    let mut args = tls_args(instance, client);
    args.extend(["-D".to_owned(), headers.to_str().unwrap().to_owned()]);
    args.extend(["-w".to_owned(), "%{http_code}\\n".to_owned()]);
    let url = daemon.api_url("/v1/whoami");
    for _ in 0..n {
        args.extend(["-o".to_owned(), "/dev/null".to_owned(), url.clone()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "60"])
        .args(&refs)
        .output()
        .unwrap();
    let codes = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    (codes, std::fs::read_to_string(headers).unwrap_or_default())
}

fn metric(daemon: &Daemon, account: &str) -> u64 {
    let line = format!("signetd_rate_limited_total{{account=\"{account}\"}} ");
    curl(&[&daemon.metrics_url("/metrics")])
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn a_client_over_its_limit_gets_429_while_another_is_served() {
    let instance = Instance::new();
    let mut config = std::fs::read_to_string(&instance.config_path).unwrap();
    config.push_str(
        "\n[rate_limits]\naudit_window_secs = 1\n\n[rate_limits.accounts.greedy]\nper_second = 5\nburst = 5\n",
    );
    std::fs::write(&instance.config_path, config).unwrap();
    instance.init();
    let greedy = account(&instance, "greedy", "signer:r");
    let polite = account(&instance, "polite", "signer:r");
    let auditor = account(&instance, "watcher", "auditor");
    let daemon = instance.serve();

    let started = Instant::now();
    let ((greedy_codes, headers), (polite_codes, _)) = std::thread::scope(|scope| {
        let g = scope.spawn(|| burst(&instance, &daemon, &greedy, 60));
        let p = scope.spawn(|| burst(&instance, &daemon, &polite, 60));
        (g.join().unwrap(), p.join().unwrap())
    });
    let elapsed = started.elapsed();
    assert_eq!(greedy_codes.len(), 60, "{greedy_codes:?}");
    assert_eq!(polite_codes.len(), 60, "{polite_codes:?}");
    let refused = greedy_codes.iter().filter(|c| **c == 429).count();
    let served = greedy_codes.iter().filter(|c| **c == 200).count();
    assert_eq!(refused + served, 60, "{greedy_codes:?}");
    // 5 at once, then 5 a second: at most 5 + 5 per second elapsed were served.
    let allowed = 5 + (5.0 * elapsed.as_secs_f64()).ceil() as usize;
    assert!(
        served >= 5 && served <= allowed,
        "greedy served {served} in {elapsed:?} (allowed {allowed}): {greedy_codes:?}"
    );
    assert!(refused > 0, "greedy was never limited: {greedy_codes:?}");
    assert!(
        polite_codes.iter().all(|c| *c == 200),
        "polite was limited too: {polite_codes:?}"
    );
    // Retry-After on the 429s, in whole seconds.
    let retry: Vec<&str> = headers
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("retry-after:"))
        .map(|l| l.split(':').nth(1).unwrap().trim())
        .collect();
    assert_eq!(retry.len(), refused, "{headers}");
    assert!(
        retry.iter().all(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)),
        "{retry:?}"
    );
    assert!(headers.contains("application/problem+json"), "{headers}");
    // Counted: the refusals per account, none for the other.
    assert_eq!(metric(&daemon, "greedy"), refused as u64);
    assert_eq!(metric(&daemon, "polite"), 0);

    // Audited once per window with the count, not once per refusal.
    let mut entries = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let r = get(
                &instance,
                &daemon,
                &auditor,
                "/v1/audit/entries?from=0&limit=1000",
            );
            entries = r.json()["entries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] == "rate-limit")
                .cloned()
                .collect();
            let counted: usize = entries
                .iter()
                .filter_map(|e| {
                    e["result"]
                        .as_str()?
                        .strip_prefix("error:rate-limited:")?
                        .parse::<usize>()
                        .ok()
                })
                .sum();
            counted == refused
        }),
        "no rate-limit audit entry"
    );
    assert!(
        entries.len() <= 2 + elapsed.as_secs() as usize,
        "one entry per window expected, got {}: {entries:?}",
        entries.len()
    );
    let mut audited = 0;
    for e in &entries {
        assert_eq!(e["subject"], "account:greedy", "{e}");
        assert_eq!(e["actor_account"], "greedy", "{e}");
        audited += e["result"]
            .as_str()
            .and_then(|r| r.strip_prefix("error:rate-limited:"))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("result with a count: {e}"));
    }
    assert_eq!(audited, refused, "every refusal counted once: {entries:?}");
    // The greedy account is served again once its bucket refilled.
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(get(&instance, &daemon, &greedy, "/v1/whoami").status, 200);
}
