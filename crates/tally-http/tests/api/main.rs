//! Black-box tests of the HTTP API on the in-memory backend: one test binary,
//! one module per area (matklad's and zero2prod's layout).

mod bad_input;
mod concurrency;
mod errors;
mod helpers;
mod idempotency;
mod ops;
mod payments;
mod users;
mod wallet;
