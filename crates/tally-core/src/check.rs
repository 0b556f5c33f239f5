//! The invariant checker (SPEC.md invariants 1–8).
//!
//! Given everything a store holds ([`Snapshot`]), [`check`] reports every
//! violation by invariant. It recomputes what it can from the ledger alone
//! instead of trusting the stored aggregates, so a lost update in a wallet
//! row, a missing transfer or an extra one all show up. The tests, the
//! simulation and the load tool run this one checker.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::catalog::{Event, Product, Seat, SeatStatus};
use crate::idempotency::{IdemRecord, IdemScope, IdemState};
use crate::ids::{EventId, OpId, PaymentId, ProductId, SeatId, UserId};
use crate::ledger::{Account, Transfer, TransferKind};
use crate::money::Money;
use crate::order::{Order, OrderStatus};
use crate::payment::{Payment, PaymentStatus};
use crate::queue::{QueueToken, TokenStatus};
use crate::time::Timestamp;
use crate::wallet::Wallet;

/// Everything the checker reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub wallets: Vec<Wallet>,
    pub payments: Vec<Payment>,
    pub transfers: Vec<Transfer>,
    pub idempotency: Vec<IdemRecord>,
    pub products: Vec<Product>,
    pub orders: Vec<Order>,
    pub events: Vec<Event>,
    pub seats: Vec<Seat>,
    pub tokens: Vec<QueueToken>,
}

impl Snapshot {
    /// What was read, counted: the first line of every checker report.
    pub fn summary(&self) -> String {
        format!(
            "{} wallets, {} payments, {} transfers, {} idempotency keys, {} products, {} orders, {} events, {} seats, \
             {} queue tokens",
            self.wallets.len(),
            self.payments.len(),
            self.transfers.len(),
            self.idempotency.len(),
            self.products.len(),
            self.orders.len(),
            self.events.len(),
            self.seats.len(),
            self.tokens.len(),
        )
    }
}

/// SPEC.md's invariants, by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// 1. A payment is charged at most once.
    ChargedAtMostOnce = 1,
    /// 2. One idempotency key has at most one effect.
    OneEffectPerKey = 2,
    /// 3. Wallet balance is within bounds and equals the sum of its ledger.
    WalletMatchesLedger = 3,
    /// 4. Money is conserved: all accounts sum to zero.
    MoneyConserved = 4,
    /// 5. Stock never negative; available plus reserved equals ever stocked.
    StockConserved = 5,
    /// 6. A seat is held or sold by at most one order at a time.
    SeatOneOrder = 6,
    /// 7. An order is paid exactly when it has one done payment; expired and
    ///    cancelled orders have no net charge.
    OrderMatchesPayment = 7,
    /// 8. Never more than K active queue tokens per event.
    QueueWithinLimit = 8,
}

impl Invariant {
    pub const fn name(self) -> &'static str {
        match self {
            Invariant::ChargedAtMostOnce => "payment charged at most once",
            Invariant::OneEffectPerKey => "one effect per idempotency key",
            Invariant::WalletMatchesLedger => "wallet within limits and equal to its ledger",
            Invariant::MoneyConserved => "money conserved",
            Invariant::StockConserved => "stock never negative and conserved",
            Invariant::SeatOneOrder => "a seat belongs to at most one order",
            Invariant::OrderMatchesPayment => "an order is paid exactly when one payment is done",
            Invariant::QueueWithinLimit => "at most K active queue tokens per event",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant {} ({}): {}", self.invariant as u8, self.invariant.name(), self.detail)
    }
}

/// All violations in `snapshot`; empty means every invariant holds.
pub fn check(snapshot: &Snapshot) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut report = |invariant: Invariant, detail: String| found.push(Violation { invariant, detail });
    check_payments(snapshot, &mut report);
    check_idempotency(snapshot, &mut report);
    check_wallets(snapshot, &mut report);
    check_conservation(snapshot, &mut report);
    check_stock(snapshot, &mut report);
    check_seats(snapshot, &mut report);
    check_token_seats(snapshot, &mut report);
    check_orders(snapshot, &mut report);
    check_queues(snapshot, &mut report);
    found
}

