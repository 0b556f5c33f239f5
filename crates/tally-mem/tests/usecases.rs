//! The use cases, one request at a time, on the in-memory backend: what each
//! does, what each refuses, and that a refusal changes nothing.

mod common;

use std::time::Duration;

use common::*;
use tally_core::Error;
use tally_core::app::{Command, Executed, Outcome};
use tally_core::check::{Invariant, assert_holds, check};
use tally_core::ids::{PaymentId, UserId};
use tally_core::ledger::TransferKind;
use tally_core::money::Money;
use tally_core::payment::{InvalidTransition, Method, PaymentEvent, PaymentStatus};
use tally_core::store::{Store, StoreError, Tx};
use tally_core::time::Clock;
use tally_core::wallet::{LimitKind, Limits, WalletError};
use tally_mem::{CommitFault, HookFuture, MemGateway, MemStore, Statement, TxHook};

/// A wallet confirm of `payment`.
fn confirm(payment: PaymentId) -> Command {
    Command::ConfirmPayment { payment, payment_key: None }
}

/// A gateway confirm of `payment` with `key`.
fn confirm_with(payment: PaymentId, key: &str) -> Command {
    Command::ConfirmPayment { payment, payment_key: Some(key.into()) }
}

/// The invariant checker passes on the store as it is now.
async fn holds<L: tally_core::store::LockManager, G: tally_core::gateway::Gateway>(
    app: &tally_core::app::Tally<MemStore, L, tally_core::time::ManualClock, G>,
) {
    assert_holds(&app.snapshot().await.unwrap());
}

/// The `nth` commit from now on gets `fault`; the others commit cleanly.
fn fault_nth_commit(store: &MemStore, nth: u32, fault: CommitFault) {
    let mut commits = 0;
    store.set_commit_faults(Some(Box::new(move || {
        commits += 1;
        if commits == nth { fault } else { CommitFault::None }
    })));
}

/// Counts the commits from now on (each commits cleanly); the returned
/// function reads the count.
fn count_commits(store: &MemStore) -> impl Fn() -> u32 + use<> {
    let commits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = commits.clone();
    store.set_commit_faults(Some(Box::new(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        CommitFault::None
    })));
    move || commits.load(std::sync::atomic::Ordering::SeqCst)
}

/// Executes `command` for `user` under the idempotency key `key`.
async fn execute_keyed(app: &LockedTally, user: UserId, key: &str, command: &Command) -> Result<Executed, Error> {
    app.execute(user, command.clone(), Some(keyed(key, command))).await
}

/// With commit faults off, the keyed confirm `pay` under `key` replays its
/// stored answer (`status`), and the wallet (1 000, with `new_payment`'s 400
/// at 40 payback) was charged and paid back exactly once.
async fn retry_replays_and_charged_once(app: &LockedTally, user: UserId, key: &str, pay: &Command, status: u16) {
    app.store().set_commit_faults(None);
    let retry = execute_keyed(app, user, key, pay).await;
    assert!(matches!(retry, Ok(Executed::Replayed(ref r)) if r.status == status), "{retry:?}");
    assert_eq!(balance(app, user).await, Money::new(600 + 40), "charged once, paid back once");
    holds(app).await;
}

/// A user with an empty wallet and a gateway payment of 500 (payback 50),
/// not confirmed yet.
fn gateway_payment() -> (std::sync::Arc<GatewayTally>, MemGateway, UserId, PaymentId) {
    let (app, gateway) = with_gateway();
    let user = block_on(user_with(&app, Limits::default(), 0));
    let id = block_on(create_payment(&app, user, (500, 50), Method::Gateway));
    (app, gateway, user, id)
}

/// Runs `test` on a fresh locked app, with a user (default limits) whose
/// wallet holds `balance`.
fn with_user<F: Future<Output = ()>>(balance: i64, test: impl FnOnce(std::sync::Arc<LockedTally>, UserId) -> F) {
    let app = locked();
    block_on(async {
        let user = user_with(&app, Limits::default(), balance).await;
        test(app, user).await;
    });
}

/// A minute later, the completer's pass over what is stuck for 60 s.
fn complete_a_minute_later(app: &GatewayTally) -> Result<usize, Error> {
    app.clock().advance(Duration::from_secs(61));
    block_on(app.resolve_stuck(Duration::from_secs(60), 16))
}

/// The completer at a watched payment's backed-off turn: a pass the moment
/// before claims nothing, the pass at it claims the payment. Returns how
/// long after now the turn came, and that pass's result.
fn complete_at_its_turn(app: &GatewayTally, user: UserId, id: PaymentId) -> (i64, Result<usize, Error>) {
    let threshold = Duration::from_secs(60);
    let turn = block_on(payment(app, user, id)).gateway.expect("a gateway payment").started_at;
    let due = turn.plus(threshold).millis() - app.clock().now().millis();
    app.clock().advance(Duration::from_millis(u64::try_from(due).expect("a turn ahead")));
    assert_eq!(block_on(app.resolve_stuck(threshold, 16)), Ok(0), "not yet due");
    app.clock().advance(Duration::from_millis(1));
    (due, block_on(app.resolve_stuck(threshold, 16)))
}

#[test]
fn top_up_books_one_transfer_with_the_balance_after() {
    with_user(0, |app, user| async move {
        let Ok(Executed::Fresh(Outcome::TopUp { transfer, balance })) =
            app.execute(user, Command::TopUp { amount: amount(150) }, None).await
        else {
            panic!("top up failed")
        };
        assert_eq!(balance, Money::new(150));
        assert_eq!(transfer.kind, TransferKind::TopUp);
        assert_eq!(transfer.wallet.unwrap().balance_after, Money::new(150));
        assert_eq!(transfer.wallet.unwrap().seq, 1);
        holds(&app).await;
    });
}

#[test]
fn payment_lifecycle_with_payback_moves_exact_money() {
    with_user(1_000, |app, user| async move {
        let id = new_payment(&app, user, 300, 30).await;
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Wait);
        assert_eq!(balance(&app, user).await, Money::new(1_000), "creating a payment moves nothing");

        app.execute(user, confirm(id), None).await.unwrap();
        assert_eq!(balance(&app, user).await, Money::new(1_000 - 300 + 30));
        app.execute(user, Command::CancelPayment { payment: id }, None).await.unwrap();
        assert_eq!(balance(&app, user).await, Money::new(1_000));
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Cancelled);

        let page = app.ledger(user, 0, 100).await.unwrap();
        let kinds: Vec<_> = page.entries.iter().map(|t| t.kind).collect();
        use TransferKind::*;
        assert_eq!(kinds, [TopUp, Payment, Payback, PaybackReversal, Refund]);
        let after: Vec<_> = page.entries.iter().map(|t| t.wallet.unwrap().balance_after.minor_units()).collect();
        assert_eq!(after, [1_000, 700, 730, 700, 1_000]);
        assert_eq!(page.next, None);
        holds(&app).await;
    });
}

