//! store::pki: the SQL of accounts, certificates, their status changes and CRLs.