/// Panics with every violation listed; for tests.
pub fn assert_holds(snapshot: &Snapshot) {
    let violations = check(snapshot);
    if !violations.is_empty() {
        let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
        panic!("{} invariant violation(s):\n  {}", violations.len(), lines.join("\n  "));
    }
}

/// `items` grouped by the record each names, if it names one, once every
/// named record that is not `known` is reported ("`items` name unknown
/// `record` …").
fn grouped_by<'a, T, K: Ord + Copy + fmt::Display>(
    items: &'a [T],
    names: impl Fn(&T) -> Option<K>,
    known: impl Iterator<Item = K>,
    (items_are, record): (&str, &str),
    inv: Invariant,
    report: &mut impl FnMut(Invariant, String),
) -> BTreeMap<K, Vec<&'a T>> {
    let mut grouped: BTreeMap<K, Vec<&T>> = BTreeMap::new();
    for item in items {
        if let Some(key) = names(item) {
            grouped.entry(key).or_default().push(item);
        }
    }
    let known: BTreeSet<K> = known.collect();
    for key in grouped.keys().filter(|key| !known.contains(key)) {
        report(inv, format!("{items_are} name unknown {record} {key}"));
    }
    grouped
}

fn check_payments(snapshot: &Snapshot, report: &mut impl FnMut(Invariant, String)) {
    let inv = Invariant::ChargedAtMostOnce;
    let known = snapshot.payments.iter().map(|p| p.id);
    let by_payment = grouped_by(&snapshot.transfers, |t| t.payment, known, ("transfers", "payment"), inv, report);
    // A gateway payment key belongs to one payment, forever: one card charge
    // can never pay (or be refunded for) two payments.
    let mut by_key: BTreeMap<&str, PaymentId> = BTreeMap::new();
    for payment in &snapshot.payments {
        if let Some(attempt) = &payment.gateway
            && let Some(other) = by_key.insert(attempt.payment_key.as_str(), payment.id)
        {
            report(inv, format!("payments {other} and {} claim one payment key", payment.id));
        }
    }
    for payment in &snapshot.payments {
        let transfers = by_payment.get(&payment.id).map(Vec::as_slice).unwrap_or_default();
        let count = |kind: TransferKind| transfers.iter().filter(|t| t.kind == kind).count();
        let (charges, refunds) = (count(TransferKind::Payment), count(TransferKind::Refund));
        let (paybacks, reversals) = (count(TransferKind::Payback), count(TransferKind::PaybackReversal));
        let expected_charges = match payment.status {
            PaymentStatus::Done | PaymentStatus::Cancelling => 1,
            // Refunding: a wrong charge on its way back; our books never took it.
            PaymentStatus::Wait | PaymentStatus::Confirming | PaymentStatus::Failed | PaymentStatus::Refunding => 0,
            // Cancelled from wait: nothing moved; from done: one charge, one refund.
            PaymentStatus::Cancelled => charges.min(1),
        };
        let expected_refunds = if payment.status == PaymentStatus::Cancelled { expected_charges } else { 0 };
        if charges != expected_charges || refunds != expected_refunds {
            report(
                inv,
                format!(
                    "payment {} is {} with {charges} charge(s) and {refunds} refund(s)",
                    payment.id,
                    payment.status.as_str()
                ),
            );
        }
        let with_payback = usize::from(!payment.payback.is_negative() && payment.payback != Money::ZERO);
        // A gateway cancel reverses the payback when it begins, before the
        // refund is sent (no refusal after an irreversible foreign effect).
        let expected_reversals = if payment.status == PaymentStatus::Cancelling { 1 } else { expected_refunds };
        if paybacks != expected_charges * with_payback || reversals != expected_reversals * with_payback {
            report(inv, format!("payment {} has {paybacks} payback(s) and {reversals} reversal(s)", payment.id));
        }
        for transfer in transfers {
            let expected = match transfer.kind {
                TransferKind::Payment | TransferKind::Refund => payment.amount.money(),
                TransferKind::Payback | TransferKind::PaybackReversal => payment.payback,
                TransferKind::TopUp => {
                    report(inv, format!("top-up {} names payment {}", transfer.id, payment.id));
                    continue;
                }
            };
            if transfer.amount.money() != expected {
                report(
                    inv,
                    format!(
                        "transfer {} moves {} for payment {} of {expected}",
                        transfer.id, transfer.amount, payment.id
                    ),
                );
            }
            // A wallet payment moves the payer's wallet; a gateway payment's
            // charge and refund move the outside world, and only its payback
            // and reversal touch the payer's wallet.
            let through_gateway = payment.method == crate::payment::Method::Gateway
                && matches!(transfer.kind, TransferKind::Payment | TransferKind::Refund);
            let expected_wallet = if through_gateway { None } else { Some(payment.user) };
            if transfer.wallet.map(|side| side.user) != expected_wallet {
                report(inv, format!("transfer {} of payment {} touches the wrong wallet", transfer.id, payment.id));
            }
        }
    }
}

