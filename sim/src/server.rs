//! One `tally` server host: the real router and the real background jobs,
//! wired as `tally serve` wires them, over the deployment's shared database.
//!
//! The host's factory runs again on every restart. Everything it builds —
//! the use cases, the router, the gateway client, the completer and reaper
//! tasks, the order-expiry sweeper, every request in flight — is the process's memory and dies with a
//! crash. What survives is what it was given: the shared store and lock
//! table (the database and its row locks), the id sequence, the clock.

use std::sync::Arc;

use tally_core::Tally;
use tally_core::app::Config;
use tally_core::idempotency::IdemConfig;
use tally_core::ids::IdGen;
use tally_http::{HttpConfig, Readiness};
use tally_mem::{MemLocks, MemStore};

use crate::clock::SimClock;
use crate::gateway::{SimGateway, Tamper};
use crate::journal::{Count, Journal};
use crate::net::{PORT, SimListener};
use crate::plan::timing;

/// The admin key of every simulated server (clients use it to restock).
pub const ADMIN_KEY: &str = "tly_sim_admin";

/// What every server incarnation is built from; survives crashes.
#[derive(Clone)]
pub struct Deployment {
    pub store: MemStore,
    pub locks: MemLocks<SimClock>,
    pub clock: SimClock,
    pub ids: Arc<dyn IdGen>,
    pub journal: Journal,
    /// The seed's `Config::order_ttl`.
    pub order_ttl: std::time::Duration,
    /// The seed's `Config::payback_bps` (the merchant's default payback).
    pub payback_bps: u32,
    /// Which confirms the gateway charges for another amount.
    pub tamper: Tamper,
    /// The seed's group commit.
    pub batching: crate::plan::Batching,
    /// The router's configuration, built once per seed ([`http_config`]):
    /// its metrics recorder is shared by every incarnation of every server.
    pub http: HttpConfig,
}

/// The servers' router configuration: `tally serve`'s, with the
/// simulation's request timeout and without the OpenAPI docs (nobody reads
/// them here, and building them was a fifth of a seed's CPU time).
pub fn http_config() -> HttpConfig {
    let mut http = HttpConfig::new(ADMIN_KEY);
    http.request_timeout = timing::REQUEST_TIMEOUT;
    http.docs = false;
    http
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment").field("store", &self.store).finish_non_exhaustive()
    }
}

/// The use cases' configuration in the simulation (see [`timing`]), with
/// the seed's order TTL and default payback.
pub fn core_config(order_ttl: std::time::Duration, payback_bps: u32) -> Config {
    Config {
        idempotency: IdemConfig { ttl: timing::KEY_TTL, lease: timing::LEASE },
        lock_wait: timing::LOCK_WAIT,
        gateway_give_up_after: timing::GATEWAY_GIVE_UP,
        gateway_watch_after_give_up: timing::GATEWAY_WATCH,
        order_ttl,
        payback_bps,
        // As `tally serve` runs by default: group commit on, two queues, a
        // batch's statements overlapping the previous batch's commit. The
        // servers then run the seed's own queues ([`Deployment::batching`]).
        batch_max: 64,
        batch_shards: 2,
        batch_overlap: 1,
        ..Config::default()
    }
}

type App = Tally<MemStore, MemLocks<SimClock>, SimClock, SimGateway>;

/// The host's software: runs until the host crashes. `clock`: this host's
/// own clock (lagging and drifting: the clock-skew fault).
pub async fn serve(deployment: Deployment, name: String, clock: SimClock) -> turmoil::Result {
    let journal = deployment.journal.clone();
    let gateway = SimGateway::new(&name, timing::GATEWAY_TIMEOUT, journal.clone(), deployment.tamper);
    let app: Arc<App> = Arc::new(
        Tally::new(
            deployment.store,
            deployment.locks,
            clock,
            deployment.ids,
            Config {
                batch_shards: deployment.batching.shards,
                batch_overlap: deployment.batching.overlap,
                ..core_config(deployment.order_ttl, deployment.payback_bps)
            },
        )
        .with_gateway(gateway),
    );
    let mut http = deployment.http;
    // Keys for users created over the API: deterministic, never random.
    let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
    http.key_gen =
        Arc::new(move || format!("tly_sim_issued_{}", issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let router = tally_http::router(Arc::clone(&app), http, Readiness::always());
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    journal.event(&name, "started");
    tokio::spawn(complete(Arc::clone(&app), journal.clone(), name.clone()));
    tokio::spawn(reap(Arc::clone(&app), journal.clone(), name.clone()));
    tokio::spawn(count_batched(Arc::clone(&app), journal.clone()));
    tokio::spawn(sweep(app, journal, name));
    tally_http::serve(SimListener(listener), router, std::future::pending()).await?;
    Ok(())
}

/// Coverage: how many requests shared a group commit, carried into the
/// journal as they happen (a crash loses at most one interval's).
async fn count_batched(app: Arc<App>, journal: Journal) {
    let mut counted = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let now = app.requests_batched_together();
        journal.count(Count::BatchedTogether, now - counted);
        counted = now;
    }
}

/// `tally serve`'s completer, on the simulation's cadence.
async fn complete(app: Arc<App>, journal: Journal, name: String) {
    loop {
        tokio::time::sleep(timing::COMPLETER_EVERY).await;
        let resolved = app.resolve_stuck(timing::COMPLETER_AFTER, 32).await;
        let done = |n| format!("completer resolved {n} payment(s)");
        journal_pass(&journal, &name, "completer", Count::CompleterResolved, resolved, done);
    }
}

/// `tally serve`'s idempotency reaper.
async fn reap(app: Arc<App>, journal: Journal, name: String) {
    loop {
        tokio::time::sleep(timing::REAPER_EVERY).await;
        let reaped = app.reap_idempotency(1_000).await;
        let done = |n| format!("reaped {n} expired key(s)");
        journal_pass(&journal, &name, "reaper", Count::KeysReaped, reaped, done);
    }
}

/// `tally serve`'s order-expiry sweeper: every second, unpaid orders past
/// their TTL expire and give their stock and seats back; a full batch is
/// followed at once by another.
async fn sweep(app: Arc<App>, journal: Journal, name: String) {
    let mut tick = tokio::time::interval(timing::SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            let expired = app.expire_orders(timing::SWEEP_BATCH).await;
            let full = matches!(expired, Ok(n) if n >= timing::SWEEP_BATCH);
            let done = |n| format!("sweeper expired {n} order(s)");
            journal_pass(&journal, &name, "sweeper", Count::OrdersSwept, expired, done);
            if !full {
                break;
            }
        }
    }
}

/// Counts and journals what one pass of a background duty did (nothing
/// when it found nothing to do), or that it failed.
fn journal_pass(
    journal: &Journal,
    name: &str,
    duty: &str,
    count: Count,
    pass: Result<usize, tally_core::Error>,
    done: impl FnOnce(usize) -> String,
) {
    match pass {
        Ok(0) => {}
        Ok(n) => {
            journal.count(count, n as u64);
            journal.event(name, done(n));
        }
        Err(error) => journal.event(name, format!("{duty} failed: {error}")),
    }
}
