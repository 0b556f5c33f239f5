//! Errors as the API shows them: one [`ApiError`] type, mapped once to an
//! RFC 9457 `application/problem+json` body `{type, title, status, detail, code}`.
//!
//! Every failure a request can meet — an extractor's rejection, a core
//! [`tally_core::Error`], a layer's timeout or a panic — ends up here, so the
//! status, the stable `code` (SPEC.md's error table) and the body format are
//! decided in one place. 5xx bodies never carry details: the cause travels in
//! a response extension ([`InternalCause`]) to the middleware that logs it.

use http::StatusCode;
use serde::Serialize;
use tally_core::Error;
use tally_core::catalog::StockError;
use tally_core::money::AmountError;
use tally_core::order::OrderError;
use tally_core::store::StoreError;
use tally_core::wallet::{LimitKind, WalletError};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The stable error codes of SPEC.md's error table, plus `method_not_allowed`
/// (405 on a known path) and `internal_error` (500), which the table leaves
/// implicit. A code never changes its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    MalformedRequest,
    IdempotencyKeyMissing,
    IdempotencyKeyInvalid,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    IdempotencyKeyInUse,
    InsufficientBalance,
    LimitExceeded,
    MaxBalanceExceeded,
    OutOfStock,
    SeatUnavailable,
    InvalidState,
    OrderExpired,
    PaymentKeyInUse,
    SeatLimitReached,
    PayloadTooLarge,
    UnsupportedMediaType,
    IdempotencyKeyReused,
    InvalidAmount,
    RateLimited,
    InternalError,
    Unavailable,
}

impl Code {
    /// Every code, in declaration order: what a client reads a problem's
    /// `code` against ([`Code::parse`]).
    pub const ALL: [Code; 24] = [
        Code::MalformedRequest,
        Code::IdempotencyKeyMissing,
        Code::IdempotencyKeyInvalid,
        Code::Unauthorized,
        Code::Forbidden,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::IdempotencyKeyInUse,
        Code::InsufficientBalance,
        Code::LimitExceeded,
        Code::MaxBalanceExceeded,
        Code::OutOfStock,
        Code::SeatUnavailable,
        Code::InvalidState,
        Code::OrderExpired,
        Code::PaymentKeyInUse,
        Code::SeatLimitReached,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::IdempotencyKeyReused,
        Code::InvalidAmount,
        Code::RateLimited,
        Code::InternalError,
        Code::Unavailable,
    ];

