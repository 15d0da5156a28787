//! api::pki: HTTP endpoints of the certificate authority — accounts, certificates, CRL, OCSP.
//!
//! Who may do what (refusals are audited):
//!
//! | | admin | cert-manager | auditor | the account itself |
//! |---|---|---|---|---|
//! | create, delete accounts | any roles | accounts whose roles are all `signer:*` | | |
//! | list and read accounts and their certificates | yes | yes | yes | its own |
//! | issue `mtls-client`, `document-signer` from a CSR | any account | `signer:*` accounts | | |
//! | issue `tls-server` from a CSR | yes | | | |
//! | deactivate, activate, revoke | any certificate | those it may issue, and token keys' | | |
//! | certificates for token signing keys | yes | yes | | |
//!
//! `tls-server` certificates are the admin's alone: API clients trust this CA for the server
//! too, so such a certificate could impersonate the daemon. Nobody changes the status of the
//! certificate their own request is made with (that would lock them out; `signetd account
//! create` is the way back in), nor of the daemon's own certificates.
//!
//! The public endpoints (`/crl.der`, `/crl.pem`, `/ocsp`) need no client certificate.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ApiError, Caller, with_receipt};
use crate::app::App;
use crate::audit::{AuditError, Receipt};
use crate::pki::service::{
    CaError, CsrRequest, OcspOutcome, ProfileName, RevocationReason, StatusChange, normalize_serial,
};
use crate::store::pki::{AccountRow, CertificateRow};

/// Largest request body of these endpoints: a CSR (16 KiB at most) in JSON, with room.
const MAX_BODY: usize = 64 * 1024;

/// The routes of this part of the API (merged into the mTLS API router).
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/v1/accounts", get(list_accounts).post(create_account))
        .route(
            "/v1/accounts/{name}",
            get(get_account).delete(delete_account),
        )
        .route(
            "/v1/accounts/{name}/certificates",
            get(list_certificates).post(issue_certificate),
        )
        .route("/v1/certificates/{serial}", get(get_certificate))
        .route("/v1/certificates/{serial}/deactivate", post(deactivate))
        .route("/v1/certificates/{serial}/activate", post(activate))
        .route("/v1/certificates/{serial}/revoke", post(revoke))
        .route(
            "/v1/keys/{id}/certificate",
            get(get_key_certificate).post(issue_key_certificate),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

// ---------------------------------------------------------------------------------------------
// Errors and shared helpers.

impl From<CaError> for ApiError {
    fn from(e: CaError) -> Self {
        match e {
            CaError::BadRequest(m) => ApiError::bad_request(m),
            CaError::NotFound(m) => ApiError::not_found(m),
            CaError::Conflict(m) => conflict(m),
            CaError::Store(s) => ApiError::from(s),
            CaError::Hsm(h) => ApiError::from(h),
            CaError::Audit(AuditError::Operation { error, receipt }) => {
                ApiError::from(error).with_receipt(receipt)
            }
            CaError::Audit(a) => ApiError::from(a),
            CaError::Signer(m) => {
                tracing::warn!(error = %m, "CA signature failed");
                ApiError::unavailable("the CA key in the token could not sign; retry later")
            }
            CaError::Cert(m) => {
                tracing::error!(error = %m, "certificate authority error");
                ApiError::internal()
            }
        }
    }
}

fn conflict(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
}

fn unsupported_media(detail: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        detail,
    )
}

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Content too large",
            "the request body is too large",
        )
    } else {
        ApiError::bad_request(format!("cannot read the body: {}", e.body_text()))
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    super::input::parse_json(body, super::input::Nul::Refused)
}

/// The media type of a request, without parameters, lower case.
fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn is_manager(caller: &Caller) -> bool {
    caller.has_role("admin") || caller.has_role("cert-manager")
}

/// Roles a cert-manager may not hand out or act for: anything but `signer:*`.
fn privileged(roles: &[String]) -> bool {
    roles.iter().any(|r| !r.starts_with("signer:"))
}

fn may_manage_account(caller: &Caller, roles: &[String]) -> bool {
    caller.has_role("admin") || (caller.has_role("cert-manager") && !privileged(roles))
}

fn may_read(caller: &Caller, account: &str) -> bool {
    is_manager(caller) || caller.has_role("auditor") || caller.account == account
}

