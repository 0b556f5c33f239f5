//! Deliberate bugs for the mutant check.
//!
//! Only builds with the `mutants` feature contain them; the test command
//! selects one (or a comma-separated few) at run time with
//! `TALLY_MUTANT=<name>` and asserts the proofs fail. Everywhere else
//! [`active`] is a constant `false` and the branches compile away.

/// Read once per process: CI runs its proofs (shuttle's million schedules,
/// the simulation's seeds) on the mutant build with none selected, and a
/// read of the environment on every call would slow them several-fold. The
/// selection never changes within a process.
#[cfg(feature = "mutants")]
pub fn active(name: &str) -> bool {
    static SELECTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    // A comma-separated selection switches several on at once: how a
    // mutant that another defence masks is shown caught once that defence
    // is off too (`.ci/mutants.sh`).
    SELECTED
        .get_or_init(|| std::env::var("TALLY_MUTANT").ok())
        .as_deref()
        .is_some_and(|selected| selected.split(',').any(|m| m == name))
}

#[cfg(not(feature = "mutants"))]
pub const fn active(_name: &str) -> bool {
    false
}
