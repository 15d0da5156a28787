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

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            type_: format!("urn:signetd:problem:{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, json).into_response();
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
