//! The one door through which this crate, and the in-memory backend built on
//! it, reach synchronisation primitives.
//!
//! Everything that can block or be shared between threads (`Arc`, `Mutex`,
//! `Condvar`) is imported from here and never from `std::sync` directly. Under
//! `--cfg loom` the names resolve to loom's instrumented types, under
//! `--cfg shuttle` to shuttle's, and otherwise to `std`'s, so the model checkers
//! explore exactly the code that ships. Only what both checkers provide is
//! re-exported (no `Weak`, no `OnceLock`, no `const` constructors).
//!
//! Neither loom's nor shuttle's `Condvar::wait_timeout` ever times out (both are
//! documented TODOs in their sources), and real clocks would make a model
//! nondeterministic, so timed waits are modelled differently under the
//! checkers; see `table::Deadline`.

#[cfg(all(loom, shuttle))]
compile_error!("`--cfg loom` and `--cfg shuttle` select different model checkers; enable only one");

#[cfg(loom)]
pub use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(all(shuttle, not(loom)))]
pub use shuttle::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(not(any(loom, shuttle)))]
pub use std::sync::{Arc, Condvar, Mutex, MutexGuard};