fn may_issue(caller: &Caller, roles: &[String], profile: ProfileName) -> bool {
    caller.has_role("admin")
        || (caller.has_role("cert-manager")
            && !privileged(roles)
            && profile != ProfileName::TlsServer)
}

fn may_change(caller: &Caller, cert: &CertificateRow) -> bool {
    if caller.has_role("admin") {
        return true;
    }
    caller.has_role("cert-manager")
        && match &cert.account {
            Some(_) => !privileged(&cert.account_roles) && cert.profile != "tls-server",
            None => cert.key_id.is_some() && cert.profile == "document-signer",
        }
}

/// Refuses, and logs the refusal.
async fn deny(app: &App, caller: &Caller, action: &str, subject: String, detail: &str) -> ApiError {
    let record = caller.record(
        action,
        subject,
        &serde_json::json!({}),
        None,
        "error:forbidden",
    );
    match app.audit.append(record).await {
        Ok(receipt) => ApiError::forbidden(detail).with_receipt(receipt),
        Err(e) => ApiError::from(e),
    }
}

async fn account_or_404(app: &App, name: &str) -> Result<AccountRow, ApiError> {
    app.store
        .account(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no account {name:?}")))
}

fn serial_or_400(serial: &str) -> Result<String, ApiError> {
    normalize_serial(serial).ok_or_else(|| {
        ApiError::bad_request("a serial is hex (as `openssl x509 -serial` prints it)")
    })
}

// ---------------------------------------------------------------------------------------------
// Bodies.

/// An account as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Account)]
struct AccountBody {
    name: String,
    /// `admin`, `cert-manager`, `auditor`, `timestamper`, `signer:<ring>`.
    roles: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    deleted_at: Option<OffsetDateTime>,
}

impl From<AccountRow> for AccountBody {
    fn from(a: AccountRow) -> Self {
        AccountBody {
            name: a.name,
            roles: a.roles,
            created_at: a.created_at,
            deleted_at: a.deleted_at,
        }
    }
}

/// A certificate as shown; `certificate_pem` only for a single certificate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Certificate)]
pub(super) struct CertBody {
    /// Hex.
    serial: String,
    /// The account of a client certificate.
    account: Option<String>,
    /// The token key of a document-signer or TSA certificate.
    key_id: Option<Uuid>,
    /// `mtls-client`, `tls-server`, `document-signer`, ...
    profile: String,
    subject: String,
    /// SHA-256 of the DER, hex.
    fingerprint: String,
    /// `active`, `held` or `revoked`.
    status: String,
    revocation_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    status_changed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    not_after: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_pem: Option<String>,
}

fn cert_body(c: &CertificateRow, with_pem: bool) -> CertBody {
    CertBody {
        serial: c.serial.clone(),
        account: c.account.clone(),
        key_id: c.key_id,
        profile: c.profile.clone(),
        subject: c.subject.clone(),
        fingerprint: c.fingerprint.clone(),
        status: c.status.clone(),
        revocation_reason: c.revocation_reason.clone(),
        status_changed_at: c.status_changed_at,
        not_before: c.not_before,
        not_after: c.not_after,
        certificate_pem: with_pem.then(|| pem(&c.der)),
    }
}

fn pem(der: &[u8]) -> String {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der).unwrap_or_default()
}

/// A body with the receipt of the change it reports.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct WithReceipt<T> {
    #[serde(flatten)]
    pub(super) inner: T,
    pub(super) receipt: Receipt,
}

fn receipted<T: Serialize>(status: StatusCode, inner: T, receipt: Receipt) -> Response {
    let response = (
        status,
        Json(WithReceipt {
            inner,
            receipt: receipt.clone(),
        }),
    )
        .into_response();
    with_receipt(response, &receipt)
}

/// How to return a certificate: `json` (default, with its PEM), `pem` or `der`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Json,
    Pem,
    Der,
}

