//! What the binary (or a test, or the simulation) hands the router: limits,
//! the admin key, the readiness probe and the metrics sink.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

/// Largest request body accepted (SPEC.md: 64 KiB).
pub const BODY_LIMIT_BYTES_DEFAULT: usize = 64 * 1024;
/// How long one request may run before it is answered 503. It must stay
/// below the core's idempotency lease (60 s by default) so that a request
/// given up on here has certainly stopped before its key can be taken over.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Requests served at once by the `/v1` routes; the next one is shed with
/// 503 instead of queueing, so overload shows up as fast refusals rather
/// than as latency for everyone.
pub const CONCURRENCY_LIMIT_DEFAULT: usize = 1024;
/// What `Retry-After` tells a client on 503.
pub const RETRY_AFTER_SECONDS_DEFAULT: u32 = 1;
/// Ledger page size when the request names none (the core caps it at 100).
pub const LEDGER_PAGE_DEFAULT: usize = 50;

/// Produces API keys for new users. Production uses [`crate::new_api_key`];
/// the simulation can pass a seeded generator to stay reproducible.
pub type KeyGen = Arc<dyn Fn() -> String + Send + Sync>;

/// The router's configuration.
#[derive(Clone)]
pub struct HttpConfig {
    /// The admin API key, raw. The router keeps only its SHA-256.
    pub admin_key: String,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub concurrency_limit: usize,
    pub retry_after_seconds: u32,
    pub ledger_page_default: usize,
    /// Where request metrics go and what `/metrics` renders.
    pub metrics: Metrics,
    pub key_gen: KeyGen,
    /// Requests a second per API key (bursts of as many); `None`: unlimited.
    pub rate_limit: Option<std::num::NonZeroU32>,
    /// Whether to serve `/docs` and `/openapi.json`. Building the OpenAPI
    /// document is most of the cost of building a router; the simulation,
    /// which builds one per server start and never reads the docs, turns it
    /// off.
    pub docs: bool,
}

impl HttpConfig {
    /// The defaults above, a private metrics recorder and random user keys.
    pub fn new(admin_key: impl Into<String>) -> HttpConfig {
        HttpConfig {
            admin_key: admin_key.into(),
            body_limit_bytes: BODY_LIMIT_BYTES_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            concurrency_limit: CONCURRENCY_LIMIT_DEFAULT,
            retry_after_seconds: RETRY_AFTER_SECONDS_DEFAULT,
            ledger_page_default: LEDGER_PAGE_DEFAULT,
            metrics: Metrics::local(),
            key_gen: Arc::new(crate::keys::new_api_key),
            rate_limit: None,
            docs: true,
        }
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("admin_key", &"<redacted>")
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("concurrency_limit", &self.concurrency_limit)
            .field("retry_after_seconds", &self.retry_after_seconds)
            .field("ledger_page_default", &self.ledger_page_default)
            .field("metrics", &self.metrics)
            .field("rate_limit", &self.rate_limit)
            .field("docs", &self.docs)
            .finish_non_exhaustive()
    }
}

/// The future a readiness probe returns.
pub type ReadyFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Answers `GET /readyz`: can this instance serve (is its database
/// reachable)? The binary supplies a probe that pings PostgreSQL; the
/// in-memory backend is always ready.
#[derive(Clone)]
pub struct Readiness(Arc<dyn Fn() -> ReadyFuture + Send + Sync>);

impl Readiness {
    pub fn new(probe: impl Fn() -> ReadyFuture + Send + Sync + 'static) -> Readiness {
        Readiness(Arc::new(probe))
    }

    pub fn always() -> Readiness {
        Readiness::new(|| Box::pin(std::future::ready(true)))
    }

    pub async fn check(&self) -> bool {
        (self.0)().await
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Readiness(..)")
    }
}
