//! Test helpers shared by the in-memory suites (zero2prod's `spawn_app`, for
//! a backend that needs no server): build a `Tally` on the in-memory store,
//! make users, run commands, render results the way an HTTP layer would.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tally_core::app::{Command, Config, Executed, Keyed, NewSeat, NewShowtime, Outcome, Render, TokenView};
use tally_core::gateway::Gateway;
use tally_core::idempotency::{Fingerprint, IdemKey, StoredResponse};
use tally_core::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, SeqIds, TokenId, UserId};
use tally_core::money::{Amount, Money};
use tally_core::order::Order;
use tally_core::payment::{Method, Payment};
use tally_core::queue::TokenStatus;
use tally_core::store::{LockManager, NoLocks};
use tally_core::time::{Clock, ManualClock, Timestamp};
use tally_core::wallet::Limits;
use tally_core::{Error, Tally};
use tally_mem::{Concurrency, MemGateway, MemLocks, MemStore};

/// The merchant's default payback in every test app: 10 %, so that every
/// payment also moves a payback (the conformance suite requires it).
pub const PAYBACK_BPS: u32 = tally_conformance::PAYBACK_BPS;

/// The use cases' configuration in the tests. `TALLY_TEST_BATCH_MAX=N`
/// runs every keyed request through the group commit (`.ci/run` makes a
/// second pass with it), so the same proofs hold batched.
pub fn config() -> Config {
    let batch_max = std::env::var("TALLY_TEST_BATCH_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    Config { payback_bps: PAYBACK_BPS, batch_max, ..Config::default() }
}

/// 2026-11-23T00:00:00Z: tests start on a known day.
pub const START: Timestamp = Timestamp(20_780 * 86_400_000);

pub type LockedTally = Tally<MemStore, MemLocks<ManualClock>, ManualClock>;
pub type OptimisticTally = Tally<MemStore, NoLocks, ManualClock>;
pub type GatewayTally = Tally<MemStore, MemLocks<ManualClock>, ManualClock, MemGateway>;

/// The locked in-memory backend with an in-memory payment gateway.
pub fn with_gateway() -> (Arc<GatewayTally>, MemGateway) {
    let clock = ManualClock::new(START);
    let locks = MemLocks::new(clock.clone(), tally_lock::Config::default());
    let gateway = MemGateway::new();
    let app = Tally::new(MemStore::new(Concurrency::Locked), locks, clock, Arc::new(SeqIds::new(1)), config())
        .with_gateway(gateway.clone());
    (Arc::new(app), gateway)
}

/// The in-memory backend as the proofs run it: in-memory locks, blind writes.
pub fn locked() -> Arc<LockedTally> {
    let clock = ManualClock::new(START);
    let locks = MemLocks::new(clock.clone(), tally_lock::Config::default());
    Arc::new(Tally::new(MemStore::new(Concurrency::Locked), locks, clock, Arc::new(SeqIds::new(1)), config()))
}

/// The optimistic strategy: no locks, version-checked commits, bounded retries.
pub fn optimistic() -> Arc<OptimisticTally> {
    let clock = ManualClock::new(START);
    let config = Config { attempts_max: 16, ..config() };
    Arc::new(Tally::new(MemStore::new(Concurrency::Optimistic), NoLocks, clock, Arc::new(SeqIds::new(1)), config))
}

pub fn amount(minor_units: i64) -> Amount {
    Amount::new(minor_units).expect("test amounts are valid")
}

/// Runs a future to completion on the current thread. The in-memory store
/// never suspends except on a contended lock, which sequential tests never
/// meet; under shuttle, tests use shuttle's own `block_on` instead.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Renders results as an HTTP layer would, deterministically: successes and
/// refusals are stored, everything else is not.
pub fn render(result: &Result<Outcome, Error>) -> Option<StoredResponse> {
    let (status, body) = match result {
        Ok(outcome) => (201, format!("{outcome:?}")),
        Err(error) if error.is_refusal() => (409, format!("{error:?}")),
        Err(_) => return None,
    };
    Some(StoredResponse { status, content_type: "text/plain".into(), body: body.into_bytes() })
}

pub static RENDER: &Render = &render;

/// The idempotency part of a request: the fingerprint is a digest of the
/// command, as the HTTP layer digests method, path and body.
pub fn keyed(key: &str, command: &Command) -> Keyed<'static> {
    let digest = format!("{command:?}");
    let mut fingerprint = [0u8; 32];
    for (i, byte) in digest.bytes().enumerate() {
        fingerprint[i % 32] = fingerprint[i % 32].wrapping_mul(31).wrapping_add(byte);
    }
    Keyed {
        key: IdemKey::new(key).expect("test keys are valid"),
        fingerprint: Fingerprint(fingerprint),
        render: RENDER,
    }
}

