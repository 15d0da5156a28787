//! The audit writer in process, on a real token and a real database: writers started the way
//! the daemon starts its own, with the metrics to tell which path a group took.

use signetd::audit::Audit;
use signetd::store::{KeyRecord, Store};

use super::{Instance, PIN};

/// The token, database and configuration of an instance, and a way to start writers on them.
pub struct Setup {
    pub config: signetd::config::Config,
    pub store: Store,
    pub key: KeyRecord,
    pub metrics: signetd::metrics::Metrics,
}

impl Setup {
    pub async fn new(instance: &Instance) -> Setup {
        let config = signetd::config::Config::load(Some(&instance.config_path)).unwrap();
        let store = Store::connect(&config.database).unwrap();
        let key = store.audit_key().await.unwrap().expect("the audit key");
        Setup {
            config,
            store,
            key,
            metrics: signetd::metrics::Metrics::new().unwrap(),
        }
    }

    /// A writer with its own token session and metrics (`shared`: this setup's metrics), as
    /// another daemon on the same database would have.
    pub async fn writer(&self, shared: bool) -> Audit {
        let metrics = if shared {
            self.metrics.clone()
        } else {
            signetd::metrics::Metrics::new().unwrap()
        };
        let hsm = signetd::hsm::Hsm::open(
            &self.config.hsm.module,
            vec![signetd::hsm::TokenSpec {
                name: "audit".into(),
                label: "test-audit".into(),
                pin: PIN.to_owned().into(),
            }],
            2,
            metrics.clone(),
        )
        .unwrap();
        Audit::start(
            self.store.clone(),
            hsm,
            &self.key,
            self.config.audit.clone(),
            metrics,
        )
        .await
        .unwrap()
    }

    pub fn groups(&self, path: &str) -> u64 {
        self.metrics.audit_groups.with_label_values(&[path]).get()
    }

    /// The whole log verifies, and has `entries` entries.
    pub async fn verify(&self, entries: u64) {
        let public_key = signetd::audit::ed25519_public_key(&self.key).unwrap();
        let report =
            signetd::audit::verify_log(&self.store, &self.config.audit.origin, &public_key, &[])
                .await
                .unwrap();
        assert_eq!(report.entries, entries);
    }
}

/// An instance whose token the tests of this binary open in process.
pub fn instance() -> Instance {
    let instance = Instance::new();
    instance.init();
    // SAFETY: set before any runtime or thread of the test starts; a test binary that uses
    // this has one test, so nothing else reads the environment meanwhile.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", instance.softhsm.conf_path());
    }
    instance
}

pub fn current_thread() -> tokio::runtime::Runtime {
    // One thread: every call joined below is queued before the writer runs, so they form one
    // group.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
