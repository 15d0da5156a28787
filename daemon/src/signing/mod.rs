//! signing: key rings and online signing — generate keys into rings, pick the least recently
//! used idle key, one operation per key at a time, bounded queues per ring, and the signature
//! itself through the HSM layer (which verifies it before release).
//!
//! Inside this process each ring has a [`pool::RingPool`]: the keys this process holds a lease
//! on, lent to one operation at a time. Across processes a key is shared through the lease
//! table (`store::rings`): a pool leases one more key (least recently used first) when a
//! request has to wait, renews its leases while it holds them, and releases a key that stayed
//! idle for `signing.idle_release_secs`, so other daemons and batch jobs can use it. The hot
//! path does no SQL: usage counters are flushed every `signing.usage_flush_secs`.

pub mod openpgp;
pub mod pool;
mod trace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use uuid::Uuid;

pub use pool::{AcquireError, KeyGuard, RingPool};

use crate::audit::{Actor, Audit, AuditError, Receipt, Record};
use crate::config;
use crate::crypto::{self, SchemeError, SignInputBuf, SignatureScheme};
use crate::hsm::{Hsm, HsmError, KeyAlgorithm, KeySlot};
use crate::metrics::Metrics;
use crate::store::rings::{Ring, RingKey};
use crate::store::{KeyRecord, Store, StoreError};

/// Errors of online signing and key management, grouped by what the client should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// No ring has this name (404).
    #[error("no ring named `{0}`")]
    UnknownRing(String),
    /// No ring key has this id (404).
    #[error("no key with id {0}")]
    UnknownKey(Uuid),
    /// No ring key has this OpenPGP key id or fingerprint (404; 400 on the albs-sign-file
    /// surface, as there).
    #[error("key {0} does not exist")]
    UnknownOpenPgpKey(String),
    /// The key is retired (or missing from its token): it verifies but no longer signs (409).
    #[error("key {0} is retired or missing: it verifies but no longer signs")]
    KeyNotActive(Uuid),
    /// The ring has no key that may sign (409).
    #[error("ring `{0}` has no active key; generate one")]
    NoActiveKey(String),
    /// The request is malformed; the message is client-safe (400).
    #[error("{0}")]
    Invalid(String),
    /// The scheme, digest or encoding does not fit the key (400).
    #[error(transparent)]
    Scheme(#[from] SchemeError),
    /// The request conflicts with what exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The ring's queue is full, or no key came in time (503 with Retry-After).
    #[error("ring `{ring}` is busy ({why}); retry later")]
    Busy {
        /// The ring.
        ring: String,
        /// `queue full` or `timed out waiting for a key`.
        why: &'static str,
    },
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What a request signs with: a ring (its least recently used idle key) or one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Any active key of the ring.
    Ring(String),
    /// This key.
    Key(Uuid),
}

/// A target resolved to its ring's scheduler.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The ring's scheduler.
    pub pool: Arc<RingPool>,
    /// The key asked for, if any.
    pub key: Option<Uuid>,
}

impl Resolved {
    /// The ring name.
    pub fn ring(&self) -> &str {
        &self.pool.name
    }

    /// The algorithm of the ring's keys.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.pool.algorithm
    }

    /// The audit subject: `ring:NAME` or `key:ID`.
    pub fn subject(&self) -> String {
        match self.key {
            Some(id) => format!("key:{id}"),
            None => format!("ring:{}", self.pool.name),
        }
    }
}

/// One signature made.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The key that signed.
    pub key_id: Uuid,
    /// The signature in the scheme's standard encoding (DER for ECDSA), verified.
    pub signature: Vec<u8>,
}

/// A key lent to one request by [`Signing::hold`]; dropping it gives the key back unused.
#[derive(Debug)]
pub struct HeldKey {
    guard: KeyGuard,
    slot: Arc<KeySlot>,
}

impl HeldKey {
    /// The key's id.
    pub fn id(&self) -> Uuid {
        self.guard.id()
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.slot.algorithm()
    }
}

/// A ring key as shown to clients: the stored record plus usage not yet flushed.
#[derive(Debug, Clone)]
pub struct KeyView {
    /// The stored key.
    pub key: RingKey,
    /// `active`, `retired` or `missing`.
    pub state: &'static str,
}

/// What key generation did.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Whether the ring was created.
    pub ring_created: bool,
    /// The ring.
    pub ring: Ring,
    /// The new keys and the receipts of their audit entries.
    pub keys: Vec<(RingKey, Receipt)>,
    /// The receipt of the ring's creation.
    pub ring_receipt: Option<Receipt>,
}

/// The online signing service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Signing {
    inner: Arc<Inner>,
}

