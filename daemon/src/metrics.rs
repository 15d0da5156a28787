//! metrics: every Prometheus metric the daemon exports, declared in this one file. Labels never
//! carry secrets, key material or request contents (invariant 10).

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// The daemon's metrics and their registry. Cheap to clone (handles are reference-counted).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by listener, route template, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by listener and route template.
    pub http_duration: HistogramVec,
    /// TLS handshakes by outcome.
    pub tls_handshakes: IntCounterVec,
    /// Connections open now, by listener.
    pub connections: IntGaugeVec,
    /// HTTP/1 requests that could not be parsed (answered 400, 414 or 431 by the connection
    /// itself, before any route), by listener.
    pub http_parse_errors: IntCounterVec,
    /// PKCS#11 operations by operation and outcome.
    pub hsm_operations: IntCounterVec,
    /// PKCS#11 operation latency by operation.
    pub hsm_duration: HistogramVec,
    /// 1 when the token was usable at the last check, by configured token name.
    pub hsm_token_up: IntGaugeVec,
    /// Sessions re-established after a transient token error (lost session or login).
    pub hsm_recoveries: IntCounterVec,
    /// Token signatures that failed software verification and were withheld (invariant 8).
    pub hsm_bad_signatures: IntCounter,
    /// Audit entries committed.
    pub audit_appends: IntCounter,
    /// Audit group-commit latency (one transaction, many entries).
    pub audit_commit_duration: prometheus::Histogram,
    /// Audit batches that failed to commit (their operations failed with 503).
    pub audit_failures: IntCounter,
    /// Audit groups committed, by `path`: `one-call` (plain records in one round trip) or
    /// `general` (mutations, a checkpoint due, a refused caller, or another process appended).
    pub audit_groups: IntCounterVec,
    /// Operations withheld by the audit writer because their caller may no longer be served
    /// (held, revoked, deleted or expired between `identify` and the commit).
    pub audit_callers_refused: IntCounter,
    /// Checkpoints signed.
    pub audit_checkpoints: IntCounter,
    /// Signed checkpoints that could not be written to `audit.checkpoint_dir`.
    pub audit_checkpoint_save_failures: IntCounter,
    /// Entries in the log as this process last committed.
    pub audit_size: IntGauge,
    /// Database pool: connections that exist.
    pub db_pool_size: IntGauge,
    /// Database pool: idle connections.
    pub db_pool_available: IntGauge,
    /// Database pool: callers waiting for a connection.
    pub db_pool_waiting: IntGauge,
    /// 1 when the last readiness probe reached the database.
    pub db_up: IntGauge,
    /// Certificates issued through the API, by profile.
    pub pki_certificates_issued: IntCounterVec,
    /// Certificate status changes, by change (`deactivate`, `activate`, `revoke`).
    pub pki_status_changes: IntCounterVec,
    /// CRLs signed by this process.
    pub pki_crls_signed: IntCounter,
    /// Number of the newest CRL this process signed.
    pub pki_crl_number: IntGauge,
    /// nextUpdate of the newest CRL this process signed (Unix seconds).
    pub pki_crl_next_update: IntGauge,
    /// OCSP answers by outcome (`successful`, `malformed`, `try-later`, `internal-error`) and
    /// cache use (`hit`, `miss`, `none`).
    pub pki_ocsp_responses: IntCounterVec,
    /// Time-stamp tokens issued, by where the request came from (`timestamp`: the endpoint;
    /// `cms`: a timestamped CMS signature).
    pub tsa_tokens: IntCounterVec,
    /// Requests refused with 429 for their account's rate limit, by account.
    pub rate_limited: IntCounterVec,
    /// Time-stamp requests rejected, by PKIFailureInfo name (`badAlg`, `unacceptedPolicy`, ...).
    pub tsa_rejections: IntCounterVec,
    /// Time to answer a time-stamp request that was granted (clock and serial, token
    /// signature, audit entry).
    pub tsa_seconds: prometheus::Histogram,
    /// Signing operations by endpoint (`sign`, `sign-batch-item`, `verify`) and result
    /// (`ok`, `invalid`, `busy`, `error`).
    pub signing_operations: IntCounterVec,
    /// Requests refused because a ring's queue was full or its wait timed out, by ring.
    pub signing_queue_rejections: IntCounterVec,
    /// Requests waiting for a key now, by ring.
    pub signing_queue_depth: IntGaugeVec,
    /// Time from asking for a key of a ring to getting one.
    pub signing_queue_wait: prometheus::Histogram,
    /// Keys this process holds a lease on, by ring.
    pub signing_keys_leased: IntGaugeVec,
    /// Key lease events: `taken`, `released` (after idling), `lost` (taken over, or the key
    /// retired elsewhere) and `expired` (could not be renewed in time; the key is dropped
    /// before another process may lease it).
    pub signing_lease_events: IntCounterVec,
    /// Uploads refused for their size (413).
    pub signing_uploads_too_large: IntCounter,
    /// Batch attempts by result: `ok`, `lost` (claim or key lease lost), `rejected` (the
    /// commit's checks refused it), `error` (token or database), `shutdown`, `spent` (no key
    /// of the ring may sign the batch whole: budgets used up, windows closed).
    pub jobs_batches: IntCounterVec,
    /// Records signed by batch jobs (committed).
    pub jobs_records_signed: IntCounter,
    /// Times a worker found every key of its ring leased and had to wait.
    pub jobs_key_lease_waits: IntCounter,
    /// How long such waits lasted.
    pub jobs_key_wait: prometheus::Histogram,
    /// Batch latency: claim to commit.
    pub jobs_batch_duration: prometheus::Histogram,
    /// Batches the workers of this process are signing now.
    pub jobs_workers_busy: IntGauge,
    /// 1 while a job runs.
    pub jobs_running: IntGauge,
    /// Records the running job covers.
    pub jobs_running_total: IntGauge,
    /// Records of the running job signed so far.
    pub jobs_running_signed: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("signetd".into()), None)?;
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = Metrics {
            http_requests: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests"),
                &["listener", "route", "method", "status"],
            )?,
            http_duration: HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                    .buckets(buckets.clone()),
                &["listener", "route"],
            )?,
            tls_handshakes: IntCounterVec::new(
                Opts::new("tls_handshakes_total", "TLS handshakes on the API listener"),
                &["result"],
            )?,
            connections: IntGaugeVec::new(
                Opts::new("connections_open", "Open connections"),
                &["listener"],
            )?,
            http_parse_errors: IntCounterVec::new(
                Opts::new(
                    "http_parse_errors_total",
                    "HTTP/1 requests refused because they could not be parsed",
                ),
                &["listener"],
            )?,
            hsm_operations: IntCounterVec::new(
                Opts::new("hsm_operations_total", "PKCS#11 operations"),
                &["operation", "result"],
            )?,
            hsm_duration: HistogramVec::new(
                HistogramOpts::new(
                    "hsm_operation_duration_seconds",
                    "PKCS#11 operation latency",
                )
                .buckets(buckets),
                &["operation"],
            )?,
            hsm_token_up: IntGaugeVec::new(
                Opts::new("hsm_token_up", "1 when the token is usable"),
                &["token"],
            )?,
            hsm_recoveries: IntCounterVec::new(
                Opts::new(
                    "hsm_recoveries_total",
                    "Sessions re-established after a transient token error",
                ),
                &["token"],
            )?,
            hsm_bad_signatures: IntCounter::new(
                "hsm_bad_signatures_total",
                "Token signatures that failed software verification and were withheld",
            )?,
            audit_appends: IntCounter::new("audit_appends_total", "Audit entries committed")?,
            audit_commit_duration: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "audit_commit_duration_seconds",
                    "Audit group-commit transaction latency",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ]),
            )?,
            audit_failures: IntCounter::new(
                "audit_commit_failures_total",
                "Audit batches that failed to commit",
            )?,
            audit_groups: IntCounterVec::new(
                Opts::new(
                    "audit_groups_total",
                    "Audit groups committed, by path: one-call or general",
                ),
                &["path"],
            )?,
            audit_callers_refused: IntCounter::new(
                "audit_callers_refused_total",
                "Operations withheld at commit because their caller may no longer be served",
            )?,
            audit_checkpoints: IntCounter::new("audit_checkpoints_total", "Checkpoints signed")?,
            audit_checkpoint_save_failures: IntCounter::new(
                "audit_checkpoint_save_failures_total",
                "Signed checkpoints that could not be written to audit.checkpoint_dir",
            )?,
            audit_size: IntGauge::new("audit_log_entries", "Entries in the audit log")?,
            db_pool_size: IntGauge::new("db_pool_connections", "Pooled database connections")?,
            db_pool_available: IntGauge::new(
                "db_pool_available",
                "Idle pooled database connections",
            )?,
            db_pool_waiting: IntGauge::new(
                "db_pool_waiting",
                "Callers waiting for a database connection",
            )?,
            db_up: IntGauge::new("db_up", "1 when the database answered the last probe")?,
            pki_certificates_issued: IntCounterVec::new(
                Opts::new(
                    "pki_certificates_issued_total",
                    "Certificates issued, by profile",
                ),
                &["profile"],
            )?,
            pki_status_changes: IntCounterVec::new(
                Opts::new("pki_status_changes_total", "Certificate status changes"),
                &["change"],
            )?,
            pki_crls_signed: IntCounter::new("pki_crls_signed_total", "CRLs signed")?,
            pki_crl_number: IntGauge::new("pki_crl_number", "Number of the newest CRL signed")?,
            pki_crl_next_update: IntGauge::new(
                "pki_crl_next_update_seconds",
                "nextUpdate of the newest CRL signed, Unix time",
            )?,
            pki_ocsp_responses: IntCounterVec::new(
                Opts::new("pki_ocsp_responses_total", "OCSP answers"),
                &["outcome", "cache"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "rate_limited_total",
                    "Requests refused with 429 over their account's rate limit",
                ),
                &["account"],
            )?,
            tsa_tokens: IntCounterVec::new(
                Opts::new("tsa_tokens_total", "Time-stamp tokens issued"),
                &["source"],
            )?,
            tsa_rejections: IntCounterVec::new(
                Opts::new("tsa_rejections_total", "Time-stamp requests rejected"),
                &["failure"],
            )?,
            tsa_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new("tsa_request_seconds", "Time to grant a time-stamp request")
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                    ]),
            )?,
            signing_operations: IntCounterVec::new(
                Opts::new("signing_operations_total", "Online signing operations"),
                &["endpoint", "result"],
            )?,
            signing_queue_rejections: IntCounterVec::new(
                Opts::new(
                    "signing_queue_rejections_total",
                    "Requests refused with 503 because a ring's queue was full or timed out",
                ),
                &["ring"],
            )?,
            signing_queue_depth: IntGaugeVec::new(
                Opts::new("signing_queue_depth", "Requests waiting for a key, by ring"),
                &["ring"],
            )?,
            signing_queue_wait: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "signing_queue_wait_seconds",
                    "Time from asking for a key of a ring to getting one",
                )
                .buckets(vec![
                    0.00001, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    1.0, 5.0,
                ]),
            )?,
            signing_keys_leased: IntGaugeVec::new(
                Opts::new(
                    "signing_keys_leased",
                    "Keys this process holds a lease on, by ring",
                ),
                &["ring"],
            )?,
            signing_lease_events: IntCounterVec::new(
                Opts::new("signing_lease_events_total", "Key lease events"),
                &["event"],
            )?,
            signing_uploads_too_large: IntCounter::new(
                "signing_uploads_too_large_total",
                "Uploads refused for their size",
            )?,
            jobs_batches: IntCounterVec::new(
                Opts::new("jobs_batches_total", "Batch attempts by result"),
                &["result"],
            )?,
            jobs_records_signed: IntCounter::new(
                "jobs_records_signed_total",
                "Records signed by batch jobs",
            )?,
            jobs_key_lease_waits: IntCounter::new(
                "jobs_key_lease_waits_total",
                "Times a batch worker found every key of its ring leased",
            )?,
            jobs_key_wait: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "jobs_key_wait_seconds",
                    "Time a batch worker waited for an idle key",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
                ]),
            )?,
            jobs_batch_duration: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "jobs_batch_duration_seconds",
                    "Batch latency from claim to commit",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )?,
            jobs_workers_busy: IntGauge::new(
                "jobs_workers_busy",
                "Batches the workers of this process are signing now (up to jobs.workers × jobs.claim_batches)",
            )?,
            jobs_running: IntGauge::new("jobs_running", "1 while a batch job runs")?,
            jobs_running_total: IntGauge::new(
                "jobs_running_records",
                "Records the running job covers",
            )?,
            jobs_running_signed: IntGauge::new(
                "jobs_running_records_signed",
                "Records of the running job signed so far",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.http_requests.clone()))?;
        m.registry.register(Box::new(m.http_duration.clone()))?;
        m.registry.register(Box::new(m.tls_handshakes.clone()))?;
        m.registry.register(Box::new(m.connections.clone()))?;
        m.registry.register(Box::new(m.http_parse_errors.clone()))?;
        m.registry.register(Box::new(m.hsm_operations.clone()))?;
        m.registry.register(Box::new(m.hsm_duration.clone()))?;
        m.registry.register(Box::new(m.hsm_token_up.clone()))?;
        m.registry.register(Box::new(m.hsm_recoveries.clone()))?;
        m.registry
            .register(Box::new(m.hsm_bad_signatures.clone()))?;
        m.registry.register(Box::new(m.audit_appends.clone()))?;
        m.registry
            .register(Box::new(m.audit_commit_duration.clone()))?;
        m.registry.register(Box::new(m.audit_failures.clone()))?;
        m.registry.register(Box::new(m.audit_groups.clone()))?;
        m.registry
            .register(Box::new(m.audit_callers_refused.clone()))?;
        m.registry.register(Box::new(m.audit_checkpoints.clone()))?;
        m.registry
            .register(Box::new(m.audit_checkpoint_save_failures.clone()))?;
        m.registry.register(Box::new(m.audit_size.clone()))?;
        m.registry.register(Box::new(m.db_pool_size.clone()))?;
        m.registry.register(Box::new(m.db_pool_available.clone()))?;
        m.registry.register(Box::new(m.db_pool_waiting.clone()))?;
        m.registry.register(Box::new(m.db_up.clone()))?;
        m.registry
            .register(Box::new(m.pki_certificates_issued.clone()))?;
        m.registry
            .register(Box::new(m.pki_status_changes.clone()))?;
        m.registry.register(Box::new(m.pki_crls_signed.clone()))?;
        m.registry.register(Box::new(m.pki_crl_number.clone()))?;
        m.registry
            .register(Box::new(m.pki_crl_next_update.clone()))?;
        m.registry
            .register(Box::new(m.pki_ocsp_responses.clone()))?;
        m.registry.register(Box::new(m.rate_limited.clone()))?;
        m.registry.register(Box::new(m.tsa_tokens.clone()))?;
        m.registry.register(Box::new(m.tsa_rejections.clone()))?;
        m.registry.register(Box::new(m.tsa_seconds.clone()))?;
        m.registry
            .register(Box::new(m.signing_operations.clone()))?;
        m.registry
            .register(Box::new(m.signing_queue_rejections.clone()))?;
        m.registry
            .register(Box::new(m.signing_queue_depth.clone()))?;
        m.registry
            .register(Box::new(m.signing_queue_wait.clone()))?;
        m.registry
            .register(Box::new(m.signing_keys_leased.clone()))?;
        m.registry
            .register(Box::new(m.signing_lease_events.clone()))?;
        m.registry
            .register(Box::new(m.signing_uploads_too_large.clone()))?;
        for c in [
            Box::new(m.jobs_batches.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.jobs_records_signed.clone()),
            Box::new(m.jobs_key_lease_waits.clone()),
            Box::new(m.jobs_key_wait.clone()),
            Box::new(m.jobs_batch_duration.clone()),
            Box::new(m.jobs_workers_busy.clone()),
            Box::new(m.jobs_running.clone()),
            Box::new(m.jobs_running_total.clone()),
            Box::new(m.jobs_running_signed.clone()),
        ] {
            m.registry.register(c)?;
        }
        Ok(m)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// A gauge raised by one while this lives: what a request counts while it waits, lowered
/// again however the wait ends — also when the request's future is dropped mid-wait (its client
/// went away), which a `dec()` after the `.await` would miss, leaving the gauge high for good.
#[derive(Debug)]
pub struct Raised(IntGauge);

impl Raised {
    /// Raises `gauge` by one until the result is dropped.
    pub fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Raised(gauge)
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_raised_gauge_comes_down_also_when_its_future_is_dropped() {
        let gauge = IntGauge::new("g", "g").unwrap();
        let raised = Raised::new(gauge.clone());
        assert_eq!(gauge.get(), 1);
        drop(raised);
        assert_eq!(gauge.get(), 0);
        let waiting = {
            let gauge = gauge.clone();
            tokio::spawn(async move {
                let _raised = Raised::new(gauge);
                std::future::pending::<()>().await;
            })
        };
        while gauge.get() == 0 {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert_eq!(gauge.get(), 0);
    }
}
