//! One use case's transaction on PostgreSQL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Postgres, Transaction};
use tally_core::idempotency::{IdemRecord, IdemScope, IdemState};
use tally_core::ids::{PaymentId, UserId};
use tally_core::ledger::Transfer;
use tally_core::money::Money;
use tally_core::payment::Payment;
use tally_core::store::{StoreError, Tx, User};
use tally_core::time::Timestamp;
use tally_core::wallet::Wallet;

use crate::rows::{self, uuid, version};
use crate::{PgConfig, Strategy, errors};

/// A transaction. Under the atomic strategy, wallet updates and their ledger
/// lines wait here until `commit`, where each wallet becomes one conditional
/// update and its lines take their balance-after from what it returned.
pub struct PgTx {
    tx: Transaction<'static, Postgres>,
    config: PgConfig,
    deferred_wallets: Vec<(Wallet, Wallet)>,
    deferred_transfers: Vec<Transfer>,
}

impl std::fmt::Debug for PgTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTx").field("strategy", &self.config.strategy).finish_non_exhaustive()
    }
}

fn lock_clause(strategy: Strategy) -> &'static str {
    if strategy == Strategy::Pessimistic { " FOR UPDATE" } else { "" }
}

fn limit_value(limit: Option<Money>) -> Option<i64> {
    limit.map(Money::minor_units)
}

impl PgTx {
    pub(crate) fn new(tx: Transaction<'static, Postgres>, config: PgConfig) -> PgTx {
        PgTx { tx, config, deferred_wallets: Vec::new(), deferred_transfers: Vec::new() }
    }

    fn atomic(&self) -> bool {
        self.config.strategy == Strategy::Atomic
    }

    /// A stale write: under the optimistic strategy pause a random moment
    /// first, so the retrying crowd spreads out instead of colliding again.
    async fn conflict(&self) -> StoreError {
        if self.config.strategy == Strategy::Optimistic && !self.config.conflict_jitter_max.is_zero() {
            let max = u64::try_from(self.config.conflict_jitter_max.as_micros()).unwrap_or(u64::MAX).max(1);
            let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            tokio::time::sleep(Duration::from_micros(u64::from(seed) % max)).await;
        }
        StoreError::Conflict
    }

    async fn insert_wallet(&mut self, wallet: &Wallet) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO wallets (user_id, balance, max_balance, per_payment_limit, daily_limit, monthly_limit, \
             day, spent_day, month, spent_month, entry_count, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(uuid(wallet.user.0))
        .bind(wallet.balance.minor_units())
        .bind(limit_value(wallet.limits.max_balance))
        .bind(limit_value(wallet.limits.per_payment))
        .bind(limit_value(wallet.limits.daily))
        .bind(limit_value(wallet.limits.monthly))
        .bind(wallet.day)
        .bind(wallet.spent_day.minor_units())
        .bind(wallet.month)
        .bind(wallet.spent_month.minor_units())
        .bind(version(wallet.entry_count))
        .bind(version(wallet.version))
        .execute(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        Ok(())
    }

    /// The pessimistic and optimistic write: the decided row, if the row is
    /// still the one that was loaded.
    async fn update_wallet(&mut self, before: &Wallet, after: &Wallet) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE wallets SET balance = $2, day = $3, spent_day = $4, month = $5, spent_month = $6, \
             entry_count = $7, version = $8 WHERE user_id = $1 AND version = $9",
        )
        .bind(uuid(after.user.0))
        .bind(after.balance.minor_units())
        .bind(after.day)
        .bind(after.spent_day.minor_units())
        .bind(after.month)
        .bind(after.spent_month.minor_units())
        .bind(version(after.entry_count))
        .bind(version(after.version))
        .bind(version(before.version))
        .execute(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        if updated.rows_affected() == 1 { Ok(()) } else { Err(self.conflict().await) }
    }

