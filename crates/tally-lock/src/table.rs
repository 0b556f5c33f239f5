//! [`LockTable`]: the shared handle, and the three ways of waiting for keys
//! (blocking, non-blocking and async) on top of the one state machine in
//! `state`.
//!
//! Every path follows the same shape: under the mutex, take the key if it is
//! free, otherwise queue for it; then wait outside the mutex until the state
//! says the key was handed over, or give up and withdraw under the mutex. The
//! paths differ only in how they sleep: threads on one of the table's
//! condition variables, tasks by leaving their [`Waker`](std::task::Waker) in
//! their queue slot.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::guard::Guard;
use crate::mutant;
use crate::state::{Owner, State, Wake};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};
use crate::{Config, LockError};

/// How many condition variables one table spreads its blocked threads over
/// (by acquisition id). A hand-off wakes every thread sleeping on the new
/// holder's condition variable; the others find no grant and sleep again. 64
/// keeps that herd small for any realistic number of blocked threads, at a few
/// hundred bytes per table, with no allocation per wait.
#[cfg(not(any(loom, shuttle)))]
const CONDVAR_SHARDS: usize = 64;

/// Under the model checkers two condition variables keep each execution
/// small while still letting two waiters share one, so the "woken, but the
/// grant went to someone else" path is explored too.
#[cfg(any(loom, shuttle))]
const CONDVAR_SHARDS: usize = 2;

/// The table mutex is poisoned only if an invariant check panicked while it
/// was held. The state may then be inconsistent, and guessing on in a payment
/// system could double-charge, so every later use fails loudly too.
const POISONED: &str = "lock table poisoned: an invariant check failed while it was locked";

/// A table of exclusive locks on keys of type `K`.
///
/// Cloning is cheap and yields another handle to the same table.
pub struct LockTable<K> {
    inner: Arc<Inner<K>>,
}

struct Inner<K> {
    config: Config,
    state: Mutex<State<K>>,
    /// Blocked threads sleep here, on the one their acquisition id picks.
    condvars: Box<[Condvar]>,
}

impl<K> Clone for LockTable<K> {
    fn clone(&self) -> Self {
        LockTable { inner: Arc::clone(&self.inner) }
    }
}

impl<K> fmt::Debug for LockTable<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately does not lock: formatting must never block or contend.
        f.debug_struct("LockTable").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl<K> LockTable<K> {
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.inner.state.lock().expect(POISONED)
    }

    /// Locks the state for a release from a destructor. Returns `None` if the
    /// table is poisoned while this thread is already panicking: a second
    /// panic would abort the process, and a poisoned table is unusable anyway.
    pub(crate) fn lock_for_drop(&self) -> Option<MutexGuard<'_, State<K>>> {
        match self.inner.state.lock() {
            Ok(state) => Some(state),
            Err(_) if std::thread::panicking() => None,
            Err(_) => panic!("{POISONED}"),
        }
    }

    /// Wakes a waiter that was just handed a key. Call after unlocking.
    pub(crate) fn wake(&self, wake: Wake) {
        match wake {
            Wake::Thread { shard } => self.inner.condvars[shard].notify_all(),
            Wake::Task(waker) => {
                if !mutant::active(mutant::LOCK_TASK_NOT_WOKEN) {
                    waker.wake();
                }
            }
        }
    }

    /// The limits this table was created with.
    pub fn config(&self) -> Config {
        self.inner.config
    }
}

