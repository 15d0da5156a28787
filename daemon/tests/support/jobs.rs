//! Test support for the jobs tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
