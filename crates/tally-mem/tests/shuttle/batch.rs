//! Group commit under shuttle: keyed requests on a `Tally` with batching on,
//! so whichever requests are queued when a leader takes its batch share one
//! transaction. Shuttle chooses who leads, who lands in which batch and how
//! batches interleave with requests running alone (the sweeper). Every
//! scenario asserts the exact outcome of every schedule.

use std::sync::Mutex;

use tally_core::app::Config;
use tally_core::ids::SeqIds;
use tally_core::store::NoLocks;
use tally_mem::{CommitFault, Concurrency, MemLocks};

use super::*;

type Batched<L> = Arc<Tally<MemStore, L, ManualClock>>;

fn batched_config(batch_max: usize) -> Config {
    Config { batch_max, attempts_max: 16, ..config() }
}

/// The locked in-memory backend with group commit on.
pub(super) fn batched_locked() -> Batched<MemLocks<ManualClock>> {
    let clock = ManualClock::new(START);
    let locks = MemLocks::new(clock.clone(), tally_lock::Config::default());
    let store = MemStore::new(tally_mem::Concurrency::Locked);
    Arc::new(Tally::new(store, locks, clock, Arc::new(SeqIds::new(1)), batched_config(64)))
}

/// Batches of at most two: three requests need two batches at least.
pub(super) fn batched_locked_pairs() -> Batched<MemLocks<ManualClock>> {
    let clock = ManualClock::new(START);
    let locks = MemLocks::new(clock.clone(), tally_lock::Config::default());
    let store = MemStore::new(Concurrency::Locked);
    Arc::new(Tally::new(store, locks, clock, Arc::new(SeqIds::new(1)), batched_config(2)))
}

/// Overlapping commits: batches of at most two in one queue, and a batch
/// runs its statements while the previous one's commit is in flight.
fn overlapping_config() -> Config {
    Config { batch_shards: 1, batch_overlap: 1, ..batched_config(2) }
}

/// The locked in-memory backend with overlapping batches.
pub(super) fn batched_locked_overlapping() -> Batched<MemLocks<ManualClock>> {
    let clock = ManualClock::new(START);
    let locks = MemLocks::new(clock.clone(), tally_lock::Config::default());
    let store = MemStore::new(Concurrency::Locked);
    Arc::new(Tally::new(store, locks, clock, Arc::new(SeqIds::new(1)), overlapping_config()))
}

/// The optimistic in-memory backend with overlapping batches.
pub(super) fn batched_optimistic_overlapping() -> Batched<NoLocks> {
    let clock = ManualClock::new(START);
    let store = MemStore::new(Concurrency::Optimistic);
    Arc::new(Tally::new(store, NoLocks, clock, Arc::new(SeqIds::new(1)), overlapping_config()))
}

/// The optimistic in-memory backend (version checks) with group commit on.
pub(super) fn batched_optimistic() -> Batched<NoLocks> {
    let clock = ManualClock::new(START);
    let store = MemStore::new(Concurrency::Optimistic);
    Arc::new(Tally::new(store, NoLocks, clock, Arc::new(SeqIds::new(1)), batched_config(64)))
}

fn keyed_run<L: LockManager>(app: &Batched<L>, user: UserId, key: &str, command: Command) -> Result<Executed, Error> {
    block_on(app.execute(user, command.clone(), Some(keyed(key, &command))))
}

/// THREADS confirms of one payment under distinct keys, batched however
/// shuttle schedules them: exactly one charge; every other confirm is
/// refused `invalid_state`, and the wallet is exact.
pub(super) fn duplicate_confirms_batched<L: LockManager>(app: Batched<L>) {
    let (user, id) = block_on(user_with_payment(&app, 1_000, 100, 10));
    let results = race(
        &app,
        (0..THREADS).map(|i| move |app: Batched<L>| keyed_run(&app, user, &format!("c{i}"), confirm(id))).collect(),
    );
    assert_eq!(results.iter().filter(|r| is_done(r)).count(), 1, "exactly one confirm succeeds: {results:?}");
    let already = Err(Error::Transition(InvalidTransition { from: PaymentStatus::Done, event: PaymentEvent::Confirm }));
    assert_eq!(results.iter().filter(|r| **r == already).count(), THREADS - 1, "{results:?}");
    block_on(ends_with_balance(&app, user, 1_000 - 100 + 10));
}

/// A user with `balance` and a wallet payment of `amount` (payback `payback`).
async fn user_with_payment<L: LockManager>(
    app: &Batched<L>,
    balance: i64,
    amount: i64,
    payback: i64,
) -> (UserId, PaymentId) {
    let user = user_with(app, Limits::default(), balance).await;
    (user, new_payment(app, user, amount, payback).await)
}

