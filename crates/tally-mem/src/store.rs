//! The in-memory store and its transactions.

use std::collections::BTreeMap;
use std::fmt;

use tally_core::catalog::{Event, Product, Seat, SeatStatus, Showtime};
use tally_core::check::Snapshot;
use tally_core::idempotency::{IdemRecord, IdemScope};
use tally_core::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, ShowtimeId, TokenId, TransferId, UserId};
use tally_core::ledger::Transfer;
use tally_core::order::Order;
use tally_core::payment::{Payment, PaymentStatus};
use tally_core::queue::{QueueToken, TokenStatus};
use tally_core::store::{Store, StoreError, Tx, User};
use tally_core::time::Timestamp;
use tally_core::wallet::Wallet;
use tally_lock::sync::{Arc, Mutex, MutexGuard};

/// How the store handles concurrent writers (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// Blind writes; isolation comes from the lock manager.
    Locked,
    /// Version-checked writes; a stale write fails the commit with `Conflict`.
    Optimistic,
}

/// What an injected fault does to one commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitFault {
    /// No fault: the commit happens and says so.
    None,
    /// The commit happens, but the caller is told it failed — as when the
    /// connection dies while `COMMIT` is in flight.
    Ambiguous,
    /// The connection dies before `COMMIT` arrives: nothing is written.
    Lost,
}

/// Decides the fault of each commit. The simulation draws from its seeded
/// RNG here; tests count commits.
pub type FaultHook = Box<dyn FnMut() -> CommitFault + Send>;

/// The committed state.
#[derive(Default)]
struct State {
    users: BTreeMap<UserId, User>,
    users_by_key: BTreeMap<[u8; 32], UserId>,
    wallets: BTreeMap<UserId, Wallet>,
    payments: BTreeMap<PaymentId, Payment>,
    /// The ledger, in commit order; append-only.
    transfers: Vec<Transfer>,
    transfer_ids: BTreeMap<TransferId, usize>,
    /// Per wallet, indices into `transfers` in `seq` order.
    wallet_ledgers: BTreeMap<UserId, Vec<usize>>,
    idempotency: BTreeMap<IdemScope, IdemRecord>,
    /// (payment, transfer kind) pairs already booked.
    payment_kinds: std::collections::BTreeSet<(PaymentId, &'static str)>,
    products: BTreeMap<ProductId, Product>,
    events: BTreeMap<EventId, Event>,
    showtimes: BTreeMap<ShowtimeId, Showtime>,
    seats: BTreeMap<SeatId, Seat>,
    /// Per showtime, its seats.
    showtime_seats: BTreeMap<ShowtimeId, Vec<SeatId>>,
    orders: BTreeMap<OrderId, Order>,
    tokens: BTreeMap<TokenId, QueueToken>,
    /// Per event, its tokens by place in line.
    event_tokens: BTreeMap<EventId, BTreeMap<u64, TokenId>>,
}

/// A payment that holds its order's charge: at most one per order, like the
/// schema's partial unique index.
fn charges_order(payment: &Payment) -> Option<OrderId> {
    let charging =
        matches!(payment.status, PaymentStatus::Confirming | PaymentStatus::Done | PaymentStatus::Cancelling);
    payment.order.filter(|_| charging)
}

struct Shared {
    state: Mutex<State>,
    mode: Concurrency,
    commit_faults: Mutex<Option<FaultHook>>,
}

/// A handle to one in-memory database; clones share it.
#[derive(Clone)]
pub struct MemStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStore").field("mode", &self.shared.mode).finish_non_exhaustive()
    }
}

impl MemStore {
    pub fn new(mode: Concurrency) -> MemStore {
        MemStore {
            shared: Arc::new(Shared { state: Mutex::new(State::default()), mode, commit_faults: Mutex::new(None) }),
        }
    }

    pub fn mode(&self) -> Concurrency {
        self.shared.mode
    }

    /// Installs (or with `None` removes) the commit fault hook.
    pub fn set_commit_faults(&self, hook: Option<FaultHook>) {
        *self.shared.commit_faults.lock().expect("fault hook mutex") = hook;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the state mutex leaves the maps as they were
        // before the commit began (commit validates before it mutates), so
        // the data behind a poisoned lock is still consistent.
        self.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn snapshot_now(&self) -> Snapshot {
        let state = self.state();
        Snapshot {
            wallets: state.wallets.values().cloned().collect(),
            payments: state.payments.values().cloned().collect(),
            transfers: state.transfers.clone(),
            idempotency: state.idempotency.values().cloned().collect(),
            products: state.products.values().cloned().collect(),
            orders: state.orders.values().cloned().collect(),
            events: state.events.values().cloned().collect(),
            seats: state.seats.values().cloned().collect(),
            tokens: state.tokens.values().cloned().collect(),
        }
    }
}

impl Store for MemStore {
    type Tx = MemTx;

