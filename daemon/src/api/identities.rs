//! api::identities: the per-process cache of who a client certificate belongs to, so that
//! `identify` costs no database round trip on most requests.
//!
//! It is safe because it is not what keeps invariant 7: every operation a cached identity
//! lets in reaches the audit writer, which checks the standing of every caller of its group
//! inside its transaction, under the lock status changes commit under, and withholds the answer
//! of a caller held, revoked or deleted meanwhile (`audit::writer`). The cache only makes the
//! common case cheap: it is dropped on every `cert.status` and `account.deleted` notice and
//! after the notification connection reconnects, an entry lives at most [`TTL`], and routes
//! whose answers are not audited (`/v1/audit/*`) read the database every time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::Identity;

/// How long an identity is used without reading it again.
pub const TTL: Duration = Duration::from_secs(10);

/// Most identities kept; past it the cache starts over (only certificates this CA issued can
/// fill it).
const MAX_ENTRIES: usize = 10_000;

/// Identities by certificate fingerprint, as read from the database.
#[derive(Debug, Default)]
pub struct Identities {
    entries: Mutex<HashMap<String, (Identity, Instant)>>,
}

impl Identities {
    /// The identity of `fingerprint` if read less than [`TTL`] ago.
    pub fn get(&self, fingerprint: &str) -> Option<Identity> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(fingerprint)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(identity, _)| identity.clone())
    }

    /// Keeps what the database said about `fingerprint`: only an active identity, so that a
    /// refusal is always decided from the database.
    pub fn put(&self, fingerprint: &str, identity: &Identity) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(fingerprint.to_owned(), (identity.clone(), Instant::now()));
    }

    /// Forgets everything (a status changed somewhere, or notices may have been missed).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn identity() -> Identity {
        Identity {
            account: "alice".into(),
            roles: vec!["signer:r".into()],
            serial: "01".into(),
            subject: "CN=alice".into(),
            status: "active".into(),
            account_deleted: false,
            not_after: time::OffsetDateTime::now_utc() + time::Duration::days(1),
        }
    }

    #[test]
    fn an_identity_is_kept_until_cleared() {
        let cache = Identities::default();
        assert!(cache.get("ab").is_none());
        cache.put("ab", &identity());
        assert_eq!(cache.get("ab").unwrap().account, "alice");
        assert!(cache.get("cd").is_none());
        cache.clear();
        assert!(cache.get("ab").is_none());
    }

    #[test]
    fn the_cache_starts_over_when_full() {
        let cache = Identities::default();
        for i in 0..MAX_ENTRIES {
            cache.put(&i.to_string(), &identity());
        }
        assert!(cache.get("0").is_some());
        cache.put("one more", &identity());
        assert!(cache.get("0").is_none());
        assert!(cache.get("one more").is_some());
    }
}
