//! Tally's HTTP face (SPEC.md "HTTP API (v1)"): axum routes over the core's
//! use cases, generic over the store, the lock manager and the clock, so the
//! same router serves the in-memory backend (tests, the simulation) and
//! PostgreSQL (the binary).
//!
//! This crate owns everything about HTTP and JSON and nothing else: who the
//! caller is, the `Idempotency-Key` header and the request fingerprint, the
//! wire DTOs, the mapping of every error to one problem+json format, the
//! middleware, metrics and the OpenAPI document. Every decision about money
//! is the core's.
//!
//! # Layout
//!
//! - [`router`] builds the app; [`serve`] runs it on any axum
//!   [`Listener`](axum::serve::Listener) until a shutdown future resolves.
//! - `routes/`: one module per resource (`users`, `wallet`, `payments`,
//!   `catalog`, `queue`, `orders`, `ops`).
//! - `extract`: the body, key and path extractors (never a non-problem rejection).
//! - `keyed`: running a command under an idempotency key; replay byte for byte.
//! - `problem` and `dto` are `tally-api`'s (re-exported): [`ApiError`] →
//!   RFC 9457 problem, the one error mapping; the request and response
//!   bodies, where amounts are parsed. The client shares them.
//! - `auth`: API keys, their hashes, the user and admin extractors.
//! - `layers`: request id, tracing, metrics, timeout, panics, load shedding.
//! - `state`: [`AppState`](state::AppState) and the `Backend` trait, the one
//!   type parameter of handlers and extractors.
//! - `responses`: the problem+json responses routes share in the OpenAPI document.
//! - `metrics`, `openapi`, `config`.
//!
//! # Decisions where SPEC.md leaves room
//!
//! - Checks run auth (401/403) → `Idempotency-Key` (400) → body size (413) →
//!   media type (415) → JSON shape (400) → amounts (422) → the use case. A
//!   body whose declared length is over the limit is refused (413) by the
//!   body-limit layer before anything else.
//! - Amounts: an integer beyond `Amount::MAX` (also beyond `i64`/`u64`, or
//!   written as `1e30`) is 422 `invalid_amount`; a fraction (`10.5`, `10.0`,
//!   `1e3`) or a string is 400 `malformed_request`.
//! - `payback_amount` in a payment request is 400 `malformed_request`
//!   whatever its value (`0` and `null` included), with a detail that says
//!   the payback is the merchant's policy, not an "unknown field": the
//!   customer must learn why. Responses show no payback as 0.
//! - A product's `payback_bps` and an event's `max_seats_per_token` out of
//!   range are 400, like the event's other settings: they are rates and
//!   counts the admin configures, not amounts.
//! - A gateway payment shows its in-flight states as they are
//!   (`confirming`, `cancelling`, `refunding`), since SPEC.md's four
//!   statuses cannot say "the gateway has it".
//! - A payment takes exactly one of `amount` and `order_id` (both or
//!   neither: 400). `method: "gateway"` on a server without a gateway is 400.
//! - Product, showtime and seat reads need no key ("any" in SPEC.md); an
//!   `Authorization` header there is not looked at.
//! - Admin commands run as `UserId::ADMIN`: the admin's idempotency keys
//!   (restock) are a scope of their own. Creating a product or an event
//!   takes no key (SPEC.md's table), nor does joining a queue, which is
//!   idempotent by itself (one live token per user and event).
//! - Order input is checked before any key or lock is taken: no items and
//!   no seats, more than 10 of either, or an id that is not a UUID → 400;
//!   a quantity outside 1..=1000 or a stock/restock outside 0/1..=10^9 → 422
//!   `invalid_amount`. A `Queue-Token` that is not a UUID → 400; a missing,
//!   inactive, foreign or other event's token → 403 (not stored). The token
//!   is not part of the fingerprint: the key names the order.
//! - Event `starts_at` is RFC 3339 in (any offset), RFC 3339 UTC out, like
//!   every timestamp here. Event settings out of range are 400 (they are
//!   not amounts).
//! - A stock error that means a broken record (releasing more than was
//!   taken) is a 500, and is not stored under the key.
//! - `confirm`/`cancel` take no body (any or no content type) or `{}` as JSON.
//! - The fingerprint hashes the exact body bytes: a retry must resend them.
//!   `Idempotency-Key` may be bare or an RFC 8941 quoted string.
//! - The admin key on a user route is 403 (a known key without the right).
//! - Request timeout → 503 `unavailable` with `Retry-After`, not 408.
//! - 405 on a known path is a problem with code `method_not_allowed`;
//!   unknown paths are 404 `not_found`; 500s have code `internal_error`.
//! - Ledger `amount` is signed from the wallet's side (debits negative);
//!   `next` is an opaque string cursor; unlimited limits are `null`.