    fn begin(&self) -> impl Future<Output = Result<MemTx, StoreError>> + Send {
        std::future::ready(Ok(MemTx { store: self.clone(), writes: Vec::new() }))
    }

    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send {
        std::future::ready(Ok(self.snapshot_now()))
    }
}

/// One buffered write; `before` is the version the transaction read
/// (`None`: it read no record).
#[derive(Clone, Debug)]
enum Write {
    User(User),
    Wallet { before: Option<u64>, after: Wallet },
    Payment { before: Option<u64>, after: Payment },
    Transfers(Vec<Transfer>),
    Idempotency { before: Option<u64>, after: IdemRecord },
    DeleteIdempotency { before: u64, scope: IdemScope },
    Product { before: Option<u64>, after: Product },
    Event { before: Option<u64>, after: Event },
    Showtime(Showtime),
    Seat { before: Option<u64>, after: Seat },
    Order { before: Option<u64>, after: Order },
    Token { before: Option<u64>, after: QueueToken },
}

/// A transaction: reads go to the committed state overlaid with the
/// transaction's own writes; writes wait in `writes` until commit.
pub struct MemTx {
    store: MemStore,
    writes: Vec<Write>,
}

impl fmt::Debug for MemTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemTx").field("writes", &self.writes.len()).finish()
    }
}

/// Largest number of writes one transaction may buffer: far above what any
/// use case writes, low enough to catch a runaway loop.
const TX_WRITES_MAX: usize = 1_024;

impl MemTx {
    fn push(&mut self, write: Write) {
        assert!(self.writes.len() < TX_WRITES_MAX, "transaction exceeded {TX_WRITES_MAX} writes");
        self.writes.push(write);
    }

    fn own_wallet(&self, user: UserId) -> Option<&Wallet> {
        self.writes.iter().rev().find_map(|w| match w {
            Write::Wallet { after, .. } if after.user == user => Some(after),
            _ => None,
        })
    }

    fn own_payment(&self, id: PaymentId) -> Option<&Payment> {
        self.writes.iter().rev().find_map(|w| match w {
            Write::Payment { after, .. } if after.id == id => Some(after),
            _ => None,
        })
    }

    /// `Some(None)`: deleted in this transaction.
    fn own_idempotency(&self, scope: &IdemScope) -> Option<Option<&IdemRecord>> {
        self.writes.iter().rev().find_map(|w| match w {
            Write::Idempotency { after, .. } if &after.scope == scope => Some(Some(after)),
            Write::DeleteIdempotency { scope: deleted, .. } if deleted == scope => Some(None),
            _ => None,
        })
    }

    fn own<T: Clone>(&self, find: impl Fn(&Write) -> Option<&T>) -> Option<T> {
        self.writes.iter().rev().find_map(find).cloned()
    }

    fn own_order(&self, id: OrderId) -> Option<Order> {
        self.own(|w| match w {
            Write::Order { after, .. } if after.id == id => Some(after),
            _ => None,
        })
    }

