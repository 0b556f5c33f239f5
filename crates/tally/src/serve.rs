//! `tally serve` and `tally migrate`: wiring a store, the use cases and the
//! router together, and running them until a shutdown signal.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tally_core::app::{BATCH_MAX_LIMIT, BATCH_OVERLAP_LIMIT, BATCH_SHARDS_LIMIT, Config, Tally};
use tally_core::gateway::Gateway;
use tally_core::idempotency::IdemConfig;
use tally_core::store::{LockManager, Store};
use tally_http::{HttpConfig, PerAddressLimit, Readiness};
use tally_mem::{Concurrency, MemLocks, MemStore};
use tally_pg::{PgConfig, PgStore, Strategy};
use tally_redis::{Flavour, Locks, RedisLockConfig, RedisLocks, RedisServer};

use crate::alerts::{self, ALERT_INTERVAL, Alerts};
use crate::runtime::{SystemClock, UuidIds};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Postgres,
    Memory,
}

#[derive(Debug, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL to use. Without it, tally runs its own private cluster
    /// from the PostgreSQL installed on this machine, in --data-dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where the private cluster (and the generated admin key) live.
    #[arg(long, env = "TALLY_DATA_DIR", default_value = "./.tally")]
    pub data_dir: PathBuf,
}

/// The redis strategy's lock service.
#[derive(Debug, clap::Args)]
pub struct RedisArgs {
    /// How a request waits for a key another holds (seed 002): `simple`
    /// (fixed retry), `spin` (capped exponential backoff with jitter) or
    /// `pubsub` (woken by the release, with a fallback poll).
    #[arg(long, env = "TALLY_REDIS_LOCK", default_value = "spin")]
    pub redis_lock: Flavour,
    /// The Redis that holds the locks (`redis://host:port`,
    /// `unix:///path`). Without it, `--strategy redis` starts a private
    /// `redis-server` from the installed binary on a Unix socket.
    #[arg(long, env = "TALLY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// How long a lock lasts if its holder never releases it.
    #[arg(long, env = "TALLY_REDIS_LEASE_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_lease_ms: u64,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[arg(long, value_enum, env = "TALLY_STORE", default_value = "postgres")]
    pub store: StoreKind,
    /// How concurrent requests on one record are kept apart on PostgreSQL.
    #[arg(long, env = "TALLY_STRATEGY", default_value = "pessimistic")]
    pub strategy: Strategy,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// How long a completed Idempotency-Key is remembered. At least 120 s,
    /// twice the 60 s in-flight lease: a key must not be forgotten while its
    /// request may still be running or retried, or the retry runs it again.
    #[arg(
        long,
        env = "TALLY_IDEMPOTENCY_TTL_SECONDS",
        default_value_t = 86_400,
        value_parser = clap::value_parser!(u64).range(IDEMPOTENCY_TTL_MIN_SECONDS..)
    )]
    pub idempotency_ttl_seconds: u64,
    /// How long an unpaid order holds its stock and seats; past it, the
    /// sweeper expires the order and gives them back.
    #[arg(long, env = "TALLY_ORDER_TTL_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub order_ttl_seconds: u64,
    /// The merchant's default payback (cashback), in basis points (0 to
    /// 10000, i.e. 100 %): of a payment for an amount, of an order's seats,
    /// and of a product created without a rate of its own. Customers never
    /// choose it (SPEC.md).
    #[arg(
        long,
        env = "TALLY_PAYBACK_BPS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(tally_core::payment::PAYBACK_BPS_MAX))
    )]
    pub payback_bps: u32,
    /// Database connections in the pool.
    #[arg(long, env = "TALLY_MAX_CONNECTIONS", default_value_t = 16)]
    pub max_connections: u32,
    /// How long a request waits for a free database connection before 503.
    #[arg(long, env = "TALLY_ACQUIRE_TIMEOUT_MS", default_value_t = 3_000)]
    pub acquire_timeout_ms: u64,
    /// Requests handled at once; beyond it, 503 with Retry-After.
    #[arg(long, env = "TALLY_CONCURRENCY_LIMIT", default_value_t = 1_024)]
    pub concurrency_limit: usize,
    /// The payment gateway (Toss-style API). Without it, gateway payments are refused.
    #[arg(long, env = "TALLY_GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// The gateway's secret key (HTTP Basic user name).
    #[arg(long, env = "TALLY_GATEWAY_SECRET_KEY", default_value = "test_sk")]
    pub gateway_secret_key: String,
    /// How long a gateway payment may sit in `confirming`, `cancelling` or
    /// `refunding` before the completer looks it up (or re-sends the refund).
    #[arg(long, env = "TALLY_COMPLETER_AFTER_SECONDS", default_value_t = 60)]
    pub completer_after_seconds: u64,
    /// Group commit: keyed requests that are ready together share one
    /// transaction, up to this many (1: off, every request commits alone).
    #[arg(long, env = "TALLY_BATCH_MAX", default_value_t = 64, value_parser = one_to(BATCH_MAX_LIMIT))]
    pub batch_max: u64,
    /// Group commit: how many queues users are spread over (a user's
    /// requests always share one), so how many batches may run at once.
    /// Fewer make larger batches; more keep more transactions in flight.
    #[arg(long, env = "TALLY_BATCH_SHARDS", default_value_t = 2, value_parser = one_to(BATCH_SHARDS_LIMIT))]
    pub batch_shards: u64,
    /// Group commit: how many of a queue's batches may wait for their commit
    /// while the next one runs its statements (0: none; the next batch
    /// starts once the previous commit returned).
    #[arg(long, env = "TALLY_BATCH_OVERLAP", default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=BATCH_OVERLAP_LIMIT as u64))]
    pub batch_overlap: u64,
    /// Requests a second per API key, in bursts of as many; beyond it, 429
    /// `rate_limited` with Retry-After (never stored under an
    /// Idempotency-Key). Unset: no limit.
    #[arg(long, env = "TALLY_RATE_LIMIT")]
    pub rate_limit: Option<NonZeroU32>,
    /// Open connections per client IP address; one more is closed at once.
    #[arg(long, env = "TALLY_MAX_CONNECTIONS_PER_ADDRESS", default_value = "512")]
    pub max_connections_per_address: NonZeroU32,
    /// Where alerts are posted as JSON (a Slack-style incoming webhook):
    /// bursts of 5xx answers, gateway payments the completer could not
    /// settle, refunds owed and not yet made. At most one per kind a minute.
    #[arg(long, env = "TALLY_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
    /// How long after its first confirm a gateway payment the gateway has
    /// never heard of is given up as failed.
    #[arg(long, env = "TALLY_GATEWAY_GIVE_UP_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub gateway_give_up_seconds: u64,
    /// How long after a give-up the completer keeps looking the payment's
    /// key up, and refunds a charge that lands late (a gateway holding the
    /// confirm, a clock that stepped). The lookups thin out: each waits as
    /// long as the payment has waited, at most 15 minutes more than
    /// `--completer-after-seconds`. Longer than any gateway holds a confirm.
    #[arg(long, env = "TALLY_GATEWAY_WATCH_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub gateway_watch_seconds: u64,
    /// Test only: skews this instance's clock by this many milliseconds
    /// (negative: behind). Refused unless `TALLY_ALLOW_TEST_HOOKS=1`, so a
    /// production deployment cannot run with a wrong clock by mistake.
    #[arg(long, hide = true, allow_negative_numbers = true)]
    pub test_clock_offset_ms: Option<i64>,
}

