//! The clients: what they ask for (a table of operation kinds) and how they
//! ask (like real clients: a timeout per attempt, retries with the same
//! `Idempotency-Key` on a new connection, sometimes to another server,
//! sometimes a deliberate duplicate while the first is still in flight).
//!
//! # The operation table
//!
//! [`OPS`] lists every kind of operation with a weight, a `build` that turns
//! the client's state into a request (or declines, when the client has
//! nothing to act on yet), and a `learn` that updates the state from a
//! success. Besides money (top-ups, payments, confirms, cancels), clients
//! order the seed's scarce products (one or two lines, the same two products
//! listed in either order by different clients), join the event's queue and
//! poll their token, order seats with it (sometimes with a token that is not
//! active: a 403), pay orders (wallet, and gateway when the seed allows),
//! cancel them, read them, restock (with the admin key), and leave the rest
//! unpaid to lapse past the seed's order TTL.
//!
//! # The adversarial customer (issue 10)
//!
//! Each client has the seed's [`Habits`]: it may confirm gateway payments
//! with keys already used (its own earlier payments', or a pool every such
//! client — of every user — and another merchant share); spend the cashback
//! of a done gateway payment and then cancel it (read the wallet, pay out
//! nearly all of it, cancel); top the wallet up to just under its
//! `max_balance` and then pay through the gateway with a payback that may not
//! fit; book seat after seat with one queue token; and name its own
//! `payback_amount` (which must be refused 400). A scheme's steps are a
//! *script* the client follows before drawing anything else.
//!
//! # Amount tags
//!
//! Every money amount a client sends ends in a tag (`client * 1000 + op`)
//! below [`TAG_SPACE`], unique within the run. The oracle reads it back from
//! the ledger: two top-ups with one tag are one request taking effect twice.
//! A payment for an order has the order's total as its amount (prices are
//! whole multiples of [`TAG_SPACE`]) and carries no tag: the oracle counts
//! an order's payments against the keys that asked for one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tally_core::ids::UserId;
use tally_core::time::{Clock, Timestamp};

use crate::catalogue::Catalogue;
use crate::clock::SimClock;
use crate::journal::{Answer, Count, Exchange, Journal};
use crate::net::{self, Failure, Reply};
use crate::plan::{ClientBehaviour, Habits, SHARED_KEYS, server_name, timing};
use crate::rng::SimRng;

/// Amounts are `units * TAG_SPACE + tag`.
pub const TAG_SPACE: i64 = 100_000;

/// How many units one restock adds.
pub const RESTOCK_QUANTITY: u64 = 1;

/// A payment the client created.
#[derive(Clone, Debug)]
pub struct Known {
    pub id: String,
    pub gateway: bool,
    pub payment_key: String,
    pub status: String,
    /// The order it pays (index into `ClientState::orders`).
    pub order: Option<usize>,
    /// The payback the server set (the merchant's policy).
    pub payback: i64,
}

/// An order the client created.
#[derive(Clone, Debug)]
pub struct KnownOrder {
    pub id: String,
    pub status: String,
    /// When it expires unpaid, by the service's clock.
    pub expires_at: Option<Timestamp>,
    /// The seats it booked.
    pub seats: Vec<String>,
}

/// The client's queue token.
#[derive(Clone, Debug)]
pub struct KnownToken {
    pub id: String,
    pub status: String,
}

/// What one client knows.
#[derive(Clone, Debug, Default)]
pub struct ClientState {
    pub payments: Vec<Known>,
    pub orders: Vec<KnownOrder>,
    pub token: Option<KnownToken>,
    pub catalogue: Arc<Catalogue>,
    /// Whether this seed pays some orders through the gateway.
    pub orders_via_gateway: bool,
    /// What the client observed since the loop last looked, for the counters.
    pub noted: Vec<Count>,
    /// The natural next step after the last success (pay the order just
    /// made, confirm the payment just created, poll a waiting token, book
    /// seats with an active one): taken at [`FOLLOW_PER_MILLE`].
    pub follow: Option<&'static str>,
    /// Pays at the last moment, racing the order TTL (see [`Inventory::races_expiry`](crate::plan::Inventory)).
    pub racer: bool,
    /// The service's clock, as a client with a synchronised clock reads it.
    pub clock: SimClock,
    pub habits: Habits,
    /// The user's `max_balance`, if it has one.
    pub max_balance: Option<i64>,
    /// The balance the client last read.
    pub balance: Option<i64>,
    /// A scheme's next steps, taken in order before anything is drawn: an
    /// operation kind and, for a confirm or a cancel, the payment it is for.
    pub script: VecDeque<(&'static str, Option<usize>)>,
    /// The payment the step being built is for (from the script).
    pub aim: Option<usize>,
    /// The step being built is the key reuser's opening: reuse a key.
    pub reusing: bool,
    /// The UTC boundary the run starts before, if any (by the service's clock).
    pub boundary: Option<Timestamp>,
}

/// A scheme of the adversarial customer, started by reading the wallet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Spend the cashback of this done gateway payment, then cancel it.
    SpendCashback(usize),
    /// Top up to just under `max_balance`, then pay through the gateway.
    FillToMax,
}

/// How often a client takes the natural next step instead of a random one.
pub const FOLLOW_PER_MILLE: u64 = 500;

