//! store::jobs: the SQL of records, signatures, jobs and batches.
