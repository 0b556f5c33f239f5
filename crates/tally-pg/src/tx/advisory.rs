//! The advisory strategy's locks: one PostgreSQL advisory lock per record
//! key of a use case's [`LockSet`], taken with `pg_advisory_xact_lock` when
//! its transaction begins and released by its commit or rollback.
//!
//! The keys are taken in the set's order, the core's global lock order
//! ([`LockKey`]'s), in one statement, so no two transactions wait on each
//! other in a cycle and taking them costs one round trip. A lock is named by
//! a 64-bit hash of the key's text (`hashtextextended`, computed by the
//! server, so every instance on one database names a key alike); two keys
//! whose hashes collide merely share a lock. Waits are bounded by the
//! connection's `lock_timeout` (`Unavailable` past it); a zero wait tries
//! each lock once and answers `Busy` if one is held.
//!
//! An idempotency key is not among them: admission takes its row with
//! `FOR UPDATE NOWAIT`, as under the pessimistic strategy, so a request
//! whose key another transaction holds (a gateway payment's key in flight)
//! is told so at once rather than queued. A duplicate of a request still
//! running locks the same records, so it waits for it at begin and then
//! replays its answer. Loads lock nothing, and writes still check the loaded
//! version: the second line behind the lock, as pessimistic writes do.

use std::time::Duration;

use tally_core::store::{LockKey, LockSet, StoreError};

use super::PgTx;
use crate::errors;

/// The text a key's advisory lock is named by (hashed by the server): the
/// key's name (`LockKey::name`), except an idempotency key's, which
/// admission's row lock covers instead (see above).
fn name(key: &LockKey) -> Option<String> {
    match key {
        LockKey::Idempotency(_) => None,
        other => Some(other.name()),
    }
}

/// Takes `keys`' advisory locks for the rest of `tx`, waiting at most the
/// connection's `lock_timeout`, or not at all when `wait` is zero.
pub(crate) async fn lock(tx: &mut PgTx, keys: &LockSet, wait: Duration) -> Result<(), StoreError> {
    let names: Vec<String> = keys.keys().iter().filter_map(name).collect();
    if names.is_empty() {
        return Ok(());
    }
    // `unnest` yields the array in its order, and the aggregate calls the
    // lock function row by row as they come: the set's order.
    if wait.is_zero() {
        let sql =
            "SELECT bool_and(pg_try_advisory_xact_lock(hashtextextended(name, 0))) FROM unnest($1::text[]) AS name";
        let all: Option<bool> =
            sqlx::query_scalar(sql).bind(names).fetch_one(&mut *tx.tx).await.map_err(errors::map)?;
        return if all == Some(true) { Ok(()) } else { Err(StoreError::Busy) };
    }
    let sql = "SELECT count(pg_advisory_xact_lock(hashtextextended(name, 0))) FROM unnest($1::text[]) AS name";
    let _taken: i64 = sqlx::query_scalar(sql).bind(names).fetch_one(&mut *tx.tx).await.map_err(errors::map)?;
    Ok(())
}
