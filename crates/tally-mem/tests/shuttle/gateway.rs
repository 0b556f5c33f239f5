//! The scenarios with the external card gateway: concurrent confirms of one
//! gateway payment, a lost reply, a retry racing the completer, an order's
//! charge racing the expiry sweeper, one payment key for two payments, and
//! the payback racing a cashback spend or a top-up near the maximum.

use super::*;

/// A backend with the in-memory card gateway: locked or optimistic.
pub(super) type Gw<L> = Arc<Tally<MemStore, L, ManualClock, MemGateway>>;

pub(super) fn gateway_confirm(payment: PaymentId) -> Command {
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
pub(super) fn gateway_concurrent_confirms<L: LockManager>((app, gateway): (Gw<L>, MemGateway)) {
    let (user, id) = block_on(user_with_gateway_payment(&app));
    let results = race(
        &app,
        (0..THREADS).map(|_| move |app: Gw<L>| block_on(app.execute(user, gateway_confirm(id), None))).collect(),
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

/// Invariant 2 where a key stays in flight: a gateway confirm commits its key
/// in flight with its intent, then calls the gateway with no lock held. Two
/// confirms under ONE key → one execution: the other is told the key is in
/// use (it arrived during the call) or replays the answer (after it). The
/// `idem_ignores_inflight` mutant lets the second run as well.
pub(super) fn gateway_same_key_confirms<L: LockManager>((app, gateway): (Gw<L>, MemGateway)) {
    let (user, id) = block_on(user_with_gateway_payment(&app));
    let command = gateway_confirm(id);
    let results = race(
        &app,
        (0..2)
            .map(|_| {
                let command = command.clone();
                move |app: Gw<L>| block_on(app.execute(user, command.clone(), Some(keyed("same", &command))))
            })
            .collect(),
    );
    let fresh = results.iter().filter(|r| matches!(r, Ok(Executed::Fresh(_)))).count();
    assert_eq!(fresh, 1, "one execution under the key: {results:?}");
    assert!(results.iter().any(is_done), "{results:?}");
    let other = results.iter().find(|r| !matches!(r, Ok(Executed::Fresh(_)))).expect("two results");
    assert!(
        *other == Err(Error::IdempotencyKeyInUse) || matches!(other, Ok(Executed::Replayed(r)) if r.status == 201),
        "{other:?}"
    );
    assert_eq!(gateway.confirms_received("pk-1"), 1, "one confirm sent: {results:?}");
    block_on(async {
        assert_eq!(balance(&app, user).await, Money::new(50), "the payback, once");
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// The gateway charges, then the reply is lost: the payment ends done, once,
/// found by a lookup — never by a second confirm.
pub(super) fn gateway_lost_reply<L: LockManager>((app, gateway): (Gw<L>, MemGateway)) {
    gateway.lose_confirm_replies(1);
    let (user, id) = block_on(async {
        let user = user_with(&app, Limits::default(), 0).await;
        (user, create_payment(&app, user, (300, 30), Method::Gateway).await)
    });
    let results =
        race(&app, (0..2).map(|_| move |app: Gw<L>| block_on(app.execute(user, gateway_confirm(id), None))).collect());
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
pub(super) fn gateway_retry_vs_completer<L: LockManager>((app, gateway): (Gw<L>, MemGateway)) {
    gateway.lose_confirm_replies(1);
    gateway.fail_lookups(1);
    let (user, id) = block_on(async {
        let user = user_with(&app, Limits::default(), 0).await;
        let id = create_payment(&app, user, (700, 70), Method::Gateway).await;
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

/// A gateway charge for an order racing the sweeper across the TTL: the
/// order is marked as being paid before the charge is sent, so either the
/// gateway charged and the order is paid (even if the TTL passed while the
/// charge was in flight), or the gateway was never called and the order
/// expired. Money at the gateway always means a paid order.
pub(super) fn gateway_confirm_vs_sweeper<L: LockManager>((app, gateway): (Gw<L>, MemGateway)) {
    let (user, product, order, pay) = block_on(async {
        let user = user_with(&app, Limits::default(), 0).await;
        let product = new_product(&app, 300, 1).await;
        let order = new_order(&app, user, order_of(&[(product, 1)], &[], None)).await;
        let command = Command::CreateOrderPayment { order: order.id, method: Method::Gateway, confirm: false };
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
pub(super) fn gateway_one_key_two_payments<L: LockManager>((app, gateway): (Gw<L>, MemGateway)) {
    let payments = block_on(async {
        let mut payments = Vec::new();
        for _ in 0..2 {
            let user = user_with(&app, Limits::default(), 0).await;
            payments.push((user, create_payment(&app, user, (500, 50), Method::Gateway).await));
        }
        payments
    });
    let results = race(
        &app,
        payments
            .iter()
            .map(|&(user, id)| move |app: Gw<L>| block_on(app.execute(user, gateway_confirm(id), None)))
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
pub(super) fn gateway_cancel_racing_cashback_spend<L: LockManager>((app, gateway): (Gw<L>, MemGateway)) {
    let (user, card, spend) = block_on(async {
        let user = user_with(&app, Limits::default(), 0).await;
        let card = create_payment(&app, user, (1_000, 100), Method::Gateway).await;
        app.execute(user, gateway_confirm(card), None).await.expect("charged");
        assert_eq!(balance(&app, user).await, Money::new(100), "the cashback");
        (user, card, new_payment(&app, user, 100, 10).await)
    });
    let results = race(
        &app,
        vec![
            Box::new(move |app: Gw<L>| block_on(app.execute(user, Command::CancelPayment { payment: card }, None)))
                as Box<dyn FnOnce(Gw<L>) -> Result<Executed, Error> + Send>,
            Box::new(move |app: Gw<L>| block_on(app.execute(user, confirm(spend), None))),
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
pub(super) fn gateway_confirm_racing_a_top_up_near_the_maximum<L: LockManager>((app, gateway): (Gw<L>, MemGateway)) {
    let limits = Limits { max_balance: Some(Money::new(1_000)), ..Limits::default() };
    let (user, id) = block_on(async {
        let user = user_with(&app, limits, 900).await;
        (user, create_payment(&app, user, (1_000, 100), Method::Gateway).await)
    });
    let results = race(
        &app,
        vec![
            Box::new(move |app: Gw<L>| block_on(app.execute(user, gateway_confirm(id), None)))
                as Box<dyn FnOnce(Gw<L>) -> Result<Executed, Error> + Send>,
            Box::new(move |app: Gw<L>| block_on(app.execute(user, Command::TopUp { amount: amount(100) }, None))),
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

/// A gateway confirm racing a cancel of the waiting payment: the cancel
/// wins outright (cancelled from `wait`, nothing sent, the confirm refused
/// from `cancelled`), or comes while the charge is in flight (refused from
/// `confirming`: the payment ends done, charged once), or after it (the
/// payback reversed and the card refunded, once). Never a charge on a
/// cancelled payment that is not refunded, never a refund of nothing.
pub(super) fn gateway_confirm_racing_a_cancel<L: LockManager>((app, gateway): (Gw<L>, MemGateway)) {
    let (user, id) = block_on(user_with_gateway_payment(&app));
    let results = race(
        &app,
        vec![
            Box::new(move |app: Gw<L>| block_on(app.execute(user, gateway_confirm(id), None)))
                as Box<dyn FnOnce(Gw<L>) -> Result<Executed, Error> + Send>,
            Box::new(move |app: Gw<L>| block_on(app.execute(user, Command::CancelPayment { payment: id }, None))),
        ],
    );
    let refused_from =
        |result: &Result<Executed, Error>, status| matches!(result, Err(Error::Transition(t)) if t.from == status);
    let cancelled =
        matches!(&results[1], Ok(Executed::Fresh(Outcome::Payment(p))) if p.status == PaymentStatus::Cancelled);
    block_on(async {
        let status = payment(&app, user, id).await.status;
        if cancelled && is_done(&results[0]) {
            assert_eq!(status, PaymentStatus::Cancelled);
            assert_eq!(gateway.charge("pk-1"), Some((500, true)), "charged, then refunded once");
            assert_eq!(gateway.confirms_received("pk-1"), 1);
        } else if cancelled {
            assert!(refused_from(&results[0], PaymentStatus::Cancelled), "{results:?}");
            assert_eq!(status, PaymentStatus::Cancelled);
            assert_eq!((gateway.confirms_received("pk-1"), gateway.charge("pk-1")), (0, None), "nothing sent");
        } else {
            assert!(refused_from(&results[1], PaymentStatus::Confirming), "{results:?}");
            assert!(is_done(&results[0]), "{results:?}");
            assert_eq!(status, PaymentStatus::Done);
            assert_eq!(gateway.charge("pk-1"), Some((500, false)));
        }
        let payback = if status == PaymentStatus::Done { 50 } else { 0 };
        assert_eq!(balance(&app, user).await, Money::new(payback));
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// A gateway cancel whose answer was lost leaves the payment `cancelling`
/// (its payback already reversed); a client's retry races the completer:
/// both may re-send the cancel (the gateway's is idempotent), the refund is
/// booked once, the payment ends cancelled, the wallet at zero.
pub(super) fn gateway_cancel_retry_racing_the_completer<L: LockManager>((app, gateway): (Gw<L>, MemGateway)) {
    let (user, id) = block_on(async {
        let user = user_with(&app, Limits::default(), 0).await;
        let id = create_payment(&app, user, (400, 40), Method::Gateway).await;
        app.execute(user, gateway_confirm(id), None).await.expect("charged");
        gateway.fail_cancels(1);
        let cancel = app.execute(user, Command::CancelPayment { payment: id }, None).await;
        assert_eq!(cancel, Err(Error::OutcomePending), "the cancel's answer was lost");
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Cancelling);
        (user, id)
    });
    app.clock().advance(std::time::Duration::from_secs(600));
    let retry = {
        let app = app.clone();
        thread::spawn(move || block_on(app.execute(user, Command::CancelPayment { payment: id }, None)))
    };
    let completer = {
        let app = app.clone();
        thread::spawn(move || block_on(app.resolve_stuck(std::time::Duration::from_secs(60), 16)))
    };
    let retried = retry.join().unwrap();
    let resolved = completer.join().unwrap();
    let cancelled =
        matches!(&retried, Ok(Executed::Fresh(Outcome::Payment(p))) if p.status == PaymentStatus::Cancelled);
    let already = matches!(&retried, Err(Error::Transition(t)) if t.from == PaymentStatus::Cancelled);
    assert!(cancelled || already, "{retried:?}");
    assert!(matches!(resolved, Ok(0 | 1)), "{resolved:?}");
    block_on(async {
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Cancelled);
        assert_eq!(gateway.charge("pk-1"), Some((400, true)));
        let snapshot = app.snapshot().await.unwrap();
        let refunds = snapshot.transfers.iter().filter(|t| t.payment == Some(id) && t.kind == TransferKind::Refund);
        assert_eq!(refunds.count(), 1, "refunded once: {:?}", snapshot.transfers);
        assert_eq!(balance(&app, user).await, Money::ZERO);
        assert_holds(&snapshot);
    });
}

/// Cancels of one done gateway payment under THREADS keys race: one request
/// cancels (the payback reversed and the card refunded once); every other is
/// a second cancel, refused whether the first is still in flight
/// (`cancelling`) or settled — never answered with a refund it did not make.
/// The `other_key_answered` mutant lets a second one join the refund in
/// flight and answer `cancelled`.
pub(super) fn gateway_racing_cancels_refund_once<L: LockManager>(backend: (Gw<L>, MemGateway)) {
    racing_cancels(backend);
}

/// The same on the optimistic backend, whose decisions take no locks: a
/// second cancel may read the payment before the first cancel's commit and
/// the wallet after it (the payback already reversed). Its refusal is
/// answered only once its reads are checked still current, so it is decided
/// again and refused as a second cancel, never `insufficient_balance` (hole
/// 12). The `refusal_unvalidated` mutant answers it on the torn reads.
pub(super) fn optimistic_gateway_racing_cancels_refund_once<L: LockManager>(backend: (Gw<L>, MemGateway)) {
    racing_cancels(backend);
}

fn racing_cancels<L: LockManager>((app, gateway): (Gw<L>, MemGateway)) {
    let (user, id) = block_on(async {
        let (user, id) = user_with_gateway_payment(&app).await;
        let command = gateway_confirm(id);
        assert!(is_done(&app.execute(user, command.clone(), Some(keyed("confirm", &command))).await));
        (user, id)
    });
    let cancel = Command::CancelPayment { payment: id };
    let results = race(
        &app,
        (0..THREADS)
            .map(|i| {
                let cancel = cancel.clone();
                move |app: Gw<L>| block_on(app.execute(user, cancel.clone(), Some(keyed(&format!("c{i}"), &cancel))))
            })
            .collect(),
    );
    let cancelled = |r: &&Result<Executed, Error>| matches!(r, Ok(Executed::Fresh(Outcome::Payment(p))) if p.status == PaymentStatus::Cancelled);
    assert_eq!(results.iter().filter(cancelled).count(), 1, "one request cancels: {results:?}");
    let second = |r: &Result<Executed, Error>| matches!(r, Err(Error::Transition(t)) if matches!(t.from, PaymentStatus::Cancelling | PaymentStatus::Cancelled));
    assert_eq!(results.iter().filter(|r| second(r)).count(), THREADS - 1, "the others are refused: {results:?}");
    block_on(async {
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Cancelled);
        assert_eq!(gateway.charge("pk-1"), Some((500, true)), "refunded to the card");
        assert_eq!(balance(&app, user).await, Money::ZERO, "the payback, credited then reversed once");
        assert_holds(&app.snapshot().await.unwrap());
    });
}
