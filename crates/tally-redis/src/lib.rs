//! The redis strategy's lock manager: [`RedisLocks`], the core's
//! `LockManager` over Redis, and [`RedisServer`], a private `redis-server`
//! for `tally serve` without `--redis-url` and for the tests.
//!
//! A lock set is taken one key at a time, in the set's order (the core's
//! global lock order, so two acquirers never wait on each other in a
//! cycle). Each key is a lease: `SET tally:lock:{name} owner NX PX lease`
//! (`tally` is the configured namespace). The same script that sets it
//! draws the grant's **fencing token** from `INCR tally:fence:{name}`; the guard hands the tokens to the store
//! (`Fenced`), and PostgreSQL refuses a transaction whose token a later
//! grant has overtaken (`tally-pg`'s `tx::fences`). The lease is what lets
//! the service survive a holder that died; the fence is what keeps a holder
//! that merely *paused* past its lease from writing over its successor.
//!
//! Why one counter per key rather than one global counter: the store only
//! compares tokens of one key, so either is correct; a counter beside its
//! lock (one hash tag, `{name}`) keeps the grant script on one key slot, as
//! Redis Cluster requires of a script, where a global counter would send
//! every grant of every key through one slot. A counter also never goes
//! below the server's clock in microseconds: a Redis that lost its data
//! (a restart without persistence, as the private one runs) starts counting
//! above every token it handed before, instead of at 1, below what
//! PostgreSQL has claimed, which would fence that key forever.
//!
//! Release is an owner-checked script (`GET` = owner → `DEL`), so a holder
//! whose lease expired cannot free its successor's lock; it runs when the
//! guard drops, and the drop waits for it (`release`: a release that fails
//! leaves the lease to expire).
//!
//! A busy key is waited for in one of seed 002's three ways ([`Flavour`]):
//! a fixed retry, a capped exponential backoff with jitter, or a release
//! message on a channel (as Redisson does) with a bounded fallback poll.
//! The acquire timeout bounds the wait (one Redis call may finish past it,
//! itself bounded by `call_timeout`); a zero timeout tries each key once.
//! Redis unreachable or slow → `LockError::Unavailable` (503), nothing
//! granted, nothing written.

mod conn;
mod release;
mod server;
mod wait;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tally_core::store::{Fenced, Fences, LockError, LockKey, LockManager, LockSet};
use tokio::time::Instant;

pub use server::{RedisServer, ServerError};

/// How a busy key is waited for (seed 002).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `SET NX PX`, retried at a fixed interval (`retry`) until the timeout.
    Simple,
    /// Retried after a capped exponential backoff with full jitter.
    Spin,
    /// Woken by the holder's release message (one subscription per lock
    /// manager), with a fallback poll every `fallback_poll` in case the
    /// message was missed (a lease that expired publishes nothing).
    PubSub,
}

impl Flavour {
    pub const ALL: [Flavour; 3] = [Flavour::Simple, Flavour::Spin, Flavour::PubSub];

    pub const fn as_str(self) -> &'static str {
        match self {
            Flavour::Simple => "simple",
            Flavour::Spin => "spin",
            Flavour::PubSub => "pubsub",
        }
    }
}

impl std::str::FromStr for Flavour {
    type Err = String;

    fn from_str(text: &str) -> Result<Flavour, String> {
        Flavour::ALL
            .into_iter()
            .find(|f| f.as_str() == text)
            .ok_or_else(|| format!("unknown Redis lock {text:?}: expected simple, spin or pubsub"))
    }
}

/// The lock manager's limits. Every one is explicit.
#[derive(Clone, Debug)]
pub struct RedisLockConfig {
    pub flavour: Flavour,
    /// How long a grant lasts if its holder never releases it. Longer than
    /// a use case's transaction (PostgreSQL kills one idle for 10 s).
    pub lease: Duration,
    /// Every Redis call (and connecting) gives up after this.
    pub call_timeout: Duration,
    /// `Simple`: the pause between tries.
    pub retry: Duration,
    /// `Spin`: the first backoff, doubled per try up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// `PubSub`: the longest wait for a release message before trying again.
    pub fallback_poll: Duration,
    /// The prefix of every Redis key and channel: deployments (or tests)
    /// sharing one Redis with different namespaces never meet.
    pub namespace: String,
}

impl RedisLockConfig {
    pub fn new(flavour: Flavour) -> RedisLockConfig {
        RedisLockConfig {
            flavour,
            lease: Duration::from_secs(15),
            call_timeout: Duration::from_secs(1),
            retry: Duration::from_millis(5),
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(50),
            fallback_poll: Duration::from_millis(100),
            namespace: "tally".to_owned(),
        }
    }
}

/// Failures of the lock manager's setup (a bad URL).
#[derive(thiserror::Error, Debug)]
#[error("redis: {0}")]
pub struct RedisLockError(String);

/// The lock manager; clones share the connection and the subscription.
#[derive(Clone, Debug)]
pub struct RedisLocks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: conn::Conn,
    config: RedisLockConfig,
    /// This manager's owner names are `{instance}:{n}`: unique across
    /// processes and grants, so a release can only free its own grant.
    instance: String,
    next_owner: AtomicU64,
    /// Release messages, fed by the subscription task (`PubSub` only).
    released: Option<wait::Releases>,
    releaser: release::Releaser,
}

