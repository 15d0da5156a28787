//! app: the daemon's shared state and its start-up — open the token and the database, apply
//! migrations, reconcile the key table with the token, load the CA and the TLS material.

use std::sync::Arc;

use der::{Decode as _, EncodePem as _};

use crate::audit::Audit;
use crate::config::Config;
use crate::hsm::{Hsm, HsmError, TokenSpec};
use crate::metrics::Metrics;
use crate::pki::HsmSigner;
use crate::store::{Store, StoreError};

/// Errors while starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Token.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// Database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// PKI material.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// `signetd init` has not run against this database.
    #[error("{0} not found in the database: run `signetd init` first")]
    NotInitialised(&'static str),
    /// Audit log.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// Metrics registry.
    #[error("metrics: {0}")]
    Metrics(String),
}

/// Everything a request handler may need. Cheap to clone: one reference count (the router
/// clones it for every request and middleware), the parts behind [`std::ops::Deref`].
#[derive(Debug, Clone)]
pub struct App(Arc<AppParts>);

impl std::ops::Deref for App {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`App`].
#[derive(Debug)]
pub struct AppParts {
    /// Configuration.
    pub config: Arc<Config>,
    /// HSM layer.
    pub hsm: Hsm,
    /// Database.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
    /// The CA certificate, DER.
    pub ca_der: Arc<Vec<u8>>,
    /// The CA certificate, PEM.
    pub ca_pem: Arc<String>,
    /// The CA key as a signer.
    pub ca_signer: Arc<HsmSigner>,
    /// The audit log.
    pub audit: Audit,
    /// The API listener's certificate, swapped by [`App::reload_tls`].
    pub tls: Arc<crate::tls::CertResolver>,
    /// Online signing.
    pub signing: crate::signing::Signing,
    /// The certificate authority at run time.
    pub ca: crate::pki::service::CaService,
    /// Batch record signing.
    pub jobs: crate::jobs::Jobs,
    /// Per-client rate limits.
    pub limits: Arc<crate::limits::RateLimits>,
    /// Who each client certificate is, cached for `api::identify` (invariant 7 is kept by the
    /// audit writer's check of every caller; see `api::identities`).
    pub identities: crate::api::identities::Identities,
}

/// `hsm.max_parallel` when unset: four token threads per CPU, at least 8. The threads take
/// queued operations one after the other without a hand-off, so a software token would be
/// served by one per core; the extra threads win the token a larger share of the cores against
/// the runtime's and PostgreSQL's (P-256 `/v1/sign` at 64 connections, ring of 8 keys, on 2
/// cores: 5,799 requests/s with 2 threads, 6,506 with 8). A token that does its work elsewhere
/// (a hardware HSM) wants as many as it runs operations at once.
pub fn default_max_parallel() -> usize {
    std::thread::available_parallelism().map_or(8, |n| (4 * n.get()).max(8))
}

/// Opens the HSM layer with every configured token (PINs from their sources).
pub fn open_hsm(config: &Config, metrics: &Metrics) -> Result<Hsm, StartError> {
    let mut tokens = Vec::new();
    for (name, token) in &config.hsm.tokens {
        tokens.push(TokenSpec {
            name: name.clone(),
            label: token.label.clone(),
            pin: token.read_pin(name)?,
        });
    }
    let parallel = config.hsm.max_parallel.unwrap_or_else(default_max_parallel);
    Ok(Hsm::open(
        &config.hsm.module,
        tokens,
        parallel,
        metrics.clone(),
    )?)
}

/// Creates the metrics registry.
pub fn new_metrics() -> Result<Metrics, StartError> {
    Metrics::new().map_err(|e| StartError::Metrics(e.to_string()))
}

