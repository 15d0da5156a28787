//! pki::service::crl: the CRL — signed in the token whenever the revocation epoch moved past
//! the newest CRL's, or when less than half of its validity is left; numbered under a database
//! lock so that numbers grow by one across processes; stored with its audit entry.

use std::time::{Duration, SystemTime};

use der::Decode as _;
use signet_certs::RevokedEntry;
use time::OffsetDateTime;

use super::{CaError, CaService, blocking, daemon_actor, reason_from_str, record};
use crate::store::pki::{self as sql, StoredCrl};

/// The newest CRL, in both encodings.
#[derive(Debug, Clone)]
pub struct CrlFiles {
    /// CRL number.
    pub number: i64,
    /// DER (`application/pkix-crl`).
    pub der: Vec<u8>,
    /// PEM (`-----BEGIN X509 CRL-----`).
    pub pem: String,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
}

impl CaService {
    /// The newest CRL; if none was signed yet (the first one failed at start), tries now.
    pub async fn crl(&self) -> Result<CrlFiles, CaError> {
        let stored = match self.inner.store.latest_crl().await? {
            Some(c) => c,
            None => {
                self.publish_crl().await?;
                self.inner
                    .store
                    .latest_crl()
                    .await?
                    .ok_or_else(|| CaError::Signer("no CRL could be signed yet".into()))?
            }
        };
        let list = signet_certs::CertificateList::from_der(&stored.der)
            .map_err(|e| CaError::Cert(format!("stored CRL {}: {e}", stored.number)))?;
        let pem = signet_certs::crl_to_pem(&list)?;
        Ok(CrlFiles {
            number: stored.number,
            der: stored.der,
            pem,
            next_update: stored.next_update,
        })
    }

    /// Signs a new CRL if the newest one is stale: made before the latest status change, or
    /// with less than half of its validity left. Returns the new CRL's number, or `None` when
    /// the newest one is current. Safe to call from any number of tasks and processes.
    pub async fn publish_crl(&self) -> Result<Option<i64>, CaError> {
        let validity = Duration::from_secs(u64::from(self.inner.cfg.crl_validity_hours) * 3600);
        if !self.crl_is_stale(validity).await? {
            return Ok(None);
        }
        let _gate = self.inner.crl_gate.lock().await;
        let lock = self.inner.store.lock_crl().await?;
        // Under the lock, look again: another task or process may have just signed one.
        let state = self.inner.store.crl_state().await?;
        if !stale(&state, validity) {
            lock.release().await?;
            return Ok(None);
        }
        let number = state.latest.map_or(1, |(n, ..)| n + 1);
        let revoked = self.inner.store.revoked_certificates().await?;
        let mut entries = Vec::with_capacity(revoked.len());
        for r in &revoked {
            let bytes = hex::decode(&r.serial)
                .map_err(|e| CaError::Cert(format!("stored serial {}: {e}", r.serial)))?;
            entries.push(RevokedEntry {
                serial: signet_certs::SerialNumber::new(&bytes)
                    .map_err(|e| CaError::Cert(format!("stored serial {}: {e}", r.serial)))?,
                revoked_at: SystemTime::from(r.changed_at),
                reason: reason_from_str(&r.reason).ok_or_else(|| {
                    CaError::Cert(format!("stored reason {:?} of {}", r.reason, r.serial))
                })?,
            });
        }
        let now = SystemTime::now();
        let this_update = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                now.duration_since(SystemTime::UNIX_EPOCH)
                    .map_err(|_| CaError::Cert("the clock is before 1970".into()))?
                    .as_secs(),
            );
        let next_update = this_update + validity;
        let (ca, signer) = (self.inner.ca_cert.clone(), self.inner.ca_signer.clone());
        let crl_number = u64::try_from(number)
            .map_err(|_| CaError::Cert(format!("CRL number {number} out of range")))?;
        let list = blocking(move || {
            signet_certs::build_crl(
                &ca,
                signer.as_ref(),
                crl_number,
                this_update,
                next_update,
                &entries,
            )
        })
        .await??;
        let der = signet_certs::crl_to_der(&list)?;
        let stored = StoredCrl {
            number,
            epoch: state.epoch,
            this_update: OffsetDateTime::from(this_update),
            next_update: OffsetDateTime::from(next_update),
            der,
        };
        let rec = record(
            &daemon_actor(),
            "crl.sign",
            format!("crl:{number}"),
            &serde_json::json!({ "number": number, "epoch": state.epoch,
                                 "entries": revoked.len(),
                                 "next_update": stored.next_update.unix_timestamp() }),
            Some(&stored.der),
        );
        let copy = stored.clone();
        self.inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| Box::pin(async move { sql::insert_crl(tx, &copy).await })),
            )
            .await?;
        lock.release().await?;
        let m = &self.inner.metrics;
        m.pki_crls_signed.inc();
        m.pki_crl_number.set(number);
        m.pki_crl_next_update
            .set(stored.next_update.unix_timestamp());
        tracing::info!(
            number,
            entries = revoked.len(),
            epoch = state.epoch,
            "signed a CRL"
        );
        Ok(Some(number))
    }

    async fn crl_is_stale(&self, validity: Duration) -> Result<bool, CaError> {
        Ok(stale(&self.inner.store.crl_state().await?, validity))
    }
}

/// Stale: none yet, made at an older revocation epoch, or less than half its validity left.
fn stale(state: &sql::CrlState, validity: Duration) -> bool {
    match state.latest {
        None => true,
        Some((_, epoch, _, next_update)) => {
            let refresh_at = next_update - validity / 2;
            epoch < state.epoch || OffsetDateTime::now_utc() >= refresh_at
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: i64, crl_epoch: i64, next_update_in: Duration) -> sql::CrlState {
        let now = OffsetDateTime::now_utc();
        sql::CrlState {
            epoch,
            latest: Some((7, crl_epoch, now, now + next_update_in)),
        }
    }

    #[test]
    fn a_crl_is_stale_when_missing_behind_or_half_expired() {
        let day = Duration::from_secs(86_400);
        let none = sql::CrlState {
            epoch: 0,
            latest: None,
        };
        assert!(stale(&none, day));
        assert!(!stale(&state(3, 3, day), day));
        // A status change moved the epoch past the CRL's.
        assert!(stale(&state(4, 3, day), day));
        // Less than half of the validity left: re-signed well before nextUpdate.
        assert!(!stale(&state(3, 3, day / 2 + Duration::from_secs(60)), day));
        assert!(stale(&state(3, 3, day / 2 - Duration::from_secs(60)), day));
        assert!(stale(&state(3, 3, Duration::ZERO), day));
    }
}
