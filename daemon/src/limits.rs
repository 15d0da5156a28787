//! limits: per-client rate limits on the mTLS API — a token bucket per account (governor's
//! GCRA), its rate and burst from the account's override in `[rate_limits.accounts]`, else the
//! most generous default among its roles (`[rate_limits.roles]`; `signer` stands for every
//! `signer:<ring>`), else `[rate_limits.default]`. A request over its account's limit gets 429
//! with `Retry-After`; nothing else is done for it.
//!
//! Refusals are counted in metrics at once and audited once per account per window
//! (`rate_limits.audit_window_secs`): one `rate-limit` entry whose result is
//! `error:rate-limited:<number refused>`, so a
//! flood of refused requests cannot flood the append-only log. The buckets are per process:
//! with several daemons behind a balancer, each enforces the limit on what it receives.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::audit::{Actor, Audit, Record};
use crate::config::{Rate, RateLimits as Config};
use crate::metrics::Metrics;

/// One account's bucket and its refusals not yet audited.
#[derive(Debug)]
struct Bucket {
    limiter: DefaultDirectRateLimiter,
    /// The account's certificate fingerprint and name, for the audit entry.
    actor: Actor,
    refused: AtomicU64,
}

/// The rate limits of this process. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct RateLimits {
    cfg: Config,
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
    clock: DefaultClock,
    metrics: Metrics,
}

fn quota(rate: &Rate) -> Option<Quota> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst.max(rate.per_second)).unwrap_or(per_second);
    Some(Quota::per_second(per_second).allow_burst(burst))
}

impl RateLimits {
    /// The limits of `cfg`; with `audit`, the task that writes one entry per limited account
    /// and window runs for the life of the process.
    pub fn start(cfg: Config, audit: Audit, metrics: Metrics) -> Arc<RateLimits> {
        let limits = Arc::new(RateLimits {
            cfg,
            buckets: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
            metrics,
        });
        if limits.cfg.enabled {
            let background = limits.clone();
            tokio::spawn(async move { background.audit_refusals(audit).await });
        }
        limits
    }

    /// The rate of an account with `roles`: its override, the most generous of its roles'
    /// defaults, or the default. `None`: unlimited.
    fn rate_for(&self, account: &str, roles: &[String]) -> Option<&Rate> {
        if let Some(r) = self.cfg.accounts.get(account) {
            return Some(r);
        }
        roles
            .iter()
            .filter_map(|role| {
                let key = if role.starts_with("signer:") {
                    "signer"
                } else {
                    role.as_str()
                };
                self.cfg.roles.get(key)
            })
            .max_by_key(|r| (r.per_second, r.burst))
            .or(self.cfg.default.as_ref())
    }

    /// Takes one request from the bucket of `account` (whose certificate has `fingerprint`
    /// and whose roles are `roles`). `Err(wait)`: over the limit, try again after `wait`.
    pub fn check(
        &self,
        account: &str,
        fingerprint: &str,
        roles: &[String],
    ) -> Result<(), Duration> {
        if !self.cfg.enabled {
            return Ok(());
        }
        let bucket = {
            let mut buckets = self
                .buckets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match buckets.get(account) {
                Some(b) => b.clone(),
                None => {
                    let Some(quota) = self.rate_for(account, roles).and_then(quota) else {
                        return Ok(());
                    };
                    let b = Arc::new(Bucket {
                        limiter: RateLimiter::direct(quota),
                        actor: Actor {
                            fingerprint: fingerprint.to_owned(),
                            account: account.to_owned(),
                        },
                        refused: AtomicU64::new(0),
                    });
                    buckets.insert(account.to_owned(), b.clone());
                    b
                }
            }
        };
        match bucket.limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                bucket.refused.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .rate_limited
                    .with_label_values(&[account])
                    .inc();
                Err(not_until.wait_time_from(self.clock.now()))
            }
        }
    }

    /// Forgets every bucket (after a configuration reload, or an account's roles changed).
    pub fn reset(&self) {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Every window, one `rate-limit` audit entry per account refused in it, with the count.
    async fn audit_refusals(self: Arc<Self>, audit: Audit) {
        let window = Duration::from_secs(self.cfg.audit_window_secs.max(1));
        let mut tick = tokio::time::interval(window);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let limited: Vec<(Actor, u64)> = self
                .buckets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
                .filter_map(|b| {
                    let n = b.refused.swap(0, Ordering::Relaxed);
                    (n > 0).then(|| (b.actor.clone(), n))
                })
                .collect();
            for (actor, refused) in limited {
                let params = serde_json::json!({
                    "refused": refused,
                    "window_secs": window.as_secs(),
                });
                let mut record = Record::ok(
                    &actor,
                    "rate-limit",
                    format!("account:{}", actor.account),
                    &params,
                    None,
                );
                record.result = format!("error:rate-limited:{refused}");
                if let Err(e) = audit.append(record).await {
                    tracing::warn!(error = %e, account = %actor.account, refused, "cannot audit rate-limit refusals");
                }
            }
        }
    }
}
