//! api::problem: RFC 9457 problem+json answers, and the one place where internal errors become
//! an HTTP status and a client-safe message (the full chain is logged once, with the request id).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::hsm::HsmError;
use crate::store::StoreError;

/// An error answer. `detail` is shown to the client, so it must never carry secrets or
/// internals.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    receipt: Option<crate::audit::Receipt>,
}

/// An error answer (RFC 9457). Some carry extension members (`items` of a refused batch,
/// `readiness` of an unready daemon).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub(super) struct Body<'a> {
    /// `urn:signetd:problem:<kind>`, e.g. `urn:signetd:problem:conflict`.
    #[serde(rename = "type")]
    #[schema(example = "urn:signetd:problem:not-found")]
    type_: String,
    /// A short, fixed summary of the kind.
    #[schema(example = "Not found")]
    title: &'a str,
    /// The HTTP status.
    #[schema(example = 404)]
    status: u16,
    /// What went wrong, for a human; never carries secrets.
    #[schema(example = "no such key")]
    detail: &'a str,
}

impl ApiError {
    /// A problem with an explicit status.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            title,
            detail: detail.into(),
            receipt: None,
        }
    }

    /// Attaches the receipt of the entry that logged this failure.
    pub fn with_receipt(mut self, receipt: crate::audit::Receipt) -> Self {
        self.receipt = Some(receipt);
        self
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 503: a dependency is down; the client may retry.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }

    /// 500 for anything unexpected; the detail stays generic.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request failed; the server log has details under this request's id",
        )
    }

    /// 413: the body is larger than allowed.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Content too large",
            detail,
        )
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    /// 503 because of load: the client should retry after the `Retry-After` delay.
    pub fn busy(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "Service busy",
            detail,
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem type's short name (`bad-request`, `busy`, ...).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The client-safe detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable("the database is unavailable; retry later")
            }
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "Conflict",
                "the request conflicts with the current state",
            ),
            other => {
                tracing::error!(error = %other, "storage error");
                ApiError::internal()
            }
        }
    }
}

impl From<HsmError> for ApiError {
    fn from(e: HsmError) -> Self {
        if let HsmError::Scheme(scheme) = &e {
            // The request does not fit the key: the client's error, with a client-safe reason.
            return ApiError::bad_request(scheme.to_string());
        }
        if e.is_transient() {
            tracing::warn!(error = %e, "token unavailable");
            ApiError::unavailable("the token is unavailable; retry later")
        } else {
            tracing::error!(error = %e, "token error");
            ApiError::internal()
        }
    }
}

impl ApiError {
    /// The problem+json document of this error.
    pub fn json_body(&self) -> Vec<u8> {
        let body = Body {
            type_: format!("urn:signetd:problem:{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        // A struct of strings and a number always serialises.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// The problem type of an answer made from an [`ApiError`], kept on the response for the
/// audit of refusals.
#[derive(Debug, Clone, Copy)]
struct ProblemKind(&'static str);

/// The problem type (`bad-request`, `not-found`, ...) of an error answer: its own if it was
/// made from an [`ApiError`], else the one its status implies.
pub(super) fn kind_of(response: &Response) -> &'static str {
    response
        .extensions()
        .get::<ProblemKind>()
        .map_or_else(|| kind_and_title(response.status()).0, |k| k.0)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let json = self.json_body();
        let mut response = (self.status, json).into_response();
        response.extensions_mut().insert(ProblemKind(self.kind));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(r) = &self.receipt
            && let Ok(v) = HeaderValue::from_str(&format!("{}:{}", r.seq, r.leaf_hash))
        {
            response.headers_mut().insert("audit-receipt", v);
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The problem type and title for a status that reached [`ensure_problem`] without a body of
/// ours.
fn kind_and_title(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            ("bad-request", "Bad request")
        }
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("too-large", "Content too large"),
        StatusCode::URI_TOO_LONG => ("uri-too-long", "URI too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("headers-too-large", "Request header fields too large")
        }
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "Service unavailable"),
        s if s.is_server_error() => ("internal", "Internal error"),
        _ => ("http-error", "Request refused"),
    }
}

/// Most bytes of a non-problem error body read to use as the detail.
const MAX_FOREIGN_DETAIL: usize = 1024;

/// Turns an error answer that is not problem+json — a rejection axum's extractors or router
/// wrote as `text/plain`, or an empty one — into problem+json with the same status and
/// headers, the original text (client-safe: axum's rejection messages name only what was
/// wrong with the request) as the detail. Our own answers pass untouched.
pub(super) async fn ensure_problem(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_FOREIGN_DETAIL)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let (kind, title) = kind_and_title(status);
    let detail = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("the request was refused")
            .to_owned()
    });
    let problem = ApiError::new(status, kind, title, detail).into_response();
    let (problem_parts, problem_body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, problem_body)
}
