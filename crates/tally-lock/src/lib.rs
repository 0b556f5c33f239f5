//! Tally's in-memory lock manager: exclusive, FIFO, bounded, fenced locks on
//! keys, shared by every request handler of one process.
//!
//! This crate owns the answer to "who may touch this payment right now?". A
//! caller names a set of keys and gets back a [`Guard`] holding all of them;
//! dropping the guard releases them.
//!
//! # Guarantees
//!
//! * **Mutual exclusion.** At most one guard holds a key at any time.
//! * **FIFO.** Waiters for one key are granted it in the order they queued, and
//!   a newcomer never barges past a waiter: a key with a queue is busy even at
//!   the instant its holder lets go, because the releaser hands it straight to
//!   the head waiter under the table mutex ("direct hand-off").
//! * **Bounded queues.** Past [`Config::max_waiters_per_key`] waiters, a new
//!   waiter fails at once with [`LockError::QueueFull`] instead of piling up.
//! * **No deadlock between acquisitions.** All keys of one acquisition are
//!   sorted, de-duplicated and taken one at a time in ascending `Ord` order,
//!   holding the earlier ones while waiting for the later ones. Every caller
//!   climbs the same global order, so no cycle of waiters can form.
//! * **Fencing tokens.** Every grant of a key carries a `u64` token that is
//!   strictly larger than that of every earlier grant of the same key, also
//!   across periods when the key is idle. Tokens come from one table-wide
//!   counter, so an idle key needs no memory at all; the cost is that tokens of
//!   one key are increasing but not consecutive.
//! * **Leases (optional).** A table made with [`LockTable::with_lease`] ends a
//!   grant its holder has not released within the lease, on the holder's
//!   behalf, when a waiter asks ([`LockTable::expire_leases`]) or a newcomer
//!   finds the key unawaited: the key goes to the next waiter with a larger
//!   token, exactly as on a release. The old holder is not told (it may be
//!   paused); its guard's drop then leaves the later grants alone. Mutual
//!   exclusion then holds per *current* grant only: a holder whose lease
//!   ran out can still act, which is what its stale fencing token lets a
//!   store refuse. Without a lease (the default) nothing expires.
//! * **No lost grant.** A waiter that gives up (timeout, or its future being
//!   dropped) removes itself from the queue under the mutex; if the key was
//!   handed to it in the meantime it releases the key onward, so a grant is
//!   never stranded.
//!
//! # Waiting
//!
//! [`LockTable::acquire`] blocks the calling thread, [`LockTable::try_acquire`]
//! never waits, and [`LockTable::acquire_async`] is a runtime-agnostic future.
//! All three share one synchronous core (the table state behind a mutex); the
//! async path is a thin adapter that parks a [`std::task::Waker`] where the
//! blocking path parks a condition variable.
//!
//! # Model checking
//!
//! All synchronisation goes through the [`sync`] facade, so the same code
//! runs on `std`, on loom (`--cfg loom`, exhaustive: `tests/loom.rs`) and on
//! shuttle (`--cfg shuttle`). Under both checkers a timed wait is modelled as
//! "give up at some point after queueing", because neither implements
//! `Condvar::wait_timeout` and real clocks would break determinism; see
//! [`LockTable::acquire`]. Deliberate bugs for checking the checkers live in
//! [`mutant`].

/// Asserts an invariant. It is a full `assert!` in every build that exists to
/// find bugs (debug builds, loom and shuttle, which run in release mode) and
/// compiles to nothing in a plain release build, where it would sit on the hot
/// path of every lock operation.
macro_rules! check {
    ($($arg:tt)*) => {
        if cfg!(any(debug_assertions, loom, shuttle)) {
            assert!($($arg)*);
        }
    };
}

mod guard;
pub mod mutant;
mod state;
pub mod sync;
mod table;

pub use guard::Guard;
pub use table::LockTable;

use std::time::Duration;

/// How many waiters one key may have by default. A payment key normally has
/// zero or one waiter (a client retry); a thousand means something upstream is
/// hammering one payment, and failing fast protects the rest of the process.
pub const DEFAULT_MAX_WAITERS_PER_KEY: usize = 1024;

/// Limits of a [`LockTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How many acquisitions may queue for one key (not counting its holder).
    /// An acquisition that would be one more fails at once with
    /// [`LockError::QueueFull`]. Zero means "never queue": contention fails.
    pub max_waiters_per_key: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_waiters_per_key: DEFAULT_MAX_WAITERS_PER_KEY }
    }
}

/// How long a grant lasts unless its holder releases it first, on a clock
/// the table's owner supplies (the table has none: it stays deterministic
/// under the model checkers, and the in-memory backend passes its injected
/// clock). The clock must not go backwards.
pub struct Lease {
    pub length: Duration,
    /// Now, as a duration since any fixed origin.
    pub clock: Box<dyn Fn() -> Duration + Send + Sync>,
}

impl Lease {
    fn now(&self) -> Duration {
        (self.clock)()
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("length", &self.length).finish_non_exhaustive()
    }
}

/// Why an acquisition returned without a guard. In every case the acquisition
/// holds nothing and waits for nothing any more: keys it had already taken were
/// released.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockError {
    /// The caller stopped waiting: the timeout passed, the `give_up` future
    /// resolved, or (for [`LockTable::try_acquire`], a wait of zero length) a
    /// key was busy. Also: under a lease, a key was handed to the caller and
    /// its lease ran out before the caller took it up.
    #[error("lock wait timed out")]
    Timeout,
    /// A key already had [`Config::max_waiters_per_key`] waiters.
    #[error("too many waiters for one key")]
    QueueFull,
}