/// A request an operation wants sent.
#[derive(Clone, Debug)]
pub struct Planned {
    pub kind: &'static str,
    pub method: &'static str,
    pub path: String,
    pub body: Option<Vec<u8>>,
    /// Money and inventory moves carry an `Idempotency-Key` and are retried.
    pub keyed: bool,
    /// Retried without a key: the request is idempotent by itself (joining a queue).
    pub idempotent: bool,
    /// Sent with the admin key instead of the client's.
    pub admin: bool,
    /// The payment (index into `ClientState::payments`) this acts on.
    pub payment: Option<usize>,
    /// The order (index into `ClientState::orders`) this acts on.
    pub order: Option<usize>,
    /// For a new gateway payment: its payment key.
    pub payment_key: Option<String>,
    /// The `Queue-Token` header, for seats.
    pub queue_token: Option<String>,
    /// Waits this long before sending (a client polling its place in line,
    /// or paying at the last moment).
    pub delay: Duration,
    /// A confirm timed to land just before its order's TTL.
    pub races: bool,
    /// The scheme this wallet read starts.
    pub scheme: Option<Scheme>,
    /// A step of a script: a payment it creates is confirmed next.
    pub scripted: bool,
    /// For seats: the ones asked for.
    pub seats: Vec<String>,
}

/// One row of the operation table.
#[derive(Debug)]
pub struct OpKind {
    pub name: &'static str,
    pub weight: u64,
    pub build: fn(&ClientState, &mut SimRng, i64) -> Option<Planned>,
    pub learn: fn(&mut ClientState, &Planned, &Reply),
}

fn json(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialise")
}

fn post(kind: &'static str, path: String, body: serde_json::Value) -> Planned {
    Planned {
        kind,
        method: "POST",
        path,
        body: Some(json(&body)),
        keyed: true,
        idempotent: false,
        admin: false,
        payment: None,
        order: None,
        payment_key: None,
        queue_token: None,
        delay: Duration::ZERO,
        races: false,
        scheme: None,
        scripted: false,
        seats: Vec::new(),
    }
}

fn get(kind: &'static str, path: String) -> Planned {
    Planned {
        kind,
        method: "GET",
        path,
        body: None,
        keyed: false,
        idempotent: false,
        admin: false,
        payment: None,
        order: None,
        payment_key: None,
        queue_token: None,
        delay: Duration::ZERO,
        races: false,
        scheme: None,
        scripted: false,
        seats: Vec::new(),
    }
}

fn tagged(rng: &mut SimRng, max_units: u64, tag: i64) -> i64 {
    i64::try_from(rng.range(1, max_units)).expect("small") * TAG_SPACE + tag
}

fn build_top_up(_: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    Some(post("top-up", "/v1/wallet/top-ups".into(), serde_json::json!({ "amount": tagged(rng, 40, tag) })))
}

/// A payment key for a new gateway payment: its own, or — for a client
/// that reuses keys, half the time (always in its opening) — one already
/// used: by one of its own payments, or from the pool every reusing client
/// and another merchant share.
fn payment_key(state: &ClientState, rng: &mut SimRng, tag: i64) -> String {
    if state.habits.reuse_keys && (state.reusing || rng.chance(500)) {
        let mut used: Vec<String> =
            state.payments.iter().filter(|p| p.gateway).map(|p| p.payment_key.clone()).collect();
        // The opening's second payment: mostly the first one's key.
        if let (true, Some(newest)) = (state.reusing && rng.chance(700), used.last()) {
            return newest.clone();
        }
        used.extend((0..SHARED_KEYS).map(shared_key));
        return rng.pick(&used).clone();
    }
    format!("pk-{tag}")
}

/// A payment key of the pool reusing clients and another merchant share.
pub fn shared_key(index: u64) -> String {
    format!("pk-shared-{index}")
}

/// A customer naming its own cashback, now and then (400: it is the
/// merchant's policy).
fn choose_payback(state: &ClientState, rng: &mut SimRng, body: &mut serde_json::Value, amount: i64) {
    if state.habits.choose_payback && rng.chance(150) {
        body["payback_amount"] = serde_json::json!(amount);
    }
}

fn build_payment(state: &ClientState, gateway: bool, rng: &mut SimRng, tag: i64) -> Planned {
    let amount = tagged(rng, 12, tag);
    let mut body = serde_json::json!({ "amount": amount, "method": if gateway { "gateway" } else { "wallet" } });
    choose_payback(state, rng, &mut body, amount);
    let mut planned = post(if gateway { "pay-gateway" } else { "pay-wallet" }, "/v1/payments".into(), body);
    planned.payment_key = gateway.then(|| payment_key(state, rng, tag));
    planned
}

fn build_pay_wallet(state: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    Some(build_payment(state, false, rng, tag))
}

fn build_pay_gateway(state: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    Some(build_payment(state, true, rng, tag))
}

/// A gateway payment larger than the wallet is likely to hold: its
/// cashback then outweighs whatever the wallet has left after spending
/// everything (which earns its own cashback), so cancelling it must be
/// refused. The cashback opening's first step.
fn build_pay_big(state: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    let mut planned = build_payment(state, true, rng, tag);
    let amount = i64::try_from(rng.range(30, 80)).expect("small") * TAG_SPACE + tag;
    planned.body = Some(json(&serde_json::json!({ "amount": amount, "method": "gateway" })));
    Some(planned)
}

/// A wallet payment of a good part of a daily limit, made just before a
/// UTC boundary to be confirmed just after it (see `build_confirm`).
fn build_midnight_pay(_: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    let amount = i64::try_from(rng.range(4, 10)).expect("small") * TAG_SPACE + tag;
    Some(post("pay-wallet", "/v1/payments".into(), serde_json::json!({ "amount": amount, "method": "wallet" })))
}

