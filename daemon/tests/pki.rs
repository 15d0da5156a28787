//! The certificate authority end to end, with OpenSSL and curl as the verifiers: accounts,
//! certificates from CSRs, deactivate/activate/revoke, the CRL (`openssl verify -crl_check`),
//! the OCSP responder (`openssl ocsp`), roles, bad CSRs, and invariant 7 (a held client is out
//! at once, on kept-alive connections and resumed TLS sessions too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::pki::{
    Client, TlsConnection, assert_problem, ca_settings, call, fetch_crl, fix_public_listener, get,
    issue, ocsp_status, openssl_csr, openssl_ocsp, openssl_verify, post_empty, post_json,
    serial_of,
};
use support::{Daemon, Instance, curl, run_ok, s};

/// Creates an account through the API as the admin, issues it an mTLS client certificate from
/// an OpenSSL CSR, and returns its credentials.
fn client_account(instance: &Instance, daemon: &Daemon, name: &str, roles: &[&str]) -> Client {
    let admin = Client::admin(instance);
    let created = post_json(
        instance,
        daemon,
        &admin,
        "/v1/accounts",
        &serde_json::json!({ "name": name, "roles": roles }),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let dir = instance.dir.path().join("clients");
    let (key, csr) = openssl_csr(&dir, name, name);
    let cert = dir.join(format!("{name}.crt"));
    issue(instance, daemon, &admin, name, &csr, "mtls-client", &cert);
    Client { cert, key }
}

fn crl_text(crl: &std::path::Path) -> String {
    run_ok("openssl", &["crl", "-in", s(crl), "-noout", "-text"])
}

fn crl_number(crl: &std::path::Path) -> u64 {
    let text = crl_text(crl);
    let after = text
        .split("X509v3 CRL Number:")
        .nth(1)
        .unwrap_or_else(|| panic!("no CRL number: {text}"));
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// The audit actions logged from `from` on, as the auditor reads them.
fn audit_actions(instance: &Instance, daemon: &Daemon, auditor: &Client) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page = get(
            instance,
            daemon,
            auditor,
            &format!("/v1/audit/entries?from={from}&limit=1000"),
        );
        assert_eq!(page.status, 200, "{page:?}");
        let page = page.json();
        let entries = page["entries"].as_array().unwrap();
        if entries.is_empty() {
            return out;
        }
        for e in entries {
            out.push((
                e["action"].as_str().unwrap().to_owned(),
                format!(
                    "{} {}",
                    e["subject"].as_str().unwrap(),
                    e["result"].as_str().unwrap()
                ),
            ));
        }
        from = page["next"].as_u64().unwrap();
    }
}

