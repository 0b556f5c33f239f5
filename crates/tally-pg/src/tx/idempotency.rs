//! Idempotency records: the load, admission's no-wait load, the write, the
//! delete that frees a key, and the reaper.
//!
//! Every write, under every strategy, is guarded by the loaded version: a
//! record that moved on since it was loaded (another request's lease, a
//! completion, a delete) is a conflict, and the caller decides again.

use sqlx::AssertSqlSafe;
use tally_core::idempotency::{IdemRecord, IdemScope, IdemState};
use tally_core::mutant;
use tally_core::store::{Put, StoreError};
use tally_core::time::Timestamp;

use super::{PgTx, Statement, limit_i64};
use crate::errors;
use crate::rows::{self, uuid, version};

pub(super) async fn record(tx: &mut PgTx, scope: &IdemScope) -> Result<Option<IdemRecord>, StoreError> {
    let sql = format!(
        "SELECT {} FROM idempotency_keys WHERE user_id = $1 AND key = $2{}",
        rows::IDEM_COLUMNS,
        if tx.locks_idempotency_rows() { " FOR UPDATE" } else { "" }
    );
    tx.fetch_optional(sqlx::query(AssertSqlSafe(sql)).bind(uuid(scope.user.0)).bind(scope.key.as_str()), rows::idem)
        .await
}

/// Admission's lock clause: under the pessimistic and advisory strategies
/// a key whose row another transaction holds is a key in flight, answered at
/// once (`Busy`) rather than waited for.
fn no_wait_lock(tx: &PgTx) -> &'static str {
    match (tx.locks_idempotency_rows(), mutant::active("pg_nowait_waits")) {
        (true, false) => " FOR UPDATE NOWAIT",
        // The mutant: a duplicate in flight waits for the key's row.
        (true, true) => " FOR UPDATE",
        (false, _) => "",
    }
}

/// Admission's loads have their own error mapping (NOWAIT), so they do not
/// go through `fetch_optional`/`fetch_all`.
fn no_wait_error(error: sqlx::Error) -> StoreError {
    match &error {
        // lock_not_available: NOWAIT found a row locked.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03") => StoreError::Busy,
        _ => errors::map(error),
    }
}

