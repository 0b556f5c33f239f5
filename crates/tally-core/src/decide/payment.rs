//! Pure decisions for wallets and payments: top-ups, confirms, cancels and
//! what a gateway verdict means for a payment.

use crate::error::Error;
use crate::idempotency::IdemKey;
use crate::ids::{PaymentId, TransferId};
use crate::ledger::{Account, Booking, Transfer, TransferKind};
use crate::money::Amount;
use crate::payment::{Method, Payment, PaymentEvent, PaymentStatus};
use crate::time::Timestamp;
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

/// Begins a gateway confirm: `wait → confirming` with `payment_key`, and the
/// payback's room under the wallet's ceiling held. Everything that could
/// refuse the confirm is decided here, before the charge is sent; once the
/// gateway charged, [`confirm`] cannot refuse.
pub fn begin_confirm(
    payment: &Payment,
    wallet: &Wallet,
    payment_key: &str,
    requested_by: Option<IdemKey>,
    at: Timestamp,
) -> Result<(Payment, Wallet), Error> {
    assert_eq!(payment.user, wallet.user, "a payment's payback goes to its owner's wallet");
    let next =
        payment.transition(PaymentEvent::BeginConfirm { payment_key: payment_key.to_owned(), requested_by }, at)?;
    let wallet = match payment.payback_amount() {
        Some(payback) if !crate::mutant::active("payback_unheld") => wallet.hold_payback(payback)?,
        _ => wallet.clone(),
    };
    Ok((next, wallet))
}

/// Confirms a payment: `→ done`, the charge is booked (from the wallet, with
/// its limits, for a wallet payment; from the outside world for a gateway
/// payment whose charge the gateway approved), then the payback, if any, is
/// credited to the wallet. A gateway payment's payback was held when its
/// confirm began, so crediting it cannot be refused.
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
    let mut wallet = wallet.clone();
    match payment.method {
        Method::Wallet => movements.push(Movement::Pay(payment.amount)),
        Method::Gateway => {
            transfers.push(booking.system_transfer(
                next_id(),
                TransferKind::Payment,
                Account::World,
                Account::Revenue,
                payment.amount,
                Some(payment.id),
            ));
            wallet = release_hold(payment, &wallet)?;
        }
    }
    movements.extend(payment.payback_amount().map(Movement::Payback));
    let (wallet, booked) = book(&wallet, &movements, Some(payment.id), booking, next_id)?;
    transfers.extend(booked);
    Ok(Decision { payment: next, wallet, transfers })
}

/// The wallet without the payback hold of a gateway payment leaving
/// `confirming`. A wallet that does not hold it was read after another
/// settlement of this payment released it, while the payment was read
/// before (loads without row locks see each statement's latest commits): a
/// stale read, decided again.
fn release_hold(payment: &Payment, wallet: &Wallet) -> Result<Wallet, Error> {
    debug_assert_eq!(payment.status, PaymentStatus::Confirming);
    match payment.payback_amount() {
        Some(payback) if !crate::mutant::active("payback_unheld") => {
            wallet.release_payback(payback).ok_or(Error::Store(crate::store::StoreError::Conflict))
        }
        _ => Ok(wallet.clone()),
    }
}

/// Begins a gateway cancel: `done → cancelling`, with the payback reversed
/// now. The reversal is the only part of a cancel that can be refused (the
/// customer spent the cashback), so it is booked before the refund is sent;
/// once the card was refunded, [`cancel`] books the refund and cannot refuse.
/// A begun cancel only ever ends `cancelled` (the gateway's cancel is
/// idempotent and re-sent until it answers), so the reversal is final.
pub fn begin_cancel(
    payment: &Payment,
    wallet: &Wallet,
    booking: &Booking,
    next_id: &mut dyn FnMut() -> TransferId,
) -> Result<Decision, Error> {
    assert_eq!(payment.user, wallet.user, "a payment's payback is reversed on its owner's wallet");
    assert_eq!(payment.method, Method::Gateway, "only gateway payments are cancelled in phases");
    let next = payment.transition(PaymentEvent::BeginCancel { requested_by: booking.requested_by() }, booking.at)?;
    if crate::mutant::active("reversal_after_refund") {
        return Ok(Decision { payment: next, wallet: wallet.clone(), transfers: Vec::new() });
    }
    let movements: Vec<Movement> = payment.payback_amount().map(Movement::PaybackReversal).into_iter().collect();
    // The reversal is the payment's, not the key's: booked with no origin
    // (see `Tally::cancel_payment`).
    let phase = Booking { origin: None, ..booking.clone() };
    let (wallet, transfers) = book(wallet, &movements, Some(payment.id), &phase, next_id)?;
    Ok(Decision { payment: next, wallet, transfers })
}

