//! Tally's wire format: what goes over HTTP between a client and the server,
//! defined once for both sides.
//!
//! - `dto`: request and response bodies, their OpenAPI schemas (utoipa), the
//!   server's value checks (amounts, counts, times) and the conversions from
//!   the core's types. The client serializes the same request types the
//!   server deserializes, and deserializes the same response types.
//! - `problem`: the RFC 9457 error body ([`Problem`]), the one list of
//!   stable error codes ([`Code`]) and [`ApiError`], the server's error on its
//!   way to becoming a problem (its `IntoResponse` is behind the `axum`
//!   feature, which only the server turns on).
//! - [`headers`]: the names of the API's own headers.
//!
//! It depends on the core (for the conversions) and on nothing that serves
//! or sends HTTP, so a client builds without axum.

pub mod dto;
pub mod problem;

pub use problem::{ApiError, Code, PROBLEM_CONTENT_TYPE, Problem};

/// The API's own header names, lower case as HTTP/2 and `http` spell them.
pub mod headers {
    /// The client's `Idempotency-Key` (SPEC.md "Idempotency").
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// The queue token an order with seats is made under.
    pub const QUEUE_TOKEN: &str = "queue-token";
    /// `true` on a replay of a stored answer.
    pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
}
