//! One use case's transaction on PostgreSQL: [`PgTx`], the core's `Tx`.
//!
//! The `Tx` impl at the bottom of this file only dispatches. Each record
//! family has its own module, which owns that family's SQL under all three
//! strategies (how its loads lock, how its writes are guarded):
//!
//! - [`users`]: the API's users (created once, never changed).
//! - [`wallets`]: wallet loads and the pessimistic and optimistic write;
//!   [`wallets::atomic`] is the atomic strategy's wallet write, deferred to
//!   commit, with the ledger lines it re-bases.
//! - [`payments`]: payments, their gateway payment key, the completer's scan.
//! - [`ledger`]: transfers (append-only) and a wallet's history.
//! - [`idempotency`]: idempotency records, admission's no-wait load, the reaper.
//! - [`catalog`]: products, events, showtimes and seats.
//! - [`orders`]: orders with their lines and seats, the expiry sweeper's scan.
//! - [`queue`]: an event's queue tokens.
//! - [`advisory`]: the advisory strategy's locks, taken as a transaction
//!   begins.
//! - [`fences`]: the claim of a lock grant's fencing tokens, as a
//!   transaction begins (every strategy, when the lock manager hands any).
//! - [`reads`]: what the strategies that load without locks loaded, checked
//!   before a refusal is answered.
//!
//! What they share lives here: the strategy's locking clauses, and the
//! statement helpers the modules run their statements through. A write of an
//! existing record has one shape — refuse a change to what never changes
//! ([`unchanged`]), then one conditional statement that must touch exactly
//! one row ([`PgTx::guarded_update`]) — so a guard that no longer holds
//! becomes a `Conflict` in one place. The one exception is the atomic wallet
//! write, which needs the row back and has its own module.

pub(crate) mod advisory;
mod catalog;
pub(crate) mod fences;
mod idempotency;
mod ledger;
mod orders;
mod payments;
mod queue;
mod reads;
mod users;
mod wallets;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres, Transaction};
use tally_core::catalog::{Event, Product, Seat, Showtime};
use tally_core::idempotency::{IdemRecord, IdemScope};
use tally_core::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, ShowtimeId, TokenId, UserId};
use tally_core::ledger::Transfer;
use tally_core::mutant;
use tally_core::order::Order;
use tally_core::payment::Payment;
use tally_core::queue::{QueueToken, TokenStatus};
use tally_core::store::{Put, StoreError, Tx, User};
use tally_core::time::Timestamp;
use tally_core::wallet::Wallet;

use crate::{PgConfig, Strategy, errors, rows};

/// A transaction. Under the atomic strategy, wallet updates and their ledger
/// lines wait in `deferred` until `commit` (see the `wallets::atomic` module).
pub struct PgTx {
    tx: Transaction<'static, Postgres>,
    config: PgConfig,
    deferred: wallets::atomic::Deferred,
    reads: reads::Reads,
}

impl std::fmt::Debug for PgTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTx").field("strategy", &self.config.strategy).finish_non_exhaustive()
    }
}

/// A statement with its arguments bound. Arguments are encoded as they are
/// bound, so a statement borrows nothing from the record it was built from.
type Statement = Query<'static, Postgres, PgArguments>;

/// A row's decoder: one of `rows`' functions, or a column read in place.
type Decode<T> = fn(&PgRow) -> Result<T, StoreError>;

/// A `LIMIT` as the bigint it is bound as; one beyond `i64::MAX` is no limit
/// at all, so it saturates.
fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Refuses a write that changes what no transition of the record may change:
/// `before` and `after` are the record's identity and immutable fields, as
/// loaded and as asked for. The updates do not write those columns, so
/// without this check a change asked for by mistake would be lost unseen.
fn unchanged<T: PartialEq>(before: T, after: T, refusal: impl FnOnce() -> String) -> Result<(), StoreError> {
    if before == after { Ok(()) } else { Err(StoreError::Integrity(refusal())) }
}

/// One column of a multi-row statement: `f` of every record, bound as one
/// array and expanded by `UNNEST` (constant SQL text whatever the count).
fn column<R, T>(records: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
    records.iter().map(f).collect()
}

impl PgTx {
    pub(crate) fn new(tx: Transaction<'static, Postgres>, config: PgConfig) -> PgTx {
        PgTx { tx, config, deferred: wallets::atomic::Deferred::default(), reads: reads::Reads::default() }
    }

    fn atomic(&self) -> bool {
        self.config.strategy == Strategy::Atomic
    }

    fn pessimistic(&self) -> bool {
        self.config.strategy == Strategy::Pessimistic
    }

    /// Whether idempotency records are row-locked: under the pessimistic
    /// strategy like every record, and under the advisory one because its
    /// advisory locks leave the key to admission's `FOR UPDATE NOWAIT` (see
    /// `advisory`); under the redis one as under advisory, so that a
    /// duplicate another instance's transaction holds is told at once.
    fn locks_idempotency_rows(&self) -> bool {
        matches!(self.config.strategy, Strategy::Pessimistic | Strategy::Advisory | Strategy::Redis)
    }

