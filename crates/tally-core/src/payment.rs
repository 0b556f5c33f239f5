//! Payments and their state machine (seed 001's two steps; seed 003's gateway).
//!
//! ```text
//!  wallet:   wait ──confirm──► done ──cancel (refund + payback reversal)──► cancelled
//!  gateway:  wait ──begin_confirm──► confirming ──confirm──► done ──begin_cancel──► cancelling ──cancel──► cancelled
//!  both:     wait ──cancel (nothing moved)──► cancelled;  wait | confirming ──fail──► failed
//!  gateway:  confirming ──begin_refund──► refunding ──refunded──► failed
//!  gateway:  confirming ──give_up──► failed (watched) ──begin_refund──► refunding
//!            failed (watched) ──stop_watching──► failed
//! ```
//!
//! `refunding` is a refund we owe: the gateway charged our payment another
//! amount than ours (seed 003's tampering case), so the payment failed and the
//! charge must go back to the card. It is durable, like `cancelling`: the
//! completer re-sends the (idempotent) gateway cancel until the gateway says
//! the money went back, and only then is the payment `failed`.
//!
//! A confirm the gateway still does not know after the give-up deadline is
//! failed (`give_up`), but the gateway may yet carry it out: a confirm held in
//! its queue, a clock that stepped. So the failed payment stays *watched* for
//! a horizon ([`GatewayAttempt::watch_until`]): the completer keeps looking
//! its key up, and a charge of ours that lands is owed back like a wrong one
//! (`failed → refunding → failed`). Once the gateway can no longer charge it
//! (past the horizon, or the key is charged for another order, or cancelled),
//! `stop_watching` ends the watch. Its lookups thin out the longer it is
//! watched ([`watch_backoff`]), so a watch costs the gateway a handful of
//! lookups, not one per completer pass.
//!
//! [`Payment::transition`] is the only way a payment's status changes. Every
//! arrow not drawn above is refused with [`InvalidTransition`], which is what
//! makes a second confirm, or a second cancel, a refusal instead of a second
//! charge or a second refund.
//!
//! A gateway payment is confirmed in phases around the one foreign call
//! (rocket-rides' atomic phases): `begin_confirm` records the intent and
//! commits, the gateway is called with no transaction open, and `confirm` or
//! `fail` records what the gateway said. `confirming` is where a payment waits
//! while the outcome is unknown; it is resolved by looking the payment up at
//! the gateway, never by sending the confirm again.

use crate::idempotency::IdemKey;
use crate::ids::{OrderId, PaymentId, UserId};
use crate::money::{Amount, Money};
use crate::time::Timestamp;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    Wait,
    /// Gateway only: the confirm was (or is being) sent; outcome not yet recorded.
    Confirming,
    Done,
    Failed,
    /// Gateway only: the cancel was (or is being) sent; outcome not yet recorded.
    Cancelling,
    Cancelled,
    /// Gateway only: failed, with a refund of a wrong charge owed at the
    /// gateway (the cancel was or is being sent); ends `failed`.
    Refunding,
}

impl PaymentStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Wait => "wait",
            PaymentStatus::Confirming => "confirming",
            PaymentStatus::Done => "done",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Cancelling => "cancelling",
            PaymentStatus::Cancelled => "cancelled",
            PaymentStatus::Refunding => "refunding",
        }
    }

    /// Waiting on the gateway: the completer resolves it if a call's answer
    /// was lost.
    pub const fn in_flight(self) -> bool {
        matches!(self, PaymentStatus::Confirming | PaymentStatus::Cancelling | PaymentStatus::Refunding)
    }
}

