//! Shuttle explores thread schedules of the real use cases on the in-memory
//! backend (seed posts 000–002). Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg shuttle" CARGO_TARGET_DIR=target/shuttle \
//!     cargo test -p tally-mem --release --test shuttle -- --nocapture
//! ```
//!
//! Every scenario runs under shuttle's random scheduler and under PCT
//! (depth 3), `SHUTTLE_ITERATIONS` schedules each (default 10,000), asserts
//! exact outcomes inside every schedule, and runs the invariant checker on the
//! final state. A failing schedule is printed by shuttle with the string to
//! pass to `shuttle::replay` (and, for the random scheduler, the seed for
//! `SHUTTLE_RANDOM_SEED`).

#![cfg(shuttle)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::time::Instant;

use common::*;
use shuttle::future::block_on;
use shuttle::thread;
use tally_core::app::{Command, Executed, Outcome};
use tally_core::catalog::StockError;
use tally_core::check::assert_holds;
use tally_core::gateway::Gateway;
use tally_core::ids::{PaymentId, UserId};
use tally_core::ledger::TransferKind;
use tally_core::money::Money;
use tally_core::order::{OrderError, OrderStatus};
use tally_core::payment::{InvalidTransition, Method, PaymentEvent, PaymentStatus};
use tally_core::queue::TokenStatus;
use tally_core::store::LockManager;
use tally_core::time::{ManualClock, Timestamp};
use tally_core::wallet::{LimitKind, Limits, WalletError};
use tally_core::{Error, Tally};
use tally_mem::{MemGateway, MemStore};

/// How many concurrent requests each scenario races (plus the main thread).
const THREADS: usize = 3;

fn iterations() -> usize {
    std::env::var("SHUTTLE_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

/// Runs `body` under the random and the PCT schedulers, printing the counts.
fn explore(name: &str, body: impl Fn() + Send + Sync + 'static) {
    let body = Arc::new(body);
    let n = iterations();
    let started = Instant::now();
    for (scheduler, run) in [
        ("random", Box::new(|b: Arc<dyn Fn() + Send + Sync>| shuttle::check_random(move || b(), n)) as Box<dyn Fn(_)>),
        ("pct(3)", Box::new(|b: Arc<dyn Fn() + Send + Sync>| shuttle::check_pct(move || b(), n, 3))),
    ] {
        let body: Arc<dyn Fn() + Send + Sync> = body.clone();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(body))) {
            eprintln!(
                "shuttle {name}: FAILED under the {scheduler} scheduler. Replay: pass the `failing schedule` \
                 printed above to shuttle::replay (or set SHUTTLE_RANDOM_SEED to the printed seed)."
            );
            resume_unwind(panic);
        }
    }
    println!("shuttle {name}: {n} random + {n} pct(3) schedules passed in {:.2}s", started.elapsed().as_secs_f64());
}

/// Spawns one shuttle thread per request and returns their results in spawn order.
fn race<A, T, F>(app: &Arc<A>, requests: Vec<F>) -> Vec<T>
where
    A: Send + Sync + 'static,
    T: Send + 'static,
    F: FnOnce(Arc<A>) -> T + Send + 'static,
{
    let handles: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let app = app.clone();
            thread::spawn(move || request(app))
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("request thread")).collect()
}

fn is_done(result: &Result<Executed, Error>) -> bool {
    matches!(result, Ok(Executed::Fresh(Outcome::Payment(p))) if p.status == PaymentStatus::Done)
}

fn confirm(payment: PaymentId) -> Command {
    Command::ConfirmPayment { payment, payment_key: None }
}

