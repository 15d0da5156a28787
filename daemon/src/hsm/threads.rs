//! hsm::threads: the token threads — `hsm.max_parallel` OS threads that run the request path's
//! PKCS#11 operations (each with its software verification), taken in order from one queue.
//!
//! A thread that finishes an operation takes the next queued one at once, on the same thread:
//! while work waits, the token is never idle for a hand-off (a permit given back, a task woken,
//! a blocking thread woken in turn), and no more than `max_parallel` calls are ever inside the
//! module, so a software token is not slowed by more threads than cores contending for it.
//! A thread sleeps only when the queue is empty, and is woken only if one sleeps.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// One operation, with everything it answers through.
pub(super) type Job = Box<dyn FnOnce() + Send + 'static>;

/// The threads and their queue. Dropping it lets the threads finish what is queued and stop.
pub(super) struct TokenThreads {
    shared: Arc<Shared>,
    count: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting on `ready`.
    idle: usize,
    closed: bool,
}

impl std::fmt::Debug for TokenThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenThreads")
            .field("threads", &self.count)
            .field("queued", &lock(&self.shared.queue).jobs.len())
            .finish()
    }
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // Jobs run outside the lock and their panics are caught: a poisoned queue is still whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TokenThreads {
    /// Starts `count` (at least one) threads named `signetd-token`.
    pub(super) fn start(count: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let count = count.max(1);
        for _ in 0..count {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("signetd-token".into())
                .spawn(move || run(&shared))?;
        }
        Ok(TokenThreads { shared, count })
    }

    /// Queues `job` behind the others; a sleeping thread is woken if there is one. Returns the
    /// job unrun if the threads are stopping.
    pub(super) fn submit(&self, job: Job) -> Result<(), Job> {
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return Err(job);
        }
        q.jobs.push_back(job);
        let wake = q.idle > 0;
        drop(q);
        if wake {
            self.shared.ready.notify_one();
        }
        Ok(())
    }

    /// Operations waiting for a thread.
    #[cfg(test)]
    fn queued(&self) -> usize {
        lock(&self.shared.queue).jobs.len()
    }
}

impl Drop for TokenThreads {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.ready.notify_all();
    }
}

fn run(shared: &Shared) {
    let mut q = lock(&shared.queue);
    loop {
        if let Some(job) = q.jobs.pop_front() {
            drop(q);
            // A panic ends this job only: its answer channel is dropped, so its caller hears
            // that the operation failed; the thread goes on.
            if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                tracing::error!("a token operation panicked");
            }
            q = lock(&shared.queue);
            continue;
        }
        if q.closed {
            return;
        }
        q.idle += 1;
        q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        q.idle -= 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn runs_every_job_with_at_most_count_at_once() {
        let threads = TokenThreads::start(2).unwrap();
        let (running, peak, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..50 {
            let (running, peak, done, tx) =
                (running.clone(), peak.clone(), done.clone(), tx.clone());
            let submitted = threads.submit(Box::new(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(());
            }));
            assert!(submitted.is_ok());
        }
        for _ in 0..50 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 50);
        assert_eq!(
            peak.load(Ordering::SeqCst),
            2,
            "two threads, both used, never more"
        );
        assert_eq!(threads.queued(), 0);
    }

    #[test]
    fn a_panicking_job_leaves_the_thread_working() {
        let threads = TokenThreads::start(1).unwrap();
        assert!(threads.submit(Box::new(|| panic!("boom"))).is_ok());
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(
            threads
                .submit(Box::new(move || tx.send(7).unwrap()))
                .is_ok()
        );
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 7);
    }

    #[test]
    fn stopping_threads_refuse_new_jobs() {
        let threads = TokenThreads::start(1).unwrap();
        let shared = threads.shared.clone();
        drop(threads);
        let late = TokenThreads { shared, count: 1 };
        assert!(late.submit(Box::new(|| ())).is_err());
    }
}