/// Invariant 3, exactly: `user`'s balance is `expected`, and every
/// invariant holds over the whole store.
async fn ends_with_balance<L: LockManager>(app: &Batched<L>, user: UserId, expected: i64) {
    assert_eq!(balance(app, user).await, Money::new(expected));
    assert_holds(&app.snapshot().await.unwrap());
}

/// Two confirms of one payment under ONE key: one effect; the other replays
/// the first's answer, or is told the key is in flight.
pub(super) fn same_key_confirms_batched<L: LockManager>(app: Batched<L>) {
    let (user, id) = block_on(user_with_payment(&app, 1_000, 100, 10));
    let results =
        race(&app, (0..2).map(|_| move |app: Batched<L>| keyed_run(&app, user, "same", confirm(id))).collect());
    assert_eq!(results.iter().filter(|r| is_done(r)).count(), 1, "one effect: {results:?}");
    let other = results.iter().find(|r| !is_done(r)).expect("two results");
    assert!(
        matches!(other, Ok(Executed::Replayed(r)) if r.status == 201) || *other == Err(Error::IdempotencyKeyInUse),
        "{other:?}"
    );
    block_on(ends_with_balance(&app, user, 1_000 - 100 + 10));
}

/// THREADS payments of 60 on a balance of 100, batched however shuttle
/// schedules them: whatever shares a batch is decided on the balance the
/// previous request in it left, so exactly one pays (the `batch_stale_balance`
/// mutant pays several).
pub(super) fn overdraft_batched<L: LockManager>(app: Batched<L>) {
    let (user, ids) = block_on(user_with_payments(&app, (Limits::default(), 100), THREADS, (60, 6)));
    let results = race(
        &app,
        ids.into_iter()
            .enumerate()
            .map(|(i, id)| move |app: Batched<L>| keyed_run(&app, user, &format!("p{i}"), confirm(id)))
            .collect(),
    );
    assert_eq!(results.iter().filter(|r| is_done(r)).count(), 1, "exactly one pays: {results:?}");
    let refused = Err(Error::Wallet(WalletError::InsufficientBalance));
    assert_eq!(results.iter().filter(|r| **r == refused).count(), THREADS - 1, "{results:?}");
    block_on(ends_with_balance(&app, user, 100 - 60 + 6));
}

