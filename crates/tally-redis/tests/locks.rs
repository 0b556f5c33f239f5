//! `RedisLocks` against a real, private `redis-server`: exclusion, tokens,
//! leases, release, and Redis going away. Needs `redis-server` installed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tally_core::ids::UserId;
use tally_core::store::{Fenced, LockError, LockKey, LockManager, LockSet};
use tally_redis::{Flavour, RedisLockConfig, RedisLocks, RedisServer};

fn wallet(n: u128) -> LockKey {
    LockKey::Wallet(UserId(n))
}

fn locks(server: &RedisServer, flavour: Flavour) -> RedisLocks {
    RedisLocks::new(&server.url(), RedisLockConfig::new(flavour)).expect("a valid URL")
}

/// Exclusion: tasks that read a counter, pause, and write it back under one
/// key's lock never lose an increment, in every flavour; the tokens they were
/// granted are all distinct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flavour_excludes_and_hands_distinct_tokens() {
    let server = RedisServer::start().expect("redis-server starts");
    for flavour in Flavour::ALL {
        let locks = locks(&server, flavour);
        let counter = Arc::new(AtomicU64::new(0));
        let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, counter, tokens) = (locks.clone(), counter.clone(), tokens.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    let guard = locks.acquire(&LockSet::new([wallet(1)]), Duration::from_secs(10)).await.unwrap();
                    tokens.lock().unwrap().push(guard.fences().get(&wallet(1)).unwrap());
                    let seen = counter.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    counter.store(seen + 1, Ordering::SeqCst);
                    drop(guard);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(counter.load(Ordering::SeqCst), 80, "{flavour:?} lost an increment");
        let mut tokens = tokens.lock().unwrap().clone();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), 80, "{flavour:?} handed one token twice");
    }
    server.stop();
}

/// A held key refuses a zero-wait acquire at once (the idempotency probe's
/// "in use"), and a timed one after its timeout; a released key is granted
/// again, with a larger token, in every flavour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_key_times_out_and_a_released_one_is_granted_with_a_larger_token() {
    let server = RedisServer::start().expect("redis-server starts");
    for flavour in Flavour::ALL {
        let locks = locks(&server, flavour);
        let keys = LockSet::new([wallet(7), wallet(8)]);
        let first = locks.acquire(&keys, Duration::ZERO).await.unwrap();
        let token = first.fences().get(&wallet(8)).unwrap();
        assert_eq!(locks.acquire(&LockSet::new([wallet(8)]), Duration::ZERO).await.unwrap_err(), LockError::Timeout);
        let started = tokio::time::Instant::now();
        let timed = locks.acquire(&LockSet::new([wallet(8)]), Duration::from_millis(150)).await;
        assert_eq!(timed.unwrap_err(), LockError::Timeout);
        assert!(started.elapsed() >= Duration::from_millis(150) && started.elapsed() < Duration::from_secs(2));
        // Waiting across the release: granted once the first holder drops.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.acquire(&LockSet::new([wallet(8)]), Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        let second = waiter.await.unwrap().unwrap();
        assert!(second.fences().get(&wallet(8)).unwrap() > token, "{flavour:?}: tokens grow");
    }
    server.stop();
}

/// A holder that outlives its lease loses the key to the next acquirer,
/// whose token is larger (what the store's fence then compares), and the
/// expired holder's release does not free its successor's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_goes_to_the_next_holder_and_the_zombie_cannot_free_it() {
    let server = RedisServer::start().expect("redis-server starts");
    let mut config = RedisLockConfig::new(Flavour::Spin);
    config.lease = Duration::from_millis(200);
    let locks = RedisLocks::new(&server.url(), config).unwrap();
    let keys = LockSet::new([wallet(3)]);
    let zombie = locks.acquire(&keys, Duration::ZERO).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let successor = locks.acquire(&keys, Duration::ZERO).await.expect("the lease ran out");
    assert!(successor.fences().get(&wallet(3)) > zombie.fences().get(&wallet(3)));
    drop(zombie);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(locks.acquire(&keys, Duration::ZERO).await.unwrap_err(), LockError::Timeout, "still the successor's");
    server.stop();
}

/// Redis gone: an acquire fails with `Unavailable` within its bounds, never
/// hangs, never grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable_within_the_call_timeout() {
    let server = RedisServer::start().expect("redis-server starts");
    for flavour in Flavour::ALL {
        let locks = locks(&server, flavour);
        drop(locks.acquire(&LockSet::new([wallet(1)]), Duration::ZERO).await.unwrap());
    }
    server.kill().unwrap();
    for flavour in Flavour::ALL {
        let locks = locks(&server, flavour);
        let started = tokio::time::Instant::now();
        let result = locks.acquire(&LockSet::new([wallet(1)]), Duration::from_secs(1)).await;
        assert_eq!(result.unwrap_err(), LockError::Unavailable);
        assert!(started.elapsed() < Duration::from_secs(3), "{flavour:?} took {:?}", started.elapsed());
    }
    server.stop();
}
