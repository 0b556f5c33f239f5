//! Orders and their state machine (seed 004: stock is taken at order time and
//! given back when an unpaid order expires).
//!
//! ```text
//!  pending_payment ──pay(p)──────────────► paid ──cancel (after the refund)──► cancelled
//!        │  ▲                                 ▲
//!        │  └─pay_failed(p)─┐                 │
//!        ├──begin_pay(p)──► pending_payment, paying = p ──pay(p)──┘   (gateway: the charge is in flight)
//!        ├──cancel──► cancelled
//!        └──expire (TTL passed, nothing paying)──► expired
//! ```
//!
//! [`Order::transition`] is the only way an order's status changes. Two rules
//! carry SPEC.md invariant 7:
//! - `pay` needs the order still inside its TTL (or a charge already in
//!   flight for it), and `expire` needs it past its TTL with no charge in
//!   flight. Both run under the order's lock, so a confirm racing the expiry
//!   sweeper ends one way or the other, never both.
//! - a gateway charge marks the order `paying` before the foreign call, which
//!   stops the sweeper from expiring an order whose money may be on its way.

use crate::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, TokenId, UserId};
use crate::money::{Amount, Money};
use crate::time::Timestamp;

/// Most product lines in one order.
pub const ORDER_ITEMS_MAX: usize = 10;
/// Most seats in one order.
pub const ORDER_SEATS_MAX: usize = 10;
/// Most units of one product in one line.
pub const LINE_QUANTITY_MAX: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Cancelled,
    Expired,
}

impl OrderStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }

    /// Holds its stock and seats.
    pub const fn reserves(self) -> bool {
        matches!(self, OrderStatus::PendingPayment | OrderStatus::Paid)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderLine {
    pub product: ProductId,
    pub quantity: u64,
    /// The product's price when the order was made.
    pub unit_price: Amount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderSeat {
    pub seat: SeatId,
    pub price: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user: UserId,
    /// Sorted by product, one line per product.
    pub lines: Vec<OrderLine>,
    /// Sorted by seat.
    pub seats: Vec<OrderSeat>,
    /// The event the seats belong to, and the queue token they were booked with.
    pub event: Option<EventId>,
    pub token: Option<TokenId>,
    pub total: Amount,
    /// The payback its payment credits: the merchant's policy (each
    /// product's rate, the service default for seats) when it was made.
    pub payback: Money,
    pub status: OrderStatus,
    /// The payment that paid it, or whose gateway charge is in flight for it.
    pub payment: Option<PaymentId>,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    /// A gateway charge for this order is about to be sent.
    BeginPay(PaymentId),
    /// The payment is done.
    Pay(PaymentId),
    /// The in-flight gateway charge failed; the order may be paid again.
    PayFailed(PaymentId),
    Cancel,
    Expire,
}

impl OrderEvent {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderEvent::BeginPay(_) => "begin paying",
            OrderEvent::Pay(_) => "pay",
            OrderEvent::PayFailed(_) => "fail paying",
            OrderEvent::Cancel => "cancel",
            OrderEvent::Expire => "expire",
        }
    }
}

#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderError {
    #[error("order {0} expired before it was paid")]
    Expired(OrderId),
    #[error("cannot {} order {order}: it is {}{}", event.as_str(), status.as_str(), if *paying { " with a payment in flight" } else { "" })]
    InvalidState { order: OrderId, status: OrderStatus, paying: bool, event: OrderEvent },
}

impl Order {
    /// What a reader sees: an unpaid order past its TTL is expired even
    /// before the sweeper wrote it so (a charge in flight keeps it pending).
    pub fn status_at(&self, now: Timestamp) -> OrderStatus {
        if self.due_for_expiry(now) { OrderStatus::Expired } else { self.status }
    }

