//! A fake Toss-style payment gateway: a real HTTP server that tests, the
//! simulation and `tally gateway-sim` talk to instead of the real thing.
//!
//! This module owns the fake's payments and counters ([`FakeGateway`]);
//! [`faults`] owns what goes wrong and when; the server (routes, accept loop,
//! connection handling) is [`router`], [`serve`] and [`serve_on`].
//!
//! # Behaviour
//!
//! - `POST /v1/payments/confirm {paymentKey, orderId, amount}`: the first
//!   confirm of a key charges it (200, status `DONE`). Any later confirm of
//!   that key is 400 `ALREADY_PROCESSED_PAYMENT`, whatever its
//!   `Idempotency-Key`: the fake deliberately does not honour the header, so
//!   that a client which re-sends a confirm is caught (seed 003). The amount
//!   must be positive and, if the key was [`register`](FakeGateway::register)ed,
//!   equal to the registered amount (else 400 `INVALID_REQUEST`); a
//!   [`decline`](FakeGateway::decline)d key gets 400 `REJECT_CARD_PAYMENT`.
//! - `GET /v1/payments/{paymentKey}`: 200 with the payment (`DONE` or
//!   `CANCELED`), or 404 `NOT_FOUND_PAYMENT`, also for a key that was only
//!   registered: nothing is charged until a confirm takes effect.
//! - `POST /v1/payments/{paymentKey}/cancel {cancelReason}`: 200 `CANCELED`
//!   once; then 400 `ALREADY_CANCELED_PAYMENT`; unknown key 404.
//! - Missing or wrong Basic credentials: 401 `UNAUTHORIZED_KEY`.
//! - Admin (no credentials, for tests and operators only): `GET /__stats`;
//!   `GET`/`POST`/`DELETE /__faults` (a [`FaultConfig`]); `POST /__register
//!   {paymentKey, amount}`; `POST /__decline {paymentKey}`.
//!
//! The payments and the rule that charges a key once are the [`Book`]'s;
//! this module adds the wire format and the counters. Every check and state
//! change of one request happens under one lock, so at most one confirm per
//! key can ever take effect, however many race.

pub mod faults;
mod server;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::book::{Book, CancelRefusal, Charge, ConfirmRefusal};
use crate::protocol::{self, ConfirmBody, ErrorBody, PaymentBody, STATUS_CANCELED, STATUS_DONE, codes};
pub use faults::{
    Endpoint, Endpoints, ErrorFault, FaultConfig, FaultCounters, FaultPlan, FaultRule, LatencyFault, Trigger,
};
pub use server::{router, serve, serve_on};

/// Counters for one payment key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentStats {
    /// Confirm requests that arrived naming this key (any outcome, any fault).
    pub confirm_requests: u64,
    /// Confirms that charged the payment. At most 1, by construction.
    pub confirm_effects: u64,
    pub cancel_requests: u64,
    /// Cancels that refunded the payment. At most 1, by construction.
    pub cancel_effects: u64,
    pub lookups: u64,
    /// The `Idempotency-Key` of each confirm and cancel, in arrival order
    /// (the fake ignores them; tests check the client sent them).
    pub idempotency_keys: Vec<String>,
}

/// Everything the fake counted (`GET /__stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStats {
    pub payments: BTreeMap<String, PaymentStats>,
    /// Requests refused with 401.
    pub unauthorized: u64,
    /// Requests refused with 400 because their body did not parse.
    pub malformed: u64,
    pub faults: FaultCounters,
}

/// Produces `approvedAt`/`canceledAt` strings.
pub type Clock = Arc<dyn Fn() -> String + Send + Sync>;

/// The fake gateway: its payments, counters and fault plan. Cheap to clone;
/// clones share everything, so a test keeps one and serves another.
#[derive(Clone)]
pub struct FakeGateway {
    inner: Arc<Inner>,
}

struct Inner {
    expected_authorization: String,
    ledger: Mutex<Ledger>,
    faults: Arc<FaultPlan>,
    clock: Clock,
    lost_reply_hold: Duration,
}

/// The payments (stamped with RFC 3339 strings) and the counters, under one
/// lock.
#[derive(Default)]
struct Ledger {
    book: Book<String>,
    stats: GatewayStats,
}

/// A charge as the gateway's replies describe it.
fn body(payment_key: &str, charge: &Charge<String>) -> PaymentBody {
    PaymentBody {
        payment_key: payment_key.to_owned(),
        order_id: charge.order_id.clone(),
        status: if charge.is_cancelled() { STATUS_CANCELED } else { STATUS_DONE }.to_owned(),
        total_amount: charge.amount,
        approved_at: Some(charge.approved_at.clone()),
        canceled_at: charge.canceled_at.clone(),
    }
}

