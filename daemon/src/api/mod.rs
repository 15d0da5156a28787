//! api: the only module that knows HTTP and JSON. Three routers — the mTLS API, the public
//! listener (CA certificate, health) and the metrics listener — with request ids, metrics, and
//! the per-request identity check that keeps held and revoked clients out (invariant 7).

mod albs;
mod audit;
mod body;
mod formats;
pub mod identities;
pub mod input;
mod jobs;
mod limits;
pub mod openapi;
mod pki;
mod problem;
mod rpm;
mod sign;
mod timestamp;
mod upload;
mod verify;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};
use serde::Serialize;
use time::OffsetDateTime;

pub use problem::ApiError;

use crate::audit::{Actor, Receipt, Record};

use crate::app::App;

/// The client certificate of a TLS connection, attached to every request on it.
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    /// SHA-256 of the certificate DER, hex.
    pub fingerprint: Arc<str>,
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Caller {
    /// Account name.
    pub account: String,
    /// Certificate subject.
    pub subject: String,
    /// Certificate serial, hex.
    pub serial: String,
    /// Certificate SHA-256 fingerprint, hex.
    pub fingerprint: String,
    /// Roles of the account.
    pub roles: Vec<String>,
    /// Certificate expiry.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub not_after: OffsetDateTime,
}

/// The mTLS API router.
pub fn api_router(app: App) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/audit/entries", get(audit::entries))
        .route("/v1/audit/proof/inclusion", get(audit::inclusion))
        .route("/v1/audit/proof/consistency", get(audit::consistency))
        .route("/v1/audit/key", get(audit::key))
        .merge(sign::routes())
        .merge(albs::routes())
        .merge(pki::routes())
        .merge(jobs::routes())
        .merge(timestamp::routes())
        .merge(limits::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), api_layers))
        .with_state(app)
}

/// The public router: no client authentication.
pub fn public_router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ca.pem", get(ca_pem))
        .route("/ca.der", get(ca_der))
        .route("/crl.der", get(pki::crl_der))
        .route("/crl.pem", get(pki::crl_pem))
        .route("/tsa.pem", get(timestamp::tsa_pem))
        .route("/tsa.der", get(timestamp::tsa_der))
        .route(
            "/ocsp",
            axum::routing::post(pki::ocsp_post)
                .layer(axum::extract::DefaultBodyLimit::max(pki::OCSP_MAX_BODY)),
        )
        .route("/ocsp/{*request}", get(pki::ocsp_get))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi::document()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), public_layers))
        .with_state(app)
}

/// The metrics router.
pub fn metrics_router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(edge))
        .with_state(app)
}

/// The mTLS API's layers, outermost first, in one middleware (one boxed future and one
/// service clone per request instead of one per layer): [`Edge`], [`Observed`], [`identify`]
/// (the caller, or its refusal), then [`input::check_request`]'s refusals and
/// [`audit_refusal`] around the handler.
async fn api_layers(State(app): State<App>, request: Request, next: Next) -> Response {
    let (request, edge) = Edge::enter(request);
    let (observed, span) = Observed::start(&request, "api");
    let inner = async {
        let (request, actor) = match identify(&app, request).await {
            Ok(identified) => identified,
            Err(refused) => return refused,
        };
        let subject = Subject::of(&request);
        let response = match input::check_request(request.uri(), request.headers()) {
            Ok(()) => next.run(request).await,
            Err(refusal) => refusal.to_api().into_response(),
        };
        audit_refusal(&app, actor, subject, response).await
    };
    let response = tracing::Instrument::instrument(inner, span.clone()).await;
    let response = observed.finish(&app, &span, response);
    edge.leave(response).await
}

/// The public listener's layers in one middleware: [`Edge`], [`Observed`], and the same
/// refusals of bad input as on the API listener, which log nothing here (an unauthenticated
/// client must not grow the audit log).
async fn public_layers(State(app): State<App>, request: Request, next: Next) -> Response {
    let (request, edge) = Edge::enter(request);
    let (observed, span) = Observed::start(&request, "public");
    let inner = async {
        match input::check_request(request.uri(), request.headers()) {
            Ok(()) => next.run(request).await,
            Err(refusal) => refusal.to_api().into_response(),
        }
    };
    let response = tracing::Instrument::instrument(inner, span.clone()).await;
    let response = observed.finish(&app, &span, response);
    edge.leave(response).await
}

/// The metrics listener's only layer: [`Edge`].
async fn edge(request: Request, next: Next) -> Response {
    let (request, edge) = Edge::enter(request);
    let response = next.run(request).await;
    edge.leave(response).await
}

