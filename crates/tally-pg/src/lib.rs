//! The PostgreSQL store: the core's `Store` and `Tx` on sqlx.
//!
//! Every statement of a use case runs on that use case's own transaction, at
//! READ COMMITTED, on one pooled connection. What keeps concurrent use cases
//! apart is the [`Strategy`]:
//!
//! - [`Strategy::Pessimistic`]: loads take row locks (`SELECT … FOR UPDATE`),
//!   in the core's global lock order, so writers of one record queue up.
//! - [`Strategy::Optimistic`]: plain loads; every update carries
//!   `WHERE version = $loaded`, and a stale one fails with
//!   `StoreError::Conflict` after a short random pause (jitter), and the core
//!   retries the use case a bounded number of times. Never around a foreign call.
//! - [`Strategy::Advisory`]: a use case's record keys are locked with
//!   `pg_advisory_xact_lock` when its transaction begins, in the core's
//!   global lock order, with a lock timeout (`Store::begin_locked`; see
//!   `tx::advisory`). Loads then take no row locks; writes check versions.
//! - [`Strategy::Redis`]: the use case's lock set is held in Redis (the
//!   `tally-redis` lock manager, beside the store); loads take no row locks,
//!   writes check versions, idempotency rows are taken as under advisory.
//!   What makes a Redis lease safe is the fencing-token claim every
//!   strategy makes at `Store::begin_locked` when the lock manager hands
//!   tokens (`tx::fences`).
//! - [`Strategy::Atomic`]: plain loads; the wallet is changed by one
//!   conditional `UPDATE … SET balance = balance + $delta WHERE <the decision's
//!   guards>` and a payment by `UPDATE … WHERE status = $from`. The guards
//!   restate `Wallet::apply` on the current row: never below zero, never
//!   above the ceiling with every held payback counted (the wallet's maximum,
//!   and the balance cap for every wallet), limits counted in the newest
//!   spending window (a window never moves backwards). A guard that no
//!   longer holds (0 rows) is a `Conflict`: the use case reloads and decides
//!   again, and then refuses if it must. The ledger lines' balance-after and
//!   position come from the row the update returned.
//!
//! Inventory follows the same three shapes. Pessimistic loads of products,
//! seats, orders and events take `FOR NO KEY UPDATE` (what an `UPDATE` takes
//! anyway; it leaves other transactions' foreign-key checks unblocked), and
//! the event row guards its queue tokens; the expiry sweeper's load of an
//! order is `SKIP LOCKED`. Optimistic writes carry the loaded version. Atomic
//! writes are conditional on the state the decision moved from: a product's
//! stock as a delta (`stock = stock + $d WHERE stock + $d >= 0 AND …`, so a
//! decision on a stale read still lands right, like a wallet's), a seat on
//! its status and holder, an order on its status, paying payment and
//! version, an event and its tokens on their version.
//!
//! The schema's constraints stand behind all three. Database errors are mapped
//! here, once, to `StoreError`: serialization failures, deadlocks and a
//! second claim of a unique key (an idempotency key, a gateway payment key)
//! to `Conflict`, lock and statement timeouts and pool exhaustion to
//! `Unavailable`, an I/O error during `COMMIT` to `Ambiguous`, violated checks
//! to `Integrity`.

mod errors;
mod rows;
mod tx;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tally_core::check::Snapshot;
use tally_core::store::{Fences, LockSet, Store, StoreError};

pub use errors::CONFLICTS_TOTAL;
pub use tx::PgTx;

/// The schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How concurrent use cases are kept apart (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Pessimistic,
    Optimistic,
    Atomic,
    Advisory,
    /// Needs a Redis lock manager beside the store; see the crate docs.
    Redis,
}

impl Strategy {
    /// The strategies PostgreSQL carries out alone: what the test suites and
    /// harnesses that run without a lock manager ([`NoLocks`]) iterate over.
    /// [`Strategy::Redis`] is not among them; it is parsed all the same.
    ///
    /// [`NoLocks`]: tally_core::store::NoLocks
    pub const ALL: [Strategy; 4] = [Strategy::Pessimistic, Strategy::Optimistic, Strategy::Atomic, Strategy::Advisory];