/// Two top-ups and a payment on one wallet, in batches of at most two (so
/// in two batches at least): the payment of 150 is decided after both
/// top-ups (paid) or before one of them (refused, nothing moved), and the
/// balance is exactly what that order gives.
pub(super) fn two_batches_one_wallet<L: LockManager>(app: Batched<L>) {
    let (user, pay) = block_on(user_with_payment(&app, 0, 150, 15));
    let results = race(
        &app,
        vec![
            Box::new(move |app: Batched<L>| keyed_run(&app, user, "t1", Command::TopUp { amount: amount(100) }))
                as Box<dyn FnOnce(Batched<L>) -> Result<Executed, Error> + Send>,
            Box::new(move |app: Batched<L>| keyed_run(&app, user, "t2", Command::TopUp { amount: amount(100) })),
            Box::new(move |app: Batched<L>| keyed_run(&app, user, "pay", confirm(pay))),
        ],
    );
    assert!(results[..2].iter().all(|r| matches!(r, Ok(Executed::Fresh(_)))), "top-ups: {results:?}");
    block_on(async {
        if is_done(&results[2]) {
            assert_eq!(balance(&app, user).await, Money::new(200 - 150 + 15));
        } else {
            assert_eq!(results[2], Err(Error::Wallet(WalletError::InsufficientBalance)));
            assert_eq!(balance(&app, user).await, Money::new(200));
            assert_eq!(payment(&app, user, pay).await.status, PaymentStatus::Wait);
        }
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// A batched top-up and a top-up that runs alone (no key, so no queue) on
/// one wallet, with overlapping commits: the batch holds its locks to its
/// commit, so the request alone reads the wallet only before or after it,
/// and neither top-up is lost.
pub(super) fn batch_and_alone_one_wallet<L: LockManager>(app: Batched<L>) {
    let user = block_on(user_with(&app, Limits::default(), 0));
    let results = race(
        &app,
        vec![
            Box::new(move |app: Batched<L>| keyed_run(&app, user, "batched", Command::TopUp { amount: amount(100) }))
                as Box<dyn FnOnce(Batched<L>) -> Result<Executed, Error> + Send>,
            Box::new(move |app: Batched<L>| block_on(app.execute(user, Command::TopUp { amount: amount(100) }, None))),
        ],
    );
    assert!(results.iter().all(|r| matches!(r, Ok(Executed::Fresh(_)))), "both top-ups land: {results:?}");
    block_on(async {
        assert_eq!(balance(&app, user).await, Money::new(200), "no top-up lost: {results:?}");
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// A batch (an order's payment confirm, and another user's top-up) racing
/// the expiry sweeper across the order's TTL: the order ends paid or
/// expired, never both, with stock and money to match; the top-up always
/// lands.
pub(super) fn batch_vs_sweeper<L: LockManager>(app: Batched<L>) {
    let ((user, product, order, pay), other) = block_on(async {
        (inventory::pending_order_payment(&app, 300, 1).await, user_with(&app, Limits::default(), 0).await)
    });
    let confirming = {
        let app = app.clone();
        thread::spawn(move || keyed_run(&app, user, "pay", confirm(pay)))
    };
    let topping = {
        let app = app.clone();
        thread::spawn(move || keyed_run(&app, other, "top", Command::TopUp { amount: amount(50) }))
    };
    let sweeping = {
        let app = app.clone();
        thread::spawn(move || {
            app.clock().set(order.expires_at);
            block_on(app.expire_orders(16))
        })
    };
    let confirmed = confirming.join().unwrap();
    assert!(matches!(topping.join().unwrap(), Ok(Executed::Fresh(_))));
    let swept = sweeping.join().unwrap().expect("sweep");
    block_on(async {
        inventory::paid_or_expired_once(&app, (user, product, &order, pay), &confirmed, swept).await;
        assert_eq!(balance(&app, other).await, Money::new(50));
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// THREADS top-ups while the first commit after setup is lost: whatever was
/// answered 2xx is durable, and nothing else moved (the
/// `batch_answers_before_commit` mutant acknowledges the lost batch).
pub(super) fn acknowledged_means_committed<L: LockManager>(app: Batched<L>) {
    let user = block_on(user_with(&app, Limits::default(), 0));
    let faults = Mutex::new(vec![CommitFault::Lost].into_iter());
    app.store().set_commit_faults(Some(Box::new(move || faults.lock().unwrap().next().unwrap_or(CommitFault::None))));
    let results = race(
        &app,
        (1..=THREADS as i64)
            .map(|i| {
                move |app: Batched<L>| keyed_run(&app, user, &format!("t{i}"), Command::TopUp { amount: amount(i) })
            })
            .collect(),
    );
    let acknowledged: i64 = results
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Ok(Executed::Fresh(_))))
        .map(|(i, _)| i as i64 + 1)
        .sum();
    assert!(results.iter().any(Result::is_err), "the lost commit answered somebody an error: {results:?}");
    block_on(async {
        assert_eq!(balance(&app, user).await, Money::new(acknowledged), "{results:?}");
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Two users, each a top-up of 200 and a payment of 150, in batches of at
/// most two whose commits may overlap: each payment is decided after its own
/// wallet's top-up (paid, 15 paid back) or before it (refused, nothing
/// moved), never on a balance another batch has not committed, and both
/// wallets end exact.
pub(super) fn overlapping_batches_two_wallets<L: LockManager>(app: Batched<L>) {
    let ((a, pay_a), (b, pay_b)) =
        block_on(async { (user_with_payment(&app, 0, 150, 15).await, user_with_payment(&app, 0, 150, 15).await) });
    type Request<L> = Box<dyn FnOnce(Batched<L>) -> Result<Executed, Error> + Send>;
    let top_up = |user: UserId, key: &'static str| -> Request<L> {
        Box::new(move |app: Batched<L>| keyed_run(&app, user, key, Command::TopUp { amount: amount(200) }))
    };
    let pay = |user: UserId, key: &'static str, id: PaymentId| -> Request<L> {
        Box::new(move |app: Batched<L>| keyed_run(&app, user, key, confirm(id)))
    };
    let results = race(&app, vec![top_up(a, "ta"), pay(a, "pa", pay_a), top_up(b, "tb"), pay(b, "pb", pay_b)]);
    block_on(async {
        for (user, id, top_up, paid) in [(a, pay_a, &results[0], &results[1]), (b, pay_b, &results[2], &results[3])] {
            assert!(matches!(top_up, Ok(Executed::Fresh(_))), "top-up: {results:?}");
            if is_done(paid) {
                assert_eq!(balance(&app, user).await, Money::new(200 - 150 + 15), "{results:?}");
            } else {
                assert_eq!(*paid, Err(Error::Wallet(WalletError::InsufficientBalance)), "{results:?}");
                assert_eq!(balance(&app, user).await, Money::new(200), "{results:?}");
                assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Wait);
            }
        }
        assert_holds(&app.snapshot().await.unwrap());
    });
}
