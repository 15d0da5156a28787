//! pki::service: the certificate authority at run time — accounts, certificates issued from
//! CSRs, status changes (hold, release, revoke), the CRL and the OCSP responder.
//!
//! Every change is stored atomically with its audit entry (invariant 4) through
//! [`Audit::append_with`]; every signature is made by a key in the token through
//! `signet-certs`' signer trait, on a blocking thread. Who may do what is decided by `api::pki`;
//! this service checks what the request itself must satisfy.

mod crl;
mod ocsp;
mod tsa;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use der::{Decode as _, Encode as _};
use serde::{Deserialize, Serialize};
use signet_certs::{CertError, CsrLimits, IssuerUrls, Profile, SubjectPublicKeyInfoOwned};
use time::OffsetDateTime;
use uuid::Uuid;
use x509_cert::Certificate;

pub use ocsp::{OcspAnswer, OcspOutcome};
pub use tsa::TsaAnswer;

use super::HsmSigner;
use crate::audit::{Actor, Audit, AuditError, Receipt, Record};
use crate::config::{self, Config};
use crate::crypto;
use crate::hsm::{Hsm, HsmError, KeyAlgorithm};
use crate::metrics::Metrics;
use crate::store::pki::{self as sql, AccountRow, CertificateRow, DaemonKey};
use crate::store::{KeyRecord, NewCertificate, Store, StoreError};

/// Errors of the CA service, grouped by what the client should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The request is unacceptable; the message is safe to show (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// The named account, certificate or key does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state; the message is safe to show (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The audit log refused or failed; nothing was done (or the failure is logged).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The token could not sign a certificate, CRL or OCSP response.
    #[error("signing failed: {0}")]
    Signer(String),
    /// A certificate could not be made for a reason that is the operator's or a bug.
    #[error("certificate: {0}")]
    Cert(String),
}

impl From<CertError> for CaError {
    fn from(e: CertError) -> Self {
        match e {
            CertError::InvalidRequest(r) => CaError::BadRequest(r.to_string()),
            CertError::Signer(s) => CaError::Signer(s.to_string()),
            other => CaError::Cert(other.to_string()),
        }
    }
}

impl From<CaError> for crate::app::StartError {
    fn from(e: CaError) -> Self {
        crate::app::StartError::Pki(super::PkiError::Config(format!(
            "certificate authority: {e}"
        )))
    }
}

/// The certificate profiles a request may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileName {
    /// mTLS client of this API: keyUsage digitalSignature, EKU clientAuth; subject
    /// `CN=<account>`.
    MtlsClient,
    /// TLS server: EKU serverAuth, subjectAltName from `names`; subject `CN=<first name>`.
    TlsServer,
    /// Document signer: keyUsage digitalSignature and nonRepudiation, EKU documentSigning;
    /// subject `CN=<account>`.
    DocumentSigner,
}

impl ProfileName {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileName::MtlsClient => "mtls-client",
            ProfileName::TlsServer => "tls-server",
            ProfileName::DocumentSigner => "document-signer",
        }
    }
}

impl std::str::FromStr for ProfileName {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, CaError> {
        match s {
            "mtls-client" => Ok(ProfileName::MtlsClient),
            "tls-server" => Ok(ProfileName::TlsServer),
            "document-signer" => Ok(ProfileName::DocumentSigner),
            other => Err(CaError::BadRequest(format!(
                "unknown profile {other:?}: use mtls-client, tls-server or document-signer"
            ))),
        }
    }
}

/// Why a certificate is revoked for good (RFC 5280 CRLReason; certificateHold is what
/// deactivation uses, and removeFromCRL is what activation does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    /// No reason given.
    #[default]
    Unspecified,
    /// The private key is (suspected to be) compromised.
    KeyCompromise,
    /// The subject's name or other information changed.
    AffiliationChanged,
    /// Replaced by another certificate.
    Superseded,
    /// No longer needed.
    CessationOfOperation,
    /// A privilege in the certificate was withdrawn.
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// The RFC 5280 name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }
}

