//! The inventory use cases: the catalogue (products, events, seats), the
//! waiting queue, orders, and how a payment's fate moves its order.
//!
//! They follow the shape of the payment use cases in the parent module —
//! lock, load in the global order, decide with a transition function, persist
//! — and add one step in front: an order names products, seats and a payment
//! that the command itself does not, so [`Tally::lock_keys`] first *peeks* at
//! the records (an unlocked read) to learn which keys to lock. Those names are
//! immutable except an order's payment; every use case re-checks, under its
//! locks, that what it loads is covered by what it locked, and otherwise
//! retries with fresh keys ([`StoreError::Conflict`]).

use std::collections::BTreeSet;

use super::*;
use crate::catalog::{self, Seat, SeatEvent, SeatStatus, Showtime, StockEvent};
use crate::ids::ShowtimeId;
use crate::money::{AmountError, Money};
use crate::order::{self, OrderError, OrderEvent, OrderLine, OrderSeat, OrderStatus};
use crate::queue::{self, QueueToken, TokenStatus};

/// One seat of a new showtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSeat {
    pub label: String,
    pub price: Amount,
}

/// One showtime of a new event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewShowtime {
    pub starts_at: Timestamp,
    pub seats: Vec<NewSeat>,
}

/// An event as created: its showtimes with their seats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventView {
    pub event: Event,
    pub showtimes: Vec<(Showtime, Vec<Seat>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShowtimeView {
    pub showtime: Showtime,
    pub available_seats: u64,
}

/// An event's queue settings, as the admin creates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    pub active_limit: u32,
    pub token_ttl: Duration,
    pub max_seats_per_token: u32,
}

/// A queue token as its owner sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenView {
    pub token: QueueToken,
    pub status: TokenStatus,
    /// 0 once promoted; else the place in line (1 = next).
    pub position: u64,
}

/// Most tokens one event can have active at once, as a load bound.
const ACTIVE_LOAD_MAX: usize = catalog::ACTIVE_LIMIT_MAX as usize;

/// Fails with a conflict (the caller retries with fresh keys) unless every
/// key in `needed` is held.
fn ensure_locked(locked: &LockSet, needed: impl IntoIterator<Item = LockKey>) -> Result<(), Error> {
    for key in needed {
        if locked.keys().binary_search(&key).is_err() {
            return Err(Error::Store(StoreError::Conflict));
        }
    }
    Ok(())
}

/// The records an order's life moves: itself, its products, its seats and
/// (when it was booked with a token) its event's queue.
fn order_keys(order: &Order) -> Vec<LockKey> {
    let mut keys = vec![LockKey::Order(order.id)];
    keys.extend(order.lines.iter().map(|line| LockKey::Product(line.product)));
    keys.extend(order.seats.iter().map(|seat| LockKey::Seat(seat.seat)));
    keys.extend(order.token.and(order.event).map(LockKey::Queue));
    keys
}

