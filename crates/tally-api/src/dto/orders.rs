//! The wire format of the inventory API: products, events with their
//! showtimes and seats, queue tokens and orders.
//!
//! The same two steps as the parent module: serde checks the shape (400
//! `malformed_request`), the methods here check the values. Counts of units
//! (stock, quantities) out of range are 422 `invalid_amount`, like amounts;
//! ids that are not UUIDs, too many lines and unreadable times are 400.

use serde::{Deserialize, Serialize};
use tally_core::app::{Command, EventView, NewSeat, NewShowtime, TokenView};
use tally_core::catalog::{Product, STOCK_MAX, Seat, Showtime};
use tally_core::ids::{ProductId, SeatId, TokenId};
use tally_core::money::Amount;
use tally_core::order::{LINE_QUANTITY_MAX, Order};
use tally_core::time::{Timestamp, civil_from_days};
use utoipa::ToSchema;

use super::{JsonInteger, Label, objects, objects_or_null, rfc3339, whole, whole_or_null};
use crate::problem::ApiError;

// ---------------------------------------------------------------- requests

/// `POST /v1/products` (admin).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    pub name: Label,
    /// Unit price in minor units, `1..=10^12`.
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub price: JsonInteger,
    /// Units in stock, `0..=10^9`.
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000_i64)]
    pub stock: JsonInteger,
    /// The merchant's payback (cashback) on this product, in basis points of
    /// what an order pays for it, rounded down: `0..=10000` (10000 = 100 %).
    /// Absent: the service default (`--payback-bps`), fixed when the product
    /// is created. A rate, not an amount: out of range is 400.
    #[serde(default, deserialize_with = "whole_or_null")]
    #[schema(minimum = 0, maximum = 10_000)]
    pub payback_bps: Option<u32>,
}

impl CreateProductRequest {
    /// The price and the stock, range-checked.
    pub fn values(&self) -> Result<(Amount, u64), ApiError> {
        Ok((self.price.amount()?, self.stock.units("stock", 0..=STOCK_MAX)?))
    }
}

impl CreateProductRequest {
    /// A product at `price` with `stock` units and the default payback.
    pub fn new(name: &str, price: i64, stock: u64) -> CreateProductRequest {
        CreateProductRequest {
            name: Label(name.to_owned()),
            price: JsonInteger::from(price),
            stock: JsonInteger::from(stock),
            payback_bps: None,
        }
    }
}

/// `POST /v1/products/{id}/restock` (admin).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    /// Units added, `1..=10^9`; what was ever stocked stays at most 10^9.
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000_i64)]
    pub quantity: JsonInteger,
}

/// One seat of a new showtime.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSeatInput {
    /// Unique within the showtime (`A1`, `R12-7`).
    pub label: Label,
    /// Minor units, `1..=10^12`.
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub price: JsonInteger,
}

impl NewSeatInput {
    pub fn new(label: &str, price: i64) -> NewSeatInput {
        NewSeatInput { label: Label(label.to_owned()), price: JsonInteger::from(price) }
    }
}

/// One showtime of a new event.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShowtimeInput {
    /// RFC 3339 (`2026-12-24T19:30:00Z`, or with an offset); kept to the millisecond.
    #[schema(example = "2026-12-24T19:30:00Z")]
    pub starts_at: String,
    /// 1 to 1000 seats (an event has at most 10000).
    #[serde(deserialize_with = "objects")]
    pub seats: Vec<NewSeatInput>,
}

/// `POST /v1/events` (admin): an event, its waiting queue's settings, and
/// its showtimes with their seats.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEventRequest {
    pub name: Label,
    /// At most this many queue tokens are active at once, `1..=10000`.
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 10_000)]
    pub active_limit: u32,
    /// How long a token stays active once promoted, `1..=86400`.
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 86_400)]
    pub token_ttl_seconds: u64,
    /// Seats one queue token may hold across its live (pending or paid)
    /// orders, `1..=1000`; absent: 4. More is 409 `seat_limit_reached`, so
    /// that one active token cannot hoard a showtime.
    #[serde(default, deserialize_with = "whole_or_null")]
    #[schema(minimum = 1, maximum = 1_000, default = 4)]
    pub max_seats_per_token: Option<u32>,
    /// 1 to 100 showtimes.
    #[serde(deserialize_with = "objects")]
    pub showtimes: Vec<NewShowtimeInput>,
}

