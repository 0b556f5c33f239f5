//! `POST /v1/users` (admin): create a user, their empty wallet and their API key.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tally_core::gateway::Gateway;
use tally_core::store::{LockManager, Store};
use tally_core::time::Clock;
use tally_core::wallet::Limits;

use crate::auth::Admin;
use crate::dto::{CreateUserRequest, UserCreated};
use crate::extract::JsonBody;
use crate::keys::hash_api_key;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn routes<S: Store, L: LockManager, C: Clock, G: Gateway>() -> Router<AppState<S, L, C, G>> {
    Router::new().route("/v1/users", post(create_user::<S, L, C, G>))
}

/// Create a user. The response carries the user's API key, shown only here.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    security(("admin_key" = [])),
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "Created", body = UserCreated),
        (status = 400, description = "`malformed_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: not the admin key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`: a limit out of range", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_user<S: Store, L: LockManager, C: Clock, G: Gateway>(
    State(state): State<AppState<S, L, C, G>>,
    _admin: Admin,
    body: JsonBody<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserCreated>), ApiError> {
    let request = body.value;
    let limits = match &request.limits {
        Some(limits) => limits.limits()?,
        None => Limits::default(),
    };
    let api_key = (state.shared.key_gen)();
    let user = state.app.create_user(&request.name, limits, hash_api_key(&api_key)).await?;
    Ok((StatusCode::CREATED, Json(UserCreated::new(&user, api_key))))
}
