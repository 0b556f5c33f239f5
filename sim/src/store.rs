//! The database every server instance shares: `tally-mem`'s store, reached
//! through round trips that take simulated time, and watched.
//!
//! The database lives outside the hosts, so a server crash loses nothing
//! committed (what a process holds in memory — its open transaction, its
//! lock guards, its tasks — dies with it, as a connection to PostgreSQL
//! would). Each statement first waits a seeded *round trip* (0 to a few
//! milliseconds), and a commit waits before and after it is applied: that is
//! what lets requests interleave between statements as they do against a
//! real database, and what makes "committed, but the caller never heard"
//! (a crash or a cancelled request during the return trip) possible.
//!
//! The monitor checks one rule on every committed idempotency write: an
//! admission may replace a record only once that record's lease (in flight)
//! or life (completed) is over (SPEC.md: the same key while the first
//! request is in flight → 409). And one on every commit the database refuses
//! as a conflict: it must not be a gateway payment key claimed twice. The
//! database's unique constraint on payment keys is the backstop for backends
//! without the lock manager; here every claim is checked under the key's
//! lock, so the use case must refuse a claimed key itself (409
//! `payment_key_in_use`) before the constraint ever fires. It also counts
//! lease takeovers and transactions abandoned mid-flight.
//!
//! All of it is `tally-mem`'s statement hook ([`tally_mem::TxHook`]): the
//! servers' handle on the database ([`watched`]) runs a `Watch` around every
//! statement of every transaction.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tally_core::idempotency::{IdemRecord, IdemState};
use tally_core::ids::PaymentId;
use tally_core::store::{Store, StoreError};
use tally_core::time::Clock;
use tally_mem::{HookFuture, MemStore, Statement, TxHook};

use crate::clock::SimClock;
use crate::journal::{Count, Journal};
use crate::rng::SimRng;
use crate::shared::{self, Violation};

/// What every transaction's `Watch` shares.
struct Db {
    /// The database itself, unwatched, for the monitor's look at what a
    /// refused commit collided with.
    memory: MemStore,
    latency_max_ms: u64,
    rng: Mutex<SimRng>,
    journal: Journal,
    clock: SimClock,
}

impl Db {
    /// One round trip's delay; `None` when the database is instant.
    fn round_trip(&self) -> Option<Duration> {
        if self.latency_max_ms == 0 {
            return None;
        }
        let millis = self.rng.lock().unwrap_or_else(PoisonError::into_inner).range(0, self.latency_max_ms);
        (millis > 0).then(|| Duration::from_millis(millis))
    }
}

/// The servers' handle on `memory`'s database: every statement first waits
/// a seeded round trip of up to `latency_max_ms`, and every commit is
/// watched. `memory` itself stays unwatched (setup and the final check).
pub fn watched(memory: &MemStore, latency_max_ms: u64, rng: SimRng, journal: Journal, clock: SimClock) -> MemStore {
    let db = Arc::new(Db { memory: memory.clone(), latency_max_ms, rng: Mutex::new(rng), journal, clock });
    memory.with_statement_hook(Arc::new(move || Box::new(Watch::new(Arc::clone(&db))) as Box<dyn TxHook>))
}

/// One transaction's round trips and monitor.
struct Watch {
    db: Arc<Db>,
    /// Idempotency records this transaction writes, as loaded and as written.
    idem_writes: Vec<(Option<IdemRecord>, IdemRecord)>,
    /// Gateway payment keys this transaction claims, and for which payment.
    key_claims: Vec<(PaymentId, String)>,
    /// Set while waiting on a round trip: a drop then means the caller's
    /// future was dropped mid-flight (a cancelled request or a crash).
    suspended: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.suspended {
            self.db.journal.count(Count::TransactionsAbandoned, 1);
        }
    }
}

impl TxHook for Watch {
    fn before(&mut self, statement: Statement<'_>) -> HookFuture<'_, Result<(), StoreError>> {
        match statement {
            Statement::PutPayment { before, after } => {
                let had = before.and_then(|b| b.gateway.as_ref()).map(|a| a.payment_key.as_str());
                if let Some(attempt) = after.gateway.as_ref().filter(|a| Some(a.payment_key.as_str()) != had) {
                    self.key_claims.push((after.id, attempt.payment_key.clone()));
                }
            }
            Statement::PutIdempotency { before, after } => self.idem_writes.push((before.cloned(), after.clone())),
            _ => {}
        }
        Box::pin(async move {
            self.pause().await;
            Ok(())
        })
    }

    fn committed(&mut self, result: &Result<(), StoreError>) -> HookFuture<'_, ()> {
        if matches!(result, Ok(()) | Err(StoreError::Ambiguous)) {
            self.check_admissions();
        }
        if *result == Err(StoreError::Conflict) {
            self.check_key_claims();
        }
        // The reply's way back: a caller cancelled (or crashed) here never
        // learns that its commit happened.
        Box::pin(self.pause())
    }
}

impl Watch {
    fn new(db: Arc<Db>) -> Watch {
        Watch { db, idem_writes: Vec::new(), key_claims: Vec::new(), suspended: false }
    }

    async fn pause(&mut self) {
        if let Some(delay) = self.db.round_trip() {
            self.suspended = true;
            tokio::time::sleep(delay).await;
            self.suspended = false;
        }
    }
    /// The monitor, for a commit that took effect.
    fn check_admissions(&self) {
        let now = self.db.clock.now();
        for (before, after) in &self.idem_writes {
            let (Some(before), IdemState::InFlight { lease, .. }) = (before, &after.state) else { continue };
            let (live, what) = match &before.state {
                IdemState::InFlight { lease: held, .. } if held == lease => continue,
                IdemState::InFlight { lease_expires_at, .. } => (*lease_expires_at > now, "in flight"),
                IdemState::Completed { .. } => (before.expires_at > now, "completed"),
            };
            if live {
                self.db.journal.monitor_violation(Violation::new(
                    shared::INV_IDEMPOTENCY,
                    "admission never replaces a live record",
                    format!(
                        "key {:?} of user {}: a new admission replaced a live {what} record (lease or life ends at {}, now {})",
                        after.scope.key.as_str(),
                        after.scope.user,
                        match &before.state {
                            IdemState::InFlight { lease_expires_at, .. } => lease_expires_at.0,
                            IdemState::Completed { .. } => before.expires_at.0,
                        },
                        now.0
                    ),
                ));
            } else if matches!(before.state, IdemState::InFlight { .. }) {
                self.db.journal.count(Count::LeaseTakeovers, 1);
                self.db.journal.event("db", format!("lease of key {:?} taken over", after.scope.key.as_str()));
            }
        }
    }

    /// The monitor, for a commit the database refused: did a claim of a
    /// payment key that another payment holds reach it?
    fn check_key_claims(&self) {
        if self.key_claims.is_empty() {
            return;
        }
        let Ok(snapshot) = shared::now_or_never(self.db.memory.snapshot()) else { return };
        for (payment, key) in &self.key_claims {
            let holder = snapshot
                .payments
                .iter()
                .find(|p| p.id != *payment && p.gateway.as_ref().is_some_and(|a| &a.payment_key == key));
            if let Some(holder) = holder {
                self.db.journal.monitor_violation(Violation::new(
                    shared::INV_KEY_BOUND,
                    "a claimed payment key is refused by the use case, never by the database's unique constraint",
                    format!(
                        "payment {payment} tried to claim {key}, which payment {} holds: the commit reached the unique constraint",
                        holder.id
                    ),
                ));
            }
        }
    }
}
