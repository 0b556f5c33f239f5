//! An event's queue tokens.
//!
//! Tokens are read plainly and written guarded by their version, under
//! every strategy: the event row guards its tokens (under the pessimistic
//! strategy, the event's lock is what serialises every change to them).

use sqlx::AssertSqlSafe;
use tally_core::ids::{EventId, TokenId, UserId};
use tally_core::queue::{QueueToken, TokenStatus};
use tally_core::store::StoreError;

use super::{PgTx, limit_i64, unchanged};
use crate::rows::{self, uuid, version};

pub(super) async fn token(tx: &mut PgTx, id: TokenId) -> Result<Option<QueueToken>, StoreError> {
    // A plain read under every strategy: the event row guards its tokens.
    let found = tx.fetch_by_id("queue_tokens", rows::TOKEN_COLUMNS, "", id.0, rows::token).await?;
    Ok(tx.noted(found))
}

pub(super) async fn put(tx: &mut PgTx, before: Option<&QueueToken>, after: &QueueToken) -> Result<(), StoreError> {
    let Some(before) = before else {
        return tx
            .insert(
                sqlx::query(
                    "INSERT INTO queue_tokens (id, event_id, user_id, seq, status, joined_at_ms, activated_at_ms, \
                     expires_at_ms, used_at_ms, version, seats_held) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(uuid(after.id.0))
                .bind(uuid(after.event.0))
                .bind(uuid(after.user.0))
                .bind(rows::count(after.seq)?)
                .bind(rows::token_status_str(after.status))
                .bind(after.joined_at.0)
                .bind(after.activated_at.map(|t| t.0))
                .bind(after.expires_at.map(|t| t.0))
                .bind(after.used_at.map(|t| t.0))
                .bind(version(after.version))
                .bind(rows::i32_of(after.seats_held)?),
            )
            .await;
    };
    let fixed = |t: &QueueToken| (t.id, t.event, t.user, t.seq, t.joined_at);
    unchanged(fixed(before), fixed(after), || format!("queue token {} changes only its status", after.id))?;
    tx.guarded_update(
        sqlx::query(
            "UPDATE queue_tokens SET status = $2, activated_at_ms = $3, expires_at_ms = $4, used_at_ms = $5, \
             version = $6, seats_held = $8 WHERE id = $1 AND version = $7",
        )
        .bind(uuid(after.id.0))
        .bind(rows::token_status_str(after.status))
        .bind(after.activated_at.map(|t| t.0))
        .bind(after.expires_at.map(|t| t.0))
        .bind(after.used_at.map(|t| t.0))
        .bind(version(after.version))
        .bind(version(before.version))
        .bind(rows::i32_of(after.seats_held)?),
    )
    .await
}

/// An event's tokens with `status`, in join order.
pub(super) async fn tokens(
    tx: &mut PgTx,
    event: EventId,
    status: TokenStatus,
    limit: usize,
) -> Result<Vec<QueueToken>, StoreError> {
    let sql = format!(
        "SELECT {} FROM queue_tokens WHERE event_id = $1 AND status = $2 ORDER BY seq LIMIT $3",
        rows::TOKEN_COLUMNS
    );
    let statement =
        sqlx::query(AssertSqlSafe(sql)).bind(uuid(event.0)).bind(rows::token_status_str(status)).bind(limit_i64(limit));
    tx.fetch_all(statement, rows::token).await
}

/// The user's newest token for the event.
pub(super) async fn user_token(tx: &mut PgTx, event: EventId, user: UserId) -> Result<Option<QueueToken>, StoreError> {
    let sql = format!(
        "SELECT {} FROM queue_tokens WHERE event_id = $1 AND user_id = $2 ORDER BY seq DESC LIMIT 1",
        rows::TOKEN_COLUMNS
    );
    let found =
        tx.fetch_optional(sqlx::query(AssertSqlSafe(sql)).bind(uuid(event.0)).bind(uuid(user.0)), rows::token).await?;
    Ok(tx.noted(found))
}