    fn own_token(&self, id: TokenId) -> Option<QueueToken> {
        self.own(|w| match w {
            Write::Token { after, .. } if after.id == id => Some(after),
            _ => None,
        })
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

    fn commit_now(self) -> Result<(), StoreError> {
        let mode = self.store.shared.mode;
        let mut state = self.store.state();
        // Validate everything first, then apply: a refused commit changes nothing.
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

fn validate(state: &State, writes: &[Write], mode: Concurrency) -> Result<(), StoreError> {
    let stale = |current: Option<u64>, before: Option<u64>| mode == Concurrency::Optimistic && current != before;
    for write in writes {
        match write {
            Write::User(user) => {
                if state.users.contains_key(&user.id) || state.users_by_key.contains_key(&user.key_hash) {
                    return Err(StoreError::Integrity(format!("duplicate user {} or key", user.id)));
                }
            }
            Write::Wallet { before, after } => {
                if after.balance.is_negative() {
                    return Err(StoreError::Integrity(format!("wallet {} balance would be negative", after.user)));
                }
                let current = state.wallets.get(&after.user).map(|w| w.version);
                if before.is_none() && current.is_some() {
                    return Err(StoreError::Integrity(format!("duplicate wallet {}", after.user)));
                }
                if stale(current, *before) {
                    return Err(StoreError::Conflict);
                }
            }
            Write::Payment { before, after } => {
                let current = state.payments.get(&after.id).map(|p| p.version);
                if before.is_none() && current.is_some() {
                    return Err(StoreError::Integrity(format!("duplicate payment {}", after.id)));
                }
                if stale(current, *before) {
                    return Err(StoreError::Conflict);
                }
            }
            Write::Transfers(transfers) => {
                if let Some(t) = transfers.iter().find(|t| state.transfer_ids.contains_key(&t.id)) {
                    return Err(StoreError::Integrity(format!("duplicate transfer {}", t.id)));
                }
                // Like the schema's unique index: one transfer of each kind per payment.
                for t in transfers {
                    let Some(payment) = t.payment else { continue };
                    let key = (payment, t.kind.as_str());
                    let again =
                        |other: &Transfer| other.id != t.id && other.payment == Some(payment) && other.kind == t.kind;
                    if state.payment_kinds.contains(&key) || transfers.iter().any(again) {
                        return Err(StoreError::Integrity(format!("second {} transfer for payment {payment}", key.1)));
                    }
                }
            }
            Write::Idempotency { before, after } => {
                let current = state.idempotency.get(&after.scope).map(|r| r.version);
                // Unique (user, key), like the PostgreSQL unique index: an
                // insert over a record someone else committed is refused even
                // without version checks.
                if before.is_none() && current.is_some() {
                    return Err(StoreError::Conflict);
                }
                if stale(current, *before) {
                    return Err(StoreError::Conflict);
                }
            }
            Write::DeleteIdempotency { before, scope } => {
                let current = state.idempotency.get(scope).map(|r| r.version);
                if stale(current, Some(*before)) {
                    return Err(StoreError::Conflict);
                }
            }
            Write::Product { before, after } => {
                if after.stock > after.stocked {
                    return Err(StoreError::Integrity(format!("product {} above what was stocked", after.id)));
                }
                versioned(state.products.get(&after.id).map(|p| p.version), *before, "product", mode)?;
            }
            Write::Event { before, after } => {
                if after.active_count > after.active_limit {
                    return Err(StoreError::Integrity(format!("event {} above its active limit", after.id)));
                }
                versioned(state.events.get(&after.id).map(|e| e.version), *before, "event", mode)?;
            }
            Write::Showtime(showtime) => {
                if state.showtimes.contains_key(&showtime.id) {
                    return Err(StoreError::Integrity(format!("duplicate showtime {}", showtime.id)));
                }
            }
            Write::Seat { before, after } => {
                versioned(state.seats.get(&after.id).map(|s| s.version), *before, "seat", mode)?;
            }
            Write::Order { before, after } => {
                versioned(state.orders.get(&after.id).map(|o| o.version), *before, "order", mode)?;
            }
            Write::Token { before, after } => {
                let current = state.tokens.get(&after.id).map(|t| t.version);
                versioned(current, *before, "token", mode)?;
                let taken = state.event_tokens.get(&after.event).and_then(|line| line.get(&after.seq));
                if before.is_none() && taken.is_some() {
                    // Two joins read the same counter: unique (event, seq).
                    return Err(StoreError::Conflict);
                }
            }
        }
    }
    // Like the schema's partial unique index: one charging payment per order.
    let mut charging: BTreeMap<OrderId, PaymentId> = BTreeMap::new();
    let written: std::collections::BTreeSet<PaymentId> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Payment { after, .. } => Some(after.id),
            _ => None,
        })
        .collect();
    for write in writes {
        if let Write::Payment { after, .. } = write
            && let Some(order) = charges_order(after)
        {
            charging.insert(order, after.id);
        }
    }
    // Like the schema's unique gateway_payment_key: a key claimed by another
    // payment refuses the commit. A conflict, as PostgreSQL's unique
    // violation maps to one: the use case decides again and sees the claim.
    for write in writes {
        if let Write::Payment { after, .. } = write
            && let Some(attempt) = &after.gateway
        {
            let claimed = state
                .payments
                .values()
                .any(|p| p.id != after.id && p.gateway.as_ref().is_some_and(|a| a.payment_key == attempt.payment_key));
            if claimed {
                return Err(StoreError::Conflict);
            }
        }
    }
    for (order, payment) in &charging {
        let other = state
            .payments
            .values()
            .any(|p| p.id != *payment && !written.contains(&p.id) && charges_order(p) == Some(*order));
        if other {
            return Err(StoreError::Integrity(format!("a second charging payment for order {order}")));
        }
    }
    Ok(())
}

/// The version rule every record shares: an insert must be new; under
/// optimistic concurrency an update must be of the version read.
fn versioned(current: Option<u64>, before: Option<u64>, what: &str, mode: Concurrency) -> Result<(), StoreError> {
    if before.is_none() && current.is_some() {
        return Err(StoreError::Integrity(format!("duplicate {what}")));
    }
    if mode == Concurrency::Optimistic && current != before {
        return Err(StoreError::Conflict);
    }
    Ok(())
}

fn apply(state: &mut State, write: Write) {
    match write {
        Write::User(user) => {
            state.users_by_key.insert(user.key_hash, user.id);
            state.users.insert(user.id, user);
        }
        Write::Wallet { after, .. } => {
            after.assert_valid();
            state.wallets.insert(after.user, after);
        }
        Write::Payment { after, .. } => {
            state.payments.insert(after.id, after);
        }
        Write::Transfers(transfers) => {
            for transfer in transfers {
                let index = state.transfers.len();
                state.transfer_ids.insert(transfer.id, index);
                if let Some(payment) = transfer.payment {
                    state.payment_kinds.insert((payment, transfer.kind.as_str()));
                }
                if let Some(side) = transfer.wallet {
                    state.wallet_ledgers.entry(side.user).or_default().push(index);
                }
                state.transfers.push(transfer);
            }
        }
        Write::Idempotency { after, .. } => {
            state.idempotency.insert(after.scope.clone(), after);
        }
        Write::DeleteIdempotency { scope, .. } => {
            state.idempotency.remove(&scope);
        }
        Write::Product { after, .. } => {
            state.products.insert(after.id, after);
        }
        Write::Event { after, .. } => {
            state.events.insert(after.id, after);
        }
        Write::Showtime(showtime) => {
            state.showtimes.insert(showtime.id, showtime);
        }
        Write::Seat { after, .. } => {
            let line = state.showtime_seats.entry(after.showtime).or_default();
            if !line.contains(&after.id) {
                line.push(after.id);
            }
            state.seats.insert(after.id, after);
        }
        Write::Order { after, .. } => {
            state.orders.insert(after.id, after);
        }
        Write::Token { after, .. } => {
            state.event_tokens.entry(after.event).or_default().insert(after.seq, after.id);
            state.tokens.insert(after.id, after);
        }
    }
}

impl Tx for MemTx {
    fn user(&mut self, id: UserId) -> impl Future<Output = Result<Option<User>, StoreError>> + Send {
        let own = self.writes.iter().find_map(|w| match w {
            Write::User(u) if u.id == id => Some(u.clone()),
            _ => None,
        });
        let found = own.or_else(|| self.store.state().users.get(&id).cloned());
        std::future::ready(Ok(found))
    }

