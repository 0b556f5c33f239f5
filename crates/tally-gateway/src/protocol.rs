//! The gateway's wire protocol, with no transport attached: paths, the
//! authorization header, the JSON bodies, and the classification of a reply
//! (status code and body bytes) into an outcome.
//!
//! [`GatewayClient`](crate::GatewayClient) sends these over reqwest; the fake
//! gateway speaks them; a simulation that carries bytes over its own network
//! can build the same requests and reuse the same `classify_*` functions, so
//! the rules below hold whoever does the I/O. Anything that goes wrong in the
//! transport itself (timeout, refused or reset connection, a body that cannot
//! be read) is `Unknown` by definition and never reaches these functions.
//!
//! # Classification (the crux)
//!
//! | reply | confirm | lookup | cancel |
//! |---|---|---|---|
//! | 2xx, body parses and describes our request | `Approved` (status `DONE`) | `Done` | `Cancelled` (status `CANCELED`) |
//! | 2xx, body unparseable, another payment, or another status | `Unknown` | `Unknown` | `Unknown` |
//! | 4xx `ALREADY_PROCESSED_PAYMENT` | `AlreadyProcessed` | `Unknown` | `Unknown` |
//! | 4xx `ALREADY_CANCELED_PAYMENT` | `AlreadyProcessed` | `Unknown` | `AlreadyCancelled` |
//! | 4xx `NOT_FOUND_PAYMENT` | `Declined` | `NotFound` | `NotFound` |
//! | 408, 409, 429, or an in-flight/provider code ([`codes::INDETERMINATE`]) | `Unknown` | `Unknown` | `Unknown` |
//! | any other 4xx with a `{code, message}` body (decline, amount mismatch, 401) | `Declined` | `Unknown` | `Refused` |
//! | 4xx without a parseable `{code}` body | `Unknown` | `Unknown` | `Unknown` |
//! | 1xx, 3xx, 5xx | `Unknown` | `Unknown` | `Unknown` |

use serde::{Deserialize, Serialize};

use crate::outcome::{CancelOutcome, ConfirmOutcome, LookupOutcome};

/// The confirm endpoint, relative to the gateway's base URL.
pub const CONFIRM_PATH: &str = "/v1/payments/confirm";
/// The header that carries our idempotency key on confirm and cancel.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// Longest idempotency key the gateway accepts (Toss: 300 characters).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 300;
/// Payment status: approved and charged.
pub const STATUS_DONE: &str = "DONE";
/// Payment status: charged, then fully refunded.
pub const STATUS_CANCELED: &str = "CANCELED";

/// Error codes, as a Toss-style gateway spells them.
pub use crate::codes;

/// Body of `POST /v1/payments/confirm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmBody {
    pub payment_key: String,
    pub order_id: String,
    pub amount: i64,
}

/// Body of `POST /v1/payments/{paymentKey}/cancel`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelBody {
    pub cancel_reason: String,
}

/// The payment object the gateway returns from confirm, lookup and cancel.
/// Only the fields the classification needs; a real gateway sends many more,
/// which parsing ignores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentBody {
    pub payment_key: String,
    pub order_id: String,
    pub status: String,
    pub total_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canceled_at: Option<String>,
}

/// The gateway's error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// `Authorization` header value: HTTP Basic with `secret_key:` (the secret
/// key as user name, an empty password), as Toss expects.
pub fn basic_authorization(secret_key: &str) -> String {
    format!("Basic {}", base64(format!("{secret_key}:").as_bytes()))
}

/// Path of the lookup endpoint for one payment key (percent-encoded).
pub fn payment_path(payment_key: &str) -> String {
    format!("/v1/payments/{}", encode_segment(payment_key))
}

/// Path of the cancel endpoint for one payment key (percent-encoded).
pub fn cancel_path(payment_key: &str) -> String {
    format!("/v1/payments/{}/cancel", encode_segment(payment_key))
}