/// Reads the wallet; a scheme's first step.
fn read_wallet(scheme: Option<Scheme>) -> Planned {
    let mut planned = get("read-wallet", "/v1/wallet".into());
    // A read changes nothing: retried like any idempotent request.
    planned.idempotent = true;
    planned.scheme = scheme;
    planned
}

fn build_read_wallet(_: &ClientState, _: &mut SimRng, _: i64) -> Option<Planned> {
    Some(read_wallet(None))
}

/// Starts spending the cashback of a done gateway payment with a payback,
/// to cancel that payment once the money is gone: mostly the newest (the
/// one an opening just paid), sometimes any.
fn build_cashback(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    if !state.habits.spend_cashback {
        return None;
    }
    let done: Vec<usize> = (0..state.payments.len())
        .filter(|&i| {
            let p = &state.payments[i];
            p.gateway && p.status == "done" && p.payback > 0
        })
        .collect();
    let newest = done.last().copied()?;
    let target = if rng.chance(700) { newest } else { *rng.pick(&done) };
    Some(read_wallet(Some(Scheme::SpendCashback(target))))
}

/// Starts filling the wallet to just under its `max_balance`.
fn build_near_max(state: &ClientState, _: &mut SimRng, _: i64) -> Option<Planned> {
    (state.habits.fill_to_max && state.max_balance.is_some()).then(|| read_wallet(Some(Scheme::FillToMax)))
}

/// The largest tagged amount up to `room` (zero whole units allowed).
fn tagged_up_to(room: i64, tag: i64) -> Option<i64> {
    let units = room.checked_sub(tag)?.div_euclid(TAG_SPACE);
    let amount = units * TAG_SPACE + tag;
    (units >= 0 && amount > 0).then_some(amount)
}

/// Pays nearly the whole balance out of the wallet (a scripted step: the
/// payment is confirmed next).
fn build_spend(state: &ClientState, _: &mut SimRng, tag: i64) -> Option<Planned> {
    let amount = tagged_up_to(state.balance?, tag)?;
    Some(post("pay-wallet", "/v1/payments".into(), serde_json::json!({ "amount": amount, "method": "wallet" })))
}

/// Tops the wallet up to just under its maximum: less than one whole unit
/// of room is left, which a payback may not fit in.
fn build_fill(state: &ClientState, _: &mut SimRng, tag: i64) -> Option<Planned> {
    let amount = tagged_up_to(state.max_balance? - state.balance?, tag)?;
    Some(post("top-up", "/v1/wallet/top-ups".into(), serde_json::json!({ "amount": amount })))
}

/// A payment to act on: mostly one still waiting, sometimes any.
fn choose(state: &ClientState, rng: &mut SimRng) -> Option<usize> {
    let newest = state.payments.len().checked_sub(1);
    if newest.is_some_and(|i| state.payments[i].status == "wait") && rng.chance(600) {
        return newest;
    }
    let waiting: Vec<usize> = (0..state.payments.len()).filter(|&i| state.payments[i].status == "wait").collect();
    if !waiting.is_empty() && rng.chance(750) {
        return Some(*rng.pick(&waiting));
    }
    (!state.payments.is_empty()).then(|| rng.index(state.payments.len()))
}

fn build_confirm(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let index = match state.aim {
        Some(aim) => aim,
        None => choose(state, rng)?,
    };
    let known = &state.payments[index];
    let body =
        if known.gateway { serde_json::json!({ "payment_key": known.payment_key }) } else { serde_json::json!({}) };
    let mut planned = post("confirm", format!("/v1/payments/{}/confirm", known.id), body);
    planned.payment = Some(index);
    if let (true, Some(boundary)) = (state.habits.pay_at_midnight && !known.gateway, state.boundary) {
        // Land within the first few hundred milliseconds of the new day:
        // the other client of this user does too, on another server, whose
        // clock may still say yesterday.
        let left = boundary.0 - state.clock.now().0;
        if left > 0 {
            let after = i64::try_from(rng.range(0, 400)).expect("small");
            planned.delay = Duration::from_millis(u64::try_from(left + after).expect("positive"));
        }
    }
    let order = known.order.map(|i| &state.orders[i]).filter(|o| o.status == "pending_payment");
    if let (true, Some(expires_at)) = (state.racer, order.and_then(|o| o.expires_at)) {
        // The last-moment payer: land just before the TTL.
        let left = expires_at.0 - state.clock.now().0;
        if (0..=RACE_WAIT_MAX_MS).contains(&left) {
            let early = i64::try_from(rng.range(38, 60)).expect("small");
            planned.delay = Duration::from_millis(u64::try_from((left - early).max(0)).expect("not negative"));
            planned.races = true;
        }
    }
    Some(planned)
}

/// The longest a last-moment payer waits for an order's TTL.
const RACE_WAIT_MAX_MS: i64 = 1_500;

fn build_cancel(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    // Any payment, also one already cancelled: cancelling twice must refund once.
    let index = match state.aim {
        Some(aim) => aim,
        None => (!state.payments.is_empty()).then(|| rng.index(state.payments.len()))?,
    };
    let mut planned =
        post("cancel", format!("/v1/payments/{}/cancel", state.payments[index].id), serde_json::json!({}));
    planned.payment = Some(index);
    Some(planned)
}

fn build_read(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let index = (!state.payments.is_empty()).then(|| rng.index(state.payments.len()))?;
    let mut planned = get("read-payment", format!("/v1/payments/{}", state.payments[index].id));
    planned.payment = Some(index);
    Some(planned)
}

