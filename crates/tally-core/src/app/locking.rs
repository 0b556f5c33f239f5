//! Which records a command locks. An order names products, seats and a
//! payment that the command itself does not, so [`Tally::lock_keys`] first
//! *peeks* at the records (an unlocked read) to learn which keys to lock.
//! Those names are immutable except an order's payment; every use case
//! re-checks, under its locks, that what it loads is covered by what it
//! locked ([`ensure_locked`]), and otherwise retries with fresh keys
//! ([`StoreError::Conflict`]).

use super::*;

/// Fails with a conflict (the caller retries with fresh keys) unless every
/// key in `needed` is held.
pub(super) fn ensure_locked(locked: &LockSet, needed: impl IntoIterator<Item = LockKey>) -> Result<(), Error> {
    for key in needed {
        if locked.keys().binary_search(&key).is_err() {
            return Err(Error::Store(StoreError::Conflict));
        }
    }
    Ok(())
}

/// The records an order's life moves: itself, its products, its seats and
/// (when it was booked with a token) its event's queue.
pub(super) fn order_keys(order: &Order) -> Vec<LockKey> {
    let mut keys = vec![LockKey::Order(order.id)];
    keys.extend(order.lines.iter().map(|line| LockKey::Product(line.product)));
    keys.extend(order.seats.iter().map(|seat| LockKey::Seat(seat.seat)));
    keys.extend(order.token.and(order.event).map(LockKey::Queue));
    keys
}

pub(super) fn the_queue(locked: &LockSet) -> Option<EventId> {
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
            Command::CreatePayment { confirm: false, .. }
            | Command::CreateOrderPayment { confirm: false, .. }
            | Command::CreateProduct { .. }
            | Command::CreateEvent { .. } => Vec::new(),
            // Confirmed at once: what a confirm moves, less the new payment.
            Command::CreatePayment { confirm: true, .. } => vec![LockKey::Wallet(user)],
            Command::CreateOrderPayment { order, confirm: true, .. } => {
                let mut keys = vec![LockKey::Wallet(user)];
                keys.extend(self.order_keys_of(Some(*order)).await?);
                keys
            }
            Command::ConfirmPayment { payment, payment_key } => {
                let mut keys = self.payment_keys(user, *payment).await?;
                keys.extend(payment_key.clone().map(LockKey::PaymentKey));
                keys
            }
            Command::CancelPayment { payment } => self.payment_keys(user, *payment).await?,
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

    /// What a confirm or a cancel of `payment` moves: the payment, its
    /// owner's wallet, and the order it pays (peeked, unlocked).
    async fn payment_keys(&self, user: UserId, payment: PaymentId) -> Result<Vec<LockKey>, Error> {
        let mut keys = vec![LockKey::Payment(payment), LockKey::Wallet(user)];
        let mut tx = self.store.peek().await?;
        let peeked = tx.payment(payment).await;
        tx.rollback().await;
        let order = peeked?.filter(|p| p.user == user).and_then(|p| p.order);
        keys.extend(self.order_keys_of(order).await?);
        Ok(keys)
    }

    /// The keys of the order `order` names (peeked, unlocked).
    pub(super) async fn order_keys_of(&self, order: Option<OrderId>) -> Result<Vec<LockKey>, Error> {
        let Some(order) = order else { return Ok(Vec::new()) };
        let mut tx = self.store.peek().await?;
        let peeked = tx.order(order).await;
        tx.rollback().await;
        Ok(peeked?.as_ref().map(order_keys).unwrap_or_default())
    }
}