/// The whole flow, checked by OpenSSL: `openssl verify` accepts issued certificates;
/// `-crl_check` reports a deactivated one revoked and accepts it again after activation;
/// `openssl ocsp` answers good, revoked (certificateHold), good, revoked (keyCompromise).
/// Every change is an audit entry (invariant 4).
#[test]
fn certificates_through_hold_release_and_revocation_with_openssl_crl_and_ocsp() {
    let instance = Instance::new();
    let public = fix_public_listener(&instance);
    instance.init();
    let daemon = instance.serve();
    let admin = Client::admin(&instance);
    let ca = instance.ca();
    let dir = instance.dir.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();

    // An account, then a certificate from a CSR made by OpenSSL.
    let created = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/accounts",
        &serde_json::json!({ "name": "alice", "roles": ["signer:payments"] }),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let body = created.json();
    assert_eq!(body["name"], "alice");
    assert_eq!(body["roles"], serde_json::json!(["signer:payments"]));
    assert!(body["receipt"]["seq"].is_u64(), "{body}");
    let again = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/accounts",
        &serde_json::json!({ "name": "alice" }),
    );
    assert_problem(&again, 409);

    let (alice_key, csr) = openssl_csr(&dir, "alice", "whatever the client asks");
    let alice_crt = dir.join("alice.crt");
    let serial = issue(
        &instance,
        &daemon,
        &admin,
        "alice",
        &csr,
        "mtls-client",
        &alice_crt,
    );
    let alice = Client {
        cert: alice_crt.clone(),
        key: alice_key,
    };
    assert!(
        serial.len() <= 32 && serial.len() >= 24,
        "128-bit random serial: {serial}"
    );

    // OpenSSL accepts it, for client authentication, with the extensions of the profile.
    let (ok, out) = openssl_verify(&ca, None, &alice_crt);
    assert!(ok, "{out}");
    let purpose = run_ok(
        "openssl",
        &[
            "verify",
            "-CAfile",
            s(&ca),
            "-purpose",
            "sslclient",
            s(&alice_crt),
        ],
    );
    assert!(purpose.contains(": OK"), "{purpose}");
    let text = run_ok(
        "openssl",
        &["x509", "-in", s(&alice_crt), "-noout", "-text"],
    );
    for expected in [
        "Subject: CN = alice",
        "TLS Web Client Authentication",
        "Digital Signature",
        "CA:FALSE",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        &format!("URI:{public}/crl.der"),
        &format!("OCSP - URI:{public}/ocsp"),
    ] {
        assert!(text.contains(expected), "missing {expected:?} in {text}");
    }
    let ocsp_url = run_ok(
        "openssl",
        &["x509", "-in", s(&alice_crt), "-noout", "-ocsp_uri"],
    )
    .trim()
    .to_owned();
    assert_eq!(ocsp_url, format!("{public}/ocsp"));

    // The new client works with curl; list by account, get by serial in three forms.
    let who = get(&instance, &daemon, &alice, "/v1/whoami");
    assert_eq!(who.status, 200, "{who:?}");
    assert_eq!(who.json()["account"], "alice");
    let listed = get(
        &instance,
        &daemon,
        &admin,
        "/v1/accounts/alice/certificates",
    )
    .json();
    assert_eq!(listed["certificates"][0]["serial"], serial.as_str());
    assert_eq!(listed["certificates"][0]["status"], "active");
    assert_eq!(listed["certificates"][0]["profile"], "mtls-client");
    let by_serial = get(
        &instance,
        &daemon,
        &admin,
        &format!("/v1/certificates/{serial}"),
    );
    assert_eq!(by_serial.status, 200, "{by_serial:?}");
    assert_eq!(
        by_serial.json()["certificate_pem"].as_str().unwrap(),
        std::fs::read_to_string(&alice_crt).unwrap()
    );
    let upper = serial.to_uppercase();
    let pem = get(
        &instance,
        &daemon,
        &alice,
        &format!("/v1/certificates/{upper}?format=pem"),
    );
    assert_eq!(pem.body, std::fs::read_to_string(&alice_crt).unwrap());
    let der_file = dir.join("alice.der");
    let der = call(
        &instance,
        &daemon,
        &admin,
        &["-o", s(&der_file)],
        &format!("/v1/certificates/{serial}?format=der"),
    );
    assert_eq!(der.status, 200);
    let from_der = run_ok(
        "openssl",
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            s(&der_file),
            "-noout",
            "-serial",
        ],
    );
    assert_eq!(
        from_der.trim().trim_start_matches("serial=").to_lowercase(),
        serial
    );

    // The CRL: signed by the CA, served as DER and PEM, accepted by OpenSSL.
    let crl = dir.join("crl.pem");
    fetch_crl(&daemon, &crl);
    let checked = run_ok(
        "openssl",
        &["crl", "-in", s(&crl), "-CAfile", s(&ca), "-noout"],
    );
    assert!(
        checked.contains("verify OK") || checked.is_empty(),
        "{checked}"
    );
    let crl_der = dir.join("crl.der");
    assert_eq!(
        curl(&["-o", s(&crl_der), &format!("{public}/crl.der")]).status,
        200
    );
    run_ok(
        "openssl",
        &["crl", "-inform", "DER", "-in", s(&crl_der), "-noout"],
    );
    let first_number = crl_number(&crl);
    let (ok, out) = openssl_verify(&ca, Some(&crl), &alice_crt);
    assert!(ok, "{out}");
    let status = ocsp_status(&openssl_ocsp(&ca, &alice_crt, &ocsp_url), &alice_crt);
    assert_eq!(status, "good");

    // Deactivate: revoked with reason certificateHold in the new CRL and in OCSP.
    let held = post_empty(
        &instance,
        &daemon,
        &admin,
        &format!("/v1/certificates/{serial}/deactivate"),
    );
    assert_eq!(held.status, 200, "{held:?}");
    assert_eq!(held.json()["status"], "held");
    assert_eq!(held.json()["revocation_reason"], "certificateHold");
    assert!(held.json()["receipt"]["leaf_hash"].is_string());
    fetch_crl(&daemon, &crl);
    let held_number = crl_number(&crl);
    assert!(held_number > first_number);
    assert!(
        crl_text(&crl).contains("Certificate Hold"),
        "{}",
        crl_text(&crl)
    );
    let (ok, out) = openssl_verify(&ca, Some(&crl), &alice_crt);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let ocsp = openssl_ocsp(&ca, &alice_crt, &ocsp_url);
    assert_eq!(ocsp_status(&ocsp, &alice_crt), "revoked");
    assert!(ocsp.contains("Reason: certificateHold"), "{ocsp}");
    assert_eq!(get(&instance, &daemon, &alice, "/v1/whoami").status, 403);
    assert_problem(
        &post_empty(
            &instance,
            &daemon,
            &admin,
            &format!("/v1/certificates/{serial}/deactivate"),
        ),
        409,
    );

    // Activate: accepted again at once, by the CRL, OCSP and the API.
    let released = post_empty(
        &instance,
        &daemon,
        &admin,
        &format!("/v1/certificates/{serial}/activate"),
    );
    assert_eq!(released.status, 200, "{released:?}");
    assert_eq!(released.json()["status"], "active");
    fetch_crl(&daemon, &crl);
    assert!(crl_number(&crl) > held_number);
    let (ok, out) = openssl_verify(&ca, Some(&crl), &alice_crt);
    assert!(ok, "{out}");
    assert_eq!(
        ocsp_status(&openssl_ocsp(&ca, &alice_crt, &ocsp_url), &alice_crt),
        "good"
    );
    assert_eq!(get(&instance, &daemon, &alice, "/v1/whoami").status, 200);

    // OCSP by GET (base64 in the path), without a nonce: the same answer, then from the cache.
    let req = dir.join("req.der");
    run_ok(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            s(&ca),
            "-cert",
            s(&alice_crt),
            "-no_nonce",
            "-reqout",
            s(&req),
        ],
    );
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&req).unwrap());
    let encoded = encoded
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    for round in 0..2 {
        let resp = dir.join(format!("resp{round}.der"));
        let got = curl(&["-o", s(&resp), &format!("{public}/ocsp/{encoded}")]);
        assert_eq!(got.status, 200, "{got:?}");
        let out = Command::new("openssl")
            .args([
                "ocsp",
                "-respin",
                s(&resp),
                "-issuer",
                s(&ca),
                "-cert",
                s(&alice_crt),
                "-CAfile",
                s(&ca),
                "-no_nonce",
            ])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("Response verify OK"), "{text}");
        assert_eq!(ocsp_status(&text, &alice_crt), "good");
    }
    let metrics = curl(&[&daemon.metrics_url("/metrics")]).body;
    assert!(
        metrics.contains(r#"signetd_pki_ocsp_responses_total{cache="hit",outcome="successful"} 1"#),
        "{metrics}"
    );

    // A serial this CA never issued is unknown; garbage is a malformed request.
    let unknown = Command::new("openssl")
        .args([
            "ocsp",
            "-issuer",
            s(&ca),
            "-serial",
            "0x123456789",
            "-url",
            &ocsp_url,
            "-CAfile",
            s(&ca),
        ])
        .output()
        .unwrap();
    let unknown = String::from_utf8_lossy(&unknown.stdout).into_owned();
    assert!(unknown.contains("0x123456789: unknown"), "{unknown}");
    let garbage = curl(&[
        "-H",
        "content-type: application/ocsp-request",
        "--data-binary",
        "not an OCSP request",
        &ocsp_url,
    ]);
    assert_eq!(garbage.status, 400, "{garbage:?}");
    let huge = curl(&[
        "-H",
        "content-type: application/ocsp-request",
        "--data-binary",
        &"A".repeat(20_000),
        &ocsp_url,
    ]);
    assert_problem(&huge, 413);
    let wrong_type = curl(&["--data-binary", "x", &ocsp_url]);
    assert_eq!(wrong_type.status, 415, "{wrong_type:?}");

    // Revoke for good, with a reason; no way back.
    let revoked = post_json(
        &instance,
        &daemon,
        &admin,
        &format!("/v1/certificates/{serial}/revoke"),
        &serde_json::json!({ "reason": "keyCompromise" }),
    );
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert_eq!(revoked.json()["status"], "revoked");
    let ocsp = openssl_ocsp(&ca, &alice_crt, &ocsp_url);
    assert_eq!(ocsp_status(&ocsp, &alice_crt), "revoked");
    assert!(ocsp.contains("Reason: keyCompromise"), "{ocsp}");
    fetch_crl(&daemon, &crl);
    assert!(crl_text(&crl).contains("Key Compromise"));
    let (ok, out) = openssl_verify(&ca, Some(&crl), &alice_crt);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    for change in ["activate", "deactivate", "revoke"] {
        let r = post_empty(
            &instance,
            &daemon,
            &admin,
            &format!("/v1/certificates/{serial}/{change}"),
        );
        assert_problem(&r, 409);
    }
    assert_problem(
        &post_json(
            &instance,
            &daemon,
            &admin,
            "/v1/certificates/00ff/revoke",
            &serde_json::json!({ "reason": "noSuchReason" }),
        ),
        400,
    );
    assert_problem(
        &post_empty(&instance, &daemon, &admin, "/v1/certificates/abcd/revoke"),
        404,
    );
    assert_problem(
        &get(&instance, &daemon, &admin, "/v1/certificates/xyz"),
        400,
    );

    // Deleting an account revokes its certificates (cessationOfOperation); the name stays taken.
    let bob = client_account(&instance, &daemon, "bob", &["signer:payments"]);
    let bob_serial = serial_of(&bob.cert);
    assert_eq!(get(&instance, &daemon, &bob, "/v1/whoami").status, 200);
    let deleted = call(
        &instance,
        &daemon,
        &admin,
        &["-X", "DELETE"],
        "/v1/accounts/bob",
    );
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(deleted.json()["revoked"], serde_json::json!([bob_serial]));
    let ocsp = openssl_ocsp(&ca, &bob.cert, &ocsp_url);
    assert_eq!(ocsp_status(&ocsp, &bob.cert), "revoked");
    assert!(ocsp.contains("Reason: cessationOfOperation"), "{ocsp}");
    assert_eq!(get(&instance, &daemon, &bob, "/v1/whoami").status, 403);
    let listed = get(&instance, &daemon, &admin, "/v1/accounts").json();
    assert!(
        !listed["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "bob"),
        "{listed}"
    );
    let with_deleted = get(&instance, &daemon, &admin, "/v1/accounts?deleted=true").json();
    assert!(
        with_deleted["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "bob")
    );
    assert_problem(
        &post_json(
            &instance,
            &daemon,
            &admin,
            "/v1/accounts",
            &serde_json::json!({ "name": "bob" }),
        ),
        409,
    );

    // Every change is in the audit log, in order, each with its own entry.
    let auditor = client_account(&instance, &daemon, "auditor", &["auditor"]);
    let actions = audit_actions(&instance, &daemon, &auditor);
    let ours: Vec<String> = actions
        .iter()
        .filter(|(a, d)| {
            a.starts_with("cert.")
                || a.starts_with("account.")
                || (a == "crl.sign" && d.ends_with("ok"))
        })
        .map(|(a, d)| format!("{a} {d}"))
        .collect();
    let find = |needle: &str| {
        ours.iter()
            .position(|l| l == needle)
            .unwrap_or_else(|| panic!("{needle:?} not logged: {ours:#?}"))
    };
    let issued = find(&format!("cert.issue cert:{serial} ok"));
    let deactivated = find(&format!("cert.deactivate cert:{serial} ok"));
    let activated = find(&format!("cert.activate cert:{serial} ok"));
    let revoked = find(&format!("cert.revoke cert:{serial} ok"));
    assert!(find("account.create account:alice ok") < issued);
    assert!(issued < deactivated && deactivated < activated && activated < revoked);
    find("account.delete account:bob ok");
    // A CRL is signed after each change.
    for n in [first_number, held_number] {
        find(&format!("crl.sign crl:{n} ok"));
    }
}

/// Roles (refusals audited), the tls-server and document-signer profiles, and invariant 9 for
/// CSRs: bad ones are 400 problems that change nothing.
#[test]
fn roles_bad_csrs_and_other_profiles() {
    let instance = Instance::new();
    instance.init();
    let daemon = instance.serve();
    let admin = Client::admin(&instance);
    let ca = instance.ca();
    let dir = instance.dir.path().join("work");

    let manager = client_account(&instance, &daemon, "manager", &["cert-manager"]);
    let signer = client_account(&instance, &daemon, "carol", &["signer:payments"]);

    // A signer manages nothing; refusals are 403 problems carrying their audit receipt.
    let refused = post_json(
        &instance,
        &daemon,
        &signer,
        "/v1/accounts",
        &serde_json::json!({ "name": "mallory", "roles": ["admin"] }),
    );
    assert_problem(&refused, 403);
    let headers = call(
        &instance,
        &daemon,
        &signer,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            "{\"name\":\"mallory\"}",
        ],
        "/v1/accounts",
    );
    assert!(
        headers.body.to_lowercase().contains("audit-receipt:"),
        "{headers:?}"
    );
    assert_problem(&get(&instance, &daemon, &signer, "/v1/accounts"), 403);
    assert_problem(
        &get(&instance, &daemon, &signer, "/v1/accounts/manager"),
        403,
    );
    // ... but reads its own account and certificates.
    assert_eq!(
        get(&instance, &daemon, &signer, "/v1/accounts/carol").status,
        200
    );
    assert_eq!(
        get(
            &instance,
            &daemon,
            &signer,
            "/v1/accounts/carol/certificates"
        )
        .status,
        200
    );

    // A cert-manager handles signer accounts, not privileged ones, and no server certificates.
    let made = post_json(
        &instance,
        &daemon,
        &manager,
        "/v1/accounts",
        &serde_json::json!({ "name": "dave", "roles": ["signer:payments"] }),
    );
    assert_eq!(made.status, 201, "{made:?}");
    assert_problem(
        &post_json(
            &instance,
            &daemon,
            &manager,
            "/v1/accounts",
            &serde_json::json!({ "name": "eve", "roles": ["admin"] }),
        ),
        403,
    );
    let (_, dave_csr) = openssl_csr(&dir, "dave", "dave");
    let dave_crt = dir.join("dave.crt");
    let dave_serial = issue(
        &instance,
        &daemon,
        &manager,
        "dave",
        &dave_csr,
        "mtls-client",
        &dave_crt,
    );
    let (ok, out) = openssl_verify(&ca, None, &dave_crt);
    assert!(ok, "{out}");
    let at = format!("@{}", s(&dave_csr));
    let server = call(
        &instance,
        &daemon,
        &manager,
        &[
            "-H",
            "content-type: application/pkcs10",
            "--data-binary",
            &at,
        ],
        "/v1/accounts/dave/certificates?profile=tls-server&names=dave.example",
    );
    assert_problem(&server, 403);
    assert_eq!(
        post_empty(
            &instance,
            &daemon,
            &manager,
            &format!("/v1/certificates/{dave_serial}/deactivate")
        )
        .status,
        200
    );
    let manager_serial = serial_of(&manager.cert);
    assert_problem(
        &post_empty(
            &instance,
            &daemon,
            &manager,
            &format!("/v1/certificates/{manager_serial}/revoke"),
        ),
        403,
    );
    let admin_serial = serial_of(&admin.cert);
    // Nobody changes the certificate their own request is made with.
    assert_problem(
        &post_empty(
            &instance,
            &daemon,
            &admin,
            &format!("/v1/certificates/{admin_serial}/deactivate"),
        ),
        409,
    );
    assert_problem(
        &post_empty(
            &instance,
            &daemon,
            &manager,
            &format!("/v1/certificates/{admin_serial}/deactivate"),
        ),
        403,
    );

    // The admin issues a TLS server certificate with names (JSON form); OpenSSL checks it.
    let csr_pem = std::fs::read_to_string(&dave_csr).unwrap();
    let tls = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/accounts/dave/certificates",
        &serde_json::json!({
            "profile": "tls-server", "csr": csr_pem, "validity_days": 30,
            "names": ["dave.example", "10.1.2.3"]
        }),
    );
    assert_eq!(tls.status, 201, "{tls:?}");
    let tls_crt = dir.join("dave-tls.crt");
    std::fs::write(&tls_crt, tls.json()["certificate_pem"].as_str().unwrap()).unwrap();
    let verified = run_ok(
        "openssl",
        &[
            "verify",
            "-CAfile",
            s(&ca),
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "dave.example",
            s(&tls_crt),
        ],
    );
    assert!(verified.contains(": OK"), "{verified}");
    let verified = run_ok(
        "openssl",
        &[
            "verify",
            "-CAfile",
            s(&ca),
            "-verify_ip",
            "10.1.2.3",
            s(&tls_crt),
        ],
    );
    assert!(verified.contains(": OK"), "{verified}");
    // Without names (none in the request or the CSR): refused.
    assert_problem(
        &post_json(
            &instance,
            &daemon,
            &admin,
            "/v1/accounts/dave/certificates",
            &serde_json::json!({ "profile": "tls-server", "csr": csr_pem }),
        ),
        400,
    );
    // A document-signer certificate from a CSR.
    let doc = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/accounts/dave/certificates",
        &serde_json::json!({ "profile": "document-signer", "csr": csr_pem }),
    );
    assert_eq!(doc.status, 201, "{doc:?}");
    let doc_crt = dir.join("dave-doc.crt");
    std::fs::write(&doc_crt, doc.json()["certificate_pem"].as_str().unwrap()).unwrap();
    let text = run_ok("openssl", &["x509", "-in", s(&doc_crt), "-noout", "-text"]);
    assert!(
        text.contains("Non Repudiation") || text.contains("Content Commitment"),
        "{text}"
    );
    assert!(text.contains("1.3.6.1.5.5.7.3.36"), "{text}");
    let (ok, out) = openssl_verify(&ca, None, &doc_crt);
    assert!(ok, "{out}");

    // Bad CSRs: 400 problems, and nothing is issued.
    let before = get(&instance, &daemon, &admin, "/v1/accounts/dave/certificates").json();
    let bad = |body: &[u8], what: &str| {
        let file = dir.join("bad.csr");
        std::fs::write(&file, body).unwrap();
        let at = format!("@{}", s(&file));
        let r = call(
            &instance,
            &daemon,
            &admin,
            &[
                "-H",
                "content-type: application/pkcs10",
                "--data-binary",
                &at,
            ],
            "/v1/accounts/dave/certificates?profile=mtls-client",
        );
        assert_problem(&r, 400);
        eprintln!("{what}: {}", r.json()["detail"]);
    };
    bad(b"garbage, not a CSR", "garbage");
    bad(&vec![b'A'; 20_000], "oversized");
    let rsa_key = dir.join("rsa1024.key");
    let rsa_csr = dir.join("rsa1024.csr");
    run_ok(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-subj",
            "/CN=weak",
            "-keyout",
            s(&rsa_key),
            "-out",
            s(&rsa_csr),
        ],
    );
    bad(&std::fs::read(&rsa_csr).unwrap(), "RSA-1024");
    let ed448_key = dir.join("ed448.key");
    let ed448_csr = dir.join("ed448.csr");
    run_ok(
        "openssl",
        &["genpkey", "-algorithm", "ed448", "-out", s(&ed448_key)],
    );
    run_ok(
        "openssl",
        &[
            "req",
            "-new",
            "-key",
            s(&ed448_key),
            "-subj",
            "/CN=odd",
            "-out",
            s(&ed448_csr),
        ],
    );
    bad(&std::fs::read(&ed448_csr).unwrap(), "Ed448");
    let der_csr = dir.join("dave.csr.der");
    run_ok(
        "openssl",
        &[
            "req",
            "-in",
            s(&dave_csr),
            "-outform",
            "DER",
            "-out",
            s(&der_csr),
        ],
    );
    let mut tampered = std::fs::read(&der_csr).unwrap();
    let last = tampered.len() - 5;
    tampered[last] ^= 0x55;
    bad(&tampered, "bad self-signature");
    let huge = call(
        &instance,
        &daemon,
        &admin,
        &[
            "-H",
            "content-type: application/pkcs10",
            "--data-binary",
            &"A".repeat(100_000),
        ],
        "/v1/accounts/dave/certificates?profile=mtls-client",
    );
    assert_problem(&huge, 413);
    assert_problem(
        &call(
            &instance,
            &daemon,
            &admin,
            &["-H", "content-type: text/plain", "--data-binary", "x"],
            "/v1/accounts/dave/certificates?profile=mtls-client",
        ),
        415,
    );
    assert_problem(
        &post_json(
            &instance,
            &daemon,
            &admin,
            "/v1/accounts/dave/certificates",
            &serde_json::json!({ "profile": "nope", "csr": csr_pem }),
        ),
        400,
    );
    assert_problem(
        &post_json(
            &instance,
            &daemon,
            &admin,
            "/v1/accounts/dave/certificates",
            &serde_json::json!({ "profile": "mtls-client", "csr": csr_pem, "validity_days": 100000 }),
        ),
        400,
    );
    assert_problem(
        &post_json(
            &instance,
            &daemon,
            &admin,
            "/v1/accounts",
            &serde_json::json!({ "name": "Bad Name" }),
        ),
        400,
    );
    assert_problem(
        &post_json(
            &instance,
            &daemon,
            &admin,
            "/v1/accounts",
            &serde_json::json!({ "name": "frank", "roles": ["root"] }),
        ),
        400,
    );
    assert_problem(
        &get(
            &instance,
            &daemon,
            &admin,
            "/v1/accounts/nobody/certificates",
        ),
        404,
    );
    let after = get(&instance, &daemon, &admin, "/v1/accounts/dave/certificates").json();
    assert_eq!(before, after, "a bad request changed something");
    assert_eq!(
        get(&instance, &daemon, &admin, "/v1/accounts/frank").status,
        404
    );
}

