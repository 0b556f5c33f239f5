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
//!
//! # Layout
//!
//! - this module: [`Evidence`],
//!   [`judge`] (which runs every check), the core checker over the final
//!   store, the history checks on server errors, durability and what is
//!   left in flight, and the helpers that read the history;
//! - `idempotency`: one effect per idempotency key, a replay answers like
//!   the first, and the request that began a gateway phase is never refused;
//! - `gateway_books`: the gateway's books against ours — confirms sent
//!   once, charges and refunds per payment key and per order id,
//!   payment-key refusals, paybacks by the merchant's policy;
//! - `orders`: orders, restocks, queues over time, seats per token.

mod gateway_books;
mod idempotency;
mod orders;
#[cfg(test)]
mod tests;

use self::gateway_books::*;
use self::idempotency::*;
use self::orders::*;

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

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
use crate::shared::TAG_SPACE;
pub use crate::shared::{
    INV_CHARGED_ONCE, INV_DETERMINISM, INV_DURABLE, INV_FOUND, INV_IDEMPOTENCY, INV_KEY_BOUND, INV_LIVENESS,
    INV_NO_500, INV_ORDERS, INV_PAYBACK, INV_RECOVERED, INV_SEAT_LIMIT, INV_SEATS, Violation,
};
use crate::workload::{FOREIGN_ORDER_PREFIX, RESTOCK_QUANTITY, names_payback};

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
    a_phase_is_never_refused_to_its_request(evidence, &mut found);
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
    own_records_are_found(evidence, &mut found);
    found
}

/// An unpaid order, no payment under way, past its TTL: what the sweepers
/// expire. The quiet phase (and the chaos harness's settle) waits until none
/// is left; the oracle reports any that is.
pub fn awaits_sweep(order: &Order, now: Timestamp) -> bool {
    order.status == OrderStatus::PendingPayment && order.payment.is_none() && order.past_ttl(now)
}

/// SPEC.md: 404 is "no such object, or not yours". A request naming the
/// client's own order or payment, sent after an answer showed the record
/// existed, is never answered 404, fresh or replayed (session 13: a
/// batched order cancel took another request's payment for its order's and
/// stored 404 under its key).
fn own_records_are_found(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let snapshot = evidence.snapshot;
    let owner: BTreeMap<String, UserId> = snapshot
        .orders
        .iter()
        .map(|o| (o.id.to_string(), o.user))
        .chain(snapshot.payments.iter().map(|p| (p.id.to_string(), p.user)))
        .collect();
    // When each record was first shown to exist: the earliest 2xx answer
    // naming it as its `id`.
    let mut shown: BTreeMap<String, Timestamp> = BTreeMap::new();
    for (exchange, status, body, _) in replies(evidence) {
        if (200..300).contains(&status)
            && let Some(id) = field(body, "id")
            && owner.contains_key(&id)
        {
            let at = shown.entry(id).or_insert(exchange.ended_at);
            *at = (*at).min(exchange.ended_at);
        }
    }
    for (exchange, status, body, replayed) in replies(evidence) {
        if status != 404 {
            continue;
        }
        let named = path_id(&exchange.path, "/v1/orders/").or_else(|| path_id(&exchange.path, "/v1/payments/"));
        let Some(id) = named else { continue };
        let own = owner.get(id) == Some(&exchange.user);
        if own && shown.get(id).is_some_and(|at| *at < exchange.sent_at) {
            found.push(Violation::new(
                INV_FOUND,
                "a client's own record is never answered 404",
                format!(
                    "{} {:?} (client {}, {}) on {} answered 404{}: {}",
                    exchange.kind,
                    exchange.key,
                    exchange.client + 1,
                    exchange.path,
                    exchange.host,
                    if replayed { " (replayed)" } else { "" },
                    String::from_utf8_lossy(body)
                ),
            ));
        }
    }
}

fn core_invariants(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    found.extend(judge_snapshot(evidence.snapshot, evidence.skew_max_ms));
}

/// The core's invariant checker on one snapshot of the store, with the lag
/// of the servers' clocks (`skew_max_ms`) allowed for. The final judgement
/// reads it, and so does the chaos harness's check of live snapshots: a
/// check that allowed no lag there would call a lagging server's early
/// stamp an overlap.
pub fn judge_snapshot(snapshot: &Snapshot, skew_max_ms: i64) -> Vec<Violation> {
    let skewed = skew_max_ms > 0;
    let mut found = Vec::new();
    for violation in check::check(snapshot) {
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
        queues_over_time(snapshot, skew_max_ms, &mut found);
    }
    found
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
/// One violation of `invariant` (as `check` judges it) for each key that
/// `counts` counted more than once, told by `tell`.
fn more_than_once<K, N: Borrow<u64>>(
    found: &mut Vec<Violation>,
    invariant: &str,
    check: &'static str,
    counts: impl IntoIterator<Item = (K, N)>,
    tell: impl Fn(K, u64) -> String,
) {
    for (key, count) in counts {
        let count = *count.borrow();
        if count > 1 {
            found.push(Violation::new(invariant, check, tell(key, count)));
        }
    }
}

fn is_transient(status: u16, body: &[u8]) -> bool {
    status >= 500
        || status == 429
        || matches!(status, 400 | 401 | 403)
        || (status == 409 && field(body, "code").as_deref() == Some("idempotency_key_in_use"))
}

/// A field of an exchange's request body.
fn request_field(exchange: &Exchange, name: &str) -> Option<String> {
    field(exchange.body.as_deref()?, name)
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

/// The payment id in a confirm's path.
fn confirmed_payment(exchange: &Exchange) -> Option<&str> {
    path_id(&exchange.path, "/v1/payments/")
}

/// An order's seats are held from its creation until it ends (cancelled or
/// expired: its last write); paid and pending orders still hold them.
fn holds_after(order: &Order, at: Timestamp, skew_ms: i64) -> bool {
    order.status.reserves() || order.updated_at.0 > at.0 + skew_ms
}
