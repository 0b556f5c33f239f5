//! Users: inserted once, never changed; looked up by id or by
//! the hash of their API key. No strategy locks them: nothing writes them
//! after the insert.

use sqlx::AssertSqlSafe;
use tally_core::ids::UserId;
use tally_core::store::{StoreError, User};

use super::PgTx;
use crate::rows::{self, uuid};

pub(super) async fn user(tx: &mut PgTx, id: UserId) -> Result<Option<User>, StoreError> {
    tx.fetch_by_id("users", rows::USER_COLUMNS, "", id.0, rows::user).await
}

pub(super) async fn by_key_hash(tx: &mut PgTx, key_hash: [u8; 32]) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {} FROM users WHERE key_hash = $1", rows::USER_COLUMNS);
    tx.fetch_optional(sqlx::query(AssertSqlSafe(sql)).bind(key_hash.to_vec()), rows::user).await
}

pub(super) async fn insert(tx: &mut PgTx, user: &User) -> Result<(), StoreError> {
    tx.insert(
        sqlx::query("INSERT INTO users (id, name, key_hash, created_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(uuid(user.id.0))
            .bind(&user.name)
            .bind(user.key_hash.to_vec())
            .bind(user.created_at.0),
    )
    .await
}