/// A certificate, in the `format` asked for (what [`certificate_response`] answers).
#[derive(utoipa::ToResponse)]
#[response(headers(("x-certificate-serial" = String, description = "The serial, hex")))]
#[allow(dead_code, clippy::large_enum_variant)] // A response description only: never built.
pub(super) enum CertificateAnswer {
    Json(#[content("application/json")] CertBody),
    Pem(#[content("application/x-pem-file")] String),
    Der(#[content("application/pkix-cert")] super::openapi::Binary),
}

/// A new certificate, in the `format` asked for, with the receipt of its issuance.
#[derive(utoipa::ToResponse)]
#[response(headers(
    ("x-certificate-serial" = String, description = "The serial, hex"),
    ("Location" = Option<String>, description = "`/v1/certificates/<serial>` (account certificates)"),
    ("Audit-Receipt" = String, description = "`<seq>:<leaf hash>` of the issuance's audit entry"),
))]
#[allow(dead_code, clippy::large_enum_variant)] // A response description only: never built.
pub(super) enum IssuedCertificate {
    Json(#[content("application/json")] WithReceipt<CertBody>),
    Pem(#[content("application/x-pem-file")] String),
    Der(#[content("application/pkix-cert")] super::openapi::Binary),
}

fn certificate_response(
    status: StatusCode,
    cert: &CertificateRow,
    format: Format,
    receipt: Option<Receipt>,
) -> Response {
    let mut response = match (format, &receipt) {
        (Format::Json, Some(r)) => receipted(status, cert_body(cert, true), r.clone()),
        (Format::Json, None) => (status, Json(cert_body(cert, true))).into_response(),
        (Format::Pem, _) => (
            status,
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            pem(&cert.der),
        )
            .into_response(),
        (Format::Der, _) => (
            status,
            [(header::CONTENT_TYPE, "application/pkix-cert")],
            cert.der.clone(),
        )
            .into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&cert.serial) {
        response.headers_mut().insert("x-certificate-serial", v);
    }
    match receipt {
        Some(r) => with_receipt(response, &r),
        None => response,
    }
}

// ---------------------------------------------------------------------------------------------
// Accounts.

/// A new account.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    #[schema(example = "release-bot")]
    name: String,
    /// `admin`, `cert-manager`, `auditor`, `timestamper`, `signer:<ring>`.
    #[serde(default)]
    #[schema(example = json!(["signer:payments"]))]
    roles: Vec<String>,
}

/// A deleted account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DeletedAccount {
    name: String,
    /// Always `true`.
    deleted: bool,
    /// Serials of its certificates revoked with it.
    revoked: Vec<String>,
}

/// Accounts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AccountList {
    accounts: Vec<AccountBody>,
}

/// An account's certificates.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CertificateList {
    account: String,
    certificates: Vec<CertBody>,
}

const MANAGERS: &str = "Needs `admin` or `cert-manager` (a cert-manager manages only accounts \
                        whose roles are all `signer:<ring>`). Audited.";

/// Creates an account.
#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "api",
    description = MANAGERS,
    request_body = CreateAccount,
    responses(
        (status = 201, description = "The new account", body = WithReceipt<AccountBody>),
        (status = 400, description = "A bad name, role or body"),
        (status = 409, description = "The account exists"),
        (status = 413, description = "The body is larger than allowed"),
        (status = 415, description = "Not JSON"),
    ),
)]
async fn create_account(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    const ACTION: &str = "account.create";
    if !is_manager(&caller) {
        return Err(deny(
            &app,
            &caller,
            ACTION,
            "accounts".into(),
            "creating accounts needs the `admin` or `cert-manager` role",
        )
        .await);
    }
    if content_type(&headers) != "application/json" {
        return Err(unsupported_media("send the account as application/json"));
    }
    let req: CreateAccount = json_body(&body.map_err(body_error)?)?;
    if !may_manage_account(&caller, &req.roles) {
        return Err(deny(
            &app,
            &caller,
            ACTION,
            format!("account:{}", req.name),
            "a cert-manager creates only accounts whose roles are all `signer:<ring>`",
        )
        .await);
    }
    let (account, receipt) = app
        .ca
        .create_account(&caller.actor(), &req.name, &req.roles)
        .await?;
    Ok(receipted(
        StatusCode::CREATED,
        AccountBody::from(account),
        receipt,
    ))
}

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListAccounts {
    /// Include deleted accounts.
    #[serde(default)]
    deleted: bool,
}

/// The accounts. Needs `admin`, `cert-manager` or `auditor`.
#[utoipa::path(
    get,
    path = "/v1/accounts",
    tag = "api",
    params(ListAccounts),
    responses((status = 200, description = "The accounts", body = AccountList)),
)]
async fn list_accounts(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ListAccounts>, QueryRejection>,
) -> Result<Response, ApiError> {
    if !is_manager(&caller) && !caller.has_role("auditor") {
        return Err(deny(
            &app,
            &caller,
            "account.list",
            "accounts".into(),
            "listing accounts needs the `admin`, `cert-manager` or `auditor` role",
        )
        .await);
    }
    let q = query(q)?;
    let accounts: Vec<AccountBody> = app
        .store
        .accounts(q.deleted)
        .await?
        .into_iter()
        .map(AccountBody::from)
        .collect();
    Ok(Json(AccountList { accounts }).into_response())
}

