//! The token is logged out from another session while the daemon runs: the next request, whose
//! TLS handshake needs the server key in the token, succeeds after the HSM layer recovers — with
//! no daemon restart.
//!
//! The daemon runs in this process because PKCS#11 login state belongs to the process: only a
//! session of the same process can log the daemon's sessions out. One test per binary, because
//! SoftHSM2 reads SOFTHSM2_CONF once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::SessionState;
use tokio_util::sync::CancellationToken;

use signetd::app::{self, App};
use signetd::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_succeed_after_the_token_was_logged_out() {
    let instance = support::Instance::new();
    // SAFETY: the only test of this binary; set before the module is loaded.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", instance.softhsm.conf_path());
    }
    let config = Config::load(Some(&instance.config_path)).unwrap();
    let metrics = app::new_metrics().unwrap();
    let hsm = app::open_hsm(&config, &metrics).unwrap();
    let store = signetd::store::Store::connect(&config.database).unwrap();
    signetd::pki::init(&config, &hsm, &store, &metrics, &instance.out)
        .await
        .unwrap();
    let (app, tls) = App::start(config, hsm, store, metrics.clone())
        .await
        .unwrap();
    let listeners = signetd::server::Listeners::bind(&app.config.listen)
        .await
        .unwrap();
    let port = listeners.addresses().unwrap().api.port();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(signetd::server::run(app, tls, listeners, shutdown.clone()));

    let args: Vec<String> = vec![
        "--cacert".into(),
        support::s(&instance.ca()).into(),
        "--cert".into(),
        support::s(&instance.admin_cert()).into(),
        "--key".into(),
        support::s(&instance.admin_key()).into(),
        format!("https://localhost:{port}/v1/whoami"),
    ];
    // curl blocks, so it runs off the runtime that serves it.
    let whoami = || {
        let args = args.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                support::curl(&args)
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(whoami().await.status, 200);

    // Another session of this process logs the token out: every session loses its login.
    let other = Pkcs11::new(instance.softhsm.module_path()).unwrap();
    let _ = other.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = other
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| other.get_token_info(*s).unwrap().label().trim_end() == "test-ca")
        .expect("the ca token");
    let session = other.open_ro_session(slot).unwrap();
    session.logout().unwrap();
    assert_eq!(
        session.get_session_info().unwrap().session_state(),
        SessionState::RoPublic
    );

    let recovered_before = metrics.hsm_recoveries.with_label_values(&["test-ca"]).get();
    let after = whoami().await;
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(after.json()["account"], "admin");
    let recovered_after = metrics.hsm_recoveries.with_label_values(&["test-ca"]).get();
    assert!(
        recovered_after > recovered_before,
        "the request succeeded without the HSM layer noticing the logout"
    );
    // And again, with the session recovered.
    assert_eq!(whoami().await.status, 200);
    drop(session);

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
