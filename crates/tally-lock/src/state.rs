//! The table's state behind its one mutex, and the rules that change it.
//!
//! This module owns the grant and hand-off protocol: who holds each key, who
//! waits for it in which order, which fencing token a grant gets, and what
//! happens when a holder releases or a waiter gives up. It performs no
//! blocking and touches no clock; every method runs inside the critical
//! section of `LockTable`'s mutex, so each one is atomic with respect to all
//! others. Methods that make a waiter the new holder return its [`Wake`]
//! instead of waking it, so the caller can wake it after unlocking (a waker
//! may run arbitrary code, including code that takes this mutex).
//!
//! Keys that nobody holds or waits for have no entry at all: the map holds only
//! busy keys, so memory is bounded by the work in flight.

use std::collections::{BTreeMap, VecDeque};
use std::task::Waker;

use crate::LockError;
use crate::mutant;

/// Identity of one acquisition, i.e. of one (future) [`crate::Guard`]. An
/// acquisition of several keys is one owner throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner(u64);

impl Owner {
    /// Which of `shards` condition variables this acquisition sleeps on.
    pub(crate) fn shard(self, shards: usize) -> usize {
        let shards = u64::try_from(shards).expect("shard count fits in u64");
        usize::try_from(self.0 % shards).expect("a shard index is below the shard count")
    }
}

/// How to wake a waiter after a key has been handed to it. The caller does the
/// waking after unlocking the table: the grant itself is already recorded in
/// the state, so waking late never loses it.
#[derive(Debug)]
pub(crate) enum Wake {
    /// A thread blocked in `LockTable::acquire`, sleeping on the table's
    /// condition variable number `shard`.
    Thread { shard: usize },
    /// A task waiting in `LockTable::acquire_async`.
    Task(Waker),
}

/// The current grant of a key.
#[derive(Debug, Clone, Copy)]
struct Holder {
    owner: Owner,
    fence: u64,
}

/// One queued acquisition.
#[derive(Debug)]
struct Waiter {
    owner: Owner,
    wake: Wake,
}

/// A busy key: held, or (only under the lost-wake-up mutant) abandoned with
/// waiters still queued.
#[derive(Debug)]
struct Entry {
    holder: Option<Holder>,
    /// Oldest first.
    queue: VecDeque<Waiter>,
    /// The token of the latest grant of this key while it has had an entry;
    /// kept only to assert that tokens increase.
    last_fence: u64,
}

impl Entry {
    fn is_idle(&self) -> bool {
        self.holder.is_none() && self.queue.is_empty()
    }

    fn is_queued(&self, owner: Owner) -> bool {
        self.queue.iter().any(|waiter| waiter.owner == owner)
    }

    /// Invariants of one entry after every change.
    fn check(&self, max_waiters: usize) {
        check!(self.queue.len() <= max_waiters, "queue over its bound");
        if let Some(holder) = self.holder {
            check!(!self.is_queued(holder.owner), "the holder of a key is also queued for it");
            check!(holder.fence == self.last_fence, "holder's fence is stale");
        } else {
            // Direct hand-off means a key with waiters is never free. The
            // lost-wake-up mutant breaks exactly this; the assertion steps
            // aside for it so that the behavioural loom model, not this line,
            // has to catch the bug.
            check!(self.queue.is_empty() || mutant::active(mutant::LOCK_LOST_WAKEUP), "a free key has waiters");
        }
    }
}

/// Everything behind the table mutex.
#[derive(Debug)]
pub(crate) struct State<K> {
    /// Busy keys only; an idle key's entry is removed.
    entries: BTreeMap<K, Entry>,
    /// The latest fencing token issued for any key. One table-wide counter
    /// makes tokens strictly increasing per key without remembering idle keys.
    last_fence: u64,
    /// The latest owner id issued.
    last_owner: u64,
    max_waiters: usize,
}

/// Issues the next fencing token. A `u64` issued once per grant does not run
/// out (585 years at a billion grants per second); if it ever did, reusing a
/// token would break fencing, so that is a crash, not a wrap.
fn next_fence(last_fence: &mut u64) -> u64 {
    *last_fence = last_fence.checked_add(1).expect("fencing tokens exhausted");
    *last_fence
}

impl<K: Ord> State<K> {
    pub(crate) fn new(max_waiters: usize) -> Self {
        State { entries: BTreeMap::new(), last_fence: 0, last_owner: 0, max_waiters }
    }

    /// A fresh identity for one acquisition.
    pub(crate) fn new_owner(&mut self) -> Owner {
        self.last_owner = self.last_owner.checked_add(1).expect("owner ids exhausted");
        Owner(self.last_owner)
    }

    /// Is `key` free for a newcomer? Only a key without an entry is: an entry
    /// means a holder or waiters, and a newcomer must not barge past waiters.
    fn is_free(&self, key: &K) -> bool {
        if mutant::active(mutant::LOCK_DOUBLE_GRANT) {
            return self.entries.get(key).is_none_or(|entry| entry.queue.is_empty());
        }
        !self.entries.contains_key(key)
    }