    fn user_by_key_hash(
        &mut self,
        key_hash: [u8; 32],
    ) -> impl Future<Output = Result<Option<User>, StoreError>> + Send {
        let state = self.store.state();
        let found = state.users_by_key.get(&key_hash).and_then(|id| state.users.get(id)).cloned();
        std::future::ready(Ok(found))
    }

    fn insert_user(&mut self, user: &User) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.push(Write::User(user.clone()));
        std::future::ready(Ok(()))
    }

    fn wallet(&mut self, user: UserId) -> impl Future<Output = Result<Option<Wallet>, StoreError>> + Send {
        let found = match self.own_wallet(user) {
            Some(own) => Some(own.clone()),
            None => self.store.state().wallets.get(&user).cloned(),
        };
        std::future::ready(Ok(found))
    }

    fn put_wallet(
        &mut self,
        before: Option<&Wallet>,
        after: &Wallet,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        debug_assert!(before.is_none_or(|b| b.user == after.user && b.version < after.version));
        self.push(Write::Wallet { before: before.map(|w| w.version), after: after.clone() });
        std::future::ready(Ok(()))
    }

    fn payment(&mut self, id: PaymentId) -> impl Future<Output = Result<Option<Payment>, StoreError>> + Send {
        let found = match self.own_payment(id) {
            Some(own) => Some(own.clone()),
            None => self.store.state().payments.get(&id).cloned(),
        };
        std::future::ready(Ok(found))
    }

