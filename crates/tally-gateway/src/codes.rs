//! Error codes, as a Toss-style gateway spells them (re-exported as
//! `protocol::codes`). Plain strings, so the [`book`](crate::book) can name
//! its refusals without the `http` feature.

/// Confirm of a payment key the gateway has already processed.
pub const ALREADY_PROCESSED_PAYMENT: &str = "ALREADY_PROCESSED_PAYMENT";
/// Cancel of a payment that is already cancelled.
pub const ALREADY_CANCELED_PAYMENT: &str = "ALREADY_CANCELED_PAYMENT";
/// Lookup or cancel of a payment key the gateway does not know.
pub const NOT_FOUND_PAYMENT: &str = "NOT_FOUND_PAYMENT";
/// Malformed request, or an amount that differs from the authorised one.
pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
/// The card issuer refused the charge.
pub const REJECT_CARD_PAYMENT: &str = "REJECT_CARD_PAYMENT";
/// Missing or wrong secret key.
pub const UNAUTHORIZED_KEY: &str = "UNAUTHORIZED_KEY";
/// The gateway's generic internal error (sent with a 5xx).
pub const FAILED_INTERNAL_SYSTEM_PROCESSING: &str = "FAILED_INTERNAL_SYSTEM_PROCESSING";
/// A request with the same idempotency key is still being processed.
pub const ALREADY_PROCESSING_REQUEST: &str = "ALREADY_PROCESSING_REQUEST";
/// Not a gateway code: the client refused to send the request (an empty
/// payment key, a non-positive amount, an idempotency key the gateway
/// would reject). Nothing left the process, so nothing was charged.
pub const CLIENT_REFUSED: &str = "TALLY_CLIENT_REFUSED";

/// Codes that arrive with a 4xx yet do not say whether anything happened:
/// a request still in flight under the same key, or a failure somewhere
/// between the gateway and the card network. They classify as `Unknown`.
pub const INDETERMINATE: &[&str] = &[
    ALREADY_PROCESSING_REQUEST,
    "PROVIDER_ERROR",
    "FAILED_PAYMENT_INTERNAL_SYSTEM_PROCESSING",
    FAILED_INTERNAL_SYSTEM_PROCESSING,
    "UNKNOWN_PAYMENT_ERROR",
];
