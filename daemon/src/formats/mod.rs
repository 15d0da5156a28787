//! formats: encodings of the daemon's keys and signatures for other ecosystems (OpenPGP, RPM,
//! CMS),
//! built around signatures the token makes. No IO, no PKCS#11: the caller hands in the token's
//! signature (or a closure that asks the token for it).
//!
//! - [`openpgp`]: OpenPGP v4 certificates, detached and cleartext signatures.
//! - [`rpm`]: RPM v4 packages with a header-only OpenPGP signature, the head parsed
//!   incrementally so that the payload streams past.
//! - [`cms`]: CMS detached SignedData (RFC 5652) over a digest, and its verification.
//! - [`tsp`]: RFC 3161 time-stamp requests, tokens and responses.

pub mod cms;
pub mod openpgp;
pub mod rpm;
pub mod tsp;