/// One account: one's own, or any with `admin`, `cert-manager` or `auditor`.
#[utoipa::path(
    get,
    path = "/v1/accounts/{name}",
    tag = "api",
    params(("name" = String, Path, description = "The account's name")),
    responses(
        (status = 200, description = "The account", body = AccountBody),
        (status = 404, description = "No such account"),
    ),
)]
async fn get_account(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !may_read(&caller, &name) {
        return Err(deny(
            &app,
            &caller,
            "account.get",
            format!("account:{name}"),
            "reading another account needs the `admin`, `cert-manager` or `auditor` role",
        )
        .await);
    }
    let account = account_or_404(&app, &name).await?;
    Ok(Json(AccountBody::from(account)).into_response())
}

/// Deletes an account and revokes its certificates; every daemon refuses them at once.
#[utoipa::path(
    delete,
    path = "/v1/accounts/{name}",
    tag = "api",
    description = MANAGERS,
    params(("name" = String, Path, description = "The account's name")),
    responses(
        (status = 200, description = "Deleted", body = WithReceipt<DeletedAccount>),
        (status = 404, description = "No such account"),
        (status = 409, description = "The caller's own account, or deleted already"),
    ),
)]
async fn delete_account(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    const ACTION: &str = "account.delete";
    if !is_manager(&caller) {
        return Err(deny(
            &app,
            &caller,
            ACTION,
            format!("account:{name}"),
            "deleting accounts needs the `admin` or `cert-manager` role",
        )
        .await);
    }
    let account = account_or_404(&app, &name).await?;
    if !may_manage_account(&caller, &account.roles) {
        return Err(deny(
            &app,
            &caller,
            ACTION,
            format!("account:{name}"),
            "a cert-manager deletes only accounts whose roles are all `signer:<ring>`",
        )
        .await);
    }
    if account.name == caller.account {
        return Err(conflict(
            "an account cannot delete itself; use another account",
        ));
    }
    let (revoked, receipt) = app.ca.delete_account(&caller.actor(), &account).await?;
    Ok(receipted(
        StatusCode::OK,
        DeletedAccount {
            name: account.name,
            deleted: true,
            revoked,
        },
        receipt,
    ))
}

// ---------------------------------------------------------------------------------------------
// Certificates.

/// An account's certificates: one's own, or any with `admin`, `cert-manager` or `auditor`.
#[utoipa::path(
    get,
    path = "/v1/accounts/{name}/certificates",
    tag = "api",
    params(("name" = String, Path, description = "The account's name")),
    responses(
        (status = 200, description = "The certificates", body = CertificateList),
        (status = 404, description = "No such account"),
    ),
)]
async fn list_certificates(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !may_read(&caller, &name) {
        return Err(deny(
            &app,
            &caller,
            "cert.list",
            format!("account:{name}"),
            "reading another account's certificates needs the `admin`, `cert-manager` or \
             `auditor` role",
        )
        .await);
    }
    account_or_404(&app, &name).await?;
    let certs: Vec<CertBody> = app
        .store
        .account_certificates(&name)
        .await?
        .iter()
        .map(|c| cert_body(c, false))
        .collect();
    Ok(Json(CertificateList {
        account: name,
        certificates: certs,
    })
    .into_response())
}

/// The JSON form of an issuance request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    /// `mtls-client`, `tls-server` or `document-signer`.
    #[schema(example = "mtls-client")]
    profile: String,
    /// The PKCS#10 request, PEM.
    csr: String,
    validity_days: Option<u32>,
    /// tls-server: DNS names and IP addresses.
    #[serde(default)]
    names: Vec<String>,
}

/// Query of an issuance request: the options when the body is the CSR itself
/// (`application/pkcs10`), and the answer's format either way.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct IssueQuery {
    /// With an `application/pkcs10` body: `mtls-client`, `tls-server` or `document-signer`.
    profile: Option<String>,
    /// With an `application/pkcs10` body: days of validity.
    validity_days: Option<u32>,
    /// With an `application/pkcs10` body: comma-separated DNS names and IP addresses
    /// (tls-server).
    names: Option<String>,
    /// The answer: `json` (default, with the PEM), `pem` or `der`.
    #[serde(default)]
    #[param(inline)]
    format: Format,
}

