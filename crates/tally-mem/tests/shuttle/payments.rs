//! The payment scenarios on the wallet: duplicate confirms, concurrent
//! top-ups, a balance or a daily limit that covers only some of the racing
//! payments, a confirm racing a cancel, and one idempotency key sent N times.

use super::*;

/// Seed 001: N duplicate confirms of one payment → exactly one charge; every
/// other confirm is refused as `invalid_state` (the payment is already done).
pub(super) fn duplicate_confirms<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
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
    let (user, ids) = block_on(user_with_payments(app, (limits, balance), THREADS, (100, 10)));
    let requests = ids
        .into_iter()
        .map(|id| move |app: Arc<Tally<MemStore, L, ManualClock>>| block_on(app.execute(user, confirm(id), None)))
        .collect();
    (user, race(app, requests))
}

/// Seed 002's point charge: N concurrent top-ups → none lost.
pub(super) fn concurrent_top_ups<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
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
pub(super) fn k_of_n_payments<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
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
pub(super) fn daily_limit<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
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
pub(super) fn payment_vs_cancel<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
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
pub(super) fn idempotent_top_ups<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
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
