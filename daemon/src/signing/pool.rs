//! signing::pool: the scheduler of one ring in this process — the keys it holds a lease on,
//! each lent to one operation at a time (invariant 2), the least recently used idle key first
//! (invariant 3), and a bounded queue of requests waiting for a key.
//!
//! A request takes an idle key at once when there is one. Otherwise it joins the ring's queue
//! (refused when the queue is full: memory stays bounded) and the pool asks the lease table for
//! one more key of the ring; a key coming back from an operation goes straight to the first
//! waiter it can serve. State lives behind a `std::sync::Mutex` that is never held across an
//! `.await`: every critical section is a few pointer moves.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::hsm::{KeyAlgorithm, KeySlot};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning means a panic while holding the lock; every critical section below leaves the
    // state consistent at each step, so the state is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One key this process holds a lease on.
#[derive(Debug)]
struct Held {
    id: Uuid,
    slot: Arc<KeySlot>,
    busy: bool,
    /// Logical time of the last use; the smallest idle one is picked.
    tick: u64,
    /// When it last came back idle (for releasing idle leases).
    idle_since: Instant,
    /// Signatures not yet written to the database, and the time of the last one.
    unflushed: i64,
    last_used_at: Option<OffsetDateTime>,
    /// The lease was lost or the key retired: drop it when it comes back.
    doomed: bool,
    /// Until when the lease is known to hold (measured from before the request that took or
    /// last renewed it, so never later than the real expiry).
    valid_until: Instant,
}

struct Waiter {
    /// A request for one key (by id) or for any key of the ring.
    want: Option<Uuid>,
    tx: oneshot::Sender<KeyGuard>,
}

#[derive(Default)]
struct State {
    keys: Vec<Held>,
    waiters: VecDeque<Waiter>,
    /// A lease request is under way.
    leasing: bool,
    /// The last lease attempt found no free key of the ring (until then, waiting requests
    /// do not ask the database again).
    exhausted_until: Option<Instant>,
    clock: u64,
    /// Keys retired through this process: never added again, even by a lease that was
    /// committed before the retirement and is still being adopted.
    retired: HashSet<Uuid>,
    /// Doomed keys taken out when their last operation ended, with their unflushed usage:
    /// their leases are for the maintenance to give back.
    swept: Vec<(Uuid, i64)>,
}

/// Why a key could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireError {
    /// The ring's queue is full.
    QueueFull,
    /// No key came within the queue timeout.
    Timeout,
}

/// The scheduler of one ring.
pub struct RingPool {
    /// Ring name.
    pub name: String,
    /// Algorithm of the ring's keys.
    pub algorithm: KeyAlgorithm,
    /// Configured token name holding the keys.
    pub token: String,
    queue_cap: usize,
    /// A key is lent only while its lease holds at least this much longer (the time to the
    /// next renewal): another process may lease it once the lease has expired.
    margin: Duration,
    state: Mutex<State>,
}

impl std::fmt::Debug for RingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.state);
        f.debug_struct("RingPool")
            .field("name", &self.name)
            .field("keys", &st.keys.len())
            .field("waiting", &st.waiters.len())
            .finish()
    }
}

/// A key lent to one operation. Dropping it gives the key back to the pool, which hands it to
/// the next waiting request or marks it idle.
#[derive(Debug)]
pub struct KeyGuard {
    lent: Option<Lent>,
}

#[derive(Debug)]
struct Lent {
    pool: Arc<RingPool>,
    id: Uuid,
    slot: Arc<KeySlot>,
    /// Signatures made while lent.
    signed: u64,
}

impl KeyGuard {
    /// The key's id.
    pub fn id(&self) -> Uuid {
        self.lent.as_ref().map_or(Uuid::nil(), |l| l.id)
    }

    /// The key's slot (its own session).
    pub fn slot(&self) -> Option<&Arc<KeySlot>> {
        self.lent.as_ref().map(|l| &l.slot)
    }

