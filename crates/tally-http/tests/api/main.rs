//! Black-box tests of the HTTP API on the in-memory backend: one test binary,
//! one module per area (matklad's and zero2prod's layout).

mod bad_input;
mod catalog;
mod client;
mod concurrency;
mod errors;
mod gateway;
mod helpers;
mod idempotency;
mod limits;
mod one_step;
mod ops;
mod orders;
mod payback;
mod payments;
mod queue;
mod users;
mod wallet;