fn check_idempotency(snapshot: &Snapshot, report: &mut impl FnMut(Invariant, String)) {
    let inv = Invariant::OneEffectPerKey;
    let mut seen = BTreeSet::new();
    for record in &snapshot.idempotency {
        if !seen.insert(&record.scope) {
            report(inv, format!("two records for key {:?} of user {}", record.scope.key.as_str(), record.scope.user));
        }
    }
    // Per key, each execution that booked transfers: when it booked, and when
    // the admission it ran under expires.
    let mut effects: BTreeMap<&IdemScope, BTreeMap<OpId, (Timestamp, Timestamp)>> = BTreeMap::new();
    for transfer in &snapshot.transfers {
        if let Some(origin) = &transfer.origin {
            let entry = effects
                .entry(&origin.scope)
                .or_default()
                .entry(transfer.op)
                .or_insert((transfer.at, origin.expires_at));
            entry.0 = entry.0.min(transfer.at);
        }
    }
    for (scope, executions) in &effects {
        let key = scope.key.as_str();
        let mut by_time: Vec<(Timestamp, Timestamp, OpId)> =
            executions.iter().map(|(op, (at, exp))| (*at, *exp, *op)).collect();
        by_time.sort();
        // A key may be used afresh only once it expired: two effects under
        // one live key are a double effect.
        for pair in by_time.windows(2) {
            let ((_, expires, first), (at, _, second)) =
                ((pair[0].0, pair[0].1, pair[0].2), (pair[1].0, pair[1].1, pair[1].2));
            if at < expires {
                report(
                    inv,
                    format!("key {key:?} of user {} took effect twice while live ({first:?}, {second:?})", scope.user),
                );
            }
        }
        // The effect and its completed record commit together.
        let Some(record) = snapshot.idempotency.iter().find(|r| &r.scope == *scope) else {
            continue;
        };
        let current: Vec<OpId> =
            by_time.iter().filter(|(_, exp, _)| *exp == record.expires_at).map(|(_, _, op)| *op).collect();
        if current.is_empty() {
            continue;
        }
        match &record.state {
            IdemState::Completed { op: Some(op), .. } if current == [*op] => {}
            IdemState::Completed { op, .. } => {
                report(inv, format!("key {key:?}: record names execution {op:?}, the ledger has {current:?}"));
            }
            IdemState::InFlight { .. } => {
                report(inv, format!("key {key:?} has an effect but its record is still in flight"));
            }
        }
    }
}

