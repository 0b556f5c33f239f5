//! Operational endpoints: liveness, readiness, metrics. (`/openapi.json` and
//! `/docs` are served by the Swagger UI router; their entries here only
//! document them.)

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tally_core::gateway::Gateway;
use tally_core::store::{LockManager, Store};
use tally_core::time::Clock;

use crate::dto::StatusBody;
use crate::problem::{ApiError, Code, Problem};
use crate::state::AppState;

/// Prometheus' text exposition format.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn routes<S: Store, L: LockManager, C: Clock, G: Gateway>() -> Router<AppState<S, L, C, G>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S, L, C, G>))
        .route("/metrics", get(metrics::<S, L, C, G>))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = StatusBody)))]
pub async fn healthz() -> Json<StatusBody> {
    Json(StatusBody { status: "ok".into() })
}

/// Readiness: the instance can serve (its database is reachable).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, body = StatusBody),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz<S: Store, L: LockManager, C: Clock, G: Gateway>(
    State(state): State<AppState<S, L, C, G>>,
) -> Result<Json<StatusBody>, ApiError> {
    if state.shared.readiness.check().await {
        Ok(Json(StatusBody { status: "ready".into() }))
    } else {
        Err(ApiError::internal(Code::Unavailable, "readiness probe failed"))
    }
}

/// Request counts and latencies per route, in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
pub async fn metrics<S: Store, L: LockManager, C: Clock, G: Gateway>(
    State(state): State<AppState<S, L, C, G>>,
) -> Response {
    let mut response = state.shared.metrics.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE));
    response
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
#[allow(dead_code)] // documents a route the Swagger UI router serves
fn openapi_json() {}

/// Swagger UI for this document (redirects to `/docs/`).
#[utoipa::path(get, path = "/docs", tag = "operations", responses((status = 303, description = "Redirect to `/docs/`, the Swagger UI page")))]
#[allow(dead_code)] // documents a route the Swagger UI router serves
fn docs() {}