/// Why the client will not send an idempotency key, if it will not: the
/// gateway rejects keys over 300 characters, and a header value must be
/// visible ASCII. Refusing locally keeps such a key from turning into an
/// ambiguous transport error.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!("the idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the idempotency key must be visible ASCII".to_owned());
    }
    Ok(())
}

/// Classify the reply to a confirm of `sent`.
pub fn classify_confirm(sent: &ConfirmBody, status: u16, body: &[u8]) -> ConfirmOutcome {
    let unknown = |reason: String| ConfirmOutcome::Unknown { reason };
    // A 2xx is only a success if it describes the payment we asked about.
    // Toss scopes idempotency keys without the body, so a key reused by
    // mistake replays *another* payment's approval: that must not count
    // as ours. A status other than DONE (a virtual account waiting for its
    // deposit, say) is not a charge either.
    let paid = |p: PaymentBody| match p {
        p if p.payment_key != sent.payment_key || p.order_id != sent.order_id => unknown(format!(
            "the gateway answered {status} about another payment (key {:?}, order {:?})",
            p.payment_key, p.order_id
        )),
        p if p.status != STATUS_DONE => {
            unknown(format!("the gateway answered {status} with payment status {:?}", p.status))
        }
        p if p.total_amount != sent.amount => {
            unknown(format!("the gateway approved {} where {} was asked", p.total_amount, sent.amount))
        }
        PaymentBody { approved_at: None, .. } => unknown(format!("the gateway answered {status} without approvedAt")),
        PaymentBody { payment_key, order_id, total_amount, approved_at: Some(approved_at), .. } => {
            ConfirmOutcome::Approved { payment_key, order_id, amount: total_amount, approved_at }
        }
    };
    let refused = |e: ErrorBody| match e {
        // The payment was processed before; by whom and how, only a
        // lookup can say. Neither a success nor a failure.
        // A cancelled payment was charged first, so it counts as processed.
        e if e.code == codes::ALREADY_PROCESSED_PAYMENT || e.code == codes::ALREADY_CANCELED_PAYMENT => {
            ConfirmOutcome::AlreadyProcessed
        }
        e if is_indeterminate(status, &e.code) => unknown(answered(status, &e)),
        // Any other 4xx with a code is the gateway refusing the request:
        // a decline, an amount mismatch, bad credentials. By the
        // gateway's contract a refused request charged nothing.
        ErrorBody { code, message } => ConfirmOutcome::Declined { code, message },
    };
    classify(status, body, unknown, paid, refused)
}

/// Classify the reply to a lookup of `payment_key`.
pub fn classify_lookup(payment_key: &str, status: u16, body: &[u8]) -> LookupOutcome {
    let unknown = |reason: String| LookupOutcome::Unknown { reason };
    let paid = |p: PaymentBody| match another_payment(payment_key, &p) {
        Some(reason) => unknown(reason),
        None => LookupOutcome::Done { amount: p.total_amount, order_id: p.order_id, status: p.status },
    };
    // Only the gateway's own "no such payment" counts: a bare 404 from a
    // misrouted base URL must never read as "never charged".
    let refused = |e: ErrorBody| match e {
        e if e.code == codes::NOT_FOUND_PAYMENT => LookupOutcome::NotFound,
        e => unknown(answered(status, &e)),
    };
    classify(status, body, unknown, paid, refused)
}

/// Classify the reply to a cancel of `payment_key`.
pub fn classify_cancel(payment_key: &str, status: u16, body: &[u8]) -> CancelOutcome {
    let unknown = |reason: String| CancelOutcome::Unknown { reason };
    let paid = |p: PaymentBody| match another_payment(payment_key, &p) {
        Some(reason) => unknown(reason),
        None if p.status == STATUS_CANCELED => CancelOutcome::Cancelled,
        // We only ask for full refunds; a partial one (or anything else)
        // is not what we asked for, so do not pretend it is.
        None => unknown(format!("the gateway answered {status} with payment status {:?}", p.status)),
    };
    let refused = |e: ErrorBody| match e {
        e if e.code == codes::ALREADY_CANCELED_PAYMENT => CancelOutcome::AlreadyCancelled,
        e if e.code == codes::NOT_FOUND_PAYMENT => CancelOutcome::NotFound,
        e if is_indeterminate(status, &e.code) => unknown(answered(status, &e)),
        ErrorBody { code, message } => CancelOutcome::Refused { code, message },
    };
    classify(status, body, unknown, paid, refused)
}

