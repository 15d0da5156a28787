//! signet-loadtest: goose scenarios against signetd over mTLS — every simulated user presents a
//! client certificate and keeps its own connection alive. Scenarios: `signp256` (256 bytes,
//! ring of P-256 keys), `signrsa2048` (256 bytes, ring of RSA-2048 keys), `signbatchp256`
//! (batches of `LOADTEST_BATCH_ITEMS` items). The formats benchmark, each on the keys of one
//! ring with 1 KiB of data: `signopenpgprsa2048` and `signopenpgped25519` (the albs-sign-file
//! endpoint: `POST /sign?keyid=<OpenPGP key id>` with a multipart `file` part, answered by an
//! armored detached signature), and `signrawrsa2048` and `signrawed25519` (`POST
//! /v1/sign?key_id=<id>` of the same 1 KiB as the body). Their keys are listed at start-up
//! (`GET /v1/keys?ring=R`, active keys in id order) and goose user `i` signs with key
//! `i mod keys` in both, so a format and its raw counterpart compare like for like.
//! `timestamp` posts an RFC 3161 `TimeStampReq` (SHA-256 imprint, a nonce, no certificates
//! asked for) to `POST /v1/timestamp` (the client certificate needs the `timestamper` role);
//! the answer must be a `TimeStampResp` whose status is granted.
//!
//! Configuration comes from the environment (a `signetd dev` instance's `DIR/env` sets the
//! first ones): `SIGNETD_API_URL` (or goose's `--host`), `SIGNETD_CA`, `SIGNETD_CLIENT_CERT`,
//! `SIGNETD_CLIENT_KEY` (a certificate with `signer:` roles for the rings),
//! `LOADTEST_RING_P256` (default `bench-p256`), `LOADTEST_RING_RSA` (default `bench-rsa2048`),
//! `LOADTEST_RING_ED25519` (default `bench-ed25519`), `LOADTEST_BATCH_ITEMS` (default 16), `LOADTEST_SUMMARY` (a file to append one JSON line of
//! results to). Everything else is goose's own command line (`--users`, `--run-time`,
//! `--scenarios`, ...). Every request must answer 200 (and an OpenPGP one an armored
//! signature); anything else counts as a failure. A ring that a scenario named in `--scenarios`
//! needs must list at least one active key, or the tool stops before the load; without
//! `--scenarios`, the formats scenarios of a ring that cannot be listed are left out (with a
//! warning).
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
    ring_ed25519: String,
    batch_body: Vec<u8>,
    /// The multipart/form-data body of the formats scenarios: one `file` part of `DATA_1K`,
    /// built once.
    form_body: Vec<u8>,
    /// Its `Content-Type`, naming the boundary.
    form_content_type: String,
    /// The keys of `ring_rsa` and `ring_ed25519` (empty when no formats scenario needs them).
    keys_rsa: Vec<BenchKey>,
    keys_ed25519: Vec<BenchKey>,
}

