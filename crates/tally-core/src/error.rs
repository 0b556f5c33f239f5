//! The core's one error type.

use crate::catalog::{SeatUnavailable, StockError};
use crate::order::OrderError;
use crate::payment::{InvalidTransition, PaybackTooLarge};
use crate::store::{LockError, StoreError};
use crate::wallet::WalletError;

/// Why a use case did not happen. Every variant leaves the state unchanged,
/// except [`Error::Store`] with [`StoreError::Ambiguous`], whose outcome is
/// unknown by definition.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum Error {
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    #[error(transparent)]
    Payback(#[from] PaybackTooLarge),
    /// A computed amount (an order's total) is not a valid amount.
    #[error(transparent)]
    Amount(#[from] crate::money::AmountError),
    /// Out of stock (or a restock beyond the limit).
    #[error(transparent)]
    Stock(#[from] StockError),
    #[error(transparent)]
    Seat(#[from] SeatUnavailable),
    /// An order expired, or is in a state that refuses the request.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// The gateway payment key was claimed by another payment (SPEC.md: a
    /// key belongs to one payment, forever).
    #[error("this payment key belongs to another payment")]
    PaymentKeyInUse,
    /// The queue token already holds its event's `max_seats_per_token`
    /// seats across its live orders.
    #[error("this queue token holds its event's most seats already")]
    SeatLimitReached,
    /// The caller may not do this (seats without an active queue token).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// A well-formed request that does not fit the record it names as the
    /// record stands (a `payment_key` for a wallet payment, none for a
    /// gateway payment): nothing in the request alone says it is wrong.
    #[error("not possible in this state: {0}")]
    InvalidState(&'static str),
    #[error("the first request with this idempotency key is still in flight")]
    IdempotencyKeyInUse,
    #[error("this idempotency key was used with a different request")]
    IdempotencyKeyReused,
    /// The request's idempotency lease was taken over (it ran past the lease);
    /// it was fenced off and did nothing.
    #[error("idempotency lease lost")]
    LeaseLost,
    #[error("busy: {0}")]
    Busy(&'static str),
    /// The gateway's answer is not known yet; the payment stays where it is
    /// and is resolved by a lookup (a retry of the request, or the completer).
    #[error("the payment gateway's answer is not known yet")]
    OutcomePending,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// A business rule refused the request (SPEC.md's 409/422 refusals):
    /// such answers are stored under the idempotency key and replayed.
    /// [`Error::InvalidState`] is one: answered 409 `invalid_state` like a
    /// refused transition, it is stored like one (until session 14 it was
    /// not, so its retry ran again and a corrected body under the same key
    /// ran instead of being refused 422).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Wallet(_)
                | Error::Transition(_)
                | Error::Payback(_)
                | Error::Stock(StockError::OutOfStock { .. } | StockError::TooMuchStock(_) | StockError::ZeroQuantity)
                | Error::Seat(_)
                | Error::Order(_)
                | Error::PaymentKeyInUse
                | Error::SeatLimitReached
                | Error::NotFound
        ) || (matches!(self, Error::InvalidState(_)) && !crate::mutant::active("invalid_state_unstored"))
    }
}

impl From<LockError> for Error {
    fn from(error: LockError) -> Error {
        match error {
            LockError::Timeout => Error::Busy("lock wait timed out"),
            LockError::QueueFull => Error::Busy("too many concurrent requests on one record"),
            LockError::Unavailable => Error::Busy("the lock service is unavailable"),
        }
    }
}
