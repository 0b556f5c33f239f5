//! The middleware around every route, and the few pieces of it written here
//! rather than taken from tower-http.
//!
//! Outermost first (see [`crate::router`]):
//!
//! 1. mark `Authorization` sensitive, so no log or debug print shows it;
//! 2. set `x-request-id` (a UUID unless the client sent one) and copy it to
//!    the response;
//! 3. trace: one span per request with method, matched path and request id;
//! 4. metrics: count and time every request by matched path and status;
//! 5. [`finish`]: turn any bare error a layer or axum produced into a
//!    problem, add `Retry-After` to every 503, log 5xx causes;
//! 6. catch panics (500 problem);
//! 7. request timeout: 503 `unavailable` — chosen over 408 because the
//!    client did nothing wrong and SPEC.md's table has no 408 code; retrying
//!    with the same `Idempotency-Key` is safe;
//! 8. request body limit (413);
//! 9. on `/v1` routes only, [`shed_load`]: at most N requests at once, the
//!    next gets 503 at once. Health, readiness and metrics stay reachable
//!    under overload, so operators can still see what is going on.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tracing::Span;

use crate::metrics::{Metrics, UNMATCHED_PATH};
use crate::problem::{ApiError, Code, InternalCause, PROBLEM_CONTENT_TYPE};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The span of one request. Records the *matched* path so that traces group
/// by route, not by id.
pub fn request_span(request: &Request) -> Span {
    let matched_path = request.extensions().get::<MatchedPath>().map_or(UNMATCHED_PATH, MatchedPath::as_str);
    let request_id = request.headers().get(&REQUEST_ID).and_then(|value| value.to_str().ok()).unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        matched_path,
        request_id,
    )
}

/// Records `http_requests_total` and `http_request_duration_seconds`.
pub async fn record_metrics(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let path = request.extensions().get::<MatchedPath>().map_or(UNMATCHED_PATH, MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    metrics.record_request(&method, &path, response.status().as_u16(), started.elapsed());
    response
}

/// Makes every error response a problem, stamps `Retry-After` on 503s, and
/// logs the causes of 5xx (which their bodies never show).
pub async fn finish(State(retry_after_seconds): State<u32>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let status = response.status();
    if (status.is_client_error() || status.is_server_error()) && !is_problem(&response) {
        // Produced by a tower-http layer (timeout, body limit) or by axum,
        // with a plain or empty body: give it the API's format.
        let code = Code::for_status(status);
        let detail = match code {
            Code::Unavailable => "the request could not be completed in time; retry later",
            Code::PayloadTooLarge => "the request body is too large",
            Code::MethodNotAllowed => "this method is not allowed on this path",
            Code::NotFound => "no such route",
            _ => status.canonical_reason().unwrap_or("request failed"),
        };
        let mut problem = ApiError::new(code, detail);
        problem.cause = Some(format!("{status} produced by a layer"));
        let allow = response.headers().get(header::ALLOW).cloned();
        let cause = response.extensions_mut().remove::<InternalCause>();
        response = problem.into_response();
        *response.status_mut() = status;
        if let Some(allow) = allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        if let Some(cause) = cause {
            response.extensions_mut().insert(cause);
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE && !response.headers().contains_key(header::RETRY_AFTER) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
    }
    if status.is_server_error() {
        match response.extensions().get::<InternalCause>() {
            Some(InternalCause(cause)) => tracing::error!(%status, error.message = %cause, "request failed"),
            None => tracing::error!(%status, "request failed"),
        }
    }
    response
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == PROBLEM_CONTENT_TYPE.as_bytes())
}

/// Serves at most as many requests as the semaphore has permits; refuses
/// the rest at once (503) rather than queueing them. One semaphore is shared
/// by all routes (a tower `ConcurrencyLimitLayer` added with `Router::layer`
/// would get one per route).
pub async fn shed_load(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    match permits.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::internal(Code::Unavailable, "concurrency limit reached; request shed").into_response(),
    }
}

/// The response to a panic in a handler: a bare 500 problem; the panic
/// message is logged, never sent.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a handler panicked".to_owned()
    };
    ApiError::internal(Code::InternalError, format!("panic: {message}")).into_response()
}

/// `404` for paths no route matches.
pub async fn no_route() -> ApiError {
    ApiError::new(Code::NotFound, "no such route")
}

/// `405` for known paths with another method.
pub async fn wrong_method() -> ApiError {
    ApiError::new(Code::MethodNotAllowed, "this method is not allowed on this path")
}
