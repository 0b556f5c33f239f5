//! Operational endpoints: liveness, readiness, metrics. (`/openapi.json` and
//! `/docs` are served by the Swagger UI router; their entries here only
//! document them.)

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::dto::StatusBody;
use crate::problem::{ApiError, Code};
use crate::responses::Unavailable;
use crate::state::{AppState, Backend};

/// Prometheus' text exposition format.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn routes<B: Backend>() -> Router<AppState<B>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<B>))
        .route("/metrics", get(metrics::<B>))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = StatusBody)))]
pub async fn healthz() -> Json<StatusBody> {
    Json(StatusBody { status: "ok".into() })
}

/// Readiness: the instance can serve (its database is reachable).
#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, body = StatusBody),
        Unavailable,
    )
)]
pub async fn readyz<B: Backend>(State(state): State<AppState<B>>) -> Result<Json<StatusBody>, ApiError> {
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
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
pub async fn metrics<B: Backend>(State(state): State<AppState<B>>) -> Response {
    let mut response = state.shared.metrics.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE));
    response
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
#[allow(dead_code)] // documents a route the Swagger UI router serves
fn openapi_json() {}

/// Swagger UI for this document (redirects to `/docs/`).
#[utoipa::path(get, path = "/docs", responses((status = 303, description = "Redirect to `/docs/`, the Swagger UI page")))]
#[allow(dead_code)] // documents a route the Swagger UI router serves
fn docs() {}
