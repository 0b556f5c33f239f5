//! Random sequences of use-case calls against a sequential reference model.
//!
//! The model below is written from SPEC.md, independently of `tally-core`'s
//! code: plain integers, a list of payments, a map of idempotency keys. After
//! every step the real service (on the in-memory store) and the model must
//! agree on the answer's kind, every balance and every payment's status; at
//! the end the invariant checker runs on the real store.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use tally_core::Error;
use tally_core::app::{Command, Executed, Outcome};
use tally_core::check::assert_holds;
use tally_core::idempotency::StoredResponse;
use tally_core::ids::{PaymentId, UserId};
use tally_core::money::{Amount, Money};
use tally_core::payment::{Method, PaymentStatus};
use tally_core::wallet::{LimitKind, Limits, WalletError};

const DAY_MS: i64 = 86_400_000;
const TTL_MS: i64 = 24 * 3_600_000;

#[derive(Clone, Debug)]
enum Op {
    TopUp { user: usize, amount: i64, key: Option<u8> },
    Create { user: usize, amount: i64, key: Option<u8> },
    Confirm { user: usize, payment: usize, key: Option<u8> },
    Cancel { user: usize, payment: usize, key: Option<u8> },
    Advance { hours: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..2usize;
    let key = proptest::option::weighted(0.4, 0..3u8);
    prop_oneof![
        3 => (user.clone(), 1..400i64, key.clone()).prop_map(|(user, amount, key)| Op::TopUp { user, amount, key }),
        3 => (user.clone(), 1..350i64, key.clone()).prop_map(|(user, amount, key)| Op::Create { user, amount, key }),
        4 => (user.clone(), 0..8usize, key.clone()).prop_map(|(user, payment, key)| Op::Confirm { user, payment, key }),
        2 => (user, 0..8usize, key).prop_map(|(user, payment, key)| Op::Cancel { user, payment, key }),
        1 => (0..30u64).prop_map(|hours| Op::Advance { hours }),
    ]
}

/// What an answer was, coarsely enough that model and service can agree.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Done,
    Refused(Error),
    Replayed,
    Reused,
}

#[derive(Clone, Debug)]
struct ModelPayment {
    owner: usize,
    amount: i64,
    payback: i64,
    status: PaymentStatus,
}

#[derive(Clone, Debug)]
struct ModelWallet {
    balance: i64,
    limits: Limits,
    spent: BTreeMap<i64, i64>,       // per day
    spent_month: BTreeMap<i64, i64>, // per month
}

#[derive(Debug, Default)]
struct Model {
    now: i64,
    wallets: Vec<ModelWallet>,
    payments: Vec<ModelPayment>,
    /// (user, key) → (the op's text, when it expires, was it stored).
    keys: BTreeMap<(usize, u8), (String, i64)>,
}

fn limit(value: Option<Money>) -> i64 {
    value.map_or(i64::MAX, Money::minor_units)
}

impl Model {
    fn month(&self) -> i64 {
        tally_core::time::Timestamp(self.now).month()
    }

    /// The model's answer to `op`, updating the model.
    fn step(&mut self, op: &Op, text: &str) -> Answer {
        let (user, key) = match op {
            Op::Advance { hours } => {
                self.now += i64::try_from(*hours).unwrap() * 3_600_000;
                return Answer::Done;
            }
            Op::TopUp { user, key, .. }
            | Op::Create { user, key, .. }
            | Op::Confirm { user, key, .. }
            | Op::Cancel { user, key, .. } => (*user, *key),
        };
        if let Some((first, expires)) = key.and_then(|key| self.keys.get(&(user, key)))
            && *expires > self.now
        {
            return if first == text { Answer::Replayed } else { Answer::Reused };
        }
        let answer = self.apply(op);
        // Successes and refusals are stored under the key.
        if let Some(key) = key {
            self.keys.insert((user, key), (text.to_owned(), self.now + TTL_MS));
        }
        answer
    }

