//! Group commit on the in-memory store, deterministically: the requests of
//! each test are polled together on one thread, so the first one leads and
//! the others queue behind it and share its batch (one commit, counted by
//! the store's commit hook). Shuttle explores the schedules
//! (`tests/shuttle/batch.rs`); these pin exact outcomes of known batches.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use common::*;
use tally_core::app::{Command, Config, Executed, Outcome};
use tally_core::check::assert_holds;
use tally_core::ids::{PaymentId, SeqIds, UserId};
use tally_core::money::Money;
use tally_core::order::OrderStatus;
use tally_core::payment::{InvalidTransition, PaymentEvent, PaymentStatus};
use tally_core::store::{LockManager, NoLocks, StoreError};
use tally_core::time::ManualClock;
use tally_core::wallet::{Limits, WalletError};
use tally_core::{Error, Tally};
use tally_mem::{CommitFault, Concurrency, MemLocks, MemStore};

type Result = std::result::Result<Executed, Error>;

fn batched_config() -> Config {
    Config { batch_max: 64, attempts_max: 16, ..config() }
}

fn batched_locked() -> Arc<Tally<MemStore, MemLocks<ManualClock>, ManualClock>> {
    let clock = ManualClock::new(START);
    let locks = MemLocks::new(clock.clone(), tally_lock::Config::default());
    let store = MemStore::new(Concurrency::Locked);
    Arc::new(Tally::new(store, locks, clock, Arc::new(SeqIds::new(1)), batched_config()))
}

fn batched_optimistic() -> Arc<Tally<MemStore, NoLocks, ManualClock>> {
    let clock = ManualClock::new(START);
    let store = MemStore::new(Concurrency::Optimistic);
    Arc::new(Tally::new(store, NoLocks, clock, Arc::new(SeqIds::new(1)), batched_config()))
}

/// Polls every future in turn until all are ready. The first becomes the
/// leader and yields once before taking its batch; by then the others have
/// queued, so all of them land in one batch.
fn together<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut context = Context::from_waker(Waker::noop());
    for _round in 0..1_000 {
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none()
                && let Poll::Ready(value) = future.as_mut().poll(&mut context)
            {
                *output = Some(value);
            }
        }
        if outputs.iter().all(Option::is_some) {
            return outputs.into_iter().map(Option::unwrap).collect();
        }
    }
    panic!("the batch never finished");
}

/// Counts commits, injecting `faults` into the first ones.
fn count_commits(store: &MemStore, faults: Vec<CommitFault>) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let faults = Mutex::new(faults.into_iter());
    store.set_commit_faults(Some(Box::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        faults.lock().unwrap().next().unwrap_or(CommitFault::None)
    })));
    count
}

fn confirm(payment: PaymentId) -> Command {
    Command::ConfirmPayment { payment, payment_key: None }
}

fn run_keyed<L: LockManager>(
    app: &Tally<MemStore, L, ManualClock>,
    user: UserId,
    requests: &[(&str, Command)],
) -> Vec<Result> {
    together(
        requests.iter().map(|(key, command)| app.execute(user, command.clone(), Some(keyed(key, command)))).collect(),
    )
}

fn done(result: &Result) -> bool {
    matches!(result, Ok(Executed::Fresh(Outcome::Payment(p))) if p.status == PaymentStatus::Done)
}

/// Two payments whose sum exceeds the balance, confirmed in one batch: the
/// second is decided on the balance the first left (never on the balance
/// as loaded), so exactly the first succeeds and the balance is exact.
fn overdraft_in_one_batch<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (user, first, second) = block_on(async {
        let user = user_with(&app, Limits::default(), 100).await;
        (user, new_payment(&app, user, 70, 7).await, new_payment(&app, user, 50, 5).await)
    });
    let commits = count_commits(app.store(), Vec::new());
    let results = run_keyed(&app, user, &[("a", confirm(first)), ("b", confirm(second))]);
    assert_eq!(commits.load(Ordering::SeqCst), 1, "one commit for the batch");
    assert!(done(&results[0]), "{results:?}");
    assert_eq!(results[1], Err(Error::Wallet(WalletError::InsufficientBalance)));
    block_on(async {
        assert_eq!(balance(&app, user).await, Money::new(100 - 70 + 7));
        assert_eq!(payment(&app, user, second).await.status, PaymentStatus::Wait);
        // The refusal was stored in the batch's commit: its retry replays it.
        let replay = app.execute(user, confirm(second), Some(keyed("b", &confirm(second)))).await;
        assert!(matches!(&replay, Ok(Executed::Replayed(r)) if r.status == 409), "{replay:?}");
        assert_holds(&app.snapshot().await.unwrap());
    });
}