    /// The code a problem's `code` names; `None` for one this build does not know.
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|code| code.as_str() == text)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Code::MalformedRequest => "malformed_request",
            Code::IdempotencyKeyMissing => "idempotency_key_missing",
            Code::IdempotencyKeyInvalid => "idempotency_key_invalid",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::IdempotencyKeyInUse => "idempotency_key_in_use",
            Code::InsufficientBalance => "insufficient_balance",
            Code::LimitExceeded => "limit_exceeded",
            Code::MaxBalanceExceeded => "max_balance_exceeded",
            Code::OutOfStock => "out_of_stock",
            Code::SeatUnavailable => "seat_unavailable",
            Code::InvalidState => "invalid_state",
            Code::OrderExpired => "order_expired",
            Code::PaymentKeyInUse => "payment_key_in_use",
            Code::SeatLimitReached => "seat_limit_reached",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::InvalidAmount => "invalid_amount",
            Code::RateLimited => "rate_limited",
            Code::InternalError => "internal_error",
            Code::Unavailable => "unavailable",
        }
    }

    pub const fn status(self) -> StatusCode {
        match self {
            Code::MalformedRequest | Code::IdempotencyKeyMissing | Code::IdempotencyKeyInvalid => {
                StatusCode::BAD_REQUEST
            }
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::IdempotencyKeyInUse
            | Code::InsufficientBalance
            | Code::LimitExceeded
            | Code::MaxBalanceExceeded
            | Code::OutOfStock
            | Code::SeatUnavailable
            | Code::InvalidState
            | Code::OrderExpired
            | Code::PaymentKeyInUse
            | Code::SeatLimitReached => StatusCode::CONFLICT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::IdempotencyKeyReused | Code::InvalidAmount => StatusCode::UNPROCESSABLE_ENTITY,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The problem's `title`: the same for every occurrence of the code.
    pub const fn title(self) -> &'static str {
        match self {
            Code::MalformedRequest => "Malformed request",
            Code::IdempotencyKeyMissing => "Idempotency-Key header missing",
            Code::IdempotencyKeyInvalid => "Idempotency-Key header invalid",
            Code::Unauthorized => "Unauthorized",
            Code::Forbidden => "Forbidden",
            Code::NotFound => "Not found",
            Code::MethodNotAllowed => "Method not allowed",
            Code::IdempotencyKeyInUse => "A request is outstanding for this Idempotency-Key",
            Code::InsufficientBalance => "Insufficient balance",
            Code::LimitExceeded => "Limit exceeded",
            Code::MaxBalanceExceeded => "Maximum balance exceeded",
            Code::OutOfStock => "Out of stock",
            Code::SeatUnavailable => "Seat unavailable",
            Code::InvalidState => "Invalid state",
            Code::OrderExpired => "Order expired",
            Code::PaymentKeyInUse => "Payment key in use",
            Code::SeatLimitReached => "Seat limit reached",
            Code::PayloadTooLarge => "Payload too large",
            Code::UnsupportedMediaType => "Unsupported media type",
            Code::IdempotencyKeyReused => "Idempotency-Key is already used",
            Code::InvalidAmount => "Invalid amount",
            Code::RateLimited => "Too many requests",
            Code::InternalError => "Internal server error",
            Code::Unavailable => "Service unavailable",
        }
    }

    /// The problem's `type`: a URN rather than a URL, because nothing serves
    /// documentation pages per code and a URL would promise one.
    pub fn type_uri(self) -> String {
        format!("urn:tally:problem:{}", self.as_str())
    }

    /// The code a bare status gets when a layer (not a handler) produced it.
    pub fn for_status(status: StatusCode) -> Code {
        match status {
            StatusCode::UNAUTHORIZED => Code::Unauthorized,
            StatusCode::FORBIDDEN => Code::Forbidden,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
            StatusCode::TOO_MANY_REQUESTS => Code::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
                Code::Unavailable
            }
            status if status.is_client_error() => Code::MalformedRequest,
            _ => Code::InternalError,
        }
    }
}

/// The wire form of an error (RFC 9457).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:tally:problem:insufficient_balance",
    "title": "Insufficient balance",
    "status": 409,
    "detail": "insufficient balance",
    "code": "insufficient_balance"
}))]
pub struct Problem {
    /// `urn:tally:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    /// What went wrong with this request; generic for 5xx.
    pub detail: String,
    /// The stable, machine-readable error code (SPEC.md's error table).
    pub code: String,
}

impl Problem {
    /// The stable code, if this build knows it.
    pub fn code(&self) -> Option<Code> {
        Code::parse(&self.code)
    }
}

/// Carried on 5xx responses (never in their bodies) so the logging
/// middleware can record what actually happened.
#[derive(Clone, Debug)]
pub struct InternalCause(pub String);

/// An error on its way to becoming a problem response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct ApiError {
    pub code: Code,
    /// Shown to the client (replaced by a generic text for 5xx).
    pub detail: String,
    /// Logged, never shown.
    pub cause: Option<String>,
    /// Seconds for `Retry-After` (429; 503s get the configured default).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> ApiError {
        ApiError { code, detail: detail.into(), cause: None, retry_after: None }
    }

    /// A 5xx whose cause is logged but never sent.
    pub fn internal(code: Code, cause: impl Into<String>) -> ApiError {
        let detail = match code {
            Code::Unavailable => "the service cannot answer right now; retry later",
            _ => "an internal error occurred",
        };
        ApiError { code, detail: detail.to_owned(), cause: Some(cause.into()), retry_after: None }
    }

    pub fn malformed(detail: impl Into<String>) -> ApiError {
        ApiError::new(Code::MalformedRequest, detail)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(Code::NotFound, "no such object")
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_uri: self.code.type_uri(),
            title: self.code.title().to_owned(),
            status: self.code.status().as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_str().to_owned(),
        }
    }

    /// The body bytes. A pure function of the error, which is what lets a
    /// refusal stored under an idempotency key be replayed byte for byte.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.problem()).expect("a problem is plain strings and integers")
    }
}

