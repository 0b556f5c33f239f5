//! The commit-time checks that mirror PostgreSQL's schema: unique ids and
//! keys, the version rule of each record under either concurrency mode, the
//! row constraints (no negative balance, stock within what was stocked, an
//! event within its active limit), one transfer of each kind per payment,
//! one charging payment per order, and a gateway payment key held by at most
//! one payment. A refused commit changes nothing: these run before any write
//! is applied.

use std::collections::BTreeMap;

use tally_core::ids::{OrderId, PaymentId};
use tally_core::ledger::Transfer;
use tally_core::payment::{Payment, PaymentStatus};
use tally_core::store::StoreError;

use super::{Concurrency, State, Write};

/// A payment that holds its order's charge: at most one per order, like the
/// schema's partial unique index.
fn charges_order(payment: &Payment) -> Option<OrderId> {
    let charging =
        matches!(payment.status, PaymentStatus::Confirming | PaymentStatus::Done | PaymentStatus::Cancelling);
    payment.order.filter(|_| charging)
}

pub(super) fn validate(state: &State, writes: &[Write], mode: Concurrency) -> Result<(), StoreError> {
    let stale = |current: Option<u64>, before: Option<u64>| mode == Concurrency::Optimistic && current != before;
    for write in writes {
        match write {
            Write::User(user) => {
                if state.users.contains_key(&user.id) || state.users_by_key.contains_key(&user.key_hash) {
                    return Err(StoreError::Integrity(format!("duplicate user {} or key", user.id)));
                }
            }
            Write::Wallet { before, after } => {
                if after.balance.is_negative() {
                    return Err(StoreError::Integrity(format!("wallet {} balance would be negative", after.user)));
                }
                let current = state.wallets.get(&after.user).map(|w| w.version);
                if before.is_none() && current.is_some() {
                    return Err(StoreError::Integrity(format!("duplicate wallet {}", after.user)));
                }
                if stale(current, *before) {
                    return Err(StoreError::Conflict);
                }
            }
            Write::Payment { before, after } => {
                let current = state.payments.get(&after.id).map(|p| p.version);
                if before.is_none() && current.is_some() {
                    return Err(StoreError::Integrity(format!("duplicate payment {}", after.id)));
                }
                if stale(current, *before) {
                    return Err(StoreError::Conflict);
                }
            }
            Write::Transfers(transfers) => {
                if let Some(t) = transfers.iter().find(|t| state.transfer_ids.contains_key(&t.id)) {
                    return Err(StoreError::Integrity(format!("duplicate transfer {}", t.id)));
                }
                // Like the schema's unique index: one transfer of each kind per payment.
                for t in transfers {
                    let Some(payment) = t.payment else { continue };
                    let key = (payment, t.kind.as_str());
                    let again =
                        |other: &Transfer| other.id != t.id && other.payment == Some(payment) && other.kind == t.kind;
                    if state.payment_kinds.contains(&key) || transfers.iter().any(again) {
                        return Err(StoreError::Integrity(format!("second {} transfer for payment {payment}", key.1)));
                    }
                }
                // Like the schema's unique index `transfers_wallet_position`:
                // one line per (wallet, position). A wallet written by two
                // transactions that both read it before either committed (a
                // lock let go early) books two lines at one position, and
                // PostgreSQL refuses the second commit; so does this store,
                // rather than lose the first write unseen.
                for t in transfers {
                    let Some(side) = t.wallet else { continue };
                    let position = |i: &usize| state.transfers[*i].wallet.map(|w| w.seq);
                    let booked = state
                        .wallet_ledgers
                        .get(&side.user)
                        .is_some_and(|line| line.binary_search_by_key(&Some(side.seq), position).is_ok());
                    let again = |other: &Transfer| {
                        other.id != t.id && other.wallet.is_some_and(|w| w.user == side.user && w.seq == side.seq)
                    };
                    if booked || transfers.iter().any(again) {
                        return Err(StoreError::Integrity(format!(
                            "second transfer at position {} of wallet {}",
                            side.seq, side.user
                        )));
                    }
                }
            }
            Write::Idempotency { before, after } => {
                let current = state.idempotency.get(&after.scope).map(|r| r.version);
                // Unique (user, key), like the PostgreSQL unique index: an
                // insert over a record someone else committed is refused even
                // without version checks.
                if before.is_none() && current.is_some() {
                    return Err(StoreError::Conflict);
                }
                if stale(current, *before) {
                    return Err(StoreError::Conflict);
                }
            }
            Write::DeleteIdempotency { before, scope } => {
                let current = state.idempotency.get(scope).map(|r| r.version);
                if stale(current, Some(*before)) {
                    return Err(StoreError::Conflict);
                }
            }
            Write::Product { before, after } => {
                if after.stock > after.stocked {
                    return Err(StoreError::Integrity(format!("product {} above what was stocked", after.id)));
                }
                versioned(state.products.get(&after.id).map(|p| p.version), *before, "product", mode)?;
            }
            Write::Event { before, after } => {
                if after.active_count > after.active_limit {
                    return Err(StoreError::Integrity(format!("event {} above its active limit", after.id)));
                }
                versioned(state.events.get(&after.id).map(|e| e.version), *before, "event", mode)?;
            }
            Write::Showtime(showtime) => {
                if state.showtimes.contains_key(&showtime.id) {
                    return Err(StoreError::Integrity(format!("duplicate showtime {}", showtime.id)));
                }
            }
            Write::Seat { before, after } => {
                versioned(state.seats.get(&after.id).map(|s| s.version), *before, "seat", mode)?;
            }
            Write::Order { before, after } => {
                versioned(state.orders.get(&after.id).map(|o| o.version), *before, "order", mode)?;
            }
            Write::Token { before, after } => {
                let current = state.tokens.get(&after.id).map(|t| t.version);
                versioned(current, *before, "token", mode)?;
                let taken = state.event_tokens.get(&after.event).and_then(|line| line.get(&after.seq));
                if before.is_none() && taken.is_some() {
                    // Two joins read the same counter: unique (event, seq).
                    return Err(StoreError::Conflict);
                }
            }
        }
    }
    // Like the schema's partial unique index: one charging payment per order.
    let mut charging: BTreeMap<OrderId, PaymentId> = BTreeMap::new();
    let written: std::collections::BTreeSet<PaymentId> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Payment { after, .. } => Some(after.id),
            _ => None,
        })
        .collect();
    for write in writes {
        if let Write::Payment { after, .. } = write
            && let Some(order) = charges_order(after)
        {
            charging.insert(order, after.id);
        }
    }
    // Like the schema's unique gateway_payment_key: a key claimed by another
    // payment refuses the commit. A conflict, as PostgreSQL's unique
    // violation maps to one: the use case decides again and sees the claim.
    for write in writes {
        if let Write::Payment { after, .. } = write
            && let Some(attempt) = &after.gateway
        {
            let claims = |p: &Payment| {
                p.id != after.id && p.gateway.as_ref().is_some_and(|a| a.payment_key == attempt.payment_key)
            };
            // Committed, or claimed by another payment of this same commit
            // (PostgreSQL's index refuses the second insert either way).
            let claimed = state.payments.values().any(claims)
                || writes.iter().any(|w| matches!(w, Write::Payment { after: other, .. } if claims(other)));
            if claimed {
                return Err(StoreError::Conflict);
            }
        }
    }
    for (order, payment) in &charging {
        let other = state
            .payments
            .values()
            .any(|p| p.id != *payment && !written.contains(&p.id) && charges_order(p) == Some(*order));
        if other {
            return Err(StoreError::Integrity(format!("a second charging payment for order {order}")));
        }
    }
    Ok(())
}

/// The version rule every record shares: an insert must be new; under
/// optimistic concurrency an update must be of the version read.
fn versioned(current: Option<u64>, before: Option<u64>, what: &str, mode: Concurrency) -> Result<(), StoreError> {
    if before.is_none() && current.is_some() {
        return Err(StoreError::Integrity(format!("duplicate {what}")));
    }
    if mode == Concurrency::Optimistic && current != before {
        return Err(StoreError::Conflict);
    }
    Ok(())
}