pub async fn user_with<L: LockManager, C: Clock, G: Gateway>(
    app: &Tally<MemStore, L, C, G>,
    limits: Limits,
    balance: i64,
) -> UserId {
    static NEXT_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut key_hash = [0u8; 32];
    key_hash[..8].copy_from_slice(&n.to_le_bytes());
    let user = app.create_user("test user", limits, key_hash).await.expect("create user").id;
    if balance > 0 {
        app.execute(user, Command::TopUp { amount: amount(balance) }, None).await.expect("top up");
    }
    user
}

pub async fn new_payment<L: LockManager, C: Clock, G: Gateway>(
    app: &Tally<MemStore, L, C, G>,
    user: UserId,
    minor_units: i64,
    payback: i64,
) -> PaymentId {
    create_payment(app, user, (minor_units, payback), Method::Wallet).await
}

/// A waiting payment of `minor_units` by `method`, whose payback the call
/// site names (the merchant's policy decides it; see `assert_policy`).
pub async fn create_payment<L: LockManager, C: Clock, G: Gateway>(
    app: &Tally<MemStore, L, C, G>,
    user: UserId,
    (minor_units, payback): (i64, i64),
    method: Method,
) -> PaymentId {
    assert_policy(app.config(), minor_units, payback);
    let command = Command::CreatePayment { amount: amount(minor_units), method, confirm: false };
    match app.execute(user, command, None).await {
        Ok(Executed::Fresh(Outcome::Payment(payment))) => payment.id,
        other => panic!("create {method:?} payment: {other:?}"),
    }
}

/// A user with `balance` and `n` waiting wallet payments of `minor_units`
/// (each paying back `payback`): the opening of the races on one wallet.
pub async fn user_with_payments<L: LockManager, C: Clock, G: Gateway>(
    app: &Tally<MemStore, L, C, G>,
    (limits, balance): (Limits, i64),
    n: usize,
    (minor_units, payback): (i64, i64),
) -> (UserId, Vec<PaymentId>) {
    let user = user_with(app, limits, balance).await;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(new_payment(app, user, minor_units, payback).await);
    }
    (user, ids)
}

/// The call sites name the payback they expect; the merchant's policy decides it.
fn assert_policy(config: &Config, minor_units: i64, payback: i64) {
    let policy = tally_core::payment::payback_of(amount(minor_units), config.payback_bps);
    assert_eq!(policy, Money::new(payback), "the test expects another payback than the policy gives");
}

/// A user with an empty wallet and one waiting gateway payment of 500
/// (payback 50): the opening of the races on one card charge.
pub async fn user_with_gateway_payment<L: LockManager, C: Clock>(
    app: &Tally<MemStore, L, C, MemGateway>,
) -> (UserId, PaymentId) {
    let user = user_with(app, Limits::default(), 0).await;
    (user, create_payment(app, user, (500, 50), Method::Gateway).await)
}

pub async fn balance<L: LockManager, C: Clock, G: Gateway>(app: &Tally<MemStore, L, C, G>, user: UserId) -> Money {
    app.wallet(user).await.expect("wallet").wallet.balance
}

pub async fn payment<L: LockManager, C: Clock, G: Gateway>(
    app: &Tally<MemStore, L, C, G>,
    user: UserId,
    id: PaymentId,
) -> Payment {
    app.payment(user, id).await.expect("payment")
}

type App<L, C, G> = Tally<MemStore, L, C, G>;

