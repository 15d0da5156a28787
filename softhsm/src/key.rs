//! Key kinds that can be generated on a token, and the parsed view of the
//! private keys a token holds, as `pkcs11-tool` reports them.

use std::fmt;
use std::str::FromStr;

/// The kinds of key pair this crate can generate on a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyKind {
    /// RSA, 2048-bit modulus.
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus.
    Rsa4096,
    /// ECDSA over NIST P-256 (prime256v1).
    EcP256,
    /// ECDSA over NIST P-384 (secp384r1).
    EcP384,
    /// EdDSA over edwards25519.
    Ed25519,
}

impl KeyKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [KeyKind] = &[
        KeyKind::Rsa2048,
        KeyKind::Rsa3072,
        KeyKind::Rsa4096,
        KeyKind::EcP256,
        KeyKind::EcP384,
        KeyKind::Ed25519,
    ];

    /// The stable name used in configuration and on the command line:
    /// `rsa-2048`, `rsa-3072`, `rsa-4096`, `ec-p256`, `ec-p384`, `ed25519`.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "rsa-2048",
            KeyKind::Rsa3072 => "rsa-3072",
            KeyKind::Rsa4096 => "rsa-4096",
            KeyKind::EcP256 => "ec-p256",
            KeyKind::EcP384 => "ec-p384",
            KeyKind::Ed25519 => "ed25519",
        }
    }

    /// The `--key-type` argument of `pkcs11-tool --keypairgen`.
    pub(crate) const fn pkcs11_tool_key_type(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "rsa:2048",
            KeyKind::Rsa3072 => "rsa:3072",
            KeyKind::Rsa4096 => "rsa:4096",
            KeyKind::EcP256 => "EC:prime256v1",
            KeyKind::EcP384 => "EC:secp384r1",
            KeyKind::Ed25519 => "EC:edwards25519",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`KeyKind::from_str`]: the name is not one of
/// [`KeyKind::as_str`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key kind {given:?}; expected one of {}", expected_names())]
pub struct ParseKeyKindError {
    given: String,
}

fn expected_names() -> String {
    KeyKind::ALL
        .iter()
        .map(|kind| kind.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for KeyKind {
    type Err = ParseKeyKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| ParseKeyKindError {
                given: s.to_owned(),
            })
    }
}

/// A private key on a token, as listed by `pkcs11-tool --list-objects`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrivateKeyInfo {
    /// `CKA_LABEL`, with surrounding whitespace trimmed.
    pub label: String,
    /// `CKA_ID`, lower-case hex.
    pub id: String,
    /// The key type as pkcs11-tool prints it: `RSA`, `EC`, `EC_EDWARDS`, …
    pub key_type: String,
    /// The usage flags as printed, e.g. `["decrypt", "sign", "unwrap"]`.
    pub usage: Vec<String>,
    /// The access flags as printed, e.g.
    /// `["sensitive", "always sensitive", "never extractable", "local"]`.
    pub access: Vec<String>,
}

impl PrivateKeyInfo {
    /// Whether the "Access:" line lists exactly this flag (so
    /// `has_access("extractable")` is not fooled by "never extractable").
    pub fn has_access(&self, flag: &str) -> bool {
        self.access.iter().any(|f| f == flag)
    }

    /// Whether the token reports the key as sensitive, always sensitive and
    /// never extractable, and not as extractable: the key cannot leave the
    /// token and never could.
    pub fn is_locked_in_token(&self) -> bool {
        self.has_access("sensitive")
            && self.has_access("always sensitive")
            && self.has_access("never extractable")
            && !self.has_access("extractable")
    }
}

/// Parses the output of `pkcs11-tool --list-objects --type privkey`.
///
/// Each object starts with an unindented `Private Key Object; TYPE` line and
/// continues with indented `name: value` lines. Other unindented lines end
/// the current object; unknown attribute lines are ignored.
pub(crate) fn parse_private_keys(output: &str) -> Vec<PrivateKeyInfo> {
    let mut keys = Vec::new();
    let mut current: Option<PrivateKeyInfo> = None;
    for line in output.lines() {
        let indented = line.starts_with(char::is_whitespace);
        if !indented {
            keys.extend(current.take());
            if let Some(key_type) = line.strip_prefix("Private Key Object;") {
                current = Some(PrivateKeyInfo {
                    label: String::new(),
                    id: String::new(),
                    key_type: key_type.trim().to_owned(),
                    usage: Vec::new(),
                    access: Vec::new(),
                });
            }
            continue;
        }
        let Some(key) = current.as_mut() else {
            continue;
        };
        let Some((name, value)) = line.trim_start().split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name {
            "label" => key.label = value.to_owned(),
            "ID" => key.id = value.to_ascii_lowercase(),
            "Usage" => key.usage = split_flags(value),
            "Access" => key.access = split_flags(value),
            _ => {}
        }
    }
    keys.extend(current);
    keys
}

fn split_flags(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|flag| !flag.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_kind_names_round_trip() {
        for kind in KeyKind::ALL {
            assert_eq!(kind.as_str().parse::<KeyKind>(), Ok(*kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        let Err(err) = "rsa-1024".parse::<KeyKind>() else {
            panic!("rsa-1024 must not parse");
        };
        assert!(err.to_string().contains("ed25519"), "{err}");
    }

    #[test]
    fn parses_pkcs11_tool_listing() {
        let output = "\
Private Key Object; RSA 
  label:      a b: c
  ID:         0A0b
  Usage:      decrypt, sign, unwrap
  Access:     sensitive, always sensitive, never extractable, local
Private Key Object; EC_EDWARDS
  label:      
  ID:         0c
  Usage:      sign
  Access:     sensitive, extractable
Public Key Object; EC  EC_POINT 256 bits
  label:      not-a-private-key
";
        let keys = parse_private_keys(output);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].label, "a b: c");
        assert_eq!(keys[0].id, "0a0b");
        assert_eq!(keys[0].key_type, "RSA");
        assert_eq!(keys[0].usage, ["decrypt", "sign", "unwrap"]);
        assert!(keys[0].is_locked_in_token());
        assert_eq!(keys[1].label, "");
        assert_eq!(keys[1].key_type, "EC_EDWARDS");
        assert!(keys[1].has_access("extractable"));
        assert!(!keys[1].is_locked_in_token());
        assert!(parse_private_keys("").is_empty());
    }
}
