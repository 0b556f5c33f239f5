//! The operation table: each kind's request builder and what a client learns
//! from its success, the adversarial customer's schemes and scripts (issue
//! 10), and the choice of a client's next step.

use super::*;

pub(super) fn json(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialise")
}

/// A request with nothing special about it: no admin key, about no known
/// payment or order, sent at once.
fn request(kind: &'static str, method: &'static str, path: String, body: Option<Vec<u8>>) -> Planned {
    Planned {
        kind,
        method,
        path,
        keyed: body.is_some(),
        body,
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
        second_tab: None,
        beside: None,
        tab: false,
    }
}

/// A keyed POST.
pub(super) fn post(kind: &'static str, path: String, body: serde_json::Value) -> Planned {
    request(kind, "POST", path, Some(json(&body)))
}

/// An unkeyed GET.
pub(super) fn get(kind: &'static str, path: String) -> Planned {
    request(kind, "GET", path, None)
}

/// One of `len` known things, at random; `None` when there are none.
fn any(rng: &mut SimRng, len: usize) -> Option<usize> {
    (len > 0).then(|| rng.index(len))
}

impl Planned {
    /// The request acts on the client's `index`th payment.
    fn on_payment(mut self, index: usize) -> Planned {
        self.payment = Some(index);
        self
    }

    /// The request acts on the client's `index`th order.
    fn on_order(mut self, index: usize) -> Planned {
        self.order = Some(index);
        self
    }
}

pub(super) fn tagged(rng: &mut SimRng, max_units: u64, tag: i64) -> i64 {
    i64::try_from(rng.range(1, max_units)).expect("small") * TAG_SPACE + tag
}

pub(super) fn build_top_up(_: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    Some(post("top-up", "/v1/wallet/top-ups".into(), serde_json::json!({ "amount": tagged(rng, 40, tag) })))
}

