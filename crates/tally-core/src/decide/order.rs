//! Pure decisions for orders (seed 004: stock is taken at order time and
//! given back when an unpaid order expires; seed 002: seats behind a waiting
//! queue): what a new order reserves, what a cancel or an expiry gives back,
//! and what a payment's fate does to its order.
//!
//! The use cases load the records these name and persist what they return.
//! A refusal of a record the order already holds (a seat it cannot release,
//! units it never took) means the records were read stale — possible only
//! without row locks — and is a [`StoreError::Conflict`] to decide again.

use std::time::Duration;

use crate::catalog::{Event, Product, Seat, SeatEvent, StockEvent};
use crate::error::Error;
use crate::ids::{EventId, OrderId, ProductId, SeatId, TokenId, UserId};
use crate::money::{Amount, AmountError, Money};
use crate::order::{self, Order, OrderError, OrderEvent, OrderLine, OrderSeat, OrderStatus};
use crate::payment::{Payment, PaymentStatus, payback_of};
use crate::queue::QueueToken;
use crate::store::StoreError;
use crate::time::Timestamp;

/// The merchant's rules a new order follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long an unpaid order holds its stock and seats.
    pub order_ttl: Duration,
    /// The payback rate of seats (products carry their own).
    pub payback_bps: u32,
}

/// An order request in canonical form: products and seats sorted, each once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub items: Vec<(ProductId, u64)>,
    pub seats: Vec<SeatId>,
    pub token: Option<TokenId>,
}

// The refusals below name these bounds in words (an `InvalidInput` is a
// static message): changing a bound fails the build until they are updated.
const _: () = assert!(order::ORDER_ITEMS_MAX == 10 && order::ORDER_SEATS_MAX == 10);
const _: () = assert!(order::LINE_QUANTITY_MAX == 1_000);

/// Checks an order request's shape before anything is loaded. `tally-http`
/// runs it too, before the request takes a key.
pub fn request(items: &[(ProductId, u64)], seats: &[SeatId], token: Option<TokenId>) -> Result<Request, Error> {
    if items.is_empty() && seats.is_empty() {
        return Err(Error::InvalidInput("an order has at least one item or seat"));
    }
    if items.len() > order::ORDER_ITEMS_MAX || seats.len() > order::ORDER_SEATS_MAX {
        return Err(Error::InvalidInput("an order has at most 10 items and 10 seats"));
    }
    if items.iter().any(|(_, quantity)| *quantity == 0 || *quantity > order::LINE_QUANTITY_MAX) {
        return Err(Error::InvalidInput("a quantity is 1 to 1000"));
    }
    let mut items = items.to_vec();
    items.sort_unstable();
    let mut seats = seats.to_vec();
    seats.sort_unstable();
    if items.windows(2).any(|w| w[0].0 == w[1].0) || seats.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::InvalidInput("a product or seat appears twice in the order"));
    }
    // Seats without a token are refused by `create`, after the key is
    // looked up, not here: the `Queue-Token` header is not part of the
    // fingerprint, so a retry of a stored order without it must replay the
    // order, not be refused 403 (session 14).
    Ok(Request { items, seats, token })
}

/// The event an order's seats belong to (none without seats). The seats of
/// one order belong to one event: its queue token is for that event.
pub fn seats_event<'a>(seats: impl IntoIterator<Item = &'a Seat>) -> Result<Option<EventId>, Error> {
    let mut seats = seats.into_iter();
    let Some(first) = seats.next() else { return Ok(None) };
    if seats.any(|seat| seat.event != first.event) {
        return Err(Error::InvalidInput("the seats of one order belong to one event"));
    }
    Ok(Some(first.event))
}

/// What a new order writes: itself, and the records it reserves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub order: Order,
    pub reserved: Holdings,
}

/// The records a new order needs, as loaded (`None`: no such record): its
/// products and seats in the request's order, and for seats their event and
/// the caller's token.
#[derive(Clone, Copy, Debug)]
pub struct Loaded<'a> {
    pub products: &'a [Option<Product>],
    pub seats: &'a [Option<Seat>],
    pub event: Option<&'a Event>,
    pub token: Option<&'a QueueToken>,
}

