//! Issue 10's money holes, closed, on real PostgreSQL for every strategy:
//! the core's use cases driven directly over `PgStore`, with the in-memory
//! payment gateway (which can charge a key for somebody else's order, charge
//! a wrong amount, and lose answers) and a `ManualClock`. Each scenario names
//! the rule it protects, asserts exact outcomes (at the gateway too), and
//! ends with the invariant checker over the whole database. Hole 6 (spending
//! windows) is the conformance suite's `spending_windows_never_move_backwards`,
//! run by `store_conforms` on every strategy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tally_core::Error;
use tally_core::app::{Command, Config, Executed, NewSeat, NewShowtime, Outcome, Tally};
use tally_core::check::assert_holds;
use tally_core::ids::{EventId, PaymentId, SeatId, SeqIds, TokenId, UserId};
use tally_core::ledger::TransferKind;
use tally_core::money::{Amount, Money};
use tally_core::order::{Order, OrderStatus};
use tally_core::payment::{Method, Payment, PaymentStatus};
use tally_core::queue::TokenStatus;
use tally_core::store::{Store, StoreError, Tx};
use tally_core::time::ManualClock;
use tally_core::wallet::{Limits, Wallet, WalletError};
use tally_mem::MemGateway;
use tally_pg::{PgStore, Strategy};

use crate::harness::{Pool, START, at_once, fresh_store, stored_order, stored_token};

type Bank = Tally<PgStore, tally_redis::Locks, ManualClock, MemGateway>;

/// The merchant's payback here: 10 % of every payment.
const PAYBACK_BPS: u32 = 1_000;

/// The core over a fresh database with `strategy`, paying 10 % back, and the
/// in-memory gateway it confirms gateway payments with.
async fn bank(strategy: Strategy) -> (Arc<Bank>, MemGateway) {
    let store = fresh_store(strategy, &Pool::default()).await;
    // Racing use cases retry their conflicts: give the optimistic ones room.
    let core = Config {
        attempts_max: 128,
        payback_bps: PAYBACK_BPS,
        batch_max: super::harness::batch_max(),
        batch_overlap: super::harness::batch_overlap(),
        ..Config::default()
    };
    let ids = Arc::new(SeqIds::new(u64::from(std::process::id())));
    let gateway = MemGateway::new();
    let app = Tally::new(store, crate::harness::locks_for(strategy), ManualClock::new(START), ids, core)
        .with_gateway(gateway.clone());
    (Arc::new(app), gateway)
}

fn amount(minor_units: i64) -> Amount {
    Amount::new(minor_units).expect("test amount")
}

async fn customer(app: &Bank, limits: Limits, balance: i64) -> UserId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut key_hash = [9u8; 32];
    key_hash[..8].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let user = app.create_user("customer", limits, key_hash).await.expect("create user");
    if balance > 0 {
        top_up(app, user.id, balance).await.expect("top up");
    }
    user.id
}

async fn top_up(app: &Bank, user: UserId, n: i64) -> Result<(), Error> {
    app.execute(user, Command::TopUp { amount: amount(n) }, None).await.map(|_| ())
}

async fn new_payment(app: &Bank, user: UserId, n: i64, method: Method) -> Payment {
    match app.execute(user, Command::CreatePayment { amount: amount(n), method, confirm: false }, None).await {
        Ok(Executed::Fresh(Outcome::Payment(payment))) => payment,
        other => panic!("create payment answered {other:?}"),
    }
}

fn paid(result: Result<Executed, Error>) -> Result<Payment, Error> {
    match result? {
        Executed::Fresh(Outcome::Payment(payment)) => Ok(payment),
        other => panic!("answered {other:?}"),
    }
}

async fn confirm(app: &Bank, user: UserId, payment: PaymentId, key: Option<&str>) -> Result<Payment, Error> {
    let command = Command::ConfirmPayment { payment, payment_key: key.map(str::to_owned) };
    paid(app.execute(user, command, None).await)
}

