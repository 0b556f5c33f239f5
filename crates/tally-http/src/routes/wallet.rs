//! The caller's wallet: read it, top it up, page through its ledger.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use tally_core::app::Command;

use crate::auth::CurrentUser;
use crate::dto::{LedgerBody, LedgerQuery, TopUpBody, TopUpRequest, WalletBody};
use crate::extract::{IdempotencyKeyHeader, KeyedJson};
use crate::keyed;
use crate::problem::{ApiError, Problem};
use crate::responses::{JsonBodyErrors, KeyErrors, UserErrors};
use crate::state::{AppState, Backend};

pub fn routes<B: Backend>() -> Router<AppState<B>> {
    Router::new()
        .route("/v1/wallet", get(get_wallet::<B>))
        .route("/v1/wallet/top-ups", post(top_up::<B>))
        .route("/v1/wallet/ledger", get(ledger::<B>))
}

/// The caller's balance, limits and spending in the current windows.
#[utoipa::path(
    get,
    path = "/v1/wallet",
    security(("user_key" = [])),
    responses(
        (status = 200, description = "The wallet", body = WalletBody),
        UserErrors,
    )
)]
pub async fn get_wallet<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<WalletBody>, ApiError> {
    let view = state.app.wallet(user.id).await?;
    Ok(Json(WalletBody::from(&view)))
}

/// Add money to the caller's wallet.
#[utoipa::path(
    post,
    path = "/v1/wallet/top-ups",
    security(("user_key" = [])),
    params(IdempotencyKeyHeader),
    request_body = TopUpRequest,
    responses(
        (status = 201, description = "Booked (or replayed)", body = TopUpBody, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored response of an earlier request with the same key"))),
        (status = 409, description = "`max_balance_exceeded`, `idempotency_key_in_use`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`, `idempotency_key_reused`", body = Problem, content_type = "application/problem+json"),
        KeyErrors, UserErrors, JsonBodyErrors,
    )
)]
pub async fn top_up<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
    request: KeyedJson<TopUpRequest>,
) -> Result<Response, ApiError> {
    let amount = request.value.amount.amount()?;
    let command = Command::TopUp { amount };
    Ok(keyed::execute(&state, user.id, command, &request, StatusCode::CREATED).await)
}

/// The caller's ledger, oldest first, one page at a time.
#[utoipa::path(
    get,
    path = "/v1/wallet/ledger",
    security(("user_key" = [])),
    params(LedgerQuery),
    responses(
        (status = 200, description = "One page of entries", body = LedgerBody),
        (status = 400, description = "`malformed_request`: bad `limit` or `after`", body = Problem, content_type = "application/problem+json"),
        UserErrors,
    )
)]
pub async fn ledger<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
    query: Result<Query<LedgerQuery>, QueryRejection>,
) -> Result<Json<LedgerBody>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::malformed(rejection.body_text()))?;
    let limit = match query.limit.as_deref() {
        None => state.shared.ledger_page_default,
        Some(text) => {
            text.parse::<usize>().map_err(|_| ApiError::malformed("limit must be an integer from 1 to 100"))?
        }
    };
    let after = match query.after.as_deref() {
        None | Some("") => 0,
        // What the schema's pattern says: up to 20 digits. One past every
        // entry (even past u64::MAX) is simply the end.
        Some(text) if text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse::<u64>().unwrap_or(u64::MAX)
        }
        Some(_) => return Err(ApiError::malformed("after must be a cursor returned as next")),
    };
    let page = state.app.ledger(user.id, after, limit).await?;
    Ok(Json(LedgerBody::new(user.id, &page)))
}
