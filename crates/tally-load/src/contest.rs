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

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Client, Observed, record};

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
        let body = json!({"name": "last-unit", "price": PRICE, "stock": 1});
        let created = client.send(Method::POST, "/v1/products", admin_key, None, Some(body)).await?;
        if created.status != StatusCode::CREATED {
            return Err(format!("creating the product: {} {}", created.status, created.body));
        }
        let product = created.body["id"].as_str().ok_or("no id in the product reply")?.to_owned();
        Ok(Prize::Unit { product })
    }

    pub(super) async fn one_seat(client: &Client, admin_key: &str, clients: u64) -> Result<Prize, String> {
        let body = json!({
            "name": "one-seat",
            "active_limit": clients,
            "token_ttl_seconds": TOKEN_TTL_SECONDS,
            "showtimes": [{"starts_at": "2030-01-01T19:00:00Z", "seats": [{"label": "A1", "price": PRICE}]}],
        });
        let created = client.send(Method::POST, "/v1/events", admin_key, None, Some(body)).await?;
        if created.status != StatusCode::CREATED {
            return Err(format!("creating the event: {} {}", created.status, created.body));
        }
        let event = created.body["id"].as_str().ok_or("no id in the event reply")?.to_owned();
        let showtime = &created.body["showtimes"][0];
        let seat = showtime["seats"][0]["id"].as_str().ok_or("no seat in the event reply")?.to_owned();
        let showtime = showtime["id"].as_str().ok_or("no showtime in the event reply")?.to_owned();
        Ok(Prize::Seat { seat, event, showtime })
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
        let (body, event) = match self {
            Prize::Unit { product } => (json!({"items": [{"product_id": product, "quantity": 1}]}), None),
            Prize::Seat { seat, event, .. } => (json!({"seats": [seat]}), Some(event)),
        };
        if let (Some(event), None) = (event, token.as_ref()) {
            let joined = client.send(Method::POST, &format!("/v1/events/{event}/queue"), key, None, None).await?;
            record(local, &joined);
            if joined.body["status"] != "active" {
                // Recorded (a 503 when the joins collided); joins again next step.
                *local.fates.entry("not let in").or_default() += 1;
                return Ok(());
            }
            *token = joined.body["token"].as_str().map(str::to_owned);
        }
        let headers: Vec<(&str, &str)> = token.as_deref().map(|t| ("Queue-Token", t)).into_iter().collect();
        let idem = format!("race-{c}-{n}");
        let ordered = client.send_with(Method::POST, "/v1/orders", key, Some(&idem), &headers, Some(body)).await?;
        record(local, &ordered);
        if ordered.status != StatusCode::CREATED {
            *local.fates.entry("lost").or_default() += 1;
            return Ok(());
        }
        *local.fates.entry("won").or_default() += 1;
        let id = ordered.body["id"].as_str().ok_or("no id in the order reply")?;
        let path = format!("/v1/orders/{id}/cancel");
        let cancelled = client.send(Method::POST, &path, key, Some(&format!("unrace-{c}-{n}")), None).await?;
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
        let (free, what) = match self {
            Prize::Unit { product } => {
                let view = client.send(Method::GET, &format!("/v1/products/{product}"), key, None, None).await?;
                let stock = view.body["stock"].as_u64().ok_or("no stock in the product reply")?;
                (stock == 1, format!("stock {stock}"))
            }
            Prize::Seat { showtime, .. } => {
                let view =
                    client.send(Method::GET, &format!("/v1/showtimes/{showtime}/seats"), key, None, None).await?;
                let status = view.body["seats"][0]["status"].as_str().ok_or("no seat status in the reply")?.to_owned();
                (status == "available", format!("seat {status}"))
            }
        };
        let ok = !all_given_back || free;
        println!("check      race: {:?}, {what}  {}", observed.fates, if ok { "ok" } else { "FAIL" });
        Ok(ok)
    }
}
