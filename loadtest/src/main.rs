//! signet-loadtest: goose scenarios against signetd over mTLS — every simulated user presents a
//! client certificate and keeps its own connection alive. Scenarios: `signp256` (256 bytes,
//! ring of P-256 keys), `signrsa2048` (256 bytes, ring of RSA-2048 keys), `signbatchp256`
//! (batches of `LOADTEST_BATCH_ITEMS` items).
//!
//! Configuration comes from the environment (a `signetd dev` instance's `DIR/env` sets the
//! first ones): `SIGNETD_API_URL` (or goose's `--host`), `SIGNETD_CA`, `SIGNETD_CLIENT_CERT`,
//! `SIGNETD_CLIENT_KEY` (a certificate with `signer:` roles for the rings),
//! `LOADTEST_RING_P256` (default `bench-p256`), `LOADTEST_RING_RSA` (default `bench-rsa2048`),
//! `LOADTEST_BATCH_ITEMS` (default 16), `LOADTEST_SUMMARY` (a file to append one JSON line of
//! results to). Everything else is goose's own command line (`--users`, `--run-time`,
//! `--scenarios`, ...). Every request must answer 200; anything else counts as a failure.
//!
//! Only loopback targets are accepted: this tool is for benchmarks on the machine that runs
//! the daemon.

use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Context as _;
use base64::Engine as _;
use goose::prelude::*;

struct Settings {
    ca: Vec<u8>,
    identity: Vec<u8>,
    ring_p256: String,
    ring_rsa: String,
    batch_body: Vec<u8>,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// The 256 bytes every sign request uploads.
const DATA: [u8; 256] = [0x5a; 256];

fn settings() -> Result<&'static Settings, Box<TransactionError>> {
    SETTINGS
        .get()
        .ok_or_else(|| Box::new(TransactionError::Custom("settings are not loaded".into())))
}

fn load_settings() -> anyhow::Result<Settings> {
    let read = |var: &str| -> anyhow::Result<Vec<u8>> {
        let path = std::env::var(var).with_context(|| format!("{var} is not set"))?;
        std::fs::read(&path).with_context(|| format!("reading {var}={path}"))
    };
    let mut identity = read("SIGNETD_CLIENT_CERT")?;
    identity.extend_from_slice(b"\n");
    identity.extend(read("SIGNETD_CLIENT_KEY")?);
    let items: usize = std::env::var("LOADTEST_BATCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let ring_p256 = std::env::var("LOADTEST_RING_P256").unwrap_or_else(|_| "bench-p256".into());
    let item = base64::engine::general_purpose::STANDARD.encode(DATA);
    let batch = serde_json::json!({
        "ring": ring_p256,
        "items": (0..items).map(|_| serde_json::json!({ "data": item })).collect::<Vec<_>>(),
    });
    Ok(Settings {
        ca: read("SIGNETD_CA")?,
        identity,
        ring_p256,
        ring_rsa: std::env::var("LOADTEST_RING_RSA").unwrap_or_else(|_| "bench-rsa2048".into()),
        batch_body: serde_json::to_vec(&batch)?,
    })
}

/// Each user builds its own client with the certificate: one kept-alive mTLS connection per
/// user.
async fn connect(user: &mut GooseUser) -> TransactionResult {
    let s = settings()?;
    let identity = reqwest::Identity::from_pem(&s.identity)?;
    let ca = reqwest::Certificate::from_pem(&s.ca)?;
    let builder = reqwest::Client::builder()
        .identity(identity)
        .tls_certs_only([ca])
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true);
    user.set_client_builder(builder).await?;
    Ok(())
}

