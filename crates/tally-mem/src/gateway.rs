//! An in-memory payment gateway for the use-case, shuttle and end-to-end
//! tests (the simulation runs the HTTP fake of `tally-gateway` instead).
//!
//! It behaves like the real one where it matters (seed 003): its payments
//! are a `tally-gateway` [`Book`], the one implementation of the rule that a
//! second confirm of a payment key is refused "already processed", the one
//! the HTTP fake keeps too. It counts every confirm it receives, so a proof
//! can assert that a payment was sent to the gateway at most once. Faults are
//! queued per call kind: a reply lost after the charge took effect, a call
//! that fails before taking effect (before the book is asked, as the HTTP
//! fake's faults are), a confirm held and carried out later.
//!
//! The book is plain data; the lock around it is `tally_lock::sync`'s, so
//! shuttle sees every access.

use std::collections::BTreeMap;

use tally_core::gateway::{CancelResult, Confirmed, Gateway, LookedUp};
use tally_core::money::Amount;
use tally_gateway::book::{Book, CancelRefusal, Charge, ConfirmRefusal};
use tally_lock::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct State {
    /// Charged payments (unstamped: nobody reads when).
    book: Book<()>,
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
    /// Lookups received per key, whatever they answered.
    lookups_received: BTreeMap<String, u32>,
    /// The next this-many cancels fail before taking effect.
    fail_cancels: u32,
    /// The next this-many confirms are held: received, unanswered (a
    /// timeout), and carried out only by [`MemGateway::land_held`].
    hold_confirms: u32,
    /// Confirms held so far: payment key, order id, amount.
    held: Vec<(String, String, i64)>,
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

    /// The next `n` confirms are held in the gateway's queue: their caller
    /// times out, and the charge happens when [`MemGateway::land_held`]
    /// says, however late.
    pub fn hold_confirms(&self, n: u32) {
        self.state().hold_confirms = n;
    }

    /// Carries out the held confirms, as a gateway that queued them does
    /// later; returns how many charged.
    pub fn land_held(&self) -> usize {
        let mut state = self.state();
        let held = std::mem::take(&mut state.held);
        held.into_iter()
            .filter(|(key, order_id, amount)| state.book.confirm(key, order_id, *amount, || ()).is_ok())
            .count()
    }

    /// Charges `payment_key` for `order_id` as if some other merchant's
    /// checkout (or another payment) had confirmed it.
    /// Like any confirm, it charges nothing if the key was charged before.
    pub fn charge_elsewhere(&self, payment_key: &str, order_id: &str, amount: i64) {
        let _already_processed = self.state().book.confirm(payment_key, order_id, amount, || ()).is_err();
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

    /// Lookups received for `payment_key`.
    pub fn lookups_received(&self, payment_key: &str) -> u32 {
        self.state().lookups_received.get(payment_key).copied().unwrap_or(0)
    }

    /// Was `payment_key` charged, for how much, and is it cancelled?
    pub fn charge(&self, payment_key: &str) -> Option<(i64, bool)> {
        self.state().book.charge(payment_key).map(|c| (c.amount, c.is_cancelled()))
    }

    /// Every charge the gateway holds, by payment key.
    pub fn charges(&self) -> BTreeMap<String, Charge<()>> {
        self.state().book.charges().clone()
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
        let mut guard = self.state();
        let state = &mut *guard;
        *state.confirms_received.entry(payment_key.to_owned()).or_default() += 1;
        if state.fail_confirms > 0 {
            state.fail_confirms -= 1;
            return std::future::ready(Confirmed::Unknown { reason: "injected: 503 before taking effect".into() });
        }
        if state.hold_confirms > 0 {
            state.hold_confirms -= 1;
            state.held.push((payment_key.to_owned(), order_id.to_owned(), amount.minor_units()));
            return std::future::ready(Confirmed::Unknown { reason: "injected: held, no reply yet".into() });
        }
        let short = state.short_charges > 0 && amount.minor_units() > 1;
        let verdict = match state.book.confirm(payment_key, order_id, amount.minor_units() - i64::from(short), || ()) {
            // Some confirm charged the key, maybe for another order: only a
            // lookup can say whose charge it is.
            Err(refusal @ ConfirmRefusal::AlreadyProcessed) => Confirmed::Unknown { reason: refusal.code().into() },
            Err(refusal) => Confirmed::Declined { code: refusal.code().into() },
            Ok(charge) => {
                state.short_charges -= u32::from(short);
                if state.lose_confirm_replies > 0 {
                    state.lose_confirm_replies -= 1;
                    Confirmed::Unknown { reason: "injected: reply lost after the charge".into() }
                } else {
                    Confirmed::Approved { amount: charge.amount, order_id: charge.order_id.clone() }
                }
            }
        };
        std::future::ready(verdict)
    }

    fn lookup(&self, payment_key: &str) -> impl Future<Output = LookedUp> + Send {
        let mut state = self.state();
        *state.lookups_received.entry(payment_key.to_owned()).or_default() += 1;
        let verdict = if state.fail_lookups > 0 {
            state.fail_lookups -= 1;
            LookedUp::Unknown { reason: "injected: lookup failed".into() }
        } else {
            match state.book.charge(payment_key) {
                Some(c) if !c.is_cancelled() => LookedUp::Done { amount: c.amount, order_id: c.order_id.clone() },
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
        let verdict = match state.book.cancel(payment_key, ()) {
            // Cancelled now or before: either way the money went back.
            Ok(_) | Err(CancelRefusal::AlreadyCancelled) => CancelResult::Cancelled,
            Err(CancelRefusal::NotFound) => CancelResult::Unknown { reason: "no such payment".into() },
        };
        std::future::ready(verdict)
    }
}
