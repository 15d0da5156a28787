//! Test support for the pki tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
