//! The ledger: transfers, append-only (nothing updates or deletes one), and
//! a wallet's history read back by position.
//!
//! Under the atomic strategy appended lines wait for commit with the wallet
//! writes (`wallets::atomic`), because their wallet side (balance after,
//! position) is only known once the wallet's row has been changed.

use sqlx::AssertSqlSafe;
use tally_core::ids::UserId;
use tally_core::ledger::Transfer;
use tally_core::store::StoreError;

use super::{PgTx, column, limit_i64};
use crate::rows::{self, uuid, version};

pub(super) async fn append(tx: &mut PgTx, transfers: &[Transfer]) -> Result<(), StoreError> {
    if tx.atomic() {
        tx.deferred.append_transfers(transfers);
        return Ok(());
    }
    insert_many(tx, transfers).await
}

/// Inserts every line in one `INSERT … SELECT FROM UNNEST` (a group
/// commit's lines, or one use case's).
pub(super) async fn insert_many(tx: &mut PgTx, transfers: &[Transfer]) -> Result<(), StoreError> {
    if transfers.is_empty() {
        return Ok(());
    }
    let origin = |t: &Transfer| {
        t.origin.as_ref().map(|o| (uuid(o.scope.user.0), o.scope.key.as_str().to_owned(), o.expires_at.0))
    };
    let statement = sqlx::query(
        "INSERT INTO transfers (id, kind, debit, credit, amount, payment_id, wallet_user_id, \
         wallet_balance_after, wallet_seq, op_id, origin_user_id, origin_key, origin_expires_at_ms, at_ms) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::uuid[], $7::uuid[], \
         $8::bigint[], $9::bigint[], $10::uuid[], $11::uuid[], $12::text[], $13::bigint[], $14::bigint[])",
    )
    .bind(column(transfers, |t| uuid(t.id.0)))
    .bind(column(transfers, |t| t.kind.as_str()))
    .bind(column(transfers, |t| rows::account_str(t.debit)))
    .bind(column(transfers, |t| rows::account_str(t.credit)))
    .bind(column(transfers, |t| t.amount.minor_units()))
    .bind(column(transfers, |t| t.payment.map(|p| uuid(p.0))))
    .bind(column(transfers, |t| t.wallet.map(|w| uuid(w.user.0))))
    .bind(column(transfers, |t| t.wallet.map(|w| w.balance_after.minor_units())))
    .bind(column(transfers, |t| t.wallet.map(|w| version(w.seq))))
    .bind(column(transfers, |t| uuid(t.op.0)))
    .bind(column(transfers, |t| origin(t).map(|o| o.0)))
    .bind(column(transfers, |t| origin(t).map(|o| o.1)))
    .bind(column(transfers, |t| origin(t).map(|o| o.2)))
    .bind(column(transfers, |t| t.at.0));
    tx.insert(statement).await
}

pub(super) async fn wallet_ledger(
    tx: &mut PgTx,
    user: UserId,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<Transfer>, StoreError> {
    let sql = format!(
        "SELECT {} FROM transfers WHERE wallet_user_id = $1 AND wallet_seq > $2 ORDER BY wallet_seq LIMIT $3",
        rows::TRANSFER_COLUMNS
    );
    let statement = sqlx::query(AssertSqlSafe(sql))
        .bind(uuid(user.0))
        .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
        .bind(limit_i64(limit));
    tx.fetch_all(statement, rows::transfer).await
}
