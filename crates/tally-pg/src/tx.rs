//! One use case's transaction on PostgreSQL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Postgres, Transaction};
use tally_core::catalog::{Event, Product, STOCK_MAX, Seat, Showtime};
use tally_core::idempotency::{IdemRecord, IdemScope, IdemState};
use tally_core::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, ShowtimeId, TokenId, UserId};
use tally_core::ledger::Transfer;
use tally_core::money::Money;
use tally_core::order::Order;
use tally_core::payment::Payment;
use tally_core::queue::{QueueToken, TokenStatus};
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

/// The pessimistic row lock of the inventory tables. `NO KEY UPDATE` is what
/// an `UPDATE` of non-key columns takes anyway; unlike `FOR UPDATE` it lets
/// other transactions' foreign-key checks (`KEY SHARE`: a payment naming an
/// order, a token naming an event) through instead of queueing them.
fn row_lock(strategy: Strategy) -> &'static str {
    if strategy == Strategy::Pessimistic { " FOR NO KEY UPDATE" } else { "" }
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
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
             day, spent_day, month, spent_month, entry_count, version, payback_held) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
        .bind(wallet.payback_held.minor_units())
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
             entry_count = $7, version = $8, payback_held = $10 WHERE user_id = $1 AND version = $9",
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
        .bind(after.payback_held.minor_units())
        .execute(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        if updated.rows_affected() == 1 { Ok(()) } else { Err(self.conflict().await) }
    }

    /// The atomic write of one wallet: its change as deltas, guarded by what
    /// the decision checked, then its ledger lines re-based on the result.
    ///
    /// The guards restate `Wallet::apply` on the current row: the balance
    /// never below zero; the balance with every held payback never above the
    /// ceiling (the wallet's maximum, never above `Money::BALANCE_LIMIT`);
    /// the limits counted in the newest window, which never moves backwards.
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
        // What this decision paid in its window. The core moves a window
        // only forwards, and restarts its count only when it moved.
        let paid_in = |rolled: bool, before: Money, after: Money| {
            if rolled { after.minor_units() } else { after.minor_units() - before.minor_units() }
        };
        let paid_day = paid_in(after.day > before.day, before.spent_day, after.spent_day);
        let paid_month = paid_in(after.month > before.month, before.spent_month, after.spent_month);
        // The core changes a payback hold before any line it books (a confirm
        // releases the hold, then credits the payback; taking a hold books
        // nothing), so every point of the decision counts the hold as it ends.
        let held = after.payback_held.minor_units() - before.payback_held.minor_units();
        let row = sqlx::query(
            "UPDATE wallets SET \
                balance = balance + $2, \
                payback_held = payback_held + $10, \
                spent_day = CASE WHEN $5 = 0 THEN spent_day WHEN $6 > day THEN $5 ELSE spent_day + $5 END, \
                day = CASE WHEN $5 = 0 THEN day ELSE GREATEST(day, $6) END, \
                spent_month = CASE WHEN $7 = 0 THEN spent_month WHEN $8 > month THEN $7 ELSE spent_month + $7 END, \
                month = CASE WHEN $7 = 0 THEN month ELSE GREATEST(month, $8) END, \
                entry_count = entry_count + $9, \
                version = version + 1 \
             WHERE user_id = $1 \
               AND balance >= $3 \
               AND payback_held + $10 >= 0 \
               AND balance + $4 + payback_held + $10 <= LEAST(COALESCE(max_balance, $11), $11) \
               AND ($5 = 0 OR daily_limit IS NULL \
                    OR (CASE WHEN $6 > day THEN 0 ELSE spent_day END) + $5 <= daily_limit) \
               AND ($7 = 0 OR monthly_limit IS NULL \
                    OR (CASE WHEN $8 > month THEN 0 ELSE spent_month END) + $7 <= monthly_limit) \
             RETURNING balance, entry_count",
        )
        .bind(uuid(user.0))
        .bind(after.balance.minor_units() - start)
        // Every intermediate balance stays >= 0 and under the ceiling: the
        // guards are the decision's lowest and highest points, relative to
        // where it started.
        .bind(start - lowest)
        .bind(highest - start)
        .bind(paid_day)
        .bind(after.day)
        .bind(paid_month)
        .bind(after.month)
        .bind(version(after.entry_count - before.entry_count))
        .bind(held)
        .bind(Money::BALANCE_LIMIT.minor_units())
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

    /// An order with its lines and seats (each kind in one statement).
    async fn insert_order(&mut self, order: &Order) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO orders (id, user_id, status, total, payment_id, event_id, token_id, expires_at_ms, \
             created_at_ms, updated_at_ms, version, payback) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
        .bind(order.payback.minor_units())
        .execute(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        if !order.lines.is_empty() {
            let products: Vec<uuid::Uuid> = order.lines.iter().map(|l| uuid(l.product.0)).collect();
            let quantities = order.lines.iter().map(|l| rows::count(l.quantity)).collect::<Result<Vec<i64>, _>>()?;
            let prices: Vec<i64> = order.lines.iter().map(|l| l.unit_price.minor_units()).collect();
            sqlx::query(
                "INSERT INTO order_lines (order_id, position, product_id, quantity, unit_price) \
                 SELECT $1, (l.n - 1)::integer, l.product_id, l.quantity, l.unit_price \
                 FROM UNNEST($2::uuid[], $3::bigint[], $4::bigint[]) WITH ORDINALITY \
                   AS l (product_id, quantity, unit_price, n)",
            )
            .bind(uuid(order.id.0))
            .bind(products)
            .bind(quantities)
            .bind(prices)
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        }
        if !order.seats.is_empty() {
            let seats: Vec<uuid::Uuid> = order.seats.iter().map(|s| uuid(s.seat.0)).collect();
            let prices: Vec<i64> = order.seats.iter().map(|s| s.price.minor_units()).collect();
            sqlx::query(
                "INSERT INTO order_seats (order_id, position, seat_id, price) \
                 SELECT $1, (s.n - 1)::integer, s.seat_id, s.price \
                 FROM UNNEST($2::uuid[], $3::bigint[]) WITH ORDINALITY AS s (seat_id, price, n)",
            )
            .bind(uuid(order.id.0))
            .bind(seats)
            .bind(prices)
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        }
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

    async fn payment_by_key(&mut self, key: &str) -> Result<Option<PaymentId>, StoreError> {
        // A plain read under every strategy: a claim is never given up, so a
        // committed one is final, and an uncommitted one makes our own claim
        // wait on the unique index and then fail as a conflict.
        let row = sqlx::query("SELECT id FROM payments WHERE gateway_payment_key = $1")
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.map(|row| Ok(PaymentId(sqlx::Row::try_get::<uuid::Uuid, _>(&row, "id").map_err(errors::map)?.as_u128())))
            .transpose()
    }

    async fn put_payment(&mut self, before: Option<&Payment>, after: &Payment) -> Result<(), StoreError> {
        let key = after.gateway.as_ref().map(|a| a.payment_key.clone());
        let started = after.gateway.as_ref().map(|a| a.started_at.0);
        let sent = after.gateway.as_ref().map(|a| a.sent_at.0);
        let Some(before) = before else {
            sqlx::query(
                "INSERT INTO payments (id, user_id, amount, payback, method, status, created_at_ms, updated_at_ms, \
                 version, gateway_payment_key, gateway_started_at_ms, order_id, gateway_sent_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
            .bind(after.order.map(|o| uuid(o.0)))
            .bind(sent)
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
            return Ok(());
        };
        if before.order != after.order {
            return Err(StoreError::Integrity(format!("payment {} cannot change its order", after.id)));
        }
        // Atomic: the transition's precondition (the status it moves from) is
        // the guard. Otherwise: the loaded version.
        let query = if self.atomic() {
            sqlx::query(
                "UPDATE payments SET status = $2, updated_at_ms = $3, version = version + 1, \
                 gateway_payment_key = $5, gateway_started_at_ms = $6, gateway_sent_at_ms = $7 \
                 WHERE id = $1 AND status = $4",
            )
            .bind(uuid(after.id.0))
            .bind(rows::status_str(after.status))
            .bind(after.updated_at.0)
            .bind(rows::status_str(before.status))
            .bind(key)
            .bind(started)
            .bind(sent)
        } else {
            sqlx::query(
                "UPDATE payments SET status = $2, updated_at_ms = $3, version = $4, gateway_payment_key = $6, \
                 gateway_started_at_ms = $7, gateway_sent_at_ms = $8 WHERE id = $1 AND version = $5",
            )
            .bind(uuid(after.id.0))
            .bind(rows::status_str(after.status))
            .bind(after.updated_at.0)
            .bind(version(after.version))
            .bind(version(before.version))
            .bind(key)
            .bind(started)
            .bind(sent)
        };
        let done = query.execute(&mut *self.tx).await.map_err(errors::map)?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.conflict().await) }
    }

    async fn stuck_payments(&mut self, before: Timestamp, limit: usize) -> Result<Vec<Payment>, StoreError> {
        let sql = format!(
            "SELECT {} FROM payments WHERE status IN ('confirming', 'cancelling', 'refunding') \
             AND gateway_started_at_ms < $1 ORDER BY gateway_started_at_ms LIMIT $2",
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

    async fn product(&mut self, id: ProductId) -> Result<Option<Product>, StoreError> {
        let sql =
            format!("SELECT {} FROM products WHERE id = $1{}", rows::PRODUCT_COLUMNS, row_lock(self.config.strategy));
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(id.0))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::product).transpose()
    }

    async fn put_product(&mut self, before: Option<&Product>, after: &Product) -> Result<(), StoreError> {
        let Some(before) = before else {
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
            .bind(rows::i32_of(after.payback_bps)?)
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
            return Ok(());
        };
        if (before.id, &before.name, before.price, before.payback_bps)
            != (after.id, &after.name, after.price, after.payback_bps)
        {
            return Err(StoreError::Integrity(format!("product {} changes only its stock", after.id)));
        }
        let done = if self.atomic() {
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
        }
        .execute(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.conflict().await) }
    }

    async fn event(&mut self, id: EventId) -> Result<Option<Event>, StoreError> {
        // The event row guards its queue: under the pessimistic strategy this
        // lock is what serialises every change to its tokens.
        let sql = format!("SELECT {} FROM events WHERE id = $1{}", rows::EVENT_COLUMNS, row_lock(self.config.strategy));
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(id.0))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::event).transpose()
    }

    async fn put_event(&mut self, before: Option<&Event>, after: &Event) -> Result<(), StoreError> {
        let Some(before) = before else {
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
            .bind(rows::i32_of(after.max_seats_per_token)?)
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
            return Ok(());
        };
        if (before.id, &before.name, before.active_limit, before.token_ttl, before.max_seats_per_token)
            != (after.id, &after.name, after.active_limit, after.token_ttl, after.max_seats_per_token)
        {
            return Err(StoreError::Integrity(format!("event {} changes only its queue counters", after.id)));
        }
        // Every strategy: the version. The counters move together with the
        // tokens, so a stale event means stale tokens.
        let done = sqlx::query(
            "UPDATE events SET next_seq = $2, head_seq = $3, active_count = $4, version = $5 \
             WHERE id = $1 AND version = $6",
        )
        .bind(uuid(after.id.0))
        .bind(rows::count(after.next_seq)?)
        .bind(rows::count(after.head_seq)?)
        .bind(rows::i32_of(after.active_count)?)
        .bind(version(after.version))
        .bind(version(before.version))
        .execute(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.conflict().await) }
    }

    async fn insert_showtime(&mut self, showtime: &Showtime) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO showtimes (id, event_id, starts_at_ms) VALUES ($1, $2, $3)")
            .bind(uuid(showtime.id.0))
            .bind(uuid(showtime.event.0))
            .bind(showtime.starts_at.0)
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        Ok(())
    }

    async fn showtime(&mut self, id: ShowtimeId) -> Result<Option<Showtime>, StoreError> {
        let sql = format!("SELECT {} FROM showtimes WHERE id = $1", rows::SHOWTIME_COLUMNS);
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(id.0))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::showtime).transpose()
    }

    async fn showtimes(&mut self, event: EventId) -> Result<Vec<Showtime>, StoreError> {
        let sql =
            format!("SELECT {} FROM showtimes WHERE event_id = $1 ORDER BY starts_at_ms, id", rows::SHOWTIME_COLUMNS);
        let found =
            sqlx::query(AssertSqlSafe(sql)).bind(uuid(event.0)).fetch_all(&mut *self.tx).await.map_err(errors::map)?;
        found.iter().map(rows::showtime).collect()
    }

    async fn seats(&mut self, showtime: ShowtimeId) -> Result<Vec<Seat>, StoreError> {
        // `label` is COLLATE "C": byte order, like the core's strings.
        let sql = format!("SELECT {} FROM seats WHERE showtime_id = $1 ORDER BY label, id", rows::SEAT_COLUMNS);
        let found = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(showtime.0))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        found.iter().map(rows::seat).collect()
    }

    async fn seat(&mut self, id: SeatId) -> Result<Option<Seat>, StoreError> {
        let sql = format!("SELECT {} FROM seats WHERE id = $1{}", rows::SEAT_COLUMNS, row_lock(self.config.strategy));
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(id.0))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::seat).transpose()
    }

    async fn put_seat(&mut self, before: Option<&Seat>, after: &Seat) -> Result<(), StoreError> {
        let (status, order) = rows::seat_status(after.status);
        let Some(before) = before else {
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
            .bind(version(after.version))
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
            return Ok(());
        };
        if (before.id, before.showtime, before.event, &before.label, before.price)
            != (after.id, after.showtime, after.event, &after.label, after.price)
        {
            return Err(StoreError::Integrity(format!("seat {} changes only its status", after.id)));
        }
        let done = if self.atomic() {
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
        }
        .execute(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.conflict().await) }
    }

    async fn order(&mut self, id: OrderId) -> Result<Option<Order>, StoreError> {
        let sql = format!("{} WHERE o.id = $1{}", rows::ORDER_SELECT, row_lock(self.config.strategy));
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(id.0))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::order).transpose()
    }

    async fn order_skip_locked(&mut self, id: OrderId) -> Result<Option<Order>, StoreError> {
        if self.config.strategy != Strategy::Pessimistic {
            return self.order(id).await;
        }
        let sql = format!("{} WHERE o.id = $1 FOR NO KEY UPDATE SKIP LOCKED", rows::ORDER_SELECT);
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(id.0))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::order).transpose()
    }

    async fn put_order(&mut self, before: Option<&Order>, after: &Order) -> Result<(), StoreError> {
        let Some(before) = before else {
            return self.insert_order(after).await;
        };
        let fixed = |o: &Order| {
            (o.id, o.user, o.lines.clone(), o.seats.clone(), o.event, o.token, o.total, o.payback, o.expires_at)
        };
        if fixed(before) != fixed(after) {
            return Err(StoreError::Integrity(format!("order {} changes only its status and payment", after.id)));
        }
        // Every strategy: the state the transition moved from (status and
        // paying payment) and the version, so even a pending → paying →
        // pending round trip in between is caught.
        let done = sqlx::query(
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
        .bind(version(before.version))
        .execute(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.conflict().await) }
    }

    async fn expired_orders(&mut self, now: Timestamp, limit: usize) -> Result<Vec<OrderId>, StoreError> {
        let found = sqlx::query(
            "SELECT id FROM orders WHERE status = 'pending_payment' AND payment_id IS NULL AND expires_at_ms <= $1 \
             ORDER BY expires_at_ms, id LIMIT $2",
        )
        .bind(now.0)
        .bind(limit_i64(limit))
        .fetch_all(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        found
            .iter()
            .map(|row| Ok(OrderId(sqlx::Row::try_get::<uuid::Uuid, _>(row, "id").map_err(errors::map)?.as_u128())))
            .collect()
    }

    async fn token(&mut self, id: TokenId) -> Result<Option<QueueToken>, StoreError> {
        // A plain read under every strategy: the event row guards its tokens.
        let sql = format!("SELECT {} FROM queue_tokens WHERE id = $1", rows::TOKEN_COLUMNS);
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(id.0))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::token).transpose()
    }

    async fn put_token(&mut self, before: Option<&QueueToken>, after: &QueueToken) -> Result<(), StoreError> {
        let Some(before) = before else {
            sqlx::query(
                "INSERT INTO queue_tokens (id, event_id, user_id, seq, status, joined_at_ms, activated_at_ms, \
                 expires_at_ms, used_at_ms, version, seats_held) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
            .bind(rows::i32_of(after.seats_held)?)
            .execute(&mut *self.tx)
            .await
            .map_err(errors::map)?;
            return Ok(());
        };
        let fixed = |t: &QueueToken| (t.id, t.event, t.user, t.seq, t.joined_at);
        if fixed(before) != fixed(after) {
            return Err(StoreError::Integrity(format!("queue token {} changes only its status", after.id)));
        }
        let done = sqlx::query(
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
        .bind(rows::i32_of(after.seats_held)?)
        .execute(&mut *self.tx)
        .await
        .map_err(errors::map)?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.conflict().await) }
    }

    async fn tokens(
        &mut self,
        event: EventId,
        status: TokenStatus,
        limit: usize,
    ) -> Result<Vec<QueueToken>, StoreError> {
        let sql = format!(
            "SELECT {} FROM queue_tokens WHERE event_id = $1 AND status = $2 ORDER BY seq LIMIT $3",
            rows::TOKEN_COLUMNS
        );
        let found = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(event.0))
            .bind(rows::token_status_str(status))
            .bind(limit_i64(limit))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        found.iter().map(rows::token).collect()
    }

    async fn user_token(&mut self, event: EventId, user: UserId) -> Result<Option<QueueToken>, StoreError> {
        let sql = format!(
            "SELECT {} FROM queue_tokens WHERE event_id = $1 AND user_id = $2 ORDER BY seq DESC LIMIT 1",
            rows::TOKEN_COLUMNS
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(uuid(event.0))
            .bind(uuid(user.0))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(errors::map)?;
        row.as_ref().map(rows::token).transpose()
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