/// The environment variable that allows `--test-clock-offset-ms`.
pub const ALLOW_TEST_HOOKS_ENV: &str = "TALLY_ALLOW_TEST_HOOKS";

/// Applies the test-only clock offset, if one is asked for and allowed.
fn apply_test_hooks(args: &ServeArgs, allowed: bool) -> Result<(), String> {
    match args.test_clock_offset_ms {
        None | Some(0) => Ok(()),
        Some(_) if !allowed => {
            Err(format!("--test-clock-offset-ms is a test hook: refused unless {ALLOW_TEST_HOOKS_ENV}=1"))
        }
        Some(offset) => {
            tracing::warn!(offset_ms = offset, "TEST HOOK: this instance's clock is skewed");
            crate::runtime::set_test_clock_offset(offset);
            Ok(())
        }
    }
}

/// `tally gateway-sim`: the fake payment gateway, for trying gateway payments
/// locally and for the crash tests.
#[derive(Debug, clap::Args)]
pub struct GatewaySimArgs {
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    #[arg(long, env = "TALLY_GATEWAY_SECRET_KEY", default_value = "test_sk")]
    pub secret_key: String,
}

pub async fn gateway_sim(args: GatewaySimArgs) -> Result<(), String> {
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.map_err(|e| format!("listening on {}: {e}", args.listen))?;
    println!("fake gateway listening on http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let gateway = tally_gateway::FakeGateway::new(&args.secret_key);
    tally_gateway::fake::serve(listener, gateway, shutdown_signal()).await.map_err(|e| e.to_string())
}

/// Test hook (see `tally_core::Config::pause_after_gateway`): the crash tests
/// set it to kill the process between the gateway's answer and our commit.
const PAUSE_AFTER_GATEWAY_ENV: &str = "TALLY_TEST_PAUSE_AFTER_GATEWAY_MS";

/// How often the completer looks for stuck gateway payments, and how many it
/// takes per round.
const COMPLETE_EVERY: Duration = Duration::from_secs(5);
const COMPLETE_BATCH: usize = 32;

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// How often the reaper looks for expired idempotency keys, and how many it
/// deletes per transaction (short transactions, bounded work).
const REAP_EVERY: Duration = Duration::from_secs(60);
const REAP_BATCH: usize = 1_000;

/// How often the sweeper expires unpaid orders past their TTL, and how many
/// it takes per call (each in its own transaction). Every second: a reader
/// already sees an order past its TTL as expired, but its stock and seats
/// come back only when the sweeper writes it.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_BATCH: usize = 100;

/// The database to use: the given URL, or a private cluster started here
/// (kept alive by the returned handle; dropping it stops the cluster).
pub(crate) fn open_database(args: &DatabaseArgs) -> Result<(String, Option<tally_cluster::Cluster>), String> {
    if let Some(url) = &args.database_url {
        return Ok((url.clone(), None));
    }
    std::fs::create_dir_all(&args.data_dir).map_err(|e| format!("creating {}: {e}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir).map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    tracing::info!(data_dir = %data_dir.display(), "starting the private PostgreSQL cluster");
    let cluster = tally_cluster::Cluster::start(tally_cluster::ClusterConfig::persistent(data_dir.join("postgres")))
        .map_err(|e| e.to_string())?;
    // Reachable only through a private Unix socket; printed so that psql and
    // `tally load --database-url` can look at the data.
    println!("database: {}", cluster.url());
    Ok((cluster.url(), Some(cluster)))
}

pub async fn migrate(args: MigrateArgs) -> Result<(), String> {
    let (url, cluster) =
        tokio::task::spawn_blocking(move || open_database(&args.database)).await.map_err(|e| e.to_string())??;
    let store = PgStore::connect_lazy(&url, PgConfig { max_connections: 1, ..PgConfig::default() })
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    println!("migrations applied");
    drop(cluster);
    Ok(())
}

/// The admin key: `TALLY_ADMIN_KEY`, or one generated at the first start,
/// printed once, and kept (owner-readable only) in the data directory.
fn admin_key(data_dir: &Path, persist: bool) -> Result<String, String> {
    if let Ok(key) = std::env::var("TALLY_ADMIN_KEY")
        && !key.is_empty()
    {
        return Ok(key);
    }
    let path = data_dir.join("admin-key");
    if persist && let Ok(key) = std::fs::read_to_string(&path) {
        return Ok(key.trim().to_owned());
    }
    let key = tally_http::new_api_key();
    if persist {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        writeln!(file, "{key}").map_err(|e| e.to_string())?;
        println!("generated the admin key (kept in {}): {key}", path.display());
    } else {
        println!("admin key for this run: {key}");
    }
    Ok(key)
}

/// A count from 1 to `limit`, as clap parses it.
fn one_to(limit: usize) -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=limit as u64)
}

/// The shortest `--idempotency-ttl-seconds`: twice the in-flight lease.
const IDEMPOTENCY_TTL_MIN_SECONDS: u64 = 120;

fn core_config(args: &ServeArgs) -> Config {
    let defaults = Config::default();
    let ttl = Duration::from_secs(args.idempotency_ttl_seconds);
    assert!(ttl >= 2 * defaults.idempotency.lease, "a key outlives its lease (the flag's range says so)");
    let pause = std::env::var(PAUSE_AFTER_GATEWAY_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    Config {
        idempotency: IdemConfig { ttl, lease: defaults.idempotency.lease },
        pause_after_gateway: Duration::from_millis(pause),
        order_ttl: Duration::from_secs(args.order_ttl_seconds),
        payback_bps: args.payback_bps,
        batch_max: usize::try_from(args.batch_max).expect("at most BATCH_MAX_LIMIT"),
        batch_shards: usize::try_from(args.batch_shards).expect("at most BATCH_SHARDS_LIMIT"),
        batch_overlap: usize::try_from(args.batch_overlap).expect("at most BATCH_OVERLAP_LIMIT"),
        gateway_give_up_after: Duration::from_secs(args.gateway_give_up_seconds),
        gateway_watch_after_give_up: Duration::from_secs(args.gateway_watch_seconds),
        ..defaults
    }
}

pub async fn serve(args: ServeArgs) -> Result<(), String> {
    apply_test_hooks(&args, std::env::var(ALLOW_TEST_HOOKS_ENV).is_ok_and(|v| v == "1"))?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.map_err(|e| format!("listening on {}: {e}", args.listen))?;
    match args.store {
        StoreKind::Memory => {
            let admin = admin_key(&args.database.data_dir, false)?;
            let clock = SystemClock;
            let store = MemStore::new(Concurrency::Locked);
            let locks = MemLocks::new(clock, tally_lock::Config::default());
            let app = Tally::new(store, locks, clock, Arc::new(UuidIds), core_config(&args));
            tracing::warn!("serving on the in-memory store: nothing survives a restart");
            with_gateway(app, listener, &args, admin, Readiness::always()).await
        }
        StoreKind::Postgres => {
            let database = DatabaseArgs {
                database_url: args.database.database_url.clone(),
                data_dir: args.database.data_dir.clone(),
            };
            let (url, cluster) =
                tokio::task::spawn_blocking(move || open_database(&database)).await.map_err(|e| e.to_string())??;
            let admin = admin_key(&args.database.data_dir, true)?;
            let config = PgConfig {
                strategy: args.strategy,
                max_connections: args.max_connections,
                acquire_timeout: Duration::from_millis(args.acquire_timeout_ms),
                ..PgConfig::default()
            };
            let store = PgStore::connect_lazy(&url, config).map_err(|e| e.to_string())?;
            store.migrate().await.map_err(|e| e.to_string())?;
            let (locks, redis) = open_locks(args.strategy, &args.redis).await?;
            let (probe, lock_probe) = (store.clone(), locks.clone());
            // Ready when the database answers, and the lock service if any.
            let readiness = Readiness::new(move || {
                let (probe, lock_probe) = (probe.clone(), lock_probe.clone());
                Box::pin(async move { lock_probe.ready().await && probe.ready().await })
            });
            tracing::info!(strategy = args.strategy.as_str(), "serving on PostgreSQL");
            let app = Tally::new(store, locks, SystemClock, Arc::new(UuidIds), core_config(&args));
            let served = with_gateway(app, listener, &args, admin, readiness).await;
            if let Some(redis) = redis {
                tokio::task::spawn_blocking(move || redis.stop()).await.map_err(|e| e.to_string())?;
                tracing::info!("private redis-server stopped");
            }
            if let Some(cluster) = cluster {
                tokio::task::spawn_blocking(move || cluster.stop())
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                tracing::info!("private PostgreSQL cluster stopped");
            }
            served
        }
    }
}

/// The lock manager beside the store: none, or for the redis strategy the
/// locks in Redis (`--redis-url`, or a private `redis-server`, returned to
/// be stopped on exit).
pub(crate) async fn open_locks(strategy: Strategy, args: &RedisArgs) -> Result<(Locks, Option<RedisServer>), String> {
    if strategy != Strategy::Redis {
        return Ok((Locks::None, None));
    }
    let (url, server) = match &args.redis_url {
        Some(url) => (url.clone(), None),
        None => {
            let started = tokio::task::spawn_blocking(RedisServer::start).await.map_err(|e| e.to_string())?;
            let server = started.map_err(|e| e.to_string())?;
            (server.url(), Some(server))
        }
    };
    let config =
        RedisLockConfig { lease: Duration::from_millis(args.redis_lease_ms), ..RedisLockConfig::new(args.redis_lock) };
    let locks = RedisLocks::new(&url, config).map_err(|e| e.to_string())?;
    tracing::info!(redis = %url, lock = args.redis_lock.as_str(), "locks in Redis");
    Ok((Locks::Redis(locks), server))
}

/// Adds the configured gateway (if any) and runs.
async fn with_gateway<S: Store, L: LockManager>(
    app: Tally<S, L, SystemClock>,
    listener: tokio::net::TcpListener,
    args: &ServeArgs,
    admin: String,
    readiness: Readiness,
) -> Result<(), String> {
    match &args.gateway_url {
        Some(url) => {
            let config = tally_gateway::GatewayConfig::new(url.clone(), args.gateway_secret_key.clone());
            let client = tally_gateway::GatewayClient::new(config).map_err(|e| e.to_string())?;
            tracing::info!(gateway = %url, "gateway payments enabled");
            run(Arc::new(app.with_gateway(client)), listener, args, admin, readiness).await
        }
        None => run(Arc::new(app), listener, args, admin, readiness).await,
    }
}

async fn run<S: Store, L: LockManager, G: Gateway>(
    app: Arc<Tally<S, L, SystemClock, G>>,
    listener: tokio::net::TcpListener,
    args: &ServeArgs,
    admin: String,
    readiness: Readiness,
) -> Result<(), String> {
    let mut http = HttpConfig::new(admin);
    // The process-wide recorder, so that what the store counts (conflicts,
    // which `tally bench` reports as retries) shows on `/metrics` too. A
    // second server in one process (tests) keeps its own.
    if let Ok(handle) = tally_http::Metrics::builder().install_recorder() {
        http.metrics = tally_http::Metrics::global(handle);
    }
    http.concurrency_limit = args.concurrency_limit;
    http.rate_limit = args.rate_limit;
    let metrics = http.metrics.clone();
    let mut router = tally_http::router(app.clone(), http, readiness);
    let alerts = match &args.alert_webhook {
        Some(url) => Some(Alerts::start(url.clone(), ALERT_INTERVAL)?),
        None => None,
    };
    if let Some(alerts) = &alerts {
        router = router.layer(axum::middleware::from_fn_with_state(alerts.clone(), alerts::watch_server_errors));
    }
    let reaper = tokio::spawn(reap(app.clone()));
    let sweeper = tokio::spawn(sweep(app.clone()));
    let completer = tokio::spawn(complete(app, Duration::from_secs(args.completer_after_seconds), alerts));
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("tally listening on http://{address}");
    let listener = PerAddressLimit::new(listener, args.max_connections_per_address, metrics);
    let served = tally_http::serve(listener, router, shutdown_signal()).await.map_err(|e| e.to_string());
    reaper.abort();
    sweeper.abort();
    completer.abort();
    served
}

/// Resolves gateway payments stuck in `confirming`, `cancelling` or
/// `refunding` (a crash between the gateway's answer and our commit, a
/// timeout, a refund owed whose answer was unclear), by a lookup or a
/// re-sent (idempotent) cancel, in bounded batches, forever. Safe with
/// several instances: each claims what it resolves.
async fn complete<S: Store, L: LockManager, G: Gateway>(
    app: Arc<Tally<S, L, SystemClock, G>>,
    after: Duration,
    alerts: Option<Arc<Alerts>>,
) {
    if !app.gateway().enabled() {
        return;
    }
    let mut tick = tokio::time::interval(COMPLETE_EVERY);
    loop {
        tick.tick().await;
        let completion = match app.complete_stuck(after, COMPLETE_BATCH).await {
            Ok(completion) => completion,
            Err(error) => {
                tracing::warn!(%error, "resolving stuck gateway payments failed; retrying later");
                continue;
            }
        };
        if let Some(alerts) = &alerts {
            alerts.completion(&completion, std::time::Instant::now());
        }
        match completion.into_result() {
            Ok(0) => {}
            Ok(n) => tracing::info!(resolved = n, "stuck gateway payments resolved"),
            Err(error) => tracing::warn!(%error, "resolving stuck gateway payments failed; retrying later"),
        }
    }
}

/// Expires unpaid orders past their TTL (seed 004's scheduled job), in
/// bounded batches, forever. A full batch is followed at once by another, so
/// a backlog drains without waiting a tick per batch. Safe with several
/// instances: an order another sweeper (or a payment) holds is skipped.
async fn sweep<S: Store, L: LockManager, G: Gateway>(app: Arc<Tally<S, L, SystemClock, G>>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    // A slow sweep (a busy database) must not be followed by a burst of
    // catch-up ticks.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            match app.expire_orders(SWEEP_BATCH).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(expired = n, "unpaid orders expired; their stock and seats are back");
                    }
                    if n < SWEEP_BATCH {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "expiring orders failed; retrying on the next tick");
                    break;
                }
            }
        }
    }
}

