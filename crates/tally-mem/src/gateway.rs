//! An in-memory payment gateway for the use-case, shuttle and end-to-end
//! tests (the simulation runs the HTTP fake of `tally-gateway` instead).
//!
//! It behaves like the real one where it matters (seed 003): a second
//! confirm of a payment key is refused "already processed", and it counts
//! every confirm it receives, so a proof can assert that a payment was sent
//! to the gateway at most once. Faults are queued per call kind: a reply
//! lost after the charge took effect, a call that fails before taking effect.

use std::collections::BTreeMap;

use tally_core::gateway::{CancelResult, Confirmed, Gateway, LookedUp};
use tally_core::money::Amount;
use tally_lock::sync::{Arc, Mutex};

/// One charge the gateway holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub amount: i64,
    pub order_id: String,
    pub cancelled: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Charged payments: key → (amount, order id, cancelled).
    charged: BTreeMap<String, Charge>,
    /// The next this-many confirms charge one minor unit less than asked
    /// (seed 003's tampered amount).
    short_charges: u32,
    /// Confirm requests received per key, whatever became of them.
    confirms_received: BTreeMap<String, u32>,
    /// The next this-many confirms take effect but their reply is lost.
    lose_confirm_replies: u32,
    /// The next this-many confirms fail before taking effect.
    fail_confirms: u32,
    /// The next this-many lookups fail.
    fail_lookups: u32,
    /// The next this-many cancels fail before taking effect.
    fail_cancels: u32,
}

/// A fake gateway shared by clones.
#[derive(Clone, Debug, Default)]
pub struct MemGateway {
    state: Arc<Mutex<State>>,
}

impl MemGateway {
    pub fn new() -> MemGateway {
        MemGateway::default()
    }

    fn state(&self) -> tally_lock::sync::MutexGuard<'_, State> {
        self.state.lock().expect("gateway state")
    }

    pub fn lose_confirm_replies(&self, n: u32) {
        self.state().lose_confirm_replies = n;
    }

    pub fn fail_confirms(&self, n: u32) {
        self.state().fail_confirms = n;
    }

    pub fn short_charges(&self, n: u32) {
        self.state().short_charges = n;
    }

    /// Charges `payment_key` for `order_id` as if some other merchant's
    /// checkout (or another payment) had confirmed it.
    pub fn charge_elsewhere(&self, payment_key: &str, order_id: &str, amount: i64) {
        let charge = Charge { amount, order_id: order_id.to_owned(), cancelled: false };
        self.state().charged.insert(payment_key.to_owned(), charge);
    }

    pub fn fail_cancels(&self, n: u32) {
        self.state().fail_cancels = n;
    }

    pub fn fail_lookups(&self, n: u32) {
        self.state().fail_lookups = n;
    }

    /// Confirm requests received for `payment_key`.
    pub fn confirms_received(&self, payment_key: &str) -> u32 {
        self.state().confirms_received.get(payment_key).copied().unwrap_or(0)
    }

    /// Was `payment_key` charged, for how much, and is it cancelled?
    pub fn charge(&self, payment_key: &str) -> Option<(i64, bool)> {
        self.state().charged.get(payment_key).map(|c| (c.amount, c.cancelled))
    }

    /// Every charge the gateway holds, by payment key.
    pub fn charges(&self) -> BTreeMap<String, Charge> {
        self.state().charged.clone()
    }
}

impl Gateway for MemGateway {
    fn confirm(
        &self,
        payment_key: &str,
        order_id: &str,
        amount: Amount,
        _: &str,
    ) -> impl Future<Output = Confirmed> + Send {
        let mut state = self.state();
        *state.confirms_received.entry(payment_key.to_owned()).or_default() += 1;
        let verdict = if state.charged.contains_key(payment_key) {
            Confirmed::Unknown { reason: "ALREADY_PROCESSED_PAYMENT".into() }
        } else if state.fail_confirms > 0 {
            state.fail_confirms -= 1;
            Confirmed::Unknown { reason: "injected: 503 before taking effect".into() }
        } else {
            let mut charged = amount.minor_units();
            if state.short_charges > 0 && charged > 1 {
                state.short_charges -= 1;
                charged -= 1;
            }
            let charge = Charge { amount: charged, order_id: order_id.to_owned(), cancelled: false };
            state.charged.insert(payment_key.to_owned(), charge);
            if state.lose_confirm_replies > 0 {
                state.lose_confirm_replies -= 1;
                Confirmed::Unknown { reason: "injected: reply lost after the charge".into() }
            } else {
                Confirmed::Approved { amount: charged, order_id: order_id.to_owned() }
            }
        };
        std::future::ready(verdict)
    }

    fn lookup(&self, payment_key: &str) -> impl Future<Output = LookedUp> + Send {
        let mut state = self.state();
        let verdict = if state.fail_lookups > 0 {
            state.fail_lookups -= 1;
            LookedUp::Unknown { reason: "injected: lookup failed".into() }
        } else {
            match state.charged.get(payment_key) {
                Some(c) if !c.cancelled => LookedUp::Done { amount: c.amount, order_id: c.order_id.clone() },
                Some(c) => LookedUp::Cancelled { order_id: c.order_id.clone() },
                None => LookedUp::NotFound,
            }
        };
        std::future::ready(verdict)
    }

    fn cancel(&self, payment_key: &str, _: &str) -> impl Future<Output = CancelResult> + Send {
        let mut state = self.state();
        if state.fail_cancels > 0 {
            state.fail_cancels -= 1;
            return std::future::ready(CancelResult::Unknown { reason: "injected: cancel failed".into() });
        }
        let verdict = match state.charged.get_mut(payment_key) {
            Some(Charge { cancelled, .. }) => {
                *cancelled = true;
                CancelResult::Cancelled
            }
            None => CancelResult::Unknown { reason: "no such payment".into() },
        };
        std::future::ready(verdict)
    }
}