    fn payment_by_key(&mut self, key: &str) -> impl Future<Output = Result<Option<PaymentId>, StoreError>> + Send {
        let claimed_by = |p: &Payment| p.gateway.as_ref().is_some_and(|a| a.payment_key == key);
        let own = self.writes.iter().rev().find_map(|w| match w {
            Write::Payment { after, .. } if claimed_by(after) => Some(after.id),
            _ => None,
        });
        let found = own.or_else(|| self.store.state().payments.values().find(|p| claimed_by(p)).map(|p| p.id));
        std::future::ready(Ok(found))
    }

    fn put_payment(
        &mut self,
        before: Option<&Payment>,
        after: &Payment,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        debug_assert!(before.is_none_or(|b| b.id == after.id && b.version < after.version));
        self.push(Write::Payment { before: before.map(|p| p.version), after: after.clone() });
        std::future::ready(Ok(()))
    }

    fn stuck_payments(
        &mut self,
        before: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Payment>, StoreError>> + Send {
        let state = self.store.state();
        let mut stuck: Vec<Payment> = state
            .payments
            .values()
            .filter(|p| p.status.in_flight())
            .filter(|p| p.gateway.as_ref().is_some_and(|a| a.started_at < before))
            .cloned()
            .collect();
        stuck.sort_by_key(|p| p.gateway.as_ref().map(|a| a.started_at));
        stuck.truncate(limit);
        std::future::ready(Ok(stuck))
    }

    fn append_transfers(&mut self, transfers: &[Transfer]) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.push(Write::Transfers(transfers.to_vec()));
        std::future::ready(Ok(()))
    }

    fn wallet_ledger(
        &mut self,
        user: UserId,
        after_seq: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Transfer>, StoreError>> + Send {
        let state = self.store.state();
        let entries = state
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
            .unwrap_or_default();
        std::future::ready(Ok(entries))
    }

    fn idempotency(
        &mut self,
        scope: &IdemScope,
    ) -> impl Future<Output = Result<Option<IdemRecord>, StoreError>> + Send {
        let found = match self.own_idempotency(scope) {
            Some(own) => own.cloned(),
            None => self.store.state().idempotency.get(scope).cloned(),
        };
        std::future::ready(Ok(found))
    }

    fn put_idempotency(
        &mut self,
        before: Option<&IdemRecord>,
        after: &IdemRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.push(Write::Idempotency { before: before.map(|r| r.version), after: after.clone() });
        std::future::ready(Ok(()))
    }

    fn delete_idempotency(&mut self, before: &IdemRecord) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.push(Write::DeleteIdempotency { before: before.version, scope: before.scope.clone() });
        std::future::ready(Ok(()))
    }

    fn reap_idempotency(
        &mut self,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let state = self.store.state();
        let mut expired: Vec<&IdemRecord> = state.idempotency.values().filter(|r| r.expires_at <= now).collect();
        expired.sort_by_key(|r| r.expires_at);
        let doomed: Vec<(u64, IdemScope)> = expired.iter().take(limit).map(|r| (r.version, r.scope.clone())).collect();
        drop(state);
        let count = doomed.len();
        for (before, scope) in doomed {
            self.push(Write::DeleteIdempotency { before, scope });
        }
        std::future::ready(Ok(count))
    }

    fn product(&mut self, id: ProductId) -> impl Future<Output = Result<Option<Product>, StoreError>> + Send {
        let own = self.own(|w| match w {
            Write::Product { after, .. } if after.id == id => Some(after),
            _ => None,
        });
        std::future::ready(Ok(own.or_else(|| self.store.state().products.get(&id).cloned())))
    }

    fn put_product(
        &mut self,
        before: Option<&Product>,
        after: &Product,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        debug_assert!(before.is_none_or(|b| b.id == after.id && b.version < after.version));
        self.push(Write::Product { before: before.map(|p| p.version), after: after.clone() });
        std::future::ready(Ok(()))
    }

    fn event(&mut self, id: EventId) -> impl Future<Output = Result<Option<Event>, StoreError>> + Send {
        let own = self.own(|w| match w {
            Write::Event { after, .. } if after.id == id => Some(after),
            _ => None,
        });
        std::future::ready(Ok(own.or_else(|| self.store.state().events.get(&id).cloned())))
    }

    fn put_event(
        &mut self,
        before: Option<&Event>,
        after: &Event,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        debug_assert!(before.is_none_or(|b| b.id == after.id && b.version < after.version));
        self.push(Write::Event { before: before.map(|e| e.version), after: after.clone() });
        std::future::ready(Ok(()))
    }

