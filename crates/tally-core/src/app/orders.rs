//! The order use cases: creating, paying for, cancelling and reading
//! orders, and how a payment's fate moves its order. They lock and load;
//! [`decide::order`] decides; they persist what it decided.

use super::locking::{ensure_locked, order_keys};
use super::payments::began_phase;
use super::*;
use crate::catalog::{Product, Seat};
use crate::decide::{self, order::Policy};
use crate::order::OrderEvent;
use crate::queue::QueueToken;

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
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
        tx: &mut impl Tx,
        before: &Payment,
        after: &Payment,
        now: Timestamp,
        locked: &LockSet,
    ) -> Result<Option<Order>, Error> {
        let Some(id) = after.order else { return Ok(None) };
        let order = tx.order(id).await?.ok_or(StoreError::Integrity(format!("payment {} names no order", after.id)))?;
        ensure_locked(locked, order_keys(&order))?;
        let Some(event) = decide::order::follow_payment(before.status, after) else { return Ok(Some(order)) };
        let next = order.transition(event, now)?;
        match event {
            OrderEvent::Pay(_) => {
                let seats = self.seats_of(tx, &order).await?;
                for (before, after) in decide::order::sell(&order, &seats)? {
                    tx.put_seat(Some(&before), &after).await?;
                }
                self.use_token(tx, &order, now).await?;
            }
            OrderEvent::Cancel => self.release(tx, &order, now).await?,
            OrderEvent::BeginPay(_) | OrderEvent::PayFailed(_) | OrderEvent::Expire => {}
        }
        tx.put_order(Some(&order), &next).await?;
        Ok(Some(next))
    }

    /// An order's seats, in its order (each must exist: the order holds it).
    async fn seats_of(&self, tx: &mut impl Tx, order: &Order) -> Result<Vec<Seat>, Error> {
        let mut seats = Vec::with_capacity(order.seats.len());
        for seat in &order.seats {
            seats.push(tx.seat(seat.seat).await?.ok_or(StoreError::Integrity(format!("seat {} gone", seat.seat)))?);
        }
        Ok(seats)
    }

    /// Gives an order's stock, seats and token count back
    /// ([`decide::order::release`]), loading in the global order: products,
    /// seats, then the event row that guards its tokens.
    pub(super) async fn release(&self, tx: &mut impl Tx, order: &Order, now: Timestamp) -> Result<(), Error> {
        let mut products: Vec<Product> = Vec::with_capacity(order.lines.len());
        for line in &order.lines {
            let gone = || StoreError::Integrity(format!("product {} gone", line.product));
            products.push(tx.product(line.product).await?.ok_or_else(gone)?);
        }
        let seats = self.seats_of(tx, order).await?;
        let token: Option<QueueToken> = match (order.token, order.event, order.seats.is_empty()) {
            (Some(token), Some(event), false) => {
                tx.event(event).await?.ok_or(StoreError::Integrity(format!("event {event} gone")))?;
                Some(tx.token(token).await?.ok_or(StoreError::Integrity(format!("token {token} gone")))?)
            }
            _ => None,
        };
        let released = decide::order::release(order, &products, &seats, token.as_ref(), now)?;
        put_holdings(tx, &released).await
    }

    /// A new payment of `order`'s total (not yet stored).
    pub(super) async fn order_payment(
        &self,
        tx: &mut impl Tx,
        user: UserId,
        order: OrderId,
        method: Method,
        booking: &Booking,
    ) -> Result<Payment, Error> {
        let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
        let order = tx.order(order).await?.filter(|o| o.user == user).ok_or(Error::NotFound)?;
        order.payable(booking.at)?;
        if method == Method::Wallet && wallet.limits.per_payment.is_some_and(|limit| order.total.money() > limit) {
            return Err(WalletError::LimitExceeded(LimitKind::PerPayment).into());
        }
        let payback = Amount::new(order.payback.minor_units()).ok();
        let mut payment = Payment::new(PaymentId(self.ids.next_id()), user, order.total, payback, method, booking.at)?;
        payment.order = Some(order.id);
        Ok(payment)
    }

    pub(super) async fn create_order(
        &self,
        tx: &mut impl Tx,
        user: UserId,
        request: decide::order::Request,
        booking: &Booking,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        // The check_then_act bug of seed 004: stock read and written
        // without holding the product.
        if !crate::mutant::active("stock_check_then_act") {
            ensure_locked(locked, request.items.iter().map(|(product, _)| LockKey::Product(*product)))?;
        }
        ensure_locked(locked, request.seats.iter().map(|seat| LockKey::Seat(*seat)))?;
        // Loads in the global order: products, seats, then the event's queue.
        let mut products = Vec::with_capacity(request.items.len());
        for (product, _) in &request.items {
            products.push(tx.product(*product).await?);
        }
        let mut seats = Vec::with_capacity(request.seats.len());
        for seat in &request.seats {
            seats.push(tx.seat(*seat).await?);
        }
        // The queue is loaded only for seats that all exist and share one
        // event; otherwise the decision refuses before it needs it.
        let all: Option<Vec<Seat>> = seats.iter().cloned().collect();
        let event = all.and_then(|seats| decide::order::seats_event(&seats).ok().flatten());
        let (event, token) = match event {
            None => (None, None),
            Some(event) => {
                ensure_locked(locked, [LockKey::Queue(event)])?;
                // The event row guards its tokens: load it before the token.
                let loaded = tx.event(event).await?.ok_or(StoreError::Integrity(format!("event {event} gone")))?;
                let token = match request.token {
                    Some(token) => tx.token(token).await?,
                    None => None,
                };
                (Some(loaded), token)
            }
        };
        let loaded =
            decide::order::Loaded { products: &products, seats: &seats, event: event.as_ref(), token: token.as_ref() };
        let policy = Policy { order_ttl: self.config.order_ttl, payback_bps: self.config.payback_bps };
        let id = OrderId(self.ids.next_id());
        let created = decide::order::create(id, user, &request, loaded, policy, booking.at)?;
        put_holdings(tx, &created.reserved).await?;
        tx.put_order(None, &created.order).await?;
        Ok(Step::Done(Outcome::Order(created.order)))
    }

    pub(super) async fn cancel_order(
        &self,
        tx: &mut impl Tx,
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
            // A paid order is cancelled by refunding its payment, which
            // cancels the order in the refund's transaction; the retry of
            // this request's own cancel, settled by the completer after it
            // was answered 503, is answered there too.
            let settled = loaded.status == PaymentStatus::Cancelled && began_phase(&loaded, booking);
            if matches!(loaded.status, PaymentStatus::Done | PaymentStatus::Cancelling) || settled {
                return self.cancel_payment(tx, user, loaded, booking, locked, Answer::Order).await;
            }
        }
        let loaded = tx.order(order).await?.filter(|o| o.user == user).ok_or(Error::NotFound)?;
        if loaded.payment != paid_by {
            // Paid (or being paid) since the peek: retry with its payment locked.
            return Err(Error::Store(StoreError::Conflict));
        }
        ensure_locked(locked, order_keys(&loaded))?;
        let cancelled = decide::order::cancel(&loaded, booking.at)?;
        self.release(tx, &loaded, booking.at).await?;
        tx.put_order(Some(&loaded), &cancelled).await?;
        Ok(Step::Done(Outcome::Order(cancelled)))
    }

    /// An order, if it is `user`'s, as it stands now.
    pub async fn order(&self, user: UserId, id: OrderId) -> Result<Order, Error> {
        let mut tx = self.store.peek().await?;
        let order = tx.order(id).await;
        tx.rollback().await;
        Ok(self.order_view(order?.filter(|o| o.user == user).ok_or(Error::NotFound)?))
    }
}

/// Writes what an order reserved or gave back, in the global order:
/// products, seats, then the token.
async fn put_holdings<T: Tx>(tx: &mut T, holdings: &decide::order::Holdings) -> Result<(), Error> {
    for (before, after) in &holdings.products {
        tx.put_product(Some(before), after).await?;
    }
    for (before, after) in &holdings.seats {
        tx.put_seat(Some(before), after).await?;
    }
    if let Some((before, after)) = &holdings.token {
        tx.put_token(Some(before), after).await?;
    }
    Ok(())
}
