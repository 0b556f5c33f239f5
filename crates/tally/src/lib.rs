//! The `tally` binary's library: the wiring of `tally serve` and
//! `tally migrate`, and the production clock and id generator (`tally load`
//! is the `tally-load` crate). `main.rs` only parses the command line and calls in here, so
//! the end-to-end tests run exactly this wiring.

pub mod alerts;
pub mod check;
pub use tally_load as load;
pub mod runtime;
pub mod serve;