struct Inner {
    hsm: Hsm,
    store: Store,
    audit: Audit,
    metrics: Metrics,
    cfg: config::Signing,
    /// This process's name in the lease table.
    holder: String,
    rings: Mutex<HashMap<String, Arc<RingPool>>>,
    /// Key id → ring (a key never changes ring).
    key_rings: Mutex<HashMap<Uuid, String>>,
    trace: Option<trace::Trace>,
    openpgp: Mutex<openpgp::Cache>,
    /// Key id → whether a budget or window applies (as last read; cleared on a
    /// `limits.changed` notice and whenever this process changes limits).
    limited: Mutex<HashMap<Uuid, bool>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent at every step; a panic elsewhere does not corrupt them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `name` is a valid ring name (the schema's rule): lower-case letters, digits, `.`,
/// `_` and `-`, starting with a letter or digit, at most 63 characters.
pub fn valid_ring_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

/// An audit record for `actor`.
pub fn record(
    actor: &Actor,
    action: &str,
    subject: String,
    params: &serde_json::Value,
    output: Option<&[u8]>,
) -> Record {
    Record::ok(actor, action, subject, params, output)
}

fn audit_err(e: AuditError) -> SigningError {
    match e {
        AuditError::Operation { error, .. } => SigningError::Store(error),
        other => SigningError::Audit(other),
    }
}

impl Signing {
    /// Starts the service and its maintenance task (lease renewal, idle release, usage flush).
    pub async fn start(
        hsm: Hsm,
        store: Store,
        audit: Audit,
        metrics: Metrics,
        cfg: config::Signing,
    ) -> Result<Signing, StoreError> {
        let trace = match &cfg.trace_file {
            Some(path) => Some(
                trace::Trace::open(path)
                    .map_err(|e| StoreError::Config(format!("{}: {e}", path.display())))?,
            ),
            None => None,
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let holder = format!(
            "online:{host}:{}:{}",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let signing = Signing {
            inner: Arc::new(Inner {
                hsm,
                store,
                audit,
                metrics,
                cfg,
                holder,
                rings: Mutex::new(HashMap::new()),
                key_rings: Mutex::new(HashMap::new()),
                trace,
                openpgp: Mutex::new(openpgp::Cache::default()),
                limited: Mutex::new(HashMap::new()),
            }),
        };
        let weak = Arc::downgrade(&signing.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_flush = Instant::now();
            let mut last_renew = Instant::now();
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let s = Signing { inner };
                s.maintain(&mut last_flush, &mut last_renew).await;
            }
        });
        Ok(signing)
    }

    /// The configuration.
    pub fn config(&self) -> &config::Signing {
        &self.inner.cfg
    }

    /// This process's holder name in the lease table.
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }

    /// The scheduler of a ring, loading the ring on first use.
    pub async fn pool(&self, ring: &str) -> Result<Arc<RingPool>, SigningError> {
        if let Some(p) = lock(&self.inner.rings).get(ring) {
            return Ok(p.clone());
        }
        if !valid_ring_name(ring) {
            return Err(SigningError::UnknownRing(ring.to_owned()));
        }
        let found = self
            .inner
            .store
            .ring(ring)
            .await?
            .ok_or_else(|| SigningError::UnknownRing(ring.to_owned()))?;
        let pool = Arc::new(RingPool::new(
            found.name.clone(),
            found.algorithm,
            found.token,
            self.inner.cfg.queue_per_ring,
            Duration::from_secs(self.inner.cfg.lease_ttl_secs) / 3,
        ));
        Ok(lock(&self.inner.rings)
            .entry(found.name)
            .or_insert(pool)
            .clone())
    }

    /// The ring a key belongs to.
    pub async fn ring_of_key(&self, id: Uuid) -> Result<String, SigningError> {
        if let Some(r) = lock(&self.inner.key_rings).get(&id) {
            return Ok(r.clone());
        }
        let key = self
            .inner
            .store
            .ring_key(id)
            .await?
            .ok_or(SigningError::UnknownKey(id))?;
        lock(&self.inner.key_rings).insert(id, key.ring.clone());
        Ok(key.ring)
    }

    /// Resolves a target to its ring's scheduler. A key that this process does not hold is
    /// checked in the database: unknown → [`SigningError::UnknownKey`], retired →
    /// [`SigningError::KeyNotActive`].
    pub async fn resolve(&self, target: &Target) -> Result<Resolved, SigningError> {
        match target {
            Target::Ring(name) => Ok(Resolved {
                pool: self.pool(name).await?,
                key: None,
            }),
            Target::Key(id) => {
                let ring = self.ring_of_key(*id).await?;
                let pool = self.pool(&ring).await?;
                if !pool.holds(*id) {
                    let key = self
                        .inner
                        .store
                        .ring_key(*id)
                        .await?
                        .ok_or(SigningError::UnknownKey(*id))?;
                    if key_state(&key) != "active" {
                        return Err(SigningError::KeyNotActive(*id));
                    }
                }
                Ok(Resolved {
                    pool,
                    key: Some(*id),
                })
            }
        }
    }

    /// Signs `input` under `scheme` with the least recently used idle key of the ring (or the
    /// key asked for), waiting in the ring's bounded queue if every key is busy. The HSM layer
    /// verifies the signature before it is returned (invariant 8).
    pub async fn sign(
        &self,
        target: &Resolved,
        scheme: SignatureScheme,
        input: SignInputBuf,
    ) -> Result<Signed, SigningError> {
        let (key_id, mut signatures) = self.sign_each(target, scheme, vec![input]).await?;
        let signature = signatures
            .pop()
            .ok_or_else(|| SigningError::Hsm(HsmError::Worker("no signature".into())))?;
        Ok(Signed { key_id, signature })
    }

    /// Signs each of `inputs` with one key of `target`, taken once (least recently used, or the
    /// one asked for): what `/v1/sign-batch` does with a share of its items, so that the key is
    /// handed over and the token thread woken once per share, not once per item. Every
    /// signature is verified before it is returned (invariant 8); the first failure fails the
    /// whole share.
    pub async fn sign_each(
        &self,
        target: &Resolved,
        scheme: SignatureScheme,
        inputs: Vec<SignInputBuf>,
    ) -> Result<(Uuid, Vec<Vec<u8>>), SigningError> {
        // Bad requests never queue.
        for input in &inputs {
            scheme.check(target.algorithm(), input.as_input())?;
        }
        let held = self.hold(target).await?;
        let key_id = held.id();
        let items = inputs.into_iter().map(|input| (scheme, input)).collect();
        Ok((key_id, self.sign_held(held, items).await?))
    }

    /// Takes one key of `target` (least recently used, or the one asked for) and keeps it
    /// lent until [`Signing::sign_held`] gives it back (or the value is dropped): for a request
    /// that must know which key signs before it can say what is signed (an OpenPGP signature
    /// names its issuer, a CMS one its certificate). Keep the time between the two short.
    pub async fn hold(&self, target: &Resolved) -> Result<HeldKey, SigningError> {
        let guard = self.acquire(&target.pool, target.key).await?;
        let slot = guard
            .slot()
            .cloned()
            .ok_or_else(|| SigningError::Hsm(HsmError::Worker("empty key guard".into())))?;
        Ok(HeldKey { guard, slot })
    }

    /// Signs each item (scheme and input) with the held key on one token thread, then gives
    /// the key back to its pool from that thread (after the trace recorded the operation's
    /// end). Every signature is verified before it is returned (invariant 8); the first
    /// failure fails them all.
    pub async fn sign_held(
        &self,
        held: HeldKey,
        items: Vec<(SignatureScheme, SignInputBuf)>,
    ) -> Result<Vec<Vec<u8>>, SigningError> {
        let HeldKey { mut guard, slot } = held;
        for (scheme, input) in &items {
            scheme.check(slot.algorithm(), input.as_input())?;
        }
        let count = items.len();
        let key_id = guard.id();
        if let Err(why) = self.spend(key_id, count).await? {
            drop(guard);
            self.set_aside(key_id).await;
            return Err(SigningError::Conflict(why));
        }
        let inner = self.inner.clone();
        let start = inner.trace.as_ref().map(trace::Trace::now);
        let release = move |made: usize| {
            if let (Some(t), Some(start)) = (&inner.trace, start) {
                t.record(key_id, start, t.now());
            }
            if made == count {
                guard.mark_signed(count as u64);
            }
            drop(guard);
        };
        let signatures = self
            .inner
            .hsm
            .sign_items_then(
                &slot,
                items,
                tokio_util::sync::CancellationToken::new(),
                release,
            )
            .await?;
        if signatures.len() != count {
            return Err(SigningError::Hsm(HsmError::Worker(
                "the token thread stopped early".into(),
            )));
        }
        Ok(signatures)
    }

    /// A key of the pool, now or after waiting in the ring's queue.
    async fn acquire(
        &self,
        pool: &Arc<RingPool>,
        want: Option<Uuid>,
    ) -> Result<KeyGuard, SigningError> {
        let m = &self.inner.metrics;
        let started = Instant::now();
        let (rx, lease) = match pool.try_acquire(want) {
            pool::Acquire::Ready(g) => {
                m.signing_queue_wait
                    .observe(started.elapsed().as_secs_f64());
                return Ok(g);
            }
            pool::Acquire::Queued { rx, lease } => (rx, lease),
            pool::Acquire::Refused(_) => {
                m.signing_queue_rejections
                    .with_label_values(&[&pool.name])
                    .inc();
                return Err(self.busy_or_spent(pool, want, "queue full").await);
            }
        };
        if lease {
            let s = self.clone();
            let p = pool.clone();
            tokio::spawn(async move { s.lease_loop(p).await });
        }
        let depth =
            crate::metrics::Raised::new(m.signing_queue_depth.with_label_values(&[&pool.name]));
        let waiting = self.inner.audit.backlog().enter();
        let timeout = Duration::from_millis(self.inner.cfg.queue_timeout_ms.max(1));
        let got = tokio::time::timeout(timeout, rx).await;
        drop((depth, waiting));
        match got {
            Ok(Ok(guard)) => {
                m.signing_queue_wait
                    .observe(started.elapsed().as_secs_f64());
                Ok(guard)
            }
            // The pool dropped the request: the key asked for was retired, or the ring has no
            // key that may sign.
            Ok(Err(_)) => Err(match want {
                Some(id) => SigningError::KeyNotActive(id),
                None => SigningError::NoActiveKey(pool.name.clone()),
            }),
            Err(_) => {
                m.signing_queue_rejections
                    .with_label_values(&[&pool.name])
                    .inc();
                Err(self
                    .busy_or_spent(pool, want, "timed out waiting for a key")
                    .await)
            }
        }
    }

    /// Why no key could be had: busy (503) — unless no key of the ring may sign now at all
    /// (budgets used up, windows closed), which waiting will not change (409).
    async fn busy_or_spent(
        &self,
        pool: &RingPool,
        want: Option<Uuid>,
        why: &'static str,
    ) -> SigningError {
        let busy = SigningError::Busy {
            ring: pool.name.clone(),
            why,
        };
        if want.is_some() {
            return busy;
        }
        match self.inner.store.signable_keys(&pool.name, 1).await {
            Ok(0) => SigningError::Conflict(format!(
                "no key of ring {} may sign now: their signature budgets are used up or they \
                 are outside their validity windows",
                pool.name
            )),
            _ => busy,
        }
    }

    /// Leases keys for a ring while requests wait for one: the key a request names, or the
    /// least recently used free key of the ring. Gives up when nobody waits any more.
    async fn lease_loop(self, pool: Arc<RingPool>) {
        let inner = &self.inner;
        let ttl = Duration::from_secs(inner.cfg.lease_ttl_secs);
        loop {
            let mut exhausted = false;
            while let Some(wish) = pool.lease_wish() {
                let any = wish == pool::LeaseWish::Any;
                if any && !pool.any_waiter_for_ring() {
                    break;
                }
                // Measured before the request: the lease cannot expire before `sent + ttl`.
                let sent = Instant::now();
                let leased = match wish {
                    pool::LeaseWish::Key(id) => {
                        inner.store.lease_active_key(id, &inner.holder, ttl).await
                    }
                    pool::LeaseWish::Any => {
                        let held = pool.held_ids();
                        inner
                            .store
                            .lease_lru_key(&pool.name, &inner.holder, ttl, &held)
                            .await
                    }
                };
                match leased {
                    Ok(Some(key)) => {
                        if let Err(e) = self.adopt(&pool, &key, sent + ttl).await {
                            tracing::warn!(ring = %pool.name, key = %key.key.id, error = %e, "leased key cannot be opened");
                            let _ = inner
                                .store
                                .release_lease(key.key.id, &inner.holder, 0)
                                .await;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    Ok(None) if any && !pool.is_empty() => {
                        exhausted = true;
                        break;
                    }
                    Ok(None) => {
                        if any && !self.ring_has_active_key(&pool.name).await {
                            pool.fail_ring_waiters();
                            break;
                        }
                        // The key asked for by id was retired (through another process, or
                        // since the request looked at it): it will never come.
                        if let pool::LeaseWish::Key(id) = wish
                            && let Ok(Some(key)) = inner.store.ring_key(id).await
                            && key_state(&key) != "active"
                        {
                            pool.fail_key_waiters(id);
                            continue;
                        }
                        // Every key is leased elsewhere: wait for one while requests wait.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        tracing::warn!(ring = %pool.name, error = %e, "cannot lease a key");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            if !pool.lease_done(exhausted) {
                return;
            }
        }
    }

    async fn ring_has_active_key(&self, ring: &str) -> bool {
        match self.inner.store.ring_keys(ring).await {
            Ok(keys) => keys.iter().any(|k| key_state(k) == "active"),
            // Unknown: keep trying while requests wait.
            Err(_) => true,
        }
    }

    /// Opens the slot of a newly leased key and adds it to the pool.
    async fn adopt(
        &self,
        pool: &Arc<RingPool>,
        key: &RingKey,
        valid_until: Instant,
    ) -> Result<(), HsmError> {
        let (h, k) = (self.inner.hsm.clone(), key.key.clone());
        let slot = tokio::task::spawn_blocking(move || h.key(&k.token, &k.label, k.algorithm))
            .await
            .map_err(|e| HsmError::Worker(e.to_string()))??;
        if !pool.add(key.key.id, slot, valid_until) {
            // Retired while its lease was being taken: the lease goes back unused.
            let inner = &self.inner;
            if let Err(e) = inner
                .store
                .release_lease(key.key.id, &inner.holder, 0)
                .await
            {
                tracing::warn!(key = %key.key.id, error = %e, "cannot release a key lease");
            }
            return Ok(());
        }
        lock(&self.inner.key_rings).insert(key.key.id, key.ring.clone());
        let m = &self.inner.metrics;
        m.signing_lease_events.with_label_values(&["taken"]).inc();
        m.signing_keys_leased
            .with_label_values(&[&pool.name])
            .set(pool.len() as i64);
        tracing::debug!(ring = %pool.name, key = %key.key.id, "key leased");
        Ok(())
    }

    fn pools(&self) -> Vec<Arc<RingPool>> {
        lock(&self.inner.rings).values().cloned().collect()
    }

    /// One round of upkeep: flush usage, renew leases, release idle and lost keys.
    async fn maintain(&self, last_flush: &mut Instant, last_renew: &mut Instant) {
        let inner = &self.inner;
        let cfg = &inner.cfg;
        let ttl = Duration::from_secs(cfg.lease_ttl_secs);
        let m = &inner.metrics;
        for pool in self.pools() {
            // Keys that went idle for long, and doomed keys that came back: release.
            let mut gone = pool.release_idle(Duration::from_secs(cfg.idle_release_secs));
            let released = gone.len();
            gone.extend(pool.sweep_doomed());
            for (id, used) in &gone {
                if let Err(e) = inner.store.release_lease(*id, &inner.holder, *used).await {
                    tracing::warn!(key = %id, error = %e, "cannot release a key lease");
                }
            }
            if released > 0 {
                m.signing_lease_events
                    .with_label_values(&["released"])
                    .inc_by(released as u64);
            }
            m.signing_keys_leased
                .with_label_values(&[&pool.name])
                .set(pool.len() as i64);
            // Requests left waiting by a key that went away (retired, lease lost) get a lease
            // attempt: another key, or a 409 when the ring has none.
            if pool.kick() {
                let (s, p) = (self.clone(), pool.clone());
                tokio::spawn(async move { s.lease_loop(p).await });
            }
        }
        if last_renew.elapsed() >= ttl / 3 {
            *last_renew = Instant::now();
            for pool in self.pools() {
                let held = pool.held_ids();
                if held.is_empty() {
                    continue;
                }
                let sent = Instant::now();
                match inner.store.renew_leases(&held, &inner.holder, ttl).await {
                    Ok(usable) => {
                        pool.confirm(&usable, sent + ttl);
                        let lost: Vec<Uuid> =
                            held.into_iter().filter(|id| !usable.contains(id)).collect();
                        if !lost.is_empty() {
                            tracing::warn!(ring = %pool.name, keys = ?lost, "key leases lost or keys retired; dropping them");
                            m.signing_lease_events
                                .with_label_values(&["lost"])
                                .inc_by(lost.len() as u64);
                            for (id, used) in pool.doom(&lost) {
                                let _ = inner.store.release_lease(id, &inner.holder, used).await;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(ring = %pool.name, error = %e, "cannot renew key leases")
                    }
                }
            }
        }
        // Leases that could not be renewed in time may expire, and another process may then
        // lease the key (invariant 2): no longer lent (see `RingPool::lendable`), and dropped.
        for pool in self.pools() {
            let expiring = pool.expiring();
            if expiring.is_empty() {
                continue;
            }
            tracing::warn!(ring = %pool.name, keys = ?expiring, "key leases not renewed in time; dropping them");
            m.signing_lease_events
                .with_label_values(&["expired"])
                .inc_by(expiring.len() as u64);
            for (id, used) in pool.doom(&expiring) {
                if let Err(e) = inner.store.release_lease(id, &inner.holder, used).await {
                    tracing::warn!(key = %id, error = %e, "cannot release a key lease");
                }
            }
        }
        if last_flush.elapsed() >= Duration::from_secs(cfg.usage_flush_secs) {
            *last_flush = Instant::now();
            self.flush_usage().await;
        }
    }

    /// Writes the usage counters of every held key to the database.
    pub async fn flush_usage(&self) {
        for pool in self.pools() {
            let usage = pool.take_usage();
            if usage.is_empty() {
                continue;
            }
            let rows: Vec<(Uuid, i64, OffsetDateTime)> = usage
                .iter()
                .map(|u| (u.id, u.count, u.last_used_at))
                .collect();
            if let Err(e) = self.inner.store.record_key_usage(&rows).await {
                tracing::warn!(ring = %pool.name, error = %e, "cannot record key usage; will retry");
                pool.restore_usage(&usage);
            }
        }
    }

    /// Releases every lease of this process (at shutdown), after flushing usage.
    pub async fn shutdown(&self) {
        self.flush_usage().await;
        if let Err(e) = self
            .inner
            .store
            .release_all_leases(&self.inner.holder)
            .await
        {
            tracing::warn!(error = %e, "cannot release key leases at shutdown");
        }
    }

    /// Adds usage not yet flushed to a stored key, so reads are current.
    fn with_pending(&self, mut key: RingKey) -> KeyView {
        if let Some(pool) = lock(&self.inner.rings).get(&key.ring)
            && let Some((n, t)) = pool.pending_usage(key.key.id)
        {
            key.usage_count += n;
            key.last_used_at = key.last_used_at.max(t);
        }
        KeyView {
            state: key_state(&key),
            key,
        }
    }

    /// Every ring.
    pub async fn rings(&self) -> Result<Vec<Ring>, SigningError> {
        Ok(self.inner.store.rings().await?)
    }

    /// One ring.
    pub async fn ring(&self, name: &str) -> Result<Ring, SigningError> {
        self.inner
            .store
            .ring(name)
            .await?
            .ok_or_else(|| SigningError::UnknownRing(name.to_owned()))
    }

    /// The keys of one ring (or of every ring), least recently used first.
    pub async fn keys(&self, ring: Option<&str>) -> Result<Vec<KeyView>, SigningError> {
        let keys = match ring {
            Some(r) => {
                self.ring(r).await?;
                self.inner.store.ring_keys(r).await?
            }
            None => self.inner.store.all_ring_keys().await?,
        };
        Ok(keys.into_iter().map(|k| self.with_pending(k)).collect())
    }

    /// One key.
    pub async fn key(&self, id: Uuid) -> Result<KeyView, SigningError> {
        let key = self
            .inner
            .store
            .ring_key(id)
            .await?
            .ok_or(SigningError::UnknownKey(id))?;
        Ok(self.with_pending(key))
    }

    /// Creates an empty ring of `algorithm` keys on `token` (default: `signing.token`).
    pub async fn create_ring(
        &self,
        actor: &Actor,
        name: &str,
        algorithm: KeyAlgorithm,
        token: Option<&str>,
        openpgp_user_id: Option<&str>,
    ) -> Result<(Ring, Receipt), SigningError> {
        if let Some(id) = openpgp_user_id {
            crate::formats::openpgp::check_user_id(id)
                .map_err(|e| SigningError::Invalid(format!("openpgp_user_id: {e}")))?;
        }
        if !valid_ring_name(name) {
            return Err(SigningError::Invalid(format!(
                "invalid ring name `{name}`: 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit"
            )));
        }
        if self.inner.store.ring(name).await?.is_some() {
            return Err(SigningError::Conflict(format!("ring `{name}` exists")));
        }
        let token = self.token_for(token)?;
        let receipt = self
            .append_ring(actor, name, algorithm, &token, openpgp_user_id)
            .await?;
        Ok((self.ring(name).await?, receipt))
    }

    fn token_for(&self, token: Option<&str>) -> Result<String, SigningError> {
        let token = token.unwrap_or(&self.inner.cfg.token).to_owned();
        if !self.inner.hsm.token_names().contains(&token) {
            return Err(SigningError::Invalid(format!(
                "token `{token}` is not configured (hsm.tokens)"
            )));
        }
        Ok(token)
    }

    async fn append_ring(
        &self,
        actor: &Actor,
        name: &str,
        algorithm: KeyAlgorithm,
        token: &str,
        openpgp_user_id: Option<&str>,
    ) -> Result<Receipt, SigningError> {
        let mut params =
            serde_json::json!({ "name": name, "algorithm": algorithm.as_str(), "token": token });
        if let Some(id) = openpgp_user_id {
            params["openpgp_user_id"] = id.into();
        }
        let rec = record(actor, "ring.create", format!("ring:{name}"), &params, None);
        let (n, t) = (name.to_owned(), token.to_owned());
        let user_id = openpgp_user_id.map(str::to_owned);
        self.inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| {
                    Box::pin(async move {
                        crate::store::rings::ensure_ring(tx, &n, algorithm, &t, user_id.as_deref())
                            .await
                            .map(|_| ())
                    })
                }),
            )
            .await
            .map_err(audit_err)
    }

    /// Generates `count` keys on the ring's token and records them in the ring, one audit
    /// entry each (output: the public key). The ring is created when it does not exist
    /// (`algorithm` is then required); an existing ring must have this algorithm and token.
    pub async fn generate_keys(
        &self,
        actor: &Actor,
        ring: &str,
        algorithm: Option<KeyAlgorithm>,
        count: usize,
        token: Option<&str>,
    ) -> Result<Generated, SigningError> {
        if !(1..=64).contains(&count) {
            return Err(SigningError::Invalid(
                "count must be between 1 and 64".into(),
            ));
        }
        let (found, ring_receipt) = match self.inner.store.ring(ring).await? {
            Some(r) => {
                if algorithm.is_some_and(|a| a != r.algorithm) {
                    return Err(SigningError::Conflict(format!(
                        "ring `{ring}` holds {} keys",
                        r.algorithm
                    )));
                }
                if token.is_some_and(|t| t != r.token) {
                    return Err(SigningError::Conflict(format!(
                        "ring `{ring}` keeps its keys on token `{}`",
                        r.token
                    )));
                }
                (r, None)
            }
            None => {
                let algorithm = algorithm.ok_or_else(|| {
                    SigningError::Invalid(format!(
                        "ring `{ring}` does not exist: give an algorithm to create it"
                    ))
                })?;
                let (r, receipt) = self
                    .create_ring(actor, ring, algorithm, token, None)
                    .await?;
                (r, Some(receipt))
            }
        };
        if !self.inner.hsm.token_names().contains(&found.token) {
            return Err(SigningError::Invalid(format!(
                "token `{}` of ring `{ring}` is not configured",
                found.token
            )));
        }
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            let id = Uuid::new_v4();
            let label = format!("signetd-signing-{id}");
            let (h, t, l, a) = (
                self.inner.hsm.clone(),
                found.token.clone(),
                label.clone(),
                found.algorithm,
            );
            let public_key = tokio::task::spawn_blocking(move || h.generate_key(&t, &l, a))
                .await
                .map_err(|e| HsmError::Worker(e.to_string()))??;
            let key = KeyRecord {
                id,
                token: found.token.clone(),
                label,
                algorithm: found.algorithm,
                fingerprint: crypto::sha256_hex(&public_key),
                public_key,
                state: "active".into(),
            };
            let params = serde_json::json!({
                "ring": ring,
                "algorithm": found.algorithm.as_str(),
                "token": found.token,
                "label": key.label,
                "fingerprint": key.fingerprint,
            });
            let rec = record(
                actor,
                "key.generate",
                format!("key:{id}"),
                &params,
                Some(&key.public_key),
            );
            let (k, r) = (key.clone(), ring.to_owned());
            let receipt = self
                .inner
                .audit
                .append_with(
                    rec,
                    Box::new(move |tx| {
                        Box::pin(
                            async move { crate::store::rings::insert_ring_key(tx, &k, &r).await },
                        )
                    }),
                )
                .await
                .map_err(audit_err)?;
            lock(&self.inner.key_rings).insert(id, ring.to_owned());
            let stored = self
                .inner
                .store
                .ring_key(id)
                .await?
                .ok_or(SigningError::UnknownKey(id))?;
            tracing::info!(ring = %ring, key = %id, algorithm = %found.algorithm, "generated a ring key");
            keys.push((stored, receipt));
        }
        Ok(Generated {
            ring_created: ring_receipt.is_some(),
            ring: found,
            keys,
            ring_receipt,
        })
    }

    /// Retires a key: it no longer signs (at once in this process; in others when they hear
    /// its notice, or at the latest within a third of the lease time), and still verifies.
    pub async fn retire_key(
        &self,
        actor: &Actor,
        id: Uuid,
    ) -> Result<(KeyView, Receipt), SigningError> {
        let key = self.key(id).await?;
        let params = serde_json::json!({ "ring": key.key.ring });
        let rec = record(actor, "key.retire", format!("key:{id}"), &params, None);
        let receipt = self
            .inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| {
                    Box::pin(async move { crate::store::rings::retire_key(tx, id).await })
                }),
            )
            .await
            .map_err(audit_err)?;
        self.stop_lending(&key.key.ring, id);
        Ok((self.key(id).await?, receipt))
    }

    /// Counts `count` signatures of `key` against its budget when one (or a window) applies:
    /// one statement in the database, so no number of daemons overruns it. Keys without
    /// limits cost nothing once their absence was read.
    async fn spend(&self, key: Uuid, count: usize) -> Result<Result<(), String>, SigningError> {
        let known = lock(&self.inner.limited).get(&key).copied();
        let limited = match known {
            Some(l) => l,
            None => {
                let l = self
                    .inner
                    .store
                    .key_limits(key)
                    .await?
                    .is_some_and(|l| l.any());
                lock(&self.inner.limited).insert(key, l);
                l
            }
        };
        if !limited {
            return Ok(Ok(()));
        }
        let n = i64::try_from(count).unwrap_or(i64::MAX);
        Ok(self.inner.store.spend_signatures(key, n).await?)
    }

    /// Budgets or windows changed somewhere: read them again before the next signature.
    pub fn limits_changed(&self) {
        lock(&self.inner.limited).clear();
    }

    /// Key `id` used its budget up (its `key.spent` notice; a spend or a batch job's
    /// reservation, in any process): stop lending it here at once, rather than letting the
    /// next request find out, and read its limits again before it signs. Reversible: the key
    /// is leased again once it may sign (a raised budget, a reservation given back).
    pub async fn spent_elsewhere(&self, id: Uuid) {
        lock(&self.inner.limited).remove(&id);
        self.set_aside(id).await;
    }

    /// Stops lending key `id` in this process for now (`RingPool::set_aside`) and gives its
    /// lease back once it is idle.
    async fn set_aside(&self, id: Uuid) {
        let Ok(ring) = self.ring_of_key(id).await else {
            return;
        };
        let Some(pool) = lock(&self.inner.rings).get(&ring).cloned() else {
            return;
        };
        for (gone, used) in pool.set_aside(id) {
            let (store, holder) = (self.inner.store.clone(), self.inner.holder.clone());
            tokio::spawn(async move { store.release_lease(gone, &holder, used).await });
        }
    }

    /// Sets key `id`'s own budget (`max_signatures`, none for no budget of its own) and window
    /// as `actor`, with its audit entry; every daemon hears of it.
    pub async fn set_key_limits(
        &self,
        actor: &Actor,
        id: Uuid,
        max: Option<i64>,
        usable_from: Option<OffsetDateTime>,
        usable_until: Option<OffsetDateTime>,
    ) -> Result<Receipt, SigningError> {
        self.key(id).await?;
        if max.is_some_and(|m| m < 0) {
            return Err(SigningError::Invalid(
                "max_signatures is not negative".into(),
            ));
        }
        if let (Some(f), Some(u)) = (usable_from, usable_until)
            && f >= u
        {
            return Err(SigningError::Invalid(
                "usable_from must be before usable_until".into(),
            ));
        }
        let params = serde_json::json!({
            "max_signatures": max,
            "usable_from": usable_from.map(|t| t.unix_timestamp()),
            "usable_until": usable_until.map(|t| t.unix_timestamp()),
        });
        let rec = record(actor, "key.limits", format!("key:{id}"), &params, None);
        let receipt = self
            .inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| {
                    Box::pin(async move {
                        crate::store::rings::set_key_limits(tx, id, max, usable_from, usable_until)
                            .await
                    })
                }),
            )
            .await
            .map_err(audit_err)?;
        self.limits_changed();
        Ok(receipt)
    }

