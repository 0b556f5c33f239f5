//! The core's `LockManager` over `tally-lock`.

use std::time::Duration;

use tally_core::store::{Fenced, Fences, LockError, LockKey, LockManager, LockSet};
use tally_core::time::Clock;
use tally_lock::{Config, Guard, LockTable};

/// In-memory locks. Waiting is asynchronous (callers may be tokio tasks or
/// shuttle futures); the timeout runs on the injected clock, so the
/// simulation's time and a test's manual clock govern it.
#[derive(Clone, Debug)]
pub struct MemLocks<C> {
    table: LockTable<LockKey>,
    clock: C,
}

impl<C: Clock + Clone> MemLocks<C> {
    pub fn new(clock: C, config: Config) -> MemLocks<C> {
        MemLocks { table: LockTable::new(config), clock }
    }

    pub fn table(&self) -> &LockTable<LockKey> {
        &self.table
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
        let give_up = self.clock.sleep(timeout);
        let table = self.table.clone();
        async move {
            let guard = table.acquire_async(keys, give_up).await.map_err(|error| match error {
                tally_lock::LockError::Timeout => LockError::Timeout,
                tally_lock::LockError::QueueFull => LockError::QueueFull,
            })?;
            Ok(MemGuard(guard))
        }
    }
}
