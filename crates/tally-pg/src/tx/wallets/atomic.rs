//! The atomic strategy's wallet write: deferred to commit, then one
//! conditional `UPDATE … SET balance = balance + $delta WHERE <guards>` for
//! each wallet write, and the ledger lines re-based on the row it returned.
//!
//! Why deferred: under this strategy nothing is locked, so the wallet a use
//! case decided on may have changed since it was loaded. The update's guards
//! need every balance the decision passed through, which are the balances
//! after its wallet-side ledger lines, and the core appends those lines
//! after `put_wallet`. The lines in turn need the balance and position
//! (`seq`) the row really had, known only once the row has been changed. So
//! `put_wallet` and `append_transfers` only record here ([`Deferred`]), and
//! `commit` writes everything ([`flush`]): each wallet as its change (deltas,
//! not the decided values), under guards that restate `Wallet::apply` on the
//! current row, then every line, re-based.
//!
//! Why that is still right on a stale read: the guards are the decision's own
//! checks, made again by the database on the row as it is now. If they hold,
//! the same movement is valid on the current row too, and the deltas apply it
//! there; if one fails (0 rows), the write is a `Conflict` and the use case
//! reloads and decides again, and refuses then if it must.
//!
//! This is where SQL restates the wallet's rules (`Wallet::apply`); a change
//! to them must change the guards here too. The conformance cases
//! `spending_windows_never_move_backwards` and
//! `the_ceiling_counts_held_paybacks_and_caps_every_balance` pin the two to
//! each other on every strategy. The other atomic writes are
//! simpler and stay with their records: a product's stock as a delta
//! (`catalog`), a payment, seat or order on the state it moved from.

use sqlx::AssertSqlSafe;
use tally_core::ids::UserId;
use tally_core::ledger::Transfer;
use tally_core::money::Money;
use tally_core::mutant;
use tally_core::store::StoreError;
use tally_core::wallet::Wallet;

use super::super::{PgTx, ledger};
use crate::errors;
use crate::rows::{uuid, version};

/// What waits for commit under the atomic strategy (always empty under the
/// other two).
#[derive(Debug, Default)]
pub(in crate::tx) struct Deferred {
    /// Each wallet write as (loaded, decided), in the order they were made.
    wallets: Vec<(Wallet, Wallet)>,
    /// Every ledger line of the transaction, in the order it was appended;
    /// the wallet-side ones are re-based before they are inserted.
    transfers: Vec<Transfer>,
}

impl Deferred {
    /// The newest decided state of `user`'s wallet, if this transaction
    /// wrote it: a second load in the same use case reads its own write.
    pub(in crate::tx) fn wallet(&self, user: UserId) -> Option<&Wallet> {
        self.wallets.iter().rev().find(|(_, w)| w.user == user).map(|(_, after)| after)
    }

    pub(in crate::tx) fn put_wallet(&mut self, before: &Wallet, after: &Wallet) {
        self.wallets.push((before.clone(), after.clone()));
    }

    pub(in crate::tx) fn append_transfers(&mut self, transfers: &[Transfer]) {
        self.transfers.extend_from_slice(transfers);
    }
}

/// Writes what was deferred, at commit: every wallet first (which re-bases
/// its lines), then every line.
pub(in crate::tx) async fn flush(tx: &mut PgTx) -> Result<(), StoreError> {
    let wallets = std::mem::take(&mut tx.deferred.wallets);
    for (before, after) in &wallets {
        apply(tx, before, after).await?;
    }
    let transfers = std::mem::take(&mut tx.deferred.transfers);
    ledger::insert_many(tx, &transfers).await
}

/// One wallet write as the conditional update binds it: the change, relative
/// to the row the decision loaded, and how far the decision strayed from it.
struct Delta {
    /// The balance's change.
    balance: i64,
    /// How far below its starting balance the decision went at its lowest
    /// point: the current balance must be at least this, so that every
    /// intermediate balance stays `>= 0`.
    dip: i64,
    /// How far above its starting balance it went at its highest point: the
    /// current balance plus this (and every held payback) must stay under
    /// the ceiling.
    rise: i64,
    /// What the decision paid in its day and month windows, and the windows
    /// it counted them in.
    paid_day: i64,
    day: i64,
    paid_month: i64,
    month: i64,
    /// How many lines the decision booked on the wallet.
    entries: i64,
    /// The change of the held paybacks.
    held: i64,
}

