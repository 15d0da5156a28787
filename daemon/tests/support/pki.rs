//! Test support for the pki tests: a fixed public listener (so issued certificates carry CRL
//! and OCSP URLs), API calls as a given client, CSRs made by OpenSSL, and a kept-alive TLS
//! connection driven through `openssl s_client`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{CurlResult, Daemon, Instance, curl, run_ok, s};

/// A client certificate and key on disk.
#[derive(Debug, Clone)]
pub struct Client {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Client {
    pub fn admin(instance: &Instance) -> Client {
        Client {
            cert: instance.admin_cert(),
            key: instance.admin_key(),
        }
    }
}

/// Gives the instance a fixed public port and `public_url`, so that certificates carry CRL and
/// OCSP URLs that work. Returns the public base URL.
pub fn fix_public_listener(instance: &Instance) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let config = std::fs::read_to_string(&instance.config_path).unwrap();
    let config = config.replace(
        "public = \"127.0.0.1:0\"",
        &format!("public = \"127.0.0.1:{port}\""),
    );
    std::fs::write(
        &instance.config_path,
        format!("public_url = \"{base}\"\n{config}"),
    )
    .unwrap();
    base
}

/// Appends settings of the `[ca]` section to the instance's configuration.
pub fn ca_settings(instance: &Instance, lines: &str) {
    let mut config = std::fs::read_to_string(&instance.config_path).unwrap();
    config.push_str(&format!("\n[ca]\n{lines}\n"));
    std::fs::write(&instance.config_path, config).unwrap();
}

/// curl as `client` with extra arguments before the URL.
pub fn call(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    args: &[&str],
    path: &str,
) -> CurlResult {
    let ca = instance.ca();
    let mut all = vec![
        "--cacert",
        s(&ca),
        "--cert",
        s(&client.cert),
        "--key",
        s(&client.key),
    ];
    all.extend_from_slice(args);
    let url = daemon.api_url(path);
    all.push(&url);
    curl(&all)
}

pub fn get(instance: &Instance, daemon: &Daemon, client: &Client, path: &str) -> CurlResult {
    call(instance, daemon, client, &[], path)
}

pub fn post_json(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    path: &str,
    body: &serde_json::Value,
) -> CurlResult {
    let body = body.to_string();
    call(
        instance,
        daemon,
        client,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
        ],
        path,
    )
}

pub fn post_empty(instance: &Instance, daemon: &Daemon, client: &Client, path: &str) -> CurlResult {
    call(instance, daemon, client, &["-X", "POST"], path)
}

/// Asserts an RFC 9457 problem answer with `status`.
pub fn assert_problem(r: &CurlResult, status: u16) {
    assert_eq!(r.status, status, "{r:?}");
    let body = r.json();
    assert_eq!(body["status"], status, "{r:?}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:signetd:problem:")
    );
    assert!(!body["detail"].as_str().unwrap().is_empty());
}

/// A P-256 key and a CSR for `/CN=cn`, made by OpenSSL in `dir`. Returns (key, csr) paths.
pub fn openssl_csr(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    run_ok(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            s(&key),
            "-out",
            s(&csr),
        ],
    );
    (key, csr)
}

/// Issues a certificate for `account` from `csr` through the API (the PEM form), writes it to
/// `out`, and returns its serial.
pub fn issue(
    instance: &Instance,
    daemon: &Daemon,
    client: &Client,
    account: &str,
    csr: &Path,
    profile: &str,
    out: &Path,
) -> String {
    let at = format!("@{}", s(csr));
    let r = call(
        instance,
        daemon,
        client,
        &[
            "-H",
            "content-type: application/pkcs10",
            "--data-binary",
            &at,
        ],
        &format!("/v1/accounts/{account}/certificates?profile={profile}&format=pem"),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.body.starts_with("-----BEGIN CERTIFICATE-----"), "{r:?}");
    std::fs::write(out, &r.body).unwrap();
    serial_of(out)
}

