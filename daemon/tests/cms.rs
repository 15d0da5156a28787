//! Detached CMS SignedData made by keys in a real SoftHSM2 token (`formats::cms`), checked by
//! an independent implementation: `openssl cms -verify` accepts every signature (DER and PEM,
//! every key algorithm and hash) against the content and the CA, and refuses it once one
//! byte of the content changed. The CA is a token key too: a self-signed CA certificate and a
//! document-signer certificate per key (`signet_certs`, `Profile::DocumentSigner`), signed on
//! the token through `pki::HsmSigner` as the daemon issues them.
//!
//! OpenSSL runs with fixed arguments on files in a temporary directory. This binary holds one
//! test because SoftHSM2 reads SOFTHSM2_CONF once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use der::{Decode as _, Encode as _, pem::LineEnding};
use sha2::Digest as _;
use signet_certs::{Certificate, IssuerUrls, Profile, SubjectPublicKeyInfoOwned};
use signetd::crypto::{HashAlg, SignatureScheme};
use signetd::formats::cms::{CmsBuilder, CmsError, CmsSignature, MAX_CMS_LEN};
use signetd::hsm::{Hsm, KeyAlgorithm};
use signetd::pki::HsmSigner;
use time::OffsetDateTime;

use support::cms::{cms_verify, openssl};
use support::s;
use support::sign::write;

/// Streams `data` into the hash in uneven chunks, as the daemon hashes an upload.
fn streamed_digest(hash: HashAlg, data: &[u8]) -> Vec<u8> {
    fn run<D: sha2::Digest>(data: &[u8]) -> Vec<u8> {
        let mut d = D::new();
        let sizes = [1usize, 65_536, 7, 100_003];
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            d.update(&rest[..n]);
            rest = &rest[n..];
            i += 1;
        }
        d.finalize().to_vec()
    }
    match hash {
        HashAlg::Sha256 => run::<sha2::Sha256>(data),
        HashAlg::Sha384 => run::<sha2::Sha384>(data),
        HashAlg::Sha512 => run::<sha2::Sha512>(data),
    }
}

/// The digest a client computes of a file it sends only the digest of.
fn file_digest(hash: HashAlg, path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).unwrap();
    match hash {
        HashAlg::Sha256 => sha2::Sha256::digest(&data).to_vec(),
        HashAlg::Sha384 => sha2::Sha384::digest(&data).to_vec(),
        HashAlg::Sha512 => sha2::Sha512::digest(&data).to_vec(),
    }
}

/// A DER value as an attribute value.
fn any<T: der::Encode>(value: &T) -> der::Any {
    der::Any::from_der(&value.to_der().unwrap()).unwrap()
}

/// Replaces the values of the attribute of type `oid` with `value`.
fn set_value(
    attrs: &mut [x509_cert::attr::Attribute],
    oid: const_oid::ObjectIdentifier,
    value: der::Any,
) {
    let attr = attrs.iter_mut().find(|a| a.oid == oid).unwrap();
    attr.values = vec![value].try_into().unwrap();
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    der::pem::decode_vec(pem.as_bytes()).unwrap().1
}

/// A CA whose key is in the token.
struct Ca {
    signer: HsmSigner,
    cert: Certificate,
    der: Vec<u8>,
}

impl Ca {
    fn new(hsm: &Hsm) -> Ca {
        hsm.generate_key("signing", "cms-ca", KeyAlgorithm::EcP256)
            .unwrap();
        let slot = hsm.key("signing", "cms-ca", KeyAlgorithm::EcP256).unwrap();
        let signer = HsmSigner::new(hsm.clone(), slot).unwrap();
        let validity = signet_certs::validity(
            SystemTime::now() - Duration::from_secs(3600),
            Duration::from_secs(30 * 86_400),
        )
        .unwrap();
        let cert = signet_certs::self_signed_ca(
            &signer,
            &signet_certs::parse_name("CN=signetd CMS test CA,O=signetd").unwrap(),
            validity,
            signet_certs::serial_from_random([7; 16]),
        )
        .unwrap();
        let der = cert.to_der().unwrap();
        Ca { signer, cert, der }
    }