fn check_wallets(snapshot: &Snapshot, report: &mut impl FnMut(Invariant, String)) {
    let inv = Invariant::WalletMatchesLedger;
    let mut lines: BTreeMap<UserId, Vec<&Transfer>> = BTreeMap::new();
    for transfer in &snapshot.transfers {
        if let Some(side) = transfer.wallet {
            lines.entry(side.user).or_default().push(transfer);
        }
    }
    let mut held: BTreeMap<UserId, Money> = BTreeMap::new();
    for payment in snapshot.payments.iter().filter(|p| p.status == crate::payment::PaymentStatus::Confirming) {
        let total = held.entry(payment.user).or_default();
        *total = total.checked_add(payment.payback).expect("bounded sums");
    }
    for wallet in &snapshot.wallets {
        let user = wallet.user;
        if wallet.balance.is_negative() {
            report(inv, format!("wallet {user} balance {} is negative", wallet.balance));
        }
        // Held paybacks count against the ceiling: crediting them once
        // their charges land must fit.
        let committed = wallet.balance.checked_add(wallet.payback_held).expect("bounded sums");
        let ceiling = wallet.limits.max_balance.unwrap_or(Money::BALANCE_LIMIT).min(Money::BALANCE_LIMIT);
        if committed > ceiling {
            report(
                inv,
                format!(
                    "wallet {user} balance {} with {} payback held is above its ceiling {ceiling}",
                    wallet.balance, wallet.payback_held
                ),
            );
        }
        let expected_held = held.remove(&user).unwrap_or_default();
        if wallet.payback_held != expected_held {
            report(
                inv,
                format!(
                    "wallet {user} holds {} of payback, its confirming payments {expected_held}",
                    wallet.payback_held
                ),
            );
        }
        let mut entries = lines.remove(&user).unwrap_or_default();
        entries.sort_by_key(|t| t.wallet.map(|side| side.seq));
        let mut running = Money::ZERO;
        let mut paid_per_day: BTreeMap<i64, Money> = BTreeMap::new();
        let mut paid_per_month: BTreeMap<i64, Money> = BTreeMap::new();
        // Windows never move backwards: a payment stamped before the newest
        // window the wallet saw counts in that window (see Wallet::spent_at).
        let (mut window_day, mut window_month) = (i64::MIN, i64::MIN);
        for (index, transfer) in entries.iter().enumerate() {
            let side = transfer.wallet.expect("grouped by wallet side");
            running = running.checked_add(transfer.delta(Account::Wallet(user))).expect("bounded sums");
            if side.seq != index as u64 + 1 {
                report(
                    inv,
                    format!(
                        "wallet {user} ledger entry {} has position {} instead of {}",
                        transfer.id,
                        side.seq,
                        index + 1
                    ),
                );
            }
            if side.balance_after != running {
                report(
                    inv,
                    format!(
                        "wallet {user} entry {} says balance {} but the ledger sums to {running}",
                        transfer.id, side.balance_after
                    ),
                );
            }
            if running.is_negative() {
                report(inv, format!("wallet {user} went negative ({running}) at entry {}", transfer.id));
            }
            if transfer.kind == TransferKind::Payment {
                let add = |map: &mut BTreeMap<i64, Money>, window| {
                    let total = map.entry(window).or_default();
                    *total = total.checked_add(transfer.amount.money()).expect("bounded sums");
                };
                window_day = window_day.max(transfer.at.day());
                window_month = window_month.max(transfer.at.month());
                add(&mut paid_per_day, window_day);
                add(&mut paid_per_month, window_month);
            }
        }
        if running != wallet.balance {
            report(inv, format!("wallet {user} balance {} but its ledger sums to {running}", wallet.balance));
        }
        if wallet.entry_count != entries.len() as u64 {
            report(
                inv,
                format!("wallet {user} counts {} entries, the ledger has {}", wallet.entry_count, entries.len()),
            );
        }
        for (day, total) in paid_per_day {
            if wallet.limits.daily.is_some_and(|limit| total > limit) {
                report(inv, format!("wallet {user} paid {total} on day {day}, above its daily limit"));
            }
        }
        for (month, total) in paid_per_month {
            if wallet.limits.monthly.is_some_and(|limit| total > limit) {
                report(inv, format!("wallet {user} paid {total} in month {month}, above its monthly limit"));
            }
        }
    }
    for user in lines.keys() {
        report(inv, format!("ledger entries for unknown wallet {user}"));
    }
}

