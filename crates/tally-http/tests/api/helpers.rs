//! zero2prod-style helpers: `TestApp::spawn()` builds the router on the
//! in-memory backend, and request methods named after the API drive it
//! through `tally-client` over its in-process transport (`oneshot` on the
//! router; or a real listener, see `serve()`). Helpers that set up state
//! (users, payments, products, events, tokens, orders) use the typed
//! client; helpers whose answer a test asserts byte for byte (`TestResponse`)
//! send exact bytes through the same client's raw escape hatch.
//! `TestApp::spawn_with_gateway()` adds the fake payment gateway, served on a
//! loopback port and reached through the real gateway client, so that a
//! gateway payment goes through exactly what `tally serve` runs.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use serde_json::{Value, json};
use tally_client::dto::{
    CreateEventRequest, CreateOrderRequest, CreatePaymentRequest, CreateProductRequest, CreateUserRequest, Label,
    NewSeatInput, NewShowtimeInput,
};
use tally_client::{Client, ServiceTransport};
use tally_core::Tally;
use tally_core::app::Config;
use tally_core::check::Snapshot;
use tally_core::gateway::{Gateway, NoGateway};
use tally_core::ids::{SeqIds, UserId};
use tally_core::store::LockKey;
use tally_core::time::{ManualClock, Timestamp};
use tally_gateway::fake::FakeGateway;
use tally_gateway::{GatewayClient, GatewayConfig};
use tally_http::{HttpConfig, Readiness};
use tally_lock::Guard;
use tally_mem::{Concurrency, MemLocks, MemStore};

/// 2026-11-23T00:00:00Z: every test starts on a known day.
pub const START: Timestamp = Timestamp(20_780 * 86_400_000);
pub const ADMIN_KEY: &str = "admin-secret-for-tests";

pub const GATEWAY_SECRET: &str = "test_sk_tally";

pub type MemTally<G = NoGateway> = Tally<MemStore, MemLocks<ManualClock>, ManualClock, G>;

/// The typed client, calling the router in process.
pub type Api = Client<ServiceTransport<Router, Body>>;

pub struct TestApp<G = NoGateway> {
    pub router: Router,
    /// The client with no key; `as_key` acts as someone.
    pub api: Api,
    pub tally: Arc<MemTally<G>>,
    pub store: MemStore,
    pub locks: MemLocks<ManualClock>,
    pub clock: ManualClock,
}

/// A test app whose gateway payments go to a fake gateway: `fake` is the
/// gateway's own books (its charges, and every call it received).
pub struct GatewayApp {
    pub app: TestApp<GatewayClient>,
    pub fake: FakeGateway,
    /// Where the fake listens: another client (another merchant) may use it.
    pub gateway_url: String,
}

impl std::ops::Deref for GatewayApp {
    type Target = TestApp<GatewayClient>;