impl CreateEventRequest {
    /// The showtimes as the core takes them. (Their counts, labels and the
    /// queue settings are the core's to check.)
    pub fn showtimes(&self) -> Result<Vec<NewShowtime>, ApiError> {
        self.showtimes
            .iter()
            .map(|showtime| {
                let starts_at = parse_rfc3339(&showtime.starts_at).ok_or_else(|| {
                    ApiError::malformed("starts_at must be an RFC 3339 date-time, e.g. 2026-12-24T19:30:00Z")
                })?;
                let seats = showtime
                    .seats
                    .iter()
                    .map(|seat| Ok(NewSeat { label: seat.label.0.clone(), price: seat.price.amount()? }))
                    .collect::<Result<_, ApiError>>()?;
                Ok(NewShowtime { starts_at, seats })
            })
            .collect()
    }
}

impl CreateEventRequest {
    /// An event with one showtime at `starts_at` and these seats.
    pub fn one_showtime(
        name: &str,
        active_limit: u32,
        token_ttl_seconds: u64,
        starts_at: &str,
        seats: Vec<NewSeatInput>,
    ) -> CreateEventRequest {
        CreateEventRequest {
            name: Label(name.to_owned()),
            active_limit,
            token_ttl_seconds,
            max_seats_per_token: None,
            showtimes: vec![NewShowtimeInput { starts_at: starts_at.to_owned(), seats }],
        }
    }
}

/// One product line of a new order.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItemInput {
    #[schema(format = Uuid)]
    pub product_id: String,
    /// `1..=1000`.
    #[schema(value_type = i64, minimum = 1, maximum = 1000)]
    pub quantity: JsonInteger,
}

/// `POST /v1/orders`: products and/or seats, reserved together or not at
/// all. Seats need the `Queue-Token` header.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    /// At most 10 lines, one per product.
    #[serde(default, deserialize_with = "objects_or_null")]
    pub items: Option<Vec<OrderItemInput>>,
    /// At most 10 seat ids, all of one event.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub seats: Option<Vec<String>>,
}

impl CreateOrderRequest {
    /// The order command, with `token` for its seats. Checked here so that
    /// a bad request is refused before it takes a key or a lock: the JSON's
    /// ids and quantities, then the core's one rule for an order's shape
    /// (`decide::order::request`), which the core applies again.
    pub fn command(&self, token: Option<TokenId>) -> Result<Command, ApiError> {
        let items = self.items.as_deref().unwrap_or_default();
        let seats = self.seats.as_deref().unwrap_or_default();
        let items: Vec<(ProductId, u64)> = items
            .iter()
            .map(|item| {
                let product = ProductId::parse(&item.product_id)
                    .ok_or_else(|| ApiError::malformed("product_id must be a UUID"))?;
                Ok((product, item.quantity.units("quantity", 1..=LINE_QUANTITY_MAX)?))
            })
            .collect::<Result<_, ApiError>>()?;
        let seats: Vec<SeatId> = seats
            .iter()
            .map(|seat| SeatId::parse(seat).ok_or_else(|| ApiError::malformed("a seat id must be a UUID")))
            .collect::<Result<_, ApiError>>()?;
        tally_core::decide::order::request(&items, &seats, token).map_err(ApiError::from)?;
        Ok(Command::CreateOrder { items, seats, token })
    }
}

impl CreateOrderRequest {
    /// An order of `(product id, quantity)` lines and seat ids; an empty
    /// list is left out.
    pub fn of(items: &[(&str, u64)], seats: &[&str]) -> CreateOrderRequest {
        let items: Vec<OrderItemInput> = items
            .iter()
            .map(|(product, quantity)| OrderItemInput {
                product_id: (*product).to_owned(),
                quantity: JsonInteger::from(*quantity),
            })
            .collect();
        let seats: Vec<String> = seats.iter().map(|seat| (*seat).to_owned()).collect();
        CreateOrderRequest { items: (!items.is_empty()).then_some(items), seats: (!seats.is_empty()).then_some(seats) }
    }
}

// --------------------------------------------------------------- responses

/// A product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductBody {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub price: i64,
    /// Units available to order now (pending and paid orders hold the rest).
    pub stock: u64,
    /// The payback on this product, in basis points of what an order pays
    /// for it.
    pub payback_bps: u32,
}

