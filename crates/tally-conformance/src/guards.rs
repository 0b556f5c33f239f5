//! Issue 10's rules where a store restates them: the spending windows, the
//! balance ceiling with held paybacks, and the one-payment-per-key claim.
//!
//! A store that writes decided rows (pessimistic, optimistic, advisory, in-memory)
//! only has to round-trip the new fields and refuse stale writes. The atomic
//! strategy applies a decision made on a stale read to the current row under
//! SQL guards, which restate `Wallet::apply`: these cases commit such stale
//! decisions and pin the guards to the core's rules, so that a guard that
//! lets a window move backwards, or a balance past its ceiling, fails here.

use std::time::Duration;

use tally_core::Error;
use tally_core::app::{Command, Executed, Outcome};
use tally_core::decide;
use tally_core::idempotency::IdemKey;
use tally_core::ids::{OpId, PaymentId, TransferId, UserId};
use tally_core::ledger::Booking;
use tally_core::money::{Amount, Money};
use tally_core::payment::{Method, Payment, PaymentEvent, PaymentStatus};
use tally_core::store::{LockManager, Store, StoreError, Tx};
use tally_core::time::{ManualClock, Timestamp};
use tally_core::wallet::{LimitKind, Limits, Wallet, WalletError};

use crate::inventory::{read, write};
use crate::{Profile, StaleWrite, amount, balance, fresh_id, user};

type App<S, L> = tally_core::app::Tally<S, L, ManualClock>;

const HOUR: Duration = Duration::from_secs(3_600);
const DAY_MS: i64 = 86_400_000;

/// Creates a wallet payment of `n` at the clock's now.
async fn create<S: Store, L: LockManager>(app: &App<S, L>, user: UserId, n: i64) -> Payment {
    let command = Command::CreatePayment { amount: amount(n), method: Method::Wallet, confirm: false };
    match app.execute(user, command, None).await {
        Ok(Executed::Fresh(Outcome::Payment(payment))) => payment,
        other => panic!("create payment answered {other:?}"),
    }
}

/// Pays `n` from the wallet at the clock's now: a payment, confirmed.
async fn pay<S: Store, L: LockManager>(app: &App<S, L>, user: UserId, n: i64) -> Result<Payment, Error> {
    let payment = create(app, user, n).await;
    execute!(app, user, Command::ConfirmPayment { payment: payment.id, payment_key: None } => Payment, "confirm")
}

async fn top_up<S: Store, L: LockManager>(app: &App<S, L>, user: UserId, n: i64) -> Result<(), Error> {
    app.execute(user, Command::TopUp { amount: amount(n) }, None).await.map(|_| ())
}

/// The wallet as stored, read in a transaction that writes nothing.
async fn stored<S: Store, L: LockManager>(app: &App<S, L>, user: UserId) -> Wallet {
    read(app, |tx| Box::pin(tx.wallet(user))).await.expect("load wallet").expect("the wallet exists")
}

async fn stored_payment<S: Store, L: LockManager>(app: &App<S, L>, id: PaymentId) -> Option<Payment> {
    read(app, |tx| Box::pin(tx.payment(id))).await.expect("load payment")
}

/// Commits the confirm of `payment` decided at `at` on `wallet`, with its
/// ledger lines. The wallet may be a stale read, as a request's that read
/// the clock and the wallet before it got to write.
async fn commit_confirm<S: Store, L: LockManager>(
    app: &App<S, L>,
    payment: &Payment,
    wallet: &Wallet,
    at: Timestamp,
) -> Result<(), StoreError> {
    let booking = Booking { op: OpId(fresh_id()), origin: None, at };
    let decision = decide::confirm(payment, wallet, &booking, &mut || TransferId(fresh_id()))
        .expect("the read allows the payment");
    let (payment, wallet) = (payment.clone(), wallet.clone());
    write(app, |tx| {
        Box::pin(async move {
            tx.put_payment(Some(&payment), &decision.payment).await?;
            tx.put_wallet(Some(&wallet), &decision.wallet).await?;
            tx.append_transfers(&decision.transfers).await
        })
    })
    .await
}

/// The first instant of the month after the one `now` is in.
fn next_month_start(now: Timestamp) -> Timestamp {
    let mut day = now.day() + 1;
    while Timestamp(day * DAY_MS).month() == now.month() {
        day += 1;
    }
    Timestamp(day * DAY_MS)
}