impl App {
    /// Starts: database migrations, key reconciliation, CA and TLS material. Returns the
    /// application state and the API listener's TLS configuration.
    pub async fn start(
        config: Config,
        hsm: Hsm,
        store: Store,
        metrics: Metrics,
    ) -> Result<(App, Arc<rustls::ServerConfig>), StartError> {
        store.migrate().await?;
        reconcile(&hsm, &store).await?;
        let (ca_key, ca_der) = store
            .ca()
            .await?
            .ok_or(StartError::NotInitialised("the CA"))?;
        let ca_signer = crate::pki::ca_signer(&hsm, &ca_key)?;
        let audit_key = store
            .audit_key()
            .await?
            .ok_or(StartError::NotInitialised("the audit key"))?;
        let audit = Audit::start(
            store.clone(),
            hsm.clone(),
            &audit_key,
            config.audit.clone(),
            metrics.clone(),
        )
        .await?;
        let (tls_key, tls_cert, _) = store
            .server_tls()
            .await?
            .ok_or(StartError::NotInitialised("the server certificate"))?;
        let signing = crate::signing::Signing::start(
            hsm.clone(),
            store.clone(),
            audit.clone(),
            metrics.clone(),
            config.signing.clone(),
        )
        .await?;
        let ca = crate::pki::service::CaService::start(
            &config,
            hsm.clone(),
            store.clone(),
            audit.clone(),
            metrics.clone(),
            ca_signer.clone(),
            &ca_der,
        )
        .await?;
        let jobs = crate::jobs::Jobs::start(
            store.clone(),
            hsm.clone(),
            audit.clone(),
            metrics.clone(),
            &config,
        )
        .await?;
        let tls_slot = hsm.key(&tls_key.token, &tls_key.label, tls_key.algorithm)?;
        let (tls, tls_resolver) = crate::tls::server_config(&hsm, tls_slot, &tls_cert, &ca_der)?;
        let ca_pem = x509_cert::Certificate::from_der(&ca_der)
            .and_then(|c| c.to_pem(der::pem::LineEnding::LF))
            .map_err(|e| StartError::Pki(crate::pki::PkiError::Corrupt(e.to_string())))?;
        let limits = crate::limits::RateLimits::start(
            config.rate_limits.clone(),
            audit.clone(),
            metrics.clone(),
        );
        let app = App(Arc::new(AppParts {
            limits,
            identities: Default::default(),
            config: Arc::new(config),
            hsm,
            store,
            metrics,
            ca_der: Arc::new(ca_der),
            ca_pem: Arc::new(ca_pem),
            ca_signer,
            audit,
            tls: tls_resolver,
            signing,
            ca,
            jobs,
        }));
        app.act_on_notices();
        Ok((app, tls))
    }
}

