//! The read set of the strategies that load without locks (optimistic,
//! atomic): every versioned row a transaction loaded, with the version it
//! loaded, so that a refusal can be checked against the rows as they are
//! now before it is answered ([`unchanged`], the core's
//! `Tx::reads_unchanged`). The other strategies load under locks (row
//! locks, or the use case's advisory or Redis locks) and note nothing.
//!
//! The check is one statement over every table read: a row still at its
//! loaded version, or last written by this very transaction (its `xmin` is
//! ours: the write's own guard already checked it), is unchanged.

use std::collections::BTreeMap;

use sqlx::AssertSqlSafe;
use tally_core::catalog::{Event, Product, Seat};
use tally_core::order::Order;
use tally_core::payment::Payment;
use tally_core::queue::QueueToken;
use tally_core::store::StoreError;
use tally_core::wallet::Wallet;

use super::PgTx;
use crate::rows::{uuid, version};
use crate::{Strategy, errors};

/// A table whose rows carry a version, and the column that names a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Table {
    Wallets,
    Payments,
    Orders,
    Products,
    Events,
    Seats,
    Tokens,
}

impl Table {
    const fn name_and_key(self) -> (&'static str, &'static str) {
        match self {
            Table::Wallets => ("wallets", "user_id"),
            Table::Payments => ("payments", "id"),
            Table::Orders => ("orders", "id"),
            Table::Products => ("products", "id"),
            Table::Events => ("events", "id"),
            Table::Seats => ("seats", "id"),
            Table::Tokens => ("queue_tokens", "id"),
        }
    }
}

/// A record loaded from a versioned row.
pub(super) trait Versioned {
    const TABLE: Table;
    fn row(&self) -> u128;
    fn row_version(&self) -> u64;
}

macro_rules! versioned {
    ($($record:ty: $table:ident by $key:ident;)*) => {$(
        impl Versioned for $record {
            const TABLE: Table = Table::$table;
            fn row(&self) -> u128 {
                self.$key.0
            }
            fn row_version(&self) -> u64 {
                self.version
            }
        }
    )*};
}

versioned! {
    Wallet: Wallets by user;
    Payment: Payments by id;
    Order: Orders by id;
    Product: Products by id;
    Event: Events by id;
    Seat: Seats by id;
    QueueToken: Tokens by id;
}

/// Every versioned row loaded, with the version first loaded: a row loaded
/// twice at two versions was already read torn, and the first is what the
/// check compares.
#[derive(Debug, Default)]
pub(super) struct Reads {
    rows: BTreeMap<(Table, u128), u64>,
}

/// Most rows a read set holds: a group commit's preload (every record of
/// up to `BATCH_MAX_LIMIT` requests) and a little more.
const READS_MAX: usize = 8_192;

impl PgTx {
    /// Whether this strategy loads without locks, so its refusals need
    /// their reads checked.
    fn notes_reads(&self) -> bool {
        matches!(self.config.strategy, Strategy::Optimistic | Strategy::Atomic)
    }

    /// Notes a loaded record (under a strategy that loads without locks).
    pub(super) fn noted<T: Versioned>(&mut self, found: Option<T>) -> Option<T> {
        if let Some(record) = &found {
            self.note(record);
        }
        found
    }

    /// Notes every loaded record.
    pub(super) fn noted_all<T: Versioned>(&mut self, found: Vec<T>) -> Vec<T> {
        for record in &found {
            self.note(record);
        }
        found
    }

    fn note<T: Versioned>(&mut self, record: &T) {
        if !self.notes_reads() {
            return;
        }
        assert!(self.reads.rows.len() < READS_MAX, "a transaction read more than {READS_MAX} rows");
        self.reads.rows.entry((T::TABLE, record.row())).or_insert(record.row_version());
    }
}

/// `Ok` if every noted row is still at its loaded version (or was written
/// by this transaction since), else `Conflict`.
pub(super) async fn unchanged(tx: &mut PgTx) -> Result<(), StoreError> {
    if tx.reads.rows.is_empty() {
        return Ok(());
    }
    let mut tables: BTreeMap<Table, (Vec<uuid::Uuid>, Vec<i64>)> = BTreeMap::new();
    for (&(table, row), &loaded) in &tx.reads.rows {
        let (rows, versions) = tables.entry(table).or_default();
        rows.push(uuid(row));
        versions.push(version(loaded));
    }
    let ours = "pg_current_xact_id_if_assigned()::xid";
    let parts: Vec<String> = tables
        .keys()
        .enumerate()
        .map(|(i, table)| {
            let (name, key) = table.name_and_key();
            let (rows, versions) = (2 * i + 1, 2 * i + 2);
            format!(
                "SELECT count(*) AS n FROM {name} AS t JOIN UNNEST(${rows}::uuid[], ${versions}::bigint[]) AS r(id, v) \
                 ON t.{key} = r.id WHERE t.version = r.v OR t.xmin = {ours}"
            )
        })
        .collect();
    let sql = format!("SELECT COALESCE(sum(n), 0)::bigint FROM ({}) AS unchanged", parts.join(" UNION ALL "));
    let mut statement = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql));
    for (rows, versions) in tables.into_values() {
        statement = statement.bind(rows).bind(versions);
    }
    let still = statement.fetch_one(&mut *tx.tx).await.map_err(errors::map)?;
    let read = i64::try_from(tx.reads.rows.len()).expect("bounded by READS_MAX");
    debug_assert!(still <= read, "each noted row matches at most once");
    if still == read { Ok(()) } else { Err(errors::conflict()) }
}