/// Invariant 3 (never above `max_balance`) without refusing a refund the
/// ceiling has room for (session 14's adversarial pass): a wallet at its
/// ceiling cancels a paid-back payment. Its final balance is the ceiling
/// itself, and the reversal is booked before the refund, so no ledger line
/// passes the ceiling. A wallet that spent its payback gets the refund first,
/// so no line goes below zero; when even that would pass the ceiling, the
/// cancel is refused and nothing moves.
#[test]
fn a_refund_at_the_ceiling_reverses_the_payback_first() {
    let app = locked();
    block_on(async {
        let ceiling = Limits { max_balance: Some(Money::new(1_000)), ..Limits::default() };
        let user = user_with(&app, ceiling, 1_000).await;
        let id = new_payment(&app, user, 100, 10).await;
        app.execute(user, confirm(id), None).await.unwrap();
        assert_eq!(balance(&app, user).await, Money::new(910));
        let cancelled = app.execute(user, Command::CancelPayment { payment: id }, None).await;
        assert!(
            matches!(cancelled, Ok(Executed::Fresh(Outcome::Payment(ref p))) if p.status == PaymentStatus::Cancelled)
        );
        assert_eq!(balance(&app, user).await, Money::new(1_000), "back at the ceiling, not past it");
        let page = app.ledger(user, 0, 100).await.unwrap();
        let lines: Vec<_> =
            page.entries.iter().map(|t| (t.kind, t.wallet.unwrap().balance_after.minor_units())).collect();
        use TransferKind::*;
        assert_eq!(lines, [(TopUp, 1_000), (Payment, 900), (Payback, 910), (PaybackReversal, 900), (Refund, 1_000)]);
        holds(&app).await;

        // The payback spent: 1000 - 1000 + 100 - 95 + 9 = 14 holds less than
        // the payback of 100, so the refund would come first, and 14 + 1000
        // passes the ceiling: refused, nothing moves (its net, 914, would fit;
        // a ledger line past the ceiling is what the order avoids).
        let spender = user_with(&app, ceiling, 1_000).await;
        let paid = new_payment(&app, spender, 1_000, 100).await;
        app.execute(spender, confirm(paid), None).await.unwrap();
        let spent = new_payment(&app, spender, 95, 9).await;
        app.execute(spender, confirm(spent), None).await.unwrap();
        assert_eq!(balance(&app, spender).await, Money::new(14));
        let before = app.snapshot().await.unwrap();
        let refused = app.execute(spender, Command::CancelPayment { payment: paid }, None).await;
        assert_eq!(refused, Err(Error::Wallet(WalletError::MaxBalanceExceeded)));
        assert_eq!(app.snapshot().await.unwrap(), before, "a refusal changes nothing");
        // Below the ceiling by enough: refund first, then the reversal.
        let small = new_payment(&app, spender, 10, 1).await;
        app.execute(spender, confirm(small), None).await.unwrap();
        assert_eq!(balance(&app, spender).await, Money::new(5));
        app.execute(spender, Command::CancelPayment { payment: spent }, None).await.unwrap();
        let page = app.ledger(spender, 0, 100).await.unwrap();
        let last: Vec<_> = page
            .entries
            .iter()
            .rev()
            .take(2)
            .map(|t| (t.kind, t.wallet.unwrap().balance_after.minor_units()))
            .collect();
        assert_eq!(last, [(PaybackReversal, 91), (Refund, 100)], "newest first: +95 = 100, then -9 = 91");
        holds(&app).await;
    });
}

/// README: seats without the caller's active token are 403 `forbidden`,
/// not stored. A caller whose token is still waiting orders a seat another
/// order holds: 403, whatever the seat's state, and the retry under the same
/// key is judged again, not replayed (session 14: the held seat was answered
/// 409 `seat_unavailable` and stored under the key).
#[test]
fn a_seat_order_without_an_active_token_is_forbidden_and_not_stored() {
    let app = locked();
    block_on(async {
        let (event, seats) = new_event(&app, 1, 2).await;
        let holder = user_with(&app, Limits::default(), 0).await;
        let token = active_token(&app, holder, event).await;
        new_order(&app, holder, order_of(&[], &[seats[0]], Some(token))).await;
        let waiting = user_with(&app, Limits::default(), 0).await;
        let theirs = join(&app, waiting, event).await;
        assert_eq!(theirs.status, tally_core::queue::TokenStatus::Waiting);
        let before = app.snapshot().await.unwrap();
        for (seat, token) in [(seats[0], theirs.token.id), (seats[0], token), (seats[1], theirs.token.id)] {
            let order = order_of(&[], &[seat], Some(token));
            for attempt in ["first", "retry"] {
                let answer = execute_keyed(&app, waiting, &format!("seat-{seat:?}-{token:?}"), &order).await;
                assert!(matches!(answer, Err(Error::Forbidden(_))), "{attempt}: {answer:?}");
            }
        }
        assert_eq!(app.snapshot().await.unwrap(), before, "nothing moved, nothing stored");
    });
}

/// Invariant 2 (a replay returns the first response, errors included): a
/// confirm whose body does not fit its payment's method (no `payment_key`
/// for a gateway payment, one for a wallet payment) is refused 409
/// `invalid_state` and stored like any refusal. Its retry is a replay, and
/// the same key with a corrected body is 422, not run (session 14: it was
/// not stored, so the corrected body under the key ran and charged).
#[test]
fn a_confirm_that_does_not_fit_its_payments_method_is_a_stored_refusal() {
    let (app, gateway) = with_gateway();
    block_on(async {
        let (user, card) = user_with_gateway_payment(&app).await;
        let wallet_payment = new_payment(&app, user, 100, 10).await;
        let keyed_at = |key: &'static str, command: Command| {
            let app = app.clone();
            async move { app.execute(user, command.clone(), Some(keyed(key, &command))).await }
        };
        let cases = [
            ("card-without-key", confirm(card), confirm_with(card, "pk-fits")),
            ("wallet-with-key", confirm_with(wallet_payment, "pk-never"), confirm(wallet_payment)),
        ];
        for (key, misfit, fitting) in cases {
            let first = keyed_at(key, misfit.clone()).await;
            assert!(matches!(first, Err(Error::InvalidState(_))), "{key}: {first:?}");
            let retry = keyed_at(key, misfit).await;
            assert!(matches!(retry, Ok(Executed::Replayed(ref r)) if r.status == 409), "{key}: {retry:?}");
            let corrected = keyed_at(key, fitting).await;
            assert_eq!(corrected, Err(Error::IdempotencyKeyReused), "{key}");
        }
        assert_eq!(gateway.confirms_received("pk-fits"), 0, "nothing charged under the misfit's key");
        assert_eq!(payment(&app, user, card).await.status, PaymentStatus::Wait);
        assert_eq!(payment(&app, user, wallet_payment).await.status, PaymentStatus::Wait);
        holds(&app).await;
    });
}

