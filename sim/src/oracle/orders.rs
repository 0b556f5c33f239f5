//! The oracle's inventory checks: orders (paid stays paid, seats sold once,
//! nothing unpaid left past its TTL), restocks, queue admission over time,
//! and seats per queue token (invariants 6 to 8).

use super::*;

/// Invariant 8 over time, on seeds whose servers' clocks lag: at every
/// promotion, at most K tokens' activity covers that instant — counting a
/// token only if its activity outlasts the instant by more than the largest
/// lag (two tokens that never overlapped can look as if they did by that
/// much, when one was stamped by a lagging server).
pub(super) fn queues_over_time(snapshot: &Snapshot, skew_max_ms: i64, found: &mut Vec<Violation>) {
    for event in &snapshot.events {
        let intervals: Vec<(Timestamp, Timestamp)> = snapshot
            .tokens
            .iter()
            .filter(|t| t.event == event.id)
            .filter_map(|t| Some((t.activated_at?, t.active_until()?)))
            .collect();
        let limit = event.active_limit as usize;
        for (start, _) in &intervals {
            let covering =
                intervals.iter().filter(|(from, until)| from <= start && start.0 + skew_max_ms < until.0).count();
            if covering > limit {
                found.push(Violation::new(
                    "8. at most K active queue tokens per event",
                    "K active tokens at every promotion (server clocks' lag allowed for)",
                    format!("event {}: {covering} tokens active at {start:?}, limit {limit}", event.id),
                ));
                break;
            }
        }
    }
}

/// Orders, from the history (the core's checker already judged the final
/// store: stock conserved, a seat in at most one live order, an order paid
/// exactly when one payment is done, at most K active tokens):
///
/// - an order acknowledged paid (a 200 `done` confirm of its payment, or a
///   read showing `paid`) ends paid — never expired, never pending again,
///   and cancelled only if a cancel of it (of the order, or of its payment)
///   was sent. Sent, not acknowledged: a cancel whose answer was lost may
///   have taken effect.
/// - a seat is sold to at most one of the orders acknowledged paid and never
///   cancelled;
/// - each restock takes effect at most once, and an acknowledged one does;
/// - once the sweepers ran, no unpaid order is left past its TTL.
pub(super) fn orders(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let snapshot = evidence.snapshot;
    let orders: BTreeMap<String, &Order> = snapshot.orders.iter().map(|o| (o.id.to_string(), o)).collect();
    let paying: BTreeMap<String, OrderId> =
        snapshot.payments.iter().filter_map(|p| Some((p.id.to_string(), p.order?))).collect();
    let mut cancel_sent: BTreeSet<String> = BTreeSet::new();
    for exchange in evidence.exchanges {
        let order = match exchange.kind {
            "cancel-order" => path_id(&exchange.path, "/v1/orders/").map(str::to_owned),
            "cancel" => path_id(&exchange.path, "/v1/payments/").and_then(|p| paying.get(p)).map(ToString::to_string),
            _ => None,
        };
        cancel_sent.extend(order);
    }
    let mut paid: BTreeMap<String, String> = BTreeMap::new();
    for (exchange, status, body, _) in replies(evidence) {
        let said = || field(body, "status");
        let order = match (exchange.kind, status) {
            ("confirm", 200) if said().as_deref() == Some("done") => field(body, "order_id"),
            ("read-order", 200) if said().as_deref() == Some("paid") => field(body, "id"),
            _ => None,
        };
        if let Some(order) = order {
            paid.entry(order).or_insert_with(|| {
                format!(
                    "{} {} (client {}) answered 200 {}",
                    exchange.kind,
                    exchange.path,
                    exchange.client + 1,
                    said().unwrap_or_default()
                )
            });
        }
    }
    let mut sold: BTreeMap<SeatId, Vec<&str>> = BTreeMap::new();
    for (id, how) in &paid {
        let Some(order) = orders.get(id) else {
            found.push(Violation::new(
                INV_DURABLE,
                "every 2xx is in the final store",
                format!("order {id} was acknowledged paid ({how}) but the final store does not have it"),
            ));
            continue;
        };
        let cancelled = cancel_sent.contains(id);
        let kept = match order.status {
            OrderStatus::Paid => true,
            OrderStatus::Cancelled => cancelled,
            OrderStatus::PendingPayment | OrderStatus::Expired => false,
        };
        if !kept {
            found.push(Violation::new(
                INV_ORDERS,
                "an order acknowledged paid stays paid unless a cancel of it was sent",
                format!(
                    "order {id} was acknowledged paid ({how}) but ends {}{}",
                    order.status.as_str(),
                    if cancelled { "" } else { " with no cancel of it ever sent" }
                ),
            ));
        }
        if !cancelled {
            for seat in &order.seats {
                sold.entry(seat.seat).or_default().push(id);
            }
        }
    }
    for (seat, buyers) in sold {
        if buyers.len() > 1 {
            found.push(Violation::new(
                INV_SEATS,
                "a seat is sold at most once (orders acknowledged paid, never cancelled)",
                format!("seat {seat} was sold to {} orders: {}", buyers.len(), buyers.join(", ")),
            ));
        }
    }
    restocks(evidence, found);
    for order in &snapshot.orders {
        if awaits_sweep(order, evidence.now) {
            found.push(Violation::new(
                INV_RECOVERED,
                "no unpaid order is left past its TTL once the sweepers ran",
                format!(
                    "order {} is still pending {}ms past its TTL, holding its stock and seats",
                    order.id,
                    evidence.now.0 - order.expires_at.0
                ),
            ));
        }
    }
}

