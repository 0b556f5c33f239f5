//! A transaction over the in-memory store: [`MemTx`] buffers its writes,
//! answers reads from the committed state overlaid with those writes, and at
//! commit validates them (see [`super::constraints`]), draws the commit fault
//! and applies them under the state mutex. Every statement first runs the
//! handle's statement hook, if it has one (see [`super::hook`]).

use std::collections::BTreeMap;
use std::fmt;

use tally_core::catalog::{Event, Product, Seat, SeatStatus, Showtime};
use tally_core::idempotency::{IdemRecord, IdemScope};
use tally_core::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, ShowtimeId, TokenId, UserId};
use tally_core::ledger::Transfer;
use tally_core::order::Order;
use tally_core::payment::Payment;
use tally_core::queue::{QueueToken, TokenStatus};
use tally_core::store::{Fences, StoreError, Tx, User};
use tally_core::time::Timestamp;
use tally_core::wallet::Wallet;

use super::constraints::validate;
use super::hook::{Statement, TxHook};
use super::{CommitFault, Concurrency, MemStore, State, Write, apply};

/// A transaction: reads go to the committed state overlaid with the
/// transaction's own writes; writes wait in `writes` until commit.
pub struct MemTx {
    store: MemStore,
    /// The lock grant's tokens this transaction claimed at begin (none for
    /// a plain `begin`).
    fences: Fences,
    writes: Vec<Write>,
    /// The statement hook's for this transaction, if the handle has one.
    hook: Option<Box<dyn TxHook>>,
    /// Optimistic mode: each committed record this transaction loaded, as
    /// a check that it still holds the version loaded (`reads_unchanged`).
    reads: Vec<ReadCheck>,
}

/// Whether one record a transaction loaded still holds the version loaded.
type ReadCheck = Box<dyn Fn(&State) -> bool + Send>;

impl fmt::Debug for MemTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemTx").field("writes", &self.writes.len()).finish_non_exhaustive()
    }
}

/// Largest number of writes one transaction may buffer: far above what any
/// use case writes, or a group commit of `BATCH_MAX_LIMIT` requests (each
/// record once, about a dozen at most per request), low enough to catch a
/// runaway loop.
const TX_WRITES_MAX: usize = 4_096;

/// A versioned record that a transaction reads by key and writes as
/// `before → after`, the same way for every kind.
trait Record: Clone {
    type Key: Ord + Copy;
    fn key(&self) -> Self::Key;
    fn version(&self) -> u64;
    /// The buffered write of `after` over version `before`.
    fn write(before: Option<u64>, after: Self) -> Write;
    /// The record `write` writes, if it writes one of this kind.
    fn written(write: &Write) -> Option<&Self>;
    /// The committed records of this kind.
    fn committed(state: &State) -> &BTreeMap<Self::Key, Self>;
}

macro_rules! record {
    ($($record:ty: $variant:ident in $table:ident by $key:ident: $key_type:ty;)*) => {$(
        impl Record for $record {
            type Key = $key_type;
            fn key(&self) -> $key_type {
                self.$key
            }
            fn version(&self) -> u64 {
                self.version
            }
            fn write(before: Option<u64>, after: Self) -> Write {
                Write::$variant { before, after }
            }
            fn written(write: &Write) -> Option<&Self> {
                match write {
                    Write::$variant { after, .. } => Some(after),
                    _ => None,
                }
            }
            fn committed(state: &State) -> &BTreeMap<$key_type, Self> {
                &state.$table
            }
        }
    )*};
}

record! {
    Wallet: Wallet in wallets by user: UserId;
    Payment: Payment in payments by id: PaymentId;
    Product: Product in products by id: ProductId;
    Event: Event in events by id: EventId;
    Seat: Seat in seats by id: SeatId;
    Order: Order in orders by id: OrderId;
    QueueToken: Token in tokens by id: TokenId;
}

impl MemTx {
    /// A fresh transaction on `store`, with nothing written yet, once its
    /// hook (if any) let it begin and it claimed `fences` (refused with
    /// `Fenced` if a later grant of one of the keys claimed first).
    pub(super) async fn begin(store: MemStore, fences: Fences) -> Result<MemTx, StoreError> {
        let hook = store.hook.as_ref().map(|make| make());
        let mut tx = MemTx { store, fences, writes: Vec::new(), hook, reads: Vec::new() };
        tx.statement(Statement::Begin).await?;
        tx.store.state().claims.claim(&tx.fences)?;
        Ok(tx)
    }