/// A payment key for a new gateway payment: its own, or — for a client
/// that reuses keys, half the time (always in its opening) — one already
/// used: by one of its own payments, or from the pool every reusing client
/// and another merchant share.
pub(super) fn payment_key(state: &ClientState, rng: &mut SimRng, tag: i64) -> String {
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
pub(super) fn choose_payback(state: &ClientState, rng: &mut SimRng, body: &mut serde_json::Value, amount: i64) {
    if state.habits.choose_payback && rng.chance(150) {
        body["payback_amount"] = serde_json::json!(amount);
    }
}

pub(super) fn build_payment(state: &ClientState, gateway: bool, rng: &mut SimRng, tag: i64) -> Planned {
    let amount = tagged(rng, 12, tag);
    let mut body = serde_json::json!({ "amount": amount, "method": if gateway { "gateway" } else { "wallet" } });
    choose_payback(state, rng, &mut body, amount);
    let mut planned = post(if gateway { "pay-gateway" } else { "pay-wallet" }, "/v1/payments".into(), body);
    planned.payment_key = gateway.then(|| payment_key(state, rng, tag));
    planned
}

pub(super) fn build_pay_wallet(state: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    Some(build_payment(state, false, rng, tag))
}

pub(super) fn build_pay_gateway(state: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    Some(build_payment(state, true, rng, tag))
}

/// A gateway payment larger than the wallet is likely to hold: its
/// cashback then outweighs whatever the wallet has left after spending
/// everything (which earns its own cashback), so cancelling it must be
/// refused. The cashback opening's first step.
pub(super) fn build_pay_big(state: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    let mut planned = build_payment(state, true, rng, tag);
    let amount = i64::try_from(rng.range(30, 80)).expect("small") * TAG_SPACE + tag;
    planned.body = Some(json(&serde_json::json!({ "amount": amount, "method": "gateway" })));
    Some(planned)
}

/// A wallet payment of a good part of a daily limit, made just before a
/// UTC boundary to be confirmed just after it (see `build_confirm`).
pub(super) fn build_midnight_pay(_: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    let amount = i64::try_from(rng.range(4, 10)).expect("small") * TAG_SPACE + tag;
    Some(post("pay-wallet", "/v1/payments".into(), serde_json::json!({ "amount": amount, "method": "wallet" })))
}

/// Reads the wallet; a scheme's first step.
pub(super) fn read_wallet(scheme: Option<Scheme>) -> Planned {
    let mut planned = get("read-wallet", "/v1/wallet".into());
    // A read changes nothing: retried like any idempotent request.
    planned.idempotent = true;
    planned.scheme = scheme;
    planned
}

pub(super) fn build_read_wallet(_: &ClientState, _: &mut SimRng, _: i64) -> Option<Planned> {
    Some(read_wallet(None))
}

/// Starts spending the cashback of a done gateway payment with a payback,
/// to cancel that payment once the money is gone: mostly the newest (the
/// one an opening just paid), sometimes any.
pub(super) fn build_cashback(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
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
pub(super) fn build_near_max(state: &ClientState, _: &mut SimRng, _: i64) -> Option<Planned> {
    (state.habits.fill_to_max && state.max_balance.is_some()).then(|| read_wallet(Some(Scheme::FillToMax)))
}

/// The largest tagged amount up to `room` (zero whole units allowed).
pub(super) fn tagged_up_to(room: i64, tag: i64) -> Option<i64> {
    let units = room.checked_sub(tag)?.div_euclid(TAG_SPACE);
    let amount = units * TAG_SPACE + tag;
    (units >= 0 && amount > 0).then_some(amount)
}

/// Pays nearly the whole balance out of the wallet (a scripted step: the
/// payment is confirmed next).
pub(super) fn build_spend(state: &ClientState, _: &mut SimRng, tag: i64) -> Option<Planned> {
    let amount = tagged_up_to(state.balance?, tag)?;
    Some(post("pay-wallet", "/v1/payments".into(), serde_json::json!({ "amount": amount, "method": "wallet" })))
}

/// Tops the wallet up to just under its maximum: less than one whole unit
/// of room is left, which a payback may not fit in.
pub(super) fn build_fill(state: &ClientState, _: &mut SimRng, tag: i64) -> Option<Planned> {
    let amount = tagged_up_to(state.max_balance? - state.balance?, tag)?;
    Some(post("top-up", "/v1/wallet/top-ups".into(), serde_json::json!({ "amount": amount })))
}

/// A payment to act on: mostly one still waiting, sometimes any.
pub(super) fn choose(state: &ClientState, rng: &mut SimRng) -> Option<usize> {
    let newest = state.payments.len().checked_sub(1);
    if newest.is_some_and(|i| state.payments[i].status == "wait") && rng.chance(600) {
        return newest;
    }
    let waiting: Vec<usize> = (0..state.payments.len()).filter(|&i| state.payments[i].status == "wait").collect();
    if !waiting.is_empty() && rng.chance(750) {
        return Some(*rng.pick(&waiting));
    }
    any(rng, state.payments.len())
}

/// How often a client with the second-tab habit confirms a waiting gateway
/// payment from two tabs at once.
pub(super) const SECOND_TAB_PER_MILLE: u64 = 500;

pub(super) fn build_confirm(state: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    let index = match state.aim {
        Some(aim) => aim,
        None => choose(state, rng)?,
    };
    let known = &state.payments[index];
    let body =
        if known.gateway { serde_json::json!({ "payment_key": known.payment_key }) } else { serde_json::json!({}) };
    let mut planned = post("confirm", format!("/v1/payments/{}/confirm", known.id), body);
    planned.payment = Some(index);
    if state.habits.second_tab && known.gateway && known.status == "wait" && rng.chance(SECOND_TAB_PER_MILLE) {
        // A key of this operation's own: no other payment claims it.
        planned.second_tab = Some(format!("pk-{tag}-tab"));
    }
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
        // The last-moment payer: land within the TTL's last few
        // milliseconds (sent as early as its past races taught it, and a
        // little more), so the confirm's transaction is still open when the
        // TTL ends and a sweep begins. Too late is refused `order_expired`,
        // the race's other outcome, and it aims earlier next time.
        let left = expires_at.0 - state.clock.now().0;
        if (0..=RACE_WAIT_MAX_MS).contains(&left) {
            let early = i64::try_from(state.race_margin_ms() + rng.range(0, 20)).expect("small");
            planned.delay = Duration::from_millis(u64::try_from((left - early).max(0)).expect("not negative"));
            planned.races = true;
        }
    }
    Some(planned)
}

/// How often the last-moment payer, with no order left to pay, places the
/// next order to race with instead of drawing another operation.
pub(super) const NEXT_RACE_PER_MILLE: u64 = 800;

/// The longest a last-moment payer waits for an order's TTL.
pub(super) const RACE_WAIT_MAX_MS: i64 = 1_500;

pub(super) fn build_cancel(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    // Any payment, also one already cancelled: cancelling twice must refund once.
    let index = match state.aim {
        Some(aim) => aim,
        None => any(rng, state.payments.len())?,
    };
    let path = format!("/v1/payments/{}/cancel", state.payments[index].id);
    Some(post("cancel", path, serde_json::json!({})).on_payment(index))
}

pub(super) fn build_read(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let index = any(rng, state.payments.len())?;
    Some(get("read-payment", format!("/v1/payments/{}", state.payments[index].id)).on_payment(index))
}

/// One or two lines of scarce products. Two lines are the same two products
/// in either order, so two clients may ask for them in opposite orders: the
/// service must lock them in one global order.
pub(super) fn build_order_products(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let products = &state.catalogue.products;
    let first = any(rng, products.len())?;
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
        // Arrive just before a whole second of the servers' uptime (sent a
        // one-way trip and a little more ahead of it): the order's TTL then
        // ends just before a sweep, and the sweep lists it while a confirm
        // sent at the last moment may still be in its transaction.
        let phase = u64::try_from(state.clock.elapsed().as_millis() % 1000).expect("below 1000");
        let target = 1000 - (state.one_way_ms() + rng.range(0, 20)).min(500);
        planned.delay = Duration::from_millis((target + 1000 - phase) % 1000);
    }
    Some(planned)
}

