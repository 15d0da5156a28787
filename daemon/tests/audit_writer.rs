//! The audit writer in process, on a real token and a real database: an entry whose write
//! fails in the database fails only its own request, not the others committed in its group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use signetd::audit::{Actor, Audit, AuditError, Record};
use signetd::store::{Store, StoreError};
use support::{Instance, PIN};

fn record(i: usize) -> Record {
    Record::ok(
        // No client certificate: the writer checks the standing of callers that have one
        // (none is registered here), not the daemon's own entries.
        &Actor {
            fingerprint: String::new(),
            account: "writer-test".into(),
        },
        "whoami",
        format!("test:{i}"),
        &serde_json::json!({ "i": i }),
        None,
    )
}

#[test]
fn a_failing_entry_fails_only_its_own_request() {
    let instance = Instance::new();
    instance.init();
    // SAFETY: the only test of this binary sets it before any thread reads the environment.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", instance.softhsm.conf_path());
    }
    let config = signetd::config::Config::load(Some(&instance.config_path)).unwrap();
    // One thread: every call below is queued before the writer runs, so they form one group.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let metrics = signetd::metrics::Metrics::new().unwrap();
        let hsm = signetd::hsm::Hsm::open(
            &config.hsm.module,
            vec![signetd::hsm::TokenSpec {
                name: "audit".into(),
                label: "test-audit".into(),
                pin: PIN.to_owned().into(),
            }],
            2,
            metrics.clone(),
        )
        .unwrap();
        let store = Store::connect(&config.database).unwrap();
        let key = store.audit_key().await.unwrap().expect("the audit key");
        let audit = Audit::start(
            store.clone(),
            hsm,
            &key,
            config.audit.clone(),
            metrics.clone(),
        )
        .await
        .unwrap();
        let before = store.audit_size().await.unwrap();

        // A mutation that fails with an error other than a refusal aborts the writer's
        // transaction: the bug this guards against, made on purpose.
        let broken = audit.append_with_contained(
            record(999),
            Box::new(|tx| {
                Box::pin(async move {
                    tx.batch_execute("SELECT 1 / 0")
                        .await
                        .map_err(StoreError::from)
                })
            }),
        );
        let plain = (0..20).map(|i| audit.append(record(i)));
        let (broken, plain) = tokio::join!(broken, futures_util::future::join_all(plain));

        assert!(
            matches!(broken, Err(AuditError::Unavailable(_))),
            "{broken:?}"
        );
        let mut seqs: Vec<u64> = plain
            .into_iter()
            .map(|r| r.expect("a plain entry of the failed group").seq)
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (before..before + 20).collect::<Vec<_>>());
        // The group did fail (the path under test ran), and the log is whole.
        assert!(metrics.audit_failures.get() >= 1);
        assert_eq!(store.audit_size().await.unwrap(), before + 20);
        let public_key = signetd::audit::ed25519_public_key(&key).unwrap();
        let report = signetd::audit::verify_log(&store, &config.audit.origin, &public_key, &[])
            .await
            .unwrap();
        assert_eq!(report.entries, before + 20);
    });
}