/// Creates order `id` for `user`: reserves every product and seat or none,
/// prices it, and applies the merchant's payback policy. Seats need the
/// caller's active token for their event, and one token's live orders hold
/// at most the event's `max_seats_per_token` seats.
pub fn create(
    id: OrderId,
    user: UserId,
    request: &Request,
    loaded: Loaded<'_>,
    policy: Policy,
    now: Timestamp,
) -> Result<Created, Error> {
    assert_eq!(loaded.products.len(), request.items.len(), "every product loaded");
    assert_eq!(loaded.seats.len(), request.seats.len(), "every seat loaded");
    let mut total: i64 = 0;
    let mut payback = Money::ZERO;
    // Each line's payback is rounded down on its own, so never above its cost.
    let mut charge = |price: Amount, quantity: u64, bps: u32| -> Result<(), Error> {
        let cost = i64::try_from(quantity).ok().and_then(|q| price.minor_units().checked_mul(q));
        let cost = Amount::new(cost.ok_or(AmountError::TooLarge)?)?;
        total = total.checked_add(cost.minor_units()).ok_or(AmountError::TooLarge)?;
        payback = payback.checked_add(payback_of(cost, bps)).ok_or(AmountError::TooLarge)?;
        Ok(())
    };
    // Who may book comes before what is free: a caller without an active
    // token for the seats' event is refused 403 (not stored, so the same key
    // may be retried once its token is active), whatever the state of the
    // seats and stock it names. Deciding the seats first answered a held
    // seat 409 `seat_unavailable`, stored under the key (session 14).
    let mut wanted: Vec<&Seat> = Vec::with_capacity(request.seats.len());
    for (seat, loaded) in request.seats.iter().zip(loaded.seats) {
        let loaded = loaded.as_ref().ok_or(Error::NotFound)?;
        debug_assert_eq!(*seat, loaded.id);
        wanted.push(loaded);
    }
    let event = seats_event(wanted.iter().copied())?;
    if crate::mutant::active("seats_before_token") {
        // The mutant: the seats are judged first, as before session 14.
        for seat in &wanted {
            seat.apply(SeatEvent::Hold(id))?;
        }
    }
    let valid = match (event, loaded.event) {
        (None, _) => None,
        (Some(event), Some(loaded_event)) => {
            assert_eq!(event, loaded_event.id, "the seats' event loaded");
            let valid = loaded
                .token
                .filter(|t| Some(t.id) == request.token && t.user == user && t.event == event && t.usable(now));
            let Some(valid) = valid else {
                return Err(Error::Forbidden("seats need an active queue token for their event"));
            };
            Some((valid, loaded_event))
        }
        (Some(_), None) => panic!("an order with seats is decided with their event loaded"),
    };
    let mut lines = Vec::with_capacity(request.items.len());
    let mut products = Vec::with_capacity(request.items.len());
    for ((product, quantity), loaded) in request.items.iter().zip(loaded.products) {
        let loaded = loaded.as_ref().ok_or(Error::NotFound)?;
        debug_assert_eq!(*product, loaded.id);
        let taken = loaded.apply(StockEvent::Reserve(*quantity), now)?;
        charge(loaded.price, *quantity, loaded.payback_bps)?;
        lines.push(OrderLine { product: *product, quantity: *quantity, unit_price: loaded.price });
        products.push((loaded.clone(), taken));
    }
    let mut order_seats = Vec::with_capacity(request.seats.len());
    let mut seats: Vec<(Seat, Seat)> = Vec::with_capacity(request.seats.len());
    for loaded in wanted {
        let taken = loaded.apply(SeatEvent::Hold(id))?;
        charge(loaded.price, 1, policy.payback_bps)?;
        order_seats.push(OrderSeat { seat: loaded.id, price: loaded.price });
        seats.push((loaded.clone(), taken));
    }
    // One active token may not hoard the showtime.
    let token = match valid {
        None => None,
        Some((valid, loaded_event)) => {
            let count = u32::try_from(seats.len()).expect("at most ORDER_SEATS_MAX seats");
            let booked = valid.book_seats(count, loaded_event.max_seats_per_token).ok_or(Error::SeatLimitReached)?;
            Some((valid.clone(), booked))
        }
    };
    let order = Order {
        id,
        user,
        lines,
        seats: order_seats,
        event,
        token: event.and(request.token),
        total: Amount::new(total)?,
        payback,
        status: OrderStatus::PendingPayment,
        payment: None,
        expires_at: now.plus(policy.order_ttl),
        created_at: now,
        updated_at: now,
        version: 0,
    };
    debug_assert!(order.payback <= order.total.money(), "a payback never exceeds what is paid");
    Ok(Created { order, reserved: Holdings { products, seats, token } })
}