/// Hole 6: spending windows never move backwards. A payment stamped in an
/// older window than the wallet's (the clock read before the wallet was, or
/// an instance whose clock is behind) counts in the wallet's newest window,
/// and the limit refuses it there; the window stays the newest. Across a UTC
/// day and across a month end (January 31st after February 1st), through the
/// use cases with the clock moved back, and as a stale decision committed
/// over a newer window (what the atomic strategy's SQL must get right).
pub(crate) async fn spending_windows_never_move_backwards<S: Store, L: LockManager>(app: &App<S, L>, profile: Profile) {
    // The next February 1st, and an hour before it: January 31st, 23:00.
    let mut month_start = next_month_start(app.now());
    while month_start.month() % 12 != 1 {
        month_start = next_month_start(month_start);
    }
    let month_end = Timestamp(month_start.0 - 3_600_000);
    let monthly = Limits { monthly: Some(Money::new(100)), ..Limits::default() };
    window_rule(app, profile, monthly, month_end, month_start.plus(HOUR), LimitKind::Monthly).await;
    // Two days of February, well inside it: only the day rolls.
    let day = Timestamp(month_start.0 + 3 * DAY_MS);
    let daily = Limits { daily: Some(Money::new(100)), ..Limits::default() };
    let late = day.plus(24 * HOUR);
    window_rule(app, profile, daily, day.plus(23 * HOUR), late, LimitKind::Daily).await;
    // The clock ends where the case's latest payment was, never behind
    // where it started.
    app.clock().set(late.plus(HOUR));
    crate::inventory::holds(app).await;
}

/// The window rule for a limit of 100 of `kind` between `earlier`, in one
/// window, and `later`, in the next.
async fn window_rule<S: Store, L: LockManager>(
    app: &App<S, L>,
    profile: Profile,
    limits: Limits,
    earlier: Timestamp,
    later: Timestamp,
    kind: LimitKind,
) {
    let window = |at: Timestamp| if kind == LimitKind::Daily { at.day() } else { at.month() };
    let counted = |w: &Wallet| {
        if kind == LimitKind::Daily { (w.day, w.spent_day) } else { (w.month, w.spent_month) }
    };
    assert_eq!(window(earlier) + 1, window(later), "the instants are in consecutive windows");
    let refused = Err(Error::Wallet(WalletError::LimitExceeded(kind)));

    // Through the use cases: 60 in the newer window, then 40 stamped in the
    // older one counts in the newer one, which is then full.
    // Wallets open in the older window.
    app.clock().set(earlier);
    let id = user(app, limits, 1_000).await;
    app.clock().set(later);
    pay(app, id, 60).await.expect("60 in the newer window");
    app.clock().set(earlier);
    pay(app, id, 40).await.expect("40 stamped in the older window, counted in the newer");
    assert_eq!(counted(&stored(app, id).await), (window(later), Money::new(100)), "the window stayed the newer");
    assert_eq!(pay(app, id, 1).await.map(|_| ()), refused, "full, seen from the older window");
    app.clock().set(later);
    assert_eq!(pay(app, id, 1).await.map(|_| ()), refused, "full in the newer window");
    // 1000 in, 100 paid, 10 back.
    assert_eq!(balance(app, id).await, Money::new(910));

    // A stale decision: read in the older window, committed after a payment
    // in the newer one.
    if profile.stale_write == StaleWrite::Unchecked {
        return;
    }
    app.clock().set(earlier);
    let id = user(app, limits, 1_000).await;
    pay(app, id, 30).await.expect("30 in the older window");
    let too_much = create(app, id, 60).await;
    let fits = create(app, id, 40).await;
    let stale = stored(app, id).await;
    assert_eq!(counted(&stale), (window(earlier), Money::new(30)));
    app.clock().set(later);
    pay(app, id, 50).await.expect("50 in the newer window");
    let now = stored(app, id).await;
    assert_eq!(counted(&now), (window(later), Money::new(50)));
    // 30 + 60 fits the older window as read; 50 + 60 does not fit the newer.
    let result = commit_confirm(app, &too_much, &stale, earlier).await;
    assert_eq!(result, Err(StoreError::Conflict), "{kind:?}: a stale payment beyond the newest window's limit");
    assert_eq!(stored(app, id).await, now, "refused, nothing written");
    let result = commit_confirm(app, &fits, &stale, earlier).await;
    match profile.stale_write {
        StaleWrite::Conflicts => {
            assert_eq!(result, Err(StoreError::Conflict));
            assert_eq!(stored(app, id).await, now);
        }
        StaleWrite::Rebases => {
            assert_eq!(result, Ok(()), "{kind:?}: 50 + 40 fits the newest window");
            let after = stored(app, id).await;
            assert_eq!(counted(&after), (window(later), Money::new(90)), "counted in the newest window");
            assert_eq!(pay(app, id, 11).await.map(|_| ()), refused, "the newest window holds 90 of 100");
            pay(app, id, 10).await.expect("the last 10 of the newest window");
            // 1000 - 30 - 50 - 40 - 10 paid, 3 + 5 + 4 + 1 back.
            assert_eq!(balance(app, id).await, Money::new(883));
        }
        StaleWrite::Unchecked => unreachable!("returned above"),
    }
}