/// A reply the server will send: a status and a JSON body.
pub(crate) type Reply = (u16, serde_json::Value);

impl fmt::Debug for FakeGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeGateway").field("faults", &self.inner.faults).finish_non_exhaustive()
    }
}

impl FakeGateway {
    /// A gateway that accepts `secret_key`, with no payments and no faults
    /// (fault RNG seed 0).
    pub fn new(secret_key: &str) -> Self {
        Self::with_options(secret_key, Arc::new(FaultPlan::new(0)), Arc::new(|| rfc3339_utc(SystemTime::now())))
    }

    /// As [`new`](Self::new), with a given fault plan and a clock for the
    /// timestamps it writes (a simulation passes a deterministic one).
    pub fn with_options(secret_key: &str, faults: Arc<FaultPlan>, clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                expected_authorization: protocol::basic_authorization(secret_key),
                ledger: Mutex::new(Ledger::default()),
                faults,
                clock,
                lost_reply_hold: Duration::from_secs(300),
            }),
        }
    }

    /// The fault plan, to change faults while the server runs.
    pub fn faults(&self) -> Arc<FaultPlan> {
        Arc::clone(&self.inner.faults)
    }

    /// Fix the amount the customer authorised for `payment_key`: a confirm
    /// with another amount is then refused (`INVALID_REQUEST`).
    pub fn register(&self, payment_key: &str, amount: i64) {
        self.ledger().book.register(payment_key, amount);
    }

    /// Make every confirm of `payment_key` fail with `REJECT_CARD_PAYMENT`.
    pub fn decline(&self, payment_key: &str) {
        self.ledger().book.decline(payment_key);
    }

    /// A snapshot of all counters.
    pub fn stats(&self) -> GatewayStats {
        let mut stats = self.ledger().stats.clone();
        stats.faults = self.inner.faults.counters();
        stats
    }

    /// The counters of one payment key (zeros if it was never named).
    pub fn payment_stats(&self, payment_key: &str) -> PaymentStats {
        self.ledger().stats.payments.get(payment_key).cloned().unwrap_or_default()
    }

    /// The payment as a lookup would return it, without faults or counting.
    pub fn payment(&self, payment_key: &str) -> Option<PaymentBody> {
        self.ledger().book.charge(payment_key).map(|c| body(payment_key, c))
    }

    // ---- the gateway's behaviour, used by the server ----

    pub(crate) fn authorized(&self, authorization: Option<&str>) -> bool {
        let ok = authorization == Some(self.inner.expected_authorization.as_str());
        if !ok {
            self.ledger().stats.unauthorized += 1;
        }
        ok
    }

    pub(crate) fn note_malformed(&self) {
        self.ledger().stats.malformed += 1;
    }

    pub(crate) fn note_confirm_arrival(&self, payment_key: &str, idempotency_key: Option<&str>) {
        let mut ledger = self.ledger();
        let stats = ledger.stats.payments.entry(payment_key.to_owned()).or_default();
        stats.confirm_requests += 1;
        stats.idempotency_keys.extend(idempotency_key.map(str::to_owned));
    }

    pub(crate) fn note_cancel_arrival(&self, payment_key: &str, idempotency_key: Option<&str>) {
        let mut ledger = self.ledger();
        let stats = ledger.stats.payments.entry(payment_key.to_owned()).or_default();
        stats.cancel_requests += 1;
        stats.idempotency_keys.extend(idempotency_key.map(str::to_owned));
    }

    /// Apply one confirm. The bool says whether it took effect.
    pub(crate) fn apply_confirm(&self, request: &ConfirmBody) -> (Reply, bool) {
        let mut ledger = self.ledger();
        let key = request.payment_key.as_str();
        let charged = ledger.book.confirm(key, &request.order_id, request.amount, || (self.inner.clock)());
        let body = match charged {
            Ok(charge) => body(key, charge),
            Err(refusal) => {
                let message = match refusal {
                    ConfirmRefusal::AlreadyProcessed => "이미 처리된 결제 입니다.".to_owned(),
                    ConfirmRefusal::Declined => "the card issuer declined the payment".to_owned(),
                    ConfirmRefusal::AmountDiffers { authorised } => {
                        format!("amount {} differs from the authorised amount {authorised}", request.amount)
                    }
                };
                return (error(400, refusal.code(), &message), false);
            }
        };
        ledger.stats.payments.entry(key.to_owned()).or_default().confirm_effects += 1;
        ((200, to_json(&body)), true)
    }

    pub(crate) fn apply_lookup(&self, payment_key: &str) -> Reply {
        let mut ledger = self.ledger();
        ledger.stats.payments.entry(payment_key.to_owned()).or_default().lookups += 1;
        match ledger.book.charge(payment_key) {
            Some(charge) => (200, to_json(&body(payment_key, charge))),
            None => not_found(),
        }
    }

    /// Apply one cancel. The bool says whether it took effect.
    pub(crate) fn apply_cancel(&self, payment_key: &str) -> (Reply, bool) {
        let now = (self.inner.clock)();
        let mut ledger = self.ledger();
        let body = match ledger.book.cancel(payment_key, now) {
            Ok(charge) => body(payment_key, charge),
            Err(CancelRefusal::NotFound) => return (not_found(), false),
            Err(CancelRefusal::AlreadyCancelled) => {
                return (error(400, codes::ALREADY_CANCELED_PAYMENT, "the payment is already cancelled"), false);
            }
        };
        ledger.stats.payments.entry(payment_key.to_owned()).or_default().cancel_effects += 1;
        ((200, to_json(&body)), true)
    }

    pub(crate) fn lost_reply_hold(&self) -> Duration {
        self.inner.lost_reply_hold
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // Never held across an await; a poisoned lock only means a panic in
        // a test thread, and the ledger itself is always consistent.
        self.inner.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) fn error(status: u16, code: &str, message: &str) -> Reply {
    (status, to_json(&ErrorBody { code: code.to_owned(), message: message.to_owned() }))
}