/// What every classification shares: a 2xx is read as a payment (`paid`
/// judges it), a 4xx as the gateway's error (`refused` judges it); a body
/// that does not parse, and any other status, say nothing (`unknown`).
fn classify<T>(
    status: u16,
    body: &[u8],
    unknown: impl FnOnce(String) -> T,
    paid: impl FnOnce(PaymentBody) -> T,
    refused: impl FnOnce(ErrorBody) -> T,
) -> T {
    let unparseable = |e: serde_json::Error| format!("the gateway answered {status} with an unparseable body: {e}");
    match status {
        200..=299 => match serde_json::from_slice::<PaymentBody>(body) {
            Ok(payment) => paid(payment),
            Err(e) => unknown(unparseable(e)),
        },
        // Something that answers 4xx without the gateway's error shape (a
        // proxy, a load balancer): we do not know who refused what.
        400..=499 => match serde_json::from_slice::<ErrorBody>(body) {
            Ok(error) => refused(error),
            Err(e) => unknown(unparseable(e)),
        },
        // A 5xx may come after the charge was recorded; 1xx and 3xx are not
        // answers this API gives. Either way we cannot tell.
        _ => unknown(format!("the gateway answered {status}")),
    }
}

/// Why a 2xx reply about `payment_key` does not describe that payment, if
/// it does not.
fn another_payment(payment_key: &str, payment: &PaymentBody) -> Option<String> {
    (payment.payment_key != payment_key)
        .then(|| format!("the gateway answered about another payment ({:?})", payment.payment_key))
}

/// A 4xx whose code says nothing final.
fn answered(status: u16, error: &ErrorBody) -> String {
    format!("the gateway answered {status} {}: {}", error.code, error.message)
}

/// 408 (the server gave up reading), 409 (a request under the same key is in
/// flight) and 429 (throttled) say nothing final about the payment, whatever
/// the code; neither do the codes in [`codes::INDETERMINATE`].
fn is_indeterminate(status: u16, code: &str) -> bool {
    matches!(status, 408 | 409 | 429) || codes::INDETERMINATE.contains(&code)
}

