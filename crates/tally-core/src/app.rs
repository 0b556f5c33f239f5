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

mod batch;
mod catalog;
mod gateway_phase;
mod locking;
mod orders;
mod payments;
mod pipeline;
mod queue;
mod sweeper;

pub use batch::{BATCH_MAX_LIMIT, BATCH_OVERLAP_LIMIT, BATCH_SHARDS_LIMIT};
pub use catalog::{EventView, NewSeat, NewShowtime, QueueSettings, ShowtimeView};
pub use gateway_phase::Completion;
pub use queue::TokenView;

use crate::catalog::{Event, Product};
use crate::check::Snapshot;
use crate::decide::{self, Call, Decision, Verdict, VerdictDecision};
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
use crate::store::{Fenced as _, Fences, LockKey, LockManager, LockSet, Store, StoreError, Tx, User};
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
    /// How long after a give-up the payment's key is still looked up, and a
    /// charge of ours that lands refunded: longer than any gateway holds a
    /// confirm before carrying it out.
    pub gateway_watch_after_give_up: Duration,
    /// Test hook: pause this long between the gateway's answer and recording
    /// it (zero: off). The crash tests kill the process inside the pause.
    pub pause_after_gateway: Duration,
    /// How long an unpaid order holds its stock and seats.
    pub order_ttl: Duration,
    /// The merchant's default payback, in basis points: of a payment for an
    /// amount, of an order's seats, and of a product created without a rate.
    pub payback_bps: u32,
    /// Group commit: at most this many keyed requests share one transaction
    /// (`batch`). 0 or 1: off, every request commits alone. At most
    /// [`BATCH_MAX_LIMIT`].
    pub batch_max: usize,
    /// Group commit: how many queues users are spread over (a user's
    /// requests always meet in one), so at most this many batches run at
    /// once. 1 to [`BATCH_SHARDS_LIMIT`].
    pub batch_shards: usize,
    /// Group commit: how many of a queue's batches may be waiting for their
    /// commit while the next one runs its statements. 0: a batch starts only
    /// once the previous one's commit returned. At most
    /// [`BATCH_OVERLAP_LIMIT`]. Correct under every store (a later batch
    /// waits for an earlier one's locks, or conflicts and runs again); fast
    /// where the store's reads wait for row locks (pessimistic, advisory).
    pub batch_overlap: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            idempotency: IdemConfig { ttl: Duration::from_secs(24 * 60 * 60), lease: Duration::from_secs(60) },
            lock_wait: Duration::from_secs(5),
            attempts_max: 8,
            gateway_give_up_after: Duration::from_secs(120),
            gateway_watch_after_give_up: Duration::from_secs(60 * 60),
            pause_after_gateway: Duration::ZERO,
            order_ttl: Duration::from_secs(300),
            payback_bps: 0,
            batch_max: 1,
            batch_shards: 8,
            batch_overlap: 0,
        }
    }
}

/// Largest ledger page.
pub const LEDGER_PAGE_MAX: usize = 100;

/// A mutating use case and its validated input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    TopUp {
        amount: Amount,
    },
    /// The payback is the merchant's policy ([`Config::payback_bps`]),
    /// never the customer's choice. `confirm`: a wallet payment created and
    /// confirmed in one step (Stripe's `confirm=true`), in one transaction:
    /// it is `done`, or refused and not created at all.
    CreatePayment {
        amount: Amount,
        method: Method,
        confirm: bool,
    },
    /// `payment_key`: the gateway's key for a gateway payment (none for a wallet one).
    ConfirmPayment {
        payment: PaymentId,
        payment_key: Option<String>,
    },
    CancelPayment {
        payment: PaymentId,
    },
    /// A payment for an order: the amount is the order's total. `confirm`
    /// as for [`Command::CreatePayment`]: the order is `paid` at once.
    CreateOrderPayment {
        order: OrderId,
        method: Method,
        confirm: bool,
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

/// What a gateway phase answers once its verdict is recorded: the payment, or (an order
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
    fingerprint: Fingerprint,
    render: &'r Render,
}

/// Where the locked part of a command ended.
enum Step {
    Done(Outcome),
    /// Committed the intent; now call the gateway about this payment.
    Call(Payment, Call, Answer),
    /// The key already answers, or is busy: nothing ran.
    Answered(Admission),
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
    batchers: batch::Batchers,
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
        assert!(config.batch_max <= BATCH_MAX_LIMIT, "a batch holds at most {BATCH_MAX_LIMIT} requests");
        let batchers = batch::Batchers::new(config.batch_shards, config.batch_overlap);
        Tally { store, locks, clock, gateway: NoGateway, ids, config, batchers }
    }

    /// The same use cases, confirming gateway payments through `gateway`.
    pub fn with_gateway<G: Gateway>(self, gateway: G) -> Tally<S, L, C, G> {
        let Tally { store, locks, clock, ids, config, batchers, .. } = self;
        Tally { store, locks, clock, gateway, ids, config, batchers }
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

    /// Fresh transfer ids, for the decisions that book transfers.
    fn transfer_ids(&self) -> impl FnMut() -> TransferId + '_ {
        || TransferId(self.ids.next_id())
    }

    /// How many requests have run in a group commit of two or more since
    /// this instance started (coverage for the simulation's report).
    pub fn requests_batched_together(&self) -> u64 {
        self.batchers.shared()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        Ok(self.store.snapshot().await?)
    }

    /// Creates a user and their empty wallet.
    pub async fn create_user(&self, name: &str, limits: Limits, key_hash: [u8; 32]) -> Result<User, Error> {
        let name = crate::catalog::label(name)
            .ok_or(Error::InvalidInput("name must be 1 to 200 characters, without control characters"))?;
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
    #[cfg(feature = "mutants")]
    pub async fn forget_key(&self, user: UserId, key: crate::idempotency::IdemKey) -> Result<(), Error> {
        let scope = IdemScope { user, key };
        let keys = LockSet::new([LockKey::Idempotency(scope.clone())]);
        let guard = self.locks.acquire(&keys, self.config.lock_wait).await?;
        let mut tx = self.store.begin_locked(&keys, &guard.fences(), self.config.lock_wait).await?;
        if let Some(record) = tx.idempotency(&scope).await? {
            tx.delete_idempotency(&record).await?;
        }
        Ok(tx.commit().await?)
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

fn conflicts_exhausted(error: Error) -> Error {
    match error {
        Error::Store(StoreError::Conflict) => Error::Busy("too many concurrent updates; retry"),
        Error::Store(StoreError::Fenced) => Error::Busy("locks kept being lost to later holders; retry"),
        other => other,
    }
}

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    /// Whether a locked transaction's `attempt` that failed with `error` is
    /// tried again: a conflict is, and so is a fenced transaction (its locks
    /// went to a later holder; the next attempt takes them anew), a bounded
    /// number of times; anything else, or the last attempt, fails the request.
    fn retry_or_fail(&self, attempt: u32, error: Error) -> Result<(), Error> {
        let retryable = matches!(error, Error::Store(StoreError::Conflict | StoreError::Fenced));
        if retryable && attempt < self.config.attempts_max {
            return Ok(());
        }
        Err(conflicts_exhausted(error))
    }
}
