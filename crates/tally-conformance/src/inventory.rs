//! The inventory cases: products, events, seats, the waiting queue and
//! orders, through the use cases and (where a store's own behaviour is the
//! point) through the `Tx` trait directly. Each ends with the invariant
//! checker over the whole store.

use std::time::Duration;

use tally_core::Error;
use tally_core::app::{Command, EventView, Executed, NewSeat, NewShowtime, Outcome, ShowtimeView, Tally, TokenView};
use tally_core::catalog::{
    Event, Product, STOCK_MAX, Seat, SeatEvent, SeatStatus, SeatUnavailable, StockError, StockEvent,
};
use tally_core::check::assert_holds;
use tally_core::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, TokenId, UserId};
use tally_core::money::Money;
use tally_core::order::{Order, OrderError, OrderLine, OrderSeat, OrderStatus};
use tally_core::payment::{Method, Payment, PaymentStatus};
use tally_core::queue::{QueueToken, TokenStatus};
use tally_core::store::{LockManager, Store, StoreError, Tx};
use tally_core::time::ManualClock;
use tally_core::wallet::Limits;

use crate::{Profile, StaleWrite, amount, balance, user};

type App<S, L> = Tally<S, L, ManualClock>;

/// How long tokens of the events made here stay active.
const TOKEN_TTL: Duration = Duration::from_secs(600);

async fn admin<S: Store, L: LockManager>(app: &App<S, L>, command: Command) -> Result<Outcome, Error> {
    match app.execute(UserId::ADMIN, command, None).await? {
        Executed::Fresh(outcome) => Ok(outcome),
        Executed::Replayed(_) => unreachable!("an unkeyed command is never replayed"),
    }
}

async fn new_product<S: Store, L: LockManager>(app: &App<S, L>, price: i64, stock: u64) -> Product {
    // No payback on products here: the cases count money by the price.
    let command = Command::CreateProduct { name: "widget".into(), price: amount(price), stock, payback_bps: Some(0) };
    match admin(app, command).await {
        Ok(Outcome::Product(product)) => product,
        other => panic!("create product: {other:?}"),
    }
}

async fn restock<S: Store, L: LockManager>(
    app: &App<S, L>,
    product: ProductId,
    quantity: u64,
) -> Result<Product, Error> {
    match admin(app, Command::Restock { product, quantity }).await? {
        Outcome::Product(product) => Ok(product),
        other => panic!("restock answered {other:?}"),
    }
}

/// An event with one showtime whose seats have `labels`, all at `price`.
async fn new_event<S: Store, L: LockManager>(app: &App<S, L>, limit: u32, labels: &[&str], price: i64) -> EventView {
    let seats = labels.iter().map(|label| NewSeat { label: (*label).to_owned(), price: amount(price) }).collect();
    let command = Command::CreateEvent {
        name: "concert".into(),
        active_limit: limit,
        token_ttl: TOKEN_TTL,
        max_seats_per_token: tally_core::catalog::MAX_SEATS_PER_TOKEN_DEFAULT,
        showtimes: vec![NewShowtime { starts_at: app.now().plus(Duration::from_secs(86_400)), seats }],
    };
    match admin(app, command).await {
        Ok(Outcome::Event(view)) => view,
        other => panic!("create event: {other:?}"),
    }
}

/// The event's seats by label.
fn seat<'v>(view: &'v EventView, label: &str) -> &'v Seat {
    view.showtimes[0].1.iter().find(|s| s.label == label).expect("a seat with that label")
}

async fn join<S: Store, L: LockManager>(app: &App<S, L>, user: UserId, event: EventId) -> TokenView {
    execute!(app, user, Command::JoinQueue { event } => Token, "join queue").expect("join queue")
}

async fn order<S: Store, L: LockManager>(
    app: &App<S, L>,
    user: UserId,
    items: &[(ProductId, u64)],
    seats: &[SeatId],
    token: Option<TokenId>,
) -> Result<Order, Error> {
    let command = Command::CreateOrder { items: items.to_vec(), seats: seats.to_vec(), token };
    execute!(app, user, command => Order, "create order")
}

/// Joins `event`'s queue (or gets the live token) and orders with the token.
async fn order_in_queue<S: Store, L: LockManager>(
    app: &App<S, L>,
    user: UserId,
    event: EventId,
    items: &[(ProductId, u64)],
    seats: &[SeatId],
) -> Result<Order, Error> {
    let token = join(app, user, event).await.token.id;
    order(app, user, items, seats, Some(token)).await
}

