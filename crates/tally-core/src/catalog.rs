//! The catalogue: products with stock (seeds 003, 004) and events with
//! showtimes and seats (seed 002), each with its one transition function.
//!
//! ```text
//!  product:  stock ──reserve q (q ≤ stock)──► stock − q ──release q──► stock + q;  restock q: stocked += q
//!  seat:     available ──hold(o)──► held(o) ──sell(o)──► sold(o)
//!            held(o) | sold(o) ──release(o)──► available
//! ```
//!
//! A product keeps what was *ever* stocked next to what is available, so the
//! checker can recompute invariant 5 (available + reserved = stocked) from the
//! orders alone. A seat names the order that holds it, and every seat arrow
//! checks that name: an order can only sell or release its own seat, which is
//! what makes "held by two orders" unrepresentable rather than merely unlikely.

use std::time::Duration;

use crate::ids::{EventId, OrderId, ProductId, SeatId, ShowtimeId};
use crate::money::Amount;
use crate::time::Timestamp;

/// Most units a product can hold; keeps `stocked` far from overflow.
pub const STOCK_MAX: u64 = 1_000_000_000;
/// Longest product, event or seat name accepted.
pub const LABEL_LENGTH_MAX: usize = 200;

/// The one rule for every name and label a client gives (users, products,
/// events, seats): 1 to [`LABEL_LENGTH_MAX`] characters, no control
/// characters, not only spaces; surrounding spaces are dropped. It is
/// spelled with ASCII and control ranges only, so that a JSON Schema pattern
/// can restate it exactly (`tally-http`'s `LABEL_PATTERN`): no notion of
/// "whitespace" that two regex engines could read differently.
pub fn label(text: &str) -> Option<&str> {
    let fits = (1..=LABEL_LENGTH_MAX).contains(&text.chars().count());
    let trimmed = text.trim_matches(' ');
    (fits && !text.chars().any(char::is_control) && !trimmed.is_empty()).then_some(trimmed)
}
/// Most showtimes one event is created with.
pub const SHOWTIMES_MAX: usize = 100;
/// Most seats one showtime is created with.
pub const SEATS_PER_SHOWTIME_MAX: usize = 1_000;
/// Most seats one event is created with (all its showtimes together).
pub const SEATS_PER_EVENT_MAX: usize = 10_000;
/// Bounds on an event's queue settings.
pub const ACTIVE_LIMIT_MAX: u32 = 10_000;
pub const TOKEN_TTL_MAX: Duration = Duration::from_secs(24 * 60 * 60);
/// Seats one queue token may hold across its live orders unless the event
/// says otherwise (SPEC.md), and the most an event may allow.
pub const MAX_SEATS_PER_TOKEN_DEFAULT: u32 = 4;
pub const MAX_SEATS_PER_TOKEN_MAX: u32 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub price: Amount,
    /// Units available to order now.
    pub stock: u64,
    /// Units ever put in stock (initial stock plus every restock).
    pub stocked: u64,
    /// The merchant's payback on this product, in basis points of the
    /// price (resolved from the service default when it was created).
    pub payback_bps: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockEvent {
    /// An order takes `n` units (seed 004: at order time, not at payment time).
    Reserve(u64),
    /// An expired or cancelled order gives `n` units back.
    Release(u64),
    /// The admin adds `n` units.
    Restock(u64),
}

#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockError {
    #[error("product {product} has {available} unit(s) left, {wanted} wanted")]
    OutOfStock { product: ProductId, available: u64, wanted: u64 },
    #[error("restocking product {0} would exceed the stock limit")]
    TooMuchStock(ProductId),
    #[error("product {product} cannot take back {returned} unit(s) it never gave out")]
    OverRelease { product: ProductId, returned: u64 },
    #[error("a stock change must move at least one unit")]
    ZeroQuantity,
}

impl Product {
    pub fn new(
        id: ProductId,
        name: String,
        price: Amount,
        stock: u64,
        payback_bps: u32,
        now: Timestamp,
    ) -> Result<Product, StockError> {
        if stock > STOCK_MAX {
            return Err(StockError::TooMuchStock(id));
        }
        assert!(payback_bps <= crate::payment::PAYBACK_BPS_MAX, "payback rates are validated at the boundary");
        Ok(Product {
            id,
            name,
            price,
            stock,
            stocked: stock,
            payback_bps,
            created_at: now,
            updated_at: now,
            version: 0,
        })
    }