/// Cancels a payment. A waiting payment moved no money and is simply
/// cancelled; a done wallet payment is refunded and its payback reversed,
/// in the order that keeps every ledger line's balance between zero and the
/// ceiling ([`refund_order`]). A cancelling gateway payment's
/// refund goes back to the outside world (the gateway returned it to the
/// card); its payback was reversed when the cancel began.
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
        Method::Wallet => movements.extend(refund_order(payment, wallet)),
        Method::Gateway => {
            transfers.push(booking.system_transfer(
                next_id(),
                TransferKind::Refund,
                Account::Revenue,
                Account::World,
                payment.amount,
                Some(payment.id),
            ));
            // The mutant reverses the payback only now, after the card was
            // refunded: the refusal SPEC.md forbids.
            if crate::mutant::active("reversal_after_refund") {
                movements.extend(payment.payback_amount().map(Movement::PaybackReversal));
            }
        }
    }
    let (wallet, booked) = book(wallet, &movements, Some(payment.id), booking, next_id)?;
    transfers.extend(booked);
    Ok(Decision { payment: next, wallet, transfers })
}

/// A done wallet payment's refund and payback reversal, in booking order.
///
/// Each ledger line carries the balance after it, and every one of those
/// balances must lie between zero and the wallet's ceiling. The reversal
/// comes first whenever the wallet still holds the payback: then no line
/// passes the ceiling, and a wallet at its `max_balance` gets its refund
/// (session 14: refund-first refused it `max_balance_exceeded`, the paid
/// order staying paid). A wallet that spent its payback gets the refund
/// first, so the reversal never drives the balance below zero (the payback
/// never exceeds the amount).
fn refund_order(payment: &Payment, wallet: &Wallet) -> Vec<Movement> {
    let refund = Movement::Refund(payment.amount);
    match payment.payback_amount() {
        None => vec![refund],
        Some(payback) if wallet.balance >= payback.money() && !crate::mutant::active("refund_before_reversal") => {
            vec![Movement::PaybackReversal(payback), refund]
        }
        Some(payback) => vec![refund, Movement::PaybackReversal(payback)],
    }
}

/// The gateway call a phase ends in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Send the confirm: only ever right after `wait → confirming` committed.
    Confirm,
    /// The outcome of an earlier confirm is unknown: ask.
    Lookup,
    /// Send (or re-send: the gateway's cancel is idempotent) the cancel: of
    /// a cancelling payment, or the refund a refunding one owes.
    Cancel,
}

impl Call {
    /// The call that moves a payment waiting on the gateway forward: the
    /// completer's, and a retried request's.
    pub fn to_resolve(payment: &Payment) -> Option<Call> {
        match payment.status {
            PaymentStatus::Confirming => Some(Call::Lookup),
            PaymentStatus::Failed if payment.watched() => Some(Call::Lookup),
            PaymentStatus::Cancelling | PaymentStatus::Refunding => Some(Call::Cancel),
            _ => None,
        }
    }
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
pub enum VerdictDecision {
    /// Write this decision (done, failed, refunding or cancelled, with its
    /// transfers). A `refunding` payment owes a refund: the caller sends the
    /// gateway cancel next (and the completer re-sends it until it lands).
    Booked(Decision),
    /// Someone else already recorded the outcome; nothing to write.
    AlreadyRecorded(Payment),
    /// Still unknown: the payment stays where it is, to be looked up again.
    Pending,
}

/// When a confirm the gateway does not know is given up on, and how long
/// its failed payment is then watched for a charge that lands late.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GiveUp {
    /// A confirm the gateway still does not know after this instant is
    /// failed.
    pub at: Timestamp,
    /// How long after it is failed the completer keeps looking its key up.
    pub watch_for: std::time::Duration,
}