    /// Sets the budget of every key of `ring` that has none of its own, as `actor`.
    pub async fn set_ring_limits(
        &self,
        actor: &Actor,
        ring: &str,
        key_max: Option<i64>,
    ) -> Result<Receipt, SigningError> {
        self.ring(ring).await?;
        if key_max.is_some_and(|m| m < 0) {
            return Err(SigningError::Invalid(
                "key_max_signatures is not negative".into(),
            ));
        }
        let params = serde_json::json!({ "key_max_signatures": key_max });
        let rec = record(actor, "ring.limits", format!("ring:{ring}"), &params, None);
        let name = ring.to_owned();
        let receipt = self
            .inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| {
                    Box::pin(async move {
                        crate::store::rings::set_ring_limits(tx, &name, key_max).await
                    })
                }),
            )
            .await
            .map_err(audit_err)?;
        self.limits_changed();
        Ok(receipt)
    }

    /// The budget and window of ring key `id`.
    pub async fn key_limits(
        &self,
        id: Uuid,
    ) -> Result<Option<crate::store::rings::KeyLimits>, SigningError> {
        Ok(self.inner.store.key_limits(id).await?)
    }

    /// A ring key retired by another process (its notice): stop lending it here at once,
    /// rather than at the next lease renewal.
    pub async fn retired_elsewhere(&self, id: Uuid) {
        match self.ring_of_key(id).await {
            Ok(ring) => self.stop_lending(&ring, id),
            Err(e) => tracing::debug!(%id, error = %e, "a retired key this daemon does not know"),
        }
    }

    /// Drops key `id` from the pool of `ring` in this process and gives its lease back.
    fn stop_lending(&self, ring: &str, id: Uuid) {
        if let Some(pool) = lock(&self.inner.rings).get(ring).cloned() {
            for (gone, used) in pool.retire(id) {
                let (store, holder) = (self.inner.store.clone(), self.inner.holder.clone());
                tokio::spawn(async move { store.release_lease(gone, &holder, used).await });
            }
        }
    }

    /// The public keys a signature may be checked against: one key, or every key of a ring
    /// (retired ones too).
    pub async fn verification_keys(&self, target: &Target) -> Result<Vec<RingKey>, SigningError> {
        match target {
            Target::Key(id) => Ok(vec![
                self.inner
                    .store
                    .ring_key(*id)
                    .await?
                    .ok_or(SigningError::UnknownKey(*id))?,
            ]),
            Target::Ring(name) => {
                self.ring(name).await?;
                Ok(self.inner.store.ring_keys(name).await?)
            }
        }
    }
}

/// `active`, `retired` or `missing` (the key is not on its token).
pub fn key_state(key: &RingKey) -> &'static str {
    if key.retired_at.is_some() || key.key.state == "retired" {
        "retired"
    } else if key.key.state == "active" {
        "active"
    } else {
        "missing"
    }
}