fn check_conservation(snapshot: &Snapshot, report: &mut impl FnMut(Invariant, String)) {
    let inv = Invariant::MoneyConserved;
    let mut system = Money::ZERO;
    for transfer in &snapshot.transfers {
        if transfer.debit == transfer.credit {
            report(inv, format!("transfer {} moves money from an account to itself", transfer.id));
        }
        for account in [Account::World, Account::Revenue, Account::CashbackPool] {
            system = system.checked_add(transfer.delta(account)).expect("bounded sums");
        }
    }
    // The wallets' *stored* balances, not the ledger's: a wallet row that
    // drifted from its ledger breaks conservation here.
    let wallets =
        snapshot.wallets.iter().try_fold(Money::ZERO, |sum, w| sum.checked_add(w.balance)).expect("bounded sums");
    let total = system.checked_add(wallets).expect("bounded sums");
    if total != Money::ZERO {
        report(inv, format!("all accounts sum to {total}, not 0 (wallets {wallets}, system {system})"));
    }
}

fn check_stock(snapshot: &Snapshot, report: &mut impl FnMut(Invariant, String)) {
    let inv = Invariant::StockConserved;
    let mut reserved: BTreeMap<ProductId, u64> = BTreeMap::new();
    for order in snapshot.orders.iter().filter(|o| o.status.reserves()) {
        for line in &order.lines {
            *reserved.entry(line.product).or_default() += line.quantity;
        }
    }
    let known: BTreeSet<ProductId> = snapshot.products.iter().map(|p| p.id).collect();
    for product in reserved.keys().filter(|id| !known.contains(id)) {
        report(inv, format!("orders reserve unknown product {product}"));
    }
    for product in &snapshot.products {
        let held = reserved.get(&product.id).copied().unwrap_or(0);
        // `stock` is unsigned, so "negative" shows as available + reserved
        // above what was ever stocked (an oversell) or below it (a lost unit).
        if product.stock.checked_add(held) != Some(product.stocked) {
            report(
                inv,
                format!(
                    "product {}: {} available + {held} reserved by orders, but {} were ever stocked",
                    product.id, product.stock, product.stocked
                ),
            );
        }
    }
}

fn check_seats(snapshot: &Snapshot, report: &mut impl FnMut(Invariant, String)) {
    let inv = Invariant::SeatOneOrder;
    let mut holders: BTreeMap<SeatId, Vec<&Order>> = BTreeMap::new();
    for order in snapshot.orders.iter().filter(|o| o.status.reserves()) {
        for seat in &order.seats {
            holders.entry(seat.seat).or_default().push(order);
        }
    }
    let known: BTreeSet<SeatId> = snapshot.seats.iter().map(|s| s.id).collect();
    for seat in holders.keys().filter(|id| !known.contains(id)) {
        report(inv, format!("orders hold unknown seat {seat}"));
    }
    for seat in &snapshot.seats {
        let orders = holders.get(&seat.id).map(Vec::as_slice).unwrap_or_default();
        if orders.len() > 1 {
            let ids: Vec<String> = orders.iter().map(|o| o.id.to_string()).collect();
            report(
                inv,
                format!("seat {} ({}) is held by {} orders: {}", seat.id, seat.label, orders.len(), ids.join(", ")),
            );
            continue;
        }
        let expected = match orders.first() {
            None => SeatStatus::Available,
            Some(order) if order.status == OrderStatus::Paid => SeatStatus::Sold(order.id),
            Some(order) => SeatStatus::Held(order.id),
        };
        if seat.status != expected {
            report(
                inv,
                format!("seat {} ({}) is {:?} but its orders say {:?}", seat.id, seat.label, seat.status, expected),
            );
        }
    }
}

/// Seat hoarding (SPEC.md's `max_seats_per_token`), read with invariant 6: a
/// token's count is what its live orders hold, never above its event's limit.
fn check_token_seats(snapshot: &Snapshot, report: &mut impl FnMut(Invariant, String)) {
    let inv = Invariant::SeatOneOrder;
    let mut held: BTreeMap<crate::ids::TokenId, u64> = BTreeMap::new();
    for order in snapshot.orders.iter().filter(|o| o.status.reserves()) {
        if let Some(token) = order.token {
            *held.entry(token).or_default() += order.seats.len() as u64;
        }
    }
    let limits: BTreeMap<EventId, u32> = snapshot.events.iter().map(|e| (e.id, e.max_seats_per_token)).collect();
    for token in &snapshot.tokens {
        let expected = held.remove(&token.id).unwrap_or_default();
        if u64::from(token.seats_held) != expected {
            report(
                inv,
                format!("token {} counts {} seats, its live orders hold {expected}", token.id, token.seats_held),
            );
        }
        if let Some(limit) = limits.get(&token.event).filter(|limit| expected > u64::from(**limit)) {
            report(inv, format!("token {} holds {expected} seats, above its event's {limit} per token", token.id));
        }
    }
    for token in held.keys() {
        report(inv, format!("orders name unknown token {token}"));
    }
}