/// One ring key of the formats scenarios: the request paths that sign with it.
struct BenchKey {
    /// `/v1/sign?key_id=<id>`.
    raw_path: String,
    /// `/sign?keyid=<OpenPGP key id>` (the albs-sign-file surface).
    albs_path: String,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// The 256 bytes every sign request uploads.
const DATA: [u8; 256] = [0x5a; 256];

/// The 1 KiB the formats scenarios sign (raw body, or the multipart `file` part).
const DATA_1K: [u8; 1024] = [0x5a; 1024];

/// The fixed multipart boundary of `Settings::form_body` (not found in `DATA_1K`).
const FORM_BOUNDARY: &str = "signet-loadtest-3f9c0d7e2b5a4816";

/// What an armored detached signature begins with.
const ARMOR_HEADER: &[u8] = b"-----BEGIN PGP SIGNATURE-----";

/// The DER `TimeStampReq` of the `timestamp` scenario: version 1, a SHA-256 message imprint
/// (of 32 bytes 0x5a: the TSA never sees the data), nonce 0x0102030405060708, certReq absent
/// (false).
const TIMESTAMP_QUERY: [u8; 66] = {
    let mut q = [0u8; 66];
    let head: [u8; 24] = [
        0x30, 0x40, // TimeStampReq, 64 bytes
        0x02, 0x01, 0x01, // version 1
        0x30, 0x31, // messageImprint, 49 bytes
        0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
        0x00, // sha256, NULL parameters
        0x04, 0x20, // hashedMessage, 32 bytes
    ];
    let mut i = 0;
    while i < head.len() {
        q[i] = head[i];
        i += 1;
    }
    while i < 24 + 32 {
        q[i] = 0x5a;
        i += 1;
    }
    let nonce: [u8; 10] = [0x02, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
    let mut j = 0;
    while j < nonce.len() {
        q[i + j] = nonce[j];
        j += 1;
    }
    q
};

/// Whether `der` is a `TimeStampResp` whose PKIStatusInfo says granted (0) or grantedWithMods
/// (1): SEQUENCE { SEQUENCE { INTEGER status, ... }, ... }.
fn timestamp_granted(der: &[u8]) -> bool {
    /// The header length of the element at the start of `b` with tag `tag`, if it is one.
    fn header(b: &[u8], tag: u8) -> Option<usize> {
        if *b.first()? != tag {
            return None;
        }
        let first = *b.get(1)?;
        Some(if first < 0x80 {
            2
        } else {
            2 + usize::from(first & 0x7f)
        })
    }
    let status = header(der, 0x30)
        .and_then(|outer| Some(outer + header(der.get(outer..)?, 0x30)?))
        .and_then(|at| der.get(at..at + 3));
    matches!(status, Some([0x02, 0x01, 0 | 1]))
}

/// The ring whose keys a formats scenario signs with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FormatsRing {
    Rsa,
    Ed25519,
}

/// The formats scenarios (goose machine names) and the ring each signs with.
const FORMATS_SCENARIOS: [(&str, FormatsRing); 4] = [
    ("signopenpgprsa2048", FormatsRing::Rsa),
    ("signrawrsa2048", FormatsRing::Rsa),
    ("signopenpgped25519", FormatsRing::Ed25519),
    ("signrawed25519", FormatsRing::Ed25519),
];

/// One multipart/form-data body holding `data` as the part `file`.
fn form_body(data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(data.len() + 256);
    body.extend_from_slice(
        format!(
            "--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"bench.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{FORM_BOUNDARY}--\r\n").as_bytes());
    body
}

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
        ring_ed25519: std::env::var("LOADTEST_RING_ED25519")
            .unwrap_or_else(|_| "bench-ed25519".into()),
        batch_body: serde_json::to_vec(&batch)?,
        form_body: form_body(&DATA_1K),
        form_content_type: format!("multipart/form-data; boundary={FORM_BOUNDARY}"),
        keys_rsa: Vec::new(),
        keys_ed25519: Vec::new(),
    })
}

/// The active keys of `ring`, in id order, through `GET /v1/keys?ring=R` with the load test's
/// client certificate.
async fn list_keys(s: &Settings, host: &str, ring: &str) -> anyhow::Result<Vec<BenchKey>> {
    anyhow::ensure!(
        !ring.is_empty()
            && ring
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "ring name `{ring}`: use letters, digits, `-`, `_` and `.`"
    );
    let client = reqwest::Client::builder()
        .identity(reqwest::Identity::from_pem(&s.identity).context("client certificate")?)
        .tls_certs_only([reqwest::Certificate::from_pem(&s.ca).context("SIGNETD_CA")?])
        .build()?;
    let url = format!("{}/v1/keys?ring={ring}", host.trim_end_matches('/'));
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .with_context(|| format!("GET {url}: reading the answer"))?;
    anyhow::ensure!(
        status == 200,
        "GET {url}: status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let listing: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
    let field = |k: &serde_json::Value, name: &str| -> anyhow::Result<String> {
        k.get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("GET {url}: a key without `{name}`"))
    };
    let mut keys = Vec::new();
    for k in listing
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .with_context(|| format!("GET {url}: no `keys` array"))?
    {
        if field(k, "state")? == "active" {
            keys.push((field(k, "id")?, field(k, "openpgp_key_id")?));
        }
    }
    keys.sort();
    anyhow::ensure!(!keys.is_empty(), "ring {ring} has no active key");
    Ok(keys
        .into_iter()
        .map(|(id, openpgp)| BenchKey {
            raw_path: format!("/v1/sign?key_id={id}"),
            albs_path: format!("/sign?keyid={openpgp}"),
        })
        .collect())
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
    send(user, name, path, content_type, body, Expect::Any).await
}

