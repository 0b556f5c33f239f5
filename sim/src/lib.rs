//! `tally-sim`: a deterministic simulation of a whole Tally deployment.
//!
//! One seed builds one deployment on [turmoil]: one to three `tally` server
//! hosts serving the real router (`tally-http`) over the real use cases
//! (`tally-core`), all sharing one in-memory database (`tally-mem`, with its
//! lock table as the database's row locks); a payment-gateway host running
//! `tally-gateway`'s fake; and client hosts that top up, pay, confirm and
//! cancel, order scarce products and queued seats, and pay, cancel or
//! abandon their orders, like real clients — timeouts, retries with the same
//! `Idempotency-Key`, duplicates in flight, retries to another server — and
//! like adversarial customers (issue 10): reusing payment keys across
//! payments and users, spending their cashback before cancelling, living at
//! their `max_balance` and tight limits, paying across a UTC midnight or
//! month end, hoarding seats with one queue token, naming their own
//! `payback_amount`. On some seeds another merchant charges some of those
//! payment keys at the gateway first. Faults are drawn per seed (among them
//! server clocks lagging the database's, and a gateway charging the wrong
//! amount); after the run, the oracle judges the final store, the history,
//! the confirms our servers sent and the gateway's books, per payment key and
//! per order id.
//!
//! # Layout
//!
//! - [`run`]: one seed from deployment to judgement ([`run::run_seed`]).
//! - [`plan`]: what a seed deploys, how its clients behave, which faults it draws.
//! - [`server`]: a server host, wired as `tally serve` is.
//! - [`workload`]: the operation table and the client loop.
//! - [`catalogue`]: the products and event a seed sells, created before the run.
//! - [`store`]: the shared database, with round-trip latency and a monitor.
//! - [`gateway`]: the servers' gateway client over simulated HTTP.
//! - [`net`]: turmoil's listener for axum, and a one-shot HTTP client.
//! - [`oracle`]: the checks after every seed.
//! - [`journal`]: the event log (its hash is the determinism check), history, counters.
//! - [`clock`], [`rng`]: simulated time and seeded randomness — the only ones used.
//! - [`report`]: the summary over many seeds.
//! - [`jobs`]: seeds on several worker processes (`--jobs N`).
//! - [`shared`]: what every layer names: invariants and [`shared::Violation`],
//!   the tag space of amounts, `now_or_never`.
//!
//! # Layering
//!
//! Modules import only from layers below their own (`use crate::…`), so no
//! two modules import each other, directly or around a ring:
//!
//! 1. [`shared`], [`rng`], [`net`], [`clock`]: import no sibling;
//! 2. [`journal`]: on `clock` and `shared`;
//! 3. [`gateway`]: on `journal`, `net`;
//! 4. [`plan`]: on `clock`, `rng`, `shared` and `gateway`'s host name;
//!    [`store`]: on `clock`, `journal`, `rng`, `shared` and `plan`'s
//!    database faults and server names;
//! 5. [`server`]: wires `gateway`, `journal`, `plan` and the store it is
//!    given into a host;
//! 6. [`catalogue`]: set up through `server`'s configuration;
//! 7. [`workload`]: the clients, on the catalogue, `plan`, `net`, `journal`,
//!    `server`'s admin key and `gateway`'s host;
//! 8. [`oracle`]: on `catalogue`, `journal` and the workload's conventions
//!    (it judges what the clients did);
//! 9. [`run`]: one seed, from everything above (it hands `store`'s watched
//!    handle to the servers); [`report`]: over outcomes; [`jobs`]: outcomes
//!    between processes.
//!
//! A leaf never imports back: `shared` holds what a lower layer would
//! otherwise take from a higher one (the oracle's [`shared::Violation`], the
//! workload's tag space, the driver's `now_or_never`).

pub mod catalogue;
pub mod clock;
pub mod gateway;
pub mod jobs;
pub mod journal;
pub mod net;
pub mod oracle;
pub mod plan;
pub mod report;
pub mod rng;
pub mod run;
pub mod server;
pub mod shared;
pub mod store;
pub mod workload;

pub use plan::{Options, Profile};
pub use run::{SeedOutcome, run_seed};