    fn apply(&mut self, op: &Op) -> Answer {
        let refused = |e: WalletError| Answer::Refused(Error::Wallet(e));
        let (day, month) = (self.now.div_euclid(DAY_MS), self.month());
        match *op {
            Op::TopUp { user, amount, .. } => {
                let w = &mut self.wallets[user];
                if w.balance + amount > limit(w.limits.max_balance) {
                    return refused(WalletError::MaxBalanceExceeded);
                }
                w.balance += amount;
                Answer::Done
            }
            Op::Create { user, amount, .. } => {
                // The merchant's policy, restated: floor(amount × bps / 10,000).
                let payback = amount * i64::from(PAYBACK_BPS) / 10_000;
                if amount > limit(self.wallets[user].limits.per_payment) {
                    return refused(WalletError::LimitExceeded(LimitKind::PerPayment));
                }
                self.payments.push(ModelPayment { owner: user, amount, payback, status: PaymentStatus::Wait });
                Answer::Done
            }
            Op::Confirm { user, payment, .. } | Op::Cancel { user, payment, .. } => {
                let confirm = matches!(op, Op::Confirm { .. });
                let Some(p) = self.payments.get(payment).filter(|p| p.owner == user).cloned() else {
                    return Answer::Refused(Error::NotFound);
                };
                let w = &mut self.wallets[user];
                let event = if confirm {
                    tally_core::payment::PaymentEvent::Confirm
                } else {
                    tally_core::payment::PaymentEvent::Cancel
                };
                let invalid = Answer::Refused(Error::Transition(tally_core::payment::InvalidTransition {
                    from: p.status,
                    event,
                }));
                let next = match (p.status, confirm) {
                    (PaymentStatus::Wait, true) => {
                        let spent_day = w.spent.get(&day).copied().unwrap_or(0) + p.amount;
                        let spent_month = w.spent_month.get(&month).copied().unwrap_or(0) + p.amount;
                        if p.amount > limit(w.limits.per_payment) {
                            return refused(WalletError::LimitExceeded(LimitKind::PerPayment));
                        }
                        if spent_day > limit(w.limits.daily) {
                            return refused(WalletError::LimitExceeded(LimitKind::Daily));
                        }
                        if spent_month > limit(w.limits.monthly) {
                            return refused(WalletError::LimitExceeded(LimitKind::Monthly));
                        }
                        if w.balance < p.amount {
                            return refused(WalletError::InsufficientBalance);
                        }
                        w.balance += p.payback - p.amount;
                        w.spent.insert(day, spent_day);
                        w.spent_month.insert(month, spent_month);
                        PaymentStatus::Done
                    }
                    (PaymentStatus::Wait, false) => PaymentStatus::Cancelled,
                    (PaymentStatus::Done, false) => {
                        // Two ledger lines, each balance between zero and the
                        // ceiling: the reversal first while the wallet holds
                        // the payback, else the refund first (hole 14).
                        let lines =
                            if w.balance >= p.payback { [-p.payback, p.amount] } else { [p.amount, -p.payback] };
                        let mut running = w.balance;
                        for delta in lines {
                            running += delta;
                            if running > limit(w.limits.max_balance) {
                                return refused(WalletError::MaxBalanceExceeded);
                            }
                            assert!(running >= 0, "a payback never exceeds its amount");
                        }
                        w.balance = running;
                        PaymentStatus::Cancelled
                    }
                    _ => return invalid,
                };
                self.payments[payment].status = next;
                Answer::Done
            }
            Op::Advance { .. } => unreachable!("handled in step"),
        }
    }
}