/// The outermost layer of every listener. Request bodies become [`body::Drained`], so an
/// answer given before an upload was read still reaches the client; and every error answer
/// is problem+json, also those that axum's extractors and routing produce themselves
/// (`text/plain` rejections, empty 405s).
///
/// Over HTTP/2, an error answer to a request with a declared length (up to
/// [`body::DRAIN_BYTES`]) waits, at most [`body::DRAIN_TIME`], until the rest of the body has
/// been read: a client that sees an error status mid-upload (curl does) ends its stream at
/// once, short of the declared length, and the h2 library answers that with a stream reset
/// (PROTOCOL_ERROR, RFC 9113 §8.1.1) which can overtake the answer's body still queued.
struct Edge {
    hold: bool,
    finished: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Edge {
    fn enter(request: Request) -> (Request, Edge) {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let hold = request.version() == Version::HTTP_2
            && declared.is_some_and(|n| n > 0 && n <= body::DRAIN_BYTES);
        let mut finished = None;
        let request = request.map(|b| {
            let (drained, rx) = body::Drained::watched(b);
            finished = Some(rx);
            axum::body::Body::new(drained)
        });
        (request, Edge { hold, finished })
    }

    async fn leave(self, response: Response) -> Response {
        if self.hold
            && let Some(rx) = self.finished
            && (response.status().is_client_error() || response.status().is_server_error())
        {
            let _ = tokio::time::timeout(body::DRAIN_TIME, rx).await;
        }
        problem::ensure_problem(response).await
    }
}

/// Denied requests are audited too (invariant 4): a refusal (4xx) that went out without an
/// audit receipt — bad input refused at the edge, a malformed body, an unknown ring, a
/// rejection axum's extractors wrote — gets an entry here, under the caller, with the problem
/// type as its result, before the answer leaves. Refusals a handler logged itself carry their
/// receipt and pass untouched; 5xx answers are failures, not refusals, and the log may be
/// what failed.
async fn audit_refusal(app: &App, actor: Actor, subject: Subject, response: Response) -> Response {
    if !response.status().is_client_error() || response.headers().contains_key("audit-receipt") {
        return response;
    }
    let kind = problem::kind_of(&response);
    let record = Record {
        actor,
        action: "request".to_owned(),
        subject: subject.render(),
        params_digest: crate::audit::params_digest(
            &serde_json::json!({ "status": response.status().as_u16() }),
        ),
        output_digest: None,
        result: format!("error:{kind}"),
    };
    match app.audit.append(record).await {
        Ok(receipt) => with_receipt(response, &receipt),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Longest request path kept in the subject of an audit entry for an unmatched route.
const MAX_SUBJECT_PATH: usize = 256;

/// `METHOD route` for the audit entry of a refused request: the route's template when it
/// matched one (no client text at all), else the path as sent (still percent-encoded, so
/// free of control characters), cut to [`MAX_SUBJECT_PATH`] bytes. Kept in parts (cheap
/// clones) and written out only for a refusal.
struct Subject {
    method: http::Method,
    route: Option<MatchedPath>,
    uri: http::Uri,
}

impl Subject {
    fn of(request: &Request) -> Subject {
        Subject {
            method: request.method().clone(),
            route: request.extensions().get::<MatchedPath>().cloned(),
            uri: request.uri().clone(),
        }
    }

    fn render(&self) -> String {
        let route = match &self.route {
            Some(p) => p.as_str(),
            None => {
                let path = self.uri.path();
                let mut end = path.len().min(MAX_SUBJECT_PATH);
                while !path.is_char_boundary(end) {
                    end -= 1;
                }
                &path[..end]
            }
        };
        format!("{} {route}", self.method)
    }
}

/// Request id, tracing span, and the HTTP metrics of one request.
struct Observed {
    start: Instant,
    listener: &'static str,
    route: Option<MatchedPath>,
    method: http::Method,
    request_id: String,
}

impl Observed {
    fn start(request: &Request, listener: &'static str) -> (Observed, tracing::Span) {
        let observed = Observed {
            start: Instant::now(),
            listener,
            route: request.extensions().get::<MatchedPath>().cloned(),
            method: request.method().clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let span = tracing::info_span!(
            "request",
            id = %observed.request_id,
            listener,
            method = %observed.method,
            route = observed.route_name(),
        );
        (observed, span)
    }

    fn route_name(&self) -> &str {
        self.route.as_ref().map_or("unmatched", |p| p.as_str())
    }

    fn finish(self, app: &App, span: &tracing::Span, mut response: Response) -> Response {
        let status = response.status();
        let route = self.route_name();
        app.metrics
            .http_requests
            .with_label_values(&[self.listener, route, self.method.as_str(), status.as_str()])
            .inc();
        app.metrics
            .http_duration
            .with_label_values(&[self.listener, route])
            .observe(self.start.elapsed().as_secs_f64());
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        span.in_scope(|| {
            tracing::info!(
                status = status.as_u16(),
                elapsed_ms = self.start.elapsed().as_millis() as u64,
                "served"
            );
        });
        response
    }
}

/// Turns the connection's client certificate into a [`Caller`], on every request: a held,
/// revoked, expired or unknown certificate is refused even on a kept-alive connection or a
/// resumed TLS session. Refusals are logged. Gives back the request with its caller attached,
/// and the caller as the audit's actor (for [`audit_refusal`]), or the refusal to answer.
async fn identify(app: &App, mut request: Request) -> Result<(Request, Actor), Response> {
    let Some(peer) = request.extensions().get::<PeerCertificate>().cloned() else {
        return Err(ApiError::forbidden("a client certificate is required").into_response());
    };
    // Answers under /v1/audit/ are not audit entries, so the writer's check of the caller
    // (see `identities`) does not cover them: they read the database every time.
    let cached = if request.uri().path().starts_with("/v1/audit/") {
        None
    } else {
        app.identities.get(&peer.fingerprint)
    };
    let from_database = cached.is_none();
    let identity = match cached {
        Some(identity) => Some(identity),
        None => match app.store.identity(&peer.fingerprint).await {
            Ok(identity) => identity,
            Err(e) => return Err(ApiError::from(e).into_response()),
        },
    };
    let now = OffsetDateTime::now_utc();
    let refusal = match &identity {
        None => Some("this client certificate is not registered".to_owned()),
        Some(i) => i.refusal(now),
    };
    // Kept only when just read: a cached entry is not renewed by its use, so it is read again
    // at least every `identities::TTL`.
    if let (true, Some(identity), None) = (from_database, &identity, &refusal) {
        app.identities.put(&peer.fingerprint, identity);
    }
    let (identity, refusal) = match (identity, refusal) {
        (Some(identity), None) => (identity, None),
        (identity, Some(reason)) => (identity.unwrap_or_else(unknown_identity), Some(reason)),
        (None, None) => (unknown_identity(), Some("unknown certificate".to_owned())),
    };
    let caller = Caller {
        account: identity.account,
        subject: identity.subject,
        serial: identity.serial,
        fingerprint: peer.fingerprint.to_string(),
        roles: identity.roles,
        not_after: identity.not_after,
    };
    if let Some(reason) = refusal {
        let record = caller.record(
            "request",
            Subject::of(&request).render(),
            &serde_json::json!({}),
            None,
            "error:forbidden",
        );
        return Err(match app.audit.append(record).await {
            Ok(receipt) => with_receipt(ApiError::forbidden(reason).into_response(), &receipt),
            Err(e) => ApiError::from(e).into_response(),
        });
    }
    if let Err(wait) = app
        .limits
        .check(&caller.account, &caller.fingerprint, &caller.roles)
    {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!("this account is over its rate limit; retry in {secs} s"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(response);
    }
    let actor = caller.actor();
    request.extensions_mut().insert(caller);
    Ok((request, actor))
}

fn unknown_identity() -> crate::store::Identity {
    crate::store::Identity {
        account: String::new(),
        roles: Vec::new(),
        serial: String::new(),
        subject: String::new(),
        status: "unknown".into(),
        account_deleted: false,
        not_after: OffsetDateTime::UNIX_EPOCH,
    }
}

impl Caller {
    /// The audit actor.
    pub fn actor(&self) -> Actor {
        Actor {
            fingerprint: self.fingerprint.clone(),
            account: self.account.clone(),
        }
    }

    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// An audit record of this caller's operation.
    pub fn record(
        &self,
        action: &str,
        subject: String,
        params: &serde_json::Value,
        output: Option<&[u8]>,
        result: &str,
    ) -> Record {
        Record {
            actor: self.actor(),
            action: action.to_owned(),
            subject,
            params_digest: crate::audit::params_digest(params),
            output_digest: output.map(crate::audit::digest),
            result: result.to_owned(),
        }
    }
}

/// Refuses (and logs the refusal) unless the caller holds `role`.
pub(crate) async fn require_role(
    app: &App,
    caller: &Caller,
    role: &str,
    action: &str,
    subject: &str,
) -> Result<(), ApiError> {
    if caller.has_role(role) {
        return Ok(());
    }
    let record = caller.record(
        action,
        subject.to_owned(),
        &serde_json::json!({}),
        None,
        "error:forbidden",
    );
    let receipt = app.audit.append(record).await?;
    Err(
        ApiError::forbidden(format!("this operation needs the `{role}` role"))
            .with_receipt(receipt),
    )
}

/// Adds the `Audit-Receipt: <seq>:<leaf hash>` header.
pub(crate) fn with_receipt(mut response: Response, receipt: &Receipt) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("{}:{}", receipt.seq, receipt.leaf_hash)) {
        response.headers_mut().insert("audit-receipt", v);
    }
    response
}

/// The caller: account, roles and the client certificate of this request. Audited.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "api",
    responses((status = 200, description = "The authenticated caller", body = Caller)),
)]
async fn whoami(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let record = caller.record(
        "whoami",
        format!("account:{}", caller.account),
        &serde_json::json!({}),
        None,
        "ok",
    );
    let receipt = app.audit.append(record).await?;
    Ok(with_receipt(Json(caller).into_response(), &receipt))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this resource does not support that method",
    )
}

