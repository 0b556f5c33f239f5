//! The oracle: what must hold after every seed, once the faults are healed,
//! the network is quiet and the completer has run.
//!
//! It reads four things: the final store (through the core's invariant
//! checker, the same one every other proof uses — it covers stock, seats,
//! orders and queues, invariants 5 to 8, payback holds, payment-key
//! uniqueness, monotonic spending windows and seats per token, on the final
//! store), the clients' history of requests and answers, the confirms our
//! servers sent (counted by the sender), and the fake gateway's own books,
//! which are judged against ours per payment key *and* per order id. Each
//! check names the SPEC.md invariant it protects.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tally_core::check::{self, Snapshot};
use tally_core::idempotency::{IdemScope, IdemState};
use tally_core::ids::{OrderId, SeatId, UserId};
use tally_core::ledger::TransferKind;
use tally_core::money::{Amount, Money};
use tally_core::order::{Order, OrderStatus};
use tally_core::payment::{Method, Payment, PaymentStatus, payback_of};
use tally_core::time::Timestamp;
use tally_gateway::FakeGateway;
use tally_gateway::protocol::{STATUS_CANCELED, STATUS_DONE};

use crate::catalogue::Catalogue;
use crate::journal::{Answer, Exchange};
use crate::workload::{FOREIGN_ORDER_PREFIX, RESTOCK_QUANTITY, TAG_SPACE, names_payback};

pub const INV_CHARGED_ONCE: &str = "1. a payment is charged at most once (a gateway confirm is sent at most once)";
pub const INV_IDEMPOTENCY: &str = "2. one idempotency key has at most one effect; a replay returns the first response";
pub const INV_DURABLE: &str = "durability: an acknowledged success survives every crash";
pub const INV_RECOVERED: &str = "recovery: nothing is left half-done once the completer has run";
pub const INV_ORDERS: &str = "7. an order is paid exactly when it has one done payment, never both paid and expired";
pub const INV_SEATS: &str = "6. a seat is held or sold by at most one order at a time";
pub const INV_NO_500: &str = "no request ends in 500 (a constraint fired or a handler panicked)";
pub const INV_DETERMINISM: &str = "determinism: a seed fully determines the run";
pub const INV_LIVENESS: &str = "liveness: every client finishes within the simulation's time limit";
pub const INV_KEY_BOUND: &str =
    "a gateway payment key belongs to one payment, forever (a charge is adopted only for its order id)";
pub const INV_PAYBACK: &str = "the payback is the merchant's policy, never the customer's choice";
pub const INV_SEAT_LIMIT: &str = "one queue token holds at most its event's max_seats_per_token seats";

/// One broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant, as SPEC.md numbers or names it.
    pub invariant: String,
    /// Which check saw it.
    pub check: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: &str, check: &'static str, detail: String) -> Violation {
        Violation { invariant: invariant.to_owned(), check, detail }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.invariant, self.check, self.detail)
    }
}

/// What the oracle reads.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub snapshot: &'a Snapshot,
    pub exchanges: &'a [Exchange],
    pub gateway: &'a FakeGateway,
    /// What the run sold, with each product's initial stock.
    pub catalogue: &'a Catalogue,
    /// The service's clock when the store was read.
    pub now: Timestamp,
    /// Confirms our servers sent, per order id and per payment key.
    pub confirms_by_order: &'a BTreeMap<String, u64>,
    pub confirms_by_key: &'a BTreeMap<String, u64>,
    /// Confirms another merchant sent to the gateway, per payment key.
    pub foreign_confirms: &'a BTreeMap<String, u64>,
    /// The most a server's clock lags the service's: timestamps of two
    /// servers compare only beyond it.
    pub skew_max_ms: i64,
}

/// Every violation the evidence shows.
pub fn judge(evidence: &Evidence<'_>) -> Vec<Violation> {
    let mut found = Vec::new();
    core_invariants(evidence, &mut found);
    no_server_errors(evidence, &mut found);
    acknowledged_successes_are_durable(evidence, &mut found);
    responses_for_a_key_agree(evidence, &mut found);
    one_effect_per_key(evidence, &mut found);
    keys_not_forgotten_while_live(evidence, &mut found);
    one_gateway_confirm_per_payment(evidence, &mut found);
    gateway_agrees_with_store(evidence, &mut found);
    nothing_left_in_flight(evidence, &mut found);
    key_refusals_are_right(evidence, &mut found);
    paybacks_follow_the_policy(evidence, &mut found);
    payback_amount_is_refused(evidence, &mut found);
    orders(evidence, &mut found);
    order_payments_once_per_key(evidence, &mut found);
    tokens_never_hoard(evidence, &mut found);
    seat_limit_refusals_are_right(evidence, &mut found);
    found
}

fn core_invariants(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let skewed = evidence.skew_max_ms > 0;
    for violation in check::check(evidence.snapshot) {
        // The checker orders queue tokens' activity by their timestamps,
        // which servers whose clocks lag stamp up to the lag early: on such
        // seeds that part of invariant 8 is judged below, with the lag
        // allowed for.
        if skewed
            && violation.invariant == check::Invariant::QueueWithinLimit
            && violation.detail.contains("tokens active at")
        {
            continue;
        }
        let invariant = format!("{}. {}", violation.invariant as u8, violation.invariant.name());
        found.push(Violation { invariant, check: "the core's invariant checker", detail: violation.detail });
    }
    if skewed {
        queues_over_time(evidence, found);
    }
}