    /// A document-signer certificate for `spki` (DER).
    fn issue(&self, spki: &[u8], name: &str, serial: u8) -> Vec<u8> {
        let validity = signet_certs::validity(
            SystemTime::now() - Duration::from_secs(600),
            Duration::from_secs(7 * 86_400),
        )
        .unwrap();
        signet_certs::issue(
            &self.cert,
            &self.signer,
            &Profile::DocumentSigner,
            signet_certs::parse_name(&format!("CN={name},O=signetd")).unwrap(),
            SubjectPublicKeyInfoOwned::from_der(spki).unwrap(),
            signet_certs::serial_from_random([serial; 16]),
            validity,
            &IssuerUrls::default(),
        )
        .unwrap()
        .to_der()
        .unwrap()
    }
}

#[test]
fn token_keys_make_detached_cms_signatures_openssl_verifies() {
    let instance = support::Instance::new();
    let (hsm, _metrics) = instance.in_process_hsm();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();

    let ca = Ca::new(&hsm);
    let ca_pem = der::pem::encode_string("CERTIFICATE", LineEnding::LF, &ca.der).unwrap();
    let ca_path = write(dir, "ca.pem", ca_pem.as_bytes());

    // A few hundred KB of binary data (with CR, LF and NUL bytes: -binary must keep them).
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let data_path = write(dir, "data.bin", &data);
    let mut bad = data.clone();
    bad[150_000] ^= 0x01;
    let bad_path = write(dir, "data-bad.bin", &bad);

    let algorithms = [
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa4096,
    ];
    let mut spkis = Vec::new();
    for (n, alg) in algorithms.into_iter().enumerate() {
        let started = Instant::now();
        let label = format!("cms-{alg}");
        let spki = hsm.generate_key("signing", &label, alg).unwrap();
        let slot = hsm.key("signing", &label, alg).unwrap();
        let cert = ca.issue(&spki, &format!("signetd CMS test {alg}"), 0x10 + n as u8);
        let cert_path = write(
            dir,
            &format!("{alg}.pem"),
            der::pem::encode_string("CERTIFICATE", LineEnding::LF, &cert)
                .unwrap()
                .as_bytes(),
        );
        if n == 0 {
            // The profile's extendedKeyUsage is documentSigning only (hence `-purpose any`),
            // and OpenSSL's default purpose refuses it.
            let (ok, text, err) = openssl(&[
                "x509",
                "-in",
                s(&cert_path),
                "-noout",
                "-ext",
                "extendedKeyUsage",
            ]);
            assert!(ok, "{err}");
            assert!(text.contains("1.3.6.1.5.5.7.3.36"), "{text}");
        }
        spkis.push((alg, spki.clone()));

        let hashes: &[HashAlg] = match alg {
            KeyAlgorithm::Ed25519 => &[HashAlg::Sha512],
            _ => HashAlg::ALL,
        };
        for &hash in hashes {
            let signing_time = OffsetDateTime::now_utc();
            // Data mode: the caller hashes the upload while streaming it.
            let digest = streamed_digest(hash, &data);
            let sig = CmsBuilder::new(&cert, alg, hash, signing_time)
                .unwrap()
                .certificate(&ca.der)
                .unwrap()
                .finish(&digest, |scheme, input| {
                    hsm.sign_blocking(&slot, scheme, input)
                })
                .unwrap();
            let der_path = write(dir, &format!("{alg}-{hash}.der"), sig.to_der());
            let pem = sig.to_pem().unwrap();
            assert!(pem.starts_with("-----BEGIN CMS-----\n"), "{pem}");
            assert!(pem.ends_with("\n-----END CMS-----\n"), "{pem}");
            let pem_path = write(dir, &format!("{alg}-{hash}.pem"), pem.as_bytes());
            for (path, inform) in [(&der_path, "DER"), (&pem_path, "PEM")] {
                let (ok, out) = cms_verify(path, inform, &data_path, &ca_path, &cert_path);
                assert!(ok, "{alg} {hash} {inform}: openssl refused:\n{out}");
                assert!(out.contains("Verification successful"), "{out}");
                let (ok, out) = cms_verify(path, inform, &bad_path, &ca_path, &cert_path);
                assert!(
                    !ok,
                    "{alg} {hash} {inform}: openssl accepted changed content"
                );
                assert!(out.contains("verification failure"), "{out}");
            }
            if n == 0 && hash == HashAlg::Sha256 {
                // Without `-purpose any`, OpenSSL's S/MIME purpose refuses documentSigning.
                let (ok, _, err) = openssl(&[
                    "cms",
                    "-verify",
                    "-binary",
                    "-inform",
                    "DER",
                    "-in",
                    s(&der_path),
                    "-content",
                    s(&data_path),
                    "-CAfile",
                    s(&ca_path),
                    "-out",
                    "/dev/null",
                ]);
                assert!(
                    !ok && err.contains("unsuitable certificate purpose"),
                    "{err}"
                );
            }

            // OpenSSL's reading: the four signed attributes, the algorithms, the signer.
            let (ok, printed, err) = openssl(&[
                "cms",
                "-cmsout",
                "-print",
                "-inform",
                "DER",
                "-in",
                s(&der_path),
            ]);
            assert!(ok, "{err}");
            let oid_name = match hash {
                HashAlg::Sha256 => "sha256",
                HashAlg::Sha384 => "sha384",
                HashAlg::Sha512 => "sha512",
            };
            for expected in [
                "contentType",
                "messageDigest",
                "signingTime",
                "1.2.840.113549.1.9.52",
                "eContent: <ABSENT>",
                "issuerAndSerialNumber",
                oid_name,
            ] {
                assert!(
                    printed.contains(expected),
                    "{alg} {hash}: {expected} missing:\n{printed}"
                );
            }

            // Digest mode: the client hashed the file and sent only the digest. The same path,
            // the same verdict from OpenSSL.
            let client_digest = file_digest(hash, &data_path);
            assert_eq!(client_digest, digest);
            let sig2 = CmsBuilder::new(&cert, alg, hash, signing_time)
                .unwrap()
                .certificates([ca.der.as_slice()])
                .unwrap()
                .finish(&client_digest, |scheme, input| {
                    hsm.sign_blocking(&slot, scheme, input)
                })
                .unwrap();
            let path = write(dir, &format!("{alg}-{hash}-digest.der"), sig2.to_der());
            let (ok, out) = cms_verify(&path, "DER", &data_path, &ca_path, &cert_path);
            assert!(ok, "{alg} {hash} digest mode: {out}");
            let (ok, _) = cms_verify(&path, "DER", &bad_path, &ca_path, &cert_path);
            assert!(!ok);

            // Our own verification: DER and PEM read back, the right digest and key verify.
            for input in [sig.to_der(), pem.as_bytes()] {
                let parsed = CmsSignature::parse(input).unwrap();
                assert_eq!(parsed.to_der(), sig.to_der());
                assert_eq!(parsed.digest_algorithm(), hash);
                assert_eq!(parsed.message_digest(), digest.as_slice());
                assert!(parsed.signer().matches_certificate(&cert));
                assert!(!parsed.signer().matches_certificate(&ca.der));
                assert_eq!(
                    parsed.signer().serial_hex(),
                    format!("{:02x}", 0x10 + n).repeat(16)
                );
                assert_eq!(parsed.signer().issuer(), "CN=signetd CMS test CA,O=signetd");
                assert_eq!(parsed.certificates().len(), 2);
                assert_eq!(parsed.signer_certificate(), Some(cert.as_slice()));
                assert_eq!(
                    parsed.signing_time().unwrap().unix_timestamp(),
                    signing_time.unix_timestamp()
                );
                let verified = parsed.verify(&digest, &spki).unwrap();
                assert_eq!(verified.hash, hash);
                assert!(verified.scheme.fits(alg), "{:?}", verified.scheme);
                assert_eq!(&verified.signer, parsed.signer());
                // Another digest of the right length: refused.
                let mut wrong = digest.clone();
                wrong[0] ^= 0x80;
                assert!(matches!(
                    parsed.verify(&wrong, &spki),
                    Err(CmsError::DigestMismatch)
                ));
                assert!(matches!(
                    parsed.verify(&digest[1..], &spki),
                    Err(CmsError::DigestLength { .. })
                ));
            }
        }

        // The async route: prepare, the token signs on a token thread, complete.
        let hash = if alg == KeyAlgorithm::Ed25519 {
            HashAlg::Sha512
        } else {
            HashAlg::Sha384
        };
        let digest = hash.digest(&data);
        let pending = CmsBuilder::new(&cert, alg, hash, OffsetDateTime::now_utc())
            .unwrap()
            .prepare(&digest)
            .unwrap();
        let (scheme, input) = pending.request();
        assert_eq!(scheme, pending.scheme());
        match alg {
            KeyAlgorithm::Ed25519 => {
                assert_eq!(scheme, SignatureScheme::Ed25519);
                assert!(matches!(input, signetd::crypto::SignInputBuf::Message(_)));
            }
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
                assert!(matches!(scheme, SignatureScheme::Ecdsa(_, HashAlg::Sha384)));
                assert!(
                    matches!(input, signetd::crypto::SignInputBuf::Digest(ref d) if d.len() == 48)
                );
            }
            _ => {
                assert_eq!(scheme, SignatureScheme::RsaPkcs1(HashAlg::Sha384));
                assert!(
                    matches!(input, signetd::crypto::SignInputBuf::Digest(ref d) if d.len() == 48)
                );
            }
        }
        let token_sig = runtime.block_on(hsm.sign(&slot, scheme, input)).unwrap();
        let sig = pending.complete(&token_sig).unwrap();
        // Without the CA certificate in the SignedData: OpenSSL finds it in -CAfile.
        assert_eq!(
            CmsSignature::parse(sig.to_der())
                .unwrap()
                .certificates()
                .len(),
            1
        );
        let path = write(dir, &format!("{alg}-async.der"), sig.to_der());
        let (ok, out) = cms_verify(&path, "DER", &data_path, &ca_path, &cert_path);
        assert!(ok, "{alg} async: {out}");

        // Hostile input derived from a real signature: every truncation is refused; no
        // single-byte change panics, and every change of the signature value (the last
        // bytes) is refused. (Changes inside the carried certificates or the signer's name
        // are not covered by the signature and may still verify.)
        let der = sig.to_der().to_vec();
        for len in 0..der.len() {
            assert!(
                CmsSignature::parse(&der[..len]).is_err(),
                "{alg}: prefix {len}"
            );
        }
        let signature_from = der.len() - token_sig.len();
        assert_eq!(&der[signature_from..], token_sig.as_slice());
        for at in 0..der.len() {
            let mut changed = der.clone();
            changed[at] ^= 0x5a;
            let verdict = CmsSignature::parse(&changed).and_then(|p| p.verify(&digest, &spki));
            if at >= signature_from {
                assert!(
                    verdict.is_err(),
                    "{alg}: signature byte {at} changed, still verifies"
                );
            }
        }
        // The last byte is the signature value's: parses, does not verify.
        let mut changed = der.clone();
        *changed.last_mut().unwrap() ^= 0x01;
        let parsed = CmsSignature::parse(&changed).unwrap();
        assert!(matches!(
            parsed.verify(&digest, &spki),
            Err(CmsError::BadSignature)
        ));

        // Invariant 8: a bad token signature is refused, never serialised.
        let pending = CmsBuilder::new(&cert, alg, hash, OffsetDateTime::now_utc())
            .unwrap()
            .prepare(&digest)
            .unwrap();
        let mut forged = token_sig.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x01;
        assert!(matches!(
            pending.complete(&forged),
            Err(CmsError::BadSignature)
        ));
        eprintln!("{alg}: {:?}", started.elapsed());
    }

    // A signature verified with another key: a key of another type is unusable, one of the
    // same type does not verify.
    let rsa2048 = &spkis[0].1;
    let rsa4096 = &spkis[4].1;
    let p256 = &spkis[1].1;
    let rsa_cert = ca.issue(rsa2048, "signetd CMS test rsa again", 0x30);
    let slot = hsm
        .key("signing", "cms-rsa-2048", KeyAlgorithm::Rsa2048)
        .unwrap();
    let digest = HashAlg::Sha256.digest(&data);
    let sig = CmsBuilder::new(
        &rsa_cert,
        KeyAlgorithm::Rsa2048,
        HashAlg::Sha256,
        OffsetDateTime::now_utc(),
    )
    .unwrap()
    .finish(&digest, |scheme, input| {
        hsm.sign_blocking(&slot, scheme, input)
    })
    .unwrap();
    sig.verify(&digest, rsa2048).unwrap();
    assert!(matches!(
        sig.verify(&digest, rsa4096),
        Err(CmsError::BadSignature)
    ));
    assert!(matches!(
        sig.verify(&digest, p256),
        Err(CmsError::PublicKey(_))
    ));
    assert!(matches!(
        sig.verify(&digest, b"not a key"),
        Err(CmsError::PublicKey(_))
    ));

    // Signed attributes that lie are refused by `parse` (re-encoded SignedData; the
    // signature no longer matters, the structure is refused first).
    let rewrite = |edit: &dyn Fn(&mut Vec<x509_cert::attr::Attribute>)| -> Vec<u8> {
        use cms::content_info::ContentInfo;
        use cms::signed_data::{SignedData, SignerInfos};
        let mut ci = ContentInfo::from_der(sig.to_der()).unwrap();
        let mut sd = SignedData::from_der(&ci.content.to_der().unwrap()).unwrap();
        let mut si = sd.signer_infos.0.into_vec().remove(0);
        let mut attrs = si.signed_attrs.unwrap().into_vec();
        edit(&mut attrs);
        si.signed_attrs = Some(attrs.try_into().unwrap());
        sd.signer_infos = SignerInfos(vec![si].try_into().unwrap());
        ci.content = der::Any::from_der(&sd.to_der().unwrap()).unwrap();
        ci.to_der().unwrap()
    };
    use const_oid::db::{rfc5911, rfc6211};
    // Unchanged attributes: the rewrite itself is faithful.
    assert_eq!(rewrite(&|_| {}), sig.to_der());
    type Edit = Box<dyn Fn(&mut Vec<x509_cert::attr::Attribute>)>;
    let lies: [(&str, Edit); 6] = [
        (
            "protection names another digest",
            Box::new(|a| {
                // CMSAlgorithmProtection { sha512, [1] rsaEncryption NULL }; the SignerInfo
                // says sha256.
                let value =
                    hex::decode("301c300b0609608648016503040203a10d06092a864886f70d0101010500")
                        .unwrap();
                set_value(
                    a,
                    rfc6211::ID_AA_CMS_ALGORITHM_PROTECTION,
                    der::Any::from_der(&value).unwrap(),
                )
            }),
        ),
        (
            "protection without signatureAlgorithm",
            Box::new(|a| {
                let only_digest = hex::decode("300b0609608648016503040201").unwrap();
                let seq = [&[0x30, only_digest.len() as u8][..], &only_digest].concat();
                set_value(
                    a,
                    rfc6211::ID_AA_CMS_ALGORITHM_PROTECTION,
                    der::Any::from_der(&seq).unwrap(),
                )
            }),
        ),
        (
            "contentType is not id-data",
            Box::new(|a| set_value(a, rfc5911::ID_CONTENT_TYPE, any(&rfc5911::ID_SIGNED_DATA))),
        ),
        (
            "messageDigest too short",
            Box::new(|a| {
                let short = der::asn1::OctetString::new(vec![0u8; 20]).unwrap();
                set_value(a, rfc5911::ID_MESSAGE_DIGEST, any(&short))
            }),
        ),
        (
            "no messageDigest",
            Box::new(|a| a.retain(|x| x.oid != rfc5911::ID_MESSAGE_DIGEST)),
        ),
        (
            "two messageDigest values",
            Box::new(|a| {
                let attr = a
                    .iter_mut()
                    .find(|x| x.oid == rfc5911::ID_MESSAGE_DIGEST)
                    .unwrap();
                let other = der::asn1::OctetString::new(vec![1u8; 32]).unwrap();
                attr.values.insert(any(&other)).unwrap();
            }),
        ),
    ];
    for (what, edit) in &lies {
        let der = rewrite(edit.as_ref());
        assert!(
            matches!(CmsSignature::parse(&der), Err(CmsError::BadAttributes(_))),
            "{what}: {:?}",
            CmsSignature::parse(&der)
        );
    }

    // Refusals before anything reaches the token.
    let never = |_: SignatureScheme,
                 _: signetd::crypto::SignInput<'_>|
     -> Result<Vec<u8>, signetd::hsm::HsmError> {
        panic!("the token must not be asked")
    };
    let ed_cert = ca.issue(&spkis[3].1, "signetd CMS test ed25519 again", 0x31);
    let now = OffsetDateTime::now_utc();
    for hash in [HashAlg::Sha256, HashAlg::Sha384] {
        assert!(matches!(
            CmsBuilder::new(&ed_cert, KeyAlgorithm::Ed25519, hash, now),
            Err(CmsError::UnsupportedHash { .. })
        ));
    }
    assert!(matches!(
        CmsBuilder::new(&ed_cert, KeyAlgorithm::EcP256, HashAlg::Sha256, now),
        Err(CmsError::KeyMismatch { .. })
    ));
    assert!(matches!(
        CmsBuilder::new(&rsa_cert, KeyAlgorithm::EcP384, HashAlg::Sha384, now),
        Err(CmsError::KeyMismatch { .. })
    ));
    assert!(matches!(
        CmsBuilder::new(
            b"not a certificate",
            KeyAlgorithm::EcP256,
            HashAlg::Sha256,
            now
        ),
        Err(CmsError::Certificate(_))
    ));
    assert!(matches!(
        CmsBuilder::new(
            &rsa_cert,
            KeyAlgorithm::Rsa2048,
            HashAlg::Sha256,
            now - time::Duration::days(1)
        ),
        Err(CmsError::CertificateNotValid)
    ));
    assert!(matches!(
        CmsBuilder::new(&rsa_cert, KeyAlgorithm::Rsa2048, HashAlg::Sha256, now)
            .unwrap()
            .finish(&digest[..31], never),
        Err(CmsError::DigestLength {
            expected: 32,
            actual: 31,
            ..
        })
    ));
    assert!(matches!(
        CmsBuilder::new(&rsa_cert, KeyAlgorithm::Rsa2048, HashAlg::Sha256, now)
            .unwrap()
            .certificate(b"\x30\x03\x02\x01\x01"),
        Err(CmsError::Certificate(_))
    ));

    // Garbage is refused with typed errors.
    for garbage in [
        &b""[..],
        b"\x00",
        b"\x30",
        b"\x30\x80\x00\x00",
        b"\x30\x84\xff\xff\xff\xff",
        b"hello world",
        b"-----BEGIN CMS-----\nAAAA\n-----END CMS-----\n",
        b"-----BEGIN CMS-----\n!!!!\n-----END CMS-----\n",
        b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        b"\x30\x03\x06\x01\x00",
    ] {
        let err = CmsSignature::parse(garbage).unwrap_err();
        assert!(
            matches!(err, CmsError::Malformed(_) | CmsError::Unsupported(_)),
            "{garbage:?}: {err:?}"
        );
    }
    // Deeply nested constructed values: a decoding error, no stack overflow.
    let mut nested = Vec::new();
    for _ in 0..100_000 {
        nested.extend_from_slice(&[0x30, 0x80]);
    }
    assert!(CmsSignature::parse(&nested).is_err());
    assert!(matches!(
        CmsSignature::parse(&vec![0x30; MAX_CMS_LEN + 1]),
        Err(CmsError::TooLarge { .. })
    ));
    // A certificate is not a CMS signature, nor is a certs-only SignedData without signers.
    assert!(CmsSignature::parse(&ca.der).is_err());
    let (ok, _, err) = openssl(&[
        "crl2pkcs7",
        "-nocrl",
        "-certfile",
        s(&ca_path),
        "-outform",
        "DER",
        "-out",
        s(&dir.join("certs-only.p7b")),
    ]);
    assert!(ok, "{err}");
    let certs_only = std::fs::read(dir.join("certs-only.p7b")).unwrap();
    assert!(matches!(
        CmsSignature::parse(&certs_only),
        Err(CmsError::Unsupported(_))
    ));

    // Signatures OpenSSL made with software keys verify here too (interoperability of the
    // verifier), and an attached one is refused as not detached.
    for (name, keygen) in [
        (
            "ec",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
        ("rsa", &["-newkey", "rsa:2048"][..]),
    ] {
        let key = dir.join(format!("ossl-{name}.key"));
        let crt = dir.join(format!("ossl-{name}.crt"));
        let mut args = vec![
            "req",
            "-x509",
            "-nodes",
            "-subj",
            "/CN=openssl signer",
            "-days",
            "2",
        ];
        args.extend_from_slice(keygen);
        args.extend_from_slice(&["-keyout", s(&key), "-out", s(&crt)]);
        let (ok, _, err) = openssl(&args);
        assert!(ok, "{err}");
        let out = dir.join(format!("ossl-{name}.der"));
        let (ok, _, err) = openssl(&[
            "cms",
            "-sign",
            "-binary",
            "-in",
            s(&data_path),
            "-signer",
            s(&crt),
            "-inkey",
            s(&key),
            "-md",
            "sha384",
            "-outform",
            "DER",
            "-out",
            s(&out),
        ]);
        assert!(ok, "{err}");
        let (ok, pubkey, err) = openssl(&["x509", "-in", s(&crt), "-noout", "-pubkey"]);
        assert!(ok, "{err}");
        let spki = pem_to_der(&pubkey);
        let parsed = CmsSignature::parse(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(parsed.digest_algorithm(), HashAlg::Sha384);
        let digest = file_digest(HashAlg::Sha384, &data_path);
        parsed.verify(&digest, &spki).unwrap();
        assert!(matches!(
            parsed.verify(&file_digest(HashAlg::Sha384, &bad_path), &spki),
            Err(CmsError::DigestMismatch)
        ));
        let crt_der = pem_to_der(&std::fs::read_to_string(&crt).unwrap());
        assert!(parsed.signer().matches_certificate(&crt_der));

        let attached = dir.join(format!("ossl-{name}-attached.der"));
        let (ok, _, err) = openssl(&[
            "cms",
            "-sign",
            "-nodetach",
            "-binary",
            "-in",
            s(&data_path),
            "-signer",
            s(&crt),
            "-inkey",
            s(&key),
            "-outform",
            "DER",
            "-out",
            s(&attached),
        ]);
        assert!(ok, "{err}");
        assert!(matches!(
            CmsSignature::parse(&std::fs::read(&attached).unwrap()),
            Err(CmsError::Unsupported(_))
        ));
    }
}