/// What an answer must be besides 200.
#[derive(Clone, Copy)]
enum Expect {
    /// Anything.
    Any,
    /// An armored OpenPGP signature.
    Armored,
    /// A granted `TimeStampResp`.
    Granted,
}

/// Posts `body`; the answer must be 200 and what `expect` says.
async fn send(
    user: &mut GooseUser,
    name: &str,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
    expect: Expect,
) -> TransactionResult {
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
        let answer = r.bytes().await;
        let why = match (&answer, expect) {
            (Err(e), _) => Some(e.to_string()),
            (Ok(b), Expect::Armored) if !b.starts_with(ARMOR_HEADER) => {
                Some("the answer is not an armored OpenPGP signature".to_owned())
            }
            (Ok(b), Expect::Granted) if !timestamp_granted(b) => {
                Some("the answer is not a granted TimeStampResp".to_owned())
            }
            _ => None,
        };
        if let Some(why) = why {
            return user.set_failure(&why, &mut goose.request, None, None);
        }
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

async fn timestamp(user: &mut GooseUser) -> TransactionResult {
    let query = TIMESTAMP_QUERY.to_vec();
    let (path, content_type) = ("/v1/timestamp", "application/timestamp-query");
    send(
        user,
        "timestamp",
        path,
        content_type,
        query,
        Expect::Granted,
    )
    .await
}

async fn sign_batch(user: &mut GooseUser) -> TransactionResult {
    let body = settings()?.batch_body.clone();
    post(user, "sign-batch p256", "/v1/sign-batch", body, true).await
}

/// The paths of the key user `user` signs with in `ring` (key `user index mod keys`).
fn key_for(
    user: &GooseUser,
    ring: FormatsRing,
) -> Result<&'static BenchKey, Box<TransactionError>> {
    let s = settings()?;
    let (keys, name) = match ring {
        FormatsRing::Rsa => (&s.keys_rsa, &s.ring_rsa),
        FormatsRing::Ed25519 => (&s.keys_ed25519, &s.ring_ed25519),
    };
    if keys.is_empty() {
        return Err(Box::new(TransactionError::Custom(format!(
            "no keys of ring {name} were listed (is a target host set?)"
        ))));
    }
    Ok(&keys[user.weighted_users_index % keys.len()])
}

/// The albs-sign-file request: `POST /sign?keyid=K`, multipart `file` of 1 KiB.
async fn sign_openpgp(user: &mut GooseUser, ring: FormatsRing, name: &str) -> TransactionResult {
    let key = key_for(user, ring)?;
    let s = settings()?;
    let body: &'static [u8] = &s.form_body;
    send(
        user,
        name,
        &key.albs_path,
        &s.form_content_type,
        body,
        Expect::Armored,
    )
    .await
}

/// Its raw counterpart on the same key: `POST /v1/sign?key_id=ID` of the same 1 KiB.
async fn sign_raw(user: &mut GooseUser, ring: FormatsRing, name: &str) -> TransactionResult {
    let key = key_for(user, ring)?;
    let body: &'static [u8] = &DATA_1K;
    send(
        user,
        name,
        &key.raw_path,
        "application/octet-stream",
        body,
        Expect::Any,
    )
    .await
}

async fn sign_openpgp_rsa(user: &mut GooseUser) -> TransactionResult {
    sign_openpgp(user, FormatsRing::Rsa, "albs sign openpgp rsa-2048").await
}

