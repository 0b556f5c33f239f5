//! The external payment gateway, as the use cases see it (seed 003).
//!
//! The gateway's confirm is **not idempotent**: a second confirm of the same
//! payment key fails "already processed". So the use cases send a confirm at
//! most once per payment (the `wait → confirming` transition is the permit,
//! committed before the call) and resolve every unclear answer by a lookup.
//! The implementations classify the gateway's replies into the verdicts
//! below; the rule that matters is that anything short of a definite answer
//! is [`Confirmed::Unknown`], never a failure.

use std::future::Future;

use crate::ids::PaymentId;
use crate::money::Amount;

/// What a confirm call established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// The gateway charged this amount for this order id. Both must be ours
    /// (seed 003's tampering check, and the payment-key binding of SPEC.md):
    /// that check happens in the decision, not here.
    Approved { amount: i64, order_id: String },
    /// A definite refusal: nothing was charged.
    Declined { code: String },
    /// "Already processed", a timeout, a lost reply, a 5xx, garbage: the
    /// charge may or may not have happened. Look it up; never re-send.
    Unknown { reason: String },
}

/// What a lookup established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookedUp {
    /// Charged this amount for this order id, and not cancelled.
    Done {
        amount: i64,
        order_id: String,
    },
    /// Charged for this order id and since cancelled.
    Cancelled {
        order_id: String,
    },
    /// The gateway has no such payment: the confirm never took effect (yet).
    NotFound,
    Unknown {
        reason: String,
    },
}

/// What a cancel call established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelResult {
    /// Cancelled now or before: either way the money went back.
    Cancelled,
    Unknown {
        reason: String,
    },
}

/// What every verdict says alike: whether it is a definite answer, and if
/// not, why (for logs and the simulation's journal).
pub trait Verdict: std::fmt::Debug {
    /// The reason the answer is unclear, or `None` for a definite answer.
    fn unclear(&self) -> Option<&str>;
}

impl Verdict for Confirmed {
    fn unclear(&self) -> Option<&str> {
        if let Confirmed::Unknown { reason } = self { Some(reason) } else { None }
    }
}

impl Verdict for LookedUp {
    fn unclear(&self) -> Option<&str> {
        if let LookedUp::Unknown { reason } = self { Some(reason) } else { None }
    }
}

impl Verdict for CancelResult {
    fn unclear(&self) -> Option<&str> {
        if let CancelResult::Unknown { reason } = self { Some(reason) } else { None }
    }
}

/// The gateway port. Every call has its own timeout inside the
/// implementation and always returns a verdict; it never panics or hangs.
pub trait Gateway: Send + Sync + 'static {
    /// Is there a gateway at all? Without one, gateway payments are refused.
    fn enabled(&self) -> bool {
        true
    }

    fn confirm(
        &self,
        payment_key: &str,
        order_id: &str,
        amount: Amount,
        idempotency_key: &str,
    ) -> impl Future<Output = Confirmed> + Send;

    fn lookup(&self, payment_key: &str) -> impl Future<Output = LookedUp> + Send;

    fn cancel(&self, payment_key: &str, idempotency_key: &str) -> impl Future<Output = CancelResult> + Send;
}

/// No gateway configured: gateway payments cannot be created.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoGateway;

impl Gateway for NoGateway {
    fn enabled(&self) -> bool {
        false
    }

    fn confirm(&self, _: &str, _: &str, _: Amount, _: &str) -> impl Future<Output = Confirmed> + Send {
        std::future::ready(Confirmed::Unknown { reason: "no gateway configured".into() })
    }

    fn lookup(&self, _: &str) -> impl Future<Output = LookedUp> + Send {
        std::future::ready(LookedUp::Unknown { reason: "no gateway configured".into() })
    }

    fn cancel(&self, _: &str, _: &str) -> impl Future<Output = CancelResult> + Send {
        std::future::ready(CancelResult::Unknown { reason: "no gateway configured".into() })
    }
}

/// The order id we send the gateway with a payment's confirm: our payment
/// id. A gateway answer naming another order id is about somebody else's
/// charge, whatever its payment key says.
pub fn order_id(payment: PaymentId) -> String {
    payment.to_string()
}

/// The gateway idempotency key of a payment's confirm: derived from our
/// payment id, never from the client's key, so every attempt of any client
/// for this payment carries the same one.
pub fn confirm_key(payment: PaymentId) -> String {
    format!("tally-confirm-{payment}")
}

/// The gateway idempotency key of a payment's cancel.
pub fn cancel_key(payment: PaymentId) -> String {
    format!("tally-cancel-{payment}")
}
