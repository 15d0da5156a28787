//! Hostile input against the real daemon (invariants 4 and 9): names PostgreSQL cannot store
//! are refused at the edge with an audited 400 and fail no one else's request; requests hyper
//! or axum refuse before any handler still get problem+json; an oversize upload gets its 413
//! over HTTP/2 and HTTP/1.1 every time; and the metrics page passes `promtool check metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::sign::{Client, account, admin, generate, tls_args, write};
use support::{Daemon, Instance, curl, require_tool, s};

/// One answer: status, headers (lower-case names), body, curl's exit code.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    exit: i32,
    /// Shown in assertion messages (through `Debug`).
    #[allow(dead_code)]
    stderr: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a problem+json answer with `status` and returns its document.
    fn problem(&self, status: u16, what: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "{what}: {self:?}");
        self.problem_4xx(what)
    }

    /// Asserts a problem+json refusal (4xx) and returns its document.
    fn problem_4xx(&self, what: &str) -> serde_json::Value {
        let status = self.status;
        assert_eq!(self.exit, 0, "{what}: curl failed: {self:?}");
        assert!((400..500).contains(&status), "{what}: {self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{what}: {self:?}"
        );
        let doc: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {self:?}"));
        assert_eq!(doc["status"], status, "{what}: {doc}");
        assert!(
            doc["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {doc}"
        );
        doc
    }
}

/// Runs curl with `args` and returns the answer with its headers (the last response's).
fn request(dir: &Path, args: &[&str]) -> Answer {
    let head = dir.join(format!("head-{}", std::process::id()));
    let body = dir.join(format!("body-{}", std::process::id()));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "%{http_code}"])
        .args(["-D", s(&head), "-o", s(&body)])
        .args(args)
        .output()
        .expect("run curl");
    let head_text = std::fs::read_to_string(&head).unwrap_or_default();
    let headers = head_text
        .lines()
        .rev()
        .take_while(|l| !l.starts_with("HTTP/"))
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let answer = Answer {
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers,
        body: std::fs::read_to_string(&body).unwrap_or_default(),
        exit: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let _ = std::fs::remove_file(&head);
    let _ = std::fs::remove_file(&body);
    answer
}

/// A request with a client certificate; `extra` before the URL.
fn call(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    extra: &[&str],
    path: &str,
) -> Answer {
    let mut args = tls_args(instance, client);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args.push(daemon.api_url(path));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    request(instance.dir.path(), &refs)
}

