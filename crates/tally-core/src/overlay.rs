//! [`Overlay`]: one transaction shared by the requests of a group commit.
//!
//! The batcher (`app::batch`) runs many requests, one after another, on one
//! store transaction and commits once. The overlay sits between the use
//! cases and that transaction and owns what makes this equal to running them
//! one by one:
//!
//! - **Reads see the batch's own writes.** The first read of a record loads
//!   it from the inner transaction (under the batch's locks); every later
//!   read, by this request or the next, is the record as the batch left it.
//!   So a payment decided after a top-up in the same batch sees the top-up.
//! - **Writes are checked like a store checks them.** `put_*(before, after)`
//!   refuses (`StoreError::Conflict`) a `before` that is not the overlay's
//!   current value, as an optimistic store's version check would.
//! - **Checkpoints.** [`Overlay::mark`] / [`Overlay::rollback_to`] undo one
//!   request's writes (a refusal, a conflict) without touching the others'.
//! - **Coalesced writes.** [`Overlay::flush`] writes each changed record
//!   **once**, as `put_x(as first loaded, as finally decided)`, and every
//!   buffered transfer in one `append_transfers` call: a hot wallet touched by
//!   N requests is one row update per batch. The atomic strategy derives its
//!   delta and guards from `before`/`after` and the wallet's ledger lines, so
//!   the coalesced write is guarded as tightly as the N single ones.
//!
//! Set queries (`stuck_payments`, `wallet_ledger`, `showtimes`, `seats`,
//! `expired_orders`, `tokens`, `user_token`, `payment_by_key`,
//! `order_skip_locked`, `reap_idempotency`) and the inserts of users and
//! showtimes are **not batchable**: merging them with buffered writes would
//! be a second copy of each query. They answer `StoreError::Conflict` without
//! touching the inner transaction; the batcher rolls that request back to its
//! mark and runs it alone, on the unbatched path. (The batcher sends the
//! commands that always need them — queue tokens, seats, events, gateway
//! confirms — to that path directly.)
//!
//! Any error of the inner transaction poisons the overlay (PostgreSQL aborts
//! a transaction on any failed statement, and `NOWAIT` fails one): the
//! batcher checks [`Overlay::poisoned`] after every request and gives up the
//! whole batch.

use std::collections::BTreeMap;

use crate::catalog::{Event, Product, Seat, Showtime};
use crate::idempotency::{IdemRecord, IdemScope};
use crate::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, ShowtimeId, TokenId, UserId};
use crate::ledger::Transfer;
use crate::order::Order;
use crate::payment::Payment;
use crate::queue::{QueueToken, TokenStatus};
use crate::store::{LockKey, Put, StoreError, Tx, User};
use crate::time::Timestamp;
use crate::wallet::Wallet;

/// A point to roll back to: everything written after it is undone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    seq: u64,
    transfers: usize,
}

/// One record as the batch sees it.
#[derive(Clone, Debug)]
struct Entry<V> {
    /// As loaded from the inner transaction (`None`: absent there).
    original: Option<V>,
    /// As the batch left it (`None`: absent, or deleted).
    current: Option<V>,
}

/// The records of one family, with the undo log of their writes.
#[derive(Debug)]
struct Cache<K, V> {
    entries: BTreeMap<K, Entry<V>>,
    /// (write sequence number, key, the entry's `current` before the write).
    undo: Vec<(u64, K, Option<V>)>,
}

impl<K: Ord + Clone, V: Clone + PartialEq> Cache<K, V> {
    fn new() -> Self {
        Cache { entries: BTreeMap::new(), undo: Vec::new() }
    }