    /// Runs the hook before `statement`.
    async fn statement(&mut self, statement: Statement<'_>) -> Result<(), StoreError> {
        match self.hook.as_mut() {
            Some(hook) => hook.before(statement).await,
            None => Ok(()),
        }
    }

    fn push(&mut self, write: Write) {
        assert!(self.writes.len() < TX_WRITES_MAX, "transaction exceeded {TX_WRITES_MAX} writes");
        self.writes.push(write);
    }

    /// The record as this transaction sees it: its own newest write, else
    /// the committed one — noted, in optimistic mode, so that
    /// `reads_unchanged` can tell whether it moved since.
    fn get<R: Record + 'static>(&mut self, key: R::Key) -> Option<R>
    where
        R::Key: Send,
    {
        let own = self.writes.iter().rev().filter_map(R::written).find(|r| r.key() == key).cloned();
        if own.is_some() {
            return own;
        }
        let committed = R::committed(&self.store.state()).get(&key).cloned();
        if self.store.mode() == Concurrency::Optimistic {
            let version = committed.as_ref().map(R::version);
            self.reads.push(Box::new(move |state: &State| R::committed(state).get(&key).map(R::version) == version));
        }
        committed
    }

    fn reads_unchanged_now(&mut self) -> Result<(), StoreError> {
        let state = self.store.state();
        if self.reads.iter().all(|unchanged| unchanged(&state)) { Ok(()) } else { Err(StoreError::Conflict) }
    }

    fn put<R: Record>(&mut self, before: Option<&R>, after: &R) {
        debug_assert!(before.is_none_or(|b| b.key() == after.key() && b.version() < after.version()));
        self.push(R::write(before.map(R::version), after.clone()));
    }

    fn user_now(&self, id: UserId) -> Option<User> {
        let own = self.writes.iter().find_map(|w| match w {
            Write::User(u) if u.id == id => Some(u.clone()),
            _ => None,
        });
        own.or_else(|| self.store.state().users.get(&id).cloned())
    }

    fn user_by_key_hash_now(&self, key_hash: [u8; 32]) -> Option<User> {
        let state = self.store.state();
        state.users_by_key.get(&key_hash).and_then(|id| state.users.get(id)).cloned()
    }

    fn insert_user_now(&mut self, user: &User) {
        self.push(Write::User(user.clone()));
    }

    fn payment_by_key_now(&self, key: &str) -> Option<PaymentId> {
        let claimed_by = |p: &Payment| p.gateway.as_ref().is_some_and(|a| a.payment_key == key);
        let own = self.writes.iter().rev().find_map(|w| match w {
            Write::Payment { after, .. } if claimed_by(after) => Some(after.id),
            _ => None,
        });
        own.or_else(|| self.store.state().payments.values().find(|p| claimed_by(p)).map(|p| p.id))
    }

    fn stuck_payments_now(&self, before: Timestamp, limit: usize) -> Vec<Payment> {
        let state = self.store.state();
        let mut stuck: Vec<Payment> = state
            .payments
            .values()
            .filter(|p| p.awaits_gateway())
            .filter(|p| p.gateway.as_ref().is_some_and(|a| a.started_at < before))
            .cloned()
            .collect();
        stuck.sort_by_key(|p| (p.watched(), p.gateway.as_ref().map(|a| a.started_at)));
        stuck.truncate(limit);
        stuck
    }

    fn append_transfers_now(&mut self, transfers: &[Transfer]) {
        self.push(Write::Transfers(transfers.to_vec()));
    }