/// The reason code of a stored reason name (`certificateHold` included).
pub(crate) fn reason_from_str(name: &str) -> Option<signet_certs::Reason> {
    use signet_certs::Reason;
    Some(match name {
        "unspecified" => Reason::Unspecified,
        "keyCompromise" => Reason::KeyCompromise,
        "affiliationChanged" => Reason::AffiliationChanged,
        "superseded" => Reason::Superseded,
        "cessationOfOperation" => Reason::CessationOfOperation,
        "certificateHold" => Reason::CertificateHold,
        "privilegeWithdrawn" => Reason::PrivilegeWithdrawn,
        _ => return None,
    })
}

/// A status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    /// active → held (revoked with reason certificateHold).
    Deactivate,
    /// held → active (removeFromCRL).
    Activate,
    /// active or held → revoked, for good.
    Revoke(RevocationReason),
}

impl StatusChange {
    /// The audit action.
    pub fn action(self) -> &'static str {
        match self {
            StatusChange::Deactivate => "cert.deactivate",
            StatusChange::Activate => "cert.activate",
            StatusChange::Revoke(_) => "cert.revoke",
        }
    }
}

/// A request for a certificate from a CSR.
#[derive(Debug, Clone)]
pub struct CsrRequest {
    /// The profile.
    pub profile: ProfileName,
    /// The PKCS#10 request, PEM or DER, untrusted.
    pub csr: Vec<u8>,
    /// Lifetime in days (default: `ca.leaf_validity_days`).
    pub validity_days: Option<u32>,
    /// DNS names and IP addresses of a TLS server certificate (default: the names the CSR
    /// requests).
    pub names: Vec<String>,
}

/// Valid account names: what the `accounts.name` CHECK allows.
pub fn valid_account_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        })
}

/// Checks a role: `admin`, `cert-manager`, `auditor`, `timestamper` or `signer:<ring>` with a
/// valid ring name.
pub fn valid_role(role: &str) -> bool {
    match role {
        "admin" | "cert-manager" | "auditor" | "timestamper" => true,
        _ => role.strip_prefix("signer:").is_some_and(valid_account_name),
    }
}

/// A serial as given by a client (any case, optional colons, with or without leading zero
/// bytes, as OpenSSL prints it) in the stored form ([`crate::pki::serial_hex`]): the lower-case
/// hex of the DER INTEGER's content — no leading zero bytes, except the one a positive number
/// whose first byte has its high bit set needs (`85…` is stored as `0085…`).
pub fn normalize_serial(serial: &str) -> Option<String> {
    let mut s: String = serial
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if s.is_empty() || s.len() > 42 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if s.len() % 2 == 1 {
        s.insert(0, '0');
    }
    while s.len() > 2 && s.starts_with("00") {
        s.drain(..2);
    }
    if s.as_bytes()[0] >= b'8' {
        s.insert_str(0, "00");
    }
    Some(s)
}

/// The CA service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CaService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    hsm: Hsm,
    audit: Audit,
    metrics: Metrics,
    cfg: config::Ca,
    ca_cert: Certificate,
    /// The CA certificate, DER (time-stamp tokens carry it).
    ca_der: Vec<u8>,
    ca_signer: Arc<HsmSigner>,
    urls: IssuerUrls,
    /// One CRL signer per process at a time (the database lock covers other processes), so
    /// that a burst of status changes yields one new CRL, not one per change waiting in line.
    crl_gate: tokio::sync::Mutex<()>,
    ocsp: ocsp::Responder,
    tsa_cfg: config::Tsa,
    tsa: tsa::Tsa,
}

/// The audit actor for what the daemon does on its own (CRLs, the OCSP responder).
pub fn daemon_actor() -> Actor {
    Actor {
        fingerprint: String::new(),
        account: "signetd".into(),
    }
}

fn record(
    actor: &Actor,
    action: &str,
    subject: String,
    params: &serde_json::Value,
    output: Option<&[u8]>,
) -> Record {
    Record::ok(actor, action, subject, params, output)
}

