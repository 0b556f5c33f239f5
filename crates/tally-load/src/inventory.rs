//! The `inventory` workload (seeds 002 and 004): scarce products and few
//! seats, a waiting queue in front of the seats, and orders that are paid,
//! cancelled (some after paying: a refund) or left to expire.
//!
//! Every choice a client makes comes from a hash of its number and its step,
//! so two runs against fresh servers make the same choices (what the server
//! answers still depends on timing).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Client, Observed, Reply, record};

/// Products on sale, each stocked with [`stock_per_product`] units.
const PRODUCTS: usize = 4;
/// Seats of the event's one showtime: fewer than the clients will want.
const SEATS: usize = 40;
/// Queue tokens active at once; more clients than this wait in line.
const ACTIVE_LIMIT: u32 = 20;
/// Seats one token may hold across its live orders: a shopper who keeps
/// ordering seats without paying meets `seat_limit_reached`.
const SEATS_PER_TOKEN: u32 = 4;
/// How long a promoted token stays active: short, so that tokens whose
/// holders never pay come back to the line within a run.
const TOKEN_TTL_SECONDS: u64 = 10;
/// Client 0 restocks one product every this many steps, by one unit per
/// client: enough that orders keep succeeding after the first sell-out, too
/// little to end the scarcity.
const RESTOCK_EVERY: u64 = 10;
/// A product's price and a seat's, in minor units.
const PRODUCT_PRICE: i64 = 1_500;
const SEAT_PRICE: i64 = 12_000;

/// Scarce on purpose: about two units per client, so orders soon meet
/// `out_of_stock` unless cancellations, expiries and restocks free some.
fn stock_per_product(clients: u64) -> u64 {
    (clients * 2).max(8)
}

/// SplitMix64 of the client and step: the client's "random" choice.
fn roll(c: u64, n: u64) -> u64 {
    let mut z = (c << 32 ^ n).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Picks `n` below `len` from the bits of `bits`.
fn pick(bits: u64, len: usize) -> usize {
    usize::try_from(bits % u64::try_from(len).expect("fits")).expect("fits")
}

/// What the admin created for the run.
pub(super) struct Catalogue {
    admin_key: String,
    products: Vec<String>,
    stock: u64,
    restock_units: u64,
    showtime: String,
    event: String,
}

impl Catalogue {
    pub(super) async fn create(client: &Client, admin_key: &str, clients: u64) -> Result<Catalogue, String> {
        let stock = stock_per_product(clients);
        let mut products = Vec::with_capacity(PRODUCTS);
        for i in 0..PRODUCTS {
            let body = json!({"name": format!("load-product-{i}"), "price": PRODUCT_PRICE, "stock": stock});
            let created = client.send(Method::POST, "/v1/products", admin_key, None, Some(body)).await?;
            if created.status != StatusCode::CREATED {
                return Err(format!("creating a product: {} {}", created.status, created.body));
            }
            products.push(created.body["id"].as_str().ok_or("no id in the product reply")?.to_owned());
        }
        let seats: Vec<Value> = (1..=SEATS).map(|i| json!({"label": format!("A{i}"), "price": SEAT_PRICE})).collect();
        let body = json!({
            "name": "load-event",
            "active_limit": ACTIVE_LIMIT,
            "token_ttl_seconds": TOKEN_TTL_SECONDS,
            "max_seats_per_token": SEATS_PER_TOKEN,
            "showtimes": [{"starts_at": "2030-01-01T19:00:00Z", "seats": seats}],
        });
        let created = client.send(Method::POST, "/v1/events", admin_key, None, Some(body)).await?;
        if created.status != StatusCode::CREATED {
            return Err(format!("creating the event: {} {}", created.status, created.body));
        }
        let event = created.body["id"].as_str().ok_or("no id in the event reply")?.to_owned();
        let showtime = created.body["showtimes"][0]["id"].as_str().ok_or("no showtime in the event reply")?.to_owned();
        println!(
            "catalogue  {PRODUCTS} products x {stock} units, {SEATS} seats, queue of {ACTIVE_LIMIT} active for {TOKEN_TTL_SECONDS} s, \
             {SEATS_PER_TOKEN} seats per token"
        );
        Ok(Catalogue { admin_key: admin_key.to_owned(), products, stock, restock_units: clients, showtime, event })
    }
}

/// An order some client saw created.
#[derive(Clone, Debug)]
pub(super) struct Placed {
    id: String,
    /// (product index, quantity).
    lines: Vec<(usize, u64)>,
    seats: Vec<String>,
}

/// One client's queue token.
#[derive(Default)]
pub(super) struct Shopper {
    /// The token and whether it was last seen active.
    token: Option<(String, bool)>,
}

/// One client of the inventory workload.
pub(super) struct Shop<'a> {
    pub(super) client: &'a Client,
    pub(super) catalogue: &'a Catalogue,
    pub(super) key: &'a str,
    pub(super) c: u64,
    pub(super) wallet: usize,
}

