//! pki::service: the certificate authority at run time — accounts, certificates issued from
//! CSRs, status changes (hold, release, revoke), the CRL and the OCSP responder.

use crate::store::Store;

/// The CA service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CaService {
    #[allow(dead_code)]
    store: Store,
}

impl CaService {
    /// Starts the service.
    pub async fn start(store: Store) -> Result<CaService, crate::store::StoreError> {
        Ok(CaService { store })
    }
}