    /// The pessimistic row lock of the money tables (wallets, payments,
    /// idempotency records).
    fn for_update(&self) -> &'static str {
        if self.pessimistic() && !mutant::active("pg_drop_for_update") { " FOR UPDATE" } else { "" }
    }

    /// The pessimistic row lock of the inventory tables. `NO KEY UPDATE` is
    /// what an `UPDATE` of non-key columns takes anyway; unlike `FOR UPDATE`
    /// it lets other transactions' foreign-key checks (`KEY SHARE`: a payment
    /// naming an order, a token naming an event) through instead of queueing
    /// them.
    fn for_no_key_update(&self) -> &'static str {
        if self.pessimistic() { " FOR NO KEY UPDATE" } else { "" }
    }

    /// A stale write: under the optimistic strategy pause a random moment
    /// first, so the retrying crowd spreads out instead of colliding again.
    async fn conflict(&self) -> StoreError {
        if self.config.strategy == Strategy::Optimistic && !self.config.conflict_jitter_max.is_zero() {
            let max = u64::try_from(self.config.conflict_jitter_max.as_micros()).unwrap_or(u64::MAX).max(1);
            let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            tokio::time::sleep(Duration::from_micros(u64::from(seed) % max)).await;
        }
        errors::conflict()
    }

    /// Runs a statement whose row count decides nothing; returns it.
    async fn execute(&mut self, statement: Statement) -> Result<u64, StoreError> {
        match statement.execute(&mut *self.tx).await {
            Ok(done) => Ok(done.rows_affected()),
            Err(error) if mutant::active("pg_conflict_is_success") && errors::is_conflict(&error) => Ok(1),
            Err(error) => Err(errors::map(error)),
        }
    }

    /// Inserts a new record. No guard: a second insert of one key fails on
    /// the key (see `errors` for which of those are conflicts).
    async fn insert(&mut self, statement: Statement) -> Result<(), StoreError> {
        self.execute(statement).await.map(drop)
    }

    /// Writes (or deletes) an existing record with one conditional statement,
    /// which must touch exactly one row. Its `WHERE` carries the strategy's
    /// guard (the loaded version, or under the atomic strategy the state the
    /// decision moved from); no row means the guard no longer holds, so the
    /// use case loads again and decides again.
    async fn guarded_update(&mut self, statement: Statement) -> Result<(), StoreError> {
        self.guarded_updates(statement, 1).await
    }

    /// [`PgTx::guarded_update`] of `rows` records in one statement (an
    /// `UPDATE … FROM UNNEST(…)` of distinct keys, each row with its own
    /// guard): every row must be touched, else a guard failed and the whole
    /// write is a conflict (the transaction is given up, nothing of it kept).
    async fn guarded_updates(&mut self, statement: Statement, rows: usize) -> Result<(), StoreError> {
        let touched = self.execute(statement).await?;
        if usize::try_from(touched).is_ok_and(|touched| touched == rows) { Ok(()) } else { Err(self.conflict().await) }
    }

    /// Loads at most one row and decodes it.
    async fn fetch_optional<T>(&mut self, statement: Statement, decode: Decode<T>) -> Result<Option<T>, StoreError> {
        let row = statement.fetch_optional(&mut *self.tx).await.map_err(errors::map)?;
        row.as_ref().map(decode).transpose()
    }

    /// Loads the row of `table` whose `id` is `id`, with `columns`, under
    /// `lock` (the strategy's locking clause, or nothing), and decodes it.
    async fn fetch_by_id<T>(
        &mut self,
        table: &str,
        columns: &str,
        lock: &str,
        id: u128,
        decode: Decode<T>,
    ) -> Result<Option<T>, StoreError> {
        let sql = format!("SELECT {columns} FROM {table} WHERE id = $1{lock}");
        self.fetch_optional(sqlx::query(AssertSqlSafe(sql)).bind(rows::uuid(id)), decode).await
    }

    /// Loads the rows of `table` whose `key` is one of `ids` (one statement
    /// for a group commit's preload), in key order and so locked in key
    /// order under `lock` (a locking clause applies after the sort), and
    /// decodes each. Missing ids are simply absent from the answer.
    async fn fetch_by_ids<T>(
        &mut self,
        table: &str,
        columns: &str,
        key: &str,
        lock: &str,
        ids: impl Iterator<Item = u128>,
        decode: Decode<T>,
    ) -> Result<Vec<T>, StoreError> {
        let ids: Vec<uuid::Uuid> = ids.map(rows::uuid).collect();
        let sql = format!("SELECT {columns} FROM {table} WHERE {key} = ANY($1) ORDER BY {key}{lock}");
        self.fetch_all(sqlx::query(AssertSqlSafe(sql)).bind(ids), decode).await
    }

    /// Loads every row and decodes each.
    async fn fetch_all<T>(&mut self, statement: Statement, decode: Decode<T>) -> Result<Vec<T>, StoreError> {
        let found = statement.fetch_all(&mut *self.tx).await.map_err(errors::map)?;
        found.iter().map(decode).collect()
    }
}

