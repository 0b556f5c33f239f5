//! The oracle's payment checks against the fake gateway's books: one confirm
//! sent per payment, every charge and refund per payment key and per order
//! id agreeing with our store, payment-key refusals, and paybacks that follow
//! the merchant's policy (invariants 1 and issue 10's holes).

use super::*;

/// Confirms are counted where they are *sent* (our servers' gateway client,
/// per order id and per payment key) and where they arrive (the gateway's
/// count, less the other merchant's): a confirm lost on its way, or one sent
/// with a key another payment claimed, is caught by the sender's count.
pub(super) fn one_gateway_confirm_per_payment(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    more_than_once(
        found,
        INV_CHARGED_ONCE,
        "at most one gateway confirm sent per payment (our servers' count)",
        evidence.confirms_by_order,
        |order_id, sent| format!("our servers sent {sent} confirms for payment {order_id}"),
    );
    more_than_once(
        found,
        INV_KEY_BOUND,
        "at most one gateway confirm sent per payment key (our servers' count)",
        evidence.confirms_by_key,
        |payment_key, sent| format!("our servers sent {sent} confirms with payment key {payment_key}"),
    );
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
pub(super) fn gateway_agrees_with_store(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
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

/// Payment-key refusals, from the history against the final store (a key's
/// claim is forever, so the final store says who owns it):
///
/// - `409 payment_key_in_use` only when another payment claimed the key;
/// - a confirm answered 2xx never names a key another payment owns;
/// - a confirm answered 2xx names the key its payment's charge is under: of
///   two tabs confirming one payment with two keys, the one not charged is
///   refused, never answered with the other's charge.
pub(super) fn key_refusals_are_right(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
    let owner: BTreeMap<&str, String> = evidence
        .snapshot
        .payments
        .iter()
        .filter_map(|p| Some((p.gateway.as_ref()?.payment_key.as_str(), p.id.to_string())))
        .collect();
    let charged_under: BTreeMap<String, &str> = evidence
        .snapshot
        .payments
        .iter()
        .filter_map(|p| Some((p.id.to_string(), p.gateway.as_ref()?.payment_key.as_str())))
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
        let under = charged_under.get(payment).copied();
        if (200..300).contains(&status) && !by_another && under != Some(key.as_str()) {
            found.push(Violation::new(
                INV_KEY_BOUND,
                "a confirm is answered 2xx only for the key its payment is charged under",
                format!(
                    "confirm of payment {payment} with {key} was answered {status} {}, but the payment's charge is under {under:?}",
                    String::from_utf8_lossy(body)
                ),
            ));
        }
    }
}

/// Every payment's payback is the merchant's policy: `payback_bps` of the
/// amount (the servers' default) for a payment of an amount; for an
/// order's payment, the order's payback, which is each product line at its
/// product's rate plus each seat at the default, rounded down per line.
pub(super) fn paybacks_follow_the_policy(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
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
pub(super) fn payback_amount_is_refused(evidence: &Evidence<'_>, found: &mut Vec<Violation>) {
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
