//! The caller's wallet: read it, top it up, page through its ledger.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use tally_core::app::Command;
use tally_core::gateway::Gateway;
use tally_core::store::{LockManager, Store};
use tally_core::time::Clock;

use crate::auth::CurrentUser;
use crate::dto::{LedgerBody, LedgerQuery, TopUpBody, TopUpRequest, WalletBody};
use crate::extract::KeyedJson;
use crate::keyed;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn routes<S: Store, L: LockManager, C: Clock, G: Gateway>() -> Router<AppState<S, L, C, G>> {
    Router::new()
        .route("/v1/wallet", get(get_wallet::<S, L, C, G>))
        .route("/v1/wallet/top-ups", post(top_up::<S, L, C, G>))
        .route("/v1/wallet/ledger", get(ledger::<S, L, C, G>))
}

/// The caller's balance, limits and spending in the current windows.
#[utoipa::path(
    get,
    path = "/v1/wallet",
    tag = "wallet",
    security(("user_key" = [])),
    responses(
        (status = 200, description = "The wallet", body = WalletBody),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_wallet<S: Store, L: LockManager, C: Clock, G: Gateway>(
    State(state): State<AppState<S, L, C, G>>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<WalletBody>, ApiError> {
    let view = state.app.wallet(user.id).await?;
    Ok(Json(WalletBody::from(&view)))
}

/// Add money to the caller's wallet.
#[utoipa::path(
    post,
    path = "/v1/wallet/top-ups",
    tag = "wallet",
    security(("user_key" = [])),
    params(("Idempotency-Key" = String, Header, description = "Required: 1 to 255 printable ASCII characters, scoped to the caller, kept 24 h (see the API description)")),
    request_body = TopUpRequest,
    responses(
        (status = 201, description = "Booked (or replayed)", body = TopUpBody, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored response of an earlier request with the same key"))),
        (status = 400, description = "`malformed_request`, `idempotency_key_missing`, `idempotency_key_invalid`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`max_balance_exceeded`, `idempotency_key_in_use`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`, `idempotency_key_reused`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn top_up<S: Store, L: LockManager, C: Clock, G: Gateway>(
    State(state): State<AppState<S, L, C, G>>,
    CurrentUser(user): CurrentUser,
    request: KeyedJson<TopUpRequest>,
) -> Result<Response, ApiError> {
    let amount = request.value.amount.amount()?;
    let command = Command::TopUp { amount };
    Ok(keyed::execute(&state.app, user.id, command, &request, StatusCode::CREATED).await)
}

/// The caller's ledger, oldest first, one page at a time.
#[utoipa::path(
    get,
    path = "/v1/wallet/ledger",
    tag = "wallet",
    security(("user_key" = [])),
    params(LedgerQuery),
    responses(
        (status = 200, description = "One page of entries", body = LedgerBody),
        (status = 400, description = "`malformed_request`: bad `limit` or `after`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ledger<S: Store, L: LockManager, C: Clock, G: Gateway>(
    State(state): State<AppState<S, L, C, G>>,
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
        Some(text) => {
            text.parse::<u64>().map_err(|_| ApiError::malformed("after must be a cursor returned as next"))?
        }
    };
    let page = state.app.ledger(user.id, after, limit).await?;
    Ok(Json(LedgerBody::new(user.id, &page)))
}