/// A buyer with 1,000 in the wallet and an unpaid order, made in the queue,
/// for some units of a new product and the one seat of a new event.
struct ProductAndSeat {
    product: ProductId,
    seat: SeatId,
    buyer: UserId,
    order: Order,
}

/// Orders `units` of a new product (`price`, `stock`) and the seat `label`
/// of a new event (`seat_price`).
async fn order_product_and_seat<S: Store, L: LockManager>(
    app: &App<S, L>,
    (price, stock, units): (i64, u64, u64),
    (label, seat_price): (&str, i64),
) -> ProductAndSeat {
    let product = new_product(app, price, stock).await.id;
    let view = new_event(app, 1, &[label], seat_price).await;
    let seat = seat(&view, label).id;
    let buyer = user(app, Limits::default(), 1_000).await;
    let order = order_in_queue(app, buyer, view.event.id, &[(product, units)], &[seat]).await.expect("order");
    ProductAndSeat { product, seat, buyer, order }
}

/// A buyer with `balance` in the wallet and an unpaid order for one unit of
/// a new product (`price`, `stock`).
async fn order_one_unit<S: Store, L: LockManager>(
    app: &App<S, L>,
    (price, stock): (i64, u64),
    balance: i64,
) -> (ProductId, UserId, Order) {
    let product = new_product(app, price, stock).await.id;
    let buyer = user(app, Limits::default(), balance).await;
    let order = order(app, buyer, &[(product, 1)], &[], None).await.expect("order");
    (product, buyer, order)
}

async fn order_payment<S: Store, L: LockManager>(
    app: &App<S, L>,
    user: UserId,
    order: OrderId,
) -> Result<Payment, Error> {
    let command = Command::CreateOrderPayment { order, method: Method::Wallet, confirm: false };
    execute!(app, user, command => Payment, "create order payment")
}

async fn confirm<S: Store, L: LockManager>(
    app: &App<S, L>,
    user: UserId,
    payment: PaymentId,
) -> Result<Payment, Error> {
    execute!(app, user, Command::ConfirmPayment { payment, payment_key: None } => Payment, "confirm")
}

/// Pays an order from the wallet: a payment for it, confirmed.
async fn pay<S: Store, L: LockManager>(app: &App<S, L>, user: UserId, order: OrderId) -> Payment {
    let payment = order_payment(app, user, order).await.expect("create order payment");
    confirm(app, user, payment.id).await.expect("confirm order payment")
}

async fn cancel_order<S: Store, L: LockManager>(app: &App<S, L>, user: UserId, order: OrderId) -> Result<Order, Error> {
    execute!(app, user, Command::CancelOrder { order } => Order, "cancel order")
}

/// Records as stored (not as a reader sees them now), read in a transaction
/// that writes nothing.
struct Stored;

impl Stored {
    async fn order<S: Store, L: LockManager>(app: &App<S, L>, id: OrderId) -> Order {
        read(app, |tx| Box::pin(tx.order(id))).await.expect("load order").expect("the order exists")
    }

    async fn seat<S: Store, L: LockManager>(app: &App<S, L>, id: SeatId) -> Seat {
        read(app, |tx| Box::pin(tx.seat(id))).await.expect("load seat").expect("the seat exists")
    }

    async fn event<S: Store, L: LockManager>(app: &App<S, L>, id: EventId) -> Event {
        read(app, |tx| Box::pin(tx.event(id))).await.expect("load event").expect("the event exists")
    }

    async fn token<S: Store, L: LockManager>(app: &App<S, L>, id: TokenId) -> QueueToken {
        read(app, |tx| Box::pin(tx.token(id))).await.expect("load token").expect("the token exists")
    }

    async fn expired_orders<S: Store, L: LockManager>(app: &App<S, L>, limit: usize) -> Vec<OrderId> {
        let now = app.now();
        read(app, |tx| Box::pin(tx.expired_orders(now, limit))).await.expect("list expired orders")
    }
}

async fn stock<S: Store, L: LockManager>(app: &App<S, L>, product: ProductId) -> (u64, u64) {
    let product = app.product(product).await.expect("product");
    (product.stock, product.stocked)
}

pub(crate) async fn holds<S: Store, L: LockManager>(app: &App<S, L>) {
    assert_holds(&app.snapshot().await.expect("snapshot"));
}

