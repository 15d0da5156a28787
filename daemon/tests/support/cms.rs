//! CMS checks by OpenSSL, shared by the CMS tests of the format layer and of the API.

use std::path::Path;
use std::process::Command;

use super::s;
use super::sign::write;

/// Runs openssl with `args`: (success, stdout, stderr).
pub fn openssl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `openssl cms -verify` of a detached signature against `content` and the CA. Document
/// signers carry extendedKeyUsage id-kp-documentSigning (RFC 9336), for which OpenSSL 3.0 has
/// no purpose; its default (`smimesign`) wants emailProtection, so the chain is checked with
/// `-purpose any` (chain, signature and validity are still checked).
///
/// OpenSSL 3.0 cannot verify (nor make) CMS Ed25519 signatures with signed attributes: its
/// CMS code hands the digest algorithm to EdDSA, which refuses it with "invalid digest"
/// (openssl/openssl#11915, #32248). When, and only when, OpenSSL fails that way, it checks
/// each part of the signature instead ([`openssl_checks_parts`]).
pub fn cms_verify(
    sig: &Path,
    inform: &str,
    content: &Path,
    ca: &Path,
    signer: &Path,
) -> (bool, String) {
    let (ok, out, err) = openssl(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        inform,
        "-in",
        s(sig),
        "-content",
        s(content),
        "-CAfile",
        s(ca),
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ]);
    let out = format!("{out}{err}");
    if ok || !out.contains("eddsa_digest_signverify_init:invalid digest") {
        return (ok, out);
    }
    match openssl_checks_parts(sig, inform, content, ca, signer) {
        Ok(()) => (
            true,
            "Verification successful (OpenSSL, part by part)".into(),
        ),
        Err(why) => (false, format!("verification failure: {why}")),
    }
}

/// An Ed25519 CMS signature checked by OpenSSL part by part: OpenSSL reads the file (PEM or
/// DER) and finds the signed attributes and the signature value in it (`asn1parse`); the
/// messageDigest attribute is `openssl dgst -sha512` of the content (RFC 8419: SHA-512); the
/// signature over the signed attributes (retagged as a SET, RFC 5652 §5.4) verifies with
/// the signer certificate's key (`pkeyutl -verify -rawin`); the signer certificate is
/// carried in the SignedData and chains to the CA (`openssl verify -purpose any`).
pub fn openssl_checks_parts(
    sig: &Path,
    inform: &str,
    content: &Path,
    ca: &Path,
    signer: &Path,
) -> Result<(), String> {
    let dir = sig.parent().unwrap();
    let der_path = dir.join("parts.der");
    let (ok, _, err) = openssl(&[
        "cms",
        "-cmsout",
        "-inform",
        inform,
        "-in",
        s(sig),
        "-outform",
        "DER",
        "-out",
        s(&der_path),
    ]);
    if !ok {
        return Err(format!("cms -cmsout: {err}"));
    }
    let der = std::fs::read(&der_path).unwrap();
    let (ok, parsed, err) = openssl(&["asn1parse", "-inform", "DER", "-in", s(&der_path)]);
    if !ok {
        return Err(format!("asn1parse: {err}"));
    }
    // "  off:d=N  hl=H l=  L cons: ..." → (offset, depth, header length, length, rest).
    let lines: Vec<(usize, usize, usize, usize, &str)> = parsed
        .lines()
        .map(|line| {
            let (off, rest) = line.trim_start().split_once(":d=").unwrap();
            let (depth, rest) = rest.split_once("hl=").unwrap();
            let (hl, rest) = rest.split_once(" l=").unwrap();
            let (len, rest) = rest.trim_start().split_once(' ').unwrap();
            let num = |x: &str| x.trim().parse::<usize>().unwrap();
            (num(off), num(depth), num(hl), num(len), rest)
        })
        .collect();
    // ContentInfo (0) → [0] (1) → SignedData (2) → SignerInfos (3) → SignerInfo (4) → [0].
    let &(off, _, hl, len, _) = lines
        .iter()
        .find(|l| l.1 == 5 && l.4.contains("cont [ 0 ]"))
        .ok_or("no signed attributes")?;
    let mut attrs = der[off..off + hl + len].to_vec();
    attrs[0] = 0x31;
    let last = lines.last().unwrap();
    let signature = last
        .4
        .split_once("[HEX DUMP]:")
        .filter(|_| last.1 == 5 && last.4.contains("OCTET STRING"))
        .ok_or("no signature value")?
        .1;
    let digest_at = lines
        .iter()
        .position(|l| l.4.contains(":messageDigest"))
        .ok_or("no messageDigest")?;
    let message_digest = lines[digest_at + 2]
        .4
        .split_once("[HEX DUMP]:")
        .ok_or("no messageDigest value")?
        .1;
    let (ok, content_digest, err) = openssl(&["dgst", "-sha512", "-r", s(content)]);
    if !ok {
        return Err(format!("dgst: {err}"));
    }
    let content_digest = content_digest.split(' ').next().unwrap().to_uppercase();
    if content_digest != message_digest.trim() {
        return Err("messageDigest is not the content's SHA-512".into());
    }
    let attrs_path = write(dir, "parts-attrs.der", &attrs);
    let sig_path = write(
        dir,
        "parts-sig.bin",
        &hex::decode(signature.trim()).unwrap(),
    );
    let (ok, pubkey, err) = openssl(&["x509", "-in", s(signer), "-noout", "-pubkey"]);
    if !ok {
        return Err(format!("x509 -pubkey: {err}"));
    }
    let pub_path = write(dir, "parts-pub.pem", pubkey.as_bytes());
    let (ok, out, err) = openssl(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        s(&pub_path),
        "-rawin",
        "-in",
        s(&attrs_path),
        "-sigfile",
        s(&sig_path),
    ]);
    if !ok || !out.contains("Signature Verified Successfully") {
        return Err(format!("pkeyutl -verify: {out}{err}"));
    }
    let (ok, carried, err) = openssl(&[
        "pkcs7",
        "-inform",
        "DER",
        "-in",
        s(&der_path),
        "-print_certs",
    ]);
    let signer_pem = std::fs::read_to_string(signer).unwrap();
    if !ok || !carried.contains(signer_pem.trim()) {
        return Err(format!("the signer certificate is not carried: {err}"));
    }
    let (ok, out, err) = openssl(&["verify", "-CAfile", s(ca), "-purpose", "any", s(signer)]);
    if !ok {
        return Err(format!("verify: {out}{err}"));
    }
    Ok(())
}