fn the_queue(locked: &LockSet) -> Option<EventId> {
    locked.keys().iter().find_map(|key| match key {
        LockKey::Queue(event) => Some(*event),
        _ => None,
    })
}

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    /// The records `command` writes, locked for its whole transaction.
    pub(super) async fn lock_keys(&self, user: UserId, command: &Command) -> Result<Vec<LockKey>, Error> {
        Ok(match command {
            Command::TopUp { .. } => vec![LockKey::Wallet(user)],
            // New records have fresh ids nobody else can name yet; the
            // payment of an order only reads the order (confirm re-checks).
            Command::CreatePayment { .. }
            | Command::CreateOrderPayment { .. }
            | Command::CreateProduct { .. }
            | Command::CreateEvent { .. } => Vec::new(),
            Command::ConfirmPayment { payment, payment_key } => {
                let mut keys = vec![LockKey::Payment(*payment), LockKey::Wallet(user)];
                keys.extend(payment_key.clone().map(LockKey::PaymentKey));
                let mut tx = self.store.peek().await?;
                let peeked = tx.payment(*payment).await;
                tx.rollback().await;
                let order = peeked?.filter(|p| p.user == user).and_then(|p| p.order);
                keys.extend(self.order_keys_of(order).await?);
                keys
            }
            Command::CancelPayment { payment } => {
                let mut keys = vec![LockKey::Payment(*payment), LockKey::Wallet(user)];
                let mut tx = self.store.peek().await?;
                let peeked = tx.payment(*payment).await;
                tx.rollback().await;
                let order = peeked?.filter(|p| p.user == user).and_then(|p| p.order);
                keys.extend(self.order_keys_of(order).await?);
                keys
            }
            Command::Restock { product, .. } => vec![LockKey::Product(*product)],
            Command::JoinQueue { event } => vec![LockKey::Queue(*event)],
            Command::QueueStatus { token } => {
                let mut tx = self.store.peek().await?;
                let peeked = tx.token(*token).await;
                tx.rollback().await;
                peeked?.map(|t| LockKey::Queue(t.event)).into_iter().collect()
            }
            Command::CreateOrder { items, seats, .. } => {
                // The check_then_act bug of seed 004: stock read and written
                // without holding the product.
                let unlocked = crate::mutant::active("stock_check_then_act");
                let mut keys: Vec<LockKey> = if unlocked {
                    Vec::new()
                } else {
                    items.iter().map(|(product, _)| LockKey::Product(*product)).collect()
                };
                keys.extend(seats.iter().map(|seat| LockKey::Seat(*seat)));
                if let Some(first) = seats.first() {
                    let mut tx = self.store.peek().await?;
                    let peeked = tx.seat(*first).await;
                    tx.rollback().await;
                    keys.extend(peeked?.map(|seat| LockKey::Queue(seat.event)));
                }
                keys
            }
            Command::CancelOrder { order } => {
                let mut tx = self.store.peek().await?;
                let peeked = tx.order(*order).await;
                tx.rollback().await;
                match peeked?.filter(|o| o.user == user) {
                    Some(order) => {
                        let mut keys = order_keys(&order);
                        keys.extend(order.payment.map(LockKey::Payment));
                        keys.push(LockKey::Wallet(user));
                        keys
                    }
                    None => Vec::new(),
                }
            }
        })
    }

    /// The keys of the order `order` names (peeked, unlocked).
    pub(super) async fn order_keys_of(&self, order: Option<OrderId>) -> Result<Vec<LockKey>, Error> {
        let Some(order) = order else { return Ok(Vec::new()) };
        let mut tx = self.store.peek().await?;
        let peeked = tx.order(order).await;
        tx.rollback().await;
        Ok(peeked?.as_ref().map(order_keys).unwrap_or_default())
    }

    /// An order as a reader sees it now (see [`Order::status_at`]).
    pub(super) fn order_view(&self, mut order: Order) -> Order {
        order.status = order.status_at(self.clock.now());
        order
    }

    /// Moves the order a payment pays after the payment moved from `before`
    /// to `after`, in the same transaction: paying begins, succeeds or fails
    /// with the charge; a refund cancels the order and gives its stock and
    /// seats back. Returns the order as written (or as loaded, unmoved).
    pub(super) async fn follow_order(
        &self,
        tx: &mut S::Tx,
        before: &Payment,
        after: &Payment,
        now: Timestamp,
        locked: &LockSet,
    ) -> Result<Option<Order>, Error> {
        use PaymentStatus as P;
        let Some(id) = after.order else { return Ok(None) };
        let order = tx.order(id).await?.ok_or(StoreError::Integrity(format!("payment {} names no order", after.id)))?;
        ensure_locked(locked, order_keys(&order))?;
        let event = match (before.status, after.status) {
            (P::Wait, P::Confirming) => OrderEvent::BeginPay(after.id),
            (P::Wait | P::Confirming, P::Done) => OrderEvent::Pay(after.id),
            (P::Confirming, P::Failed | P::Refunding) => OrderEvent::PayFailed(after.id),
            (P::Done | P::Cancelling, P::Cancelled) => OrderEvent::Cancel,
            _ => return Ok(Some(order)),
        };
        let next = order.transition(event, now)?;
        match event {
            OrderEvent::Pay(_) => {
                self.sell(tx, &order).await?;
                self.use_token(tx, &order, now).await?;
            }
            OrderEvent::Cancel => self.release(tx, &order, now).await?,
            OrderEvent::BeginPay(_) | OrderEvent::PayFailed(_) | OrderEvent::Expire => {}
        }
        tx.put_order(Some(&order), &next).await?;
        Ok(Some(next))
    }

    /// Held seats become sold.
    async fn sell(&self, tx: &mut S::Tx, order: &Order) -> Result<(), Error> {
        for seat in &order.seats {
            let loaded = tx.seat(seat.seat).await?.ok_or(StoreError::Integrity(format!("seat {} gone", seat.seat)))?;
            let sold = loaded.apply(SeatEvent::Sell(order.id)).map_err(|_| stale())?;
            tx.put_seat(Some(&loaded), &sold).await?;
        }
        Ok(())
    }

    /// Gives an order's stock and seats back.
    async fn release(&self, tx: &mut S::Tx, order: &Order, now: Timestamp) -> Result<(), Error> {
        for line in &order.lines {
            let loaded = tx
                .product(line.product)
                .await?
                .ok_or(StoreError::Integrity(format!("product {} gone", line.product)))?;
            let released = loaded.apply(StockEvent::Release(line.quantity), now).map_err(|_| stale())?;
            tx.put_product(Some(&loaded), &released).await?;
        }
        for seat in &order.seats {
            let loaded = tx.seat(seat.seat).await?.ok_or(StoreError::Integrity(format!("seat {} gone", seat.seat)))?;
            let released = loaded.apply(SeatEvent::Release(order.id)).map_err(|_| stale())?;
            tx.put_seat(Some(&loaded), &released).await?;
        }
        // The token that booked the seats may book as many again.
        if let (Some(token), Some(event), false) = (order.token, order.event, order.seats.is_empty()) {
            // The event row guards its tokens: load it first.
            tx.event(event).await?.ok_or(StoreError::Integrity(format!("event {event} gone")))?;
            let loaded = tx.token(token).await?.ok_or(StoreError::Integrity(format!("token {token} gone")))?;
            let seats = u32::try_from(order.seats.len()).expect("at most ORDER_SEATS_MAX seats");
            if loaded.seats_held < seats {
                // Read without a row lock (optimistic, atomic) before the
                // booking's write committed: decide again.
                return Err(stale());
            }
            tx.put_token(Some(&loaded), &loaded.free_seats(seats)).await?;
        }
        Ok(())
    }

    /// The order was paid: its queue token is used up and its slot goes to
    /// the next in line. A token that already expired (or was used by
    /// another order) has no slot to give.
    async fn use_token(&self, tx: &mut S::Tx, order: &Order, now: Timestamp) -> Result<(), Error> {
        let (Some(token), Some(event)) = (order.token, order.event) else { return Ok(()) };
        let loaded = tx.event(event).await?.ok_or(StoreError::Integrity(format!("event {event} gone")))?;
        let usable = tx.token(token).await?.is_some_and(|t| t.usable(now));
        let used = usable.then_some(token);
        self.refresh_queue(tx, &loaded, None, used, now).await?;
        Ok(())
    }

    /// Loads an event's queue, runs [`queue::refresh`] (with `joining`, a
    /// token not yet stored, at the back of the line) and writes what moved.
    /// Returns the tokens as written and the event.
    async fn refresh_queue(
        &self,
        tx: &mut S::Tx,
        event: &Event,
        joining: Option<(TokenId, UserId)>,
        used: Option<TokenId>,
        now: Timestamp,
    ) -> Result<(Event, Vec<QueueToken>), Error> {
        // The caller loaded (and so, on a locking store, locked) the event
        // row after it read `now`: the transaction that freed a slot may
        // have committed in between, stamped later than `now`. Promoting at
        // the earlier time would overlap the two tokens' activity, so read
        // the clock again, under the lock.
        let now = self.clock.now().max(now);
        let active = tx.tokens(event.id, TokenStatus::Active, ACTIVE_LOAD_MAX).await?;
        let mut waiting = tx.tokens(event.id, TokenStatus::Waiting, event.active_limit as usize).await?;
        let mut joined_event = event.clone();
        let mut joined = None;
        if let Some((id, user)) = joining {
            let (next, token) = queue::join(event, id, user, now);
            if waiting.last().is_some_and(|last| last.seq >= token.seq) {
                // The event row was read before another join committed (no
                // row locks: optimistic, atomic): its counter is stale.
                return Err(stale());
            }
            joined_event = next;
            joined = Some(token.clone());
            // At the back of the line: promoted only if every waiting token
            // ahead of it is (the load holds as many as there are slots).
            waiting.push(token);
        }
        // The token was checked usable by another read; without locks (an
        // optimistic store) the two reads may disagree: retry.
        let refreshed = queue::refresh(&joined_event, &active, &waiting, used, now).map_err(|_| stale())?;
        if refreshed.event != *event {
            tx.put_event(Some(event), &refreshed.event).await?;
        }
        let mut written = refreshed.changed.clone();
        if let Some(joined) = joined.as_ref().filter(|j| !written.iter().any(|t| t.id == j.id)) {
            written.push(joined.clone());
        }
        for token in &written {
            let before = if joined.as_ref().is_some_and(|j| j.id == token.id) {
                None
            } else {
                active.iter().chain(waiting.iter()).find(|t| t.id == token.id)
            };
            tx.put_token(before, token).await?;
        }
        Ok((refreshed.event, written))
    }

    pub(super) async fn create_order_payment(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        order: OrderId,
        method: Method,
        booking: &Booking,
    ) -> Result<Step, Error> {
        if method == Method::Gateway && !self.gateway.enabled() {
            return Err(Error::InvalidInput("gateway payments are not configured on this server"));
        }
        let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
        let order = tx.order(order).await?.filter(|o| o.user == user).ok_or(Error::NotFound)?;
        order.payable(booking.at)?;
        if method == Method::Wallet && wallet.limits.per_payment.is_some_and(|limit| order.total.money() > limit) {
            return Err(WalletError::LimitExceeded(LimitKind::PerPayment).into());
        }
        let payback = Amount::new(order.payback.minor_units()).ok();
        let mut payment = Payment::new(PaymentId(self.ids.next_id()), user, order.total, payback, method, booking.at)?;
        payment.order = Some(order.id);
        tx.put_payment(None, &payment).await?;
        Ok(Step::Done(Outcome::Payment(payment)))
    }

    pub(super) async fn create_product(
        &self,
        tx: &mut S::Tx,
        name: &str,
        price: Amount,
        stock: u64,
        payback_bps: Option<u32>,
        booking: &Booking,
    ) -> Result<Step, Error> {
        let name = valid_label(name, "a product name must be 1 to 200 characters")?;
        let payback_bps = payback_bps.unwrap_or(self.config.payback_bps);
        if payback_bps > crate::payment::PAYBACK_BPS_MAX {
            return Err(Error::InvalidInput("payback_bps must be 0 to 10000"));
        }
        let product = Product::new(ProductId(self.ids.next_id()), name, price, stock, payback_bps, booking.at)?;
        tx.put_product(None, &product).await?;
        Ok(Step::Done(Outcome::Product(product)))
    }

    pub(super) async fn restock(
        &self,
        tx: &mut S::Tx,
        product: ProductId,
        quantity: u64,
        booking: &Booking,
    ) -> Result<Step, Error> {
        let loaded = tx.product(product).await?.ok_or(Error::NotFound)?;
        let restocked = loaded.apply(StockEvent::Restock(quantity), booking.at)?;
        tx.put_product(Some(&loaded), &restocked).await?;
        Ok(Step::Done(Outcome::Product(restocked)))
    }

    pub(super) async fn create_event(
        &self,
        tx: &mut S::Tx,
        name: &str,
        settings: QueueSettings,
        showtimes: &[NewShowtime],
        booking: &Booking,
    ) -> Result<Step, Error> {
        let QueueSettings { active_limit, token_ttl, max_seats_per_token } = settings;
        let name = valid_label(name, "an event name must be 1 to 200 characters")?;
        if !queue::valid_settings(active_limit, token_ttl) {
            return Err(Error::InvalidInput("active_limit must be 1 to 10000 and token_ttl_seconds 1 to 86400"));
        }
        if max_seats_per_token == 0 || max_seats_per_token > catalog::MAX_SEATS_PER_TOKEN_MAX {
            return Err(Error::InvalidInput("max_seats_per_token must be 1 to 1000"));
        }
        if showtimes.is_empty() || showtimes.len() > catalog::SHOWTIMES_MAX {
            return Err(Error::InvalidInput("an event has 1 to 100 showtimes"));
        }
        let seat_count: usize = showtimes.iter().map(|s| s.seats.len()).sum();
        if showtimes.iter().any(|s| s.seats.is_empty() || s.seats.len() > catalog::SEATS_PER_SHOWTIME_MAX)
            || seat_count > catalog::SEATS_PER_EVENT_MAX
        {
            return Err(Error::InvalidInput("a showtime has 1 to 1000 seats, an event at most 10000"));
        }
        let event = Event {
            id: EventId(self.ids.next_id()),
            name,
            active_limit,
            token_ttl,
            next_seq: 1,
            head_seq: 1,
            active_count: 0,
            max_seats_per_token,
            created_at: booking.at,
            version: 0,
        };
        let mut created = Vec::with_capacity(showtimes.len());
        for new in showtimes {
            let showtime = Showtime { id: ShowtimeId(self.ids.next_id()), event: event.id, starts_at: new.starts_at };
            let mut labels = BTreeSet::new();
            let mut seats = Vec::with_capacity(new.seats.len());
            for seat in &new.seats {
                let label = valid_label(&seat.label, "a seat label must be 1 to 200 characters")?;
                if !labels.insert(label.clone()) {
                    return Err(Error::InvalidInput("seat labels must be unique within a showtime"));
                }
                seats.push(Seat {
                    id: SeatId(self.ids.next_id()),
                    showtime: showtime.id,
                    event: event.id,
                    label,
                    price: seat.price,
                    status: SeatStatus::Available,
                    version: 0,
                });
            }
            created.push((showtime, seats));
        }
        tx.put_event(None, &event).await?;
        for (showtime, seats) in &created {
            tx.insert_showtime(showtime).await?;
            for seat in seats {
                tx.put_seat(None, seat).await?;
            }
        }
        Ok(Step::Done(Outcome::Event(EventView { event, showtimes: created })))
    }

    pub(super) async fn join_queue(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        event: EventId,
        booking: &Booking,
    ) -> Result<Step, Error> {
        let loaded = tx.event(event).await?.ok_or(Error::NotFound)?;
        let now = booking.at;
        // One live token per user and event: joining again answers it.
        let live = tx
            .user_token(event, user)
            .await?
            .filter(|t| t.status == TokenStatus::Waiting || (t.status == TokenStatus::Active && t.usable(now)));
        let joining = match &live {
            Some(_) => None,
            None => Some((TokenId(self.ids.next_id()), user)),
        };
        let mine = live.as_ref().map_or_else(|| joining.map(|(id, _)| id), |t| Some(t.id));
        let (event, written) = self.refresh_queue(tx, &loaded, joining, None, now).await?;
        let token = written
            .into_iter()
            .find(|t| Some(t.id) == mine)
            .or(live)
            .expect("the caller's token is live or was just joined");
        Ok(Step::Done(Outcome::Token(token_view(token, &event, now))))
    }

    pub(super) async fn queue_status(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        token: TokenId,
        booking: &Booking,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        // The queue key came from a peek at the token; no key, no token.
        let event = the_queue(locked).ok_or(Error::NotFound)?;
        let now = booking.at;
        // The event row guards its tokens: load it first.
        let event = tx.event(event).await?.ok_or(StoreError::Integrity("token of no event".into()))?;
        let loaded = tx.token(token).await?.filter(|t| t.user == user && t.event == event.id).ok_or(Error::NotFound)?;
        let (event, written) = self.refresh_queue(tx, &event, None, None, now).await?;
        let token = written.into_iter().find(|t| t.id == token).unwrap_or(loaded);
        Ok(Step::Done(Outcome::Token(token_view(token, &event, now))))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_order(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        items: &[(ProductId, u64)],
        seat_ids: &[SeatId],
        token: Option<TokenId>,
        booking: &Booking,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        let now = booking.at;
        if items.is_empty() && seat_ids.is_empty() {
            return Err(Error::InvalidInput("an order has at least one item or seat"));
        }
        if items.len() > order::ORDER_ITEMS_MAX || seat_ids.len() > order::ORDER_SEATS_MAX {
            return Err(Error::InvalidInput("an order has at most 10 items and 10 seats"));
        }
        if items.iter().any(|(_, quantity)| *quantity == 0 || *quantity > order::LINE_QUANTITY_MAX) {
            return Err(Error::InvalidInput("a quantity is 1 to 1000"));
        }
        let mut items = items.to_vec();
        items.sort_unstable();
        let mut seat_ids = seat_ids.to_vec();
        seat_ids.sort_unstable();
        if items.windows(2).any(|w| w[0].0 == w[1].0) || seat_ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::InvalidInput("a product or seat appears twice in the order"));
        }
        if !seat_ids.is_empty() && token.is_none() {
            return Err(Error::Forbidden("seats need an active queue token (Queue-Token header)"));
        }
        if !crate::mutant::active("stock_check_then_act") {
            ensure_locked(locked, items.iter().map(|(product, _)| LockKey::Product(*product)))?;
        }
        ensure_locked(locked, seat_ids.iter().map(|seat| LockKey::Seat(*seat)))?;
        let id = OrderId(self.ids.next_id());
        // Loads in the global order: products, seats, then the event's queue.
        let mut total: i64 = 0;
        // The merchant's payback: each line at its product's rate, seats at
        // the service default. Rounded down per line, so never above total.
        let mut payback = Money::ZERO;
        let mut pay_back = |price: Amount, quantity: u64, bps: u32| -> Result<(), Error> {
            let cost = i64::try_from(quantity).ok().and_then(|q| price.minor_units().checked_mul(q));
            let cost = Amount::new(cost.ok_or(AmountError::TooLarge)?)?;
            payback = payback.checked_add(crate::payment::payback_of(cost, bps)).ok_or(AmountError::TooLarge)?;
            Ok(())
        };
        let mut lines = Vec::with_capacity(items.len());
        let mut reserved = Vec::with_capacity(items.len());
        for (product, quantity) in &items {
            let loaded = tx.product(*product).await?.ok_or(Error::NotFound)?;
            let taken = loaded.apply(StockEvent::Reserve(*quantity), now)?;
            let cost = i64::try_from(*quantity).ok().and_then(|q| loaded.price.minor_units().checked_mul(q));
            total = cost.and_then(|c| total.checked_add(c)).ok_or(AmountError::TooLarge)?;
            pay_back(loaded.price, *quantity, loaded.payback_bps)?;
            lines.push(OrderLine { product: *product, quantity: *quantity, unit_price: loaded.price });
            reserved.push((loaded, taken));
        }
        let mut seats = Vec::with_capacity(seat_ids.len());
        let mut held = Vec::with_capacity(seat_ids.len());
        for seat in &seat_ids {
            let loaded = tx.seat(*seat).await?.ok_or(Error::NotFound)?;
            let taken = loaded.apply(SeatEvent::Hold(id))?;
            total = total.checked_add(loaded.price.minor_units()).ok_or(AmountError::TooLarge)?;
            pay_back(loaded.price, 1, self.config.payback_bps)?;
            seats.push(OrderSeat { seat: *seat, price: loaded.price });
            held.push((loaded, taken));
        }
        let mut booked_token = None;
        let event = match held.first() {
            None => None,
            Some((first, _)) => {
                let event = first.event;
                if held.iter().any(|(seat, _)| seat.event != event) {
                    return Err(Error::InvalidInput("the seats of one order belong to one event"));
                }
                ensure_locked(locked, [LockKey::Queue(event)])?;
                // The event row guards its tokens: load it before the token.
                let loaded = tx.event(event).await?.ok_or(StoreError::Integrity(format!("event {event} gone")))?;
                let valid = match token {
                    Some(token) => tx.token(token).await?,
                    None => None,
                }
                .filter(|t| t.user == user && t.event == event && t.usable(now));
                let Some(valid) = valid else {
                    return Err(Error::Forbidden("seats need an active queue token for their event"));
                };
                // One active token may not hoard the showtime: its live
                // orders hold at most the event's max_seats_per_token.
                let seats = u32::try_from(held.len()).expect("at most ORDER_SEATS_MAX seats");
                let booked = valid.book_seats(seats, loaded.max_seats_per_token).ok_or(Error::SeatLimitReached)?;
                booked_token = Some((valid, booked));
                Some(event)
            }
        };
        let total = Amount::new(total)?;
        let order = Order {
            id,
            user,
            lines,
            seats,
            event,
            token: event.and(token),
            total,
            payback,
            status: OrderStatus::PendingPayment,
            payment: None,
            expires_at: now.plus(self.config.order_ttl),
            created_at: now,
            updated_at: now,
            version: 0,
        };
        for (before, after) in &reserved {
            tx.put_product(Some(before), after).await?;
        }
        for (before, after) in &held {
            tx.put_seat(Some(before), after).await?;
        }
        if let Some((before, after)) = &booked_token {
            tx.put_token(Some(before), after).await?;
        }
        tx.put_order(None, &order).await?;
        Ok(Step::Done(Outcome::Order(order)))
    }

    pub(super) async fn cancel_order(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        order: OrderId,
        booking: &Booking,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        // Loads in the global order: the payment (if the peek saw one), then
        // the order.
        let paid_by = locked.keys().iter().find_map(|key| match key {
            LockKey::Payment(payment) => Some(*payment),
            _ => None,
        });
        if let Some(payment) = paid_by {
            let loaded = tx
                .payment(payment)
                .await?
                .filter(|p| p.user == user && p.order == Some(order))
                .ok_or(Error::NotFound)?;
            if matches!(loaded.status, PaymentStatus::Done | PaymentStatus::Cancelling) {
                // A paid order is cancelled by refunding its payment, which
                // cancels the order in the refund's transaction.
                return self.cancel_payment(tx, user, loaded, booking, locked, Answer::Order).await;
            }
        }
        let loaded = tx.order(order).await?.filter(|o| o.user == user).ok_or(Error::NotFound)?;
        if loaded.payment != paid_by {
            // Paid (or being paid) since the peek: retry with its payment locked.
            return Err(Error::Store(StoreError::Conflict));
        }
        ensure_locked(locked, order_keys(&loaded))?;
        if loaded.status_at(booking.at) == OrderStatus::Expired {
            return Err(OrderError::Expired(order).into());
        }
        let cancelled = loaded.transition(OrderEvent::Cancel, booking.at)?;
        self.release(tx, &loaded, booking.at).await?;
        tx.put_order(Some(&loaded), &cancelled).await?;
        Ok(Step::Done(Outcome::Order(cancelled)))
    }

    /// The expiry sweeper (seed 004's scheduled job): unpaid orders past
    /// their TTL become `expired` and give their stock and seats back, each
    /// in its own transaction, at most `limit` per call. An order someone
    /// else holds (a payment, another sweeper) is skipped, not waited for:
    /// the next sweep, or the holder, settles it. Returns how many expired.
    pub async fn expire_orders(&self, limit: usize) -> Result<usize, Error> {
        assert!(limit > 0 && limit <= 1_000, "a sweep expires 1 to 1000 orders");
        let now = self.clock.now();
        let mut tx = self.store.peek().await?;
        let candidates = tx.expired_orders(now, limit).await;
        tx.rollback().await;
        let mut expired = 0;
        for id in candidates? {
            let keys = LockSet::new(self.order_keys_of(Some(id)).await?);
            let Ok(guard) = self.locks.acquire(&keys, Duration::ZERO).await else { continue };
            let mut tx = self.store.begin().await?;
            match self.expire_in(&mut tx, id, now, &keys).await {
                Ok(true) => {}
                Ok(false) | Err(Error::Order(_) | Error::Store(StoreError::Conflict | StoreError::Busy)) => {
                    tx.rollback().await;
                    continue;
                }
                Err(error) => {
                    tx.rollback().await;
                    return Err(error);
                }
            }
            match tx.commit().await {
                Ok(()) => expired += 1,
                Err(StoreError::Conflict) => {}
                Err(error) => return Err(error.into()),
            }
            drop(guard);
        }
        Ok(expired)
    }

    async fn expire_in(&self, tx: &mut S::Tx, id: OrderId, now: Timestamp, locked: &LockSet) -> Result<bool, Error> {
        let Some(order) = tx.order_skip_locked(id).await? else { return Ok(false) };
        ensure_locked(locked, order_keys(&order))?;
        // Re-checked under the lock: the listing was an unlocked read, and a
        // payment may have landed since. The mutant skips the check.
        let unpaid = order.status == OrderStatus::PendingPayment && order.payment.is_none() && order.past_ttl(now);
        if !unpaid && !crate::mutant::active("expire_paid_order") {
            return Ok(false);
        }
        let next = order.transition(OrderEvent::Expire, now)?;
        self.release(tx, &order, now).await?;
        tx.put_order(Some(&order), &next).await?;
        Ok(true)
    }

    pub async fn product(&self, id: ProductId) -> Result<Product, Error> {
        let mut tx = self.store.peek().await?;
        let product = tx.product(id).await;
        tx.rollback().await;
        product?.ok_or(Error::NotFound)
    }

    /// An event's showtimes with how many seats are available in each.
    pub async fn showtimes(&self, event: EventId) -> Result<Vec<ShowtimeView>, Error> {
        let mut tx = self.store.peek().await?;
        let result = async {
            tx.event(event).await?.ok_or(Error::NotFound)?;
            let mut views = Vec::new();
            for showtime in tx.showtimes(event).await? {
                let seats = tx.seats(showtime.id).await?;
                let available_seats = seats.iter().filter(|s| s.status == SeatStatus::Available).count() as u64;
                views.push(ShowtimeView { showtime, available_seats });
            }
            Ok(views)
        }
        .await;
        tx.rollback().await;
        result
    }

    pub async fn seats(&self, showtime: ShowtimeId) -> Result<Vec<Seat>, Error> {
        let mut tx = self.store.peek().await?;
        let result = async {
            tx.showtime(showtime).await?.ok_or(Error::NotFound)?;
            Ok(tx.seats(showtime).await?)
        }
        .await;
        tx.rollback().await;
        result
    }

    /// An order, if it is `user`'s, as it stands now.
    pub async fn order(&self, user: UserId, id: OrderId) -> Result<Order, Error> {
        let mut tx = self.store.peek().await?;
        let order = tx.order(id).await;
        tx.rollback().await;
        Ok(self.order_view(order?.filter(|o| o.user == user).ok_or(Error::NotFound)?))
    }

    /// The caller's queue token, its queue refreshed first (a waiting token
    /// may have been promoted, an active one may have expired).
    pub async fn queue_token(&self, user: UserId, token: TokenId) -> Result<TokenView, Error> {
        match self.execute(user, Command::QueueStatus { token }, None).await? {
            Executed::Fresh(Outcome::Token(view)) => Ok(view),
            other => unreachable!("a queue status is a token, not {other:?}"),
        }
    }
}

/// An order holds the units and seats it gives back or buys, so a refusal
/// there means the order was read stale (possible only without locks, e.g.
/// optimistic stores): a conflict to retry, never an answer to the caller.
/// Under locks it cannot happen; if a bug caused it, the retries end in Busy.
fn stale() -> Error {
    Error::Store(StoreError::Conflict)
}

fn token_view(token: QueueToken, event: &Event, now: Timestamp) -> TokenView {
    TokenView { status: token.status_at(now), position: token.position(event), token }
}

fn valid_label(text: &str, refusal: &'static str) -> Result<String, Error> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > catalog::LABEL_LENGTH_MAX {
        return Err(Error::InvalidInput(refusal));
    }
    Ok(text.to_owned())
}
