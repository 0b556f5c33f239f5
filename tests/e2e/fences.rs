//! Fencing tokens checked by PostgreSQL (issue 15), and the redis strategy
//! when Redis is slow to release or gone.
//!
//! The claim's sequential rules are the conformance suite's
//! (`tally_conformance::fences`, run by `store_conforms` on every strategy);
//! the paused holders and Redis dying run on the redis
//! strategy, with tokens from a real Redis and leases short enough to run
//! out. The SQL mutant `pg_skip_fence_claim` (no claim) must fail both
//! pause tests.

use std::sync::Arc;
use std::time::Duration;

use tally::runtime::{SystemClock, UuidIds};
use tally_core::Error;
use tally_core::app::{Command, Config, Tally};
use tally_core::check::check;
use tally_core::ids::UserId;
use tally_core::money::{Amount, Money};
use tally_core::store::{Fenced, Fences, LockKey, LockManager, LockSet, Store, StoreError, Tx};
use tally_core::time::Clock;
use tally_core::wallet::{Limits, Movement};
use tally_pg::{PgStore, Strategy};
use tally_redis::{Flavour, Locks, RedisLockConfig, RedisLocks, RedisServer};

use crate::harness::{Pool, fresh_store};

/// The leases of the pause tests: short, so a pause outlives one.
const LEASE: Duration = Duration::from_millis(300);

/// The pause: past the lease, with room for a slow machine.
const PAUSE: Duration = Duration::from_millis(450);

fn wallet_key(user: UserId) -> LockSet {
    LockSet::new([LockKey::Wallet(user)])
}

/// A store on a fresh database and a user whose wallet holds `balance`.
async fn wallet_of(strategy: Strategy, balance: i64) -> (PgStore, UserId) {
    let store = fresh_store(strategy, &Pool::default()).await;
    let app = Tally::new(store.clone(), Locks::None, SystemClock, Arc::new(UuidIds), Config::default());
    let user = app.create_user("fenced", Limits::default(), [7; 32]).await.expect("user").id;
    let amount = Amount::new(balance).expect("amount");
    app.execute(user, Command::TopUp { amount }, None).await.expect("top up");
    (store, user)
}

/// Redis locks whose leases run out within the tests' pauses.
fn short_leases() -> RedisLocks {
    let config = RedisLockConfig { lease: LEASE, ..RedisLockConfig::new(Flavour::Spin) };
    RedisLocks::new(crate::harness::redis_url(), config).expect("redis URL")
}

/// Adds `amount` to `user`'s wallet in `tx` (a blind top-up of the wallet
/// row: what a holder's read-modify-write does).
async fn add(tx: &mut impl Tx, user: UserId, amount: i64) -> Result<(), StoreError> {
    let loaded = tx.wallet(user).await?.expect("wallet");
    let after = loaded.apply(Movement::TopUp(Amount::new(amount).expect("amount")), SystemClock.now()).expect("room");
    tx.put_wallet(Some(&loaded), &after).await
}

/// A whole transaction of the holder of `fences`: begin (claim), add, commit.
async fn top_up_under(store: &PgStore, user: UserId, fences: &Fences, amount: i64) -> Result<(), StoreError> {
    let mut tx = store.begin_locked(&wallet_key(user), fences, Duration::from_secs(5)).await?;
    add(&mut tx, user, amount).await?;
    tx.commit().await
}

async fn balance(store: &PgStore, user: UserId) -> Money {
    let mut tx = store.begin().await.expect("begin");
    let wallet = tx.wallet(user).await.expect("load").expect("wallet");
    tx.rollback().await;
    wallet.balance
}

