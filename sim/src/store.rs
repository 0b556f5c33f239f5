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
//! Zombies (issue 14, item 3) happen here too: at its scheduled time, one
//! server's next transaction that holds a lock grant stalls at `COMMIT` for
//! longer than the lock table's lease (the process paused), and then goes
//! on. Meanwhile the lease ends and another request is granted the same
//! keys; the store's fence check must refuse the zombie's commit. The
//! monitor counts zombies, and what became of their commits.
//!
//! All of it is `tally-mem`'s statement hook ([`tally_mem::TxHook`]): each
//! server's handle on the database ([`Database::handle`]) runs a `Watch`
//! around every statement of every transaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tally_core::idempotency::{IdemRecord, IdemState};
use tally_core::ids::PaymentId;
use tally_core::store::{Store, StoreError};
use tally_core::time::Clock;
use tally_mem::{HookFuture, MemStore, Statement, TxHook};

use crate::clock::SimClock;
use crate::journal::{Count, Journal};
use crate::plan::DbFaults;
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
    /// The database's own faults, and whether they are on (the quiet phase
    /// turns them off).
    faults: DbFaults,
    faults_on: Arc<AtomicBool>,
    /// Per zombie of `faults`, whether it has struck.
    zombies_struck: Mutex<Vec<bool>>,
}

/// How long a statement tries to reach an unreachable database before it
/// fails: the pool's connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// Where `now` falls in the database's fault schedule.
#[derive(Debug, PartialEq, Eq)]
enum Weather {
    Fine,
    /// Stalled until this moment (simulated time since the run began).
    Stalled(Duration),
    /// Unreachable until this moment.
    Unreachable(Duration),
}

impl Db {
    fn faults_on(&self) -> bool {
        self.faults_on.load(Ordering::Relaxed)
    }

    /// Restarts that have happened by `now`: a transaction begun before one
    /// of them lost its connection.
    fn restarts_by(&self, now: Duration) -> usize {
        self.faults.restarts.iter().filter(|(at, _)| *at <= now).count()
    }

    fn weather(&self, now: Duration) -> Weather {
        let inside = |list: &[(Duration, Duration)]| {
            list.iter().filter(|(at, length)| *at <= now && now < *at + *length).map(|(at, length)| *at + *length).max()
        };
        if let Some(until) = inside(&self.faults.outages).max(inside(&self.faults.restarts)) {
            return Weather::Unreachable(until);
        }
        inside(&self.faults.stalls).map_or(Weather::Fine, Weather::Stalled)
    }

    /// Whether this commit's `COMMIT` is lost on its way (not applied, the
    /// outcome unknown to the caller).
    fn commit_lost_in_transit(&self) -> bool {
        self.faults.unapplied_per_mille > 0
            && self.rng.lock().unwrap_or_else(PoisonError::into_inner).below(1000) < self.faults.unapplied_per_mille
    }

    /// The stall of the zombie that strikes `server`'s transaction at `now`,
    /// if one is due and has not struck yet (each strikes once).
    fn zombie_due(&self, server: usize, now: Duration) -> Option<Duration> {
        let mut struck = self.zombies_struck.lock().unwrap_or_else(PoisonError::into_inner);
        let (index, zombie) = self
            .faults
            .zombies
            .iter()
            .enumerate()
            .find(|(index, zombie)| zombie.server == server && zombie.at <= now && !struck[*index])?;
        struck[index] = true;
        Some(zombie.stall)
    }

    /// One round trip's delay; `None` when the database is instant.
    fn round_trip(&self) -> Option<Duration> {
        if self.latency_max_ms == 0 {
            return None;
        }
        let millis = self.rng.lock().unwrap_or_else(PoisonError::into_inner).range(0, self.latency_max_ms);
        (millis > 0).then(|| Duration::from_millis(millis))
    }
}

/// The servers' database: `memory`'s, where every statement first waits a
/// seeded round trip of up to `latency_max_ms`, and every commit is
/// watched. `memory` itself stays unwatched (setup and the final check).
///
/// The database's own faults (`faults`, while `faults_on`): an ambiguous
/// commit that did not apply, stalls, outages, restarts that drop every
/// open transaction, and zombies. A restart does not release the lock
/// table's locks: their holders' transactions fail at their next statement
/// and drop them (a longer wait for others, never a second holder).
#[derive(Clone)]
pub struct Database(Arc<Db>);

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("faults", &self.0.faults).finish_non_exhaustive()
    }
}

impl Database {
    pub fn new(
        memory: &MemStore,
        latency_max_ms: u64,
        rng: SimRng,
        journal: Journal,
        clock: SimClock,
        (faults, faults_on): (DbFaults, Arc<AtomicBool>),
    ) -> Database {
        let zombies_struck = Mutex::new(vec![false; faults.zombies.len()]);
        Database(Arc::new(Db {
            memory: memory.clone(),
            latency_max_ms,
            rng: Mutex::new(rng),
            journal,
            clock,
            faults,
            faults_on,
            zombies_struck,
        }))
    }