/// Hole 8 and hole 2's twin: the balance, with every payback held for a
/// gateway charge in flight, never passes the wallet's ceiling, which is
/// never above `Money::BALANCE_LIMIT` even without a maximum. A hold
/// round-trips; credits (a stale one included) are refused where it would
/// not fit — as `MaxBalanceExceeded` through the use cases, never as a
/// broken row.
pub(crate) async fn the_ceiling_counts_held_paybacks_and_caps_every_balance<S: Store, L: LockManager>(
    app: &App<S, L>,
    profile: Profile,
) {
    let over = Err(Error::Wallet(WalletError::MaxBalanceExceeded));
    // A maximum of 100 and a payback of 30 held for a charge in flight: a
    // gateway payment in `confirming`, as the core leaves it before the call.
    let id = user(app, Limits { max_balance: Some(Money::new(100)), ..Limits::default() }, 60).await;
    let payment = Payment::new(PaymentId(fresh_id()), id, amount(300), Some(amount(30)), Method::Gateway, app.now())
        .expect("payment");
    let loaded = stored(app, id).await;
    let stale = loaded.clone();
    let key = format!("pk-ceiling-{}", fresh_id());
    // Begun under an idempotency key, which the attempt keeps (a retry under
    // it after the completer settled the charge is answered with the charge).
    let requested_by = IdemKey::new("k-ceiling").expect("a valid key");
    let (confirming, held) =
        decide::begin_confirm(&payment, &loaded, &key, Some(requested_by.clone()), app.now()).expect("it fits");
    assert_eq!(held.payback_held, Money::new(30));
    let (begun, before, after) = (confirming.clone(), loaded.clone(), held.clone());
    write(app, |tx| {
        Box::pin(async move {
            tx.put_payment(None, &begun).await?;
            tx.put_wallet(Some(&before), &after).await
        })
    })
    .await
    .expect("hold the payback");
    assert_eq!(stored(app, id).await, held, "a held payback round-trips");
    assert_eq!(stored_payment(app, confirming.id).await.as_ref(), Some(&confirming), "an attempt round-trips");
    assert_eq!(top_up(app, id, 11).await, over, "60 + 30 held + 11 is above 100");
    top_up(app, id, 10).await.expect("60 + 30 held + 10 is 100");
    // A second hold decided before the top-up (60 + 30 + 5 fitted then) is
    // refused on the current row (70 + 30 + 5 does not).
    if profile.stale_write != StaleWrite::Unchecked {
        let mut stale = stale;
        stale.payback_held = held.payback_held;
        stale.version = held.version;
        let second = stale.hold_payback(amount(5)).expect("fits the stale read");
        let result = write(app, |tx| Box::pin(async move { tx.put_wallet(Some(&stale), &second).await })).await;
        assert_eq!(result, Err(StoreError::Conflict), "a hold beyond the ceiling on the current row");
        assert_eq!(stored(app, id).await.payback_held, Money::new(30));
    }
    // The charge lands: the hold is released and the payback credited, which
    // fits by construction (70 + 30 = 100).
    let wallet = stored(app, id).await;
    commit_confirm(app, &confirming, &wallet, app.now()).await.expect("credit the held payback");
    let credited = stored(app, id).await;
    assert_eq!((credited.balance, credited.payback_held), (Money::new(100), Money::ZERO));
    let done = stored_payment(app, confirming.id).await.expect("stored");
    assert_eq!(done.gateway.and_then(|a| a.requested_by), Some(requested_by), "kept by the confirm's update");
    assert_eq!(stored_payment(app, payment.id).await.map(|p| p.status), Some(PaymentStatus::Done));

    // No maximum: the cap. 10^15 is a thousand of the largest top-ups; all
    // but the last ten units of them in one transaction.
    let id = user(app, Limits::default(), 0).await;
    let wallet = stored(app, id).await;
    let booking = Booking { op: OpId(fresh_id()), origin: None, at: app.now() };
    let mut next = wallet.clone();
    let mut transfers = Vec::new();
    for n in 0..1_000 {
        let units = if n == 999 { Amount::MAX.minor_units() - 10 } else { Amount::MAX.minor_units() };
        let (after, transfer) =
            decide::top_up(&next, amount(units), &booking, &mut || TransferId(fresh_id())).expect("under the cap");
        next = after;
        transfers.push(transfer);
    }
    let limit = Money::BALANCE_LIMIT.minor_units();
    assert_eq!(next.balance, Money::new(limit - 10));
    let (before, after) = (wallet.clone(), next.clone());
    write(app, |tx| {
        Box::pin(async move {
            tx.put_wallet(Some(&before), &after).await?;
            tx.append_transfers(&transfers).await
        })
    })
    .await
    .expect("a thousand top-ups");
    let stale = stored(app, id).await;
    top_up(app, id, 5).await.expect("up to 5 below the cap");
    if profile.stale_write != StaleWrite::Unchecked {
        // Decided on the read 10 below the cap: 10 fitted then, not now.
        let booking = Booking { op: OpId(fresh_id()), origin: None, at: app.now() };
        let (after, transfer) =
            decide::top_up(&stale, amount(10), &booking, &mut || TransferId(fresh_id())).expect("fits the stale read");
        let result = write(app, |tx| {
            Box::pin(async move {
                tx.put_wallet(Some(&stale), &after).await?;
                tx.append_transfers(&[transfer]).await
            })
        })
        .await;
        assert_eq!(result, Err(StoreError::Conflict), "a credit past the cap is a conflict, never a broken row");
    }
    assert_eq!(balance(app, id).await, Money::new(limit - 5));
    assert_eq!(top_up(app, id, 6).await, over);
    top_up(app, id, 5).await.expect("exactly the cap");
    assert_eq!(balance(app, id).await, Money::BALANCE_LIMIT);
    assert_eq!(top_up(app, id, 1).await, over, "not one unit past the cap");
    assert_eq!(balance(app, id).await, Money::BALANCE_LIMIT);
    crate::inventory::holds(app).await;
}

