//! Fencing tokens, checked by PostgreSQL: the claim a transaction makes as
//! it begins, for every key of its lock grant, under any strategy, whenever
//! the lock manager handed tokens (`Store::begin_locked`'s `fences`; only a
//! lock manager with leases does, the redis strategy's).
//!
//! The table `lock_fences(key, token)` keeps, per lock key, the largest token
//! any transaction has claimed. The claim is one statement: an upsert of all
//! the grant's `(key, token)` pairs that raises a row's token only where the
//! stored one is not larger. Every pair must land; one that did not (a
//! later grant of that key already claimed) refuses the whole transaction
//! with `StoreError::Fenced`, before it has read anything.
//!
//! Why at begin, inside the transaction, and not as a guard on each write
//! (`UPDATE … WHERE fence < $token`): the claimed row stays locked until
//! this transaction ends. So
//!
//! - a holder whose lease ran out *before* its transaction began (a pause
//!   between the grant and `begin_locked`) meets the later holder's larger
//!   token and is refused: it has read nothing and writes nothing;
//! - a holder whose lease runs out *mid*-transaction still holds its fence
//!   rows: the later holder's claim waits for it to end (bounded by the
//!   connection's `lock_timeout`), then reads what it wrote. PostgreSQL
//!   serialises the two, whatever the lock service believed.
//!
//! A per-write guard (`UPDATE … SET fence = $token WHERE fence < $token`)
//! orders the *writes* by token but not a read against a write: the new
//! holder (token 2) reads balance 100; the zombie (token 1), which read 100
//! too, writes 110 (the row's fence was 0) and commits; the new holder
//! writes 110 (the row's fence is 1 < 2). The zombie's +10 is lost, and
//! nothing was refused. Claiming at begin makes a holder's read and write a
//! unit the next holder cannot split.
//!
//! Under the redis strategy loads take no row locks: Redis is what keeps
//! holders apart, and this claim is what keeps that safe when a lease ends
//! early. Writes still carry the version check every strategy's writes do,
//! a second line behind both.
//!
//! Rows are claimed in the grant's order (the global lock order), so two
//! claimers of overlapping keys cannot wait on each other in a cycle.

use tally_core::mutant;
use tally_core::store::{Fences, StoreError};

use super::PgTx;

/// Claims `fences` for the rest of `tx`; `Fenced` if any key was already
/// claimed with a larger token. Empty fences claim nothing.
pub(crate) async fn claim(tx: &mut PgTx, fences: &Fences) -> Result<(), StoreError> {
    // The mutant: the claim is skipped, so nothing stops a holder whose lease
    // ran out (the fencing tests must catch it).
    if fences.is_empty() || mutant::active("pg_skip_fence_claim") {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(fences.tokens().len());
    let mut tokens = Vec::with_capacity(fences.tokens().len());
    for (key, token) in fences.tokens() {
        keys.push(key.name());
        tokens.push(
            i64::try_from(*token).map_err(|_| StoreError::Integrity(format!("fencing token {token} above bigint")))?,
        );
    }
    let wanted = u64::try_from(keys.len()).expect("a lock set is bounded");
    // `unnest` yields the arrays in their order, so rows are inserted (and
    // locked) in the grant's order. A conflicting row whose token is larger
    // is locked but not updated, and so not counted.
    let statement = sqlx::query(
        "INSERT INTO lock_fences (key, token) SELECT * FROM unnest($1::text[], $2::bigint[]) \
         ON CONFLICT (key) DO UPDATE SET token = EXCLUDED.token WHERE lock_fences.token <= EXCLUDED.token",
    )
    .bind(keys)
    .bind(tokens);
    if tx.execute(statement).await? == wanted { Ok(()) } else { Err(StoreError::Fenced) }
}
