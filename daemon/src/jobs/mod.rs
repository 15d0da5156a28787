//! jobs: batch record signing — records, jobs with a ring and a batch size, workers that claim
//! batches, lease the least recently used idle key across processes, sign each record once, and
//! store the signatures with one audit entry per batch.

use crate::store::Store;

/// The batch job service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Jobs {
    #[allow(dead_code)]
    store: Store,
}

impl Jobs {
    /// Starts the service.
    pub async fn start(store: Store) -> Result<Jobs, crate::store::StoreError> {
        Ok(Jobs { store })
    }
}