    /// The atomic write of one wallet: its change as deltas, guarded by what
    /// the decision checked, then its ledger lines re-based on the result.
    async fn apply_wallet_delta(&mut self, before: &Wallet, after: &Wallet) -> Result<(), StoreError> {
        let user = after.user;
        let lines: Vec<usize> = (0..self.deferred_transfers.len())
            .filter(|i| self.deferred_transfers[*i].wallet.is_some_and(|side| side.user == user))
            .collect();
        let balances: Vec<i64> = lines
            .iter()
            .map(|i| self.deferred_transfers[*i].wallet.expect("filtered").balance_after.minor_units())
            .chain([after.balance.minor_units()])
            .collect();
        let start = before.balance.minor_units();
        let lowest = balances.iter().copied().min().expect("non-empty");
        let highest = balances.iter().copied().max().expect("non-empty");
        let paid_in = |same_window: bool, before: Money, after: Money| {
            if same_window { after.minor_units() - before.minor_units() } else { after.minor_units() }
        };
        let paid_day = paid_in(after.day == before.day, before.spent_day, after.spent_day);
        let paid_month = paid_in(after.month == before.month, before.spent_month, after.spent_month);
        let row = sqlx::query(
            "UPDATE wallets SET \
                balance = balance + $2, \
                spent_day = CASE WHEN $5 = 0 THEN spent_day WHEN day = $6 THEN spent_day + $5 ELSE $5 END, \
                day = CASE WHEN $5 = 0 THEN day ELSE $6 END, \
                spent_month = CASE WHEN $7 = 0 THEN spent_month WHEN month = $8 THEN spent_month + $7 ELSE $7 END, \
                month = CASE WHEN $7 = 0 THEN month ELSE $8 END, \
                entry_count = entry_count + $9, \
                version = version + 1 \
             WHERE user_id = $1 \
               AND balance >= $3 \
               AND (max_balance IS NULL OR balance + $4 <= max_balance) \
               AND ($5 = 0 OR daily_limit IS NULL \
                    OR (CASE WHEN day = $6 THEN spent_day ELSE 0 END) + $5 <= daily_limit) \
               AND ($7 = 0 OR monthly_limit IS NULL \
                    OR (CASE WHEN month = $8 THEN spent_month ELSE 0 END) + $7 <= monthly_limit) \
             RETURNING balance, entry_count",
        )
        .bind(uuid(user.0))
        .bind(after.balance.minor_units() - start)
        // Every intermediate balance stays >= 0 and <= max: the guards are the
        // decision's lowest and highest points, relative to where it started.
        .bind(start - lowest)
        .bind(highest - start)
        .bind(paid_day)
        .bind(after.day)
        .bind(paid_month)
        .bind(after.month)
        .bind(version(after.entry_count - before.entry_count))
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        let Some(row) = row else {
            // A guard failed on the current row: decide again on it.
            return Err(self.conflict().await);
        };
        let balance: i64 = sqlx::Row::try_get(&row, "balance").map_err(errors::map)?;
        let entries: i64 = sqlx::Row::try_get(&row, "entry_count").map_err(errors::map)?;
        let balance_shift = balance - after.balance.minor_units();
        let seq_shift = entries - version(after.entry_count);
        for i in lines {
            let side = self.deferred_transfers[i].wallet.as_mut().expect("filtered");
            side.balance_after = Money::new(side.balance_after.minor_units() + balance_shift);
            side.seq =
                u64::try_from(i64::try_from(side.seq).expect("seq fits") + seq_shift).expect("seq stays positive");
        }
        Ok(())
    }

