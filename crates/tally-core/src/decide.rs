//! Pure decisions over loaded state.
//!
//! Each function takes records as loaded and returns records as they must be
//! written, plus the ledger transfers, or a refusal. They do no I/O and take
//! no locks, so the same decision serves every backend, the model checkers and
//! a future batcher that applies many payments to one hot wallet inside one
//! database transaction (it folds these over the batch).

use crate::error::Error;
use crate::ids::{PaymentId, TransferId};
use crate::ledger::{Booking, Transfer};
use crate::money::Amount;
use crate::payment::{Payment, PaymentEvent, PaymentStatus};
use crate::wallet::{Movement, Wallet};

/// A payment, its wallet and the transfers that move between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub payment: Payment,
    pub wallet: Wallet,
    pub transfers: Vec<Transfer>,
}

/// Applies movements one after the other to `wallet`, collecting a transfer
/// for each. All or nothing: the first refusal refuses the whole list.
fn book(
    wallet: &Wallet,
    movements: &[Movement],
    payment: Option<PaymentId>,
    booking: &Booking,
    next_id: &mut dyn FnMut() -> TransferId,
) -> Result<(Wallet, Vec<Transfer>), Error> {
    let mut current = wallet.clone();
    let mut transfers = Vec::with_capacity(movements.len());
    for movement in movements {
        current = current.apply(*movement, booking.at)?;
        transfers.push(booking.wallet_transfer(next_id(), *movement, wallet.user, &current, payment));
    }
    Ok((current, transfers))
}

/// A top-up: money from the outside world into the wallet.
pub fn top_up(
    wallet: &Wallet,
    amount: Amount,
    booking: &Booking,
    next_id: &mut dyn FnMut() -> TransferId,
) -> Result<(Wallet, Transfer), Error> {
    let (wallet, mut transfers) = book(wallet, &[Movement::TopUp(amount)], None, booking, next_id)?;
    debug_assert_eq!(transfers.len(), 1);
    Ok((wallet, transfers.remove(0)))
}

/// Confirms a wallet payment: `wait → done`, the wallet pays the amount (limits
/// apply), then the payback, if any, is credited.
pub fn confirm(
    payment: &Payment,
    wallet: &Wallet,
    booking: &Booking,
    next_id: &mut dyn FnMut() -> TransferId,
) -> Result<Decision, Error> {
    assert_eq!(payment.user, wallet.user, "a payment is paid from its owner's wallet");
    let next = payment.transition(PaymentEvent::Confirm, booking.at)?;
    let mut movements = vec![Movement::Pay(payment.amount)];
    movements.extend(payment.payback_amount().map(Movement::Payback));
    let (wallet, transfers) = book(wallet, &movements, Some(payment.id), booking, next_id)?;
    Ok(Decision { payment: next, wallet, transfers })
}

/// Cancels a payment. A waiting payment moved no money and is simply
/// cancelled; a done one is refunded and its payback reversed. The refund is
/// booked first, so the reversal never drives the balance below zero (the
/// payback never exceeds the amount).
pub fn cancel(
    payment: &Payment,
    wallet: &Wallet,
    booking: &Booking,
    next_id: &mut dyn FnMut() -> TransferId,
) -> Result<Decision, Error> {
    assert_eq!(payment.user, wallet.user, "a payment is refunded to its owner's wallet");
    let was = payment.status;
    let next = payment.transition(PaymentEvent::Cancel, booking.at)?;
    // The double_refund mutant lets a cancelled payment be cancelled again;
    // it then falls through to a second refund here.
    let refund =
        was == PaymentStatus::Done || (was == PaymentStatus::Cancelled && crate::mutant::active("double_refund"));
    if !refund {
        return Ok(Decision { payment: next, wallet: wallet.clone(), transfers: Vec::new() });
    }
    let mut movements = vec![Movement::Refund(payment.amount)];
    movements.extend(payment.payback_amount().map(Movement::PaybackReversal));
    let (wallet, transfers) = book(wallet, &movements, Some(payment.id), booking, next_id)?;
    Ok(Decision { payment: next, wallet, transfers })
}
