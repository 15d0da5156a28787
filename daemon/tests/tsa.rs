//! The time-stamping authority (RFC 3161) checked by OpenSSL: `openssl ts -query` (with and
//! without a nonce, with certReq) → `POST /v1/timestamp` → `openssl ts -verify -data FILE`
//! against the CA and the TSA certificate from the public listener succeeds, and fails for
//! another file; `openssl ts -reply -text` shows the configured policy, the nonce and the
//! accuracy. Rejections in the protocol (an unsupported hash, a policy not offered, a body
//! that is not a request, a clock behind the last stamp) and in HTTP (content type, size,
//! role). A timestamped CMS signature (CAdES-T) verifies with `openssl cms`, and its token
//! with `openssl ts -verify -digest` of the signature value. Two daemons on one database
//! stamp concurrently with no serial number repeated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use support::cms::{cms_verify, openssl};
use support::jobs::sql;
use support::sign::{Client, account, assert_problem, call, generate, post_file, write};
use support::{CurlResult, Daemon, Instance, curl, require_tool, s};

const POLICY: &str = "1.3.6.1.4.1.99999.7.1";
const OTHER_POLICY: &str = "1.3.6.1.4.1.99999.7.2";

/// `openssl ts -query` of `data` with `args`, written next to it.
fn query(data: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = data.with_file_name(format!("{name}.tsq"));
    let mut all = vec!["ts", "-query", "-data", s(data), "-out", s(&out)];
    all.extend_from_slice(args);
    let (ok, _, err) = openssl(&all);
    assert!(ok, "openssl ts -query {args:?}: {err}");
    out
}

/// `POST /v1/timestamp` as one client.
struct Stamper<'a> {
    instance: &'a Instance,
    daemon: &'a Daemon,
    client: &'a Client,
}

impl Stamper<'_> {
    /// POSTs the DER request at `request` with `content_type`; the reply goes to `reply`.
    fn post_as(&self, request: &Path, content_type: &str, reply: &Path) -> CurlResult {
        let header = format!("content-type: {content_type}");
        let body = format!("@{}", s(request));
        let r = call(
            self.instance,
            self.client,
            &["-H", &header, "--data-binary", &body, "-o", s(reply)],
            &self.daemon.api_url("/v1/timestamp"),
        );
        CurlResult {
            body: std::fs::read_to_string(reply).unwrap_or_default(),
            ..r
        }
    }

    /// POSTs the request at `request` as a time-stamp query; the reply goes to `reply`.
    fn post(&self, request: &Path, reply: &Path) -> CurlResult {
        self.post_as(request, "application/timestamp-query", reply)
    }
}

/// `openssl ts -reply -in REPLY -text`.
fn reply_text(reply: &Path) -> String {
    let (ok, out, err) = openssl(&["ts", "-reply", "-in", s(reply), "-text"]);
    assert!(ok, "openssl ts -reply: {err}");
    out
}

/// `openssl ts -verify`: (success, output).
fn ts_verify(args: &[&str], ca: &Path, tsa: &Path) -> (bool, String) {
    let mut all = vec!["ts", "-verify"];
    all.extend_from_slice(args);
    all.extend(["-CAfile", s(ca), "-untrusted", s(tsa)]);
    let (ok, out, err) = openssl(&all);
    (
        ok && out.contains("Verification: OK"),
        format!("{out}{err}"),
    )
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map_or("", str::trim)
}