/// Every inventory record comes back exactly as written: through the use
/// cases' reads, through the `Tx` loads, and in the checker's snapshot.
pub(crate) async fn inventory_records_round_trip<S: Store, L: LockManager>(app: &App<S, L>, _: Profile) {
    let product = new_product(app, 250, 7).await;
    assert_eq!(app.product(product.id).await, Ok(product.clone()));
    // Seats list by label in byte order (digits, upper case, lower case),
    // whatever order they were created in.
    let view = new_event(app, 3, &["B1", "a1", "A2", "A10"], 900).await;
    let (showtime, seats) = &view.showtimes[0];
    assert_eq!(
        app.showtimes(view.event.id).await,
        Ok(vec![ShowtimeView { showtime: showtime.clone(), available_seats: 4 }])
    );
    let listed = app.seats(showtime.id).await.expect("seats");
    let labels: Vec<&str> = listed.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["A10", "A2", "B1", "a1"]);
    let mut expected = seats.clone();
    expected.sort_by(|a, b| (&a.label, a.id).cmp(&(&b.label, b.id)));
    assert_eq!(listed, expected, "seats round-trip exactly");
    let mut tx = app.store().begin().await.expect("begin");
    assert_eq!(tx.event(view.event.id).await, Ok(Some(view.event.clone())));
    assert_eq!(tx.showtime(showtime.id).await, Ok(Some(showtime.clone())));
    assert_eq!(tx.showtimes(view.event.id).await, Ok(vec![showtime.clone()]));
    assert_eq!(tx.product(ProductId(product.id.0 ^ 1 << 90)).await, Ok(None));
    assert_eq!(tx.order(OrderId(product.id.0 ^ 1 << 91)).await, Ok(None));
    tx.rollback().await;

    let buyer = user(app, Limits::default(), 10_000).await;
    let token = join(app, buyer, view.event.id).await;
    assert_eq!((token.status, token.position), (TokenStatus::Active, 0));
    assert_eq!(token.token.expires_at, Some(app.now().plus(TOKEN_TTL)));
    let mut tx = app.store().begin().await.expect("begin");
    assert_eq!(tx.token(token.token.id).await, Ok(Some(token.token.clone())));
    assert_eq!(tx.user_token(view.event.id, buyer).await, Ok(Some(token.token.clone())));
    assert_eq!(tx.tokens(view.event.id, TokenStatus::Active, 10).await, Ok(vec![token.token.clone()]));
    assert_eq!(tx.tokens(view.event.id, TokenStatus::Waiting, 10).await, Ok(vec![]));
    tx.rollback().await;

    let second = new_product(app, 40, 3).await;
    let (a2, a10) = (seat(&view, "A2").id, seat(&view, "A10").id);
    let created =
        order(app, buyer, &[(second.id, 2), (product.id, 1)], &[a2, a10], Some(token.token.id)).await.expect("order");
    assert_eq!(created.total, amount(250 + 2 * 40 + 2 * 900));
    let mut lines = vec![
        OrderLine { product: product.id, quantity: 1, unit_price: amount(250) },
        OrderLine { product: second.id, quantity: 2, unit_price: amount(40) },
    ];
    lines.sort_by_key(|l| l.product);
    assert_eq!(created.lines, lines, "one line per product, by product");
    let mut seat_lines = vec![OrderSeat { seat: a2, price: amount(900) }, OrderSeat { seat: a10, price: amount(900) }];
    seat_lines.sort_by_key(|s| s.seat);
    assert_eq!(created.seats, seat_lines);
    assert_eq!((created.event, created.token), (Some(view.event.id), Some(token.token.id)));
    assert_eq!(created.expires_at, app.now().plus(app.config().order_ttl));
    assert_eq!(app.order(buyer, created.id).await, Ok(created.clone()));
    assert_eq!(Stored::order(app, created.id).await, created, "an order round-trips exactly");
    let snapshot = app.snapshot().await.expect("snapshot");
    assert!(snapshot.orders.contains(&created), "the snapshot holds the order exactly");
    assert!(snapshot.products.contains(&app.product(product.id).await.expect("product")));
    assert!(snapshot.events.contains(&Stored::event(app, view.event.id).await));
    assert!(snapshot.seats.contains(&Stored::seat(app, a2).await));
    // The order booked two seats with the token: it counts them.
    let booked = token.token.book_seats(2, tally_core::catalog::MAX_SEATS_PER_TOKEN_DEFAULT).expect("within the limit");
    assert!(snapshot.tokens.contains(&booked), "the token round-trips with its seat count");
    let other = user(app, Limits::default(), 0).await;
    assert_eq!(app.order(other, created.id).await, Err(Error::NotFound), "another user's order is not found");
    holds(app).await;
}

