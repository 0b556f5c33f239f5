//! The catalog: products, events, showtimes and seats.
//!
//! Each is created once (`before: None`); afterwards only a product's stock,
//! an event's queue counters and a seat's status change, and a write that
//! would change anything else is refused. Pessimistic loads of products,
//! events and seats take `FOR NO KEY UPDATE`; showtimes never change and are
//! read plainly.

use sqlx::AssertSqlSafe;
use tally_core::catalog::{Event, Product, STOCK_MAX, Seat, Showtime};
use tally_core::ids::{EventId, ProductId, SeatId, ShowtimeId};
use tally_core::store::StoreError;

use super::{PgTx, unchanged};
use crate::rows::{self, uuid, version};

pub(super) async fn product(tx: &mut PgTx, id: ProductId) -> Result<Option<Product>, StoreError> {
    let found = tx.fetch_by_id("products", rows::PRODUCT_COLUMNS, tx.for_no_key_update(), id.0, rows::product).await?;
    Ok(tx.noted(found))
}

pub(super) async fn put_product(tx: &mut PgTx, before: Option<&Product>, after: &Product) -> Result<(), StoreError> {
    let Some(before) = before else {
        return tx
            .insert(
                sqlx::query(
                    "INSERT INTO products (id, name, price, stock, stocked, created_at_ms, updated_at_ms, version, \
                     payback_bps) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(uuid(after.id.0))
                .bind(&after.name)
                .bind(after.price.minor_units())
                .bind(rows::count(after.stock)?)
                .bind(rows::count(after.stocked)?)
                .bind(after.created_at.0)
                .bind(after.updated_at.0)
                .bind(version(after.version))
                .bind(rows::i32_of(after.payback_bps)?),
            )
            .await;
    };
    unchanged(
        (before.id, &before.name, before.price, before.payback_bps),
        (after.id, &after.name, after.price, after.payback_bps),
        || format!("product {} changes only its stock", after.id),
    )?;
    let statement = if tx.atomic() {
        // The change as deltas on the current row, under the guards the
        // transition checked (nothing below zero, nothing given back that
        // was never given out, nothing stocked beyond the maximum): a
        // decision on a stale read still lands right, or finds its guard
        // false and is decided again.
        let stock_delta = rows::count(after.stock)? - rows::count(before.stock)?;
        let stocked_delta = rows::count(after.stocked)? - rows::count(before.stocked)?;
        sqlx::query(
            "UPDATE products SET stock = stock + $2, stocked = stocked + $3, updated_at_ms = $4, \
             version = version + 1 \
             WHERE id = $1 AND stock + $2 >= 0 AND stock + $2 <= stocked + $3 AND stocked + $3 <= $5",
        )
        .bind(uuid(after.id.0))
        .bind(stock_delta)
        .bind(stocked_delta)
        .bind(after.updated_at.0)
        .bind(rows::count(STOCK_MAX)?)
    } else {
        sqlx::query(
            "UPDATE products SET stock = $2, stocked = $3, updated_at_ms = $4, version = $5 \
             WHERE id = $1 AND version = $6",
        )
        .bind(uuid(after.id.0))
        .bind(rows::count(after.stock)?)
        .bind(rows::count(after.stocked)?)
        .bind(after.updated_at.0)
        .bind(version(after.version))
        .bind(version(before.version))
    };
    tx.guarded_update(statement).await
}

pub(super) async fn event(tx: &mut PgTx, id: EventId) -> Result<Option<Event>, StoreError> {
    // The event row guards its queue: under the pessimistic strategy this
    // lock is what serialises every change to its tokens.
    let found = tx.fetch_by_id("events", rows::EVENT_COLUMNS, tx.for_no_key_update(), id.0, rows::event).await?;
    Ok(tx.noted(found))
}

pub(super) async fn put_event(tx: &mut PgTx, before: Option<&Event>, after: &Event) -> Result<(), StoreError> {
    let Some(before) = before else {
        return tx
            .insert(
                sqlx::query(
                    "INSERT INTO events (id, name, active_limit, token_ttl_ms, next_seq, head_seq, active_count, \
                     created_at_ms, version, max_seats_per_token) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(uuid(after.id.0))
                .bind(&after.name)
                .bind(rows::i32_of(after.active_limit)?)
                .bind(rows::duration_ms(after.token_ttl)?)
                .bind(rows::count(after.next_seq)?)
                .bind(rows::count(after.head_seq)?)
                .bind(rows::i32_of(after.active_count)?)
                .bind(after.created_at.0)
                .bind(version(after.version))
                .bind(rows::i32_of(after.max_seats_per_token)?),
            )
            .await;
    };
    unchanged(
        (before.id, &before.name, before.active_limit, before.token_ttl, before.max_seats_per_token),
        (after.id, &after.name, after.active_limit, after.token_ttl, after.max_seats_per_token),
        || format!("event {} changes only its queue counters", after.id),
    )?;
    // Every strategy: the version. The counters move together with the
    // tokens, so a stale event means stale tokens.
    tx.guarded_update(
        sqlx::query(
            "UPDATE events SET next_seq = $2, head_seq = $3, active_count = $4, version = $5 \
             WHERE id = $1 AND version = $6",
        )
        .bind(uuid(after.id.0))
        .bind(rows::count(after.next_seq)?)
        .bind(rows::count(after.head_seq)?)
        .bind(rows::i32_of(after.active_count)?)
        .bind(version(after.version))
        .bind(version(before.version)),
    )
    .await
}

pub(super) async fn insert_showtime(tx: &mut PgTx, showtime: &Showtime) -> Result<(), StoreError> {
    tx.insert(
        sqlx::query("INSERT INTO showtimes (id, event_id, starts_at_ms) VALUES ($1, $2, $3)")
            .bind(uuid(showtime.id.0))
            .bind(uuid(showtime.event.0))
            .bind(showtime.starts_at.0),
    )
    .await
}

pub(super) async fn showtime(tx: &mut PgTx, id: ShowtimeId) -> Result<Option<Showtime>, StoreError> {
    tx.fetch_by_id("showtimes", rows::SHOWTIME_COLUMNS, "", id.0, rows::showtime).await
}

pub(super) async fn showtimes(tx: &mut PgTx, event: EventId) -> Result<Vec<Showtime>, StoreError> {
    let sql = format!("SELECT {} FROM showtimes WHERE event_id = $1 ORDER BY starts_at_ms, id", rows::SHOWTIME_COLUMNS);
    tx.fetch_all(sqlx::query(AssertSqlSafe(sql)).bind(uuid(event.0)), rows::showtime).await
}

pub(super) async fn seats(tx: &mut PgTx, showtime: ShowtimeId) -> Result<Vec<Seat>, StoreError> {
    // `label` is COLLATE "C": byte order, like the core's strings.
    let sql = format!("SELECT {} FROM seats WHERE showtime_id = $1 ORDER BY label, id", rows::SEAT_COLUMNS);
    tx.fetch_all(sqlx::query(AssertSqlSafe(sql)).bind(uuid(showtime.0)), rows::seat).await
}

pub(super) async fn seat(tx: &mut PgTx, id: SeatId) -> Result<Option<Seat>, StoreError> {
    let found = tx.fetch_by_id("seats", rows::SEAT_COLUMNS, tx.for_no_key_update(), id.0, rows::seat).await?;
    Ok(tx.noted(found))
}

pub(super) async fn put_seat(tx: &mut PgTx, before: Option<&Seat>, after: &Seat) -> Result<(), StoreError> {
    let (status, order) = rows::seat_status(after.status);
    let Some(before) = before else {
        return tx
            .insert(
                sqlx::query(
                    "INSERT INTO seats (id, showtime_id, event_id, label, price, status, order_id, version) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(uuid(after.id.0))
                .bind(uuid(after.showtime.0))
                .bind(uuid(after.event.0))
                .bind(&after.label)
                .bind(after.price.minor_units())
                .bind(status)
                .bind(order)
                .bind(version(after.version)),
            )
            .await;
    };
    unchanged(
        (before.id, before.showtime, before.event, &before.label, before.price),
        (after.id, after.showtime, after.event, &after.label, after.price),
        || format!("seat {} changes only its status", after.id),
    )?;
    let statement = if tx.atomic() {
        // The transition's precondition is the guard: the seat is still
        // in the status (and with the order) the decision saw.
        let (from, holder) = rows::seat_status(before.status);
        sqlx::query(
            "UPDATE seats SET status = $2, order_id = $3, version = version + 1 \
             WHERE id = $1 AND status = $4 AND order_id IS NOT DISTINCT FROM $5",
        )
        .bind(uuid(after.id.0))
        .bind(status)
        .bind(order)
        .bind(from)
        .bind(holder)
    } else {
        sqlx::query("UPDATE seats SET status = $2, order_id = $3, version = $4 WHERE id = $1 AND version = $5")
            .bind(uuid(after.id.0))
            .bind(status)
            .bind(order)
            .bind(version(after.version))
            .bind(version(before.version))
    };
    tx.guarded_update(statement).await
}
