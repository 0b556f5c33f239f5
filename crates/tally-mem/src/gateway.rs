//! An in-memory payment gateway for the model checkers and the simulation.
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

#[derive(Debug, Default)]
struct State {
    /// Charged payments: key → (amount, cancelled).
    charged: BTreeMap<String, (i64, bool)>,
    /// Confirm requests received per key, whatever became of them.
    confirms_received: BTreeMap<String, u32>,
    /// The next this-many confirms take effect but their reply is lost.
    lose_confirm_replies: u32,
    /// The next this-many confirms fail before taking effect.
    fail_confirms: u32,
    /// The next this-many lookups fail.
    fail_lookups: u32,
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

    pub fn fail_lookups(&self, n: u32) {
        self.state().fail_lookups = n;
    }

    /// Confirm requests received for `payment_key`.
    pub fn confirms_received(&self, payment_key: &str) -> u32 {
        self.state().confirms_received.get(payment_key).copied().unwrap_or(0)
    }

    /// Was `payment_key` charged, for how much, and is it cancelled?
    pub fn charge(&self, payment_key: &str) -> Option<(i64, bool)> {
        self.state().charged.get(payment_key).copied()
    }
}

impl Gateway for MemGateway {
    fn confirm(&self, payment_key: &str, _: &str, amount: Amount, _: &str) -> impl Future<Output = Confirmed> + Send {
        let mut state = self.state();
        *state.confirms_received.entry(payment_key.to_owned()).or_default() += 1;
        let verdict = if state.charged.contains_key(payment_key) {
            Confirmed::Unknown { reason: "ALREADY_PROCESSED_PAYMENT".into() }
        } else if state.fail_confirms > 0 {
            state.fail_confirms -= 1;
            Confirmed::Unknown { reason: "injected: 503 before taking effect".into() }
        } else {
            state.charged.insert(payment_key.to_owned(), (amount.minor_units(), false));
            if state.lose_confirm_replies > 0 {
                state.lose_confirm_replies -= 1;
                Confirmed::Unknown { reason: "injected: reply lost after the charge".into() }
            } else {
                Confirmed::Approved { amount: amount.minor_units() }
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
                Some((amount, false)) => LookedUp::Done { amount: *amount },
                Some((_, true)) => LookedUp::Cancelled,
                None => LookedUp::NotFound,
            }
        };
        std::future::ready(verdict)
    }

    fn cancel(&self, payment_key: &str, _: &str) -> impl Future<Output = CancelResult> + Send {
        let mut state = self.state();
        let verdict = match state.charged.get_mut(payment_key) {
            Some((_, cancelled)) => {
                *cancelled = true;
                CancelResult::Cancelled
            }
            None => CancelResult::Unknown { reason: "no such payment".into() },
        };
        std::future::ready(verdict)
    }
}