/// Issues a certificate for an account from a CSR (JSON, or the CSR itself as
/// `application/pkcs10`, PEM or DER).
#[utoipa::path(
    post,
    path = "/v1/accounts/{name}/certificates",
    tag = "api",
    description = MANAGERS,
    params(("name" = String, Path, description = "The account's name"), IssueQuery),
    request_body(content(
        (IssueBody = "application/json"),
        (String = "application/pkcs10"),
    )),
    responses(
        (status = 201, response = IssuedCertificate),
        (status = 400, description = "A bad CSR, profile, validity or name"),
        (status = 404, description = "No such account, or it was deleted"),
        (status = 413, description = "The body is larger than allowed"),
        (status = 415, description = "Neither JSON nor application/pkcs10"),
    ),
)]
async fn issue_certificate(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: Result<Query<IssueQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    const ACTION: &str = "cert.issue";
    if !is_manager(&caller) {
        return Err(deny(
            &app,
            &caller,
            ACTION,
            format!("account:{name}"),
            "issuing certificates needs the `admin` or `cert-manager` role",
        )
        .await);
    }
    let q = query(q)?;
    let body = body.map_err(body_error)?;
    let request = match content_type(&headers).as_str() {
        "application/json" => {
            if q.profile.is_some() || q.validity_days.is_some() || q.names.is_some() {
                return Err(ApiError::bad_request(
                    "with a JSON body, give profile, validity_days and names in the body",
                ));
            }
            let b: IssueBody = json_body(&body)?;
            CsrRequest {
                profile: b.profile.parse()?,
                csr: b.csr.into_bytes(),
                validity_days: b.validity_days,
                names: b.names,
            }
        }
        "application/pkcs10" => CsrRequest {
            profile: q
                .profile
                .as_deref()
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "give ?profile=mtls-client (or tls-server, document-signer)",
                    )
                })?
                .parse()?,
            csr: body.to_vec(),
            validity_days: q.validity_days,
            names: q
                .names
                .as_deref()
                .map(|n| {
                    n.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        },
        _ => {
            return Err(unsupported_media(
                "send the CSR as application/pkcs10 (PEM or DER), or JSON {\"profile\", \"csr\"} \
                 as application/json",
            ));
        }
    };
    let account = account_or_404(&app, &name).await?;
    if account.deleted_at.is_some() {
        return Err(ApiError::not_found(format!("account {name:?} was deleted")));
    }
    if !may_issue(&caller, &account.roles, request.profile) {
        return Err(deny(
            &app,
            &caller,
            ACTION,
            format!("account:{name}"),
            "a cert-manager issues mtls-client and document-signer certificates for accounts \
             whose roles are all `signer:<ring>`; tls-server certificates and privileged \
             accounts need `admin`",
        )
        .await);
    }
    let (cert, receipt) = app
        .ca
        .issue_from_csr(&caller.actor(), &account, request)
        .await?;
    let mut response = certificate_response(StatusCode::CREATED, &cert, q.format, Some(receipt));
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/certificates/{}", cert.serial)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FormatQuery {
    /// The answer: `json` (default, with the PEM), `pem` or `der`.
    #[serde(default)]
    #[param(inline)]
    format: Format,
}

/// One certificate: one's own, or any with `admin`, `cert-manager` or `auditor`.
#[utoipa::path(
    get,
    path = "/v1/certificates/{serial}",
    tag = "api",
    params(("serial" = String, Path, description = "The serial, hex"), FormatQuery),
    responses(
        (status = 200, response = CertificateAnswer),
        (status = 400, description = "Not a serial"),
        (status = 404, description = "No such certificate"),
    ),
)]
async fn get_certificate(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(serial): Path<String>,
    q: Result<Query<FormatQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let serial = serial_or_400(&serial)?;
    let readers = is_manager(&caller) || caller.has_role("auditor");
    let found = app.store.certificate(&serial).await?;
    let mine = found
        .as_ref()
        .is_some_and(|c| c.account.as_deref() == Some(caller.account.as_str()));
    if !readers && !mine {
        return Err(deny(
            &app,
            &caller,
            "cert.get",
            format!("cert:{serial}"),
            "reading another account's certificate needs the `admin`, `cert-manager` or \
             `auditor` role",
        )
        .await);
    }
    let cert = found.ok_or_else(|| ApiError::not_found(format!("no certificate {serial}")))?;
    Ok(certificate_response(StatusCode::OK, &cert, q.format, None))
}