    fn insert_showtime(&mut self, showtime: &Showtime) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.push(Write::Showtime(showtime.clone()));
        std::future::ready(Ok(()))
    }

    fn showtime(&mut self, id: ShowtimeId) -> impl Future<Output = Result<Option<Showtime>, StoreError>> + Send {
        let own = self.own(|w| match w {
            Write::Showtime(showtime) if showtime.id == id => Some(showtime),
            _ => None,
        });
        std::future::ready(Ok(own.or_else(|| self.store.state().showtimes.get(&id).cloned())))
    }

    fn showtimes(&mut self, event: EventId) -> impl Future<Output = Result<Vec<Showtime>, StoreError>> + Send {
        let mut found: Vec<Showtime> =
            self.store.state().showtimes.values().filter(|s| s.event == event).cloned().collect();
        found.sort_by_key(|s| (s.starts_at, s.id));
        std::future::ready(Ok(found))
    }

    fn seats(&mut self, showtime: ShowtimeId) -> impl Future<Output = Result<Vec<Seat>, StoreError>> + Send {
        let state = self.store.state();
        let mut found: Vec<Seat> = state
            .showtime_seats
            .get(&showtime)
            .map(|ids| ids.iter().map(|id| state.seats[id].clone()).collect())
            .unwrap_or_default();
        found.sort_by(|a, b| (&a.label, a.id).cmp(&(&b.label, b.id)));
        std::future::ready(Ok(found))
    }

    fn seat(&mut self, id: SeatId) -> impl Future<Output = Result<Option<Seat>, StoreError>> + Send {
        let own = self.own(|w| match w {
            Write::Seat { after, .. } if after.id == id => Some(after),
            _ => None,
        });
        std::future::ready(Ok(own.or_else(|| self.store.state().seats.get(&id).cloned())))
    }

    fn put_seat(&mut self, before: Option<&Seat>, after: &Seat) -> impl Future<Output = Result<(), StoreError>> + Send {
        debug_assert!(before.is_none_or(|b| b.id == after.id && b.version < after.version));
        debug_assert!(before.is_some() || after.status == SeatStatus::Available);
        self.push(Write::Seat { before: before.map(|s| s.version), after: after.clone() });
        std::future::ready(Ok(()))
    }

    fn order(&mut self, id: OrderId) -> impl Future<Output = Result<Option<Order>, StoreError>> + Send {
        let own = self.own_order(id);
        std::future::ready(Ok(own.or_else(|| self.store.state().orders.get(&id).cloned())))
    }

    fn put_order(
        &mut self,
        before: Option<&Order>,
        after: &Order,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        debug_assert!(before.is_none_or(|b| b.id == after.id && b.version < after.version));
        self.push(Write::Order { before: before.map(|o| o.version), after: after.clone() });
        std::future::ready(Ok(()))
    }

    fn expired_orders(
        &mut self,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OrderId>, StoreError>> + Send {
        let state = self.store.state();
        let mut due: Vec<(Timestamp, OrderId)> =
            state.orders.values().filter(|o| o.due_for_expiry(now)).map(|o| (o.expires_at, o.id)).collect();
        due.sort_unstable();
        std::future::ready(Ok(due.into_iter().take(limit).map(|(_, id)| id).collect()))
    }

    fn token(&mut self, id: TokenId) -> impl Future<Output = Result<Option<QueueToken>, StoreError>> + Send {
        let own = self.own_token(id);
        std::future::ready(Ok(own.or_else(|| self.store.state().tokens.get(&id).cloned())))
    }

    fn put_token(
        &mut self,
        before: Option<&QueueToken>,
        after: &QueueToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        debug_assert!(before.is_none_or(|b| b.id == after.id && b.version < after.version));
        self.push(Write::Token { before: before.map(|t| t.version), after: after.clone() });
        std::future::ready(Ok(()))
    }

    fn tokens(
        &mut self,
        event: EventId,
        status: TokenStatus,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<QueueToken>, StoreError>> + Send {
        let found = self.event_tokens(event).into_iter().filter(|t| t.status == status).take(limit).collect();
        std::future::ready(Ok(found))
    }

    fn user_token(
        &mut self,
        event: EventId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<QueueToken>, StoreError>> + Send {
        let found = self.event_tokens(event).into_iter().rev().find(|t| t.user == user);
        std::future::ready(Ok(found))
    }

    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(self.commit_now())
    }

    fn rollback(self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}