#[test]
fn ledger_pages_by_cursor() {
    with_user(0, |app, user| async move {
        for i in 1..=5 {
            app.execute(user, Command::TopUp { amount: amount(i) }, None).await.unwrap();
        }
        let first = app.ledger(user, 0, 2).await.unwrap();
        assert_eq!(first.entries.len(), 2);
        assert_eq!(first.next, Some(2));
        let second = app.ledger(user, 2, 2).await.unwrap();
        assert_eq!(second.entries[0].amount, amount(3));
        let last = app.ledger(user, 4, 2).await.unwrap();
        assert_eq!((last.entries.len(), last.next), (1, None));
        assert!(app.ledger(user, 0, 0).await.is_err());
        assert!(app.ledger(user, 0, 101).await.is_err());
    });
}

#[test]
fn refusals_change_nothing() {
    let app = locked();
    block_on(async {
        let limits =
            Limits { per_payment: Some(Money::new(500)), max_balance: Some(Money::new(1_000)), ..Limits::default() };
        let user = user_with(&app, limits, 200).await;
        let id = new_payment(&app, user, 300, 30).await;
        let before = app.snapshot().await.unwrap();

        let refused = app.execute(user, confirm(id), None).await;
        assert_eq!(refused, Err(Error::Wallet(WalletError::InsufficientBalance)));
        let refused = app.execute(user, Command::TopUp { amount: amount(801) }, None).await;
        assert_eq!(refused, Err(Error::Wallet(WalletError::MaxBalanceExceeded)));
        let too_big =
            Command::CreatePayment { amount: amount(501), method: tally_core::payment::Method::Wallet, confirm: false };
        assert_eq!(
            app.execute(user, too_big, None).await,
            Err(Error::Wallet(WalletError::LimitExceeded(LimitKind::PerPayment)))
        );
        let unknown = PaymentId(0xdead);
        assert_eq!(
            app.execute(user, Command::ConfirmPayment { payment: unknown, payment_key: None }, None).await,
            Err(Error::NotFound)
        );

        assert_eq!(app.snapshot().await.unwrap(), before);
    });
}

#[test]
fn another_users_payment_is_not_found() {
    let app = locked();
    block_on(async {
        let owner = user_with(&app, Limits::default(), 100).await;
        let other = user_with(&app, Limits::default(), 100).await;
        let id = new_payment(&app, owner, 50, 5).await;
        assert_eq!(app.payment(other, id).await, Err(Error::NotFound));
        assert_eq!(app.execute(other, confirm(id), None).await, Err(Error::NotFound));
        assert_eq!(app.execute(other, Command::CancelPayment { payment: id }, None).await, Err(Error::NotFound));
        assert_eq!(payment(&app, owner, id).await.status, PaymentStatus::Wait);
    });
}

#[test]
fn second_confirm_and_second_cancel_are_refused() {
    with_user(100, |app, user| async move {
        let id = new_payment(&app, user, 100, 10).await;
        app.execute(user, confirm(id), None).await.unwrap();
        let again = app.execute(user, confirm(id), None).await;
        assert_eq!(
            again,
            Err(Error::Transition(InvalidTransition { from: PaymentStatus::Done, event: PaymentEvent::Confirm }))
        );
        app.execute(user, Command::CancelPayment { payment: id }, None).await.unwrap();
        let again = app.execute(user, Command::CancelPayment { payment: id }, None).await;
        assert_eq!(
            again,
            Err(Error::Transition(InvalidTransition { from: PaymentStatus::Cancelled, event: PaymentEvent::Cancel }))
        );
        assert_eq!(balance(&app, user).await, Money::new(100));
        holds(&app).await;
    });
}

#[test]
fn idempotency_replays_refuses_reuse_and_stores_refusals() {
    with_user(0, |app, user| async move {
        let top_up = Command::TopUp { amount: amount(100) };
        let Ok(Executed::Fresh(first)) = execute_keyed(&app, user, "a", &top_up).await else { panic!() };
        let replay = execute_keyed(&app, user, "a", &top_up).await;
        assert_eq!(replay, Ok(Executed::Replayed(render(&Ok(first)).unwrap())));

        let other = Command::TopUp { amount: amount(101) };
        assert_eq!(execute_keyed(&app, user, "a", &other).await, Err(Error::IdempotencyKeyReused));

        // A business refusal is stored and replayed, even once it would succeed.
        let id = new_payment(&app, user, 500, 50).await;
        let pay = confirm(id);
        let refused = execute_keyed(&app, user, "b", &pay).await;
        assert_eq!(refused, Err(Error::Wallet(WalletError::InsufficientBalance)));
        app.execute(user, Command::TopUp { amount: amount(1_000) }, None).await.unwrap();
        let replay = execute_keyed(&app, user, "b", &pay).await;
        assert_eq!(replay, Ok(Executed::Replayed(render(&refused.map(|_| unreachable!())).unwrap())));
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Wait);

        // Keys are scoped to their user.
        let stranger = user_with(&app, Limits::default(), 0).await;
        assert!(matches!(execute_keyed(&app, stranger, "a", &top_up).await, Ok(Executed::Fresh(_))));

        // After the TTL the key is forgotten.
        app.clock().advance(app.config().idempotency.ttl + Duration::from_secs(1));
        assert!(matches!(execute_keyed(&app, user, "a", &other).await, Ok(Executed::Fresh(_))));
        assert_eq!(balance(&app, user).await, Money::new(100 + 1_000 + 101));
        holds(&app).await;
    });
}

