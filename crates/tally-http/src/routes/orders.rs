//! Orders (seed 004): products and seats reserved together at order time,
//! paid through `POST /v1/payments {order_id}`, cancelled (a paid order is
//! refunded) or expired by the server when unpaid past their TTL — both give
//! the stock and seats back.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use tally_core::app::Command;

use crate::auth::CurrentUser;
use crate::dto::{CreateOrderRequest, EmptyRequest, OrderBody};
use crate::extract::{IdempotencyKeyHeader, KeyedJson, OrderPath, QueueTokenHeader};
use crate::keyed;
use crate::problem::{ApiError, Problem};
use crate::responses::{JsonBodyErrors, KeyErrors, KeyReused, MediaTypeError, NotYours, UserErrors};
use crate::state::{AppState, Backend};

pub fn routes<B: Backend>() -> Router<AppState<B>> {
    Router::new()
        .route("/v1/orders", post(create_order::<B>))
        .route("/v1/orders/{id}", get(get_order::<B>))
        .route("/v1/orders/{id}/cancel", post(cancel_order::<B>))
}

/// Reserve products and seats, all or none. Seats need an active queue
/// token of their event in `Queue-Token`.
#[utoipa::path(
    post,
    path = "/v1/orders",
    security(("user_key" = [])),
    params(IdempotencyKeyHeader, QueueTokenHeader),
    request_body = CreateOrderRequest,
    responses(
        (status = 201, description = "Reserved, `pending_payment` until `expires_at` (or replayed)", body = OrderBody, headers(("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 400, description = "`malformed_request` (also: no items and no seats, over 10 of either, a product or seat twice, ids not UUIDs, seats of two events), `idempotency_key_missing`, `idempotency_key_invalid`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: seats without an active queue token of the caller for their event", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: a product or seat does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`out_of_stock`, `seat_unavailable`, `seat_limit_reached` (the queue token would hold more than its event's `max_seats_per_token` seats across its live orders), `idempotency_key_in_use`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount` (a quantity outside 1 to 1000, or a total beyond 10^12), `idempotency_key_reused`", body = Problem, content_type = "application/problem+json"),
        UserErrors, JsonBodyErrors,
    )
)]
pub async fn create_order<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
    QueueTokenHeader(token): QueueTokenHeader,
    request: KeyedJson<CreateOrderRequest>,
) -> Result<Response, ApiError> {
    let command = request.value.command(token)?;
    Ok(keyed::execute(&state, user.id, command, &request, StatusCode::CREATED).await)
}

/// One of the caller's orders, as it stands now (an unpaid order past its
/// TTL reads `expired` even before the sweeper got to it).
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    security(("user_key" = [])),
    params(OrderPath),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        UserErrors, NotYours,
    )
)]
pub async fn get_order<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
    OrderPath(order): OrderPath,
) -> Result<Json<OrderBody>, ApiError> {
    let order = state.app.order(user.id, order).await?;
    Ok(Json(OrderBody::from(&order)))
}

/// Cancel an order and give its stock and seats back. A paid order's payment
/// is refunded (and its payback reversed) in the same step.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    security(("user_key" = [])),
    params(OrderPath, IdempotencyKeyHeader),
    request_body(content = Option<EmptyRequest>, description = "No body, or `{}`"),
    responses(
        (status = 200, description = "Now `cancelled` (or replayed)", body = OrderBody, headers(("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 409, description = "`invalid_state` (already cancelled or expired, or a gateway charge in flight), `order_expired`, `insufficient_balance` (the payback was already spent), `idempotency_key_in_use`", body = Problem, content_type = "application/problem+json"),
        KeyErrors, UserErrors, NotYours, MediaTypeError, KeyReused,
    )
)]
pub async fn cancel_order<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
    OrderPath(order): OrderPath,
    request: KeyedJson<EmptyRequest>,
) -> Response {
    keyed::execute(&state, user.id, Command::CancelOrder { order }, &request, StatusCode::OK).await
}