async fn cancel(app: &Bank, user: UserId, payment: PaymentId) -> Result<Payment, Error> {
    paid(app.execute(user, Command::CancelPayment { payment }, None).await)
}

/// Pays `n` from the wallet (and gets 10 % back).
async fn spend(app: &Bank, user: UserId, n: i64) {
    let payment = new_payment(app, user, n, Method::Wallet).await;
    let done = confirm(app, user, payment.id, None).await.expect("spend");
    assert_eq!(done.status, PaymentStatus::Done);
}

async fn wallet(app: &Bank, user: UserId) -> Wallet {
    app.wallet(user).await.expect("wallet").wallet
}

async fn status(app: &Bank, user: UserId, payment: PaymentId) -> PaymentStatus {
    app.payment(user, payment).await.expect("payment").status
}

/// The transfers booked for `payment`, in booking order (the app's ids are
/// sequential).
async fn booked(app: &Bank, payment: PaymentId) -> Vec<(TransferKind, i64)> {
    let snapshot = app.snapshot().await.expect("snapshot");
    let mut transfers: Vec<_> = snapshot.transfers.iter().filter(|t| t.payment == Some(payment)).collect();
    transfers.sort_by_key(|t| t.id);
    transfers.iter().map(|t| (t.kind, t.amount.minor_units())).collect()
}

async fn holds(app: &Bank) {
    assert_holds(&app.snapshot().await.expect("snapshot"));
}

/// Hole 1: a gateway payment key pays one payment, forever. A key claimed by
/// one payment is refused for another payment of the same user and of
/// another user (409 `payment_key_in_use`), before anything reaches the
/// gateway; the claim outlives the payment's cancellation.
pub async fn a_payment_key_pays_one_payment(strategy: Strategy) {
    let (app, gateway) = bank(strategy).await;
    let owner = customer(&app, Limits::default(), 0).await;
    let other = customer(&app, Limits::default(), 0).await;
    let first = new_payment(&app, owner, 1_000, Method::Gateway).await;
    let done = confirm(&app, owner, first.id, Some("pk-one")).await.expect("the first payment");
    assert_eq!(done.status, PaymentStatus::Done);
    let second = new_payment(&app, owner, 1_000, Method::Gateway).await;
    assert_eq!(confirm(&app, owner, second.id, Some("pk-one")).await, Err(Error::PaymentKeyInUse));
    let theirs = new_payment(&app, other, 1_001, Method::Gateway).await;
    assert_eq!(confirm(&app, other, theirs.id, Some("pk-one")).await, Err(Error::PaymentKeyInUse));
    assert_eq!(gateway.confirms_received("pk-one"), 1, "the refusals reached no gateway");
    assert_eq!(
        (status(&app, owner, second.id).await, status(&app, other, theirs.id).await),
        (PaymentStatus::Wait, PaymentStatus::Wait)
    );
    // Cancelled, the charge refunded: the key is still the first payment's.
    assert_eq!(cancel(&app, owner, first.id).await.map(|p| p.status), Ok(PaymentStatus::Cancelled));
    assert_eq!(gateway.charge("pk-one"), Some((1_000, true)));
    assert_eq!(confirm(&app, owner, second.id, Some("pk-one")).await, Err(Error::PaymentKeyInUse));
    // The second payment pays with a key of its own.
    let done = confirm(&app, owner, second.id, Some("pk-two")).await.expect("a fresh key");
    assert_eq!(done.status, PaymentStatus::Done);
    assert_eq!(gateway.charges().len(), 2, "one charge per key, each one payment's");
    assert_eq!(wallet(&app, owner).await.balance, Money::new(100), "the second payment's payback only");
    assert_eq!(wallet(&app, other).await.balance, Money::ZERO);
    holds(&app).await;
}

