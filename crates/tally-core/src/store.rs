//! The traits the use cases are written against: a transactional store and a
//! lock manager.
//!
//! A use case runs as *lock → begin → load → decide → persist → commit*. The
//! [`LockManager`] serialises use cases that touch the same records; the
//! [`Tx`] gives all-or-nothing writes. Backends split the work differently —
//! the in-memory store relies on the in-memory lock manager, PostgreSQL's
//! pessimistic strategy on `SELECT … FOR UPDATE` (with [`NoLocks`] here), its
//! optimistic strategy on version checks that fail with
//! [`StoreError::Conflict`] (the use cases retry, bounded) — but the use cases
//! and their decisions are the same code for all of them.
//!
//! Every `put_*` takes the record as loaded (`before`) and as decided
//! (`after`). A locking backend writes `after`; an optimistic one writes it
//! only if the stored version still equals `before.version`; a conditional
//! backend can derive the delta. Loads happen in [`LockKey`] order so that
//! backends whose loads take row locks take them in the global order too.

use std::future::Future;
use std::time::Duration;

use crate::catalog::{Event, Product, Seat, Showtime};
use crate::idempotency::{IdemRecord, IdemScope};
use crate::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, ShowtimeId, TokenId, UserId};
use crate::ledger::Transfer;
use crate::order::Order;
use crate::payment::Payment;
use crate::queue::{QueueToken, TokenStatus};
use crate::time::Timestamp;
use crate::wallet::Wallet;

/// A user of the service. The API key itself is never stored, only its hash
/// (computed by the HTTP layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub key_hash: [u8; 32],
    pub created_at: Timestamp,
}

/// One record's write in a group commit's flush (see `Tx::put_wallets`):
/// the record as loaded (`None`: a new record) and as decided, exactly the
/// two arguments of the single-record `put_*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put<V> {
    pub before: Option<V>,
    pub after: V,
}

/// The default of a multi-record load (`Tx::wallets`, …): each key loaded
/// in turn by the single-record call, keeping the records that exist, in the
/// keys' order. (A macro, not a function taking an async closure: the
/// future must be `Send` for every `Tx`, which a closure's borrow of `self`
/// cannot yet promise.)
macro_rules! load_each {
    ($keys:expr, |$key:ident| $load:expr) => {
        async move {
            let keys = $keys;
            let mut found = Vec::with_capacity(keys.len());
            for $key in keys {
                found.extend($load.await?);
            }
            Ok(found)
        }
    };
}

/// The default of a multi-record write (`Tx::put_wallets`, …): each record
/// written in turn by the single-record call, stopping at the first error.
macro_rules! put_each {
    ($puts:expr, |$before:ident, $after:ident| $put:expr) => {
        async move {
            for put in $puts {
                let ($before, $after) = (put.before.as_ref(), &put.after);
                $put.await?;
            }
            Ok(())
        }
    };
}

/// Failures of the storage layer, as the use cases see them.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A concurrent writer changed a record this transaction read (optimistic
    /// version check, serialization failure, deadlock victim). Nothing was
    /// written; the use case may retry from the start.
    #[error("concurrent update conflict")]
    Conflict,
    /// The commit may or may not have happened (the connection died while
    /// committing). The caller cannot know; idempotency resolves it.
    #[error("commit outcome unknown")]
    Ambiguous,
    /// The store cannot be reached or refused service (pool exhausted, timeout).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The record is locked by another transaction and the caller asked not
    /// to wait (idempotency admission: a locked key is a key in flight).
    #[error("record locked by another transaction")]
    Busy,
    /// A lock this transaction was granted has since been granted again,
    /// with a larger fencing token (the holder's lease ran out: a pause, a
    /// stall). Nothing of this transaction is written; the use case may
    /// retry from the start, under a new grant.
    #[error("fenced: a lock was granted to a later holder")]
    Fenced,
    /// A constraint the code should have made impossible fired: a bug.
    #[error("integrity violation: {0}")]
    Integrity(String),
}

