//! pki: the certificate authority as a service — `signetd init` (CA key and certificate, the
//! server's TLS key and certificate, the first admin), with every signature made in the token
//! through the `signet-certs` signer trait.

pub mod service;

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use der::{Decode as _, Encode as _, EncodePem as _};
use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
use signet_certs::{IssuerUrls, Profile, TbsSigner};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use time::OffsetDateTime;
use x509_cert::Certificate;

use crate::audit::{Actor, Audit, AuditError, Record};
use crate::config::Config;
use crate::crypto::{self, SignInput, SignatureScheme};
use crate::hsm::{Hsm, HsmError, KeyAlgorithm, KeySlot};
use crate::metrics::Metrics;
use crate::store::{self, KeyPurpose, KeyRecord, NewCertificate, Store, StoreError};

/// Errors of the PKI service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Certificate building failed.
    #[error("certificate: {0}")]
    Cert(#[from] signet_certs::CertError),
    /// A file could not be written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The configuration does not allow the operation.
    #[error("{0}")]
    Config(String),
    /// The audit log refused or failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Stored material does not parse.
    #[error("stored certificate material is invalid: {0}")]
    Corrupt(String),
}

/// A token key seen through the `signet-certs` signer trait.
#[derive(Debug)]
pub struct HsmSigner {
    hsm: Hsm,
    key: Arc<KeySlot>,
    scheme: SignatureScheme,
    algorithm: AlgorithmIdentifierOwned,
    spki: SubjectPublicKeyInfoOwned,
}

impl HsmSigner {
    /// Wraps a key whose algorithm has a default scheme (EC or Ed25519).
    pub fn new(hsm: Hsm, key: Arc<KeySlot>) -> Result<Self, PkiError> {
        let scheme = key.algorithm().default_scheme().ok_or_else(|| {
            PkiError::Config(format!(
                "a {} key cannot sign certificates here; use ec-p256, ec-p384 or ed25519",
                key.algorithm()
            ))
        })?;
        let algorithm = scheme
            .algorithm_identifier()
            .map_err(|e| PkiError::Corrupt(e.to_string()))?;
        let spki = SubjectPublicKeyInfoOwned::from_der(key.public_key())
            .map_err(|e| PkiError::Corrupt(e.to_string()))?;
        Ok(HsmSigner {
            hsm,
            key,
            scheme,
            algorithm,
            spki,
        })
    }
}

impl TbsSigner for HsmSigner {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        self.algorithm.clone()
    }

    fn public_key(&self) -> SubjectPublicKeyInfoOwned {
        self.spki.clone()
    }

    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, signet_certs::SignerError> {
        self.hsm
            .sign_blocking(&self.key, self.scheme, SignInput::Message(tbs))
            .map_err(|e| signet_certs::SignerError::new(e.to_string()))
    }
}

/// What `init` did; empty when everything already existed.
#[derive(Debug, Default)]
pub struct InitReport {
    /// One line per change.
    pub actions: Vec<String>,
    /// Where the CA certificate was written.
    pub ca_file: PathBuf,
    /// Where the admin's certificate and key are (written now or at the first init).
    pub admin_cert: PathBuf,
    /// The admin's private key file.
    pub admin_key: PathBuf,
}