/// Why a certificate is revoked.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    /// RFC 5280's name: `unspecified` (default), `keyCompromise`, `affiliationChanged`,
    /// `superseded`, `cessationOfOperation`, `privilegeWithdrawn`.
    #[schema(value_type = String, example = "keyCompromise")]
    #[serde(default)]
    reason: RevocationReason,
}

/// Holds a certificate (certificateHold): refused at once by every daemon, listed in the CRL.
#[utoipa::path(
    post,
    path = "/v1/certificates/{serial}/deactivate",
    tag = "api",
    description = MANAGERS,
    params(("serial" = String, Path, description = "The serial, hex")),
    responses(
        (status = 200, description = "The held certificate", body = WithReceipt<CertBody>),
        (status = 400, description = "Not a serial"),
        (status = 404, description = "No such certificate"),
        (status = 409, description = "The change is not possible in the certificate's status, or the request is made with that certificate"),
    ),
)]
async fn deactivate(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    change(&app, &caller, &serial, StatusChange::Deactivate).await
}

/// Releases a held certificate.
#[utoipa::path(
    post,
    path = "/v1/certificates/{serial}/activate",
    tag = "api",
    description = MANAGERS,
    params(("serial" = String, Path, description = "The serial, hex")),
    responses(
        (status = 200, description = "The active certificate", body = WithReceipt<CertBody>),
        (status = 400, description = "Not a serial"),
        (status = 404, description = "No such certificate"),
        (status = 409, description = "The change is not possible in the certificate's status, or the request is made with that certificate"),
    ),
)]
async fn activate(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    change(&app, &caller, &serial, StatusChange::Activate).await
}

/// Revokes a certificate for good.
#[utoipa::path(
    post,
    path = "/v1/certificates/{serial}/revoke",
    tag = "api",
    description = MANAGERS,
    params(("serial" = String, Path, description = "The serial, hex")),
    request_body(content = Option<RevokeBody>, content_type = "application/json", description = "The reason; no body: `unspecified`"),
    responses(
        (status = 200, description = "The revoked certificate", body = WithReceipt<CertBody>),
        (status = 400, description = "Not a serial"),
        (status = 404, description = "No such certificate"),
        (status = 409, description = "The change is not possible in the certificate's status, or the request is made with that certificate"),
        (status = 413, description = "The body is larger than allowed"),
        (status = 415, description = "A body that is not JSON"),
    ),
)]
async fn revoke(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(serial): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        RevocationReason::default()
    } else if content_type(&headers) == "application/json" {
        json_body::<RevokeBody>(&body)?.reason
    } else {
        return Err(unsupported_media(
            "send {\"reason\": \"keyCompromise\"} as application/json, or no body",
        ));
    };
    change(&app, &caller, &serial, StatusChange::Revoke(reason)).await
}

async fn change(
    app: &App,
    caller: &Caller,
    serial: &str,
    change: StatusChange,
) -> Result<Response, ApiError> {
    let action = change.action();
    if !is_manager(caller) {
        return Err(deny(
            app,
            caller,
            action,
            format!("cert:{serial}"),
            "changing a certificate's status needs the `admin` or `cert-manager` role",
        )
        .await);
    }
    let serial = serial_or_400(serial)?;
    let cert = app
        .store
        .certificate(&serial)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no certificate {serial}")))?;
    if !may_change(caller, &cert) {
        return Err(deny(
            app,
            caller,
            action,
            format!("cert:{serial}"),
            "a cert-manager changes only the certificates it may issue, and those of token keys",
        )
        .await);
    }
    if cert.fingerprint == caller.fingerprint && change != StatusChange::Activate {
        return Err(conflict(
            "this request is made with that certificate; use another one to change it",
        ));
    }
    let (cert, receipt) = app.ca.change_status(&caller.actor(), &cert, change).await?;
    Ok(receipted(StatusCode::OK, cert_body(&cert, false), receipt))
}

// ---------------------------------------------------------------------------------------------
// Certificates of token keys.

/// The certificate of a token key.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyCertBody {
    /// The subject DN (default: from the key's ring and id).
    subject: Option<String>,
    validity_days: Option<u32>,
}

fn key_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request("a key id is a UUID"))
}

