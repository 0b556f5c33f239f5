//! The database every server instance shares: `tally-mem`'s store, reached
//! through round trips that take simulated time, and watched.
//!
//! [`SimStore`] lives outside the hosts, so a server crash loses nothing
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

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tally_core::catalog::{Event, Product, Seat, Showtime};
use tally_core::check::Snapshot;
use tally_core::idempotency::{IdemRecord, IdemScope, IdemState};
use tally_core::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, ShowtimeId, TokenId, UserId};
use tally_core::ledger::Transfer;
use tally_core::order::Order;
use tally_core::payment::Payment;
use tally_core::queue::{QueueToken, TokenStatus};
use tally_core::store::{Store, StoreError, Tx, User};
use tally_core::time::{Clock, Timestamp};
use tally_core::wallet::Wallet;
use tally_mem::{MemStore, MemTx};

use crate::clock::SimClock;
use crate::journal::{Count, Journal};
use crate::oracle::Violation;
use crate::rng::SimRng;

struct Db {
    /// The database itself, for the monitor's look at what a refused commit
    /// collided with.
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

/// The shared database. Clones share it.
#[derive(Clone)]
pub struct SimStore {
    inner: MemStore,
    db: Arc<Db>,
}

impl std::fmt::Debug for SimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStore").field("latency_max_ms", &self.db.latency_max_ms).finish_non_exhaustive()
    }
}

impl SimStore {
    pub fn new(inner: MemStore, latency_max_ms: u64, rng: SimRng, journal: Journal, clock: SimClock) -> SimStore {
        let memory = inner.clone();
        SimStore { inner, db: Arc::new(Db { memory, latency_max_ms, rng: Mutex::new(rng), journal, clock }) }
    }

    /// The store without latency or monitoring (setup and the final check).
    pub fn inner(&self) -> &MemStore {
        &self.inner
    }
}

impl Store for SimStore {
    type Tx = SimTx;

    async fn begin(&self) -> Result<SimTx, StoreError> {
        let mut tx = SimTx {
            inner: None,
            db: Arc::clone(&self.db),
            idem_writes: Vec::new(),
            key_claims: Vec::new(),
            suspended: false,
        };
        tx.pause().await;
        tx.inner = Some(self.inner.begin().await?);
        Ok(tx)
    }

    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send {
        self.inner.snapshot()
    }
}

/// One transaction on the shared database.
pub struct SimTx {
    inner: Option<MemTx>,
    db: Arc<Db>,
    /// Idempotency records this transaction writes, as loaded and as written.
    idem_writes: Vec<(Option<IdemRecord>, IdemRecord)>,
    /// Gateway payment keys this transaction claims, and for which payment.
    key_claims: Vec<(PaymentId, String)>,
    /// Set while waiting on a round trip: a drop then means the caller's
    /// future was dropped mid-flight (a cancelled request or a crash).
    suspended: bool,
}

impl std::fmt::Debug for SimTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTx").field("suspended", &self.suspended).finish_non_exhaustive()
    }
}

impl Drop for SimTx {
    fn drop(&mut self) {
        if self.suspended {
            self.db.journal.count(Count::TransactionsAbandoned, 1);
        }
    }
}

impl SimTx {
    async fn pause(&mut self) {
        if let Some(delay) = self.db.round_trip() {
            self.suspended = true;
            tokio::time::sleep(delay).await;
            self.suspended = false;
        }
    }

    fn tx(&mut self) -> &mut MemTx {
        self.inner.as_mut().expect("a transaction is open until commit or rollback")
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
                    crate::oracle::INV_IDEMPOTENCY,
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
}

impl SimTx {
    /// The monitor, for a commit the database refused: did a claim of a
    /// payment key that another payment holds reach it?
    fn check_key_claims(&self) {
        if self.key_claims.is_empty() {
            return;
        }
        let Ok(snapshot) = crate::run::now_or_never(self.db.memory.snapshot()) else { return };
        for (payment, key) in &self.key_claims {
            let holder = snapshot
                .payments
                .iter()
                .find(|p| p.id != *payment && p.gateway.as_ref().is_some_and(|a| &a.payment_key == key));
            if let Some(holder) = holder {
                self.db.journal.monitor_violation(Violation::new(
                    crate::oracle::INV_KEY_BOUND,
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

impl Tx for SimTx {
    async fn user(&mut self, id: UserId) -> Result<Option<User>, StoreError> {
        self.pause().await;
        self.tx().user(id).await
    }

    async fn user_by_key_hash(&mut self, key_hash: [u8; 32]) -> Result<Option<User>, StoreError> {
        self.pause().await;
        self.tx().user_by_key_hash(key_hash).await
    }

    async fn insert_user(&mut self, user: &User) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().insert_user(user).await
    }

    async fn wallet(&mut self, user: UserId) -> Result<Option<Wallet>, StoreError> {
        self.pause().await;
        self.tx().wallet(user).await
    }

    async fn put_wallet(&mut self, before: Option<&Wallet>, after: &Wallet) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().put_wallet(before, after).await
    }

    async fn payment(&mut self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        self.pause().await;
        self.tx().payment(id).await
    }

    async fn payment_by_key(&mut self, key: &str) -> Result<Option<PaymentId>, StoreError> {
        self.pause().await;
        self.tx().payment_by_key(key).await
    }

    async fn put_payment(&mut self, before: Option<&Payment>, after: &Payment) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().put_payment(before, after).await?;
        let had = before.and_then(|b| b.gateway.as_ref()).map(|a| a.payment_key.as_str());
        if let Some(attempt) = after.gateway.as_ref().filter(|a| Some(a.payment_key.as_str()) != had) {
            self.key_claims.push((after.id, attempt.payment_key.clone()));
        }
        Ok(())
    }

    async fn stuck_payments(&mut self, before: Timestamp, limit: usize) -> Result<Vec<Payment>, StoreError> {
        self.pause().await;
        self.tx().stuck_payments(before, limit).await
    }

    async fn append_transfers(&mut self, transfers: &[Transfer]) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().append_transfers(transfers).await
    }

    async fn wallet_ledger(&mut self, user: UserId, after_seq: u64, limit: usize) -> Result<Vec<Transfer>, StoreError> {
        self.pause().await;
        self.tx().wallet_ledger(user, after_seq, limit).await
    }

    async fn idempotency(&mut self, scope: &IdemScope) -> Result<Option<IdemRecord>, StoreError> {
        self.pause().await;
        self.tx().idempotency(scope).await
    }

    async fn idempotency_no_wait(&mut self, scope: &IdemScope) -> Result<Option<IdemRecord>, StoreError> {
        self.pause().await;
        self.tx().idempotency_no_wait(scope).await
    }

    async fn put_idempotency(&mut self, before: Option<&IdemRecord>, after: &IdemRecord) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().put_idempotency(before, after).await?;
        self.idem_writes.push((before.cloned(), after.clone()));
        Ok(())
    }

    async fn delete_idempotency(&mut self, before: &IdemRecord) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().delete_idempotency(before).await
    }

