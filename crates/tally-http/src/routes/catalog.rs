//! The catalogue: products with stock (admin creates and restocks them) and
//! events with showtimes and seats (admin creates them). Reading a product,
//! an event's showtimes or a showtime's seats needs no key at all: SPEC.md
//! lists them for "any" caller, and they show nothing about anyone.
//!
//! Admin commands run as [`UserId::ADMIN`], so the admin's idempotency keys
//! (restock) live in a scope no user can reach.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use tally_core::app::Command;
use tally_core::catalog::MAX_SEATS_PER_TOKEN_DEFAULT;
use tally_core::ids::UserId;

use crate::auth::Admin;
use crate::dto::{
    CreateEventRequest, CreateProductRequest, EventBody, ProductBody, RestockRequest, SeatBody, SeatsBody,
    ShowtimeBody, ShowtimesBody,
};
use crate::extract::{EventPath, IdempotencyKeyHeader, JsonBody, KeyedJson, ProductPath, ShowtimePath};
use crate::keyed;
use crate::problem::{ApiError, Problem};
use crate::responses::{AdminErrors, JsonBodyErrors, KeyErrors, MediaTypeError, NotFound, ReadErrors};
use crate::state::{AppState, Backend};

pub fn routes<B: Backend>() -> Router<AppState<B>> {
    Router::new()
        .route("/v1/products", post(create_product::<B>))
        .route("/v1/products/{id}", get(get_product::<B>))
        .route("/v1/products/{id}/restock", post(restock::<B>))
        .route("/v1/events", post(create_event::<B>))
        .route("/v1/events/{id}/showtimes", get(showtimes::<B>))
        .route("/v1/showtimes/{id}/seats", get(seats::<B>))
}

/// Create a product with its initial stock.
#[utoipa::path(
    post,
    path = "/v1/products",
    security(("admin_key" = [])),
    request_body = CreateProductRequest,
    responses(
        (status = 201, description = "Created", body = ProductBody),
        (status = 400, description = "`malformed_request` (also a name of 0 or over 200 characters, and a `payback_bps` outside 0 to 10000)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`: a price or stock out of range", body = Problem, content_type = "application/problem+json"),
        AdminErrors, JsonBodyErrors,
    )
)]
pub async fn create_product<B: Backend>(
    State(state): State<AppState<B>>,
    _admin: Admin,
    body: JsonBody<CreateProductRequest>,
) -> Result<Response, ApiError> {
    let (price, stock) = body.value.values()?;
    // The rate's range is the core's to check (400, like the event's settings).
    let command = Command::CreateProduct { name: body.value.name.0, price, stock, payback_bps: body.value.payback_bps };
    Ok(keyed::execute_unkeyed(&state, UserId::ADMIN, command, StatusCode::CREATED).await)
}

/// Add stock to a product.
#[utoipa::path(
    post,
    path = "/v1/products/{id}/restock",
    security(("admin_key" = [])),
    params(ProductPath, IdempotencyKeyHeader),
    request_body = RestockRequest,
    responses(
        (status = 200, description = "Restocked (or replayed)", body = ProductBody, headers(("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 409, description = "`limit_exceeded`: a restock past 10^9 units ever stocked; `idempotency_key_in_use`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`, `idempotency_key_reused`", body = Problem, content_type = "application/problem+json"),
        KeyErrors, AdminErrors, NotFound, JsonBodyErrors,
    )
)]
pub async fn restock<B: Backend>(
    State(state): State<AppState<B>>,
    _admin: Admin,
    ProductPath(product): ProductPath,
    request: KeyedJson<RestockRequest>,
) -> Result<Response, ApiError> {
    let quantity = request.value.quantity.units("quantity", 1..=tally_core::catalog::STOCK_MAX)?;
    let command = Command::Restock { product, quantity };
    Ok(keyed::execute(&state, UserId::ADMIN, command, &request, StatusCode::OK).await)
}

/// A product and its stock. No key needed.
#[utoipa::path(
    get,
    path = "/v1/products/{id}",
    params(ProductPath),
    responses(
        (status = 200, description = "The product", body = ProductBody),
        ReadErrors,
    )
)]
pub async fn get_product<B: Backend>(
    State(state): State<AppState<B>>,
    ProductPath(product): ProductPath,
) -> Result<Json<ProductBody>, ApiError> {
    let product = state.app.product(product).await?;
    Ok(Json(ProductBody::from(&product)))
}

/// Create an event with its waiting queue's settings and its showtimes and
/// seats. The answer carries every id (showtimes, seats) it was given.
#[utoipa::path(
    post,
    path = "/v1/events",
    security(("admin_key" = [])),
    request_body = CreateEventRequest,
    responses(
        (status = 201, description = "Created", body = EventBody),
        (status = 400, description = "`malformed_request` (also: names and labels 1 to 200 characters, seat labels unique per showtime, 1 to 100 showtimes of 1 to 1000 seats, at most 10000 seats, `active_limit` 1 to 10000, `token_ttl_seconds` 1 to 86400, `max_seats_per_token` 1 to 1000, `starts_at` RFC 3339)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large` (the 64 KiB body limit bounds one request's seats)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`: a seat price out of range", body = Problem, content_type = "application/problem+json"),
        AdminErrors, MediaTypeError,
    )
)]
pub async fn create_event<B: Backend>(
    State(state): State<AppState<B>>,
    _admin: Admin,
    body: JsonBody<CreateEventRequest>,
) -> Result<Response, ApiError> {
    let showtimes = body.value.showtimes()?;
    let request = body.value;
    let command = Command::CreateEvent {
        name: request.name.0,
        active_limit: request.active_limit,
        token_ttl: std::time::Duration::from_secs(request.token_ttl_seconds),
        max_seats_per_token: request.max_seats_per_token.unwrap_or(MAX_SEATS_PER_TOKEN_DEFAULT),
        showtimes,
    };
    Ok(keyed::execute_unkeyed(&state, UserId::ADMIN, command, StatusCode::CREATED).await)
}

/// An event's showtimes, each with how many seats are still available. No key needed.
#[utoipa::path(
    get,
    path = "/v1/events/{id}/showtimes",
    params(EventPath),
    responses(
        (status = 200, description = "The showtimes", body = ShowtimesBody),
        ReadErrors,
    )
)]
pub async fn showtimes<B: Backend>(
    State(state): State<AppState<B>>,
    EventPath(event): EventPath,
) -> Result<Json<ShowtimesBody>, ApiError> {
    let views = state.app.showtimes(event).await?;
    let showtimes = views.iter().map(|view| ShowtimeBody::new(&view.showtime, view.available_seats)).collect();
    Ok(Json(ShowtimesBody { showtimes }))
}

/// A showtime's seats and their status. No key needed.
#[utoipa::path(
    get,
    path = "/v1/showtimes/{id}/seats",
    params(ShowtimePath),
    responses(
        (status = 200, description = "The seats", body = SeatsBody),
        ReadErrors,
    )
)]
pub async fn seats<B: Backend>(
    State(state): State<AppState<B>>,
    ShowtimePath(showtime): ShowtimePath,
) -> Result<Json<SeatsBody>, ApiError> {
    let seats = state.app.seats(showtime).await?;
    Ok(Json(SeatsBody { seats: seats.iter().map(SeatBody::from).collect() }))
}
