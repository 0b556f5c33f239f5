//! What every layer of the simulation names, and the one place that names
//! no other module: the invariants and their [`Violation`]s (the monitor,
//! the oracle, the known issues and the report all speak of them), the tag
//! space of amounts, and [`now_or_never`] for the in-memory store outside
//! any runtime. See the layering in the crate docs.

use std::fmt;

/// Amounts are `units * TAG_SPACE + tag` (see the workload's amount tags).
pub const TAG_SPACE: i64 = 100_000;

pub const INV_CHARGED_ONCE: &str = "1. a payment is charged at most once (a gateway confirm is sent at most once)";
pub const INV_IDEMPOTENCY: &str = "2. one idempotency key has at most one effect; a replay returns the first response";
pub const INV_DURABLE: &str = "durability: an acknowledged success survives every crash";
pub const INV_RECOVERED: &str = "recovery: nothing is left half-done once the completer has run";
pub const INV_ORDERS: &str = "7. an order is paid exactly when it has one done payment, never both paid and expired";
pub const INV_SEATS: &str = "6. a seat is held or sold by at most one order at a time";
pub const INV_NO_500: &str = "no request ends in 500 (a constraint fired or a handler panicked)";
pub const INV_DETERMINISM: &str = "determinism: a seed fully determines the run";
pub const INV_LIVENESS: &str = "liveness: every client finishes within the simulation's time limit";
pub const INV_KEY_BOUND: &str =
    "a gateway payment key belongs to one payment, forever (a charge is adopted only for its order id)";
pub const INV_PAYBACK: &str = "the payback is the merchant's policy, never the customer's choice";
pub const INV_SEAT_LIMIT: &str = "one queue token holds at most its event's max_seats_per_token seats";
pub const INV_FOUND: &str = "404 means no such object or not yours: a client's own order or payment is always found";

/// One broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant, as SPEC.md numbers or names it.
    pub invariant: String,
    /// Which check saw it.
    pub check: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: &str, check: &'static str, detail: String) -> Violation {
        Violation { invariant: invariant.to_owned(), check, detail }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.invariant, self.check, self.detail)
    }
}

/// Polls a future that is known to complete without waiting (the in-memory
/// store outside any runtime).
pub fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("a future expected to be ready was pending"),
    }
}