fn check_orders(snapshot: &Snapshot, report: &mut impl FnMut(Invariant, String)) {
    let inv = Invariant::OrderMatchesPayment;
    let known = snapshot.orders.iter().map(|o| o.id);
    let by_order = grouped_by(&snapshot.payments, |p| p.order, known, ("payments", "order"), inv, report);
    for order in &snapshot.orders {
        let payments = by_order.get(&order.id).map(Vec::as_slice).unwrap_or_default();
        // Charged and not refunded: done, or on its way back (cancelling).
        let charged: Vec<&&Payment> =
            payments.iter().filter(|p| matches!(p.status, PaymentStatus::Done | PaymentStatus::Cancelling)).collect();
        let in_flight = payments.iter().filter(|p| p.status == PaymentStatus::Confirming).count();
        let id = order.id;
        for payment in payments.iter().filter(|p| p.amount != order.total) {
            report(
                inv,
                format!(
                    "payment {} of order {id} is for {}, the order totals {}",
                    payment.id, payment.amount, order.total
                ),
            );
        }
        match order.status {
            OrderStatus::Paid => {
                if charged.len() != 1 || order.payment != Some(charged[0].id) {
                    report(inv, format!("order {id} is paid with {} charged payment(s)", charged.len()));
                }
            }
            OrderStatus::PendingPayment => {
                if !charged.is_empty() {
                    report(inv, format!("order {id} is unpaid but {} payment(s) for it are charged", charged.len()));
                }
                if in_flight > 1 || (in_flight == 1) != order.payment.is_some() {
                    report(inv, format!("order {id} has {in_flight} charge(s) in flight, paying {:?}", order.payment));
                }
            }
            OrderStatus::Cancelled | OrderStatus::Expired => {
                if !charged.is_empty() || in_flight != 0 {
                    report(
                        inv,
                        format!(
                            "order {id} is {} but {} payment(s) for it are charged, {in_flight} in flight",
                            order.status.as_str(),
                            charged.len()
                        ),
                    );
                }
            }
        }
    }
}

fn check_queues(snapshot: &Snapshot, report: &mut impl FnMut(Invariant, String)) {
    let inv = Invariant::QueueWithinLimit;
    let mut by_event: BTreeMap<EventId, Vec<&QueueToken>> = BTreeMap::new();
    for token in &snapshot.tokens {
        by_event.entry(token.event).or_default().push(token);
    }
    for event in &snapshot.events {
        let tokens = by_event.remove(&event.id).unwrap_or_default();
        let limit = event.active_limit as usize;
        let active = tokens.iter().filter(|t| t.status == TokenStatus::Active).count();
        if active > limit || active != event.active_count as usize {
            report(
                inv,
                format!(
                    "event {} has {active} active tokens (counted {}, limit {limit})",
                    event.id, event.active_count
                ),
            );
        }
        // Over time, too: at every promotion, the tokens whose activity
        // covers that instant number at most K.
        let intervals: Vec<(Timestamp, Timestamp)> =
            tokens.iter().filter_map(|t| Some((t.activated_at?, t.active_until()?))).collect();
        for (start, _) in &intervals {
            let covering = intervals.iter().filter(|(from, until)| from <= start && start < until).count();
            if covering > limit {
                report(inv, format!("event {}: {covering} tokens active at {start:?}, limit {limit}", event.id));
                break;
            }
        }
        let mut seqs: Vec<u64> = tokens.iter().map(|t| t.seq).collect();
        seqs.sort_unstable();
        if seqs.windows(2).any(|w| w[0] == w[1]) {
            report(inv, format!("event {}: two tokens share a place in line", event.id));
        }
    }
    for event in by_event.keys() {
        report(inv, format!("tokens of unknown event {event}"));
    }
}
