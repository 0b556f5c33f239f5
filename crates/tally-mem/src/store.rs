//! The in-memory store: [`MemStore`], the committed state it shares between
//! clones, the buffered [`Write`] a transaction records, and how a write is
//! applied to the state. Its transaction is in [`tx`]; the checks a commit
//! must pass before anything is applied are in [`constraints`]; the fencing
//! tokens claimed per lock key, in [`fences`]; what may run before each
//! statement, in [`hook`].

use std::collections::BTreeMap;
use std::fmt;

use tally_core::catalog::{Event, Product, Seat, Showtime};
use tally_core::check::Snapshot;
use tally_core::idempotency::{IdemRecord, IdemScope};
use tally_core::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, ShowtimeId, TokenId, TransferId, UserId};
use tally_core::ledger::Transfer;
use tally_core::order::Order;
use tally_core::payment::Payment;
use tally_core::queue::QueueToken;
use tally_core::store::{Fences, LockSet, Store, StoreError, User};
use tally_core::wallet::Wallet;
use tally_lock::sync::{Arc, Mutex, MutexGuard};

mod constraints;
mod fences;
mod hook;
mod tx;

pub use fences::FENCE_UNCHECKED;
pub use hook::{HookFuture, Statement, StatementHook, TxHook};
pub use tx::MemTx;

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
    /// The largest fencing token claimed per lock key.
    claims: fences::Claims,
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
    /// This handle's statement hook: the handle's transactions run it, other
    /// handles on the same database do not.
    hook: Option<StatementHook>,
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStore")
            .field("mode", &self.shared.mode)
            .field("hooked", &self.hook.is_some())
            .finish_non_exhaustive()
    }
}

impl MemStore {
    pub fn new(mode: Concurrency) -> MemStore {
        MemStore {
            shared: Arc::new(Shared { state: Mutex::new(State::default()), mode, commit_faults: Mutex::new(None) }),
            hook: None,
        }
    }

    /// Another handle on the same database whose transactions run `hook`
    /// before every statement and after their commit (see [`TxHook`]).
    pub fn with_statement_hook(&self, hook: StatementHook) -> MemStore {
        MemStore { shared: Arc::clone(&self.shared), hook: Some(hook) }
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

    async fn begin(&self) -> Result<MemTx, StoreError> {
        MemTx::begin(self.clone(), Fences::default()).await
    }

    /// Claims the grant's fencing tokens (see [`fences`]); the locks
    /// themselves are the lock manager's.
    async fn begin_locked(
        &self,
        keys: &LockSet,
        fences: &Fences,
        wait: std::time::Duration,
    ) -> Result<MemTx, StoreError> {
        let _ = (keys, wait);
        MemTx::begin(self.clone(), fences.clone()).await
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