impl Shop<'_> {
    /// Step `n`: maybe a restock (client 0), maybe a turn in the queue, then
    /// an order and what becomes of it.
    pub(super) async fn step(&self, n: u64, shopper: &mut Shopper, local: &mut Observed) -> Result<(), String> {
        let bits = roll(self.c, n);
        if self.c == 0 && n.is_multiple_of(RESTOCK_EVERY) {
            self.restock(n, pick(bits >> 40, PRODUCTS), local).await?;
        }
        // A third of the steps want seats, which need an active token.
        let mut seats = Vec::new();
        let mut token = None;
        if bits.is_multiple_of(3) {
            token = self.queue_turn(shopper, local).await?;
            if token.is_some() {
                seats = self.free_seats(bits >> 8, local).await?;
            }
        }
        let mut lines = Vec::new();
        if seats.is_empty() || (bits >> 4).is_multiple_of(2) {
            lines.push((pick(bits >> 16, PRODUCTS), 1 + (bits >> 24) % 3));
        }
        let items: Vec<Value> = lines
            .iter()
            .map(|(p, quantity)| json!({"product_id": self.catalogue.products[*p], "quantity": quantity}))
            .collect();
        let mut body = json!({"items": items});
        let mut headers = Vec::new();
        if let (false, Some(token)) = (seats.is_empty(), token.as_deref()) {
            body["seats"] = json!(seats);
            headers.push(("Queue-Token", token));
        }
        let idem = format!("o-{}-{n}", self.c);
        let created =
            self.client.send_with(Method::POST, "/v1/orders", self.key, Some(&idem), &headers, Some(body)).await?;
        record(local, &created);
        if created.status == StatusCode::FORBIDDEN {
            // The token expired (or was used) since it was last seen active.
            shopper.token = None;
        }
        if created.status != StatusCode::CREATED {
            *local.fates.entry("refused").or_default() += 1;
            return Ok(());
        }
        let id = created.body["id"].as_str().ok_or("no id in the order reply")?.to_owned();
        let total = created.body["total"].as_i64().ok_or("no total in the order reply")?;
        local.placed.push((self.wallet, Placed { id: id.clone(), lines, seats: seats.clone() }));
        match (bits >> 32) % 10 {
            0..=5 => {
                let paid = self.pay(&id, n, total, local).await?;
                if paid.is_some() && !seats.is_empty() {
                    // Paying used the token up: the next seats need a new turn.
                    shopper.token = None;
                }
                if let (Some(payback), 5) = (paid, (bits >> 32) % 10) {
                    // The refund gives the total back and takes the payback.
                    self.cancel(&id, n, Some(total - payback), local).await?;
                }
            }
            6 | 7 => self.cancel(&id, n, None, local).await?,
            _ => *local.fates.entry("left to expire").or_default() += 1,
        }
        Ok(())
    }

    /// The admin adds units to a product.
    async fn restock(&self, n: u64, product: usize, local: &mut Observed) -> Result<(), String> {
        let path = format!("/v1/products/{}/restock", self.catalogue.products[product]);
        let units = self.catalogue.restock_units;
        let body = json!({"quantity": units});
        // The product's id keeps the key unique across runs on one server.
        let idem = format!("restock-{}-{n}", self.catalogue.products[product]);
        let reply =
            match self.client.send(Method::POST, &path, &self.catalogue.admin_key, Some(&idem), Some(body)).await {
                Ok(reply) => reply,
                Err(error) => {
                    // No answer: it may have landed, which the stock check allows.
                    *local.restocked_unknown.entry(product).or_default() += units;
                    return Err(error);
                }
            };
        record(local, &reply);
        if reply.status == StatusCode::OK {
            *local.restocked.entry(product).or_default() += units;
        }
        Ok(())
    }

    /// Joins the queue or polls the token; the token if it is active now.
    async fn queue_turn(&self, shopper: &mut Shopper, local: &mut Observed) -> Result<Option<String>, String> {
        let reply = match &shopper.token {
            Some((token, true)) => return Ok(Some(token.clone())),
            Some((token, false)) => {
                self.client.send(Method::GET, &format!("/v1/queue/{token}"), self.key, None, None).await?
            }
            None => {
                let path = format!("/v1/events/{}/queue", self.catalogue.event);
                self.client.send(Method::POST, &path, self.key, None, Some(json!({}))).await?
            }
        };
        record(local, &reply);
        if !reply.status.is_success() {
            return Ok(None);
        }
        let token = reply.body["token"].as_str().ok_or("no token in the queue reply")?.to_owned();
        match reply.body["status"].as_str() {
            Some("active") => {
                shopper.token = Some((token.clone(), true));
                Ok(Some(token))
            }
            Some("waiting") => {
                shopper.token = Some((token, false));
                Ok(None)
            }
            _ => {
                shopper.token = None;
                Ok(None)
            }
        }
    }

    /// One or two seats that were available a moment ago (others may take
    /// them first: that is the `seat_unavailable` race the workload wants).
    async fn free_seats(&self, bits: u64, local: &mut Observed) -> Result<Vec<String>, String> {
        let path = format!("/v1/showtimes/{}/seats", self.catalogue.showtime);
        let reply = self.client.send(Method::GET, &path, self.key, None, None).await?;
        record(local, &reply);
        let free: Vec<&str> = reply.body["seats"]
            .as_array()
            .map(|seats| seats.iter().filter(|s| s["status"] == "available").filter_map(|s| s["id"].as_str()).collect())
            .unwrap_or_default();
        if free.is_empty() {
            return Ok(Vec::new());
        }
        let first = pick(bits, free.len());
        let mut chosen = vec![free[first].to_owned()];
        if (bits >> 16) & 1 == 1 && free.len() > 1 {
            chosen.push(free[(first + 1) % free.len()].to_owned());
        }
        Ok(chosen)
    }

    /// Pays an order from the wallet; if it ended paid, the payback the
    /// server's policy credited.
    async fn pay(&self, order: &str, n: u64, total: i64, local: &mut Observed) -> Result<Option<i64>, String> {
        let body = json!({"order_id": order, "method": "wallet"});
        let created = self
            .client
            .send(Method::POST, "/v1/payments", self.key, Some(&format!("p-{}-{n}", self.c)), Some(body))
            .await?;
        record(local, &created);
        let Some(payment) = created.body["id"].as_str() else {
            *local.fates.entry("payment refused").or_default() += 1;
            return Ok(None);
        };
        let path = format!("/v1/payments/{payment}/confirm");
        let confirmed = self
            .client
            .send(Method::POST, &path, self.key, Some(&format!("c-{}-{n}", self.c)), Some(json!({})))
            .await?;
        record(local, &confirmed);
        if confirmed.status != StatusCode::OK {
            *local.fates.entry("payment refused").or_default() += 1;
            return Ok(None);
        }
        let payback = super::payback_of(&confirmed)?;
        *local.expected_delta.entry(self.wallet).or_default() -= total - payback;
        *local.fates.entry("paid").or_default() += 1;
        Ok(Some(payback))
    }

    /// Cancels an order; `refund` is what a paid order gives back to the
    /// wallet: its total, less the payback it reverses.
    async fn cancel(&self, order: &str, n: u64, refund: Option<i64>, local: &mut Observed) -> Result<(), String> {
        let path = format!("/v1/orders/{order}/cancel");
        let reply = self.client.send(Method::POST, &path, self.key, Some(&format!("x-{}-{n}", self.c)), None).await?;
        record(local, &reply);
        if reply.status != StatusCode::OK {
            *local.fates.entry("cancel refused").or_default() += 1;
            return Ok(());
        }
        match refund {
            Some(total) => {
                *local.expected_delta.entry(self.wallet).or_default() += total;
                *local.fates.entry("paid, then refunded").or_default() += 1;
            }
            None => *local.fates.entry("cancelled").or_default() += 1,
        }
        Ok(())
    }
}