impl Delta {
    /// The write from `before` to `after`, passing through the balances after
    /// each of the wallet's lines (`line_balances`).
    fn of(before: &Wallet, after: &Wallet, line_balances: impl Iterator<Item = i64>) -> Delta {
        let start = before.balance.minor_units();
        let end = after.balance.minor_units();
        let (lowest, highest) = line_balances.fold((end, end), |(low, high), b| (low.min(b), high.max(b)));
        // What this decision paid in its window. The core moves a window
        // only forwards, and restarts its count only when it moved.
        let paid_in = |rolled: bool, before: Money, after: Money| {
            if rolled { after.minor_units() } else { after.minor_units() - before.minor_units() }
        };
        Delta {
            balance: end - start,
            dip: start - lowest,
            rise: highest - start,
            paid_day: paid_in(after.day > before.day, before.spent_day, after.spent_day),
            day: after.day,
            paid_month: paid_in(after.month > before.month, before.spent_month, after.spent_month),
            month: after.month,
            entries: version(after.entry_count - before.entry_count),
            // The core changes a payback hold before any line it books (a
            // confirm releases the hold, then credits the payback; taking a
            // hold books nothing), so every point of the decision counts the
            // hold as it ends.
            held: after.payback_held.minor_units() - before.payback_held.minor_units(),
        }
    }
}

/// The atomic write of one wallet: its change as deltas, guarded by what
/// the decision checked, then its ledger lines re-based on the result.
///
/// The guards restate `Wallet::apply` on the current row: the balance
/// never below zero; the balance with every held payback never above the
/// ceiling (the wallet's maximum, never above `Money::BALANCE_LIMIT`);
/// the limits counted in the newest window, which never moves backwards.
/// The conditional write itself (see [`apply`]).
const APPLY: &str = "UPDATE wallets SET \
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
         RETURNING balance, entry_count";

async fn apply(tx: &mut PgTx, before: &Wallet, after: &Wallet) -> Result<(), StoreError> {
    let user = after.user;
    let lines: Vec<usize> = (0..tx.deferred.transfers.len())
        .filter(|i| tx.deferred.transfers[*i].wallet.is_some_and(|side| side.user == user))
        .collect();
    let delta = Delta::of(
        before,
        after,
        lines.iter().map(|i| tx.deferred.transfers[*i].wallet.expect("filtered").balance_after.minor_units()),
    );
    let sql = if mutant::active("pg_drop_balance_guard") {
        // The mutant: the lowest balance the decision passed through is no
        // longer required of the current row.
        APPLY.replace("AND balance >= $3", "AND $3::bigint IS NOT NULL")
    } else {
        APPLY.to_owned()
    };
    let statement = sqlx::query(AssertSqlSafe(sql))
        .bind(uuid(user.0))
        .bind(delta.balance)
        .bind(delta.dip)
        .bind(delta.rise)
        .bind(delta.paid_day)
        .bind(delta.day)
        .bind(delta.paid_month)
        .bind(delta.month)
        .bind(delta.entries)
        .bind(delta.held)
        .bind(Money::BALANCE_LIMIT.minor_units());
    let returned = tx
        .fetch_optional(statement, |row| {
            let balance: i64 = sqlx::Row::try_get(row, "balance").map_err(errors::map)?;
            let entries: i64 = sqlx::Row::try_get(row, "entry_count").map_err(errors::map)?;
            Ok((balance, entries))
        })
        .await?;
    let Some((balance, entries)) = returned else {
        // A guard failed on the current row: decide again on it.
        return Err(tx.conflict().await);
    };
    // The decision computed its lines from the row it loaded; the row it
    // changed may have been further along. Shift each line by the difference.
    let balance_shift = balance - after.balance.minor_units();
    let seq_shift = entries - version(after.entry_count);
    for i in lines {
        let side = tx.deferred.transfers[i].wallet.as_mut().expect("filtered");
        side.balance_after = Money::new(side.balance_after.minor_units() + balance_shift);
        side.seq = u64::try_from(i64::try_from(side.seq).expect("seq fits") + seq_shift).expect("seq stays positive");
    }
    Ok(())
}
