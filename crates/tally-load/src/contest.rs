//! The `last-unit` and `one-seat` workloads: every client races for one
//! scarce thing, over and over.
//!
//! - `last-unit`: a product with one unit in stock. Each client orders it;
//!   the winner cancels its order at once, which puts the unit back for the
//!   next race. Oversold means two live orders held the one unit.
//! - `one-seat`: an event with one seat, and a queue that lets every client
//!   in. Each client books the seat with its token; the winner cancels.
//!   Sold twice means two live orders held the seat.
//!
//! The invariant checker on the database judges both (stock never below
//! zero, available + reserved = ever stocked; a seat held by one order at a
//! time); the API check here is that the thing is back where it started once
//! every acknowledged win was cancelled.

use http::StatusCode;
use tally_client::dto::{CreateEventRequest, CreateOrderRequest, CreateProductRequest, NewSeatInput};

use super::{Client, Observed, record, timed};

/// How long a client's queue token stays active: past any run.
const TOKEN_TTL_SECONDS: u64 = 3_600;
const PRICE: i64 = 1_000;

/// The scarce thing raced for.
pub(super) enum Prize {
    Unit { product: String },
    Seat { seat: String, event: String, showtime: String },
}

impl Prize {
    pub(super) async fn last_unit(client: &Client, admin_key: &str) -> Result<Prize, String> {
        let request = CreateProductRequest::new("last-unit", PRICE, 1);
        let product = timed(client.as_key(admin_key).create_product(&request)).await?.ok("creating the product")?.id;
        Ok(Prize::Unit { product })
    }

    pub(super) async fn one_seat(client: &Client, admin_key: &str, clients: u64) -> Result<Prize, String> {
        let active_limit = u32::try_from(clients).map_err(|_| "too many clients for one queue")?;
        let seats = vec![NewSeatInput::new("A1", PRICE)];
        let request = CreateEventRequest::one_showtime(
            "one-seat",
            active_limit,
            TOKEN_TTL_SECONDS,
            "2030-01-01T19:00:00Z",
            seats,
        );
        let created = timed(client.as_key(admin_key).create_event(&request)).await?.ok("creating the event")?;
        let showtime = created.showtimes.first().ok_or("no showtime in the event reply")?;
        let seat = showtime.seats.first().ok_or("no seat in the event reply")?.id.clone();
        Ok(Prize::Seat { seat, showtime: showtime.id.clone(), event: created.id })
    }

    /// Client `c`'s race `n`: join the queue first if a seat needs a token,
    /// order the prize, and cancel the order if it won.
    pub(super) async fn race(
        &self,
        client: &Client,
        key: &str,
        token: &mut Option<String>,
        c: u64,
        n: u64,
        local: &mut Observed,
    ) -> Result<(), String> {
        let api = client.as_key(key);
        let (request, event) = match self {
            Prize::Unit { product } => (CreateOrderRequest::of(&[(product, 1)], &[]), None),
            Prize::Seat { seat, event, .. } => (CreateOrderRequest::of(&[], &[seat]), Some(event)),
        };
        if let (Some(event), None) = (event, token.as_ref()) {
            let joined = timed(api.join_queue(event)).await?;
            record(local, &joined);
            match joined.body {
                Some(joined) if joined.status == "active" => *token = Some(joined.token),
                _ => {
                    // Recorded (a 503 when the joins collided); joins again next step.
                    *local.fates.entry("not let in").or_default() += 1;
                    return Ok(());
                }
            }
        }
        let ordered = timed(api.create_order(&format!("race-{c}-{n}"), &request, token.as_deref())).await?;
        record(local, &ordered);
        let Some(order) = ordered.body else {
            *local.fates.entry("lost").or_default() += 1;
            return Ok(());
        };
        *local.fates.entry("won").or_default() += 1;
        let cancelled = timed(api.cancel_order(&format!("unrace-{c}-{n}"), &order.id)).await?;
        record(local, &cancelled);
        if cancelled.status == StatusCode::OK {
            *local.fates.entry("given back").or_default() += 1;
        }
        Ok(())
    }

    /// Once every acknowledged win was given back, the prize is free again:
    /// one unit in stock, the seat available.
    pub(super) async fn verify(&self, client: &Client, key: &str, observed: &Observed) -> Result<bool, String> {
        let count = |fate: &str| observed.fates.get(fate).copied().unwrap_or(0);
        // A cancel without an answer may or may not have landed: then the
        // prize may still be held, and only the checker can judge.
        let all_given_back = count("won") == count("given back");
        let api = client.as_key(key);
        let (free, what) = match self {
            Prize::Unit { product } => {
                let stock = timed(api.product(product)).await?.ok("reading the product")?.stock;
                (stock == 1, format!("stock {stock}"))
            }
            Prize::Seat { showtime, .. } => {
                let seats = timed(api.seats(showtime)).await?.ok("reading the seats")?.seats;
                let status = seats.into_iter().next().ok_or("no seat in the reply")?.status;
                (status == "available", format!("seat {status}"))
            }
        };
        let ok = !all_given_back || free;
        println!("check      race: {:?}, {what}  {}", observed.fates, if ok { "ok" } else { "FAIL" });
        Ok(ok)
    }
}
