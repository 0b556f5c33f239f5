//! The scenarios on what orders take: stock sold to N buyers, multi-product
//! orders in opposite orders, a confirm or a cancel racing the expiry sweeper,
//! one seat booked by N, queue admission, and a token's seat limit.

use tally_core::ids::ProductId;
use tally_core::order::Order;

use super::*;

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
    let won = usize::try_from(stock_units).unwrap_or(usize::MAX).min(buyers);
    assert_eq!(results.iter().filter(|r| created(r).is_some()).count(), won, "{results:?}");
    assert_eq!(results.iter().filter(|r| is_out_of_stock(r)).count(), buyers - won, "{results:?}");
    block_on(async {
        assert_eq!(stock(&app, product).await, stock_units - won as u64);
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Seed 004's last unit: two buyers, one unit → one order.
pub(super) fn last_unit<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    stock_k_of_n(app, 1, 2);
}

/// Stock k bought by N > k buyers.
pub(super) fn k_units_n_buyers<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    stock_k_of_n(app, 2, THREADS);
}

/// Two orders list the same two products in opposite orders, one unit of
/// each in stock: exactly one gets both, the other gets neither (all lines
/// or none), and neither waits for the other forever (global lock order).
pub(super) fn opposite_orders<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
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

/// A user with 1 000 in their wallet, a product of `units` units at `price`,
/// the user's pending order of all of them, and a wallet payment of it, not
/// confirmed yet.
pub(super) async fn pending_order_payment<L: LockManager>(
    app: &Tally<MemStore, L, ManualClock>,
    price: i64,
    units: u64,
) -> (UserId, ProductId, Order, PaymentId) {
    let user = user_with(app, Limits::default(), 1_000).await;
    let product = new_product(app, price, units).await;
    let order = new_order(app, user, order_of(&[(product, units)], &[], None)).await;
    let pay = order_payment(app, user, order.id).await;
    (user, product, order, pay)
}

/// Seed 004's scheduled job racing the payment: the clock crosses the TTL
/// while a confirm and the sweeper run. Either the order is paid (stock
/// consumed, one charge, the sweeper expired nothing) or it expired (stock
/// back, no money moved, the confirm refused as expired) — never both.
pub(super) fn confirm_vs_sweeper<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (user, product, order, pay) = block_on(pending_order_payment(&app, 300, 1));
    let (confirmed, swept) = confirm_racing_sweep(&app, user, confirm(pay), order.expires_at);
    block_on(async {
        paid_or_expired_once(&app, (user, product, &order, pay), &confirmed, swept).await;
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// Invariant 7 after a confirm of `pay` (a 300 order of one unit of
/// `product`, from a wallet of 1,000) raced the sweeper, which expired
/// `swept` orders: the order is paid (stock sold, charged once, nothing
/// expired) or expired exactly once (stock back, no money moved, the
/// confirm refused as expired) — never both.
pub(super) async fn paid_or_expired_once<L: LockManager>(
    app: &Tally<MemStore, L, ManualClock>,
    (user, product, order, pay): (UserId, ProductId, &Order, PaymentId),
    confirmed: &Result<Executed, Error>,
    swept: usize,
) {
    let now = app.order(user, order.id).await.unwrap();
    if is_done(confirmed) {
        assert_eq!((now.status, swept), (OrderStatus::Paid, 0));
        assert_eq!(stock(app, product).await, 0);
        assert_eq!(balance(app, user).await, Money::new(700));
    } else {
        assert_eq!(*confirmed, Err(Error::Order(OrderError::Expired(order.id))));
        assert_eq!(now.status, OrderStatus::Expired);
        // The sweeper expired it, or a later sweep will: either way a
        // reader sees it expired; sweep again to give the stock back.
        let later = app.expire_orders(16).await.unwrap();
        assert_eq!(swept + later, 1, "expired exactly once");
        assert_eq!(stock(app, product).await, 1);
        assert_eq!(balance(app, user).await, Money::new(1_000));
        assert_eq!(payment(app, user, pay).await.status, PaymentStatus::Wait);
    }
}

/// A paid-or-not order cancelled while its payment is confirmed: the cancel
/// always wins in the end — the order is cancelled, its stock is back and the
/// wallet is whole — whether it cancelled a pending order (the confirm is
/// then refused) or refunded a paid one.
pub(super) fn cancel_vs_confirm<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (user, product, order, pay) = block_on(pending_order_payment(&app, 400, 2));
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
pub(super) fn seat_booked_by_n<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
    let (seat, bookings) = block_on(async {
        let (event, seats) = new_event(&app, u32::try_from(THREADS).expect("a few threads"), 2).await;
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
pub(super) fn queue_admission<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
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

/// Hole 7: one active token placing orders at once for more seats than the
/// event allows a token → exactly `max_seats_per_token` seats are held, the
/// rest refused `seat_limit_reached`.
pub(super) fn token_orders_hold_at_most_the_seat_limit<L: LockManager>(app: Arc<Tally<MemStore, L, ManualClock>>) {
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
