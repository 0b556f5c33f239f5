//! sqlx errors → `StoreError`, in one place.

use tally_core::store::StoreError;

/// The counter of conflicts (each one a use case re-run, or refused once
/// its attempts ran out): `tally bench` reports it as retries.
pub const CONFLICTS_TOTAL: &str = "tally_store_conflicts_total";

/// A `Conflict`, counted.
pub(crate) fn conflict() -> StoreError {
    metrics::counter!(CONFLICTS_TOTAL).increment(1);
    StoreError::Conflict
}

/// Maps an error from any statement except `COMMIT`.
pub(crate) fn map(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // serialization_failure, deadlock_detected: nothing was written.
            Some("40001" | "40P01") => conflict(),
            // unique_violation on the idempotency key: two first requests raced
            // to insert; the loser decides again on what won.
            Some("23505") if db.constraint() == Some("idempotency_keys_pkey") => conflict(),
            // unique_violation on a gateway payment key: two payments raced to
            // claim one key; the loser decides again, sees the claim, refuses.
            Some("23505") if db.constraint() == Some("payments_gateway_payment_key_unique") => conflict(),
            Some(code) if code.starts_with("23") => {
                StoreError::Integrity(format!("{} ({})", db.message(), db.constraint().unwrap_or("-")))
            }
            // lock_not_available (lock_timeout), query_canceled (statement_timeout),
            // too_many_connections, admin shutdown and friends.
            Some("55P03") => StoreError::Unavailable("lock wait timed out".into()),
            Some("57014") => StoreError::Unavailable("statement timed out".into()),
            _ => StoreError::Unavailable(format!("database error: {}", db.message())),
        },
        sqlx::Error::PoolTimedOut => StoreError::Unavailable("no database connection free".into()),
        sqlx::Error::PoolClosed => StoreError::Unavailable("database pool closed".into()),
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::ColumnNotFound(_) => {
            StoreError::Integrity(format!("unexpected row: {error}"))
        }
        _ => StoreError::Unavailable(format!("database unreachable: {error}")),
    }
}

/// A serialization failure or a deadlock: nothing was written. Only the
/// `pg_conflict_is_success` mutant asks (to pretend it was).
#[cfg_attr(not(feature = "mutants"), allow(dead_code))]
pub(crate) fn is_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// Maps an error from `COMMIT`: a broken connection there leaves the outcome
/// unknown, which the caller must treat as such.
pub(crate) fn map_commit(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => StoreError::Ambiguous,
        other => map(other),
    }
}
