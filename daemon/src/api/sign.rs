//! api::sign: HTTP endpoints of online signing — keys, rings, sign, sign-batch, verify.

use axum::Router;

use crate::app::App;

/// The routes of this part of the API (merged into the mTLS API router).
pub(super) fn routes() -> Router<App> {
    Router::new()
}
