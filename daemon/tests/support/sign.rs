//! Test support for the sign tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
