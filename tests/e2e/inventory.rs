//! Orders, stock, seats and the waiting queue under concurrency, on real
//! PostgreSQL, for every strategy: the core's use cases driven directly over
//! `PgStore` (the order endpoints are exercised by the HTTP tests), with a
//! `ManualClock` so that expiry is a matter of moving the clock, never of
//! waiting for it. Each scenario names the SPEC.md invariant it protects,
//! asserts exact outcomes, and ends with the invariant checker over the whole
//! database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tally_core::Error;
use tally_core::app::{Command, Config, Executed, NewSeat, NewShowtime, Outcome, Tally};
use tally_core::catalog::{Product, SeatStatus, StockError};
use tally_core::check::{Snapshot, assert_holds};
use tally_core::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, SeqIds, TokenId, UserId};
use tally_core::ledger::TransferKind;
use tally_core::money::{Amount, Money};
use tally_core::order::{Order, OrderError, OrderStatus};
use tally_core::payment::{Method, Payment, PaymentStatus};
use tally_core::queue::TokenStatus;
use tally_core::time::{ManualClock, Timestamp};
use tally_core::wallet::Limits;
use tally_gateway::fake::{LatencyFault, Trigger};
use tally_gateway::{FakeGateway, GatewayClient, GatewayConfig};
use tally_pg::{PgStore, Strategy};

use crate::harness::{Pool, START, at_once, fresh_store, stored_order};

type Shop = Tally<PgStore, tally_redis::Locks, ManualClock, GatewayClient>;

/// The core over a fresh database with `strategy`, on the suite's pool size
/// (`TALLY_TEST_MAX_CONNECTIONS`: CI runs everything again on one connection).
async fn shop(strategy: Strategy) -> Arc<Shop> {
    shop_with_gateway(strategy).await.0
}

/// The same, and the fake payment gateway it confirms gateway payments with
/// (served until the test's runtime ends).
async fn shop_with_gateway(strategy: Strategy) -> (Arc<Shop>, FakeGateway) {
    let store = fresh_store(strategy, &Pool::default()).await;
    // Up to 100 use cases race on one row here: give optimistic retries room
    // (every failed attempt is someone else's success, so 100 always do).
    let core = Config {
        attempts_max: 128,
        batch_max: super::harness::batch_max(),
        batch_overlap: super::harness::batch_overlap(),
        ..Config::default()
    };
    let ids = Arc::new(SeqIds::new(u64::from(std::process::id())));
    let gateway = FakeGateway::new("test_sk");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the gateway");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(tally_gateway::fake::serve(listener, gateway.clone(), std::future::pending()));
    let mut client = GatewayConfig::new(url, "test_sk");
    client.request_timeout = Duration::from_secs(10);
    let client = GatewayClient::new(client).expect("gateway client");
    let app =
        Tally::new(store, crate::harness::locks_for(strategy), ManualClock::new(START), ids, core).with_gateway(client);
    (Arc::new(app), gateway)
}

fn amount(minor_units: i64) -> Amount {
    Amount::new(minor_units).expect("test amount")
}

async fn customer(app: &Shop, balance: i64) -> UserId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut key_hash = [7u8; 32];
    key_hash[..8].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let user = app.create_user("buyer", Limits::default(), key_hash).await.expect("create user");
    if balance > 0 {
        app.execute(user.id, Command::TopUp { amount: amount(balance) }, None).await.expect("top up");
    }
    user.id
}

async fn admin(app: &Shop, command: Command) -> Outcome {
    match app.execute(UserId::ADMIN, command, None).await {
        Ok(Executed::Fresh(outcome)) => outcome,
        other => panic!("admin command: {other:?}"),
    }
}

async fn product(app: &Shop, price: i64, stock: u64) -> Product {
    // No payback: the scenarios here count money by the price.
    let command = Command::CreateProduct { name: "widget".into(), price: amount(price), stock, payback_bps: Some(0) };
    match admin(app, command).await {
        Outcome::Product(product) => product,
        other => panic!("create product answered {other:?}"),
    }
}