/// How a payment is paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// From the payer's wallet.
    Wallet,
    /// Through the external payment gateway (seed 003).
    Gateway,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Wallet => "wallet",
            Method::Gateway => "gateway",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentEvent {
    /// Gateway: the intent to confirm with this payment key, before the call,
    /// by the request with this `Idempotency-Key` (if it had one).
    BeginConfirm {
        payment_key: String,
        requested_by: Option<IdemKey>,
    },
    Confirm,
    Fail,
    /// Gateway: the intent to cancel, before the call, by the request with
    /// this `Idempotency-Key` (if it had one).
    BeginCancel {
        requested_by: Option<IdemKey>,
    },
    Cancel,
    /// Gateway: the charge was ours but for another amount: the payment
    /// fails and its refund is owed.
    BeginRefund,
    /// Gateway: the owed refund went back to the card.
    Refunded,
    /// Gateway: a completer claims a stuck payment for another lookup; only
    /// the attempt's timestamp moves (a watched payment's, backed off).
    Touch,
    /// Gateway: the confirm is still unknown to the gateway past the give-up
    /// deadline. The payment fails, watched until `watch_until` for a charge
    /// that lands late.
    GiveUp {
        watch_until: Timestamp,
    },
    /// Gateway: a watched payment's key can no longer be charged for it.
    StopWatching,
}

impl PaymentEvent {
    pub const fn as_str(&self) -> &'static str {
        match self {
            PaymentEvent::BeginConfirm { .. } => "begin_confirm",
            PaymentEvent::Confirm => "confirm",
            PaymentEvent::Fail => "fail",
            PaymentEvent::BeginCancel { .. } => "begin_cancel",
            PaymentEvent::Cancel => "cancel",
            PaymentEvent::BeginRefund => "begin_refund",
            PaymentEvent::Refunded => "refunded",
            PaymentEvent::Touch => "touch",
            PaymentEvent::GiveUp { .. } => "give_up",
            PaymentEvent::StopWatching => "stop_watching",
        }
    }
}

/// The longest a watched payment's lookups are put off (see
/// [`watch_backoff`]): a charge landing late waits at most this long, plus the
/// completer's own threshold, before it is found and refunded.
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

/// How much later than an in-flight payment's a watched payment's next claim
/// comes: as long as it has waited since its confirm was sent, at most
/// [`WATCH_BACKOFF_MAX`]. A late charge is most likely soon after the
/// give-up (a confirm still in the gateway's queue), and every watched
/// payment costs the gateway a lookup per claim: with the defaults (a
/// 120 s give-up, a 60 s completer threshold, an hour's watch) six lookups
/// over the watch instead of sixty, so that after a gateway outage the
/// completer's bounded passes are not spent on watched payments.
pub fn watch_backoff(sent_at: Timestamp, now: Timestamp) -> Duration {
    let waited = Duration::from_millis(u64::try_from(now.0.saturating_sub(sent_at.0)).unwrap_or(0));
    // The mutant lets the gap grow without bound: a late charge may wait
    // half the watch to be found.
    if crate::mutant::active("watch_backoff_unbounded") {
        return waited;
    }
    waited.min(WATCH_BACKOFF_MAX)
}

/// The gateway side of a payment: the key the client got from the gateway's
/// checkout, and when the current phase began (the completer looks up
/// payments whose phase is older than its threshold).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayAttempt {
    pub payment_key: String,
    /// When the current phase was last claimed: the completer's clock, moved
    /// by every claim (`Touch`) so that instances take turns. A watched
    /// payment's claim moves it into the future ([`watch_backoff`]): its
    /// lookups thin out the longer it is watched.
    pub started_at: Timestamp,
    /// When the current phase's call was first sent. Never moved by a claim:
    /// the give-up deadline counts from here, so a confirm the gateway never
    /// received is failed in the end instead of being looked up forever.
    pub sent_at: Timestamp,
    /// The `Idempotency-Key` (of the payment's owner) of the request that
    /// began the current phase, a confirm or a cancel; a refund owed after a
    /// confirm keeps the confirm's. That request may have been answered 503
    /// while the gateway's answer was unclear, and the phase settled by the
    /// completer since: its retry under the same key is then answered with
    /// the settled payment, as the request's own effect, not refused as a
    /// second confirm or cancel.
    pub requested_by: Option<IdemKey>,
    /// A confirm given up on: until this instant the completer keeps looking
    /// the key up, and refunds a charge of ours that lands. Set only on a
    /// `failed` payment, by `give_up`; cleared when the watch ends.
    pub watch_until: Option<Timestamp>,
}

impl GatewayAttempt {
    /// Whether `key` began the current phase.
    pub fn requested_by(&self, key: &IdemKey) -> bool {
        self.requested_by.as_ref() == Some(key)
    }
}