/// Restocks (the admin's keyed requests) against what each product was
/// ever stocked: at most the keys sent, at least the keys acknowledged.
pub(super) fn restocks(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let mut sent: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut acknowledged: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for exchange in evidence.exchanges.iter().filter(|e| e.kind == "restock") {
        let (Some(product), Some(key)) = (path_id(&exchange.path, "/v1/products/"), exchange.key.as_deref()) else {
            continue;
        };
        sent.entry(product).or_default().insert(key);
        if matches!(exchange.answer, Answer::Reply { status: 200, .. }) {
            acknowledged.entry(product).or_default().insert(key);
        }
    }
    for product in &evidence.catalogue.products {
        let Some(stored) = evidence.snapshot.products.iter().find(|p| p.id.to_string() == product.id) else {
            found.push(Violation::new(
                INV_DURABLE,
                "every 2xx is in the final store",
                format!("product {} is gone", product.id),
            ));
            continue;
        };
        let restocked = stored.stocked.saturating_sub(product.initial);
        let count = |keys: &BTreeMap<&str, BTreeSet<&str>>| {
            keys.get(product.id.as_str()).map_or(0, |k| k.len() as u64) * RESTOCK_QUANTITY
        };
        let (most, least) = (count(&sent), count(&acknowledged));
        if stored.stocked < product.initial || restocked > most {
            found.push(Violation::new(
                INV_IDEMPOTENCY,
                "each restock takes effect at most once",
                format!(
                    "product {} was stocked {} then restocked by {} unit(s) in {} keyed request(s) of {RESTOCK_QUANTITY}, but has {} ever stocked",
                    product.id,
                    product.initial,
                    most,
                    most / RESTOCK_QUANTITY,
                    stored.stocked
                ),
            ));
        } else if restocked < least {
            found.push(Violation::new(
                INV_DURABLE,
                "every 2xx is in the final store",
                format!(
                    "product {}: {least} unit(s) of restock were acknowledged but only {restocked} are in the store",
                    product.id
                ),
            ));
        }
    }
}

/// Seat hoarding, over the whole run rather than the final store (the
/// core's checker sees the tokens' counts at the end, after orders lapsed):
/// when an order was booked with a token, the token's live orders — those
/// booked before it (ids are drawn under the event's queue lock, so they
/// order one token's bookings) that had not ended by then — and the new one
/// hold at most the event's `max_seats_per_token`. Timestamps of two servers
/// compare only beyond their largest clock lag.
pub(super) fn tokens_never_hoard(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let limit = u64::from(evidence.catalogue.max_seats_per_token);
    let booked: Vec<&Order> = evidence.snapshot.orders.iter().filter(|o| o.token.is_some()).collect();
    for order in &booked {
        let held: u64 = booked
            .iter()
            .filter(|o| o.token == order.token && o.id < order.id)
            .filter(|o| holds_after(o, order.created_at, evidence.skew_max_ms))
            .map(|o| o.seats.len() as u64)
            .sum::<u64>()
            + order.seats.len() as u64;
        if held > limit {
            found.push(Violation::new(
                INV_SEAT_LIMIT,
                "a token's live orders never hold more than max_seats_per_token",
                format!(
                    "order {} took token {:?} to {held} seats held, above {limit} per token",
                    order.id,
                    order.token.map(|t| t.to_string())
                ),
            ));
        }
    }
}

/// `409 seat_limit_reached` only when the token's live orders hold the
/// limit: from the key's first attempt to the refusal's answer, the most the
/// token's orders could have held, plus the seats asked for, passes it.
pub(super) fn seat_limit_refusals_are_right(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let limit = evidence.catalogue.max_seats_per_token as usize;
    let skew = evidence.skew_max_ms;
    let mut first_sent: BTreeMap<(UserId, &str), Timestamp> = BTreeMap::new();
    for exchange in evidence.exchanges {
        if let Some(key) = exchange.key.as_deref() {
            let first = first_sent.entry((exchange.user, key)).or_insert(exchange.sent_at);
            *first = (*first).min(exchange.sent_at);
        }
    }
    for (exchange, status, body, _) in replies(evidence) {
        if status != 409 || field(body, "code").as_deref() != Some("seat_limit_reached") {
            continue;
        }
        let (Some(token), Some(key)) = (exchange.queue_token.as_deref(), exchange.key.as_deref()) else { continue };
        let asked = exchange
            .body
            .as_deref()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v.get("seats").and_then(|s| s.as_array()).map(Vec::len))
            .unwrap_or(0);
        let from = first_sent.get(&(exchange.user, key)).copied().unwrap_or(exchange.sent_at);
        let most: usize = evidence
            .snapshot
            .orders
            .iter()
            .filter(|o| o.token.is_some_and(|t| t.to_string() == token))
            .filter(|o| o.created_at.0 <= exchange.ended_at.0 + skew && holds_after(o, from, -skew))
            .map(|o| o.seats.len())
            .sum();
        if most + asked <= limit {
            found.push(Violation::new(
                INV_SEAT_LIMIT,
                "409 seat_limit_reached only when the token's live orders hold the limit",
                format!(
                    "order of {asked} seat(s) with token {token} (key {key}) was refused seat_limit_reached, but its orders held at most {most} of {limit}"
                ),
            ));
        }
    }
}