/// A store: something that opens transactions.
pub trait Store: Send + Sync + 'static {
    type Tx: Tx;

    fn begin(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;

    /// A transaction that holds `keys` (already granted by the lock manager)
    /// until it ends. A backend that locks inside its transactions
    /// (PostgreSQL's advisory strategy) takes them here, in the set's order,
    /// waiting at most `wait` (zero: not at all, `StoreError::Busy` if one is
    /// held); every other backend relies on the lock manager and just begins.
    ///
    /// `fences` are the grant's fencing tokens (empty for a lock manager
    /// without leases). A backend that checks them claims each key's token
    /// here, refusing with [`StoreError::Fenced`] a token smaller than one
    /// already claimed, and its commit fails with `Fenced` if a later grant
    /// claimed a key since. Claiming at begin, not at write, is what makes a
    /// read-modify-write safe: a zombie that read before the new holder
    /// claimed cannot commit after it.
    fn begin_locked(
        &self,
        keys: &LockSet,
        fences: &Fences,
        wait: Duration,
    ) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send {
        let _ = (keys, fences, wait);
        self.begin()
    }

    /// A transaction for looking only: its loads never take row locks or
    /// wait for them, and it is rolled back, never committed. Use cases peek
    /// to learn which keys to lock; what they then load under the locks is
    /// checked again.
    fn peek(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send {
        self.begin()
    }

    /// Everything the invariant checker reads. Meant for tests, the
    /// simulation and the load tool's final check, not for the request path.
    fn snapshot(&self) -> impl Future<Output = Result<crate::check::Snapshot, StoreError>> + Send;
}

/// One transaction. Dropping it without `commit` rolls it back.
pub trait Tx: Send {
    fn user(&mut self, id: UserId) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;
    fn user_by_key_hash(&mut self, key_hash: [u8; 32])
    -> impl Future<Output = Result<Option<User>, StoreError>> + Send;
    fn insert_user(&mut self, user: &User) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn wallet(&mut self, user: UserId) -> impl Future<Output = Result<Option<Wallet>, StoreError>> + Send;
    /// The wallets of `users` that exist, as [`Tx::payments`] loads payments.
    fn wallets(&mut self, users: &[UserId]) -> impl Future<Output = Result<Vec<Wallet>, StoreError>> + Send {
        load_each!(users, |user| self.wallet(*user))
    }
    /// Writes many wallets, as [`Tx::put_payments`] writes payments.
    fn put_wallets(&mut self, puts: &[Put<Wallet>]) -> impl Future<Output = Result<(), StoreError>> + Send {
        put_each!(puts, |before, after| self.put_wallet(before, after))
    }
    fn put_wallet(
        &mut self,
        before: Option<&Wallet>,
        after: &Wallet,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn payment(&mut self, id: PaymentId) -> impl Future<Output = Result<Option<Payment>, StoreError>> + Send;
    /// The payments of `ids` that exist (a group commit's preload: one read
    /// for the batch), each loaded as [`Tx::payment`] loads it; rows are
    /// locked in the order of the ids. The default loads them one by one.
    fn payments(&mut self, ids: &[PaymentId]) -> impl Future<Output = Result<Vec<Payment>, StoreError>> + Send {
        load_each!(ids, |id| self.payment(*id))
    }
    /// Writes many payments, each as [`Tx::put_payment`] writes it, under
    /// the same guards: if any guard fails nothing may be relied on and the
    /// answer is [`StoreError::Conflict`]. At most one write per payment.
    fn put_payments(&mut self, puts: &[Put<Payment>]) -> impl Future<Output = Result<(), StoreError>> + Send {
        put_each!(puts, |before, after| self.put_payment(before, after))
    }
    /// The payment that claimed gateway payment key `key`, if any. A key is
    /// claimed once, forever (SPEC.md): the store also refuses a second
    /// payment with the same key (a unique constraint, reported as
    /// [`StoreError::Conflict`] so that the loser decides again on what won).
    fn payment_by_key(&mut self, key: &str) -> impl Future<Output = Result<Option<PaymentId>, StoreError>> + Send;
    fn put_payment(
        &mut self,
        before: Option<&Payment>,
        after: &Payment,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gateway payments in `confirming`, `cancelling` or `refunding`, or
    /// failed and watched for a late charge, whose attempt was last claimed
    /// before `before`, at most `limit`: the completer's work. Payments in
    /// flight come first (a burst of watched ones must not hold up a charge
    /// still unresolved), then watched ones; each oldest claim first.
    fn stuck_payments(
        &mut self,
        before: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Payment>, StoreError>> + Send;

    /// Appends ledger lines. The ledger is append-only: nothing updates or
    /// deletes a transfer.
    fn append_transfers(&mut self, transfers: &[Transfer]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A wallet's transfers with `seq > after_seq`, in `seq` order, at most `limit`.
    fn wallet_ledger(
        &mut self,
        user: UserId,
        after_seq: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Transfer>, StoreError>> + Send;

    fn idempotency(&mut self, scope: &IdemScope)
    -> impl Future<Output = Result<Option<IdemRecord>, StoreError>> + Send;
    /// The idempotency record for admission: like [`Tx::idempotency`], but a
    /// backend whose loads take row locks must not wait for one here — it
    /// answers [`StoreError::Busy`], because a locked key is a key in flight.
    fn idempotency_no_wait(
        &mut self,
        scope: &IdemScope,
    ) -> impl Future<Output = Result<Option<IdemRecord>, StoreError>> + Send {
        self.idempotency(scope)
    }
    /// The records of `scopes` that exist, each loaded as
    /// [`Tx::idempotency_no_wait`] loads it (`Busy` if any is held), as
    /// [`Tx::payments`] loads payments.
    fn idempotency_records_no_wait(
        &mut self,
        scopes: &[IdemScope],
    ) -> impl Future<Output = Result<Vec<IdemRecord>, StoreError>> + Send {
        load_each!(scopes, |scope| self.idempotency_no_wait(scope))
    }
    fn put_idempotency(
        &mut self,
        before: Option<&IdemRecord>,
        after: &IdemRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Writes many idempotency records, as [`Tx::put_payments`] writes payments.
    fn put_idempotency_records(
        &mut self,
        puts: &[Put<IdemRecord>],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        put_each!(puts, |before, after| self.put_idempotency(before, after))
    }
    fn delete_idempotency(&mut self, before: &IdemRecord) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes at most `limit` idempotency records that expired at or before
    /// `now`, oldest first; returns how many. An expired record is forgotten
    /// either way (admission treats it as absent); reaping bounds the table.
    fn reap_idempotency(
        &mut self,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    // The catalogue. Products, events, showtimes and seats are created once
    // (`before: None`); afterwards only a product's stock, an event's queue
    // counters and a seat's status change.

    fn product(&mut self, id: ProductId) -> impl Future<Output = Result<Option<Product>, StoreError>> + Send;
    fn put_product(
        &mut self,
        before: Option<&Product>,
        after: &Product,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn event(&mut self, id: EventId) -> impl Future<Output = Result<Option<Event>, StoreError>> + Send;
    fn put_event(
        &mut self,
        before: Option<&Event>,
        after: &Event,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn insert_showtime(&mut self, showtime: &Showtime) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn showtime(&mut self, id: ShowtimeId) -> impl Future<Output = Result<Option<Showtime>, StoreError>> + Send;
    /// An event's showtimes, by start time then id.
    fn showtimes(&mut self, event: EventId) -> impl Future<Output = Result<Vec<Showtime>, StoreError>> + Send;
    /// Seats are inserted with `put_seat(None, …)`; this lists a showtime's
    /// seats by label then id, unlocked (a read for display).
    fn seats(&mut self, showtime: ShowtimeId) -> impl Future<Output = Result<Vec<Seat>, StoreError>> + Send;
    fn seat(&mut self, id: SeatId) -> impl Future<Output = Result<Option<Seat>, StoreError>> + Send;
    fn put_seat(&mut self, before: Option<&Seat>, after: &Seat) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn order(&mut self, id: OrderId) -> impl Future<Output = Result<Option<Order>, StoreError>> + Send;
    /// The order for the expiry sweeper: like [`Tx::order`], but a backend
    /// whose loads take row locks skips an order another transaction holds
    /// (`FOR UPDATE SKIP LOCKED`) and answers `None`, so several sweepers
    /// share the work instead of queueing behind each other or a payment.
    fn order_skip_locked(&mut self, id: OrderId) -> impl Future<Output = Result<Option<Order>, StoreError>> + Send {
        self.order(id)
    }
    fn put_order(
        &mut self,
        before: Option<&Order>,
        after: &Order,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Unpaid orders (pending, nothing paying) whose TTL ended at or before
    /// `now`, oldest deadline first, at most `limit`: the sweeper's work. A
    /// plain read; the sweeper re-checks each under its lock.
    fn expired_orders(
        &mut self,
        now: crate::time::Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OrderId>, StoreError>> + Send;

    fn token(&mut self, id: TokenId) -> impl Future<Output = Result<Option<QueueToken>, StoreError>> + Send;
    fn put_token(
        &mut self,
        before: Option<&QueueToken>,
        after: &QueueToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// An event's tokens with `status`, in join order, at most `limit`.
    fn tokens(
        &mut self,
        event: EventId,
        status: TokenStatus,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<QueueToken>, StoreError>> + Send;
    /// The user's newest token for the event, whatever its status.
    fn user_token(
        &mut self,
        event: EventId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<QueueToken>, StoreError>> + Send;

    /// Whether every record this transaction loaded (wallets, payments,
    /// orders, the catalogue, queue tokens) is still as it loaded it, apart
    /// from its own writes: `Err(Conflict)` if another transaction changed
    /// one since. A refusal writes nothing, so no write guard checks what it
    /// was decided on, and reads taken at different moments may disagree
    /// (a payment read before a racing cancel committed, its wallet after):
    /// the use cases ask this before answering a refusal, and decide again
    /// on a conflict. A backend whose loads lock their rows, or run under
    /// the use case's locks, read one consistent state and check nothing.
    fn reads_unchanged(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }

    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn rollback(self) -> impl Future<Output = ()> + Send;
}

/// What a use case locks. The derived order *is* the global lock order:
/// every multi-key acquisition takes its keys sorted, so no two use cases can
/// wait on each other in a cycle. New kinds of record get new variants.
///
/// Backends whose loads lock rows load in this order too: idempotency record,
/// payment key (a unique index, not a row), payment, wallet, order, products (by id), seats (by id), and last the
/// event row that guards its queue tokens.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockKey {
    Idempotency(IdemScope),
    /// A gateway payment key: whoever claims it for a payment holds it, so
    /// two payments cannot claim one key at once.
    PaymentKey(String),
    Payment(PaymentId),
    Wallet(UserId),
    Order(OrderId),
    Product(ProductId),
    Seat(SeatId),
    /// An event's waiting queue: its counters and all its tokens.
    Queue(EventId),
}

/// A group commit never locks more than this many keys at once.
pub const BATCH_LOCK_SET_SIZE_MAX: usize = 1_024;

/// A sorted, de-duplicated set of lock keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockSet(Vec<LockKey>);

impl LockKey {
    /// The key's name outside this process (a lock in Redis, an advisory
    /// lock or a fence row in PostgreSQL): one text per key, the same on
    /// every instance. Exhaustive, so a new kind of key cannot go unnamed.
    pub fn name(&self) -> String {
        match self {
            LockKey::Idempotency(scope) => format!("idempotency:{:032x}:{}", scope.user.0, scope.key.as_str()),
            LockKey::PaymentKey(payment_key) => format!("payment-key:{payment_key}"),
            LockKey::Payment(id) => format!("payment:{:032x}", id.0),
            LockKey::Wallet(id) => format!("wallet:{:032x}", id.0),
            LockKey::Order(id) => format!("order:{:032x}", id.0),
            LockKey::Product(id) => format!("product:{:032x}", id.0),
            LockKey::Seat(id) => format!("seat:{:032x}", id.0),
            LockKey::Queue(id) => format!("queue:{:032x}", id.0),
        }
    }
}

/// A use case never locks more than this many keys at once. The largest set
/// is an order's: its idempotency key, payment key, payment, wallet, order,
/// 10 products, 10 seats and its event's queue — 26.
pub const LOCK_SET_SIZE_MAX: usize = 64;

impl LockSet {
    pub fn new(keys: impl IntoIterator<Item = LockKey>) -> LockSet {
        LockSet::bounded(keys, LOCK_SET_SIZE_MAX)
    }

    /// The union of a group commit's lock sets (see `app::batch`): larger
    /// than one use case's, bounded by [`BATCH_LOCK_SET_SIZE_MAX`].
    pub fn for_batch(keys: impl IntoIterator<Item = LockKey>) -> LockSet {
        LockSet::bounded(keys, BATCH_LOCK_SET_SIZE_MAX)
    }

    /// `keys` in the global lock order, once each, and at most `max` of them.
    fn bounded(keys: impl IntoIterator<Item = LockKey>, max: usize) -> LockSet {
        let mut keys: Vec<LockKey> = keys.into_iter().collect();
        keys.sort();
        keys.dedup();
        assert!(keys.len() <= max, "lock set of {} keys, above {max}", keys.len());
        LockSet(keys)
    }

    pub fn keys(&self) -> &[LockKey] {
        &self.0
    }
}

/// The fencing tokens of one lock grant: for each key granted, a number
/// larger than that of every earlier grant of the key. A lock manager whose
/// grants can end without the holder knowing (a lease) hands them to the
/// store, which refuses a transaction whose token is no longer the latest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fences(Vec<(LockKey, u64)>);

impl Fences {
    /// `tokens` in the global lock order, one per key.
    pub fn new(tokens: impl IntoIterator<Item = (LockKey, u64)>) -> Fences {
        let mut tokens: Vec<(LockKey, u64)> = tokens.into_iter().collect();
        tokens.sort();
        tokens.dedup_by(|a, b| a.0 == b.0);
        Fences(tokens)
    }

    pub fn tokens(&self) -> &[(LockKey, u64)] {
        &self.0
    }

    pub fn get(&self, key: &LockKey) -> Option<u64> {
        let index = self.0.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(self.0[index].1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A lock grant that can name its fencing tokens.
pub trait Fenced {
    fn fences(&self) -> Fences;
}

/// Lock managers without leases grant nothing to fence.
impl Fenced for () {
    fn fences(&self) -> Fences {
        Fences::default()
    }
}

#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockError {
    #[error("lock wait timed out")]
    Timeout,
    #[error("too many waiters for a lock")]
    QueueFull,
    /// The lock service could not be reached or did not answer in time (a
    /// lock manager outside the process: Redis). Nothing was granted.
    #[error("lock service unavailable")]
    Unavailable,
}

/// Grants exclusive access to the keys of a [`LockSet`] until the guard drops.
pub trait LockManager: Send + Sync + 'static {
    type Guard: Send + Fenced;

    /// Waits at most `timeout` (of the manager's clock) for all of `keys`.
    fn acquire(&self, keys: &LockSet, timeout: Duration)
    -> impl Future<Output = Result<Self::Guard, LockError>> + Send;
}

/// For backends whose transactions lock by themselves (PostgreSQL's
/// `FOR UPDATE`) or that detect conflicts on write (optimistic versions).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLocks;

impl LockManager for NoLocks {
    type Guard = ();

    fn acquire(&self, _keys: &LockSet, _timeout: Duration) -> impl Future<Output = Result<(), LockError>> + Send {
        std::future::ready(Ok(()))
    }
}
