//! Payments and their state machine (seed 001's two steps).
//!
//! ```text
//!            confirm            cancel (refund + payback reversal)
//!   wait ───────────────► done ──────────────► cancelled
//!    │  └── cancel (nothing moved) ───────────────▲
//!    └──── fail ────────► failed
//! ```
//!
//! [`Payment::transition`] is the only way a payment's status changes. Every
//! arrow not drawn above is refused with [`InvalidTransition`], which is what
//! makes a second confirm, or a second cancel, a refusal instead of a second
//! charge or a second refund.

use crate::ids::{PaymentId, UserId};
use crate::money::{Amount, Money};
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    Wait,
    Done,
    Failed,
    Cancelled,
}

impl PaymentStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Wait => "wait",
            PaymentStatus::Done => "done",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Cancelled => "cancelled",
        }
    }
}

/// How a payment is paid. The external gateway comes with its own issue;
/// the state machine above is the one it will share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Wallet,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Wallet => "wallet",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentEvent {
    Confirm,
    Fail,
    Cancel,
}

impl PaymentEvent {
    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentEvent::Confirm => "confirm",
            PaymentEvent::Fail => "fail",
            PaymentEvent::Cancel => "cancel",
        }
    }
}

#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("cannot {} a payment that is {}", event.as_str(), from.as_str())]
pub struct InvalidTransition {
    pub from: PaymentStatus,
    pub event: PaymentEvent,
}

#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("payback must not exceed the payment amount")]
pub struct PaybackTooLarge;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub id: PaymentId,
    pub user: UserId,
    pub amount: Amount,
    /// Cashback credited on success; `0..=amount`.
    pub payback: Money,
    pub method: Method,
    pub status: PaymentStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: u64,
}

impl Payment {
    pub fn new(
        id: PaymentId,
        user: UserId,
        amount: Amount,
        payback: Option<Amount>,
        method: Method,
        now: Timestamp,
    ) -> Result<Payment, PaybackTooLarge> {
        let payback = payback.map_or(Money::ZERO, Amount::money);
        // A payback above the amount would let confirm+cancel mint money into
        // the wallet (refund amount, keep the difference) — refuse it up front.
        if payback > amount.money() {
            return Err(PaybackTooLarge);
        }
        Ok(Payment {
            id,
            user,
            amount,
            payback,
            method,
            status: PaymentStatus::Wait,
            created_at: now,
            updated_at: now,
            version: 0,
        })
    }

    /// The transition function.
    pub fn transition(&self, event: PaymentEvent, now: Timestamp) -> Result<Payment, InvalidTransition> {
        use PaymentEvent as E;
        use PaymentStatus as S;
        let to = match (self.status, event) {
            (S::Wait, E::Confirm) => S::Done,
            (S::Wait, E::Fail) => S::Failed,
            (S::Wait | S::Done, E::Cancel) => S::Cancelled,
            #[cfg(tally_mutants)]
            (S::Cancelled, E::Cancel) if crate::mutant::active("double_refund") => S::Cancelled,
            (from, event) => return Err(InvalidTransition { from, event }),
        };
        Ok(Payment { status: to, updated_at: now, version: self.version + 1, ..self.clone() })
    }

    pub fn payback_amount(&self) -> Option<Amount> {
        Amount::new(self.payback.minor_units()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment() -> Payment {
        Payment::new(PaymentId(1), UserId(1), Amount::new(100).unwrap(), None, Method::Wallet, Timestamp(0)).unwrap()
    }

    #[test]
    fn legal_paths() {
        let done = payment().transition(PaymentEvent::Confirm, Timestamp(1)).unwrap();
        assert_eq!(done.status, PaymentStatus::Done);
        assert_eq!(done.version, 1);
        let cancelled = done.transition(PaymentEvent::Cancel, Timestamp(2)).unwrap();
        assert_eq!(cancelled.status, PaymentStatus::Cancelled);
        assert_eq!(payment().transition(PaymentEvent::Fail, Timestamp(1)).unwrap().status, PaymentStatus::Failed);
        assert_eq!(payment().transition(PaymentEvent::Cancel, Timestamp(1)).unwrap().status, PaymentStatus::Cancelled);
    }

    #[test]
    fn every_other_transition_is_refused() {
        use PaymentEvent as E;
        let done = payment().transition(E::Confirm, Timestamp(1)).unwrap();
        let failed = payment().transition(E::Fail, Timestamp(1)).unwrap();
        let cancelled = done.transition(E::Cancel, Timestamp(2)).unwrap();
        for (p, e) in [
            (&done, E::Confirm),
            (&done, E::Fail),
            (&failed, E::Confirm),
            (&failed, E::Fail),
            (&failed, E::Cancel),
            (&cancelled, E::Confirm),
            (&cancelled, E::Fail),
            (&cancelled, E::Cancel),
        ] {
            assert_eq!(p.transition(e, Timestamp(3)), Err(InvalidTransition { from: p.status, event: e }));
        }
    }

    #[test]
    fn payback_above_amount_is_refused() {
        let err = Payment::new(
            PaymentId(1),
            UserId(1),
            Amount::new(10).unwrap(),
            Some(Amount::new(11).unwrap()),
            Method::Wallet,
            Timestamp(0),
        );
        assert_eq!(err, Err(PaybackTooLarge));
    }
}