impl<K: Ord + Clone + fmt::Debug + Send + Sync + 'static> LockTable<K> {
    /// An empty table.
    pub fn new(config: Config) -> Self {
        LockTable {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::new(config.max_waiters_per_key)),
                condvars: (0..CONDVAR_SHARDS).map(|_| Condvar::new()).collect(),
            }),
        }
    }

    /// Takes every key in `keys`, blocking the calling thread while any is
    /// held by someone else. `timeout: None` waits forever; `Some(d)` gives up
    /// after `d` in total (across all keys) with [`LockError::Timeout`].
    ///
    /// Keys are sorted and de-duplicated, then taken in ascending order, each
    /// one waited for in FIFO order behind earlier waiters while the smaller
    /// keys stay held. An empty set yields an empty guard at once. On any error
    /// the keys taken so far are released before returning.
    ///
    /// # Under the model checkers
    ///
    /// With `--cfg loom` or `--cfg shuttle` there is no clock, and neither
    /// checker's `Condvar::wait_timeout` ever times out. There, `Some(_)` means
    /// "the timer fires at some point after the acquisition has queued": the
    /// waiter queues, unlocks the table, locks it again and, unless the key was
    /// handed to it in between, gives up. The checker explores every point at
    /// which other threads run in that gap, so a timeout racing a release, a
    /// hand-off or another give-up is covered exhaustively. `None` waits on the
    /// condition variable exactly as in production.
    pub fn acquire(&self, keys: impl IntoIterator<Item = K>, timeout: Option<Duration>) -> Result<Guard<K>, LockError> {
        let keys = sorted_unique(keys);
        let deadline = Deadline::after(timeout);
        // One critical section covers the owner id and every key that is free
        // right away; the lock is only let go while waiting.
        let mut state = self.lock();
        let mut guard = Guard::new(self.clone(), state.new_owner(), keys.len());
        let mut failure = None;
        for key in keys {
            let fence = match state.try_take(&key, guard.owner()) {
                Some(fence) => fence,
                None => {
                    let (relocked, waited) = self.wait_blocking(state, &key, guard.owner(), deadline);
                    state = relocked;
                    match waited {
                        Ok(fence) => fence,
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
            };
            guard.push(key, fence);
        }
        // Unlock before the guard can drop: releasing the partial guard of a
        // failed acquisition locks the table again.
        drop(state);
        match failure {
            None => Ok(guard),
            Some(error) => {
                if mutant::active(mutant::LOCK_TIMEOUT_KEEPS_PREFIX) {
                    // Mutant: the keys taken before the timeout stay held.
                    std::mem::forget(guard);
                }
                Err(error)
            }
        }
    }

    /// Queues `owner` for the busy `key` and sleeps until it is handed over or
    /// the deadline passes. Returns the table still locked.
    fn wait_blocking<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<K>>,
        key: &K,
        owner: Owner,
        deadline: Deadline,
    ) -> (MutexGuard<'a, State<K>>, Result<u64, LockError>) {
        let shard = owner.shard(self.inner.condvars.len());
        let condvar = &self.inner.condvars[shard];
        if let Err(error) = state.enqueue(key, owner, Wake::Thread { shard }) {
            return (state, Err(error));
        }
        loop {
            // The grant is state, checked under the mutex, so a notification
            // that came before this thread slept is never lost, and a spurious
            // wake-up just loops.
            if let Some(fence) = state.granted(key, owner) {
                return (state, Ok(fence));
            }
            let (relocked, expired) = deadline.wait(&self.inner.state, condvar, state);
            state = relocked;
            if expired {
                // A grant that raced the deadline is kept rather than passed on.
                if let Some(fence) = state.granted(key, owner) {
                    if mutant::active(mutant::LOCK_TIMEOUT_STRANDS_GRANT) {
                        return (state, Err(LockError::Timeout));
                    }
                    return (state, Ok(fence));
                }
                let wake = state.cancel(key, owner);
                check!(wake.is_none(), "withdrawing an ungranted wait handed a key on");
                return (state, Err(LockError::Timeout));
            }
        }
    }

    /// Takes every key in `keys` if all are free right now, else none, without
    /// queueing. A key is not free while it is held or has waiters: a newcomer
    /// never jumps a queue.
    ///
    /// Busy keys yield [`LockError::Timeout`], read as "a wait of zero length
    /// timed out"; this keeps [`LockError`] to the two outcomes callers must
    /// tell apart. It never returns [`LockError::QueueFull`].
    pub fn try_acquire(&self, keys: impl IntoIterator<Item = K>) -> Result<Guard<K>, LockError> {
        let keys = sorted_unique(keys);
        let mut state = self.lock();
        let owner = state.new_owner();
        let fences = state.try_take_all(&keys, owner);
        drop(state);
        let fences = fences.ok_or(LockError::Timeout)?;
        let mut guard = Guard::new(self.clone(), owner, keys.len());
        for (key, fence) in keys.into_iter().zip(fences) {
            guard.push(key, fence);
        }
        Ok(guard)
    }

    /// Takes every key in `keys`, waiting asynchronously, with the same order,
    /// FIFO and queue-bound rules as [`LockTable::acquire`].
    ///
    /// Works on any executor: it stores the task's waker in its queue slot and
    /// the releaser wakes it on hand-off. `give_up` is polled whenever the wait
    /// is pending; once it resolves (pass e.g. `tokio::time::sleep(d)`, or a
    /// simulated timer) the wait is withdrawn and [`LockError::Timeout`]
    /// returned. Dropping the returned future mid-wait withdraws it just as
    /// cleanly. Either way the keys taken so far are released, and a key that
    /// was handed over in the meantime is passed on to the next waiter.
    ///
    /// The future is `Send` when `K`, `give_up` and the key iterator are.
    pub async fn acquire_async(
        &self,
        keys: impl IntoIterator<Item = K>,
        give_up: impl Future<Output = ()>,
    ) -> Result<Guard<K>, LockError> {
        let keys = sorted_unique(keys);
        let mut give_up = pin!(give_up);
        let owner = self.lock().new_owner();
        let mut guard = Guard::new(self.clone(), owner, keys.len());
        for key in keys {
            let mut wait = AsyncWait { table: self, key, owner, phase: Phase::New };
            poll_fn(|cx| wait.poll_grant(cx, give_up.as_mut(), &mut guard)).await?;
        }
        Ok(guard)
    }

    /// Is nothing held and nothing queued, for any key?
    pub fn is_idle(&self) -> bool {
        self.lock().is_idle()
    }

    /// How many acquisitions are queued for `key`, not counting its holder.
    pub fn waiters(&self, key: &K) -> usize {
        self.lock().waiters(key)
    }

    /// The fencing token of the current grant of `key`, or `None` if nobody
    /// holds it.
    pub fn holder_fence(&self, key: &K) -> Option<u64> {
        self.lock().holder_fence(key)
    }
}