    fn wallet_ledger_now(&self, user: UserId, after_seq: u64, limit: usize) -> Vec<Transfer> {
        let state = self.store.state();
        state
            .wallet_ledgers
            .get(&user)
            .map(|indices| {
                indices
                    .iter()
                    .map(|index| &state.transfers[*index])
                    .filter(|t| t.wallet.is_some_and(|side| side.seq > after_seq))
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn idempotency_now(&self, scope: &IdemScope) -> Option<IdemRecord> {
        // `Some(None)`: deleted in this transaction.
        let own = self.writes.iter().rev().find_map(|w| match w {
            Write::Idempotency { after, .. } if &after.scope == scope => Some(Some(after)),
            Write::DeleteIdempotency { scope: deleted, .. } if deleted == scope => Some(None),
            _ => None,
        });
        match own {
            Some(own) => own.cloned(),
            None => self.store.state().idempotency.get(scope).cloned(),
        }
    }

    fn put_idempotency_now(&mut self, before: Option<&IdemRecord>, after: &IdemRecord) {
        self.push(Write::Idempotency { before: before.map(|r| r.version), after: after.clone() });
    }

    fn delete_idempotency_now(&mut self, before: &IdemRecord) {
        self.push(Write::DeleteIdempotency { before: before.version, scope: before.scope.clone() });
    }

    fn reap_idempotency_now(&mut self, now: Timestamp, limit: usize) -> usize {
        let state = self.store.state();
        let mut expired: Vec<&IdemRecord> = state.idempotency.values().filter(|r| r.expires_at <= now).collect();
        expired.sort_by_key(|r| r.expires_at);
        let doomed: Vec<(u64, IdemScope)> = expired.iter().take(limit).map(|r| (r.version, r.scope.clone())).collect();
        drop(state);
        let count = doomed.len();
        for (before, scope) in doomed {
            self.push(Write::DeleteIdempotency { before, scope });
        }
        count
    }

    fn insert_showtime_now(&mut self, showtime: &Showtime) {
        self.push(Write::Showtime(showtime.clone()));
    }

    fn showtime_now(&self, id: ShowtimeId) -> Option<Showtime> {
        let own = self.writes.iter().rev().find_map(|w| match w {
            Write::Showtime(showtime) if showtime.id == id => Some(showtime.clone()),
            _ => None,
        });
        own.or_else(|| self.store.state().showtimes.get(&id).cloned())
    }

    fn showtimes_now(&self, event: EventId) -> Vec<Showtime> {
        let mut found: Vec<Showtime> =
            self.store.state().showtimes.values().filter(|s| s.event == event).cloned().collect();
        found.sort_by_key(|s| (s.starts_at, s.id));
        found
    }

    fn seats_now(&self, showtime: ShowtimeId) -> Vec<Seat> {
        let state = self.store.state();
        let mut found: Vec<Seat> = state
            .showtime_seats
            .get(&showtime)
            .map(|ids| ids.iter().map(|id| state.seats[id].clone()).collect())
            .unwrap_or_default();
        found.sort_by(|a, b| (&a.label, a.id).cmp(&(&b.label, b.id)));
        found
    }

    fn put_seat_now(&mut self, before: Option<&Seat>, after: &Seat) {
        debug_assert!(before.is_some() || after.status == SeatStatus::Available);
        self.put(before, after);
    }

    fn expired_orders_now(&self, now: Timestamp, limit: usize) -> Vec<OrderId> {
        let state = self.store.state();
        let mut due: Vec<(Timestamp, OrderId)> =
            state.orders.values().filter(|o| o.due_for_expiry(now)).map(|o| (o.expires_at, o.id)).collect();
        due.sort_unstable();
        due.into_iter().take(limit).map(|(_, id)| id).collect()
    }

    /// An event's tokens as this transaction sees them, in line order.
    fn event_tokens(&self, event: EventId) -> Vec<QueueToken> {
        let mut tokens: BTreeMap<u64, QueueToken> = {
            let state = self.store.state();
            state
                .event_tokens
                .get(&event)
                .map(|line| line.iter().map(|(seq, id)| (*seq, state.tokens[id].clone())).collect())
                .unwrap_or_default()
        };
        for write in &self.writes {
            if let Write::Token { after, .. } = write
                && after.event == event
            {
                tokens.insert(after.seq, after.clone());
            }
        }
        tokens.into_values().collect()
    }

    fn tokens_now(&self, event: EventId, status: TokenStatus, limit: usize) -> Vec<QueueToken> {
        self.event_tokens(event).into_iter().filter(|t| t.status == status).take(limit).collect()
    }

    fn user_token_now(&self, event: EventId, user: UserId) -> Option<QueueToken> {
        self.event_tokens(event).into_iter().rev().find(|t| t.user == user)
    }

    fn commit_now(self) -> Result<(), StoreError> {
        let mode = self.store.shared.mode;
        let mut state = self.store.state();
        // Validate everything first, then apply: a refused commit changes
        // nothing. A transaction a later lock grant overtook is refused
        // before its writes are even looked at: they rest on what it read.
        state.claims.still_latest(&self.fences)?;
        validate(&state, &self.writes, mode)?;
        let fault = {
            let mut hook = self.store.shared.commit_faults.lock().expect("fault hook mutex");
            hook.as_mut().map_or(CommitFault::None, |decide| decide())
        };
        if fault == CommitFault::Lost {
            return Err(StoreError::Unavailable("injected: connection lost before commit".into()));
        }
        for write in self.writes {
            apply(&mut state, write);
        }
        if fault == CommitFault::Ambiguous { Err(StoreError::Ambiguous) } else { Ok(()) }
    }
}

/// The `Tx` methods, each a statement: the hook first (`read` or `write`
/// by the method's name, or the statement given after `as`), then the
/// method's body on the transaction.
macro_rules! statements {
    ($($kind:ident $name:ident($($arg:ident: $type:ty),*) -> $out:ty $(as $statement:expr)? => $body:ident;)*) => {$(
        async fn $name(&mut self, $($arg: $type),*) -> Result<$out, StoreError> {
            self.statement(statements!(@statement $kind $name $($statement)?)).await?;
            Ok(self.$body($($arg),*))
        }
    )*};
    (@statement read $name:ident) => { Statement::Read(stringify!($name)) };
    (@statement write $name:ident) => { Statement::Write(stringify!($name)) };
    (@statement write $name:ident $statement:expr) => { $statement };
}

impl Tx for MemTx {
    statements! {
        read user(id: UserId) -> Option<User> => user_now;
        read user_by_key_hash(key_hash: [u8; 32]) -> Option<User> => user_by_key_hash_now;
        write insert_user(user: &User) -> () => insert_user_now;
        read wallet(user: UserId) -> Option<Wallet> => get;
        write put_wallet(before: Option<&Wallet>, after: &Wallet) -> () => put;
        read payment(id: PaymentId) -> Option<Payment> => get;
        read payment_by_key(key: &str) -> Option<PaymentId> => payment_by_key_now;
        write put_payment(before: Option<&Payment>, after: &Payment) -> ()
            as Statement::PutPayment { before, after } => put;
        read stuck_payments(before: Timestamp, limit: usize) -> Vec<Payment> => stuck_payments_now;
        write append_transfers(transfers: &[Transfer]) -> () => append_transfers_now;
        read wallet_ledger(user: UserId, after_seq: u64, limit: usize) -> Vec<Transfer> => wallet_ledger_now;
        read idempotency(scope: &IdemScope) -> Option<IdemRecord> => idempotency_now;
        write put_idempotency(before: Option<&IdemRecord>, after: &IdemRecord) -> ()
            as Statement::PutIdempotency { before, after } => put_idempotency_now;
        write delete_idempotency(before: &IdemRecord) -> () => delete_idempotency_now;
        write reap_idempotency(now: Timestamp, limit: usize) -> usize => reap_idempotency_now;
        read product(id: ProductId) -> Option<Product> => get;
        write put_product(before: Option<&Product>, after: &Product) -> () => put;
        read event(id: EventId) -> Option<Event> => get;
        write put_event(before: Option<&Event>, after: &Event) -> () => put;
        write insert_showtime(showtime: &Showtime) -> () => insert_showtime_now;
        read showtime(id: ShowtimeId) -> Option<Showtime> => showtime_now;
        read showtimes(event: EventId) -> Vec<Showtime> => showtimes_now;
        read seats(showtime: ShowtimeId) -> Vec<Seat> => seats_now;
        read seat(id: SeatId) -> Option<Seat> => get;
        write put_seat(before: Option<&Seat>, after: &Seat) -> () => put_seat_now;
        read order(id: OrderId) -> Option<Order> => get;
        write put_order(before: Option<&Order>, after: &Order) -> () => put;
        read expired_orders(now: Timestamp, limit: usize) -> Vec<OrderId> => expired_orders_now;
        read token(id: TokenId) -> Option<QueueToken> => get;
        write put_token(before: Option<&QueueToken>, after: &QueueToken) -> () => put;
        read tokens(event: EventId, status: TokenStatus, limit: usize) -> Vec<QueueToken> => tokens_now;
        read user_token(event: EventId, user: UserId) -> Option<QueueToken> => user_token_now;
    }

    async fn reads_unchanged(&mut self) -> Result<(), StoreError> {
        // Nothing loaded, nothing to check (locked mode notes nothing).
        if self.reads.is_empty() {
            return Ok(());
        }
        self.statement(Statement::Read("reads_unchanged")).await?;
        self.reads_unchanged_now()
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        let fenced = !self.fences.is_empty();
        self.statement(Statement::Commit { fenced }).await?;
        let hook = self.hook.take();
        let result = self.commit_now();
        if let Some(mut hook) = hook {
            hook.committed(&result).await;
        }
        result
    }

    async fn rollback(self) {}
}