/// Seed 004: an order takes all its stock and seats at once, or nothing.
pub(crate) async fn an_order_reserves_everything_or_nothing<S: Store, L: LockManager>(app: &App<S, L>, _: Profile) {
    let buyer = user(app, Limits::default(), 0).await;
    let a = new_product(app, 100, 5).await;
    let b = new_product(app, 300, 1).await;
    let refused = order(app, buyer, &[(a.id, 2), (b.id, 2)], &[], None).await;
    assert_eq!(refused, Err(Error::Stock(StockError::OutOfStock { product: b.id, available: 1, wanted: 2 })));
    assert_eq!((stock(app, a.id).await, stock(app, b.id).await), ((5, 5), (1, 1)), "nothing was reserved");
    // A seat someone else holds spoils the whole order too.
    let view = new_event(app, 2, &["S1"], 500).await;
    let s1 = seat(&view, "S1").id;
    let holder = user(app, Limits::default(), 0).await;
    let held = order_in_queue(app, holder, view.event.id, &[], &[s1]).await.expect("hold the seat");
    let refused = order_in_queue(app, buyer, view.event.id, &[(a.id, 1)], &[s1]).await;
    assert!(
        matches!(refused, Err(Error::Seat(SeatUnavailable { seat, status: SeatStatus::Held(by), .. })) if seat == s1 && by == held.id),
        "{refused:?}"
    );
    assert_eq!(stock(app, a.id).await, (5, 5), "the product line was not reserved either");
    let snapshot = app.snapshot().await.expect("snapshot");
    assert!(snapshot.orders.iter().all(|o| o.user != buyer), "no refused order was written");
    // Within stock, everything at once.
    let taken = order(app, buyer, &[(b.id, 1), (a.id, 2)], &[], None).await.expect("order");
    assert_eq!(taken.total, amount(2 * 100 + 300));
    assert_eq!((stock(app, a.id).await, stock(app, b.id).await), ((3, 5), (0, 1)));
    assert_eq!(Stored::seat(app, s1).await.status, SeatStatus::Held(held.id));
    holds(app).await;
}

/// Restocking adds to what is available and to what was ever stocked.
pub(crate) async fn restock_adds_stock<S: Store, L: LockManager>(app: &App<S, L>, _: Profile) {
    let buyer = user(app, Limits::default(), 0).await;
    let product = new_product(app, 50, 0).await;
    let refused = order(app, buyer, &[(product.id, 1)], &[], None).await;
    assert_eq!(refused, Err(Error::Stock(StockError::OutOfStock { product: product.id, available: 0, wanted: 1 })));
    let restocked = restock(app, product.id, 4).await.expect("restock");
    assert_eq!((restocked.stock, restocked.stocked, restocked.version), (4, 4, product.version + 1));
    assert_eq!(app.product(product.id).await, Ok(restocked), "a restocked product round-trips exactly");
    order(app, buyer, &[(product.id, 3)], &[], None).await.expect("order within the new stock");
    assert_eq!(stock(app, product.id).await, (1, 4));
    assert_eq!(restock(app, product.id, 0).await, Err(Error::Stock(StockError::ZeroQuantity)));
    assert_eq!(restock(app, product.id, STOCK_MAX).await, Err(Error::Stock(StockError::TooMuchStock(product.id))));
    assert_eq!(restock(app, ProductId(product.id.0 ^ 1 << 92), 1).await, Err(Error::NotFound));
    assert_eq!(stock(app, product.id).await, (1, 4), "refused restocks change nothing");
    holds(app).await;
}