/// Deletes expired idempotency keys, in bounded batches, forever.
async fn reap<S: Store, L: LockManager, G: Gateway>(app: Arc<Tally<S, L, SystemClock, G>>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tick.tick().await;
        loop {
            match app.reap_idempotency(REAP_BATCH).await {
                Ok(n) if n == REAP_BATCH => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(reaped = n, "expired idempotency keys deleted");
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "reaping idempotency keys failed; retrying later");
                    break;
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("tally-serve").chain(args.iter().copied())).map(|cli| cli.serve)
    }

    #[test]
    fn the_payback_policy_is_0_to_10000_basis_points_and_reaches_the_core() {
        // The environment may set it on a developer's machine; only
        // without it does the built-in default show.
        if std::env::var_os("TALLY_PAYBACK_BPS").is_none() {
            assert_eq!(core_config(&parse(&[]).unwrap()).payback_bps, 0);
        }
        let full = parse(&["--payback-bps", "10000"]).unwrap();
        assert_eq!(core_config(&full).payback_bps, 10_000);
        let some = parse(&["--payback-bps", "250"]).unwrap();
        assert_eq!(core_config(&some).payback_bps, 250);
        for bad in ["10001", "-1", "2.5", "lots"] {
            assert!(parse(&["--payback-bps", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_test_clock_offset_is_refused_without_the_explicit_allowance() {
        let skewed = parse(&["--test-clock-offset-ms", "-250"]).unwrap();
        assert_eq!(skewed.test_clock_offset_ms, Some(-250));
        let refused = apply_test_hooks(&skewed, false).unwrap_err();
        assert!(refused.contains(ALLOW_TEST_HOOKS_ENV), "{refused}");
        // No offset asked for: nothing to allow.
        assert_eq!(apply_test_hooks(&parse(&[]).unwrap(), false), Ok(()));
    }

    #[test]
    fn the_gateway_give_up_reaches_the_core() {
        let args = parse(&["--gateway-give-up-seconds", "15"]).unwrap();
        assert_eq!(core_config(&args).gateway_give_up_after, Duration::from_secs(15));
        assert!(parse(&["--gateway-give-up-seconds", "0"]).is_err());
        let args = parse(&["--gateway-watch-seconds", "600"]).unwrap();
        assert_eq!(core_config(&args).gateway_watch_after_give_up, Duration::from_secs(600));
        assert!(parse(&["--gateway-watch-seconds", "0"]).is_err());
    }
}