pub(super) fn build_join_queue(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
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
pub(super) fn build_poll_token(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
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
pub(super) fn build_order_seats(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
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
pub(super) fn choose_order(state: &ClientState, rng: &mut SimRng, wanted: &[&str]) -> Option<usize> {
    let fitting: Vec<usize> =
        (0..state.orders.len()).filter(|&i| wanted.contains(&state.orders[i].status.as_str())).collect();
    if !fitting.is_empty() && rng.chance(850) {
        return Some(*rng.pick(&fitting));
    }
    (!state.orders.is_empty() && rng.chance(300)).then(|| rng.index(state.orders.len()))
}

pub(super) fn build_pay_order(state: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
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

pub(super) fn build_cancel_order(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let index = choose_order(state, rng, &["pending_payment", "paid"])?;
    let path = format!("/v1/orders/{}/cancel", state.orders[index].id);
    let mut planned = post("cancel-order", path, serde_json::json!({})).on_order(index);
    if state.habits.busy_tabs {
        planned.beside = beside(state, rng, index).map(Box::new);
    }
    Some(planned)
}

/// The busy-tabs habit: another of the client's payments (not the order's),
/// confirmed while waiting from the wallet, cancelled otherwise. Its answer
/// is not learned, as a forgotten tab's is not.
fn beside(state: &ClientState, rng: &mut SimRng, order: usize) -> Option<Planned> {
    let others: Vec<usize> = (0..state.payments.len()).filter(|&i| state.payments[i].order != Some(order)).collect();
    let index = *others.get(rng.index(others.len().max(1)))?;
    let known = &state.payments[index];
    let planned = if known.status == "wait" && !known.gateway {
        post("confirm", format!("/v1/payments/{}/confirm", known.id), serde_json::json!({}))
    } else {
        post("cancel", format!("/v1/payments/{}/cancel", known.id), serde_json::json!({}))
    };
    Some(planned.on_payment(index))
}

pub(super) fn build_read_order(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let index = any(rng, state.orders.len())?;
    Some(get("read-order", format!("/v1/orders/{}", state.orders[index].id)).on_order(index))
}

/// The admin restocks a product by one unit (keyed, retried like any move).
pub(super) fn build_restock(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let products = &state.catalogue.products;
    let product = &products[any(rng, products.len())?];
    let mut planned = post(
        "restock",
        format!("/v1/products/{}/restock", product.id),
        serde_json::json!({ "quantity": RESTOCK_QUANTITY }),
    );
    planned.admin = true;
    Some(planned)
}

pub(super) fn body_field(reply: &Reply, field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    value.get(field).and_then(|v| v.as_str()).map(str::to_owned)
}

pub(super) fn body_integer(reply: &Reply, field: &str) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    value.get(field).and_then(serde_json::Value::as_i64)
}

pub(super) fn learn_nothing(_: &mut ClientState, _: &Planned, _: &Reply) {}

pub(super) fn learn_payment(state: &mut ClientState, planned: &Planned, reply: &Reply) {
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

pub(super) fn learn_wallet(state: &mut ClientState, planned: &Planned, reply: &Reply) {
    state.balance = body_integer(reply, "balance");
    match planned.scheme {
        Some(Scheme::SpendCashback(payment)) => state.script = [("spend", None), ("cancel", Some(payment))].into(),
        Some(Scheme::FillToMax) => state.script = [("fill", None), ("pay-gateway", None)].into(),
        None => {}
    }
}

pub(super) fn learn_status(state: &mut ClientState, planned: &Planned, reply: &Reply) {
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

pub(super) fn learn_order(state: &mut ClientState, planned: &Planned, reply: &Reply) {
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

pub(super) fn learn_order_status(state: &mut ClientState, planned: &Planned, reply: &Reply) {
    if let (Some(index), Some(status)) = (planned.order, body_field(reply, "status")) {
        state.orders[index].status = status;
    }
}

pub(super) fn learn_token(state: &mut ClientState, _: &Planned, reply: &Reply) {
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
/// book seat after seat (the token's answer scripts the bookings); create a
/// wallet payment and an order, and cancel the order with the payment's
/// confirm beside it (`busy_tabs`).
pub(super) fn opening(state: &ClientState, rng: &mut SimRng) -> VecDeque<(&'static str, Option<usize>)> {
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
    if habits.busy_tabs {
        // A waiting wallet payment, then an order cancelled with that
        // payment's confirm beside it.
        schemes.push(&["pay-wallet", "order-products", "cancel-order"]);
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
pub fn next_op(state: &mut ClientState, rng: &mut SimRng, op: usize, tag: i64) -> (&'static OpKind, Planned) {
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
    // The last-moment payer starts its next race when it has no order to
    // pay: mostly, as racing is what it is there for (each race is one
    // more chance of a confirm still open when a sweep lists its order).
    if state.racer && !state.orders.iter().any(|o| o.status == "pending_payment") && rng.chance(NEXT_RACE_PER_MILLE) {
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