/// Seed 002: a booked seat is held by its order, and sold when it is paid;
/// nobody else can take it meanwhile.
pub(crate) async fn a_seat_is_held_then_sold_on_pay<S: Store, L: LockManager>(app: &App<S, L>, _: Profile) {
    let view = new_event(app, 2, &["R1", "R2"], 700).await;
    let (r1, r2) = (seat(&view, "R1").id, seat(&view, "R2").id);
    let buyer = user(app, Limits::default(), 5_000).await;
    let rival = user(app, Limits::default(), 5_000).await;
    let buyer_token = join(app, buyer, view.event.id).await;
    let rival_token = join(app, rival, view.event.id).await;
    assert_eq!((buyer_token.status, rival_token.status), (TokenStatus::Active, TokenStatus::Active));
    let held = order(app, buyer, &[], &[r1], Some(buyer_token.token.id)).await.expect("hold");
    assert_eq!(held.seats, [OrderSeat { seat: r1, price: amount(700) }]);
    assert_eq!(held.total, amount(700));
    assert_eq!(Stored::seat(app, r1).await.status, SeatStatus::Held(held.id));
    let taken = order(app, rival, &[], &[r1], Some(rival_token.token.id)).await;
    assert!(
        matches!(taken, Err(Error::Seat(SeatUnavailable { seat, status: SeatStatus::Held(by), event: SeatEvent::Hold(_) })) if seat == r1 && by == held.id),
        "{taken:?}"
    );
    // Seats need the caller's own active token.
    assert!(matches!(order(app, rival, &[], &[r2], Some(buyer_token.token.id)).await, Err(Error::Forbidden(_))));
    assert!(matches!(order(app, rival, &[], &[r2], None).await, Err(Error::Forbidden(_))));
    assert_eq!(Stored::seat(app, r2).await.status, SeatStatus::Available);

    let payment = order_payment(app, buyer, held.id).await.expect("payment");
    assert_eq!((payment.order, payment.amount, payment.status), (Some(held.id), amount(700), PaymentStatus::Wait));
    assert_eq!(app.payment(buyer, payment.id).await, Ok(payment.clone()), "a payment's order round-trips");
    let done = confirm(app, buyer, payment.id).await.expect("confirm");
    assert_eq!(done.status, PaymentStatus::Done);
    assert_eq!(Stored::seat(app, r1).await.status, SeatStatus::Sold(held.id));
    let paid = app.order(buyer, held.id).await.expect("order");
    assert_eq!((paid.status, paid.payment, paid.version), (OrderStatus::Paid, Some(payment.id), held.version + 1));
    // Seats pay back at the service default (10 % of 700).
    assert_eq!((payment.payback, paid.payback), (Money::new(70), Money::new(70)));
    assert_eq!(balance(app, buyer).await, Money::new(4_300 + 70));
    assert_eq!(Stored::token(app, buyer_token.token.id).await.status, TokenStatus::Used, "paying used the token");
    holds(app).await;
}

/// Cancelling a paid order refunds it and gives its stock and seats back;
/// cancelling an unpaid one gives them back and moves no money.
pub(crate) async fn cancelling_an_order_gives_everything_back<S: Store, L: LockManager>(app: &App<S, L>, _: Profile) {
    let ProductAndSeat { product, seat: c1, buyer, order: created } =
        order_product_and_seat(app, (120, 3, 2), ("C1", 400)).await;
    assert_eq!(created.total, amount(640));
    let payment = pay(app, buyer, created.id).await;
    assert_eq!(balance(app, buyer).await, Money::new(360 + 40), "paid 640, the seat's 10 % back");
    assert_eq!(stock(app, product).await, (1, 3));

    let cancelled = cancel_order(app, buyer, created.id).await.expect("cancel the paid order");
    assert_eq!((cancelled.status, cancelled.payment), (OrderStatus::Cancelled, Some(payment.id)));
    assert_eq!(Stored::order(app, created.id).await, cancelled);
    assert_eq!(balance(app, buyer).await, Money::new(1_000), "refunded");
    assert_eq!(app.payment(buyer, payment.id).await.expect("payment").status, PaymentStatus::Cancelled);
    assert_eq!(stock(app, product).await, (3, 3), "stock back");
    assert_eq!(Stored::seat(app, c1).await.status, SeatStatus::Available, "seat back");
    assert!(matches!(
        cancel_order(app, buyer, created.id).await,
        Err(Error::Order(OrderError::InvalidState { status: OrderStatus::Cancelled, .. }))
    ));
    let other = user(app, Limits::default(), 0).await;
    assert_eq!(cancel_order(app, other, created.id).await, Err(Error::NotFound));

    let unpaid = order(app, buyer, &[(product, 1)], &[], None).await.expect("order");
    assert_eq!(stock(app, product).await, (2, 3));
    assert_eq!(cancel_order(app, buyer, unpaid.id).await.expect("cancel").status, OrderStatus::Cancelled);
    assert_eq!(stock(app, product).await, (3, 3));
    assert_eq!(balance(app, buyer).await, Money::new(1_000), "no money moved");
    holds(app).await;
}

