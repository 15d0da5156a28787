//! pki::service::ocsp: the OCSP responder (RFC 6960) — answers good, revoked (with reason,
//! certificateHold included) or unknown from the live status in the database, signed by the
//! CA key or by a delegated responder key in the token, and keeps signed answers to requests
//! without a nonce until the revocation epoch moves (a status change anywhere) or half their
//! validity has passed.
//!
//! OCSP answers are not audit entries: they are derived from audited state, and the public
//! listener must not be able to grow an append-only log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use der::Decode as _;
use signet_certs::{
    CertStatus, Certificate, OcspErrorStatus, Profile, Reason, ResponderId, SingleResponse,
    TbsSigner as _,
};
use time::OffsetDateTime;

use super::{CaError, CaService, DaemonKeySpec, blocking, reason_from_str};
use crate::hsm::KeyAlgorithm;
use crate::pki::HsmSigner;
use crate::store::KeyRecord;
use crate::store::pki::{self as sql, DaemonKey};

/// What the responder answers.
#[derive(Debug, Clone)]
pub struct OcspAnswer {
    /// The DER `OCSPResponse`: a signed basic response, or an unsigned error status.
    pub der: Arc<Vec<u8>>,
    /// How it went.
    pub outcome: OcspOutcome,
}

/// How an OCSP request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcspOutcome {
    /// A signed answer; `cached` when it was made for an earlier identical request.
    Successful {
        /// Served from the cache.
        cached: bool,
    },
    /// The request did not parse (`malformedRequest`); the reason is safe to show.
    Malformed(String),
    /// A dependency is down (`tryLater`).
    TryLater,
    /// Anything else (`internalError`).
    InternalError,
}

/// The responder's signer, cache and (when delegated) its certificate.
#[derive(Debug)]
pub(super) struct Responder {
    cache: Mutex<Cache>,
    max_entries: usize,
    delegated: RwLock<Option<Arc<Delegated>>>,
}

#[derive(Debug)]
struct Delegated {
    signer: Arc<HsmSigner>,
    cert: Certificate,
    serial: String,
}

#[derive(Debug, Default)]
struct Cache {
    /// The revocation epoch the entries were made at.
    epoch: i64,
    entries: HashMap<Vec<u8>, (Arc<Vec<u8>>, Instant)>,
}

impl Responder {
    pub(super) fn new(max_entries: usize) -> Self {
        Responder {
            cache: Mutex::new(Cache::default()),
            max_entries,
            delegated: RwLock::new(None),
        }
    }