    async fn reap_idempotency(&mut self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        self.pause().await;
        self.tx().reap_idempotency(now, limit).await
    }

    async fn product(&mut self, id: ProductId) -> Result<Option<Product>, StoreError> {
        self.pause().await;
        self.tx().product(id).await
    }

    async fn put_product(&mut self, before: Option<&Product>, after: &Product) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().put_product(before, after).await
    }

    async fn event(&mut self, id: EventId) -> Result<Option<Event>, StoreError> {
        self.pause().await;
        self.tx().event(id).await
    }

    async fn put_event(&mut self, before: Option<&Event>, after: &Event) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().put_event(before, after).await
    }

    async fn insert_showtime(&mut self, showtime: &Showtime) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().insert_showtime(showtime).await
    }

    async fn showtime(&mut self, id: ShowtimeId) -> Result<Option<Showtime>, StoreError> {
        self.pause().await;
        self.tx().showtime(id).await
    }

    async fn showtimes(&mut self, event: EventId) -> Result<Vec<Showtime>, StoreError> {
        self.pause().await;
        self.tx().showtimes(event).await
    }

    async fn seats(&mut self, showtime: ShowtimeId) -> Result<Vec<Seat>, StoreError> {
        self.pause().await;
        self.tx().seats(showtime).await
    }

    async fn seat(&mut self, id: SeatId) -> Result<Option<Seat>, StoreError> {
        self.pause().await;
        self.tx().seat(id).await
    }

    async fn put_seat(&mut self, before: Option<&Seat>, after: &Seat) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().put_seat(before, after).await
    }

    async fn order(&mut self, id: OrderId) -> Result<Option<Order>, StoreError> {
        self.pause().await;
        self.tx().order(id).await
    }

    async fn order_skip_locked(&mut self, id: OrderId) -> Result<Option<Order>, StoreError> {
        self.pause().await;
        self.tx().order_skip_locked(id).await
    }

    async fn put_order(&mut self, before: Option<&Order>, after: &Order) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().put_order(before, after).await
    }

    async fn expired_orders(&mut self, now: Timestamp, limit: usize) -> Result<Vec<OrderId>, StoreError> {
        self.pause().await;
        self.tx().expired_orders(now, limit).await
    }

    async fn token(&mut self, id: TokenId) -> Result<Option<QueueToken>, StoreError> {
        self.pause().await;
        self.tx().token(id).await
    }

    async fn put_token(&mut self, before: Option<&QueueToken>, after: &QueueToken) -> Result<(), StoreError> {
        self.pause().await;
        self.tx().put_token(before, after).await
    }

    async fn tokens(
        &mut self,
        event: EventId,
        status: TokenStatus,
        limit: usize,
    ) -> Result<Vec<QueueToken>, StoreError> {
        self.pause().await;
        self.tx().tokens(event, status, limit).await
    }

    async fn user_token(&mut self, event: EventId, user: UserId) -> Result<Option<QueueToken>, StoreError> {
        self.pause().await;
        self.tx().user_token(event, user).await
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        self.pause().await;
        let inner = self.inner.take().expect("commit of an open transaction");
        let result = inner.commit().await;
        if matches!(result, Ok(()) | Err(StoreError::Ambiguous)) {
            self.check_admissions();
        }
        if result == Err(StoreError::Conflict) {
            self.check_key_claims();
        }
        // The reply's way back: a caller cancelled (or crashed) here never
        // learns that its commit happened.
        self.pause().await;
        result
    }

    async fn rollback(mut self) {
        if let Some(inner) = self.inner.take() {
            inner.rollback().await;
        }
    }
}