fn not_found() -> Reply {
    error(404, codes::NOT_FOUND_PAYMENT, "no such payment")
}

fn to_json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// `YYYY-MM-DDThh:mm:ss+00:00` for `time` (UTC, whole seconds).
pub fn rfc3339_utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_date(secs / 86_400);
    let rem = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01. Counts
/// from 0000-03-01 instead, so each 400-year era is the same shape and the
/// leap day is the last day of its year.
fn civil_date(days_since_epoch: u64) -> (u64, u64, u64) {
    const DAYS_0000_03_01_TO_EPOCH: u64 = 719_468;
    const DAYS_PER_ERA: u64 = 146_097;
    let days = days_since_epoch + DAYS_0000_03_01_TO_EPOCH;
    let era = days / DAYS_PER_ERA;
    let day_of_era = days % DAYS_PER_ERA;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / (DAYS_PER_ERA - 1)) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, each 153 days per 5 months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let at = |secs| rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00+00:00");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20+00:00");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59+00:00");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00+00:00");
    }

    #[test]
    fn one_effect_per_key() {
        let gateway = FakeGateway::new("sk");
        let request = ConfirmBody { payment_key: "pk".into(), order_id: "o".into(), amount: 10 };
        assert!(gateway.apply_confirm(&request).1);
        let ((status, body), took_effect) = gateway.apply_confirm(&request);
        assert!(!took_effect);
        assert_eq!((status, body["code"].as_str()), (400, Some(codes::ALREADY_PROCESSED_PAYMENT)));
        assert_eq!(gateway.payment_stats("pk").confirm_effects, 1);
    }

    #[test]
    fn a_key_charged_for_one_order_is_never_charged_again_for_another() {
        // What a real gateway does when one payment key is confirmed for a
        // second order (hole 1): refuse it, keep the first charge as it was,
        // and keep answering lookups with the first order id.
        let gateway = FakeGateway::new("sk");
        let first = ConfirmBody { payment_key: "pk".into(), order_id: "order-1".into(), amount: 1_000 };
        assert!(gateway.apply_confirm(&first).1);
        for second in [
            ConfirmBody { order_id: "order-2".into(), ..first.clone() },
            ConfirmBody { order_id: "order-3".into(), amount: 1_001, ..first.clone() },
        ] {
            let ((status, body), took_effect) = gateway.apply_confirm(&second);
            assert!(!took_effect);
            assert_eq!((status, body["code"].as_str()), (400, Some(codes::ALREADY_PROCESSED_PAYMENT)));
        }
        let (status, body) = gateway.apply_lookup("pk");
        assert_eq!(status, 200);
        assert_eq!((body["orderId"].as_str(), body["totalAmount"].as_i64()), (Some("order-1"), Some(1_000)));
        assert_eq!(body["status"].as_str(), Some(STATUS_DONE));
        let stats = gateway.payment_stats("pk");
        assert_eq!((stats.confirm_effects, stats.cancel_effects), (1, 0));
    }
}