    pub fn past_ttl(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    /// Due for the expiry sweeper: unpaid, nothing paying, past its TTL. The
    /// one copy of the rule; the stores' listings (the memory store's
    /// filter, the SQL's `WHERE`) restate it, pinned by the conformance case
    /// `the_sweeper_lists_unpaid_orders_past_their_ttl`.
    pub fn due_for_expiry(&self, now: Timestamp) -> bool {
        self.status == OrderStatus::PendingPayment && self.payment.is_none() && self.past_ttl(now)
    }

    /// Refuses paying an order that cannot be paid now: the error a payment
    /// for it gets.
    pub fn payable(&self, now: Timestamp) -> Result<(), OrderError> {
        match self.status_at(now) {
            OrderStatus::PendingPayment if self.payment.is_none() => Ok(()),
            OrderStatus::Expired => Err(OrderError::Expired(self.id)),
            status => Err(self.refuse(status, OrderEvent::BeginPay(PaymentId(0)))),
        }
    }

    fn refuse(&self, status: OrderStatus, event: OrderEvent) -> OrderError {
        OrderError::InvalidState { order: self.id, status, paying: self.payment.is_some(), event }
    }

    /// The transition function.
    pub fn transition(&self, event: OrderEvent, now: Timestamp) -> Result<Order, OrderError> {
        use OrderEvent as E;
        use OrderStatus as S;
        let mut next = Order { updated_at: now, version: self.version + 1, ..self.clone() };
        let in_time = !self.past_ttl(now);
        match (self.status, self.payment, event) {
            (S::PendingPayment, None, E::BeginPay(payment)) if in_time => next.payment = Some(payment),
            // A wallet payment pays at once, inside the TTL; a gateway charge
            // that began inside it may finish after it.
            (S::PendingPayment, None, E::Pay(payment)) if in_time => {
                next.status = S::Paid;
                next.payment = Some(payment);
            }
            (S::PendingPayment, Some(paying), E::Pay(payment)) if paying == payment => next.status = S::Paid,
            (S::PendingPayment, Some(paying), E::PayFailed(payment)) if paying == payment => next.payment = None,
            // A paid order is cancelled once its payment was refunded (the
            // caller books the refund in the same transaction).
            (S::PendingPayment, None, E::Cancel) | (S::Paid, Some(_), E::Cancel) => next.status = S::Cancelled,
            (S::PendingPayment, None, E::Expire) if !in_time => next.status = S::Expired,
            #[cfg(feature = "mutants")]
            (S::Paid, _, E::Expire) if !in_time && crate::mutant::active("expire_paid_order") => {
                next.status = S::Expired;
            }
            // Too late to pay, whether or not the sweeper got there first.
            (S::PendingPayment, None, E::BeginPay(_) | E::Pay(_)) | (S::Expired, _, E::BeginPay(_) | E::Pay(_)) => {
                return Err(OrderError::Expired(self.id));
            }
            (status, _, event) => return Err(self.refuse(status, event)),
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL_END: Timestamp = Timestamp(100);

    fn order() -> Order {
        Order {
            id: OrderId(1),
            user: UserId(1),
            lines: vec![OrderLine { product: ProductId(1), quantity: 1, unit_price: Amount::new(10).unwrap() }],
            seats: Vec::new(),
            event: None,
            token: None,
            total: Amount::new(10).unwrap(),
            payback: Money::ZERO,
            status: OrderStatus::PendingPayment,
            payment: None,
            expires_at: TTL_END,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            version: 0,
        }
    }

    #[test]
    fn paid_inside_the_ttl_never_expires() {
        let paid = order().transition(OrderEvent::Pay(PaymentId(7)), Timestamp(99)).unwrap();
        assert_eq!((paid.status, paid.payment), (OrderStatus::Paid, Some(PaymentId(7))));
        assert!(paid.transition(OrderEvent::Expire, Timestamp(200)).is_err());
        assert!(paid.transition(OrderEvent::Pay(PaymentId(8)), Timestamp(99)).is_err(), "paid once");
        assert_eq!(paid.status_at(Timestamp(200)), OrderStatus::Paid);
    }

    #[test]
    fn past_the_ttl_an_unpaid_order_is_expired_and_cannot_be_paid() {
        let o = order();
        assert_eq!(o.status_at(TTL_END), OrderStatus::Expired, "readers see it expired before the sweeper");
        assert_eq!(o.transition(OrderEvent::Pay(PaymentId(7)), TTL_END), Err(OrderError::Expired(OrderId(1))));
        assert_eq!(o.payable(TTL_END), Err(OrderError::Expired(OrderId(1))));
        assert!(o.transition(OrderEvent::Expire, Timestamp(99)).is_err(), "not before its TTL");
        let expired = o.transition(OrderEvent::Expire, TTL_END).unwrap();
        assert_eq!(expired.status, OrderStatus::Expired);
        assert!(expired.transition(OrderEvent::Cancel, TTL_END).is_err());
    }

    #[test]
    fn a_charge_in_flight_holds_off_the_sweeper() {
        let paying = order().transition(OrderEvent::BeginPay(PaymentId(7)), Timestamp(50)).unwrap();
        assert!(paying.transition(OrderEvent::Expire, Timestamp(500)).is_err());
        assert!(paying.transition(OrderEvent::Cancel, Timestamp(60)).is_err());
        assert!(paying.transition(OrderEvent::Pay(PaymentId(8)), Timestamp(60)).is_err(), "only the charge in flight");
        assert_eq!(paying.status_at(Timestamp(500)), OrderStatus::PendingPayment);
        let paid = paying.transition(OrderEvent::Pay(PaymentId(7)), Timestamp(500)).unwrap();
        assert_eq!(paid.status, OrderStatus::Paid);
        let failed = paying.transition(OrderEvent::PayFailed(PaymentId(7)), Timestamp(500)).unwrap();
        assert_eq!(failed.payment, None);
        assert_eq!(failed.transition(OrderEvent::Expire, Timestamp(500)).unwrap().status, OrderStatus::Expired);
    }

    #[test]
    fn cancel_from_pending_or_paid_only() {
        let cancelled = order().transition(OrderEvent::Cancel, Timestamp(1)).unwrap();
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
        assert!(cancelled.transition(OrderEvent::Cancel, Timestamp(2)).is_err(), "cancelled once");
        let paid = order().transition(OrderEvent::Pay(PaymentId(7)), Timestamp(1)).unwrap();
        assert_eq!(paid.transition(OrderEvent::Cancel, Timestamp(2)).unwrap().status, OrderStatus::Cancelled);
    }
}
