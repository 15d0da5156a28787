//! tls: the API listener's rustls configuration — the server key stays in the token and signs
//! handshakes through `rustls::sign::SigningKey`; clients must present a certificate that
//! chains to the daemon's CA. Revocation is checked per request by the API, not here, because
//! resumed sessions skip certificate verification.

use std::sync::{Arc, RwLock};

use rustls::SignatureScheme as TlsScheme;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls_pki_types::CertificateDer;

use crate::crypto::{EcCurve, HashAlg, SignInput, SignatureScheme};
use crate::hsm::{Hsm, KeyAlgorithm, KeySlot};

/// Errors while building the TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A token key seen by rustls.
#[derive(Debug)]
struct TokenKey {
    hsm: Hsm,
    key: Arc<KeySlot>,
    /// The TLS schemes this key signs, most preferred first.
    schemes: &'static [(TlsScheme, SignatureScheme)],
}

/// The TLS signature schemes of a key, most preferred first, and the daemon's scheme behind
/// each. TLS 1.3 binds the ECDSA curve to the hash, so an EC key offers its one scheme; an RSA
/// key offers PSS (the only RSA padding of TLS 1.3) before PKCS#1 v1.5 (TLS 1.2 clients).
fn tls_schemes(algorithm: KeyAlgorithm) -> &'static [(TlsScheme, SignatureScheme)] {
    use HashAlg::{Sha256, Sha384, Sha512};
    match algorithm {
        KeyAlgorithm::EcP256 => &[(
            TlsScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::Ecdsa(EcCurve::P256, Sha256),
        )],
        KeyAlgorithm::EcP384 => &[(
            TlsScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::Ecdsa(EcCurve::P384, Sha384),
        )],
        KeyAlgorithm::Ed25519 => &[(TlsScheme::ED25519, SignatureScheme::Ed25519)],
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => &[
            (TlsScheme::RSA_PSS_SHA256, SignatureScheme::RsaPss(Sha256)),
            (TlsScheme::RSA_PSS_SHA384, SignatureScheme::RsaPss(Sha384)),
            (TlsScheme::RSA_PSS_SHA512, SignatureScheme::RsaPss(Sha512)),
            (
                TlsScheme::RSA_PKCS1_SHA256,
                SignatureScheme::RsaPkcs1(Sha256),
            ),
            (
                TlsScheme::RSA_PKCS1_SHA384,
                SignatureScheme::RsaPkcs1(Sha384),
            ),
            (
                TlsScheme::RSA_PKCS1_SHA512,
                SignatureScheme::RsaPkcs1(Sha512),
            ),
        ],
    }
}

impl SigningKey for TokenKey {
    fn choose_scheme(&self, offered: &[TlsScheme]) -> Option<Box<dyn Signer>> {
        let (tls_scheme, scheme) = self.schemes.iter().find(|(tls, _)| offered.contains(tls))?;
        Some(Box::new(TokenSigner {
            hsm: self.hsm.clone(),
            key: self.key.clone(),
            scheme: *scheme,
            tls_scheme: *tls_scheme,
        }))
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        match self.key.algorithm() {
            KeyAlgorithm::Ed25519 => rustls::SignatureAlgorithm::ED25519,
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => rustls::SignatureAlgorithm::ECDSA,
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                rustls::SignatureAlgorithm::RSA
            }
        }
    }
}

#[derive(Debug)]
struct TokenSigner {
    hsm: Hsm,
    key: Arc<KeySlot>,
    scheme: SignatureScheme,
    tls_scheme: TlsScheme,
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let sign = || {
            self.hsm
                .sign_blocking(&self.key, self.scheme, SignInput::Message(message))
                .map_err(|e| rustls::Error::General(format!("token signature: {e}")))
        };
        // The handshake runs on a runtime worker; let the runtime move other tasks away while
        // the token works.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(sign)
            }
            _ => sign(),
        }
    }

    fn scheme(&self) -> TlsScheme {
        self.tls_scheme
    }
}

/// The server certificate and key that handshakes use. `SIGHUP` swaps in a re-issued
/// certificate (or a new key) without a restart; connections already open keep theirs.
#[derive(Debug)]
pub struct CertResolver(RwLock<Arc<CertifiedKey>>);

impl CertResolver {
    /// Replaces the certificate chain and key for new handshakes.
    pub fn set(&self, hsm: &Hsm, key: Arc<KeySlot>, server_cert: &[u8], ca_cert: &[u8]) {
        let certified = certified_key(hsm, key, server_cert, ca_cert);
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = certified;
    }
}

impl rustls::server::ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn certified_key(
    hsm: &Hsm,
    key: Arc<KeySlot>,
    server_cert: &[u8],
    ca_cert: &[u8],
) -> Arc<CertifiedKey> {
    let signing_key = Arc::new(TokenKey {
        hsm: hsm.clone(),
        schemes: tls_schemes(key.algorithm()),
        key,
    });
    let chain = vec![
        CertificateDer::from(server_cert.to_vec()),
        CertificateDer::from(ca_cert.to_vec()),
    ];
    Arc::new(CertifiedKey::new(chain, signing_key))
}

/// The API listener's configuration: server certificate chain (server, CA) with its key in the
/// token, client certificates required and verified against the CA, ALPN h2 and http/1.1.
/// The returned resolver swaps the certificate at run time.
pub fn server_config(
    hsm: &Hsm,
    key: Arc<KeySlot>,
    server_cert: &[u8],
    ca_cert: &[u8],
) -> Result<(Arc<rustls::ServerConfig>, Arc<CertResolver>), TlsError> {
    let err = |e: &dyn std::fmt::Display| TlsError::Config(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_cert.to_vec()))
        .map_err(|e| err(&e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| err(&e))?;
    let resolver = Arc::new(CertResolver(RwLock::new(certified_key(
        hsm,
        key,
        server_cert,
        ca_cert,
    ))));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), resolver))
}