/// A product (created by the admin) with `stock` units at `price`.
pub async fn new_product<L: LockManager, C: Clock, G: Gateway>(
    app: &App<L, C, G>,
    price: i64,
    stock: u64,
) -> ProductId {
    // No payback on products: the scenarios count order money by the price.
    let command = Command::CreateProduct { name: "product".into(), price: amount(price), stock, payback_bps: Some(0) };
    match app.execute(UserId::ADMIN, command, None).await {
        Ok(Executed::Fresh(Outcome::Product(product))) => product.id,
        other => panic!("create product: {other:?}"),
    }
}

/// An event with one showtime of `seats` seats at 50 each; its queue admits
/// `active_limit` at a time, for 60 s each.
pub async fn new_event<L: LockManager, C: Clock, G: Gateway>(
    app: &App<L, C, G>,
    active_limit: u32,
    seats: usize,
) -> (EventId, Vec<SeatId>) {
    new_event_with(app, active_limit, seats, tally_core::catalog::MAX_SEATS_PER_TOKEN_DEFAULT).await
}

/// [`new_event`] whose tokens may hold at most `max_seats_per_token` seats.
pub async fn new_event_with<L: LockManager, C: Clock, G: Gateway>(
    app: &App<L, C, G>,
    active_limit: u32,
    seats: usize,
    max_seats_per_token: u32,
) -> (EventId, Vec<SeatId>) {
    let showtime = NewShowtime {
        starts_at: Timestamp(START.0 + 86_400_000),
        seats: (0..seats).map(|i| NewSeat { label: format!("A{i}"), price: amount(50) }).collect(),
    };
    let command = Command::CreateEvent {
        name: "concert".into(),
        active_limit,
        token_ttl: std::time::Duration::from_secs(60),
        max_seats_per_token,
        showtimes: vec![showtime],
    };
    match app.execute(UserId::ADMIN, command, None).await {
        Ok(Executed::Fresh(Outcome::Event(view))) => {
            let seats = view.showtimes[0].1.iter().map(|s| s.id).collect();
            (view.event.id, seats)
        }
        other => panic!("create event: {other:?}"),
    }
}

/// Joins the event's queue; returns the token as the caller sees it.
pub async fn join<L: LockManager, C: Clock, G: Gateway>(app: &App<L, C, G>, user: UserId, event: EventId) -> TokenView {
    match app.execute(user, Command::JoinQueue { event }, None).await {
        Ok(Executed::Fresh(Outcome::Token(view))) => view,
        other => panic!("join queue: {other:?}"),
    }
}

/// A queue token that is active now (the event must have room).
pub async fn active_token<L: LockManager, C: Clock, G: Gateway>(
    app: &App<L, C, G>,
    user: UserId,
    event: EventId,
) -> TokenId {
    let view = join(app, user, event).await;
    assert_eq!(view.status, TokenStatus::Active, "the queue has room: {view:?}");
    view.token.id
}

pub fn order_of(items: &[(ProductId, u64)], seats: &[SeatId], token: Option<TokenId>) -> Command {
    Command::CreateOrder { items: items.to_vec(), seats: seats.to_vec(), token }
}

/// The order a command created, if it did.
pub fn created(result: &Result<Executed, Error>) -> Option<&Order> {
    match result {
        Ok(Executed::Fresh(Outcome::Order(order))) => Some(order),
        _ => None,
    }
}

pub async fn new_order<L: LockManager, C: Clock, G: Gateway>(
    app: &App<L, C, G>,
    user: UserId,
    command: Command,
) -> Order {
    let result = app.execute(user, command, None).await;
    created(&result).cloned().unwrap_or_else(|| panic!("create order: {result:?}"))
}

/// A wallet payment of the whole order.
pub async fn order_payment<L: LockManager, C: Clock, G: Gateway>(
    app: &App<L, C, G>,
    user: UserId,
    order: OrderId,
) -> PaymentId {
    let command = Command::CreateOrderPayment { order, method: Method::Wallet, confirm: false };
    match app.execute(user, command, None).await {
        Ok(Executed::Fresh(Outcome::Payment(payment))) => payment.id,
        other => panic!("create order payment: {other:?}"),
    }
}

pub async fn stock<L: LockManager, C: Clock, G: Gateway>(app: &App<L, C, G>, product: ProductId) -> u64 {
    app.product(product).await.expect("product").stock
}