/// What an order reserves (when it is created) or gives back (when it is
/// cancelled or expired): its units, its seats and its token's count, each
/// as loaded and as it must be written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holdings {
    pub products: Vec<(Product, Product)>,
    pub seats: Vec<(Seat, Seat)>,
    pub token: Option<(QueueToken, QueueToken)>,
}

/// Gives an order's stock and seats back (it is being cancelled or expired).
/// `products` and `seats` are the order's, in its order; `token` is the one it
/// booked its seats with, if any.
pub fn release(
    order: &Order,
    products: &[Product],
    seats: &[Seat],
    token: Option<&QueueToken>,
    now: Timestamp,
) -> Result<Holdings, Error> {
    assert_eq!((products.len(), seats.len()), (order.lines.len(), order.seats.len()), "the order's records");
    let mut released = Holdings::default();
    for (line, loaded) in order.lines.iter().zip(products) {
        let back = loaded.apply(StockEvent::Release(line.quantity), now).map_err(|_| stale())?;
        released.products.push((loaded.clone(), back));
    }
    for loaded in seats {
        let back = loaded.apply(SeatEvent::Release(order.id)).map_err(|_| stale())?;
        released.seats.push((loaded.clone(), back));
    }
    if let Some(token) = token.filter(|_| !order.seats.is_empty()) {
        let count = u32::try_from(order.seats.len()).expect("at most ORDER_SEATS_MAX seats");
        // The booking's count not there yet: read before it committed.
        if token.seats_held < count {
            return Err(stale());
        }
        released.token = Some((token.clone(), token.free_seats(count)));
    }
    Ok(released)
}

/// Cancels an unpaid order (a paid one is cancelled by refunding its payment,
/// through [`follow_payment`]). An order past its TTL is expired, even before
/// the sweeper wrote it so.
pub fn cancel(order: &Order, now: Timestamp) -> Result<Order, Error> {
    if order.status_at(now) == OrderStatus::Expired {
        return Err(OrderError::Expired(order.id).into());
    }
    Ok(order.transition(OrderEvent::Cancel, now)?)
}

/// The expiry sweeper's decision: the expired order, or `None` if it is not
/// due (it was paid, is being paid, or is still inside its TTL).
pub fn expire(order: &Order, now: Timestamp) -> Result<Option<Order>, Error> {
    // The mutant skips the check, re-made under the lock after an unlocked listing.
    if !order.due_for_expiry(now) && !crate::mutant::active("expire_paid_order") {
        return Ok(None);
    }
    Ok(Some(order.transition(OrderEvent::Expire, now)?))
}

/// How a payment moving from `before` to `after` moves its order: paying
/// begins (a gateway charge is sent), succeeds or fails with the charge; a
/// refund cancels the order. `None`: the order does not move.
pub fn follow_payment(before: PaymentStatus, after: &Payment) -> Option<OrderEvent> {
    use PaymentStatus as P;
    match (before, after.status) {
        (P::Wait, P::Confirming) => Some(OrderEvent::BeginPay(after.id)),
        (P::Wait | P::Confirming, P::Done) => Some(OrderEvent::Pay(after.id)),
        (P::Confirming, P::Failed | P::Refunding) => Some(OrderEvent::PayFailed(after.id)),
        (P::Done | P::Cancelling, P::Cancelled) => Some(OrderEvent::Cancel),
        _ => None,
    }
}