/// The decision on a gateway verdict, over the payment as loaded now.
/// `give_up`: when a confirm the gateway still does not know is failed, and
/// for how long its key is watched after.
///
/// A charge is ours only if the gateway names our payment as its order id
/// (SPEC.md's payment-key binding): a charge under the same key for another
/// order is somebody else's money, never adopted and never cancelled.
pub fn adopt_verdict(
    payment: &Payment,
    wallet: &Wallet,
    verdict: &Verdict,
    give_up: GiveUp,
    booking: &Booking,
    next_id: &mut dyn FnMut() -> TransferId,
) -> Result<VerdictDecision, Error> {
    use crate::gateway::{CancelResult, Confirmed, LookedUp};
    assert_eq!(payment.method, Method::Gateway, "only gateway payments have gateway verdicts");
    let expecting: &[PaymentStatus] = match verdict {
        Verdict::Confirm(_) | Verdict::Lookup(_) => &[PaymentStatus::Confirming],
        Verdict::Cancel(_) => &[PaymentStatus::Cancelling, PaymentStatus::Refunding],
    };
    if payment.watched() && matches!(verdict, Verdict::Confirm(_) | Verdict::Lookup(_)) {
        return watched_verdict(payment, wallet, verdict, booking);
    }
    if !expecting.contains(&payment.status) {
        return Ok(VerdictDecision::AlreadyRecorded(payment.clone()));
    }
    let ours = crate::gateway::order_id(payment.id);
    let moved = |event: PaymentEvent| -> Result<VerdictDecision, Error> {
        let next = payment.transition(event, booking.at)?;
        Ok(VerdictDecision::Booked(Decision {
            payment: next,
            wallet: release_hold(payment, wallet)?,
            transfers: Vec::new(),
        }))
    };
    match verdict {
        Verdict::Confirm(Confirmed::Approved { amount, order_id })
        | Verdict::Lookup(LookedUp::Done { amount, order_id }) => {
            let foreign = *order_id != ours && !crate::mutant::active("foreign_charge_adopted");
            if foreign {
                // The key was charged for another order: our confirm never
                // took effect, and the money is not ours to refund.
                moved(PaymentEvent::Fail)
            } else if *amount == payment.amount.minor_units() {
                Ok(VerdictDecision::Booked(confirm(payment, wallet, booking, next_id)?))
            } else if crate::mutant::active("refund_forgotten") {
                moved(PaymentEvent::Fail)
            } else {
                // Seed 003's tampering case: our charge, another amount. The
                // payment fails and the refund is owed, durably.
                moved(PaymentEvent::BeginRefund)
            }
        }
        Verdict::Confirm(Confirmed::Declined { .. }) | Verdict::Lookup(LookedUp::Cancelled { .. }) => {
            moved(PaymentEvent::Fail)
        }
        Verdict::Lookup(LookedUp::NotFound) if booking.at >= give_up.at => {
            // The gateway may still carry the confirm out (held in its queue,
            // or our clock stepped): the failed payment is watched for it.
            // The mutant fails it unwatched, as before the watch.
            if crate::mutant::active("late_charge_kept") {
                return moved(PaymentEvent::Fail);
            }
            let watch_until = booking.at.plus(give_up.watch_for);
            moved(PaymentEvent::GiveUp { watch_until })
        }
        Verdict::Cancel(CancelResult::Cancelled) if payment.status == PaymentStatus::Refunding => {
            let next = payment.transition(PaymentEvent::Refunded, booking.at)?;
            Ok(VerdictDecision::Booked(Decision { payment: next, wallet: wallet.clone(), transfers: Vec::new() }))
        }
        Verdict::Cancel(CancelResult::Cancelled) => {
            Ok(VerdictDecision::Booked(cancel(payment, wallet, booking, next_id)?))
        }
        Verdict::Confirm(Confirmed::Unknown { .. })
        | Verdict::Lookup(LookedUp::NotFound | LookedUp::Unknown { .. })
        | Verdict::Cancel(CancelResult::Unknown { .. }) => Ok(VerdictDecision::Pending),
    }
}

