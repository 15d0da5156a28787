//! End to end: `signetd init` and `signetd serve` against a real SoftHSM2 token and a real
//! PostgreSQL, checked with curl and openssl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Instance, curl, curl_admin, run_ok, s};

/// Field `name` of `openssl x509 -noout -<name>` output, e.g. `serial=ABCD`.
fn openssl_field(cert: &std::path::Path, flag: &[&str]) -> String {
    let mut args = vec!["x509", "-noout", "-in", s(cert)];
    args.extend_from_slice(flag);
    let out = run_ok("openssl", &args);
    out.trim()
        .split_once('=')
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

#[test]
fn init_is_idempotent_and_mtls_identifies_the_admin() {
    let instance = Instance::new();

    let first = String::from_utf8_lossy(&instance.init().stdout).into_owned();
    assert!(first.contains("created the CA key"), "{first}");
    assert!(first.contains("created account `admin`"), "{first}");
    let key_before = std::fs::read(instance.admin_key()).unwrap();
    let second = String::from_utf8_lossy(&instance.init().stdout).into_owned();
    assert!(second.contains("nothing changed"), "second init: {second}");
    assert_eq!(std::fs::read(instance.admin_key()).unwrap(), key_before);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(instance.admin_key())
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "admin key mode");

    // The CA and admin certificates verify with OpenSSL.
    let ca = instance.ca();
    let verified = run_ok(
        "openssl",
        &["verify", "-CAfile", s(&ca), s(&instance.admin_cert())],
    );
    assert!(verified.contains(": OK"), "{verified}");

    let daemon = instance.serve();

    // whoami with the admin certificate: 200 and the identity OpenSSL sees in the certificate.
    let who = curl_admin(&instance, &daemon.api_url("/v1/whoami"));
    assert_eq!(who.status, 200, "{who:?}");
    let who = who.json();
    assert_eq!(who["account"], "admin");
    assert_eq!(who["roles"], serde_json::json!(["admin"]));
    assert_eq!(who["subject"], "CN=admin");
    let serial = openssl_field(&instance.admin_cert(), &["-serial"]).to_lowercase();
    assert_eq!(
        who["serial"].as_str().unwrap().trim_start_matches('0'),
        serial.trim_start_matches('0')
    );
    let fingerprint = openssl_field(&instance.admin_cert(), &["-fingerprint", "-sha256"])
        .replace(':', "")
        .to_lowercase();
    assert_eq!(who["fingerprint"].as_str().unwrap(), fingerprint);

    // The server certificate (as presented in the handshake) verifies against the CA.
    let presented = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &daemon.addrs.api.to_string(),
            "-servername",
            "localhost",
            "-cert",
            s(&instance.admin_cert()),
            "-key",
            s(&instance.admin_key()),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&presented.stdout);
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("server certificate");
    let end = text[begin..].find("-----END CERTIFICATE-----").unwrap() + begin + 25;
    let server_pem = instance.dir.path().join("server.pem");
    std::fs::write(&server_pem, format!("{}\n", &text[begin..end])).unwrap();
    let verified = run_ok(
        "openssl",
        &[
            "verify",
            "-CAfile",
            s(&ca),
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "localhost",
            s(&server_pem),
        ],
    );
    assert!(verified.contains(": OK"), "{verified}");

    // No client certificate: the handshake is refused, nothing is served.
    let anonymous = curl(&["--cacert", s(&ca), &daemon.api_url("/v1/whoami")]);
    assert_ne!(anonymous.exit, 0, "{anonymous:?}");
    assert_eq!(anonymous.status, 0, "{anonymous:?}");

    // A certificate from another CA, even with the same names: refused.
    let other = instance.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let p = |f: &str| other.join(f).to_str().unwrap().to_owned();
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=signetd CA",
            "-days",
            "2",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ],
    );
    run_ok(
        "openssl",
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=admin",
            "-keyout",
            &p("client.key"),
            "-out",
            &p("client.csr"),
        ],
    );
    std::fs::write(other.join("ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    run_ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("client.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &p("ext"),
            "-out",
            &p("client.crt"),
        ],
    );
    let foreign = curl(&[
        "--cacert",
        s(&ca),
        "--cert",
        &p("client.crt"),
        "--key",
        &p("client.key"),
        &daemon.api_url("/v1/whoami"),
    ]);
    assert_ne!(foreign.exit, 0, "{foreign:?}");
    assert_eq!(foreign.status, 0, "{foreign:?}");

    // Unknown routes answer problem+json; the public listener serves the CA and health.
    let missing = curl_admin(&instance, &daemon.api_url("/v1/nope"));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["status"], 404);
    let served_ca = curl(&[&daemon.public_url("/ca.pem")]);
    assert_eq!(served_ca.status, 200);
    assert_eq!(
        served_ca.body.trim(),
        std::fs::read_to_string(&ca).unwrap().trim()
    );
    let health = curl(&[&daemon.public_url("/healthz")]);
    assert_eq!(health.status, 200);
    let ready = curl(&[&daemon.public_url("/readyz")]);
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.json()["tokens"]["ca"], "ok");

    // Metrics count what happened, and never carry secrets.
    let metrics = curl(&[&daemon.metrics_url("/metrics")]);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains(r#"signetd_http_requests_total{listener="api",method="GET",route="/v1/whoami",status="200"} 1"#),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("signetd_hsm_operations_total{operation=\"sign\",result=\"ok\"}")
    );
    assert!(metrics.body.contains("signetd_db_pool_connections"));
    let logs = daemon.logs();
    assert!(!logs.contains(support::PIN), "the PIN leaked into the logs");
    assert!(!metrics.body.contains(support::PIN));
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let instance = Instance::new();
    instance.init();
    let mut daemon = instance.serve();
    assert_eq!(
        curl_admin(&instance, &daemon.api_url("/v1/whoami")).status,
        200
    );
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status}: {}", daemon.logs());
    assert!(daemon.logs().contains("draining"), "{}", daemon.logs());
}

