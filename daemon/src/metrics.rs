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
    /// Checkpoints signed.
    pub audit_checkpoints: IntCounter,
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
            audit_checkpoints: IntCounter::new("audit_checkpoints_total", "Checkpoints signed")?,
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
            registry,
        };
        m.registry.register(Box::new(m.http_requests.clone()))?;
        m.registry.register(Box::new(m.http_duration.clone()))?;
        m.registry.register(Box::new(m.tls_handshakes.clone()))?;
        m.registry.register(Box::new(m.connections.clone()))?;
        m.registry.register(Box::new(m.hsm_operations.clone()))?;
        m.registry.register(Box::new(m.hsm_duration.clone()))?;
        m.registry.register(Box::new(m.hsm_token_up.clone()))?;
        m.registry
            .register(Box::new(m.hsm_bad_signatures.clone()))?;
        m.registry.register(Box::new(m.audit_appends.clone()))?;
        m.registry
            .register(Box::new(m.audit_commit_duration.clone()))?;
        m.registry.register(Box::new(m.audit_failures.clone()))?;
        m.registry.register(Box::new(m.audit_checkpoints.clone()))?;
        m.registry.register(Box::new(m.audit_size.clone()))?;
        m.registry.register(Box::new(m.db_pool_size.clone()))?;
        m.registry.register(Box::new(m.db_pool_available.clone()))?;
        m.registry.register(Box::new(m.db_pool_waiting.clone()))?;
        m.registry.register(Box::new(m.db_up.clone()))?;
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
