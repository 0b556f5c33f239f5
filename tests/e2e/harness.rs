//! Test helpers (zero2prod's `spawn_app`): a PostgreSQL for the whole run,
//! a fresh database per test, and the real router on a random port.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;
use tally::runtime::{SystemClock, UuidIds};
use tally_client::dto::{CreatePaymentRequest, CreateUserRequest};
use tally_client::{Client, RawResponse, ReqwestTransport, Retry};
use tally_core::app::{Config, Tally};
use tally_core::check::Snapshot;
use tally_core::ids::{OrderId, TokenId};
use tally_core::order::Order;
use tally_core::queue::QueueToken;
use tally_core::store::{Store, Tx};
use tally_http::{HttpConfig, Readiness};
use tally_pg::{PgConfig, PgStore, Strategy};
use tally_redis::{Flavour, Locks, RedisLockConfig, RedisLocks, RedisServer};

/// The superuser URL of the server every test database lives on.
static SERVER: OnceLock<String> = OnceLock::new();

/// Starts the throwaway cluster, unless `DATABASE_URL` names a server whose
/// user may create databases. Called once, before any test; the caller owns
/// the cluster and stops it after the last test.
pub fn start_server() -> Result<Option<tally_cluster::Cluster>, String> {
    let (url, cluster) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let config = tally_cluster::ClusterConfig::throwaway().fast_unsafe().with_max_connections(400);
            let cluster = tally_cluster::Cluster::start(config).map_err(|e| e.to_string())?;
            (cluster.superuser_url(), Some(cluster))
        }
    };
    SERVER.set(url).map_err(|_| "server started twice".to_owned())?;
    Ok(cluster)
}

/// The URL of the Redis the redis strategy's tests lock in.
static REDIS: OnceLock<String> = OnceLock::new();

/// Starts the run's private `redis-server` (tests of one run share it, each
/// app in a namespace of its own: see `locks_for`); the caller stops it.
pub fn start_redis() -> Result<RedisServer, String> {
    let server = RedisServer::start().map_err(|e| e.to_string())?;
    REDIS.set(server.url()).map_err(|_| "redis started twice".to_owned())?;
    Ok(server)
}

/// The run's Redis (see `start_redis`).
pub fn redis_url() -> &'static str {
    REDIS.get().expect("redis started for the redis strategy's tests")
}

/// The lock manager `strategy` runs with: none, or for the redis strategy
/// `RedisLocks` in the flavour `TALLY_TEST_REDIS_LOCK` names (default spin).
/// Inside a runtime (the pub/sub flavour subscribes at once).
pub fn locks_for(strategy: Strategy) -> Locks {
    if strategy != Strategy::Redis {
        return Locks::None;
    }
    // Tests of one process draw the same sequential ids: each app locks in
    // a namespace of its own, so two tests never share a lock.
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let flavour = std::env::var("TALLY_TEST_REDIS_LOCK").ok().and_then(|v| v.parse().ok()).unwrap_or(Flavour::Spin);
    let namespace = format!("test-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let config = RedisLockConfig { namespace, ..RedisLockConfig::new(flavour) };
    Locks::Redis(RedisLocks::new(redis_url(), config).expect("redis URL"))
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[scheme_end..].find('/').map(|i| scheme_end + i);
    let query = url.find('?').map_or("", |i| &url[i..]);
    match path_start {
        Some(start) => format!("{}/{database}{query}", &url[..start]),
        None => format!("{}/{database}{query}", url.trim_end_matches(query)),
    }
}

/// Creates an empty, migrated database for one test and returns its URL.
pub async fn fresh_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let server_url = SERVER.get().expect("server started");
    let name = format!("tally_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let mut admin = sqlx::PgConnection::connect(server_url).await.expect("connect as superuser");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let url = with_database(server_url, &name);
    let store = PgStore::connect_lazy(&url, PgConfig { max_connections: 1, ..PgConfig::default() }).expect("url");
    store.migrate().await.expect("migrate");
    store.pool().close().await;
    url
}

/// The URL of the database `app` runs on, for a second client of it.
pub async fn database_url(app: &TestApp) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(app.app.store().pool())
        .await
        .expect("current_database");
    with_database(SERVER.get().expect("server started"), &name)
}

