//! The handlers, one module per resource. Each handler is generic over the
//! core's store, lock manager and clock, so the same router serves the
//! in-memory backend and PostgreSQL; each module lists its routes in its own
//! `routes()`.

pub mod catalog;
pub mod ops;
pub mod orders;
pub mod payments;
pub mod queue;
pub mod users;
pub mod wallet;
