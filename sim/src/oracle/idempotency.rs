//! The oracle's idempotency checks: one idempotency key has at most one
//! effect, its answers agree, and it is not forgotten while its effect is live
//! (SPEC.md invariant 2).

use super::*;

pub(super) fn responses_for_a_key_agree(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
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

/// The check that counts effects by the tags their amounts carry.
const TAGGED_ONCE: &str = "each request takes effect at most once (amount tags)";

pub(super) fn one_effect_per_key(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let tag_key = |amount: i64| {
        let tag = amount % TAG_SPACE;
        format!("c{}-o{}", tag / 1000 + 1, tag % 1000)
    };
    let mut top_ups: BTreeMap<(UserId, i64), u64> = BTreeMap::new();
    for transfer in &evidence.snapshot.transfers {
        if let (TransferKind::TopUp, Some(side)) = (transfer.kind, transfer.wallet) {
            *top_ups.entry((side.user, transfer.amount.minor_units())).or_default() += 1;
        }
    }
    more_than_once(found, INV_IDEMPOTENCY, TAGGED_ONCE, top_ups, |(user, amount), count| {
        format!("top-up {:?} of {amount} booked {count} times on wallet {user}", tag_key(amount))
    });
    // A payment of an amount carries its tag in the amount; one for an
    // order (its amount is the order's total) is judged by
    // `order_payments_once_per_key`.
    let mut payments: BTreeMap<(UserId, i64), u64> = BTreeMap::new();
    for payment in evidence.snapshot.payments.iter().filter(|p| p.order.is_none()) {
        *payments.entry((payment.user, payment.amount.minor_units())).or_default() += 1;
    }
    more_than_once(found, INV_IDEMPOTENCY, TAGGED_ONCE, payments, |(user, tagged), count| {
        format!("payment request {:?} ({tagged}) created {count} payments for user {user}", tag_key(tagged))
    });
}

/// An order's payments carry no tag (their amount is the order's total, their
/// payback the merchant's policy), so they are counted against the keys
/// that asked for one: every payment of an order is named by a 2xx answer
/// to a key of it, or is the effect of a key that never got one (its answer
/// was lost) — at most one each. One key taking effect twice leaves a
/// payment that no answer names and no unanswered key explains.
pub(super) fn order_payments_once_per_key(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
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
pub(super) fn keys_not_forgotten_while_live(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
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

/// The request that began a gateway payment's phase (a confirm or a cancel,
/// whose `Idempotency-Key` the attempt keeps) made that phase's effect, so
/// no answer to its key refuses it: a 503 while the gateway's answer was
/// unclear is transient, but a later 409 would tell the client that its card
/// was not charged, or not refunded, when it was.
pub(super) fn a_phase_is_never_refused_to_its_request(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let mut began: BTreeMap<(UserId, &str), &Payment> = BTreeMap::new();
    for payment in &evidence.snapshot.payments {
        if let Some(key) = payment.gateway.as_ref().and_then(|a| a.requested_by.as_ref()) {
            began.insert((payment.user, key.as_str()), payment);
        }
    }
    for (exchange, status, body, _) in replies(evidence) {
        let Some(key) = exchange.key.as_deref() else { continue };
        let Some(payment) = began.get(&(exchange.user, key)) else { continue };
        if !is_transient(status, body) && !(200..300).contains(&status) {
            found.push(Violation::new(
                INV_IDEMPOTENCY,
                "the request that began a gateway phase is never refused",
                format!(
                    "{} {key:?} (client {}) began payment {}'s {} phase but was answered {status} {}",
                    exchange.kind,
                    exchange.client + 1,
                    payment.id,
                    payment.status.as_str(),
                    String::from_utf8_lossy(body)
                ),
            ));
        }
    }
}