/// One or two lines of scarce products. Two lines are the same two products
/// in either order, so two clients may ask for them in opposite orders: the
/// service must lock them in one global order.
fn build_order_products(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let products = &state.catalogue.products;
    if products.is_empty() {
        return None;
    }
    let first = rng.index(products.len());
    let mut chosen = vec![first];
    if products.len() > 1 && rng.chance(500) {
        chosen.push((first + 1 + rng.index(products.len() - 1)) % products.len());
    }
    let items: Vec<serde_json::Value> = chosen
        .iter()
        .map(|&index| {
            let quantity = if rng.chance(200) { 2 } else { 1 };
            serde_json::json!({ "product_id": products[index].id, "quantity": quantity })
        })
        .collect();
    let mut planned = post("order-products", "/v1/orders".into(), serde_json::json!({ "items": items }));
    if state.racer {
        // Arrive just before a whole second of the servers' uptime: the
        // order's TTL then ends just before a sweep.
        let phase = u64::try_from(state.clock.elapsed().as_millis() % 1000).expect("below 1000");
        let target = 1000 - rng.range(45, 75);
        planned.delay = Duration::from_millis((target + 1000 - phase) % 1000);
    }
    Some(planned)
}

fn build_join_queue(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let event = state.catalogue.event.as_ref()?;
    // Joining again while the token is live answers that token: now and then.
    let live = state.token.as_ref().is_some_and(|t| t.status == "waiting" || t.status == "active");
    if live && !rng.chance(150) {
        return None;
    }
    let mut planned = post("join-queue", format!("/v1/events/{event}/queue"), serde_json::json!({}));
    planned.keyed = false;
    planned.idempotent = true;
    Some(planned)
}

/// Polls the token: while it waits, after a pause (a client polling its
/// place in line every few hundred milliseconds); now and then otherwise.
fn build_poll_token(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let token = state.token.as_ref()?;
    let waiting = token.status == "waiting";
    if !waiting && !rng.chance(100) {
        return None;
    }
    let mut planned = get("poll-token", format!("/v1/queue/{}", token.id));
    if waiting {
        planned.delay = rng.millis(200, 800);
    }
    Some(planned)
}

/// Seats with the client's token: mostly an active one, sometimes one that
/// is waiting or over (a 403). A hoarder asks for seats its live orders do
/// not hold yet, to book past the token's limit.
fn build_order_seats(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let token = state.token.as_ref()?;
    let all = &state.catalogue.seats;
    if all.is_empty() || (token.status != "active" && !rng.chance(250)) {
        return None;
    }
    let mine: Vec<&String> = state
        .orders
        .iter()
        .filter(|o| o.status == "pending_payment" || o.status == "paid")
        .flat_map(|o| o.seats.iter())
        .collect();
    let free: Vec<String> = all.iter().filter(|s| !mine.contains(s)).cloned().collect();
    let seats = if state.habits.hoard_seats && !free.is_empty() { &free } else { all };
    let first = rng.index(seats.len());
    let mut chosen = vec![seats[first].clone()];
    if seats.len() > 1 && rng.chance(250) {
        chosen.push(seats[(first + 1 + rng.index(seats.len() - 1)) % seats.len()].clone());
    }
    let mut planned = post("order-seats", "/v1/orders".into(), serde_json::json!({ "seats": chosen }));
    planned.queue_token = Some(token.id.clone());
    planned.seats = chosen;
    Some(planned)
}

/// An order to act on: mostly one in `wanted`, sometimes any.
fn choose_order(state: &ClientState, rng: &mut SimRng, wanted: &[&str]) -> Option<usize> {
    let fitting: Vec<usize> =
        (0..state.orders.len()).filter(|&i| wanted.contains(&state.orders[i].status.as_str())).collect();
    if !fitting.is_empty() && rng.chance(850) {
        return Some(*rng.pick(&fitting));
    }
    (!state.orders.is_empty() && rng.chance(300)).then(|| rng.index(state.orders.len()))
}

fn build_pay_order(state: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    // Mostly an order with no payment waiting yet; sometimes a second
    // payment for it, or an order that is over.
    let unpaid: Vec<usize> = (0..state.orders.len())
        .filter(|&i| {
            state.orders[i].status == "pending_payment"
                && !state.payments.iter().any(|p| p.order == Some(i) && p.status == "wait")
        })
        .collect();
    let newest = state.orders.len().checked_sub(1);
    let index = if newest.is_some_and(|i| unpaid.contains(&i)) && rng.chance(600) {
        newest.expect("checked")
    } else if !unpaid.is_empty() && rng.chance(850) {
        *rng.pick(&unpaid)
    } else {
        choose_order(state, rng, &["pending_payment"])?
    };
    let gateway = state.orders_via_gateway && rng.chance(400);
    // The amount is the order's total, the payback the merchant's policy.
    let mut body = serde_json::json!({
        "order_id": state.orders[index].id,
        "method": if gateway { "gateway" } else { "wallet" },
    });
    choose_payback(state, rng, &mut body, 1);
    let mut planned = post("pay-order", "/v1/payments".into(), body);
    planned.payment_key = gateway.then(|| payment_key(state, rng, tag));
    planned.order = Some(index);
    Some(planned)
}

fn build_cancel_order(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let index = choose_order(state, rng, &["pending_payment", "paid"])?;
    let mut planned =
        post("cancel-order", format!("/v1/orders/{}/cancel", state.orders[index].id), serde_json::json!({}));
    planned.order = Some(index);
    Some(planned)
}

fn build_read_order(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let index = (!state.orders.is_empty()).then(|| rng.index(state.orders.len()))?;
    let mut planned = get("read-order", format!("/v1/orders/{}", state.orders[index].id));
    planned.order = Some(index);
    Some(planned)
}