#[test]
fn ambiguous_commit_then_retry_replays_instead_of_charging_twice() {
    with_user(1_000, |app, user| async move {
        let id = new_payment(&app, user, 400, 40).await;
        let pay = confirm(id);
        // The request's one commit (admission, effect and answer) is ambiguous.
        fault_nth_commit(app.store(), 1, CommitFault::Ambiguous);
        let first = execute_keyed(&app, user, "pay-1", &pay).await;
        assert_eq!(first, Err(Error::Store(StoreError::Ambiguous)));
        // The client cannot know; it retries with the same key and gets the
        // answer of the execution that did happen.
        retry_replays_and_charged_once(&app, user, "pay-1", &pay, 201).await;
    });
}

/// Issue 12: admission, effect and the stored answer share one commit, and
/// a replay commits nothing.
#[test]
fn a_keyed_request_commits_once_and_its_replay_never() {
    with_user(1_000, |app, user| async move {
        let id = new_payment(&app, user, 400, 40).await;
        let committed = count_commits(app.store());
        let pay = confirm(id);
        let first = execute_keyed(&app, user, "pay-once", &pay).await;
        assert!(matches!(first, Ok(Executed::Fresh(_))), "{first:?}");
        assert_eq!(committed(), 1, "one commit per keyed request");
        let replay = execute_keyed(&app, user, "pay-once", &pay).await;
        assert!(matches!(replay, Ok(Executed::Replayed(_))), "{replay:?}");
        assert_eq!(committed(), 1, "a replay writes nothing");
        // A refusal is stored under its key: one more commit, for the answer.
        let refused = execute_keyed(&app, user, "pay-twice", &pay).await;
        assert!(matches!(refused, Err(Error::Transition(_))), "{refused:?}");
        assert_eq!(committed(), 2);
        retry_replays_and_charged_once(&app, user, "pay-twice", &pay, 409).await;
    });
}

#[test]
fn a_failed_effect_frees_the_key_for_a_retry() {
    with_user(0, |app, user| async move {
        let top_up = Command::TopUp { amount: amount(5) };
        // The request's one commit is lost before it arrives.
        fault_nth_commit(app.store(), 1, CommitFault::Lost);
        let lost = execute_keyed(&app, user, "k", &top_up).await;
        assert!(matches!(lost, Err(Error::Store(StoreError::Unavailable(_)))), "{lost:?}");
        assert_eq!(balance(&app, user).await, Money::ZERO);
        // Not stored: the key is free, and the retry runs.
        let retry = execute_keyed(&app, user, "k", &top_up).await;
        assert!(matches!(retry, Ok(Executed::Fresh(_))), "{retry:?}");
        assert_eq!(balance(&app, user).await, Money::new(5));
        holds(&app).await;
    });
}

#[test]
fn optimistic_store_refuses_a_stale_write_and_applies_nothing() {
    let app = optimistic();
    block_on(async {
        let user = user_with(&app, Limits::default(), 100).await;
        let store = app.store();
        let mut first = store.begin().await.unwrap();
        let mut second = store.begin().await.unwrap();
        let w1 = first.wallet(user).await.unwrap().unwrap();
        let w2 = second.wallet(user).await.unwrap().unwrap();
        let now = app.clock().now();
        let next1 = w1.apply(tally_core::wallet::Movement::TopUp(amount(1)), now).unwrap();
        let next2 = w2.apply(tally_core::wallet::Movement::TopUp(amount(2)), now).unwrap();
        first.put_wallet(Some(&w1), &next1).await.unwrap();
        second.put_wallet(Some(&w2), &next2).await.unwrap();
        first.commit().await.unwrap();
        assert_eq!(second.commit().await, Err(StoreError::Conflict));
        assert_eq!(balance(&app, user).await, Money::new(101));
    });
}

#[test]
fn store_refuses_a_negative_balance_like_a_check_constraint() {
    with_user(10, |app, user| async move {
        let mut tx = app.store().begin().await.unwrap();
        let wallet = tx.wallet(user).await.unwrap().unwrap();
        let mut broken = wallet.clone();
        broken.balance = Money::new(-1);
        broken.version += 1;
        tx.put_wallet(Some(&wallet), &broken).await.unwrap();
        tx.append_transfers(&[]).await.unwrap();
        assert!(matches!(tx.commit().await, Err(StoreError::Integrity(_))));
        assert_eq!(balance(&app, user).await, Money::new(10));
    });
}

#[test]
fn checker_names_each_broken_invariant() {
    with_user(1_000, |app, user| async move {
        let id = new_payment(&app, user, 100, 10).await;
        let pay = confirm(id);
        execute_keyed(&app, user, "k", &pay).await.unwrap();
        let good = app.snapshot().await.unwrap();
        assert!(check(&good).is_empty());

        let violated = |snapshot| check(&snapshot).into_iter().map(|v| v.invariant).collect::<Vec<_>>();

        // A second charge of the same payment (with consistent wallet rows).
        let mut twice = good.clone();
        let mut charge = twice.transfers.iter().find(|t| t.kind == TransferKind::Payment).unwrap().clone();
        charge.id = tally_core::ids::TransferId(u128::MAX);
        charge.op = tally_core::ids::OpId(u128::MAX);
        twice.transfers.push(charge);
        let found = violated(twice);
        assert!(
            found.contains(&Invariant::ChargedAtMostOnce) && found.contains(&Invariant::OneEffectPerKey),
            "{found:?}"
        );

        // A wallet row that drifted from its ledger (a lost update).
        let mut drifted = good.clone();
        drifted.wallets[0].balance = Money::new(950);
        let found = violated(drifted);
        assert!(
            found.contains(&Invariant::WalletMatchesLedger) && found.contains(&Invariant::MoneyConserved),
            "{found:?}"
        );

        // A payment marked done without its charge.
        let mut uncharged = good.clone();
        uncharged.transfers.retain(|t| t.kind != TransferKind::Payment);
        assert!(violated(uncharged).contains(&Invariant::ChargedAtMostOnce));

        // A daily limit exceeded in the ledger even if the counter says otherwise.
        let mut over = good.clone();
        over.wallets[0].limits.daily = Some(Money::new(99));
        assert_eq!(violated(over), [Invariant::WalletMatchesLedger]);
    });
}

