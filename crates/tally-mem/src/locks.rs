//! The core's `LockManager` over `tally-lock`, timing out (and, with a
//! lease, ending grants) on the injected clock.

use std::future::poll_fn;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tally_core::store::{Fenced, Fences, LockError, LockKey, LockManager, LockSet};
use tally_core::time::Clock;
use tally_lock::{Config, Guard, Lease, LockTable};

/// The mutant (`.ci/mutants.sh`) whose lock waits never time out: a request
/// behind a holder that does not let go waits forever.
const LOCK_WAIT_UNBOUNDED: &str = "lock_wait_unbounded";

/// In-memory locks. Waiting is asynchronous (callers may be tokio tasks or
/// shuttle futures); the timeout runs on the injected clock, so the
/// simulation's time and a test's manual clock govern it.
///
/// With a lease ([`MemLocks::with_lease`]) a grant its holder has not
/// released within the lease ends on the holder's behalf, measured on the
/// same clock: a waiter for one of its keys ends it when the lease is over
/// (each waiter watches the leases of the keys it waits for, since the table
/// has no timers), and a newcomer takes a key whose lease is over if nobody
/// waits for it. The next holder's fencing tokens are larger, so a store
/// that checks them refuses what the paused holder does afterwards.
#[derive(Clone, Debug)]
pub struct MemLocks<C> {
    table: LockTable<LockKey>,
    clock: C,
}

impl<C: Clock + Clone> MemLocks<C> {
    /// Grants last until their guard drops.
    pub fn new(clock: C, config: Config) -> MemLocks<C> {
        MemLocks { table: LockTable::new(config), clock }
    }

    /// Grants end after `lease` of `clock`'s time unless released first.
    pub fn with_lease(clock: C, config: Config, lease: Duration) -> MemLocks<C> {
        let reader = clock.clone();
        let lease = Lease { length: lease, clock: Box::new(move || since_epoch(&reader)) };
        MemLocks { table: LockTable::with_lease(config, lease), clock }
    }

    pub fn table(&self) -> &LockTable<LockKey> {
        &self.table
    }
}

/// The clock's now as the lock table's lease clock reads it. Times before
/// 1970 read as its start: no injected clock goes there.
fn since_epoch(clock: &impl Clock) -> Duration {
    Duration::from_millis(u64::try_from(clock.now().0).unwrap_or(0))
}

/// Ends the leases of `keys` that run out, as they run out, for as long as
/// it is polled (never finishes). A waiter polls it while it waits, so the
/// holder it waits behind loses the keys once its lease is over.
async fn watch_leases<C: Clock>(table: LockTable<LockKey>, keys: Vec<LockKey>, clock: C, lease: Duration) {
    loop {
        // None: no key of the set is held under a lease right now; a key is
        // handed to us then, or taken by a newcomer whose lease we look at
        // after one lease at most.
        let wait = match table.expire_leases(&keys) {
            Some(ends) => ends.saturating_sub(since_epoch(&clock)),
            None => lease,
        };
        // At least a millisecond: the clock does not move inside one poll.
        clock.sleep(wait.max(Duration::from_millis(1))).await;
    }
}

/// A grant of [`MemLocks`]: the lock table's guard, naming its tokens to the
/// store.
#[derive(Debug)]
pub struct MemGuard(Guard<LockKey>);

impl Fenced for MemGuard {
    fn fences(&self) -> Fences {
        Fences::new(self.0.keys().iter().map(|key| (key.clone(), self.0.fence(key).expect("a guard holds its keys"))))
    }
}

impl<C: Clock + Clone> LockManager for MemLocks<C> {
    type Guard = MemGuard;

    fn acquire(&self, keys: &LockSet, timeout: Duration) -> impl Future<Output = Result<MemGuard, LockError>> + Send {
        let keys = keys.keys().to_vec();
        // The mutant waits without a deadline (a zero wait still tries once).
        let bounded = timeout.is_zero() || !tally_core::mutant::active(LOCK_WAIT_UNBOUNDED);
        let timer = self.clock.sleep(timeout);
        let watch =
            self.table.lease().map(|lease| watch_leases(self.table.clone(), keys.clone(), self.clock.clone(), lease));
        let table = self.table.clone();
        async move {
            let mut timer = pin!(timer);
            let mut watch = pin!(watch);
            // Give up when the timer fires; meanwhile, end the leases we wait behind.
            let give_up = poll_fn(move |cx| {
                if bounded && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                if let Some(watch) = watch.as_mut().as_pin_mut() {
                    let _never = watch.poll(cx);
                }
                Poll::Pending
            });
            let guard = table.acquire_async(keys, give_up).await.map_err(|error| match error {
                tally_lock::LockError::Timeout => LockError::Timeout,
                tally_lock::LockError::QueueFull => LockError::QueueFull,
            })?;
            Ok(MemGuard(guard))
        }
    }
}
