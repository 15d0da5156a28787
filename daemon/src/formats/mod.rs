//! formats: encodings of the daemon's keys and signatures for other ecosystems (OpenPGP, CMS),
//! built around signatures the token makes. No IO, no PKCS#11: the caller hands in the token's
//! signature (or a closure that asks the token for it).

pub mod cms;
pub mod openpgp;