/// Issues a document-signer certificate for a ring key (CMS signatures carry it).
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/certificate",
    tag = "api",
    description = MANAGERS,
    params(("id" = String, Path, description = "The key's id (UUID)"), FormatQuery),
    request_body(content = Option<KeyCertBody>, content_type = "application/json", description = "Optional; no body: the defaults"),
    responses(
        (status = 201, response = IssuedCertificate),
        (status = 400, description = "Not a key id, a bad subject or validity"),
        (status = 404, description = "No such key"),
        (status = 409, description = "The key is not active"),
        (status = 413, description = "The body is larger than allowed"),
        (status = 415, description = "A body that is not JSON"),
    ),
)]
async fn issue_key_certificate(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<FormatQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !is_manager(&caller) {
        return Err(deny(
            &app,
            &caller,
            "cert.issue",
            format!("key:{id}"),
            "certificates for token keys need the `admin` or `cert-manager` role",
        )
        .await);
    }
    let q = query(q)?;
    let id = key_id(&id)?;
    let body = body.map_err(body_error)?;
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        KeyCertBody::default()
    } else if content_type(&headers) == "application/json" {
        json_body::<KeyCertBody>(&body)?
    } else {
        return Err(unsupported_media(
            "send {\"subject\", \"validity_days\"} as application/json, or no body",
        ));
    };
    let (cert, receipt) = app
        .ca
        .issue_for_key(
            &caller.actor(),
            id,
            req.subject.as_deref(),
            req.validity_days,
        )
        .await?;
    Ok(certificate_response(
        StatusCode::CREATED,
        &cert,
        q.format,
        Some(receipt),
    ))
}

/// The active certificate of a ring key; any client may read it.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/certificate",
    tag = "api",
    params(("id" = String, Path, description = "The key's id (UUID)"), FormatQuery),
    responses(
        (status = 200, response = CertificateAnswer),
        (status = 400, description = "Not a key id"),
        (status = 404, description = "No such key, or no active certificate"),
    ),
)]
async fn get_key_certificate(
    State(app): State<App>,
    Path(id): Path<String>,
    q: Result<Query<FormatQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    // Any client may read it: a certificate is public, and verifiers of CMS signatures need it.
    let q = query(q)?;
    let id = key_id(&id)?;
    let cert = app
        .store
        .key_certificate(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("key {id} has no active certificate")))?;
    Ok(certificate_response(StatusCode::OK, &cert, q.format, None))
}

// ---------------------------------------------------------------------------------------------
// Public listener: CRL and OCSP.

/// The CRL (DER), signed by the CA: held and revoked certificates.
#[utoipa::path(
    get,
    path = "/crl.der",
    tag = "public",
    responses(
        (status = 200, description = "The current CRL", content_type = "application/pkix-crl", body = super::openapi::Binary),
        (status = 503, description = "The CRL cannot be made now (database or token)"),
    ),
)]
pub(super) async fn crl_der(State(app): State<App>) -> Result<Response, ApiError> {
    let crl = app.ca.crl().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pkix-crl"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crl.der,
    )
        .into_response())
}

/// The CRL (PEM).
#[utoipa::path(
    get,
    path = "/crl.pem",
    tag = "public",
    responses(
        (status = 200, description = "The current CRL", content_type = "application/x-pem-file", body = String),
        (status = 503, description = "The CRL cannot be made now (database or token)"),
    ),
)]
pub(super) async fn crl_pem(State(app): State<App>) -> Result<Response, ApiError> {
    let crl = app.ca.crl().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crl.pem,
    )
        .into_response())
}

/// The largest OCSP request body (the parser's own limit).
pub(super) const OCSP_MAX_BODY: usize = signet_certs::ocsp::OCSP_REQUEST_MAX_SIZE;

/// `POST /ocsp` with an `application/ocsp-request` body (RFC 6960 appendix A.1).
#[utoipa::path(
    post,
    path = "/ocsp",
    tag = "public",
    request_body(content = super::openapi::Binary, content_type = "application/ocsp-request"),
    responses(
        (status = 200, description = "An OCSP response (RFC 6960), signed by the responder", content_type = "application/ocsp-response", body = super::openapi::Binary),
        (status = 400, description = "A malformed request: the OCSP `malformedRequest` response, or a problem", content(
            (super::openapi::Binary = "application/ocsp-response"),
            (super::problem::Body = "application/problem+json"),
        )),
        (status = 503, description = "`tryLater`: the database or token is unavailable", content(
            (super::openapi::Binary = "application/ocsp-response"),
            (super::problem::Body = "application/problem+json"),
        )),
        (status = 413, description = "The request is larger than allowed"),
        (status = 415, description = "Not application/ocsp-request"),
    ),
)]
pub(super) async fn ocsp_post(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if content_type(&headers) != "application/ocsp-request" {
        return Err(unsupported_media(
            "send the OCSP request as application/ocsp-request",
        ));
    }
    let body = body.map_err(body_error)?;
    Ok(ocsp_answer(&app, &body).await)
}