    /// The token of `owner`'s grant of `key`, if `key` has been granted to it.
    pub(crate) fn granted(&self, key: &K, owner: Owner) -> Option<u64> {
        let entry = self.entries.get(key)?;
        let holder = entry.holder.filter(|holder| holder.owner == owner)?;
        debug_assert!(!entry.is_queued(owner));
        Some(holder.fence)
    }

    /// Queues `owner` for the busy `key`. The caller has just seen `key` busy
    /// in the same critical section.
    pub(crate) fn enqueue(&mut self, key: &K, owner: Owner, wake: Wake) -> Result<(), LockError> {
        let entry = self.entries.get_mut(key).expect("enqueue on a key that is not busy");
        check!(!entry.is_idle());
        // Keys of one acquisition are de-duplicated, so it never waits for a
        // key it holds, and it waits for one key at a time.
        check!(entry.holder.is_none_or(|holder| holder.owner != owner));
        debug_assert!(!entry.is_queued(owner));
        if entry.queue.len() >= self.max_waiters {
            return Err(LockError::QueueFull);
        }
        entry.queue.push_back(Waiter { owner, wake });
        entry.check(self.max_waiters);
        Ok(())
    }

    /// Replaces the waker of `owner`'s queued wait for `key`, unless the stored
    /// one would wake the same task anyway.
    pub(crate) fn set_waker(&mut self, key: &K, owner: Owner, waker: &Waker) {
        let waiter = self
            .entries
            .get_mut(key)
            .and_then(|entry| entry.queue.iter_mut().find(|waiter| waiter.owner == owner))
            .expect("set_waker for an acquisition that is not queued");
        match &mut waiter.wake {
            Wake::Task(stored) => {
                if !stored.will_wake(waker) {
                    stored.clone_from(waker);
                }
            }
            Wake::Thread { .. } => unreachable!("a blocking waiter has no waker"),
        }
    }

    /// Releases `owner`'s grant of `key`, handing the key to the next waiter if
    /// there is one. Returns that waiter's wake-up, to be called after
    /// unlocking.
    #[must_use = "the new holder must be woken"]
    pub(crate) fn release(&mut self, key: &K, owner: Owner) -> Option<Wake> {
        let entry = self.entries.get_mut(key).expect("release of a key that is not held");
        let holder = entry.holder.expect("release of a key that is not held");
        assert!(holder.owner == owner, "release by an acquisition that does not hold the key");

        entry.holder = None;
        let next = if mutant::active(mutant::LOCK_LOST_WAKEUP) && !entry.queue.is_empty() {
            // Mutant: the key looks free, but the waiters stay queued and
            // asleep.
            None
        } else if mutant::active(mutant::LOCK_LIFO) {
            entry.queue.pop_back()
        } else {
            entry.queue.pop_front()
        };

        let wake = next.map(|waiter| {
            let fence = if mutant::active(mutant::LOCK_FENCE_PER_KEY) {
                entry.last_fence + 1
            } else {
                next_fence(&mut self.last_fence)
            };
            check!(fence > entry.last_fence, "fencing token did not increase");
            entry.last_fence = fence;
            entry.holder = Some(Holder { owner: waiter.owner, fence });
            waiter.wake
        });
        entry.check(self.max_waiters);
        if entry.is_idle() {
            self.entries.remove(key);
        }
        wake
    }

    /// Withdraws `owner`'s wait for `key` (it timed out or was dropped). If the
    /// key was handed to it in the meantime, the grant is released onward, so
    /// it is never lost. Returns the wake-up of a new holder, if any.
    #[must_use = "the new holder must be woken"]
    pub(crate) fn cancel(&mut self, key: &K, owner: Owner) -> Option<Wake> {
        let entry = self.entries.get_mut(key).expect("cancel of a wait for a key that is not busy");
        if let Some(index) = entry.queue.iter().position(|waiter| waiter.owner == owner) {
            let _withdrawn = entry.queue.remove(index);
            entry.check(self.max_waiters);
            if entry.is_idle() {
                // Reachable only under the lost-wake-up mutant: otherwise a
                // key with waiters has a holder.
                self.entries.remove(key);
            }
            return None;
        }
        assert!(
            entry.holder.is_some_and(|holder| holder.owner == owner),
            "cancel of a wait that is neither queued nor granted"
        );
        if mutant::active(mutant::LOCK_CANCEL_DROPS_GRANT) {
            // Mutant: the grant vanishes with the wait; the queue stays asleep.
            entry.holder = None;
            if entry.is_idle() {
                self.entries.remove(key);
            }
            return None;
        }
        self.release(key, owner)
    }

