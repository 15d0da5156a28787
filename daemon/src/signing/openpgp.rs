//! signing::openpgp: the OpenPGP identity of each ring key — its v4 key packet, found by key
//! id or fingerprint, and its certificate (User ID and self-certification made in the token,
//! stored once with an audit entry) — for `GET /v1/keys/ID/openpgp`, OpenPGP signatures and
//! the albs-sign-file surface.
//!
//! The key packet is built from the key's public key and its `created_at` in whole seconds, so
//! its fingerprint is fixed when the key is generated and the same in every daemon. The
//! certificate is made the first time it is asked for (the key must be active then, since a
//! self-certification is a signature), stored in `keys.openpgp_certificate` by an audited
//! mutation that writes only while the column is empty, and served from the database after
//! that, also once the key is retired. Both are cached per process.

use std::collections::HashMap;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Signing, SigningError, Target, audit_err, lock, record};
use crate::audit::Actor;
use crate::formats::openpgp::{Certificate, CertificateBuilder, OpenPgpError, OpenPgpKey};
use crate::store::StoreError;
use crate::store::rings::RingKey;

/// The User ID of a ring's certificates when the ring names none.
pub fn default_user_id(ring: &str) -> String {
    format!("signetd ring {ring}")
}

/// The OpenPGP key packet of a ring key.
pub fn key_packet(key: &RingKey) -> Result<OpenPgpKey, SigningError> {
    OpenPgpKey::new(&key.key.public_key, key.key.algorithm, key.created_at).map_err(|e| {
        tracing::error!(key = %key.key.id, error = %e, "no OpenPGP key packet for a ring key");
        SigningError::Store(StoreError::Corrupt(format!(
            "key {}: no OpenPGP key packet",
            key.key.id
        )))
    })
}

fn openpgp_err(e: OpenPgpError) -> SigningError {
    match e {
        OpenPgpError::Token(h) => SigningError::Hsm(h),
        other => SigningError::Invalid(other.to_string()),
    }
}

/// What a 16- or 40-digit hex OpenPGP key id or fingerprint looks like once normalised
/// (upper case, no spaces, an optional `0x`), or `None` if it is neither.
pub fn normalize_key_id(id: &str) -> Option<String> {
    let id = id.trim();
    let id = id
        .strip_prefix("0x")
        .or_else(|| id.strip_prefix("0X"))
        .unwrap_or(id);
    let id: String = id.chars().filter(|c| *c != ' ').collect();
    ((id.len() == 16 || id.len() == 40) && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| id.to_ascii_uppercase())
}

impl Signing {
    /// The OpenPGP key packet of ring key `id` (cached).
    pub async fn openpgp_key(&self, id: Uuid) -> Result<OpenPgpKey, SigningError> {
        if let Some(k) = lock(&self.inner.openpgp).keys.get(&id) {
            return Ok(k.clone());
        }
        let key = self
            .inner
            .store
            .ring_key(id)
            .await?
            .ok_or(SigningError::UnknownKey(id))?;
        let packet = key_packet(&key)?;
        lock(&self.inner.openpgp).insert(id, packet.clone());
        Ok(packet)
    }

    /// The ring key whose OpenPGP key id (16 hex digits) or fingerprint (40) is `id`, already
    /// normalised by [`normalize_key_id`]. A miss reloads the ring keys once before it is
    /// [`SigningError::UnknownOpenPgpKey`].
    pub async fn key_by_openpgp_id(&self, id: &str) -> Result<Uuid, SigningError> {
        if let Some(found) = lock(&self.inner.openpgp).find(id) {
            return Ok(found);
        }
        let keys = self.inner.store.all_ring_keys().await?;
        let mut cache = lock(&self.inner.openpgp);
        for key in &keys {
            if let Ok(packet) = key_packet(key) {
                cache.insert(key.key.id, packet);
            }
        }
        cache
            .find(id)
            .ok_or_else(|| SigningError::UnknownOpenPgpKey(id.to_owned()))
    }

