//! The use cases, written once.
//!
//! [`Tally`] is generic over the store, the lock manager and the clock. Every
//! mutating use case is a [`Command`] run by [`Tally::execute`], which owns the
//! shape shared by all of them:
//!
//! ```text
//! admission (keyed requests only; own transaction)
//! loop (bounded, retried on StoreError::Conflict):
//!     lock the command's keys (+ the idempotency key), in global order, with a timeout
//!     begin; check the idempotency lease; load; decide (crate::decide); persist;
//!     write the completed idempotency record; commit
//! on refusal or failure: store the refusal under the key, or free the key
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::check::Snapshot;
use crate::decide;
use crate::error::Error;
use crate::idempotency::{
    self, Admission, Fingerprint, IdemConfig, IdemKey, IdemOrigin, IdemScope, LeaseToken, StoredResponse,
};
use crate::ids::{IdGen, OpId, PaymentId, TransferId, UserId};
use crate::ledger::{Booking, Transfer};
use crate::money::{Amount, Money};
use crate::payment::{Method, Payment};
use crate::store::{LockKey, LockManager, LockSet, Store, StoreError, Tx, User};
use crate::time::{Clock, Timestamp};
use crate::wallet::{LimitKind, Limits, Wallet, WalletError};

/// Operating limits of the use cases.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub idempotency: IdemConfig,
    /// How long a use case waits for its locks before answering busy.
    pub lock_wait: Duration,
    /// How many times a use case runs when the store reports conflicts
    /// (optimistic strategies) before answering busy.
    pub attempts_max: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            idempotency: IdemConfig { ttl: Duration::from_secs(24 * 60 * 60), lease: Duration::from_secs(60) },
            lock_wait: Duration::from_secs(5),
            attempts_max: 8,
        }
    }
}

/// Longest user name accepted.
pub const NAME_LENGTH_MAX: usize = 200;
/// Largest ledger page.
pub const LEDGER_PAGE_MAX: usize = 100;

/// A mutating use case and its validated input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    TopUp { amount: Amount },
    CreatePayment { amount: Amount, payback: Option<Amount>, method: Method },
    ConfirmPayment { payment: PaymentId },
    CancelPayment { payment: PaymentId },
}

impl Command {
    /// The records this command writes, locked for its whole transaction.
    fn lock_keys(&self, user: UserId) -> Vec<LockKey> {
        match self {
            Command::TopUp { .. } => vec![LockKey::Wallet(user)],
            // A new payment has a fresh id nobody else can name yet.
            Command::CreatePayment { .. } => Vec::new(),
            Command::ConfirmPayment { payment } | Command::CancelPayment { payment } => {
                vec![LockKey::Payment(*payment), LockKey::Wallet(user)]
            }
        }
    }
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    TopUp { transfer: Transfer, balance: Money },
    Payment(Payment),
}

/// Turns a result into the response to store under an idempotency key, or
/// `None` for results that must not be stored (SPEC.md: only successes and
/// business refusals are). It must be a pure function of the result: the
/// caller renders a fresh result again and must get the same bytes.
pub type Render = dyn Fn(&Result<Outcome, Error>) -> Option<StoredResponse> + Send + Sync;

/// The idempotency part of a request.
pub struct Keyed<'r> {
    pub key: IdemKey,
    pub fingerprint: Fingerprint,
    pub render: &'r Render,
}

impl std::fmt::Debug for Keyed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyed").field("key", &self.key).field("fingerprint", &self.fingerprint).finish()
    }
}

// One per request, moved once: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Executed {
    /// Ran now.
    Fresh(Outcome),
    /// An earlier request with the same key and body completed; this is its response.
    Replayed(StoredResponse),
}

/// A wallet as the owner reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletView {
    pub wallet: Wallet,
    pub spent_today: Money,
    pub spent_this_month: Money,
}

/// One page of a wallet's ledger; `next` is the cursor of the following page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerPage {
    pub entries: Vec<Transfer>,
    pub next: Option<u64>,
}

/// An admitted keyed request.
struct Held<'r> {
    scope: IdemScope,
    lease: LeaseToken,
    render: &'r Render,
}