/// The keys of one acquisition in the one global order.
fn sorted_unique<K: Ord>(keys: impl IntoIterator<Item = K>) -> Vec<K> {
    let mut keys: Vec<K> = keys.into_iter().collect();
    if !mutant::active(mutant::LOCK_UNSORTED) {
        keys.sort();
    }
    keys.dedup();
    keys
}

/// Where an async wait for one key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not yet polled: the key may be free.
    New,
    /// In the key's queue, with a waker.
    Queued,
    /// Granted, failed or withdrawn: nothing left to clean up.
    Done,
}

/// An async wait for one key. Dropping it while queued withdraws the wait, so
/// a cancelled future leaves no waiter and loses no grant.
struct AsyncWait<'a, K: Ord> {
    table: &'a LockTable<K>,
    key: K,
    owner: Owner,
    phase: Phase,
}

impl<K: Ord + Clone> AsyncWait<'_, K> {
    /// Takes the key into `guard` if it is free or has been handed over;
    /// otherwise parks the task's waker and gives up if `give_up` is ready.
    fn poll_grant<G: Future<Output = ()>>(
        &mut self,
        cx: &mut Context<'_>,
        give_up: Pin<&mut G>,
        guard: &mut Guard<K>,
    ) -> Poll<Result<(), LockError>> {
        let mut state = self.table.lock();
        let granted = match self.phase {
            Phase::New => match state.try_take(&self.key, self.owner) {
                Some(fence) => Some(fence),
                None => {
                    let wake = Wake::Task(cx.waker().clone());
                    if let Err(error) = state.enqueue(&self.key, self.owner, wake) {
                        self.phase = Phase::Done;
                        return Poll::Ready(Err(error));
                    }
                    self.phase = Phase::Queued;
                    None
                }
            },
            Phase::Queued => {
                let granted = state.granted(&self.key, self.owner);
                if granted.is_none() {
                    state.set_waker(&self.key, self.owner, cx.waker());
                }
                granted
            }
            Phase::Done => panic!("an async lock wait was polled after it completed"),
        };
        if let Some(fence) = granted {
            // From here on the guard owns the grant and releases it on drop.
            guard.push(self.key.clone(), fence);
            self.phase = Phase::Done;
            return Poll::Ready(Ok(()));
        }
        drop(state);

        if give_up.poll(cx).is_ready() {
            self.withdraw();
            return Poll::Ready(Err(LockError::Timeout));
        }
        Poll::Pending
    }
}

