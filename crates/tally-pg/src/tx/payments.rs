//! Payments: the load, the gateway payment key's lookup, the write under
//! each strategy, and the completer's scan for stuck gateway payments.

use sqlx::AssertSqlSafe;
use tally_core::ids::PaymentId;
use tally_core::payment::Payment;
use tally_core::store::StoreError;
use tally_core::time::Timestamp;

use super::{PgTx, limit_i64, unchanged};
use crate::errors;
use crate::rows::{self, uuid, version};

pub(super) async fn payment(tx: &mut PgTx, id: PaymentId) -> Result<Option<Payment>, StoreError> {
    tx.fetch_by_id("payments", rows::PAYMENT_COLUMNS, tx.for_update(), id.0, rows::payment).await
}

pub(super) async fn by_key(tx: &mut PgTx, key: &str) -> Result<Option<PaymentId>, StoreError> {
    // A plain read under every strategy: a claim is never given up, so a
    // committed one is final, and an uncommitted one makes our own claim
    // wait on the unique index and then fail as a conflict.
    let statement = sqlx::query("SELECT id FROM payments WHERE gateway_payment_key = $1").bind(key);
    tx.fetch_optional(statement, |row| {
        Ok(PaymentId(sqlx::Row::try_get::<uuid::Uuid, _>(row, "id").map_err(errors::map)?.as_u128()))
    })
    .await
}

pub(super) async fn put(tx: &mut PgTx, before: Option<&Payment>, after: &Payment) -> Result<(), StoreError> {
    let key = after.gateway.as_ref().map(|a| a.payment_key.clone());
    let started = after.gateway.as_ref().map(|a| a.started_at.0);
    let sent = after.gateway.as_ref().map(|a| a.sent_at.0);
    let Some(before) = before else {
        return tx
            .insert(
                sqlx::query(
                    "INSERT INTO payments (id, user_id, amount, payback, method, status, created_at_ms, \
                     updated_at_ms, version, gateway_payment_key, gateway_started_at_ms, order_id, \
                     gateway_sent_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(uuid(after.id.0))
                .bind(uuid(after.user.0))
                .bind(after.amount.minor_units())
                .bind(after.payback.minor_units())
                .bind(after.method.as_str())
                .bind(rows::status_str(after.status))
                .bind(after.created_at.0)
                .bind(after.updated_at.0)
                .bind(version(after.version))
                .bind(key)
                .bind(started)
                .bind(after.order.map(|o| uuid(o.0)))
                .bind(sent),
            )
            .await;
    };
    unchanged(before.order, after.order, || format!("payment {} cannot change its order", after.id))?;
    // Atomic: the transition's precondition (the status it moves from) is
    // the guard. Otherwise: the loaded version.
    let statement = if tx.atomic() {
        sqlx::query(
            "UPDATE payments SET status = $2, updated_at_ms = $3, version = version + 1, \
             gateway_payment_key = $5, gateway_started_at_ms = $6, gateway_sent_at_ms = $7 \
             WHERE id = $1 AND status = $4",
        )
        .bind(uuid(after.id.0))
        .bind(rows::status_str(after.status))
        .bind(after.updated_at.0)
        .bind(rows::status_str(before.status))
        .bind(key)
        .bind(started)
        .bind(sent)
    } else {
        sqlx::query(
            "UPDATE payments SET status = $2, updated_at_ms = $3, version = $4, gateway_payment_key = $6, \
             gateway_started_at_ms = $7, gateway_sent_at_ms = $8 WHERE id = $1 AND version = $5",
        )
        .bind(uuid(after.id.0))
        .bind(rows::status_str(after.status))
        .bind(after.updated_at.0)
        .bind(version(after.version))
        .bind(version(before.version))
        .bind(key)
        .bind(started)
        .bind(sent)
    };
    tx.guarded_update(statement).await
}

pub(super) async fn stuck(tx: &mut PgTx, before: Timestamp, limit: usize) -> Result<Vec<Payment>, StoreError> {
    let sql = format!(
        "SELECT {} FROM payments WHERE status IN ('confirming', 'cancelling', 'refunding') \
         AND gateway_started_at_ms < $1 ORDER BY gateway_started_at_ms LIMIT $2",
        rows::PAYMENT_COLUMNS
    );
    tx.fetch_all(sqlx::query(AssertSqlSafe(sql)).bind(before.0).bind(limit_i64(limit)), rows::payment).await
}
