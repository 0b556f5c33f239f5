//! Deliberate bugs for the mutant check.
//!
//! Only builds with `--cfg tally_mutants` contain them; the test command
//! selects one at run time with `TALLY_MUTANT=<name>` and asserts the proofs
//! fail. Everywhere else [`active`] is a constant `false` and the branches
//! compile away.

#[cfg(tally_mutants)]
pub fn active(name: &str) -> bool {
    std::env::var("TALLY_MUTANT").is_ok_and(|selected| selected == name)
}

#[cfg(not(tally_mutants))]
pub const fn active(_name: &str) -> bool {
    false
}
