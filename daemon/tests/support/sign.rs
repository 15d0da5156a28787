//! Test support for the sign tests: signer accounts, rings made with `signetd keys`, curl calls
//! with a client certificate, and OpenSSL as the independent verifier.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{CurlResult, Daemon, Instance, curl, s};

/// A client certificate and key made with `signetd account create`.
#[derive(Debug, Clone)]
pub struct Client {
    pub cert: String,
    pub key: String,
}

/// Creates an account with `roles` (comma-separated) and returns its credentials.
pub fn account(instance: &Instance, name: &str, roles: &str) -> Client {
    let dir = instance.dir.path().join("clients");
    let out = instance
        .command()
        .args([
            "account",
            "create",
            name,
            "--role",
            roles,
            "--out-dir",
            s(&dir),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "account create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Client {
        cert: s(&dir.join(format!("{name}.crt"))).to_owned(),
        key: s(&dir.join(format!("{name}.key"))).to_owned(),
    }
}

/// The admin's credentials.
pub fn admin(instance: &Instance) -> Client {
    Client {
        cert: s(&instance.admin_cert()).to_owned(),
        key: s(&instance.admin_key()).to_owned(),
    }
}

/// Runs `signetd keys ARGS` and returns stdout; panics on failure.
pub fn keys_cli(instance: &Instance, args: &[&str]) -> String {
    let out = instance.command().arg("keys").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "signetd keys {args:?} exited with {}: stdout {} stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generates `count` keys of `algorithm` into `ring` with the CLI and returns their ids.
pub fn generate(instance: &Instance, ring: &str, algorithm: &str, count: usize) -> Vec<String> {
    let out = keys_cli(
        instance,
        &[
            "generate",
            "--ring",
            ring,
            "--algorithm",
            algorithm,
            "--count",
            &count.to_string(),
        ],
    );
    let ids: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(" key ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), count, "{out}");
    ids
}

/// Common curl arguments: CA and client certificate.
pub fn tls_args(instance: &Instance, client: &Client) -> Vec<String> {
    vec![
        "--cacert".into(),
        s(&instance.ca()).into(),
        "--cert".into(),
        client.cert.clone(),
        "--key".into(),
        client.key.clone(),
    ]
}

/// GET with a client.
pub fn get(instance: &Instance, daemon: &Daemon, client: &Client, path: &str) -> CurlResult {
    let mut args = tls_args(instance, client);
    args.push(daemon.api_url(path));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

/// POST a JSON body.
pub fn post_json(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    path: &str,
    body: &serde_json::Value,
) -> CurlResult {
    let mut args = tls_args(instance, client);
    let body = body.to_string();
    args.extend([
        "-H".into(),
        "content-type: application/json".into(),
        "--data-binary".into(),
        body,
        daemon.api_url(path),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

/// POST /v1/sign with the body read from `file` and `query` (without the leading `?`).
pub fn sign_file(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    query: &str,
    file: &Path,
) -> CurlResult {
    let mut args = tls_args(instance, client);
    args.extend([
        "-H".into(),
        "content-type: application/octet-stream".into(),
        "--data-binary".into(),
        format!("@{}", s(file)),
        daemon.api_url(&format!("/v1/sign?{query}")),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

pub fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// Runs openssl with fixed arguments; returns whether it printed a verification success.
pub fn openssl_ok(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = out.status.success()
        && (text.contains("Verified OK") || text.contains("Signature Verified Successfully"));
    (ok, text)
}

/// Verifies `sig` (DER for ECDSA) over the message `data` with OpenSSL: `dgst -verify` for
/// hashed schemes, `pkeyutl -verify -rawin` for Ed25519.
pub fn openssl_verify_message(
    pem: &Path,
    hash: Option<&str>,
    pss: bool,
    data: &Path,
    sig: &Path,
) -> (bool, String) {
    match hash {
        None => openssl_ok(&[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            s(pem),
            "-rawin",
            "-in",
            s(data),
            "-sigfile",
            s(sig),
        ]),
        Some(h) => {
            let flag = format!("-{h}");
            let mut args = vec!["dgst", &flag, "-verify", s(pem), "-signature", s(sig)];
            if pss {
                args.extend([
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    "rsa_pss_saltlen:digest",
                ]);
            }
            args.push(s(data));
            openssl_ok(&args)
        }
    }
}

/// Verifies `sig` over a digest file with `pkeyutl -verify`.
pub fn openssl_verify_digest(
    pem: &Path,
    hash: &str,
    pss: bool,
    digest: &Path,
    sig: &Path,
) -> (bool, String) {
    let opt = format!("digest:{hash}");
    let mut args = vec![
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        s(pem),
        "-in",
        s(digest),
        "-sigfile",
        s(sig),
        "-pkeyopt",
        &opt,
    ];
    if pss {
        args.extend([
            "-pkeyopt",
            "rsa_padding_mode:pss",
            "-pkeyopt",
            "rsa_pss_saltlen:digest",
        ]);
    }
    openssl_ok(&args)
}

/// The daemon's resident set size in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Appends a `[signing]` section to the instance's configuration.
pub fn configure_signing(instance: &Instance, settings: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&instance.config_path)
        .unwrap();
    write!(f, "\n[signing]\n{settings}\n").unwrap();
}

/// curl as `client` with `extra` arguments before `url`.
pub fn call(instance: &Instance, client: &Client, extra: &[&str], url: &str) -> CurlResult {
    let mut args = tls_args(instance, client);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args.push(url.to_owned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

/// Asserts a problem+json answer of `status` whose detail mentions `detail`.
pub fn assert_problem(r: &CurlResult, status: u16, detail: &str) {
    assert_eq!(r.status, status, "{r:?}");
    let v = r.json();
    assert!(
        v["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:signetd:problem:")),
        "{r:?}"
    );
    assert!(
        v["detail"].as_str().is_some_and(|d| d.contains(detail)),
        "detail should mention {detail:?}: {r:?}"
    );
}

/// The number of token signatures the daemon made, from its metrics.
pub fn signatures_made(daemon: &Daemon) -> u64 {
    let metrics = curl(&[&daemon.metrics_url("/metrics")]).body;
    metrics
        .lines()
        .filter(|l| l.starts_with("signetd_hsm_operations_total{") && l.contains("op=\"sign\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// POSTs the file `data` to `path`, as the body or as a multipart `file` part (`form`),
/// writing the answer to `out`.
pub fn post_file(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    path: &str,
    data: &Path,
    form: bool,
    out: &Path,
) -> CurlResult {
    let field = format!("file=@{}", s(data));
    let body = format!("@{}", s(data));
    let extra: Vec<&str> = if form {
        vec!["-F", &field, "-o", s(out)]
    } else {
        vec!["--data-binary", &body, "-o", s(out)]
    };
    call(instance, client, &extra, &daemon.api_url(path))
}