/// Invariant 1 (liveness side): a confirm that never reached the gateway
/// (refused before taking effect) leaves the payment `confirming`; the
/// completer claims it again and again — each claim restarts its turn — but
/// the give-up deadline counts from when the confirm was *sent*, so once it
/// passes, a "not found" lookup fails the payment instead of looking it up
/// forever. Found by the simulation (seed 1).
#[test]
fn completer_claims_do_not_postpone_giving_up_on_a_lost_confirm() {
    let (app, gateway, user, id) = gateway_payment();
    gateway.fail_confirms(1);
    assert_eq!(block_on(app.execute(user, confirm_with(id, "pk-lost"), None)), Err(Error::OutcomePending));
    // Claims every 60 s, as `tally serve` runs the completer; give-up is 120 s.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let _ = complete_a_minute_later(&app);
        statuses.push(block_on(payment(&app, user, id)).status);
    }
    assert_eq!(statuses[0], PaymentStatus::Confirming, "not before the deadline");
    assert_eq!(*statuses.last().unwrap(), PaymentStatus::Failed, "{statuses:?}");
    assert_eq!(gateway.confirms_received("pk-lost"), 1, "the one confirm, never sent again");
    block_on(holds(&app));
}

/// Hole 11 (invariant 1 and the gateway's books): the gateway held a confirm
/// past the give-up and carried it out later. The completer failed the
/// payment (the gateway did not know it), but keeps watching its key: the
/// late charge is refunded to the card, the payment stays `failed`, and our
/// books never took the charge. The confirm was sent once; its key's retry
/// is answered `failed` throughout.
#[test]
fn a_charge_landing_after_the_give_up_is_refunded_to_the_card() {
    let (app, gateway, user, id) = gateway_payment();
    let confirm = confirm_with(id, "pk-late");
    gateway.hold_confirms(1);
    assert_eq!(gateway_keyed(&app, user, "k-late", &confirm), Err(Error::OutcomePending));
    // Give-up is 120 s from the send: the third pass (183 s) fails it.
    for _ in 0..3 {
        let _ = complete_a_minute_later(&app);
    }
    let failed = block_on(payment(&app, user, id));
    assert_eq!((failed.status, failed.watched()), (PaymentStatus::Failed, true), "given up, watched");
    // The retry of the confirm's key is answered with the failed payment,
    // and every later retry with that same answer.
    let Ok(Executed::Fresh(first)) = gateway_keyed(&app, user, "k-late", &confirm) else { panic!("answered") };
    assert!(matches!(&first, Outcome::Payment(p) if p.status == PaymentStatus::Failed), "{first:?}");
    let same_answer = Ok(Executed::Replayed(render(&Ok(first)).unwrap()));
    // Nothing landed yet: the completer looks again and finds nothing new.
    assert_eq!(complete_a_minute_later(&app), Ok(0));
    assert!(block_on(payment(&app, user, id)).watched());
    // The gateway carries the held confirm out, long after the give-up.
    assert_eq!(gateway.land_held(), 1);
    assert_eq!(gateway.charge("pk-late"), Some((500, false)));
    // The watch's next lookup is backed off: the completer claims the
    // payment once its threshold has passed since the backed-off turn, not
    // a moment before.
    let (due, found) = complete_at_its_turn(&app, user, id);
    assert!(due > 61_000, "backed off past the next pass: {due} ms");
    assert_eq!(found, Ok(1), "due: the late charge is found");
    let settled = block_on(payment(&app, user, id));
    assert_eq!((settled.status, settled.watched()), (PaymentStatus::Failed, false));
    assert_eq!(gateway.charge("pk-late"), Some((500, true)), "refunded to the card");
    assert_eq!(gateway.confirms_received("pk-late"), 1, "the one confirm, never sent again");
    assert_eq!(gateway_keyed(&app, user, "k-late", &confirm), same_answer, "the key's one answer: failed");
    let snapshot = block_on(app.snapshot()).unwrap();
    assert!(snapshot.transfers.iter().all(|t| t.payment != Some(id)), "our books never took the late charge");
    assert_eq!(block_on(balance(&app, user)), Money::ZERO, "no payback for a failed payment");
    assert_eq!(snapshot.wallets.iter().find(|w| w.user == user).unwrap().payback_held, Money::ZERO);
    assert_holds(&snapshot);
    // Nothing is left for the completer.
    assert_eq!(complete_a_minute_later(&app), Ok(0));
}

/// Hole 11's cost: a watched payment costs the gateway a handful of lookups
/// over its hour, not one per completer pass. Each lookup is put off as long
/// as the payment has waited since its confirm was sent, up to
/// `WATCH_BACKOFF_MAX`, so a late charge still waits at most that (and a
/// pass) to be found, and the watch still ends soon after its horizon.
#[test]
fn a_watched_payment_is_looked_up_less_often_the_longer_it_is_watched() {
    let (app, gateway, user, id) = gateway_payment();
    gateway.hold_confirms(1);
    assert_eq!(gateway_keyed(&app, user, "k", &confirm_with(id, "pk-held")), Err(Error::OutcomePending));
    let sent = app.clock().now();
    let mut given_up = None;
    let mut lookups_at = Vec::new();
    // A completer pass a minute apart, for well past the hour's watch.
    for _ in 0..100 {
        let before = gateway.lookups_received("pk-held");
        let _ = complete_a_minute_later(&app);
        let now = app.clock().now();
        if gateway.lookups_received("pk-held") > before && given_up.is_some() {
            lookups_at.push(now);
        }
        let current = block_on(payment(&app, user, id));
        if given_up.is_none() && current.watched() {
            given_up = Some(now);
        }
        if given_up.is_some() && !current.watched() {
            break;
        }
    }
    let given_up = given_up.expect("the confirm was given up on");
    let ended = *lookups_at.last().expect("looked up while watched");
    assert!(!block_on(payment(&app, user, id)).watched(), "the watch ended");
    // Without the backoff: one lookup per pass, sixty over the hour.
    assert!(lookups_at.len() <= 8, "{} lookups while watched: {lookups_at:?}", lookups_at.len());
    let pass = Duration::from_secs(61);
    let slack = tally_core::payment::WATCH_BACKOFF_MAX + Duration::from_secs(60) + pass;
    let mut previous = given_up;
    for at in &lookups_at {
        assert!(at.millis() - previous.millis() <= i64::try_from(slack.as_millis()).unwrap(), "{lookups_at:?}");
        previous = *at;
    }
    let horizon = given_up.plus(Duration::from_secs(60 * 60));
    assert!(ended >= horizon && ended <= horizon.plus(slack), "ended at {ended:?}, horizon {horizon:?}");
    assert!(given_up.millis() - sent.millis() >= 120_000, "the give-up waited its deadline");
    assert_eq!(gateway.confirms_received("pk-held"), 1);
    block_on(holds(&app));
}

