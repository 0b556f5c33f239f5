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
use tally_core::store::{Put, StoreError};
use tally_core::wallet::Wallet;

use super::{PgTx, Statement, column};
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
    let found = tx.fetch_optional(sqlx::query(AssertSqlSafe(sql)).bind(uuid(user.0)), rows::wallet).await?;
    Ok(tx.noted(found))
}

/// A group commit's preload of many wallets: one statement, rows locked in
/// key order (see [`PgTx::fetch_by_ids`]).
pub(super) async fn wallets(tx: &mut PgTx, users: &[UserId]) -> Result<Vec<Wallet>, StoreError> {
    // As in `wallet`: what this transaction already decided is read back.
    let (decided, unread): (Vec<UserId>, Vec<UserId>) =
        users.iter().partition(|user| tx.deferred.wallet(**user).is_some());
    let mut found: Vec<Wallet> = decided.iter().filter_map(|user| tx.deferred.wallet(*user).cloned()).collect();
    if !unread.is_empty() {
        let lock = tx.for_update();
        let loaded = tx
            .fetch_by_ids("wallets", rows::WALLET_COLUMNS, "user_id", lock, unread.iter().map(|u| u.0), rows::wallet)
            .await?;
        found.extend(tx.noted_all(loaded));
    }
    Ok(found)
}

/// Many wallet writes: the updates in one statement (see [`update_many`]),
/// inserts and the atomic strategy's deferred writes one by one (new
/// wallets come with new users, never in a group commit).
pub(super) async fn put_many(tx: &mut PgTx, puts: &[Put<Wallet>]) -> Result<(), StoreError> {
    let mut updates = Vec::with_capacity(puts.len());
    for write in puts {
        match &write.before {
            Some(before) if !tx.atomic() => updates.push((before, &write.after)),
            before => put(tx, before.as_ref(), &write.after).await?,
        }
    }
    update_many(tx, &updates).await
}

pub(super) async fn put(tx: &mut PgTx, before: Option<&Wallet>, after: &Wallet) -> Result<(), StoreError> {
    match before {
        None => insert(tx, after).await,
        Some(before) if tx.atomic() => {
            tx.deferred.put_wallet(before, after);
            Ok(())
        }
        Some(before) => update_many(tx, &[(before, after)]).await,
    }
}

/// Binds the user id (`$1`) and what a wallet's movements change (`$2` to
/// `$9`: balance, day, spent_day, month, spent_month, entry_count, version,
/// payback_held), for the insert ([`update_many`] binds the same as arrays).
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

/// The pessimistic and optimistic write of one wallet or many (one
/// statement): each decided row, if the row is still the one that was
/// loaded. A row whose version moved is not touched, and the write of them
/// all is a conflict.
async fn update_many(tx: &mut PgTx, writes: &[(&Wallet, &Wallet)]) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let guard = if mutant::active("pg_drop_version_guard") {
        // The mutant: the loaded version is bound but not compared.
        "v.before_version IS NOT NULL"
    } else {
        "w.version = v.before_version"
    };
    let sql = format!(
        "UPDATE wallets AS w SET balance = v.balance, day = v.day, spent_day = v.spent_day, month = v.month, \
         spent_month = v.spent_month, entry_count = v.entry_count, version = v.version, payback_held = v.payback_held \
         FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], \
         $8::bigint[], $9::bigint[], $10::bigint[]) \
         AS v(user_id, balance, day, spent_day, month, spent_month, entry_count, version, payback_held, before_version) \
         WHERE w.user_id = v.user_id AND {guard}"
    );
    let statement = sqlx::query(AssertSqlSafe(sql))
        .bind(column(writes, |(_, a)| uuid(a.user.0)))
        .bind(column(writes, |(_, a)| a.balance.minor_units()))
        .bind(column(writes, |(_, a)| a.day))
        .bind(column(writes, |(_, a)| a.spent_day.minor_units()))
        .bind(column(writes, |(_, a)| a.month))
        .bind(column(writes, |(_, a)| a.spent_month.minor_units()))
        .bind(column(writes, |(_, a)| version(a.entry_count)))
        .bind(column(writes, |(_, a)| version(a.version)))
        .bind(column(writes, |(_, a)| a.payback_held.minor_units()))
        .bind(column(writes, |(b, _)| version(b.version)));
    tx.guarded_updates(statement, writes.len()).await
}
