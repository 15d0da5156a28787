//! hsm::keys: key algorithms, the generation templates (sensitive, never extractable) and the
//! public key read back from the token as a SubjectPublicKeyInfo.

use std::fmt;
use std::str::FromStr;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use der::Decode as _;
use ed25519_dalek::pkcs8::EncodePublicKey as _;
use serde::{Deserialize, Serialize};

use crate::crypto::SignatureScheme;

use super::HsmError;

/// DER of the namedCurve OID for P-256 (1.2.840.10045.3.1.7).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the namedCurve OID for P-384 (1.3.132.0.34).
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of the OID id-Ed25519 (1.3.101.112), accepted by SoftHSM2 as CKA_EC_PARAMS.
const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// The key algorithms the daemon generates and uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// RSA, 2048-bit modulus.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// RSA, 3072-bit modulus.
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    /// RSA, 4096-bit modulus.
    #[serde(rename = "rsa-4096")]
    Rsa4096,
    /// ECDSA on NIST P-256.
    #[serde(rename = "ec-p256")]
    EcP256,
    /// ECDSA on NIST P-384.
    #[serde(rename = "ec-p384")]
    EcP384,
    /// Ed25519.
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl KeyAlgorithm {
    /// Every algorithm.
    pub const ALL: &'static [KeyAlgorithm] = &[
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Ed25519,
    ];

    /// The stable name used in configuration, the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
            KeyAlgorithm::EcP256 => "ec-p256",
            KeyAlgorithm::EcP384 => "ec-p384",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// The scheme used when this key signs certificates, TLS handshakes and checkpoints, and
    /// when a signing request names neither hash nor padding: RSA → PKCS#1 v1.5 with SHA-256,
    /// P-256 → ECDSA with SHA-256, P-384 → ECDSA with SHA-384, Ed25519 → pure Ed25519. Every
    /// algorithm has one; the `Option` stays for algorithms that may come without.
    pub fn default_scheme(self) -> Option<SignatureScheme> {
        SignatureScheme::for_key(self, None, None).ok()
    }

    fn rsa_bits(self) -> Option<u64> {
        match self {
            KeyAlgorithm::Rsa2048 => Some(2048),
            KeyAlgorithm::Rsa3072 => Some(3072),
            KeyAlgorithm::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// The generation mechanism and the public and private templates. The private key is
    /// always a token object, private, sensitive, never extractable, and may only sign
    /// (invariant 1). `token_object = false` makes session keys (benchmarks).
    pub(crate) fn templates(
        self,
        label: &str,
        id: &[u8],
        token_object: bool,
    ) -> (Mechanism<'static>, Vec<Attribute>, Vec<Attribute>) {
        let mut public = vec![
            Attribute::Token(token_object),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let private = vec![
            Attribute::Token(token_object),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let mechanism = match self {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let bits = self.rsa_bits().unwrap_or(2048);
                public.push(Attribute::ModulusBits(bits.into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
            KeyAlgorithm::EcP256 => {
                public.push(Attribute::EcParams(P256_PARAMS.to_vec()));
                Mechanism::EccKeyPairGen
            }
            KeyAlgorithm::EcP384 => {
                public.push(Attribute::EcParams(P384_PARAMS.to_vec()));
                Mechanism::EccKeyPairGen
            }
            KeyAlgorithm::Ed25519 => {
                public.push(Attribute::EcParams(ED25519_PARAMS.to_vec()));
                Mechanism::EccEdwardsKeyPairGen
            }
        };
        (mechanism, public, private)
    }

    /// Attributes to read from the public key object to rebuild its SPKI.
    pub(crate) fn public_attributes(self) -> &'static [AttributeType] {
        match self {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                &[AttributeType::Modulus, AttributeType::PublicExponent]
            }
            _ => &[AttributeType::EcPoint],
        }
    }

    /// Builds the SubjectPublicKeyInfo DER from the public key's attributes. Also validates the
    /// key (a point on the curve, a modulus of the right size).
    pub(crate) fn spki_from_attributes(self, attrs: &[Attribute]) -> Result<Vec<u8>, HsmError> {
        let bad = |why: &str| HsmError::Rejected(format!("public key of {self}: {why}"));
        let ec_point = || {
            attrs.iter().find_map(|a| match a {
                Attribute::EcPoint(p) => Some(unwrap_octet_string(p)),
                _ => None,
            })
        };
        let der = match self {
            KeyAlgorithm::EcP256 => {
                let point = ec_point().ok_or_else(|| bad("no CKA_EC_POINT"))?;
                let key = p256::PublicKey::from_sec1_bytes(&point).map_err(|_| bad("bad point"))?;
                p256::pkcs8::EncodePublicKey::to_public_key_der(&key)
                    .map_err(|e| bad(&e.to_string()))?
                    .into_vec()
            }
            KeyAlgorithm::EcP384 => {
                let point = ec_point().ok_or_else(|| bad("no CKA_EC_POINT"))?;
                let key = p384::PublicKey::from_sec1_bytes(&point).map_err(|_| bad("bad point"))?;
                p384::pkcs8::EncodePublicKey::to_public_key_der(&key)
                    .map_err(|e| bad(&e.to_string()))?
                    .into_vec()
            }
            KeyAlgorithm::Ed25519 => {
                let point = ec_point().ok_or_else(|| bad("no CKA_EC_POINT"))?;
                let bytes: [u8; 32] = point
                    .as_slice()
                    .try_into()
                    .map_err(|_| bad("not 32 bytes"))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| bad("bad point"))?;
                key.to_public_key_der()
                    .map_err(|e| bad(&e.to_string()))?
                    .into_vec()
            }
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let mut modulus = None;
                let mut exponent = None;
                for a in attrs {
                    match a {
                        Attribute::Modulus(m) => modulus = Some(m.as_slice()),
                        Attribute::PublicExponent(e) => exponent = Some(e.as_slice()),
                        _ => {}
                    }
                }
                let (n, e) = modulus
                    .zip(exponent)
                    .ok_or_else(|| bad("no modulus/exponent"))?;
                rsa_spki(n, e).map_err(|e| bad(&e.to_string()))?
            }
        };
        Ok(der)
    }
}

/// SoftHSM and most tokens return CKA_EC_POINT as a DER OCTET STRING; some return the raw
/// point. Accept both.
fn unwrap_octet_string(value: &[u8]) -> Vec<u8> {
    match der::asn1::OctetString::from_der(value) {
        Ok(os) => os.as_bytes().to_vec(),
        Err(_) => value.to_vec(),
    }
}

/// rsaEncryption SubjectPublicKeyInfo from a modulus and exponent (big-endian unsigned).
fn rsa_spki(n: &[u8], e: &[u8]) -> der::Result<Vec<u8>> {
    use der::Encode as _;
    use der::asn1::{BitString, UintRef};

    #[derive(der::Sequence)]
    struct RsaPublicKey<'a> {
        modulus: UintRef<'a>,
        public_exponent: UintRef<'a>,
    }
    let key = RsaPublicKey {
        modulus: UintRef::new(n)?,
        public_exponent: UintRef::new(e)?,
    }
    .to_der()?;
    let spki = spki::SubjectPublicKeyInfoOwned {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::RSA_ENCRYPTION,
            parameters: Some(der::asn1::Null.into()),
        },
        subject_public_key: BitString::from_bytes(&key)?,
    };
    spki.to_der()
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyAlgorithm::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = KeyAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "unknown key algorithm `{s}` (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// The attributes for finding a private key by label: a token object, never the session copy
/// a key slot signs with (session objects are visible to every session of the process).
pub(crate) fn private_key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// The attributes for finding a public key (a token object) by label.
pub(crate) fn public_key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in KeyAlgorithm::ALL {
            assert_eq!(alg.as_str().parse::<KeyAlgorithm>(), Ok(*alg));
        }
        assert!("rsa-1024".parse::<KeyAlgorithm>().is_err());
    }

    #[test]
    fn private_template_is_sensitive_and_not_extractable() {
        for alg in KeyAlgorithm::ALL {
            let (_, _, private) = alg.templates("l", b"i", true);
            assert!(private.contains(&Attribute::Sensitive(true)));
            assert!(private.contains(&Attribute::Extractable(false)));
            assert!(private.contains(&Attribute::Private(true)));
        }
    }
}
