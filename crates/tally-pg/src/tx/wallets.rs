//! Wallets: the load, the insert, and the pessimistic and optimistic write.
//!
//! Pessimistic loads take `FOR UPDATE`, so the loaded version is still the
//! row's when the write comes; optimistic loads do not, and a write on a
//! stale version is a conflict. The atomic strategy writes wallets
//! differently enough to have its own module: [`atomic`].

pub(super) mod atomic;

use sqlx::AssertSqlSafe;
use tally_core::ids::UserId;
use tally_core::money::Money;
use tally_core::mutant;
use tally_core::store::StoreError;
use tally_core::wallet::Wallet;

use super::{PgTx, Statement};
use crate::rows::{self, uuid, version};

fn limit_value(limit: Option<Money>) -> Option<i64> {
    limit.map(Money::minor_units)
}

pub(super) async fn wallet(tx: &mut PgTx, user: UserId) -> Result<Option<Wallet>, StoreError> {
    // Under the atomic strategy a wallet this transaction already decided on
    // is not written yet: read it back from what waits for commit.
    if let Some(after) = tx.deferred.wallet(user) {
        return Ok(Some(after.clone()));
    }
    let sql = format!("SELECT {} FROM wallets WHERE user_id = $1{}", rows::WALLET_COLUMNS, tx.for_update());
    tx.fetch_optional(sqlx::query(AssertSqlSafe(sql)).bind(uuid(user.0)), rows::wallet).await
}

pub(super) async fn put(tx: &mut PgTx, before: Option<&Wallet>, after: &Wallet) -> Result<(), StoreError> {
    match before {
        None => insert(tx, after).await,
        Some(before) if tx.atomic() => {
            tx.deferred.put_wallet(before, after);
            Ok(())
        }
        Some(before) => update(tx, before, after).await,
    }
}

/// Binds the user id (`$1`) and what a wallet's movements change (`$2` to
/// `$9`: balance, day, spent_day, month, spent_month, entry_count, version,
/// payback_held), which the insert and the update write alike.
fn bind_state(statement: Statement, wallet: &Wallet) -> Statement {
    statement
        .bind(uuid(wallet.user.0))
        .bind(wallet.balance.minor_units())
        .bind(wallet.day)
        .bind(wallet.spent_day.minor_units())
        .bind(wallet.month)
        .bind(wallet.spent_month.minor_units())
        .bind(version(wallet.entry_count))
        .bind(version(wallet.version))
        .bind(wallet.payback_held.minor_units())
}

async fn insert(tx: &mut PgTx, wallet: &Wallet) -> Result<(), StoreError> {
    let statement = sqlx::query(
        "INSERT INTO wallets (user_id, balance, day, spent_day, month, spent_month, entry_count, version, \
         payback_held, max_balance, per_payment_limit, daily_limit, monthly_limit) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    );
    let limits = &wallet.limits;
    tx.insert(
        bind_state(statement, wallet)
            .bind(limit_value(limits.max_balance))
            .bind(limit_value(limits.per_payment))
            .bind(limit_value(limits.daily))
            .bind(limit_value(limits.monthly)),
    )
    .await
}

/// The pessimistic and optimistic write: the decided row, if the row is
/// still the one that was loaded.
async fn update(tx: &mut PgTx, before: &Wallet, after: &Wallet) -> Result<(), StoreError> {
    let statement = sqlx::query(if mutant::active("pg_drop_version_guard") {
        // The mutant: the loaded version is bound but not compared.
        "UPDATE wallets SET balance = $2, day = $3, spent_day = $4, month = $5, spent_month = $6, \
         entry_count = $7, version = $8, payback_held = $9 WHERE user_id = $1 AND $10::bigint IS NOT NULL"
    } else {
        "UPDATE wallets SET balance = $2, day = $3, spent_day = $4, month = $5, spent_month = $6, \
         entry_count = $7, version = $8, payback_held = $9 WHERE user_id = $1 AND version = $10"
    });
    tx.guarded_update(bind_state(statement, after).bind(version(before.version))).await
}