/// The audit entry with sequence number `seq`, read by `auditor`.
fn entry(instance: &Instance, daemon: &Daemon, auditor: &Client, seq: u64) -> serde_json::Value {
    let answer = call(
        instance,
        daemon,
        auditor,
        &[],
        &format!("/v1/audit/entries?from={seq}&limit=1"),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    let doc: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    doc["entries"][0].clone()
}

fn audit_verify(instance: &Instance) -> (bool, String) {
    let out = instance
        .command()
        .args(["audit", "verify"])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs one curl process that sends `count` requests to `url` over one kept-alive connection
/// (each with the body of `data`) and returns each request's status.
fn statuses(
    instance: &Instance,
    client: &Client,
    data: &Path,
    url: &str,
    count: usize,
) -> Vec<u16> {
    let mut args = tls_args(instance, client);
    args.extend([
        "-sS".into(),
        "--max-time".into(),
        "120".into(),
        "--data-binary".into(),
        format!("@{}", s(data)),
        "-w".into(),
        "%{http_code}\n".into(),
    ]);
    // `-o` applies to one URL each.
    for _ in 0..count {
        args.extend(["-o".into(), "/dev/null".into(), url.to_owned()]);
    }
    let out = Command::new("curl").args(&args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap_or(0))
        .collect()
}

/// The issue this answers: `POST /v1/sign?ring=%00` once failed the audit writer's whole
/// group, so 4,281 of 5,507 concurrent valid requests got 503, and NUL in a path, a query or a
/// JSON field made the database refuse the query (503). Now each is a 400 at the edge, with
/// its own audit entry, and the valid requests next to it all succeed.
#[test]
fn nul_in_names_is_an_audited_400_and_fails_no_one_else() {
    let instance = Instance::new();
    instance.init();
    generate(&instance, "r", "ec-p256", 2);
    let signer = account(&instance, "signer", "signer:r");
    // No signer role, but it may read the log.
    let nobody = account(&instance, "nobody", "auditor");
    let daemon = instance.serve();
    let data = write(instance.dir.path(), "data", &[7u8; 256]);
    let json = |body: &str| {
        vec![
            "-H".to_owned(),
            "content-type: application/json".to_owned(),
            "--data-binary".to_owned(),
            body.to_owned(),
        ]
    };
    let data_arg = format!("@{}", s(&data));
    let cases: Vec<(&Client, Vec<String>, &str)> = vec![
        (
            &nobody,
            vec!["--data-binary".into(), data_arg.clone()],
            "/v1/sign?ring=%00",
        ),
        (
            &signer,
            vec!["--data-binary".into(), data_arg.clone()],
            "/v1/sign?ring=r%00",
        ),
        (&signer, vec![], "/v1/rings/%00"),
        (&signer, vec![], "/v1/accounts/a%00b"),
        (&signer, vec![], "/v1/keys?ring=%00"),
        (
            &signer,
            vec!["-X".into(), "DELETE".into()],
            "/v1/accounts/%00",
        ),
        (&signer, vec![], "/v1/rings/%ED%A0%80"),
        (&signer, vec![], "/v1/keys?ring=%ED%A0%80"),
        (
            &signer,
            json(r#"{"ring":"\u0000","data":"AA==","signature":"AA=="}"#),
            "/v1/verify",
        ),
        (
            &signer,
            json(r#"{"ring":"\u0000","batch_size":10}"#),
            "/v1/jobs",
        ),
        (
            &signer,
            json(r#"{"ring":"r","items":[{"data":"AA=="}],"hash":"\u0000"}"#),
            "/v1/sign-batch",
        ),
    ];
    for (client, extra, path) in &cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let answer = call(&instance, &daemon, client, &extra, path);
        answer.problem(400, path);
        // The refusal is in the log, under the caller, before the answer.
        let receipt = answer
            .header("audit-receipt")
            .unwrap_or_else(|| panic!("{path}: no receipt: {answer:?}"));
        let seq: u64 = receipt.split(':').next().unwrap().parse().unwrap();
        let logged = entry(&instance, &daemon, &nobody, seq);
        assert_eq!(logged["result"], "error:bad-request", "{path}: {logged}");
        let account = if std::ptr::eq(*client, &nobody) {
            "nobody"
        } else {
            "signer"
        };
        assert_eq!(logged["actor_account"], account, "{path}: {logged}");
    }

    // Valid signing on six connections next to two connections sending `ring=%00`.
    let valid_url = daemon.api_url("/v1/sign?ring=r");
    let nul_url = daemon.api_url("/v1/sign?ring=%00");
    let (valid, refused) = std::thread::scope(|scope| {
        let valid: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| statuses(&instance, &signer, &data, &valid_url, 80)))
            .collect();
        let refused: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| statuses(&instance, &signer, &data, &nul_url, 120)))
            .collect();
        let join = |handles: Vec<std::thread::ScopedJoinHandle<'_, Vec<u16>>>| {
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect::<Vec<u16>>()
        };
        (join(valid), join(refused))
    });
    assert_eq!(valid.len(), 480, "{valid:?}");
    let failed: Vec<&u16> = valid.iter().filter(|s| **s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of 480 valid requests failed: {failed:?}",
        failed.len()
    );
    assert_eq!(refused.len(), 240);
    assert!(refused.iter().all(|s| *s == 400), "{refused:?}");

    let (ok, report) = audit_verify(&instance);
    assert!(ok, "{report}");
}