impl From<&Product> for ProductBody {
    fn from(product: &Product) -> ProductBody {
        ProductBody {
            id: product.id.to_string(),
            name: product.name.clone(),
            price: product.price.minor_units(),
            stock: product.stock,
            payback_bps: product.payback_bps,
        }
    }
}

/// A seat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeatBody {
    #[schema(format = Uuid)]
    pub id: String,
    pub label: String,
    pub price: i64,
    /// `available`, `held` (by a pending order) or `sold`.
    pub status: String,
}

impl From<&Seat> for SeatBody {
    fn from(seat: &Seat) -> SeatBody {
        SeatBody {
            id: seat.id.to_string(),
            label: seat.label.clone(),
            price: seat.price.minor_units(),
            status: seat.status.as_str().to_owned(),
        }
    }
}

/// A showtime as created, with its seats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShowtimeCreatedBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// RFC 3339, UTC, millisecond precision.
    #[schema(example = "2026-12-24T19:30:00.000Z")]
    pub starts_at: String,
    pub seats: Vec<SeatBody>,
}

/// `201` of `POST /v1/events`: the event and every id it was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventBody {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub active_limit: u32,
    pub token_ttl_seconds: u64,
    /// Seats one queue token may hold across its live orders.
    pub max_seats_per_token: u32,
    pub showtimes: Vec<ShowtimeCreatedBody>,
}

impl From<&EventView> for EventBody {
    fn from(view: &EventView) -> EventBody {
        EventBody {
            id: view.event.id.to_string(),
            name: view.event.name.clone(),
            active_limit: view.event.active_limit,
            token_ttl_seconds: view.event.token_ttl.as_secs(),
            max_seats_per_token: view.event.max_seats_per_token,
            showtimes: view
                .showtimes
                .iter()
                .map(|(showtime, seats)| ShowtimeCreatedBody {
                    id: showtime.id.to_string(),
                    starts_at: rfc3339(showtime.starts_at),
                    seats: seats.iter().map(SeatBody::from).collect(),
                })
                .collect(),
        }
    }
}

/// One showtime of an event, with how many of its seats are available.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShowtimeBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// RFC 3339, UTC, millisecond precision.
    #[schema(example = "2026-12-24T19:30:00.000Z")]
    pub starts_at: String,
    pub available_seats: u64,
}

impl ShowtimeBody {
    pub fn new(showtime: &Showtime, available_seats: u64) -> ShowtimeBody {
        ShowtimeBody { id: showtime.id.to_string(), starts_at: rfc3339(showtime.starts_at), available_seats }
    }
}

/// `GET /v1/events/{id}/showtimes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShowtimesBody {
    pub showtimes: Vec<ShowtimeBody>,
}

/// `GET /v1/showtimes/{id}/seats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeatsBody {
    pub seats: Vec<SeatBody>,
}

/// A queue token, as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenBody {
    /// The token: send it as `Queue-Token` when ordering seats.
    #[schema(format = Uuid)]
    pub token: String,
    #[schema(format = Uuid)]
    pub event_id: String,
    /// 0 once promoted; else the place in line (1 = next).
    pub position: u64,
    /// `waiting`, `active` or `expired` (its TTL passed, or its order was paid).
    pub status: String,
    /// When its activity ends (or ended); absent while waiting. RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(example = "2026-11-23T00:10:00.000Z")]
    pub expires_at: Option<String>,
}

impl From<&TokenView> for TokenBody {
    fn from(view: &TokenView) -> TokenBody {
        TokenBody {
            token: view.token.id.to_string(),
            event_id: view.token.event.to_string(),
            position: view.position,
            status: view.status.as_str().to_owned(),
            expires_at: view.token.expires_at.map(rfc3339),
        }
    }
}

/// One product line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderItemBody {
    #[schema(format = Uuid)]
    pub product_id: String,
    pub quantity: u64,
    /// The product's price when the order was made.
    pub unit_price: i64,
}

/// One seat of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderSeatBody {
    #[schema(format = Uuid)]
    pub seat_id: String,
    pub price: i64,
}