/// Hole 11's bound: a given-up payment is watched until its horizon (an
/// hour by default), then the completer stops looking it up. A charge under
/// its key for another order ends the watch at its next lookup: ours can no
/// longer land.
#[test]
fn the_watch_of_a_given_up_confirm_ends_at_its_horizon_or_when_the_key_is_taken() {
    for taken in [false, true] {
        let (app, gateway, user, id) = gateway_payment();
        gateway.hold_confirms(1);
        assert_eq!(gateway_keyed(&app, user, "k", &confirm_with(id, "pk-held")), Err(Error::OutcomePending));
        for _ in 0..3 {
            let _ = complete_a_minute_later(&app);
        }
        assert!(block_on(payment(&app, user, id)).watched());
        if taken {
            gateway.charge_elsewhere("pk-held", "other-merchant-order", 500);
            // Found at the watch's next (backed-off) lookup.
            assert_eq!(complete_at_its_turn(&app, user, id).1, Ok(1), "taken");
        } else {
            app.clock().advance(Duration::from_secs(60 * 60));
            assert_eq!(complete_a_minute_later(&app), Ok(1), "past the horizon");
        }
        let settled = block_on(payment(&app, user, id));
        assert_eq!((settled.status, settled.watched()), (PaymentStatus::Failed, false), "taken: {taken}");
        assert_eq!(complete_a_minute_later(&app), Ok(0), "no longer looked up");
        if taken {
            assert_eq!(
                gateway.charge("pk-held"),
                Some((500, false)),
                "another merchant's charge is not ours to refund"
            );
        }
        block_on(holds(&app));
    }
}

/// Hole 5 (invariant 1 and the gateway's books): the gateway charged our
/// payment another amount. The payment fails with its refund owed, durably
/// (`refunding`); a refund whose answer is lost stays owed until the
/// completer gets it through, and only then is the payment `failed`.
#[test]
fn a_wrong_charge_is_refunded_even_when_the_refunds_answer_is_lost() {
    let (app, gateway, user, id) = gateway_payment();
    gateway.short_charges(1);
    // The cancel sent right after the verdict is lost on the way.
    gateway.fail_cancels(1);
    assert_eq!(block_on(app.execute(user, confirm_with(id, "pk-short"), None)), Err(Error::OutcomePending));
    assert_eq!(block_on(payment(&app, user, id)).status, PaymentStatus::Refunding);
    assert_eq!(gateway.charge("pk-short"), Some((499, false)), "the refund is still owed");
    block_on(holds(&app));
    assert_eq!(complete_a_minute_later(&app), Ok(1));
    assert_eq!(block_on(payment(&app, user, id)).status, PaymentStatus::Failed);
    assert_eq!(gateway.charge("pk-short"), Some((499, true)), "refunded to the card");
    let snapshot = block_on(app.snapshot()).unwrap();
    assert!(snapshot.transfers.iter().all(|t| t.payment != Some(id)), "our books never took the wrong charge");
    assert_eq!(block_on(balance(&app, user)), Money::ZERO, "no payback for a failed payment");
    assert_eq!(snapshot.wallets.iter().find(|w| w.user == user).unwrap().payback_held, Money::ZERO);
    assert_holds(&snapshot);
}

/// Executes the gateway `command` for `user` under the idempotency key `key`.
fn gateway_keyed(app: &GatewayTally, user: UserId, key: &str, command: &Command) -> Result<Executed, Error> {
    block_on(app.execute(user, command.clone(), Some(keyed(key, command))))
}

/// Invariant 2 (a key's one effect has one answer): a confirm answered 503
/// (its reply lost, the lookup failing) and settled by the completer since is
/// answered, when retried under its key, with the payment it charged — not
/// refused as a second confirm, which would tell the client its card was not
/// charged. A confirm under another key is still refused, and the card is
/// charged once.
#[test]
fn a_confirm_settled_by_the_completer_answers_its_retry_with_the_charge() {
    let (app, gateway, user, id) = gateway_payment();
    let confirm = confirm_with(id, "pk-settled");
    gateway.lose_confirm_replies(1);
    gateway.fail_lookups(1);
    assert_eq!(gateway_keyed(&app, user, "k-confirm", &confirm), Err(Error::OutcomePending));
    assert_eq!(complete_a_minute_later(&app), Ok(1));
    let retry = gateway_keyed(&app, user, "k-confirm", &confirm);
    assert!(
        matches!(retry, Ok(Executed::Fresh(Outcome::Payment(ref p))) if p.status == PaymentStatus::Done),
        "{retry:?}"
    );
    let replay = gateway_keyed(&app, user, "k-confirm", &confirm);
    assert!(matches!(replay, Ok(Executed::Replayed(ref r)) if (200..300).contains(&r.status)), "{replay:?}");
    let other = gateway_keyed(&app, user, "k-other", &confirm);
    assert!(matches!(other, Err(Error::Transition(InvalidTransition { from: PaymentStatus::Done, .. }))), "{other:?}");
    assert_eq!(gateway.confirms_received("pk-settled"), 1, "one confirm sent");
    assert_eq!(block_on(balance(&app, user)), Money::new(50), "one payback");
    block_on(holds(&app));
}

/// The same for a cancel: its refund's answer lost, the completer refunds,
/// and the retry under the cancel's key answers the cancelled payment.
#[test]
fn a_cancel_settled_by_the_completer_answers_its_retry_with_the_refund() {
    let (app, gateway, user, id) = gateway_payment();
    let confirmed = gateway_keyed(&app, user, "k-confirm", &confirm_with(id, "pk-refunded"));
    assert!(matches!(confirmed, Ok(Executed::Fresh(Outcome::Payment(ref p))) if p.status == PaymentStatus::Done));
    let cancel = Command::CancelPayment { payment: id };
    gateway.fail_cancels(1);
    assert_eq!(gateway_keyed(&app, user, "k-cancel", &cancel), Err(Error::OutcomePending));
    assert_eq!(complete_a_minute_later(&app), Ok(1));
    assert_eq!(gateway.charge("pk-refunded"), Some((500, true)), "refunded to the card");
    let retry = gateway_keyed(&app, user, "k-cancel", &cancel);
    assert!(
        matches!(retry, Ok(Executed::Fresh(Outcome::Payment(ref p))) if p.status == PaymentStatus::Cancelled),
        "{retry:?}"
    );
    let other = gateway_keyed(&app, user, "k-other", &cancel);
    assert!(
        matches!(other, Err(Error::Transition(InvalidTransition { from: PaymentStatus::Cancelled, .. }))),
        "{other:?}"
    );
    assert_eq!(block_on(balance(&app, user)), Money::ZERO, "the payback reversed once");
    block_on(holds(&app));
}

