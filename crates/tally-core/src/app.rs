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

mod orders;

pub use orders::{EventView, NewSeat, NewShowtime, ShowtimeView, TokenView};

use crate::catalog::{Event, Product};
use crate::check::Snapshot;
use crate::decide::{self, Call, Decision, Settled, Verdict};
use crate::error::Error;
use crate::gateway::{self, Confirmed, Gateway, NoGateway};
use crate::idempotency::{
    self, Admission, Fingerprint, IdemConfig, IdemKey, IdemOrigin, IdemRecord, IdemScope, LeaseToken, StoredResponse,
};
use crate::ids::{EventId, IdGen, OpId, OrderId, PaymentId, ProductId, SeatId, TokenId, TransferId, UserId};
use crate::ledger::{Booking, Transfer};
use crate::money::{Amount, Money};
use crate::order::Order;
use crate::payment::{self, Method, Payment, PaymentEvent, PaymentStatus};
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
    /// A gateway confirm the gateway still does not know this long after it
    /// was sent never took effect: the payment fails. Far longer than the
    /// gateway client's timeout, so no confirm can still be on its way.
    pub gateway_give_up_after: Duration,
    /// Test hook: pause this long between the gateway's answer and recording
    /// it (zero: off). The crash tests kill the process inside the pause.
    pub pause_after_gateway: Duration,
    /// How long an unpaid order holds its stock and seats.
    pub order_ttl: Duration,
    /// The merchant's default payback, in basis points: of a payment for an
    /// amount, of an order's seats, and of a product created without a rate.
    pub payback_bps: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            idempotency: IdemConfig { ttl: Duration::from_secs(24 * 60 * 60), lease: Duration::from_secs(60) },
            lock_wait: Duration::from_secs(5),
            attempts_max: 8,
            gateway_give_up_after: Duration::from_secs(120),
            pause_after_gateway: Duration::ZERO,
            order_ttl: Duration::from_secs(300),
            payback_bps: 0,
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
    TopUp {
        amount: Amount,
    },
    /// The payback is the merchant's policy ([`Config::payback_bps`]),
    /// never the customer's choice.
    CreatePayment {
        amount: Amount,
        method: Method,
    },
    /// `payment_key`: the gateway's key for a gateway payment (none for a wallet one).
    ConfirmPayment {
        payment: PaymentId,
        payment_key: Option<String>,
    },
    CancelPayment {
        payment: PaymentId,
    },
    /// A payment for an order: the amount is the order's total.
    CreateOrderPayment {
        order: OrderId,
        method: Method,
    },
    /// Admin. `payback_bps`: the product's payback rate (none: the service
    /// default).
    CreateProduct {
        name: String,
        price: Amount,
        stock: u64,
        payback_bps: Option<u32>,
    },
    /// Admin.
    Restock {
        product: ProductId,
        quantity: u64,
    },
    /// Admin: an event with its showtimes and their seats.
    CreateEvent {
        name: String,
        active_limit: u32,
        token_ttl: Duration,
        max_seats_per_token: u32,
        showtimes: Vec<NewShowtime>,
    },
    /// Joins the event's waiting queue (or answers the caller's live token).
    JoinQueue {
        event: EventId,
    },
    /// The caller's token as it stands now (its queue refreshed first).
    QueueStatus {
        token: TokenId,
    },
    /// Reserves products and seats together, or nothing. Seats need `token`,
    /// an active queue token of their event.
    CreateOrder {
        items: Vec<(ProductId, u64)>,
        seats: Vec<SeatId>,
        token: Option<TokenId>,
    },
    /// Cancels an order; a paid one is refunded first.
    CancelOrder {
        order: OrderId,
    },
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    TopUp {
        transfer: Transfer,
        balance: Money,
    },
    Payment(Payment),
    Product(Product),
    Event(EventView),
    Token(TokenView),
    /// The order as its owner sees it now.
    Order(Order),
}

/// What a gateway phase answers once settled: the payment, or (an order
/// cancelled through its gateway payment's refund) the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Payment,
    Order,
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

/// Where the locked part of a command ended.
enum Step {
    Done(Outcome),
    /// Committed the intent; now call the gateway about this payment.
    Call(Payment, Call, Answer),
}

