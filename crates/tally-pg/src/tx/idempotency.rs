//! Idempotency records: the load, admission's no-wait load, the write, the
//! delete that frees a key, and the reaper.
//!
//! Every write, under every strategy, is guarded by the loaded version: a
//! record that moved on since it was loaded (another request's lease, a
//! completion, a delete) is a conflict, and the caller decides again.

use sqlx::AssertSqlSafe;
use tally_core::idempotency::{IdemRecord, IdemScope, IdemState};
use tally_core::mutant;
use tally_core::store::StoreError;
use tally_core::time::Timestamp;

use super::{PgTx, limit_i64};
use crate::errors;
use crate::rows::{self, uuid, version};

pub(super) async fn record(tx: &mut PgTx, scope: &IdemScope) -> Result<Option<IdemRecord>, StoreError> {
    let sql = format!(
        "SELECT {} FROM idempotency_keys WHERE user_id = $1 AND key = $2{}",
        rows::IDEM_COLUMNS,
        if tx.locks_idempotency_rows() { " FOR UPDATE" } else { "" }
    );
    tx.fetch_optional(sqlx::query(AssertSqlSafe(sql)).bind(uuid(scope.user.0)).bind(scope.key.as_str()), rows::idem)
        .await
}

/// Admission's load: under the pessimistic and advisory strategies a key whose row another
/// transaction holds is a key in flight, answered at once (`Busy`) rather
/// than waited for. Its own error mapping, so not through `fetch_optional`.
pub(super) async fn record_no_wait(tx: &mut PgTx, scope: &IdemScope) -> Result<Option<IdemRecord>, StoreError> {
    let lock = match (tx.locks_idempotency_rows(), mutant::active("pg_nowait_waits")) {
        (true, false) => " FOR UPDATE NOWAIT",
        // The mutant: a duplicate in flight waits for the key's row.
        (true, true) => " FOR UPDATE",
        (false, _) => "",
    };
    let sql = format!("SELECT {} FROM idempotency_keys WHERE user_id = $1 AND key = $2{lock}", rows::IDEM_COLUMNS);
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(uuid(scope.user.0))
        .bind(scope.key.as_str())
        .fetch_optional(&mut *tx.tx)
        .await
        .map_err(|error| match &error {
            // lock_not_available: NOWAIT found the row locked.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03") => StoreError::Busy,
            _ => errors::map(error),
        })?;
    row.as_ref().map(rows::idem).transpose()
}

/// One statement for both the insert and the update, with the same columns:
/// an insert binds no previous version (`$14` is unused), an update is
/// guarded by it.
pub(super) async fn put(tx: &mut PgTx, before: Option<&IdemRecord>, after: &IdemRecord) -> Result<(), StoreError> {
    let (state, lease, lease_expires, status, content_type, body, op) = match &after.state {
        IdemState::InFlight { lease, lease_expires_at } => {
            ("in_flight", Some(uuid(lease.0)), Some(lease_expires_at.0), None, None, None, None)
        }
        IdemState::Completed { response, op } => (
            "completed",
            None,
            None,
            Some(i32::from(response.status)),
            Some(response.content_type.clone()),
            Some(response.body.clone()),
            op.map(|o| uuid(o.0)),
        ),
    };
    let sql = if before.is_none() {
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, state, lease, lease_expires_at_ms, \
         response_status, response_content_type, response_body, op_id, created_at_ms, expires_at_ms, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    } else {
        "UPDATE idempotency_keys SET fingerprint = $3, state = $4, lease = $5, lease_expires_at_ms = $6, \
         response_status = $7, response_content_type = $8, response_body = $9, op_id = $10, \
         created_at_ms = $11, expires_at_ms = $12, version = $13 \
         WHERE user_id = $1 AND key = $2 AND version = $14"
    };
    let statement = sqlx::query(sql)
        .bind(uuid(after.scope.user.0))
        .bind(after.scope.key.as_str())
        .bind(after.fingerprint.0.to_vec())
        .bind(state)
        .bind(lease)
        .bind(lease_expires)
        .bind(status)
        .bind(content_type)
        .bind(body)
        .bind(op)
        .bind(after.created_at.0)
        .bind(after.expires_at.0)
        .bind(version(after.version))
        .bind(before.map(|b| version(b.version)));
    tx.guarded_update(statement).await
}

pub(super) async fn delete(tx: &mut PgTx, before: &IdemRecord) -> Result<(), StoreError> {
    tx.guarded_update(
        sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND version = $3")
            .bind(uuid(before.scope.user.0))
            .bind(before.scope.key.as_str())
            .bind(version(before.version)),
    )
    .await
}

pub(super) async fn reap(tx: &mut PgTx, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
    // SKIP LOCKED: several instances reap at once without queueing on
    // each other or on a request that holds a key.
    let reaped = tx
        .execute(
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE (user_id, key) IN ( \
                   SELECT user_id, key FROM idempotency_keys WHERE expires_at_ms <= $1 \
                   ORDER BY expires_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(now.0)
            .bind(limit_i64(limit)),
        )
        .await?;
    Ok(usize::try_from(reaped).unwrap_or(usize::MAX))
}