    /// Server number `server`'s handle (its index in the plan): its
    /// transactions run a `Watch`. All handles share the round trips' seeded
    /// draws, in the order the statements run.
    pub fn handle(&self, server: usize) -> MemStore {
        let db = Arc::clone(&self.0);
        let memory = db.memory.clone();
        memory.with_statement_hook(Arc::new(move || Box::new(Watch::new(Arc::clone(&db), server)) as Box<dyn TxHook>))
    }
}

/// One transaction's round trips and monitor.
struct Watch {
    db: Arc<Db>,
    /// Whose connection this is (the server's index).
    server: usize,
    /// Whether this transaction stalled as a zombie.
    zombie: bool,
    /// Idempotency records this transaction writes, as loaded and as written.
    idem_writes: Vec<(Option<IdemRecord>, IdemRecord)>,
    /// Gateway payment keys this transaction claims, and for which payment.
    key_claims: Vec<(PaymentId, String)>,
    /// Set while waiting on a round trip: a drop then means the caller's
    /// future was dropped mid-flight (a cancelled request or a crash).
    suspended: bool,
    /// The database restarts that had happened when this transaction began.
    restarts_at_begin: usize,
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
        let commit = matches!(statement, Statement::Commit { .. });
        let fenced_commit = matches!(statement, Statement::Commit { fenced: true });
        let begin = matches!(statement, Statement::Begin);
        Box::pin(async move {
            self.weather(begin, commit).await?;
            if fenced_commit {
                self.maybe_zombie().await;
            }
            self.pause().await;
            if commit && self.db.faults_on() && self.db.commit_lost_in_transit() {
                self.db.journal.count(Count::UnappliedAmbiguousCommits, 1);
                self.db.journal.event("db", "COMMIT lost on its way: not applied, reported ambiguous");
                return Err(StoreError::Ambiguous);
            }
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
        self.count_fencing(result);
        // The reply's way back: a caller cancelled (or crashed) here never
        // learns that its commit happened.
        Box::pin(self.pause())
    }
}

impl Watch {
    fn new(db: Arc<Db>, server: usize) -> Watch {
        Watch {
            db,
            server,
            zombie: false,
            idem_writes: Vec::new(),
            key_claims: Vec::new(),
            suspended: false,
            restarts_at_begin: 0,
        }
    }

    /// At a `COMMIT` under a lock grant: if a zombie is due on this server,
    /// stall past the lock lease (holding the grant, as a paused process
    /// would), then go on to commit.
    async fn maybe_zombie(&mut self) {
        if !self.db.faults_on() {
            return;
        }
        let Some(stall) = self.db.zombie_due(self.server, self.db.clock.elapsed()) else { return };
        self.zombie = true;
        let name = crate::plan::server_name(self.server);
        self.db.journal.count(Count::Zombies, 1);
        self.db
            .journal
            .event(&name, format!("paused at COMMIT, holding its locks, for {}ms (a zombie)", stall.as_millis()));
        self.wait(stall).await;
        self.db.journal.event(&name, "the zombie resumes its COMMIT");
    }

    /// Counts commits the fence refused, and what became of a zombie's.
    fn count_fencing(&self, result: &Result<(), StoreError>) {
        let fenced = *result == Err(StoreError::Fenced);
        if fenced {
            self.db.journal.count(Count::FencedCommits, 1);
        }
        if !self.zombie {
            return;
        }
        let name = crate::plan::server_name(self.server);
        match result {
            Err(StoreError::Fenced) => {
                self.db.journal.count(Count::ZombiesFenced, 1);
                self.db.journal.event(&name, "the zombie's commit is refused: a later grant claimed its keys");
            }
            Ok(()) | Err(StoreError::Ambiguous) => {
                self.db.journal.count(Count::ZombieCommitsApplied, 1);
                self.db.journal.event(&name, "the zombie's commit went through: nobody had claimed its keys");
            }
            Err(_) => {}
        }
    }

    async fn pause(&mut self) {
        if let Some(delay) = self.db.round_trip() {
            self.wait(delay).await;
        }
    }

    async fn wait(&mut self, delay: Duration) {
        self.suspended = true;
        tokio::time::sleep(delay).await;
        self.suspended = false;
    }