async fn post(
    user: &mut GooseUser,
    name: &str,
    path: &str,
    body: Vec<u8>,
    json: bool,
) -> TransactionResult {
    let content_type = if json {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let builder = user
        .get_request_builder(&GooseMethod::Post, path)?
        .header("content-type", content_type)
        .body(body);
    let request = GooseRequest::builder()
        .method(GooseMethod::Post)
        .path(path)
        .name(name)
        .set_request_builder(builder)
        .build();
    let mut goose = user.request(request).await?;
    let failed = match &goose.response {
        Ok(r) if r.status() == 200 => None,
        Ok(r) => Some(format!("status {}", r.status())),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = failed {
        return user.set_failure(&why, &mut goose.request, None, None);
    }
    // Read the body so the connection is reused.
    if let Ok(r) = goose.response {
        let _ = r.bytes().await;
    }
    Ok(())
}

async fn sign_p256(user: &mut GooseUser) -> TransactionResult {
    let path = format!("/v1/sign?ring={}", settings()?.ring_p256);
    post(user, "sign p256", &path, DATA.to_vec(), false).await
}

async fn sign_rsa(user: &mut GooseUser) -> TransactionResult {
    let path = format!("/v1/sign?ring={}", settings()?.ring_rsa);
    post(user, "sign rsa-2048", &path, DATA.to_vec(), false).await
}

async fn sign_batch(user: &mut GooseUser) -> TransactionResult {
    let body = settings()?.batch_body.clone();
    post(user, "sign-batch p256", "/v1/sign-batch", body, true).await
}

fn check_loopback() -> anyhow::Result<()> {
    let mut host = std::env::var("SIGNETD_API_URL").unwrap_or_default();
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        if a == "--host" || a == "-H" {
            host = args.next().unwrap_or_default();
        } else if let Some(h) = a.strip_prefix("--host=") {
            host = h.to_owned();
        }
    }
    if host.is_empty() {
        // No target yet (`--help`, or goose will ask for `--host`).
        return Ok(());
    }
    let authority = host
        .split("://")
        .nth(1)
        .unwrap_or(&host)
        .split('/')
        .next()
        .unwrap_or_default();
    let name = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_matches(['[', ']']);
    let loopback = name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(
        loopback,
        "signet-loadtest only targets the loopback interface, not `{host}`"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    check_loopback()?;
    let settings = load_settings()?;
    SETTINGS
        .set(settings)
        .map_err(|_| anyhow::anyhow!("settings loaded twice"))?;
    let mut attack = GooseAttack::initialize()?
        .register_scenario(
            scenario!("SignP256")
                .register_transaction(transaction!(connect).set_on_start())
                .register_transaction(transaction!(sign_p256)),
        )
        .register_scenario(
            scenario!("SignRsa2048")
                .register_transaction(transaction!(connect).set_on_start())
                .register_transaction(transaction!(sign_rsa)),
        )
        .register_scenario(
            scenario!("SignBatchP256")
                .register_transaction(transaction!(connect).set_on_start())
                .register_transaction(transaction!(sign_batch)),
        );
    if let Ok(url) = std::env::var("SIGNETD_API_URL") {
        attack = *attack.set_default(GooseDefault::Host, url.as_str())?;
    }
    let started = Instant::now();
    let metrics = attack.execute().await?;
    let wall = started.elapsed().as_secs_f64();
    for (name, m) in &metrics.requests {
        let d = &m.raw_data;
        let seconds = if metrics.duration > 0 {
            metrics.duration as f64
        } else {
            wall
        };
        let line = serde_json::json!({
            "request": name,
            "users": metrics.maximum_users,
            "requests": d.counter,
            "ok": m.success_count,
            "failed": m.fail_count,
            "seconds": seconds,
            "per_second": m.success_count as f64 / seconds.max(0.001),
            "p50_ms": d.percentile_us(0.50) as f64 / 1000.0,
            "p99_ms": d.percentile_us(0.99) as f64 / 1000.0,
        });
        println!("{line}");
        if let Ok(path) = std::env::var("LOADTEST_SUMMARY") {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {path}"))?;
            writeln!(f, "{line}")?;
        }
    }
    Ok(())
}