/// Invariant 7: a deactivated client is out at once, on kept-alive connections and resumed
/// TLS sessions too, and back in at once after activation.
#[test]
fn deactivated_client_is_out_at_once_on_kept_alive_connections_and_resumed_sessions() {
    let instance = Instance::new();
    instance.init();
    let daemon = instance.serve();
    let admin = Client::admin(&instance);
    let ca = instance.ca();
    let alice = client_account(&instance, &daemon, "alice", &["signer:payments"]);
    let serial = serial_of(&alice.cert);
    let session = |n: u32| instance.dir.path().join(format!("alice.session{n}"));

    // The certificate issued through the API works with curl, and curl keeps its connection.
    let reuse = Command::new("curl")
        .args([
            "-sS",
            "-v",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "--cacert",
            s(&ca),
            "--cert",
            s(&alice.cert),
            "--key",
            s(&alice.key),
            &daemon.api_url("/v1/whoami"),
            &daemon.api_url("/v1/whoami"),
        ])
        .output()
        .unwrap();
    let verbose = String::from_utf8_lossy(&reuse.stderr);
    assert!(reuse.status.success(), "{verbose}");
    assert!(
        verbose.contains("Re-using existing connection"),
        "{verbose}"
    );
    assert_eq!(verbose.matches("< HTTP/2 200").count(), 2, "{verbose}");

    // One kept-alive connection, and its session saved for resumption.
    // TLS 1.3 tickets are single-use: each resumption saves the next session.
    let mut kept = TlsConnection::open(daemon.addrs.api, &ca, &alice, Some(&session(1)), None);
    assert_eq!(kept.get("/v1/whoami"), 200);
    kept.wait_for_session(&session(1));
    let mut resumed = TlsConnection::open(
        daemon.addrs.api,
        &ca,
        &alice,
        Some(&session(2)),
        Some(&session(1)),
    );
    assert_eq!(resumed.get("/v1/whoami"), 200);
    resumed.wait_for_session(&session(2));
    assert!(
        resumed.resumed(),
        "the session was not resumed: {}",
        resumed.transcript()
    );

    // Deactivated: the next request is refused on the kept-alive connection, on the resumed
    // one, on a new resumption, and on a new connection.
    let held = post_empty(
        &instance,
        &daemon,
        &admin,
        &format!("/v1/certificates/{serial}/deactivate"),
    );
    assert_eq!(held.status, 200, "{held:?}");
    assert_eq!(kept.get("/v1/whoami"), 403, "{}", kept.transcript());
    assert_eq!(resumed.get("/v1/whoami"), 403);
    let mut again = TlsConnection::open(
        daemon.addrs.api,
        &ca,
        &alice,
        Some(&session(3)),
        Some(&session(2)),
    );
    assert_eq!(again.get("/v1/whoami"), 403);
    again.wait_for_session(&session(3));
    assert!(again.resumed(), "{}", again.transcript());
    assert!(
        again
            .transcript()
            .contains("this client certificate is held")
    );
    let refused = get(&instance, &daemon, &alice, "/v1/whoami");
    assert_problem(&refused, 403);

    // Activated: accepted again at once, on the same connections.
    let released = post_empty(
        &instance,
        &daemon,
        &admin,
        &format!("/v1/certificates/{serial}/activate"),
    );
    assert_eq!(released.status, 200, "{released:?}");
    assert_eq!(kept.get("/v1/whoami"), 200);
    assert_eq!(resumed.get("/v1/whoami"), 200);
    let mut third = TlsConnection::open(daemon.addrs.api, &ca, &alice, None, Some(&session(3)));
    assert_eq!(third.get("/v1/whoami"), 200);
    assert!(third.resumed(), "{}", third.transcript());
    assert_eq!(get(&instance, &daemon, &alice, "/v1/whoami").status, 200);

    // Revoked: out for good.
    let revoked = post_empty(
        &instance,
        &daemon,
        &admin,
        &format!("/v1/certificates/{serial}/revoke"),
    );
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert_eq!(kept.get("/v1/whoami"), 403);
    assert_eq!(third.get("/v1/whoami"), 403);
    assert!(
        third
            .transcript()
            .contains("this client certificate is revoked")
    );
}

