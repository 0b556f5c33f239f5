//! The handlers, one module per resource. Each handler is generic over one
//! [`Backend`](crate::state::Backend) (the core's store, lock manager, clock
//! and gateway), so the same router serves the in-memory backend and
//! PostgreSQL; each module lists its routes in its own `routes()`, and its
//! OpenAPI responses as its own entries plus the shared sets of
//! `crate::responses`.

pub mod catalog;
pub mod ops;
pub mod orders;
pub mod payments;
pub mod queue;
pub mod users;
pub mod wallet;
