//! An event's waiting queue (seed 002): join it, then poll the token until
//! it is active; an active token lets its owner order the event's seats.
//!
//! Joining takes no `Idempotency-Key`: it is idempotent by itself (a user
//! has one live token per event, and joining again answers that token).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use tally_core::app::Command;

use crate::auth::CurrentUser;
use crate::dto::{EmptyRequest, TokenBody};
use crate::extract::{EventPath, JsonBody, TokenPath};
use crate::keyed;
use crate::problem::ApiError;
use crate::responses::{Malformed, MediaTypeError, NotFound, NotYours, UserErrors};
use crate::state::{AppState, Backend};

pub fn routes<B: Backend>() -> Router<AppState<B>> {
    Router::new()
        .route("/v1/events/{id}/queue", post(join_queue::<B>))
        .route("/v1/queue/{token}", get(queue_token::<B>))
}

/// Join the event's waiting queue. A caller who already has a live (waiting
/// or active) token for the event gets that token back.
#[utoipa::path(
    post,
    path = "/v1/events/{id}/queue",
    security(("user_key" = [])),
    params(EventPath),
    request_body(content = Option<EmptyRequest>, description = "No body, or `{}`"),
    responses(
        (status = 201, description = "The caller's token: `active` at once if a slot is free, else `waiting` with its position", body = TokenBody),
        UserErrors, Malformed, NotFound, MediaTypeError,
    )
)]
pub async fn join_queue<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
    EventPath(event): EventPath,
    _body: JsonBody<EmptyRequest>,
) -> Response {
    keyed::execute_unkeyed(&state, user.id, Command::JoinQueue { event }, StatusCode::CREATED).await
}

/// The caller's token as it stands now: reading it also moves the queue (a
/// waiting token may be promoted, an active one may have expired).
#[utoipa::path(
    get,
    path = "/v1/queue/{token}",
    security(("user_key" = [])),
    params(TokenPath),
    responses(
        (status = 200, description = "The token", body = TokenBody),
        UserErrors, NotYours,
    )
)]
pub async fn queue_token<B: Backend>(
    State(state): State<AppState<B>>,
    CurrentUser(user): CurrentUser,
    TokenPath(token): TokenPath,
) -> Result<Json<TokenBody>, ApiError> {
    let view = state.app.queue_token(user.id, token).await?;
    Ok(Json(TokenBody::from(&view)))
}