/// `GET /ocsp/{base64 of the DER request, URL-encoded}` (RFC 6960 appendix A.1).
#[utoipa::path(
    get,
    path = "/ocsp/{request}",
    tag = "public",
    params(("request" = String, Path, description = "The DER request, base64, URL-encoded")),
    responses(
        (status = 200, description = "An OCSP response (RFC 6960), signed by the responder", content_type = "application/ocsp-response", body = super::openapi::Binary),
        (status = 400, description = "A malformed request: the OCSP `malformedRequest` response, or a problem", content(
            (super::openapi::Binary = "application/ocsp-response"),
            (super::problem::Body = "application/problem+json"),
        )),
        (status = 503, description = "`tryLater`: the database or token is unavailable", content(
            (super::openapi::Binary = "application/ocsp-response"),
            (super::problem::Body = "application/problem+json"),
        )),
    ),
)]
pub(super) async fn ocsp_get(
    State(app): State<App>,
    Path(encoded): Path<String>,
) -> Result<Response, ApiError> {
    let encoded = encoded.trim_matches('/');
    if encoded.len() > OCSP_MAX_BODY * 4 / 3 + 4 {
        return Ok(ocsp_malformed("the request is too large"));
    }
    let trimmed = encoded.trim_end_matches('=');
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed));
    match decoded {
        Ok(der) => Ok(ocsp_answer(&app, &der).await),
        Err(_) => Ok(ocsp_malformed("the request is not base64")),
    }
}

fn ocsp_malformed(why: &str) -> Response {
    tracing::debug!(reason = why, "malformed OCSP request");
    ocsp_http(
        StatusCode::BAD_REQUEST,
        signet_certs::ocsp_error_response(signet_certs::OcspErrorStatus::MalformedRequest),
    )
}

async fn ocsp_answer(app: &App, request: &[u8]) -> Response {
    let answer = app.ca.ocsp(request).await;
    let status = match &answer.outcome {
        OcspOutcome::Successful { .. } => StatusCode::OK,
        OcspOutcome::Malformed(why) => {
            tracing::debug!(reason = %why, "malformed OCSP request");
            StatusCode::BAD_REQUEST
        }
        OcspOutcome::TryLater => StatusCode::SERVICE_UNAVAILABLE,
        OcspOutcome::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = ocsp_http(status, answer.der.as_ref().clone());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn ocsp_http(status: StatusCode, der: Vec<u8>) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/ocsp-response"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        der,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(roles: &[&str]) -> Caller {
        Caller {
            account: "me".into(),
            subject: "CN=me".into(),
            serial: "01".into(),
            fingerprint: "ff".into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            not_after: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn policy() {
        let admin = caller(&["admin"]);
        let manager = caller(&["cert-manager"]);
        let auditor = caller(&["auditor"]);
        let signer = caller(&["signer:a"]);
        let plain = roles(&["signer:a", "signer:b"]);
        let high = roles(&["auditor"]);

        assert!(may_manage_account(&admin, &high));
        assert!(may_manage_account(&manager, &plain));
        assert!(may_manage_account(&manager, &[]));
        assert!(!may_manage_account(&manager, &high));
        assert!(!may_manage_account(&auditor, &plain));

        assert!(may_issue(&admin, &high, ProfileName::TlsServer));
        assert!(may_issue(&manager, &plain, ProfileName::MtlsClient));
        assert!(may_issue(&manager, &plain, ProfileName::DocumentSigner));
        assert!(!may_issue(&manager, &plain, ProfileName::TlsServer));
        assert!(!may_issue(&manager, &high, ProfileName::MtlsClient));
        assert!(!may_issue(&signer, &plain, ProfileName::MtlsClient));

        assert!(may_read(&auditor, "x"));
        assert!(may_read(&signer, "me"));
        assert!(!may_read(&signer, "x"));
    }
}