    /// The OpenPGP certificate of ring key `id`: the stored one, or one made now in the token
    /// (the key must be active) with the ring's User ID and stored with an audit entry
    /// (`key.openpgp_certificate`) under `actor`.
    pub async fn openpgp_certificate(
        &self,
        actor: &Actor,
        id: Uuid,
    ) -> Result<Arc<Certificate>, SigningError> {
        if let Some(c) = lock(&self.inner.openpgp).certificates.get(&id) {
            return Ok(c.clone());
        }
        let packet = self.openpgp_key(id).await?;
        if let Some(stored) = self.stored_certificate(&packet, id).await? {
            return Ok(stored);
        }
        let ring = self.ring_of_key(id).await?;
        let user_id = self
            .inner
            .store
            .ring(&ring)
            .await?
            .and_then(|r| r.openpgp_user_id)
            .unwrap_or_else(|| default_user_id(&ring));
        let resolved = self.resolve(&Target::Key(id)).await?;
        let held = self.hold(&resolved).await?;
        let pending = CertificateBuilder::new(&packet, &user_id)
            .and_then(|b| b.signed_at(signing_time(&packet)))
            .and_then(CertificateBuilder::into_pending)
            .map_err(openpgp_err)?;
        let request = pending.request();
        let mut signatures = self
            .sign_held(held, vec![(request.scheme(), request.input_buf())])
            .await?;
        let signature = signatures
            .pop()
            .ok_or_else(|| SigningError::Invalid("no signature".into()))?;
        let certificate = pending.complete(&signature).map_err(openpgp_err)?;
        let params = serde_json::json!({
            "key_id": id,
            "openpgp_fingerprint": certificate.fingerprint(),
            "user_id": user_id,
        });
        let rec = record(
            actor,
            "key.openpgp_certificate",
            format!("key:{id}"),
            &params,
            Some(certificate.to_bytes()),
        );
        let bytes = certificate.to_bytes().to_vec();
        let stored = self
            .inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| {
                    Box::pin(async move {
                        crate::store::rings::set_openpgp_certificate(tx, id, &bytes).await
                    })
                }),
            )
            .await;
        match stored.map_err(audit_err) {
            Ok(_) => {
                let c = Arc::new(certificate);
                lock(&self.inner.openpgp).certificates.insert(id, c.clone());
                Ok(c)
            }
            // Another daemon stored one first: serve that one.
            Err(SigningError::Store(StoreError::Conflict(_))) => self
                .stored_certificate(&packet, id)
                .await?
                .ok_or_else(|| SigningError::Conflict(format!("key {id}: certificate lost"))),
            Err(e) => Err(e),
        }
    }

    async fn stored_certificate(
        &self,
        packet: &OpenPgpKey,
        id: Uuid,
    ) -> Result<Option<Arc<Certificate>>, SigningError> {
        let Some(bytes) = self.inner.store.openpgp_certificate(id).await? else {
            return Ok(None);
        };
        let certificate = Certificate::from_bytes(packet, &bytes).map_err(|e| {
            tracing::error!(key = %id, error = %e, "stored OpenPGP certificate is bad");
            SigningError::Store(StoreError::Corrupt(format!(
                "key {id}: stored OpenPGP certificate"
            )))
        })?;
        let c = Arc::new(certificate);
        lock(&self.inner.openpgp).certificates.insert(id, c.clone());
        Ok(Some(c))
    }
}

/// The time an OpenPGP signature by `key` is made: now, or the key's creation if this clock is
/// behind the database's that stamped it.
pub fn signing_time(key: &OpenPgpKey) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let created = OffsetDateTime::from_unix_timestamp(i64::from(key.created())).unwrap_or(now);
    now.max(created)
}

/// This process's OpenPGP caches.
#[derive(Debug, Default)]
pub(super) struct Cache {
    keys: HashMap<Uuid, OpenPgpKey>,
    /// Fingerprint and key id (upper-case hex) → key.
    ids: HashMap<String, Uuid>,
    certificates: HashMap<Uuid, Arc<Certificate>>,
}

impl Cache {
    fn insert(&mut self, id: Uuid, packet: OpenPgpKey) {
        self.ids.insert(packet.fingerprint(), id);
        self.ids.insert(packet.key_id(), id);
        self.keys.insert(id, packet);
    }

    fn find(&self, id: &str) -> Option<Uuid> {
        self.ids.get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        assert_eq!(
            normalize_key_id("0xaaaa1111bbbb2222").as_deref(),
            Some("AAAA1111BBBB2222")
        );
        assert_eq!(
            normalize_key_id("AAAA 1111 BBBB 2222").as_deref(),
            Some("AAAA1111BBBB2222")
        );
        assert!(normalize_key_id("AAAA1111BBBB222").is_none());
        assert!(normalize_key_id("GAAA1111BBBB2222").is_none());
        assert!(normalize_key_id("").is_none());
        assert_eq!(
            normalize_key_id(&"ab".repeat(20)).map(|s| s.len()),
            Some(40)
        );
    }
}