/// The URLs of the CRL and the OCSP responder that go into issued certificates: under
/// `public_url`, or under the public listener's address when it is a fixed one.
pub fn issuer_urls(config: &Config) -> IssuerUrls {
    let base = match &config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None if config.listen.public.port() == 0 => {
            tracing::warn!(
                "the public listener has no fixed port and public_url is not set: issued \
                 certificates carry no CRL or OCSP URL"
            );
            return IssuerUrls::default();
        }
        None => config.public_base_url(),
    };
    IssuerUrls {
        crl: Some(format!("{base}/crl.der")),
        ocsp: Some(format!("{base}/ocsp")),
    }
}

impl CaService {
    /// Starts the service: checks the issuer URLs, sets up the OCSP responder (making or
    /// renewing the delegated responder certificate when configured), signs a first CRL if
    /// there is none, and starts the task that keeps the CRL fresh.
    pub async fn start(
        config: &Config,
        hsm: Hsm,
        store: Store,
        audit: Audit,
        metrics: Metrics,
        ca_signer: Arc<HsmSigner>,
        ca_der: &[u8],
    ) -> Result<CaService, CaError> {
        let ca_cert = Certificate::from_der(ca_der)
            .map_err(|e| CaError::Cert(format!("the stored CA certificate: {e}")))?;
        let urls = issuer_urls(config);
        // Refuse a public_url that cannot go into a certificate now, not at the first issuance.
        if let Some(url) = urls.crl.iter().chain(&urls.ocsp).find(|u| {
            !u.starts_with("http://") && !u.starts_with("https://")
                || !u.bytes().all(|b| b.is_ascii_graphic())
        }) {
            return Err(CaError::Cert(format!(
                "public_url gives {url:?}, which is not an http(s) URL of printable ASCII"
            )));
        }
        let service = CaService {
            inner: Arc::new(Inner {
                ocsp: ocsp::Responder::new(config.ca.ocsp_cache_entries),
                store,
                hsm,
                audit,
                metrics,
                cfg: config.ca.clone(),
                ca_cert,
                ca_der: ca_der.to_vec(),
                ca_signer,
                urls,
                crl_gate: tokio::sync::Mutex::new(()),
                tsa_cfg: config.tsa.clone(),
                tsa: tsa::Tsa::default(),
            }),
        };
        service.refresh_responder().await?;
        service.refresh_tsa().await?;
        if let Err(e) = service.publish_crl().await {
            tracing::error!(error = %e, "cannot sign the CRL now; retrying in the background");
        }
        let background = service.clone();
        tokio::spawn(async move { background.keep_fresh().await });
        Ok(service)
    }

    /// The CA certificate.
    pub fn ca_certificate(&self) -> &Certificate {
        &self.inner.ca_cert
    }

