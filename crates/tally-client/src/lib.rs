//! A typed client of Tally's HTTP API, the one every caller of the API uses:
//! `tally load` and `tally bench`, the end-to-end and crash tests, tally-http's API
//! tests, the simulation's workload and the chaos harness.
//!
//! The client owns what every caller used to write by hand:
//!
//! - the routes: one method per operation ([`routes`](crate::Client::create_payment)
//!   and the rest), with its path, its request body and its reply, typed by
//!   `tally-api`'s DTOs — the very types the server parses and answers;
//! - the headers: `Authorization: Bearer <api key>`, `Idempotency-Key` on
//!   every keyed operation (the caller names the key: a retry must reuse it,
//!   and the simulation needs it deterministic), `Queue-Token`;
//! - errors: a problem+json answer becomes [`Error::Problem`], whose
//!   [`Code`] is the server's own enum;
//! - retries ([`Retry`]): bounded attempts with backoff, only where SPEC.md's
//!   idempotency rules make a second send harmless (a read, or a request
//!   under an `Idempotency-Key`, re-sent with the *same* key), and only on
//!   answers that say nothing happened yet or that the outcome is unknown:
//!   503, 429, 409 `idempotency_key_in_use`, and no reply at all.
//!
//! How bytes travel is a [`Transport`]: reqwest, an in-process tower
//! service, or turmoil's simulated TCP (in the simulation's crate).
//! [`Client::raw`] sends arbitrary bytes through the same transport, for
//! tests that mean to send what the typed API cannot express.

use std::time::Duration;

use http::{HeaderValue, Method, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_api::PROBLEM_CONTENT_TYPE;
pub use tally_api::{Code, Problem, dto, headers};

mod routes;
pub mod transport;

pub use routes::LedgerCursor;
#[cfg(feature = "reqwest")]
pub use transport::ReqwestTransport;
#[cfg(feature = "tower")]
pub use transport::ServiceTransport;
pub use transport::{RawRequest, RawResponse, Transport, TransportError};

/// What a call may fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server refused, with a problem+json body.
    #[error("{status} {}: {}", problem.code, problem.detail)]
    Problem {
        status: StatusCode,
        problem: Problem,
        /// `Retry-After`, in seconds, when the server set it.
        retry_after: Option<u64>,
    },
    /// No reply (after every attempt the [`Retry`] allowed).
    #[error("no reply: {0}")]
    Transport(#[from] TransportError),
    /// A reply that is neither the operation's body nor a problem.
    #[error("unexpected reply {status}: {detail}")]
    Unexpected { status: StatusCode, detail: String },
}

impl Error {
    /// The problem's code, if the server answered one this build knows.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Problem { problem, .. } => problem.code(),
            _ => None,
        }
    }

    /// The status the server answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Problem { status, .. } | Error::Unexpected { status, .. } => Some(*status),
            Error::Transport(_) => None,
        }
    }
}

/// A successful reply: its body, decoded, and what the headers said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply<T> {
    pub status: StatusCode,
    /// `Idempotent-Replayed: true`: a stored answer, replayed.
    pub replayed: bool,
    /// How many times the request was sent (1 without a retry).
    pub attempts: u32,
    pub body: T,
}

/// When and how often a request is sent again. Only reads and requests
/// under an `Idempotency-Key` are ever re-sent, with the same key and bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Sends at most this many times in all (at least 1).
    pub attempts: u32,
    /// The wait before the second send; it doubles after each.
    pub backoff: Duration,
    /// The longest wait, `Retry-After` included.
    pub backoff_max: Duration,
}

impl Retry {
    /// Sends once: the caller sees every 503 and every lost reply (the load
    /// tool, which counts them; tests that assert them).
    pub const NEVER: Retry = Retry { attempts: 1, backoff: Duration::ZERO, backoff_max: Duration::ZERO };

    /// The wait before attempt `attempt + 1` (`attempt` ≥ 1), or the
    /// server's `Retry-After`, both capped.
    fn wait(&self, attempt: u32, retry_after: Option<u64>) -> Duration {
        let doubled = self.backoff.saturating_mul(1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX));
        retry_after.map_or(doubled, Duration::from_secs).min(self.backoff_max)
    }
}

impl Default for Retry {
    /// Four sends, 50 ms then 100 then 200 apart, at most 2 s each.
    fn default() -> Retry {
        Retry { attempts: 4, backoff: Duration::from_millis(50), backoff_max: Duration::from_secs(2) }
    }
}

/// The longest a client waits for one attempt's reply, by default.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one server, acting as one caller (an API key, or nobody).
/// Cheap to clone when its transport is; [`Client::as_key`] makes another
/// caller's view over the same transport.
#[derive(Clone, Debug)]
pub struct Client<T> {
    transport: T,
    api_key: Option<String>,
    retry: Retry,
    attempt_timeout: Duration,
}

impl<T: Transport> Client<T> {
    /// A client with no API key, the default [`Retry`] and [`ATTEMPT_TIMEOUT`].
    pub fn new(transport: T) -> Client<T> {
        Client { transport, api_key: None, retry: Retry::default(), attempt_timeout: ATTEMPT_TIMEOUT }
    }

    /// This client acting as the holder of `api_key` (a user's, or the admin's).
    pub fn with_key(mut self, api_key: impl Into<String>) -> Client<T> {
        self.api_key = Some(api_key.into());
        self
    }

    /// Another caller over a clone of the same transport.
    pub fn as_key(&self, api_key: impl Into<String>) -> Client<T>
    where
        T: Clone,
    {
        self.clone().with_key(api_key)
    }