/// An event with one showtime and one seat, and its seat.
async fn event_with_one_seat(app: &Shop, active_limit: u32) -> (EventId, SeatId) {
    let command = Command::CreateEvent {
        name: "concert".into(),
        active_limit,
        token_ttl: Duration::from_secs(600),
        max_seats_per_token: tally_core::catalog::MAX_SEATS_PER_TOKEN_DEFAULT,
        showtimes: vec![NewShowtime {
            starts_at: START.plus(Duration::from_secs(86_400)),
            seats: vec![NewSeat { label: "A1".into(), price: amount(5_000) }],
        }],
    };
    match admin(app, command).await {
        Outcome::Event(view) => (view.event.id, view.showtimes[0].1[0].id),
        other => panic!("create event answered {other:?}"),
    }
}

async fn join(app: &Shop, user: UserId, event: EventId) -> TokenId {
    match app.execute(user, Command::JoinQueue { event }, None).await {
        Ok(Executed::Fresh(Outcome::Token(view))) => {
            assert_eq!(view.status, TokenStatus::Active, "the event admits everyone here");
            view.token.id
        }
        other => panic!("join queue: {other:?}"),
    }
}

async fn order(
    app: &Shop,
    user: UserId,
    items: Vec<(ProductId, u64)>,
    seats: Vec<SeatId>,
    token: Option<TokenId>,
) -> Result<Order, Error> {
    match app.execute(user, Command::CreateOrder { items, seats, token }, None).await? {
        Executed::Fresh(Outcome::Order(order)) => Ok(order),
        other => panic!("create order answered {other:?}"),
    }
}

async fn order_payment(app: &Shop, user: UserId, order: OrderId) -> Payment {
    order_payment_by(app, user, order, Method::Wallet).await
}

async fn order_payment_by(app: &Shop, user: UserId, order: OrderId, method: Method) -> Payment {
    let command = Command::CreateOrderPayment { order, method, confirm: false };
    match app.execute(user, command, None).await {
        Ok(Executed::Fresh(Outcome::Payment(payment))) => payment,
        other => panic!("create order payment: {other:?}"),
    }
}

async fn confirm(app: &Shop, user: UserId, payment: PaymentId) -> Result<Payment, Error> {
    match app.execute(user, Command::ConfirmPayment { payment, payment_key: None }, None).await? {
        Executed::Fresh(Outcome::Payment(payment)) => Ok(payment),
        other => panic!("confirm answered {other:?}"),
    }
}

async fn stock(app: &Shop, id: ProductId) -> (u64, u64) {
    let product = app.product(id).await.expect("product");
    (product.stock, product.stocked)
}

async fn snapshot(app: &Shop) -> Snapshot {
    app.snapshot().await.expect("snapshot")
}

/// The store holds exactly `orders` orders, and every invariant.
async fn holds_with_orders(app: &Shop, orders: usize) {
    let snapshot = snapshot(app).await;
    assert_eq!(snapshot.orders.len(), orders);
    assert_holds(&snapshot);
}

fn out_of_stock(result: &Result<Order, Error>) -> bool {
    matches!(result, Err(Error::Stock(StockError::OutOfStock { .. })))
}

/// Seed 004 (invariant 5): one unit, two buyers at once → exactly one order.
pub async fn stock_one_two_buyers_one_order(strategy: Strategy) {
    let app = shop(strategy).await;
    let item = product(&app, 1_000, 1).await;
    let buyers = [customer(&app, 0).await, customer(&app, 0).await];
    let results = at_once(2, |i| {
        let app = app.clone();
        async move { order(&app, buyers[i], vec![(item.id, 1)], vec![], None).await }
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused, [&Error::Stock(StockError::OutOfStock { product: item.id, available: 0, wanted: 1 })]);
    assert_eq!(stock(&app, item.id).await, (0, 1));
    holds_with_orders(&app, 1).await;
}

/// Invariant 5: ten units, a hundred buyers at once → exactly ten orders,
/// ninety refusals, nothing left, nothing oversold.
pub async fn hundred_buyers_ten_units(strategy: Strategy) {
    let app = shop(strategy).await;
    let item = product(&app, 1_000, 10).await;
    let mut buyers = Vec::new();
    for _ in 0..100 {
        buyers.push(customer(&app, 0).await);
    }
    let buyers = Arc::new(buyers);
    let started = Instant::now();
    let results = at_once(100, |i| {
        let (app, buyers) = (app.clone(), buyers.clone());
        async move { order(&app, buyers[i], vec![(item.id, 1)], vec![], None).await }
    })
    .await;
    let elapsed = started.elapsed();
    let placed = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| out_of_stock(r)).count();
    let other: Vec<_> = results.iter().filter(|r| !(r.is_ok() || out_of_stock(r))).collect();
    assert_eq!((placed, refused), (10, 90), "unexpected: {other:?}");
    assert_eq!(stock(&app, item.id).await, (0, 10));
    let snapshot = snapshot(&app).await;
    assert_eq!(snapshot.orders.len(), 10);
    assert_eq!(snapshot.orders.iter().map(|o| o.lines[0].quantity).sum::<u64>(), 10);
    assert_holds(&snapshot);
    eprintln!("    {strategy:?}: 100 buyers of 10 units in {elapsed:?}");
}