    /// The database's faults, before a statement: a transaction that a
    /// restart dropped fails (at `COMMIT`, as ambiguous: the connection died
    /// under it, though nothing was applied); an unreachable database fails
    /// the statement after the connect timeout (ambiguous too at `COMMIT`);
    /// a stall holds the statement until it ends.
    async fn weather(&mut self, begin: bool, commit: bool) -> Result<(), StoreError> {
        if !self.db.faults_on() {
            return Ok(());
        }
        let now = self.db.clock.elapsed();
        let restarts = self.db.restarts_by(now);
        if begin {
            self.restarts_at_begin = restarts;
        } else if restarts > self.restarts_at_begin {
            // Counted once: the caller rolls back after this error.
            self.restarts_at_begin = restarts;
            self.db.journal.count(Count::TransactionsKilledByRestart, 1);
            self.db.journal.event("db", "an open transaction lost its connection to a database restart");
            let gone = StoreError::Unavailable("the database restarted: connection terminated".into());
            return Err(if commit { StoreError::Ambiguous } else { gone });
        }
        match self.db.weather(now) {
            Weather::Fine => Ok(()),
            Weather::Stalled(until) => {
                self.db.journal.count(Count::StatementsStalled, 1);
                self.wait(until.saturating_sub(now)).await;
                Ok(())
            }
            Weather::Unreachable(until) => {
                self.db.journal.count(Count::StatementsRefusedUnreachable, 1);
                self.wait(CONNECT_TIMEOUT.min(until.saturating_sub(now))).await;
                let unreachable = StoreError::Unavailable("the database is unreachable".into());
                Err(if commit { StoreError::Ambiguous } else { unreachable })
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::ids::UserId;
    use tally_core::store::{Tx as _, User};
    use tally_core::time::Timestamp;
    use tally_mem::Concurrency;

    use crate::shared::now_or_never;

    fn user(id: u128) -> User {
        User {
            id: UserId(id),
            name: format!("user {id}"),
            key_hash: [u8::try_from(id).expect("small"); 32],
            created_at: Timestamp(0),
        }
    }

    /// A database restart drops every transaction open at that moment: the
    /// one begun before it fails at `COMMIT` as ambiguous, and nothing it
    /// wrote is applied; a transaction begun after the downtime commits.
    /// With the faults turned off (the quiet phase), none of it happens.
    #[test]
    fn a_restart_drops_the_open_transaction_and_applies_nothing() {
        let memory = MemStore::new(Concurrency::Locked);
        let clock = SimClock::new();
        let journal = Journal::new(clock.clone());
        let faults =
            DbFaults { restarts: vec![(Duration::from_millis(100), Duration::from_millis(50))], ..DbFaults::default() };
        let on = Arc::new(AtomicBool::new(true));
        let store =
            Database::new(&memory, 0, SimRng::new(1), journal.clone(), clock.clone(), (faults, Arc::clone(&on)))
                .handle(0);

        let mut before = now_or_never(store.begin()).expect("begins before the restart");
        now_or_never(before.insert_user(&user(7))).expect("a write before the restart");
        clock.set_elapsed(Duration::from_millis(200));
        assert_eq!(now_or_never(before.commit()), Err(StoreError::Ambiguous));
        let mut read = now_or_never(memory.begin()).expect("the unwatched handle");
        assert_eq!(now_or_never(read.user(UserId(7))), Ok(None), "the dropped transaction applied nothing");
        assert_eq!(journal.counts().get(Count::TransactionsKilledByRestart), 1);

        let mut after = now_or_never(store.begin()).expect("begins after the downtime");
        now_or_never(after.insert_user(&user(8))).expect("a write after the restart");
        assert_eq!(now_or_never(after.commit()), Ok(()));

        let mut straddling = now_or_never(store.begin()).expect("begins");
        on.store(false, Ordering::Relaxed);
        clock.set_elapsed(Duration::ZERO);
        let mut quiet = now_or_never(store.begin()).expect("begins");
        clock.set_elapsed(Duration::from_millis(200));
        now_or_never(quiet.insert_user(&user(9))).expect("faults off: no restart seen");
        assert_eq!(now_or_never(quiet.commit()), Ok(()));
        now_or_never(straddling.insert_user(&user(10))).expect("faults off");
        assert_eq!(now_or_never(straddling.commit()), Ok(()));
        assert_eq!(journal.counts().get(Count::TransactionsKilledByRestart), 1);
    }

    /// The schedule: inside an outage or a restart's downtime the database
    /// is unreachable until the window ends; inside a stall, stalled; else fine.
    #[test]
    fn the_weather_follows_the_schedule() {
        let ms = Duration::from_millis;
        let db = Db {
            memory: MemStore::new(Concurrency::Locked),
            latency_max_ms: 0,
            rng: Mutex::new(SimRng::new(1)),
            journal: Journal::new(SimClock::new()),
            clock: SimClock::new(),
            faults: DbFaults {
                stalls: vec![(ms(10), ms(30))],
                outages: vec![(ms(100), ms(20))],
                restarts: vec![(ms(110), ms(40))],
                ..DbFaults::default()
            },
            faults_on: Arc::new(AtomicBool::new(true)),
            zombies_struck: Mutex::new(Vec::new()),
        };
        assert_eq!(db.weather(ms(5)), Weather::Fine);
        assert_eq!(db.weather(ms(10)), Weather::Stalled(ms(40)));
        assert_eq!(db.weather(ms(40)), Weather::Fine);
        assert_eq!(db.weather(ms(105)), Weather::Unreachable(ms(120)));
        assert_eq!(db.weather(ms(115)), Weather::Unreachable(ms(150)));
        assert_eq!(db.weather(ms(150)), Weather::Fine);
        assert_eq!((db.restarts_by(ms(109)), db.restarts_by(ms(110))), (0, 1));
    }
}