/// A confirm by another request while the first one's charge is in flight
/// — with another payment key, or with the same one under another
/// `Idempotency-Key` — is refused, as it is once that charge settled: only
/// the request that made the charge is answered with it.
#[test]
fn a_confirm_with_another_key_while_one_is_in_flight_is_refused() {
    let (app, gateway, user, id) = gateway_payment();
    gateway.lose_confirm_replies(1);
    gateway.fail_lookups(1);
    assert_eq!(gateway_keyed(&app, user, "k-1", &confirm_with(id, "pk-first")), Err(Error::OutcomePending));
    for (key, payment_key) in [("k-2", "pk-second"), ("k-3", "pk-first")] {
        let other = gateway_keyed(&app, user, key, &confirm_with(id, payment_key));
        assert!(
            matches!(other, Err(Error::Transition(InvalidTransition { from: PaymentStatus::Confirming, .. }))),
            "{key}: {other:?}"
        );
    }
    // The first request's retry (its key, freed by the 503) looks it up.
    let lookup = gateway_keyed(&app, user, "k-1", &confirm_with(id, "pk-first"));
    assert!(
        matches!(lookup, Ok(Executed::Fresh(Outcome::Payment(ref p))) if p.status == PaymentStatus::Done),
        "{lookup:?}"
    );
    assert_eq!(gateway.confirms_received("pk-second"), 0);
    assert_eq!(gateway.confirms_received("pk-first"), 1);
    block_on(holds(&app));
}

/// The same for cancels: while one request's refund is in flight, another
/// request's cancel of the payment (or of its order) is refused, as it is
/// once the refund settled, and the first request's retry finishes it.
#[test]
fn a_cancel_by_another_request_while_one_is_in_flight_is_refused() {
    let (app, gateway, user, id) = gateway_payment();
    let confirmed = gateway_keyed(&app, user, "k-confirm", &confirm_with(id, "pk-cancelled"));
    assert!(matches!(confirmed, Ok(Executed::Fresh(Outcome::Payment(ref p))) if p.status == PaymentStatus::Done));
    let cancel = Command::CancelPayment { payment: id };
    gateway.fail_cancels(1);
    assert_eq!(gateway_keyed(&app, user, "k-cancel", &cancel), Err(Error::OutcomePending));
    let other = gateway_keyed(&app, user, "k-other", &cancel);
    assert!(
        matches!(other, Err(Error::Transition(InvalidTransition { from: PaymentStatus::Cancelling, .. }))),
        "{other:?}"
    );
    assert_eq!(gateway.charge("pk-cancelled"), Some((500, false)), "the refused cancel sent nothing");
    let retry = gateway_keyed(&app, user, "k-cancel", &cancel);
    assert!(
        matches!(retry, Ok(Executed::Fresh(Outcome::Payment(ref p))) if p.status == PaymentStatus::Cancelled),
        "{retry:?}"
    );
    assert_eq!(gateway.charge("pk-cancelled"), Some((500, true)), "refunded to the card once");
    assert_eq!(block_on(balance(&app, user)), Money::ZERO, "the payback reversed once");
    block_on(holds(&app));
}

/// Hole 1: a gateway key charged for somebody else's order (another
/// merchant's checkout, or a payment of ours paid elsewhere) is not adopted
/// — our payment fails — and not cancelled: it is not our money.
#[test]
fn a_charge_for_another_order_id_is_neither_adopted_nor_refunded() {
    let (app, gateway, user, id) = gateway_payment();
    gateway.charge_elsewhere("pk-foreign", "somebody-else", 500);
    let failed = block_on(app.execute(user, confirm_with(id, "pk-foreign"), None));
    assert!(matches!(failed, Ok(Executed::Fresh(Outcome::Payment(ref p))) if p.status == PaymentStatus::Failed));
    assert_eq!(gateway.charge("pk-foreign"), Some((500, false)), "never cancelled: not ours");
    assert_eq!(block_on(balance(&app, user)), Money::ZERO);
    block_on(holds(&app));
}

/// Hole 4: one stuck payment that cannot be settled now must not starve the
/// rest of the completer's batch.
#[test]
fn one_failing_stuck_payment_does_not_starve_the_completers_batch() {
    let (app, gateway) = with_gateway();
    let user = block_on(user_with(&app, Limits::default(), 0));
    let first = block_on(create_payment(&app, user, (500, 50), Method::Gateway));
    let second = block_on(create_payment(&app, user, (700, 70), Method::Gateway));
    gateway.lose_confirm_replies(2);
    gateway.fail_lookups(2);
    for (id, key) in [(first, "pk-a"), (second, "pk-b")] {
        assert_eq!(block_on(app.execute(user, confirm_with(id, key), None)), Err(Error::OutcomePending));
    }
    // The completer claims both (one commit), then the first settlement's
    // commit is lost: it fails, and the second must still be settled.
    fault_nth_commit(app.store(), 2, CommitFault::Lost);
    let pass = complete_a_minute_later(&app);
    app.store().set_commit_faults(None);
    assert!(matches!(pass, Err(Error::Store(StoreError::Unavailable(_)))), "the failure is reported: {pass:?}");
    let statuses = [block_on(payment(&app, user, first)).status, block_on(payment(&app, user, second)).status];
    assert!(statuses.contains(&PaymentStatus::Done), "the other payment was settled in the same pass: {statuses:?}");
    assert_eq!(complete_a_minute_later(&app), Ok(1));
    assert_eq!(block_on(balance(&app, user)), Money::new(50 + 70));
    block_on(holds(&app));
}

