//! Pure decisions over loaded state.
//!
//! Each function takes records as loaded and returns records as they must be
//! written, plus the ledger transfers, or a refusal. They do no I/O and take
//! no locks, so the same decision serves every backend, the model checkers and
//! a future batcher that applies many payments to one hot wallet inside one
//! database transaction (it folds these over the batch).

use crate::error::Error;
use crate::ids::{PaymentId, TransferId};
use crate::ledger::{Account, Booking, Transfer, TransferKind};
use crate::money::Amount;
use crate::payment::{Method, Payment, PaymentEvent, PaymentStatus};
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

/// Confirms a payment: `→ done`, the charge is booked (from the wallet, with
/// its limits, for a wallet payment; from the outside world for a gateway
/// payment whose charge the gateway approved), then the payback, if any, is
/// credited to the wallet.
pub fn confirm(
    payment: &Payment,
    wallet: &Wallet,
    booking: &Booking,
    next_id: &mut dyn FnMut() -> TransferId,
) -> Result<Decision, Error> {
    assert_eq!(payment.user, wallet.user, "a payment is paid from its owner's wallet");
    let next = payment.transition(PaymentEvent::Confirm, booking.at)?;
    let mut transfers = Vec::new();
    let mut movements = Vec::new();
    match payment.method {
        Method::Wallet => movements.push(Movement::Pay(payment.amount)),
        Method::Gateway => transfers.push(booking.system_transfer(
            next_id(),
            TransferKind::Payment,
            Account::World,
            Account::Revenue,
            payment.amount,
            Some(payment.id),
        )),
    }
    movements.extend(payment.payback_amount().map(Movement::Payback));
    let (wallet, booked) = book(wallet, &movements, Some(payment.id), booking, next_id)?;
    transfers.extend(booked);
    Ok(Decision { payment: next, wallet, transfers })
}

/// Cancels a payment. A waiting payment moved no money and is simply
/// cancelled; a done one is refunded and its payback reversed. The refund is
/// booked first, so the reversal never drives the balance below zero (the
/// payback never exceeds the amount). A gateway payment's refund goes back to
/// the outside world (the gateway returned it to the card).
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
    let refund = matches!(was, PaymentStatus::Done | PaymentStatus::Cancelling)
        || (was == PaymentStatus::Cancelled && crate::mutant::active("double_refund"));
    if !refund {
        return Ok(Decision { payment: next, wallet: wallet.clone(), transfers: Vec::new() });
    }
    let mut transfers = Vec::new();
    let mut movements = Vec::new();
    match payment.method {
        Method::Wallet => movements.push(Movement::Refund(payment.amount)),
        Method::Gateway => transfers.push(booking.system_transfer(
            next_id(),
            TransferKind::Refund,
            Account::Revenue,
            Account::World,
            payment.amount,
            Some(payment.id),
        )),
    }
    movements.extend(payment.payback_amount().map(Movement::PaybackReversal));
    let (wallet, booked) = book(wallet, &movements, Some(payment.id), booking, next_id)?;
    transfers.extend(booked);
    Ok(Decision { payment: next, wallet, transfers })
}

/// The gateway call a phase ends in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Send the confirm: only ever right after `wait → confirming` committed.
    Confirm,
    /// The outcome of an earlier confirm is unknown: ask.
    Lookup,
    /// Send (or re-send: the gateway's cancel is idempotent) the cancel.
    Cancel,
}

/// What the gateway said, in the terms the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Confirm(crate::gateway::Confirmed),
    Lookup(crate::gateway::LookedUp),
    Cancel(crate::gateway::CancelResult),
}

/// What to do with a gateway verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Write this decision (done, failed or cancelled, with its transfers).
    /// `cancel_at_gateway`: the gateway charged an amount other than ours
    /// (seed 003's tampering case): the payment failed, and the charge must
    /// be cancelled at the gateway.
    Booked { decision: Decision, cancel_at_gateway: bool },
    /// Someone else already recorded the outcome; nothing to write.
    AlreadySettled(Payment),
    /// Still unknown: the payment stays where it is, to be looked up again.
    Pending,
}