#[test]
fn locked_overdraft_inside_one_batch_pays_exactly_one() {
    overdraft_in_one_batch(batched_locked());
}

#[test]
fn optimistic_overdraft_inside_one_batch_pays_exactly_one() {
    overdraft_in_one_batch(batched_optimistic());
}

/// Two confirms of one payment in one batch: one effect. Under one key the
/// second replays the first's answer; under two keys it is refused.
#[test]
fn duplicate_confirms_inside_one_batch_charge_once() {
    let app = batched_locked();
    let (user, id) = block_on(async {
        let user = user_with(&app, Limits::default(), 1_000).await;
        (user, new_payment(&app, user, 100, 10).await)
    });
    let same_key = run_keyed(&app, user, &[("k", confirm(id)), ("k", confirm(id))]);
    assert!(done(&same_key[0]), "{same_key:?}");
    assert!(matches!(&same_key[1], Ok(Executed::Replayed(r)) if r.status == 201), "{same_key:?}");

    let other = block_on(new_payment(&app, user, 100, 10));
    let two_keys = run_keyed(&app, user, &[("x", confirm(other)), ("y", confirm(other))]);
    assert!(done(&two_keys[0]), "{two_keys:?}");
    let already = Err(Error::Transition(InvalidTransition { from: PaymentStatus::Done, event: PaymentEvent::Confirm }));
    assert_eq!(two_keys[1], already);
    block_on(async {
        assert_eq!(balance(&app, user).await, Money::new(1_000 - 2 * (100 - 10)));
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Eight top-ups of one wallet in one batch: one commit, nothing lost, and
/// each ledger line carries the balance after it (the coalesced wallet
/// write is the last of eight decisions, each on the one before).
#[test]
fn top_ups_of_one_wallet_share_one_commit_and_lose_nothing() {
    let app = batched_locked();
    let user = block_on(user_with(&app, Limits::default(), 0));
    let commits = count_commits(app.store(), Vec::new());
    let requests: Vec<(String, Command)> =
        (1..=8).map(|i| (format!("t{i}"), Command::TopUp { amount: amount(i * 10) })).collect();
    let requests: Vec<(&str, Command)> = requests.iter().map(|(k, c)| (k.as_str(), c.clone())).collect();
    let results = run_keyed(&app, user, &requests);
    assert_eq!(commits.load(Ordering::SeqCst), 1);
    let balances: Vec<i64> = results
        .iter()
        .map(|r| match r {
            Ok(Executed::Fresh(Outcome::TopUp { balance, .. })) => balance.minor_units(),
            other => panic!("top-up: {other:?}"),
        })
        .collect();
    assert_eq!(balances, vec![10, 30, 60, 100, 150, 210, 280, 360]);
    block_on(async {
        assert_eq!(balance(&app, user).await, Money::new(360));
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Two top-ups (10 and 20) of one user share a batch whose commit meets
/// `fault`: every first answer passes `first`, the balance is then
/// `between`, every retry under the same keys passes `retry`, and 30 is
/// booked exactly once.
fn two_top_ups_through(fault: CommitFault, first: fn(&Result) -> bool, between: i64, retry: fn(&Result) -> bool) {
    let app = batched_locked();
    let user = block_on(user_with(&app, Limits::default(), 0));
    count_commits(app.store(), vec![fault]);
    let requests = [("a", Command::TopUp { amount: amount(10) }), ("b", Command::TopUp { amount: amount(20) })];
    let results = run_keyed(&app, user, &requests);
    assert!(results.iter().all(first), "{results:?}");
    assert_eq!(block_on(balance(&app, user)), Money::new(between));
    let retries = run_keyed(&app, user, &requests);
    assert!(retries.iter().all(retry), "{retries:?}");
    block_on(async {
        assert_eq!(balance(&app, user).await, Money::new(30));
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// A batch whose commit outcome is unknown answers every request 503; the
/// commit did happen, so each retry under its key replays, and nothing is
/// booked twice.
#[test]
fn ambiguous_batch_commit_answers_all_503_and_retries_replay() {
    two_top_ups_through(
        CommitFault::Ambiguous,
        |r| *r == Err(Error::Store(StoreError::Ambiguous)),
        30,
        |r| matches!(r, Ok(Executed::Replayed(s)) if s.status == 201),
    );
}

/// A batch whose commit is lost answers no success: every request gets an
/// error, and each retry runs once.
#[test]
fn lost_batch_commit_acknowledges_nothing_and_retries_run_once() {
    two_top_ups_through(
        CommitFault::Lost,
        |r| matches!(r, Err(Error::Store(StoreError::Unavailable(_)))),
        0,
        |r| matches!(r, Ok(Executed::Fresh(_))),
    );
}

fn cancelled_order(result: &Result) -> bool {
    matches!(result, Ok(Executed::Fresh(Outcome::Order(o))) if o.status == OrderStatus::Cancelled)
}

/// An order's cancel in one batch with a confirm of another payment is
/// answered as it would be alone: cancelled (and refunded, when paid), never
/// 404. Each request runs with its own lock set; a cancel reads its order's
/// payment from what its peek locked, and the batch's union holds the other
/// request's payment too (session 13's adversarial pass: the cancel took the
/// other payment for its order's, and stored 404 under its key).
fn an_order_cancel_beside_another_confirm_is_answered_as_alone<L: LockManager>(
    app: Arc<Tally<MemStore, L, ManualClock>>,
) {
    let (user, product, unpaid, other) = block_on(async {
        let user = user_with(&app, Limits::default(), 1_000).await;
        let product = new_product(&app, 100, 5).await;
        let other = new_payment(&app, user, 50, 5).await;
        let unpaid = new_order(&app, user, order_of(&[(product, 1)], &[], None)).await;
        (user, product, unpaid, other)
    });
    let cancel = |order| Command::CancelOrder { order };
    let results = run_keyed(&app, user, &[("c1", cancel(unpaid.id)), ("p1", confirm(other))]);
    assert!(cancelled_order(&results[0]), "the unpaid order's cancel: {results:?}");
    assert!(done(&results[1]), "{results:?}");

    // A paid order, its payment created after the other one (so the other
    // sorts first in the batch's lock set).
    let (paid, second) = block_on(async {
        let second = new_payment(&app, user, 50, 5).await;
        let paid = new_order(&app, user, order_of(&[(product, 2)], &[], None)).await;
        let pays = order_payment(&app, user, paid.id).await;
        assert!(second < pays, "ids grow");
        assert!(done(&app.execute(user, confirm(pays), None).await), "the order is paid");
        (paid, second)
    });
    let results = run_keyed(&app, user, &[("c2", cancel(paid.id)), ("p2", confirm(second))]);
    assert!(cancelled_order(&results[0]), "the paid order's cancel: {results:?}");
    assert!(done(&results[1]), "{results:?}");
    block_on(async {
        // Two payments of 50 (payback 5 each) stand; the order's 200 came back.
        assert_eq!(balance(&app, user).await, Money::new(1_000 - 2 * (50 - 5)));
        assert_eq!(stock(&app, product).await, 5, "both orders gave their units back");
        let replay = app.execute(user, cancel(paid.id), Some(keyed("c2", &cancel(paid.id)))).await;
        assert!(matches!(&replay, Ok(Executed::Replayed(r)) if (200..300).contains(&r.status)), "{replay:?}");
        assert_holds(&app.snapshot().await.unwrap());
    });
}

#[test]
fn locked_order_cancel_beside_another_confirm_is_answered_as_alone() {
    an_order_cancel_beside_another_confirm_is_answered_as_alone(batched_locked());
}

#[test]
fn optimistic_order_cancel_beside_another_confirm_is_answered_as_alone() {
    an_order_cancel_beside_another_confirm_is_answered_as_alone(batched_optimistic());
}