/// Admission's load (see [`no_wait_lock`]).
pub(super) async fn record_no_wait(tx: &mut PgTx, scope: &IdemScope) -> Result<Option<IdemRecord>, StoreError> {
    let sql = format!(
        "SELECT {} FROM idempotency_keys WHERE user_id = $1 AND key = $2{}",
        rows::IDEM_COLUMNS,
        no_wait_lock(tx)
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(uuid(scope.user.0))
        .bind(scope.key.as_str())
        .fetch_optional(&mut *tx.tx)
        .await
        .map_err(no_wait_error)?;
    row.as_ref().map(rows::idem).transpose()
}

/// The columns a record's write binds, one array each (see `column`).
struct Columns {
    user_id: Vec<uuid::Uuid>,
    key: Vec<String>,
    fingerprint: Vec<Vec<u8>>,
    state: Vec<&'static str>,
    lease: Vec<Option<uuid::Uuid>>,
    lease_expires: Vec<Option<i64>>,
    status: Vec<Option<i32>>,
    content_type: Vec<Option<String>>,
    body: Vec<Option<Vec<u8>>>,
    op: Vec<Option<uuid::Uuid>>,
    created_at: Vec<i64>,
    expires_at: Vec<i64>,
    version: Vec<i64>,
}

impl Columns {
    fn of(records: &[&IdemRecord]) -> Columns {
        let mut c = Columns {
            user_id: Vec::new(),
            key: Vec::new(),
            fingerprint: Vec::new(),
            state: Vec::new(),
            lease: Vec::new(),
            lease_expires: Vec::new(),
            status: Vec::new(),
            content_type: Vec::new(),
            body: Vec::new(),
            op: Vec::new(),
            created_at: Vec::new(),
            expires_at: Vec::new(),
            version: Vec::new(),
        };
        for record in records {
            let (state, lease, lease_expires, status, content_type, body, op) = match &record.state {
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
            c.user_id.push(uuid(record.scope.user.0));
            c.key.push(record.scope.key.as_str().to_owned());
            c.fingerprint.push(record.fingerprint.0.to_vec());
            c.state.push(state);
            c.lease.push(lease);
            c.lease_expires.push(lease_expires);
            c.status.push(status);
            c.content_type.push(content_type);
            c.body.push(body);
            c.op.push(op);
            c.created_at.push(record.created_at.0);
            c.expires_at.push(record.expires_at.0);
            c.version.push(version(record.version));
        }
        c
    }

    /// Binds `$1` to `$13`, in the order of `rows::IDEM_COLUMNS`.
    fn bind(self, statement: Statement) -> Statement {
        statement
            .bind(self.user_id)
            .bind(self.key)
            .bind(self.fingerprint)
            .bind(self.state)
            .bind(self.lease)
            .bind(self.lease_expires)
            .bind(self.status)
            .bind(self.content_type)
            .bind(self.body)
            .bind(self.op)
            .bind(self.created_at)
            .bind(self.expires_at)
            .bind(self.version)
    }
}

/// The record's columns as `UNNEST` expands them (`$1` to `$13`).
const UNNEST_RECORDS: &str = "UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::text[], $5::uuid[], $6::bigint[], \
     $7::integer[], $8::text[], $9::bytea[], $10::uuid[], $11::bigint[], $12::bigint[], $13::bigint[]";

pub(super) async fn put(tx: &mut PgTx, before: Option<&IdemRecord>, after: &IdemRecord) -> Result<(), StoreError> {
    put_many(tx, &[Put { before: before.cloned(), after: after.clone() }]).await
}

/// Many writes (one alone is a batch of one): the new records in one
/// `INSERT … SELECT FROM UNNEST`, the changed ones in one `UPDATE … FROM
/// UNNEST` guarded by each one's loaded version.
pub(super) async fn put_many(tx: &mut PgTx, puts: &[Put<IdemRecord>]) -> Result<(), StoreError> {
    let inserts: Vec<&IdemRecord> = puts.iter().filter(|p| p.before.is_none()).map(|p| &p.after).collect();
    let (updates, before): (Vec<&IdemRecord>, Vec<i64>) =
        puts.iter().filter_map(|p| Some((&p.after, version(p.before.as_ref()?.version)))).unzip();
    if !inserts.is_empty() {
        let sql = format!("INSERT INTO idempotency_keys ({}) SELECT * FROM {UNNEST_RECORDS})", rows::IDEM_COLUMNS);
        tx.insert(Columns::of(&inserts).bind(sqlx::query(AssertSqlSafe(sql)))).await?;
    }
    if !updates.is_empty() {
        let sql = format!(
            "UPDATE idempotency_keys AS k SET fingerprint = v.fingerprint, state = v.state, lease = v.lease, \
             lease_expires_at_ms = v.lease_expires_at_ms, response_status = v.response_status, \
             response_content_type = v.response_content_type, response_body = v.response_body, op_id = v.op_id, \
             created_at_ms = v.created_at_ms, expires_at_ms = v.expires_at_ms, version = v.version \
             FROM {UNNEST_RECORDS}, $14::bigint[]) AS v({}, before_version) \
             WHERE k.user_id = v.user_id AND k.key = v.key AND k.version = v.before_version",
            rows::IDEM_COLUMNS
        );
        let rows = updates.len();
        let statement = Columns::of(&updates).bind(sqlx::query(AssertSqlSafe(sql))).bind(before);
        tx.guarded_updates(statement, rows).await?;
    }
    Ok(())
}

pub(super) async fn delete(tx: &mut PgTx, before: &IdemRecord) -> Result<(), StoreError> {
    tx.guarded_update(
        sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND version = $3")
            .bind(uuid(before.scope.user.0))
            .bind(before.scope.key.as_str())
            .bind(version(before.version)),
    )
    .await
}

pub(super) async fn reap(tx: &mut PgTx, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
    // SKIP LOCKED: several instances reap at once without queueing on
    // each other or on a request that holds a key.
    let reaped = tx
        .execute(
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE (user_id, key) IN ( \
                   SELECT user_id, key FROM idempotency_keys WHERE expires_at_ms <= $1 \
                   ORDER BY expires_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(now.0)
            .bind(limit_i64(limit)),
        )
        .await?;
    Ok(usize::try_from(reaped).unwrap_or(usize::MAX))
}