/// Creates what is missing: the CA key and certificate, the server key and certificate, and
/// the first admin account with a client certificate whose key is written (mode 0600) to
/// `out_dir`. Running it again changes nothing.
pub async fn init(
    cfg: &Config,
    hsm: &Hsm,
    store: &Store,
    metrics: &Metrics,
    out_dir: &Path,
) -> Result<InitReport, PkiError> {
    store.migrate().await?;
    create_dir(out_dir)?;
    let mut report = InitReport {
        ca_file: out_dir.join("ca.pem"),
        admin_cert: out_dir.join("admin.crt"),
        admin_key: out_dir.join("admin.key"),
        ..InitReport::default()
    };

    // The audit key comes first: everything after it is logged. Its own creation is logged as
    // soon as the log can be written.
    let (audit_key, new_audit_key) = match store.audit_key().await? {
        Some(key) => (key, false),
        None => {
            let key = new_token_key(hsm, &cfg.audit.token, "audit", KeyAlgorithm::Ed25519).await?;
            store.create_key(&key, KeyPurpose::Audit).await?;
            report.actions.push(format!(
                "created the audit checkpoint key (ed25519) in token `{}`",
                cfg.audit.token
            ));
            (key, true)
        }
    };
    let audit = Audit::start(
        store.clone(),
        hsm.clone(),
        &audit_key,
        cfg.audit.clone(),
        metrics.clone(),
    )
    .await?;
    if new_audit_key {
        audit
            .append(daemon_record(
                "audit.key.create",
                format!("key:{}", audit_key.label),
                serde_json::json!({ "token": cfg.audit.token, "algorithm": "ed25519" }),
                Some(&audit_key.public_key),
            ))
            .await?;
    }

    let (ca_key, ca_der) = match store.ca().await? {
        Some(found) => found,
        None => {
            let created = create_ca(cfg, hsm, &audit).await?;
            report.actions.push(format!(
                "created the CA key ({}) in token `{}` and the CA certificate \"{}\"",
                cfg.ca.algorithm, cfg.ca.token, cfg.ca.subject
            ));
            created
        }
    };
    let ca_cert = Certificate::from_der(&ca_der).map_err(|e| PkiError::Corrupt(e.to_string()))?;
    let ca_pem = ca_cert
        .to_pem(der::pem::LineEnding::LF)
        .map_err(|e| PkiError::Corrupt(e.to_string()))?;
    if std::fs::read_to_string(&report.ca_file).ok().as_deref() != Some(ca_pem.as_str()) {
        write_file(&report.ca_file, ca_pem.as_bytes(), 0o644)?;
        report.actions.push(format!(
            "wrote the CA certificate to {}",
            report.ca_file.display()
        ));
    }
    let ca_signer = ca_signer(hsm, &ca_key)?;

    if store.audit_key().await?.is_none() {
        let key = new_token_key(hsm, &cfg.audit.token, "audit", KeyAlgorithm::Ed25519).await?;
        store.create_key(&key, KeyPurpose::Audit).await?;
        report.actions.push(format!(
            "created the audit checkpoint key (ed25519) in token `{}`",
            cfg.audit.token
        ));
    }
    if let Some(action) = ensure_server_tls(cfg, hsm, store, &audit, &ca_cert, &ca_signer).await? {
        report.actions.push(action);
    }
    if !store.account_exists(&cfg.admin.name).await? {
        let issuer = Issuer {
            ca_cert: &ca_cert,
            ca_signer: &ca_signer,
            audit: &audit,
            urls: service::issuer_urls(cfg),
        };
        let action = create_client_account(
            &issuer,
            &cfg.admin.name,
            &["admin".to_owned()],
            cfg.admin.validity_days,
            &report.admin_cert,
            &report.admin_key,
        )
        .await?;
        report.actions.push(action);
    }
    Ok(report)
}

/// An entry for something the daemon did on its own (init, timers).
fn daemon_record(
    action: &str,
    subject: String,
    params: serde_json::Value,
    output: Option<&[u8]>,
) -> Record {
    let daemon = Actor {
        fingerprint: String::new(),
        account: "signetd".into(),
    };
    Record::ok(&daemon, action, subject, &params, output)
}

/// What issuing a certificate needs.
#[derive(Debug)]
pub struct Issuer<'a> {
    /// The CA certificate.
    pub ca_cert: &'a Certificate,
    /// The CA key.
    pub ca_signer: &'a Arc<HsmSigner>,
    /// The log every issuance is appended to.
    pub audit: &'a Audit,
    /// The CRL and OCSP URLs put into issued certificates.
    pub urls: IssuerUrls,
}

