//! The oracle: what must hold after every seed, once the faults are healed,
//! the network is quiet and the completer has run.
//!
//! It reads three things: the final store (through the core's invariant
//! checker, the same one every other proof uses — it covers stock, seats,
//! orders and queues, invariants 5 to 8, on the final store), the clients'
//! history of requests and answers, and the fake gateway's own books. Each
//! check names the SPEC.md invariant it protects.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tally_core::check::{self, Snapshot};
use tally_core::idempotency::IdemScope;
use tally_core::ids::{OrderId, SeatId, UserId};
use tally_core::ledger::TransferKind;
use tally_core::order::{Order, OrderStatus};
use tally_core::payment::{Method, PaymentStatus};
use tally_core::time::Timestamp;
use tally_gateway::FakeGateway;
use tally_gateway::protocol::{STATUS_CANCELED, STATUS_DONE};

use crate::catalogue::Catalogue;
use crate::journal::{Answer, Exchange};
use crate::workload::{RESTOCK_QUANTITY, TAG_SPACE};

pub const INV_CHARGED_ONCE: &str = "1. a payment is charged at most once (a gateway confirm is sent at most once)";
pub const INV_IDEMPOTENCY: &str = "2. one idempotency key has at most one effect; a replay returns the first response";
pub const INV_DURABLE: &str = "durability: an acknowledged success survives every crash";
pub const INV_RECOVERED: &str = "recovery: nothing is left half-done once the completer has run";
pub const INV_ORDERS: &str = "7. an order is paid exactly when it has one done payment, never both paid and expired";
pub const INV_SEATS: &str = "6. a seat is held or sold by at most one order at a time";
pub const INV_NO_500: &str = "no request ends in 500 (a constraint fired or a handler panicked)";
pub const INV_DETERMINISM: &str = "determinism: a seed fully determines the run";
pub const INV_LIVENESS: &str = "liveness: every client finishes within the simulation's time limit";

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
    orders(evidence, &mut found);
    found
}

fn core_invariants(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    for violation in check::check(evidence.snapshot) {
        let invariant = format!("{}. {}", violation.invariant as u8, violation.invariant.name());
        found.push(Violation { invariant, check: "the core's invariant checker", detail: violation.detail });
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
    // order (its amount is the order's total) carries it as its payback.
    let mut payments: BTreeMap<(UserId, bool, i64), usize> = BTreeMap::new();
    for payment in &evidence.snapshot.payments {
        let tagged = if payment.order.is_some() { payment.payback.minor_units() } else { payment.amount.minor_units() };
        *payments.entry((payment.user, payment.order.is_some(), tagged)).or_default() += 1;
    }
    for ((user, for_order, tagged), count) in payments {
        if count > 1 {
            let what = if for_order { "order payment request" } else { "payment request" };
            found.push(Violation::new(
                INV_IDEMPOTENCY,
                "each request takes effect at most once (amount tags)",
                format!("{what} {:?} ({tagged}) created {count} payments for user {user}", tag_key(tagged)),
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
                        "key {:?} of user {}: an effect was booked under the admission expiring at {}, but the key was admitted again at {} (record now {:?})",
                        record.scope.key.as_str(),
                        record.scope.user,
                        expires_at.0,
                        record.created_at.0,
                        record.state
                    ),
                ));
            }
        }
    }
}

fn one_gateway_confirm_per_payment(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    for (payment_key, stats) in evidence.gateway.stats().payments {
        if stats.confirm_requests > 1 {
            found.push(Violation::new(
                INV_CHARGED_ONCE,
                "at most one gateway confirm per payment (gateway's count)",
                format!("the gateway received {} confirms for {payment_key}", stats.confirm_requests),
            ));
        }
    }
}

fn gateway_agrees_with_store(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let mut ours = BTreeSet::new();
    for payment in evidence.snapshot.payments.iter().filter(|p| p.method == Method::Gateway) {
        let Some(attempt) = &payment.gateway else { continue };
        ours.insert(attempt.payment_key.clone());
        let charged = evidence.gateway.payment(&attempt.payment_key);
        let theirs = charged.as_ref().map(|p| p.status.as_str());
        let agrees = match payment.status {
            PaymentStatus::Done => theirs == Some(STATUS_DONE),
            PaymentStatus::Failed => theirs.is_none() || theirs == Some(STATUS_CANCELED),
            PaymentStatus::Cancelled => theirs == Some(STATUS_CANCELED),
            // Unresolved: reported by `nothing_left_in_flight`.
            PaymentStatus::Wait | PaymentStatus::Confirming | PaymentStatus::Cancelling => true,
        };
        if !agrees {
            found.push(Violation::new(
                INV_CHARGED_ONCE,
                "the gateway's books agree with ours",
                format!("payment {} is {} here but {:?} at the gateway", payment.id, payment.status.as_str(), theirs),
            ));
        }
    }
    for (payment_key, stats) in evidence.gateway.stats().payments {
        if stats.confirm_effects > 0 && !ours.contains(&payment_key) {
            found.push(Violation::new(
                INV_CHARGED_ONCE,
                "the gateway's books agree with ours",
                format!("the gateway charged {payment_key}, which no payment here names"),
            ));
        }
    }
}

fn nothing_left_in_flight(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    for payment in &evidence.snapshot.payments {
        if matches!(payment.status, PaymentStatus::Confirming | PaymentStatus::Cancelling) {
            found.push(Violation::new(
                INV_RECOVERED,
                "no payment left confirming or cancelling after the completer ran",
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
            key: Some(key.to_owned()),
            host: "tally-1".into(),
            attempt: 1,
            duplicate: false,
            answer: Answer::Reply { status, body: body.as_bytes().to_vec(), replayed: false },
        }
    }

    fn judge_history(exchanges: &[Exchange]) -> Vec<Violation> {
        let snapshot = Snapshot::default();
        let gateway = FakeGateway::new("sk");
        let catalogue = Catalogue::default();
        judge(&Evidence { snapshot: &snapshot, exchanges, gateway: &gateway, catalogue: &catalogue, now: Timestamp(0) })
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
        let evidence = Evidence { snapshot, exchanges, gateway: &gateway, catalogue, now: Timestamp(500) };
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
            products: vec![crate::catalogue::CatalogueProduct { id: product.id.to_string(), initial: 2 }],
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
}
