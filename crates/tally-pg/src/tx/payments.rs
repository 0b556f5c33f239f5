//! Payments: the load, the gateway payment key's lookup, the write under
//! each strategy, and the completer's scan for stuck gateway payments.

use sqlx::AssertSqlSafe;
use tally_core::ids::PaymentId;
use tally_core::payment::Payment;
use tally_core::store::{Put, StoreError};
use tally_core::time::Timestamp;

use super::{PgTx, column, limit_i64, unchanged};
use crate::errors;
use crate::rows::{self, uuid, version};

pub(super) async fn payment(tx: &mut PgTx, id: PaymentId) -> Result<Option<Payment>, StoreError> {
    let found = tx.fetch_by_id("payments", rows::PAYMENT_COLUMNS, tx.for_update(), id.0, rows::payment).await?;
    Ok(tx.noted(found))
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

/// A group commit's preload of many payments: one statement, rows locked in
/// key order (see [`PgTx::fetch_by_ids`]).
pub(super) async fn payments(tx: &mut PgTx, ids: &[PaymentId]) -> Result<Vec<Payment>, StoreError> {
    let lock = tx.for_update();
    let found = tx
        .fetch_by_ids("payments", rows::PAYMENT_COLUMNS, "id", lock, ids.iter().map(|id| id.0), rows::payment)
        .await?;
    Ok(tx.noted_all(found))
}

pub(super) async fn put(tx: &mut PgTx, before: Option<&Payment>, after: &Payment) -> Result<(), StoreError> {
    put_many(tx, &[Put { before: before.cloned(), after: after.clone() }]).await
}

/// Many payment writes (one alone is a batch of one): the new payments in
/// one `INSERT … SELECT FROM UNNEST`, the changed ones in one guarded
/// `UPDATE … FROM UNNEST`.
pub(super) async fn put_many(tx: &mut PgTx, puts: &[Put<Payment>]) -> Result<(), StoreError> {
    let mut inserts = Vec::new();
    let mut updates = Vec::new();
    for write in puts {
        match &write.before {
            None => inserts.push(&write.after),
            Some(before) => {
                let after = &write.after;
                unchanged(before.order, after.order, || format!("payment {} cannot change its order", after.id))?;
                updates.push((before, after));
            }
        }
    }
    if !inserts.is_empty() {
        insert_many(tx, &inserts).await?;
    }
    if !updates.is_empty() {
        update_many(tx, &updates).await?;
    }
    Ok(())
}

fn gateway_key(payment: &Payment) -> Option<String> {
    payment.gateway.as_ref().map(|a| a.payment_key.clone())
}

fn gateway_started(payment: &Payment) -> Option<i64> {
    payment.gateway.as_ref().map(|a| a.started_at.0)
}

fn gateway_sent(payment: &Payment) -> Option<i64> {
    payment.gateway.as_ref().map(|a| a.sent_at.0)
}

fn gateway_watch_until(payment: &Payment) -> Option<i64> {
    payment.gateway.as_ref().and_then(|a| a.watch_until).map(|at| at.0)
}

fn gateway_requested_by(payment: &Payment) -> Option<String> {
    payment.gateway.as_ref().and_then(|a| a.requested_by.as_ref()).map(|key| key.as_str().to_owned())
}

async fn insert_many(tx: &mut PgTx, payments: &[&Payment]) -> Result<(), StoreError> {
    let statement = sqlx::query(
        "INSERT INTO payments (id, user_id, amount, payback, method, status, created_at_ms, updated_at_ms, version, \
         gateway_payment_key, gateway_started_at_ms, order_id, gateway_sent_at_ms, gateway_requested_by, \
         gateway_watch_until_ms) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], \
         $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::bigint[], $12::uuid[], $13::bigint[], $14::text[], \
         $15::bigint[])",
    )
    .bind(column(payments, |p| uuid(p.id.0)))
    .bind(column(payments, |p| uuid(p.user.0)))
    .bind(column(payments, |p| p.amount.minor_units()))
    .bind(column(payments, |p| p.payback.minor_units()))
    .bind(column(payments, |p| p.method.as_str()))
    .bind(column(payments, |p| rows::status_str(p.status)))
    .bind(column(payments, |p| p.created_at.0))
    .bind(column(payments, |p| p.updated_at.0))
    .bind(column(payments, |p| version(p.version)))
    .bind(column(payments, |p| gateway_key(p)))
    .bind(column(payments, |p| gateway_started(p)))
    .bind(column(payments, |p| p.order.map(|o| uuid(o.0))))
    .bind(column(payments, |p| gateway_sent(p)))
    .bind(column(payments, |p| gateway_requested_by(p)))
    .bind(column(payments, |p| gateway_watch_until(p)));
    tx.insert(statement).await
}

/// Atomic: each transition's precondition (the status it moves from) is its
/// guard. Otherwise: the loaded version.
async fn update_many(tx: &mut PgTx, writes: &[(&Payment, &Payment)]) -> Result<(), StoreError> {
    let (next_version, guard) = if tx.atomic() {
        ("p.version + 1", "p.status = v.before_status")
    } else {
        ("v.version", "p.version = v.before_version")
    };
    let sql = format!(
        "UPDATE payments AS p SET status = v.status, updated_at_ms = v.updated_at_ms, version = {next_version}, \
         gateway_payment_key = v.payment_key, gateway_started_at_ms = v.started_at_ms, \
         gateway_sent_at_ms = v.sent_at_ms, gateway_requested_by = v.requested_by, \
         gateway_watch_until_ms = v.watch_until_ms \
         FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], \
         $8::bigint[], $9::bigint[], $10::text[], $11::bigint[]) \
         AS v(id, status, updated_at_ms, version, payment_key, started_at_ms, before_status, before_version, sent_at_ms, \
         requested_by, watch_until_ms) \
         WHERE p.id = v.id AND {guard}"
    );
    let statement = sqlx::query(AssertSqlSafe(sql))
        .bind(column(writes, |(_, a)| uuid(a.id.0)))
        .bind(column(writes, |(_, a)| rows::status_str(a.status)))
        .bind(column(writes, |(_, a)| a.updated_at.0))
        .bind(column(writes, |(_, a)| version(a.version)))
        .bind(column(writes, |(_, a)| gateway_key(a)))
        .bind(column(writes, |(_, a)| gateway_started(a)))
        .bind(column(writes, |(b, _)| rows::status_str(b.status)))
        .bind(column(writes, |(b, _)| version(b.version)))
        .bind(column(writes, |(_, a)| gateway_sent(a)))
        .bind(column(writes, |(_, a)| gateway_requested_by(a)))
        .bind(column(writes, |(_, a)| gateway_watch_until(a)));
    tx.guarded_updates(statement, writes.len()).await
}

pub(super) async fn stuck(tx: &mut PgTx, before: Timestamp, limit: usize) -> Result<Vec<Payment>, StoreError> {
    let sql = format!(
        "SELECT {} FROM payments \
         WHERE (status IN ('confirming', 'cancelling', 'refunding') OR gateway_watch_until_ms IS NOT NULL) \
         AND gateway_started_at_ms < $1 \
         ORDER BY gateway_watch_until_ms IS NOT NULL, gateway_started_at_ms LIMIT $2",
        rows::PAYMENT_COLUMNS
    );
    tx.fetch_all(sqlx::query(AssertSqlSafe(sql)).bind(before.0).bind(limit_i64(limit)), rows::payment).await
}