/// The serial as `openssl x509 -serial` prints it, lower case.
pub fn serial_of(cert: &Path) -> String {
    run_ok("openssl", &["x509", "-noout", "-serial", "-in", s(cert)])
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

/// `openssl verify -CAfile ca [-crl_check -CRLfile crl] cert`: (success, output).
pub fn openssl_verify(ca: &Path, crl: Option<&Path>, cert: &Path) -> (bool, String) {
    let mut args = vec!["verify", "-CAfile", s(ca)];
    if let Some(crl) = crl {
        args.extend_from_slice(&["-crl_check", "-CRLfile", s(crl)]);
    }
    args.push(s(cert));
    let out = Command::new("openssl").args(&args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Downloads the CRL (PEM) from the public listener to `out`.
pub fn fetch_crl(daemon: &Daemon, out: &Path) {
    let r = curl(&["-o", s(out), &daemon.public_url("/crl.pem")]);
    assert_eq!(r.status, 200, "{r:?}");
}

/// `openssl ocsp -issuer ca -cert cert -url url -CAfile ca`: everything it printed. Requires
/// that the response verified and that the nonce came back.
pub fn openssl_ocsp(ca: &Path, cert: &Path, url: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "ocsp",
            "-issuer",
            s(ca),
            "-cert",
            s(cert),
            "-url",
            url,
            "-CAfile",
            s(ca),
            "-resp_text",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl ocsp failed: {text}");
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(!text.contains("WARNING"), "nonce not echoed? {text}");
    text
}

/// The status line `openssl ocsp` prints for `cert`: `good`, `revoked` or `unknown`.
pub fn ocsp_status(text: &str, cert: &Path) -> String {
    let prefix = format!("{}: ", s(cert));
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no status for {} in {text}", s(cert)))
        .trim()
        .to_owned()
}

/// One TLS connection kept open by `openssl s_client`: HTTP/1.1 requests are written to its
/// stdin, answers read from its stdout. `-sess_out`/`-sess_in` save and resume the session.
pub struct TlsConnection {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
    answered: usize,
}

impl TlsConnection {
    pub fn open(
        addr: SocketAddr,
        ca: &Path,
        client: &Client,
        sess_out: Option<&Path>,
        sess_in: Option<&Path>,
    ) -> TlsConnection {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
            "-CAfile",
            s(ca),
            "-cert",
            s(&client.cert),
            "-key",
            s(&client.key),
            "-nocommands",
            "-ign_eof",
        ]);
        if let Some(p) = sess_out {
            cmd.args(["-sess_out", s(p)]);
        }
        if let Some(p) = sess_in {
            cmd.args(["-sess_in", s(p)]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run openssl s_client");
        let stdin = child.stdin.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = out.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        TlsConnection {
            child,
            stdin,
            out,
            answered: 0,
        }
    }

    /// Everything s_client printed so far.
    pub fn transcript(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Whether the handshake resumed a session (`Reused, TLSv1.3, ...`).
    pub fn resumed(&self) -> bool {
        self.transcript().contains("Reused, TLSv1.3")
    }

    /// Sends `GET path` on this connection and returns the status code of its answer.
    pub fn get(&mut self, path: &str) -> u16 {
        write!(self.stdin, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        self.stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.transcript();
            let statuses: Vec<u16> = text
                .match_indices("HTTP/1.1 ")
                .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
                .collect();
            if statuses.len() > self.answered {
                self.answered += 1;
                return statuses[self.answered - 1];
            }
            assert!(
                Instant::now() < deadline,
                "no answer on the kept-alive connection: {text}"
            );
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("s_client exited ({status}): {text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until s_client wrote the session (TLS 1.3 tickets come after the handshake).
    pub fn wait_for_session(&self, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
            assert!(
                Instant::now() < deadline,
                "no session saved: {}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TlsConnection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
