//! Deliberate bugs that the model checkers must catch.
//!
//! A test suite that never fails proves nothing about its own strength. Each
//! mutant is a small, named bug wired into production code behind
//! `if mutant::active(NAME)`. The branches exist only when the crate is built
//! with the `mutants` feature; the run picks one with the `TALLY_MUTANT`
//! environment variable. In every other build [`active`] is a `const fn`
//! returning `false`, so the optimiser deletes the branches and shipped code
//! carries no trace of them.
//!
//! `.ci/loom.sh` builds the mutants and asserts that the loom suite fails for
//! each one. Other crates reuse [`active`] for their own mutants.

/// Mutant: a release with waiters marks the key free but neither hands it to
/// the head waiter nor wakes anyone (a lost wake-up).
pub const LOCK_LOST_WAKEUP: &str = "lock_lost_wakeup";

/// Mutant: hand-off goes to the newest waiter instead of the oldest (LIFO).
pub const LOCK_LIFO: &str = "lock_lifo";

/// Mutant: a guard whose lease ran out releases the key on drop, ending the
/// grant of whoever holds it now.
pub const LOCK_STALE_RELEASE: &str = "lock_stale_release";
/// Mutant: a queued wait that is withdrawn after the key was handed to it
/// drops the grant instead of passing it on; later waiters sleep forever.
pub const LOCK_CANCEL_DROPS_GRANT: &str = "lock_cancel_drops_grant";

/// Mutant: fencing tokens are counted per key and restart when a key goes
/// idle (its entry is forgotten), so a later grant can repeat a token.
pub const LOCK_FENCE_PER_KEY: &str = "lock_fence_per_key";

/// Mutant: an acquisition takes its keys in the order given, not sorted.
pub const LOCK_UNSORTED: &str = "lock_unsorted";

/// Mutant: a blocking acquisition that times out keeps the keys it had
/// already taken.
pub const LOCK_TIMEOUT_KEEPS_PREFIX: &str = "lock_timeout_keeps_prefix";

/// Mutant: a hand-off to an async waiter never calls its waker.
pub const LOCK_TASK_NOT_WOKEN: &str = "lock_task_not_woken";

/// Mutant: a held key without waiters counts as free, so a newcomer is
/// granted it beside its holder.
pub const LOCK_DOUBLE_GRANT: &str = "lock_double_grant";

/// Mutant: a blocking wait whose key was handed to it just as its deadline
/// passed reports a timeout and keeps the grant, so nobody else gets the key.
pub const LOCK_TIMEOUT_STRANDS_GRANT: &str = "lock_timeout_strands_grant";

/// The environment variable that names the active mutant.
pub const ENV_VAR: &str = "TALLY_MUTANT";

/// Is the mutant called `name` switched on for this run?
///
/// Reads [`ENV_VAR`] once per process (the selection never changes within
/// one): CI runs shuttle's million schedules on the mutant build with none
/// selected, and a read of the environment per lock operation would slow it.
#[cfg(feature = "mutants")]
pub fn active(name: &str) -> bool {
    static SELECTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    // A comma-separated selection switches several on at once: how a
    // mutant that another defence masks is shown caught once that defence
    // is off too (`.ci/mutants.sh`).
    SELECTED
        .get_or_init(|| std::env::var(ENV_VAR).ok())
        .as_deref()
        .is_some_and(|selected| selected.split(',').any(|m| m == name))
}

/// Is the mutant called `name` switched on for this run? Never, in this build:
/// it was compiled without the `mutants` feature.
#[cfg(not(feature = "mutants"))]
#[inline(always)]
pub const fn active(name: &str) -> bool {
    let _ = name;
    false
}