/// The server's side: the problem response, with `WWW-Authenticate` on a
/// 401, `Retry-After` when set, and the cause in an extension for the log.
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        use http::{HeaderValue, header};
        let mut response =
            (self.status(), [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE))], self.body())
                .into_response();
        if self.code == Code::Unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(InternalCause(cause));
        }
        response
    }
}

impl From<AmountError> for ApiError {
    fn from(error: AmountError) -> ApiError {
        ApiError::new(Code::InvalidAmount, error.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        match error {
            Error::Wallet(wallet) => {
                let code = match wallet {
                    WalletError::InsufficientBalance => Code::InsufficientBalance,
                    WalletError::LimitExceeded(_) => Code::LimitExceeded,
                    WalletError::MaxBalanceExceeded => Code::MaxBalanceExceeded,
                };
                let detail = match wallet {
                    WalletError::LimitExceeded(kind) => format!("{} limit exceeded", limit_name(kind)),
                    other => other.to_string(),
                };
                ApiError::new(code, detail)
            }
            Error::Transition(transition) => ApiError::new(Code::InvalidState, transition.to_string()),
            Error::Payback(payback) => ApiError::new(Code::InvalidAmount, payback.to_string()),
            // An order's total beyond what one payment may move.
            Error::Amount(amount) => ApiError::from(amount),
            Error::Stock(stock) => match stock {
                StockError::OutOfStock { .. } => ApiError::new(Code::OutOfStock, stock.to_string()),
                // The edge checks quantities, so these mean a restock that
                // would pass the stock ceiling (or a zero one that slipped by).
                // A restock that would take the product past its ceiling
                // of units ever stocked: a limit of the product as it
                // stands, refused like a wallet's (409).
                StockError::TooMuchStock(_) => ApiError::new(Code::LimitExceeded, stock.to_string()),
                StockError::ZeroQuantity => ApiError::new(Code::InvalidAmount, stock.to_string()),
                // Giving back more than was taken is a broken record, never
                // the client's doing.
                StockError::OverRelease { .. } => ApiError::internal(Code::InternalError, stock.to_string()),
            },
            Error::Seat(seat) => ApiError::new(Code::SeatUnavailable, seat.to_string()),
            Error::Order(order) => match order {
                OrderError::Expired(_) => ApiError::new(Code::OrderExpired, order.to_string()),
                OrderError::InvalidState { .. } => ApiError::new(Code::InvalidState, order.to_string()),
            },
            // Stored refusals like the other 409s: a retry with the same
            // key replays them, a new key decides again.
            Error::PaymentKeyInUse => ApiError::new(
                Code::PaymentKeyInUse,
                "this payment key was already used for another payment; a payment key pays one payment only",
            ),
            Error::SeatLimitReached => ApiError::new(
                Code::SeatLimitReached,
                "this queue token already holds the most seats its event allows across its live orders",
            ),
            Error::Forbidden(reason) => ApiError::new(Code::Forbidden, reason),
            Error::InvalidState(reason) => ApiError::new(Code::InvalidState, reason),
            Error::NotFound => ApiError::not_found(),
            Error::InvalidInput(message) => ApiError::malformed(message),
            // A lost lease means another admission of the same key now holds
            // it: to the client that is the same situation as "in use".
            Error::IdempotencyKeyInUse | Error::LeaseLost => ApiError::new(
                Code::IdempotencyKeyInUse,
                "the first request with this Idempotency-Key is still being processed; retry later",
            ),
            Error::IdempotencyKeyReused => {
                ApiError::new(Code::IdempotencyKeyReused, "this Idempotency-Key was used with a different request")
            }
            Error::Busy(_) => ApiError::internal(Code::Unavailable, error.to_string()),
            // Not stored: a retry with the same key looks the payment up.
            Error::OutcomePending => ApiError::new(
                Code::Unavailable,
                "the payment gateway's answer is not known yet; retry with the same Idempotency-Key",
            ),
            Error::Store(StoreError::Integrity(_)) => ApiError::internal(Code::InternalError, error.to_string()),
            Error::Store(
                StoreError::Unavailable(_)
                | StoreError::Conflict
                | StoreError::Fenced
                | StoreError::Ambiguous
                | StoreError::Busy,
            ) => ApiError::internal(Code::Unavailable, error.to_string()),
        }
    }
}

fn limit_name(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::PerPayment => "per-payment",
        LimitKind::Daily => "daily",
        LimitKind::Monthly => "monthly",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_keeps_its_status_family() {
        assert_eq!(Code::InsufficientBalance.status(), StatusCode::CONFLICT);
        assert_eq!(Code::InvalidAmount.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(Code::Unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(Code::for_status(StatusCode::PAYLOAD_TOO_LARGE), Code::PayloadTooLarge);
        assert_eq!(Code::for_status(StatusCode::REQUEST_TIMEOUT), Code::Unavailable);
    }

    #[test]
    fn inventory_errors_map_to_their_codes() {
        use tally_core::catalog::{SeatEvent, SeatStatus, SeatUnavailable};
        use tally_core::ids::{OrderId, ProductId, SeatId};
        use tally_core::order::{OrderEvent, OrderStatus};
        let product = ProductId(1);
        let order = OrderId(2);
        let code = |error: Error| ApiError::from(error).code;
        assert_eq!(code(StockError::OutOfStock { product, available: 1, wanted: 2 }.into()), Code::OutOfStock);
        assert_eq!(code(StockError::TooMuchStock(product).into()), Code::LimitExceeded);
        assert_eq!(code(StockError::ZeroQuantity.into()), Code::InvalidAmount);
        assert_eq!(code(StockError::OverRelease { product, returned: 1 }.into()), Code::InternalError);
        let seat =
            SeatUnavailable { seat: SeatId(3), status: SeatStatus::Held(order), event: SeatEvent::Hold(OrderId(4)) };
        assert_eq!(code(seat.into()), Code::SeatUnavailable);
        assert_eq!(code(OrderError::Expired(order).into()), Code::OrderExpired);
        let invalid = OrderError::InvalidState {
            order,
            status: OrderStatus::Cancelled,
            paying: false,
            event: OrderEvent::Cancel,
        };
        assert_eq!(code(invalid.into()), Code::InvalidState);
        assert_eq!(code(Error::Forbidden("no token")), Code::Forbidden);
        assert_eq!(code(AmountError::TooLarge.into()), Code::InvalidAmount);
        assert_eq!(code(Error::SeatLimitReached), Code::SeatLimitReached);
        for conflict in [Code::OutOfStock, Code::SeatUnavailable, Code::OrderExpired, Code::SeatLimitReached] {
            assert_eq!(conflict.status(), StatusCode::CONFLICT);
        }
    }

    #[test]
    fn a_claimed_payment_key_is_a_stored_conflict() {
        let error = ApiError::from(Error::PaymentKeyInUse);
        assert_eq!((error.code, error.status()), (Code::PaymentKeyInUse, StatusCode::CONFLICT));
        assert_eq!(error.problem().code, "payment_key_in_use");
    }

    #[test]
    fn every_code_is_listed_once_and_reads_back() {
        // `ALL` is in declaration order: a variant added anywhere but last
        // without being listed shifts the discriminants and fails here.
        let mut seen = std::collections::BTreeSet::new();
        for (position, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, position, "{code:?}");
            assert_eq!(Code::parse(code.as_str()), Some(code));
            assert!(seen.insert(code.as_str()), "{code:?} twice");
        }
        assert_eq!(Code::ALL.len(), Code::Unavailable as usize + 1, "the last variant is listed");
        assert_eq!(Code::parse("no_such_code"), None);
    }

    #[test]
    fn five_hundreds_hide_their_cause() {
        let error = ApiError::from(Error::Store(StoreError::Integrity("secret table x".into())));
        let body = String::from_utf8(error.body()).unwrap();
        assert!(!body.contains("secret"), "{body}");
        assert_eq!(error.cause.as_deref(), Some("integrity violation: secret table x"));
    }

    #[test]
    fn body_is_a_pure_function_of_the_error() {
        let error = ApiError::from(Error::Wallet(WalletError::InsufficientBalance));
        assert_eq!(error.body(), error.clone().body());
        let problem: Problem = serde_json::from_slice(&error.body()).unwrap();
        assert_eq!(problem.code, "insufficient_balance");
        assert_eq!(problem.status, 409);
    }
}