/// An order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// `pending_payment`, `paid`, `cancelled` or `expired`.
    pub status: String,
    /// What a payment for it charges: the lines and seats, at their prices
    /// when the order was made.
    pub total: i64,
    /// An unpaid order expires then and gives its stock and seats back. RFC 3339.
    #[schema(example = "2026-11-23T00:05:00.000Z")]
    pub expires_at: String,
    pub items: Vec<OrderItemBody>,
    pub seats: Vec<OrderSeatBody>,
    /// The payment that paid it (or whose gateway charge is in flight).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(format = Uuid)]
    pub payment_id: Option<String>,
    /// RFC 3339, UTC, millisecond precision.
    #[schema(example = "2026-11-23T00:00:00.000Z")]
    pub created_at: String,
}

impl From<&Order> for OrderBody {
    fn from(order: &Order) -> OrderBody {
        OrderBody {
            id: order.id.to_string(),
            status: order.status.as_str().to_owned(),
            total: order.total.minor_units(),
            expires_at: rfc3339(order.expires_at),
            items: order
                .lines
                .iter()
                .map(|line| OrderItemBody {
                    product_id: line.product.to_string(),
                    quantity: line.quantity,
                    unit_price: line.unit_price.minor_units(),
                })
                .collect(),
            seats: order
                .seats
                .iter()
                .map(|seat| OrderSeatBody { seat_id: seat.seat.to_string(), price: seat.price.minor_units() })
                .collect(),
            payment_id: order.payment.map(|payment| payment.to_string()),
            created_at: rfc3339(order.created_at),
        }
    }
}

// ------------------------------------------------------------------- times

/// Reads an RFC 3339 date-time (`2026-12-24T19:30:00Z`,
/// `2026-12-24t19:30:00.5+09:00`): years 0000–9999, a fraction kept to the
/// millisecond (truncated), `Z` or a `±HH:MM` offset. A leap second (`:60`)
/// or a day the calendar does not have is refused. `None` when unreadable.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let slice = bytes.get(range)?;
        if slice.is_empty() || !slice.iter().all(u8::is_ascii_digit) {
            return None;
        }
        slice.iter().try_fold(0i64, |n, b| n.checked_mul(10)?.checked_add(i64::from(b - b'0')))
    };
    let separator = |at: usize, allowed: &[u8]| bytes.get(at).is_some_and(|b| allowed.contains(b));
    if !(separator(4, b"-") && separator(7, b"-") && separator(10, b"Tt") && separator(13, b":") && separator(16, b":"))
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if separator(at, b".") {
        let end = bytes[at + 1..].iter().position(|b| !b.is_ascii_digit()).map_or(bytes.len(), |n| at + 1 + n);
        if end == at + 1 {
            return None;
        }
        // Milliseconds from the first three digits; finer digits are dropped.
        let kept = (end - at - 1).min(3);
        let scale = [100, 10, 1][kept - 1];
        millis = digits(at + 1..at + 1 + kept)? * scale;
        at = end;
    }
    let offset_minutes = match bytes.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (digits(at + 1..at + 3)?, digits(at + 4..at + 6)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 60 + minutes;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day)?;
    let local = ((days * 24 + hour) * 60 + minute) * 60 + second;
    Some(Timestamp((local - offset_minutes * 60) * 1000 + millis))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, the inverse of the core's `civil_from_days`); `None`
/// for a date that does not exist, found by converting back.
fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (civil_from_days(days) == (year, month, day)).then_some(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_refuses_what_is_not_a_time() {
        let at = Timestamp(20_780 * 86_400_000 + 8 * 3_600_000 + 5 * 60_000 + 9_042);
        assert_eq!(parse_rfc3339(&rfc3339(at)), Some(at));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(Timestamp(0)));
        assert_eq!(parse_rfc3339("1970-01-01t09:00:00+09:00"), Some(Timestamp(0)));
        assert_eq!(parse_rfc3339("1969-12-31T23:00:00.5-01:00"), Some(Timestamp(500)));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.123999Z"), Some(Timestamp(123)), "truncated to ms");
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z").map(|t| t.day()), Some(19_782));
        for bad in [
            "",
            "2026-11-23",
            "2026-11-23T00:00:00",
            "2026-11-23 00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T23:59:60Z",
            "2026-11-23T00:00:00.Z",
            "2026-11-23T00:00:00+0900",
            "2026-11-23T00:00:00Zjunk",
            "+2026-11-23T00:00:00Z",
            "２026-11-23T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