    /// Counts `n` signatures made with the key (usage count, last used).
    pub fn mark_signed(&mut self, n: u64) {
        if let Some(l) = &mut self.lent {
            l.signed += n;
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        if let Some(lent) = self.lent.take() {
            let pool = lent.pool.clone();
            pool.give_back(lent);
        }
    }
}

/// What a pool hands to the maintenance task: usage to flush.
#[derive(Debug, Clone)]
pub struct Usage {
    /// Key.
    pub id: Uuid,
    /// Signatures since the last flush.
    pub count: i64,
    /// Time of the last one.
    pub last_used_at: OffsetDateTime,
}

impl RingPool {
    /// An empty pool for a ring; keys are lent only while their lease holds `margin` longer.
    pub fn new(
        name: String,
        algorithm: KeyAlgorithm,
        token: String,
        queue_cap: usize,
        margin: Duration,
    ) -> Self {
        RingPool {
            name,
            algorithm,
            token,
            queue_cap: queue_cap.max(1),
            margin,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a key's lease still holds long enough to lend it.
    fn lendable(&self, k: &Held, now: Instant) -> bool {
        !k.doomed && k.valid_until > now + self.margin
    }

    /// Takes an idle key (the least recently used one, or the one asked for) at once, or
    /// joins the ring's bounded queue; see [`Acquire`].
    pub fn try_acquire(self: &Arc<Self>, want: Option<Uuid>) -> Acquire {
        let mut st = lock(&self.state);
        if let Some(guard) = self.take_idle(&mut st, want) {
            return Acquire::Ready(guard);
        }
        if st.waiters.len() >= self.queue_cap {
            st.waiters.retain(|w| !w.tx.is_closed());
            if st.waiters.len() >= self.queue_cap {
                return Acquire::Refused(AcquireError::QueueFull);
            }
        }
        let (tx, rx) = oneshot::channel();
        st.waiters.push_back(Waiter { want, tx });
        let held = want.is_some_and(|id| st.keys.iter().any(|k| k.id == id));
        let exhausted = st
            .exhausted_until
            .is_some_and(|t| t > Instant::now() && Self::usable(&st) && want.is_none());
        let lease = !st.leasing && !held && !exhausted;
        if lease {
            st.leasing = true;
        }
        Acquire::Queued { rx, lease }
    }

    fn take_idle(self: &Arc<Self>, st: &mut State, want: Option<Uuid>) -> Option<KeyGuard> {
        let now = Instant::now();
        let held = st
            .keys
            .iter_mut()
            .filter(|k| !k.busy && self.lendable(k, now) && want.is_none_or(|id| id == k.id))
            .min_by_key(|k| k.tick)?;
        held.busy = true;
        Some(self.lend(held))
    }

    fn lend(self: &Arc<Self>, held: &Held) -> KeyGuard {
        KeyGuard {
            lent: Some(Lent {
                pool: self.clone(),
                id: held.id,
                slot: held.slot.clone(),
                signed: 0,
            }),
        }
    }

    /// Whether the pool holds this key and may still sign with it (a doomed key — retired, or
    /// its lease lost — stays until its last operation ends and the maintenance sweeps it, but
    /// is not held for new operations: callers then look at its state in the database).
    pub fn holds(&self, id: Uuid) -> bool {
        lock(&self.state)
            .keys
            .iter()
            .any(|k| k.id == id && !k.doomed)
    }

    /// Ids of the keys held.
    pub fn held_ids(&self) -> Vec<Uuid> {
        lock(&self.state).keys.iter().map(|k| k.id).collect()
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiters.len()
    }

    /// What to lease for the waiting requests: the key one of them asks for by id that the
    /// pool does not hold, else any key of the ring. `None` when nobody waits any more.
    pub fn lease_wish(&self) -> Option<LeaseWish> {
        let mut st = lock(&self.state);
        st.waiters.retain(|w| !w.tx.is_closed());
        if st.waiters.is_empty() {
            return None;
        }
        let held: Vec<Uuid> = st.keys.iter().map(|k| k.id).collect();
        Some(
            st.waiters
                .iter()
                .filter_map(|w| w.want)
                .find(|id| !held.contains(id))
                .map_or(LeaseWish::Any, LeaseWish::Key),
        )
    }

    /// Whether a request for any key still waits (so leasing one more key helps).
    pub fn any_waiter_for_ring(&self) -> bool {
        let mut st = lock(&self.state);
        st.waiters.retain(|w| !w.tx.is_closed());
        st.waiters.iter().any(|w| w.want.is_none())
    }

    /// Ends a lease attempt; `exhausted` when the ring had no free key. Returns `true` when
    /// the caller must go on (a request joined the queue meanwhile and relied on this attempt).
    pub fn lease_done(&self, exhausted: bool) -> bool {
        let mut st = lock(&self.state);
        if exhausted {
            st.exhausted_until = Some(Instant::now() + Duration::from_secs(1));
            st.leasing = false;
            return false;
        }
        st.waiters.retain(|w| !w.tx.is_closed());
        let held: Vec<Uuid> = st.keys.iter().map(|k| k.id).collect();
        let unserved = st
            .waiters
            .iter()
            .any(|w| w.want.is_none_or(|id| !held.contains(&id)));
        if unserved && st.keys.iter().all(|k| k.busy) {
            return true;
        }
        st.leasing = false;
        false
    }

    /// Drops every request waiting for any key of the ring (the ring has no key that may
    /// sign): their receivers see the sender gone.
    pub fn fail_ring_waiters(&self) {
        lock(&self.state).waiters.retain(|w| w.want.is_some());
    }

    /// Drops every request waiting for key `id` (retired: it will never sign again).
    pub fn fail_key_waiters(&self, id: Uuid) {
        lock(&self.state).waiters.retain(|w| w.want != Some(id));
    }

    /// Number of keys held (doomed ones too, until their lease is given back).
    pub fn len(&self) -> usize {
        lock(&self.state).keys.len()
    }

    /// Whether the pool holds no key that may still sign (a doomed key serves nobody: waiting
    /// requests need another lease, or to hear that the ring has no active key).
    pub fn is_empty(&self) -> bool {
        !Self::usable(&lock(&self.state))
    }

    fn usable(st: &State) -> bool {
        st.keys.iter().any(|k| !k.doomed)
    }

    /// Marks a lease attempt under way for requests that wait with none running (a doomed
    /// key that came back left them without a key): `true` when the caller must run one.
    pub fn kick(&self) -> bool {
        let mut st = lock(&self.state);
        st.waiters.retain(|w| !w.tx.is_closed());
        if st.waiters.is_empty() || st.leasing {
            return false;
        }
        st.leasing = true;
        true
    }

    /// Adds a newly leased key (least recently used keys are leased first, so it starts as
    /// the least recently used here too), its lease valid until `valid_until`, and hands it to
    /// a waiter. Returns false, adding nothing, for a key retired meanwhile (the caller gives
    /// its lease back).
    pub fn add(self: &Arc<Self>, id: Uuid, slot: Arc<KeySlot>, valid_until: Instant) -> bool {
        let mut st = lock(&self.state);
        if st.retired.contains(&id) {
            return false;
        }
        if st.keys.iter().any(|k| k.id == id) {
            return true;
        }
        st.exhausted_until = None;
        let tick = st.keys.iter().map(|k| k.tick).min().unwrap_or(st.clock);
        st.keys.push(Held {
            id,
            slot,
            busy: true,
            tick: tick.saturating_sub(1),
            idle_since: Instant::now(),
            unflushed: 0,
            last_used_at: None,
            doomed: false,
            valid_until,
        });
        let Some(idx) = st.keys.iter().position(|k| k.id == id) else {
            return true;
        };
        let guard = self.lend(&st.keys[idx]);
        self.dispatch(&mut st, guard);
        true
    }

    fn give_back(self: &Arc<Self>, mut lent: Lent) {
        let mut st = lock(&self.state);
        st.clock += 1;
        let clock = st.clock;
        let Some(held) = st.keys.iter_mut().find(|k| k.id == lent.id) else {
            return;
        };
        held.tick = clock;
        if lent.signed > 0 {
            held.unflushed += i64::try_from(lent.signed).unwrap_or(i64::MAX);
            held.last_used_at = Some(OffsetDateTime::now_utc());
            lent.signed = 0;
        }
        if held.doomed {
            // Out at once, so that nothing counts it as a key of the ring any more.
            let unflushed = held.unflushed;
            st.keys.retain(|k| k.id != lent.id);
            st.swept.push((lent.id, unflushed));
            return;
        }
        let guard = KeyGuard { lent: Some(lent) };
        self.dispatch(&mut st, guard);
    }

    /// Hands a key (lent, busy) to the first waiter it can serve, or makes it idle (also when
    /// its lease may expire before the next renewal: the maintenance drops it).
    fn dispatch(&self, st: &mut State, mut guard: KeyGuard) {
        let Some(id) = guard.lent.as_ref().map(|l| l.id) else {
            return;
        };
        let now = Instant::now();
        let lendable = st.keys.iter().any(|k| k.id == id && self.lendable(k, now));
        let mut i = 0;
        while lendable && i < st.waiters.len() {
            if st.waiters[i].tx.is_closed() {
                st.waiters.remove(i);
                continue;
            }
            if st.waiters[i].want.is_some_and(|w| w != id) {
                i += 1;
                continue;
            }
            let Some(waiter) = st.waiters.remove(i) else {
                break;
            };
            match waiter.tx.send(guard) {
                Ok(()) => return,
                // The request gave up between the check and the send: take the key back
                // (the returned guard's lent is moved out, so dropping it does nothing).
                Err(mut back) => match back.lent.take() {
                    Some(l) => guard = KeyGuard { lent: Some(l) },
                    None => return,
                },
            }
        }
        if let Some(l) = guard.lent.take()
            && let Some(held) = st.keys.iter_mut().find(|k| k.id == l.id)
        {
            held.busy = false;
            held.idle_since = Instant::now();
        }
    }

    /// Usage to flush: takes the counters (the caller puts them back with
    /// [`RingPool::restore_usage`] when the write fails).
    pub fn take_usage(&self) -> Vec<Usage> {
        let mut st = lock(&self.state);
        let mut out = Vec::new();
        for k in &mut st.keys {
            if k.unflushed > 0
                && let Some(t) = k.last_used_at
            {
                out.push(Usage {
                    id: k.id,
                    count: k.unflushed,
                    last_used_at: t,
                });
                k.unflushed = 0;
            }
        }
        out
    }

    /// Puts counters back after a failed flush.
    pub fn restore_usage(&self, usage: &[Usage]) {
        let mut st = lock(&self.state);
        for u in usage {
            if let Some(k) = st.keys.iter_mut().find(|k| k.id == u.id) {
                k.unflushed += u.count;
                k.last_used_at = k.last_used_at.max(Some(u.last_used_at));
            }
        }
    }

    /// Signatures not yet flushed for a key, and the time of the last one.
    pub fn pending_usage(&self, id: Uuid) -> Option<(i64, Option<OffsetDateTime>)> {
        lock(&self.state)
            .keys
            .iter()
            .find(|k| k.id == id)
            .map(|k| (k.unflushed, k.last_used_at))
    }

    /// Removes keys that must not sign any more (lease lost, key retired). Idle ones go at
    /// once; busy ones when their operation ends. Returns the removed ids with their unflushed
    /// usage.
    pub fn doom(&self, ids: &[Uuid]) -> Vec<(Uuid, i64)> {
        let mut st = lock(&self.state);
        for k in &mut st.keys {
            if ids.contains(&k.id) {
                k.doomed = true;
            }
        }
        Self::sweep(&mut st)
    }

    /// The renewal of these leases succeeded: they hold until `valid_until`.
    pub fn confirm(&self, ids: &[Uuid], valid_until: Instant) {
        for k in &mut lock(&self.state).keys {
            if ids.contains(&k.id) {
                k.valid_until = valid_until;
            }
        }
    }

    /// Held keys (not doomed yet) whose lease may expire before the next renewal.
    pub fn expiring(&self) -> Vec<Uuid> {
        let now = Instant::now();
        lock(&self.state)
            .keys
            .iter()
            .filter(|k| !k.doomed && k.valid_until <= now + self.margin)
            .map(|k| k.id)
            .collect()
    }

    /// A key was retired: doomed now if held, never added again, and the requests waiting for
    /// it by id are dropped. Returns what [`RingPool::doom`] returns.
    pub fn retire(&self, id: Uuid) -> Vec<(Uuid, i64)> {
        lock(&self.state).retired.insert(id);
        self.fail_key_waiters(id);
        self.doom(&[id])
    }

    /// A key may not sign for now (its budget is used up, its window closed): doomed if held,
    /// the requests waiting for it refused, but leased again later if it may sign again.
    pub fn set_aside(&self, id: Uuid) -> Vec<(Uuid, i64)> {
        self.fail_key_waiters(id);
        self.doom(&[id])
    }

    /// Removes doomed keys that are idle now.
    pub fn sweep_doomed(&self) -> Vec<(Uuid, i64)> {
        Self::sweep(&mut lock(&self.state))
    }

    fn sweep(st: &mut State) -> Vec<(Uuid, i64)> {
        let mut gone = std::mem::take(&mut st.swept);
        st.keys.retain(|k| {
            if k.doomed && !k.busy {
                gone.push((k.id, k.unflushed));
                false
            } else {
                true
            }
        });
        gone
    }

    /// Removes idle keys unused for `idle` (their leases go back to other processes and batch
    /// jobs) while no request waits. Returns them with their unflushed usage.
    pub fn release_idle(&self, idle: Duration) -> Vec<(Uuid, i64)> {
        let mut st = lock(&self.state);
        st.waiters.retain(|w| !w.tx.is_closed());
        if !st.waiters.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let mut gone = Vec::new();
        st.keys.retain(|k| {
            if !k.busy && now.duration_since(k.idle_since) >= idle {
                gone.push((k.id, k.unflushed));
                false
            } else {
                true
            }
        });
        gone
    }
}

/// What a lease attempt should ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseWish {
    /// The least recently used free key of the ring.
    Any,
    /// This key (a request names it).
    Key(Uuid),
}

/// The outcome of [`RingPool::try_acquire`].
#[derive(Debug)]
pub enum Acquire {
    /// A key, now.
    Ready(KeyGuard),
    /// Queued: wait on `rx`; `lease` says this caller must start a lease attempt.
    Queued {
        /// Receives the key.
        rx: oneshot::Receiver<KeyGuard>,
        /// Start a lease attempt (nobody else is).
        lease: bool,
    },
    /// Refused.
    Refused(AcquireError),
}