/// A verdict on a watched payment (failed, its confirm given up on): a
/// charge of ours that landed is owed back; the watch ends once the key can
/// no longer be charged for it. Nothing is booked either way: the charge
/// never was, and the payback's hold was released when it failed.
fn watched_verdict(
    payment: &Payment,
    wallet: &Wallet,
    verdict: &Verdict,
    booking: &Booking,
) -> Result<VerdictDecision, Error> {
    use crate::gateway::{Confirmed, LookedUp};
    let watch_until = payment.gateway.as_ref().and_then(|a| a.watch_until).expect("a watched payment has its horizon");
    let ours = crate::gateway::order_id(payment.id);
    let event = match verdict {
        Verdict::Confirm(Confirmed::Approved { order_id, .. }) | Verdict::Lookup(LookedUp::Done { order_id, .. })
            if *order_id == ours =>
        {
            PaymentEvent::BeginRefund
        }
        // The key was charged for another order, the charge was cancelled,
        // or the confirm declined: ours can no longer land.
        Verdict::Confirm(Confirmed::Approved { .. } | Confirmed::Declined { .. })
        | Verdict::Lookup(LookedUp::Done { .. } | LookedUp::Cancelled { .. }) => PaymentEvent::StopWatching,
        Verdict::Lookup(LookedUp::NotFound) if booking.at >= watch_until => PaymentEvent::StopWatching,
        Verdict::Confirm(Confirmed::Unknown { .. })
        | Verdict::Lookup(LookedUp::NotFound | LookedUp::Unknown { .. }) => {
            return Ok(VerdictDecision::Pending);
        }
        Verdict::Cancel(_) => unreachable!("a watched payment is only looked up"),
    };
    let next = payment.transition(event, booking.at)?;
    Ok(VerdictDecision::Booked(Decision { payment: next, wallet: wallet.clone(), transfers: Vec::new() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{CancelResult, Confirmed, LookedUp};
    use crate::ids::{OpId, PaymentId, UserId};
    use crate::money::Money;
    use crate::wallet::Limits;

    const GIVE_UP: GiveUp = GiveUp { at: Timestamp(10_000), watch_for: std::time::Duration::from_secs(60) };
    const OURS: PaymentId = PaymentId(7);

    fn ours() -> String {
        crate::gateway::order_id(OURS)
    }

    /// A gateway payment of `amount` with `payback`, confirming: its payback
    /// held on the wallet, as [`begin_confirm`] leaves it.
    fn confirming(amount: i64, payback: i64) -> (Payment, Wallet) {
        let payment = Payment::new(
            OURS,
            UserId(1),
            Amount::new(amount).unwrap(),
            Amount::new(payback).ok(),
            Method::Gateway,
            Timestamp(0),
        )
        .unwrap();
        let wallet = Wallet::open(UserId(1), Limits::default(), Timestamp(0));
        begin_confirm(&payment, &wallet, "pk", None, Timestamp(1)).unwrap()
    }

    fn booking(at: i64) -> Booking {
        Booking { op: OpId(1), origin: None, at: Timestamp(at) }
    }

    fn verdict_at(verdict: Verdict, at: i64) -> VerdictDecision {
        let (payment, wallet) = confirming(500, 50);
        let mut n = 100;
        adopt_verdict(&payment, &wallet, &verdict, GIVE_UP, &booking(at), &mut || {
            n += 1;
            TransferId(n)
        })
        .unwrap()
    }

    fn booked(decided: &VerdictDecision) -> (PaymentStatus, usize, Money) {
        match decided {
            VerdictDecision::Booked(decision) => {
                (decision.payment.status, decision.transfers.len(), decision.wallet.payback_held)
            }
            other => panic!("not booked: {other:?}"),
        }
    }

    #[test]
    fn approved_with_our_order_and_amount_is_done_charged_from_the_world_with_payback() {
        let decided = verdict_at(Verdict::Confirm(Confirmed::Approved { amount: 500, order_id: ours() }), 2);
        assert_eq!(booked(&decided), (PaymentStatus::Done, 2, Money::ZERO));
        let VerdictDecision::Booked(decision) = decided else { unreachable!() };
        assert_eq!((decision.transfers[0].debit, decision.transfers[0].credit), (Account::World, Account::Revenue));
        assert_eq!(decision.transfers[0].wallet, None);
        assert_eq!(decision.wallet.balance, Money::new(50));
    }

    #[test]
    fn our_charge_of_another_amount_fails_the_payment_with_its_refund_owed() {
        // Seed 003's tampering check: the gateway charged 499, the order is 500.
        let decided = verdict_at(Verdict::Lookup(LookedUp::Done { amount: 499, order_id: ours() }), 2);
        assert_eq!(booked(&decided), (PaymentStatus::Refunding, 0, Money::ZERO), "the hold is released");
        // The refund landing ends it failed, with nothing booked.
        let VerdictDecision::Booked(decision) = decided else { unreachable!() };
        let landed = Verdict::Cancel(CancelResult::Cancelled);
        let done =
            adopt_verdict(&decision.payment, &decision.wallet, &landed, GIVE_UP, &booking(3), &mut || TransferId(9));
        assert_eq!(booked(&done.unwrap()), (PaymentStatus::Failed, 0, Money::ZERO));
        // Unknown: it stays owed.
        let unclear = Verdict::Cancel(CancelResult::Unknown { reason: "t".into() });
        let pending =
            adopt_verdict(&decision.payment, &decision.wallet, &unclear, GIVE_UP, &booking(3), &mut || TransferId(9));
        assert_eq!(pending, Ok(VerdictDecision::Pending));
    }

    #[test]
    fn a_charge_for_another_order_id_is_never_adopted_nor_refunded() {
        // Hole 1: the same payment key charged for somebody else's order.
        for verdict in [
            Verdict::Confirm(Confirmed::Approved { amount: 500, order_id: "999".into() }),
            Verdict::Lookup(LookedUp::Done { amount: 500, order_id: "999".into() }),
            Verdict::Lookup(LookedUp::Done { amount: 501, order_id: "999".into() }),
            Verdict::Lookup(LookedUp::Cancelled { order_id: "999".into() }),
        ] {
            assert_eq!(booked(&verdict_at(verdict, 2)), (PaymentStatus::Failed, 0, Money::ZERO));
        }
    }

    #[test]
    fn decline_fails_unclear_stays_pending_not_found_fails_only_past_give_up() {
        assert_eq!(
            booked(&verdict_at(Verdict::Confirm(Confirmed::Declined { code: "X".into() }), 2)).0,
            PaymentStatus::Failed
        );
        assert_eq!(
            verdict_at(Verdict::Confirm(Confirmed::Unknown { reason: "t".into() }), 2),
            VerdictDecision::Pending
        );
        assert_eq!(verdict_at(Verdict::Lookup(LookedUp::Unknown { reason: "t".into() }), 2), VerdictDecision::Pending);
        assert_eq!(verdict_at(Verdict::Lookup(LookedUp::NotFound), GIVE_UP.at.0 - 1), VerdictDecision::Pending);
        assert_eq!(
            booked(&verdict_at(Verdict::Lookup(LookedUp::NotFound), GIVE_UP.at.0)),
            (PaymentStatus::Failed, 0, Money::ZERO)
        );
    }

    /// Hole 11: a confirm given up on is failed but watched; a charge of ours
    /// that lands later, of any amount, is owed back, and nothing else ends
    /// the watch before its horizon.
    #[test]
    fn a_charge_landing_after_the_give_up_is_owed_back() {
        let given_up = verdict_at(Verdict::Lookup(LookedUp::NotFound), GIVE_UP.at.0);
        let VerdictDecision::Booked(failed) = given_up else { panic!("booked") };
        let horizon = GIVE_UP.at.0 + 60_000;
        assert_eq!(failed.payment.gateway.as_ref().unwrap().watch_until, Some(Timestamp(horizon)));
        assert!(failed.payment.watched());
        let after = |verdict: Verdict, at: i64| {
            adopt_verdict(&failed.payment, &failed.wallet, &verdict, GIVE_UP, &booking(at), &mut || TransferId(9))
                .unwrap()
        };
        let late = GIVE_UP.at.0 + 1;
        for landed in [
            Verdict::Lookup(LookedUp::Done { amount: 500, order_id: ours() }),
            Verdict::Lookup(LookedUp::Done { amount: 499, order_id: ours() }),
            Verdict::Confirm(Confirmed::Approved { amount: 500, order_id: ours() }),
        ] {
            assert_eq!(booked(&after(landed, late)), (PaymentStatus::Refunding, 0, Money::ZERO), "nothing booked");
        }
        // Still nothing at the gateway: looked up again, until the horizon.
        assert_eq!(after(Verdict::Lookup(LookedUp::NotFound), horizon - 1), VerdictDecision::Pending);
        assert_eq!(
            after(Verdict::Lookup(LookedUp::Unknown { reason: "t".into() }), horizon + 1),
            VerdictDecision::Pending
        );
        for over in [
            (Verdict::Lookup(LookedUp::NotFound), horizon),
            (Verdict::Lookup(LookedUp::Done { amount: 500, order_id: "999".into() }), late),
            (Verdict::Lookup(LookedUp::Cancelled { order_id: ours() }), late),
            (Verdict::Confirm(Confirmed::Declined { code: "X".into() }), late),
        ] {
            let VerdictDecision::Booked(stopped) = after(over.0.clone(), over.1) else { panic!("{over:?}") };
            assert_eq!((stopped.payment.status, stopped.payment.watched()), (PaymentStatus::Failed, false), "{over:?}");
            assert_eq!(stopped.wallet, failed.wallet, "the hold was released once, at the give-up");
        }
        // A cancel's verdict is not the watch's business.
        let cancel = Verdict::Cancel(CancelResult::Cancelled);
        assert!(matches!(after(cancel, late), VerdictDecision::AlreadyRecorded(_)));
    }

    #[test]
    fn a_verdict_for_a_payment_no_longer_waiting_for_it_changes_nothing() {
        let (payment, wallet) = confirming(500, 0);
        let done = payment.transition(PaymentEvent::Confirm, Timestamp(2)).unwrap();
        let verdict = Verdict::Lookup(LookedUp::Done { amount: 500, order_id: ours() });
        let decided = adopt_verdict(&done, &wallet, &verdict, GIVE_UP, &booking(3), &mut || TransferId(9)).unwrap();
        assert_eq!(decided, VerdictDecision::AlreadyRecorded(done));
        let cancel = Verdict::Cancel(CancelResult::Cancelled);
        assert!(matches!(
            adopt_verdict(&payment, &wallet, &cancel, GIVE_UP, &booking(3), &mut || TransferId(9)),
            Ok(VerdictDecision::AlreadyRecorded(_))
        ));
    }

    #[test]
    fn a_payback_that_does_not_fit_refuses_the_confirm_before_the_charge() {
        // Hole 2's twin: max_balance would refuse the payback credit after
        // the card was charged; it is refused before the confirm is sent.
        let limits = Limits { max_balance: Some(Money::new(100)), ..Limits::default() };
        let wallet = Wallet { balance: Money::new(80), ..Wallet::open(UserId(1), limits, Timestamp(0)) };
        let payment = Payment::new(
            OURS,
            UserId(1),
            Amount::new(500).unwrap(),
            Amount::new(50).ok(),
            Method::Gateway,
            Timestamp(0),
        )
        .unwrap();
        assert_eq!(
            begin_confirm(&payment, &wallet, "pk", None, Timestamp(1)),
            Err(Error::Wallet(crate::wallet::WalletError::MaxBalanceExceeded))
        );
    }

    #[test]
    fn a_gateway_cancel_reverses_the_payback_before_the_refund_is_sent() {
        // Hole 2: the customer spent the cashback; the cancel is refused
        // while nothing irreversible happened, and once begun cannot be.
        let (payment, wallet) = confirming(1_000, 500);
        let approved = Verdict::Confirm(Confirmed::Approved { amount: 1_000, order_id: ours() });
        let mut n = 100;
        let mut next_id = || {
            n += 1;
            TransferId(n)
        };
        let Ok(VerdictDecision::Booked(done)) =
            adopt_verdict(&payment, &wallet, &approved, GIVE_UP, &booking(2), &mut next_id)
        else {
            panic!("approved")
        };
        let spent = Wallet { balance: Money::ZERO, ..done.wallet.clone() };
        assert_eq!(
            begin_cancel(&done.payment, &spent, &booking(3), &mut next_id),
            Err(Error::Wallet(crate::wallet::WalletError::InsufficientBalance))
        );
        let cancelling = begin_cancel(&done.payment, &done.wallet, &booking(3), &mut next_id).unwrap();
        assert_eq!(cancelling.payment.status, PaymentStatus::Cancelling);
        assert_eq!(cancelling.transfers.iter().map(|t| t.kind).collect::<Vec<_>>(), [TransferKind::PaybackReversal]);
        assert_eq!(cancelling.wallet.balance, Money::ZERO);
        // The refund landed: booked against the world, the wallet untouched.
        let landed = Verdict::Cancel(CancelResult::Cancelled);
        let Ok(VerdictDecision::Booked(cancelled)) =
            adopt_verdict(&cancelling.payment, &cancelling.wallet, &landed, GIVE_UP, &booking(4), &mut next_id)
        else {
            panic!("cancelled")
        };
        assert_eq!(cancelled.payment.status, PaymentStatus::Cancelled);
        assert_eq!(cancelled.transfers.iter().map(|t| t.kind).collect::<Vec<_>>(), [TransferKind::Refund]);
        assert_eq!(cancelled.wallet, cancelling.wallet);
    }
}
