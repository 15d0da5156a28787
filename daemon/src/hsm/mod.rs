//! hsm: the only module that touches cryptoki. Loads the PKCS#11 module once, finds tokens by
//! label, keeps one logged-in session per key slot, runs the request path's calls on its own
//! `hsm.max_parallel` token threads (`threads`), and recovers from lost sessions and logins.

pub mod bench;
mod error;
mod keys;
mod threads;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

pub use error::{ErrorClass, HsmError};
pub use keys::KeyAlgorithm;

use crate::crypto::{
    HashAlg, SignInput, SignInputBuf, SignatureScheme, TokenMechanism, VerifyingKey,
};
use crate::metrics::Metrics;

/// A configured token: its name in the configuration, its label, and its PIN.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The configured name (`ca`, `signing`, ...).
    pub name: String,
    /// The token label.
    pub label: String,
    /// The user PIN.
    pub pin: SecretString,
}

/// Facts about a private key on a token, as the token reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// CKA_LABEL.
    pub label: String,
    /// CKA_SENSITIVE.
    pub sensitive: bool,
    /// CKA_EXTRACTABLE.
    pub extractable: bool,
    /// CKA_ALWAYS_SENSITIVE.
    pub always_sensitive: bool,
    /// CKA_NEVER_EXTRACTABLE.
    pub never_extractable: bool,
}

impl KeyInfo {
    /// From the token's answer; an attribute the token did not report counts as unprotected.
    fn from_attributes(label: &str, attrs: &[Attribute]) -> Self {
        let mut info = KeyInfo {
            label: label.to_owned(),
            sensitive: false,
            extractable: true,
            always_sensitive: false,
            never_extractable: false,
        };
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => info.sensitive = *v,
                Attribute::Extractable(v) => info.extractable = *v,
                Attribute::AlwaysSensitive(v) => info.always_sensitive = *v,
                Attribute::NeverExtractable(v) => info.never_extractable = *v,
                _ => {}
            }
        }
        info
    }
}

/// The HSM layer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ctx: Pkcs11,
    tokens: BTreeMap<String, Arc<Token>>,
    /// The `hsm.max_parallel` threads that run the request path's operations.
    threads: threads::TokenThreads,
    /// One slot per (token, key label) in this process: invariant 2 by construction.
    slots: Mutex<HashMap<(String, String), Arc<KeySlot>>>,
    metrics: Metrics,
}

#[derive(Debug)]
struct Token {
    label: String,
    pin: SecretString,
    slot: Mutex<Option<Slot>>,
    /// A session for management calls (generation, lookups, health).
    keeper: Mutex<Option<Session>>,
    up: AtomicBool,
}