/// Hole 1 under a race: two payments (of two users) confirmed at once with
/// one key → exactly one is charged and done, the other refused with
/// `payment_key_in_use` and still waiting; the gateway receives one confirm.
/// Twenty rounds, for as many interleavings.
pub async fn two_payments_racing_for_one_key_charge_once(strategy: Strategy) {
    let (app, gateway) = bank(strategy).await;
    let users = [customer(&app, Limits::default(), 0).await, customer(&app, Limits::default(), 0).await];
    for round in 0..20 {
        let key = format!("pk-race-{round}");
        let payments = [
            new_payment(&app, users[0], 700, Method::Gateway).await,
            new_payment(&app, users[1], 700, Method::Gateway).await,
        ];
        let ids = [payments[0].id, payments[1].id];
        let results = at_once(2, |i| {
            let (app, key) = (app.clone(), key.clone());
            async move { confirm(&app, users[i], ids[i], Some(&key)).await }
        })
        .await;
        let winners: Vec<usize> = (0..2).filter(|i| results[*i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let (won, lost) = (winners[0], 1 - winners[0]);
        assert_eq!(results[won].as_ref().map(|p| p.status), Ok(PaymentStatus::Done), "round {round}");
        assert_eq!(results[lost], Err(Error::PaymentKeyInUse), "round {round}");
        assert_eq!(status(&app, users[lost], ids[lost]).await, PaymentStatus::Wait, "round {round}");
        assert_eq!(gateway.confirms_received(&key), 1, "round {round}: one confirm sent");
        assert_eq!(gateway.charge(&key), Some((700, false)), "round {round}");
    }
    let snapshot = app.snapshot().await.expect("snapshot");
    let charges = snapshot.transfers.iter().filter(|t| t.kind == TransferKind::Payment).count();
    assert_eq!(charges, 20, "one charge per key");
    let paybacks: i64 = users
        .iter()
        .map(|u| snapshot.wallets.iter().find(|w| w.user == *u).expect("wallet").balance.minor_units())
        .sum();
    assert_eq!(paybacks, 20 * 70, "one payback per charge");
    assert_holds(&snapshot);
}

/// Hole 1's other half: a charge the gateway holds under our payment's key
/// for another order id is somebody else's money. It is never adopted (our
/// payment fails, nothing is booked, no payback) and never cancelled at the
/// gateway — for our amount and for another.
pub async fn a_charge_for_another_order_is_neither_adopted_nor_cancelled(strategy: Strategy) {
    let (app, gateway) = bank(strategy).await;
    let user = customer(&app, Limits::default(), 0).await;
    for (key, charged) in [("pk-theirs-same", 1_000), ("pk-theirs-other", 999)] {
        gateway.charge_elsewhere(key, "somebody-elses-order", charged);
        let payment = new_payment(&app, user, 1_000, Method::Gateway).await;
        let failed = confirm(&app, user, payment.id, Some(key)).await.expect("an answer");
        assert_eq!(failed.status, PaymentStatus::Failed, "{key}");
        assert_eq!(gateway.charge(key), Some((charged, false)), "{key}: their charge stands");
        assert_eq!(booked(&app, payment.id).await, [], "{key}: nothing booked");
    }
    let after = wallet(&app, user).await;
    assert_eq!((after.balance, after.payback_held), (Money::ZERO, Money::ZERO), "no payback, no hold left");
    holds(&app).await;
}

/// Hole 2: no refusal after an irreversible foreign effect. The cashback of
/// a gateway payment was spent: cancelling it is refused with
/// `insufficient_balance` before the gateway is asked for the refund (the
/// payment stays done, the card charge stands). Topped up, the cancel
/// reverses the payback, refunds at the gateway once, and books exactly.
pub async fn a_spent_payback_refuses_the_cancel_before_the_refund(strategy: Strategy) {
    let (app, gateway) = bank(strategy).await;
    let user = customer(&app, Limits::default(), 100).await;
    let payment = new_payment(&app, user, 1_000, Method::Gateway).await;
    assert_eq!(payment.payback, Money::new(100), "the merchant's 10 %");
    confirm(&app, user, payment.id, Some("pk-spent")).await.expect("confirm");
    assert_eq!(wallet(&app, user).await.balance, Money::new(200));
    // Spend it all: 200 out, 20 back.
    spend(&app, user, 200).await;
    assert_eq!(wallet(&app, user).await.balance, Money::new(20));
    let refused = cancel(&app, user, payment.id).await;
    assert_eq!(refused, Err(Error::Wallet(WalletError::InsufficientBalance)));
    assert_eq!(status(&app, user, payment.id).await, PaymentStatus::Done, "still done");
    assert_eq!(gateway.charge("pk-spent"), Some((1_000, false)), "the card was not refunded");
    assert_eq!(booked(&app, payment.id).await, [(TransferKind::Payment, 1_000), (TransferKind::Payback, 100)]);
    holds(&app).await;
    // With the payback back in the wallet, the cancel goes through.
    top_up(&app, user, 80).await.expect("top up");
    let cancelled = cancel(&app, user, payment.id).await.expect("cancel");
    assert_eq!(cancelled.status, PaymentStatus::Cancelled);
    assert_eq!(gateway.charge("pk-spent"), Some((1_000, true)), "refunded at the gateway");
    assert_eq!(wallet(&app, user).await.balance, Money::ZERO, "100 + 100 - 200 + 20 + 80 - 100");
    assert_eq!(
        booked(&app, payment.id).await,
        [
            (TransferKind::Payment, 1_000),
            (TransferKind::Payback, 100),
            (TransferKind::PaybackReversal, 100),
            (TransferKind::Refund, 1_000)
        ]
    );
    holds(&app).await;
}

/// Session 14: a wallet at its ceiling gets its refund. A paid-back wallet
/// payment cancelled at `max_balance` books the reversal first (never a
/// line past the ceiling) and ends at the ceiling; refund-first refused it
/// 409 `max_balance_exceeded`, the payment staying done.
pub async fn a_refund_at_the_ceiling_reverses_the_payback_first(strategy: Strategy) {
    let (app, _gateway) = bank(strategy).await;
    let user = customer(&app, Limits { max_balance: Some(Money::new(1_000)), ..Limits::default() }, 1_000).await;
    let payment = new_payment(&app, user, 100, Method::Wallet).await;
    confirm(&app, user, payment.id, None).await.expect("pay");
    assert_eq!(wallet(&app, user).await.balance, Money::new(910));
    let cancelled = cancel(&app, user, payment.id).await.expect("the refund fits the ceiling");
    assert_eq!(cancelled.status, PaymentStatus::Cancelled);
    assert_eq!(wallet(&app, user).await.balance, Money::new(1_000));
    assert_eq!(
        booked(&app, payment.id).await,
        [
            (TransferKind::Payment, 100),
            (TransferKind::Payback, 10),
            (TransferKind::PaybackReversal, 10),
            (TransferKind::Refund, 100)
        ]
    );
    holds(&app).await;
}

/// Hole 2's twin: a payback credit that `max_balance` would refuse is
/// refused before the card is charged (409 `max_balance_exceeded`, nothing
/// sent to the gateway, the key not claimed). Once it fits, the payback's
/// room is held while the charge is in flight — a top-up cannot take it —
/// and crediting it after the charge cannot be refused.
pub async fn a_payback_that_does_not_fit_refuses_the_confirm_before_the_charge(strategy: Strategy) {
    let (app, gateway) = bank(strategy).await;
    let user = customer(&app, Limits { max_balance: Some(Money::new(1_000)), ..Limits::default() }, 950).await;
    let payment = new_payment(&app, user, 1_000, Method::Gateway).await;
    let refused = confirm(&app, user, payment.id, Some("pk-room")).await;
    assert_eq!(refused, Err(Error::Wallet(WalletError::MaxBalanceExceeded)), "950 + 100 is above 1000");
    assert_eq!(gateway.confirms_received("pk-room"), 0, "nothing sent to the gateway");
    assert_eq!(status(&app, user, payment.id).await, PaymentStatus::Wait);
    assert_eq!(wallet(&app, user).await.payback_held, Money::ZERO);
    // Spend 100 (10 back): 860 + 100 fits. The confirm's answer is lost and
    // its lookup fails: the charge is in flight, its payback held.
    spend(&app, user, 100).await;
    gateway.lose_confirm_replies(1);
    gateway.fail_lookups(1);
    let pending = confirm(&app, user, payment.id, Some("pk-room")).await;
    assert_eq!(pending, Err(Error::OutcomePending));
    assert_eq!(status(&app, user, payment.id).await, PaymentStatus::Confirming);
    let held = wallet(&app, user).await;
    assert_eq!((held.balance, held.payback_held), (Money::new(860), Money::new(100)));
    assert_eq!(top_up(&app, user, 41).await, Err(Error::Wallet(WalletError::MaxBalanceExceeded)), "the room is held");
    top_up(&app, user, 40).await.expect("up to the held room");
    // The completer finds the charge: done, the payback credited into its room.
    app.clock().advance(Duration::from_secs(1));
    assert_eq!(app.resolve_stuck(Duration::ZERO, 16).await, Ok(1));
    assert_eq!(status(&app, user, payment.id).await, PaymentStatus::Done);
    let after = wallet(&app, user).await;
    assert_eq!((after.balance, after.payback_held), (Money::new(1_000), Money::ZERO));
    assert_eq!(gateway.confirms_received("pk-room"), 1);
    holds(&app).await;
}

/// Hole 5: a charge of another amount than ours (seed 003's tampering) is
/// owed back, durably: the payment goes `refunding` and ends `failed` once
/// the gateway confirms the refund; nothing is booked. When the refund's
/// answer is lost the payment stays `refunding`, and the completer re-sends
/// the cancel until it lands.
pub async fn a_wrong_amount_charge_is_refunded_until_it_lands(strategy: Strategy) {
    let (app, gateway) = bank(strategy).await;
    let user = customer(&app, Limits::default(), 0).await;
    gateway.short_charges(1);
    let payment = new_payment(&app, user, 1_000, Method::Gateway).await;
    let failed = confirm(&app, user, payment.id, Some("pk-short")).await.expect("an answer");
    assert_eq!(failed.status, PaymentStatus::Failed);
    assert_eq!(gateway.charge("pk-short"), Some((999, true)), "charged 999, refunded");
    assert_eq!(booked(&app, payment.id).await, []);

    // The same, with the refund's answer lost.
    gateway.short_charges(1);
    gateway.fail_cancels(1);
    let payment = new_payment(&app, user, 1_000, Method::Gateway).await;
    assert_eq!(confirm(&app, user, payment.id, Some("pk-short-lost")).await, Err(Error::OutcomePending));
    assert_eq!(status(&app, user, payment.id).await, PaymentStatus::Refunding, "the refund is owed");
    assert_eq!(gateway.charge("pk-short-lost"), Some((999, false)));
    assert_eq!(wallet(&app, user).await.payback_held, Money::ZERO, "a failed charge holds no payback");
    holds(&app).await;
    app.clock().advance(Duration::from_secs(1));
    assert_eq!(app.resolve_stuck(Duration::ZERO, 16).await, Ok(1));
    assert_eq!(status(&app, user, payment.id).await, PaymentStatus::Failed);
    assert_eq!(gateway.charge("pk-short-lost"), Some((999, true)), "refunded by the completer");
    assert_eq!(app.resolve_stuck(Duration::ZERO, 16).await, Ok(0), "nothing left owed");
    assert_eq!(booked(&app, payment.id).await, []);
    assert_eq!(wallet(&app, user).await.balance, Money::ZERO);
    holds(&app).await;
}

/// Hole 11: the gateway held a confirm past the give-up and carried it out
/// later. The completer failed the payment (the gateway did not know it)
/// and keeps watching its key; the late charge is refunded to the card, the
/// payment stays `failed` with nothing booked, and once the watch ended the
/// completer no longer looks it up.
pub async fn a_charge_landing_after_the_give_up_is_refunded(strategy: Strategy) {
    let (app, gateway) = bank(strategy).await;
    let user = customer(&app, Limits::default(), 0).await;
    let payment = new_payment(&app, user, 1_000, Method::Gateway).await;
    gateway.hold_confirms(1);
    assert_eq!(confirm(&app, user, payment.id, Some("pk-late")).await, Err(Error::OutcomePending));
    // The gateway does not know it yet: looked up, then given up on.
    app.clock().advance(Duration::from_secs(1));
    assert_eq!(app.resolve_stuck(Duration::ZERO, 16).await, Ok(0), "before the give-up");
    assert_eq!(status(&app, user, payment.id).await, PaymentStatus::Confirming);
    app.clock().advance(Config::default().gateway_give_up_after);
    assert_eq!(app.resolve_stuck(Duration::ZERO, 16).await, Ok(1));
    let failed = app.payment(user, payment.id).await.expect("payment");
    assert_eq!((failed.status, failed.watched()), (PaymentStatus::Failed, true), "given up, watched");
    assert_eq!(wallet(&app, user).await.payback_held, Money::ZERO, "its hold released");
    // The charge lands late; the next pass refunds it.
    assert_eq!(gateway.land_held(), 1);
    app.clock().advance(Duration::from_secs(1));
    assert_eq!(app.resolve_stuck(Duration::ZERO, 16).await, Ok(1));
    let settled = app.payment(user, payment.id).await.expect("payment");
    assert_eq!((settled.status, settled.watched()), (PaymentStatus::Failed, false));
    assert_eq!(gateway.charge("pk-late"), Some((1_000, true)), "refunded to the card");
    assert_eq!(gateway.confirms_received("pk-late"), 1, "the one confirm, never sent again");
    assert_eq!(booked(&app, payment.id).await, [], "our books never took the late charge");
    app.clock().advance(Duration::from_secs(1));
    assert_eq!(app.resolve_stuck(Duration::ZERO, 16).await, Ok(0), "nothing left to watch");
    assert_eq!(wallet(&app, user).await.balance, Money::ZERO, "no payback for a failed payment");
    holds(&app).await;
}

/// An event whose tokens hold at most `per_token` seats, with `seats` seats.
async fn event(app: &Bank, per_token: u32, seats: usize) -> (EventId, Vec<SeatId>) {
    let command = Command::CreateEvent {
        name: "concert".into(),
        active_limit: 10,
        token_ttl: Duration::from_secs(600),
        max_seats_per_token: per_token,
        showtimes: vec![NewShowtime {
            starts_at: START.plus(Duration::from_secs(86_400)),
            seats: (0..seats).map(|i| NewSeat { label: format!("S{i:02}"), price: amount(100) }).collect(),
        }],
    };
    match app.execute(UserId::ADMIN, command, None).await {
        Ok(Executed::Fresh(Outcome::Event(view))) => {
            (view.event.id, view.showtimes[0].1.iter().map(|s| s.id).collect())
        }
        other => panic!("create event answered {other:?}"),
    }
}

async fn join(app: &Bank, user: UserId, event: EventId) -> TokenId {
    match app.execute(user, Command::JoinQueue { event }, None).await {
        Ok(Executed::Fresh(Outcome::Token(view))) => {
            assert_eq!(view.status, TokenStatus::Active);
            view.token.id
        }
        other => panic!("join queue: {other:?}"),
    }
}

async fn book(app: &Bank, user: UserId, seats: Vec<SeatId>, token: TokenId) -> Result<Order, Error> {
    match app.execute(user, Command::CreateOrder { items: vec![], seats, token: Some(token) }, None).await? {
        Executed::Fresh(Outcome::Order(order)) => Ok(order),
        other => panic!("create order answered {other:?}"),
    }
}

async fn seats_held(app: &Bank, token: TokenId) -> u32 {
    stored_token(app.store(), token).await.seats_held
}

/// Hole 7: one active queue token holds at most its event's
/// `max_seats_per_token` seats across its live orders: two, then a third is
/// refused (`seat_limit_reached`); a cancelled order gives its seats back to
/// the token; ten orders of one seat at once with one token → exactly two.
pub async fn a_token_holds_at_most_its_events_seats(strategy: Strategy) {
    let (app, _) = bank(strategy).await;
    let (event, seats) = event(&app, 2, 16).await;
    let user = customer(&app, Limits::default(), 0).await;
    let token = join(&app, user, event).await;
    let two = book(&app, user, seats[0..2].to_vec(), token).await.expect("two seats");
    assert_eq!(book(&app, user, vec![seats[2]], token).await, Err(Error::SeatLimitReached));
    assert_eq!(seats_held(&app, token).await, 2);
    let cancelled = app.execute(user, Command::CancelOrder { order: two.id }, None).await;
    assert!(
        matches!(cancelled, Ok(Executed::Fresh(Outcome::Order(ref o))) if o.status == OrderStatus::Cancelled),
        "{cancelled:?}"
    );
    assert_eq!(seats_held(&app, token).await, 0, "the cancelled order's seats are the token's again");
    let again = book(&app, user, seats[2..4].to_vec(), token).await.expect("two seats again");
    assert_eq!(book(&app, user, vec![seats[4]], token).await, Err(Error::SeatLimitReached));
    holds(&app).await;

    let racer = customer(&app, Limits::default(), 0).await;
    let token = join(&app, racer, event).await;
    let free = Arc::new(seats[4..14].to_vec());
    let results = at_once(10, |i| {
        let (app, free) = (app.clone(), free.clone());
        async move { book(&app, racer, vec![free[i]], token).await }
    })
    .await;
    let placed: Vec<&Order> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let refused = results.iter().filter(|r| **r == Err(Error::SeatLimitReached)).count();
    assert_eq!((placed.len(), refused), (2, 8), "{results:?}");
    assert_eq!(seats_held(&app, token).await, 2);
    let snapshot = app.snapshot().await.expect("snapshot");
    let live: usize =
        snapshot.orders.iter().filter(|o| o.token == Some(token) && o.status.reserves()).map(|o| o.seats.len()).sum();
    assert_eq!(live, 2, "never more than two seats on the token");
    assert!(snapshot.orders.iter().any(|o| o.id == again.id));
    assert_holds(&snapshot);
}

/// Hole 8: a wallet without a maximum of its own still stops at the cap,
/// `Money::BALANCE_LIMIT` (10^15 minor units), on every strategy: top-ups up
/// to exactly the cap succeed (the last twenty-one racing, of which twenty
/// fit), and one more minor unit is refused as `max_balance_exceeded` —
/// never a broken row or a 500 on the next request.
pub async fn no_balance_passes_the_cap(strategy: Strategy) {
    let (app, _) = bank(strategy).await;
    let user = customer(&app, Limits::default(), 0).await;
    let largest = Amount::MAX.minor_units();
    let cap = Money::BALANCE_LIMIT.minor_units();
    assert_eq!(cap % largest, 0);
    let topped = cap / largest - 20;
    for _ in 0..topped {
        top_up(&app, user, largest).await.expect("under the cap");
    }
    let results = at_once(21, |_| {
        let app = app.clone();
        async move {
            loop {
                match top_up(&app, user, largest).await {
                    // Optimistic retries exhausted: the client retries.
                    Err(Error::Busy(_)) => tokio::task::yield_now().await,
                    other => return other,
                }
            }
        }
    })
    .await;
    let fitted = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| **r == Err(Error::Wallet(WalletError::MaxBalanceExceeded))).count();
    assert_eq!((fitted, refused), (20, 1), "{results:?}");
    assert_eq!(wallet(&app, user).await.balance, Money::BALANCE_LIMIT);
    assert_eq!(top_up(&app, user, 1).await, Err(Error::Wallet(WalletError::MaxBalanceExceeded)));
    // Spending and receiving still work at the cap: 1000 out, 100 back.
    spend(&app, user, 1_000).await;
    assert_eq!(wallet(&app, user).await.balance, Money::new(cap - 900));
    assert_eq!(top_up(&app, user, 901).await, Err(Error::Wallet(WalletError::MaxBalanceExceeded)));
    top_up(&app, user, 900).await.expect("back to the cap");
    assert_eq!(wallet(&app, user).await.balance, Money::BALANCE_LIMIT);
    holds(&app).await;
}

/// The schema stands behind the use cases: a balance past the cap cannot be
/// written even by a store user that skips the core's check.
pub async fn the_schema_refuses_a_balance_past_the_cap(strategy: Strategy) {
    let (app, _) = bank(strategy).await;
    let user = customer(&app, Limits::default(), 10).await;
    let mut tx = app.store().begin().await.expect("begin");
    let loaded = tx.wallet(user).await.expect("load").expect("wallet");
    let mut broken = loaded.clone();
    broken.balance = Money::new(Money::BALANCE_LIMIT.minor_units() + 1);
    broken.version += 1;
    let result = match tx.put_wallet(Some(&loaded), &broken).await {
        Ok(()) => tx.commit().await,
        Err(error) => {
            tx.rollback().await;
            Err(error)
        }
    };
    // A decided row is refused by the CHECK; the atomic strategy's guard
    // finds the delta past the cap and reports a conflict first.
    match strategy {
        Strategy::Atomic => assert_eq!(result, Err(StoreError::Conflict)),
        Strategy::Pessimistic | Strategy::Optimistic | Strategy::Advisory | Strategy::Redis => {
            let capped =
                |m: &str| m.contains("wallets_balance_cap") || m.contains("wallets_ceiling_with_held_paybacks");
            assert!(matches!(result, Err(StoreError::Integrity(ref m)) if capped(m)), "{result:?}")
        }
    }
    assert_eq!(wallet(&app, user).await.balance, Money::new(10));
    holds(&app).await;
}

/// An order's payback is the merchant's: its product's rate and the
/// service's rate for seats, fixed when the order is made, credited by its
/// payment and round-tripped by the store.
pub async fn an_orders_payback_is_the_merchants_policy(strategy: Strategy) {
    let (app, _) = bank(strategy).await;
    let product = match app
        .execute(
            UserId::ADMIN,
            Command::CreateProduct { name: "mug".into(), price: amount(1_000), stock: 5, payback_bps: Some(250) },
            None,
        )
        .await
    {
        Ok(Executed::Fresh(Outcome::Product(product))) => product,
        other => panic!("create product answered {other:?}"),
    };
    assert_eq!(app.product(product.id).await.map(|p| p.payback_bps), Ok(250));
    let user = customer(&app, Limits::default(), 10_000).await;
    let created = match app
        .execute(user, Command::CreateOrder { items: vec![(product.id, 3)], seats: vec![], token: None }, None)
        .await
    {
        Ok(Executed::Fresh(Outcome::Order(order))) => order,
        other => panic!("create order answered {other:?}"),
    };
    assert_eq!((created.total, created.payback), (amount(3_000), Money::new(75)), "2.5 % of 3000");
    let stored = stored_order(app.store(), created.id).await;
    assert_eq!(stored, created, "an order round-trips with its payback");
    let payment = paid(
        app.execute(
            user,
            Command::CreateOrderPayment { order: created.id, method: Method::Wallet, confirm: false },
            None,
        )
        .await,
    )
    .expect("order payment");
    assert_eq!(payment.payback, Money::new(75));
    confirm(&app, user, payment.id, None).await.expect("pay");
    assert_eq!(wallet(&app, user).await.balance, Money::new(10_000 - 3_000 + 75));
    holds(&app).await;
}
