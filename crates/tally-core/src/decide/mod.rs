//! Pure decisions over loaded state.
//!
//! Each function takes records as loaded (and `now`) and returns records as
//! they must be written, plus the ledger transfers, or a refusal. They do no
//! I/O and take no locks, so the same decision serves every backend, the
//! model checkers and a future batcher that applies many requests inside one
//! database transaction (it folds these over the batch). The use cases in
//! [`crate::app`] only lock, load, call one of these, and persist.
//!
//! - [`payment`]: top-ups, payment confirms and cancels, gateway verdicts.
//! - [`order`]: order creation, cancel, expiry, and how a payment's fate
//!   moves its order.

pub mod order;
pub mod payment;

pub use payment::{
    Call, Decision, GiveUp, Verdict, VerdictDecision, adopt_verdict, begin_cancel, begin_confirm, cancel, confirm,
    top_up,
};
