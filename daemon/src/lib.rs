//! signetd: a signing daemon whose private keys never leave the PKCS#11 token. This library holds
//! every part; `main.rs` only assembles them. See ARCHITECTURE.md for the map and invariants.

pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dev;
pub mod formats;
pub mod hsm;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod pki;
pub mod server;
pub mod signing;
pub mod store;
pub mod tls;