/// Seed 001: N duplicate confirms of one payment → exactly one charge; every
/// other confirm is refused as `invalid_state` (the payment is already done).
fn duplicate_confirms<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (user, id) = block_on(async {
        let user = user_with(&app, Limits::default(), 1_000).await;
        (user, new_payment(&app, user, 100, 10).await)
    });
    let results = race(
        &app,
        (0..THREADS).map(|_| move |app: Arc<Tally<_, L, _>>| block_on(app.execute(user, confirm(id), None))).collect(),
    );
    assert_eq!(results.iter().filter(|r| is_done(r)).count(), 1, "exactly one confirm succeeds: {results:?}");
    let already = Err(Error::Transition(InvalidTransition { from: PaymentStatus::Done, event: PaymentEvent::Confirm }));
    assert_eq!(results.iter().filter(|r| **r == already).count(), THREADS - 1, "{results:?}");
    block_on(async {
        assert_eq!(balance(&app, user).await, Money::new(1_000 - 100 + 10));
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Done);
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// A user with `limits` and `balance`, and THREADS payments of 100 confirmed at once.
fn confirm_racing<L: LockManager>(
    app: &Arc<Tally<MemStore, L, ManualClock>>,
    limits: Limits,
    balance: i64,
) -> (tally_core::ids::UserId, Vec<Result<Executed, Error>>) {
    let (user, ids) = block_on(async {
        let user = user_with(app, limits, balance).await;
        let mut ids = Vec::new();
        for _ in 0..THREADS {
            ids.push(new_payment(app, user, 100, 10).await);
        }
        (user, ids)
    });
    let requests = ids
        .into_iter()
        .map(|id| move |app: Arc<Tally<MemStore, L, ManualClock>>| block_on(app.execute(user, confirm(id), None)))
        .collect();
    (user, race(app, requests))
}

/// Seed 002's point charge: N concurrent top-ups → none lost.
fn concurrent_top_ups<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let user = block_on(user_with(&app, Limits::default(), 0));
    let results = race(
        &app,
        (1..=THREADS as i64)
            .map(|i| {
                move |app: Arc<Tally<_, L, _>>| {
                    block_on(app.execute(user, Command::TopUp { amount: amount(i * 100) }, None))
                }
            })
            .collect(),
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    block_on(async {
        assert_eq!(balance(&app, user).await, Money::new(100 + 200 + 300));
        let snapshot = app.snapshot().await.unwrap();
        assert_eq!(snapshot.transfers.len(), THREADS);
        assert_holds(&snapshot);
    });
}

/// A balance that covers k of N payments → exactly k are paid, the rest are
/// refused for insufficient balance, and the balance is exact.
fn k_of_n_payments<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (user, results) = confirm_racing(&app, Limits::default(), 250);
    assert_eq!(results.iter().filter(|r| is_done(r)).count(), 2, "{results:?}");
    let broke = Err(Error::Wallet(WalletError::InsufficientBalance));
    assert_eq!(results.iter().filter(|r| **r == broke).count(), THREADS - 2, "{results:?}");
    block_on(async {
        assert_eq!(balance(&app, user).await, Money::new(250 - 2 * (100 - 10)), "two paid, each 10 back");
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Seed 001's daily limit under concurrency: a limit of 250 lets exactly two
/// payments of 100 through, whatever the interleaving.
fn daily_limit<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let limits = Limits { daily: Some(Money::new(250)), ..Limits::default() };
    let (user, results) = confirm_racing(&app, limits, 1_000);
    assert_eq!(results.iter().filter(|r| is_done(r)).count(), 2, "{results:?}");
    let limited = Err(Error::Wallet(WalletError::LimitExceeded(LimitKind::Daily)));
    assert_eq!(results.iter().filter(|r| **r == limited).count(), THREADS - 2, "{results:?}");
    block_on(async {
        let view = app.wallet(user).await.unwrap();
        assert_eq!(view.wallet.balance, Money::new(1_000 - 2 * (100 - 10)), "two paid, each 10 back");
        assert_eq!(view.spent_today, Money::new(200));
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// A confirm racing a cancel of a waiting payment, plus a second cancel:
/// either the confirm wins (charged, then refunded once) or a cancel wins
/// (nothing moves, the confirm is refused). Never two refunds, and the money
/// always comes back.
fn payment_vs_cancel<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (user, id) = block_on(async {
        let user = user_with(&app, Limits::default(), 500).await;
        (user, new_payment(&app, user, 200, 20).await)
    });
    let cancel =
        move |app: Arc<Tally<_, L, _>>| block_on(app.execute(user, Command::CancelPayment { payment: id }, None));
    let confirm_one = move |app: Arc<Tally<_, L, _>>| block_on(app.execute(user, confirm(id), None));
    let confirmed =
        race(&app, vec![Box::new(confirm_one) as Box<dyn FnOnce(_) -> _ + Send>, Box::new(cancel), Box::new(cancel)]);
    let cancels_ok = confirmed[1..].iter().filter(|r| r.is_ok()).count();
    assert_eq!(cancels_ok, 1, "exactly one cancel succeeds: {confirmed:?}");
    // The losers are refused by the state machine, nothing else.
    let cancelled = |event| Err(Error::Transition(InvalidTransition { from: PaymentStatus::Cancelled, event }));
    let refused_cancel = cancelled(PaymentEvent::Cancel);
    assert_eq!(confirmed[1..].iter().filter(|r| **r == refused_cancel).count(), 1, "{confirmed:?}");
    assert!(is_done(&confirmed[0]) || confirmed[0] == cancelled(PaymentEvent::Confirm), "{confirmed:?}");
    block_on(async {
        let snapshot = app.snapshot().await.unwrap();
        let charges = snapshot.transfers.iter().filter(|t| t.payment == Some(id)).count();
        if is_done(&confirmed[0]) {
            assert_eq!(charges, 4, "charge + payback, then refund + reversal: {:?}", snapshot.transfers);
        } else {
            assert_eq!(charges, 0);
        }
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Cancelled);
        assert_eq!(balance(&app, user).await, Money::new(500));
        assert_holds(&snapshot);
    });
}

/// The same request sent N times at once with one Idempotency-Key: one
/// effect; every other answer is a byte-identical replay or `in use`.
fn idempotent_top_ups<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let user = block_on(user_with(&app, Limits::default(), 0));
    let command = Command::TopUp { amount: amount(700) };
    let results = race(
        &app,
        (0..THREADS)
            .map(|_| {
                let command = command.clone();
                move |app: Arc<Tally<_, L, _>>| {
                    block_on(app.execute(user, command.clone(), Some(keyed("top-up-1", &command))))
                }
            })
            .collect(),
    );
    let fresh: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            Ok(Executed::Fresh(o)) => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(fresh.len(), 1, "exactly one request runs: {results:?}");
    let first = render(&Ok(fresh[0].clone())).unwrap();
    for result in &results {
        match result {
            Ok(Executed::Fresh(_)) | Err(Error::IdempotencyKeyInUse) => {}
            Ok(Executed::Replayed(response)) => {
                assert_eq!(*response, first, "a replay is byte for byte")
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    block_on(async {
        // A retry after everything settled replays.
        let again = app.execute(user, command.clone(), Some(keyed("top-up-1", &command))).await;
        assert_eq!(again, Ok(Executed::Replayed(first)));
        assert_eq!(balance(&app, user).await, Money::new(700));
        assert_holds(&app.snapshot().await.unwrap());
    });
}

fn gateway_confirm(payment: PaymentId) -> Command {
    Command::ConfirmPayment { payment, payment_key: Some("pk-1".into()) }
}

/// What a confirm of a gateway payment may answer while others race it:
/// done, "outcome pending" (it looked up before the charge landed), or
/// refused because the payment is already done.
fn acceptable_gateway_answer(result: &Result<Executed, Error>) -> bool {
    is_done(result)
        || *result == Err(Error::OutcomePending)
        || matches!(result, Err(Error::Transition(t)) if t.from == PaymentStatus::Done)
}

/// Seed 003: N concurrent confirms of one gateway payment → the gateway
/// receives exactly one confirm, the payment is charged once.
fn gateway_concurrent_confirms((app, gateway): (Arc<GatewayTally>, MemGateway)) {
    let (user, id) = block_on(async {
        let user = user_with(&app, Limits::default(), 0).await;
        (user, new_gateway_payment(&app, user, 500, 50).await)
    });
    let results = race(
        &app,
        (0..THREADS)
            .map(|_| move |app: Arc<GatewayTally>| block_on(app.execute(user, gateway_confirm(id), None)))
            .collect(),
    );
    assert_eq!(gateway.confirms_received("pk-1"), 1, "one confirm sent: {results:?}");
    assert!(results.iter().all(acceptable_gateway_answer), "{results:?}");
    assert!(results.iter().any(is_done), "the sender of the confirm records it: {results:?}");
    block_on(async {
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Done);
        assert_eq!(gateway.charge("pk-1"), Some((500, false)));
        assert_eq!(balance(&app, user).await, Money::new(50), "the payback, once");
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// The gateway charges, then the reply is lost: the payment ends done, once,
/// found by a lookup — never by a second confirm.
fn gateway_lost_reply((app, gateway): (Arc<GatewayTally>, MemGateway)) {
    gateway.lose_confirm_replies(1);
    let (user, id) = block_on(async {
        let user = user_with(&app, Limits::default(), 0).await;
        (user, new_gateway_payment(&app, user, 300, 30).await)
    });
    let results = race(
        &app,
        (0..2).map(|_| move |app: Arc<GatewayTally>| block_on(app.execute(user, gateway_confirm(id), None))).collect(),
    );
    assert_eq!(gateway.confirms_received("pk-1"), 1, "never a blind second confirm: {results:?}");
    assert!(results.iter().all(acceptable_gateway_answer), "{results:?}");
    block_on(async {
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Done);
        let booked: Vec<_> =
            app.snapshot().await.unwrap().transfers.iter().filter(|t| t.payment == Some(id)).map(|t| t.kind).collect();
        assert_eq!(booked, [TransferKind::Payment, TransferKind::Payback], "charged once, paid back once");
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// A payment left `confirming` (reply lost, then the lookup failed too) is
/// resolved by a client's retry racing the completer: done once, one confirm.
fn gateway_retry_vs_completer((app, gateway): (Arc<GatewayTally>, MemGateway)) {
    gateway.lose_confirm_replies(1);
    gateway.fail_lookups(1);
    let (user, id) = block_on(async {
        let user = user_with(&app, Limits::default(), 0).await;
        let id = new_gateway_payment(&app, user, 700, 70).await;
        assert_eq!(app.execute(user, gateway_confirm(id), None).await, Err(Error::OutcomePending));
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Confirming);
        (user, id)
    });
    app.clock().advance(std::time::Duration::from_secs(600));
    let retry = {
        let app = app.clone();
        thread::spawn(move || block_on(app.execute(user, gateway_confirm(id), None)))
    };
    let completer = {
        let app = app.clone();
        thread::spawn(move || block_on(app.resolve_stuck(std::time::Duration::from_secs(60), 16)))
    };
    let retried = retry.join().unwrap();
    let resolved = completer.join().unwrap();
    assert!(acceptable_gateway_answer(&retried), "{retried:?}");
    assert!(matches!(resolved, Ok(0 | 1)), "{resolved:?}");
    assert_eq!(gateway.confirms_received("pk-1"), 1);
    block_on(async {
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Done);
        assert_eq!(balance(&app, user).await, Money::new(70));
        assert_holds(&app.snapshot().await.unwrap());
    });
}

fn is_out_of_stock(result: &Result<Executed, Error>) -> bool {
    matches!(result, Err(Error::Stock(StockError::OutOfStock { .. })))
}

/// Seed 004: N buyers race for `stock` units, one each → exactly `stock`
/// orders, the rest refused out of stock, stock 0, nothing oversold.
fn stock_k_of_n<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>, stock_units: u64, buyers: usize) {
    let (users, product) = block_on(async {
        let mut users = Vec::new();
        for _ in 0..buyers {
            users.push(user_with(&app, Limits::default(), 0).await);
        }
        (users, new_product(&app, 100, stock_units).await)
    });
    let results = race(
        &app,
        users
            .into_iter()
            .map(|user| {
                move |app: Arc<Tally<_, L, _>>| block_on(app.execute(user, order_of(&[(product, 1)], &[], None), None))
            })
            .collect(),
    );
    let won = stock_units.min(buyers as u64) as usize;
    assert_eq!(results.iter().filter(|r| created(r).is_some()).count(), won, "{results:?}");
    assert_eq!(results.iter().filter(|r| is_out_of_stock(r)).count(), buyers - won, "{results:?}");
    block_on(async {
        assert_eq!(stock(&app, product).await, stock_units - won as u64);
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Seed 004's last unit: two buyers, one unit → one order.
fn last_unit<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    stock_k_of_n(app, 1, 2);
}

/// Stock k bought by N > k buyers.
fn k_units_n_buyers<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    stock_k_of_n(app, 2, THREADS);
}

/// Two orders list the same two products in opposite orders, one unit of
/// each in stock: exactly one gets both, the other gets neither (all lines
/// or none), and neither waits for the other forever (global lock order).
fn opposite_orders<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (a, b, users) = block_on(async {
        let a = new_product(&app, 100, 1).await;
        let b = new_product(&app, 200, 1).await;
        let users = [user_with(&app, Limits::default(), 0).await, user_with(&app, Limits::default(), 0).await];
        (a, b, users)
    });
    let lists = [vec![(a, 1), (b, 1)], vec![(b, 1), (a, 1)]];
    let results = race(
        &app,
        users
            .into_iter()
            .zip(lists)
            .map(|(user, items)| {
                move |app: Arc<Tally<_, L, _>>| block_on(app.execute(user, order_of(&items, &[], None), None))
            })
            .collect(),
    );
    assert_eq!(results.iter().filter(|r| created(r).is_some()).count(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| is_out_of_stock(r)).count(), 1, "{results:?}");
    let order = results.iter().find_map(created).unwrap();
    assert_eq!(order.total, amount(300));
    block_on(async {
        assert_eq!((stock(&app, a).await, stock(&app, b).await), (0, 0));
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Races `confirm` against the expiry sweeper while the clock crosses the
/// order's TTL (`ttl_end`); returns the confirm's answer and how many
/// orders the sweep expired.
fn confirm_racing_sweep<L: LockManager, G: Gateway>(
    app: &Arc<Tally<MemStore, L, ManualClock, G>>,
    user: UserId,
    confirm: Command,
    ttl_end: Timestamp,
) -> (Result<Executed, Error>, usize) {
    let confirming = {
        let app = app.clone();
        thread::spawn(move || block_on(app.execute(user, confirm, None)))
    };
    let sweeping = {
        let app = app.clone();
        thread::spawn(move || {
            app.clock().set(ttl_end);
            block_on(app.expire_orders(16))
        })
    };
    (confirming.join().unwrap(), sweeping.join().unwrap().expect("sweep"))
}

/// Seed 004's scheduled job racing the payment: the clock crosses the TTL
/// while a confirm and the sweeper run. Either the order is paid (stock
/// consumed, one charge, the sweeper expired nothing) or it expired (stock
/// back, no money moved, the confirm refused as expired) — never both.
fn confirm_vs_sweeper<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (user, product, order, pay) = block_on(async {
        let user = user_with(&app, Limits::default(), 1_000).await;
        let product = new_product(&app, 300, 1).await;
        let order = new_order(&app, user, order_of(&[(product, 1)], &[], None)).await;
        let pay = order_payment(&app, user, order.id).await;
        (user, product, order, pay)
    });
    let (confirmed, swept) = confirm_racing_sweep(&app, user, confirm(pay), order.expires_at);
    block_on(async {
        let now = app.order(user, order.id).await.unwrap();
        if is_done(&confirmed) {
            assert_eq!((now.status, swept), (OrderStatus::Paid, 0));
            assert_eq!(stock(&app, product).await, 0);
            assert_eq!(balance(&app, user).await, Money::new(700));
        } else {
            assert_eq!(confirmed, Err(Error::Order(OrderError::Expired(order.id))));
            assert_eq!(now.status, OrderStatus::Expired);
            // The sweeper expired it, or a later sweep will: either way a
            // reader sees it expired; sweep again to give the stock back.
            let later = app.expire_orders(16).await.unwrap();
            assert_eq!(swept + later, 1, "expired exactly once");
            assert_eq!(stock(&app, product).await, 1);
            assert_eq!(balance(&app, user).await, Money::new(1_000));
            assert_eq!(payment(&app, user, pay).await.status, PaymentStatus::Wait);
        }
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// A paid-or-not order cancelled while its payment is confirmed: the cancel
/// always wins in the end — the order is cancelled, its stock is back and the
/// wallet is whole — whether it cancelled a pending order (the confirm is
/// then refused) or refunded a paid one.
fn cancel_vs_confirm<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (user, product, order, pay) = block_on(async {
        let user = user_with(&app, Limits::default(), 1_000).await;
        let product = new_product(&app, 400, 2).await;
        let order = new_order(&app, user, order_of(&[(product, 2)], &[], None)).await;
        let pay = order_payment(&app, user, order.id).await;
        (user, product, order, pay)
    });
    let confirming = {
        let app = app.clone();
        thread::spawn(move || block_on(app.execute(user, confirm(pay), None)))
    };
    let cancelling = {
        let app = app.clone();
        thread::spawn(move || block_on(app.execute(user, Command::CancelOrder { order: order.id }, None)))
    };
    let confirmed = confirming.join().unwrap();
    let cancelled = cancelling.join().unwrap();
    assert!(
        matches!(&cancelled, Ok(Executed::Fresh(Outcome::Order(o))) if o.status == OrderStatus::Cancelled),
        "{cancelled:?}"
    );
    assert!(
        is_done(&confirmed) || matches!(confirmed, Err(Error::Order(OrderError::InvalidState { .. }))),
        "{confirmed:?}"
    );
    block_on(async {
        assert_eq!(stock(&app, product).await, 2);
        assert_eq!(balance(&app, user).await, Money::new(1_000));
        let status = payment(&app, user, pay).await.status;
        let expected = if is_done(&confirmed) { PaymentStatus::Cancelled } else { PaymentStatus::Wait };
        assert_eq!(status, expected);
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Seed 002: N users with active queue tokens book the same seat → exactly
/// one holds it; the others are told it is unavailable.
fn seat_booked_by_n<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (seat, bookings) = block_on(async {
        let (event, seats) = new_event(&app, THREADS as u32, 2).await;
        let mut bookings = Vec::new();
        for _ in 0..THREADS {
            let user = user_with(&app, Limits::default(), 0).await;
            bookings.push((user, active_token(&app, user, event).await));
        }
        (seats[0], bookings)
    });
    let results = race(
        &app,
        bookings
            .into_iter()
            .map(|(user, token)| {
                move |app: Arc<Tally<_, L, _>>| block_on(app.execute(user, order_of(&[], &[seat], Some(token)), None))
            })
            .collect(),
    );
    assert_eq!(results.iter().filter(|r| created(r).is_some()).count(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| matches!(r, Err(Error::Seat(_)))).count(), THREADS - 1, "{results:?}");
    block_on(async { assert_holds(&app.snapshot().await.unwrap()) });
}

/// N users join a queue that admits 2 while the first active holder's order
/// is paid: never more than 2 active at once (also over time: the checker
/// replays every activation interval), and every joiner is either active or
/// waiting in a distinct place.
fn queue_admission<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (event, first, pay, joiners) = block_on(async {
        let (event, seats) = new_event(&app, 2, 4).await;
        let first = user_with(&app, Limits::default(), 1_000).await;
        let token = active_token(&app, first, event).await;
        let order = new_order(&app, first, order_of(&[], &[seats[0]], Some(token))).await;
        let pay = order_payment(&app, first, order.id).await;
        let mut joiners = Vec::new();
        for _ in 0..THREADS - 1 {
            joiners.push(user_with(&app, Limits::default(), 0).await);
        }
        (event, first, pay, joiners)
    });
    let paying = {
        let app = app.clone();
        thread::spawn(move || block_on(app.execute(first, confirm(pay), None)))
    };
    let joined = race(
        &app,
        joiners.into_iter().map(|user| move |app: Arc<Tally<_, L, _>>| block_on(join(&app, user, event))).collect(),
    );
    assert!(is_done(&paying.join().unwrap()));
    block_on(async {
        let snapshot = app.snapshot().await.unwrap();
        let active = snapshot.tokens.iter().filter(|t| t.status == TokenStatus::Active).count();
        // The first token was used: both joiners fit in the two slots.
        assert_eq!(active, 2, "{:?}", snapshot.tokens);
        assert!(joined.iter().all(|v| v.status == TokenStatus::Active || v.position >= 1), "{joined:?}");
        assert_holds(&snapshot);
    });
}

/// A gateway charge for an order racing the sweeper across the TTL: the
/// order is marked as being paid before the charge is sent, so either the
/// gateway charged and the order is paid (even if the TTL passed while the
/// charge was in flight), or the gateway was never called and the order
/// expired. Money at the gateway always means a paid order.
fn gateway_confirm_vs_sweeper((app, gateway): (Arc<GatewayTally>, MemGateway)) {
    let (user, product, order, pay) = block_on(async {
        let user = user_with(&app, Limits::default(), 0).await;
        let product = new_product(&app, 300, 1).await;
        let order = new_order(&app, user, order_of(&[(product, 1)], &[], None)).await;
        let command = Command::CreateOrderPayment { order: order.id, method: Method::Gateway };
        let pay = match app.execute(user, command, None).await {
            Ok(Executed::Fresh(Outcome::Payment(p))) => p.id,
            other => panic!("{other:?}"),
        };
        (user, product, order, pay)
    });
    let (confirmed, swept) = confirm_racing_sweep(&app, user, gateway_confirm(pay), order.expires_at);
    block_on(async {
        let later = app.expire_orders(16).await.unwrap();
        let now = app.order(user, order.id).await.unwrap();
        if is_done(&confirmed) {
            assert_eq!((now.status, swept + later), (OrderStatus::Paid, 0));
            assert_eq!(gateway.confirms_received("pk-1"), 1);
            assert_eq!(stock(&app, product).await, 0);
        } else {
            assert_eq!(confirmed, Err(Error::Order(OrderError::Expired(order.id))));
            assert_eq!((now.status, swept + later), (OrderStatus::Expired, 1));
            assert_eq!(gateway.confirms_received("pk-1"), 0, "no charge for an expired order");
            assert_eq!(stock(&app, product).await, 1);
        }
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Hole 1: one gateway payment key, two payments (of two users) confirming
/// with it at once → exactly one claims it and is charged; the other is
/// refused `payment_key_in_use` and nothing is sent for it. One card charge
/// never pays two payments, and nobody cancels it.
fn gateway_one_key_two_payments((app, gateway): (Arc<GatewayTally>, MemGateway)) {
    let payments = block_on(async {
        let mut payments = Vec::new();
        for _ in 0..2 {
            let user = user_with(&app, Limits::default(), 0).await;
            payments.push((user, new_gateway_payment(&app, user, 500, 50).await));
        }
        payments
    });
    let results = race(
        &app,
        payments
            .iter()
            .map(|&(user, id)| move |app: Arc<GatewayTally>| block_on(app.execute(user, gateway_confirm(id), None)))
            .collect(),
    );
    assert_eq!(results.iter().filter(|r| is_done(r)).count(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| **r == Err(Error::PaymentKeyInUse)).count(), 1, "{results:?}");
    assert_eq!(gateway.confirms_received("pk-1"), 1, "one confirm, for the payment that claimed the key");
    assert_eq!(gateway.charge("pk-1"), Some((500, false)), "charged once, never cancelled");
    block_on(async {
        let mut statuses = Vec::new();
        for &(user, id) in &payments {
            statuses.push(payment(&app, user, id).await.status);
        }
        statuses.sort_by_key(|s| s.as_str());
        assert_eq!(statuses, [PaymentStatus::Done, PaymentStatus::Wait]);
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Hole 2: a gateway cancel racing the customer spending its cashback. The
/// payback reversal is decided before the refund is sent, so either the
/// cancel wins (reversed, refunded, the spend refused) or the spend wins
/// (the cancel refused `insufficient_balance` with nothing sent, the charge
/// kept). Never a refund with the cancel refused afterwards, never a payment
/// stuck `cancelling`.
fn gateway_cancel_racing_cashback_spend((app, gateway): (Arc<GatewayTally>, MemGateway)) {
    let (user, card, spend) = block_on(async {
        let user = user_with(&app, Limits::default(), 0).await;
        let card = new_gateway_payment(&app, user, 1_000, 100).await;
        app.execute(user, gateway_confirm(card), None).await.expect("charged");
        assert_eq!(balance(&app, user).await, Money::new(100), "the cashback");
        (user, card, new_payment(&app, user, 100, 10).await)
    });
    let results = race(
        &app,
        vec![
            Box::new(move |app: Arc<GatewayTally>| {
                block_on(app.execute(user, Command::CancelPayment { payment: card }, None))
            }) as Box<dyn FnOnce(Arc<GatewayTally>) -> Result<Executed, Error> + Send>,
            Box::new(move |app: Arc<GatewayTally>| block_on(app.execute(user, confirm(spend), None))),
        ],
    );
    let broke = Err(Error::Wallet(WalletError::InsufficientBalance));
    block_on(async {
        let card_status = payment(&app, user, card).await.status;
        let spend_status = payment(&app, user, spend).await.status;
        let cancelled =
            matches!(&results[0], Ok(Executed::Fresh(Outcome::Payment(p))) if p.status == PaymentStatus::Cancelled);
        if cancelled {
            assert_eq!(results[1], broke, "{results:?}");
            assert_eq!((card_status, spend_status), (PaymentStatus::Cancelled, PaymentStatus::Wait));
            assert_eq!(gateway.charge("pk-1"), Some((1_000, true)), "refunded to the card");
            assert_eq!(balance(&app, user).await, Money::ZERO);
        } else {
            assert_eq!(results[0], broke, "{results:?}");
            assert!(is_done(&results[1]), "{results:?}");
            assert_eq!((card_status, spend_status), (PaymentStatus::Done, PaymentStatus::Done));
            assert_eq!(gateway.charge("pk-1"), Some((1_000, false)), "no refund sent for a refused cancel");
            assert_eq!(balance(&app, user).await, Money::new(10));
        }
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Hole 2's twin: a gateway confirm racing a top-up on a wallet near its
/// maximum. The payback's room is held before the charge is sent, so either
/// the confirm goes first (charged, the payback credited, the top-up refused)
/// or the top-up does (the confirm refused `max_balance_exceeded` with
/// nothing sent). Never a charge whose payback is refused afterwards.
fn gateway_confirm_racing_a_top_up_near_the_maximum((app, gateway): (Arc<GatewayTally>, MemGateway)) {
    let limits = Limits { max_balance: Some(Money::new(1_000)), ..Limits::default() };
    let (user, id) = block_on(async {
        let user = user_with(&app, limits, 900).await;
        (user, new_gateway_payment(&app, user, 1_000, 100).await)
    });
    let results = race(
        &app,
        vec![
            Box::new(move |app: Arc<GatewayTally>| block_on(app.execute(user, gateway_confirm(id), None)))
                as Box<dyn FnOnce(Arc<GatewayTally>) -> Result<Executed, Error> + Send>,
            Box::new(move |app: Arc<GatewayTally>| {
                block_on(app.execute(user, Command::TopUp { amount: amount(100) }, None))
            }),
        ],
    );
    let full = Err(Error::Wallet(WalletError::MaxBalanceExceeded));
    block_on(async {
        let status = payment(&app, user, id).await.status;
        if is_done(&results[0]) {
            assert_eq!(results[1], full, "{results:?}");
            assert_eq!(gateway.charge("pk-1"), Some((1_000, false)));
        } else {
            assert_eq!(results[0], full, "{results:?}");
            assert!(results[1].is_ok(), "{results:?}");
            assert_eq!((status, gateway.confirms_received("pk-1")), (PaymentStatus::Wait, 0), "nothing sent");
        }
        assert_eq!(balance(&app, user).await, Money::new(1_000));
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Hole 7: one active token placing orders at once for more seats than the
/// event allows a token → exactly `max_seats_per_token` seats are held, the
/// rest refused `seat_limit_reached`.
fn token_orders_hold_at_most_the_seat_limit<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (user, token, seats) = block_on(async {
        let (event, seats) = new_event_with(&app, 1, THREADS, 2).await;
        let user = user_with(&app, Limits::default(), 0).await;
        (user, active_token(&app, user, event).await, seats)
    });
    let results = race(
        &app,
        seats
            .iter()
            .map(|&seat| {
                move |app: Arc<Tally<_, L, _>>| block_on(app.execute(user, order_of(&[], &[seat], Some(token)), None))
            })
            .collect(),
    );
    assert_eq!(results.iter().filter(|r| created(r).is_some()).count(), 2, "{results:?}");
    let refused = results.iter().filter(|r| **r == Err(Error::SeatLimitReached)).count();
    assert_eq!(refused, THREADS - 2, "{results:?}");
    block_on(async { assert_holds(&app.snapshot().await.unwrap()) });
}

macro_rules! scenario {
    ($test:ident, $scenario:ident, $backend:ident) => {
        #[test]
        fn $test() {
            explore(stringify!($test), || $scenario($backend()));
        }
    };
}

scenario!(locked_duplicate_confirms_charge_once, duplicate_confirms, locked);
scenario!(locked_concurrent_top_ups_lose_nothing, concurrent_top_ups, locked);
scenario!(locked_balance_for_k_pays_exactly_k, k_of_n_payments, locked);
scenario!(locked_daily_limit_is_exact, daily_limit, locked);
scenario!(locked_payment_vs_cancel_refunds_once, payment_vs_cancel, locked);
scenario!(locked_idempotency_key_has_one_effect, idempotent_top_ups, locked);
scenario!(optimistic_duplicate_confirms_charge_once, duplicate_confirms, optimistic);
scenario!(optimistic_concurrent_top_ups_lose_nothing, concurrent_top_ups, optimistic);
scenario!(optimistic_balance_for_k_pays_exactly_k, k_of_n_payments, optimistic);
scenario!(optimistic_payment_vs_cancel_refunds_once, payment_vs_cancel, optimistic);
scenario!(optimistic_idempotency_key_has_one_effect, idempotent_top_ups, optimistic);
scenario!(locked_last_unit_sells_once, last_unit, locked);
scenario!(locked_k_units_sell_to_exactly_k_of_n, k_units_n_buyers, locked);
scenario!(locked_opposite_multi_product_orders_never_deadlock, opposite_orders, locked);
scenario!(locked_confirm_racing_expiry_ends_one_way, confirm_vs_sweeper, locked);
scenario!(locked_cancel_racing_confirm_gives_everything_back, cancel_vs_confirm, locked);
scenario!(locked_seat_booked_by_n_sells_once, seat_booked_by_n, locked);
scenario!(locked_queue_never_admits_above_its_limit, queue_admission, locked);
scenario!(optimistic_k_units_sell_to_exactly_k_of_n, k_units_n_buyers, optimistic);
scenario!(optimistic_confirm_racing_expiry_ends_one_way, confirm_vs_sweeper, optimistic);
scenario!(optimistic_seat_booked_by_n_sells_once, seat_booked_by_n, optimistic);
scenario!(optimistic_queue_never_admits_above_its_limit, queue_admission, optimistic);
scenario!(gateway_order_charge_racing_expiry_ends_one_way, gateway_confirm_vs_sweeper, with_gateway);
scenario!(gateway_concurrent_confirms_send_one_confirm, gateway_concurrent_confirms, with_gateway);
scenario!(gateway_lost_reply_is_looked_up_not_resent, gateway_lost_reply, with_gateway);
scenario!(gateway_retry_racing_the_completer_charges_once, gateway_retry_vs_completer, with_gateway);
scenario!(gateway_one_key_pays_one_payment, gateway_one_key_two_payments, with_gateway);
scenario!(gateway_cancel_racing_a_cashback_spend_ends_one_way, gateway_cancel_racing_cashback_spend, with_gateway);
scenario!(
    gateway_payback_room_is_held_before_the_charge,
    gateway_confirm_racing_a_top_up_near_the_maximum,
    with_gateway
);
scenario!(locked_token_holds_at_most_its_seat_limit, token_orders_hold_at_most_the_seat_limit, locked);
scenario!(optimistic_token_holds_at_most_its_seat_limit, token_orders_hold_at_most_the_seat_limit, optimistic);
