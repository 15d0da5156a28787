//! Fuzz target: `parse_ocsp_request` on arbitrary bytes must not panic, and must only ever
//! refuse with `CertError::InvalidRequest`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_certs::{CertError, parse_ocsp_request};

fuzz_target!(|data: &[u8]| {
    match parse_ocsp_request(data) {
        Ok(_) | Err(CertError::InvalidRequest(_)) => {}
        Err(other) => panic!("parse_ocsp_request returned a non-request error: {other:?}"),
    }
});
