//! The audit writer in process, on a real token and a real database: an entry whose write
//! fails in the database fails only its own request, not the others committed in its group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use signetd::audit::{Actor, AuditError, Record};
use signetd::store::StoreError;
use support::audit::{self, current_thread};

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
    let instance = audit::instance();
    current_thread().block_on(async {
        let setup = audit::Setup::new(&instance).await;
        let audit = setup.writer(true).await;
        let (store, metrics) = (&setup.store, &setup.metrics);
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
        setup.verify(before + 20).await;
    });
}