    fn delegated(&self) -> Option<Arc<Delegated>> {
        self.delegated
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_delegated(&self, d: Option<Arc<Delegated>>) {
        *self
            .delegated
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = d;
        self.clear();
    }

    fn clear(&self) {
        self.lock_cache().entries.clear();
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds no invariant a panic could break half-way: reuse it.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, epoch: i64, key: &[u8], max_age: Duration) -> Option<Arc<Vec<u8>>> {
        let cache = self.lock_cache();
        if cache.epoch != epoch {
            return None;
        }
        cache
            .entries
            .get(key)
            .filter(|(_, made)| made.elapsed() < max_age)
            .map(|(der, _)| der.clone())
    }

    fn put(&self, epoch: i64, key: Vec<u8>, der: Arc<Vec<u8>>) {
        let mut cache = self.lock_cache();
        if epoch < cache.epoch {
            return;
        }
        if epoch > cache.epoch || cache.entries.len() >= self.max_entries {
            cache.entries.clear();
            cache.epoch = epoch;
        }
        if self.max_entries > 0 {
            cache.entries.insert(key, (der, Instant::now()));
        }
    }
}

/// The cache key of a request without a nonce: its CertIDs, in order.
fn cache_key(request: &signet_certs::OcspRequest) -> Vec<u8> {
    let mut key = Vec::with_capacity(request.cert_ids.len() * 64);
    for id in &request.cert_ids {
        key.push(match id.hash_algorithm {
            signet_certs::HashAlgorithm::Sha1 => 1,
            signet_certs::HashAlgorithm::Sha256 => 2,
        });
        for part in [
            id.issuer_name_hash.as_slice(),
            id.issuer_key_hash.as_slice(),
            id.serial.as_bytes(),
        ] {
            key.push(part.len() as u8);
            key.extend_from_slice(part);
        }
    }
    key
}

impl CaService {
    /// Answers a DER OCSP request from an untrusted client. Never fails: failures become the
    /// protocol's own error statuses.
    pub async fn ocsp(&self, request: &[u8]) -> OcspAnswer {
        let (answer, cache) = match self.ocsp_inner(request).await {
            Ok((der, cached)) => (
                OcspAnswer {
                    der,
                    outcome: OcspOutcome::Successful { cached },
                },
                if cached { "hit" } else { "miss" },
            ),
            Err(CaError::BadRequest(why)) => (
                OcspAnswer {
                    der: Arc::new(signet_certs::ocsp_error_response(
                        OcspErrorStatus::MalformedRequest,
                    )),
                    outcome: OcspOutcome::Malformed(why),
                },
                "none",
            ),
            Err(e) => {
                let transient = matches!(
                    &e,
                    CaError::Store(crate::store::StoreError::Unavailable(_)) | CaError::Signer(_)
                ) || matches!(&e, CaError::Hsm(h) if h.is_transient());
                if transient {
                    tracing::warn!(error = %e, "OCSP: try later");
                } else {
                    tracing::error!(error = %e, "OCSP: internal error");
                }
                let (status, outcome) = if transient {
                    (OcspErrorStatus::TryLater, OcspOutcome::TryLater)
                } else {
                    (OcspErrorStatus::InternalError, OcspOutcome::InternalError)
                };
                (
                    OcspAnswer {
                        der: Arc::new(signet_certs::ocsp_error_response(status)),
                        outcome,
                    },
                    "none",
                )
            }
        };
        let outcome = match &answer.outcome {
            OcspOutcome::Successful { .. } => "successful",
            OcspOutcome::Malformed(_) => "malformed",
            OcspOutcome::TryLater => "try-later",
            OcspOutcome::InternalError => "internal-error",
        };
        self.inner
            .metrics
            .pki_ocsp_responses
            .with_label_values(&[outcome, cache])
            .inc();
        answer
    }

    async fn ocsp_inner(&self, request: &[u8]) -> Result<(Arc<Vec<u8>>, bool), CaError> {
        let request = signet_certs::parse_ocsp_request(request)?;
        let validity = Duration::from_secs(self.inner.cfg.ocsp_validity_secs);
        let key = request.nonce.is_none().then(|| cache_key(&request));
        if let Some(key) = &key {
            let epoch = self.inner.store.revocation_epoch().await?;
            if let Some(der) = self.inner.ocsp.get(epoch, key, validity / 2) {
                return Ok((der, true));
            }
        }
        // The serial of each CertID of this CA; another issuer's certificates are unknown.
        let ours: Vec<Option<String>> = request
            .cert_ids
            .iter()
            .map(|id| {
                signet_certs::cert_id_matches_issuer(id, &self.inner.ca_cert)
                    .then(|| hex::encode(id.serial.as_bytes()))
            })
            .collect();
        let serials: Vec<String> = ours.iter().flatten().cloned().collect();
        let (epoch, statuses) = self.inner.store.serial_statuses(&serials).await?;
        let mut statuses = statuses.into_iter();
        let now = SystemTime::now();
        let mut responses = Vec::with_capacity(ours.len());
        let mut all_known = true;
        for (cert_id, serial) in request.cert_ids.iter().zip(&ours) {
            let found = match serial {
                Some(_) => statuses.next().flatten(),
                None => None,
            };
            let status = match found {
                None => CertStatus::Unknown,
                Some(s) if s.status == "active" => CertStatus::Good,
                Some(s) => CertStatus::Revoked {
                    time: s.changed_at.map_or(now, SystemTime::from),
                    reason: s
                        .reason
                        .as_deref()
                        .and_then(reason_from_str)
                        .or(Some(Reason::Unspecified)),
                },
            };
            all_known &= status != CertStatus::Unknown;
            responses.push(SingleResponse {
                cert_id: cert_id.clone(),
                status,
                this_update: now,
                next_update: Some(now + validity),
            });
        }
        let delegated = self.inner.ocsp.delegated();
        let ca_signer = self.inner.ca_signer.clone();
        let nonce = request.nonce;
        let der = blocking(move || match &delegated {
            Some(d) => signet_certs::build_ocsp_response(
                ResponderId::by_key(&d.signer.public_key()),
                d.signer.as_ref(),
                vec![d.cert.clone()],
                now,
                &responses,
                nonce.as_deref(),
            ),
            None => signet_certs::build_ocsp_response(
                ResponderId::by_key(&ca_signer.public_key()),
                ca_signer.as_ref(),
                Vec::new(),
                now,
                &responses,
                nonce.as_deref(),
            ),
        })
        .await??;
        let der = Arc::new(der);
        // An unknown serial may be issued later without moving the epoch: never keep those.
        if let Some(key) = key
            && all_known
        {
            self.inner.ocsp.put(epoch, key, der.clone());
        }
        Ok((der, false))
    }