/// Creates an account with `roles` and a client certificate whose key is generated here, for
/// the operator, in software (a credential the operator carries, not a daemon key) and written
/// with mode 0600. The account and certificate are stored with their audit entry, atomically.
pub async fn create_client_account(
    issuer: &Issuer<'_>,
    name: &str,
    roles: &[String],
    validity_days: u32,
    cert_path: &Path,
    key_path: &Path,
) -> Result<String, PkiError> {
    let secret = loop {
        if let Ok(k) = p256::SecretKey::from_slice(random32()?.as_slice()) {
            break k;
        }
    };
    let spki = secret
        .public_key()
        .to_public_key_der()
        .map_err(|e| PkiError::Corrupt(e.to_string()))?;
    let issued = issue(
        issuer,
        Profile::MtlsClient,
        &format!("CN={name}"),
        spki.as_bytes(),
        validity_days,
        "mtls-client",
    )
    .await?;
    let key_pem = secret
        .to_pkcs8_pem(der::pem::LineEnding::LF)
        .map_err(|e| PkiError::Corrupt(e.to_string()))?;
    let cert_pem = Certificate::from_der(&issued.der)
        .and_then(|c| c.to_pem(der::pem::LineEnding::LF))
        .map_err(|e| PkiError::Corrupt(e.to_string()))?;
    // Files first, then the account: a failure in between leaves unused files that the next
    // run overwrites, never an account whose key is lost.
    write_file(key_path, key_pem.as_bytes(), 0o600)?;
    write_file(cert_path, cert_pem.as_bytes(), 0o644)?;
    let record = daemon_record(
        "account.create",
        format!("account:{name}"),
        serde_json::json!({ "name": name, "roles": roles, "serial": issued.serial }),
        Some(&issued.der),
    );
    let id = uuid::Uuid::new_v4();
    let (owned_name, owned_roles) = (name.to_owned(), roles.to_vec());
    issuer
        .audit
        .append_with(
            record,
            Box::new(move |tx| {
                Box::pin(async move {
                    store::create_account_with_certificate(
                        tx,
                        id,
                        &owned_name,
                        &owned_roles,
                        &issued,
                    )
                    .await
                })
            }),
        )
        .await?;
    Ok(format!(
        "created account `{name}` (roles {}) with a client certificate: {} and {}",
        roles.join(", "),
        cert_path.display(),
        key_path.display()
    ))
}

/// The CA key as a signer.
pub fn ca_signer(hsm: &Hsm, key: &KeyRecord) -> Result<Arc<HsmSigner>, PkiError> {
    let slot = hsm.key(&key.token, &key.label, key.algorithm)?;
    if slot.public_key() != key.public_key.as_slice() {
        return Err(PkiError::Corrupt(format!(
            "the CA key `{}` on token `{}` does not match the recorded public key",
            key.label, key.token
        )));
    }
    Ok(Arc::new(HsmSigner::new(hsm.clone(), slot)?))
}

async fn create_ca(
    cfg: &Config,
    hsm: &Hsm,
    audit: &Audit,
) -> Result<(KeyRecord, Vec<u8>), PkiError> {
    if cfg.ca.algorithm.default_scheme().is_none() {
        return Err(PkiError::Config(format!(
            "ca.algorithm = {} is not supported for the CA; use ec-p256, ec-p384 or ed25519",
            cfg.ca.algorithm
        )));
    }
    let subject = signet_certs::parse_name(&cfg.ca.subject)?;
    let key = new_token_key(hsm, &cfg.ca.token, "ca", cfg.ca.algorithm).await?;
    let signer = ca_signer(hsm, &key)?;
    let validity = signet_certs::validity(
        backdated_now(),
        Duration::from_secs(u64::from(cfg.ca.validity_days) * 86_400),
    )?;
    let serial = signet_certs::serial_from_random(random16()?);
    let cert =
        blocking(move || signet_certs::self_signed_ca(signer.as_ref(), &subject, validity, serial))
            .await??;
    let der = cert
        .to_der()
        .map_err(|e| PkiError::Corrupt(e.to_string()))?;
    let record = daemon_record(
        "ca.create",
        format!("key:{}", key.label),
        serde_json::json!({ "subject": cfg.ca.subject, "algorithm": cfg.ca.algorithm.as_str() }),
        Some(&der),
    );
    let (k, d) = (key.clone(), der.clone());
    audit
        .append_with(
            record,
            Box::new(move |tx| Box::pin(async move { store::create_ca(tx, &k, &d).await })),
        )
        .await?;
    tracing::info!(key = %key.label, "created the CA");
    Ok((key, der))
}