/// The service: the use cases over a store, a lock manager and a clock.
pub struct Tally<S, L, C> {
    store: S,
    locks: L,
    clock: C,
    ids: Arc<dyn IdGen>,
    config: Config,
}

impl<S, L, C> std::fmt::Debug for Tally<S, L, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<S: Store, L: LockManager, C: Clock> Tally<S, L, C> {
    pub fn new(store: S, locks: L, clock: C, ids: Arc<dyn IdGen>, config: Config) -> Self {
        assert!(config.attempts_max >= 1, "a use case runs at least once");
        assert!(config.idempotency.lease < config.idempotency.ttl, "a lease ends before its key expires");
        Tally { store, locks, clock, ids, config }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        Ok(self.store.snapshot().await?)
    }

    /// Creates a user and their empty wallet.
    pub async fn create_user(&self, name: &str, limits: Limits, key_hash: [u8; 32]) -> Result<User, Error> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > NAME_LENGTH_MAX {
            return Err(Error::InvalidInput("name must be 1 to 200 characters"));
        }
        let limits = limits.validate().map_err(|_| Error::InvalidInput("limits must be between 0 and 10^15"))?;
        let now = self.clock.now();
        let user = User { id: UserId(self.ids.next_id()), name: name.to_owned(), key_hash, created_at: now };
        let wallet = Wallet::open(user.id, limits, now);
        let mut tx = self.store.begin().await?;
        tx.insert_user(&user).await?;
        tx.put_wallet(None, &wallet).await?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn authenticate(&self, key_hash: [u8; 32]) -> Result<Option<User>, Error> {
        let mut tx = self.store.begin().await?;
        let user = tx.user_by_key_hash(key_hash).await;
        tx.rollback().await;
        Ok(user?)
    }

    pub async fn wallet(&self, user: UserId) -> Result<WalletView, Error> {
        let mut tx = self.store.begin().await?;
        let wallet = tx.wallet(user).await;
        tx.rollback().await;
        let wallet = wallet?.ok_or(Error::NotFound)?;
        let (spent_today, spent_this_month) = wallet.spent_at(self.clock.now());
        Ok(WalletView { wallet, spent_today, spent_this_month })
    }