    /// Re-signs the CRL when needed and renews the delegated responder, every
    /// `ca.crl_check_secs`, for the life of the process.
    async fn keep_fresh(self) {
        let period = Duration::from_secs(self.inner.cfg.crl_check_secs.max(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = self.publish_crl().await {
                tracing::warn!(error = %e, "CRL re-signing failed; retrying");
            }
            if let Err(e) = self.refresh_responder().await {
                tracing::warn!(error = %e, "OCSP responder renewal failed; retrying");
            }
            if let Err(e) = self.refresh_tsa().await {
                tracing::warn!(error = %e, "TSA certificate renewal failed; retrying");
            }
        }
    }

    /// Creates an account without certificates.
    pub async fn create_account(
        &self,
        actor: &Actor,
        name: &str,
        roles: &[String],
    ) -> Result<(AccountRow, Receipt), CaError> {
        if !valid_account_name(name) {
            return Err(CaError::BadRequest(
                "an account name is 1 to 63 characters: lower-case letters, digits, '.', '_' \
                 and '-', starting with a letter or digit"
                    .into(),
            ));
        }
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        if let Some(bad) = roles.iter().find(|r| !valid_role(r)) {
            return Err(CaError::BadRequest(format!(
                "unknown role {bad:?}: roles are admin, cert-manager, auditor and signer:<ring>"
            )));
        }
        if self.inner.store.account(name).await?.is_some() {
            return Err(CaError::Conflict(format!(
                "an account named {name:?} exists (deleted accounts keep their names)"
            )));
        }
        let id = Uuid::new_v4();
        let rec = record(
            actor,
            "account.create",
            format!("account:{name}"),
            &serde_json::json!({ "name": name, "roles": roles }),
            None,
        );
        let (n, r) = (name.to_owned(), roles.clone());
        let receipt = self
            .inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| {
                    Box::pin(async move { sql::create_account(tx, id, &n, &r).await })
                }),
            )
            .await?;
        let account = AccountRow {
            id,
            name: name.to_owned(),
            roles,
            created_at: OffsetDateTime::now_utc(),
            deleted_at: None,
        };
        Ok((account, receipt))
    }

    /// Deletes an account: it keeps its name, and its certificates that are not revoked yet
    /// are revoked (cessationOfOperation). Returns the revoked serials.
    pub async fn delete_account(
        &self,
        actor: &Actor,
        account: &AccountRow,
    ) -> Result<(Vec<String>, Receipt), CaError> {
        if account.deleted_at.is_some() {
            return Err(CaError::Conflict(format!(
                "account {:?} is already deleted",
                account.name
            )));
        }
        let revoked: Vec<String> = self
            .inner
            .store
            .account_certificates(&account.name)
            .await?
            .into_iter()
            .filter(|c| c.status != "revoked")
            .map(|c| c.serial)
            .collect();
        let rec = record(
            actor,
            "account.delete",
            format!("account:{}", account.name),
            &serde_json::json!({ "name": account.name, "revoked": revoked,
                                 "reason": "cessationOfOperation" }),
            None,
        );
        let (n, expected) = (account.name.clone(), revoked.clone());
        let receipt = self
            .inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| {
                    Box::pin(async move { sql::delete_account(tx, &n, &expected).await })
                }),
            )
            .await?;
        self.inner
            .metrics
            .pki_status_changes
            .with_label_values(&["revoke"])
            .inc_by(revoked.len() as u64);
        if !revoked.is_empty() {
            self.crl_after_change().await;
        }
        Ok((revoked, receipt))
    }

    /// Issues a certificate for a live account from a CSR under a profile.
    pub async fn issue_from_csr(
        &self,
        actor: &Actor,
        account: &AccountRow,
        request: CsrRequest,
    ) -> Result<(CertificateRow, Receipt), CaError> {
        if account.deleted_at.is_some() {
            return Err(CaError::NotFound(format!(
                "account {:?} was deleted",
                account.name
            )));
        }
        let validity_days = self.validity_days(request.validity_days)?;
        let csr = signet_certs::parse_csr(&request.csr, CsrLimits::default())?;
        let (profile, subject, names) = match request.profile {
            ProfileName::MtlsClient => (
                Profile::MtlsClient,
                format!("CN={}", account.name),
                Vec::new(),
            ),
            ProfileName::DocumentSigner => (
                Profile::DocumentSigner,
                format!("CN={}", account.name),
                Vec::new(),
            ),
            ProfileName::TlsServer => {
                let names = if request.names.is_empty() {
                    let mut names: Vec<String> = csr
                        .requested_dns_names()
                        .into_iter()
                        .map(str::to_owned)
                        .collect();
                    names.extend(csr.requested_ip_addresses().iter().map(|ip| ip.to_string()));
                    names
                } else {
                    request.names.clone()
                };
                let (dns_names, ip_addresses) = split_names(&names);
                if names.is_empty() {
                    return Err(CaError::BadRequest(
                        "a tls-server certificate needs names (DNS names or IP addresses), in \
                         the request or in the CSR's subjectAltName"
                            .into(),
                    ));
                }
                if names.len() > 100 {
                    return Err(CaError::BadRequest("at most 100 names".into()));
                }
                let subject = match dns_names.first() {
                    Some(dns) => format!("CN={dns}"),
                    None => String::new(),
                };
                (
                    Profile::TlsServer {
                        dns_names,
                        ip_addresses,
                    },
                    subject,
                    names,
                )
            }
        };
        let spki = csr.public_key().clone();
        let spki_der = spki
            .to_der()
            .map_err(|e| CaError::Cert(format!("subject key: {e}")))?;
        let issued = self
            .sign_certificate(
                profile,
                request.profile.as_str(),
                &subject,
                spki,
                validity_days,
            )
            .await?;
        let rec = record(
            actor,
            "cert.issue",
            format!("cert:{}", issued.serial),
            &serde_json::json!({
                "account": account.name,
                "profile": request.profile.as_str(),
                "subject": subject,
                "names": names,
                "validity_days": validity_days,
                "public_key_sha256": crypto::sha256_hex(&spki_der),
            }),
            Some(&issued.der),
        );
        let (a, c) = (account.name.clone(), issued.clone());
        let receipt = self
            .inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| {
                    Box::pin(async move { sql::insert_certificate(tx, Some(&a), None, &c).await })
                }),
            )
            .await?;
        self.inner
            .metrics
            .pki_certificates_issued
            .with_label_values(&[request.profile.as_str()])
            .inc();
        Ok((
            row_of(&issued, Some(account), None, request.profile.as_str()),
            receipt,
        ))
    }

    /// Issues a document-signer certificate for a signing key held in the token. The CA trusts
    /// its own key table, so no CSR is needed: the subject key is the recorded public key.
    pub async fn issue_for_key(
        &self,
        actor: &Actor,
        key_id: Uuid,
        subject: Option<&str>,
        validity_days: Option<u32>,
    ) -> Result<(CertificateRow, Receipt), CaError> {
        let validity_days = self.validity_days(validity_days)?;
        let found = self
            .inner
            .store
            .certifiable_key(key_id)
            .await?
            .ok_or_else(|| CaError::NotFound(format!("no key {key_id}")))?;
        if found.purpose != "signing" {
            return Err(CaError::Conflict(format!(
                "key {key_id} is a {} key; only signing keys get document-signer certificates",
                found.purpose
            )));
        }
        if found.key.state != "active" {
            return Err(CaError::Conflict(format!(
                "key {key_id} is {}; only active keys get certificates",
                found.key.state
            )));
        }
        let subject = match subject {
            Some(s) => {
                let name = signet_certs::parse_name(s)?;
                if name.is_empty() {
                    return Err(CaError::BadRequest("the subject is empty".into()));
                }
                s.to_owned()
            }
            None => match &found.ring {
                Some(ring) => format!("CN=signetd signing key {key_id},OU={ring}"),
                None => format!("CN=signetd signing key {key_id}"),
            },
        };
        let spki = SubjectPublicKeyInfoOwned::from_der(&found.key.public_key)
            .map_err(|e| CaError::Cert(format!("the recorded public key: {e}")))?;
        let issued = self
            .sign_certificate(
                Profile::DocumentSigner,
                ProfileName::DocumentSigner.as_str(),
                &subject,
                spki,
                validity_days,
            )
            .await?;
        let rec = record(
            actor,
            "cert.issue",
            format!("cert:{}", issued.serial),
            &serde_json::json!({
                "key": key_id,
                "profile": ProfileName::DocumentSigner.as_str(),
                "subject": subject,
                "validity_days": validity_days,
                "public_key_sha256": found.key.fingerprint,
            }),
            Some(&issued.der),
        );
        let c = issued.clone();
        let receipt = self
            .inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| {
                    Box::pin(
                        async move { sql::insert_certificate(tx, None, Some(key_id), &c).await },
                    )
                }),
            )
            .await?;
        self.inner
            .metrics
            .pki_certificates_issued
            .with_label_values(&[ProfileName::DocumentSigner.as_str()])
            .inc();
        Ok((
            row_of(
                &issued,
                None,
                Some(key_id),
                ProfileName::DocumentSigner.as_str(),
            ),
            receipt,
        ))
    }

    /// The document-signer certificate that CMS signatures by token key `key_id` carry: its
    /// newest active certificate with at least an hour left, or one issued now (default
    /// subject and validity) under `actor`, with its audit entry. Read from the database on
    /// every call, so a certificate held or revoked anywhere is never used again.
    pub async fn signer_certificate(
        &self,
        actor: &Actor,
        key_id: Uuid,
    ) -> Result<Vec<u8>, CaError> {
        if let Some(c) = self.inner.store.key_certificate(key_id).await?
            && c.profile == ProfileName::DocumentSigner.as_str()
            && c.not_after > OffsetDateTime::now_utc() + time::Duration::hours(1)
        {
            return Ok(c.der);
        }
        let (row, _) = self.issue_for_key(actor, key_id, None, None).await?;
        Ok(row.der)
    }

    /// Holds, releases or revokes a certificate; then re-signs the CRL. A change that does not
    /// fit the current state is a conflict, and the daemon's own certificates cannot be
    /// changed here.
    pub async fn change_status(
        &self,
        actor: &Actor,
        cert: &CertificateRow,
        change: StatusChange,
    ) -> Result<(CertificateRow, Receipt), CaError> {
        let (from, to, reason): (&[&str], &str, Option<&str>) = match (change, cert.status.as_str())
        {
            (_, "revoked") => {
                return Err(CaError::Conflict(format!(
                    "certificate {} is revoked ({}); revocation is permanent",
                    cert.serial,
                    cert.revocation_reason.as_deref().unwrap_or("unspecified")
                )));
            }
            (StatusChange::Deactivate, "held") => {
                return Err(CaError::Conflict(format!(
                    "certificate {} is already deactivated",
                    cert.serial
                )));
            }
            (StatusChange::Activate, "active") => {
                return Err(CaError::Conflict(format!(
                    "certificate {} is already active",
                    cert.serial
                )));
            }
            (StatusChange::Deactivate, _) => (&["active"], "held", Some("certificateHold")),
            (StatusChange::Activate, _) => (&["held"], "active", None),
            (StatusChange::Revoke(r), _) => (&["active", "held"], "revoked", Some(r.as_str())),
        };
        if self
            .inner
            .store
            .daemon_serials()
            .await?
            .contains(&cert.serial)
        {
            return Err(CaError::Conflict(format!(
                "certificate {} belongs to the daemon itself (server TLS or OCSP responder); \
                 it is renewed, not revoked, here",
                cert.serial
            )));
        }
        let rec = record(
            actor,
            change.action(),
            format!("cert:{}", cert.serial),
            &serde_json::json!({ "serial": cert.serial, "from": cert.status, "to": to,
                                 "reason": reason }),
            None,
        );
        let serial = cert.serial.clone();
        let (to_owned, reason_owned) = (to.to_owned(), reason.map(str::to_owned));
        let receipt = self
            .inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| {
                    Box::pin(async move {
                        sql::change_status(tx, &serial, from, &to_owned, reason_owned.as_deref())
                            .await
                    })
                }),
            )
            .await?;
        let label = match change {
            StatusChange::Deactivate => "deactivate",
            StatusChange::Activate => "activate",
            StatusChange::Revoke(_) => "revoke",
        };
        self.inner
            .metrics
            .pki_status_changes
            .with_label_values(&[label])
            .inc();
        self.crl_after_change().await;
        let updated = self
            .inner
            .store
            .certificate(&cert.serial)
            .await?
            .ok_or_else(|| CaError::NotFound(format!("no certificate {}", cert.serial)))?;
        Ok((updated, receipt))
    }

    /// Re-signs the CRL after a status change. The change is committed whatever happens here;
    /// a failure is left to the background task, which retries within `ca.crl_check_secs`.
    async fn crl_after_change(&self) {
        if let Err(e) = self.publish_crl().await {
            tracing::error!(error = %e, "CRL re-signing after a status change failed; the background task retries");
        }
    }

    fn validity_days(&self, asked: Option<u32>) -> Result<u32, CaError> {
        let days = asked.unwrap_or(self.inner.cfg.leaf_validity_days);
        if days == 0 || days > self.inner.cfg.max_leaf_validity_days {
            return Err(CaError::BadRequest(format!(
                "validity_days must be between 1 and {}",
                self.inner.cfg.max_leaf_validity_days
            )));
        }
        Ok(days)
    }

    /// Signs a leaf certificate in the token (on a blocking thread): random 128-bit serial,
    /// notBefore five minutes back for slow clocks, CRL and OCSP URLs.
    async fn sign_certificate(
        &self,
        profile: Profile,
        profile_name: &'static str,
        subject: &str,
        spki: SubjectPublicKeyInfoOwned,
        validity_days: u32,
    ) -> Result<NewCertificate, CaError> {
        let subject_name = signet_certs::parse_name(subject)?;
        let not_before = SystemTime::now() - Duration::from_secs(300);
        let lifetime = Duration::from_secs(u64::from(validity_days) * 86_400);
        let validity = signet_certs::validity(not_before, lifetime)?;
        let serial = signet_certs::serial_from_random(random16()?);
        let (ca_cert, signer, urls) = (
            self.inner.ca_cert.clone(),
            self.inner.ca_signer.clone(),
            self.inner.urls.clone(),
        );
        let cert = blocking(move || {
            signet_certs::issue(
                &ca_cert,
                signer.as_ref(),
                &profile,
                subject_name,
                spki,
                serial,
                validity,
                &urls,
            )
        })
        .await??;
        let der = cert
            .to_der()
            .map_err(|e| CaError::Cert(format!("encoding: {e}")))?;
        let not_before = cert
            .tbs_certificate()
            .validity()
            .not_before
            .to_system_time();
        let not_after = cert.tbs_certificate().validity().not_after.to_system_time();
        Ok(NewCertificate {
            serial: super::serial_hex(&cert),
            profile: profile_name,
            subject: subject.to_owned(),
            fingerprint: crypto::sha256_hex(&der),
            der,
            not_before: OffsetDateTime::from(not_before),
            not_after: OffsetDateTime::from(not_after),
        })
    }
}