/// Requests that never reach a handler — refused by hyper's HTTP/1 parser, by the edge's size
/// limits, by axum's extractors — and bodies that nest deeper than anything the API takes, all
/// answered with problem+json.
#[test]
fn malformed_requests_get_problem_json() {
    let instance = Instance::new();
    instance.init();
    let daemon = instance.serve();
    let admin = admin(&instance);
    let big = "a".repeat(100_000);
    let h1 = "--http1.1";

    // Over HTTP/1.1 (hyper answers these itself; curl's HTTP/2 cannot send them at all).
    let cases: Vec<(Vec<String>, String, u16)> = vec![
        (vec![h1.into()], format!("/v1/whoami?x={big}"), 414),
        (vec![h1.into()], format!("/v1/{big}"), 414),
        (vec![h1.into()], "/v1/keys?ring=\"".into(), 400),
        (
            vec![h1.into(), "-H".into(), format!("x-big: {big}")],
            "/v1/whoami".into(),
            431,
        ),
        (vec![h1.into()], "/v1/rings/%ED%A0%80".into(), 400),
        // And over HTTP/2: a long target within what the client sends, a bad path.
        (vec![], format!("/v1/whoami?x={}", &big[..20_000]), 414),
        (vec![], "/v1/rings/%ED%A0%80".into(), 400),
        (vec![], "/v1/accounts/%ED%A0%80".into(), 400),
        (vec!["-X".into(), "DELETE".into()], "/v1/whoami".into(), 405),
        (vec![], "/v1/nothing-here".into(), 404),
    ];
    for (extra, path, status) in &cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let answer = call(&instance, &daemon, &admin, &extra, path);
        answer.problem(*status, &path[..path.len().min(60)]);
    }

    // JSON nested 100,000 deep (over most body limits) and 60,000 deep (within them, refused
    // for its depth): once it closed the connection without an answer; now a problem answer,
    // over both protocols. (Which refusal depends on the endpoint: the revocation of serial
    // 00 may be refused as not found before its body is read.)
    let deep = write(instance.dir.path(), "deep", "[".repeat(100_000).as_bytes());
    let deep_ok = write(
        instance.dir.path(),
        "deep-small",
        "[".repeat(60_000).as_bytes(),
    );
    for path in [
        "/v1/rings",
        "/v1/jobs",
        "/v1/certificates/00/revoke",
        "/v1/sign-batch",
    ] {
        for proto in ["--http2", "--http1.1"] {
            for file in [&deep, &deep_ok] {
                let body = format!("@{}", s(file));
                let answer = call(
                    &instance,
                    &daemon,
                    &admin,
                    &[
                        proto,
                        "-H",
                        "content-type: application/json",
                        "--data-binary",
                        &body,
                    ],
                    path,
                );
                answer.problem_4xx(&format!("{path} {proto} {}", s(file)));
            }
        }
    }

    // The public listener: hyper's parser (a raw space in the target, sent over a plain
    // socket), a bad path for the OCSP GET route, a target over 64 KiB.
    let mut socket = std::net::TcpStream::connect(daemon.addrs.public).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
        .write_all(b"GET /ocsp/a b HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    let _ = socket.read_to_string(&mut raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{raw:?}"));
    assert!(head.starts_with("HTTP/1.1 400 "), "{raw}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{raw}"
    );
    let doc: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(doc["status"], 400);
    for (path, status) in [
        ("/ocsp/%ED%A0%80".to_owned(), 400),
        (format!("/x?{big}"), 414),
        ("/nothing".to_owned(), 404),
    ] {
        let answer = request(instance.dir.path(), &[h1, &daemon.public_url(&path)]);
        answer.problem(status, &path[..path.len().min(40)]);
    }
    let metrics = curl(&[&daemon.metrics_url("/metrics")]).body;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("signetd_http_parse_errors_total{listener=\"api\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let counted: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= 3, "{line}");
}

/// A 150 MB upload over the limit gets its 413 problem answer, over HTTP/2 and over HTTP/1.1
/// chunked, 20 times out of 20 each: the daemon answers, then reads and drops the rest of the
/// body instead of resetting the stream or closing the connection with unread data.
#[test]
fn oversize_uploads_get_413_every_time() {
    let instance = Instance::new();
    instance.init();
    generate(&instance, "r", "ec-p256", 1);
    let signer = account(&instance, "signer", "signer:r");
    let daemon = instance.serve();
    let file = instance.dir.path().join("big");
    {
        let mut f = std::fs::File::create(&file).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..150 {
            f.write_all(&chunk).unwrap();
        }
    }
    let body = format!("@{}", s(&file));
    for round in 0..20 {
        for extra in [
            vec!["--http2"],
            vec!["--http1.1", "-H", "transfer-encoding: chunked"],
        ] {
            let mut args = extra.clone();
            args.extend(["--data-binary", &body]);
            let answer = call(&instance, &daemon, &signer, &args, "/v1/sign?ring=r");
            answer.problem(413, &format!("round {round} {extra:?}"));
        }
    }
    // Refusals before the body is needed (no such ring, no role) also arrive.
    let nobody = account(&instance, "nobody", "auditor");
    for _ in 0..5 {
        call(
            &instance,
            &daemon,
            &signer,
            &["--data-binary", &body],
            "/v1/sign?ring=nope",
        )
        .problem(403, "no role for the ring");
        call(
            &instance,
            &daemon,
            &nobody,
            &["--data-binary", &body],
            "/v1/sign?ring=r",
        )
        .problem(403, "no signer role");
    }
    // And the daemon still signs.
    let small = write(instance.dir.path(), "small", b"still here");
    let answer = call(
        &instance,
        &daemon,
        &signer,
        &["--data-binary", &format!("@{}", s(&small))],
        "/v1/sign?ring=r",
    );
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[test]
fn the_metrics_page_passes_promtool() {
    require_tool("promtool", "prometheus");
    let instance = Instance::new();
    instance.init();
    let daemon = instance.serve();
    // Some traffic first, so labelled series exist.
    let admin = admin(&instance);
    assert_eq!(
        call(&instance, &daemon, &admin, &[], "/v1/whoami").status,
        200
    );
    let page = curl(&[&daemon.metrics_url("/metrics")]);
    assert_eq!(page.status, 200);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
