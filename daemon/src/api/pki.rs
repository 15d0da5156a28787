//! api::pki: HTTP endpoints of the certificate authority — accounts, certificates, CRL, OCSP.

use axum::Router;

use crate::app::App;

/// The routes of this part of the API (merged into the mTLS API router).
pub(super) fn routes() -> Router<App> {
    Router::new()
}