/// After the clients stopped, through the API: no product holds more than
/// was ever stocked, and no seat is in two live orders.
///
/// Products are read before the orders. From then on orders can only stop
/// holding (the sweeper expires them) and nothing new is ordered, so for
/// each product `stock (read first) + units in orders still pending or paid
/// (read after)` can only be at most what was ever stocked — any excess is
/// units sold twice.
pub(super) async fn verify_inventory(
    client: &Arc<Client>,
    catalogue: &Catalogue,
    keys: &[String],
    observed: &Observed,
) -> Result<bool, String> {
    let mut stock = Vec::with_capacity(PRODUCTS);
    for product in &catalogue.products {
        let reply =
            client.send(Method::GET, &format!("/v1/products/{product}"), &catalogue.admin_key, None, None).await?;
        stock.push(reply.body["stock"].as_u64().ok_or_else(|| format!("reading product {product}: {}", reply.body))?);
    }
    let statuses = read_orders(client, keys, &observed.placed).await?;
    let mut held = [0u64; PRODUCTS];
    let mut seat_holders: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, placed), status) in observed.placed.iter().zip(&statuses) {
        *by_status.entry(status.as_str()).or_default() += 1;
        if status == "pending_payment" || status == "paid" {
            for (product, quantity) in &placed.lines {
                held[*product] += quantity;
            }
            for seat in &placed.seats {
                *seat_holders.entry(seat.as_str()).or_default() += 1;
            }
        }
    }
    let statuses: Vec<String> = by_status.iter().map(|(status, n)| format!("{status}: {n}")).collect();
    println!("orders now {}", statuses.join(", "));
    let mut ok = true;
    for (i, product) in catalogue.products.iter().enumerate() {
        let restocked = observed.restocked.get(&i).copied().unwrap_or(0);
        let unknown = observed.restocked_unknown.get(&i).copied().unwrap_or(0);
        let stocked_max = catalogue.stock + restocked + unknown;
        let verdict = if stock[i] + held[i] <= stocked_max { "ok" } else { "OVERSOLD" };
        ok &= verdict == "ok";
        println!(
            "check      product {product}: stock {} + held by live orders {} <= ever stocked {stocked_max}  {verdict}",
            stock[i], held[i]
        );
    }
    let doubled: BTreeSet<&str> = seat_holders.iter().filter(|(_, n)| **n > 1).map(|(seat, _)| *seat).collect();
    if doubled.is_empty() {
        println!("check      {} seat(s) in live orders, each in one order  ok", seat_holders.len());
    } else {
        ok = false;
        println!("check      seats in two live orders: {doubled:?}  FAIL");
    }
    Ok(ok)
}

/// Every placed order's status as its owner reads it now, in order; read by
/// a few tasks at once.
async fn read_orders(client: &Arc<Client>, keys: &[String], placed: &[(usize, Placed)]) -> Result<Vec<String>, String> {
    const READERS: usize = 8;
    let chunk = placed.len().div_ceil(READERS).max(1);
    let mut readers = Vec::new();
    for part in placed.chunks(chunk) {
        let part: Vec<(String, String)> = part.iter().map(|(w, p)| (keys[*w].clone(), p.id.clone())).collect();
        let client = Arc::clone(client);
        readers.push(tokio::spawn(async move {
            let mut statuses = Vec::with_capacity(part.len());
            for (key, id) in part {
                let reply: Reply = client.send(Method::GET, &format!("/v1/orders/{id}"), &key, None, None).await?;
                let status =
                    reply.body["status"].as_str().ok_or_else(|| format!("reading order {id}: {}", reply.body))?;
                statuses.push(status.to_owned());
            }
            Ok::<_, String>(statuses)
        }));
    }
    let mut statuses = Vec::with_capacity(placed.len());
    for reader in readers {
        statuses.extend(reader.await.map_err(|e| format!("order reader: {e}"))??);
    }
    Ok(statuses)
}
