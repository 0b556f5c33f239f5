//! Payments (seed 001's two steps): create in `wait`, then confirm or cancel.
//!
//! A payment is of an amount, or for one of the caller's orders (its total):
//! confirming it pays the order, cancelling a done one cancels the order.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use tally_core::app::Command;
use tally_core::ids::OrderId;
use tally_core::payment::Method;

use crate::auth::CurrentUser;
use crate::dto::{ConfirmRequest, CreatePaymentRequest, EmptyRequest, PaymentBody};
use crate::extract::{IdempotencyKeyHeader, KeyedJson, PaymentPath};
use crate::keyed;
use crate::problem::{ApiError, Problem};
use crate::responses::{JsonBodyErrors, KeyErrors, KeyReused, MediaTypeError, NotYours, UserErrors};
use crate::state::{AppState, Backend};

pub fn routes<B: Backend>() -> Router<AppState<B>> {
    Router::new()
        .route("/v1/payments", post(create_payment::<B>))
        .route("/v1/payments/{id}", get(get_payment::<B>))
        .route("/v1/payments/{id}/confirm", post(confirm_payment::<B>))
        .route("/v1/payments/{id}/cancel", post(cancel_payment::<B>))
}

/// The command a create request asks for, or why it cannot be run.
fn create_command(request: &CreatePaymentRequest) -> Result<Command, ApiError> {
    // A shape error, so before any amount is looked at: whatever its value
    // (even 0 or null), a customer does not choose its own cashback
    // (OWASP API3, mass assignment).
    if request.payback_amount.is_some() {
        return Err(ApiError::malformed(
            "payback_amount is not accepted: the payback is the merchant's policy (a product's payback_bps, \
             or the service default), never the customer's choice",
        ));
    }
    let method = match request.method.as_str() {
        "wallet" => Method::Wallet,
        "gateway" => Method::Gateway,
        _ => return Err(ApiError::malformed("method must be \"wallet\" or \"gateway\"")),
    };
    let confirm = request.confirm;
    match (request.amount, request.order_id.as_deref()) {
        (Some(amount), None) => Ok(Command::CreatePayment { amount: amount.amount()?, method, confirm }),
        (None, Some(order)) => {
            let order = OrderId::parse(order).ok_or_else(|| ApiError::malformed("order_id must be a UUID"))?;
            Ok(Command::CreateOrderPayment { order, method, confirm })
        }
        (Some(_), Some(_)) => Err(ApiError::malformed("give `amount` or `order_id`, not both")),
        (None, None) => Err(ApiError::malformed("missing field `amount` (or `order_id`)")),
    }
}

/// Create a payment in `wait`, of an amount or for one of the caller's
/// orders. Nothing moves until it is confirmed — or, with `confirm: true`
/// (wallet payments), create and confirm it in one step: `done` at once.
#[utoipa::path(
    post,
    path = "/v1/payments",
    security(("user_key" = [])),
    params(IdempotencyKeyHeader),
    request_body = CreatePaymentRequest,
    responses(
        (status = 201, description = "Created in `wait`, or `done` with `confirm: true` (or replayed)", body = PaymentBody, headers(("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 400, description = "`malformed_request` (also both or neither of `amount` and `order_id`, `gateway` on a server without one, `confirm: true` with `gateway`, and any `payback_amount`: the payback is the merchant's policy), `idempotency_key_missing`, `idempotency_key_invalid`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such order, or not yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`limit_exceeded` (per-payment; with `confirm: true` also daily and monthly), `insufficient_balance` and `max_balance_exceeded` (with `confirm: true`), `order_expired`, `invalid_state` (the order is paid, cancelled, or has a charge in flight), `idempotency_key_in_use`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`, `idempotency_key_reused`", body = Problem, content_type = "application/problem+json"),
        UserErrors, JsonBodyErrors,
    )
)]
pub async fn create_payment<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
    request: KeyedJson<CreatePaymentRequest>,
) -> Result<Response, ApiError> {
    let command = create_command(&request.value)?;
    Ok(keyed::execute(&state, user.id, command, &request, StatusCode::CREATED).await)
}

/// Confirm a waiting payment: the wallet is charged (and the payback credited).
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/confirm",
    security(("user_key" = [])),
    params(PaymentPath, IdempotencyKeyHeader),
    request_body(content = Option<ConfirmRequest>, description = "Wallet payment: no body, or `{}`. Gateway payment: `{payment_key}`"),
    responses(
        (status = 200, description = "Now `done` (or replayed); a gateway payment may also answer `failed` (declined, or charged for another amount: then `refunding` until the refund went back)", body = PaymentBody, headers(("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 409, description = "`insufficient_balance`, `limit_exceeded`, `max_balance_exceeded` (also: no room for the payback, checked before a gateway charge), `invalid_state`, `payment_key_in_use` (the gateway `payment_key` was already given for another payment, of any user: a key pays one payment, forever), `idempotency_key_in_use`", body = Problem, content_type = "application/problem+json"),
        KeyErrors, UserErrors, NotYours, MediaTypeError, KeyReused,
    )
)]
pub async fn confirm_payment<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
    PaymentPath(payment): PaymentPath,
    request: KeyedJson<ConfirmRequest>,
) -> Response {
    let command = Command::ConfirmPayment { payment, payment_key: request.value.payment_key.clone() };
    keyed::execute(&state, user.id, command, &request, StatusCode::OK).await
}

/// Cancel a payment: a waiting one simply ends; a done one is refunded and
/// its payback reversed.
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/cancel",
    security(("user_key" = [])),
    params(PaymentPath, IdempotencyKeyHeader),
    request_body(content = Option<EmptyRequest>, description = "No body, or `{}`"),
    responses(
        (status = 200, description = "Now `cancelled` (or replayed)", body = PaymentBody, headers(("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 409, description = "`invalid_state`, `insufficient_balance` (the payback was already spent: checked before the gateway is asked for the refund, which is then not sent), `idempotency_key_in_use`", body = Problem, content_type = "application/problem+json"),
        KeyErrors, UserErrors, NotYours, MediaTypeError, KeyReused,
    )
)]
pub async fn cancel_payment<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
    PaymentPath(payment): PaymentPath,
    request: KeyedJson<EmptyRequest>,
) -> Response {
    let command = Command::CancelPayment { payment };
    keyed::execute(&state, user.id, command, &request, StatusCode::OK).await
}

/// One of the caller's payments.
#[utoipa::path(
    get,
    path = "/v1/payments/{id}",
    security(("user_key" = [])),
    params(PaymentPath),
    responses(
        (status = 200, description = "The payment", body = PaymentBody),
        UserErrors, NotYours,
    )
)]
pub async fn get_payment<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
    PaymentPath(payment): PaymentPath,
) -> Result<Json<PaymentBody>, ApiError> {
    let payment = state.app.payment(user.id, payment).await?;
    Ok(Json(PaymentBody::from(&payment)))
}