impl App {
    /// Acts on the changes other processes announce (`store::notify`) for the life of the
    /// process: a retired key stops being lent at once, and so (until it may sign again) does
    /// a key whose budget was used up; changed limits are read again and wake the batch
    /// workers; a certificate status change or an account deletion drops the cached identities
    /// and the rate-limit buckets (roles may have changed). Invariant 7 does not wait for the
    /// notice: the audit writer checks every caller of a group before it commits.
    fn act_on_notices(&self) {
        let app = self.clone();
        tokio::spawn(async move {
            loop {
                match crate::store::notify::listen_to(
                    &app.config.database,
                    crate::store::notify::CHANNEL,
                )
                .await
                {
                    Ok(mut listener) => {
                        // Notices sent while nobody listened are lost.
                        app.identities.clear();
                        while let Some(notice) = listener.next_notice().await {
                            app.act_on(notice).await;
                        }
                        tracing::warn!("the notification connection dropped; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot listen for notices; retrying"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }

    async fn act_on(&self, notice: crate::store::notify::Notice) {
        use crate::store::notify::Notice;
        match notice {
            Notice::KeyRetired(id) => {
                self.signing.retired_elsewhere(id).await;
                tracing::info!(%id, "a key retired elsewhere is no longer lent here");
            }
            Notice::CertificateStatus(_) | Notice::AccountDeleted(_) => {
                self.identities.clear();
                self.limits.reset();
            }
            Notice::LimitsChanged => {
                self.signing.limits_changed();
                // Workers may be waiting for a budget to be raised.
                self.jobs.wake();
            }
            Notice::KeySpent(id) => {
                self.signing.spent_elsewhere(id).await;
                tracing::info!(%id, "a key whose signature budget is used up is no longer lent here");
            }
        }
    }

    /// Re-reads the server certificate and key from the database (after `signetd init`
    /// re-issued them) and uses them for new handshakes. Runs on SIGHUP.
    pub async fn reload_tls(&self) -> Result<(), StartError> {
        let (key, cert, names) = self
            .store
            .server_tls()
            .await?
            .ok_or(StartError::NotInitialised("the server certificate"))?;
        let (hsm, k) = (self.hsm.clone(), key.clone());
        let slot = tokio::task::spawn_blocking(move || hsm.key(&k.token, &k.label, k.algorithm))
            .await
            .map_err(|e| HsmError::Worker(e.to_string()))??;
        self.tls.set(&self.hsm, slot, &cert, &self.ca_der);
        tracing::info!(names = ?names, key = %key.label, "reloaded the server certificate");
        Ok(())
    }
}

/// Compares the key table with the tokens: a recorded key that the token lacks (or whose public
/// key differs) is marked `missing`; one that came back is `active` again; keys on a token that
/// carry a signetd label but are not recorded are reported.
pub async fn reconcile(hsm: &Hsm, store: &Store) -> Result<(), StartError> {
    let keys = store.keys().await?;
    let tokens = hsm.token_names();
    for key in &keys {
        if !tokens.contains(&key.token) {
            tracing::warn!(key = %key.label, token = %key.token, "key's token is not configured");
            continue;
        }
        let (h, k) = (hsm.clone(), key.clone());
        let found =
            tokio::task::spawn_blocking(move || h.public_key(&k.token, &k.label, k.algorithm))
                .await
                .map_err(|e| HsmError::Worker(e.to_string()))?;
        let state = match found {
            Ok(spki) if spki == key.public_key => {
                // Its slot now, from what was just read: the first use looks nothing up again.
                if key.state != "retired" {
                    hsm.key_found(&key.token, &key.label, key.algorithm, spki)?;
                }
                "active"
            }
            Ok(_) => {
                tracing::error!(key = %key.label, token = %key.token, "token key differs from the recorded public key");
                "missing"
            }
            Err(HsmError::KeyNotFound { .. }) => {
                tracing::error!(key = %key.label, token = %key.token, "recorded key is not on its token");
                "missing"
            }
            Err(e) => return Err(e.into()),
        };
        if key.state != state && key.state != "retired" {
            store.set_key_state(key.id, state).await?;
            tracing::warn!(key = %key.label, from = %key.state, to = state, "key state reconciled");
        }
    }
    for token in &tokens {
        let (h, t) = (hsm.clone(), token.clone());
        let labels = tokio::task::spawn_blocking(move || h.private_key_labels(&t))
            .await
            .map_err(|e| HsmError::Worker(e.to_string()))??;
        for label in labels {
            let known = keys.iter().any(|k| &k.token == token && k.label == label);
            if label.starts_with("signetd-") && !known {
                tracing::warn!(token = %token, key = %label, "key on the token is not in the database (left from an interrupted init?)");
            }
        }
    }
    Ok(())
}

/// Readies the slots of the keys found on their tokens — each one's session, login and key
/// lookup — on one blocking thread, so that the first request or batch of a key does not pay
/// for it (with SoftHSM2 each lookup reads every object file of the token: ~5 ms a key with
/// 200 keys on it). For `serve` only, once it listens: a command that changes keys does not
/// race it. Whatever fails is left to the first signature, which recovers or reports it as it
/// always does.
pub fn prepare_key_slots(hsm: &Hsm) {
    let slots = hsm.slots();
    if slots.is_empty() {
        return;
    }
    let hsm = hsm.clone();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let ready = slots
            .iter()
            .filter(|slot| match hsm.prepare(slot) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(key = %slot.label(), error = %e, "key slot not prepared; its first signature will");
                    false
                }
            })
            .count();
        tracing::info!(
            ready,
            keys = slots.len(),
            millis = started.elapsed().as_millis() as u64,
            "key slots prepared"
        );
    });
}