/// Seed 004's scheduled job: an unpaid order past its TTL expires and gives
/// its stock and seats back — not a moment before.
pub(crate) async fn unpaid_orders_expire_and_give_back<S: Store, L: LockManager>(app: &App<S, L>, _: Profile) {
    let ProductAndSeat { product, seat: e1, buyer, order: created } =
        order_product_and_seat(app, (90, 4, 3), ("E1", 300)).await;
    assert_eq!(stock(app, product).await, (1, 4));

    app.clock().advance(app.config().order_ttl - Duration::from_millis(1));
    app.expire_orders(1_000).await.expect("sweep");
    assert_eq!(Stored::order(app, created.id).await, created, "a millisecond before its TTL ends, untouched");
    assert_eq!(stock(app, product).await, (1, 4));

    app.clock().advance(Duration::from_millis(1));
    assert_eq!(app.now(), created.expires_at);
    assert_eq!(
        app.order(buyer, created.id).await.expect("order").status,
        OrderStatus::Expired,
        "readers see it expired"
    );
    assert_eq!(Stored::order(app, created.id).await.status, OrderStatus::PendingPayment, "before the sweep");
    let swept = app.expire_orders(1_000).await.expect("sweep");
    assert!(swept >= 1, "swept {swept}");
    let expired = Stored::order(app, created.id).await;
    assert_eq!((expired.status, expired.payment, expired.version), (OrderStatus::Expired, None, created.version + 1));
    assert_eq!(stock(app, product).await, (4, 4), "stock back");
    assert_eq!(Stored::seat(app, e1).await.status, SeatStatus::Available, "seat back");
    assert_eq!(order_payment(app, buyer, created.id).await, Err(Error::Order(OrderError::Expired(created.id))));
    assert_eq!(cancel_order(app, buyer, created.id).await, Err(Error::Order(OrderError::Expired(created.id))));
    app.expire_orders(1_000).await.expect("sweep again");
    assert_eq!(Stored::order(app, created.id).await, expired, "expired once");
    assert_eq!(balance(app, buyer).await, Money::new(1_000), "no money moved");
    holds(app).await;
}

/// The sweeper's listing: unpaid orders whose TTL ended, oldest deadline
/// first, at most `limit`; paid ones never.
pub(crate) async fn the_sweeper_lists_unpaid_orders_past_their_ttl<S: Store, L: LockManager>(
    app: &App<S, L>,
    _: Profile,
) {
    let product = new_product(app, 100, 10).await;
    let buyer = user(app, Limits::default(), 10_000).await;
    let first = order(app, buyer, &[(product.id, 1)], &[], None).await.expect("order");
    app.clock().advance(Duration::from_millis(1));
    let second = order(app, buyer, &[(product.id, 1)], &[], None).await.expect("order");
    app.clock().advance(Duration::from_millis(1));
    let paid = order(app, buyer, &[(product.id, 1)], &[], None).await.expect("order");
    pay(app, buyer, paid.id).await;
    let ours = |listed: Vec<OrderId>| -> Vec<OrderId> {
        listed.into_iter().filter(|id| [first.id, second.id, paid.id].contains(id)).collect()
    };
    assert!(ours(Stored::expired_orders(app, 1_000).await).is_empty(), "none is past its TTL yet");
    app.clock().advance(app.config().order_ttl);
    assert_eq!(ours(Stored::expired_orders(app, 1_000).await), [first.id, second.id], "oldest deadline first");
    assert_eq!(Stored::expired_orders(app, 1).await.len(), 1, "at most the limit");
    app.expire_orders(1_000).await.expect("sweep");
    assert!(ours(Stored::expired_orders(app, 1_000).await).is_empty(), "swept");
    assert_eq!(Stored::order(app, paid.id).await.status, OrderStatus::Paid, "a paid order never expires");
    assert_eq!(stock(app, product.id).await, (9, 10));
    holds(app).await;
}