/// Invariant 8 over time, on seeds whose servers' clocks lag: at every
/// promotion, at most K tokens' activity covers that instant — counting a
/// token only if its activity outlasts the instant by more than the largest
/// lag (two tokens that never overlapped can look as if they did by that
/// much, when one was stamped by a lagging server).
fn queues_over_time(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let snapshot = evidence.snapshot;
    for event in &snapshot.events {
        let intervals: Vec<(Timestamp, Timestamp)> = snapshot
            .tokens
            .iter()
            .filter(|t| t.event == event.id)
            .filter_map(|t| Some((t.activated_at?, t.active_until()?)))
            .collect();
        let limit = event.active_limit as usize;
        for (start, _) in &intervals {
            let covering = intervals
                .iter()
                .filter(|(from, until)| from <= start && start.0 + evidence.skew_max_ms < until.0)
                .count();
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

fn replies<'e>(evidence: &Evidence<'e>) -> impl Iterator<Item = (&'e Exchange, u16, &'e [u8], bool)> {
    evidence.exchanges.iter().filter_map(|e| match &e.answer {
        Answer::Reply { status, body, replayed } => Some((e, *status, body.as_slice(), *replayed)),
        Answer::Failed(_) => None,
    })
}

fn field(body: &[u8], name: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get(name).and_then(|v| v.as_str()).map(str::to_owned)
}

fn no_server_errors(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    for (exchange, status, body, _) in replies(evidence) {
        if status == 500 {
            found.push(Violation::new(
                INV_NO_500,
                "no 500 answers",
                format!(
                    "{} {:?} on {} answered 500: {}",
                    exchange.kind,
                    exchange.key,
                    exchange.host,
                    String::from_utf8_lossy(body)
                ),
            ));
        }
    }
}

fn acknowledged_successes_are_durable(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let snapshot = evidence.snapshot;
    let transfers: BTreeSet<String> = snapshot.transfers.iter().map(|t| t.id.to_string()).collect();
    let payments: BTreeMap<String, PaymentStatus> =
        snapshot.payments.iter().map(|p| (p.id.to_string(), p.status)).collect();
    let orders: BTreeMap<String, OrderStatus> = snapshot.orders.iter().map(|o| (o.id.to_string(), o.status)).collect();
    for (exchange, status, body, _) in replies(evidence) {
        if !(200..300).contains(&status) {
            continue;
        }
        let lost = match exchange.kind {
            "top-up" => field(body, "entry_id").is_none_or(|id| !transfers.contains(&id)),
            "pay-wallet" | "pay-gateway" | "pay-order" => {
                field(body, "id").is_none_or(|id| !payments.contains_key(&id))
            }
            "order-products" | "order-seats" => field(body, "id").is_none_or(|id| !orders.contains_key(&id)),
            "cancel-order" => field(body, "id").and_then(|id| orders.get(&id)) != Some(&OrderStatus::Cancelled),
            "confirm" | "cancel" => {
                let id = field(body, "id");
                let now = id.as_ref().and_then(|id| payments.get(id)).copied();
                let said = field(body, "status");
                match (said.as_deref(), now) {
                    (_, None) => true,
                    (Some("done"), Some(now)) => {
                        !matches!(now, PaymentStatus::Done | PaymentStatus::Cancelling | PaymentStatus::Cancelled)
                    }
                    (Some("cancelled"), Some(now)) => now != PaymentStatus::Cancelled,
                    _ => false,
                }
            }
            _ => false,
        };
        if lost {
            found.push(Violation::new(
                INV_DURABLE,
                "every 2xx is in the final store",
                format!(
                    "{} {:?} (client {}) was answered {status} {} but the final store does not show it",
                    exchange.kind,
                    exchange.key,
                    exchange.client + 1,
                    String::from_utf8_lossy(body)
                ),
            ));
        }
    }
}

/// Answers that are not the key's stored response and may differ: the key
/// was busy, the server could not answer, or the request was refused before
/// it ran (400, 401, 403: none is stored — a seat order refused 403 while its
/// token was waiting may succeed with the same key once it is active).
fn is_transient(status: u16, body: &[u8]) -> bool {
    status >= 500
        || status == 429
        || matches!(status, 400 | 401 | 403)
        || (status == 409 && field(body, "code").as_deref() == Some("idempotency_key_in_use"))
}

fn responses_for_a_key_agree(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let mut first: BTreeMap<(UserId, &str), (u16, &[u8], &Exchange)> = BTreeMap::new();
    for (exchange, status, body, _) in replies(evidence) {
        let Some(key) = exchange.key.as_deref() else { continue };
        if is_transient(status, body) {
            continue;
        }
        match first.get(&(exchange.user, key)) {
            None => {
                first.insert((exchange.user, key), (status, body, exchange));
            }
            Some((first_status, first_body, _)) if (*first_status, *first_body) == (status, body) => {}
            Some((first_status, first_body, _)) => found.push(Violation::new(
                INV_IDEMPOTENCY,
                "all answers for one key agree",
                format!(
                    "key {key:?}: answered {first_status} {} and later {status} {}",
                    String::from_utf8_lossy(first_body),
                    String::from_utf8_lossy(body)
                ),
            )),
        }
    }
}

fn one_effect_per_key(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let tag_key = |amount: i64| {
        let tag = amount % TAG_SPACE;
        format!("c{}-o{}", tag / 1000 + 1, tag % 1000)
    };
    let mut top_ups: BTreeMap<(UserId, i64), usize> = BTreeMap::new();
    for transfer in &evidence.snapshot.transfers {
        if let (TransferKind::TopUp, Some(side)) = (transfer.kind, transfer.wallet) {
            *top_ups.entry((side.user, transfer.amount.minor_units())).or_default() += 1;
        }
    }
    for ((user, amount), count) in top_ups {
        if count > 1 {
            found.push(Violation::new(
                INV_IDEMPOTENCY,
                "each request takes effect at most once (amount tags)",
                format!("top-up {:?} of {amount} booked {count} times on wallet {user}", tag_key(amount)),
            ));
        }
    }
    // A payment of an amount carries its tag in the amount; one for an
    // order (its amount is the order's total) is judged by
    // `order_payments_once_per_key`.
    let mut payments: BTreeMap<(UserId, i64), usize> = BTreeMap::new();
    for payment in evidence.snapshot.payments.iter().filter(|p| p.order.is_none()) {
        *payments.entry((payment.user, payment.amount.minor_units())).or_default() += 1;
    }
    for ((user, tagged), count) in payments {
        if count > 1 {
            found.push(Violation::new(
                INV_IDEMPOTENCY,
                "each request takes effect at most once (amount tags)",
                format!("payment request {:?} ({tagged}) created {count} payments for user {user}", tag_key(tagged)),
            ));
        }
    }
}

/// An order's payments carry no tag (their amount is the order's total, their
/// payback the merchant's policy), so they are counted against the keys
/// that asked for one: every payment of an order is named by a 2xx answer
/// to a key of it, or is the effect of a key that never got one (its answer
/// was lost) — at most one each. One key taking effect twice leaves a
/// payment that no answer names and no unanswered key explains.
fn order_payments_once_per_key(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let mut keys: BTreeMap<String, BTreeSet<(UserId, &str)>> = BTreeMap::new();
    let mut answered: BTreeMap<String, BTreeSet<(UserId, &str)>> = BTreeMap::new();
    let mut named: BTreeSet<String> = BTreeSet::new();
    for exchange in evidence.exchanges.iter().filter(|e| e.kind == "pay-order") {
        let (Some(key), Some(order)) = (exchange.key.as_deref(), request_field(exchange, "order_id")) else {
            continue;
        };
        keys.entry(order.clone()).or_default().insert((exchange.user, key));
        if let Answer::Reply { status: 200..=299, body, .. } = &exchange.answer {
            answered.entry(order).or_default().insert((exchange.user, key));
            named.extend(field(body, "id"));
        }
    }
    let mut unnamed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for payment in &evidence.snapshot.payments {
        let Some(order) = payment.order else { continue };
        if !named.contains(&payment.id.to_string()) {
            unnamed.entry(order.to_string()).or_default().push(payment.id.to_string());
        }
    }
    for (order, payments) in unnamed {
        let sent = keys.get(&order).map_or(0, BTreeSet::len);
        let unanswered = sent - answered.get(&order).map_or(0, BTreeSet::len);
        if payments.len() > unanswered {
            found.push(Violation::new(
                INV_IDEMPOTENCY,
                "each request takes effect at most once (order payments against their keys)",
                format!(
                    "order {order} has {} payment(s) no answer named ({}) but only {unanswered} of its {sent} payment key(s) went unanswered",
                    payments.len(),
                    payments.join(", ")
                ),
            ));
        }
    }
}

/// An effect booked under a key's admission is answered by that admission's
/// record for the key's whole life: a newer record for the same key,
/// created while the effect's admission was still live, means the key was
/// forgotten and its request ran again.
fn keys_not_forgotten_while_live(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let mut admissions: BTreeMap<&IdemScope, BTreeSet<Timestamp>> = BTreeMap::new();
    for transfer in &evidence.snapshot.transfers {
        if let Some(origin) = &transfer.origin {
            admissions.entry(&origin.scope).or_default().insert(origin.expires_at);
        }
    }
    for record in &evidence.snapshot.idempotency {
        let Some(expiries) = admissions.get(&record.scope) else { continue };
        for expires_at in expiries {
            if *expires_at != record.expires_at && record.created_at < *expires_at {
                found.push(Violation::new(
                    INV_IDEMPOTENCY,
                    "a key is never forgotten while live",
                    format!(
                        "key {:?} of user {}: an effect was booked under the admission expiring at {}, but the key was admitted again at {} (record now {})",
                        record.scope.key.as_str(),
                        record.scope.user,
                        expires_at.0,
                        record.created_at.0,
                        match &record.state {
                            IdemState::Completed { response, .. } => format!(
                                "completed {} {}",
                                response.status,
                                String::from_utf8_lossy(&response.body)
                            ),
                            in_flight => format!("{in_flight:?}"),
                        }
                    ),
                ));
            }
        }
    }
}

/// A field of an exchange's request body.
fn request_field(exchange: &Exchange, name: &str) -> Option<String> {
    field(exchange.body.as_deref()?, name)
}

/// Confirms are counted where they are *sent* (our servers' gateway client,
/// per order id and per payment key) and where they arrive (the gateway's
/// count, less the other merchant's): a confirm lost on its way, or one sent
/// with a key another payment claimed, is caught by the sender's count.
fn one_gateway_confirm_per_payment(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    for (order_id, sent) in evidence.confirms_by_order {
        if *sent > 1 {
            found.push(Violation::new(
                INV_CHARGED_ONCE,
                "at most one gateway confirm sent per payment (our servers' count)",
                format!("our servers sent {sent} confirms for payment {order_id}"),
            ));
        }
    }
    for (payment_key, sent) in evidence.confirms_by_key {
        if *sent > 1 {
            found.push(Violation::new(
                INV_KEY_BOUND,
                "at most one gateway confirm sent per payment key (our servers' count)",
                format!("our servers sent {sent} confirms with payment key {payment_key}"),
            ));
        }
    }
    for (payment_key, stats) in evidence.gateway.stats().payments {
        let foreign = evidence.foreign_confirms.get(&payment_key).copied().unwrap_or(0);
        let ours = stats.confirm_requests.saturating_sub(foreign);
        if ours > 1 {
            found.push(Violation::new(
                INV_CHARGED_ONCE,
                "at most one gateway confirm per payment (gateway's count)",
                format!("the gateway received {ours} confirms of ours for {payment_key}"),
            ));
        }
    }
}

/// The gateway's books against ours, per payment key and per order id.
///
/// From the gateway's side: every charge names, as its order id, one of our
/// gateway payments (or the other merchant's order), was made under that
/// payment's own key, and agrees with its status — `done`: charged that
/// amount and not refunded; `cancelled` or `failed`: refunded (a failed
/// payment's charge is one of another amount, whose refund was owed). So
/// every refund at the gateway belongs to a payment we record as cancelled
/// or failed, and the other merchant's charges are never refunded by us.
///
/// From ours: a `done` payment (and a `cancelled` one that was charged) has
/// its charge at the gateway, under its key, for its order id. A charge
/// under its key for another order id is somebody else's and is never ours.
fn gateway_agrees_with_store(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let books = |check: &'static str, detail: String| Violation::new(INV_CHARGED_ONCE, check, detail);
    let ours: BTreeMap<String, &Payment> =
        evidence.snapshot.payments.iter().map(|p| (tally_core::gateway::order_id(p.id), p)).collect();
    for (payment_key, stats) in evidence.gateway.stats().payments {
        if stats.confirm_effects == 0 {
            continue;
        }
        let Some(charge) = evidence.gateway.payment(&payment_key) else { continue };
        if charge.order_id.starts_with(FOREIGN_ORDER_PREFIX) {
            if charge.status == STATUS_CANCELED {
                found.push(Violation::new(
                    INV_KEY_BOUND,
                    "a charge that is not ours is never refunded by us",
                    format!(
                        "{payment_key} was charged for the other merchant's {} and is now refunded",
                        charge.order_id
                    ),
                ));
            }
            continue;
        }
        let Some(payment) = ours.get(&charge.order_id) else {
            found.push(books(
                "every charge at the gateway belongs to one of our payments",
                format!(
                    "the gateway charged {payment_key} for order id {:?}, which is no payment here",
                    charge.order_id
                ),
            ));
            continue;
        };
        let key = payment.gateway.as_ref().map(|a| a.payment_key.as_str());
        if payment.method != Method::Gateway || key != Some(payment_key.as_str()) {
            found.push(Violation::new(
                INV_KEY_BOUND,
                "every charge was made under its payment's own key",
                format!(
                    "the gateway charged {payment_key} for payment {} ({:?}), whose key is {key:?}",
                    payment.id, payment.method
                ),
            ));
            continue;
        }
        let (refunded, amount) = (charge.status == STATUS_CANCELED, charge.total_amount);
        let agrees = match payment.status {
            PaymentStatus::Done => charge.status == STATUS_DONE && amount == payment.amount.minor_units(),
            PaymentStatus::Cancelled => refunded && amount == payment.amount.minor_units(),
            PaymentStatus::Failed => refunded,
            // Nothing was sent for a waiting payment.
            PaymentStatus::Wait => false,
            // Unresolved: reported by `nothing_left_in_flight`.
            PaymentStatus::Confirming | PaymentStatus::Cancelling | PaymentStatus::Refunding => true,
        };
        if !agrees {
            found.push(books(
                "every charge agrees with its payment's status",
                format!(
                    "payment {} ({}) is {} here but its charge {payment_key} is {} for {amount} at the gateway",
                    payment.id,
                    payment.amount.minor_units(),
                    payment.status.as_str(),
                    charge.status
                ),
            ));
        }
    }
    for payment in evidence.snapshot.payments.iter().filter(|p| p.method == Method::Gateway) {
        let Some(attempt) = &payment.gateway else { continue };
        let charged = matches!(payment.status, PaymentStatus::Done | PaymentStatus::Cancelled);
        if !charged {
            continue;
        }
        let charge = evidence.gateway.payment(&attempt.payment_key);
        let ours = charge.as_ref().filter(|c| c.order_id == tally_core::gateway::order_id(payment.id));
        if ours.is_none() {
            found.push(books(
                "every charged payment has its own charge at the gateway",
                format!(
                    "payment {} is {} here but the gateway holds {} under {}",
                    payment.id,
                    payment.status.as_str(),
                    charge.map_or("nothing".to_owned(), |c| format!("a charge for order id {:?}", c.order_id)),
                    attempt.payment_key
                ),
            ));
        }
    }
}

fn nothing_left_in_flight(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    for payment in &evidence.snapshot.payments {
        if payment.status.in_flight() {
            found.push(Violation::new(
                INV_RECOVERED,
                "no payment left confirming, cancelling or refunding after the completer ran",
                format!(
                    "payment {} is still {} (gateway attempt {:?})",
                    payment.id,
                    payment.status.as_str(),
                    payment.gateway
                ),
            ));
        }
    }
}

/// The id in `path` after `prefix` (`/v1/orders/{id}/cancel` → `{id}`).
fn path_id<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    path.strip_prefix(prefix)?.split('/').next()
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
fn orders(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
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
        if order.status == OrderStatus::PendingPayment && order.payment.is_none() && order.past_ttl(evidence.now) {
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
fn restocks(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
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

/// The payment id in a confirm's path.
fn confirmed_payment(exchange: &Exchange) -> Option<&str> {
    path_id(&exchange.path, "/v1/payments/")
}

/// Payment-key refusals, from the history against the final store (a key's
/// claim is forever, so the final store says who owns it):
///
/// - `409 payment_key_in_use` only when another payment claimed the key;
/// - a confirm answered 2xx never names a key another payment owns (the
///   workload confirms a payment always with the key it was created with).
fn key_refusals_are_right(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let owner: BTreeMap<&str, String> = evidence
        .snapshot
        .payments
        .iter()
        .filter_map(|p| Some((p.gateway.as_ref()?.payment_key.as_str(), p.id.to_string())))
        .collect();
    for (exchange, status, body, _) in replies(evidence) {
        if exchange.kind != "confirm" {
            continue;
        }
        let (Some(payment), Some(key)) = (confirmed_payment(exchange), request_field(exchange, "payment_key")) else {
            continue;
        };
        let claimed_by = owner.get(key.as_str());
        let by_another = claimed_by.is_some_and(|owner| owner != payment);
        if status == 409 && field(body, "code").as_deref() == Some("payment_key_in_use") && !by_another {
            found.push(Violation::new(
                INV_KEY_BOUND,
                "409 payment_key_in_use only for a key another payment claimed",
                format!(
                    "confirm of payment {payment} with {key} was refused payment_key_in_use, but the key is claimed by {claimed_by:?}"
                ),
            ));
        }
        if (200..300).contains(&status) && by_another {
            found.push(Violation::new(
                INV_KEY_BOUND,
                "a key another payment claimed is refused",
                format!(
                    "confirm of payment {payment} with {key} was answered {status} {}, but the key belongs to payment {}",
                    String::from_utf8_lossy(body),
                    claimed_by.map_or("", String::as_str)
                ),
            ));
        }
    }
}

/// Every payment's payback is the merchant's policy: `payback_bps` of the
/// amount (the servers' default) for a payment of an amount; for an
/// order's payment, the order's payback, which is each product line at its
/// product's rate plus each seat at the default, rounded down per line.
fn paybacks_follow_the_policy(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let catalogue = evidence.catalogue;
    let rate: BTreeMap<&str, u32> = catalogue.products.iter().map(|p| (p.id.as_str(), p.payback_bps)).collect();
    let orders: BTreeMap<OrderId, &Order> = evidence.snapshot.orders.iter().map(|o| (o.id, o)).collect();
    let policy_of_order = |order: &Order| -> Option<Money> {
        let mut total = Money::ZERO;
        for line in &order.lines {
            let bps = *rate.get(line.product.to_string().as_str())?;
            let cost = Amount::new(line.unit_price.minor_units() * i64::try_from(line.quantity).ok()?).ok()?;
            total = total.checked_add(payback_of(cost, bps))?;
        }
        for seat in &order.seats {
            total = total.checked_add(payback_of(seat.price, catalogue.payback_bps))?;
        }
        Some(total)
    };
    for order in &evidence.snapshot.orders {
        let expected = policy_of_order(order);
        if expected != Some(order.payback) {
            found.push(Violation::new(
                INV_PAYBACK,
                "an order's payback is its lines' rates",
                format!("order {} pays back {} where the policy says {expected:?}", order.id, order.payback),
            ));
        }
    }
    for payment in &evidence.snapshot.payments {
        let expected = match payment.order {
            None => payback_of(payment.amount, catalogue.payback_bps),
            Some(order) => match orders.get(&order) {
                Some(order) => order.payback,
                None => continue,
            },
        };
        if payment.payback != expected {
            found.push(Violation::new(
                INV_PAYBACK,
                "a payment's payback is the merchant's policy",
                format!(
                    "payment {} of {} pays back {} where the policy says {expected}",
                    payment.id,
                    payment.amount.minor_units(),
                    payment.payback
                ),
            ));
        }
    }
}

/// A request naming its own `payback_amount` is refused 400, whatever else
/// it says (an answer that is not the request's own — a 5xx, a busy key —
/// aside).
fn payback_amount_is_refused(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    for (exchange, status, body, _) in replies(evidence) {
        if !exchange.body.as_deref().is_some_and(names_payback) || status == 400 || is_transient(status, body) {
            continue;
        }
        found.push(Violation::new(
            INV_PAYBACK,
            "a request naming its own payback_amount is refused 400",
            format!(
                "{} {:?} with a payback_amount was answered {status} {}",
                exchange.kind,
                exchange.key,
                String::from_utf8_lossy(body)
            ),
        ));
    }
}

/// An order's seats are held from its creation until it ends (cancelled or
/// expired: its last write); paid and pending orders still hold them.
fn holds_after(order: &Order, at: Timestamp, skew_ms: i64) -> bool {
    order.status.reserves() || order.updated_at.0 > at.0 + skew_ms
}

/// Seat hoarding, over the whole run rather than the final store (the
/// core's checker sees the tokens' counts at the end, after orders lapsed):
/// when an order was booked with a token, the token's live orders — those
/// booked before it (ids are drawn under the event's queue lock, so they
/// order one token's bookings) that had not ended by then — and the new one
/// hold at most the event's `max_seats_per_token`. Timestamps of two servers
/// compare only beyond their largest clock lag.
fn tokens_never_hoard(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
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
fn seat_limit_refusals_are_right(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(key: &str, status: u16, body: &str) -> Exchange {
        Exchange {
            client: 0,
            user: UserId(1),
            op: 0,
            kind: "top-up",
            path: "/v1/wallet/top-ups".into(),
            body: None,
            queue_token: None,
            key: Some(key.to_owned()),
            host: "tally-1".into(),
            attempt: 1,
            duplicate: false,
            sent_at: Timestamp(0),
            ended_at: Timestamp(0),
            answer: Answer::Reply { status, body: body.as_bytes().to_vec(), replayed: false },
        }
    }

    fn evidence<'a>(
        snapshot: &'a Snapshot,
        exchanges: &'a [Exchange],
        gateway: &'a FakeGateway,
        catalogue: &'a Catalogue,
        now: Timestamp,
    ) -> Evidence<'a> {
        static NONE: BTreeMap<String, u64> = BTreeMap::new();
        Evidence {
            snapshot,
            exchanges,
            gateway,
            catalogue,
            now,
            confirms_by_order: &NONE,
            confirms_by_key: &NONE,
            foreign_confirms: &NONE,
            skew_max_ms: 0,
        }
    }

    fn judge_history(exchanges: &[Exchange]) -> Vec<Violation> {
        let snapshot = Snapshot::default();
        let gateway = FakeGateway::new("sk");
        let catalogue = Catalogue::default();
        judge(&evidence(&snapshot, exchanges, &gateway, &catalogue, Timestamp(0)))
    }

    #[test]
    fn answers_for_one_key_must_agree_except_transient_ones() {
        let in_use = r#"{"code":"idempotency_key_in_use"}"#;
        let fine = [
            reply("k", 409, in_use),
            reply("k", 503, r#"{"code":"unavailable"}"#),
            reply("k", 409, r#"{"code":"insufficient_balance"}"#),
            reply("k", 409, r#"{"code":"insufficient_balance"}"#),
            reply("other", 422, r#"{"code":"invalid_amount"}"#),
        ];
        assert_eq!(judge_history(&fine), Vec::new());
        let mut broken = fine.to_vec();
        broken.push(reply("k", 409, r#"{"code":"invalid_state"}"#));
        let found = judge_history(&broken);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].invariant.as_str(), found[0].check), (INV_IDEMPOTENCY, "all answers for one key agree"));
    }

    fn exchange(kind: &'static str, path: String, answer: Answer) -> Exchange {
        Exchange { kind, path, key: None, answer, ..reply("k", 200, "{}") }
    }

    fn order(id: u128, status: OrderStatus, seat: u128) -> Order {
        let price = tally_core::money::Amount::new(100).expect("a valid amount");
        Order {
            id: OrderId(id),
            user: UserId(1),
            lines: Vec::new(),
            seats: vec![tally_core::order::OrderSeat { seat: SeatId(seat), price }],
            event: None,
            token: None,
            total: price,
            payback: Money::ZERO,
            status,
            payment: None,
            expires_at: Timestamp(1_000),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            version: 1,
        }
    }

    /// The history checks only (the core's checker sees these hand-made
    /// snapshots as broken in other ways).
    fn judge_orders(snapshot: &Snapshot, exchanges: &[Exchange], catalogue: &Catalogue) -> Vec<Violation> {
        let gateway = FakeGateway::new("sk");
        let evidence = evidence(snapshot, exchanges, &gateway, catalogue, Timestamp(500));
        let mut found = Vec::new();
        orders(&evidence, &mut found);
        found
    }

    #[test]
    fn an_order_seen_paid_stays_paid_and_a_seat_is_sold_once() {
        let snapshot = Snapshot {
            orders: vec![
                order(1, OrderStatus::Expired, 9),
                order(2, OrderStatus::Paid, 9),
                order(3, OrderStatus::Cancelled, 8),
            ],
            ..Snapshot::default()
        };
        let seen_paid = |id: u128| {
            let body = format!(r#"{{"id":"{}","status":"paid"}}"#, OrderId(id));
            exchange(
                "read-order",
                format!("/v1/orders/{}", OrderId(id)),
                Answer::Reply { status: 200, body: body.into_bytes(), replayed: false },
            )
        };
        // Order 3's cancel was sent but never answered: it may have taken effect.
        let cancel =
            exchange("cancel-order", format!("/v1/orders/{}/cancel", OrderId(3)), Answer::Failed("timed out".into()));
        let found = judge_orders(&snapshot, &[seen_paid(1), seen_paid(2), seen_paid(3), cancel], &Catalogue::default());
        let checks: Vec<(&str, &str)> = found.iter().map(|v| (v.invariant.as_str(), v.check)).collect();
        assert_eq!(
            checks,
            [
                (INV_ORDERS, "an order acknowledged paid stays paid unless a cancel of it was sent"),
                (INV_SEATS, "a seat is sold at most once (orders acknowledged paid, never cancelled)"),
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn a_restock_takes_effect_once_and_no_unpaid_order_outlives_its_ttl() {
        let product = tally_core::catalog::Product::new(
            tally_core::ids::ProductId(5),
            "p".into(),
            tally_core::money::Amount::new(100).expect("a valid amount"),
            2,
            0,
            Timestamp(0),
        )
        .expect("a valid product");
        let twice = tally_core::catalog::Product { stocked: 4, stock: 4, ..product.clone() };
        let snapshot = Snapshot {
            products: vec![twice],
            orders: vec![order(1, OrderStatus::PendingPayment, 9)],
            ..Snapshot::default()
        };
        let catalogue = Catalogue {
            products: vec![crate::catalogue::CatalogueProduct {
                id: product.id.to_string(),
                initial: 2,
                payback_bps: 0,
            }],
            ..Catalogue::default()
        };
        let restock = Exchange {
            key: Some("c1-o3".into()),
            ..exchange(
                "restock",
                format!("/v1/products/{}/restock", product.id),
                Answer::Reply { status: 200, body: b"{}".to_vec(), replayed: false },
            )
        };
        let mut evidence_now = judge_orders(&snapshot, &[restock], &catalogue);
        evidence_now.sort_by_key(|v| v.check);
        let checks: Vec<&str> = evidence_now.iter().map(|v| v.check).collect();
        // Order 1 expired at 1000 and is judged at 500: not yet past its TTL.
        assert_eq!(checks, ["each restock takes effect at most once"], "{evidence_now:#?}");
        let late = Snapshot {
            orders: vec![Order { expires_at: Timestamp(400), ..order(1, OrderStatus::PendingPayment, 9) }],
            ..Snapshot::default()
        };
        let found = judge_orders(&late, &[], &Catalogue::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(
            (found[0].invariant.as_str(), found[0].check),
            (INV_RECOVERED, "no unpaid order is left past its TTL once the sweepers ran")
        );
    }

    #[test]
    fn a_500_is_a_violation() {
        let found = judge_history(&[reply("k", 500, r#"{"code":"internal_error"}"#)]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].invariant, INV_NO_500);
    }

    fn gateway_payment(id: u128, key: &str, status: PaymentStatus) -> Payment {
        let amount = Amount::new(1_000).expect("a valid amount");
        let attempt = tally_core::payment::GatewayAttempt {
            payment_key: key.to_owned(),
            started_at: Timestamp(0),
            sent_at: Timestamp(0),
        };
        Payment {
            status,
            gateway: Some(attempt),
            ..Payment::new(tally_core::ids::PaymentId(id), UserId(1), amount, None, Method::Gateway, Timestamp(0))
                .expect("a valid payment")
        }
    }

    fn confirm(payment: u128, key: &str, status: u16, body: &str) -> Exchange {
        Exchange {
            kind: "confirm",
            path: format!("/v1/payments/{}/confirm", tally_core::ids::PaymentId(payment)),
            body: Some(format!(r#"{{"payment_key":"{key}"}}"#).into_bytes()),
            ..reply("k", status, body)
        }
    }

    #[test]
    fn payment_key_in_use_needs_another_owner_and_a_claimed_key_never_confirms() {
        let snapshot =
            Snapshot { payments: vec![gateway_payment(1, "pk-1", PaymentStatus::Done)], ..Snapshot::default() };
        let in_use = r#"{"code":"payment_key_in_use"}"#;
        let judge_keys = |exchanges: &[Exchange]| {
            let gateway = FakeGateway::new("sk");
            let catalogue = Catalogue::default();
            let mut found = Vec::new();
            key_refusals_are_right(&evidence(&snapshot, exchanges, &gateway, &catalogue, Timestamp(0)), &mut found);
            found.into_iter().map(|v| v.check).collect::<Vec<_>>()
        };
        // Payment 2 reusing payment 1's key: refused, as it must be.
        assert!(judge_keys(&[confirm(2, "pk-1", 409, in_use)]).is_empty());
        // The owner itself refused, or a fresh key refused: wrong.
        assert_eq!(
            judge_keys(&[confirm(1, "pk-1", 409, in_use), confirm(2, "pk-9", 409, in_use)]),
            ["409 payment_key_in_use only for a key another payment claimed"; 2]
        );
        // Payment 2 confirmed with payment 1's key: one charge paying two.
        assert_eq!(
            judge_keys(&[confirm(2, "pk-1", 200, r#"{"status":"failed"}"#)]),
            ["a key another payment claimed is refused"]
        );
    }

    #[test]
    fn a_payback_is_the_policy_never_the_request() {
        let amount = Amount::new(1_001).expect("a valid amount");
        let payment = |id: u128, payback: i64| {
            Payment::new(
                tally_core::ids::PaymentId(id),
                UserId(1),
                amount,
                Amount::new(payback).ok(),
                Method::Wallet,
                Timestamp(0),
            )
            .expect("a valid payment")
        };
        // 5 % of 1001, rounded down: 50.
        let snapshot = Snapshot { payments: vec![payment(1, 50), payment(2, 100)], ..Snapshot::default() };
        let catalogue = Catalogue { payback_bps: 500, ..Catalogue::default() };
        let gateway = FakeGateway::new("sk");
        let mut found = Vec::new();
        paybacks_follow_the_policy(&evidence(&snapshot, &[], &gateway, &catalogue, Timestamp(0)), &mut found);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].detail.contains("pays back 100 where the policy says 50"), "{found:#?}");
        // A body naming its own payback: 400 is right, 201 is not.
        let named = |status, body: &str| Exchange {
            body: Some(br#"{"amount":1001,"method":"wallet","payback_amount":1001}"#.to_vec()),
            ..reply("k", status, body)
        };
        assert!(judge_history(&[named(400, r#"{"code":"malformed_request"}"#)]).is_empty());
        let found = judge_history(&[named(201, r#"{"id":"x"}"#)]);
        assert!(
            found.iter().any(|v| v.check == "a request naming its own payback_amount is refused 400"),
            "{found:#?}"
        );
    }

    #[test]
    fn a_token_is_judged_over_the_run_and_refusals_need_a_full_token() {
        let token = Some(tally_core::ids::TokenId(7));
        let booked = |id: u128, seats: &[u128], status: OrderStatus, created: i64, updated: i64| Order {
            token,
            seats: seats
                .iter()
                .map(|&seat| tally_core::order::OrderSeat {
                    seat: SeatId(seat),
                    price: Amount::new(100).expect("a valid amount"),
                })
                .collect(),
            created_at: Timestamp(created),
            updated_at: Timestamp(updated),
            ..order(id, status, 0)
        };
        let catalogue = Catalogue { max_seats_per_token: 2, ..Catalogue::default() };
        let gateway = FakeGateway::new("sk");
        let judge_tokens = |orders: Vec<Order>, exchanges: &[Exchange]| {
            let snapshot = Snapshot { orders, ..Snapshot::default() };
            let evidence = evidence(&snapshot, exchanges, &gateway, &catalogue, Timestamp(0));
            let mut found = Vec::new();
            tokens_never_hoard(&evidence, &mut found);
            seat_limit_refusals_are_right(&evidence, &mut found);
            found.into_iter().map(|v| v.check).collect::<Vec<_>>()
        };
        // Two seats, expired at 500; a third booked at 100, while they were held.
        let hoarded =
            vec![booked(1, &[1, 2], OrderStatus::Expired, 0, 500), booked(2, &[3], OrderStatus::Paid, 100, 100)];
        assert_eq!(judge_tokens(hoarded, &[]), ["a token's live orders never hold more than max_seats_per_token"]);
        // Booked after the first order ended: within the limit.
        let fair = vec![booked(1, &[1, 2], OrderStatus::Expired, 0, 50), booked(2, &[3], OrderStatus::Paid, 100, 100)];
        assert!(judge_tokens(fair.clone(), &[]).is_empty());
        // Refused seat_limit_reached for one seat while the token held one.
        let refused = Exchange {
            kind: "order-seats",
            queue_token: token.map(|t| t.to_string()),
            body: Some(br#"{"seats":["s"]}"#.to_vec()),
            sent_at: Timestamp(200),
            ended_at: Timestamp(210),
            ..reply("k", 409, r#"{"code":"seat_limit_reached"}"#)
        };
        assert_eq!(
            judge_tokens(fair, std::slice::from_ref(&refused)),
            ["409 seat_limit_reached only when the token's live orders hold the limit"]
        );
        let full = vec![booked(1, &[1, 2], OrderStatus::Paid, 0, 0)];
        assert!(judge_tokens(full, &[refused]).is_empty());
    }

    #[test]
    fn queue_activity_overlapping_by_less_than_the_lag_is_not_an_overlap() {
        let token = |id: u128, from: i64, until: i64| tally_core::queue::QueueToken {
            id: tally_core::ids::TokenId(id),
            event: tally_core::ids::EventId(1),
            user: UserId(1),
            seq: u64::try_from(id).expect("small"),
            status: tally_core::queue::TokenStatus::Expired,
            joined_at: Timestamp(0),
            activated_at: Some(Timestamp(from)),
            expires_at: Some(Timestamp(until)),
            used_at: None,
            seats_held: 0,
            version: 1,
        };
        let event = tally_core::catalog::Event {
            id: tally_core::ids::EventId(1),
            name: "e".into(),
            active_limit: 1,
            token_ttl: std::time::Duration::from_secs(1),
            next_seq: 3,
            head_seq: 3,
            active_count: 0,
            max_seats_per_token: 4,
            created_at: Timestamp(0),
            version: 1,
        };
        let gateway = FakeGateway::new("sk");
        let catalogue = Catalogue::default();
        let judge_queue = |second_from: i64| {
            let snapshot = Snapshot {
                events: vec![event.clone()],
                tokens: vec![token(1, 0, 1_000), token(2, second_from, 2_000)],
                ..Snapshot::default()
            };
            let mut found = Vec::new();
            let evidence =
                Evidence { skew_max_ms: 300, ..evidence(&snapshot, &[], &gateway, &catalogue, Timestamp(0)) };
            queues_over_time(&evidence, &mut found);
            found.len()
        };
        // Stamped 200 ms early by a lagging server: not an overlap.
        assert_eq!(judge_queue(800), 0);
        // 400 ms: more than any lag explains.
        assert_eq!(judge_queue(600), 1);
    }
}