/// Seed 002 (invariant 6): ten users with active queue tokens book the same
/// seat at once → exactly one order holds it; nine are refused.
pub async fn ten_bookings_one_seat(strategy: Strategy) {
    let app = shop(strategy).await;
    let (event, seat) = event_with_one_seat(&app, 10).await;
    let mut booking = Vec::new();
    for _ in 0..10 {
        let user = customer(&app, 0).await;
        booking.push((user, join(&app, user, event).await));
    }
    let booking = Arc::new(booking);
    let results = at_once(10, |i| {
        let (app, booking) = (app.clone(), booking.clone());
        async move {
            let (user, token) = booking[i];
            order(&app, user, vec![], vec![seat], Some(token)).await
        }
    })
    .await;
    let winners: Vec<&Order> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let refused = results.iter().filter(|r| matches!(r, Err(Error::Seat(_)))).count();
    assert_eq!(refused, 9, "{results:?}");
    let snapshot = snapshot(&app).await;
    let stored = snapshot.seats.iter().find(|s| s.id == seat).expect("the seat");
    assert_eq!(stored.status, SeatStatus::Held(winners[0].id));
    assert_eq!(snapshot.orders.len(), 1);
    assert_holds(&snapshot);
}

/// The global lock order: sixty orders of two products at once, half listing
/// them (A, B) and half (B, A), all succeed — no deadlock victim, no error —
/// and the stock is exact (invariant 5).
pub async fn crossed_two_product_orders_never_deadlock(strategy: Strategy) {
    let app = shop(strategy).await;
    let a = product(&app, 100, 100).await;
    let b = product(&app, 200, 100).await;
    let mut buyers = Vec::new();
    for _ in 0..60 {
        buyers.push(customer(&app, 0).await);
    }
    let buyers = Arc::new(buyers);
    let results = at_once(60, |i| {
        let (app, buyers) = (app.clone(), buyers.clone());
        let items = if i % 2 == 0 { vec![(a.id, 1), (b.id, 1)] } else { vec![(b.id, 1), (a.id, 1)] };
        async move { order(&app, buyers[i], items, vec![], None).await }
    })
    .await;
    let errors: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(errors.is_empty(), "{} error(s), e.g. {:?}", errors.len(), errors.first());
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|o| o.total == amount(300))));
    assert_eq!((stock(&app, a.id).await, stock(&app, b.id).await), ((40, 100), (40, 100)));
    holds_with_orders(&app, 60).await;
}

/// Seed 004's scheduled job (invariants 5 and 7): an unpaid order expires
/// once its TTL is over — not a millisecond before — and its stock comes
/// back; no money moves.
pub async fn unpaid_order_expires_and_stock_returns(strategy: Strategy) {
    let app = shop(strategy).await;
    let item = product(&app, 700, 5).await;
    let buyer = customer(&app, 10_000).await;
    let created = order(&app, buyer, vec![(item.id, 3)], vec![], None).await.expect("order");
    order_payment(&app, buyer, created.id).await;
    assert_eq!(stock(&app, item.id).await, (2, 5));
    app.clock().set(Timestamp(created.expires_at.0 - 1));
    assert_eq!(app.expire_orders(100).await, Ok(0), "not before its TTL");
    assert_eq!(stored_order(app.store(), created.id).await, created);
    app.clock().set(created.expires_at);
    assert_eq!(app.expire_orders(100).await, Ok(1));
    let expired = stored_order(app.store(), created.id).await;
    assert_eq!((expired.status, expired.version), (OrderStatus::Expired, created.version + 1));
    assert_eq!(stock(&app, item.id).await, (5, 5), "stock back");
    assert_eq!(app.expire_orders(100).await, Ok(0), "expired once");
    assert_eq!(app.wallet(buyer).await.expect("wallet").wallet.balance, Money::new(10_000));
    let snapshot = snapshot(&app).await;
    assert!(snapshot.transfers.iter().all(|t| t.kind == TransferKind::TopUp), "no money moved");
    assert_holds(&snapshot);
}