    /// With `ca.ocsp_responder = "delegated"`: loads the responder key and certificate, and
    /// issues a new certificate (with a new key the first time) when none exists or a third of
    /// its lifetime is left. With `"ca"`, the CA key answers.
    pub(super) async fn refresh_responder(&self) -> Result<(), CaError> {
        if self.inner.cfg.ocsp_responder == crate::config::OcspResponder::Ca {
            if self.inner.ocsp.delegated().is_some() {
                self.inner.ocsp.set_delegated(None);
            }
            return Ok(());
        }
        let lifetime =
            Duration::from_secs(u64::from(self.inner.cfg.ocsp_responder_validity_days) * 86_400);
        let fresh = |r: &sql::ResponderRow| {
            OffsetDateTime::now_utc() < r.not_after - lifetime / 3 && r.key.state == "active"
        };
        let stored = self.inner.store.ocsp_responder().await?;
        let stored = match stored {
            Some(r) if fresh(&r) => r,
            _ => {
                // One renewal at a time across processes: the CA's signing lock.
                let _gate = self.inner.crl_gate.lock().await;
                let lock = self.inner.store.lock_crl().await?;
                let again = self.inner.store.ocsp_responder().await?;
                let result = match again {
                    Some(r) if fresh(&r) => Ok(r),
                    other => self.renew_responder(other.map(|r| r.key)).await,
                };
                lock.release().await?;
                result?
            }
        };
        let serial = {
            let cert = Certificate::from_der(&stored.der)
                .map_err(|e| CaError::Cert(format!("stored responder certificate: {e}")))?;
            crate::pki::serial_hex(&cert)
        };
        if self
            .inner
            .ocsp
            .delegated()
            .is_some_and(|d| d.serial == serial)
        {
            return Ok(());
        }
        let cert = Certificate::from_der(&stored.der)
            .map_err(|e| CaError::Cert(format!("stored responder certificate: {e}")))?;
        let (hsm, key) = (self.inner.hsm.clone(), stored.key.clone());
        let slot = blocking(move || hsm.key(&key.token, &key.label, key.algorithm)).await??;
        let signer = Arc::new(
            HsmSigner::new(self.inner.hsm.clone(), slot)
                .map_err(|e| CaError::Cert(e.to_string()))?,
        );
        if signer.public_key() != *cert.tbs_certificate().subject_public_key_info() {
            return Err(CaError::Cert(
                "the OCSP responder key on the token does not match its certificate".into(),
            ));
        }
        tracing::info!(%serial, "OCSP responses are signed by the delegated responder");
        self.inner.ocsp.set_delegated(Some(Arc::new(Delegated {
            signer,
            cert,
            serial,
        })));
        Ok(())
    }

    /// Issues a responder certificate for `key`, or for a new key made in the CA's token, and
    /// records both with their audit entry. Called under the CA signing lock.
    async fn renew_responder(&self, key: Option<KeyRecord>) -> Result<sql::ResponderRow, CaError> {
        let spec = DaemonKeySpec {
            which: DaemonKey::OcspResponder,
            algorithm: KeyAlgorithm::EcP256,
            profile: Profile::OcspResponder,
            profile_name: "ocsp-responder",
            subject: "CN=signetd OCSP responder",
            validity_days: self.inner.cfg.ocsp_responder_validity_days,
            action: "ocsp.responder.issue",
        };
        self.renew_daemon_key(&spec, key).await
    }
}