impl<K: Ord> AsyncWait<'_, K> {
    /// Leaves the queue, or passes the key on if it was handed over since the
    /// last look.
    fn withdraw(&mut self) {
        if self.phase != Phase::Queued {
            return;
        }
        self.phase = Phase::Done;
        let Some(mut state) = self.table.lock_for_drop() else {
            return;
        };
        let wake = state.cancel(&self.key, self.owner);
        drop(state);
        if let Some(wake) = wake {
            self.table.wake(wake);
        }
    }
}

impl<K: Ord> Drop for AsyncWait<'_, K> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// When a blocking acquisition stops waiting: never, or (production) at a
/// real instant, or (model checkers: no clock) by a give-up decision after
/// one unlocked gap, see [`LockTable::acquire`].
#[derive(Debug, Clone, Copy)]
enum Deadline {
    Never,
    #[cfg(not(any(loom, shuttle)))]
    At(std::time::Instant),
    #[cfg(any(loom, shuttle))]
    GiveUp,
}

impl Deadline {
    #[cfg(not(any(loom, shuttle)))]
    fn after(timeout: Option<Duration>) -> Self {
        // A deadline too far away to represent is never reached.
        match timeout.and_then(|timeout| std::time::Instant::now().checked_add(timeout)) {
            Some(at) => Deadline::At(at),
            None => Deadline::Never,
        }
    }

    #[cfg(any(loom, shuttle))]
    fn after(timeout: Option<Duration>) -> Self {
        match timeout {
            None => Deadline::Never,
            Some(_) => Deadline::GiveUp,
        }
    }

    /// Sleeps on `condvar`, unlocking `guard` meanwhile, until notified (or
    /// spuriously woken) or the deadline passes. Returns the relocked guard
    /// and whether the deadline has passed.
    fn wait<'a, T>(
        self,
        #[cfg_attr(not(any(loom, shuttle)), allow(unused_variables))] mutex: &'a Mutex<T>,
        condvar: &Condvar,
        guard: MutexGuard<'a, T>,
    ) -> (MutexGuard<'a, T>, bool) {
        match self {
            Deadline::Never => (condvar.wait(guard).expect(POISONED), false),
            #[cfg(not(any(loom, shuttle)))]
            Deadline::At(at) => {
                let now = std::time::Instant::now();
                let left = at.saturating_duration_since(now);
                if left.is_zero() {
                    return (guard, true);
                }
                let (guard, _) = condvar.wait_timeout(guard, left).expect(POISONED);
                (guard, std::time::Instant::now() >= at)
            }
            #[cfg(any(loom, shuttle))]
            Deadline::GiveUp => {
                // Let every other thread act in the gap (the checker explores
                // all of it), then decide: the timer has fired.
                drop(guard);
                (mutex.lock().expect(POISONED), true)
            }
        }
    }
}