/// What recording a gateway verdict left to do.
enum Recorded {
    /// The payment reached a resting state (or stays pending): answer this.
    Final(Outcome),
    /// The payment now owes a refund (`refunding`, committed): send it.
    Refund(Payment),
}

/// The service: the use cases over a store, a lock manager, a clock and a
/// payment gateway.
pub struct Tally<S, L, C, G = NoGateway> {
    store: S,
    locks: L,
    clock: C,
    gateway: G,
    ids: Arc<dyn IdGen>,
    config: Config,
}

impl<S, L, C, G> std::fmt::Debug for Tally<S, L, C, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<S: Store, L: LockManager, C: Clock> Tally<S, L, C, NoGateway> {
    /// The use cases, without a payment gateway (gateway payments refused).
    pub fn new(store: S, locks: L, clock: C, ids: Arc<dyn IdGen>, config: Config) -> Self {
        assert!(config.attempts_max >= 1, "a use case runs at least once");
        assert!(config.idempotency.lease < config.idempotency.ttl, "a lease ends before its key expires");
        assert!(config.payback_bps <= crate::payment::PAYBACK_BPS_MAX, "a payback rate is at most 100 %");
        Tally { store, locks, clock, gateway: NoGateway, ids, config }
    }

    /// The same use cases, confirming gateway payments through `gateway`.
    pub fn with_gateway<G: Gateway>(self, gateway: G) -> Tally<S, L, C, G> {
        let Tally { store, locks, clock, ids, config, .. } = self;
        Tally { store, locks, clock, gateway, ids, config }
    }
}

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    pub fn gateway(&self) -> &G {
        &self.gateway
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
        let mut tx = self.store.peek().await?;
        let user = tx.user_by_key_hash(key_hash).await;
        tx.rollback().await;
        Ok(user?)
    }

    pub async fn wallet(&self, user: UserId) -> Result<WalletView, Error> {
        let mut tx = self.store.peek().await?;
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
        let mut tx = self.store.peek().await?;
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
        let mut tx = self.store.peek().await?;
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

    /// Deletes `key`'s idempotency record, whatever its state: the lever of
    /// the `release_key_on_disconnect` mutant in `tally-http`. Only mutant
    /// builds have it; nothing correct may forget a key before it expires.
    #[cfg(tally_mutants)]
    pub async fn forget_key(&self, user: UserId, key: crate::idempotency::IdemKey) -> Result<(), Error> {
        let scope = IdemScope { user, key };
        let _guard =
            self.locks.acquire(&LockSet::new([LockKey::Idempotency(scope.clone())]), self.config.lock_wait).await?;
        let mut tx = self.store.begin().await?;
        if let Some(record) = tx.idempotency(&scope).await? {
            tx.delete_idempotency(&record).await?;
        }
        Ok(tx.commit().await?)
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
                let stored = self.settle(&held, &error).await;
                if error.is_refusal() && !stored {
                    // The refusal could not be stored under the key (its
                    // commit failed): answering it now would let a retry run
                    // the request again and answer differently. Say "retry"
                    // instead; the retry meets the key in flight or free.
                    return Err(Error::Busy("the answer could not be recorded; retry"));
                }
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
    /// Returns whether a refusal was stored (always true for other errors).
    async fn settle(&self, held: &Held<'_>, error: &Error) -> bool {
        if *error == Error::LeaseLost {
            return true;
        }
        let response = if error.is_refusal() { (held.render)(&Err(error.clone())) } else { None };
        let keys = LockSet::new([LockKey::Idempotency(held.scope.clone())]);
        let refusal = response.is_some();
        let Ok(_guard) = self.locks.acquire(&keys, self.config.lock_wait).await else {
            return !refusal;
        };
        let Ok(mut tx) = self.store.begin().await else {
            return !refusal;
        };
        let Ok(Some(record)) = tx.idempotency(&held.scope).await else {
            return !refusal;
        };
        let written = match response.and_then(|r| record.complete(held.lease, r, None)) {
            Some(completed) => tx.put_idempotency(Some(&record), &completed).await,
            None if record.held_by(held.lease) => tx.delete_idempotency(&record).await,
            // Taken over: the key now answers for another request.
            None => return !refusal,
        };
        match written {
            Ok(()) => tx.commit().await.is_ok() || !refusal,
            Err(_) => !refusal,
        }
    }

    /// Phase 2: lock, run the command and complete the key in one transaction,
    /// retrying a bounded number of times on conflicts. A gateway payment's
    /// phase ends in a committed intent instead; the gateway is then called
    /// with no transaction open, and its verdict recorded in phase 3.
    async fn run(&self, user: UserId, command: &Command, mut held: Option<&Held<'_>>) -> Result<Outcome, Error> {
        let mut attempt = 0;
        let step = loop {
            attempt += 1;
            // Recomputed on every attempt: a retry after the records moved
            // (an order got a payment) locks what they name now.
            let mut keys = self.lock_keys(user, command).await?;
            keys.extend(held.map(|h| LockKey::Idempotency(h.scope.clone())));
            let keys = LockSet::new(keys);
            let guard = self.locks.acquire(&keys, self.config.lock_wait).await?;
            let mut tx = self.store.begin().await?;
            let step = match self.run_in(&mut tx, user, command, held, &keys).await {
                Ok(step) => step,
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
                Ok(()) => break step,
                Err(StoreError::Conflict) if attempt < self.config.attempts_max => continue,
                // Mutant: an ambiguous commit retried like a conflict, and
                // without its idempotency record (which that commit completed).
                Err(StoreError::Ambiguous)
                    if crate::mutant::active("retry_ambiguous_commit") && attempt < self.config.attempts_max =>
                {
                    held = None;
                    continue;
                }
                Err(error) => return Err(conflicts_exhausted(Error::Store(error))),
            }
        };
        match step {
            Step::Done(outcome) => Ok(outcome),
            Step::Call(payment, call, answer) => self.call_and_settle(&payment, call, held, answer).await,
        }
    }

    async fn run_in(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        command: &Command,
        held: Option<&Held<'_>>,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        let now = self.clock.now();
        // Loads follow the lock order: the idempotency record first.
        let record = self.held_record(tx, held).await?;
        let op = OpId(self.ids.next_id());
        let origin = record.as_ref().map(|r| IdemOrigin { scope: r.scope.clone(), expires_at: r.expires_at });
        let booking = Booking { op, origin, at: now };
        let step = self.apply(tx, user, command, &booking, locked).await?;
        if let (Step::Done(outcome), Some(held), Some(record)) = (&step, held, &record) {
            self.complete(tx, held, record, outcome, op).await?;
        }
        Ok(step)
    }

    /// The request's in-flight idempotency record, if it is still ours.
    async fn held_record(&self, tx: &mut S::Tx, held: Option<&Held<'_>>) -> Result<Option<IdemRecord>, Error> {
        let Some(held) = held else { return Ok(None) };
        match tx.idempotency(&held.scope).await? {
            Some(record) if record.held_by(held.lease) => Ok(Some(record)),
            _ => Err(Error::LeaseLost),
        }
    }

    /// Stores the response under the key, in the effect's transaction.
    async fn complete(
        &self,
        tx: &mut S::Tx,
        held: &Held<'_>,
        record: &IdemRecord,
        outcome: &Outcome,
        op: OpId,
    ) -> Result<(), Error> {
        match (held.render)(&Ok(outcome.clone())) {
            Some(response) => {
                let completed = record.complete(held.lease, response, Some(op)).expect("lease checked above");
                tx.put_idempotency(Some(record), &completed).await?;
            }
            None => tx.delete_idempotency(record).await?,
        }
        Ok(())
    }

    /// Phase 3 of a gateway payment: the one foreign call, then its verdict.
    /// A confirm whose answer is unclear is followed by a lookup — never by a
    /// second confirm. A verdict that leaves a refund owed (`refunding`) is
    /// followed by the refund, and the key is completed only with the
    /// payment's resting state.
    async fn call_and_settle(
        &self,
        payment: &Payment,
        call: Call,
        held: Option<&Held<'_>>,
        answer: Answer,
    ) -> Result<Outcome, Error> {
        let mut payment = payment.clone();
        let mut call = call;
        // Confirm → (refund) at most: two rounds.
        for _ in 0..2 {
            let verdict = self.call_gateway(&payment, &call).await;
            if !self.config.pause_after_gateway.is_zero() {
                self.clock.sleep(self.config.pause_after_gateway).await;
            }
            match self.settle_verdict(&payment, &verdict, held, answer).await? {
                Recorded::Final(outcome) => return Ok(outcome),
                Recorded::Refund(refunding) => {
                    payment = refunding;
                    call = Call::Cancel;
                }
            }
        }
        unreachable!("a refund's verdict is final or pending")
    }

    /// The one foreign call of a phase.
    async fn call_gateway(&self, payment: &Payment, call: &Call) -> Verdict {
        let attempt = payment.gateway.as_ref().expect("a gateway call has its attempt");
        let key = attempt.payment_key.as_str();
        match call {
            Call::Confirm => {
                let order_id = gateway::order_id(payment.id);
                let said =
                    self.gateway.confirm(key, &order_id, payment.amount, &gateway::confirm_key(payment.id)).await;
                match said {
                    Confirmed::Unknown { .. } if crate::mutant::active("retry_unknown_confirm") => Verdict::Confirm(
                        self.gateway.confirm(key, &order_id, payment.amount, &gateway::confirm_key(payment.id)).await,
                    ),
                    Confirmed::Unknown { .. } => Verdict::Lookup(self.gateway.lookup(key).await),
                    said => Verdict::Confirm(said),
                }
            }
            Call::Lookup => Verdict::Lookup(self.gateway.lookup(key).await),
            // Only for a charge recorded as ours: a cancelling payment was
            // done, a refunding one was charged with our order id.
            Call::Cancel => {
                debug_assert!(matches!(payment.status, PaymentStatus::Cancelling | PaymentStatus::Refunding));
                Verdict::Cancel(self.gateway.cancel(key, &gateway::cancel_key(payment.id)).await)
            }
        }
    }

    /// Records a gateway verdict (and completes the idempotency key, unless
    /// a refund is still owed) in one transaction under the payment's and
    /// the wallet's locks.
    async fn settle_verdict(
        &self,
        payment: &Payment,
        verdict: &Verdict,
        held: Option<&Held<'_>>,
        answer: Answer,
    ) -> Result<Recorded, Error> {
        let user = payment.user;
        let started = payment.gateway.as_ref().map_or(payment.updated_at, |a| a.sent_at);
        let give_up_at = started.plus(self.config.gateway_give_up_after);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut keys = vec![LockKey::Payment(payment.id), LockKey::Wallet(user)];
            keys.extend(self.order_keys_of(payment.order).await?);
            keys.extend(held.map(|h| LockKey::Idempotency(h.scope.clone())));
            let keys = LockSet::new(keys);
            let guard = self.locks.acquire(&keys, self.config.lock_wait).await?;
            let mut tx = self.store.begin().await?;
            let result = self.settle_in(&mut tx, payment.id, user, verdict, give_up_at, held, answer, &keys).await;
            let recorded = match result {
                Ok(recorded) => recorded,
                Err(error) => {
                    tx.rollback().await;
                    if error == Error::Store(StoreError::Conflict) && attempt < self.config.attempts_max {
                        continue;
                    }
                    return Err(conflicts_exhausted(error));
                }
            };
            let committed = tx.commit().await;
            drop(guard);
            match committed {
                Ok(()) => return Ok(recorded),
                Err(StoreError::Conflict) if attempt < self.config.attempts_max => continue,
                Err(error) => return Err(conflicts_exhausted(Error::Store(error))),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn settle_in(
        &self,
        tx: &mut S::Tx,
        payment: PaymentId,
        user: UserId,
        verdict: &Verdict,
        give_up_at: Timestamp,
        held: Option<&Held<'_>>,
        answer: Answer,
        locked: &LockSet,
    ) -> Result<Recorded, Error> {
        let record = self.held_record(tx, held).await?;
        let loaded = tx.payment(payment).await?.ok_or(Error::NotFound)?;
        let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
        let op = OpId(self.ids.next_id());
        let origin = record.as_ref().map(|r| IdemOrigin { scope: r.scope.clone(), expires_at: r.expires_at });
        let booking = Booking { op, origin, at: self.clock.now() };
        let ids = &self.ids;
        let mut next_id = || TransferId(ids.next_id());
        let (payment, order) = match decide::settle(&loaded, &wallet, verdict, give_up_at, &booking, &mut next_id)? {
            Settled::Pending => return Err(Error::OutcomePending),
            Settled::AlreadySettled(current) => {
                let order = self.follow_order(tx, &current, &current, booking.at, locked).await?;
                (current, order)
            }
            Settled::Booked(decision) => {
                self.persist(tx, &loaded, &wallet, &decision).await?;
                let order = self.follow_order(tx, &loaded, &decision.payment, booking.at, locked).await?;
                (decision.payment, order)
            }
        };
        if payment.status == PaymentStatus::Refunding && loaded.status != PaymentStatus::Refunding {
            // The refund is owed, durably; the key waits for its outcome.
            return Ok(Recorded::Refund(payment));
        }
        let outcome = match (answer, order) {
            (Answer::Order, Some(order)) => Outcome::Order(self.order_view(order)),
            _ => Outcome::Payment(payment),
        };
        if let (Some(held), Some(record)) = (held, record) {
            self.complete(tx, held, &record, &outcome, op).await?;
        }
        Ok(Recorded::Final(outcome))
    }

    /// The completer: gateway payments stuck in `confirming`, `cancelling`
    /// or `refunding` for longer than `older_than` (a crash, a timeout) are
    /// claimed (their attempt's clock restarts, so another instance skips
    /// them) and resolved by a lookup or a re-sent cancel. Every claimed
    /// payment is tried, whatever happens to the others; returns how many
    /// were resolved, or the first error once all were tried.
    pub async fn resolve_stuck(&self, older_than: Duration, limit: usize) -> Result<usize, Error> {
        assert!(limit > 0 && limit <= crate::store::LOCK_SET_SIZE_MAX, "a completer batch is 1 to 64 payments");
        let now = self.clock.now();
        let before = Timestamp(now.0.saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX)));
        let mut tx = self.store.begin().await?;
        let candidates = tx.stuck_payments(before, limit).await;
        tx.rollback().await;
        let candidates = candidates?;
        if candidates.is_empty() {
            return Ok(0);
        }
        let keys = LockSet::new(candidates.iter().map(|p| LockKey::Payment(p.id)));
        let guard = self.locks.acquire(&keys, self.config.lock_wait).await?;
        let mut tx = self.store.begin().await?;
        let mut claimed = Vec::new();
        for candidate in &candidates {
            let Some(current) = tx.payment(candidate.id).await? else { continue };
            let still_stuck =
                current.status.in_flight() && current.gateway.as_ref().is_some_and(|a| a.started_at < before);
            if still_stuck {
                let touched = current.transition(PaymentEvent::Touch, now)?;
                tx.put_payment(Some(&current), &touched).await?;
                claimed.push(touched);
            }
        }
        tx.commit().await?;
        drop(guard);
        let mut resolved = 0;
        let mut first_error = None;
        for payment in claimed {
            let call = Call::to_resolve(payment.status).expect("claimed payments are in flight");
            match self.call_and_settle(&payment, call, None, Answer::Payment).await {
                Ok(_) => resolved += 1,
                Err(Error::OutcomePending) => {}
                // The mutant abandons the rest of the batch it claimed.
                Err(error) if crate::mutant::active("completer_gives_up") => return Err(error),
                // One payment that cannot be settled now must not starve the
                // others: try them all, report the first failure after.
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(resolved),
        }
    }

    async fn apply(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        command: &Command,
        booking: &Booking,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        let ids = &self.ids;
        let mut next_id = || TransferId(ids.next_id());
        match command {
            Command::TopUp { amount } => {
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                let (next, transfer) = decide::top_up(&wallet, *amount, booking, &mut next_id)?;
                tx.put_wallet(Some(&wallet), &next).await?;
                tx.append_transfers(std::slice::from_ref(&transfer)).await?;
                Ok(Step::Done(Outcome::TopUp { transfer, balance: next.balance }))
            }
            Command::CreatePayment { amount, method } => {
                if *method == Method::Gateway && !self.gateway.enabled() {
                    return Err(Error::InvalidInput("gateway payments are not configured on this server"));
                }
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                // Refuse early what confirm would refuse anyway; confirm checks again.
                if *method == Method::Wallet && wallet.limits.per_payment.is_some_and(|limit| amount.money() > limit) {
                    return Err(WalletError::LimitExceeded(LimitKind::PerPayment).into());
                }
                let payback = Amount::new(payment::payback_of(*amount, self.config.payback_bps).minor_units()).ok();
                let payment = Payment::new(PaymentId(self.ids.next_id()), user, *amount, payback, *method, booking.at)?;
                tx.put_payment(None, &payment).await?;
                Ok(Step::Done(Outcome::Payment(payment)))
            }
            Command::ConfirmPayment { payment, payment_key } => {
                let loaded = tx.payment(*payment).await?.filter(|p| p.user == user).ok_or(Error::NotFound)?;
                if loaded.method == Method::Gateway {
                    return self.begin_gateway_confirm(tx, loaded, payment_key.as_deref(), booking, locked).await;
                }
                if payment_key.is_some() {
                    return Err(Error::InvalidInput("a wallet payment takes no payment_key"));
                }
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                let decision = decide::confirm(&loaded, &wallet, booking, &mut next_id)?;
                self.persist(tx, &loaded, &wallet, &decision).await?;
                self.follow_order(tx, &loaded, &decision.payment, booking.at, locked).await?;
                Ok(Step::Done(Outcome::Payment(decision.payment)))
            }
            Command::CancelPayment { payment } => {
                let loaded = tx.payment(*payment).await?.filter(|p| p.user == user).ok_or(Error::NotFound)?;
                self.cancel_payment(tx, user, loaded, booking, locked, Answer::Payment).await
            }
            Command::CreateOrderPayment { order, method } => {
                self.create_order_payment(tx, user, *order, *method, booking).await
            }
            Command::CreateProduct { name, price, stock, payback_bps } => {
                self.create_product(tx, name, *price, *stock, *payback_bps, booking).await
            }
            Command::Restock { product, quantity } => self.restock(tx, *product, *quantity, booking).await,
            Command::CreateEvent { name, active_limit, token_ttl, max_seats_per_token, showtimes } => {
                let settings = orders::QueueSettings {
                    active_limit: *active_limit,
                    token_ttl: *token_ttl,
                    max_seats_per_token: *max_seats_per_token,
                };
                self.create_event(tx, name, settings, showtimes, booking).await
            }
            Command::JoinQueue { event } => self.join_queue(tx, user, *event, booking).await,
            Command::QueueStatus { token } => self.queue_status(tx, user, *token, booking, locked).await,
            Command::CreateOrder { items, seats, token } => {
                self.create_order(tx, user, items, seats, *token, booking, locked).await
            }
            Command::CancelOrder { order } => self.cancel_order(tx, user, *order, booking, locked).await,
        }
    }

    /// Cancels a payment (and, through [`Tally::follow_order`], the order it
    /// paid). A gateway payment's refund goes through the gateway.
    async fn cancel_payment(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        loaded: Payment,
        booking: &Booking,
        locked: &LockSet,
        answer: Answer,
    ) -> Result<Step, Error> {
        let ids = &self.ids;
        let mut next_id = || TransferId(ids.next_id());
        match (loaded.method, loaded.status) {
            // Money went through the gateway: it must come back through it.
            // Its payback is reversed first, in this transaction: refused
            // now (the cashback was spent) rather than after the card was
            // refunded.
            //
            // The reversal is the payment's, not the key's: the transition
            // (done → cancelling) makes it happen once, whichever request or
            // completer then finishes the cancel, and the key may be freed
            // and re-admitted while the refund's outcome is unknown. The
            // key's one effect is the refund, booked with its completion.
            (Method::Gateway, PaymentStatus::Done) => {
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                let phase = Booking { origin: None, ..booking.clone() };
                let decision = decide::begin_cancel(&loaded, &wallet, &phase, &mut next_id)?;
                self.persist(tx, &loaded, &wallet, &decision).await?;
                Ok(Step::Call(decision.payment, Call::Cancel, answer))
            }
            // A cancel whose outcome is unknown: the gateway's cancel
            // is idempotent, so asking again is safe.
            (Method::Gateway, PaymentStatus::Cancelling) => Ok(Step::Call(loaded, Call::Cancel, answer)),
            _ => {
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                let decision = decide::cancel(&loaded, &wallet, booking, &mut next_id)?;
                self.persist(tx, &loaded, &wallet, &decision).await?;
                let order = self.follow_order(tx, &loaded, &decision.payment, booking.at, locked).await?;
                Ok(Step::Done(match (answer, order) {
                    (Answer::Order, Some(order)) => Outcome::Order(self.order_view(order)),
                    _ => Outcome::Payment(decision.payment),
                }))
            }
        }
    }

    /// `wait → confirming` and commit: the permit to send the confirm once,
    /// with the payment key claimed and the payback's room held. A payment
    /// already confirming (another request is sending it, or one crashed
    /// after sending it) is looked up instead; one owing a refund sends it.
    async fn begin_gateway_confirm(
        &self,
        tx: &mut S::Tx,
        loaded: Payment,
        payment_key: Option<&str>,
        booking: &Booking,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        if let (PaymentStatus::Confirming | PaymentStatus::Refunding, Some(call)) =
            (loaded.status, Call::to_resolve(loaded.status))
        {
            return Ok(Step::Call(loaded, call, Answer::Payment));
        }
        let Some(payment_key) = payment_key else {
            return Err(Error::InvalidInput("a gateway payment is confirmed with its payment_key"));
        };
        // A key belongs to one payment, forever: another payment's key would
        // make one card charge pay two payments (and its refund undo both).
        let unbound = crate::mutant::active("payment_key_unbound");
        if !unbound {
            ensure_key_locked(locked, payment_key)?;
            if tx.payment_by_key(payment_key).await?.is_some_and(|owner| owner != loaded.id) {
                return Err(Error::PaymentKeyInUse);
            }
        }
        let wallet = tx.wallet(loaded.user).await?.ok_or(Error::NotFound)?;
        let (confirming, held) = decide::begin_confirm(&loaded, &wallet, payment_key, booking.at)?;
        tx.put_payment(Some(&loaded), &confirming).await?;
        if held != wallet {
            tx.put_wallet(Some(&wallet), &held).await?;
        }
        // The order is marked as being paid before the charge is sent, so
        // the sweeper cannot expire it while the money may be on its way.
        self.follow_order(tx, &loaded, &confirming, booking.at, locked).await?;
        Ok(Step::Call(confirming, Call::Confirm, Answer::Payment))
    }

    async fn persist(
        &self,
        tx: &mut S::Tx,
        loaded: &Payment,
        wallet: &Wallet,
        decision: &Decision,
    ) -> Result<(), Error> {
        tx.put_payment(Some(loaded), &decision.payment).await?;
        // A gateway charge books transfers without touching the wallet.
        if decision.wallet != *wallet {
            tx.put_wallet(Some(wallet), &decision.wallet).await?;
        }
        if !decision.transfers.is_empty() {
            tx.append_transfers(&decision.transfers).await?;
        }
        Ok(())
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// A payment key is claimed under its lock (the peek that chose the locks
/// saw the request's key, so this only fails on a bug).
fn ensure_key_locked(locked: &LockSet, payment_key: &str) -> Result<(), Error> {
    let key = LockKey::PaymentKey(payment_key.to_owned());
    if locked.keys().binary_search(&key).is_err() {
        return Err(Error::Store(StoreError::Integrity("payment key claimed without its lock".into())));
    }
    Ok(())
}

fn conflicts_exhausted(error: Error) -> Error {
    match error {
        Error::Store(StoreError::Conflict) => Error::Busy("too many concurrent updates; retry"),
        other => other,
    }
}