/// An event of `seats` seats (one showtime) that admits one user at a time.
async fn event_with_seats(app: &Shop, seats: usize) -> (EventId, Vec<SeatId>) {
    let command = Command::CreateEvent {
        name: "concert".into(),
        active_limit: 1,
        token_ttl: Duration::from_secs(600),
        max_seats_per_token: tally_core::catalog::MAX_SEATS_PER_TOKEN_DEFAULT,
        showtimes: vec![NewShowtime {
            starts_at: START.plus(Duration::from_secs(86_400)),
            seats: (0..seats).map(|i| NewSeat { label: format!("R{i:03}"), price: amount(50) }).collect(),
        }],
    };
    match admin(app, command).await {
        Outcome::Event(view) => (view.event.id, view.showtimes[0].1.iter().map(|s| s.id).collect()),
        other => panic!("create event answered {other:?}"),
    }
}

/// Races `action` (started at once) against the sweeper, which moves the
/// clock from one millisecond before `deadline` onto it after a pause that
/// varies by round — so the action reads the clock before it moves in some
/// rounds and after in others — then sweeps. Returns the action's result and
/// how many orders that sweep and a settling one expired (a refused action
/// may leave the order for the next sweep: the sweeper skipped it while the
/// action held it).
async fn race_the_sweeper<T, Fut>(app: &Arc<Shop>, round: usize, deadline: Timestamp, action: Fut) -> (T, usize)
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    app.clock().set(Timestamp(deadline.0 - 1));
    let start = Arc::new(tokio::sync::Barrier::new(2));
    let acting = tokio::spawn({
        let start = start.clone();
        async move {
            start.wait().await;
            action.await
        }
    });
    let sweeping = tokio::spawn({
        let app = app.clone();
        let pause = Duration::from_micros(u64::try_from(round % 10).expect("small") * 400);
        async move {
            start.wait().await;
            tokio::time::sleep(pause).await;
            app.clock().set(deadline);
            app.expire_orders(10).await
        }
    });
    let acted = acting.await.expect("action task");
    let swept = sweeping.await.expect("sweep task").expect("sweep");
    let settled = app.expire_orders(10).await.expect("settling sweep");
    (acted, swept + settled)
}

/// Did the order expire under the action: refused because it is expired?
fn refused_as_expired(result: &Result<impl std::fmt::Debug, Error>, order: OrderId) -> bool {
    matches!(result, Err(Error::Order(OrderError::Expired(id) | OrderError::InvalidState { order: id, .. })) if *id == order)
}