/// The stored row of a certificate just issued.
fn row_of(
    c: &NewCertificate,
    account: Option<&AccountRow>,
    key_id: Option<Uuid>,
    profile: &str,
) -> CertificateRow {
    CertificateRow {
        serial: c.serial.clone(),
        account: account.map(|a| a.name.clone()),
        account_roles: account.map(|a| a.roles.clone()).unwrap_or_default(),
        key_id,
        profile: profile.to_owned(),
        subject: c.subject.clone(),
        fingerprint: c.fingerprint.clone(),
        der: c.der.clone(),
        not_before: c.not_before,
        not_after: c.not_after,
        status: "active".into(),
        revocation_reason: None,
        status_changed_at: None,
        created_at: OffsetDateTime::now_utc(),
    }
}

/// Splits names into DNS names and IP addresses.
fn split_names(names: &[String]) -> (Vec<String>, Vec<std::net::IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in names {
        match name.parse::<std::net::IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(name.clone()),
        }
    }
    (dns, ips)
}

fn random16() -> Result<[u8; 16], CaError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| CaError::Cert(format!("no randomness: {e}")))?;
    Ok(b)
}

/// A key of the daemon's own (the delegated OCSP responder, the TSA) and its certificate.
#[derive(Debug)]
struct DaemonKeySpec {
    which: DaemonKey,
    algorithm: KeyAlgorithm,
    profile: Profile,
    profile_name: &'static str,
    subject: &'static str,
    validity_days: u32,
    /// The audit action of an issuance.
    action: &'static str,
}