    /// The transition function.
    pub fn apply(&self, event: StockEvent, now: Timestamp) -> Result<Product, StockError> {
        let mut next = Product { updated_at: now, version: self.version + 1, ..self.clone() };
        match event {
            StockEvent::Reserve(0) | StockEvent::Release(0) | StockEvent::Restock(0) => {
                return Err(StockError::ZeroQuantity);
            }
            StockEvent::Reserve(wanted) => {
                next.stock = self.stock.checked_sub(wanted).ok_or(StockError::OutOfStock {
                    product: self.id,
                    available: self.stock,
                    wanted,
                })?;
            }
            StockEvent::Release(returned) => {
                next.stock = self
                    .stock
                    .checked_add(returned)
                    .filter(|stock| *stock <= self.stocked)
                    .ok_or(StockError::OverRelease { product: self.id, returned })?;
            }
            StockEvent::Restock(added) => {
                let stocked = self.stocked.checked_add(added).filter(|s| *s <= STOCK_MAX);
                next.stocked = stocked.ok_or(StockError::TooMuchStock(self.id))?;
                next.stock = self.stock + added;
            }
        }
        debug_assert!(next.stock <= next.stocked, "available never exceeds what was stocked");
        Ok(next)
    }
}

/// An event and its waiting queue's settings and counters. The event row is
/// what every queue change locks: tokens change only under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub name: String,
    /// At most this many tokens are active at once (SPEC.md invariant 8).
    pub active_limit: u32,
    /// How long a token stays active once promoted.
    pub token_ttl: Duration,
    /// The position the next joining token gets (1-based, never reused).
    pub next_seq: u64,
    /// Every token with a smaller `seq` was promoted (or is gone); the next
    /// waiting token to promote has `seq >= head_seq`.
    pub head_seq: u64,
    /// Tokens currently active. Kept equal to the count of active token rows.
    pub active_count: u32,
    /// Seats one token may hold across its live orders, so that one active
    /// token cannot hoard a showtime (SPEC.md).
    pub max_seats_per_token: u32,
    pub created_at: Timestamp,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Showtime {
    pub id: ShowtimeId,
    pub event: EventId,
    pub starts_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeatStatus {
    Available,
    Held(OrderId),
    Sold(OrderId),
}

impl SeatStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            SeatStatus::Available => "available",
            SeatStatus::Held(_) => "held",
            SeatStatus::Sold(_) => "sold",
        }
    }

    pub const fn order(self) -> Option<OrderId> {
        match self {
            SeatStatus::Available => None,
            SeatStatus::Held(order) | SeatStatus::Sold(order) => Some(order),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seat {
    pub id: SeatId,
    pub showtime: ShowtimeId,
    pub event: EventId,
    pub label: String,
    pub price: Amount,
    pub status: SeatStatus,
    pub version: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatEvent {
    Hold(OrderId),
    Sell(OrderId),
    Release(OrderId),
}

#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("seat {seat} is {} and cannot take {event:?}", status.as_str())]
pub struct SeatUnavailable {
    pub seat: SeatId,
    pub status: SeatStatus,
    pub event: SeatEvent,
}

impl Seat {
    /// The transition function.
    pub fn apply(&self, event: SeatEvent) -> Result<Seat, SeatUnavailable> {
        use SeatEvent as E;
        use SeatStatus as S;
        let status = match (self.status, event) {
            (S::Available, E::Hold(order)) => S::Held(order),
            (S::Held(holder), E::Sell(order)) if holder == order => S::Sold(order),
            (S::Held(holder) | S::Sold(holder), E::Release(order)) if holder == order => S::Available,
            #[cfg(feature = "mutants")]
            (S::Held(_) | S::Sold(_), E::Hold(order)) if crate::mutant::active("seat_double_hold") => S::Held(order),
            _ => return Err(SeatUnavailable { seat: self.id, status: self.status, event }),
        };
        Ok(Seat { status, version: self.version + 1, ..self.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(stock: u64) -> Product {
        Product::new(ProductId(1), "p".into(), Amount::new(100).unwrap(), stock, 0, Timestamp(0)).unwrap()
    }

    #[test]
    fn stock_never_goes_negative() {
        let p = product(2);
        let one = p.apply(StockEvent::Reserve(1), Timestamp(1)).unwrap();
        assert_eq!((one.stock, one.stocked, one.version), (1, 2, 1));
        assert_eq!(
            one.apply(StockEvent::Reserve(2), Timestamp(2)),
            Err(StockError::OutOfStock { product: ProductId(1), available: 1, wanted: 2 })
        );
        let zero = one.apply(StockEvent::Reserve(1), Timestamp(2)).unwrap();
        assert_eq!(zero.stock, 0);
        assert!(zero.apply(StockEvent::Reserve(1), Timestamp(3)).is_err());
    }

    #[test]
    fn release_cannot_mint_stock() {
        let p = product(2).apply(StockEvent::Reserve(1), Timestamp(1)).unwrap();
        assert_eq!(p.apply(StockEvent::Release(1), Timestamp(2)).unwrap().stock, 2);
        assert_eq!(
            p.apply(StockEvent::Release(2), Timestamp(2)),
            Err(StockError::OverRelease { product: ProductId(1), returned: 2 })
        );
        assert_eq!(p.apply(StockEvent::Reserve(0), Timestamp(2)), Err(StockError::ZeroQuantity));
    }

    #[test]
    fn restock_counts_what_was_ever_stocked() {
        let p = product(1).apply(StockEvent::Reserve(1), Timestamp(1)).unwrap();
        let r = p.apply(StockEvent::Restock(5), Timestamp(2)).unwrap();
        assert_eq!((r.stock, r.stocked), (5, 6));
        assert_eq!(r.apply(StockEvent::Restock(STOCK_MAX), Timestamp(3)), Err(StockError::TooMuchStock(ProductId(1))));
    }

    fn seat() -> Seat {
        Seat {
            id: SeatId(1),
            showtime: ShowtimeId(1),
            event: EventId(1),
            label: "A1".into(),
            price: Amount::new(5).unwrap(),
            status: SeatStatus::Available,
            version: 0,
        }
    }

    #[test]
    fn a_seat_belongs_to_one_order_at_a_time() {
        let (a, b) = (OrderId(1), OrderId(2));
        let held = seat().apply(SeatEvent::Hold(a)).unwrap();
        assert_eq!(held.status, SeatStatus::Held(a));
        assert!(held.apply(SeatEvent::Hold(b)).is_err(), "a held seat cannot be held again");
        assert!(held.apply(SeatEvent::Sell(b)).is_err(), "only the holder buys the seat");
        assert!(held.apply(SeatEvent::Release(b)).is_err(), "only the holder gives the seat back");
        let sold = held.apply(SeatEvent::Sell(a)).unwrap();
        assert!(sold.apply(SeatEvent::Hold(b)).is_err());
        assert!(sold.apply(SeatEvent::Sell(a)).is_err(), "sold once");
        assert_eq!(sold.apply(SeatEvent::Release(a)).unwrap().status, SeatStatus::Available);
        assert!(seat().apply(SeatEvent::Release(a)).is_err());
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn a_label_is_1_to_200_characters_without_controls_and_not_only_spaces() {
        assert_eq!(label("  Ada "), Some("Ada"), "surrounding spaces are dropped");
        assert_eq!(label("a b"), Some("a b"));
        assert_eq!(label("\u{a0}"), Some("\u{a0}"), "only the space character is trimmed");
        assert_eq!(label(""), None);
        assert_eq!(label("   "), None);
        assert_eq!(label("a\tb"), None, "a control character");
        assert_eq!(label("a\u{85}"), None, "a C1 control character");
        assert_eq!(label(&"é".repeat(200)).map(|l| l.chars().count()), Some(200), "characters, not bytes");
        assert_eq!(label(&"é".repeat(201)), None);
        assert_eq!(label(&format!("a{}", " ".repeat(199))), Some("a"), "the length is counted before trimming");
        assert_eq!(label(&format!("a{}", " ".repeat(200))), None);
    }
}