    async fn insert_transfer(&mut self, t: &Transfer) -> Result<(), StoreError> {
        let origin = t.origin.as_ref();
        sqlx::query(
            "INSERT INTO transfers (id, kind, debit, credit, amount, payment_id, wallet_user_id, wallet_balance_after, \
             wallet_seq, op_id, origin_user_id, origin_key, origin_expires_at_ms, at_ms) \
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
        .bind(t.at.0)
        .execute(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        Ok(())
    }

    async fn flush_deferred(&mut self) -> Result<(), StoreError> {
        let wallets = std::mem::take(&mut self.deferred_wallets);
        for (before, after) in &wallets {
            self.apply_wallet_delta(before, after).await?;
        }
        let transfers = std::mem::take(&mut self.deferred_transfers);
        for transfer in &transfers {
            self.insert_transfer(transfer).await?;
        }
        Ok(())
    }
}

impl Tx for PgTx {
    async fn user(&mut self, id: UserId) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {} FROM users WHERE id = $1", rows::USER_COLUMNS);
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(id.0))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn user_by_key_hash(&mut self, key_hash: [u8; 32]) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {} FROM users WHERE key_hash = $1", rows::USER_COLUMNS);
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(key_hash.to_vec())
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn insert_user(&mut self, user: &User) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO users (id, name, key_hash, created_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(uuid(user.id.0))
            .bind(&user.name)
            .bind(user.key_hash.to_vec())
            .bind(user.created_at.0)
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        Ok(())
    }

    async fn wallet(&mut self, user: UserId) -> Result<Option<Wallet>, StoreError> {
        if let Some((_, after)) = self.deferred_wallets.iter().rev().find(|(_, w)| w.user == user) {
            return Ok(Some(after.clone()));
        }
        let sql = format!(
            "SELECT {} FROM wallets WHERE user_id = $1{}",
            rows::WALLET_COLUMNS,
            lock_clause(self.config.strategy)
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(user.0))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::wallet).transpose()
    }

    async fn put_wallet(&mut self, before: Option<&Wallet>, after: &Wallet) -> Result<(), StoreError> {
        match before {
            None => self.insert_wallet(after).await,
            Some(before) if self.atomic() => {
                self.deferred_wallets.push((before.clone(), after.clone()));
                Ok(())
            }
            Some(before) => self.update_wallet(before, after).await,
        }
    }