fn command(op: &Op, ids: &[PaymentId]) -> Command {
    let missing = PaymentId(u128::MAX);
    match *op {
        Op::TopUp { amount, .. } => Command::TopUp { amount: Amount::new(amount).unwrap() },
        Op::Create { amount, .. } => {
            Command::CreatePayment { amount: Amount::new(amount).unwrap(), method: Method::Wallet, confirm: false }
        }
        Op::Confirm { payment, .. } => {
            Command::ConfirmPayment { payment: ids.get(payment).copied().unwrap_or(missing), payment_key: None }
        }
        Op::Cancel { payment, .. } => Command::CancelPayment { payment: ids.get(payment).copied().unwrap_or(missing) },
        Op::Advance { .. } => unreachable!(),
    }
}

fn limits() -> [Limits; 2] {
    [
        Limits { daily: Some(Money::new(500)), max_balance: Some(Money::new(1_500)), ..Limits::default() },
        Limits { per_payment: Some(Money::new(300)), monthly: Some(Money::new(2_000)), ..Limits::default() },
    ]
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let app = locked();
    block_on(async {
        let mut model = Model { now: START.0, ..Model::default() };
        let mut users: Vec<UserId> = Vec::new();
        for limits in limits() {
            users.push(user_with(&app, limits, 0).await);
            model.wallets.push(ModelWallet {
                balance: 0,
                limits,
                spent: BTreeMap::new(),
                spent_month: BTreeMap::new(),
            });
        }
        let mut ids: Vec<PaymentId> = Vec::new();
        // The first stored response per (user, key), to check replays byte for byte.
        let mut stored: BTreeMap<(usize, u8), StoredResponse> = BTreeMap::new();
        for (step, op) in ops.iter().enumerate() {
            if let Op::Advance { hours } = op {
                app.clock().advance(Duration::from_secs(hours * 3_600));
                model.step(op, "");
                continue;
            }
            let cmd = command(op, &ids);
            let text = format!("{cmd:?}");
            let expected = model.step(op, &text);
            let (user, key) = match op {
                Op::TopUp { user, key, .. }
                | Op::Create { user, key, .. }
                | Op::Confirm { user, key, .. }
                | Op::Cancel { user, key, .. } => (*user, *key),
                Op::Advance { .. } => unreachable!(),
            };
            let keyed_request = key.map(|k| keyed(&format!("key-{k}"), &cmd));
            let result = app.execute(users[user], cmd, keyed_request).await;
            let actual = match &result {
                Ok(Executed::Fresh(outcome)) => {
                    if let Outcome::Payment(p) = outcome
                        && !ids.contains(&p.id)
                    {
                        ids.push(p.id);
                    }
                    Answer::Done
                }
                Ok(Executed::Replayed(response)) => {
                    let first = stored.get(&(user, key.unwrap()));
                    prop_assert_eq!(Some(response), first, "step {}: replay differs from the first response", step);
                    Answer::Replayed
                }
                Err(Error::IdempotencyKeyReused) => Answer::Reused,
                Err(error) => Answer::Refused(error.clone()),
            };
            if let (Some(k), Answer::Done | Answer::Refused(_)) = (key, &actual) {
                let fresh = result.clone().map(|e| match e {
                    Executed::Fresh(outcome) => outcome,
                    Executed::Replayed(_) => unreachable!(),
                });
                stored.insert((user, k), render(&fresh).expect("successes and refusals are stored"));
            }
            prop_assert_eq!(&actual, &expected, "step {}: {:?}", step, op);
            for (index, user) in users.iter().enumerate() {
                prop_assert_eq!(
                    balance(&app, *user).await.minor_units(),
                    model.wallets[index].balance,
                    "step {} balance of user {}",
                    step,
                    index
                );
            }
            for (index, id) in ids.iter().enumerate() {
                let owner = users[model.payments[index].owner];
                prop_assert_eq!(
                    payment(&app, owner, *id).await.status,
                    model.payments[index].status,
                    "step {} payment {}",
                    step,
                    index
                );
            }
        }
        assert_holds(&app.snapshot().await.unwrap());
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The service agrees with the reference model after every step.
    #[test]
    fn service_matches_reference_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops)?;
    }
}