#[test]
fn rfc3161_time_stamps_verify_with_openssl() {
    require_tool("openssl", "openssl");
    let instance = Instance::new();
    let mut config = std::fs::read_to_string(&instance.config_path).unwrap();
    config.push_str(&format!(
        "\n[tsa]\npolicy = \"{POLICY}\"\naccepted_policies = [\"{OTHER_POLICY}\"]\naccuracy_millis = 1500\n"
    ));
    std::fs::write(&instance.config_path, config).unwrap();
    instance.init();
    let key = generate(&instance, "docs", "ec-p256", 1).remove(0);
    let stamper = account(&instance, "stamper", "timestamper,signer:docs");
    let nobody = account(&instance, "nobody", "signer:docs");
    let daemon = instance.serve();
    let me = Stamper {
        instance: &instance,
        daemon: &daemon,
        client: &stamper,
    };
    let outsider = Stamper {
        instance: &instance,
        daemon: &daemon,
        client: &nobody,
    };
    let dir = instance.dir.path();
    let ca = write(
        dir,
        "ca.pem",
        curl(&[&daemon.public_url("/ca.pem")]).body.as_bytes(),
    );
    let tsa = write(
        dir,
        "tsa.pem",
        curl(&[&daemon.public_url("/tsa.pem")]).body.as_bytes(),
    );
    let (ok, text, err) = openssl(&["x509", "-in", s(&tsa), "-noout", "-text"]);
    assert!(ok, "{err}");
    assert!(
        text.contains("X509v3 Extended Key Usage: critical") && text.contains("Time Stamping"),
        "{text}"
    );
    let data = write(dir, "report.pdf", b"%PDF-1.7 quarterly report");
    let other = write(dir, "other.pdf", b"%PDF-1.7 quarterly rep0rt");

    // With a nonce (OpenSSL's default) and with -no_nonce; certReq both times.
    for (name, args) in [
        ("nonce", &["-sha256", "-cert"][..]),
        ("no-nonce", &["-sha512", "-cert", "-no_nonce"][..]),
    ] {
        let q = query(&data, name, args);
        let reply = dir.join(format!("{name}.tsr"));
        let r = me.post(&q, &reply);
        assert_eq!(r.status, 200, "{name}: {r:?}");
        let text = reply_text(&reply);
        assert!(text.contains("Status: Granted."), "{name}: {text}");
        assert_eq!(field(&text, "Policy OID:"), POLICY, "{text}");
        assert_eq!(
            field(&text, "Accuracy:"),
            "0x01 seconds, 0x01F4 millis, unspecified micros",
            "{text}"
        );
        let (ok, qtext, err) = openssl(&["ts", "-query", "-in", s(&q), "-text"]);
        assert!(ok, "{err}");
        assert_eq!(
            field(&text, "Nonce:"),
            field(&qtext, "Nonce:"),
            "{qtext}\n{text}"
        );
        if name == "no-nonce" {
            assert_eq!(field(&text, "Nonce:"), "unspecified", "{text}");
        } else {
            assert!(field(&text, "Nonce:").starts_with("0x"), "{text}");
        }
        let (good, out) = ts_verify(&["-data", s(&data), "-in", s(&reply)], &ca, &tsa);
        assert!(good, "{name}: {out}");
        let (good, _) = ts_verify(&["-data", s(&other), "-in", s(&reply)], &ca, &tsa);
        assert!(!good, "{name}: openssl accepted the stamp for another file");
        let (good, out) = ts_verify(&["-queryfile", s(&q), "-in", s(&reply)], &ca, &tsa);
        assert!(good, "{name} -queryfile: {out}");
    }

    // Without certReq the token carries no certificate; -untrusted supplies it.
    let q = query(&data, "nocert", &["-sha256"]);
    let reply = dir.join("nocert.tsr");
    let r = me.post(&q, &reply);
    assert_eq!(r.status, 200, "{r:?}");
    let (good, out) = ts_verify(&["-data", s(&data), "-in", s(&reply)], &ca, &tsa);
    assert!(good, "no certReq: {out}");

    // A policy the TSA accepts besides its own.
    let q = query(
        &data,
        "policy",
        &["-sha256", "-cert", "-tspolicy", OTHER_POLICY],
    );
    let reply = dir.join("policy.tsr");
    let r = me.post(&q, &reply);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(field(&reply_text(&reply), "Policy OID:"), OTHER_POLICY);

    // Rejections in the protocol: HTTP 200, status rejection, the right failure.
    let garbage = write(dir, "garbage.tsq", b"\x30\x03\x02\x01");
    for (name, request, failure) in [
        (
            "sha1",
            query(&data, "sha1", &["-sha1", "-cert"]),
            "unrecognized or unsupported algorithm",
        ),
        (
            "policy",
            query(&data, "badpolicy", &["-sha256", "-tspolicy", "1.2.3.4"]),
            "the requested TSA policy is not supported by the TSA",
        ),
        (
            "garbage",
            garbage,
            "the data submitted has the wrong format",
        ),
    ] {
        let reply = dir.join(format!("rejected-{name}.tsr"));
        let r = me.post(&request, &reply);
        assert_eq!(r.status, 200, "{name}: {r:?}");
        let text = reply_text(&reply);
        assert!(text.contains("Status: Rejected."), "{name}: {text}");
        assert!(text.contains(failure), "{name}: {text}");
        assert!(text.contains("TST info:\nNot included."), "{name}: {text}");
    }

    // A clock behind the last stamp: timeNotAvailable, nothing stamped.
    sql(
        &instance,
        "UPDATE tsa_clock SET last_time = now() + interval '1 hour'",
    );
    let q = query(&data, "clock", &["-sha256"]);
    let reply = dir.join("clock.tsr");
    let r = me.post(&q, &reply);
    assert_eq!(r.status, 200, "{r:?}");
    let text = reply_text(&reply);
    assert!(text.contains("Status: Rejected."), "{text}");
    assert!(text.contains("time source is not available"), "{text}");
    sql(
        &instance,
        "UPDATE tsa_clock SET last_time = now() - interval '1 second'",
    );

    // Refusals in HTTP: problem+json.
    let q = query(&data, "http", &["-sha256"]);
    let out = dir.join("refused.json");
    let r = me.post_as(&q, "application/octet-stream", &out);
    assert_problem(&r, 415, "application/timestamp-query");
    let big = write(dir, "big.tsq", &vec![0x30; 20_000]);
    let r = me.post(&big, &out);
    assert_problem(&r, 413, "limited to");
    let r = outsider.post(&q, &out);
    assert_problem(&r, 403, "timestamper");

    // CAdES-T: the CMS signature verifies; its token stamps the signature value.
    let p7s = dir.join("report.p7s");
    let path = format!("/v1/sign?key_id={key}&format=cms&timestamp=true");
    let r = post_file(&instance, &daemon, &stamper, &path, &data, false, &p7s);
    assert_eq!(r.status, 200, "{r:?}");
    // (A P-256 key: OpenSSL verifies it whole, the signer certificate is not needed.)
    let (ok, out) = cms_verify(&p7s, "DER", &data, &ca, &ca);
    assert!(ok, "openssl cms -verify of a timestamped signature: {out}");
    let sig = signetd::formats::cms::CmsSignature::parse(&std::fs::read(&p7s).unwrap()).unwrap();
    let token = sig
        .unsigned_attribute(signetd::formats::tsp::ID_AA_SIGNATURE_TIME_STAMP_TOKEN)
        .unwrap()
        .expect("a signature time-stamp token");
    let token = write(dir, "token.der", &token);
    let digest = hex::encode(signetd::crypto::HashAlg::Sha256.digest(sig.signature_value()));
    let (good, out) = ts_verify(
        &["-in", s(&token), "-token_in", "-digest", &digest],
        &ca,
        &tsa,
    );
    assert!(good, "the signature time-stamp: {out}");
    let wrong = hex::encode([0u8; 32]);
    let (good, _) = ts_verify(
        &["-in", s(&token), "-token_in", "-digest", &wrong],
        &ca,
        &tsa,
    );
    assert!(!good, "openssl accepted the token for another digest");

    // Counted.
    let metrics = curl(&[&daemon.metrics_url("/metrics")]).body;
    let count = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        count("signetd_tsa_tokens_total{source=\"timestamp\"}"),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        count("signetd_tsa_tokens_total{source=\"cms\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(count("signetd_tsa_rejections_total"), 4.0, "{metrics}");
}

#[test]
fn two_daemons_stamp_concurrently_without_repeating_a_serial() {
    require_tool("openssl", "openssl");
    let instance = Instance::new();
    instance.init();
    let stamper = account(&instance, "stamper", "timestamper");
    let a = instance.serve();
    let b = instance.serve();
    let dir = instance.dir.path().to_owned();
    let data = write(&dir, "data.txt", b"stamp me");
    let q = query(&data, "q", &["-sha256"]);
    const PER_THREAD: usize = 20;
    let serials: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .enumerate()
            .map(|(t, daemon)| {
                let (instance, stamper, q, dir) = (&instance, &stamper, &q, &dir);
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let reply = dir.join(format!("r-{t}-{i}.tsr"));
                            let r = Stamper {
                                instance,
                                daemon,
                                client: stamper,
                            }
                            .post(q, &reply);
                            assert_eq!(r.status, 200, "{r:?}");
                            let text = reply_text(&reply);
                            assert!(text.contains("Status: Granted."), "{text}");
                            field(&text, "Serial number:").to_owned()
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
    let distinct: BTreeSet<&String> = serials.iter().collect();
    assert_eq!(serials.len(), 4 * PER_THREAD);
    assert_eq!(
        distinct.len(),
        serials.len(),
        "a serial number was issued twice: {serials:?}"
    );
    // Both daemons served some of them.
    for daemon in [&a, &b] {
        let metrics = curl(&[&daemon.metrics_url("/metrics")]).body;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("signetd_tsa_tokens_total{source=\"timestamp\"} 40")),
            "{metrics}"
        );
    }
}
