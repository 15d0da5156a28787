//! api::jobs: HTTP endpoints of batch record signing — records, jobs, per-record proofs.

use axum::Router;

use crate::app::App;

/// The routes of this part of the API (merged into the mTLS API router).
pub(super) fn routes() -> Router<App> {
    Router::new()
}