/// Invariant 7 across processes, a delegated OCSP responder, OCSP caches invalidated by a
/// change made through another daemon, and CRL numbers that grow across processes.
#[test]
fn delegated_responder_and_two_daemons_share_revocation_state() {
    let instance = Instance::new();
    ca_settings(
        &instance,
        "ocsp_responder = \"delegated\"\ncrl_check_secs = 1",
    );
    instance.init();
    let first = instance.serve();
    let second = instance.serve();
    let admin = Client::admin(&instance);
    let ca = instance.ca();
    let alice = client_account(&instance, &first, "alice", &["signer:payments"]);
    let serial = serial_of(&alice.cert);
    let url = |d: &Daemon| d.public_url("/ocsp");

    // Answers are signed by the delegated responder, whose certificate OpenSSL checks against
    // the CA (OCSPSigning, ocsp-nocheck).
    let ocsp = openssl_ocsp(&ca, &alice.cert, &url(&first));
    assert_eq!(ocsp_status(&ocsp, &alice.cert), "good");
    assert!(
        ocsp.contains("Subject: CN=signetd OCSP responder"),
        "{ocsp}"
    );
    assert!(ocsp.contains("OCSP Signing"), "{ocsp}");
    assert!(ocsp.contains("OCSP No Check"), "{ocsp}");
    let ocsp = openssl_ocsp(&ca, &alice.cert, &url(&second));
    assert!(
        ocsp.contains("Subject: CN=signetd OCSP responder"),
        "{ocsp}"
    );

    // Without a nonce, the second daemon caches its answer ...
    let no_nonce = |d: &Daemon| {
        let out = Command::new("openssl")
            .args([
                "ocsp",
                "-issuer",
                s(&ca),
                "-cert",
                s(&alice.cert),
                "-url",
                &url(d),
                "-CAfile",
                s(&ca),
                "-no_nonce",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ocsp_status(&text, &alice.cert)
    };
    assert_eq!(no_nonce(&second), "good");
    assert_eq!(no_nonce(&second), "good");
    let metrics = curl(&[&second.metrics_url("/metrics")]).body;
    assert!(
        metrics.contains(r#"cache="hit",outcome="successful"} 1"#),
        "{metrics}"
    );

    // ... until a status changes through the first daemon: then it answers revoked at once, and
    // refuses the client at once.
    let held = post_empty(
        &instance,
        &first,
        &admin,
        &format!("/v1/certificates/{serial}/deactivate"),
    );
    assert_eq!(held.status, 200, "{held:?}");
    assert_eq!(no_nonce(&second), "revoked");
    assert_eq!(get(&instance, &second, &alice, "/v1/whoami").status, 403);
    let released = post_empty(
        &instance,
        &second,
        &admin,
        &format!("/v1/certificates/{serial}/activate"),
    );
    assert_eq!(released.status, 200, "{released:?}");
    assert_eq!(no_nonce(&first), "good");
    assert_eq!(no_nonce(&second), "good");

    // Both serve the newest CRL; CRL numbers grow by one per CRL across both processes.
    let dir = instance.dir.path();
    let mut numbers = Vec::new();
    for (i, d) in [&first, &second, &first].into_iter().enumerate() {
        let change = if i % 2 == 0 { "deactivate" } else { "activate" };
        let r = post_empty(
            &instance,
            d,
            &admin,
            &format!("/v1/certificates/{serial}/{change}"),
        );
        assert_eq!(r.status, 200, "{r:?}");
        let (a, b) = (dir.join("a.pem"), dir.join("b.pem"));
        fetch_crl(&first, &a);
        fetch_crl(&second, &b);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        numbers.push(crl_number(&a));
        let (ok, out) = openssl_verify(&ca, Some(&a), &alice.cert);
        assert_eq!(ok, change == "activate", "{out}");
    }
    assert!(numbers.windows(2).all(|w| w[1] > w[0]), "{numbers:?}");
    let auditor = client_account(&instance, &first, "auditor", &["auditor"]);
    let mut signed: Vec<u64> = audit_actions(&instance, &first, &auditor)
        .into_iter()
        .filter(|(a, d)| a == "crl.sign" && d.ends_with(" ok"))
        .map(|(_, d)| {
            d.trim_start_matches("crl:")
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let logged = signed.clone();
    signed.sort_unstable();
    signed.dedup();
    assert_eq!(signed, logged, "CRL numbers logged out of order or twice");
    assert_eq!(signed, (1..=signed.len() as u64).collect::<Vec<_>>());
    // The responder certificate was issued once and is the daemon's own: not for the API.
    let responders = audit_actions(&instance, &first, &auditor)
        .into_iter()
        .filter(|(a, _)| a == "ocsp.responder.issue")
        .count();
    assert_eq!(responders, 1);
}

#[test]
fn document_signer_certificates_for_token_keys() {
    let instance = Instance::new();
    instance.init();
    let daemon = instance.serve();
    let admin = Client::admin(&instance);
    let ca = instance.ca();
    let dir = instance.dir.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();

    let ring = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/rings",
        &serde_json::json!({ "name": "docs", "algorithm": "ec-p256" }),
    );
    assert!(ring.status == 201 || ring.status == 200, "{ring:?}");
    let keys = post_json(
        &instance,
        &daemon,
        &admin,
        "/v1/rings/docs/keys",
        &serde_json::json!({ "count": 1 }),
    );
    assert!(keys.status == 201 || keys.status == 200, "{keys:?}");
    let listed = get(&instance, &daemon, &admin, "/v1/keys?ring=docs").json();
    let key = listed["keys"]
        .as_array()
        .and_then(|k| k.first())
        .cloned()
        .unwrap_or_else(|| panic!("no key: {listed}"));
    let id = key["id"].as_str().unwrap().to_owned();

    assert_problem(
        &get(
            &instance,
            &daemon,
            &admin,
            &format!("/v1/keys/{id}/certificate"),
        ),
        404,
    );
    let issued = post_empty(
        &instance,
        &daemon,
        &admin,
        &format!("/v1/keys/{id}/certificate"),
    );
    assert_eq!(issued.status, 201, "{issued:?}");
    let body = issued.json();
    assert_eq!(body["profile"], "document-signer");
    assert_eq!(body["key_id"], id.as_str());
    let crt = dir.join("key.crt");
    let got = call(
        &instance,
        &daemon,
        &admin,
        &["-o", s(&crt)],
        &format!("/v1/keys/{id}/certificate?format=pem"),
    );
    assert_eq!(got.status, 200, "{got:?}");
    let (ok, out) = openssl_verify(&ca, None, &crt);
    assert!(ok, "{out}");
    let text = run_ok("openssl", &["x509", "-in", s(&crt), "-noout", "-text"]);
    assert!(text.contains("1.3.6.1.5.5.7.3.36"), "{text}");
    assert!(text.contains("OU = docs"), "{text}");
    // The certificate is for the token key: its public key is the key's.
    let cert_key = run_ok("openssl", &["x509", "-in", s(&crt), "-noout", "-pubkey"]);
    let key_pem = key["public_key_pem"].as_str().unwrap_or_default();
    if !key_pem.is_empty() {
        assert_eq!(cert_key.trim(), key_pem.trim());
    }
    // Not for keys that do not exist, and only for admins and cert-managers.
    assert_problem(
        &post_empty(
            &instance,
            &daemon,
            &admin,
            "/v1/keys/00000000-0000-0000-0000-000000000000/certificate",
        ),
        404,
    );
    assert_problem(
        &post_empty(&instance, &daemon, &admin, "/v1/keys/nope/certificate"),
        400,
    );
    let signer = client_account(&instance, &daemon, "carol", &["signer:docs"]);
    assert_problem(
        &post_empty(
            &instance,
            &daemon,
            &signer,
            &format!("/v1/keys/{id}/certificate"),
        ),
        403,
    );
}
