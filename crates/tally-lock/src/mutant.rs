//! Deliberate bugs that the model checkers must catch.
//!
//! A test suite that never fails proves nothing about its own strength. Each
//! mutant is a small, named bug wired into production code behind
//! `if mutant::active(NAME)`. The branches exist only when the crate is built
//! with `--cfg tally_mutants`; the run picks one with the `TALLY_MUTANT`
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

/// The environment variable that names the active mutant.
pub const ENV_VAR: &str = "TALLY_MUTANT";

/// Is the mutant called `name` switched on for this run?
///
/// Reads [`ENV_VAR`] on every call. That is slow but only ever compiled into
/// mutant builds, and it keeps the answer correct under loom, which re-runs the
/// whole model many times in one process.
#[cfg(tally_mutants)]
pub fn active(name: &str) -> bool {
    std::env::var(ENV_VAR).is_ok_and(|value| value == name)
}

/// Is the mutant called `name` switched on for this run? Never, in this build:
/// it was compiled without `--cfg tally_mutants`.
#[cfg(not(tally_mutants))]
#[inline(always)]
pub const fn active(name: &str) -> bool {
    let _ = name;
    false
}
