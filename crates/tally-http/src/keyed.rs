//! Running a command under an idempotency key, and turning its result into
//! the exact bytes the client sees — now, and on every replay.
//!
//! One function ([`render`]) produces the stored response for a result.
//! A fresh answer is produced by the same function, so the first response
//! and its replays are byte-identical by construction; a replay adds only
//! `Idempotent-Replayed: true`.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tally_core::Error;
use tally_core::app::{Command, Executed, Keyed, Outcome};
use tally_core::idempotency::StoredResponse;
use tally_core::ids::UserId;

use crate::dto::outcome_json;
use crate::extract::KeyedJson;
use crate::problem::{ApiError, PROBLEM_CONTENT_TYPE};
use crate::state::{AppState, Backend};

/// Marks a response as the replay of a stored one (Stripe's header name).
pub use tally_api::headers::IDEMPOTENT_REPLAYED;

const JSON_CONTENT_TYPE: &str = "application/json";

/// The response to store for `result`: successes (with `success` as their
/// status) and business refusals; `None` for everything that must not be
/// stored (SPEC.md: 400/401/403/409-in-use/429/5xx), so a retry runs again.
pub fn render(success: StatusCode, result: &Result<Outcome, Error>) -> Option<StoredResponse> {
    match result {
        Ok(outcome) => Some(render_success(success, outcome)),
        Err(error) if error.is_refusal() => {
            let api_error = ApiError::from(error.clone());
            // A refusal the mapping shows as a 5xx (a broken record the
            // core reports as a stock error) is not stored: 5xx never are.
            api_error.status().is_client_error().then(|| StoredResponse {
                status: api_error.status().as_u16(),
                content_type: PROBLEM_CONTENT_TYPE.to_owned(),
                body: api_error.body(),
            })
        }
        Err(_) => None,
    }
}

/// The renderer of an endpoint's success status, as the `'static` function
/// a request queued for a group commit carries.
fn render_for(success: StatusCode) -> &'static tally_core::app::Render {
    fn created(result: &Result<Outcome, Error>) -> Option<StoredResponse> {
        render(StatusCode::CREATED, result)
    }
    fn ok(result: &Result<Outcome, Error>) -> Option<StoredResponse> {
        render(StatusCode::OK, result)
    }
    match success {
        StatusCode::CREATED => &created,
        StatusCode::OK => &ok,
        other => unreachable!("no keyed endpoint answers {other}"),
    }
}

fn render_success(success: StatusCode, outcome: &Outcome) -> StoredResponse {
    StoredResponse { status: success.as_u16(), content_type: JSON_CONTENT_TYPE.to_owned(), body: outcome_json(outcome) }
}

/// Runs an unkeyed `command` for `user` (admin commands use
/// [`UserId::ADMIN`]); answers with the same bytes a keyed run would store.
pub async fn execute_unkeyed<B: Backend>(
    state: &AppState<B>,
    user: UserId,
    command: Command,
    success: StatusCode,
) -> Response {
    match state.app.execute(user, command, None).await {
        Ok(Executed::Fresh(outcome)) => send(render_success(success, &outcome), false),
        // Without a key there is nothing to replay.
        Ok(Executed::Replayed(stored)) => send(stored, true),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Runs `command` for `user` at most once per key; answers with the fresh
/// result or the stored one.
pub async fn execute<B: Backend, T>(
    state: &AppState<B>,
    user: UserId,
    command: Command,
    request: &KeyedJson<T>,
    success: StatusCode,
) -> Response {
    let keyed = Keyed { key: request.key.clone(), fingerprint: request.fingerprint, render: render_for(success) };
    #[cfg(feature = "mutants")]
    let mut forget = mutant::ForgetOnDrop::<B>::arm(&state.app, user, &request.key);
    // The request runs in a task of its own: if this handler is dropped (the
    // request timeout answers 503, the client goes away), the request still
    // finishes and stores its answer under its key, so the retry replays it.
    // A leader of a group commit (`tally_core::app::batch`) is never cut off
    // halfway through the batch it runs for others.
    let app = std::sync::Arc::clone(&state.app);
    let executed = match tokio::spawn(async move { app.execute(user, command, Some(keyed)).await }).await {
        Ok(executed) => executed,
        // A panic stays a panic (the panic layer answers it).
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // The runtime is shutting down.
        Err(_) => Err(Error::Busy("shutting down")),
    };
    #[cfg(feature = "mutants")]
    forget.disarm();
    match executed {
        Ok(Executed::Fresh(outcome)) => send(render_success(success, &outcome), false),
        Ok(Executed::Replayed(stored)) => send(stored, true),
        Err(error) => match render(success, &Err(error.clone())) {
            Some(stored) => send(stored, false),
            None => ApiError::from(error).into_response(),
        },
    }
}

/// A stored response as an HTTP response, byte for byte.
fn send(stored: StoredResponse, replayed: bool) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type =
        HeaderValue::from_str(&stored.content_type).unwrap_or(HeaderValue::from_static(JSON_CONTENT_TYPE));
    let mut response = (status, Body::from(stored.body)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    if replayed {
        response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// Deliberate bugs of this layer, compiled only under the `mutants` feature
/// and selected with `TALLY_MUTANT` (see `tally_core::mutant`).
#[cfg(feature = "mutants")]
mod mutant {
    use std::sync::Arc;

    use tally_core::idempotency::IdemKey;
    use tally_core::ids::UserId;

    use crate::state::{App, Backend};

    /// `release_key_on_disconnect`: when the client goes away before its
    /// answer (the handler's future is dropped), the key is forgotten "so
    /// that the retry is not stuck" — and the retry runs the request again.
    pub(super) struct ForgetOnDrop<B: Backend> {
        armed: Option<(Arc<App<B>>, UserId, IdemKey)>,
    }

    impl<B: Backend> ForgetOnDrop<B> {
        pub(super) fn arm(app: &Arc<App<B>>, user: UserId, key: &IdemKey) -> Self {
            let active = tally_core::mutant::active("release_key_on_disconnect");
            ForgetOnDrop { armed: active.then(|| (Arc::clone(app), user, key.clone())) }
        }

        pub(super) fn disarm(&mut self) {
            self.armed = None;
        }
    }

    impl<B: Backend> Drop for ForgetOnDrop<B> {
        fn drop(&mut self) {
            let Some((app, user, key)) = self.armed.take() else { return };
            // A process that is shutting down (or crashed) forgets nothing.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = app.forget_key(user, key).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use tally_core::Error;
    use tally_core::catalog::StockError;
    use tally_core::ids::ProductId;

    use super::render;

    #[test]
    fn business_refusals_are_stored_and_broken_records_are_not() {
        let product = ProductId(1);
        // A broken record is a 500, and a 500 is never stored under a key,
        // even though the core counts every stock error as a refusal.
        let broken = Err(StockError::OverRelease { product, returned: 1 }.into());
        assert_eq!(render(StatusCode::OK, &broken), None);
        let refused = Err(StockError::OutOfStock { product, available: 0, wanted: 1 }.into());
        assert_eq!(render(StatusCode::OK, &refused).map(|stored| stored.status), Some(409));
        // A claimed payment key and a token's seat limit are stored like
        // every business refusal, so a retry replays them.
        let refused = Err(Error::PaymentKeyInUse);
        assert_eq!(render(StatusCode::OK, &refused).map(|stored| stored.status), Some(409));
        let refused = Err(Error::SeatLimitReached);
        assert_eq!(render(StatusCode::CREATED, &refused).map(|stored| stored.status), Some(409));
    }
}
