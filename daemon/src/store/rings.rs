//! store::rings: the SQL of key rings, key usage and key leases.