/// Most basis points of payback: 100 %, never more than the amount.
pub const PAYBACK_BPS_MAX: u32 = 10_000;

/// The merchant's payback policy (SPEC.md): `bps` basis points of `amount`,
/// rounded down; none when that is zero. Never the customer's choice.
pub fn payback_of(amount: Amount, bps: u32) -> Money {
    assert!(bps <= PAYBACK_BPS_MAX, "payback rates are validated at the boundary");
    let units = i128::from(amount.minor_units()) * i128::from(bps) / i128::from(PAYBACK_BPS_MAX);
    Money::new(i64::try_from(units).expect("at most the amount"))
}

/// Longest gateway payment key accepted, in characters (Toss keys are far
/// shorter).
pub const PAYMENT_KEY_LENGTH_MAX: usize = 200;

/// Whether `payment_key` is one a confirm may begin with: 1 to
/// [`PAYMENT_KEY_LENGTH_MAX`] characters. The API refuses any other as
/// malformed before it names a payment; the transition refuses it too.
pub fn is_valid_payment_key(payment_key: &str) -> bool {
    !payment_key.is_empty() && payment_key.chars().count() <= PAYMENT_KEY_LENGTH_MAX
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("cannot {} a payment that is {}", event.as_str(), from.as_str())]
pub struct InvalidTransition {
    pub from: PaymentStatus,
    pub event: PaymentEvent,
}

#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("payback must not exceed the payment amount")]
pub struct PaybackTooLarge;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub id: PaymentId,
    pub user: UserId,
    pub amount: Amount,
    /// Cashback credited on success; `0..=amount`.
    pub payback: Money,
    pub method: Method,
    pub status: PaymentStatus,
    /// Gateway payments, once a confirm began.
    pub gateway: Option<GatewayAttempt>,
    /// The order it pays, if any: its amount is the order's total, and its
    /// confirm and cancel move the order too.
    pub order: Option<OrderId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: u64,
}

impl Payment {
    pub fn new(
        id: PaymentId,
        user: UserId,
        amount: Amount,
        payback: Option<Amount>,
        method: Method,
        now: Timestamp,
    ) -> Result<Payment, PaybackTooLarge> {
        let payback = payback.map_or(Money::ZERO, Amount::money);
        // A payback above the amount would let confirm+cancel mint money into
        // the wallet (refund amount, keep the difference) — refuse it up front.
        if payback > amount.money() {
            return Err(PaybackTooLarge);
        }
        Ok(Payment {
            id,
            user,
            amount,
            payback,
            method,
            status: PaymentStatus::Wait,
            gateway: None,
            order: None,
            created_at: now,
            updated_at: now,
            version: 0,
        })
    }