/// Writes each listed `Tx` method as a call of the module function that does
/// it, so the impl below reads as a table: method, arguments, what it
/// returns (inside `Result<_, StoreError>`), and where the work is.
macro_rules! dispatch {
    ($($method:ident($($arg:ident: $ty:ty),*) -> $out:ty => $to:path;)*) => {
        $(
            async fn $method(&mut self, $($arg: $ty),*) -> Result<$out, StoreError> {
                $to(self, $($arg),*).await
            }
        )*
    };
}

impl Tx for PgTx {
    dispatch! {
        user(id: UserId) -> Option<User> => users::user;
        user_by_key_hash(key_hash: [u8; 32]) -> Option<User> => users::by_key_hash;
        insert_user(user: &User) -> () => users::insert;

        wallet(user: UserId) -> Option<Wallet> => wallets::wallet;
        wallets(users: &[UserId]) -> Vec<Wallet> => wallets::wallets;
        put_wallet(before: Option<&Wallet>, after: &Wallet) -> () => wallets::put;
        put_wallets(puts: &[Put<Wallet>]) -> () => wallets::put_many;

        payment(id: PaymentId) -> Option<Payment> => payments::payment;
        payments(ids: &[PaymentId]) -> Vec<Payment> => payments::payments;
        payment_by_key(key: &str) -> Option<PaymentId> => payments::by_key;
        put_payment(before: Option<&Payment>, after: &Payment) -> () => payments::put;
        put_payments(puts: &[Put<Payment>]) -> () => payments::put_many;
        stuck_payments(before: Timestamp, limit: usize) -> Vec<Payment> => payments::stuck;

        append_transfers(transfers: &[Transfer]) -> () => ledger::append;
        wallet_ledger(user: UserId, after_seq: u64, limit: usize) -> Vec<Transfer> => ledger::wallet_ledger;

        idempotency(scope: &IdemScope) -> Option<IdemRecord> => idempotency::record;
        idempotency_no_wait(scope: &IdemScope) -> Option<IdemRecord> => idempotency::record_no_wait;
        put_idempotency(before: Option<&IdemRecord>, after: &IdemRecord) -> () => idempotency::put;
        put_idempotency_records(puts: &[Put<IdemRecord>]) -> () => idempotency::put_many;
        delete_idempotency(before: &IdemRecord) -> () => idempotency::delete;
        reap_idempotency(now: Timestamp, limit: usize) -> usize => idempotency::reap;

        product(id: ProductId) -> Option<Product> => catalog::product;
        put_product(before: Option<&Product>, after: &Product) -> () => catalog::put_product;
        event(id: EventId) -> Option<Event> => catalog::event;
        put_event(before: Option<&Event>, after: &Event) -> () => catalog::put_event;
        insert_showtime(showtime: &Showtime) -> () => catalog::insert_showtime;
        showtime(id: ShowtimeId) -> Option<Showtime> => catalog::showtime;
        showtimes(event: EventId) -> Vec<Showtime> => catalog::showtimes;
        seats(showtime: ShowtimeId) -> Vec<Seat> => catalog::seats;
        seat(id: SeatId) -> Option<Seat> => catalog::seat;
        put_seat(before: Option<&Seat>, after: &Seat) -> () => catalog::put_seat;

        order(id: OrderId) -> Option<Order> => orders::order;
        order_skip_locked(id: OrderId) -> Option<Order> => orders::order_skip_locked;
        put_order(before: Option<&Order>, after: &Order) -> () => orders::put;
        expired_orders(now: Timestamp, limit: usize) -> Vec<OrderId> => orders::expired;

        token(id: TokenId) -> Option<QueueToken> => queue::token;
        put_token(before: Option<&QueueToken>, after: &QueueToken) -> () => queue::put;
        tokens(event: EventId, status: TokenStatus, limit: usize) -> Vec<QueueToken> => queue::tokens;
        user_token(event: EventId, user: UserId) -> Option<QueueToken> => queue::user_token;
    }

    async fn reads_unchanged(&mut self) -> Result<(), StoreError> {
        reads::unchanged(self).await
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        // Under the atomic strategy the wallets and their ledger lines are
        // written now; otherwise there is nothing deferred.
        wallets::atomic::flush(&mut self).await?;
        self.tx.commit().await.map_err(errors::map_commit)
    }

    async fn rollback(self) {
        // A failed rollback leaves nothing behind either: the server
        // aborts the transaction when the connection goes.
        let _ = self.tx.rollback().await;
    }
}