/// One key and its own session. A key is never used by two operations at once: every use holds
/// `state`'s lock for the whole PKCS#11 call.
#[derive(Debug)]
pub struct KeySlot {
    token: Arc<Token>,
    label: String,
    algorithm: KeyAlgorithm,
    public_key: VerifyingKey,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    session: Option<Session>,
    key: Option<ObjectHandle>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the protected state
    // (an optional session) stays consistent because every error path resets it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hsm {
    /// Loads the module (once per process), initialises it with OS locking, and checks that
    /// every token is present and accepts its PIN.
    pub fn open(
        module: &Path,
        tokens: Vec<TokenSpec>,
        max_parallel: usize,
        metrics: Metrics,
    ) -> Result<Self, HsmError> {
        let module_err = |reason: String| HsmError::Module {
            module: module.display().to_string(),
            reason,
        };
        let ctx = Pkcs11::new(module).map_err(|e| module_err(e.to_string()))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            // Another part of this process (a test) initialised the same module: share it.
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(module_err(e.to_string())),
        }
        let tokens = tokens
            .into_iter()
            .map(|t| {
                let token = Token {
                    label: t.label,
                    pin: t.pin,
                    slot: Mutex::new(None),
                    keeper: Mutex::new(None),
                    up: AtomicBool::new(false),
                };
                (t.name, Arc::new(token))
            })
            .collect();
        let hsm = Hsm {
            inner: Arc::new(Inner {
                ctx,
                tokens,
                threads: threads::TokenThreads::start(max_parallel)
                    .map_err(|e| module_err(format!("cannot start the token threads: {e}")))?,
                slots: Mutex::new(HashMap::new()),
                metrics,
            }),
        };
        for name in hsm.inner.tokens.keys() {
            hsm.check_token(name)?;
        }
        Ok(hsm)
    }

    fn token(&self, name: &str) -> Result<&Arc<Token>, HsmError> {
        self.inner
            .tokens
            .get(name)
            .ok_or_else(|| HsmError::UnknownToken(name.to_owned()))
    }

    /// The configured token names.
    pub fn token_names(&self) -> Vec<String> {
        self.inner.tokens.keys().cloned().collect()
    }

    /// Checks that a token is present and logged in, re-establishing its management session if
    /// needed. Updates the `hsm_token_up` gauge.
    pub fn check_token(&self, name: &str) -> Result<(), HsmError> {
        let token = self.token(name)?;
        // A session that lost its login (another session logged out) counts as down, so the
        // keeper re-opens and logs in again.
        let result = token.with_keeper(&self.inner.ctx, |session| {
            let state = session.get_session_info()?.session_state();
            match state {
                SessionState::RoUser | SessionState::RwUser => Ok(()),
                _ => Err(CkError::Pkcs11(
                    RvError::UserNotLoggedIn,
                    Function::GetSessionInfo,
                )),
            }
        });
        let up = result.is_ok();
        token.up.store(up, Ordering::Relaxed);
        self.inner
            .metrics
            .hsm_token_up
            .with_label_values(&[name])
            .set(i64::from(up));
        result
    }

    /// Whether the last check or operation found the token usable.
    pub fn token_up(&self, name: &str) -> bool {
        self.inner
            .tokens
            .get(name)
            .is_some_and(|t| t.up.load(Ordering::Relaxed))
    }

    /// Generates a key pair on the token and returns its SubjectPublicKeyInfo DER.
    pub fn generate_key(
        &self,
        token: &str,
        label: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<Vec<u8>, HsmError> {
        let token = self.token(token)?;
        let id = uuid::Uuid::new_v4();
        let (mechanism, public, private) = algorithm.templates(label, id.as_bytes(), true);
        let start = Instant::now();
        let result = token.with_keeper(&self.inner.ctx, |session| {
            let (public_handle, _) = session.generate_key_pair(&mechanism, &public, &private)?;
            session.get_attributes(public_handle, algorithm.public_attributes())
        });
        self.observe("generate", start, &result);
        algorithm.spki_from_attributes(&result?)
    }

    /// Reads the public key (SPKI DER) of the key pair labelled `label`.
    pub fn public_key(
        &self,
        token: &str,
        label: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<Vec<u8>, HsmError> {
        let token_ref = self.token(token)?;
        let found = token_ref.with_keeper(&self.inner.ctx, |session| {
            let handles = session.find_objects(&keys::public_key_template(label))?;
            match handles.first() {
                Some(h) => session
                    .get_attributes(*h, algorithm.public_attributes())
                    .map(Some),
                None => Ok(None),
            }
        })?;
        let attrs = found.ok_or_else(|| HsmError::KeyNotFound {
            token: token_ref.label.clone(),
            label: label.to_owned(),
        })?;
        algorithm.spki_from_attributes(&attrs)
    }

    /// Labels of all private keys on the token (for reconciliation).
    pub fn private_key_labels(&self, token: &str) -> Result<Vec<String>, HsmError> {
        let token = self.token(token)?;
        token.with_keeper(&self.inner.ctx, |session| {
            let handles = session.find_objects(&[
                Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
                Attribute::Token(true),
            ])?;
            let mut labels = Vec::with_capacity(handles.len());
            for h in handles {
                for attr in session.get_attributes(h, &[AttributeType::Label])? {
                    if let Attribute::Label(l) = attr {
                        labels.push(String::from_utf8_lossy(&l).into_owned());
                    }
                }
            }
            Ok(labels)
        })
    }

    /// The protection attributes of a private key, as the token reports them.
    pub fn key_info(&self, token: &str, label: &str) -> Result<KeyInfo, HsmError> {
        let token_ref = self.token(token)?;
        let attrs = token_ref.with_keeper(&self.inner.ctx, |session| {
            let handles = session.find_objects(&keys::private_key_template(label))?;
            match handles.first() {
                Some(h) => session
                    .get_attributes(
                        *h,
                        &[
                            AttributeType::Sensitive,
                            AttributeType::Extractable,
                            AttributeType::AlwaysSensitive,
                            AttributeType::NeverExtractable,
                        ],
                    )
                    .map(Some),
                None => Ok(None),
            }
        })?;
        let attrs = attrs.ok_or_else(|| HsmError::KeyNotFound {
            token: token_ref.label.clone(),
            label: label.to_owned(),
        })?;
        Ok(KeyInfo::from_attributes(label, &attrs))
    }

    /// The object a key slot signs with, as the token reports it: whether it is a token object
    /// (`false`: the slot's session copy) and its protection attributes.
    pub fn signing_object_info(&self, key: &KeySlot) -> Result<(bool, KeyInfo), HsmError> {
        let mut state = lock(&key.state);
        let (session, handle) = key.ensure(&self.inner.ctx, &mut state)?;
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Token,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )
            .map_err(|e| error::map(e, &key.token.label))?;
        let token_object = attrs.contains(&Attribute::Token(true));
        Ok((token_object, KeyInfo::from_attributes(&key.label, &attrs)))
    }

    /// The slot of one key, created on first use. There is exactly one per key in this
    /// process, so no two operations ever use a key at once.
    pub fn key(
        &self,
        token: &str,
        label: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<Arc<KeySlot>, HsmError> {
        let id = (token.to_owned(), label.to_owned());
        if let Some(slot) = lock(&self.inner.slots).get(&id) {
            return Ok(slot.clone());
        }
        let public_key = self.public_key(token, label, algorithm)?;
        self.key_found(token, label, algorithm, public_key)
    }

    /// [`Hsm::key`] for a key whose public key (SPKI DER) was just read from its token with
    /// [`Hsm::public_key`]: the slot is made without looking the key up again. The slot that
    /// exists already, if any, is kept.
    pub fn key_found(
        &self,
        token: &str,
        label: &str,
        algorithm: KeyAlgorithm,
        public_key: Vec<u8>,
    ) -> Result<Arc<KeySlot>, HsmError> {
        let id = (token.to_owned(), label.to_owned());
        if let Some(slot) = lock(&self.inner.slots).get(&id) {
            return Ok(slot.clone());
        }
        let slot = Arc::new(KeySlot {
            token: self.token(token)?.clone(),
            label: label.to_owned(),
            algorithm,
            public_key: VerifyingKey::new(public_key),
            state: Mutex::new(SlotState::default()),
        });
        Ok(lock(&self.inner.slots).entry(id).or_insert(slot).clone())
    }

    /// Signs `input` (a message, or a digest the client computed; bare bytes are a message)
    /// with the key under `scheme` on a token thread (at most `hsm.max_parallel` at once). A scheme
    /// that does not fit the key, a digest of the wrong length or a digest for Ed25519 is
    /// refused with [`HsmError::Scheme`] before the token is asked. The signature (in the
    /// scheme's standard encoding: DER for ECDSA) is verified in software before it is
    /// returned (invariant 8); a failure is counted in `hsm_bad_signatures` and withheld.
    pub async fn sign(
        &self,
        key: &Arc<KeySlot>,
        scheme: SignatureScheme,
        input: impl Into<SignInputBuf>,
    ) -> Result<Vec<u8>, HsmError> {
        let input = input.into();
        // Cheap checks first, so that bad requests never wait for a token thread.
        scheme.check(key.algorithm, input.as_input())?;
        let key = key.clone();
        self.on_token_thread(
            move |hsm| hsm.sign_blocking(&key, scheme, input.as_input()),
            |_| (),
        )
        .await
    }

    /// Signs each of `inputs` with the key under `scheme`, in order, on one token thread in
    /// one job: what batch jobs do, without a thread hand-off per signature. Each
    /// signature is verified as in [`Hsm::sign`]. Stops early, with the signatures made so far,
    /// once `stop` is cancelled; the first error ends the call. Keep `inputs` short (a few
    /// dozen): the thread is taken for all of them.
    pub async fn sign_each(
        &self,
        key: &Arc<KeySlot>,
        scheme: SignatureScheme,
        inputs: Vec<SignInputBuf>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Vec<Vec<u8>>, HsmError> {
        self.sign_each_then(key, scheme, inputs, stop, |_| ()).await
    }

    /// [`Hsm::sign_each`], then `then` with the number of signatures made and verified, run on
    /// the token thread as soon as the last one is done (or has failed), before the result
    /// travels back to the caller's task. A key pool passes the key's release here, so the
    /// next request gets the key without waiting for this one's task to be scheduled. If the
    /// call is dropped before it reaches the token thread, `then` is dropped unrun.
    pub async fn sign_each_then(
        &self,
        key: &Arc<KeySlot>,
        scheme: SignatureScheme,
        inputs: Vec<SignInputBuf>,
        stop: tokio_util::sync::CancellationToken,
        then: impl FnOnce(usize) + Send + 'static,
    ) -> Result<Vec<Vec<u8>>, HsmError> {
        let items = inputs.into_iter().map(|input| (scheme, input)).collect();
        self.sign_items_then(key, items, stop, then).await
    }

    /// [`Hsm::sign_each_then`] with a scheme per input: what one request that returns several
    /// formats (a raw signature, an OpenPGP one, a CMS one) signs with one key taken once.
    pub async fn sign_items_then(
        &self,
        key: &Arc<KeySlot>,
        items: Vec<(SignatureScheme, SignInputBuf)>,
        stop: tokio_util::sync::CancellationToken,
        then: impl FnOnce(usize) + Send + 'static,
    ) -> Result<Vec<Vec<u8>>, HsmError> {
        for (scheme, input) in &items {
            scheme.check(key.algorithm, input.as_input())?;
        }
        let key = key.clone();
        self.on_token_thread(
            move |hsm| {
                let mut signatures = Vec::with_capacity(items.len());
                for (scheme, input) in &items {
                    if stop.is_cancelled() {
                        break;
                    }
                    signatures.push(hsm.sign_blocking(&key, *scheme, input.as_input())?);
                }
                Ok(signatures)
            },
            move |made| then(made.as_ref().map_or(0, Vec::len)),
        )
        .await
    }

    /// Runs `work` on one of the `hsm.max_parallel` token threads, in the order of the calls,
    /// then, on the same thread, `then` on the result: the next waiter for whatever `then`
    /// releases is woken from there, not after a hop back to this task. If the call is dropped
    /// before a thread takes it, neither runs (both are dropped).
    async fn on_token_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Hsm) -> Result<T, HsmError> + Send + 'static,
        then: impl FnOnce(&Result<T, HsmError>) + Send + 'static,
    ) -> Result<T, HsmError> {
        let (answer, result) = tokio::sync::oneshot::channel();
        let hsm = self.clone();
        let job: threads::Job = Box::new(move || {
            if answer.is_closed() {
                return;
            }
            let result = work(&hsm);
            then(&result);
            let _ = answer.send(result);
        });
        self.inner
            .threads
            .submit(job)
            .map_err(|_| HsmError::Worker("the token threads are stopping".into()))?;
        result
            .await
            .map_err(|_| HsmError::Worker("the token operation failed".into()))?
    }

    /// Every key slot made in this process so far.
    pub fn slots(&self) -> Vec<Arc<KeySlot>> {
        lock(&self.inner.slots).values().cloned().collect()
    }

    /// Opens the slot's session, logs in and finds the key (and its session copy) now, as the
    /// first signature would: what the daemon does for every active key after it starts, so
    /// that no first request or first batch of a key pays for it. Blocking.
    pub fn prepare(&self, key: &KeySlot) -> Result<(), HsmError> {
        let mut state = lock(&key.state);
        key.ensure(&self.inner.ctx, &mut state).map(|_| ())
    }

    /// The blocking form of [`Hsm::sign`], for callers already off the async runtime (the TLS
    /// handshake signer, certificate issuance inside `spawn_blocking`, benchmarks).
    pub fn sign_blocking<'a>(
        &self,
        key: &KeySlot,
        scheme: SignatureScheme,
        input: impl Into<SignInput<'a>>,
    ) -> Result<Vec<u8>, HsmError> {
        let input = input.into();
        scheme.check(key.algorithm, input)?;
        let (mechanism, token_input) = scheme.prepare(input)?;
        let start = Instant::now();
        let raw = key.sign_raw(
            &self.inner.ctx,
            &self.inner.metrics,
            mechanism,
            &token_input,
        );
        self.observe("sign", start, &raw);
        let verified = scheme.finish(&raw?).and_then(|signature| {
            key.public_key
                .verify(scheme, input, &signature)
                .map(|()| signature)
        });
        verified.map_err(|e| {
            self.inner.metrics.hsm_bad_signatures.inc();
            tracing::error!(
                key = %key.label,
                scheme = %scheme,
                error = %e,
                "token signature failed software verification; withheld"
            );
            HsmError::BadSignature(key.label.clone())
        })
    }

    fn observe<T>(&self, op: &str, start: Instant, result: &Result<T, HsmError>) {
        let m = &self.inner.metrics;
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        m.hsm_operations.with_label_values(&[op, outcome]).inc();
        m.hsm_duration
            .with_label_values(&[op])
            .observe(start.elapsed().as_secs_f64());
    }

    pub(crate) fn context(&self) -> &Pkcs11 {
        &self.inner.ctx
    }
}