    /// The wallet's ledger after cursor `after` (0 = from the start).
    pub async fn ledger(&self, user: UserId, after: u64, limit: usize) -> Result<LedgerPage, Error> {
        if limit == 0 || limit > LEDGER_PAGE_MAX {
            return Err(Error::InvalidInput("limit must be 1 to 100"));
        }
        let mut tx = self.store.begin().await?;
        let entries = tx.wallet_ledger(user, after, limit + 1).await;
        tx.rollback().await;
        let mut entries = entries?;
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().and_then(|t| t.wallet).map(|side| side.seq)
        } else {
            None
        };
        Ok(LedgerPage { entries, next })
    }

    /// A payment, if it is `user`'s (another user's payment is "not found").
    pub async fn payment(&self, user: UserId, id: PaymentId) -> Result<Payment, Error> {
        let mut tx = self.store.begin().await?;
        let payment = tx.payment(id).await;
        tx.rollback().await;
        payment?.filter(|p| p.user == user).ok_or(Error::NotFound)
    }

    /// Deletes up to `limit` expired idempotency records; returns how many.
    pub async fn reap_idempotency(&self, limit: usize) -> Result<usize, Error> {
        assert!(limit > 0, "a reaper batch reaps something");
        let mut tx = self.store.begin().await?;
        let reaped = tx.reap_idempotency(self.clock.now(), limit).await?;
        tx.commit().await?;
        Ok(reaped)
    }

    /// Runs a mutating use case for `user`, at most once per idempotency key.
    pub async fn execute(&self, user: UserId, command: Command, keyed: Option<Keyed<'_>>) -> Result<Executed, Error> {
        let Some(keyed) = keyed else {
            return self.run(user, &command, None).await.map(Executed::Fresh);
        };
        let scope = IdemScope { user, key: keyed.key };
        let lease = LeaseToken(self.ids.next_id());
        match self.admit(&scope, keyed.fingerprint, lease).await? {
            Admission::Start(_) => {}
            Admission::Replay(response) => return Ok(Executed::Replayed(response)),
            Admission::InUse => return Err(Error::IdempotencyKeyInUse),
            Admission::Reused => return Err(Error::IdempotencyKeyReused),
        }
        let held = Held { scope, lease, render: keyed.render };
        match self.run(user, &command, Some(&held)).await {
            Ok(outcome) => Ok(Executed::Fresh(outcome)),
            Err(error) => {
                self.settle(&held, &error).await;
                Err(error)
            }
        }
    }

    /// Phase 1 of a keyed request: claim the key, or learn why not. Two
    /// first requests racing without locks both try to insert; the loser's
    /// commit conflicts (unique key) and it decides again on what won.
    async fn admit(&self, scope: &IdemScope, fingerprint: Fingerprint, lease: LeaseToken) -> Result<Admission, Error> {
        let keys = LockSet::new([LockKey::Idempotency(scope.clone())]);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Never wait for the key: whoever holds it is running a request
            // with it (its admission, its effect or its settlement), so this
            // one is a duplicate in flight and is told so at once.
            let _guard = match self.locks.acquire(&keys, Duration::ZERO).await {
                Ok(guard) => guard,
                Err(crate::store::LockError::Timeout) => return Ok(Admission::InUse),
                Err(error) => return Err(error.into()),
            };
            let mut tx = self.store.begin().await?;
            let existing = match tx.idempotency_no_wait(scope).await {
                Ok(existing) => existing,
                Err(StoreError::Busy) => {
                    tx.rollback().await;
                    return Ok(Admission::InUse);
                }
                Err(error) => return Err(error.into()),
            };
            let now = self.clock.now();
            let admission =
                idempotency::admit(existing.as_ref(), scope, fingerprint, lease, self.config.idempotency, now);
            let Admission::Start(record) = &admission else {
                tx.rollback().await;
                return Ok(admission);
            };
            let written = match tx.put_idempotency(existing.as_ref(), record).await {
                Ok(()) => tx.commit().await,
                Err(error) => Err(error),
            };
            match written {
                Ok(()) => return Ok(admission),
                Err(StoreError::Conflict) if attempt < self.config.attempts_max => continue,
                Err(error) => return Err(conflicts_exhausted(Error::Store(error))),
            }
        }
    }

    /// After a keyed request failed: store a refusal as its answer, or free the
    /// key so the client can retry. Only while the record is still ours and in
    /// flight — after an ambiguous commit it may already be completed, and then
    /// it must stay so. If this fails too, the lease expiry frees the key.
    async fn settle(&self, held: &Held<'_>, error: &Error) {
        if *error == Error::LeaseLost {
            return;
        }
        let response = if error.is_refusal() { (held.render)(&Err(error.clone())) } else { None };
        let keys = LockSet::new([LockKey::Idempotency(held.scope.clone())]);
        let Ok(_guard) = self.locks.acquire(&keys, self.config.lock_wait).await else {
            return;
        };
        let Ok(mut tx) = self.store.begin().await else {
            return;
        };
        let Ok(Some(record)) = tx.idempotency(&held.scope).await else {
            return;
        };
        let written = match response.and_then(|r| record.complete(held.lease, r, None)) {
            Some(completed) => tx.put_idempotency(Some(&record), &completed).await,
            None if record.held_by(held.lease) => tx.delete_idempotency(&record).await,
            None => return,
        };
        if written.is_ok() {
            let _ = tx.commit().await;
        }
    }

    /// Phase 2: lock, run the command and complete the key in one transaction,
    /// retrying a bounded number of times on conflicts.
    async fn run(&self, user: UserId, command: &Command, held: Option<&Held<'_>>) -> Result<Outcome, Error> {
        let mut keys = command.lock_keys(user);
        keys.extend(held.map(|h| LockKey::Idempotency(h.scope.clone())));
        let keys = LockSet::new(keys);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let guard = self.locks.acquire(&keys, self.config.lock_wait).await?;
            let mut tx = self.store.begin().await?;
            let outcome = match self.run_in(&mut tx, user, command, held).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    tx.rollback().await;
                    if error == Error::Store(StoreError::Conflict) && attempt < self.config.attempts_max {
                        continue;
                    }
                    return Err(conflicts_exhausted(error));
                }
            };
            // Mutant: the decision was made under one acquisition of the locks
            // and is written under another — check-then-act.
            let guard = if crate::mutant::active("check_then_act") {
                drop(guard);
                self.locks.acquire(&keys, self.config.lock_wait).await?
            } else {
                guard
            };
            let committed = tx.commit().await;
            drop(guard);
            match committed {
                Ok(()) => return Ok(outcome),
                Err(StoreError::Conflict) if attempt < self.config.attempts_max => continue,
                Err(error) => return Err(conflicts_exhausted(Error::Store(error))),
            }
        }
    }

    async fn run_in(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        command: &Command,
        held: Option<&Held<'_>>,
    ) -> Result<Outcome, Error> {
        let now = self.clock.now();
        // Loads follow the lock order: the idempotency record first.
        let record = match held {
            Some(held) => {
                let record = tx.idempotency(&held.scope).await?;
                match record {
                    Some(record) if record.held_by(held.lease) => Some(record),
                    _ => return Err(Error::LeaseLost),
                }
            }
            None => None,
        };
        let op = OpId(self.ids.next_id());
        let origin = record.as_ref().map(|r| IdemOrigin { scope: r.scope.clone(), expires_at: r.expires_at });
        let booking = Booking { op, origin, at: now };
        let outcome = self.apply(tx, user, command, &booking).await?;
        if let (Some(held), Some(record)) = (held, record) {
            match (held.render)(&Ok(outcome.clone())) {
                Some(response) => {
                    let completed = record.complete(held.lease, response, Some(op)).expect("lease checked above");
                    tx.put_idempotency(Some(&record), &completed).await?;
                }
                None => tx.delete_idempotency(&record).await?,
            }
        }
        Ok(outcome)
    }

    async fn apply(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        command: &Command,
        booking: &Booking,
    ) -> Result<Outcome, Error> {
        let ids = &self.ids;
        let mut next_id = || TransferId(ids.next_id());
        match command {
            Command::TopUp { amount } => {
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                let (next, transfer) = decide::top_up(&wallet, *amount, booking, &mut next_id)?;
                tx.put_wallet(Some(&wallet), &next).await?;
                tx.append_transfers(std::slice::from_ref(&transfer)).await?;
                Ok(Outcome::TopUp { transfer, balance: next.balance })
            }
            Command::CreatePayment { amount, payback, method } => {
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                // Refuse early what confirm would refuse anyway; confirm checks again.
                if wallet.limits.per_payment.is_some_and(|limit| amount.money() > limit) {
                    return Err(WalletError::LimitExceeded(LimitKind::PerPayment).into());
                }
                let payment =
                    Payment::new(PaymentId(self.ids.next_id()), user, *amount, *payback, *method, booking.at)?;
                tx.put_payment(None, &payment).await?;
                Ok(Outcome::Payment(payment))
            }
            Command::ConfirmPayment { payment } | Command::CancelPayment { payment } => {
                let loaded = tx.payment(*payment).await?.filter(|p| p.user == user).ok_or(Error::NotFound)?;
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                let decision = if matches!(command, Command::ConfirmPayment { .. }) {
                    decide::confirm(&loaded, &wallet, booking, &mut next_id)?
                } else {
                    decide::cancel(&loaded, &wallet, booking, &mut next_id)?
                };
                tx.put_payment(Some(&loaded), &decision.payment).await?;
                if !decision.transfers.is_empty() {
                    tx.put_wallet(Some(&wallet), &decision.wallet).await?;
                    tx.append_transfers(&decision.transfers).await?;
                }
                Ok(Outcome::Payment(decision.payment))
            }
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

fn conflicts_exhausted(error: Error) -> Error {
    match error {
        Error::Store(StoreError::Conflict) => Error::Busy("too many concurrent updates; retry"),
        other => other,
    }
}
