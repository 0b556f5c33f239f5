//! The reqwest transport for [`protocol`]: [`GatewayClient`].
//!
//! The client owns the HTTP mechanics (URLs, credentials, timeouts) and turns
//! every transport failure into `Unknown`; what a reply *means* is decided by
//! the `classify_*` functions in `protocol`. Each call sends exactly one HTTP
//! request: no retries, no redirects, no proxies, because a transport that
//! re-sends a confirm on its own is exactly the double charge Tally exists to
//! prevent (seed 003). Whether and when to ask again is the caller's decision.

use std::fmt;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{RequestBuilder, Url};

use crate::outcome::{CancelOutcome, ConfirmOutcome, LookupOutcome};
use crate::protocol::{self, CancelBody, ConfirmBody, IDEMPOTENCY_KEY_HEADER, codes};

/// Where the gateway is and how long to wait for it.
#[derive(Clone)]
pub struct GatewayConfig {
    /// `http://host:port`, optionally with a path prefix. Plain HTTP only:
    /// this build has no TLS, so `https` is refused up front rather than
    /// failing every call later.
    pub base_url: String,
    /// The merchant secret key, sent as HTTP Basic `secret_key:`.
    pub secret_key: String,
    /// How long to wait for the TCP connection. A gateway that cannot be
    /// reached should surface quickly as `Unknown`.
    pub connect_timeout: Duration,
    /// How long one whole exchange may take, connect to last body byte.
    pub request_timeout: Duration,
}

impl GatewayConfig {
    /// A config with the default timeouts: connect 3 s; request 30 s, long
    /// enough for a slow card network, since every timeout is an `Unknown`
    /// that someone has to look up.
    pub fn new(base_url: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            secret_key: secret_key.into(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
        }
    }
}

// The secret key must never reach a log line.
impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("base_url", &self.base_url)
            .field("secret_key", &"<redacted>")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Why a [`GatewayClient`] could not be built. Calls never fail this way:
/// their failures are outcomes.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid gateway base URL {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("the gateway secret key is empty")]
    EmptySecretKey,
    #[error("the gateway secret key has characters other than visible ASCII (a trailing newline?)")]
    InvalidSecretKey,
    #[error("gateway timeouts must be greater than zero")]
    ZeroTimeout,
    #[error("could not build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// A client for a Toss-style payment gateway. Cheap to clone (the connection
/// pool is shared); `Send + Sync`; every method returns an outcome, never an
/// error, so a caller can match on what to do next.
#[derive(Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    /// The base URL without a trailing slash; paths from `protocol` start with `/`.
    base: String,
    authorization: HeaderValue,
}

impl fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayClient").field("base", &self.base).finish_non_exhaustive()
    }
}