/// Hole 1: a gateway payment key is claimed by one payment, forever. The
/// store finds the claim by key and refuses a second claim as a conflict
/// (the use case then decides again, sees the claim, and refuses); a claim
/// outlives its payment's failure. `refunding` (a refund owed) round-trips
/// and is listed for the completer with the other in-flight statuses.
pub(crate) async fn a_payment_key_is_claimed_once<S: Store, L: LockManager>(app: &App<S, L>, _: Profile) {
    let id = user(app, Limits::default(), 0).await;
    let key = format!("pk-claimed-{}", fresh_id());
    let new =
        |n: i64| Payment::new(PaymentId(fresh_id()), id, amount(n), None, Method::Gateway, app.now()).expect("payment");
    let (first, second) = (new(500), new(500));
    let begin = |p: &Payment| {
        p.transition(PaymentEvent::BeginConfirm { payment_key: key.clone(), requested_by: None }, app.now())
    };
    let claimed = begin(&first).expect("begin");
    let (a, b) = (claimed.clone(), second.clone());
    write(app, |tx| {
        Box::pin(async move {
            tx.put_payment(None, &a).await?;
            tx.put_payment(None, &b).await
        })
    })
    .await
    .expect("the first claim");
    let by_key = |k: String| async move {
        let mut tx = app.store().begin().await.expect("begin");
        let found = tx.payment_by_key(&k).await;
        tx.rollback().await;
        found.expect("look the key up")
    };
    assert_eq!(by_key(key.clone()).await, Some(first.id));
    assert_eq!(by_key(format!("{key}-never")).await, None);
    let stolen = begin(&second).expect("begin");
    let loaded = second.clone();
    let result = write(app, |tx| Box::pin(async move { tx.put_payment(Some(&loaded), &stolen).await })).await;
    assert_eq!(result, Err(StoreError::Conflict), "a second claim of the key");
    assert_eq!(stored_payment(app, second.id).await, Some(second.clone()), "nothing written");
    assert_eq!(by_key(key.clone()).await, Some(first.id));

    // Our charge, another amount: the refund is owed (`refunding`), listed
    // for the completer, and ends `failed`, its key still claimed.
    app.clock().advance(Duration::from_millis(1));
    let refunding = claimed.transition(PaymentEvent::BeginRefund, app.now()).expect("begin refund");
    let (a, b) = (claimed.clone(), refunding.clone());
    write(app, |tx| Box::pin(async move { tx.put_payment(Some(&a), &b).await })).await.expect("owe the refund");
    assert_eq!(stored_payment(app, first.id).await, Some(refunding.clone()), "a refunding payment round-trips");
    app.clock().advance(Duration::from_millis(1));
    let mut tx = app.store().begin().await.expect("begin");
    let stuck = tx.stuck_payments(app.now(), 64).await;
    tx.rollback().await;
    assert!(stuck.expect("list stuck payments").contains(&refunding), "the completer finds an owed refund");
    let failed = refunding.transition(PaymentEvent::Refunded, app.now()).expect("refunded");
    let (a, b) = (refunding.clone(), failed.clone());
    write(app, |tx| Box::pin(async move { tx.put_payment(Some(&a), &b).await })).await.expect("the refund landed");
    assert_eq!(stored_payment(app, first.id).await.map(|p| p.status), Some(PaymentStatus::Failed));
    assert_eq!(by_key(key.clone()).await, Some(first.id), "a claim outlives its payment");
    let stolen = begin(&second).expect("begin");
    let loaded = second.clone();
    let result = write(app, |tx| Box::pin(async move { tx.put_payment(Some(&loaded), &stolen).await })).await;
    assert_eq!(result, Err(StoreError::Conflict), "still claimed once its payment failed");
    let cancel = second.transition(PaymentEvent::Cancel, app.now()).expect("cancel the unclaimed one");
    let loaded = second.clone();
    write(app, |tx| Box::pin(async move { tx.put_payment(Some(&loaded), &cancel).await })).await.expect("cancel");

    // Two payments claiming one new key in the same transaction: refused,
    // and neither is written.
    let twice = format!("pk-twice-{}", fresh_id());
    let claim = |p: &Payment| {
        p.transition(PaymentEvent::BeginConfirm { payment_key: twice.clone(), requested_by: None }, app.now())
            .expect("begin")
    };
    let (x, y) = (claim(&new(300)), claim(&new(300)));
    let (a, b) = (x.clone(), y.clone());
    let result = write(app, |tx| {
        Box::pin(async move {
            tx.put_payment(None, &a).await?;
            tx.put_payment(None, &b).await
        })
    })
    .await;
    assert_eq!(result, Err(StoreError::Conflict), "one key claimed twice in one transaction");
    assert_eq!((stored_payment(app, x.id).await, stored_payment(app, y.id).await), (None, None), "nothing written");
    assert_eq!(balance(app, id).await, Money::ZERO, "no money moved");
    crate::inventory::holds(app).await;
}

