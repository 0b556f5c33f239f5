//! Orders, with their lines and seats: the loads (the expiry sweeper's one
//! skips a locked order), the insert, the write, and the sweeper's scan.
//!
//! An order is written the same way under every strategy: guarded by the
//! state its transition moved from (status and paying payment) and by its
//! version.

use sqlx::AssertSqlSafe;
use tally_core::ids::OrderId;
use tally_core::order::Order;
use tally_core::store::StoreError;
use tally_core::time::Timestamp;

use super::{PgTx, limit_i64, unchanged};
use crate::errors;
use crate::rows::{self, uuid, version};

pub(super) async fn order(tx: &mut PgTx, id: OrderId) -> Result<Option<Order>, StoreError> {
    let sql = format!("{} WHERE o.id = $1{}", rows::ORDER_SELECT, tx.for_no_key_update());
    let found = tx.fetch_optional(sqlx::query(AssertSqlSafe(sql)).bind(uuid(id.0)), rows::order).await?;
    Ok(tx.noted(found))
}

/// The sweeper's load: under the pessimistic strategy an order another
/// transaction holds is skipped (`None`), not waited for; the other
/// strategies lock nothing, so their plain load is already that.
pub(super) async fn order_skip_locked(tx: &mut PgTx, id: OrderId) -> Result<Option<Order>, StoreError> {
    if !tx.pessimistic() {
        return order(tx, id).await;
    }
    let sql = format!("{} WHERE o.id = $1 FOR NO KEY UPDATE SKIP LOCKED", rows::ORDER_SELECT);
    tx.fetch_optional(sqlx::query(AssertSqlSafe(sql)).bind(uuid(id.0)), rows::order).await
}

pub(super) async fn put(tx: &mut PgTx, before: Option<&Order>, after: &Order) -> Result<(), StoreError> {
    let Some(before) = before else {
        return insert(tx, after).await;
    };
    let fixed = |o: &Order| {
        (o.id, o.user, o.lines.clone(), o.seats.clone(), o.event, o.token, o.total, o.payback, o.expires_at)
    };
    unchanged(fixed(before), fixed(after), || format!("order {} changes only its status and payment", after.id))?;
    // Every strategy: the state the transition moved from (status and
    // paying payment) and the version, so even a pending → paying →
    // pending round trip in between is caught.
    tx.guarded_update(
        sqlx::query(
            "UPDATE orders SET status = $2, payment_id = $3, updated_at_ms = $4, version = $5 \
             WHERE id = $1 AND status = $6 AND payment_id IS NOT DISTINCT FROM $7 AND version = $8",
        )
        .bind(uuid(after.id.0))
        .bind(after.status.as_str())
        .bind(after.payment.map(|p| uuid(p.0)))
        .bind(after.updated_at.0)
        .bind(version(after.version))
        .bind(before.status.as_str())
        .bind(before.payment.map(|p| uuid(p.0)))
        .bind(version(before.version)),
    )
    .await
}

/// An order with its lines and seats (each kind in one statement).
async fn insert(tx: &mut PgTx, order: &Order) -> Result<(), StoreError> {
    tx.insert(
        sqlx::query(
            "INSERT INTO orders (id, user_id, status, total, payment_id, event_id, token_id, expires_at_ms, \
             created_at_ms, updated_at_ms, version, payback) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(uuid(order.id.0))
        .bind(uuid(order.user.0))
        .bind(order.status.as_str())
        .bind(order.total.minor_units())
        .bind(order.payment.map(|p| uuid(p.0)))
        .bind(order.event.map(|e| uuid(e.0)))
        .bind(order.token.map(|t| uuid(t.0)))
        .bind(order.expires_at.0)
        .bind(order.created_at.0)
        .bind(order.updated_at.0)
        .bind(version(order.version))
        .bind(order.payback.minor_units()),
    )
    .await?;
    if !order.lines.is_empty() {
        let products: Vec<uuid::Uuid> = order.lines.iter().map(|l| uuid(l.product.0)).collect();
        let quantities = order.lines.iter().map(|l| rows::count(l.quantity)).collect::<Result<Vec<i64>, _>>()?;
        let prices: Vec<i64> = order.lines.iter().map(|l| l.unit_price.minor_units()).collect();
        tx.insert(
            sqlx::query(
                "INSERT INTO order_lines (order_id, position, product_id, quantity, unit_price) \
                 SELECT $1, (l.n - 1)::integer, l.product_id, l.quantity, l.unit_price \
                 FROM UNNEST($2::uuid[], $3::bigint[], $4::bigint[]) WITH ORDINALITY \
                   AS l (product_id, quantity, unit_price, n)",
            )
            .bind(uuid(order.id.0))
            .bind(products)
            .bind(quantities)
            .bind(prices),
        )
        .await?;
    }
    if !order.seats.is_empty() {
        let seats: Vec<uuid::Uuid> = order.seats.iter().map(|s| uuid(s.seat.0)).collect();
        let prices: Vec<i64> = order.seats.iter().map(|s| s.price.minor_units()).collect();
        tx.insert(
            sqlx::query(
                "INSERT INTO order_seats (order_id, position, seat_id, price) \
                 SELECT $1, (s.n - 1)::integer, s.seat_id, s.price \
                 FROM UNNEST($2::uuid[], $3::bigint[]) WITH ORDINALITY AS s (seat_id, price, n)",
            )
            .bind(uuid(order.id.0))
            .bind(seats)
            .bind(prices),
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn expired(tx: &mut PgTx, now: Timestamp, limit: usize) -> Result<Vec<OrderId>, StoreError> {
    let statement = sqlx::query(
        "SELECT id FROM orders WHERE status = 'pending_payment' AND payment_id IS NULL AND expires_at_ms <= $1 \
         ORDER BY expires_at_ms, id LIMIT $2",
    )
    .bind(now.0)
    .bind(limit_i64(limit));
    tx.fetch_all(statement, |row| {
        Ok(OrderId(sqlx::Row::try_get::<uuid::Uuid, _>(row, "id").map_err(errors::map)?.as_u128()))
    })
    .await
}
