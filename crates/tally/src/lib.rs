//! The `tally` binary's library: the wiring of `tally serve` and
//! `tally migrate`, the `tally load` tool, and the production clock and id
//! generator. `main.rs` only parses the command line and calls in here, so
//! the end-to-end tests run exactly this wiring.

pub mod load;
pub mod runtime;
pub mod serve;