/// Hole 6: an instance whose clock is behind (or a request stamped before it
/// waited) pays on day D after the wallet paid on D+1. The payment counts in
/// D+1's window: the daily limit holds across the skew, and so does the
/// monthly one across a month end.
#[test]
fn a_payment_stamped_before_the_wallets_window_counts_in_the_newest_window() {
    let app = locked();
    const DAY: i64 = 86_400_000;
    // 2026-11-30T23:59:59Z, a second before December.
    let last_second = START.0 + 8 * DAY - 1_000;
    app.clock().set(tally_core::time::Timestamp(last_second));
    let limits = Limits { daily: Some(Money::new(150)), monthly: Some(Money::new(1_000)), ..Limits::default() };
    let user = block_on(user_with(&app, limits, 1_000));
    let pay = |amount_paid: i64| {
        let id = block_on(new_payment(&app, user, amount_paid, amount_paid / 10));
        block_on(app.execute(user, confirm(id), None))
    };
    app.clock().set(tally_core::time::Timestamp(last_second + 2_000)); // December 1st
    assert!(pay(100).is_ok());
    app.clock().set(tally_core::time::Timestamp(last_second)); // back to November 30th
    assert_eq!(pay(100), Err(Error::Wallet(WalletError::LimitExceeded(LimitKind::Daily))), "D+1's window holds");
    assert!(pay(50).is_ok(), "and counts in D+1: 150 in all");
    app.clock().set(tally_core::time::Timestamp(last_second + 2_000));
    assert_eq!(
        pay(1),
        Err(Error::Wallet(WalletError::LimitExceeded(LimitKind::Daily))),
        "the window did not roll back"
    );
    let view = block_on(app.wallet(user)).unwrap();
    assert_eq!((view.spent_today, view.spent_this_month), (Money::new(150), Money::new(150)));
    block_on(holds(&app));
}

/// Hole 8: without a maximum of its own, a wallet still stops at the cap.
#[test]
fn the_balance_cap_holds_without_a_maximum() {
    let app = locked();
    let user = block_on(user_with(&app, Limits::default(), 0));
    let top_up = |minor: i64| block_on(app.execute(user, Command::TopUp { amount: amount(minor) }, None));
    for _ in 0..1_000 {
        top_up(1_000_000_000_000).expect("up to the cap");
    }
    assert_eq!(block_on(balance(&app, user)), Money::BALANCE_LIMIT);
    assert_eq!(top_up(1), Err(Error::Wallet(WalletError::MaxBalanceExceeded)));
    block_on(holds(&app));
}

/// The statement hook sees every statement of a hooked handle's
/// transactions, by name, and a statement it fails does nothing: a failed
/// commit applies nothing. Other handles on the database are not hooked.
#[test]
fn a_statement_hook_sees_each_statement_and_its_failure_applies_nothing() {
    struct Watch {
        seen: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
    }
    impl TxHook for Watch {
        fn before(&mut self, statement: Statement<'_>) -> HookFuture<'_, Result<(), StoreError>> {
            self.seen.lock().unwrap().push(statement.name());
            let fault =
                matches!(statement, Statement::Commit { .. }).then(|| StoreError::Unavailable("injected".into()));
            Box::pin(std::future::ready(fault.map_or(Ok(()), Err)))
        }
    }
    with_user(10, |app, user| async move {
        let seen = std::sync::Arc::default();
        let watched = std::sync::Arc::clone(&seen);
        let hooked = app.store().with_statement_hook(std::sync::Arc::new(move || {
            Box::new(Watch { seen: std::sync::Arc::clone(&watched) }) as Box<dyn TxHook>
        }));
        let mut tx = hooked.begin().await.unwrap();
        let wallet = tx.wallet(user).await.unwrap().unwrap();
        let mut more = wallet.clone();
        more.version += 1;
        more.balance = Money::new(11);
        tx.put_wallet(Some(&wallet), &more).await.unwrap();
        assert_eq!(tx.commit().await, Err(StoreError::Unavailable("injected".into())));
        assert_eq!(*seen.lock().unwrap(), ["begin", "wallet", "put_wallet", "commit"]);
        assert_eq!(balance(&app, user).await, Money::new(10), "the failed commit applied nothing");
        let mut unhooked = app.store().begin().await.unwrap();
        assert_eq!(unhooked.wallet(user).await.unwrap(), Some(wallet));
        assert_eq!(seen.lock().unwrap().len(), 4, "the app's own handle is not hooked");
    });
}

/// A zombie (issue 14): a holder paused past its lock lease loses the wallet
/// to the next taker, whose top-up commits; when the paused holder resumes,
/// its commit — a blind write of the balance it read before — is refused
/// (`Fenced`) and applies nothing, and its guard's drop leaves the new
/// grant alone. Without the fence check (mutant `fence_unchecked`) the
/// resumed write would put back the old balance plus 5: the 7 lost.
#[test]
fn a_paused_holders_commit_is_refused_once_its_lease_went_to_another() {
    use tally_core::store::{Fenced as _, LockKey, LockManager as _, LockSet};
    use tally_core::wallet::Movement;

    let clock = tally_core::time::ManualClock::new(START);
    let lease = Duration::from_secs(1);
    let locks = tally_mem::MemLocks::with_lease(clock.clone(), tally_lock::Config::default(), lease);
    let store = MemStore::new(tally_mem::Concurrency::Locked);
    let app = tally_core::Tally::new(
        store.clone(),
        locks.clone(),
        clock.clone(),
        std::sync::Arc::new(tally_core::ids::SeqIds::new(1)),
        config(),
    );
    block_on(async {
        let user = user_with(&app, Limits::default(), 100).await;
        let keys = LockSet::new([LockKey::Wallet(user)]);
        let top_up = async |guard: &tally_mem::MemGuard, n: i64| {
            let mut tx = store.begin_locked(&keys, &guard.fences(), Duration::ZERO).await?;
            let wallet = tx.wallet(user).await?.expect("wallet");
            let next = wallet.apply(Movement::TopUp(amount(n)), clock.now()).expect("apply");
            tx.put_wallet(Some(&wallet), &next).await?;
            Ok::<_, StoreError>(tx)
        };

        let paused_guard = locks.acquire(&keys, Duration::ZERO).await.expect("a free wallet");
        let paused = top_up(&paused_guard, 5).await.expect("read and written under the first grant");
        clock.advance(lease * 2);
        let guard = locks.acquire(&keys, Duration::ZERO).await.expect("the paused holder's lease is over");
        assert!(guard.fences().tokens()[0].1 > paused_guard.fences().tokens()[0].1);
        top_up(&guard, 7).await.expect("the new holder").commit().await.expect("the new holder commits");

        assert_eq!(paused.commit().await, Err(StoreError::Fenced), "the zombie's commit");
        assert_eq!(balance(&app, user).await, Money::new(107), "only the new holder's top-up landed");
        drop(paused_guard);
        assert_eq!(locks.table().holder_fence(&keys.keys()[0]), guard.fences().tokens().first().map(|t| t.1));
        drop(guard);
        assert!(locks.table().is_idle());
    });
}