    /// The transition function.
    pub fn transition(&self, event: PaymentEvent, now: Timestamp) -> Result<Payment, InvalidTransition> {
        use PaymentEvent as E;
        use PaymentStatus as S;
        let gateway = self.method == Method::Gateway;
        let refuse = |event: PaymentEvent| Err(InvalidTransition { from: self.status, event });
        let mut next = Payment { updated_at: now, version: self.version + 1, ..self.clone() };
        next.status = match (self.status, &event) {
            (S::Wait, E::BeginConfirm { payment_key, requested_by }) if gateway => {
                if !is_valid_payment_key(payment_key) {
                    return refuse(event);
                }
                next.gateway = Some(GatewayAttempt {
                    payment_key: payment_key.clone(),
                    started_at: now,
                    sent_at: now,
                    requested_by: requested_by.clone(),
                    watch_until: None,
                });
                S::Confirming
            }
            (S::Wait, E::Confirm) if !gateway => S::Done,
            (S::Confirming, E::Confirm) if gateway => S::Done,
            (S::Wait | S::Confirming, E::Fail) => S::Failed,
            (S::Done, E::BeginCancel { requested_by }) if gateway => {
                let attempt = self.gateway.clone().expect("a done gateway payment has its attempt");
                next.gateway = Some(GatewayAttempt {
                    started_at: now,
                    sent_at: now,
                    requested_by: requested_by.clone(),
                    ..attempt
                });
                S::Cancelling
            }
            (S::Confirming, E::GiveUp { watch_until }) if gateway && *watch_until > now => {
                let attempt = self.gateway.clone().expect("a confirming gateway payment has its attempt");
                next.gateway = Some(GatewayAttempt { started_at: now, watch_until: Some(*watch_until), ..attempt });
                S::Failed
            }
            // A late charge of a watched payment is owed back like a wrong one.
            (S::Confirming, E::BeginRefund) | (S::Failed, E::BeginRefund) if gateway && self.awaits_gateway() => {
                let attempt = self.gateway.clone().expect("a confirming gateway payment has its attempt");
                next.gateway = Some(GatewayAttempt { started_at: now, sent_at: now, watch_until: None, ..attempt });
                S::Refunding
            }
            (S::Failed, E::StopWatching) if self.watched() => {
                let attempt = self.gateway.clone().expect("a watched payment has its attempt");
                next.gateway = Some(GatewayAttempt { watch_until: None, ..attempt });
                S::Failed
            }
            (S::Refunding, E::Refunded) if gateway => S::Failed,
            (S::Wait, E::Cancel) => S::Cancelled,
            (S::Done, E::Cancel) if !gateway => S::Cancelled,
            (S::Cancelling, E::Cancel) if gateway => S::Cancelled,
            (S::Confirming | S::Cancelling | S::Refunding | S::Failed, E::Touch) if self.awaits_gateway() => {
                let attempt = self.gateway.clone().expect("an in-flight gateway payment has its attempt");
                // A watched payment's next claim is put off: see `watch_backoff`.
                // The mutant claims it every pass, as before the backoff.
                let backs_off = self.watched() && !crate::mutant::active("watch_unthrottled");
                let started_at = if backs_off { now.plus(watch_backoff(attempt.sent_at, now)) } else { now };
                next.gateway = Some(GatewayAttempt { started_at, ..attempt });
                self.status
            }
            #[cfg(feature = "mutants")]
            (S::Cancelled, E::Cancel) if crate::mutant::active("double_refund") => S::Cancelled,
            _ => return refuse(event),
        };
        Ok(next)
    }

    /// A failed gateway payment whose late charge the completer still looks
    /// for (see the module docs).
    pub fn watched(&self) -> bool {
        self.status == PaymentStatus::Failed && self.gateway.as_ref().is_some_and(|a| a.watch_until.is_some())
    }

    /// Waiting on the gateway, in flight or watched: what the completer
    /// claims and looks up.
    pub fn awaits_gateway(&self) -> bool {
        self.status.in_flight() || self.watched()
    }