/// The admin restocks a product by one unit (keyed, retried like any move).
fn build_restock(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let products = &state.catalogue.products;
    if products.is_empty() {
        return None;
    }
    let product = &products[rng.index(products.len())];
    let mut planned = post(
        "restock",
        format!("/v1/products/{}/restock", product.id),
        serde_json::json!({ "quantity": RESTOCK_QUANTITY }),
    );
    planned.admin = true;
    Some(planned)
}

fn body_field(reply: &Reply, field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    value.get(field).and_then(|v| v.as_str()).map(str::to_owned)
}

fn body_integer(reply: &Reply, field: &str) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    value.get(field).and_then(serde_json::Value::as_i64)
}

fn learn_nothing(_: &mut ClientState, _: &Planned, _: &Reply) {}

fn learn_payment(state: &mut ClientState, planned: &Planned, reply: &Reply) {
    let (Some(id), Some(status)) = (body_field(reply, "id"), body_field(reply, "status")) else { return };
    state.payments.push(Known {
        id,
        gateway: planned.payment_key.is_some(),
        payment_key: planned.payment_key.clone().unwrap_or_default(),
        status,
        order: planned.order,
        payback: body_integer(reply, "payback_amount").unwrap_or(0),
    });
    if planned.scripted {
        // A scheme's payment is confirmed at once.
        state.script.push_front(("confirm", Some(state.payments.len() - 1)));
    } else {
        state.follow = Some("confirm");
    }
}

fn learn_wallet(state: &mut ClientState, planned: &Planned, reply: &Reply) {
    state.balance = body_integer(reply, "balance");
    match planned.scheme {
        Some(Scheme::SpendCashback(payment)) => state.script = [("spend", None), ("cancel", Some(payment))].into(),
        Some(Scheme::FillToMax) => state.script = [("fill", None), ("pay-gateway", None)].into(),
        None => {}
    }
}

fn learn_status(state: &mut ClientState, planned: &Planned, reply: &Reply) {
    if let (Some(index), Some(status)) = (planned.payment, body_field(reply, "status")) {
        // A payment's fate moves its order.
        let order_status = match status.as_str() {
            "done" => Some("paid"),
            "cancelled" if state.payments[index].status != "wait" => Some("cancelled"),
            _ => None,
        };
        if let (Some(order), Some(order_status)) = (state.payments[index].order, order_status) {
            state.orders[order].status = order_status.to_owned();
        }
        state.payments[index].status = status;
    }
}

fn learn_order(state: &mut ClientState, planned: &Planned, reply: &Reply) {
    if let (Some(id), Some(status)) = (body_field(reply, "id"), body_field(reply, "status")) {
        let expires_at = body_field(reply, "expires_at").and_then(|at| tally_http::dto::parse_rfc3339(&at));
        state.orders.push(KnownOrder { id, status, expires_at, seats: planned.seats.clone() });
        if planned.kind == "order-seats" && state.habits.hoard_seats {
            // Another order with the same token, before paying anything.
            state.script.push_back(("order-seats", None));
        } else {
            state.follow = Some("pay-order");
        }
    }
}

fn learn_order_status(state: &mut ClientState, planned: &Planned, reply: &Reply) {
    if let (Some(index), Some(status)) = (planned.order, body_field(reply, "status")) {
        state.orders[index].status = status;
    }
}

fn learn_token(state: &mut ClientState, _: &Planned, reply: &Reply) {
    let (Some(id), Some(status)) = (body_field(reply, "token"), body_field(reply, "status")) else { return };
    let was_waiting = state.token.as_ref().is_some_and(|t| t.id == id && t.status == "waiting");
    if was_waiting && status == "active" {
        state.noted.push(Count::QueuePromotions);
    }
    let hoarding = state.habits.hoard_seats;
    match status.as_str() {
        // A hoarder waits its turn, then books at once.
        "waiting" if hoarding => state.script.push_back(("poll-token", None)),
        "active" if hoarding => state.script.push_back(("order-seats", None)),
        "waiting" => state.follow = Some("poll-token"),
        "active" => state.follow = Some("order-seats"),
        _ => state.follow = None,
    }
    state.token = Some(KnownToken { id, status });
}

/// How often a client with a habit opens with it (its first operation
/// after the top-up): a scheme takes four to six operations, and a client
/// has seven or eight, so one drawn later would rarely finish.
pub const OPENING_PER_MILLE: u64 = 600;