    fn loaded(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    fn fill(&mut self, key: K, value: Option<V>) {
        debug_assert!(!self.entries.contains_key(&key), "a record is loaded from the inner transaction once");
        self.entries.insert(key, Entry { original: value.clone(), current: value });
    }

    /// What a request reads. The `batch_stale_balance` mutant serves the
    /// record as first loaded, ignoring the batch's earlier writes.
    fn read(&self, key: &K) -> Option<V> {
        let entry = self.entries.get(key)?;
        if crate::mutant::active("batch_stale_balance") { entry.original.clone() } else { entry.current.clone() }
    }

    /// Writes `after` (or deletes, with `None`) where the caller read
    /// `before`. A record never read through the overlay, or read in
    /// another state, is a conflict, as a store's version check makes it.
    fn write(&mut self, seq: u64, key: K, before: Option<&V>, after: Option<V>) -> Result<(), StoreError> {
        let seen = match self.entries.get(&key) {
            Some(_) => self.read(&key),
            // Only a fresh record (an insert) may be written unread: its id
            // is new, so the inner transaction cannot hold it.
            None if before.is_none() => {
                self.fill(key.clone(), None);
                None
            }
            None => return Err(StoreError::Conflict),
        };
        if seen.as_ref() != before {
            return Err(StoreError::Conflict);
        }
        let entry = self.entries.get_mut(&key).expect("filled above");
        let previous = std::mem::replace(&mut entry.current, after);
        self.undo.push((seq, key, previous));
        Ok(())
    }

    /// Fills each of `keys` (not loaded yet, distinct) with its record among
    /// `found` (what one multi-record load returned), or absent.
    fn fill_all(&mut self, keys: Vec<K>, found: Vec<V>, key_of: impl Fn(&V) -> K) {
        let mut found: BTreeMap<K, V> = found.into_iter().map(|value| (key_of(&value), value)).collect();
        for key in keys {
            let value = found.remove(&key);
            self.fill(key, value);
        }
    }

    /// The changed records that still exist, as the multi-record writes
    /// take them (deletions are left to the caller).
    fn puts(&self) -> Vec<Put<V>> {
        self.changes()
            .filter_map(|(_, before, after)| Some(Put { before: before.cloned(), after: after?.clone() }))
            .collect()
    }

    fn rollback_to(&mut self, seq: u64) {
        while self.undo.last().is_some_and(|(s, _, _)| *s >= seq) {
            let (_, key, previous) = self.undo.pop().expect("checked above");
            self.entries.get_mut(&key).expect("an undone write was made on a loaded record").current = previous;
        }
    }

    /// The changed records, in key order, as (as loaded, as decided).
    fn changes(&self) -> impl Iterator<Item = (&K, Option<&V>, Option<&V>)> {
        self.entries
            .iter()
            .filter(|(_, entry)| entry.original != entry.current)
            .map(|(key, entry)| (key, entry.original.as_ref(), entry.current.as_ref()))
    }
}

/// The batch's view of one inner transaction. See the module doc.
pub struct Overlay<T> {
    inner: T,
    seq: u64,
    wallets: Cache<UserId, Wallet>,
    payments: Cache<PaymentId, Payment>,
    idempotency: Cache<IdemScope, IdemRecord>,
    products: Cache<ProductId, Product>,
    events: Cache<EventId, Event>,
    seats: Cache<SeatId, Seat>,
    orders: Cache<OrderId, Order>,
    tokens: Cache<TokenId, QueueToken>,
    transfers: Vec<Transfer>,
    poisoned: Option<StoreError>,
}

impl<T> std::fmt::Debug for Overlay<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("writes", &self.seq)
            .field("transfers", &self.transfers.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Loads a record into `$cache` from the inner transaction on first use,
/// then answers the batch's current value.
macro_rules! cached {
    ($self:ident, $cache:ident, $key:expr, $load:ident) => {
        cached!($self, $cache, $key, key => $self.inner.$load(key.clone()))
    };
    // `$load` reads the record of `$k` from the inner transaction.
    ($self:ident, $cache:ident, $key:expr, $k:ident => $load:expr) => {{
        let $k = $key;
        if !$self.$cache.loaded(&$k) {
            let loaded = $load.await;
            let loaded = $self.track(loaded)?;
            $self.$cache.fill($k.clone(), loaded);
        }
        Ok($self.$cache.read(&$k))
    }};
}

/// A write through `$cache`'s check, recorded for undo.
macro_rules! write {
    ($self:ident, $cache:ident, $key:expr, $before:expr, $after:expr) => {{
        $self.seq += 1;
        $self.$cache.write($self.seq, $key, $before, $after)
    }};
}

/// A versioned record's load through the cache and its write through the
/// check, as a pair of `Tx` methods.
macro_rules! cached_record {
    ($load:ident, $put:ident, $cache:ident, $id:ty => $record:ty, keyed by $key:ident) => {
        async fn $load(&mut self, id: $id) -> Result<Option<$record>, StoreError> {
            cached!(self, $cache, id, $load)
        }

        async fn $put(&mut self, before: Option<&$record>, after: &$record) -> Result<(), StoreError> {
            write!(self, $cache, after.$key, before, Some(after.clone()))
        }
    };
}

impl<T: Tx> Overlay<T> {
    pub fn new(inner: T) -> Overlay<T> {
        Overlay {
            inner,
            seq: 0,
            wallets: Cache::new(),
            payments: Cache::new(),
            idempotency: Cache::new(),
            products: Cache::new(),
            events: Cache::new(),
            seats: Cache::new(),
            orders: Cache::new(),
            tokens: Cache::new(),
            transfers: Vec::new(),
            poisoned: None,
        }
    }

    /// The inner transaction failed a statement: nothing more may run on it.
    pub fn poisoned(&self) -> Option<&StoreError> {
        self.poisoned.as_ref()
    }

    fn track<V>(&mut self, result: Result<V, StoreError>) -> Result<V, StoreError> {
        if let Err(error) = &result {
            self.poisoned.get_or_insert_with(|| error.clone());
        }
        result
    }

    pub fn mark(&self) -> Mark {
        Mark { seq: self.seq + 1, transfers: self.transfers.len() }
    }

    /// Undoes every write made after `mark`; reads stay cached (they are
    /// what the inner transaction holds, under the batch's locks).
    pub fn rollback_to(&mut self, mark: Mark) {
        self.wallets.rollback_to(mark.seq);
        self.payments.rollback_to(mark.seq);
        self.idempotency.rollback_to(mark.seq);
        self.products.rollback_to(mark.seq);
        self.events.rollback_to(mark.seq);
        self.seats.rollback_to(mark.seq);
        self.orders.rollback_to(mark.seq);
        self.tokens.rollback_to(mark.seq);
        self.transfers.truncate(mark.transfers);
    }

    /// Loads the records behind `keys` (a lock set: sorted, distinct), so
    /// that a batch loads its records in the global lock order, as one use
    /// case does: under PostgreSQL's pessimistic strategy loads take row
    /// locks. Wallets, payments and idempotency records are loaded with one
    /// multi-record read per kind (the kinds come in lock order, and the
    /// store locks each kind's rows in key order); the rarer kinds one by one.
    pub async fn preload(&mut self, keys: &[LockKey]) -> Result<(), StoreError> {
        let mut rest = keys;
        while let Some(first) = rest.first() {
            let run =
                rest.iter().take_while(|key| std::mem::discriminant(*key) == std::mem::discriminant(first)).count();
            let (group, tail) = rest.split_at(run);
            rest = tail;
            // One read for the group's records of `$variant` not loaded yet.
            macro_rules! preload_all {
                ($cache:ident, $variant:ident, $load:ident, $key_of:expr) => {{
                    let ids: Vec<_> = group
                        .iter()
                        .filter_map(|key| match key {
                            LockKey::$variant(id) => Some(id.clone()),
                            _ => None,
                        })
                        .filter(|id| !self.$cache.loaded(id))
                        .collect();
                    if !ids.is_empty() {
                        let found = self.inner.$load(&ids).await;
                        let found = self.track(found)?;
                        self.$cache.fill_all(ids, found, $key_of);
                    }
                }};
            }
            match first {
                LockKey::Idempotency(_) => {
                    preload_all!(idempotency, Idempotency, idempotency_records_no_wait, |r: &IdemRecord| r
                        .scope
                        .clone())
                }
                LockKey::Payment(_) => preload_all!(payments, Payment, payments, |p: &Payment| p.id),
                LockKey::Wallet(_) => preload_all!(wallets, Wallet, wallets, |w: &Wallet| w.user),
                _ => {
                    for key in group {
                        self.preload_one(key).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Loads the record behind `key`, if it names one.
    async fn preload_one(&mut self, key: &LockKey) -> Result<(), StoreError> {
        match key {
            LockKey::Idempotency(scope) => self.idempotency_no_wait(scope).await.map(drop),
            LockKey::PaymentKey(_) => Ok(()),
            LockKey::Payment(id) => self.payment(*id).await.map(drop),
            LockKey::Wallet(user) => self.wallet(*user).await.map(drop),
            LockKey::Order(id) => self.order(*id).await.map(drop),
            LockKey::Product(id) => self.product(*id).await.map(drop),
            LockKey::Seat(id) => self.seat(*id).await.map(drop),
            LockKey::Queue(event) => self.event(*event).await.map(drop),
        }
    }

    /// Writes every changed record once, `put_x(as loaded, as decided)`, and
    /// every buffered transfer in one call, into the inner transaction.
    /// Wallets, payments and idempotency records go in one multi-record call
    /// per kind (`put_wallets`, …: one statement each on PostgreSQL), the
    /// rarer kinds one by one. Payments before orders and wallets before
    /// their ledger lines (the schema's references); keys sorted.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        let mut written = 0usize;
        let changed = self.changed();
        macro_rules! flush_all {
            ($cache:ident, $put_all:ident) => {
                let puts = self.$cache.puts();
                if !puts.is_empty() {
                    let result = self.inner.$put_all(&puts).await;
                    self.track(result)?;
                    written += puts.len();
                }
            };
        }
        macro_rules! flush {
            ($cache:ident, $put:ident) => {
                let puts = self.$cache.puts();
                for put in puts {
                    let result = self.inner.$put(put.before.as_ref(), &put.after).await;
                    self.track(result)?;
                    written += 1;
                }
            };
        }
        flush_all!(payments, put_payments);
        flush_all!(wallets, put_wallets);
        flush!(orders, put_order);
        flush!(products, put_product);
        flush!(events, put_event);
        flush!(seats, put_seat);
        flush!(tokens, put_token);
        if !self.transfers.is_empty() {
            let transfers = std::mem::take(&mut self.transfers);
            let result = self.inner.append_transfers(&transfers).await;
            self.track(result)?;
        }
        flush_all!(idempotency, put_idempotency_records);
        // Only idempotency records are deleted (a key freed for a retry).
        let deleted: Vec<IdemRecord> = self
            .idempotency
            .changes()
            .filter_map(|(_, before, after)| if after.is_none() { before.cloned() } else { None })
            .collect();
        for before in deleted {
            let result = self.inner.delete_idempotency(&before).await;
            self.track(result)?;
            written += 1;
        }
        // Each changed record is written exactly once (a hot wallet is one
        // row update however many requests moved it).
        debug_assert_eq!(written, changed, "every changed record written once");
        Ok(())
    }

    /// Transfers are waiting to be appended.
    pub fn has_transfers(&self) -> bool {
        !self.transfers.is_empty()
    }

    /// How many records differ from what the inner transaction holds.
    pub fn changed(&self) -> usize {
        self.wallets.changes().count()
            + self.payments.changes().count()
            + self.idempotency.changes().count()
            + self.products.changes().count()
            + self.events.changes().count()
            + self.seats.changes().count()
            + self.orders.changes().count()
            + self.tokens.changes().count()
    }
}

/// Not batchable: see the module doc.
fn alone<V>() -> Result<V, StoreError> {
    Err(StoreError::Conflict)
}

impl<T: Tx> Tx for Overlay<T> {
    cached_record!(wallet, put_wallet, wallets, UserId => Wallet, keyed by user);
    cached_record!(payment, put_payment, payments, PaymentId => Payment, keyed by id);
    cached_record!(product, put_product, products, ProductId => Product, keyed by id);
    cached_record!(event, put_event, events, EventId => Event, keyed by id);
    cached_record!(seat, put_seat, seats, SeatId => Seat, keyed by id);
    cached_record!(order, put_order, orders, OrderId => Order, keyed by id);
    cached_record!(token, put_token, tokens, TokenId => QueueToken, keyed by id);

    async fn user(&mut self, id: UserId) -> Result<Option<User>, StoreError> {
        // Users never change once created.
        let result = self.inner.user(id).await;
        self.track(result)
    }

    async fn user_by_key_hash(&mut self, key_hash: [u8; 32]) -> Result<Option<User>, StoreError> {
        let result = self.inner.user_by_key_hash(key_hash).await;
        self.track(result)
    }

    async fn insert_user(&mut self, _user: &User) -> Result<(), StoreError> {
        alone()
    }

    async fn payment_by_key(&mut self, _key: &str) -> Result<Option<PaymentId>, StoreError> {
        alone()
    }

    async fn stuck_payments(&mut self, _before: Timestamp, _limit: usize) -> Result<Vec<Payment>, StoreError> {
        alone()
    }

    async fn append_transfers(&mut self, transfers: &[Transfer]) -> Result<(), StoreError> {
        self.transfers.extend_from_slice(transfers);
        Ok(())
    }

    async fn wallet_ledger(&mut self, _user: UserId, _after: u64, _limit: usize) -> Result<Vec<Transfer>, StoreError> {
        alone()
    }

    async fn idempotency(&mut self, scope: &IdemScope) -> Result<Option<IdemRecord>, StoreError> {
        cached!(self, idempotency, scope.clone(), key => self.inner.idempotency(&key))
    }

    async fn idempotency_no_wait(&mut self, scope: &IdemScope) -> Result<Option<IdemRecord>, StoreError> {
        cached!(self, idempotency, scope.clone(), key => self.inner.idempotency_no_wait(&key))
    }

    async fn put_idempotency(&mut self, before: Option<&IdemRecord>, after: &IdemRecord) -> Result<(), StoreError> {
        write!(self, idempotency, after.scope.clone(), before, Some(after.clone()))
    }

    async fn delete_idempotency(&mut self, before: &IdemRecord) -> Result<(), StoreError> {
        write!(self, idempotency, before.scope.clone(), Some(before), None)
    }

    async fn reads_unchanged(&mut self) -> Result<(), StoreError> {
        // Every record the overlay holds was loaded once, by the inner
        // transaction, which knows what it read. A changed read leaves the
        // transaction sound (the batch runs again); any other failure
        // poisons it.
        match self.inner.reads_unchanged().await {
            Err(StoreError::Conflict) => Err(StoreError::Conflict),
            result => self.track(result),
        }
    }

    async fn reap_idempotency(&mut self, _now: Timestamp, _limit: usize) -> Result<usize, StoreError> {
        alone()
    }

    async fn insert_showtime(&mut self, _showtime: &Showtime) -> Result<(), StoreError> {
        alone()
    }

    async fn showtime(&mut self, id: ShowtimeId) -> Result<Option<Showtime>, StoreError> {
        // Showtimes never change once created, and a batch creates none.
        let result = self.inner.showtime(id).await;
        self.track(result)
    }

    async fn showtimes(&mut self, _event: EventId) -> Result<Vec<Showtime>, StoreError> {
        alone()
    }

    async fn seats(&mut self, _showtime: ShowtimeId) -> Result<Vec<Seat>, StoreError> {
        alone()
    }

    async fn order_skip_locked(&mut self, _id: OrderId) -> Result<Option<Order>, StoreError> {
        alone()
    }

    async fn expired_orders(&mut self, _now: Timestamp, _limit: usize) -> Result<Vec<OrderId>, StoreError> {
        alone()
    }

    async fn tokens(
        &mut self,
        _event: EventId,
        _status: TokenStatus,
        _limit: usize,
    ) -> Result<Vec<QueueToken>, StoreError> {
        alone()
    }

    async fn user_token(&mut self, _event: EventId, _user: UserId) -> Result<Option<QueueToken>, StoreError> {
        alone()
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        if let Some(error) = self.poisoned.take() {
            self.inner.rollback().await;
            return Err(error);
        }
        if let Err(error) = self.flush().await {
            self.inner.rollback().await;
            return Err(error);
        }
        self.inner.commit().await
    }

    async fn rollback(self) {
        self.inner.rollback().await;
    }
}