/// Pool limits of one test app.
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for Pool {
    /// 16 connections, or `TALLY_TEST_MAX_CONNECTIONS`: CI runs the whole
    /// suite once more with 1, which fails if any use case ever asks the pool
    /// for a second connection while it holds one.
    fn default() -> Pool {
        let max_connections =
            std::env::var("TALLY_TEST_MAX_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
        Pool { max_connections, acquire_timeout: Duration::from_secs(30) }
    }
}

pub type PgTally = Tally<PgStore, Locks, SystemClock, tally_gateway::GatewayClient>;

/// A running app: the real router over PostgreSQL on 127.0.0.1:random.
pub struct TestApp {
    /// The typed client with no key. It never retries: the scenarios
    /// assert every answer, 503s and in-flight 409s included.
    pub api: Client<ReqwestTransport>,
    pub admin_key: String,
    pub app: Arc<PgTally>,
    /// The fake payment gateway this app confirms gateway payments with.
    pub gateway: tally_gateway::FakeGateway,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    gateway_shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub bytes: Vec<u8>,
    pub json: Value,
}

impl From<RawResponse> for Reply {
    fn from(response: RawResponse) -> Reply {
        let (parts, bytes) = response.into_parts();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status: parts.status, headers: parts.headers, bytes, json }
    }
}

/// A store on a fresh database with `strategy`, on `pool`: what every
/// harness here builds its app on.
pub async fn fresh_store(strategy: Strategy, pool: &Pool) -> PgStore {
    let url = fresh_database().await;
    let config = PgConfig {
        strategy,
        max_connections: pool.max_connections,
        acquire_timeout: pool.acquire_timeout,
        ..PgConfig::default()
    };
    PgStore::connect_lazy(&url, config).expect("store")
}

/// Group commit in the apps under test: `TALLY_TEST_BATCH_MAX=N` (`.ci/run`
/// makes a pass with it); off by default.
pub fn batch_max() -> usize {
    std::env::var("TALLY_TEST_BATCH_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// With group commit on, batches overlap their commits as `tally serve`'s
/// do by default (one may commit while the next runs its statements).
pub fn batch_overlap() -> usize {
    usize::from(batch_max() > 1)
}

/// 2026-11-23T00:00:00Z: the core-level scenarios start their manual clocks
/// on a known day.
pub const START: tally_core::time::Timestamp = tally_core::time::Timestamp(20_780 * 86_400_000);

/// Runs `n` tasks at once; returns their results in task order.
pub async fn at_once<T, F, Fut>(n: usize, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(task(i))).collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        results.push(handle.await.expect("task"));
    }
    results
}

/// An app whose merchant pays no payback: the scenarios count money by the
/// amounts they pay.
pub async fn spawn_app(strategy: Strategy, pool: Pool) -> TestApp {
    spawn_app_paying_back(strategy, pool, 0).await
}