    async fn payment(&mut self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        let sql = format!(
            "SELECT {} FROM payments WHERE id = $1{}",
            rows::PAYMENT_COLUMNS,
            lock_clause(self.config.strategy)
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(id.0))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::payment).transpose()
    }

    async fn put_payment(&mut self, before: Option<&Payment>, after: &Payment) -> Result<(), StoreError> {
        let key = after.gateway.as_ref().map(|a| a.payment_key.clone());
        let started = after.gateway.as_ref().map(|a| a.started_at.0);
        let Some(before) = before else {
            sqlx::query(
                "INSERT INTO payments (id, user_id, amount, payback, method, status, created_at_ms, updated_at_ms, \
                 version, gateway_payment_key, gateway_started_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
            return Ok(());
        };
        // Atomic: the transition's precondition (the status it moves from) is
        // the guard. Otherwise: the loaded version.
        let query = if self.atomic() {
            sqlx::query(
                "UPDATE payments SET status = $2, updated_at_ms = $3, version = version + 1, \
                 gateway_payment_key = $5, gateway_started_at_ms = $6 WHERE id = $1 AND status = $4",
            )
            .bind(uuid(after.id.0))
            .bind(rows::status_str(after.status))
            .bind(after.updated_at.0)
            .bind(rows::status_str(before.status))
            .bind(key)
            .bind(started)
        } else {
            sqlx::query(
                "UPDATE payments SET status = $2, updated_at_ms = $3, version = $4, gateway_payment_key = $6, \
                 gateway_started_at_ms = $7 WHERE id = $1 AND version = $5",
            )
            .bind(uuid(after.id.0))
            .bind(rows::status_str(after.status))
            .bind(after.updated_at.0)
            .bind(version(after.version))
            .bind(version(before.version))
            .bind(key)
            .bind(started)
        };
        let done = query.execute(&mut *self.tx).await.map_err(errors::map)?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.conflict().await) }
    }

    async fn stuck_payments(&mut self, before: Timestamp, limit: usize) -> Result<Vec<Payment>, StoreError> {
        let sql = format!(
            "SELECT {} FROM payments WHERE status IN ('confirming', 'cancelling') AND gateway_started_at_ms < $1 \
             ORDER BY gateway_started_at_ms LIMIT $2",
            rows::PAYMENT_COLUMNS
        );
        let found = sqlx::query(AssertSqlSafe(sql))
            .bind(before.0)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        found.iter().map(rows::payment).collect()
    }

    async fn append_transfers(&mut self, transfers: &[Transfer]) -> Result<(), StoreError> {
        if self.atomic() {
            self.deferred_transfers.extend_from_slice(transfers);
            return Ok(());
        }
        for transfer in transfers {
            self.insert_transfer(transfer).await?;
        }
        Ok(())
    }

    async fn wallet_ledger(&mut self, user: UserId, after_seq: u64, limit: usize) -> Result<Vec<Transfer>, StoreError> {
        let sql = format!(
            "SELECT {} FROM transfers WHERE wallet_user_id = $1 AND wallet_seq > $2 ORDER BY wallet_seq LIMIT $3",
            rows::TRANSFER_COLUMNS
        );
        let found = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(user.0))
            .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        found.iter().map(rows::transfer).collect()
    }

    async fn idempotency(&mut self, scope: &IdemScope) -> Result<Option<IdemRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM idempotency_keys WHERE user_id = $1 AND key = $2{}",
            rows::IDEM_COLUMNS,
            lock_clause(self.config.strategy)
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(scope.user.0))
            .bind(scope.key.as_str())
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::idem).transpose()
    }

    async fn idempotency_no_wait(&mut self, scope: &IdemScope) -> Result<Option<IdemRecord>, StoreError> {
        let lock = if self.config.strategy == Strategy::Pessimistic { " FOR UPDATE NOWAIT" } else { "" };
        let sql = format!("SELECT {} FROM idempotency_keys WHERE user_id = $1 AND key = $2{lock}", rows::IDEM_COLUMNS);
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(scope.user.0))
            .bind(scope.key.as_str())
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(|error| match &error {
                // lock_not_available: NOWAIT found the row locked.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03") => StoreError::Busy,
                _ => errors::map(error),
            })?;
        row.as_ref().map(rows::idem).transpose()
    }

    async fn put_idempotency(&mut self, before: Option<&IdemRecord>, after: &IdemRecord) -> Result<(), StoreError> {
        let (state, lease, lease_expires, status, content_type, body, op) = match &after.state {
            IdemState::InFlight { lease, lease_expires_at } => {
                ("in_flight", Some(uuid(lease.0)), Some(lease_expires_at.0), None, None, None, None)
            }
            IdemState::Completed { response, op } => (
                "completed",
                None,
                None,
                Some(i32::from(response.status)),
                Some(response.content_type.clone()),
                Some(response.body.clone()),
                op.map(|o| uuid(o.0)),
            ),
        };
        let sql = if before.is_none() {
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, state, lease, lease_expires_at_ms, \
             response_status, response_content_type, response_body, op_id, created_at_ms, expires_at_ms, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        } else {
            "UPDATE idempotency_keys SET fingerprint = $3, state = $4, lease = $5, lease_expires_at_ms = $6, \
             response_status = $7, response_content_type = $8, response_body = $9, op_id = $10, \
             created_at_ms = $11, expires_at_ms = $12, version = $13 \
             WHERE user_id = $1 AND key = $2 AND version = $14"
        };
        let done = sqlx::query(sql)
            .bind(uuid(after.scope.user.0))
            .bind(after.scope.key.as_str())
            .bind(after.fingerprint.0.to_vec())
            .bind(state)
            .bind(lease)
            .bind(lease_expires)
            .bind(status)
            .bind(content_type)
            .bind(body)
            .bind(op)
            .bind(after.created_at.0)
            .bind(after.expires_at.0)
            .bind(version(after.version))
            .bind(before.map(|b| version(b.version)))
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.conflict().await) }
    }

    async fn delete_idempotency(&mut self, before: &IdemRecord) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND version = $3")
            .bind(uuid(before.scope.user.0))
            .bind(before.scope.key.as_str())
            .bind(version(before.version))
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.conflict().await) }
    }

    async fn reap_idempotency(&mut self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        // SKIP LOCKED: several instances reap at once without queueing on
        // each other or on a request that holds a key.
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE (user_id, key) IN ( \
               SELECT user_id, key FROM idempotency_keys WHERE expires_at_ms <= $1 \
               ORDER BY expires_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now.0)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        self.flush_deferred().await?;
        self.tx.commit().await.map_err(errors::map_commit)
    }

    async fn rollback(self) {
        // A failed rollback leaves nothing behind either: the server
        // aborts the transaction when the connection goes.
        let _ = self.tx.rollback().await;
    }
}