async fn sign_raw_rsa(user: &mut GooseUser) -> TransactionResult {
    sign_raw(user, FormatsRing::Rsa, "sign raw 1k rsa-2048").await
}

async fn sign_openpgp_ed25519(user: &mut GooseUser) -> TransactionResult {
    sign_openpgp(user, FormatsRing::Ed25519, "albs sign openpgp ed25519").await
}

async fn sign_raw_ed25519(user: &mut GooseUser) -> TransactionResult {
    sign_raw(user, FormatsRing::Ed25519, "sign raw 1k ed25519").await
}

/// The `--scenarios` patterns of the command line, lower-cased (empty: every scenario).
fn scenario_patterns() -> Vec<String> {
    let mut patterns = Vec::new();
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        let list = if a == "--scenarios" {
            args.next().unwrap_or_default()
        } else if let Some(l) = a.strip_prefix("--scenarios=") {
            l.to_owned()
        } else {
            continue;
        };
        patterns.extend(
            list.split(',')
                .map(|p| p.trim().to_lowercase())
                .filter(|p| !p.is_empty()),
        );
    }
    patterns
}

/// goose's `--scenarios` match: the whole name, `*` standing for any run of characters.
fn pattern_matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| pattern_matches(rest, &name[i..])),
        Some((c, rest)) => name
            .split_first()
            .is_some_and(|(n, name)| n == c && pattern_matches(rest, name)),
    }
}

fn check_loopback() -> anyhow::Result<String> {
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
        return Ok(host);
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
    Ok(host)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let host = check_loopback()?;
    let mut settings = load_settings()?;
    // The keys of the formats scenarios that will run, listed before the load.
    let patterns = scenario_patterns();
    let selected = |name: &str| {
        patterns
            .iter()
            .any(|p| pattern_matches(p.as_bytes(), name.as_bytes()))
    };
    // Nothing to list for goose's own informational options.
    let informational = std::env::args()
        .any(|a| ["--help", "-h", "--scenarios-list", "--version", "-V"].contains(&a.as_str()));
    let mut left_out = Vec::new();
    for ring in [FormatsRing::Rsa, FormatsRing::Ed25519] {
        let names = FORMATS_SCENARIOS
            .iter()
            .filter(|(_, r)| *r == ring)
            .map(|(n, _)| *n);
        let explicit = names.clone().any(selected);
        if host.is_empty() || informational || !(explicit || patterns.is_empty()) {
            continue;
        }
        let name = match ring {
            FormatsRing::Rsa => settings.ring_rsa.clone(),
            FormatsRing::Ed25519 => settings.ring_ed25519.clone(),
        };
        match list_keys(&settings, &host, &name).await {
            Ok(keys) => match ring {
                FormatsRing::Rsa => settings.keys_rsa = keys,
                FormatsRing::Ed25519 => settings.keys_ed25519 = keys,
            },
            Err(e) if explicit => {
                return Err(e.context(format!("listing the keys of ring {name}")));
            }
            Err(e) => {
                eprintln!(
                    "signet-loadtest: leaving out {}: listing the keys of ring {name}: {e:#}",
                    names.clone().collect::<Vec<_>>().join(", ")
                );
                left_out.extend(names);
            }
        }
    }
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
        )
        .register_scenario(
            scenario!("Timestamp")
                .register_transaction(transaction!(connect).set_on_start())
                .register_transaction(transaction!(timestamp)),
        );
    let formats = [
        ("SignOpenPgpRsa2048", transaction!(sign_openpgp_rsa)),
        ("SignRawRsa2048", transaction!(sign_raw_rsa)),
        ("SignOpenPgpEd25519", transaction!(sign_openpgp_ed25519)),
        ("SignRawEd25519", transaction!(sign_raw_ed25519)),
    ];
    for (name, sign) in formats {
        if left_out.contains(&name.to_lowercase().as_str()) {
            continue;
        }
        attack = attack.register_scenario(
            scenario!(name)
                .register_transaction(transaction!(connect).set_on_start())
                .register_transaction(sign),
        );
    }
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