/// Liveness: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "public",
    responses((status = 200, description = "The daemon is alive", body = Health)),
)]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!(Health { status: "ok" }))
}

/// Liveness.
#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Readiness: the database and every token.
#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    /// `ready`.
    #[schema(example = "ready")]
    status: &'static str,
    /// `ok`, `unavailable` or `timeout`.
    database: String,
    /// Each token's state: `ok`, `unavailable` or `timeout`.
    tokens: std::collections::BTreeMap<String, String>,
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "public",
    responses(
        (status = 200, description = "The database answers and every token is present and logged in", body = Readiness),
        (status = 503, description = "Not ready: a problem whose extension members `readiness`, `database` and `tokens` say what is down"),
    ),
)]
/// Ready when the database answers and every token is present and logged in. Checks run now,
/// with a timeout, so a restarted database or token shows up at once.
async fn readyz(State(app): State<App>) -> Response {
    let db = tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await;
    let database = match db {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database");
            "unavailable".to_owned()
        }
        Err(_) => "timeout".to_owned(),
    };
    app.metrics.db_up.set(i64::from(database == "ok"));
    let mut tokens = std::collections::BTreeMap::new();
    for name in app.hsm.token_names() {
        let hsm = app.hsm.clone();
        let n = name.clone();
        let check = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::task::spawn_blocking(move || hsm.check_token(&n)),
        )
        .await;
        let state = match check {
            Ok(Ok(Ok(()))) => "ok".to_owned(),
            Ok(Ok(Err(e))) => {
                tracing::warn!(token = %name, error = %e, "readiness: token");
                "unavailable".to_owned()
            }
            _ => "timeout".to_owned(),
        };
        tokens.insert(name, state);
    }
    let ready = database == "ok" && tokens.values().all(|s| s == "ok");
    if ready {
        let body = Readiness {
            status: "ready",
            database,
            tokens,
        };
        return (StatusCode::OK, Json(body)).into_response();
    }
    // Unready is an error answer like any other: a problem document (RFC 9457) whose
    // extension members say what is down.
    let mut down: Vec<String> = Vec::new();
    if database != "ok" {
        down.push(format!("database {database}"));
    }
    for (name, state) in &tokens {
        if state != "ok" {
            down.push(format!("token {name} {state}"));
        }
    }
    let problem = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Service unavailable",
        format!("not ready: {}", down.join(", ")),
    );
    let mut doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&problem.json_body()).unwrap_or_default();
    doc.insert("readiness".into(), "unready".into());
    doc.insert("database".into(), database.into());
    doc.insert(
        "tokens".into(),
        serde_json::to_value(&tokens).unwrap_or_default(),
    );
    let mut response = problem.into_response();
    *response.body_mut() = axum::body::Body::from(serde_json::to_vec(&doc).unwrap_or_default());
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

/// The CA certificate (PEM): the trust anchor of the API's server certificate and of every
/// client certificate.
#[utoipa::path(
    get,
    path = "/ca.pem",
    tag = "public",
    responses((status = 200, description = "The CA certificate", content_type = "application/x-pem-file", body = String)),
)]
async fn ca_pem(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        app.ca_pem.as_str().to_owned(),
    )
        .into_response()
}

/// The CA certificate (DER).
#[utoipa::path(
    get,
    path = "/ca.der",
    tag = "public",
    responses((status = 200, description = "The CA certificate", content_type = "application/pkix-cert", body = openapi::Binary)),
)]
async fn ca_der(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/pkix-cert")],
        app.ca_der.as_ref().clone(),
    )
        .into_response()
}

/// The Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    responses((status = 200, description = "Every metric of the daemon", content_type = "text/plain; version=0.0.4", body = String)),
)]
async fn metrics(State(app): State<App>) -> Response {
    let pool = app.store.pool_status();
    app.metrics.db_pool_size.set(pool.size as i64);
    app.metrics.db_pool_available.set(pool.available as i64);
    app.metrics.db_pool_waiting.set(pool.waiting as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