    /// Is nothing held and nothing queued?
    pub(crate) fn is_idle(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many acquisitions wait for `key` (not counting its holder).
    pub(crate) fn waiters(&self, key: &K) -> usize {
        self.entries.get(key).map_or(0, |entry| entry.queue.len())
    }

    /// The fencing token of the current grant of `key`, if it is held.
    pub(crate) fn holder_fence(&self, key: &K) -> Option<u64> {
        self.entries.get(key)?.holder.map(|holder| holder.fence)
    }
}

impl<K: Ord + Clone> State<K> {
    /// Grants `key` to `owner` if it is free. Returns the grant's token.
    pub(crate) fn try_take(&mut self, key: &K, owner: Owner) -> Option<u64> {
        if !self.is_free(key) {
            return None;
        }
        let fence = if mutant::active(mutant::LOCK_FENCE_PER_KEY) { 1 } else { next_fence(&mut self.last_fence) };
        self.entries.insert(
            key.clone(),
            Entry { holder: Some(Holder { owner, fence }), queue: VecDeque::new(), last_fence: fence },
        );
        Some(fence)
    }

    /// Grants every key in `keys` to `owner` if all are free, else none.
    /// Returns the tokens in the order of `keys`.
    pub(crate) fn try_take_all(&mut self, keys: &[K], owner: Owner) -> Option<Vec<u64>> {
        if !keys.iter().all(|key| self.is_free(key)) {
            return None;
        }
        let fences = keys
            .iter()
            .map(|key| self.try_take(key, owner).expect("a key checked free in this critical section is free"))
            .collect();
        Some(fences)
    }
}

#[cfg(all(test, not(any(loom, shuttle))))]
mod tests {
    use super::*;

    fn thread_wake() -> Wake {
        Wake::Thread { shard: 0 }
    }

    /// A fresh state (four waiters per key at most) and `N` owners of it.
    fn with_owners<K: Ord, const N: usize>() -> (State<K>, [Owner; N]) {
        let mut state = State::new(4);
        let owners = std::array::from_fn(|_| state.new_owner());
        (state, owners)
    }

    #[test]
    fn hand_off_goes_to_the_oldest_waiter_with_a_larger_fence() {
        let (mut state, [a, b, c]) = with_owners();
        let fence_a = state.try_take(&"k", a).unwrap();
        assert_eq!(state.try_take(&"k", b), None);
        state.enqueue(&"k", b, thread_wake()).unwrap();
        state.enqueue(&"k", c, thread_wake()).unwrap();

        assert!(state.release(&"k", a).is_some());
        let fence_b = state.granted(&"k", b).unwrap();
        assert!(fence_b > fence_a);
        assert_eq!(state.granted(&"k", c), None);
        assert_eq!(state.waiters(&"k"), 1);

        assert!(state.release(&"k", b).is_some());
        let fence_c = state.granted(&"k", c).unwrap();
        assert!(fence_c > fence_b);
        assert!(state.release(&"k", c).is_none());
        assert!(state.is_idle());
    }

    #[test]
    fn cancel_after_grant_passes_the_key_on() {
        let (mut state, [a, b, c]) = with_owners();
        state.try_take(&1, a).unwrap();
        state.enqueue(&1, b, thread_wake()).unwrap();
        state.enqueue(&1, c, thread_wake()).unwrap();
        assert!(state.release(&1, a).is_some());
        // `b` gave up after it was granted: the grant moves on to `c`.
        assert!(state.cancel(&1, b).is_some());
        assert!(state.granted(&1, c).is_some());
        // `c` gives up after its grant too: nobody is left, the key goes idle.
        assert!(state.cancel(&1, c).is_none());
        assert!(state.is_idle());
    }

    #[test]
    fn cancel_while_queued_only_leaves_the_queue() {
        let (mut state, [a, b]) = with_owners();
        let fence = state.try_take(&1, a).unwrap();
        state.enqueue(&1, b, thread_wake()).unwrap();
        assert!(state.cancel(&1, b).is_none());
        assert_eq!(state.waiters(&1), 0);
        assert_eq!(state.holder_fence(&1), Some(fence));
        assert!(state.release(&1, a).is_none());
        assert!(state.is_idle());
    }

    #[test]
    fn try_take_all_is_all_or_nothing() {
        let (mut state, [a, b]) = with_owners();
        state.try_take(&2, a).unwrap();
        assert_eq!(state.try_take_all(&[1, 2, 3], b), None);
        assert_eq!(state.holder_fence(&1), None);
        assert_eq!(state.holder_fence(&3), None);
        let fences = state.try_take_all(&[1, 3], b).unwrap();
        assert_eq!(fences.len(), 2);
        assert!(fences[0] < fences[1]);
    }

    #[test]
    #[should_panic(expected = "does not hold the key")]
    fn release_by_a_stranger_is_a_bug() {
        let (mut state, [a, b]) = with_owners();
        state.try_take(&1, a).unwrap();
        let _ = state.release(&1, b);
    }
}
