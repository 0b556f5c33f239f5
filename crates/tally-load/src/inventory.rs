//! The `inventory` workload (seeds 002 and 004): scarce products and few
//! seats, a waiting queue in front of the seats, and orders that are paid,
//! cancelled (some after paying: a refund) or left to expire.
//!
//! Every choice a client makes comes from a hash of its number and its step,
//! so two runs against fresh servers make the same choices (what the server
//! answers still depends on timing).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use http::StatusCode;
use tally_client::dto::{
    CreateEventRequest, CreateOrderRequest, CreatePaymentRequest, CreateProductRequest, NewSeatInput,
};

use super::{Client, Observed, record, timed};

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
        let admin = client.as_key(admin_key);
        for i in 0..PRODUCTS {
            let request = CreateProductRequest::new(&format!("load-product-{i}"), PRODUCT_PRICE, stock);
            products.push(timed(admin.create_product(&request)).await?.ok("creating a product")?.id);
        }
        let seats = (1..=SEATS).map(|i| NewSeatInput::new(&format!("A{i}"), SEAT_PRICE)).collect();
        let mut request = CreateEventRequest::one_showtime(
            "load-event",
            ACTIVE_LIMIT,
            TOKEN_TTL_SECONDS,
            "2030-01-01T19:00:00Z",
            seats,
        );
        request.max_seats_per_token = Some(SEATS_PER_TOKEN);
        let created = timed(admin.create_event(&request)).await?.ok("creating the event")?;
        let showtime = created.showtimes.first().ok_or("no showtime in the event reply")?.id.clone();
        let event = created.id;
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
        let items: Vec<(&str, u64)> =
            lines.iter().map(|(p, quantity)| (self.catalogue.products[*p].as_str(), *quantity)).collect();
        let (chosen, token) = match token.as_deref() {
            Some(token) if !seats.is_empty() => (seats.iter().map(String::as_str).collect(), Some(token)),
            _ => (Vec::new(), None),
        };
        let request = CreateOrderRequest::of(&items, &chosen);
        let idem = format!("o-{}-{n}", self.c);
        let created = timed(self.client.as_key(self.key).create_order(&idem, &request, token)).await?;
        record(local, &created);
        if created.status == StatusCode::FORBIDDEN {
            // The token expired (or was used) since it was last seen active.
            shopper.token = None;
        }
        let Some(order) = created.body else {
            *local.fates.entry("refused").or_default() += 1;
            return Ok(());
        };
        let (id, total) = (order.id, order.total);
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
        let id = &self.catalogue.products[product];
        let units = self.catalogue.restock_units;
        // The product's id keeps the key unique across runs on one server.
        let idem = format!("restock-{id}-{n}");
        let reply = match timed(self.client.as_key(&self.catalogue.admin_key).restock(&idem, id, units)).await {
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
        let api = self.client.as_key(self.key);
        let reply = match &shopper.token {
            Some((token, true)) => return Ok(Some(token.clone())),
            Some((token, false)) => timed(api.queue_token(token)).await?,
            None => timed(api.join_queue(&self.catalogue.event)).await?,
        };
        record(local, &reply);
        let Some(body) = reply.body else { return Ok(None) };
        let token = body.token;
        match body.status.as_str() {
            "active" => {
                shopper.token = Some((token.clone(), true));
                Ok(Some(token))
            }
            "waiting" => {
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
        let reply = timed(self.client.as_key(self.key).seats(&self.catalogue.showtime)).await?;
        record(local, &reply);
        let seats = reply.body.map(|body| body.seats).unwrap_or_default();
        let free: Vec<&str> = seats.iter().filter(|s| s.status == "available").map(|s| s.id.as_str()).collect();
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
        let api = self.client.as_key(self.key);
        let request = CreatePaymentRequest::of_order(order, "wallet");
        let created = timed(api.create_payment(&format!("p-{}-{n}", self.c), &request)).await?;
        record(local, &created);
        let Some(payment) = created.body else {
            *local.fates.entry("payment refused").or_default() += 1;
            return Ok(None);
        };
        let confirmed = timed(api.confirm_payment(&format!("c-{}-{n}", self.c), &payment.id, None)).await?;
        record(local, &confirmed);
        let Some(confirmed) = confirmed.body else {
            *local.fates.entry("payment refused").or_default() += 1;
            return Ok(None);
        };
        // The payback is the merchant's policy, which the load cannot know
        // beforehand, so it reads what the server answered.
        let payback = confirmed.payback_amount;
        *local.expected_delta.entry(self.wallet).or_default() -= total - payback;
        *local.fates.entry("paid").or_default() += 1;
        Ok(Some(payback))
    }

    /// Cancels an order; `refund` is what a paid order gives back to the
    /// wallet: its total, less the payback it reverses.
    async fn cancel(&self, order: &str, n: u64, refund: Option<i64>, local: &mut Observed) -> Result<(), String> {
        let reply = timed(self.client.as_key(self.key).cancel_order(&format!("x-{}-{n}", self.c), order)).await?;
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
    let admin = client.as_key(&catalogue.admin_key);
    for product in &catalogue.products {
        stock.push(timed(admin.product(product)).await?.ok(&format!("reading product {product}"))?.stock);
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
                let order = timed(client.as_key(&key).order(&id)).await?.ok(&format!("reading order {id}"))?;
                statuses.push(order.status);
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
