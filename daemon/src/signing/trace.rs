//! signing::trace: the opt-in operation trace (`signing.trace_file`) — one line
//! `KEY_ID START_NS END_NS` per token signature, in monotonic nanoseconds since the daemon
//! started, so tests can check that no two operations overlapped on one key.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use uuid::Uuid;

/// The trace file.
#[derive(Debug)]
pub(super) struct Trace {
    epoch: Instant,
    file: Mutex<File>,
}

impl Trace {
    pub(super) fn open(path: &Path) -> std::io::Result<Trace> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Trace {
            epoch: Instant::now(),
            file: Mutex::new(file),
        })
    }

    /// Nanoseconds since the trace was opened.
    pub(super) fn now(&self) -> u128 {
        self.epoch.elapsed().as_nanos()
    }

    /// Appends one operation: the interval encloses the whole token call (taken after the key
    /// was lent, ended before it is given back).
    pub(super) fn record(&self, key: Uuid, start: u128, end: u128) {
        let line = format!("{key} {start} {end}\n");
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "cannot write the signing trace");
        }
    }
}