    pub fn with_retry(mut self, retry: Retry) -> Client<T> {
        self.retry = Retry { attempts: retry.attempts.max(1), ..retry };
        self
    }

    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Client<T> {
        self.attempt_timeout = timeout;
        self
    }

    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The escape hatch: `request` exactly as given (no key added, no
    /// retry), through the same transport, bounded by the attempt timeout.
    /// For tests of malformed requests, bad headers and raw bodies.
    pub async fn raw(&self, request: RawRequest) -> Result<RawResponse, TransportError> {
        match tokio::time::timeout(self.attempt_timeout, self.transport.send(request)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::TimedOut),
        }
    }

    /// Sends `call` once, as built, and answers the reply undecoded: for
    /// callers that assert a reply's exact bytes and headers.
    pub async fn exchange(&self, call: &Call) -> Result<RawResponse, TransportError> {
        self.raw(call.to_request()).await
    }

    /// A request to `path` as this client's caller, with its headers set:
    /// the start of a [`Call`], for [`Client::call`].
    pub fn request(&self, method: Method, path: &str) -> Call {
        let mut call = Call::new(method, path);
        if let Some(key) = &self.api_key {
            call = call.header(header::AUTHORIZATION.as_str(), &format!("Bearer {key}"));
        }
        call
    }

    /// Sends `call` (again, as [`Retry`] allows) and decodes its reply:
    /// `T` on a 2xx, [`Error`] otherwise.
    pub async fn call<R: DeserializeOwned>(&self, call: Call) -> Result<Reply<R>, Error> {
        let retriable = call.method == Method::GET || call.headers.contains_key(headers::IDEMPOTENCY_KEY);
        let mut attempt = 1;
        loop {
            let outcome = match self.raw(call.to_request()).await {
                Ok(response) => decode(response, attempt),
                Err(error) => Err(Error::Transport(error)),
            };
            let again = match &outcome {
                Err(error) => retriable && attempt < self.retry.attempts && worth_retrying(error),
                Ok(_) => false,
            };
            if !again {
                return outcome;
            }
            let retry_after = match &outcome {
                Err(Error::Problem { retry_after, .. }) => *retry_after,
                _ => None,
            };
            tokio::time::sleep(self.retry.wait(attempt, retry_after)).await;
            attempt += 1;
        }
    }
}

/// Whether a second send can help: the server said it did nothing yet or
/// could not tell (503, 429, a key still in flight), or no reply came.
fn worth_retrying(error: &Error) -> bool {
    match error {
        Error::Transport(_) => true,
        Error::Problem { .. } => {
            matches!(error.code(), Some(Code::Unavailable | Code::RateLimited | Code::IdempotencyKeyInUse))
        }
        Error::Unexpected { status, .. } => *status == StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn decode<R: DeserializeOwned>(response: RawResponse, attempts: u32) -> Result<Reply<R>, Error> {
    let status = response.status();
    let is_problem = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == PROBLEM_CONTENT_TYPE);
    let replayed = response.headers().get(headers::IDEMPOTENT_REPLAYED).is_some_and(|v| v == "true");
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = response.into_body();
    let unexpected = |detail: String| Error::Unexpected { status, detail };
    if status.is_success() {
        return serde_json::from_slice(&body)
            .map(|body| Reply { status, replayed, attempts, body })
            .map_err(|e| unexpected(format!("{e}: {}", String::from_utf8_lossy(&body))));
    }
    if is_problem && let Ok(problem) = serde_json::from_slice::<Problem>(&body) {
        return Err(Error::Problem { status, problem, retry_after });
    }
    Err(unexpected(String::from_utf8_lossy(&body).into_owned()))
}

/// One request being built: method, path, headers and a JSON body.
#[derive(Clone, Debug)]
pub struct Call {
    method: Method,
    path: String,
    headers: http::HeaderMap,
    body: Option<Vec<u8>>,
}

impl Call {
    /// A request with no headers yet (no key either): for callers that plan
    /// requests themselves, like the simulation's operation table.
    pub fn new(method: Method, path: &str) -> Call {
        Call { method, path: path.to_owned(), headers: http::HeaderMap::new(), body: None }
    }

    /// Adds a header. A value that is not a valid header value is a bug of
    /// the caller's, so it panics; send such bytes with [`Client::raw`].
    pub fn header(mut self, name: &str, value: &str) -> Call {
        let name = header::HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        self.headers.append(name, HeaderValue::from_str(value).expect("a valid header value"));
        self
    }

    /// Under this `Idempotency-Key`: the request becomes safe to re-send.
    pub fn idempotency_key(self, key: &str) -> Call {
        self.header(headers::IDEMPOTENCY_KEY, key)
    }

    /// A JSON body.
    pub fn json(self, body: &impl Serialize) -> Call {
        self.json_bytes(serde_json::to_vec(body).expect("request bodies serialize"))
    }

    /// A JSON body already serialized (sent as is).
    pub fn json_bytes(mut self, body: Vec<u8>) -> Call {
        self.body = Some(body);
        self.header(header::CONTENT_TYPE.as_str(), "application/json")
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The request as the transport sends it.
    pub fn to_request(&self) -> RawRequest {
        let mut request = http::Request::new(self.body.clone().unwrap_or_default());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path.parse().expect("paths the client builds are valid URIs");
        *request.headers_mut() = self.headers.clone();
        request
    }
}

#[cfg(test)]
mod tests;