/// SPEC.md invariant 8 and seed 002's queue: with a limit of one, the second
/// joiner waits; paying the first's order uses its token and promotes the
/// second; a token whose TTL passed frees its slot too.
pub(crate) async fn the_queue_admits_k_and_promotes_in_order<S: Store, L: LockManager>(app: &App<S, L>, _: Profile) {
    let view = new_event(app, 1, &["Q1", "Q2"], 200).await;
    let event = view.event.id;
    let (q1, q2) = (seat(&view, "Q1").id, seat(&view, "Q2").id);
    let first = user(app, Limits::default(), 1_000).await;
    let second = user(app, Limits::default(), 1_000).await;
    let first_token = join(app, first, event).await;
    assert_eq!((first_token.status, first_token.position), (TokenStatus::Active, 0));
    let second_token = join(app, second, event).await;
    assert_eq!((second_token.status, second_token.position), (TokenStatus::Waiting, 1));
    let again = join(app, second, event).await;
    assert_eq!(
        (again.token.id, again.status),
        (second_token.token.id, TokenStatus::Waiting),
        "one live token per user"
    );
    assert!(matches!(order(app, second, &[], &[q2], Some(second_token.token.id)).await, Err(Error::Forbidden(_))));
    let stored = Stored::event(app, event).await;
    assert_eq!((stored.active_count, stored.next_seq, stored.head_seq), (1, 3, 2));

    let booked = order(app, first, &[], &[q1], Some(first_token.token.id)).await.expect("order");
    pay(app, first, booked.id).await;
    assert_eq!(Stored::token(app, first_token.token.id).await.status, TokenStatus::Used);
    let promoted = Stored::token(app, second_token.token.id).await;
    assert_eq!(promoted.status, TokenStatus::Active, "promoted in the payment's transaction");
    assert_eq!(promoted.expires_at, Some(app.now().plus(TOKEN_TTL)));
    let seen = app.queue_token(second, second_token.token.id).await.expect("status");
    assert_eq!((seen.status, seen.position), (TokenStatus::Active, 0));
    assert_eq!(Stored::event(app, event).await.active_count, 1);
    order(app, second, &[], &[q2], Some(second_token.token.id)).await.expect("the promoted token books");
    assert_eq!(app.queue_token(first, second_token.token.id).await, Err(Error::NotFound), "a token is its owner's");

    let third = user(app, Limits::default(), 0).await;
    let third_token = join(app, third, event).await;
    assert_eq!((third_token.status, third_token.position), (TokenStatus::Waiting, 1));
    app.clock().advance(TOKEN_TTL);
    let seen = app.queue_token(third, third_token.token.id).await.expect("status");
    assert_eq!((seen.status, seen.position), (TokenStatus::Active, 0), "the expired token's slot went to the next");
    assert_eq!(Stored::token(app, second_token.token.id).await.status, TokenStatus::Expired);
    assert_eq!(app.queue_token(second, second_token.token.id).await.expect("status").status, TokenStatus::Expired);
    let stored = Stored::event(app, event).await;
    assert_eq!((stored.active_count, stored.head_seq), (1, 4));
    holds(app).await;
}

/// SPEC.md invariant 7: an order is paid once. A second payment created
/// while it was unpaid is refused at confirm, and charges nothing.
pub(crate) async fn a_paid_order_cannot_be_paid_again<S: Store, L: LockManager>(app: &App<S, L>, _: Profile) {
    let (_, buyer, created) = order_one_unit(app, (500, 2), 5_000).await;
    let one = order_payment(app, buyer, created.id).await.expect("first payment");
    let two = order_payment(app, buyer, created.id).await.expect("second payment");
    confirm(app, buyer, one.id).await.expect("the first pays");
    assert_eq!(balance(app, buyer).await, Money::new(4_500));
    let refused = confirm(app, buyer, two.id).await;
    assert!(
        matches!(refused, Err(Error::Order(OrderError::InvalidState { order, status: OrderStatus::Paid, .. })) if order == created.id),
        "{refused:?}"
    );
    assert_eq!(app.payment(buyer, two.id).await.expect("payment").status, PaymentStatus::Wait);
    assert!(matches!(
        order_payment(app, buyer, created.id).await,
        Err(Error::Order(OrderError::InvalidState { status: OrderStatus::Paid, .. }))
    ));
    assert_eq!(balance(app, buyer).await, Money::new(4_500), "charged once");
    let stored = Stored::order(app, created.id).await;
    assert_eq!((stored.status, stored.payment), (OrderStatus::Paid, Some(one.id)));
    holds(app).await;
}

/// SPEC.md invariant 7: a payment confirmed after its order's TTL is refused
/// with `order_expired` and charges nothing; once swept, the order is over.
pub(crate) async fn a_payment_after_the_ttl_is_refused<S: Store, L: LockManager>(app: &App<S, L>, _: Profile) {
    let (product, buyer, created) = order_one_unit(app, (80, 1), 1_000).await;
    let payment = order_payment(app, buyer, created.id).await.expect("payment, in time");
    app.clock().advance(app.config().order_ttl);
    assert_eq!(confirm(app, buyer, payment.id).await, Err(Error::Order(OrderError::Expired(created.id))));
    assert_eq!(balance(app, buyer).await, Money::new(1_000));
    assert_eq!(app.payment(buyer, payment.id).await.expect("payment").status, PaymentStatus::Wait);
    assert_eq!(Stored::order(app, created.id).await, created, "the refusal wrote nothing");
    app.expire_orders(1_000).await.expect("sweep");
    assert_eq!(Stored::order(app, created.id).await.status, OrderStatus::Expired);
    assert_eq!(stock(app, product).await, (1, 1));
    assert_eq!(
        confirm(app, buyer, payment.id).await,
        Err(Error::Order(OrderError::Expired(created.id))),
        "too late to pay, swept or not"
    );
    assert_eq!(balance(app, buyer).await, Money::new(1_000), "no money moved");
    holds(app).await;
}