async fn ensure_server_tls(
    cfg: &Config,
    hsm: &Hsm,
    store: &Store,
    audit: &Audit,
    ca_cert: &Certificate,
    ca_signer: &Arc<HsmSigner>,
) -> Result<Option<String>, PkiError> {
    let existing = store.server_tls().await?;
    let (key, new_key, why) = match existing {
        Some((key, der, names)) => {
            let expiring = Certificate::from_der(&der)
                .ok()
                .map(|c| not_after(&c))
                .is_none_or(|t| t < SystemTime::now() + Duration::from_secs(30 * 86_400));
            if names == cfg.tls.names && !expiring {
                return Ok(None);
            }
            let why = if expiring {
                "expiring"
            } else {
                "names changed"
            };
            (key, false, why)
        }
        None => (
            new_token_key(hsm, &cfg.tls.token, "tls", KeyAlgorithm::EcP256).await?,
            true,
            "new",
        ),
    };
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    for name in &cfg.tls.names {
        match name.parse::<IpAddr>() {
            Ok(ip) => ip_addresses.push(ip),
            Err(_) => dns_names.push(name.clone()),
        }
    }
    let profile = Profile::TlsServer {
        dns_names,
        ip_addresses,
    };
    let subject = format!("CN={}", cfg.tls.names[0]);
    let issuer = Issuer {
        ca_cert,
        ca_signer,
        audit,
        urls: service::issuer_urls(cfg),
    };
    let issued = issue(
        &issuer,
        profile,
        &subject,
        &key.public_key,
        cfg.tls.validity_days,
        "tls-server",
    )
    .await?;
    let record = daemon_record(
        "tls.certificate.issue",
        format!("cert:{}", issued.serial),
        serde_json::json!({ "names": cfg.tls.names, "reason": why }),
        Some(&issued.der),
    );
    let names = cfg.tls.names.clone();
    audit
        .append_with(
            record,
            Box::new(move |tx| {
                Box::pin(
                    async move { store::set_server_tls(tx, &key, new_key, &issued, &names).await },
                )
            }),
        )
        .await?;
    Ok(Some(format!(
        "issued the server certificate for {} ({why})",
        cfg.tls.names.join(", ")
    )))
}

/// Issues a certificate for `spki_der` under `profile` and returns it ready to be stored.
async fn issue(
    issuer: &Issuer<'_>,
    profile: Profile,
    subject: &str,
    spki_der: &[u8],
    validity_days: u32,
    profile_name: &'static str,
) -> Result<NewCertificate, PkiError> {
    let subject_name = signet_certs::parse_name(subject)?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)
        .map_err(|e| PkiError::Corrupt(e.to_string()))?;
    let not_before = backdated_now();
    let lifetime = Duration::from_secs(u64::from(validity_days) * 86_400);
    let validity = signet_certs::validity(not_before, lifetime)?;
    let serial = signet_certs::serial_from_random(random16()?);
    let ca_cert = issuer.ca_cert.clone();
    let signer = issuer.ca_signer.clone();
    let urls = issuer.urls.clone();
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
        .map_err(|e| PkiError::Corrupt(e.to_string()))?;
    Ok(NewCertificate {
        serial: serial_hex(&cert),
        profile: profile_name,
        subject: subject.to_owned(),
        fingerprint: crypto::sha256_hex(&der),
        der,
        not_before: OffsetDateTime::from(not_before),
        not_after: OffsetDateTime::from(not_before + lifetime),
    })
}

/// Generates a key on a token, labelled `signetd-<purpose>-<uuid>`, and returns its record.
async fn new_token_key(
    hsm: &Hsm,
    token: &str,
    purpose: &str,
    algorithm: KeyAlgorithm,
) -> Result<KeyRecord, PkiError> {
    let id = uuid::Uuid::new_v4();
    let label = format!("signetd-{purpose}-{id}");
    let (h, t, l) = (hsm.clone(), token.to_owned(), label.clone());
    let public_key = blocking(move || h.generate_key(&t, &l, algorithm)).await??;
    Ok(KeyRecord {
        id,
        token: token.to_owned(),
        label,
        algorithm,
        fingerprint: crypto::sha256_hex(&public_key),
        public_key,
        state: "active".into(),
    })
}

/// The serial of a certificate as lower-case hex, the form stored and shown everywhere.
pub fn serial_hex(cert: &Certificate) -> String {
    hex::encode(cert.tbs_certificate().serial_number().as_bytes())
}

fn not_after(cert: &Certificate) -> SystemTime {
    cert.tbs_certificate().validity().not_after.to_system_time()
}

/// Now, minus five minutes for clients with slow clocks.
fn backdated_now() -> SystemTime {
    SystemTime::now() - Duration::from_secs(300)
}

fn random16() -> Result<[u8; 16], PkiError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| PkiError::Config(format!("no randomness: {e}")))?;
    Ok(b)
}

fn random32() -> Result<zeroize::Zeroizing<[u8; 32]>, PkiError> {
    let mut b = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(b.as_mut()).map_err(|e| PkiError::Config(format!("no randomness: {e}")))?;
    Ok(b)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PkiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PkiError::Hsm(HsmError::Worker(e.to_string())))
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|e| PkiError::Io {
        path: dir.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes a file with `mode`, replacing it, and enforces the mode on an existing file too.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt as _;
    let io = |e: std::io::Error| PkiError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}