#[test]
fn serve_before_init_says_what_to_do() {
    let instance = Instance::new();
    let out = instance.command().arg("serve").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signetd init"), "{stderr}");
}

#[test]
fn help_describes_every_subcommand() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_signetd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["init", "serve", "dev", "hsm-bench"] {
        assert!(help.contains(sub), "{help}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_signetd"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    }
}

/// The DNS names in the certificate the API listener presents now.
fn presented_names(daemon: &support::Daemon, instance: &Instance) -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &daemon.addrs.api.to_string(),
            "-servername",
            "localhost",
            "-cert",
            s(&instance.admin_cert()),
            "-key",
            s(&instance.admin_key()),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("server certificate");
    let end = text[begin..].find("-----END CERTIFICATE-----").unwrap() + begin + 25;
    let pem = instance.dir.path().join("presented.pem");
    std::fs::write(&pem, format!("{}\n", &text[begin..end])).unwrap();
    run_ok(
        "openssl",
        &["x509", "-noout", "-ext", "subjectAltName", "-in", s(&pem)],
    )
}

#[test]
fn sighup_reloads_a_reissued_server_certificate() {
    let instance = Instance::new();
    instance.init();
    let daemon = instance.serve();
    let before = presented_names(&daemon, &instance);
    assert!(
        before.contains("DNS:localhost") && !before.contains("signetd.test"),
        "{before}"
    );

    // The operator adds a name and re-runs init, which re-issues the server certificate.
    let mut config = std::fs::read_to_string(&instance.config_path).unwrap();
    config.push_str("\n[tls]\nnames = [\"localhost\", \"signetd.test\", \"127.0.0.1\"]\n");
    std::fs::write(&instance.config_path, config).unwrap();
    let out = String::from_utf8_lossy(&instance.init().stdout).into_owned();
    assert!(
        out.contains("issued the server certificate") && out.contains("names changed"),
        "{out}"
    );
    // Still the old one until the daemon is told.
    assert!(!presented_names(&daemon, &instance).contains("signetd.test"));

    run_ok("kill", &["-HUP", &daemon.child.id().to_string()]);
    assert!(
        support::wait_until(std::time::Duration::from_secs(10), || {
            presented_names(&daemon, &instance).contains("DNS:signetd.test")
        }),
        "the new certificate was not picked up: {}",
        daemon.logs()
    );
    // And it still serves, with the new certificate verifying against the CA.
    assert_eq!(
        curl_admin(&instance, &daemon.api_url("/v1/whoami")).status,
        200
    );
}