/// Invariant 7 (and 5, 6): a confirm racing the expiry sweeper at the TTL's
/// edge ends one way or the other, never both — per round, either the order
/// is paid, its stock and seat taken and its payment charged once, or it is
/// expired, its stock and seat back and its payment never charged.
pub async fn confirm_racing_expiry_ends_one_way(strategy: Strategy) {
    const ROUNDS: usize = 50;
    const PRICE: i64 = 100;
    let app = shop(strategy).await;
    let item = product(&app, PRICE, 50).await;
    let (event, seats) = event_with_seats(&app, ROUNDS).await;
    let buyer = customer(&app, (PRICE + 50) * 50).await;
    let (mut paid, mut expired) = (0_u64, 0_u64);
    for (round, seat) in seats.iter().copied().enumerate() {
        let token = join(&app, buyer, event).await;
        let created = order(&app, buyer, vec![(item.id, 1)], vec![seat], Some(token)).await.expect("order");
        let payment = order_payment(&app, buyer, created.id).await;
        let confirming = {
            let app = app.clone();
            async move { confirm(&app, buyer, payment.id).await }
        };
        let (confirmed, expirations) = race_the_sweeper(&app, round, created.expires_at, confirming).await;
        let stored = stored_order(app.store(), created.id).await;
        let snapshot = snapshot(&app).await;
        let charges = snapshot
            .transfers
            .iter()
            .filter(|t| t.payment == Some(payment.id) && t.kind == TransferKind::Payment)
            .count();
        let payment_now = snapshot.payments.iter().find(|p| p.id == payment.id).expect("payment").clone();
        let seat_now = snapshot.seats.iter().find(|s| s.id == seat).expect("seat").status;
        match &confirmed {
            Ok(done) => {
                assert_eq!(done.status, PaymentStatus::Done);
                assert_eq!((stored.status, stored.payment), (OrderStatus::Paid, Some(payment.id)), "round {round}");
                assert_eq!((charges, expirations), (1, 0), "round {round}: charged once, never expired");
                assert_eq!(seat_now, SeatStatus::Sold(created.id), "round {round}");
                paid += 1;
            }
            refused if refused_as_expired(refused, created.id) => {
                assert_eq!(stored.status, OrderStatus::Expired, "round {round}: {confirmed:?}");
                assert_eq!((charges, payment_now.status), (0, PaymentStatus::Wait), "round {round}: never charged");
                assert_eq!(expirations, 1, "round {round}: expired once");
                assert_eq!(seat_now, SeatStatus::Available, "round {round}");
                expired += 1;
            }
            Err(other) => panic!("round {round}: the confirm failed with {other:?}"),
        }
        assert_holds(&snapshot);
    }
    assert_eq!(stock(&app, item.id).await, (50 - paid, 50));
    let balance = app.wallet(buyer).await.expect("wallet").wallet.balance;
    assert_eq!(balance, Money::new((PRICE + 50) * (50 - i64::try_from(paid).expect("small"))));
    eprintln!("    {strategy:?}: {ROUNDS} rounds of confirm vs expiry: {paid} paid, {expired} expired");
}

/// Invariants 5 and 6: the owner cancelling an unpaid order while the
/// sweeper expires it at the TTL's edge — per round, the order ends
/// cancelled or expired (the cancel refused as expired), and either way its
/// stock and seat come back exactly once.
pub async fn cancel_racing_expiry_gives_back_once(strategy: Strategy) {
    const ROUNDS: usize = 50;
    let app = shop(strategy).await;
    let item = product(&app, 100, 2).await;
    let (event, seats) = event_with_seats(&app, ROUNDS).await;
    let buyer = customer(&app, 0).await;
    let (mut cancelled, mut expired) = (0_u64, 0_u64);
    for (round, seat) in seats.iter().copied().enumerate() {
        let token = join(&app, buyer, event).await;
        let created = order(&app, buyer, vec![(item.id, 2)], vec![seat], Some(token)).await.expect("order");
        let cancelling = {
            let app = app.clone();
            async move { app.execute(buyer, Command::CancelOrder { order: created.id }, None).await }
        };
        let (result, expirations) = race_the_sweeper(&app, round, created.expires_at, cancelling).await;
        let stored = stored_order(app.store(), created.id).await;
        match &result {
            Ok(_) => {
                assert_eq!((stored.status, expirations), (OrderStatus::Cancelled, 0), "round {round}");
                cancelled += 1;
            }
            refused if refused_as_expired(refused, created.id) => {
                assert_eq!((stored.status, expirations), (OrderStatus::Expired, 1), "round {round}: {result:?}");
                expired += 1;
            }
            Err(other) => panic!("round {round}: the cancel failed with {other:?}"),
        }
        assert_eq!(stock(&app, item.id).await, (2, 2), "round {round}: stock back once");
        let snapshot = snapshot(&app).await;
        let seat_now = snapshot.seats.iter().find(|s| s.id == seat).expect("seat").status;
        assert_eq!(seat_now, SeatStatus::Available, "round {round}: seat back");
        assert_holds(&snapshot);
    }
    eprintln!("    {strategy:?}: {ROUNDS} rounds of cancel vs expiry: {cancelled} cancelled, {expired} expired");
}