/// An app whose merchant pays back `payback_bps` basis points of every
/// payment (the service's `--payback-bps`).
pub async fn spawn_app_paying_back(strategy: Strategy, pool: Pool, payback_bps: u32) -> TestApp {
    let store = fresh_store(strategy, &pool).await;
    // Many requests race on one row in these tests: give optimistic retries room.
    let core = Config {
        attempts_max: 64,
        payback_bps,
        batch_max: batch_max(),
        batch_overlap: batch_overlap(),
        ..Config::default()
    };
    // A fake gateway of its own, and a client with a short timeout so the
    // fault tests see "unknown" quickly.
    let gateway = tally_gateway::FakeGateway::new("test_sk");
    let gateway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the gateway");
    let gateway_url = format!("http://{}", gateway_listener.local_addr().expect("address"));
    let (gateway_tx, gateway_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tally_gateway::fake::serve(gateway_listener, gateway.clone(), async move {
        let _ = gateway_rx.await;
    }));
    let mut client_config = tally_gateway::GatewayConfig::new(gateway_url, "test_sk");
    client_config.request_timeout = Duration::from_millis(500);
    let client = tally_gateway::GatewayClient::new(client_config).expect("gateway client");
    let app =
        Arc::new(Tally::new(store, locks_for(strategy), SystemClock, Arc::new(UuidIds), core).with_gateway(client));
    let admin_key = tally_http::new_api_key();
    let mut http_config = HttpConfig::new(admin_key.clone());
    http_config.request_timeout = Duration::from_secs(30);
    let router = tally_http::router(app.clone(), http_config, Readiness::always());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = tally_http::serve(listener, router, async move {
            let _ = rx.await;
        })
        .await;
    });
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(64).build().expect("client");
    let api = Client::new(ReqwestTransport::new(http, &base)).with_retry(Retry::NEVER);
    TestApp { api, admin_key, app, gateway, shutdown: Some(tx), gateway_shutdown: Some(gateway_tx) }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(tx) = self.gateway_shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestApp {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: &str,
        idem: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let api = self.api.as_key(key);
        let mut call = api.request(method, path);
        if let Some(idem) = idem {
            call = call.idempotency_key(idem);
        }
        if let Some(body) = body {
            call = call.json(&body);
        }
        api.exchange(&call).await.expect("a reply").into()
    }

    /// A raw request, for the bad-input matrix.
    pub async fn raw(&self, path: &str, key: &str, idem: &str, content_type: &str, body: Vec<u8>) -> Reply {
        // A connection of its own: the server closes a connection after
        // refusing an oversized body, and a pooled client would send the
        // next request on that closed connection (a broken pipe).
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        let base = self.api.transport().base();
        let raw = Client::new(ReqwestTransport::new(http, base));
        // The server answers an oversized body 413 as soon as it knows, and
        // closes the connection with the body's rest unread: the kernel may
        // then reset it while the client is still sending, and the reply is
        // lost (1 run in 3 of this test alone, session 14). The 413 itself is
        // pinned in-process by tally-http's bad-input tests; here a lost
        // reply to an oversized body is sent again, a few times at most.
        let oversized = body.len() > tally_http::BODY_LIMIT_BYTES_DEFAULT;
        let attempts = if oversized { 5 } else { 1 };
        for attempt in 1..=attempts {
            let request = http::Request::post(path)
                .header("authorization", format!("Bearer {key}"))
                .header("idempotency-key", idem)
                .header("content-type", content_type)
                .body(body.clone())
                .expect("a request");
            match raw.raw(request).await {
                Ok(reply) => return reply.into(),
                Err(error) if attempt == attempts => panic!("a reply: {error:?}"),
                Err(_) => {}
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// A user with `limits` (SPEC field names) and `balance`; returns its API key.
    pub async fn user(&self, limits: Value, balance: i64) -> String {
        // Read by the server's own request type, as the server reads it.
        let request: CreateUserRequest =
            serde_json::from_value(json!({"name": "e2e", "limits": limits})).expect("a user request");
        let key = self.api.as_key(&self.admin_key).create_user(&request).await.expect("a user").body.api_key;
        if balance > 0 {
            let funded = self.top_up(&key, "fund", balance).await;
            assert_eq!(funded.status, StatusCode::CREATED, "{}", funded.json);
        }
        key
    }

    pub async fn top_up(&self, key: &str, idem: &str, amount: i64) -> Reply {
        self.request(Method::POST, "/v1/wallet/top-ups", key, Some(idem), Some(json!({"amount": amount}))).await
    }

    pub async fn create_payment(&self, key: &str, idem: &str, amount: i64) -> String {
        self.new_payment(key, idem, &CreatePaymentRequest::of_amount(amount, "wallet")).await
    }

    /// A gateway payment of `amount`; its payback is the app's policy.
    pub async fn create_gateway_payment(&self, key: &str, idem: &str, amount: i64) -> String {
        self.new_payment(key, idem, &CreatePaymentRequest::of_amount(amount, "gateway")).await
    }

    async fn new_payment(&self, key: &str, idem: &str, request: &CreatePaymentRequest) -> String {
        let created = self.api.as_key(key).create_payment(idem, request).await.expect("a payment");
        assert_eq!(created.status, StatusCode::CREATED);
        created.body.id
    }

    pub async fn confirm_gateway(&self, key: &str, idem: &str, payment: &str, payment_key: &str) -> Reply {
        let body = json!({"payment_key": payment_key});
        self.request(Method::POST, &format!("/v1/payments/{payment}/confirm"), key, Some(idem), Some(body)).await
    }

    pub async fn confirm(&self, key: &str, idem: &str, payment: &str) -> Reply {
        self.request(Method::POST, &format!("/v1/payments/{payment}/confirm"), key, Some(idem), Some(json!({}))).await
    }

    pub async fn balance(&self, key: &str) -> i64 {
        self.api.as_key(key).wallet().await.expect("the wallet").body.balance
    }

    pub async fn snapshot(&self) -> Snapshot {
        self.app.store().snapshot().await.expect("snapshot")
    }

    /// Runs the core's invariant checker on the whole database.
    pub async fn assert_invariants(&self) {
        tally_core::check::assert_holds(&self.snapshot().await);
    }
}

/// The order as stored (not as a reader sees it now), read in a transaction
/// that writes nothing.
pub async fn stored_order(store: &PgStore, id: OrderId) -> Order {
    let mut tx = store.begin().await.expect("begin");
    let order = tx.order(id).await;
    tx.rollback().await;
    order.expect("load").expect("the order exists")
}

/// The queue token as stored, read in a transaction that writes nothing.
pub async fn stored_token(store: &PgStore, id: TokenId) -> QueueToken {
    let mut tx = store.begin().await.expect("begin");
    let token = tx.token(id).await;
    tx.rollback().await;
    token.expect("load token").expect("the token exists")
}