impl RedisLocks {
    /// A lock manager on the Redis at `url` (`redis://host:port` or
    /// `unix:///path/to/socket`). Connects lazily; must be called inside a
    /// tokio runtime (the `PubSub` flavour starts its subscription task).
    pub fn new(url: &str, config: RedisLockConfig) -> Result<RedisLocks, RedisLockError> {
        let client = redis::Client::open(url).map_err(|e| RedisLockError(format!("bad URL {url:?}: {e}")))?;
        let released = (config.flavour == Flavour::PubSub).then(|| wait::Releases::start(client.clone(), &config));
        let releaser = release::Releaser::start(
            conn::Conn::new(client.clone(), config.call_timeout, config.namespace.clone()),
            config.flavour == Flavour::PubSub,
            config.call_timeout,
        )
        .map_err(|e| RedisLockError(format!("starting the release thread: {e}")))?;
        let inner = Inner {
            releaser,
            conn: conn::Conn::new(client, config.call_timeout, config.namespace.clone()),
            config,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            next_owner: AtomicU64::new(0),
            released,
        };
        Ok(RedisLocks { inner: Arc::new(inner) })
    }

    pub fn config(&self) -> &RedisLockConfig {
        &self.inner.config
    }

    /// Is Redis reachable? For `/readyz`.
    pub async fn ready(&self) -> bool {
        self.inner.conn.ping().await.is_ok()
    }

    async fn acquire_set(&self, keys: &LockSet, timeout: Duration) -> Result<RedisGuard, LockError> {
        let deadline = Instant::now() + timeout;
        let owner = format!("{}:{}", self.inner.instance, self.inner.next_owner.fetch_add(1, Ordering::Relaxed));
        // Dropped on any failure below: releases what was granted so far
        // (and the key being tried, whose grant may have landed unheard).
        let mut guard = RedisGuard { inner: self.inner.clone(), owner, held: Vec::new(), tokens: Vec::new() };
        for key in keys.keys() {
            let lock = conn::lock_key(&self.inner.config.namespace, key);
            guard.held.push(lock.clone());
            let token = self.inner.wait_for(key, &lock, &guard.owner, deadline).await?;
            guard.tokens.push((key.clone(), token));
        }
        Ok(guard)
    }
}

impl Inner {
    /// Waits for one key until `deadline`, the flavour's way; its token.
    async fn wait_for(&self, key: &LockKey, lock: &str, owner: &str, deadline: Instant) -> Result<u64, LockError> {
        // Subscribed before the first try, so a release between a failed
        // try and the wait is not missed.
        let mut releases = self.released.as_ref().map(wait::Releases::subscribe);
        let mut backoff = wait::Backoff::new(&self.config);
        loop {
            if let Some(token) = self.conn.grant(key, lock, owner, self.config.lease).await? {
                return Ok(token);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::Timeout);
            }
            let pause = match self.config.flavour {
                Flavour::Simple => self.config.retry,
                Flavour::Spin => backoff.next(),
                Flavour::PubSub => self.config.fallback_poll,
            };
            let until = deadline.min(now + pause);
            match releases.as_mut() {
                Some(releases) => releases.wait(lock, until).await,
                None => tokio::time::sleep_until(until).await,
            }
        }
    }
}

impl LockManager for RedisLocks {
    type Guard = RedisGuard;

    async fn acquire(&self, keys: &LockSet, timeout: Duration) -> Result<RedisGuard, LockError> {
        self.acquire_set(keys, timeout).await
    }
}

/// A granted lock set: its keys' leases and fencing tokens. Dropping it
/// releases the leases still ours.
#[derive(Debug)]
pub struct RedisGuard {
    inner: Arc<Inner>,
    owner: String,
    held: Vec<String>,
    tokens: Vec<(LockKey, u64)>,
}

impl RedisGuard {
    /// The owner name this grant's leases carry (tests look at Redis).
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

impl Fenced for RedisGuard {
    fn fences(&self) -> Fences {
        Fences::new(self.tokens.iter().cloned())
    }
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let owner = std::mem::take(&mut self.owner);
        self.inner.releaser.release(held, owner);
    }
}

/// The lock manager a PostgreSQL deployment runs with: none (the strategy
/// keeps requests apart in the database) or Redis (the redis strategy). One
/// type, so `tally serve` and the end-to-end harness wire either alike.
#[derive(Clone, Debug)]
pub enum Locks {
    None,
    Redis(RedisLocks),
}

impl Locks {
    /// Is the lock service reachable? (Always, without one.)
    pub async fn ready(&self) -> bool {
        match self {
            Locks::None => true,
            Locks::Redis(locks) => locks.ready().await,
        }
    }
}

/// A [`Locks`] grant: nothing, or a Redis grant.
#[derive(Debug)]
pub struct LocksGuard(Option<RedisGuard>);

impl Fenced for LocksGuard {
    fn fences(&self) -> Fences {
        self.0.as_ref().map(Fenced::fences).unwrap_or_default()
    }
}

impl LockManager for Locks {
    type Guard = LocksGuard;

    async fn acquire(&self, keys: &LockSet, timeout: Duration) -> Result<LocksGuard, LockError> {
        match self {
            Locks::None => Ok(LocksGuard(None)),
            Locks::Redis(locks) => locks.acquire_set(keys, timeout).await.map(|guard| LocksGuard(Some(guard))),
        }
    }
}