/// Two sweepers at once over fifty expired orders: every order is expired
/// exactly once (version 1, its stock back once), and the expirations they
/// report add up to fifty (invariants 5 and 7).
pub async fn two_sweepers_expire_each_order_once(strategy: Strategy) {
    let app = shop(strategy).await;
    let item = product(&app, 10, 50).await;
    let buyer = customer(&app, 0).await;
    let mut orders = Vec::new();
    for _ in 0..50 {
        orders.push(order(&app, buyer, vec![(item.id, 1)], vec![], None).await.expect("order").id);
    }
    assert_eq!(stock(&app, item.id).await, (0, 50));
    app.clock().advance(app.config().order_ttl);
    let counts = at_once(2, |_| {
        let app = app.clone();
        async move { app.expire_orders(1_000).await.expect("sweep") }
    })
    .await;
    let together = counts.iter().sum::<usize>();
    // Optimistic sweepers may both lose a conflict on the same order (each
    // to the other's write of the shared product row) and skip it: the next
    // sweep settles it. So may advisory sweepers: a sweeper takes no lock it
    // would wait for, and skips an order whose product the other one holds
    // (as the in-memory lock manager's zero-wait acquire does). Row locks
    // and conditional writes never skip one.
    let next = app.expire_orders(1_000).await.expect("next sweep");
    if matches!(strategy, Strategy::Pessimistic | Strategy::Atomic) {
        assert_eq!((together, next), (50, 0), "sweepers reported {counts:?}");
    }
    assert_eq!(together + next, 50, "sweepers reported {counts:?}, the next sweep {next}");
    assert_eq!(app.expire_orders(1_000).await, Ok(0));
    let snapshot = snapshot(&app).await;
    for id in &orders {
        let stored = snapshot.orders.iter().find(|o| o.id == *id).expect("order");
        assert_eq!((stored.status, stored.version), (OrderStatus::Expired, 1), "expired exactly once");
    }
    assert_eq!(stock(&app, item.id).await, (50, 50));
    assert_holds(&snapshot);
    eprintln!("    {strategy:?}: two sweepers expired {counts:?}, the next sweep {next}");
}

/// Invariant 7, through the gateway: once a gateway charge for an order is
/// in flight (its intent committed, the order marked as being paid), the
/// sweeper leaves the order alone even past its TTL, and the charge's
/// approval pays it — one confirm at the gateway, the stock consumed.
pub async fn gateway_charge_in_flight_holds_off_expiry(strategy: Strategy) {
    let (app, gateway) = shop_with_gateway(strategy).await;
    let item = product(&app, 4_000, 1).await;
    let buyer = customer(&app, 0).await;
    let created = order(&app, buyer, vec![(item.id, 1)], vec![], None).await.expect("order");
    let payment = order_payment_by(&app, buyer, created.id, Method::Gateway).await;
    assert_eq!((payment.order, payment.amount), (Some(created.id), created.total));
    // The gateway takes its time over this confirm.
    gateway.faults().set_latency(Some(LatencyFault::fixed(Duration::from_millis(300)).when(Trigger::Next(1))));
    let confirming = tokio::spawn({
        let app = app.clone();
        async move {
            let command = Command::ConfirmPayment { payment: payment.id, payment_key: Some("pk-order".into()) };
            app.execute(buyer, command, None).await
        }
    });
    // The intent commits before the call: the order names its paying payment.
    let asked = Instant::now();
    while stored_order(app.store(), created.id).await.payment != Some(payment.id) {
        assert!(asked.elapsed() < Duration::from_secs(10), "the confirm never began");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    app.clock().set(created.expires_at.plus(Duration::from_secs(1)));
    assert_eq!(app.expire_orders(10).await, Ok(0), "a charge in flight holds the order");
    let waiting = stored_order(app.store(), created.id).await;
    assert_eq!((waiting.status, waiting.payment), (OrderStatus::PendingPayment, Some(payment.id)));
    assert_eq!(app.order(buyer, created.id).await.expect("order").status, OrderStatus::PendingPayment);
    assert_eq!(stock(&app, item.id).await, (0, 1), "the stock stays reserved");
    let confirmed = confirming.await.expect("confirm task");
    assert!(
        matches!(&confirmed, Ok(Executed::Fresh(Outcome::Payment(p))) if p.status == PaymentStatus::Done),
        "{confirmed:?}"
    );
    let paid = stored_order(app.store(), created.id).await;
    assert_eq!((paid.status, paid.payment), (OrderStatus::Paid, Some(payment.id)), "paid after its TTL");
    assert_eq!(app.expire_orders(10).await, Ok(0));
    assert_eq!(stock(&app, item.id).await, (0, 1));
    let stats = gateway.payment_stats("pk-order");
    assert_eq!((stats.confirm_requests, stats.confirm_effects), (1, 1), "one confirm at the gateway");
    assert_holds(&snapshot(&app).await);
}