use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use tally_core::Tally;
use tally_core::gateway::Gateway;
use tally_core::store::{LockManager, Store};
use tally_core::time::Clock;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

mod auth;
mod config;
mod extract;
mod keyed;
mod keys;
mod layers;
mod limits;
mod metrics;
pub mod openapi;
mod responses;
mod routes;
mod state;

pub use config::{
    BODY_LIMIT_BYTES_DEFAULT, CONCURRENCY_LIMIT_DEFAULT, HttpConfig, KeyGen, LEDGER_PAGE_DEFAULT,
    REQUEST_TIMEOUT_DEFAULT, RETRY_AFTER_SECONDS_DEFAULT, Readiness, ReadyFuture,
};
pub use extract::{IDEMPOTENCY_KEY, fingerprint};
pub use keyed::IDEMPOTENT_REPLAYED;
pub use keys::{API_KEY_PREFIX, hash_api_key, new_api_key};
pub use limits::{CountedStream, PerAddressLimit, RateLimits};
pub use metrics::Metrics;
pub use problem::{ApiError, Code, PROBLEM_CONTENT_TYPE, Problem};
/// The wire format lives in `tally-api`, shared with `tally-client`.
pub use tally_api::{dto, problem};

use crate::state::{AppState, Shared};

/// The whole API, ready to serve.
///
/// # Panics
///
/// If `config.request_timeout` is not shorter than the core's idempotency
/// lease: a request cut off by the timeout must be over before another
/// request with its key may take the key over.
pub fn router<S: Store, L: LockManager, C: Clock, G: Gateway>(
    app: Arc<Tally<S, L, C, G>>,
    config: HttpConfig,
    readiness: Readiness,
) -> Router {
    assert!(
        config.request_timeout < app.config().idempotency.lease,
        "the request timeout ({:?}) must be shorter than the idempotency lease ({:?})",
        config.request_timeout,
        app.config().idempotency.lease,
    );
    let state: AppState<Tally<S, L, C, G>> = AppState {
        app,
        shared: Arc::new(Shared {
            admin_key_hash: hash_api_key(&config.admin_key),
            body_limit_bytes: config.body_limit_bytes,
            ledger_page_default: config.ledger_page_default,
            readiness,
            metrics: config.metrics.clone(),
            key_gen: config.key_gen.clone(),
            known_users: crate::auth::KnownUsers::default(),
            rate_limits: config.rate_limit.map(|per_second| RateLimits::new(per_second, config.metrics.clone())),
        }),
    };
    let permits = Arc::new(Semaphore::new(config.concurrency_limit));
    let api = Router::new()
        .merge(routes::users::routes())
        .merge(routes::wallet::routes())
        .merge(routes::payments::routes())
        .merge(routes::catalog::routes())
        .merge(routes::queue::routes())
        .merge(routes::orders::routes())
        .layer(from_fn_with_state(permits, layers::shed_load));
    let mut routes = Router::new().merge(api).merge(routes::ops::routes()).with_state(state);
    if config.docs {
        routes = routes.merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", openapi::document()));
    }
    // `Router::layer` wraps each route (and the fallbacks) separately, which
    // is what lets the span and the metrics see the matched path.
    routes
        .fallback(layers::no_route)
        .method_not_allowed_fallback(layers::wrong_method)
        .layer(RequestBodyLimitLayer::new(config.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, config.request_timeout))
        .layer(CatchPanicLayer::custom(layers::panic_response))
        .layer(from_fn_with_state(config.retry_after_seconds, layers::finish))
        .layer(from_fn_with_state(config.metrics, layers::record_metrics))
        // Failures are logged by `layers::finish`, which knows their cause.
        .layer(TraceLayer::new_for_http().make_span_with(layers::request_span).on_failure(()))
        .layer(PropagateRequestIdLayer::new(layers::REQUEST_ID))
        .layer(SetRequestIdLayer::new(layers::REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for the requests in flight to finish. Any axum
/// [`Listener`](axum::serve::Listener) works: tokio's `TcpListener` in
/// production and tests, a simulated one in the simulation.
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    // As a make-service, each new connection gets a cheap handle to the
    // router; handing axum the `Router` itself makes it copy the whole route
    // table for every connection.
    axum::serve(listener, router.into_make_service()).with_graceful_shutdown(shutdown).await
}