/// The steps of an opening scheme, one of the client's habits: pay through
/// the gateway and confirm, then spend the cashback and cancel (`cashback`
/// reads the wallet and scripts the rest); fill the wallet to just under its
/// maximum and pay with a payback (`near-max`); pay twice through the
/// gateway, the second time with the first payment's key; join the queue and
/// book seat after seat (the token's answer scripts the bookings).
fn opening(state: &ClientState, rng: &mut SimRng) -> VecDeque<(&'static str, Option<usize>)> {
    let habits = state.habits;
    if habits.pay_at_midnight {
        // Two wallet payments, each confirmed as the day rolls.
        return [("midnight-pay", None), ("midnight-pay", None)].into();
    }
    let mut schemes: Vec<&[&'static str]> = Vec::new();
    if habits.spend_cashback {
        schemes.push(&["pay-big", "cashback"]);
    }
    if habits.fill_to_max && state.max_balance.is_some() {
        schemes.push(&["near-max"]);
    }
    if habits.reuse_keys {
        schemes.push(&["pay-gateway", "pay-gateway"]);
    }
    if habits.hoard_seats && state.catalogue.event.is_some() {
        schemes.push(&["join-queue"]);
    }
    if schemes.is_empty() {
        return VecDeque::new();
    }
    rng.pick(&schemes).iter().map(|name| (*name, None)).collect()
}

/// Every kind of operation the clients perform, with its weight.
pub const OPS: &[OpKind] = &[
    OpKind { name: "top-up", weight: 3, build: build_top_up, learn: learn_nothing },
    OpKind { name: "pay-wallet", weight: 3, build: build_pay_wallet, learn: learn_payment },
    OpKind { name: "pay-gateway", weight: 2, build: build_pay_gateway, learn: learn_payment },
    OpKind { name: "confirm", weight: 6, build: build_confirm, learn: learn_status },
    OpKind { name: "cancel", weight: 2, build: build_cancel, learn: learn_status },
    OpKind { name: "read-payment", weight: 1, build: build_read, learn: learn_status },
    OpKind { name: "order-products", weight: 4, build: build_order_products, learn: learn_order },
    OpKind { name: "join-queue", weight: 2, build: build_join_queue, learn: learn_token },
    OpKind { name: "poll-token", weight: 8, build: build_poll_token, learn: learn_token },
    OpKind { name: "order-seats", weight: 4, build: build_order_seats, learn: learn_order },
    OpKind { name: "pay-order", weight: 6, build: build_pay_order, learn: learn_payment },
    OpKind { name: "cancel-order", weight: 1, build: build_cancel_order, learn: learn_order_status },
    OpKind { name: "read-order", weight: 1, build: build_read_order, learn: learn_order_status },
    OpKind { name: "restock", weight: 1, build: build_restock, learn: learn_nothing },
    OpKind { name: "read-wallet", weight: 1, build: build_read_wallet, learn: learn_wallet },
    OpKind { name: "cashback", weight: 3, build: build_cashback, learn: learn_wallet },
    OpKind { name: "near-max", weight: 2, build: build_near_max, learn: learn_wallet },
    // Script steps only (weight 0: never drawn).
    OpKind { name: "spend", weight: 0, build: build_spend, learn: learn_payment },
    OpKind { name: "pay-big", weight: 0, build: build_pay_big, learn: learn_payment },
    OpKind { name: "midnight-pay", weight: 0, build: build_midnight_pay, learn: learn_payment },
    OpKind { name: "fill", weight: 0, build: build_fill, learn: learn_nothing },
];

/// Draws the next operation: the first one funds the wallet; then, half the
/// time, the natural next step after the last success; otherwise a kind by
/// weight, drawn again while it has nothing to act on.
fn next_op(state: &mut ClientState, rng: &mut SimRng, op: usize, tag: i64) -> (&'static OpKind, Planned) {
    if op == 0 {
        let kind = &OPS[0];
        return (kind, (kind.build)(state, rng, tag).expect("a top-up is always possible"));
    }
    if op == 1 && !state.racer && (state.habits.pay_at_midnight || rng.chance(OPENING_PER_MILLE)) {
        state.script = opening(state, rng);
    }
    // A scheme in progress goes on; a step that cannot be built ends it.
    if let Some((name, aim)) = state.script.pop_front() {
        let kind = OPS.iter().find(|k| k.name == name).expect("scripts name operation kinds");
        state.aim = aim;
        // The opening's second gateway payment is the key reuser's.
        state.reusing = name == "pay-gateway" && state.payments.iter().any(|p| p.gateway);
        let built = (kind.build)(state, rng, tag);
        state.aim = None;
        state.reusing = false;
        match built {
            Some(mut planned) => {
                planned.scripted = true;
                return (kind, planned);
            }
            None => state.script.clear(),
        }
    }
    if let Some(name) = state.follow.take()
        && (state.racer || rng.chance(FOLLOW_PER_MILLE))
    {
        let kind = OPS.iter().find(|k| k.name == name).expect("follow-ups name operation kinds");
        if let Some(planned) = (kind.build)(state, rng, tag) {
            return (kind, planned);
        }
    }
    // The last-moment payer starts its next race when it has no order to pay.
    if state.racer && !state.orders.iter().any(|o| o.status == "pending_payment") && rng.chance(FOLLOW_PER_MILLE) {
        let kind = OPS.iter().find(|k| k.name == "order-products").expect("a row of the table");
        if let Some(planned) = (kind.build)(state, rng, tag) {
            return (kind, planned);
        }
    }
    let total: u64 = OPS.iter().map(|k| k.weight).sum();
    loop {
        let mut draw = rng.below(total);
        let kind = OPS.iter().find(|k| {
            let hit = draw < k.weight;
            draw = draw.saturating_sub(k.weight);
            hit
        });
        let kind = kind.expect("the draw is below the total weight");
        if let Some(planned) = (kind.build)(state, rng, tag) {
            return (kind, planned);
        }
    }
}

/// One client host's inputs.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    pub index: usize,
    pub user: UserId,
    pub api_key: String,
    pub ops: usize,
    pub servers: usize,
    pub behaviour: ClientBehaviour,
    pub rng: SimRng,
    pub journal: Journal,
    pub clock: SimClock,
    pub catalogue: Arc<Catalogue>,
    pub orders_via_gateway: bool,
    pub racer: bool,
    pub habits: Habits,
    /// The user's `max_balance`, if it has one.
    pub max_balance: Option<i64>,
    /// The UTC boundary the run starts before, if any.
    pub boundary: Option<Timestamp>,
}

fn is_code(reply: &Reply, code: &str) -> bool {
    reply.status >= 400 && body_field(reply, "code").as_deref() == Some(code)
}