    fn deref(&self) -> &TestApp<GatewayClient> {
        &self.app
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    /// Asserts a problem response with `status` and `code`, and returns it.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            (self.status.as_u16(), self.content_type()),
            (status, "application/problem+json"),
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let problem = self.json();
        assert_eq!(problem["code"], code, "{problem}");
        assert_eq!(problem["status"], status, "{problem}");
        assert_eq!(problem["type"], format!("urn:tally:problem:{code}"));
        assert!(problem["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(problem.as_object().unwrap().len(), 5, "exactly type, title, status, detail, code");
        problem
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", String::from_utf8_lossy(&self.body));
        self.json()
    }

    /// Asserts a 201 and returns the id of what it created.
    #[track_caller]
    pub fn assert_created(&self) -> String {
        self.assert_status(201)["id"].as_str().unwrap().to_owned()
    }

    /// Asserts that this is the replay of `first`: its status and body byte
    /// for byte, marked `Idempotent-Replayed: true`.
    #[track_caller]
    pub fn assert_replay_of(&self, first: &TestResponse) {
        assert_eq!((self.status, &self.body), (first.status, &first.body), "byte for byte");
        assert_eq!(self.header("idempotent-replayed"), Some("true"));
    }
}

/// A user created through the API.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: UserId,
    pub key: String,
}

/// One request to build.
pub struct Call {
    method: Method,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Call {
    pub fn new(method: Method, path: &str) -> Call {
        Call { method, path: path.to_owned(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn get(path: &str) -> Call {
        Call::new(Method::GET, path)
    }

    pub fn post(path: &str) -> Call {
        Call::new(Method::POST, path)
    }

    /// `POST /v1/payments/{payment}/confirm` as `user`, without a body yet.
    pub fn confirm(user: &TestUser, payment: &str, idem: &str) -> Call {
        Call::post(&format!("/v1/payments/{payment}/confirm")).bearer(&user.key).idem(idem)
    }

    /// `POST /v1/products/{product}/restock` as the admin, without a body yet.
    pub fn restock(product: &str, idem: &str) -> Call {
        Call::post(&format!("/v1/products/{product}/restock")).bearer(ADMIN_KEY).idem(idem)
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }

    pub fn bearer(self, key: &str) -> Call {
        self.header("authorization", &format!("Bearer {key}"))
    }

    pub fn idem(self, key: &str) -> Call {
        self.header("idempotency-key", key)
    }

    /// A JSON body, sent exactly as written.
    pub fn json(self, raw: impl Into<Vec<u8>>) -> Call {
        self.header("content-type", "application/json").raw(raw)
    }

    pub fn raw(mut self, raw: impl Into<Vec<u8>>) -> Call {
        self.body = raw.into();
        self
    }

    pub fn into_request(self) -> Request<Vec<u8>> {
        let mut builder = Request::builder().method(self.method).uri(self.path);
        for (name, value) in self.headers {
            builder = builder.header(name, HeaderValue::from_bytes(&value).unwrap());
        }
        builder.body(self.body).unwrap()
    }
}

pub struct Options {
    pub http: HttpConfig,
    pub readiness: Readiness,
    pub locks: tally_lock::Config,
    /// The core's settings: the merchant's default payback, say.
    pub config: Config,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            http: HttpConfig::new(ADMIN_KEY),
            readiness: Readiness::always(),
            locks: tally_lock::Config::default(),
            config: Config::default(),
        }
    }
}

impl Options {
    /// The defaults, with the service's payback policy at `bps` basis points.
    pub fn payback_bps(bps: u32) -> Options {
        Options { config: Config { payback_bps: bps, ..Config::default() }, ..Options::default() }
    }
}

impl TestApp {
    pub fn spawn() -> TestApp {
        TestApp::spawn_with(Options::default())
    }

    pub fn spawn_with(options: Options) -> TestApp {
        TestApp::build(options, NoGateway)
    }

    /// A service and one user with `balance` in their wallet: where most
    /// tests of payments start.
    pub async fn with_funded_user(options: Options, balance: i64) -> (TestApp, TestUser) {
        let app = TestApp::spawn_with(options);
        let user = app.funded_user("u", balance).await;
        (app, user)
    }

    /// An app whose gateway is a fake gateway on a loopback port, reached
    /// through the real client (and so through its mapping onto the core's
    /// verdicts). The fake lives as long as the test's runtime.
    pub async fn spawn_with_gateway(options: Options) -> GatewayApp {
        let fake = FakeGateway::new(GATEWAY_SECRET);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(tally_gateway::fake::serve(listener, fake.clone(), std::future::pending()));
        let client = GatewayClient::new(GatewayConfig::new(base_url.clone(), GATEWAY_SECRET)).unwrap();
        GatewayApp { app: TestApp::build(options, client), fake, gateway_url: base_url }
    }
}

impl<G: Gateway> TestApp<G> {
    fn build(options: Options, gateway: G) -> TestApp<G> {
        let clock = ManualClock::new(START);
        let locks = MemLocks::new(clock.clone(), options.locks);
        let store = MemStore::new(Concurrency::Locked);
        let tally = Arc::new(
            Tally::new(store.clone(), locks.clone(), clock.clone(), Arc::new(SeqIds::new(1)), options.config)
                .with_gateway(gateway),
        );
        let router = tally_http::router(Arc::clone(&tally), options.http, options.readiness);
        TestApp { api: api(router.clone()), router, tally, store, locks, clock }
    }

    /// The typed client acting as `user`.
    pub fn user_api(&self, user: &TestUser) -> Api {
        self.api.as_key(&user.key)
    }

    pub fn admin_api(&self) -> Api {
        self.api.as_key(ADMIN_KEY)
    }

    pub async fn call(&self, call: Call) -> TestResponse {
        call_router(self.router.clone(), call).await
    }

    pub async fn create_user(&self, name: &str) -> TestUser {
        let created = self.admin_api().create_user(&CreateUserRequest::named(name)).await.unwrap();
        assert_eq!(created.status, StatusCode::CREATED);
        TestUser { id: UserId::parse(&created.body.id).unwrap(), key: created.body.api_key }
    }

    /// One user per name, created in order.
    pub async fn create_users<const N: usize>(&self, names: [&str; N]) -> [TestUser; N] {
        let mut users = Vec::with_capacity(N);
        for name in names {
            users.push(self.create_user(name).await);
        }
        users.try_into().expect("one user per name")
    }

    pub async fn create_user_with(&self, body: Value) -> TestUser {
        let response = self.call(Call::post("/v1/users").bearer(ADMIN_KEY).json(body.to_string())).await;
        let user = response.assert_status(201);
        TestUser {
            id: UserId::parse(user["id"].as_str().unwrap()).unwrap(),
            key: user["api_key"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn top_up(&self, user: &TestUser, idem: &str, amount: i64) -> TestResponse {
        self.call(
            Call::post("/v1/wallet/top-ups").bearer(&user.key).idem(idem).json(format!(r#"{{"amount":{amount}}}"#)),
        )
        .await
    }

    /// A user with `balance` in their wallet.
    pub async fn funded_user(&self, name: &str, balance: i64) -> TestUser {
        let user = self.create_user(name).await;
        self.user_api(&user).top_up(&format!("fund-{name}"), balance).await.unwrap();
        user
    }

    pub async fn create_payment(&self, user: &TestUser, idem: &str, body: Value) -> TestResponse {
        self.call(Call::post("/v1/payments").bearer(&user.key).idem(idem).json(body.to_string())).await
    }

    /// Creates a wallet payment and returns its id. Its payback is the
    /// service's policy (`Options::payback_bps`).
    pub async fn payment_of(&self, user: &TestUser, amount: i64) -> String {
        self.new_payment(
            user,
            &format!("create-{amount}-{}", uuid_like()),
            &CreatePaymentRequest::of_amount(amount, "wallet"),
        )
        .await
    }

    /// Creates and confirms a wallet payment of `amount`; returns its id.
    pub async fn done_payment_of(&self, user: &TestUser, amount: i64) -> String {
        let id = self.payment_of(user, amount).await;
        let idem = format!("confirm-{amount}-{}", uuid_like());
        let confirmed = self.user_api(user).confirm_payment(&idem, &id, None).await.unwrap();
        assert_eq!((confirmed.status, confirmed.body.status.as_str()), (StatusCode::OK, "done"));
        id
    }

    /// Creates a gateway payment of `amount` and returns its id.
    pub async fn gateway_payment_of(&self, user: &TestUser, amount: i64) -> String {
        let idem = format!("create-gw-{amount}-{}", uuid_like());
        self.new_payment(user, &idem, &CreatePaymentRequest::of_amount(amount, "gateway")).await
    }

    /// Creates a payment (201) and returns its id.
    async fn new_payment(&self, user: &TestUser, idem: &str, request: &CreatePaymentRequest) -> String {
        let created = self.user_api(user).create_payment(idem, request).await.unwrap();
        assert_eq!(created.status, StatusCode::CREATED);
        created.body.id
    }

    /// `GET /v1/payments/{id}` as its owner.
    pub async fn payment(&self, user: &TestUser, payment: &str) -> Value {
        self.call(Call::get(&format!("/v1/payments/{payment}")).bearer(&user.key)).await.assert_status(200)
    }

    /// Confirms a gateway payment with the gateway's `payment_key`.
    pub async fn confirm_with_key(
        &self,
        user: &TestUser,
        payment: &str,
        payment_key: &str,
        idem: &str,
    ) -> TestResponse {
        let body = json!({ "payment_key": payment_key }).to_string();
        self.call(Call::confirm(user, payment, idem).json(body)).await
    }

    pub async fn confirm(&self, user: &TestUser, payment: &str, idem: &str) -> TestResponse {
        self.call(Call::confirm(user, payment, idem).json("{}")).await
    }

    pub async fn cancel(&self, user: &TestUser, payment: &str, idem: &str) -> TestResponse {
        self.call(Call::post(&format!("/v1/payments/{payment}/cancel")).bearer(&user.key).idem(idem)).await
    }

    pub async fn wallet(&self, user: &TestUser) -> Value {
        self.call(Call::get("/v1/wallet").bearer(&user.key)).await.assert_status(200)
    }

    pub async fn balance(&self, user: &TestUser) -> i64 {
        self.user_api(user).wallet().await.unwrap().body.balance
    }

    pub async fn ledger(&self, user: &TestUser, query: &str) -> TestResponse {
        self.call(Call::get(&format!("/v1/wallet/ledger{query}")).bearer(&user.key)).await
    }

    /// Balance and full ledger: what "nothing changed" compares.
    pub async fn wallet_state(&self, user: &TestUser) -> (Value, Value) {
        let ledger = self.ledger(user, "?limit=100").await.assert_status(200);
        (self.wallet(user).await, ledger)
    }

    pub async fn snapshot(&self) -> Snapshot {
        self.tally.snapshot().await.unwrap()
    }

    /// Every SPEC.md invariant holds over the whole store.
    pub async fn assert_invariants(&self) {
        tally_core::check::assert_holds(&self.snapshot().await);
    }

    /// Holds `user`'s wallet lock until the guard drops, as a slow
    /// concurrent request would.
    pub fn hold_wallet(&self, user: &TestUser) -> Guard<LockKey> {
        self.locks.table().try_acquire([LockKey::Wallet(user.id)]).expect("the wallet lock is free")
    }

    /// Waits (bounded) until someone queues on `user`'s wallet lock.
    pub async fn wait_for_wallet_waiter(&self, user: &TestUser) {
        for _ in 0..1000 {
            if self.locks.table().waiters(&LockKey::Wallet(user.id)) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("nobody queued on the wallet lock");
    }
}

/// The typed client over `router`, in process.
pub fn api(router: Router) -> Api {
    Client::new(ServiceTransport::new(router))
}

/// Sends `call`'s exact bytes through `router` (the client's raw escape
/// hatch): what concurrent tests spawn.
pub async fn call_router(router: Router, call: Call) -> TestResponse {
    let response = api(router).raw(call.into_request()).await.unwrap();
    let (parts, body) = response.into_parts();
    TestResponse { status: parts.status, headers: parts.headers, body: Bytes::from(body) }
}

/// An event as created through the API: its id, and each showtime's id
/// with its seats' ids, in the order they were given.
#[derive(Clone, Debug)]
pub struct TestEvent {
    pub id: String,
    pub showtimes: Vec<(String, Vec<String>)>,
}

impl TestEvent {
    pub fn seat(&self, showtime: usize, seat: usize) -> &str {
        &self.showtimes[showtime].1[seat]
    }
}

/// The catalogue and orders: what the inventory tests drive.
impl<G: Gateway> TestApp<G> {
    /// Creates a product as the admin; returns its id.
    pub async fn create_product(&self, name: &str, price: i64, stock: u64) -> String {
        let created = self.admin_api().create_product(&CreateProductRequest::new(name, price, stock)).await.unwrap();
        assert_eq!(created.status, StatusCode::CREATED);
        created.body.id
    }

    /// Creates a product from `body` as the admin; returns its id.
    pub async fn create_product_with(&self, body: Value) -> String {
        self.call(Call::post("/v1/products").bearer(ADMIN_KEY).json(body.to_string())).await.assert_created()
    }

    /// `GET /v1/products/{id}`, unauthenticated.
    pub async fn product(&self, id: &str) -> Value {
        self.call(Call::get(&format!("/v1/products/{id}"))).await.assert_status(200)
    }

    pub async fn stock(&self, id: &str) -> u64 {
        self.api.product(id).await.unwrap().body.stock
    }

    /// Creates an event as the admin with one showtime per entry of
    /// `showtimes`, each with seats `A1..An` at `seat_price`.
    pub async fn create_event(&self, active_limit: u32, showtimes: &[usize], seat_price: i64) -> TestEvent {
        let showtimes = showtimes
            .iter()
            .enumerate()
            .map(|(i, seats)| NewShowtimeInput {
                starts_at: format!("2026-12-{:02}T19:30:00Z", 24 + i),
                seats: (1..=*seats).map(|n| NewSeatInput::new(&format!("A{n}"), seat_price)).collect(),
            })
            .collect();
        let request = CreateEventRequest {
            name: Label("concert".to_owned()),
            active_limit,
            token_ttl_seconds: 60,
            max_seats_per_token: None,
            showtimes,
        };
        let event = self.admin_api().create_event(&request).await.unwrap();
        assert_eq!(event.status, StatusCode::CREATED);
        let showtimes = event
            .body
            .showtimes
            .into_iter()
            .map(|s| (s.id, s.seats.into_iter().map(|seat| seat.id).collect()))
            .collect();
        TestEvent { id: event.body.id, showtimes }
    }

    pub async fn join_queue(&self, user: &TestUser, event: &str) -> TestResponse {
        self.call(Call::post(&format!("/v1/events/{event}/queue")).bearer(&user.key)).await
    }

    /// Joins and returns the token, which must be active at once.
    pub async fn active_token(&self, user: &TestUser, event: &str) -> String {
        self.joined_token(user, event, "active").await
    }

    /// Joins and returns the token, which must have to wait.
    pub async fn waiting_token(&self, user: &TestUser, event: &str) -> String {
        self.joined_token(user, event, "waiting").await
    }

    async fn joined_token(&self, user: &TestUser, event: &str, status: &str) -> String {
        let token = self.user_api(user).join_queue(event).await.unwrap();
        assert_eq!((token.status, token.body.status.as_str()), (StatusCode::CREATED, status), "{token:?}");
        token.body.token
    }

    pub async fn queue_token(&self, user: &TestUser, token: &str) -> TestResponse {
        self.call(Call::get(&format!("/v1/queue/{token}")).bearer(&user.key)).await
    }

    /// `POST /v1/orders` with `body`, and `Queue-Token` when given.
    pub async fn order(&self, user: &TestUser, idem: &str, body: Value, token: Option<&str>) -> TestResponse {
        let mut call = Call::post("/v1/orders").bearer(&user.key).idem(idem);
        if let Some(token) = token {
            call = call.header("queue-token", token);
        }
        self.call(call.json(body.to_string())).await
    }

    /// An order of `quantity` units of `product`; returns its id.
    pub async fn order_of(&self, user: &TestUser, product: &str, quantity: u64) -> String {
        let request = CreateOrderRequest::of(&[(product, quantity)], &[]);
        let order = self.user_api(user).create_order(&format!("order-{}", uuid_like()), &request, None).await.unwrap();
        assert_eq!(order.status, StatusCode::CREATED);
        order.body.id
    }

    pub async fn get_order(&self, user: &TestUser, order: &str) -> TestResponse {
        self.call(Call::get(&format!("/v1/orders/{order}")).bearer(&user.key)).await
    }

    /// `POST /v1/payments {order_id, method: wallet}`.
    pub async fn pay_order_create(&self, user: &TestUser, order: &str, idem: &str) -> TestResponse {
        self.create_payment(user, idem, json!({"order_id": order, "method": "wallet"})).await
    }

    /// Creates and confirms a wallet payment for `order`; returns the payment.
    pub async fn pay_order(&self, user: &TestUser, order: &str) -> Value {
        let id = self.pay_order_create(user, order, &format!("pay-{}", uuid_like())).await.assert_created();
        self.confirm(user, &id, &format!("confirm-{}", uuid_like())).await.assert_status(200)
    }

    pub async fn cancel_order(&self, user: &TestUser, order: &str, idem: &str) -> TestResponse {
        self.call(Call::post(&format!("/v1/orders/{order}/cancel")).bearer(&user.key).idem(idem)).await
    }

    /// `GET /v1/showtimes/{id}/seats` as `[(id, status)]`.
    pub async fn seat_statuses(&self, showtime: &str) -> Vec<(String, String)> {
        let seats = self.api.seats(showtime).await.unwrap().body.seats;
        seats.into_iter().map(|seat| (seat.id, seat.status)).collect()
    }

    pub async fn seat_status(&self, showtime: &str, seat: &str) -> String {
        let statuses = self.seat_statuses(showtime).await;
        statuses.into_iter().find(|(id, _)| id == seat).expect("the seat is listed").1
    }
}

/// The body of a wallet no money has moved through yet, with `limits`.
pub fn fresh_wallet(limits: Value) -> Value {
    json!({"balance": 0, "limits": limits, "spent_today": 0, "spent_this_month": 0})
}

/// A unique suffix for idempotency keys within one test.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}