/// The order's held seats become sold (its payment is done).
pub fn sell(order: &Order, seats: &[Seat]) -> Result<Vec<(Seat, Seat)>, Error> {
    assert_eq!(seats.len(), order.seats.len(), "the order's seats");
    seats
        .iter()
        .map(|loaded| Ok((loaded.clone(), loaded.apply(SeatEvent::Sell(order.id)).map_err(|_| stale())?)))
        .collect()
}

/// A refusal of a record an order already holds: read stale, decide again.
pub(crate) fn stale() -> Error {
    Error::Store(StoreError::Conflict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{SeatStatus, StockError};
    use crate::ids::{PaymentId, ShowtimeId};
    use crate::payment::Method;
    use crate::queue::TokenStatus;

    const NOW: Timestamp = Timestamp(1_000);
    const POLICY: Policy = Policy { order_ttl: Duration::from_secs(60), payback_bps: 1_000 };
    const USER: UserId = UserId(7);

    fn product(id: u128, price: i64, stock: u64, bps: u32) -> Product {
        Product::new(ProductId(id), "p".into(), Amount::new(price).unwrap(), stock, bps, Timestamp(0)).unwrap()
    }

    fn seat(id: u128, event: u128) -> Seat {
        Seat {
            id: SeatId(id),
            showtime: ShowtimeId(1),
            event: EventId(event),
            label: format!("A{id}"),
            price: Amount::new(50).unwrap(),
            status: SeatStatus::Available,
            version: 0,
        }
    }

    fn event(max_seats_per_token: u32) -> Event {
        Event {
            id: EventId(9),
            name: "e".into(),
            active_limit: 1,
            token_ttl: Duration::from_secs(60),
            next_seq: 2,
            head_seq: 2,
            active_count: 1,
            max_seats_per_token,
            created_at: Timestamp(0),
            version: 0,
        }
    }

    fn token(seats_held: u32) -> QueueToken {
        QueueToken {
            id: TokenId(5),
            event: EventId(9),
            user: USER,
            seq: 1,
            status: TokenStatus::Active,
            joined_at: Timestamp(0),
            activated_at: Some(Timestamp(0)),
            expires_at: Some(Timestamp(60_000)),
            used_at: None,
            seats_held,
            version: 0,
        }
    }

    fn products_only(items: &[(u128, u64)], products: &[Product]) -> Result<Created, Error> {
        let items: Vec<_> = items.iter().map(|(p, q)| (ProductId(*p), *q)).collect();
        let request = request(&items, &[], None)?;
        let products: Vec<_> = products.iter().cloned().map(Some).collect();
        let loaded = Loaded { products: &products, seats: &[], event: None, token: None };
        create(OrderId(1), USER, &request, loaded, POLICY, NOW)
    }

    #[test]
    fn a_request_is_sorted_bounded_and_refuses_repeats_and_seats_without_a_token() {
        let r = request(&[(ProductId(2), 1), (ProductId(1), 3)], &[SeatId(9), SeatId(4)], Some(TokenId(1))).unwrap();
        assert_eq!((r.items[0].0, r.seats[0]), (ProductId(1), SeatId(4)));
        assert!(matches!(request(&[], &[], None), Err(Error::InvalidInput(_))));
        assert!(matches!(request(&[(ProductId(1), 0)], &[], None), Err(Error::InvalidInput(_))));
        assert!(matches!(request(&[(ProductId(1), 1), (ProductId(1), 2)], &[], None), Err(Error::InvalidInput(_))));
        assert!(request(&[], &[SeatId(1)], None).is_ok(), "refused by `create`, after the key's lookup");
    }

    #[test]
    fn an_order_reserves_everything_prices_it_and_pays_back_by_policy() {
        let products = [product(1, 250, 3, 0), product(2, 40, 5, 500)];
        let created = products_only(&[(1, 1), (2, 2)], &products).unwrap();
        assert_eq!(created.order.total, Amount::new(250 + 80).unwrap());
        assert_eq!(created.order.payback, Money::new(4), "5 % of 80, none on the first product");
        assert_eq!(created.order.expires_at, NOW.plus(POLICY.order_ttl));
        assert_eq!(created.reserved.products.iter().map(|(_, after)| after.stock).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn an_order_is_all_or_nothing() {
        // The second line is out of stock: the first is not written either.
        let products = [product(1, 250, 3, 0), product(2, 40, 1, 0)];
        assert!(matches!(
            products_only(&[(1, 1), (2, 2)], &products),
            Err(Error::Stock(StockError::OutOfStock { .. }))
        ));
        // A missing product is not found, in the order's order.
        let items = request(&[(ProductId(1), 1), (ProductId(2), 1)], &[], None).unwrap();
        let loaded = Loaded { products: &[Some(products[0].clone()), None], seats: &[], event: None, token: None };
        assert_eq!(create(OrderId(1), USER, &items, loaded, POLICY, NOW), Err(Error::NotFound));
    }

    fn with_seats(seats: &[Seat], event: &Event, token: Option<&QueueToken>) -> Result<Created, Error> {
        let ids: Vec<_> = seats.iter().map(|s| s.id).collect();
        let request = request(&[], &ids, Some(TokenId(5)))?;
        let seats: Vec<_> = seats.iter().cloned().map(Some).collect();
        let loaded = Loaded { products: &[], seats: &seats, event: Some(event), token };
        create(OrderId(1), USER, &request, loaded, POLICY, NOW)
    }

    #[test]
    fn seats_need_the_callers_active_token_and_respect_its_limit() {
        let seats = [seat(1, 9), seat(2, 9)];
        let created = with_seats(&seats, &event(4), Some(&token(2))).unwrap();
        assert_eq!(created.reserved.token.as_ref().map(|(_, after)| after.seats_held), Some(4));
        assert_eq!(created.order.payback, Money::new(10), "the default rate on two seats of 50");
        assert_eq!(with_seats(&seats, &event(4), Some(&token(3))), Err(Error::SeatLimitReached));
        assert!(matches!(with_seats(&seats, &event(4), None), Err(Error::Forbidden(_))));
        let theirs = QueueToken { user: UserId(8), ..token(0) };
        assert!(matches!(with_seats(&seats, &event(4), Some(&theirs)), Err(Error::Forbidden(_))));
        let over = QueueToken { expires_at: Some(NOW), ..token(0) };
        assert!(matches!(with_seats(&seats, &event(4), Some(&over)), Err(Error::Forbidden(_))));
        assert!(matches!(seats_event(&[seat(1, 9), seat(2, 8)]), Err(Error::InvalidInput(_))));
    }

    /// The token is judged before the seats and the stock (session 14): a
    /// caller without an active token is refused 403, which is not stored,
    /// even for a seat another order holds or a product sold out; with its
    /// token, the same request is refused for the seat.
    #[test]
    fn a_caller_without_an_active_token_is_forbidden_before_seats_or_stock_are_judged() {
        let held = Seat { status: SeatStatus::Held(OrderId(2)), ..seat(1, 9) };
        let no_token = request(&[], &[SeatId(1)], None).unwrap();
        let loaded = [Some(held.clone())];
        let loaded = Loaded { products: &[], seats: &loaded, event: Some(&event(4)), token: Some(&token(0)) };
        assert!(matches!(create(OrderId(1), USER, &no_token, loaded, POLICY, NOW), Err(Error::Forbidden(_))));
        assert!(matches!(with_seats(std::slice::from_ref(&held), &event(4), None), Err(Error::Forbidden(_))));
        let theirs = QueueToken { user: UserId(8), ..token(0) };
        assert!(matches!(with_seats(std::slice::from_ref(&held), &event(4), Some(&theirs)), Err(Error::Forbidden(_))));
        assert!(matches!(with_seats(std::slice::from_ref(&held), &event(4), Some(&token(0))), Err(Error::Seat(_))));
        let sold_out = [Some(product(1, 10, 0, 0))];
        let request = request(&[(ProductId(1), 1)], &[SeatId(1)], Some(TokenId(5))).unwrap();
        let seats = [Some(seat(1, 9))];
        let loaded = Loaded { products: &sold_out, seats: &seats, event: Some(&event(4)), token: None };
        assert!(matches!(create(OrderId(1), USER, &request, loaded, POLICY, NOW), Err(Error::Forbidden(_))));
    }

    #[test]
    fn a_release_gives_units_seats_and_the_tokens_count_back() {
        let seats = [seat(1, 9)];
        let products = [product(1, 10, 2, 0)];
        let ids: Vec<_> = seats.iter().map(|s| s.id).collect();
        let request = request(&[(ProductId(1), 2)], &ids, Some(TokenId(5))).unwrap();
        let (some_products, some_seats) = ([Some(products[0].clone())], [Some(seats[0].clone())]);
        let loaded =
            Loaded { products: &some_products, seats: &some_seats, event: Some(&event(4)), token: Some(&token(0)) };
        let created = create(OrderId(1), USER, &request, loaded, POLICY, NOW).unwrap();
        let (taken, held, booked) = (
            &created.reserved.products[0].1,
            &created.reserved.seats[0].1,
            &created.reserved.token.as_ref().unwrap().1,
        );
        let released =
            release(&created.order, std::slice::from_ref(taken), std::slice::from_ref(held), Some(booked), NOW)
                .unwrap();
        assert_eq!(released.products[0].1.stock, 2);
        assert_eq!(released.seats[0].1.status, SeatStatus::Available);
        assert_eq!(released.token.as_ref().map(|(_, after)| after.seats_held), Some(0));
        // Records read before the order's own writes committed: decide again.
        assert_eq!(release(&created.order, &products, &seats, Some(&token(0)), NOW), Err(stale()));
    }

    #[test]
    fn cancel_and_expire_follow_the_ttl_and_the_payment_in_flight() {
        let created = products_only(&[(1, 1)], &[product(1, 10, 1, 0)]).unwrap().order;
        let late = created.expires_at;
        assert_eq!(cancel(&created, NOW).unwrap().status, OrderStatus::Cancelled);
        assert_eq!(cancel(&created, late), Err(OrderError::Expired(created.id).into()));
        assert_eq!(expire(&created, NOW), Ok(None), "not due inside its TTL");
        assert_eq!(expire(&created, late).unwrap().map(|o| o.status), Some(OrderStatus::Expired));
        let paying = created.transition(OrderEvent::BeginPay(PaymentId(3)), NOW).unwrap();
        assert_eq!(expire(&paying, late), Ok(None), "a charge in flight holds off the sweeper");
    }

    #[test]
    fn a_payments_fate_moves_its_order() {
        let wait = Payment::new(PaymentId(3), USER, Amount::new(10).unwrap(), None, Method::Gateway, NOW).unwrap();
        let with = |status| Payment { status, ..wait.clone() };
        use PaymentStatus as P;
        assert_eq!(follow_payment(P::Wait, &with(P::Confirming)), Some(OrderEvent::BeginPay(wait.id)));
        assert_eq!(follow_payment(P::Confirming, &with(P::Done)), Some(OrderEvent::Pay(wait.id)));
        assert_eq!(follow_payment(P::Confirming, &with(P::Refunding)), Some(OrderEvent::PayFailed(wait.id)));
        assert_eq!(follow_payment(P::Cancelling, &with(P::Cancelled)), Some(OrderEvent::Cancel));
        assert_eq!(follow_payment(P::Done, &with(P::Cancelling)), None, "the order waits for the refund");
        assert_eq!(follow_payment(P::Refunding, &with(P::Failed)), None);
    }
}
