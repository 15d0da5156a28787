//! Fuzz target: `parse_csr` on arbitrary bytes (DER or PEM) must not panic, and must only ever
//! refuse with `CertError::InvalidRequest`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_certs::{CertError, CsrLimits, parse_csr};

fuzz_target!(|data: &[u8]| {
    match parse_csr(data, CsrLimits::default()) {
        Ok(_) | Err(CertError::InvalidRequest(_)) => {}
        Err(other) => panic!("parse_csr returned a non-request error: {other:?}"),
    }
});
