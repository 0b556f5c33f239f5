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

use super::{PgTx, limit_i64};
use crate::rows::{self, uuid, version};

pub(super) async fn append(tx: &mut PgTx, transfers: &[Transfer]) -> Result<(), StoreError> {
    if tx.atomic() {
        tx.deferred.append_transfers(transfers);
        return Ok(());
    }
    for transfer in transfers {
        insert(tx, transfer).await?;
    }
    Ok(())
}

pub(super) async fn insert(tx: &mut PgTx, t: &Transfer) -> Result<(), StoreError> {
    let origin = t.origin.as_ref();
    tx.insert(
        sqlx::query(
            "INSERT INTO transfers (id, kind, debit, credit, amount, payment_id, wallet_user_id, \
             wallet_balance_after, wallet_seq, op_id, origin_user_id, origin_key, origin_expires_at_ms, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(uuid(t.id.0))
        .bind(t.kind.as_str())
        .bind(rows::account_str(t.debit))
        .bind(rows::account_str(t.credit))
        .bind(t.amount.minor_units())
        .bind(t.payment.map(|p| uuid(p.0)))
        .bind(t.wallet.map(|w| uuid(w.user.0)))
        .bind(t.wallet.map(|w| w.balance_after.minor_units()))
        .bind(t.wallet.map(|w| version(w.seq)))
        .bind(uuid(t.op.0))
        .bind(origin.map(|o| uuid(o.scope.user.0)))
        .bind(origin.map(|o| o.scope.key.as_str().to_owned()))
        .bind(origin.map(|o| o.expires_at.0))
        .bind(t.at.0),
    )
    .await
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
