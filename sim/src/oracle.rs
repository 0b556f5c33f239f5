//! The oracle: what must hold after every seed, once the faults are healed,
//! the network is quiet and the completer has run.
//!
//! It reads three things: the final store (through the core's invariant
//! checker, the same one every other proof uses), the clients' history of
//! requests and answers, and the fake gateway's own books. Each check names
//! the SPEC.md invariant it protects.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tally_core::check::{self, Snapshot};
use tally_core::idempotency::IdemScope;
use tally_core::ids::UserId;
use tally_core::ledger::TransferKind;
use tally_core::payment::{Method, PaymentStatus};
use tally_core::time::Timestamp;
use tally_gateway::FakeGateway;
use tally_gateway::protocol::{STATUS_CANCELED, STATUS_DONE};

use crate::journal::{Answer, Exchange};
use crate::workload::TAG_SPACE;

pub const INV_CHARGED_ONCE: &str = "1. a payment is charged at most once (a gateway confirm is sent at most once)";
pub const INV_IDEMPOTENCY: &str = "2. one idempotency key has at most one effect; a replay returns the first response";
pub const INV_DURABLE: &str = "durability: an acknowledged success survives every crash";
pub const INV_RECOVERED: &str = "recovery: nothing is left half-done once the completer has run";
pub const INV_ORDERS: &str = "7. an order is paid exactly when it has one done payment, never both paid and expired";
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
    for (exchange, status, body, _) in replies(evidence) {
        if !(200..300).contains(&status) {
            continue;
        }
        let lost = match exchange.kind {
            "top-up" => field(body, "entry_id").is_none_or(|id| !transfers.contains(&id)),
            "pay-wallet" | "pay-gateway" => field(body, "id").is_none_or(|id| !payments.contains_key(&id)),
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
/// was busy, or the server could not answer (neither is stored).
fn is_transient(status: u16, body: &[u8]) -> bool {
    status >= 500
        || status == 429
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
    let mut payments: BTreeMap<(UserId, i64), usize> = BTreeMap::new();
    for payment in &evidence.snapshot.payments {
        *payments.entry((payment.user, payment.amount.minor_units())).or_default() += 1;
    }
    for ((user, amount), count) in payments {
        if count > 1 {
            found.push(Violation::new(
                INV_IDEMPOTENCY,
                "each request takes effect at most once (amount tags)",
                format!("payment request {:?} of {amount} created {count} payments for user {user}", tag_key(amount)),
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

/// The hook for orders (invariant 7): no order both paid and expired, and a
/// paid order with exactly one done payment. Orders are not in this API
/// version yet; when they land, this reads them from the snapshot.
fn orders(_evidence: &Evidence<'_>, _found: &mut [Violation]) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(key: &str, status: u16, body: &str) -> Exchange {
        Exchange {
            client: 0,
            user: UserId(1),
            op: 0,
            kind: "top-up",
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
        judge(&Evidence { snapshot: &snapshot, exchanges, gateway: &gateway })
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

    #[test]
    fn a_500_is_a_violation() {
        let found = judge_history(&[reply("k", 500, r#"{"code":"internal_error"}"#)]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].invariant, INV_NO_500);
    }
}
