//! The checks: the bank check while the run goes on (the core's invariant
//! checker on REPEATABLE READ snapshots of the live database: balances,
//! ledgers, money conservation, stock and seats always agree), and at the
//! end the simulation's oracle over the recorded history, the final
//! snapshot and the fake gateway's books.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tally_core::check::Snapshot;
use tally_core::store::Store;
use tally_core::time::Timestamp;
use tally_pg::PgStore;
use tally_sim::catalogue::Catalogue;
use tally_sim::journal::Exchange;
use tally_sim::oracle::{self, Evidence, Violation};

use crate::deploy::{Database, direct_store};

/// The bank check's name in a violation.
pub const BANK_CHECK: &str = "bank check: the invariant checker on a live snapshot";

/// How often the bank check reads the database while the run goes on.
const BANK_EVERY: Duration = Duration::from_millis(500);

/// The bank check's findings and how many snapshots it judged.
#[derive(Debug, Default)]
pub struct Bank {
    pub snapshots: AtomicU64,
    pub violations: std::sync::Mutex<Vec<Violation>>,
}

/// Reads and judges live snapshots until `done`. A read that fails (the
/// database is being killed) is skipped: the next one will do. The servers'
/// clocks lag by up to `skew_max_ms`, and the judgement allows for it as the
/// final one does: a lagging server stamps a queue promotion up to the lag
/// early (CI, seed 1782989557: instances 300 and 478 ms behind, a token
/// promoted "20 ms before" its slot was freed).
pub async fn bank(database: Arc<Database>, name: String, bank: Arc<Bank>, skew_max_ms: i64, done: Arc<AtomicBool>) {
    while !done.load(Ordering::Relaxed) {
        tokio::time::sleep(BANK_EVERY).await;
        // A fresh pool each time: PostgreSQL's socket moves when it restarts.
        let Ok(store) = direct_store(&database, &name) else { continue };
        let Ok(Ok(snapshot)) = tokio::time::timeout(Duration::from_secs(5), store.snapshot()).await else {
            continue;
        };
        bank.snapshots.fetch_add(1, Ordering::Relaxed);
        let found: Vec<Violation> = oracle::judge_snapshot(&snapshot, skew_max_ms)
            .into_iter()
            .map(|v| Violation { check: BANK_CHECK, ..v })
            .collect();
        if !found.is_empty() {
            bank.violations.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(found);
        }
        store.pool().close().await;
    }
}

/// One snapshot through a fresh direct connection.
pub async fn snapshot(database: &Database, name: &str) -> Result<Snapshot, String> {
    let store: PgStore = direct_store(database, name).map_err(|e| e.to_string())?;
    let snapshot = store.snapshot().await.map_err(|e| e.to_string());
    store.pool().close().await;
    snapshot
}

/// What the final judgement reads.
#[derive(Debug)]
pub struct Final<'a> {
    pub snapshot: &'a Snapshot,
    pub exchanges: &'a [Exchange],
    pub gateway: &'a tally_gateway::FakeGateway,
    pub catalogue: &'a Catalogue,
    pub now: Timestamp,
    pub skew_max_ms: i64,
}

/// The simulation's oracle over a real run. Confirms are counted at the
/// gateway only (our servers are separate processes, so the sender's count
/// the simulation keeps is not available); no other merchant charges.
pub fn judge(evidence: &Final<'_>) -> Vec<Violation> {
    let none = BTreeMap::new();
    oracle::judge(&Evidence {
        snapshot: evidence.snapshot,
        exchanges: evidence.exchanges,
        gateway: evidence.gateway,
        catalogue: evidence.catalogue,
        now: evidence.now,
        confirms_by_order: &none,
        confirms_by_key: &none,
        foreign_confirms: &none,
        skew_max_ms: evidence.skew_max_ms,
    })
}