impl CaService {
    /// Issues `spec`'s certificate for `key`, or for a new key of `spec.algorithm` made in the
    /// CA's token, and records both with their audit entry. Called under the CA signing lock.
    async fn renew_daemon_key(
        &self,
        spec: &DaemonKeySpec,
        key: Option<KeyRecord>,
    ) -> Result<sql::ResponderRow, CaError> {
        let (key, new_key) = match key {
            Some(k) if k.state == "active" => (k, false),
            _ => {
                let id = Uuid::new_v4();
                let label = format!("signetd-{}-{id}", spec.profile_name);
                let token = self.inner.cfg.token.clone();
                let (h, t, l, alg) = (
                    self.inner.hsm.clone(),
                    token.clone(),
                    label.clone(),
                    spec.algorithm,
                );
                let public_key = blocking(move || h.generate_key(&t, &l, alg)).await??;
                (
                    KeyRecord {
                        id,
                        token,
                        label,
                        algorithm: spec.algorithm,
                        fingerprint: crypto::sha256_hex(&public_key),
                        public_key,
                        state: "active".into(),
                    },
                    true,
                )
            }
        };
        let spki = SubjectPublicKeyInfoOwned::from_der(&key.public_key)
            .map_err(|e| CaError::Cert(format!("{} public key: {e}", spec.profile_name)))?;
        let days = spec.validity_days;
        let issued = self
            .sign_certificate(
                spec.profile.clone(),
                spec.profile_name,
                spec.subject,
                spki,
                days,
            )
            .await?;
        let rec = record(
            &daemon_actor(),
            spec.action,
            format!("cert:{}", issued.serial),
            &serde_json::json!({ "key": key.id, "new_key": new_key, "validity_days": days }),
            Some(&issued.der),
        );
        let (k, c, which) = (key.clone(), issued.clone(), spec.which);
        self.inner
            .audit
            .append_with(
                rec,
                Box::new(move |tx| {
                    Box::pin(async move { sql::set_daemon_key(tx, which, &k, new_key, &c).await })
                }),
            )
            .await?;
        tracing::info!(serial = %issued.serial, new_key, profile = spec.profile_name, "issued a certificate of the daemon's own");
        Ok(sql::ResponderRow {
            key,
            der: issued.der,
            not_after: issued.not_after,
            not_before: issued.not_before,
        })
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, CaError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CaError::Hsm(HsmError::Worker(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalized_like_openssl_prints_them() {
        assert_eq!(normalize_serial("0A:1B").as_deref(), Some("0a1b"));
        assert_eq!(normalize_serial("00FF").as_deref(), Some("00ff"));
        assert_eq!(normalize_serial("FF").as_deref(), Some("00ff"));
        assert_eq!(normalize_serial("00:00:7f").as_deref(), Some("7f"));
        assert_eq!(normalize_serial("85:01").as_deref(), Some("008501"));
        assert_eq!(normalize_serial("abc").as_deref(), Some("0abc"));
        assert_eq!(normalize_serial("00").as_deref(), Some("00"));
        assert_eq!(normalize_serial(""), None);
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(&"a".repeat(43)), None);
    }

    #[test]
    fn names_and_roles() {
        for good in ["alice", "a", "0svc", "web-1.prod_x"] {
            assert!(valid_account_name(good), "{good}");
        }
        for bad in ["", "Alice", "-a", ".a", "a b", "a/b", &"a".repeat(64)] {
            assert!(!valid_account_name(bad), "{bad:?}");
        }
        for good in ["admin", "cert-manager", "auditor", "signer:payments"] {
            assert!(valid_role(good), "{good}");
        }
        for bad in ["root", "signer:", "signer:Pay", "signer:*", "Admin"] {
            assert!(!valid_role(bad), "{bad:?}");
        }
    }

    #[test]
    fn reasons_round_trip() {
        for r in [
            RevocationReason::Unspecified,
            RevocationReason::KeyCompromise,
            RevocationReason::AffiliationChanged,
            RevocationReason::Superseded,
            RevocationReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn,
        ] {
            assert!(reason_from_str(r.as_str()).is_some());
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        assert_eq!(
            reason_from_str("certificateHold"),
            Some(signet_certs::Reason::CertificateHold)
        );
        assert_eq!(reason_from_str("removeFromCRL"), None);
    }
}
