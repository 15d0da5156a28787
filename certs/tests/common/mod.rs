//! Shared by the integration tests: software signers standing in for HSM keys, the `openssl`
//! runner, and a CA fixture. Each test file uses a part of it.
#![allow(dead_code)]

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use const_oid::db::rfc5912;
use der::EncodePem;
use p256::elliptic_curve::Generate;
use sha2::{Digest, Sha256};
use signature::hazmat::PrehashSigner;
use signet_certs::{
    AlgorithmIdentifierOwned, CertError, Certificate, IssuerUrls, SerialNumber, SignerError,
    SubjectPublicKeyInfoOwned, TbsSigner, Validity, issue, parse_name, self_signed_ca,
    serial_from_random, validity,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Software signers standing in for HSM keys.

/// A P-256 key that signs like an HSM doing CKM_ECDSA: hash with SHA-256, sign the digest,
/// DER-encode (r, s).
pub struct P256Signer {
    pub key: p256::ecdsa::SigningKey,
}

impl P256Signer {
    pub fn generate() -> Self {
        Self {
            key: p256::ecdsa::SigningKey::generate_from_rng(&mut rand::rng()),
        }
    }
}

impl TbsSigner for P256Signer {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        }
    }

    fn public_key(&self) -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned::from_key(self.key.verifying_key()).unwrap()
    }

    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, SignerError> {
        let digest = Sha256::digest(tbs);
        let signature: p256::ecdsa::Signature = self
            .key
            .sign_prehash(&digest)
            .map_err(|e| SignerError::with_source("ECDSA signing failed", e))?;
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

/// Claims one key but signs with another: what a misconfigured or faulty token would do.
pub struct LyingSigner {
    pub claimed: P256Signer,
    pub actual: P256Signer,
}

impl TbsSigner for LyingSigner {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        self.claimed.signature_algorithm()
    }

    fn public_key(&self) -> SubjectPublicKeyInfoOwned {
        self.claimed.public_key()
    }

    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.actual.sign(tbs)
    }
}

// ---------------------------------------------------------------------------------------------
// OpenSSL.

/// Runs `openssl` with explicit arguments (no shell) in `dir`. Fails the test if OpenSSL is
/// missing: it is the independent verifier, so its absence must not look like success.
pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    match Command::new("openssl").args(args).current_dir(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "the `openssl` binary was not found on PATH; these tests use it as the independent \
             verifier: install the `openssl` package (e.g. `apt-get install openssl`)"
        ),
        Err(e) => panic!("could not run openssl {args:?}: {e}"),
    }
}

/// Runs `openssl`, requires success, returns stdout.
pub fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let out = openssl(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `openssl`; returns whether it succeeded and everything it printed (stdout, then
/// stderr).
pub fn openssl_text(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = openssl(dir, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

pub const CA_NAME: &str = "CN=signetd test CA,O=signetd";

pub fn now_minus_skew() -> SystemTime {
    SystemTime::now() - Duration::from_secs(300)
}

pub fn ca_validity() -> Validity {
    validity(now_minus_skew(), Duration::from_secs(10 * 365 * 86_400)).unwrap()
}

pub fn leaf_validity() -> Validity {
    validity(now_minus_skew(), Duration::from_secs(86_400)).unwrap()
}

pub fn random_serial() -> SerialNumber {
    serial_from_random(rand::random())
}

pub fn make_ca(signer: &dyn TbsSigner, name: &str) -> Certificate {
    self_signed_ca(
        signer,
        &parse_name(name).unwrap(),
        ca_validity(),
        random_serial(),
    )
    .unwrap()
}

pub fn write_pem(dir: &Path, name: &str, cert: &Certificate) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, cert.to_pem(der::pem::LineEnding::LF).unwrap()).unwrap();
    path
}

pub fn subject_key() -> SubjectPublicKeyInfoOwned {
    P256Signer::generate().public_key()
}

/// A P-256 CA in a temporary directory, its certificate written to `ca.pem`.
pub struct Pki {
    pub dir: TempDir,
    pub ca_signer: P256Signer,
    pub ca: Certificate,
    pub urls: IssuerUrls,
}

pub fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_signer = P256Signer::generate();
    let ca = make_ca(&ca_signer, CA_NAME);
    write_pem(dir.path(), "ca.pem", &ca);
    Pki {
        dir,
        ca_signer,
        ca,
        urls: IssuerUrls {
            crl: Some("http://ca.signetd.example/ca.crl".to_owned()),
            ocsp: Some("http://ca.signetd.example/ocsp".to_owned()),
        },
    }
}

impl Pki {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn issue(
        &self,
        profile: &signet_certs::Profile,
        subject: &str,
        key: SubjectPublicKeyInfoOwned,
    ) -> Result<Certificate, CertError> {
        issue(
            &self.ca,
            &self.ca_signer,
            profile,
            parse_name(subject).unwrap(),
            key,
            random_serial(),
            leaf_validity(),
            &self.urls,
        )
    }
}