/// A holder paused past its lease *before* its transaction: the next holder
/// is granted the key with a larger token and writes; the paused one's
/// `begin_locked` is then refused with `Fenced`, and only the later write
/// stands.
pub async fn a_holder_paused_before_its_transaction_is_fenced(strategy: Strategy) {
    let (store, user) = wallet_of(strategy, 100).await;
    let locks = short_leases();
    let zombie = locks.acquire(&wallet_key(user), Duration::ZERO).await.expect("the first grant");
    tokio::time::sleep(PAUSE).await;
    let successor = locks.acquire(&wallet_key(user), Duration::from_secs(2)).await.expect("the lease ran out");
    assert!(successor.fences().get(&LockKey::Wallet(user)) > zombie.fences().get(&LockKey::Wallet(user)));
    top_up_under(&store, user, &successor.fences(), 10).await.expect("the successor writes");
    let refused = store.begin_locked(&wallet_key(user), &zombie.fences(), Duration::from_secs(1)).await.map(drop);
    assert_eq!(refused, Err(StoreError::Fenced), "the zombie begins after its successor claimed");
    assert_eq!(balance(&store, user).await, Money::new(110), "the successor's write, alone");
}

/// A holder paused past its lease *in the middle* of its transaction (it
/// has read the wallet): the next holder is granted the key by Redis, but
/// its claim waits for the paused transaction, which then writes and
/// commits; the next holder reads what it wrote. Both top-ups land: no lost
/// update, exact balance.
pub async fn a_holder_paused_mid_transaction_makes_the_next_one_wait(strategy: Strategy) {
    let (store, user) = wallet_of(strategy, 100).await;
    let locks = short_leases();
    let zombie = locks.acquire(&wallet_key(user), Duration::ZERO).await.expect("the first grant");
    let mut zombie_tx =
        store.begin_locked(&wallet_key(user), &zombie.fences(), Duration::from_secs(1)).await.expect("claimed");
    let loaded = zombie_tx.wallet(user).await.expect("load").expect("wallet");
    assert_eq!(loaded.balance, Money::new(100));
    tokio::time::sleep(PAUSE).await;
    let successor = locks.acquire(&wallet_key(user), Duration::from_secs(2)).await.expect("the lease ran out");
    let successor_write = tokio::spawn({
        let (store, fences) = (store.clone(), successor.fences());
        async move { top_up_under(&store, user, &fences, 10).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!successor_write.is_finished(), "the successor's claim waits for the paused transaction");
    add(&mut zombie_tx, user, 5).await.expect("the paused holder writes on what it read");
    zombie_tx.commit().await.expect("and commits: PostgreSQL still serialises the two");
    successor_write.await.expect("task").expect("the successor writes after it");
    assert_eq!(balance(&store, user).await, Money::new(115), "both top-ups, none lost");
}

/// Redis killed while top-ups run: each request either completed or was
/// refused as unavailable (503: `Error::Busy`), nothing half-written; the
/// balance is exactly the completed top-ups and the invariant checker
/// passes. A Redis of this test's own (the run's shared one stays up).
pub async fn redis_killed_mid_run_refuses_and_loses_nothing(strategy: Strategy) {
    let server = tokio::task::spawn_blocking(RedisServer::start).await.expect("task").expect("redis-server starts");
    let store = fresh_store(strategy, &Pool::default()).await;
    let locks = RedisLocks::new(&server.url(), RedisLockConfig::new(Flavour::PubSub)).expect("url");
    let app = Arc::new(Tally::new(store, Locks::Redis(locks), SystemClock, Arc::new(UuidIds), Config::default()));
    let user = app.create_user("killed", Limits::default(), [9; 32]).await.expect("user").id;
    let top_ups = (0..40).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 * i)).await;
            let amount = Amount::new(10).expect("amount");
            app.execute(user, Command::TopUp { amount }, None).await.map(drop)
        })
    });
    let top_ups: Vec<_> = top_ups.collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill().expect("kill -9 redis-server");
    let mut completed = 0;
    for top_up in top_ups {
        match top_up.await.expect("task") {
            Ok(()) => completed += 1,
            Err(error) => {
                assert_eq!(error, Error::Busy("the lock service is unavailable"));
                assert_eq!(tally_http::ApiError::from(error).status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
            }
        }
    }
    assert!(completed > 0 && completed < 40, "the kill fell mid-run: {completed} of 40 completed");
    assert_eq!(app.wallet(user).await.expect("wallet").wallet.balance, Money::new(10 * completed));
    assert_eq!(check(&app.snapshot().await.expect("snapshot")), vec![]);
    server.stop();
}