    pub fn payback_amount(&self) -> Option<Amount> {
        Amount::new(self.payback.minor_units()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment() -> Payment {
        Payment::new(PaymentId(1), UserId(1), Amount::new(100).unwrap(), None, Method::Wallet, Timestamp(0)).unwrap()
    }

    #[test]
    fn legal_paths() {
        let done = payment().transition(PaymentEvent::Confirm, Timestamp(1)).unwrap();
        assert_eq!(done.status, PaymentStatus::Done);
        assert_eq!(done.version, 1);
        let cancelled = done.transition(PaymentEvent::Cancel, Timestamp(2)).unwrap();
        assert_eq!(cancelled.status, PaymentStatus::Cancelled);
        assert_eq!(payment().transition(PaymentEvent::Fail, Timestamp(1)).unwrap().status, PaymentStatus::Failed);
        assert_eq!(payment().transition(PaymentEvent::Cancel, Timestamp(1)).unwrap().status, PaymentStatus::Cancelled);
    }

    #[test]
    fn every_other_transition_is_refused() {
        use PaymentEvent as E;
        let done = payment().transition(E::Confirm, Timestamp(1)).unwrap();
        let failed = payment().transition(E::Fail, Timestamp(1)).unwrap();
        let cancelled = done.transition(E::Cancel, Timestamp(2)).unwrap();
        let key = || E::BeginConfirm { payment_key: "pk".into(), requested_by: None };
        for (p, e) in [
            (&payment(), key()),
            (&payment(), E::BeginCancel { requested_by: None }),
            (&payment(), E::Touch),
            (&done, E::Confirm),
            (&done, E::Fail),
            (&done, E::BeginCancel { requested_by: None }),
            (&failed, E::Confirm),
            (&failed, E::Fail),
            (&failed, E::Cancel),
            (&cancelled, E::Confirm),
            (&cancelled, E::Fail),
            (&cancelled, E::Cancel),
        ] {
            assert_eq!(p.transition(e.clone(), Timestamp(3)), Err(InvalidTransition { from: p.status, event: e }));
        }
    }

    fn gateway_payment() -> Payment {
        Payment::new(PaymentId(2), UserId(1), Amount::new(100).unwrap(), None, Method::Gateway, Timestamp(0)).unwrap()
    }

    #[test]
    fn gateway_paths_go_through_confirming_and_cancelling() {
        use PaymentEvent as E;
        let p = gateway_payment();
        assert!(p.transition(E::Confirm, Timestamp(1)).is_err(), "a gateway payment is confirmed in phases");
        assert!(
            p.transition(E::BeginConfirm { payment_key: String::new(), requested_by: None }, Timestamp(1)).is_err()
        );
        let confirming =
            p.transition(E::BeginConfirm { payment_key: "pk_1".into(), requested_by: None }, Timestamp(1)).unwrap();
        assert_eq!(confirming.status, PaymentStatus::Confirming);
        assert_eq!(confirming.gateway.as_ref().unwrap().payment_key, "pk_1");
        // A second begin is refused: the confirm is never sent twice.
        assert!(
            confirming
                .transition(E::BeginConfirm { payment_key: "pk_1".into(), requested_by: None }, Timestamp(2))
                .is_err()
        );
        let touched = confirming.transition(E::Touch, Timestamp(5)).unwrap();
        assert_eq!(
            (touched.status, touched.gateway.as_ref().unwrap().started_at),
            (PaymentStatus::Confirming, Timestamp(5))
        );
        let done = touched.transition(E::Confirm, Timestamp(6)).unwrap();
        assert!(done.transition(E::Cancel, Timestamp(7)).is_err(), "a gateway payment is cancelled in phases");
        let cancelling = done.transition(E::BeginCancel { requested_by: None }, Timestamp(7)).unwrap();
        assert_eq!(cancelling.transition(E::Cancel, Timestamp(8)).unwrap().status, PaymentStatus::Cancelled);
        assert_eq!(confirming.transition(E::Fail, Timestamp(9)).unwrap().status, PaymentStatus::Failed);
    }

    #[test]
    fn a_wrong_charge_is_failed_only_once_its_refund_went_back() {
        use PaymentEvent as E;
        let confirming = gateway_payment()
            .transition(E::BeginConfirm { payment_key: "pk_1".into(), requested_by: None }, Timestamp(1))
            .unwrap();
        let refunding = confirming.transition(E::BeginRefund, Timestamp(4)).unwrap();
        assert_eq!(refunding.status, PaymentStatus::Refunding);
        let attempt = refunding.gateway.as_ref().unwrap();
        assert_eq!((attempt.started_at, attempt.sent_at), (Timestamp(4), Timestamp(4)), "the refund's own clock");
        for refused in [E::Confirm, E::Fail, E::Cancel, E::BeginCancel { requested_by: None }, E::BeginRefund] {
            assert!(refunding.transition(refused, Timestamp(5)).is_err());
        }
        assert_eq!(refunding.transition(E::Touch, Timestamp(5)).unwrap().status, PaymentStatus::Refunding);
        assert_eq!(refunding.transition(E::Refunded, Timestamp(6)).unwrap().status, PaymentStatus::Failed);
        assert!(payment().transition(E::BeginRefund, Timestamp(1)).is_err(), "a wallet payment owes no refund");
        assert!(confirming.transition(E::Refunded, Timestamp(1)).is_err());
    }

    /// Hole 11's cost: a watched payment's next claim is put off by the
    /// time since its confirm was sent, never more than the bound.
    #[test]
    fn a_watched_payments_lookups_back_off_to_a_bound() {
        let minute = 60_000;
        assert_eq!(watch_backoff(Timestamp(0), Timestamp(3 * minute)), Duration::from_secs(180));
        assert_eq!(watch_backoff(Timestamp(0), Timestamp(60 * minute)), WATCH_BACKOFF_MAX);
        assert_eq!(watch_backoff(Timestamp(5), Timestamp(4)), Duration::ZERO, "a clock stepped back");
        assert_eq!(watch_backoff(Timestamp(i64::MIN), Timestamp(i64::MAX)), WATCH_BACKOFF_MAX);
    }

    /// Hole 11: a confirm given up on may still be charged; the failed
    /// payment is watched, and only a watched one may owe a late refund.
    #[test]
    fn a_given_up_confirm_is_failed_and_watched_until_its_horizon() {
        use PaymentEvent as E;
        let confirming = gateway_payment()
            .transition(E::BeginConfirm { payment_key: "pk_1".into(), requested_by: None }, Timestamp(1))
            .unwrap();
        let watch_until = Timestamp(100);
        assert!(
            confirming.transition(E::GiveUp { watch_until: Timestamp(9) }, Timestamp(9)).is_err(),
            "a horizon ahead"
        );
        let given_up = confirming.transition(E::GiveUp { watch_until }, Timestamp(9)).unwrap();
        assert_eq!(given_up.status, PaymentStatus::Failed);
        assert!(given_up.watched() && given_up.awaits_gateway());
        assert_eq!(given_up.gateway.as_ref().unwrap().watch_until, Some(watch_until));
        // The completer's claims move the turn, nothing else: sent at 1, a
        // claim at 10 puts the next one off by the 9 it has waited.
        let touched = given_up.transition(E::Touch, Timestamp(10)).unwrap();
        assert_eq!(
            (touched.status, touched.gateway.as_ref().unwrap().started_at),
            (PaymentStatus::Failed, Timestamp(19))
        );
        assert_eq!(touched.gateway.as_ref().unwrap().sent_at, Timestamp(1), "the send is never moved");
        // An in-flight payment's claim is not put off.
        let claimed = confirming.transition(E::Touch, Timestamp(10)).unwrap();
        assert_eq!(claimed.gateway.as_ref().unwrap().started_at, Timestamp(10));
        for refused in [E::Confirm, E::Fail, E::Cancel, E::BeginCancel { requested_by: None }, E::Refunded] {
            assert!(given_up.transition(refused, Timestamp(11)).is_err());
        }
        // A late charge: owed back, the watch over.
        let refunding = given_up.transition(E::BeginRefund, Timestamp(11)).unwrap();
        assert_eq!((refunding.status, refunding.watched()), (PaymentStatus::Refunding, false));
        assert_eq!(refunding.gateway.as_ref().unwrap().watch_until, None);
        assert_eq!(refunding.transition(E::Refunded, Timestamp(12)).unwrap().status, PaymentStatus::Failed);
        // Or none lands: the watch ends, and the payment is failed for good.
        let settled = given_up.transition(E::StopWatching, Timestamp(101)).unwrap();
        assert!(!settled.watched() && !settled.awaits_gateway());
        for refused in [E::BeginRefund, E::Touch, E::StopWatching, E::GiveUp { watch_until: Timestamp(200) }] {
            assert!(
                settled.transition(refused, Timestamp(102)).is_err(),
                "a failed payment no longer watched is final"
            );
        }
        let declined = confirming.transition(E::Fail, Timestamp(9)).unwrap();
        assert!(declined.transition(E::BeginRefund, Timestamp(10)).is_err(), "a declined confirm owes nothing");
    }

    #[test]
    fn payback_policy_rounds_down_and_never_exceeds_the_amount() {
        let amount = |n| Amount::new(n).unwrap();
        assert_eq!(payback_of(amount(1_000), 500), Money::new(50));
        assert_eq!(payback_of(amount(999), 1), Money::ZERO);
        assert_eq!(payback_of(amount(1_000), 0), Money::ZERO);
        assert_eq!(payback_of(Amount::MAX, PAYBACK_BPS_MAX), Amount::MAX.money());
    }

    #[test]
    fn payback_above_amount_is_refused() {
        let err = Payment::new(
            PaymentId(1),
            UserId(1),
            Amount::new(10).unwrap(),
            Some(Amount::new(11).unwrap()),
            Method::Wallet,
            Timestamp(0),
        );
        assert_eq!(err, Err(PaybackTooLarge));
    }
}