impl GatewayClient {
    /// Check the config and build the client. Does no I/O.
    pub fn new(config: GatewayConfig) -> Result<Self, GatewayError> {
        let invalid =
            |reason: &str| GatewayError::InvalidBaseUrl { url: config.base_url.clone(), reason: reason.into() };
        let url = Url::parse(&config.base_url).map_err(|e| invalid(&e.to_string()))?;
        match url.scheme() {
            "http" => {}
            "https" => return Err(invalid("https needs TLS, which this build does not include")),
            _ => return Err(invalid("the scheme must be http")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a base URL takes no query or fragment"));
        }
        if config.secret_key.is_empty() {
            return Err(GatewayError::EmptySecretKey);
        }
        // Base64 would carry any bytes, but a real key is visible ASCII; a
        // space or newline (a key read from a file) would only come back as
        // 401 on every call, which confirm reports as a decline.
        if !config.secret_key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(GatewayError::InvalidSecretKey);
        }
        if config.connect_timeout.is_zero() || config.request_timeout.is_zero() {
            return Err(GatewayError::ZeroTimeout);
        }
        let mut authorization = HeaderValue::from_str(&protocol::basic_authorization(&config.secret_key))
            .map_err(|_| GatewayError::InvalidSecretKey)?;
        authorization.set_sensitive(true);

        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // One request per call, sent once (see the module docs).
            .retry(reqwest::retry::never())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            .user_agent(concat!("tally-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(GatewayError::Http)?;
        Ok(Self { http, base: url.as_str().trim_end_matches('/').to_owned(), authorization })
    }

    /// Ask the gateway to charge `amount` for `payment_key`/`order_id`.
    ///
    /// `idempotency_key` should be unique per payment and stable across
    /// attempts (for example derived from our payment id): the gateway scopes
    /// it without the body, so a key shared by two payments replays the first
    /// one's answer. Arguments the gateway would reject outright are refused
    /// here as `Declined` with [`codes::CLIENT_REFUSED`], without sending.
    pub async fn confirm(
        &self,
        payment_key: &str,
        order_id: &str,
        amount: i64,
        idempotency_key: &str,
    ) -> ConfirmOutcome {
        let checked = non_empty("payment key", payment_key)
            .and_then(|()| non_empty("order id", order_id))
            .and_then(|()| if amount > 0 { Ok(()) } else { Err(format!("amount {amount} is not positive")) })
            .and_then(|()| protocol::check_idempotency_key(idempotency_key));
        if let Err(message) = checked {
            tracing::error!(payment_key, %message, "gateway confirm refused before sending");
            return ConfirmOutcome::Declined { code: codes::CLIENT_REFUSED.to_owned(), message };
        }
        let sent = ConfirmBody { payment_key: payment_key.to_owned(), order_id: order_id.to_owned(), amount };
        let request = self
            .http
            .post(self.url(protocol::CONFIRM_PATH))
            .header(AUTHORIZATION, self.authorization.clone())
            .header(IDEMPOTENCY_KEY_HEADER, idempotency_key)
            .json(&sent);
        let outcome = match exchange(request).await {
            Ok((status, body)) => protocol::classify_confirm(&sent, status, &body),
            Err(reason) => ConfirmOutcome::Unknown { reason },
        };
        match &outcome {
            ConfirmOutcome::Unknown { reason } => tracing::warn!(payment_key, %reason, "gateway confirm indeterminate"),
            other => tracing::debug!(payment_key, outcome = ?other, "gateway confirm"),
        }
        outcome
    }

    /// Ask the gateway what it knows about `payment_key`. No side effects, so
    /// safe to repeat.
    pub async fn lookup(&self, payment_key: &str) -> LookupOutcome {
        if let Err(reason) = non_empty("payment key", payment_key) {
            return LookupOutcome::Unknown { reason };
        }
        let request = self
            .http
            .get(self.url(&protocol::payment_path(payment_key)))
            .header(AUTHORIZATION, self.authorization.clone());
        match exchange(request).await {
            Ok((status, body)) => protocol::classify_lookup(payment_key, status, &body),
            Err(reason) => LookupOutcome::Unknown { reason },
        }
    }

    /// Ask the gateway to refund `payment_key` in full. As with confirm, send
    /// one stable idempotency key per refund.
    pub async fn cancel(&self, payment_key: &str, reason: &str, idempotency_key: &str) -> CancelOutcome {
        let checked = non_empty("payment key", payment_key)
            .and_then(|()| non_empty("cancel reason", reason))
            .and_then(|()| protocol::check_idempotency_key(idempotency_key));
        if let Err(message) = checked {
            tracing::error!(payment_key, %message, "gateway cancel refused before sending");
            return CancelOutcome::Refused { code: codes::CLIENT_REFUSED.to_owned(), message };
        }
        let request = self
            .http
            .post(self.url(&protocol::cancel_path(payment_key)))
            .header(AUTHORIZATION, self.authorization.clone())
            .header(IDEMPOTENCY_KEY_HEADER, idempotency_key)
            .json(&CancelBody { cancel_reason: reason.to_owned() });
        let outcome = match exchange(request).await {
            Ok((status, body)) => protocol::classify_cancel(payment_key, status, &body),
            Err(reason) => CancelOutcome::Unknown { reason },
        };
        if let CancelOutcome::Unknown { reason } = &outcome {
            tracing::warn!(payment_key, %reason, "gateway cancel indeterminate");
        }
        outcome
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn non_empty(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() { Err(format!("the {what} is empty")) } else { Ok(()) }
}

/// Send one request and read the whole reply. `Err` is the reason the
/// exchange failed; every such failure is indeterminate for a confirm,
/// because the request may have reached the gateway before it happened.
async fn exchange(request: RequestBuilder) -> Result<(u16, Vec<u8>), String> {
    let response = request.send().await.map_err(|e| describe("no reply", &e))?;
    let status = response.status().as_u16();
    // The status line alone is not an answer: a body cut off mid-way may be
    // a reply lost after the gateway committed.
    let body = response.bytes().await.map_err(|e| describe(&format!("status {status}, but the body was lost"), &e))?;
    Ok((status, body.to_vec()))
}

/// Name the failure and its causes. reqwest's own message names only the
/// outermost layer ("error sending request"), which says nothing useful.
fn describe(context: &str, error: &reqwest::Error) -> String {
    let mut text = context.to_owned();
    if error.is_connect() {
        text.push_str(": could not connect");
    }
    if error.is_timeout() {
        text.push_str(": timed out");
    }
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