fn is_in_use(reply: &Reply) -> bool {
    reply.status == 409 && is_code(reply, "idempotency_key_in_use")
}

/// An answer the client stops at: a success or a refusal it cannot change
/// by asking again.
fn is_final(reply: &Reply) -> bool {
    match reply.status {
        200..=299 => true,
        409 if is_in_use(reply) => false,
        429 => false,
        400..=499 => true,
        _ => false,
    }
}

struct Attempt<'a> {
    spec: &'a ClientSpec,
    planned: &'a Planned,
    op: usize,
    key: Option<&'a str>,
}

/// Sends one attempt and records it.
async fn send(
    spec: &ClientSpec,
    planned: &Planned,
    op: usize,
    key: Option<&str>,
    server: usize,
    attempt: u32,
    duplicate: bool,
) -> Result<Reply, Failure> {
    let host = server_name(server);
    let bearer = format!("Bearer {}", if planned.admin { crate::server::ADMIN_KEY } else { spec.api_key.as_str() });
    let request_id = format!("c{}-o{op}-a{attempt}{}", spec.index + 1, if duplicate { "d" } else { "" });
    let mut headers = vec![("authorization", bearer.as_str()), ("x-request-id", request_id.as_str())];
    headers.extend(key.map(|key| ("idempotency-key", key)));
    headers.extend(planned.queue_token.as_deref().map(|token| ("queue-token", token)));
    let request = net::request(planned.method, &host, &planned.path, &headers, planned.body.clone());
    spec.journal.count(Count::Requests, 1);
    let sent_at = spec.clock.now();
    let result = net::exchange(&host, request, spec.behaviour.attempt_timeout).await;
    let who = crate::plan::client_name(spec.index);
    let label = format!(
        "{} {} → {host} [{}{}]",
        planned.method,
        planned.path,
        key.unwrap_or("-"),
        if duplicate { " dup".to_owned() } else { format!(" #{attempt}") }
    );
    let answer = match &result {
        Ok(reply) => {
            if reply.replayed {
                spec.journal.count(Count::ReplaysServed, 1);
                if reply.status >= 400 {
                    spec.journal.count(Count::RefusalsReplayed, 1);
                }
            }
            if is_in_use(reply) {
                spec.journal.count(Count::DuplicateInFlight409, 1);
            }
            let body = String::from_utf8_lossy(&reply.body);
            let shown: String = body.chars().take(160).collect();
            spec.journal.event(
                &who,
                format!("{label}: {}{} {shown}", reply.status, if reply.replayed { " (replayed)" } else { "" }),
            );
            Answer::Reply { status: reply.status, body: reply.body.clone(), replayed: reply.replayed }
        }
        Err(failure) => {
            if *failure == Failure::TimedOut {
                spec.journal.count(Count::AttemptTimeouts, 1);
            }
            spec.journal.event(&who, format!("{label}: no answer ({failure})"));
            Answer::Failed(failure.to_string())
        }
    };
    spec.journal.exchange(Exchange {
        client: spec.index,
        user: spec.user,
        op,
        kind: planned.kind,
        path: planned.path.clone(),
        body: planned.body.clone(),
        queue_token: planned.queue_token.clone(),
        key: key.map(str::to_owned),
        host,
        attempt,
        duplicate,
        sent_at,
        ended_at: spec.clock.now(),
        answer,
    });
    result
}

/// Runs one operation to a final answer or until the client gives up.
async fn perform(
    attempt: Attempt<'_>,
    rng: &mut SimRng,
    duplicates: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Option<Reply> {
    let Attempt { spec, planned, op, key } = attempt;
    let home = spec.index % spec.servers;
    let mut server = home;
    let started = spec.clock.now();
    let attempts = if planned.keyed || planned.idempotent { spec.behaviour.attempts } else { 1 };
    for number in 1..=attempts {
        if number > 1 {
            let age = u64::try_from(spec.clock.now().0 - started.0).unwrap_or(0);
            if Duration::from_millis(age) > timing::KEY_AGE_MAX {
                break;
            }
            if spec.servers > 1 && rng.chance(spec.behaviour.switch_per_mille) {
                server = (server + 1 + rng.index(spec.servers - 1)) % spec.servers;
                spec.journal.count(Count::RetriesToAnotherHost, 1);
            }
        }
        if number == 1 && planned.keyed && rng.chance(spec.behaviour.duplicate_per_mille) {
            spec.journal.count(Count::DuplicatesSent, 1);
            let (spec, planned, key) = (spec.clone(), planned.clone(), key.map(str::to_owned));
            let delay = rng.millis(0, 20);
            let target = rng.index(spec.servers);
            duplicates.push(tokio::task::spawn_local(async move {
                tokio::time::sleep(delay).await;
                let _ = send(&spec, &planned, op, key.as_deref(), target, 1, true).await;
            }));
        }
        if let Ok(reply) = send(spec, planned, op, key, server, number, false).await
            && is_final(&reply)
        {
            return Some(reply);
        }
        // Exponential backoff, capped, with jitter.
        let base = spec.behaviour.backoff.saturating_mul(1 << (number - 1).min(4)).min(Duration::from_secs(2));
        let jitter = rng.millis(0, u64::try_from(base.as_millis()).unwrap_or(0) / 2);
        tokio::time::sleep(base + jitter).await;
    }
    None
}

/// Coverage: what an operation's final answer shows about orders.
fn count_answer(journal: &Journal, planned: &Planned, reply: &Reply) {
    let order = matches!(planned.kind, "order-products" | "order-seats");
    let count = match reply.status {
        201 if order => Some(Count::OrdersCreated),
        200 if planned.kind == "confirm"
            && body_field(reply, "order_id").is_some()
            && body_field(reply, "status").as_deref() == Some("done") =>
        {
            Some(Count::OrdersPaid)
        }
        403 if planned.kind == "order-seats" => Some(Count::Forbidden403),
        400 if planned.body.as_ref().is_some_and(|b| names_payback(b)) => Some(Count::PaybackAmountRefused),
        409 => match body_field(reply, "code").as_deref() {
            Some("out_of_stock") => Some(Count::OutOfStock),
            Some("seat_unavailable") => Some(Count::SeatUnavailable),
            Some("order_expired") => Some(Count::OrderExpired),
            Some("payment_key_in_use") => Some(Count::KeyReuseRefused),
            Some("insufficient_balance") if planned.kind == "cancel" => Some(Count::CashbackCancelRefused),
            Some("seat_limit_reached") => Some(Count::SeatLimitRefused),
            Some("max_balance_exceeded") => Some(Count::MaxBalanceRefused),
            Some("limit_exceeded") => Some(Count::LimitRefused),
            _ => None,
        },
        _ => None,
    };
    if let Some(count) = count {
        journal.count(count, 1);
    }
}

/// Whether a request body names its own `payback_amount`.
pub fn names_payback(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.get("payback_amount").is_some())
}

