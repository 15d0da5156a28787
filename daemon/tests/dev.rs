//! `signetd dev` on a new directory serves within 30 s; the curl line it prints works as
//! printed; `. DIR/env` and the same curl with the variables works; a second run reuses DIR.
//! `signetd hsm-bench` prints the token ceiling for 1 and 2 sessions and the verification
//! rate; with `--token-keys` it removes its keys afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Every file under `dir`.
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

struct Dev {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Dev {
    fn start(dir: &std::path::Path) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_signetd"))
            .args(["dev", "--dir", support::s(dir)])
            .env_remove("SOFTHSM2_CONF")
            .env_remove("SIGNETD_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Dev { child, lines }
    }

    /// The printed lines up to the first blank line after the curl lines.
    fn banner(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let done = line.starts_with("Ctrl-C");
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("signetd dev did not print its banner in time: {seen:?}");
    }

    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "signetd dev exited with {status}");
    }
}

fn sh(line: &str) -> String {
    let out = Command::new("sh").args(["-c", line]).output().unwrap();
    assert!(
        out.status.success(),
        "`{line}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dev_serves_quickly_and_its_printed_lines_work() {
    support::require_tool("curl", "curl");
    let tmp = tempfile::Builder::new()
        .prefix("signetd-dev-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("instance");

    for round in 0..2 {
        let started = Instant::now();
        let dev = Dev::start(&dir);
        let banner = dev.banner(Duration::from_secs(30));
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(30),
            "round {round}: took {elapsed:?}"
        );

        let curl_line = banner
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with("curl --cacert"))
            .expect("a curl line");
        let who: serde_json::Value = serde_json::from_str(&sh(curl_line)).unwrap();
        assert_eq!(who["account"], "admin", "round {round}");

        let env_line = banner
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with(". ") && l.contains("$SIGNETD_API_URL"))
            .expect("an env line");
        let who: serde_json::Value = serde_json::from_str(&sh(env_line)).unwrap();
        assert_eq!(who["account"], "admin", "round {round}");

        // Every variable the env file promises is set and points at something real.
        let env = sh(&format!(
            ". {}/env && printf '%s\\n' \"$SIGNETD_API_URL\" \"$SIGNETD_PUBLIC_URL\" \"$SIGNETD_METRICS_URL\" \"$SIGNETD_CA\" \"$SIGNETD_CLIENT_CERT\" \"$SIGNETD_CLIENT_KEY\" \"$SOFTHSM2_CONF\" \"$SIGNETD_DATABASE_URL\"",
            support::s(&dir)
        ));
        let vars: Vec<&str> = env.lines().collect();
        assert_eq!(vars.len(), 8, "{env}");
        assert!(vars.iter().all(|v| !v.is_empty()), "{env}");
        for file in &vars[3..7] {
            assert!(std::path::Path::new(file).is_file(), "{file}");
        }
        let ready = sh(&format!(
            ". {}/env && curl -sS \"$SIGNETD_PUBLIC_URL/readyz\"",
            support::s(&dir)
        ));
        assert!(ready.contains("\"ready\""), "{ready}");
        // The metrics variable is the scrape URL itself.
        let metrics = sh(&format!(
            ". {}/env && curl -sS --fail \"$SIGNETD_METRICS_URL\"",
            support::s(&dir)
        ));
        assert!(metrics.contains("signetd_hsm_token_up"), "{metrics}");
        // The README's `signetd ...` lines work as written once the env file is sourced: the
        // binary that made the instance is on PATH.
        let keys = sh(&format!(
            "PATH=/usr/bin:/bin; . {}/env && signetd keys list --json",
            support::s(&dir)
        ));
        assert!(keys.trim_start().starts_with('['), "{keys}");

        if round == 0 {
            // The token ceiling, through the env file, for 1 and 2 sessions.
            let bench = sh(&format!(
                ". {}/env && {} hsm-bench --seconds 0.3 --algorithms ec-p256,ec-p384,ed25519,rsa-2048",
                support::s(&dir),
                env!("CARGO_BIN_EXE_signetd")
            ));
            // Each algorithm under its default scheme (P-384 signs a SHA-384 digest).
            for alg in ["ec-p256", "ec-p384", "ed25519", "rsa-2048"] {
                for sessions in ["1", "2"] {
                    let row = bench
                        .lines()
                        .find(|l| {
                            let cols: Vec<&str> = l.split_whitespace().collect();
                            cols.first() == Some(&alg) && cols.get(1) == Some(&sessions)
                        })
                        .unwrap_or_else(|| panic!("no {alg}/{sessions} row: {bench}"));
                    let cols: Vec<&str> = row.split_whitespace().collect();
                    assert_eq!(cols[2], "session", "{row}");
                    let rate: f64 = cols[4].parse().unwrap();
                    assert!(rate > 0.0, "{row}");
                    let verify: f64 = cols[5].parse().unwrap();
                    assert!(verify > 0.0, "{row}");
                    // The crypto floor: below both the signing rate and the cores' verification.
                    let floor: f64 = cols[6].parse().unwrap();
                    let cores = std::thread::available_parallelism().unwrap().get() as f64;
                    let expected = 1.0 / (1.0 / rate + 1.0 / (cores * verify));
                    assert!(
                        (floor - expected).abs() <= 1.0 + expected * 0.01,
                        "floor {floor}, expected {expected}: {row}"
                    );
                    assert!(cols[7].parse::<f64>().unwrap() > 0.0, "{row}");
                }
            }
            // The same as JSON, for scripts: the floor from the two rates it names.
            let json = sh(&format!(
                ". {}/env && {} hsm-bench --seconds 0.2 --sessions 2 --algorithms ec-p256 --json",
                support::s(&dir),
                env!("CARGO_BIN_EXE_signetd")
            ));
            let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
            let r = &rows[0];
            let (s, v) = (
                r["per_second"].as_f64().unwrap(),
                r["verify_per_second"].as_f64().unwrap(),
            );
            let n = r["cores"].as_f64().unwrap();
            let f = r["floor_per_second"].as_f64().unwrap();
            assert!(s > 0.0 && v > 0.0 && n >= 1.0, "{json}");
            assert!(
                (f - 1.0 / (1.0 / s + 1.0 / (n * v))).abs() < 1e-6 * f,
                "{json}"
            );
            assert!(r["sign_cpu_us"].as_f64().unwrap() > 0.0, "{json}");
            // With token objects, as the daemon's keys are: measured, then removed again.
            let objects = || {
                walk_files(&dir.join("softhsm"))
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "object"))
                    .count()
            };
            let before = objects();
            let bench = sh(&format!(
                ". {}/env && {} hsm-bench --seconds 0.3 --sessions 2 --algorithms ec-p256 --token-keys",
                support::s(&dir),
                env!("CARGO_BIN_EXE_signetd")
            ));
            let row = bench
                .lines()
                .find(|l| l.starts_with("ec-p256"))
                .unwrap_or_else(|| panic!("no ec-p256 row: {bench}"));
            let cols: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cols[..3], ["ec-p256", "2", "token"], "{row}");
            assert!(cols[4].parse::<f64>().unwrap() > 0.0, "{row}");
            assert!(before > 0);
            assert_eq!(
                objects(),
                before,
                "hsm-bench --token-keys left objects behind"
            );
        }
        dev.stop();
    }
    // PostgreSQL stopped with the daemon.
    assert!(
        !signet_pgcluster::Cluster::create_or_open(&dir.join("pg"))
            .unwrap()
            .is_running()
            .unwrap()
    );
}
