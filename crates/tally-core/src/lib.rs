//! Tally's core: the domain and the use cases, with no I/O.
//!
//! This crate decides; it never talks to a network, a disk or a clock of its
//! own. Everything it needs from the world comes through traits it defines —
//! [`store::Store`], [`store::LockManager`], [`time::Clock`],
//! [`ids::IdGen`] — so the same use cases run on PostgreSQL in production and
//! on the in-memory backend under loom, shuttle, proptest and the simulation.
//!
//! # Layout
//!
//! - [`money`]: `Money` and `Amount`, integer minor units, checked.
//! - [`wallet`], [`payment`], [`idempotency`], [`catalog`] (products and
//!   seats), [`order`], [`queue`]: records and their one transition function
//!   each.
//! - [`ledger`]: double-entry transfers.
//! - [`decide`]: pure decisions over loaded records (load → **decide** → persist).
//! - [`store`]: the traits backends implement, and the global lock order.
//! - [`app`]: the use cases, generic over those traits.
//! - [`overlay`]: the transaction a group commit's requests share.
//! - [`check`]: the invariant checker every test and tool shares.

pub mod app;
pub mod catalog;
pub mod check;
pub mod decide;
pub mod error;
pub mod gateway;
pub mod idempotency;
pub mod ids;
pub mod ledger;
pub mod money;
pub mod mutant;
pub mod order;
pub mod overlay;
pub mod payment;
pub mod queue;
pub mod store;
pub mod time;
pub mod wallet;

pub use app::{Command, Config, Executed, Keyed, Outcome, Render, Tally};
pub use error::Error;
