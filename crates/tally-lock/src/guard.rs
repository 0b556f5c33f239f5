//! [`Guard`]: proof of holding a set of keys, and their release on drop.

use std::fmt;

use crate::state::{Owner, Wake};
use crate::table::LockTable;

/// Exclusive hold of a set of keys, each with its fencing token. Dropping the
/// guard releases every key, handing each one to its oldest waiter.
///
/// Under a [`Lease`](crate::Lease) the hold of a key may end before the
/// guard drops (the guard is not told); the guard's tokens then name a grant
/// that is over, which is what a store checking them refuses, and its drop
/// leaves the key's later grants alone.
///
/// A guard is also the accumulator of an acquisition in progress: keys are
/// pushed as they are granted, in ascending order, so if the acquisition fails
/// half-way the partial guard drops and releases what it had.
pub struct Guard<K: Ord> {
    table: LockTable<K>,
    owner: Owner,
    /// Sorted, without duplicates.
    keys: Vec<K>,
    /// `fences[i]` is the token of the grant of `keys[i]`.
    fences: Vec<u64>,
}

impl<K: Ord> Guard<K> {
    /// An empty guard for `owner`, with room for `capacity` keys so that
    /// [`Guard::push`] never allocates (and so never panics) between a grant
    /// and its recording.
    pub(crate) fn new(table: LockTable<K>, owner: Owner, capacity: usize) -> Self {
        Guard { table, owner, keys: Vec::with_capacity(capacity), fences: Vec::with_capacity(capacity) }
    }

    pub(crate) fn owner(&self) -> Owner {
        self.owner
    }

    /// Records the grant of `key` with token `fence`.
    pub(crate) fn push(&mut self, key: K, fence: u64) {
        check!(self.keys.last().is_none_or(|last| *last < key), "keys must be granted in ascending order");
        self.keys.push(key);
        self.fences.push(fence);
    }

    /// The keys held, sorted and without duplicates.
    pub fn keys(&self) -> &[K] {
        &self.keys
    }

    /// The fencing token of this guard's grant of `key`, or `None` if the guard
    /// does not hold `key`. Pass it to anything that must reject writes from a
    /// holder whose hold has since ended: a later grant of the same key always
    /// has a larger token.
    pub fn fence(&self, key: &K) -> Option<u64> {
        let index = self.keys.binary_search(key).ok()?;
        Some(self.fences[index])
    }
}

impl<K: Ord> Drop for Guard<K> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let now = self.table.now();
        let Some(mut state) = self.table.lock_for_drop() else {
            // The table is poisoned and this thread is already unwinding;
            // panicking again would abort the process.
            return;
        };
        let wakes: Vec<Wake> = self.keys.iter().filter_map(|key| state.release(key, self.owner, now)).collect();
        drop(state);
        for wake in wakes {
            self.table.wake(wake);
        }
    }
}

impl<K: Ord + fmt::Debug> fmt::Debug for Guard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("owner", &self.owner)
            .field("keys", &self.keys)
            .field("fences", &self.fences)
            .finish()
    }
}