/// The cryptoki mechanism for a token mechanism.
pub(crate) fn cryptoki_mechanism(mechanism: TokenMechanism) -> Mechanism<'static> {
    match mechanism {
        TokenMechanism::RsaPkcs => Mechanism::RsaPkcs,
        TokenMechanism::RsaPss(hash) => Mechanism::RsaPkcsPss(pss_params(hash)),
        TokenMechanism::Ecdsa => Mechanism::Ecdsa,
        TokenMechanism::Eddsa => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
    }
}

impl KeySlot {
    /// The key's label on its token.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub fn public_key(&self) -> &[u8] {
        self.public_key.spki_der()
    }

    /// One C_Sign on this key's own session. Transient failures (session closed, logged out,
    /// token re-inserted) re-open the session, log in, find the key again and retry once.
    fn sign_raw(
        &self,
        ctx: &Pkcs11,
        metrics: &Metrics,
        mechanism: TokenMechanism,
        input: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let mechanism = cryptoki_mechanism(mechanism);
        let mut state = lock(&self.state);
        let mut last = None;
        for attempt in 0..2 {
            let result = self.ensure(ctx, &mut state).and_then(|(session, key)| {
                session
                    .sign(&mechanism, key, input)
                    .map_err(|e| error::map(e, &self.token.label))
            });
            match result {
                Ok(sig) => {
                    self.token.up.store(true, Ordering::Relaxed);
                    return Ok(sig);
                }
                Err(e) if e.is_transient() && attempt == 0 => {
                    tracing::warn!(key = %self.label, error = %e, "HSM session lost; recovering");
                    metrics
                        .hsm_recoveries
                        .with_label_values(&[&self.token.label])
                        .inc();
                    *state = SlotState::default();
                    self.token.forget_slot();
                    last = Some(e);
                }
                Err(e) => {
                    if e.is_transient() {
                        *state = SlotState::default();
                        self.token.forget_slot();
                        self.token.up.store(false, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| HsmError::Worker("retry loop ended".into())))
    }

    fn ensure<'s>(
        &self,
        ctx: &Pkcs11,
        state: &'s mut SlotState,
    ) -> Result<(&'s Session, ObjectHandle), HsmError> {
        if state.session.is_none() {
            state.session = Some(self.token.open_session(ctx, false)?);
            state.key = None;
        }
        let session = state
            .session
            .as_ref()
            .ok_or_else(|| HsmError::Worker("session missing".into()))?;
        let key = match state.key {
            Some(k) => k,
            None => {
                let found = session
                    .find_objects(&keys::private_key_template(&self.label))
                    .map_err(|e| error::map(e, &self.token.label))?;
                let k = *found.first().ok_or_else(|| HsmError::KeyNotFound {
                    token: self.token.label.clone(),
                    label: self.label.clone(),
                })?;
                let k = session_copy(session, k).unwrap_or(k);
                state.key = Some(k);
                k
            }
        };
        Ok((session, key))
    }
}

/// A session-object copy of a token key for this key's own session to sign with: SoftHSM2
/// re-checks a token object's backing file on every `C_SignInit` (an open, a read and three
/// `fcntl` locks — a fifth of a P-256 signature's cost), a session object lives in memory. The
/// copy stays inside the token (`CKA_SENSITIVE` and `CKA_EXTRACTABLE` cannot be relaxed by a
/// copy, and this checks they were not), and it dies with the session, so every path that
/// resets the session also drops it. `None` — sign with the token object — when the token
/// refuses the copy (`CKA_COPYABLE` false, or a policy) or the copy is not as protected.
fn session_copy(session: &Session, key: ObjectHandle) -> Option<ObjectHandle> {
    let copy = session
        .copy_object(key, &[Attribute::Token(false)])
        .map_err(|e| tracing::debug!(error = %e, "no session copy of the key; signing with the token object"))
        .ok()?;
    let protected = session
        .get_attributes(
            copy,
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )
        .map(|attrs| {
            attrs.contains(&Attribute::Sensitive(true))
                && attrs.contains(&Attribute::Extractable(false))
        })
        .unwrap_or(false);
    if protected {
        return Some(copy);
    }
    tracing::warn!("a session copy of a key was not sensitive and non-extractable; destroyed");
    let _ = session.destroy_object(copy);
    None
}

/// CKM_RSA_PKCS_PSS parameters over a `hash` digest: the MGF1 hash must be the same (SoftHSM2
/// refuses a mismatch) and the salt is as long as the digest (what TLS 1.3 and OpenSSL's
/// `rsa_pss_saltlen:digest` expect).
fn pss_params(hash: HashAlg) -> PkcsPssParams {
    let (hash_alg, mgf) = match hash {
        HashAlg::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        HashAlg::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        HashAlg::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
    };
    // At most 64: the cast cannot truncate.
    let s_len = hash.output_len() as std::ffi::c_ulong;
    PkcsPssParams {
        hash_alg,
        mgf,
        s_len: s_len.into(),
    }
}

impl Token {
    /// The slot holding this token, looked up by label (slot ids change after C_InitToken).
    fn slot(&self, ctx: &Pkcs11) -> Result<Slot, HsmError> {
        let mut cached = lock(&self.slot);
        if let Some(slot) = *cached {
            return Ok(slot);
        }
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| error::map(e, &self.label))?;
        for slot in slots {
            let Ok(info) = ctx.get_token_info(slot) else {
                continue;
            };
            if info.label().trim_end() == self.label {
                *cached = Some(slot);
                return Ok(slot);
            }
        }
        Err(HsmError::TokenNotPresent(self.label.clone()))
    }

    fn forget_slot(&self) {
        *lock(&self.slot) = None;
    }

    /// Opens a session and logs the user in. Login is process-wide: "already logged in" is
    /// success.
    fn open_session(&self, ctx: &Pkcs11, rw: bool) -> Result<Session, HsmError> {
        let slot = self.slot(ctx)?;
        let session = if rw {
            ctx.open_rw_session(slot)
        } else {
            ctx.open_ro_session(slot)
        }
        .map_err(|e| error::map(e, &self.label))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(error::map(e, &self.label)),
        }
    }

    /// Runs `f` on the management session, re-opening it and retrying once on a transient error.
    fn with_keeper<T>(
        &self,
        ctx: &Pkcs11,
        f: impl Fn(&Session) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        let mut keeper = lock(&self.keeper);
        for attempt in 0..2 {
            if keeper.is_none() {
                match self.open_session(ctx, true) {
                    Ok(s) => *keeper = Some(s),
                    Err(e) if e.is_transient() && attempt == 0 => {
                        self.forget_slot();
                        continue;
                    }
                    Err(e) => {
                        self.up.store(false, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            let Some(session) = keeper.as_ref() else {
                continue;
            };
            match f(session).map_err(|e| error::map(e, &self.label)) {
                Ok(v) => {
                    self.up.store(true, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if e.is_transient() && attempt == 0 => {
                    *keeper = None;
                    self.forget_slot();
                }
                Err(e) => {
                    if e.is_transient() {
                        *keeper = None;
                        self.up.store(false, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            }
        }
        Err(HsmError::TokenNotPresent(self.label.clone()))
    }
}
