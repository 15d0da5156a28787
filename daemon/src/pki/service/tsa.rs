//! pki::service::tsa: the time-stamping authority (RFC 3161 with RFC 5816). Its key is made in
//! the CA's token and certified by the CA under the `tsa` profile, renewed when a third of its
//! lifetime is left (like the delegated OCSP responder). A stamp takes its serial number and
//! checks the clock under a row lock every daemon sharing the database takes
//! (`Store::next_stamp`), has the token sign the TSTInfo, checks that signature in software,
//! and is an audit entry (message imprint, serial, genTime) before the token is answered.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use const_oid::ObjectIdentifier;
use der::Decode as _;
use signet_certs::{Certificate, Profile};
use time::OffsetDateTime;

use super::{CaError, CaService, DaemonKeySpec, blocking, record};
use crate::audit::{Actor, Receipt};
use crate::crypto::{self, HashAlg};
use crate::formats::tsp::{self, Accuracy3161, Failure, Rejection, Request, Stamp};
use crate::hsm::KeySlot;
use crate::store::KeyRecord;
use crate::store::pki::{self as sql, DaemonKey};

/// The TSA's key on the token and its current certificate.
#[derive(Debug)]
pub(super) struct Current {
    slot: Arc<KeySlot>,
    cert_der: Vec<u8>,
    serial: String,
}

/// The TSA's state in this process.
#[derive(Debug, Default)]
pub(super) struct Tsa {
    current: RwLock<Option<Arc<Current>>>,
}

impl Tsa {
    fn current(&self) -> Option<Arc<Current>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, c: Arc<Current>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(c);
    }
}

/// What a time-stamp request got.
#[derive(Debug)]
pub struct TsaAnswer {
    /// The DER `TimeStampResp` (granted with a token, or rejected).
    pub der: Vec<u8>,
    /// Granted (the token's serial and its audit receipt) or rejected (why).
    pub outcome: Result<(i64, Receipt), Rejection>,
}

/// A granted stamp.
struct Granted {
    token: Vec<u8>,
    serial: i64,
    receipt: Receipt,
}

impl CaService {
    /// Whether the TSA is configured on.
    pub fn tsa_enabled(&self) -> bool {
        self.inner.tsa_cfg.enabled
    }

    /// The TSA's current certificate (DER), once it is set up.
    pub fn tsa_certificate(&self) -> Option<Vec<u8>> {
        self.inner.tsa.current().map(|c| c.cert_der.clone())
    }

    fn policies(&self) -> Vec<ObjectIdentifier> {
        let cfg = &self.inner.tsa_cfg;
        std::iter::once(&cfg.policy)
            .chain(&cfg.accepted_policies)
            .filter_map(|p| ObjectIdentifier::new(p).ok())
            .collect()
    }

    /// Answers a DER `TimeStampReq` from `actor`. A request the protocol refuses is a
    /// `rejection` response (audited, so the log shows what was refused); a failure of the
    /// database, the token or the log is an error (no token is answered without its audit
    /// entry).
    pub async fn timestamp(&self, actor: &Actor, request: &[u8]) -> Result<TsaAnswer, CaError> {
        let started = Instant::now();
        let parsed = tsp::parse_request(request, &self.policies());
        let request = match parsed {
            Ok(r) => r,
            Err(rejection) => return self.reject(actor, request, rejection).await,
        };
        match self.stamp(actor, &request, "timestamp").await? {
            Ok(g) => {
                self.inner
                    .metrics
                    .tsa_seconds
                    .observe(started.elapsed().as_secs_f64());
                let der = tsp::granted(&g.token).map_err(|e| CaError::Cert(e.to_string()))?;
                Ok(TsaAnswer {
                    der,
                    outcome: Ok((g.serial, g.receipt)),
                })
            }
            Err(rejection) => self.reject(actor, &[], rejection).await,
        }
    }