    pub const fn as_str(self) -> &'static str {
        match self {
            Strategy::Pessimistic => "pessimistic",
            Strategy::Optimistic => "optimistic",
            Strategy::Atomic => "atomic",
            Strategy::Advisory => "advisory",
            Strategy::Redis => "redis",
        }
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Strategy, String> {
        Strategy::ALL.into_iter().chain([Strategy::Redis]).find(|s| s.as_str() == text).ok_or_else(|| {
            format!("unknown strategy {text:?}: expected pessimistic, optimistic, atomic, advisory or redis")
        })
    }
}

/// Connection and pool limits. Every one is explicit: nothing rides on a default.
#[derive(Clone, Debug)]
pub struct PgConfig {
    pub strategy: Strategy,
    /// Pool size. Each in-flight use case holds one connection for its
    /// transaction and never asks for a second (no nested pool use).
    pub max_connections: u32,
    /// How long a use case waits for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// Per connection: no statement runs longer than this.
    pub statement_timeout: Duration,
    /// Per connection: no row-lock wait lasts longer than this.
    pub lock_timeout: Duration,
    /// Per connection: a transaction left idle this long is killed, so a
    /// stuck client cannot hold row locks forever.
    pub idle_in_transaction_timeout: Duration,
    /// Upper bound of the random pause after an optimistic conflict.
    pub conflict_jitter_max: Duration,
}

impl Default for PgConfig {
    fn default() -> PgConfig {
        PgConfig {
            strategy: Strategy::Pessimistic,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(3),
            idle_in_transaction_timeout: Duration::from_secs(10),
            conflict_jitter_max: Duration::from_millis(5),
        }
    }
}

/// The PostgreSQL store; clones share the pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    config: PgConfig,
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

impl PgStore {
    /// Connects a pool to `url` with `config`'s limits. Connections are made
    /// lazily, so a server that starts before its database still starts.
    pub fn connect_lazy(url: &str, config: PgConfig) -> Result<PgStore, StoreError> {
        assert!(config.max_connections >= 1, "a pool has at least one connection");
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad database URL: {e}")))?
            .options([
                ("statement_timeout", millis(config.statement_timeout)),
                ("lock_timeout", millis(config.lock_timeout)),
                ("idle_in_transaction_session_timeout", millis(config.idle_in_transaction_timeout)),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options);
        Ok(PgStore { pool, config })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))
    }

    /// Is the database reachable? For `/readyz`.
    pub async fn ready(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    async fn begin_tx(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(errors::map)
    }
}

impl Store for PgStore {
    type Tx = PgTx;

    async fn begin(&self) -> Result<PgTx, StoreError> {
        Ok(PgTx::new(self.begin_tx().await?, self.config.clone()))
    }

    async fn begin_locked(&self, keys: &LockSet, fences: &Fences, wait: Duration) -> Result<PgTx, StoreError> {
        let mut tx = self.begin().await?;
        if self.config.strategy == Strategy::Advisory {
            tx::advisory::lock(&mut tx, keys, wait).await?;
        }
        // Whatever the strategy: a lock manager with leases hands tokens.
        tx::fences::claim(&mut tx, fences).await?;
        Ok(tx)
    }

    async fn peek(&self) -> Result<PgTx, StoreError> {
        // The strategy decides how loads lock and how writes are guarded. A
        // peek never writes, so loading as the optimistic strategy does (no
        // row locks) is exactly "look without locking or waiting".
        let config = PgConfig { strategy: Strategy::Optimistic, ..self.config.clone() };
        Ok(PgTx::new(self.begin_tx().await?, config))
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // One REPEATABLE READ snapshot, so the checker never sees a wallet
        // from before a commit next to transfers from after it.
        let mut tx = self.begin_tx().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(errors::map)?;
        let snapshot = rows::snapshot(&mut tx).await?;
        tx.rollback().await.map_err(errors::map)?;
        Ok(snapshot)
    }
}
