//! `POST /v1/users` (admin): create a user, their empty wallet and their API key.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tally_core::wallet::Limits;

use crate::auth::Admin;
use crate::dto::{CreateUserRequest, UserCreated};
use crate::extract::JsonBody;
use crate::keys::hash_api_key;
use crate::problem::{ApiError, Problem};
use crate::responses::{AdminErrors, JsonBodyErrors, Malformed};
use crate::state::{AppState, Backend};

pub fn routes<B: Backend>() -> Router<AppState<B>> {
    Router::new().route("/v1/users", post(create_user::<B>))
}

/// Create a user. The response carries the user's API key, shown only here.
#[utoipa::path(
    post,
    path = "/v1/users",
    security(("admin_key" = [])),
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "Created", body = UserCreated),
        (status = 422, description = "`invalid_amount`: a limit out of range", body = Problem, content_type = "application/problem+json"),
        AdminErrors, Malformed, JsonBodyErrors,
    )
)]
pub async fn create_user<B: Backend>(
    State(state): State<AppState<B>>,
    _admin: Admin,
    body: JsonBody<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserCreated>), ApiError> {
    let request = body.value;
    let limits = match &request.limits {
        Some(limits) => limits.limits()?,
        None => Limits::default(),
    };
    let api_key = (state.shared.key_gen)();
    let user = state.app.create_user(&request.name.0, limits, hash_api_key(&api_key)).await?;
    Ok((StatusCode::CREATED, Json(UserCreated::new(&user, api_key))))
}