/// The client host's software.
pub async fn client(spec: ClientSpec) -> turmoil::Result {
    let mut rng = spec.rng.clone();
    let mut state = ClientState {
        catalogue: Arc::clone(&spec.catalogue),
        orders_via_gateway: spec.orders_via_gateway,
        racer: spec.racer,
        clock: spec.clock.clone(),
        habits: spec.habits,
        max_balance: spec.max_balance,
        boundary: spec.boundary,
        ..ClientState::default()
    };
    let mut duplicates = Vec::new();
    for op in 0..spec.ops {
        let think = rng.millis(0, spec.behaviour.think_max_ms);
        tokio::time::sleep(think).await;
        let tag = i64::try_from(spec.index * 1000 + op).expect("small");
        let (kind, planned) = next_op(&mut state, &mut rng, op, tag);
        if planned.races {
            spec.journal.count(Count::ExpiryRaces, 1);
            spec.journal.event(
                &crate::plan::client_name(spec.index),
                format!("paying at the last moment: confirm sent {}ms after deciding to", planned.delay.as_millis()),
            );
        }
        if !planned.delay.is_zero() {
            tokio::time::sleep(planned.delay).await;
        }
        let key = planned.keyed.then(|| format!("c{}-o{op}", spec.index + 1));
        spec.journal.count(Count::Operations, 1);
        let attempt = Attempt { spec: &spec, planned: &planned, op, key: key.as_deref() };
        match perform(attempt, &mut rng, &mut duplicates).await {
            Some(reply) => {
                spec.journal.count(Count::OperationsCompleted, 1);
                count_answer(&spec.journal, &planned, &reply);
                if (200..300).contains(&reply.status) {
                    (kind.learn)(&mut state, &planned, &reply);
                } else if let Some(index) = planned.order.filter(|_| is_code(&reply, "order_expired")) {
                    state.orders[index].status = "expired".to_owned();
                }
                for count in state.noted.drain(..) {
                    spec.journal.count(count, 1);
                }
            }
            None => {
                spec.journal.count(Count::OperationsAbandoned, 1);
                spec.journal.event(&crate::plan::client_name(spec.index), format!("gave up on {}", planned.kind));
            }
        }
    }
    for duplicate in duplicates {
        let _ = duplicate.await;
    }
    Ok(())
}

/// Order ids of another merchant's charges start with this.
pub const FOREIGN_ORDER_PREFIX: &str = "elsewhere-";

/// Another merchant's checkout on the same gateway: it charges payment keys
/// our clients use (the shared pool, or one a client is about to use) for
/// orders of its own. A charge under one of our keys that is not ours must
/// never be adopted by our payment, nor refunded by us.
#[derive(Clone, Debug)]
pub struct ElsewhereSpec {
    /// When, which key, how much.
    pub charges: Vec<(Duration, String, i64)>,
    pub journal: Journal,
}

/// The other merchant's host: one confirm per charge, straight to the gateway.
pub async fn elsewhere(spec: ElsewhereSpec) -> turmoil::Result {
    use tally_gateway::protocol::{self, ConfirmBody, IDEMPOTENCY_KEY_HEADER};
    let authorization = protocol::basic_authorization(crate::gateway::SECRET_KEY);
    let mut waited = Duration::ZERO;
    for (index, (at, payment_key, amount)) in spec.charges.iter().enumerate() {
        tokio::time::sleep(at.saturating_sub(waited)).await;
        waited = waited.max(*at);
        let order_id = format!("{FOREIGN_ORDER_PREFIX}{index}");
        let body = ConfirmBody { payment_key: payment_key.clone(), order_id: order_id.clone(), amount: *amount };
        let body = serde_json::to_vec(&body).expect("a confirm body serialises");
        let headers = [("authorization", authorization.as_str()), (IDEMPOTENCY_KEY_HEADER, order_id.as_str())];
        let gateway = crate::gateway::GATEWAY_HOST;
        let request = net::request("POST", gateway, protocol::CONFIRM_PATH, &headers, Some(body));
        let answer = match net::exchange(gateway, request, Duration::from_secs(1)).await {
            Ok(reply) => format!("{}", reply.status),
            Err(failure) => failure.to_string(),
        };
        spec.journal.event("elsewhere", format!("charged {payment_key} for {order_id} ({amount}): {answer}"));
    }
    Ok(())
}