    /// A time-stamp token (DER ContentInfo) over `signature` (a CMS signature value), hashed
    /// with `hash`, with the TSA certificate in it: the unsigned attribute
    /// id-aa-signatureTimeStampToken of a CAdES-T signature. Audited as a `timestamp` entry.
    pub async fn timestamp_signature(
        &self,
        actor: &Actor,
        signature: &[u8],
        hash: HashAlg,
    ) -> Result<(Vec<u8>, i64), CaError> {
        let request = Request {
            hash,
            digest: hash.digest(signature),
            policy: None,
            nonce: None,
            cert_req: true,
        };
        match self.stamp(actor, &request, "cms").await? {
            Ok(g) => Ok((g.token, g.serial)),
            Err(r) => Err(CaError::Conflict(format!(
                "the time-stamp was refused: {r}"
            ))),
        }
    }

    async fn reject(
        &self,
        actor: &Actor,
        request: &[u8],
        rejection: Rejection,
    ) -> Result<TsaAnswer, CaError> {
        self.inner
            .metrics
            .tsa_rejections
            .with_label_values(&[rejection.failure.name()])
            .inc();
        let params = serde_json::json!({
            "failure": rejection.failure.name(),
            "reason": rejection.text,
            "request_sha256": (!request.is_empty()).then(|| crypto::sha256_hex(request)),
        });
        let mut rec = record(actor, "timestamp", "tsa".into(), &params, None);
        rec.result = format!("rejected:{}", rejection.failure.name());
        self.inner.audit.append(rec).await?;
        Ok(TsaAnswer {
            der: tsp::rejected(&rejection),
            outcome: Err(rejection),
        })
    }

    /// Takes a serial and the time, has the token sign the TSTInfo, checks the signature and
    /// appends the audit entry. `Ok(Err(_))` for a protocol rejection (the clock, no TSA).
    async fn stamp(
        &self,
        actor: &Actor,
        request: &Request,
        source: &str,
    ) -> Result<Result<Granted, Rejection>, CaError> {
        let cfg = &self.inner.tsa_cfg;
        let Some(current) = self.inner.tsa.current().filter(|_| cfg.enabled) else {
            return Ok(Err(Rejection::new(
                Failure::SystemFailure,
                "the time-stamping authority is not set up",
            )));
        };
        let policy = match request.policy {
            Some(p) => p,
            None => ObjectIdentifier::new(&cfg.policy)
                .map_err(|e| CaError::Cert(format!("tsa.policy: {e}")))?,
        };
        let (serial, now) = match self.inner.store.next_stamp(OffsetDateTime::now_utc).await? {
            Ok(taken) => taken,
            Err(last) => {
                tracing::error!(%last, "the clock is behind the last time-stamp; refusing to stamp");
                return Ok(Err(Rejection::new(
                    Failure::TimeNotAvailable,
                    "the TSA's clock is behind its last time-stamp",
                )));
            }
        };
        let millis = cfg.accuracy_millis;
        let stamp = Stamp {
            policy,
            serial: u64::try_from(serial).map_err(|_| CaError::Cert("negative serial".into()))?,
            gen_time: now,
            accuracy: Accuracy3161 {
                seconds: millis / 1000,
                millis: u16::try_from(millis % 1000).unwrap_or(0),
                micros: 0,
            },
        };
        let chain: [&[u8]; 2] = [&current.cert_der, &self.inner.ca_der];
        let pending = tsp::prepare_token(
            request,
            &stamp,
            &current.cert_der,
            current.slot.algorithm(),
            &chain,
        )
        .map_err(|e| CaError::Cert(format!("time-stamp token: {e}")))?;
        let (scheme, input) = pending.request();
        let signature = self.inner.hsm.sign(&current.slot, scheme, input).await?;
        let token = pending
            .complete(&signature)
            .map_err(|e| CaError::Signer(format!("time-stamp token: {e}")))?;
        let token = token.to_der().to_vec();
        let gen_time = now
            .replace_nanosecond(0)
            .unwrap_or(now)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let params = serde_json::json!({
            "serial": serial,
            "hash": request.hash.to_string(),
            "imprint": request.imprint_hex(),
            "nonce": request.nonce_hex(),
            "policy": policy.to_string(),
            "gen_time": gen_time,
            "cert_req": request.cert_req,
            "tsa_certificate": current.serial,
            "source": source,
        });
        let rec = record(
            actor,
            "timestamp",
            format!("tsa:{serial}"),
            &params,
            Some(&token),
        );
        let receipt = self.inner.audit.append(rec).await?;
        self.inner
            .metrics
            .tsa_tokens
            .with_label_values(&[source])
            .inc();
        Ok(Ok(Granted {
            token,
            serial,
            receipt,
        }))
    }