/// Hole 11: a confirm given up on fails its payment *watched* until a
/// horizon. The watch round-trips, the completer lists the watched payment
/// (and a late charge's refund) until the watch ends, and then never again;
/// a claim's backed-off turn keeps it off the list until the turn comes.
pub(crate) async fn a_given_up_payment_is_watched_until_its_watch_ends<S: Store, L: LockManager>(
    app: &App<S, L>,
    _: Profile,
) {
    let id = user(app, Limits::default(), 0).await;
    let stuck = || async {
        let mut tx = app.store().begin().await.expect("begin");
        let stuck = tx.stuck_payments(app.now(), 64).await;
        tx.rollback().await;
        stuck.expect("list stuck payments")
    };
    let store = |before: Option<Payment>, after: Payment| {
        write(app, move |tx| Box::pin(async move { tx.put_payment(before.as_ref(), &after).await }))
    };
    for late_charge in [false, true] {
        let payment =
            Payment::new(PaymentId(fresh_id()), id, amount(500), None, Method::Gateway, app.now()).expect("payment");
        let key = format!("pk-watched-{}", fresh_id());
        let confirming = payment
            .transition(PaymentEvent::BeginConfirm { payment_key: key, requested_by: None }, app.now())
            .expect("begin");
        store(None, confirming.clone()).await.expect("the confirm's intent");
        app.clock().advance(Duration::from_millis(1));
        let watch_until = app.now().plus(Duration::from_secs(3_600));
        let given_up = confirming.transition(PaymentEvent::GiveUp { watch_until }, app.now()).expect("give up");
        store(Some(confirming), given_up.clone()).await.expect("give up");
        assert_eq!(stored_payment(app, payment.id).await, Some(given_up.clone()), "a watched payment round-trips");
        app.clock().advance(Duration::from_millis(1));
        assert!(stuck().await.contains(&given_up), "the completer finds a watched payment");
        // A payment still in flight comes before it, however recent its claim.
        let other = Payment::new(PaymentId(fresh_id()), id, amount(300), None, Method::Gateway, app.now())
            .expect("payment")
            .transition(
                PaymentEvent::BeginConfirm { payment_key: format!("pk-in-flight-{}", fresh_id()), requested_by: None },
                app.now(),
            )
            .expect("begin");
        store(None, other.clone()).await.expect("in flight");
        app.clock().advance(Duration::from_millis(1));
        let listed = stuck().await;
        let at = |p: &Payment| listed.iter().position(|q| q.id == p.id).expect("listed");
        assert!(at(&other) < at(&given_up), "in flight first, then watched");
        let failed = other.transition(PaymentEvent::Fail, app.now()).expect("fail");
        store(Some(other), failed).await.expect("fail");
        let touched = given_up.transition(PaymentEvent::Touch, app.now()).expect("claim");
        store(Some(given_up), touched.clone()).await.expect("claim");
        app.clock().advance(Duration::from_millis(1));
        // A watched payment's claim puts its next one off (the backoff moves
        // its turn past now): not listed until then.
        assert!(touched.gateway.as_ref().unwrap().started_at > app.now(), "a backed-off turn");
        assert!(stuck().await.iter().all(|p| p.id != payment.id), "not listed before its backed-off turn");
        let over = if late_charge {
            let refunding = touched.transition(PaymentEvent::BeginRefund, app.now()).expect("late charge");
            store(Some(touched), refunding.clone()).await.expect("owe the refund");
            app.clock().advance(Duration::from_millis(1));
            assert!(stuck().await.contains(&refunding), "the completer finds the late charge's refund");
            refunding.transition(PaymentEvent::Refunded, app.now()).map(|failed| (refunding, failed))
        } else {
            touched.transition(PaymentEvent::StopWatching, app.now()).map(|failed| (touched, failed))
        };
        let (before, failed) = over.expect("the watch ends");
        store(Some(before), failed.clone()).await.expect("the watch ends");
        assert_eq!(stored_payment(app, payment.id).await, Some(failed.clone()));
        assert!(!failed.watched() && failed.status == PaymentStatus::Failed);
        app.clock().advance(Duration::from_millis(1));
        assert!(stuck().await.iter().all(|p| p.id != payment.id), "no longer listed once the watch ended");
    }
    assert_eq!(balance(app, id).await, Money::ZERO, "no money moved");
    crate::inventory::holds(app).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_month_starts_on_its_first_day() {
        // 2026-11-23 → 2026-12-01; 2026-12-31 23:00 → 2027-01-01.
        let start = next_month_start(Timestamp(20_780 * DAY_MS));
        assert_eq!(start, Timestamp(20_788 * DAY_MS));
        assert_eq!(next_month_start(Timestamp(20_818 * DAY_MS + 23 * 3_600_000)), Timestamp(20_819 * DAY_MS));
        assert_eq!(Timestamp(start.0 - 1).month() + 1, start.month());
        // 2027-01-31 is day 20_849; February (month index 685) starts the next day.
        assert_eq!(next_month_start(Timestamp(20_849 * DAY_MS)), Timestamp(20_850 * DAY_MS));
        assert_eq!(Timestamp(20_850 * DAY_MS).month() % 12, 1, "February");
    }
}