/// What a decision on a stale read does to inventory: stock conflicts or
/// re-bases (as a wallet does); a seat's hold and an event's counters always
/// conflict where writes are checked.
pub(crate) async fn stale_inventory_writes<S: Store, L: LockManager>(app: &App<S, L>, profile: Profile) {
    if profile.stale_write == StaleWrite::Unchecked {
        return;
    }
    let product = new_product(app, 10, 10).await;
    let buyer = user(app, Limits::default(), 0).await;
    let mut tx = app.store().begin().await.expect("begin");
    let stale = tx.product(product.id).await.expect("load").expect("product");
    tx.rollback().await;
    order(app, buyer, &[(product.id, 3)], &[], None).await.expect("someone else reserves 3");
    // A restock decided on the stale read (10 of 10 → 12 of 12).
    let restocked = stale.apply(StockEvent::Restock(2), app.now()).expect("restock");
    let result = write(app, |tx| Box::pin(async move { tx.put_product(Some(&stale), &restocked).await })).await;
    match profile.stale_write {
        StaleWrite::Conflicts => {
            assert_eq!(result, Err(StoreError::Conflict));
            assert_eq!(stock(app, product.id).await, (7, 10));
        }
        StaleWrite::Rebases => {
            assert_eq!(result, Ok(()));
            assert_eq!(stock(app, product.id).await, (9, 12), "the restock lands on the current row");
        }
        StaleWrite::Unchecked => unreachable!("returned above"),
    }

    let view = new_event(app, 2, &["T1"], 50).await;
    let t1 = seat(&view, "T1").id;
    let mut tx = app.store().begin().await.expect("begin");
    let stale_seat = tx.seat(t1).await.expect("load").expect("seat");
    let stale_event = tx.event(view.event.id).await.expect("load").expect("event");
    tx.rollback().await;
    let token = join(app, buyer, view.event.id).await.token.id;
    let held = order(app, buyer, &[], &[t1], Some(token)).await.expect("hold");
    // A hold decided on the stale read, for another of the buyer's orders.
    let other = order(app, buyer, &[(product.id, 1)], &[], None).await.expect("order");
    let hold = stale_seat.apply(SeatEvent::Hold(other.id)).expect("hold on the stale read");
    let result = write(app, |tx| Box::pin(async move { tx.put_seat(Some(&stale_seat), &hold).await })).await;
    assert_eq!(result, Err(StoreError::Conflict), "a seat is never taken from its holder");
    assert_eq!(Stored::seat(app, t1).await.status, SeatStatus::Held(held.id));
    let bumped = Event { next_seq: stale_event.next_seq + 1, version: stale_event.version + 1, ..stale_event.clone() };
    let result = write(app, |tx| Box::pin(async move { tx.put_event(Some(&stale_event), &bumped).await })).await;
    assert_eq!(result, Err(StoreError::Conflict), "queue counters are never written over");
    assert_eq!(Stored::event(app, view.event.id).await.next_seq, 2);
    holds(app).await;
}

/// What [`read`] runs: loads from one transaction.
pub(crate) type Read<'t, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 't>>;

/// Runs `body` in a transaction that writes nothing, then rolls it back.
pub(crate) async fn read<S: Store, L: LockManager, T, F>(app: &App<S, L>, body: F) -> T
where
    F: for<'t> FnOnce(&'t mut S::Tx) -> Read<'t, T>,
{
    let mut tx = app.store().begin().await.expect("begin");
    let found = body(&mut tx).await;
    tx.rollback().await;
    found
}

pub(crate) type Write<'t> = std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 't>>;

/// Runs one write in its own transaction and commits it; the first error
/// (from the write or the commit) is the result.
pub(crate) async fn write<S: Store, L: LockManager, F>(app: &App<S, L>, body: F) -> Result<(), StoreError>
where
    F: for<'t> FnOnce(&'t mut S::Tx) -> Write<'t>,
{
    let mut tx = app.store().begin().await?;
    match body(&mut tx).await {
        Ok(()) => tx.commit().await,
        Err(error) => {
            tx.rollback().await;
            Err(error)
        }
    }
}