    /// Loads the TSA key and certificate, and issues a new certificate (with a new key the
    /// first time) when none exists or a third of its lifetime is left. Nothing when the TSA
    /// is off.
    pub(super) async fn refresh_tsa(&self) -> Result<(), CaError> {
        let cfg = &self.inner.tsa_cfg;
        if !cfg.enabled {
            return Ok(());
        }
        let lifetime = Duration::from_secs(u64::from(cfg.validity_days) * 86_400);
        let algorithm = cfg.algorithm;
        let fresh = |r: &sql::ResponderRow| {
            OffsetDateTime::now_utc() < r.not_after - lifetime / 3
                && r.key.state == "active"
                && r.key.algorithm == algorithm
        };
        let stored = match self.inner.store.tsa().await? {
            Some(r) if fresh(&r) => r,
            _ => {
                // One renewal at a time across processes: the CA's signing lock.
                let _gate = self.inner.crl_gate.lock().await;
                let lock = self.inner.store.lock_crl().await?;
                let again = self.inner.store.tsa().await?;
                let result = match again {
                    Some(r) if fresh(&r) => Ok(r),
                    other => {
                        self.renew_tsa(other.map(|r| r.key).filter(|k| k.algorithm == algorithm))
                            .await
                    }
                };
                lock.release().await?;
                result?
            }
        };
        let cert = Certificate::from_der(&stored.der)
            .map_err(|e| CaError::Cert(format!("stored TSA certificate: {e}")))?;
        let serial = crate::pki::serial_hex(&cert);
        if self.inner.tsa.current().is_some_and(|c| c.serial == serial) {
            return Ok(());
        }
        let (hsm, key) = (self.inner.hsm.clone(), stored.key.clone());
        let slot = blocking(move || hsm.key(&key.token, &key.label, key.algorithm)).await??;
        if slot.public_key() != stored.key.public_key.as_slice()
            || stored.key.public_key
                != der::Encode::to_der(cert.tbs_certificate().subject_public_key_info())
                    .map_err(|e| CaError::Cert(e.to_string()))?
        {
            return Err(CaError::Cert(
                "the TSA key on the token does not match its certificate".into(),
            ));
        }
        tracing::info!(%serial, "time-stamps are signed by the TSA key");
        self.inner.tsa.set(Arc::new(Current {
            slot,
            cert_der: stored.der,
            serial,
        }));
        Ok(())
    }

    /// Issues a TSA certificate for `key`, or for a new key made in the CA's token, and
    /// records both with their audit entry. Called under the CA signing lock.
    async fn renew_tsa(&self, key: Option<KeyRecord>) -> Result<sql::ResponderRow, CaError> {
        let spec = DaemonKeySpec {
            which: DaemonKey::Tsa,
            algorithm: self.inner.tsa_cfg.algorithm,
            profile: Profile::TimeStamping,
            profile_name: "tsa",
            subject: "CN=signetd time-stamping authority",
            validity_days: self.inner.tsa_cfg.validity_days,
            action: "tsa.issue",
        };
        self.renew_daemon_key(&spec, key).await
    }
}
