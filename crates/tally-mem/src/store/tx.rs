//! A transaction over the in-memory store: [`MemTx`] buffers its writes,
//! answers reads from the committed state overlaid with those writes, and at
//! commit validates them (see [`super::constraints`]), draws the commit fault
//! and applies them under the state mutex.

use std::collections::BTreeMap;
use std::fmt;

use tally_core::catalog::{Event, Product, Seat, SeatStatus, Showtime};
use tally_core::idempotency::{IdemRecord, IdemScope};
use tally_core::ids::{EventId, OrderId, PaymentId, ProductId, SeatId, ShowtimeId, TokenId, UserId};
use tally_core::ledger::Transfer;
use tally_core::order::Order;
use tally_core::payment::Payment;
use tally_core::queue::{QueueToken, TokenStatus};
use tally_core::store::{StoreError, Tx, User};
use tally_core::time::Timestamp;
use tally_core::wallet::Wallet;

use super::constraints::validate;
use super::{CommitFault, MemStore, Write, apply};

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
/// use case writes, or a group commit of `BATCH_MAX_LIMIT` requests (each
/// record once, about a dozen at most per request), low enough to catch a
/// runaway loop.
const TX_WRITES_MAX: usize = 4_096;

impl MemTx {
    /// A fresh transaction on `store`, with nothing written yet.
    pub(super) fn begin(store: MemStore) -> MemTx {
        MemTx { store, writes: Vec::new() }
    }

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
