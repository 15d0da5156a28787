//! The audit writer's one-call path (`sql/V15__audit_append_in_one_call.sql`), in process on a
//! real token and a real database: a group of plain records commits in one round trip; when
//! another writer appended meanwhile, or a caller of the group may not be served, nothing of
//! the one call stands and the general path decides — the log stays whole, in order, and the
//! refused caller's operation is withheld.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use signetd::audit::{Actor, Audit, AuditError, Receipt, Record};
use support::audit::{self, current_thread};

fn record(actor: &Actor, i: usize) -> Record {
    Record::ok(
        actor,
        "whoami",
        format!("test:{i}"),
        &serde_json::json!({ "i": i }),
        None,
    )
}

/// The daemon's own entries: no client certificate, so no caller to check.
fn daemon() -> Actor {
    Actor {
        fingerprint: String::new(),
        account: "writer-test".into(),
    }
}

/// `n` plain records appended at once (one group on this one-thread runtime), their
/// sequence numbers in order.
async fn group(audit: &Audit, n: usize) -> Vec<u64> {
    let actor = daemon();
    let receipts = futures_util::future::join_all((0..n).map(|i| audit.append(record(&actor, i))));
    let mut seqs: Vec<u64> = receipts
        .await
        .into_iter()
        .map(|r: Result<Receipt, AuditError>| r.expect("a plain entry").seq)
        .collect();
    seqs.sort_unstable();
    seqs
}

#[test]
fn plain_groups_take_one_call_and_fall_back_when_they_must() {
    let instance = audit::instance();
    current_thread().block_on(async {
        let mut setup = audit::Setup::new(&instance).await;
        // A checkpoint due also takes the general path (it is signed in the transaction):
        // none falls due here.
        setup.config.audit.checkpoint_every = 1_000_000;
        let a = setup.writer(true).await;
        let start = setup.store.audit_size().await.unwrap();

        // The first group loads the tree (general path); the next ones know it.
        assert_eq!(group(&a, 1).await, vec![start]);
        let general = setup.groups("general");
        assert_eq!(general, 1);
        assert_eq!(
            group(&a, 20).await,
            (start + 1..start + 21).collect::<Vec<_>>()
        );
        assert_eq!(group(&a, 3).await, vec![start + 21, start + 22, start + 23]);
        assert_eq!(
            setup.groups("one-call"),
            2,
            "two plain groups, one call each"
        );
        assert_eq!(setup.groups("general"), general);

        // Another daemon appends: this writer's tree is out of date, its one call appends
        // nothing, and the general path writes after the other's entries.
        let b = setup.writer(false).await;
        assert_eq!(
            group(&b, 5).await,
            (start + 24..start + 29).collect::<Vec<_>>()
        );
        assert_eq!(group(&a, 2).await, vec![start + 29, start + 30]);
        assert_eq!(setup.groups("general"), general + 1);
        assert_eq!(setup.groups("one-call"), 2);
        // And the next group takes one call again.
        assert_eq!(group(&a, 2).await, vec![start + 31, start + 32]);
        assert_eq!(setup.groups("one-call"), 3);

        // A caller whose certificate is not registered, in a group with plain records: the
        // one call refuses the group, the general path withholds that caller's operation
        // alone, and its entry says so.
        let stranger = Actor {
            fingerprint: "ab".repeat(32),
            account: "stranger".into(),
        };
        let actor = daemon();
        let refused_before = setup.metrics.audit_callers_refused.get();
        let (theirs, ours) = tokio::join!(
            a.append(record(&stranger, 0)),
            futures_util::future::join_all((0..4).map(|i| a.append(record(&actor, i))))
        );
        match theirs {
            Err(AuditError::CallerRefused { receipt, .. }) => {
                let entry = setup.store.audit_entries(receipt.seq, 1).await.unwrap();
                assert_eq!(entry[0].result, "error:forbidden");
                assert_eq!(entry[0].output_digest, None);
            }
            other => panic!("the stranger's operation was not withheld: {other:?}"),
        }
        for r in ours {
            r.expect("a plain entry of the group with a refused caller");
        }
        assert_eq!(
            setup.metrics.audit_callers_refused.get(),
            refused_before + 1
        );
        assert_eq!(setup.groups("general"), general + 2);
        assert_eq!(setup.groups("one-call"), 3);

        setup.verify(start + 38).await;
    });
}