/// Percent-encode one path segment: everything but RFC 3986 unreserved
/// characters, so a payment key can never change the path's shape.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648 §4), for the Basic credentials.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32, shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        out.push(sextet(n, 18));
        out.push(sextet(n, 12));
        out.push(if chunk.len() > 1 { sextet(n, 6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(n, 0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> ConfirmBody {
        ConfirmBody { payment_key: "pk_1".into(), order_id: "order-1".into(), amount: 15_000 }
    }

    fn payment(status: &str, amount: i64) -> Vec<u8> {
        serde_json::to_vec(&PaymentBody {
            payment_key: "pk_1".into(),
            order_id: "order-1".into(),
            status: status.into(),
            total_amount: amount,
            approved_at: Some("2024-01-01T00:00:00+09:00".into()),
            canceled_at: None,
        })
        .unwrap()
    }

    fn error(code: &str) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody { code: code.into(), message: "m".into() }).unwrap()
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(basic_authorization("test_sk"), "Basic dGVzdF9zazo=");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(payment_path("a/b c"), "/v1/payments/a%2Fb%20c");
        assert_eq!(cancel_path("tgen_2024-x.y~z"), "/v1/payments/tgen_2024-x.y~z/cancel");
    }

    #[test]
    fn confirm_classification() {
        assert!(matches!(classify_confirm(&sent(), 200, &payment("DONE", 15_000)), ConfirmOutcome::Approved { .. }));
        // A success that is not quite ours is not a success.
        for body in [payment("DONE", 14_000), payment("WAITING_FOR_DEPOSIT", 15_000), b"{".to_vec()] {
            assert!(matches!(classify_confirm(&sent(), 200, &body), ConfirmOutcome::Unknown { .. }));
        }
        let other = ConfirmBody { payment_key: "pk_2".into(), ..sent() };
        assert!(matches!(classify_confirm(&other, 200, &payment("DONE", 15_000)), ConfirmOutcome::Unknown { .. }));

        assert_eq!(
            classify_confirm(&sent(), 400, &error("ALREADY_PROCESSED_PAYMENT")),
            ConfirmOutcome::AlreadyProcessed
        );
        for code in ["REJECT_CARD_PAYMENT", "INVALID_CARD", "EXCEED_MAX_AMOUNT", "INVALID_REQUEST"] {
            assert_eq!(
                classify_confirm(&sent(), 400, &error(code)),
                ConfirmOutcome::Declined { code: code.into(), message: "m".into() }
            );
        }
        assert!(matches!(classify_confirm(&sent(), 401, &error("UNAUTHORIZED_KEY")), ConfirmOutcome::Declined { .. }));
        for (status, body) in [
            (400, error("ALREADY_PROCESSING_REQUEST")),
            (400, error("PROVIDER_ERROR")),
            (409, error("REJECT_CARD_PAYMENT")),
            (429, error("TOO_MANY_REQUESTS")),
            (400, b"<html>bad gateway</html>".to_vec()),
            (500, error("FAILED_INTERNAL_SYSTEM_PROCESSING")),
            (503, Vec::new()),
            (302, Vec::new()),
        ] {
            assert!(
                matches!(classify_confirm(&sent(), status, &body), ConfirmOutcome::Unknown { .. }),
                "{status} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn lookup_classification() {
        assert_eq!(
            classify_lookup("pk_1", 200, &payment("CANCELED", 15_000)),
            LookupOutcome::Done { amount: 15_000, order_id: "order-1".into(), status: "CANCELED".into() }
        );
        assert_eq!(classify_lookup("pk_1", 404, &error("NOT_FOUND_PAYMENT")), LookupOutcome::NotFound);
        assert!(matches!(classify_lookup("pk_1", 404, b"Not Found"), LookupOutcome::Unknown { .. }));
        assert!(matches!(classify_lookup("pk_2", 200, &payment("DONE", 1)), LookupOutcome::Unknown { .. }));
        assert!(matches!(classify_lookup("pk_1", 401, &error("UNAUTHORIZED_KEY")), LookupOutcome::Unknown { .. }));
    }

    #[test]
    fn cancel_classification() {
        assert_eq!(classify_cancel("pk_1", 200, &payment("CANCELED", 15_000)), CancelOutcome::Cancelled);
        assert!(matches!(classify_cancel("pk_1", 200, &payment("PARTIAL_CANCELED", 1)), CancelOutcome::Unknown { .. }));
        assert_eq!(classify_cancel("pk_1", 400, &error("ALREADY_CANCELED_PAYMENT")), CancelOutcome::AlreadyCancelled);
        assert_eq!(classify_cancel("pk_1", 404, &error("NOT_FOUND_PAYMENT")), CancelOutcome::NotFound);
        assert_eq!(
            classify_cancel("pk_1", 403, &error("NOT_CANCELABLE_PAYMENT")),
            CancelOutcome::Refused { code: "NOT_CANCELABLE_PAYMENT".into(), message: "m".into() }
        );
        assert!(matches!(classify_cancel("pk_1", 502, b""), CancelOutcome::Unknown { .. }));
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert!(check_idempotency_key("tally-payment-0192").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key(&"k".repeat(301)).is_err());
    }
}