/// The decision on a gateway verdict, over the payment as loaded now.
/// `give_up_at`: a confirm the gateway still does not know after this
/// instant never took effect, and the payment fails.
pub fn settle(
    payment: &Payment,
    wallet: &Wallet,
    verdict: &Verdict,
    give_up_at: crate::time::Timestamp,
    booking: &Booking,
    next_id: &mut dyn FnMut() -> TransferId,
) -> Result<Settled, Error> {
    use crate::gateway::{CancelResult, Confirmed, LookedUp};
    assert_eq!(payment.method, Method::Gateway, "only gateway payments have gateway verdicts");
    let expecting = match verdict {
        Verdict::Confirm(_) | Verdict::Lookup(_) => PaymentStatus::Confirming,
        Verdict::Cancel(_) => PaymentStatus::Cancelling,
    };
    if payment.status != expecting {
        return Ok(Settled::AlreadySettled(payment.clone()));
    }
    let fail = |payment: &Payment, cancel_at_gateway: bool| -> Result<Settled, Error> {
        let failed = payment.transition(PaymentEvent::Fail, booking.at)?;
        Ok(Settled::Booked {
            decision: Decision { payment: failed, wallet: wallet.clone(), transfers: Vec::new() },
            cancel_at_gateway,
        })
    };
    match verdict {
        Verdict::Confirm(Confirmed::Approved { amount }) | Verdict::Lookup(LookedUp::Done { amount }) => {
            if *amount == payment.amount.minor_units() {
                Ok(Settled::Booked { decision: confirm(payment, wallet, booking, next_id)?, cancel_at_gateway: false })
            } else {
                fail(payment, true)
            }
        }
        Verdict::Confirm(Confirmed::Declined { .. }) | Verdict::Lookup(LookedUp::Cancelled) => fail(payment, false),
        Verdict::Lookup(LookedUp::NotFound) if booking.at >= give_up_at => fail(payment, false),
        Verdict::Cancel(CancelResult::Cancelled) => {
            Ok(Settled::Booked { decision: cancel(payment, wallet, booking, next_id)?, cancel_at_gateway: false })
        }
        Verdict::Confirm(Confirmed::Unknown { .. })
        | Verdict::Lookup(LookedUp::NotFound | LookedUp::Unknown { .. })
        | Verdict::Cancel(CancelResult::Unknown { .. }) => Ok(Settled::Pending),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{CancelResult, Confirmed, LookedUp};
    use crate::ids::{OpId, PaymentId, UserId};
    use crate::money::Money;
    use crate::time::Timestamp;
    use crate::wallet::Limits;

    const GIVE_UP: Timestamp = Timestamp(10_000);

    fn confirming(amount: i64, payback: i64) -> (Payment, Wallet) {
        let payment = Payment::new(
            PaymentId(7),
            UserId(1),
            Amount::new(amount).unwrap(),
            Amount::new(payback).ok(),
            Method::Gateway,
            Timestamp(0),
        )
        .unwrap()
        .transition(PaymentEvent::BeginConfirm { payment_key: "pk".into() }, Timestamp(1))
        .unwrap();
        (payment, Wallet::open(UserId(1), Limits::default(), Timestamp(0)))
    }

    fn settle_at(verdict: Verdict, at: i64) -> Settled {
        let (payment, wallet) = confirming(500, 50);
        let booking = Booking { op: OpId(1), origin: None, at: Timestamp(at) };
        let mut n = 100;
        settle(&payment, &wallet, &verdict, GIVE_UP, &booking, &mut || {
            n += 1;
            TransferId(n)
        })
        .unwrap()
    }

    fn booked(settled: &Settled) -> (PaymentStatus, usize, bool) {
        match settled {
            Settled::Booked { decision, cancel_at_gateway } => {
                (decision.payment.status, decision.transfers.len(), *cancel_at_gateway)
            }
            other => panic!("not booked: {other:?}"),
        }
    }

    #[test]
    fn approved_with_our_amount_is_done_charged_from_the_world_with_payback() {
        let settled = settle_at(Verdict::Confirm(Confirmed::Approved { amount: 500 }), 2);
        assert_eq!(booked(&settled), (PaymentStatus::Done, 2, false));
        let Settled::Booked { decision, .. } = settled else { unreachable!() };
        assert_eq!((decision.transfers[0].debit, decision.transfers[0].credit), (Account::World, Account::Revenue));
        assert_eq!(decision.transfers[0].wallet, None);
        assert_eq!(decision.wallet.balance, Money::new(50));
    }

    #[test]
    fn another_amount_fails_the_payment_and_cancels_it_at_the_gateway() {
        // Seed 003's tampering check: the gateway charged 499, the order is 500.
        let settled = settle_at(Verdict::Lookup(LookedUp::Done { amount: 499 }), 2);
        assert_eq!(booked(&settled), (PaymentStatus::Failed, 0, true));
    }

    #[test]
    fn decline_fails_unclear_stays_pending_not_found_fails_only_past_give_up() {
        assert_eq!(
            booked(&settle_at(Verdict::Confirm(Confirmed::Declined { code: "X".into() }), 2)).0,
            PaymentStatus::Failed
        );
        assert_eq!(settle_at(Verdict::Confirm(Confirmed::Unknown { reason: "t".into() }), 2), Settled::Pending);
        assert_eq!(settle_at(Verdict::Lookup(LookedUp::Unknown { reason: "t".into() }), 2), Settled::Pending);
        assert_eq!(settle_at(Verdict::Lookup(LookedUp::NotFound), GIVE_UP.0 - 1), Settled::Pending);
        assert_eq!(booked(&settle_at(Verdict::Lookup(LookedUp::NotFound), GIVE_UP.0)).0, PaymentStatus::Failed);
    }

    #[test]
    fn a_verdict_for_a_payment_no_longer_waiting_for_it_changes_nothing() {
        let (payment, wallet) = confirming(500, 0);
        let done = payment.transition(PaymentEvent::Confirm, Timestamp(2)).unwrap();
        let booking = Booking { op: OpId(1), origin: None, at: Timestamp(3) };
        let verdict = Verdict::Lookup(LookedUp::Done { amount: 500 });
        let settled = settle(&done, &wallet, &verdict, GIVE_UP, &booking, &mut || TransferId(9)).unwrap();
        assert_eq!(settled, Settled::AlreadySettled(done));
        let cancel = Verdict::Cancel(CancelResult::Cancelled);
        assert!(matches!(
            settle(&payment, &wallet, &cancel, GIVE_UP, &booking, &mut || TransferId(9)),
            Ok(Settled::AlreadySettled(_))
        ));
    }
}
